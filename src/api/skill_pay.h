/* skill_pay.h - paid skill calls between gateways (docs/PROTOCOL.md, "Paid
 * skill calls").
 *
 * A gateway that offers a priced skill (fee per call, price per 1M output
 * tokens) and has a wallet and a ledger peer is a provider: a call without
 * payment headers gets HTTP 402 with the terms (its wallet, the prices and
 * the chunk); a call with X-Colony-Channel / X-Colony-Buyer /
 * X-Colony-Voucher is served once the channel checks out at the ledger and
 * the voucher covers everything before plus this call's fee. The answer is
 * always streamed; every `chunk` output tokens and at the end the provider
 * adds the SSE comment line ": colony-receipt HEX" (a receipt_t it signed);
 * the buyer answers each with a voucher through POST /v1/pay/voucher.
 * Bounded credit: at most `chunk` output tokens beyond the last voucher.
 * When the call ends, the provider redeems the channel's best voucher.
 * Accepted vouchers go to <wallet home>/vouchers.db before their credit is
 * served, and a buyer's channels to channels.db before they are reserved
 * (vstore.h, chstore.h: the node's periodic redeem and `colony wallet
 * reclaim` cover skill payments too).
 *
 * A gateway with a wallet and a ledger peer that relays a priced skill is a
 * buyer: on 402 it reserves a channel (its skill budget, one hour) with the
 * provider's wallet, keeps it for later calls while the budget lasts, and
 * pays as described; it strips the receipt lines before the answer reaches
 * its client and assembles a whole response if the client did not ask for
 * a stream.
 *
 * Charge, the same on both sides: calls x fee_call + ceil(out x price_out /
 * 1e6), cumulative over the channel. Vouchers and receipts carry
 * in_tokens = the number of calls and out_tokens = the output tokens; the
 * channel's price_in is fee_call x 1e6, so amount_charge2 gives exactly
 * calls x fee_call.
 *
 * Threads: every function may block (ledger round trips, the provider's
 * gateway) and is called on the gateway's connection threads; the state
 * shared between calls (channels) is under one mutex.
 */
#ifndef COLONY_API_SKILL_PAY_H
#define COLONY_API_SKILL_PAY_H

#include <stddef.h>
#include <stdint.h>

#include "api/oai.h"
#include "api/skill.h"
#include "base/err.h"
#include "market/channel.h"
#include "market/settle.h"
#include "market/voucher.h"

#define SPAY_HDR_CHANNEL "X-Colony-Channel"
#define SPAY_HDR_BUYER "X-Colony-Buyer"
#define SPAY_HDR_VOUCHER "X-Colony-Voucher"
#define SPAY_VOUCHER_PATH "/v1/pay/voucher"
#define SPAY_RECEIPT_TAG ": colony-receipt "      /* the SSE comment line of a receipt */
#define SPAY_DEFAULT_BUDGET 1000000               /* micro-units per channel a buyer reserves */
#define SPAY_DEFAULT_CHUNK 16                     /* output tokens per receipt */
#define SPAY_EXPIRY_S 3600                        /* lifetime of a channel a buyer reserves */
#define SPAY_WAIT_MS 5000                         /* a provider waits this long for a voucher */
#define SPAY_MAX_CHANNELS 256                     /* channels a gateway keeps (each side) */
#define SPAY_RECHECK_S 30                         /* a provider re-reads a channel at the ledger after */

typedef struct spay spay_t;

typedef struct spay_cfg {
	const char *wallet_home;       /* <dir>/wallet.key is loaded or created */
	const char *ledger_peer;       /* "HOST:PORT" of the ledger node */
	const char *network;           /* NULL: "colony" */
	int64_t budget;                /* buyer: per channel (0: SPAY_DEFAULT_BUDGET) */
	uint32_t chunk;                /* provider: output tokens per receipt (0: SPAY_DEFAULT_CHUNK) */
	int ledger_timeout_ms;         /* per ledger call (0: 5000) */
	settle_t settle;               /* tests: this backend (borrowed, thread-safe) instead of
	                                  ledger_peer; ops NULL: dial ledger_peer */
} spay_cfg_t;

/* Loads the wallet; the ledger is dialled on first use. ERR_INVAL (bad
 * ledger_peer), the wallet's errors. */
int spay_new(const spay_cfg_t *cfg, spay_t **out, err_msg_t *e) WUR;
/* Redeems nothing more (each call redeemed when it ended). NULL is fine. */
void spay_free(spay_t *p);
const uint8_t *spay_wallet(const spay_t *p);
/* Micro-units redeemed as provider / paid in vouchers as buyer, since start. */
int64_t spay_earned(const spay_t *p);
int64_t spay_spent(const spay_t *p);

static inline int spay_priced(const skill_def_t *d) { return skill_priced(d); }

/* ---- terms (the 402 body) ----------------------------------------------- */

typedef struct spay_terms {
	uint8_t wallet[WALLET_PUBLEN];
	int64_t fee_call, price_out;
	uint32_t chunk;
} spay_terms_t;

/* {"error": {..., "code": "payment_required"}, "payment": {"wallet",
 * "fee_call", "price_out", "chunk", "skill"}} (malloc'd; NULL: no memory). */
char *spay_terms_json(const spay_t *p, const skill_def_t *sk, const char *msg);
/* Reads the "payment" object of such a body (untrusted: fuzzed).
 * ERR_FORMAT with where. */
int spay_terms_parse(const char *body, size_t len, spay_terms_t *t, err_msg_t *e) WUR;

/* ---- receipt lines ------------------------------------------------------ */

/* ": colony-receipt " + 354 hex digits + "\n\n" (cap >= 380): its length. */
size_t spay_receipt_line(const receipt_t *r, char *out, size_t cap);
/* A line (without its newline) that starts with SPAY_RECEIPT_TAG: the
 * receipt, decoded, signature not checked. ERR_FORMAT (not hex, length),
 * the decoder's codes. */
int spay_receipt_parse(const char *line, size_t len, receipt_t *r, err_msg_t *e) WUR;

/* ---- provider ----------------------------------------------------------- */

typedef struct spay_call spay_call_t;

/* A paid call of skill sk with the three header values (NULL if absent):
 * checks the channel at the ledger (when first seen or not checked for
 * SPAY_RECHECK_S), then the voucher, which must count this call
 * (in_tokens = calls before + 1). Errors in *err: 400 (malformed header),
 * 402 (payment_required: refused channel or voucher), 409 (the channel
 * serves another call now), 503 (ledger unreachable, too many channels). */
int spay_call_open(spay_t *p, const skill_def_t *sk, const char *channel, const char *buyer, const char *voucher,
	spay_call_t **out, oai_err_t *err) WUR;
/* How many more output tokens may be delivered now, `done` having been
 * delivered in this call. 0 with *broke = 1: the budget allows no more
 * (waiting would not help). */
uint64_t spay_call_credit(spay_call_t *c, uint64_t done, int *broke);
/* Waits up to wait_ms for a new voucher; 1 if one came. */
int spay_call_wait(spay_call_t *c, int wait_ms);
/* 1 if a receipt is due after `done` tokens: a chunk since the last one,
 * or (final) anything not receipted yet. */
int spay_call_receipt_due(spay_call_t *c, uint64_t done, int final);
/* Signs the receipt for `done` tokens and writes its SSE line (cap >= 380):
 * its length, or 0 if it could not be signed (logged). */
size_t spay_call_receipt(spay_call_t *c, uint64_t done, char *line, size_t cap);
/* 1 once the vouchers cover `done` tokens of this call. */
int spay_call_covered(spay_call_t *c, uint64_t done);
/* Ends the call: redeems the channel's best voucher at the ledger (blocks
 * for the round trip; logs), frees the call. NULL is fine. */
void spay_call_close(spay_call_t *c);
/* The call was refused after spay_call_open (an error status, nothing
 * delivered): the channel goes back to the voucher before it, as the buyer
 * does on any answer but 200 and 402, so the call costs nothing. Frees it. */
void spay_call_abort(spay_call_t *c);

/* The body of POST /v1/pay/voucher (untrusted: fuzzed): the hex digits of
 * one voucher, or {"voucher": "<hex>"}, blanks around. 0 with *v decoded
 * (signature not checked), or the HTTP status of an error in *err (400). */
int spay_voucher_body_parse(const char *body, size_t len, voucher_t *v, oai_err_t *err) WUR;
/* POST /v1/pay/voucher: the body is the voucher in hex, or {"voucher":
 * hex}. 0, or the HTTP status with *err (400 malformed, 402 refused:
 * voucher_err_str's reason, or no paid call on that channel here). */
int spay_voucher_post(spay_t *p, const char *body, size_t len, oai_err_t *err);

/* ---- buyer -------------------------------------------------------------- */

typedef struct spay_relay spay_relay_t;

/* Sends a paid call of a skill to the gateway of `offer`: the request body
 * (already validated) goes with stream and usage asked for; a 402 with
 * terms (whose prices must be the offer's) reserves or reuses a channel
 * and the call is sent again with the payment headers. gone(ud) is polled
 * while waiting (the client left: ERR_IO). On success the relay is ready
 * to read the answer (spay_relay_status is the provider's HTTP status; a
 * non-200 answer passes through as it is). Errors in *err: 402 (cannot pay:
 * the ledger refused the reserve), 502 (the provider misbehaved), 503
 * (unreachable). */
int spay_relay_open(spay_t *p, const ann_t *offer, const char *path, const char *body, size_t len,
	int client_stream, int client_usage, int64_t max_tokens, int (*gone)(void *), void *ud,
	spay_relay_t **out, oai_err_t *err) WUR;
int spay_relay_status(const spay_relay_t *r);
const char *spay_relay_content_type(const spay_relay_t *r);
/* Streamed to the client: up to max bytes of the answer with receipt lines
 * taken out (and answered with vouchers), waiting up to wait_ms. *n may be
 * 0; *done = 1 at the end. A bad receipt or a broken answer: nonzero with
 * *err (502 / 503); no voucher is sent for it. */
int spay_relay_read(spay_relay_t *r, char *buf, size_t max, int wait_ms, size_t *n, int *done, oai_err_t *err) WUR;
/* Whole answer for a client that asked for none streamed: reads to the end
 * (gone polled) and builds the chat.completion JSON (or the provider's
 * error): *status and the malloc'd body. */
int spay_relay_whole(spay_relay_t *r, int *status, char **body, oai_err_t *err) WUR;
/* The streamed answer as a libmicrohttpd response (Content-Type and
 * X-Colony-Skill-Provider: provider_node in hex set): it owns r from then on
 * (also when NULL is returned: out of memory). Reads until the end, the
 * client's socket fd closing, or *stopping; a failure once the head is out
 * goes to the client as an error event. */
struct MHD_Response;
struct MHD_Response *spay_relay_response(spay_relay_t *r, int fd, const int *stopping, size_t block,
	const uint8_t provider_node[ANN_IDLEN]);
/* Releases the channel for other calls. NULL is fine. */
void spay_relay_free(spay_relay_t *r);

/* The relay's SSE reader without a provider, for the fuzz target: feeds
 * bytes of an answer; receipts are checked against a channel of `b` (the
 * buyer's own count). 0, or the HTTP status with *err. */
spay_relay_t *spay_relay_test_new(const chan_terms_t *t, const wallet_t *buyer, int client_stream, int client_usage,
	int64_t max_tokens);
int spay_relay_test_feed(spay_relay_t *r, const char *data, size_t n, oai_err_t *err);

#endif
