/* chstore.h - the buyer's channel store: every channel the buyer reserves,
 * recorded in <wallet home>/channels.db (SQLite, WAL, synchronous=FULL, mode
 * 0600) BEFORE the reserve is sent, so that a buyer killed at any point can
 * still find, and close, every channel that may hold its money.
 *
 * Why SQLite rather than a line file: the state of a record changes (open,
 * closing, closed) and each change must be atomic and durable; an appended
 * line file would need its own torn-line recovery and compaction. The ledger
 * and the voucher store already use SQLite the same way.
 *
 * A record's life: CHSTORE_RESERVING (written before the reserve: the ledger
 * may or may not have the channel) -> CHSTORE_OPEN (the ledger confirmed) ->
 * CHSTORE_CLOSING (a buyer's close started the challenge window) ->
 * CHSTORE_CLOSED (the rest was refunded). CHSTORE_GONE: the ledger refused
 * the reserve, or has no such channel after its expiry (a reserve can no
 * longer create it), so it never held money.
 *
 * Rows are read defensively (lengths and ranges checked; a malformed row is
 * skipped and counted). A chstore_t serializes its own use (a mutex), so it
 * may be shared by threads.
 */
#ifndef COLONY_MARKET_CHSTORE_H
#define COLONY_MARKET_CHSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "market/amount.h"
#include "market/voucher.h"
#include "market/wallet.h"

#define CHSTORE_FILE_NAME "channels.db"
#define CHSTORE_LEDGER_LEN 128        /* the ledger's address text, NUL included */

enum chstore_state {
	CHSTORE_RESERVING = 0,
	CHSTORE_OPEN = 1,
	CHSTORE_CLOSING = 2,
	CHSTORE_CLOSED = 3,
	CHSTORE_GONE = 4,
};

/* "reserving", "open", "closing", "closed", "gone" ("?" otherwise). */
const char *chstore_state_str(int state);

typedef struct chstore_chan {
	uint8_t id[MARKET_IDLEN];
	uint8_t provider[WALLET_PUBLEN];
	amount_t budget;
	int64_t expiry;               /* Unix seconds */
	uint8_t ledger_id[WALLET_PUBLEN];   /* the ledger node's id; all zero if unknown */
	char ledger[CHSTORE_LEDGER_LEN];    /* its address as given ("host:port") */
	int state;                    /* enum chstore_state */
	int64_t close_at;             /* CLOSING: the end of the challenge window */
	amount_t redeemed, refunded;  /* as the ledger last reported them */
	int64_t created, updated;
} chstore_chan_t;

typedef struct chstore chstore_t;

/* Opens (creating, mode 0600) <dir>/channels.db. The store is the caller's
 * (chstore_free). ERR_IO, ERR_FORMAT (not a channel store of this version). */
int chstore_open(const char *dir, chstore_t **out, err_msg_t *e) WUR;
void chstore_free(chstore_t *s);

/* Records c (state, close_at, redeemed, refunded, created and updated are
 * set here: RESERVING, now). Durable when it returns 0. Recording an id that
 * is there already changes nothing (a retried reserve names the same
 * channel). */
int chstore_add(chstore_t *s, const chstore_chan_t *c, int64_t now, err_msg_t *e) WUR;

/* Sets a record's state and what the ledger reported (close_at, redeemed,
 * refunded). ERR_NOTFOUND if there is no such record. */
int chstore_set(chstore_t *s, const uint8_t id[MARKET_IDLEN], int state, int64_t close_at, amount_t redeemed,
	amount_t refunded, int64_t now, err_msg_t *e) WUR;

/* Calls cb for every record, oldest first; a nonzero return from cb stops the
 * walk (and is returned). *n_bad (may be NULL) gets the number of malformed
 * rows skipped. The record lives during the call; cb must not call into s. */
typedef int (*chstore_each_cb)(void *ud, const chstore_chan_t *c);
int chstore_foreach(chstore_t *s, chstore_each_cb cb, void *ud, size_t *n_bad, err_msg_t *e) WUR;

#endif
