/* chrec.h - a buyer's settle_t that records every reserve in a channel store
 * (chstore.h) BEFORE the reserve leaves, and later closes, as buyer, the
 * channels reserved through it.
 *
 * Why a wrapper: the swarm client reserves channels on its own worker
 * threads through a settle_t (client.h, pay_settle); wrapping that settle_t
 * is the one place that sees every reserve, so a buyer killed at any point
 * finds every channel that may hold its money in channels.db (colony wallet
 * reclaim), and a buyer that lives on closes what it reserved so the unspent
 * budgets come back after the ledger's challenge window.
 *
 * Every operation other than reserve goes straight to the inner settle_t.
 * A reserve refused by the ledger marks its record GONE; one whose reply
 * was lost (ERR_IO) stays RESERVING (it may have run) and is closed like the
 * others.
 *
 * Closing: chrec_close closes given channels (those of one finished
 * generation), chrec_close_all every channel not closed yet. A buyer's
 * close starts the challenge window (CLOSING); chrec_finish closes those
 * channels again once their window has passed, which refunds the rest, and
 * retries closes that failed (an unreachable ledger).
 *
 * Threads: the settle_t view may be used from any number of threads at
 * once (the inner settle_t must allow that too; settle_remote does). The
 * close functions are called from one thread at a time, and they block for
 * ledger round trips: never call them on an event loop's thread.
 */
#ifndef COLONY_MARKET_CHREC_H
#define COLONY_MARKET_CHREC_H

#include <stdint.h>

#include "base/err.h"
#include "market/chstore.h"
#include "market/settle.h"

typedef struct chrec chrec_t;

typedef struct chrec_cfg {
	settle_t inner;                /* borrowed: the ledger client; outlives the chrec_t */
	chstore_t *cs;                 /* borrowed: where reserves are recorded; outlives it */
	const uint8_t *ledger_id;      /* the ledger node's id (32 bytes), or NULL: unknown */
	const char *ledger;            /* its address text ("host:port"), or NULL */
} chrec_cfg_t;

/* What one close did (for the caller's messages; borrowed during the call). */
typedef struct chrec_closed {
	uint8_t id[MARKET_IDLEN];
	int rc;                        /* 0, or the ledger client's error (msg in e) */
	err_msg_t e;
	settle_channel_t ch;           /* rc == 0: the channel after the close */
	int state;                     /* rc == 0: enum chstore_state recorded (OPEN, CLOSING, CLOSED) */
} chrec_closed_t;

typedef void (*chrec_closed_cb)(void *ud, const chrec_closed_t *c);

/* The chrec_t is the caller's (chrec_free). ERR_NOMEM. */
int chrec_new(const chrec_cfg_t *cfg, chrec_t **out, err_msg_t *e) WUR;
/* Frees it (closes nothing; NULL is fine). No call through its settle_t may
 * be running. */
void chrec_free(chrec_t *r);

/* The settle.h view (valid while r lives). */
settle_t chrec_settle(chrec_t *r);

/* Closes as buyer those of ids[0..n) that were reserved through r and are
 * neither closed nor closing (others are skipped). cb (may be NULL) hears
 * of each close tried. Returns how many were tried. */
int chrec_close(chrec_t *r, const uint8_t (*ids)[MARKET_IDLEN], int n, chrec_closed_cb cb, void *ud);
/* The same for every channel reserved through r. */
int chrec_close_all(chrec_t *r, chrec_closed_cb cb, void *ud);
/* Closes again the channels whose challenge window has ended by now (Unix
 * seconds; the ledger's clock decides, so one closed too early stays
 * CLOSING with a new close_at), and retries closes that failed. Returns how
 * many channels still wait (closing, or a failed close). */
int chrec_finish(chrec_t *r, int64_t now, chrec_closed_cb cb, void *ud);
/* Channels reserved through r (any state). */
int chrec_count(chrec_t *r);

#endif
