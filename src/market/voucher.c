/* voucher.c - voucher and receipt codec and signatures (see voucher.h). */
#include "market/voucher.h"

#include <string.h>

#include <sodium.h>

const char *voucher_err_str(int code)
{
	switch (code) {
	case VOUCHER_E_FORGED: return "forged (bad signature)";
	case VOUCHER_E_REPLAYED: return "replayed";
	case VOUCHER_E_REORDERED: return "out of order";
	case VOUCHER_E_DECREASING: return "decreasing cumulative amount or count";
	case VOUCHER_E_OVER_BUDGET: return "over the channel budget";
	case VOUCHER_E_EXPIRED: return "channel expired";
	case VOUCHER_E_CLOSED: return "channel closed";
	case VOUCHER_E_MISPRICED: return "amount differs from the agreed price";
	case VOUCHER_E_CHANNEL: return "another channel";
	case VOUCHER_E_COUNTS: return "counts differ from ours";
	default: return err_str(code);
	}
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Voucher body layout. */
#define VO_CHANNEL 1
#define VO_SEQ 33
#define VO_AMOUNT 41
#define VO_IN 49
#define VO_OUT 57
#define VO_COMMIT 65
_Static_assert(VO_COMMIT + MARKET_IDLEN == VOUCHER_BODY_SIZE, "voucher layout");

/* Receipt body layout. */
#define RO_CHANNEL 1
#define RO_SEQ 33
#define RO_IN 41
#define RO_OUT 49
#define RO_PRICE_IN 57
#define RO_PRICE_OUT 65
#define RO_AMOUNT 73
#define RO_COMMIT 81
_Static_assert(RO_COMMIT + MARKET_IDLEN == RECEIPT_BODY_SIZE, "receipt layout");

static int voucher_body(const voucher_t *v, uint8_t b[VOUCHER_BODY_SIZE])
{
	if (v->seq == 0 || v->amount < 0)
		return ERR_RANGE;
	b[0] = VOUCHER_VERSION;
	memcpy(b + VO_CHANNEL, v->channel, MARKET_IDLEN);
	put_u64(b + VO_SEQ, v->seq);
	put_u64(b + VO_AMOUNT, (uint64_t)v->amount);
	put_u64(b + VO_IN, v->in_tokens);
	put_u64(b + VO_OUT, v->out_tokens);
	memcpy(b + VO_COMMIT, v->commit, MARKET_IDLEN);
	return 0;
}

int voucher_encode(const voucher_t *v, uint8_t out[VOUCHER_SIZE])
{
	int rc = voucher_body(v, out);
	if (rc == 0)
		memcpy(out + VOUCHER_BODY_SIZE, v->sig, WALLET_SIGLEN);
	return rc;
}

/* Checks shared by the two decoders: exact length, version. */
static int check_head(const uint8_t *buf, size_t len, size_t want, const char *what, err_msg_t *e)
{
	if (len < want)
		return err_set(e, ERR_TRUNCATED, "%s: %zu bytes, expected %zu", what, len, want);
	if (len > want)
		return err_set(e, ERR_FORMAT, "%s: %zu bytes, expected %zu (trailing bytes)", what, len, want);
	if (buf[0] == 0)
		return err_set(e, ERR_FORMAT, "%s: version 0 at offset 0", what);
	if (buf[0] != VOUCHER_VERSION)
		return err_set(e, ERR_UNSUPPORTED, "%s: version %u at offset 0 is not supported (expected %d)",
			what, buf[0], VOUCHER_VERSION);
	return 0;
}

static int get_amount(const uint8_t *buf, size_t off, const char *what, const char *field,
	amount_t *out, err_msg_t *e)
{
	uint64_t v = get_u64(buf + off);
	if (v > (uint64_t)AMOUNT_MAX)
		return err_set(e, ERR_RANGE, "%s: %s %llu at offset %zu exceeds %lld", what, field,
			(unsigned long long)v, off, (long long)AMOUNT_MAX);
	*out = (amount_t)v;
	return 0;
}

int voucher_decode(const uint8_t *buf, size_t len, voucher_t *v, err_msg_t *e)
{
	int rc = check_head(buf, len, VOUCHER_SIZE, "voucher", e);
	if (rc)
		return rc;
	memset(v, 0, sizeof(*v));
	memcpy(v->channel, buf + VO_CHANNEL, MARKET_IDLEN);
	v->seq = get_u64(buf + VO_SEQ);
	if (v->seq == 0)
		return err_set(e, ERR_FORMAT, "voucher: sequence 0 at offset %d (sequences start at 1)", VO_SEQ);
	rc = get_amount(buf, VO_AMOUNT, "voucher", "amount", &v->amount, e);
	if (rc)
		return rc;
	v->in_tokens = get_u64(buf + VO_IN);
	v->out_tokens = get_u64(buf + VO_OUT);
	memcpy(v->commit, buf + VO_COMMIT, MARKET_IDLEN);
	memcpy(v->sig, buf + VOUCHER_BODY_SIZE, WALLET_SIGLEN);
	return 0;
}

/* domain || body, the bytes a signature covers. */
#define MAX_SIGNED (32 + RECEIPT_BODY_SIZE)

static size_t signed_msg(const char *domain, const uint8_t *body, size_t n, uint8_t out[MAX_SIGNED])
{
	size_t d = strlen(domain);
	memcpy(out, domain, d);
	memcpy(out + d, body, n);
	return d + n;
}

int voucher_sign(voucher_t *v, const wallet_t *buyer)
{
	uint8_t b[VOUCHER_BODY_SIZE], m[MAX_SIGNED];
	int rc = voucher_body(v, b);
	if (rc)
		return rc;
	size_t n = signed_msg(VOUCHER_DOMAIN, b, sizeof(b), m);
	wallet_sign(buyer, m, n, v->sig);
	return 0;
}

int voucher_verify(const voucher_t *v, const uint8_t buyer[WALLET_PUBLEN])
{
	uint8_t b[VOUCHER_BODY_SIZE], m[MAX_SIGNED];
	if (voucher_body(v, b) != 0)
		return VOUCHER_E_FORGED;
	size_t n = signed_msg(VOUCHER_DOMAIN, b, sizeof(b), m);
	return wallet_verify(buyer, m, n, v->sig) == 0 ? 0 : VOUCHER_E_FORGED;
}

static int receipt_body(const receipt_t *r, uint8_t b[RECEIPT_BODY_SIZE])
{
	if (r->seq == 0 || r->amount < 0 || r->price_in < 0 || r->price_out < 0)
		return ERR_RANGE;
	b[0] = VOUCHER_VERSION;
	memcpy(b + RO_CHANNEL, r->channel, MARKET_IDLEN);
	put_u64(b + RO_SEQ, r->seq);
	put_u64(b + RO_IN, r->in_tokens);
	put_u64(b + RO_OUT, r->out_tokens);
	put_u64(b + RO_PRICE_IN, (uint64_t)r->price_in);
	put_u64(b + RO_PRICE_OUT, (uint64_t)r->price_out);
	put_u64(b + RO_AMOUNT, (uint64_t)r->amount);
	memcpy(b + RO_COMMIT, r->commit, MARKET_IDLEN);
	return 0;
}

int receipt_encode(const receipt_t *r, uint8_t out[RECEIPT_SIZE])
{
	int rc = receipt_body(r, out);
	if (rc == 0)
		memcpy(out + RECEIPT_BODY_SIZE, r->sig, WALLET_SIGLEN);
	return rc;
}

int receipt_decode(const uint8_t *buf, size_t len, receipt_t *r, err_msg_t *e)
{
	int rc = check_head(buf, len, RECEIPT_SIZE, "receipt", e);
	if (rc)
		return rc;
	memset(r, 0, sizeof(*r));
	memcpy(r->channel, buf + RO_CHANNEL, MARKET_IDLEN);
	r->seq = get_u64(buf + RO_SEQ);
	if (r->seq == 0)
		return err_set(e, ERR_FORMAT, "receipt: sequence 0 at offset %d (sequences start at 1)", RO_SEQ);
	r->in_tokens = get_u64(buf + RO_IN);
	r->out_tokens = get_u64(buf + RO_OUT);
	rc = get_amount(buf, RO_PRICE_IN, "receipt", "input price", &r->price_in, e);
	if (rc == 0)
		rc = get_amount(buf, RO_PRICE_OUT, "receipt", "output price", &r->price_out, e);
	if (rc == 0)
		rc = get_amount(buf, RO_AMOUNT, "receipt", "amount", &r->amount, e);
	if (rc)
		return rc;
	memcpy(r->commit, buf + RO_COMMIT, MARKET_IDLEN);
	memcpy(r->sig, buf + RECEIPT_BODY_SIZE, WALLET_SIGLEN);
	return 0;
}

int receipt_sign(receipt_t *r, const wallet_t *provider)
{
	uint8_t b[RECEIPT_BODY_SIZE], m[MAX_SIGNED];
	int rc = receipt_body(r, b);
	if (rc)
		return rc;
	size_t n = signed_msg(RECEIPT_DOMAIN, b, sizeof(b), m);
	wallet_sign(provider, m, n, r->sig);
	return 0;
}

int receipt_verify(const receipt_t *r, const uint8_t provider[WALLET_PUBLEN])
{
	uint8_t b[RECEIPT_BODY_SIZE], m[MAX_SIGNED];
	if (receipt_body(r, b) != 0)
		return VOUCHER_E_FORGED;
	size_t n = signed_msg(RECEIPT_DOMAIN, b, sizeof(b), m);
	return wallet_verify(provider, m, n, r->sig) == 0 ? 0 : VOUCHER_E_FORGED;
}

void voucher_channel_id(const uint8_t buyer[WALLET_PUBLEN], const uint8_t provider[WALLET_PUBLEN],
	const uint8_t nonce[MARKET_IDLEN], uint8_t id[MARKET_IDLEN])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, MARKET_IDLEN);
	crypto_generichash_update(&st, (const uint8_t *)CHANNEL_DOMAIN, strlen(CHANNEL_DOMAIN));
	crypto_generichash_update(&st, buyer, WALLET_PUBLEN);
	crypto_generichash_update(&st, provider, WALLET_PUBLEN);
	crypto_generichash_update(&st, nonce, MARKET_IDLEN);
	crypto_generichash_final(&st, id, MARKET_IDLEN);
}
