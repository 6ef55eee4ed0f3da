/* amount.h - money as integers: int64 micro-units (6 decimals, like USDC).
 *
 * Floating point never touches an amount. Every operation is checked: a
 * result that does not fit in [0, AMOUNT_MAX] is refused with ERR_RANGE
 * (amounts are never negative; a debit that would go below zero is an
 * error, not a wrap). Prices are micro-units per 1,000,000 tokens, and the
 * cumulative charge for n tokens is ceil(n * price / 1,000,000), computed
 * exactly with a 128-bit intermediate, so a buyer and a provider who count
 * the same tokens always compute the same charge: there is no rounding to
 * dispute.
 */
#ifndef COLONY_MARKET_AMOUNT_H
#define COLONY_MARKET_AMOUNT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef int64_t amount_t;

#define AMOUNT_MAX INT64_MAX          /* about 9.2e12 whole units */
#define AMOUNT_UNIT 1000000           /* micro-units per whole unit */
#define AMOUNT_PER_TOKENS 1000000     /* prices are per this many tokens */
#define AMOUNT_STRLEN 32              /* "-9223372036854.775807" + NUL fits */

/* *out = a + b, a - b, a * k. ERR_RANGE if an operand is negative or the
 * result leaves [0, AMOUNT_MAX] (a - b < 0 included); *out is untouched then. */
int amount_add(amount_t a, amount_t b, amount_t *out) WUR;
int amount_sub(amount_t a, amount_t b, amount_t *out) WUR;
int amount_mul(amount_t a, uint64_t k, amount_t *out) WUR;

/* The charge for `tokens` tokens at `price` micro-units per 1M tokens:
 * ceil(tokens * price / 1e6). ERR_RANGE if price < 0 or it exceeds AMOUNT_MAX. */
int amount_charge(uint64_t tokens, amount_t price, amount_t *out) WUR;

/* Input and output tokens are priced separately; the total is the sum of
 * the two charges, each rounded up on its own (both sides compute exactly
 * this, so it is what vouchers must carry). */
int amount_charge2(uint64_t in_tokens, amount_t price_in, uint64_t out_tokens,
	amount_t price_out, amount_t *out) WUR;

/* "12.345678" (always 6 decimals). Returns out. */
char *amount_format(amount_t a, char out[AMOUNT_STRLEN]);

/* Parses "12", "12.5", "0.000001" (at most 6 decimals, no sign, no
 * exponent) into micro-units. ERR_FORMAT / ERR_RANGE with a message. */
int amount_parse(const char *s, amount_t *out, err_msg_t *e) WUR;

#endif
