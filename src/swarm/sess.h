/* sess.h - the client session: one generation streamed through a chain of
 * shard servers, with hot failover.
 *
 * A sess_t holds the client's part of the model (embedding, final norm,
 * output head: a model_t with has_embd, any layer range), the candidate
 * servers (route.h), and a route: hops, each a server, its span and the
 * session id opened there. Like shard.c it is transport-agnostic and does no
 * I/O: it is a state machine fed with events, sending through a callback.
 *
 * Event contract (all calls from one thread, the caller's loop):
 *   - Out: cfg.send(user, server, msg) sends a session message to a server.
 *     msg and its views live during the call only. send must not call back
 *     into this sess_t (queue, or write to a connection).
 *   - In:  sess_on_msg(s, server, msg) for every OPEN_OK, OPEN_ERR,
 *     FORWARD_RESULT, CLOSE_SESSION and ERROR received from a server;
 *     sess_on_server_lost(s, server) when its connection is gone;
 *     sess_tick(s, now_ms) regularly (it sets the clock and fires timeouts).
 *     Messages from servers not in the route (late replies from a server
 *     already replaced) are ignored.
 *   - Results: cfg.on_token(user, token, logits, n_vocab) for each sampled
 *     token (logits of the position that produced it, borrowed during the
 *     call); returning nonzero stops the generation there. When the session
 *     ends (n_predict tokens, stopped, or failed) cfg.on_done(user, rc, msg)
 *     is called once, every open hop is sent CLOSE_SESSION, and
 *     sess_state() is SESS_DONE or SESS_FAILED.
 *
 * Dataflow. Inputs are kept per layer boundary: hist[p] holds the hidden
 * state entering layer p for positions 0..len-1, for every boundary that
 * starts a hop (hist[0] is the embeddings). Each hop has at most one FORWARD
 * in flight, and sends positions done..len(hist[a]) as soon as it is open
 * and idle (at most max_rows rows a message), so prompt chunks flow through
 * the chain as a pipeline. A FORWARD_RESULT of hop [a, b) appends to hist[b]
 * (when it holds new positions); one of the last hop that ends at the newest
 * position goes through fwd_head, the sampler picks the token, its
 * embedding is appended to hist[0], and so on.
 *
 * Failover. A hop fails when its server's connection is lost, it sends
 * CLOSE_SESSION for the hop's session, OPEN_ERR, ERROR, or anything invalid
 * (wrong session id, positions, shape or encoding, non-finite data, a message
 * type a server never sends to a client), or does not answer an OPEN or a
 * FORWARD within cfg.timeout_ms. Then: CLOSE_SESSION is sent to it (unless
 * the connection is gone or it closed the session itself), it is banned
 * (route_ban), the span is re-planned over the other usable candidates
 * (route_plan on [a, b)), sessions are opened there, and each new hop is
 * fed its inputs from position 0 (replay; new internal boundaries are
 * rebuilt from the results), which rebuilds its KV cache and then continues
 * the interrupted step. The forward pass is deterministic, so the tokens and
 * logits are those of an uninterrupted run, provided the new hops split the
 * span at the same boundaries or the encoding is F32 (F16/Q8 round at each
 * hop boundary). With no chain left for a span the session fails with
 * ERR_NOTFOUND and a message naming the uncovered layers.
 *
 * Memory: hist holds positions x n_embd floats per hop boundary in use.
 */
#ifndef COLONY_SWARM_SESS_H
#define COLONY_SWARM_SESS_H

#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "net/wire.h"
#include "swarm/route.h"

#define SESS_DEFAULT_TIMEOUT_MS 10000u
#define SESS_DEFAULT_MAX_FAILOVERS 32
#define SESS_MAX_HOPS 64

typedef struct sess sess_t;

typedef void (*sess_send_cb)(void *user, uint64_t server, const wire_msg_t *m);
/* A sampled token; return nonzero to stop after it. */
typedef int (*sess_token_cb)(void *user, int32_t token, const float *logits, int n_vocab);
/* The end: rc 0 (done or stopped) or a negative ERR_*, msg says why. */
typedef void (*sess_done_cb)(void *user, int rc, const char *msg);

/* Payments (optional; docs/PROTOCOL.md "Paid sessions"). pay_open is asked
 * before each OPEN_SESSION: 0 opens the session unpaid at once;
 * SESS_PAY_WAIT holds the open until the caller, once its channel is
 * reserved, calls sess_pay_ready (or sess_pay_failed); the hop's open
 * deadline runs meanwhile. pay_count is told the rows [start, start + n) a
 * hop delivered, right after each FORWARD_RESULT is accepted and before
 * anything else is sent to that hop, and with final = 1 (n = 0) just before
 * the session sends it CLOSE_SESSION; returning 1 sends *voucher (filled by
 * the callback) first; returning -1 (a refused charge) fails the hop with
 * the text of the WIRE_ERROR the callback put in *voucher (no voucher).
 * Neither may call back into this sess_t. */
#define SESS_PAY_WAIT 1
typedef int (*sess_pay_open_cb)(void *user, uint64_t server, uint64_t session_id);
typedef int (*sess_pay_count_cb)(void *user, uint64_t server, uint64_t session_id, int start, int n, int final,
				 wire_msg_t *voucher);

typedef struct sess_cfg {
	const model_t *model;          /* borrowed; has_embd (embedding, norm, head) */
	pool_t *pool;                  /* borrowed, may be NULL: for the head */
	uint8_t model_id[WIRE_MODEL_ID_LEN];
	int n_layer;                   /* layers to route over; 0: model->hp.n_layer */
	uint8_t enc;                   /* enum wire_enc for every hop */
	uint8_t kv_type;               /* enum wire_kv asked of every hop */
	int max_len;                   /* positions asked of each hop; 0: prompt + n_predict */
	int max_rows;                  /* rows per FORWARD; 0: sess_max_rows(enc, n_embd) */
	uint32_t timeout_ms;           /* 0: SESS_DEFAULT_TIMEOUT_MS */
	int max_failovers;             /* 0: SESS_DEFAULT_MAX_FAILOVERS */
	route_cost_t cost;             /* zeroed: route_cost_default */
	smp_chain_t *smp;              /* borrowed; the session calls smp_sample, smp_accept */
	uint64_t sid_seed;             /* session ids: 0 = random, else derived from it (tests) */
	sess_send_cb send;
	sess_token_cb on_token;        /* may be NULL */
	sess_done_cb on_done;          /* may be NULL */
	sess_pay_open_cb pay_open;     /* NULL: free sessions (both NULL or both set) */
	sess_pay_count_cb pay_count;
	void *user;
} sess_cfg_t;

enum sess_state { SESS_IDLE = 0, SESS_RUNNING, SESS_DONE, SESS_FAILED };

typedef struct sess_stats {
	int failovers;                 /* hops replaced */
	uint64_t rows_sent;            /* rows in FORWARDs */
	uint64_t rows_replayed;        /* of those, rows a replaced hop had already computed */
	uint64_t msgs_sent, msgs_received;
	int n_generated;
	int last_failover_pos;         /* newest position (hist[0] length) at the last failover; -1 none */
} sess_stats_t;

/* A hop of the current route (for display and tests). */
typedef struct sess_hop_info {
	uint64_t server;
	int layer_a, layer_b;
	uint64_t session_id;
	int open;                      /* OPEN_OK received */
	int done;                      /* positions it has computed */
	double tok_ms;                 /* mean round trip of its one-row FORWARDs (send to result,
					* the server's compute included); 0: none yet */
} sess_hop_info_t;

void sess_cfg_default(sess_cfg_t *c);

/* Rows of one FORWARD that fit WIRE_MAX_MSG in encoding enc at dim (at most
 * WIRE_MAX_TOKENS): 127 for F16 at 4096. 0 if the shape is not encodable. */
int sess_max_rows(int enc, uint32_t dim);

int sess_new(const sess_cfg_t *cfg, sess_t **out, err_msg_t *e) WUR;
/* Frees everything; sends nothing (call sess_cancel first to close hops). */
void sess_free(sess_t *s);

/* Adds a candidate server, or updates the one with the same id (its ban
 * state is kept). ERR_FULL past 4096 candidates. */
int sess_server_set(sess_t *s, const route_server_t *srv) WUR;
/* The candidate with that id (borrowed until the next sess_server_set), or NULL. */
const route_server_t *sess_server_get(const sess_t *s, uint64_t id);

/* Plans the route over [0, n_layer) at the time of the last sess_tick (call
 * it first: deadlines are counted from it), opens a session on every hop, and
 * starts generating n_predict tokens after the prompt. Errors (nothing sent):
 * ERR_NOTFOUND from route_plan, ERR_INVAL (bad prompt token, n_predict < 1,
 * already started), ERR_RANGE (prompt + n_predict over max_len). */
int sess_start(sess_t *s, const int32_t *prompt, int n_prompt, int n_predict, err_msg_t *e) WUR;

void sess_on_msg(sess_t *s, uint64_t server, const wire_msg_t *m);
/* The channel of a hop held by SESS_PAY_WAIT is ready: sends pay_open (a
 * PAY_OPEN for that session, borrowed during the call; NULL: the server
 * turned out to take no payments), then OPEN_SESSION.
 * sess_pay_failed fails the hop (failover) with msg. Both ignore a hop that
 * is gone or not waiting. */
void sess_pay_ready(sess_t *s, uint64_t server, uint64_t session_id, const wire_msg_t *pay_open);
void sess_pay_failed(sess_t *s, uint64_t server, uint64_t session_id, const char *msg);
void sess_on_server_lost(sess_t *s, uint64_t server);
void sess_tick(sess_t *s, uint64_t now_ms);
/* Ends a running session now (CLOSE_SESSION to every hop, on_done(0, "cancelled")). */
void sess_cancel(sess_t *s);

enum sess_state sess_state(const sess_t *s);
/* The failure's code and text (0, "" unless SESS_FAILED). */
int sess_error(const sess_t *s, const char **msg);
/* Tokens generated so far (borrowed). */
const int32_t *sess_tokens(const sess_t *s, int *n);
void sess_stats(const sess_t *s, sess_stats_t *st);
/* Writes up to cap hops of the current route; returns their count. */
int sess_route(const sess_t *s, sess_hop_info_t *out, int cap);
/* The earliest deadline pending (for the caller's timer), or UINT64_MAX. */
uint64_t sess_next_deadline(const sess_t *s);

#endif
