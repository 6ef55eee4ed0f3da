/* settle.h - the settlement interface: where money is held, channels are
 * funded and vouchers are turned into payments. One implementation today,
 * the SQLite ledger (ledger.h); an on-chain payment-channel contract can
 * replace it behind the same operations (docs/ARCHITECTURE.md, "The
 * market", says what such a backend must provide).
 *
 * Accounts are wallet addresses (ed25519 public keys). Money is in
 * micro-units (amount.h). Each account has a free balance and a stake; each
 * channel locks part of its buyer's balance as a budget for one provider.
 * Conservation: the sum of all balances, stakes and unspent channel budgets
 * equals the deposits minus the withdrawals, always.
 *
 * Channel life: reserve (budget moves from the buyer's balance into the
 * channel) -> redeem, any number of times (the provider presents the buyer's
 * latest cumulative voucher and is paid the difference over what the
 * channel already paid; the same voucher twice, or an older one, pays
 * nothing) -> close. A close by the provider settles at once (it gives up
 * later redeems). A close by the buyer starts a challenge window during
 * which the provider may still redeem; a close after the window (or any
 * close once expiry + window has passed) refunds what is left to the buyer.
 * Redeems are accepted until expiry + window (or the end of a buyer's close
 * window, if sooner), so a provider can always cash the last voucher it got
 * before expiry.
 *
 * Time is passed in (Unix seconds), never read inside, so tests and a
 * chain's block time drive it alike. Callers are trusted: the ledger
 * service that exposes these operations over the transport authenticates
 * who may deposit, withdraw or close; redeem needs no trust (the voucher
 * carries the buyer's signature).
 *
 * Every operation is atomic: it happens entirely or not at all, and its
 * effects are durable when it returns 0.
 */
#ifndef COLONY_MARKET_SETTLE_H
#define COLONY_MARKET_SETTLE_H

#include <stdint.h>

#include "base/err.h"
#include "market/amount.h"
#include "market/voucher.h"
#include "market/wallet.h"

enum settle_state { SETTLE_OPEN = 0, SETTLE_CLOSING = 1, SETTLE_CLOSED = 2 };
enum settle_party { SETTLE_BY_BUYER = 0, SETTLE_BY_PROVIDER = 1 };

typedef struct settle_account {
	amount_t balance;             /* free: withdrawable, reservable, stakable */
	amount_t stake;               /* locked as collateral, slashable */
	amount_t reserved;            /* sum of unspent budgets of its open channels (as buyer) */
} settle_account_t;

typedef struct settle_channel {
	uint8_t id[MARKET_IDLEN];
	uint8_t buyer[WALLET_PUBLEN], provider[WALLET_PUBLEN];
	amount_t budget;
	amount_t redeemed;            /* paid to the provider so far */
	amount_t refunded;            /* returned to the buyer at close */
	int64_t expiry;
	int64_t close_at;             /* CLOSING: when the window ends; else 0 */
	uint64_t last_seq;            /* sequence of the voucher that set `redeemed` */
	int state;                    /* enum settle_state */
} settle_channel_t;

typedef struct settle_reserve {
	uint8_t buyer[WALLET_PUBLEN], provider[WALLET_PUBLEN];
	amount_t budget;              /* > 0 */
	int64_t expiry;               /* Unix seconds, > now */
	uint8_t nonce[MARKET_IDLEN];  /* the buyer's; the channel id derives from it */
} settle_reserve_t;

typedef struct settle_ops {
	int (*deposit)(void *impl, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e);
	int (*withdraw)(void *impl, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e);
	int (*stake)(void *impl, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e);
	int (*unstake)(void *impl, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e);
	int (*reserve)(void *impl, const settle_reserve_t *r, int64_t now, uint8_t id[MARKET_IDLEN], err_msg_t *e);
	int (*redeem)(void *impl, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e);
	int (*close)(void *impl, const uint8_t id[MARKET_IDLEN], int party, int64_t now,
		settle_channel_t *out, err_msg_t *e);
	int (*slash)(void *impl, const uint8_t provider[WALLET_PUBLEN], amount_t amount,
		const uint8_t beneficiary[WALLET_PUBLEN], const uint8_t evidence[MARKET_IDLEN], int64_t now,
		amount_t *slashed, err_msg_t *e);
	int (*account)(void *impl, const uint8_t addr[WALLET_PUBLEN], settle_account_t *out, err_msg_t *e);
	int (*channel)(void *impl, const uint8_t id[MARKET_IDLEN], settle_channel_t *out, err_msg_t *e);
} settle_ops_t;

/* A backend: its operations and its state (borrowed; the backend's own
 * close/free function ends it). */
typedef struct settle {
	const settle_ops_t *ops;
	void *impl;
} settle_t;

/* Adds external money to addr's balance (a bank transfer, a chain deposit).
 * ERR_RANGE if amount <= 0 or the total of deposits would pass AMOUNT_MAX. */
static inline int WUR settle_deposit(settle_t *s, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{ return s->ops->deposit(s->impl, addr, amount, e); }

/* Takes money out of addr's free balance. ERR_RANGE: amount <= 0 or more than
 * the balance. */
static inline int WUR settle_withdraw(settle_t *s, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{ return s->ops->withdraw(s->impl, addr, amount, e); }

/* Moves balance to stake and back. ERR_RANGE if not enough. */
static inline int WUR settle_stake(settle_t *s, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{ return s->ops->stake(s->impl, addr, amount, e); }
static inline int WUR settle_unstake(settle_t *s, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{ return s->ops->unstake(s->impl, addr, amount, e); }

/* Opens a channel: the budget leaves the buyer's balance. id = the channel
 * id (voucher_channel_id of buyer, provider, nonce). Repeating a reserve
 * with the same terms returns the same id and moves nothing (a retry after
 * a lost reply is safe); the same id with other terms is ERR_INVAL.
 * ERR_RANGE: budget <= 0, expiry <= now, or a balance too small. */
static inline int WUR settle_reserve(settle_t *s, const settle_reserve_t *r, int64_t now,
	uint8_t id[MARKET_IDLEN], err_msg_t *e)
{ return s->ops->reserve(s->impl, r, now, id, e); }

/* Pays the provider voucher.amount minus what the channel already paid
 * (*paid, 0 if the voucher is not above it). A (channel, sequence) pays at
 * most once: presenting it again returns 0 with *paid = 0. Refusals:
 * ERR_NOTFOUND (no such channel), VOUCHER_E_FORGED, VOUCHER_E_CLOSED,
 * VOUCHER_E_EXPIRED (past expiry + window), VOUCHER_E_OVER_BUDGET. */
static inline int WUR settle_redeem(settle_t *s, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e)
{ return s->ops->redeem(s->impl, v, now, paid, e); }

/* Closes (see the top of this file); *out (may be NULL) gets the channel
 * after the call: CLOSING with close_at, or CLOSED with the refund.
 * Closing a closed channel returns 0 and changes nothing. */
static inline int WUR settle_close(settle_t *s, const uint8_t id[MARKET_IDLEN], int party, int64_t now,
	settle_channel_t *out, err_msg_t *e)
{ return s->ops->close(s->impl, id, party, now, out, e); }

/* Takes up to amount from provider's stake (*slashed: what was taken, less
 * if the stake was smaller) and credits it to beneficiary (the auditor or
 * the harmed buyer). evidence = hash of the signed audit failure; a slash
 * for the same evidence happens once (again: 0, *slashed = 0). */
static inline int WUR settle_slash(settle_t *s, const uint8_t provider[WALLET_PUBLEN], amount_t amount,
	const uint8_t beneficiary[WALLET_PUBLEN], const uint8_t evidence[MARKET_IDLEN], int64_t now,
	amount_t *slashed, err_msg_t *e)
{ return s->ops->slash(s->impl, provider, amount, beneficiary, evidence, now, slashed, e); }

/* An unknown address is an empty account (all zero), not an error. */
static inline int WUR settle_account(settle_t *s, const uint8_t addr[WALLET_PUBLEN], settle_account_t *out, err_msg_t *e)
{ return s->ops->account(s->impl, addr, out, e); }

/* ERR_NOTFOUND if there is no such channel. */
static inline int WUR settle_channel(settle_t *s, const uint8_t id[MARKET_IDLEN], settle_channel_t *out, err_msg_t *e)
{ return s->ops->channel(s->impl, id, out, e); }

#endif
