/* channel.h - both ends of a payment channel during a session: the
 * provider's checks of incoming vouchers and its bounded credit, and the
 * buyer's metering and its checks of the provider's receipts. Pure state
 * machines: no I/O, no clock (callers pass `now`, Unix seconds).
 *
 * The session's terms are fixed when it opens: the channel (id, buyer and
 * provider wallet keys, budget and expiry, as the settlement layer reports
 * them), the provider's announced prices (micro-units per 1M tokens, input
 * and output separately) and the chunk size N (tokens per voucher).
 *
 * Flow, per chunk k = 1, 2, ...: the provider serves up to N tokens, then
 * signs a receipt with the cumulative counts and charge; the buyer checks
 * it against its own count and the agreed prices and answers with voucher
 * k for exactly those counts; the provider accepts the voucher (it is what
 * it will redeem). A buyer that stops paying gets at most N tokens beyond
 * its last voucher (chan_provider_may_serve); a provider that stops
 * serving is paid for what the buyer counted, no more.
 */
#ifndef COLONY_MARKET_CHANNEL_H
#define COLONY_MARKET_CHANNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "market/amount.h"
#include "market/voucher.h"
#include "market/wallet.h"

typedef struct chan_terms {
	uint8_t channel[MARKET_IDLEN];
	uint8_t buyer[WALLET_PUBLEN];
	uint8_t provider[WALLET_PUBLEN];
	amount_t budget;              /* > 0: the most any voucher may carry */
	int64_t expiry;               /* Unix seconds; vouchers refused from then on */
	amount_t price_in, price_out; /* per 1M tokens, >= 0 */
	uint64_t chunk;               /* N: tokens served per voucher, >= 1 */
} chan_terms_t;

/* ---- provider side ---- */

typedef struct chan_provider {
	chan_terms_t t;
	voucher_t last;               /* the best accepted voucher (seq 0: none yet) */
	uint64_t receipt_seq;         /* the last receipt signed */
	bool closed;
} chan_provider_t;

/* ERR_INVAL if the terms are not usable (budget <= 0, chunk 0, price < 0). */
int chan_provider_init(chan_provider_t *c, const chan_terms_t *t) WUR;

/* Checks a voucher and, if good, keeps it as the one to redeem. Returns 0
 * or, in this order of checks: VOUCHER_E_CHANNEL, VOUCHER_E_FORGED,
 * VOUCHER_E_CLOSED, VOUCHER_E_EXPIRED (now >= expiry), VOUCHER_E_REPLAYED
 * (seq == last), VOUCHER_E_REORDERED (seq < last), VOUCHER_E_DECREASING
 * (amount or a count below the last), VOUCHER_E_MISPRICED (amount !=
 * charge of its counts), VOUCHER_E_OVER_BUDGET. Sequence gaps are
 * accepted: vouchers are cumulative, the newest supersedes the rest. A
 * refused voucher changes nothing. */
int chan_provider_accept(chan_provider_t *c, const voucher_t *v, int64_t now, err_msg_t *e) WUR;

/* Bounded credit: may the provider deliver so that its cumulative counts
 * become (in, out)? False when in + out would exceed the last voucher's
 * counts by more than one chunk, or the channel is closed. */
bool chan_provider_may_serve(const chan_provider_t *c, uint64_t in_tokens, uint64_t out_tokens);

/* Signs the receipt of the chunk that brought the counts delivered to
 * (in, out): next sequence, agreed prices, the exact charge. ERR_RANGE if
 * the counts decrease or the charge overflows, VOUCHER_E_OVER_BUDGET if the
 * charge exceeds the budget (serving that much was a bug). */
int chan_provider_receipt(chan_provider_t *c, uint64_t in_tokens, uint64_t out_tokens,
	const uint8_t commit[MARKET_IDLEN], const wallet_t *provider, receipt_t *r) WUR;

/* No voucher is accepted afterwards (the session ended or the settlement
 * layer closed the channel). */
void chan_provider_close(chan_provider_t *c);

/* ---- buyer side ---- */

typedef struct chan_buyer {
	chan_terms_t t;
	uint64_t in_tokens, out_tokens;   /* counted by the buyer itself */
	uint64_t seq;                 /* the last voucher signed */
	amount_t paid;                /* its amount */
	uint64_t paid_in, paid_out;   /* its counts */
} chan_buyer_t;

int chan_buyer_init(chan_buyer_t *b, const chan_terms_t *t) WUR;

/* Counts tokens received (input positions processed, output positions
 * generated). ERR_RANGE on overflow. */
int chan_buyer_count(chan_buyer_t *b, uint64_t in_tokens, uint64_t out_tokens) WUR;

/* Checks the provider's receipt of the next chunk: VOUCHER_E_CHANNEL,
 * VOUCHER_E_FORGED (not the provider's signature), VOUCHER_E_REPLAYED /
 * VOUCHER_E_REORDERED (sequence not the next one), VOUCHER_E_COUNTS (counts
 * differ from the buyer's own), VOUCHER_E_MISPRICED (prices differ from
 * the agreed ones, or the amount from their charge), VOUCHER_E_OVER_BUDGET,
 * VOUCHER_E_EXPIRED. Then signs the voucher that covers it into *v (same
 * sequence, counts and commitment). On refusal nothing is signed. */
int chan_buyer_answer(chan_buyer_t *b, const receipt_t *r, const wallet_t *buyer,
	int64_t now, voucher_t *v, err_msg_t *e) WUR;

/* A voucher for everything counted so far, without a receipt (a provider
 * that sends none, or the final settlement of a session). ERR_RANGE if
 * nothing new was counted, VOUCHER_E_OVER_BUDGET, VOUCHER_E_EXPIRED. */
int chan_buyer_voucher(chan_buyer_t *b, const wallet_t *buyer, int64_t now,
	const uint8_t commit[MARKET_IDLEN], voucher_t *v, err_msg_t *e) WUR;

#endif
