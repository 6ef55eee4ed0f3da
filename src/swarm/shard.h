/* shard.h - the shard server: sessions over one layer span, continuously
 * batched.
 *
 * A shard_t serves layers [a, b) of one model (a borrowed model_t loaded for
 * that range) to clients speaking the session messages of wire.h. It is
 * transport-agnostic: the caller feeds it decoded messages tagged with an
 * opaque client key (the connection) and gets replies through a callback.
 *
 * Sessions. OPEN_SESSION creates a session (a fwd_state_t of max_len
 * positions) owned by the client that opened it: sessions are keyed by
 * (client, session id), so another client can neither use nor close them
 * (to it they do not exist: WIRE_E_NO_SESSION). It is refused with OPEN_ERR:
 *   - another model id, an unknown KV type (F32 and F16 are served), or Q8
 *     hidden states when n_embd is not a multiple of 32: WIRE_E_UNSUPPORTED;
 *   - a span other than exactly [a, b), max_len above the model's training
 *     context (or cfg.max_len), a session id this client already uses:
 *     WIRE_E_BAD_REQUEST;
 *   - admission control: when the session's KV cache
 *     (fwd_state_bytes_for(model, a, b, max_len, kv)) does not fit in what is
 *     left of cfg.kv_mem, or max_sessions are open: WIRE_E_BUSY, with a
 *     message giving the figures.
 * Otherwise OPEN_OK grants exactly the requested max_len.
 *
 * FORWARD carries rows for positions start_pos .. start_pos + n - 1. A
 * session's FORWARDs are processed in arrival order; start_pos must be the
 * position the session will be at when it runs (its current position plus
 * the rows of its FORWARDs still queued). A start_pos below that is a rewind:
 * when the request runs, the state is truncated to start_pos first
 * (fwd_state_truncate), which is how a client rebuilds or re-does a suffix.
 * A start_pos beyond it (a gap), start_pos + n above max_len, a dim other
 * than n_embd, an encoding other than the session's, hidden data whose
 * length is not the shape's (WIRE_E_PROTOCOL) or that holds a non-finite
 * value, a full queue (WIRE_E_BUSY) are errors. The reply is FORWARD_RESULT
 * with the same session id, start_pos and n, the rows leaving the span in
 * the session's encoding.
 *
 * Errors on a session end it. The ERROR message carries no session id, so
 * a failed FORWARD (and an idle timeout) is answered with ERROR (code, text
 * naming the session) followed by CLOSE_SESSION(session id, reason = the
 * same code); the session, if it exists for that client, is freed with its
 * queued requests. A client that sees CLOSE_SESSION from a shard knows which
 * session died and replays elsewhere. OPEN_SESSION errors are OPEN_ERR (it
 * has a session id). CLOSE_SESSION from the client frees its session (no
 * reply; an unknown id is ignored). Nothing a peer sends can crash the
 * server or touch another session: every field is checked first.
 *
 * Continuous batching. FORWARDs are decoded on arrival and queued. A step
 * takes queued requests in arrival order, at most one per session, until
 * cfg.max_step_rows rows (the first request is always taken, whatever its
 * size), and runs them as ONE fwd_forward call with one segment per session:
 * the weights are read once for the whole batch. By the forward pass's
 * determinism contract (fwd.h) each session gets the same bits it would get
 * alone.
 *
 * Threading contract (no locks: ownership is handed over):
 *   - The "loop thread" (one thread, the caller's event loop) calls
 *     everything except shard_step_run: shard_handle, shard_drop_client,
 *     shard_tick, shard_free_capacity, shard_stats, shard_pending,
 *     shard_step_begin, shard_step_end, shard_free. The reply callback is
 *     only ever called from shard_handle, shard_tick and shard_step_end, so
 *     on the loop thread.
 *   - shard_step_begin moves a batch into the step (the states of the
 *     sessions it picked, their input rows). Until shard_step_end, exactly
 *     one thread (e.g. a libuv worker) may call shard_step_run, which touches
 *     only that batch, the compute context and the pool; the loop thread
 *     keeps handling messages meanwhile, but never touches a session in the
 *     step: closing, dropping or timing out such a session only marks it,
 *     and shard_step_end frees it (its result is discarded).
 *   - The hand-over must be a happens-before edge (uv_queue_work's work and
 *     after-work callbacks are; so is running all three in one thread).
 *   - shard_step() runs begin, run and end in the caller, for single-threaded
 *     use and tests.
 * KV memory of a session is returned to the budget when its state is freed.
 *
 * Time is what the caller says: shard_tick(now_ms) sets the clock used to
 * stamp activity and frees sessions idle for cfg.idle_ms (not those with
 * work queued or running).
 */
#ifndef COLONY_SWARM_SHARD_H
#define COLONY_SWARM_SHARD_H

#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "infer/fwd.h"
#include "market/channel.h"
#include "market/settle.h"
#include "market/wallet.h"
#include "model/model.h"
#include "net/wire.h"

#define SHARD_DEFAULT_KV_MEM (512ull << 20)
#define SHARD_DEFAULT_MAX_SESSIONS 64
#define SHARD_DEFAULT_IDLE_MS 120000u
#define SHARD_DEFAULT_STEP_ROWS 512
#define SHARD_DEFAULT_QUEUE_MEM (64ull << 20)
#define SHARD_MAX_QUEUED_PER_SESSION 8

typedef struct shard shard_t;

/* Sends m to client (on the loop thread). m and its views live during the
 * call only. */
typedef void (*shard_reply_cb)(void *user, void *client, const wire_msg_t *m);

/* A paid session ended (closed by either side, timed out, its client gone)
 * holding at least one accepted voucher: v is the one to redeem (the best
 * accepted; valid during the call). Loop thread; must not block. */
typedef void (*shard_settle_cb)(void *user, const voucher_t *v);

/* Payments (docs/PROTOCOL.md "Paid sessions"), all optional: with no wallet
 * every session is free, as before. With a wallet the shard answers
 * PAY_TERMS_REQ with its prices, accepts PAY_OPEN (the channel of the
 * OPEN_SESSION of the same id that follows it), counts each paid session's
 * tokens as FORWARDs arrive (rows at positions < n_prompt are input, the rest
 * output; a row computed twice counts twice) and takes VOUCHERs
 * (chan_provider_accept). A FORWARD whose first row would bring the tokens
 * delivered to more than one chunk beyond the last voucher, a refused
 * voucher, or PAY_OPEN terms other than the shard's end the session with
 * WIRE_E_PAYMENT ("payment required: ..."). With require_payment an
 * OPEN_SESSION without PAY_OPEN is refused (OPEN_ERR, WIRE_E_PAYMENT).
 *
 * Receipts: when the rows a paid session has been served reach one chunk
 * beyond its last receipt, the shard signs a receipt (chan_provider_receipt)
 * for the cumulative counts and sends RECEIPT just before the
 * FORWARD_RESULT that completes them; the buyer answers with the voucher for
 * exactly those counts before its next FORWARD (docs/PROTOCOL.md).
 *
 * Channel checks: with verify set, each PAY_OPEN is checked at the
 * settlement layer before its session is served. verify is called (loop
 * thread, from shard_handle) with a ticket and the channel id, and must
 * later call shard_pay_verified with that ticket, once, on the loop thread
 * (it may do so from inside verify). An OPEN_SESSION that arrives
 * meanwhile waits for the answer; the channel is refused (OPEN_ERR,
 * WIRE_E_PAYMENT) when it does not exist, is not open, names another buyer
 * or provider, has another budget or expiry than PAY_OPEN claims, or was
 * already redeemed from. The verified terms are the session's; nothing is
 * asked again during it. */
typedef void (*shard_verify_cb)(void *user, uint64_t ticket, const uint8_t channel[MARKET_IDLEN]);
/* A voucher was just accepted (chan_provider_accept): v is now its
 * session's best. Called before the credit it unlocks is served (no later
 * FORWARD of the session is taken before it returns), so the provider can
 * store it durably first (vstore.h). A nonzero return ends the session as a
 * refused voucher would: nothing is served on a voucher that was not kept.
 * Loop thread; v is valid during the call. */
typedef int (*shard_voucher_cb)(void *user, const voucher_t *v);
typedef struct shard_pay_cfg {
	const wallet_t *wallet;        /* borrowed, the provider's; NULL: payments off */
	amount_t price_in, price_out;  /* micro-units per 1M tokens */
	uint32_t chunk;                /* tokens per voucher (0: 64) */
	int require_payment;
	shard_settle_cb on_settle;     /* may be NULL */
	shard_voucher_cb on_voucher;   /* may be NULL */
	shard_verify_cb verify;        /* NULL: PAY_OPEN's claims are trusted */
} shard_pay_cfg_t;

#define SHARD_DEFAULT_PAY_CHUNK 64

typedef struct shard_cfg {
	const model_t *model;          /* borrowed; must have layers [layer_a, layer_b) loaded */
	int layer_a, layer_b;
	uint8_t model_id[WIRE_MODEL_ID_LEN];
	uint64_t kv_mem;               /* KV-cache budget in bytes (0: SHARD_DEFAULT_KV_MEM) */
	int max_sessions;              /* 0: SHARD_DEFAULT_MAX_SESSIONS */
	uint32_t idle_ms;              /* 0: SHARD_DEFAULT_IDLE_MS */
	int max_len;                   /* cap on a session's positions; 0: the model's n_ctx_train */
	int max_step_rows;             /* rows per batched step; 0: SHARD_DEFAULT_STEP_ROWS */
	uint64_t queue_mem;            /* decoded rows waiting, bytes; 0: SHARD_DEFAULT_QUEUE_MEM */
	pool_t *pool;                  /* borrowed, may be NULL; used by shard_step_run only */
	shard_reply_cb reply;
	void *user;
	shard_pay_cfg_t pay;
} shard_cfg_t;

void shard_cfg_default(shard_cfg_t *c);

int shard_new(const shard_cfg_t *cfg, shard_t **out, err_msg_t *e) WUR;
/* Frees every session. No step may be running. */
void shard_free(shard_t *s);

/* Handles OPEN_SESSION, FORWARD, CLOSE_SESSION, PAY_TERMS_REQ, PAY_OPEN or
 * VOUCHER from client. Replies (if
 * any are due now) go through cfg.reply before it returns; FORWARD results
 * come from a later shard_step_end. ERR_INVAL (nothing done) for any other
 * message type. */
int shard_handle(shard_t *s, void *client, const wire_msg_t *m) WUR;
/* The answer to verify(ticket): rc 0 and the channel as the settlement
 * layer holds it, or rc < 0 (ERR_NOTFOUND: no such channel; other: the
 * layer could not be asked) with why. A ticket whose PAY_OPEN is gone (its
 * client dropped, answered already) is ignored. Loop thread. */
void shard_pay_verified(shard_t *s, uint64_t ticket, int rc, const settle_channel_t *ch, const char *why);

/* The client's connection is gone: frees its sessions and queued requests
 * without replying. */
void shard_drop_client(shard_t *s, void *client);
/* Sets the clock and times out idle sessions (ERROR + CLOSE_SESSION sent). */
void shard_tick(shard_t *s, uint64_t now_ms);

/* What the shard can still admit (for its DHT record). */
void shard_free_capacity(const shard_t *s, uint32_t *free_sessions, uint64_t *free_kv_bytes);

typedef struct shard_stats {
	int sessions;                  /* open (including ones being freed) */
	uint64_t kv_used;              /* bytes of KV cache allocated */
	int queued;                    /* FORWARDs waiting */
	uint64_t steps;                /* fwd_forward calls made by steps */
	uint64_t rows;                 /* rows computed */
	uint64_t max_batch;            /* most segments in one step */
	uint64_t batched_steps;        /* steps with more than one segment */
	uint64_t tok_steps;            /* steps of one row (one session decoding alone) */
	uint64_t tok_ns;               /* time their forward passes took, summed */
} shard_stats_t;
void shard_stats(const shard_t *s, shard_stats_t *st);

/* 1 if a step could start now (work queued and no step running). */
int shard_pending(const shard_t *s);
/* Loop thread: picks the next batch. 1 if a step started (then call
 * shard_step_run once, then shard_step_end), 0 if there is nothing to do or
 * a step is already running. */
int shard_step_begin(shard_t *s);
/* Any one thread: computes the batch (forward pass and result encoding). */
void shard_step_run(shard_t *s);
/* Loop thread: sends the results, frees sessions closed meanwhile. Returns
 * shard_pending(). */
int shard_step_end(shard_t *s);
/* begin + run + end in the caller. 1 if a step ran. */
int shard_step(shard_t *s);

#endif
