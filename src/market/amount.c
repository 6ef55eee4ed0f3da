/* amount.c - checked integer money (see amount.h). */
#include "market/amount.h"

#include <inttypes.h>
#include <stdio.h>

int amount_add(amount_t a, amount_t b, amount_t *out)
{
	if (a < 0 || b < 0 || a > AMOUNT_MAX - b)
		return ERR_RANGE;
	*out = a + b;
	return 0;
}

int amount_sub(amount_t a, amount_t b, amount_t *out)
{
	if (a < 0 || b < 0 || b > a)
		return ERR_RANGE;
	*out = a - b;
	return 0;
}

int amount_mul(amount_t a, uint64_t k, amount_t *out)
{
	if (a < 0)
		return ERR_RANGE;
	unsigned __int128 p = (unsigned __int128)(uint64_t)a * k;
	if (p > (unsigned __int128)AMOUNT_MAX)
		return ERR_RANGE;
	*out = (amount_t)p;
	return 0;
}

int amount_charge(uint64_t tokens, amount_t price, amount_t *out)
{
	if (price < 0)
		return ERR_RANGE;
	/* tokens * price < 2^64 * 2^63 = 2^127: the product cannot wrap. */
	unsigned __int128 p = (unsigned __int128)tokens * (uint64_t)price;
	unsigned __int128 q = (p + (AMOUNT_PER_TOKENS - 1)) / AMOUNT_PER_TOKENS;
	if (q > (unsigned __int128)AMOUNT_MAX)
		return ERR_RANGE;
	*out = (amount_t)q;
	return 0;
}

int amount_charge2(uint64_t in_tokens, amount_t price_in, uint64_t out_tokens,
	amount_t price_out, amount_t *out)
{
	amount_t a, b;
	int rc = amount_charge(in_tokens, price_in, &a);
	if (rc == 0)
		rc = amount_charge(out_tokens, price_out, &b);
	if (rc == 0)
		rc = amount_add(a, b, out);
	return rc;
}

char *amount_format(amount_t a, char out[AMOUNT_STRLEN])
{
	uint64_t m = a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a;
	snprintf(out, AMOUNT_STRLEN, "%s%" PRIu64 ".%06" PRIu64, a < 0 ? "-" : "",
		m / AMOUNT_UNIT, m % AMOUNT_UNIT);
	return out;
}

int amount_parse(const char *s, amount_t *out, err_msg_t *e)
{
	const char *p = s;
	uint64_t whole = 0, frac = 0;
	int nw = 0, nf = 0;
	for (; *p >= '0' && *p <= '9'; p++, nw++) {
		if (whole > (uint64_t)AMOUNT_MAX / 10)
			return err_set(e, ERR_RANGE, "amount '%s' is too large", s);
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++, nf++) {
			if (nf == 6)
				return err_set(e, ERR_FORMAT, "amount '%s' has more than 6 decimals", s);
			frac = frac * 10 + (uint64_t)(*p - '0');
		}
		if (nf == 0)
			return err_set(e, ERR_FORMAT, "amount '%s': no digit after the point", s);
	}
	if (*p || nw == 0)
		return err_set(e, ERR_FORMAT, "amount '%s' is not a decimal number like 12.5", s);
	for (int i = nf; i < 6; i++)
		frac *= 10;
	if (whole > (uint64_t)(AMOUNT_MAX - (amount_t)frac) / AMOUNT_UNIT)
		return err_set(e, ERR_RANGE, "amount '%s' is too large", s);
	*out = (amount_t)(whole * AMOUNT_UNIT + frac);
	return 0;
}
