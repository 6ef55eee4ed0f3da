/* ledger.h - the built-in settlement backend: accounts, channels, redeemed
 * vouchers and slashes in one SQLite database (WAL). Implements settle.h;
 * its rules are there. The ledger service that any node may run (later)
 * exposes it over the encrypted transport.
 *
 * Integrity, in layers: every operation is one transaction (BEGIN
 * IMMEDIATE, so concurrent writers, threads or processes, serialize on the
 * database lock, waiting up to busy_timeout_ms); CHECK constraints refuse a
 * negative balance, stake or budget and a channel paid beyond its budget;
 * the primary key (channel, sequence) of the redemptions table makes a
 * voucher payable once; ledger_audit() checks the conservation law
 *   sum(balances) + sum(stakes) + sum(unspent budgets) == deposits - withdrawals
 * and that each channel's payments add up to its highest redeemed voucher.
 * A process killed at any point leaves the database at the last committed
 * operation (tests/unit/test_ledger_crash.c kills writers with SIGKILL).
 *
 * A ledger_t may be shared by threads (a mutex serializes its use); several
 * processes or handles may open the same file.
 */
#ifndef COLONY_MARKET_LEDGER_H
#define COLONY_MARKET_LEDGER_H

#include <stdint.h>

#include "base/err.h"
#include "market/settle.h"

typedef struct ledger ledger_t;

typedef struct ledger_opts {
	int64_t window;               /* challenge window, seconds (default 3600) */
	int sync_normal;              /* synchronous=NORMAL instead of FULL: in WAL mode a
	                                 process crash loses nothing, a power loss may lose
	                                 the last commits */
	int busy_timeout_ms;          /* wait for another writer (default 10000) */
} ledger_opts_t;

void ledger_opts_default(ledger_opts_t *o);

/* Opens (creating if needed, mode 0600) the database at path. opts NULL =
 * defaults. The ledger is the caller's (ledger_free). ERR_IO with SQLite's
 * message, ERR_FORMAT if the file is not a ledger of this version. */
int ledger_open(const char *path, const ledger_opts_t *opts, ledger_t **out, err_msg_t *e) WUR;

/* Closes the database; NULL is fine. */
void ledger_free(ledger_t *l);

/* The settle.h view of l (borrowed: valid while l lives). */
settle_t ledger_settle(ledger_t *l);

/* The operations of settle.h, directly. */
int ledger_deposit(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e) WUR;
int ledger_withdraw(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e) WUR;
int ledger_stake(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e) WUR;
int ledger_unstake(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e) WUR;
int ledger_reserve(ledger_t *l, const settle_reserve_t *r, int64_t now, uint8_t id[MARKET_IDLEN], err_msg_t *e) WUR;
int ledger_redeem(ledger_t *l, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e) WUR;
int ledger_close(ledger_t *l, const uint8_t id[MARKET_IDLEN], int party, int64_t now,
	settle_channel_t *out, err_msg_t *e) WUR;
int ledger_slash(ledger_t *l, const uint8_t provider[WALLET_PUBLEN], amount_t amount,
	const uint8_t beneficiary[WALLET_PUBLEN], const uint8_t evidence[MARKET_IDLEN], int64_t now,
	amount_t *slashed, err_msg_t *e) WUR;
int ledger_account(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], settle_account_t *out, err_msg_t *e) WUR;
int ledger_channel(ledger_t *l, const uint8_t id[MARKET_IDLEN], settle_channel_t *out, err_msg_t *e) WUR;

/* The ledger service's replay guard: accepts nonce (1..2^63-1) for wallet
 * only if it is above the last one accepted for that wallet, and records
 * it durably (its own transaction, committed before the request runs, so a
 * request executes at most once). ERR_INVAL "replayed or stale request"
 * otherwise. */
int ledger_nonce_take(ledger_t *l, const uint8_t wallet[WALLET_PUBLEN], uint64_t nonce, err_msg_t *e) WUR;

/* Runs op(arg) as the request of wallet numbered nonce, so that a request
 * runs at most once even across a crash: the nonce is checked first
 * (ERR_INVAL "replayed or stale request"; op does not run), then taken in
 * the same SQLite transaction as op's write, which therefore commits both
 * or neither. If op writes nothing (a read) or fails, the nonce is taken
 * in a transaction of its own afterwards. op must call this ledger's
 * operations from the calling thread, at most one writing one; other
 * threads' calls wait until it returns. Not nestable. */
int ledger_guarded(ledger_t *l, const uint8_t wallet[WALLET_PUBLEN], uint64_t nonce,
	int (*op)(void *arg, err_msg_t *e), void *arg, err_msg_t *e) WUR;

typedef struct ledger_totals {
	amount_t deposits, withdrawals;
	amount_t balances, stakes, reserved;  /* sums over accounts and channels */
	amount_t redeemed, refunded, slashed; /* sums over channels and slashes */
	int64_t accounts, channels, redemptions;
} ledger_totals_t;

/* Checks every invariant in one read transaction: conservation, each
 * channel's redeemed == sum of its payments == its highest redeemed voucher
 * amount, redeemed + refunded == budget once closed (refunded == 0 before),
 * no negative value. 0 if all hold; ERR_FORMAT with the first violation in
 * e otherwise. *t (may be NULL) gets the sums. */
int ledger_audit(ledger_t *l, ledger_totals_t *t, err_msg_t *e) WUR;

#endif
