/* channel.c - provider and buyer channel state (see channel.h). */
#include "market/channel.h"

#include <string.h>

#include <sodium.h>

static int terms_check(const chan_terms_t *t)
{
	if (t->budget <= 0 || t->chunk == 0 || t->price_in < 0 || t->price_out < 0)
		return ERR_INVAL;
	return 0;
}

int chan_provider_init(chan_provider_t *c, const chan_terms_t *t)
{
	memset(c, 0, sizeof(*c));
	if (terms_check(t))
		return ERR_INVAL;
	c->t = *t;
	memcpy(c->last.channel, t->channel, MARKET_IDLEN);
	return 0;
}

int chan_provider_accept(chan_provider_t *c, const voucher_t *v, int64_t now, err_msg_t *e)
{
	const voucher_t *l = &c->last;
	if (sodium_memcmp(v->channel, c->t.channel, MARKET_IDLEN) != 0)
		return err_set(e, VOUCHER_E_CHANNEL, "voucher %llu is for another channel",
			(unsigned long long)v->seq);
	/* The signature first: nothing about the channel's state is told to a forger. */
	if (voucher_verify(v, c->t.buyer) != 0)
		return err_set(e, VOUCHER_E_FORGED, "voucher %llu: the signature is not the buyer's",
			(unsigned long long)v->seq);
	if (c->closed)
		return err_set(e, VOUCHER_E_CLOSED, "voucher %llu: the channel is closed", (unsigned long long)v->seq);
	if (now >= c->t.expiry)
		return err_set(e, VOUCHER_E_EXPIRED, "voucher %llu: the channel expired at %lld (now %lld)",
			(unsigned long long)v->seq, (long long)c->t.expiry, (long long)now);
	if (v->seq == l->seq)
		return err_set(e, VOUCHER_E_REPLAYED, "voucher %llu was already accepted", (unsigned long long)v->seq);
	if (v->seq < l->seq)
		return err_set(e, VOUCHER_E_REORDERED, "voucher %llu arrived after voucher %llu",
			(unsigned long long)v->seq, (unsigned long long)l->seq);
	if (v->amount < l->amount || v->in_tokens < l->in_tokens || v->out_tokens < l->out_tokens)
		return err_set(e, VOUCHER_E_DECREASING,
			"voucher %llu (%lld for %llu+%llu tokens) is below voucher %llu (%lld for %llu+%llu)",
			(unsigned long long)v->seq, (long long)v->amount, (unsigned long long)v->in_tokens,
			(unsigned long long)v->out_tokens, (unsigned long long)l->seq, (long long)l->amount,
			(unsigned long long)l->in_tokens, (unsigned long long)l->out_tokens);
	amount_t want;
	if (amount_charge2(v->in_tokens, c->t.price_in, v->out_tokens, c->t.price_out, &want) != 0 ||
			v->amount != want)
		return err_set(e, VOUCHER_E_MISPRICED, "voucher %llu carries %lld for %llu+%llu tokens; "
			"the agreed prices make it %lld", (unsigned long long)v->seq, (long long)v->amount,
			(unsigned long long)v->in_tokens, (unsigned long long)v->out_tokens, (long long)want);
	if (v->amount > c->t.budget)
		return err_set(e, VOUCHER_E_OVER_BUDGET, "voucher %llu carries %lld, the budget is %lld",
			(unsigned long long)v->seq, (long long)v->amount, (long long)c->t.budget);
	c->last = *v;
	return 0;
}

bool chan_provider_may_serve(const chan_provider_t *c, uint64_t in_tokens, uint64_t out_tokens)
{
	if (c->closed)
		return false;
	/* 128 bits: no count is large enough to wrap the sums. */
	unsigned __int128 delivered = (unsigned __int128)in_tokens + out_tokens;
	unsigned __int128 paid = (unsigned __int128)c->last.in_tokens + c->last.out_tokens;
	return delivered <= paid + c->t.chunk;
}

int chan_provider_receipt(chan_provider_t *c, uint64_t in_tokens, uint64_t out_tokens,
	const uint8_t commit[MARKET_IDLEN], const wallet_t *provider, receipt_t *r)
{
	memset(r, 0, sizeof(*r));
	amount_t amount;
	if (in_tokens < c->last.in_tokens || out_tokens < c->last.out_tokens)
		return ERR_RANGE;
	if (amount_charge2(in_tokens, c->t.price_in, out_tokens, c->t.price_out, &amount) != 0)
		return ERR_RANGE;
	if (amount > c->t.budget)
		return VOUCHER_E_OVER_BUDGET;
	memcpy(r->channel, c->t.channel, MARKET_IDLEN);
	/* after the last receipt and the last voucher (a buyer may pay ahead without one) */
	r->seq = (c->receipt_seq > c->last.seq ? c->receipt_seq : c->last.seq) + 1;
	r->in_tokens = in_tokens;
	r->out_tokens = out_tokens;
	r->price_in = c->t.price_in;
	r->price_out = c->t.price_out;
	r->amount = amount;
	if (commit)
		memcpy(r->commit, commit, MARKET_IDLEN);
	int rc = receipt_sign(r, provider);
	if (rc == 0)
		c->receipt_seq = r->seq;
	return rc;
}

void chan_provider_close(chan_provider_t *c)
{
	c->closed = true;
}

/* ---- buyer ---- */

int chan_buyer_init(chan_buyer_t *b, const chan_terms_t *t)
{
	memset(b, 0, sizeof(*b));
	if (terms_check(t))
		return ERR_INVAL;
	b->t = *t;
	return 0;
}

int chan_buyer_count(chan_buyer_t *b, uint64_t in_tokens, uint64_t out_tokens)
{
	if (in_tokens > UINT64_MAX - b->in_tokens || out_tokens > UINT64_MAX - b->out_tokens)
		return ERR_RANGE;
	b->in_tokens += in_tokens;
	b->out_tokens += out_tokens;
	return 0;
}

/* Signs voucher seq for counts (in, out) and records it as paid. */
static int buyer_sign(chan_buyer_t *b, uint64_t seq, uint64_t in, uint64_t out, amount_t amount,
	const uint8_t *commit, const wallet_t *w, voucher_t *v)
{
	memset(v, 0, sizeof(*v));
	memcpy(v->channel, b->t.channel, MARKET_IDLEN);
	v->seq = seq;
	v->amount = amount;
	v->in_tokens = in;
	v->out_tokens = out;
	if (commit)
		memcpy(v->commit, commit, MARKET_IDLEN);
	int rc = voucher_sign(v, w);
	if (rc == 0) {
		b->seq = seq;
		b->paid = amount;
		b->paid_in = in;
		b->paid_out = out;
	}
	return rc;
}

int chan_buyer_answer(chan_buyer_t *b, const receipt_t *r, const wallet_t *buyer,
	int64_t now, voucher_t *v, err_msg_t *e)
{
	memset(v, 0, sizeof(*v));
	if (sodium_memcmp(r->channel, b->t.channel, MARKET_IDLEN) != 0)
		return err_set(e, VOUCHER_E_CHANNEL, "receipt %llu is for another channel", (unsigned long long)r->seq);
	if (receipt_verify(r, b->t.provider) != 0)
		return err_set(e, VOUCHER_E_FORGED, "receipt %llu: the signature is not the provider's",
			(unsigned long long)r->seq);
	if (now >= b->t.expiry)
		return err_set(e, VOUCHER_E_EXPIRED, "receipt %llu: the channel expired", (unsigned long long)r->seq);
	if (r->seq <= b->seq)
		return err_set(e, r->seq == b->seq ? VOUCHER_E_REPLAYED : VOUCHER_E_REORDERED,
			"receipt %llu: voucher %llu was already signed", (unsigned long long)r->seq,
			(unsigned long long)b->seq);
	if (r->seq != b->seq + 1)
		return err_set(e, VOUCHER_E_REORDERED, "receipt %llu: expected chunk %llu",
			(unsigned long long)r->seq, (unsigned long long)(b->seq + 1));
	if (r->price_in != b->t.price_in || r->price_out != b->t.price_out)
		return err_set(e, VOUCHER_E_MISPRICED, "receipt %llu prices %lld/%lld per 1M tokens; agreed %lld/%lld",
			(unsigned long long)r->seq, (long long)r->price_in, (long long)r->price_out,
			(long long)b->t.price_in, (long long)b->t.price_out);
	if (r->in_tokens != b->in_tokens || r->out_tokens != b->out_tokens)
		return err_set(e, VOUCHER_E_COUNTS, "receipt %llu claims %llu+%llu tokens; we counted %llu+%llu",
			(unsigned long long)r->seq, (unsigned long long)r->in_tokens, (unsigned long long)r->out_tokens,
			(unsigned long long)b->in_tokens, (unsigned long long)b->out_tokens);
	amount_t want;
	if (amount_charge2(r->in_tokens, b->t.price_in, r->out_tokens, b->t.price_out, &want) != 0 ||
			r->amount != want)
		return err_set(e, VOUCHER_E_MISPRICED, "receipt %llu charges %lld; the agreed prices make it %lld",
			(unsigned long long)r->seq, (long long)r->amount, (long long)want);
	if (want > b->t.budget)
		return err_set(e, VOUCHER_E_OVER_BUDGET, "receipt %llu charges %lld, above the budget %lld",
			(unsigned long long)r->seq, (long long)want, (long long)b->t.budget);
	return buyer_sign(b, r->seq, r->in_tokens, r->out_tokens, want, r->commit, buyer, v);
}

int chan_buyer_voucher(chan_buyer_t *b, const wallet_t *buyer, int64_t now,
	const uint8_t commit[MARKET_IDLEN], voucher_t *v, err_msg_t *e)
{
	memset(v, 0, sizeof(*v));
	if (now >= b->t.expiry)
		return err_set(e, VOUCHER_E_EXPIRED, "the channel expired");
	if (b->in_tokens == b->paid_in && b->out_tokens == b->paid_out)
		return err_set(e, ERR_RANGE, "nothing counted since voucher %llu", (unsigned long long)b->seq);
	amount_t want;
	if (amount_charge2(b->in_tokens, b->t.price_in, b->out_tokens, b->t.price_out, &want) != 0)
		return err_set(e, ERR_RANGE, "the charge for %llu+%llu tokens overflows",
			(unsigned long long)b->in_tokens, (unsigned long long)b->out_tokens);
	if (want > b->t.budget)
		return err_set(e, VOUCHER_E_OVER_BUDGET, "%lld owed for %llu+%llu tokens, above the budget %lld",
			(long long)want, (unsigned long long)b->in_tokens, (unsigned long long)b->out_tokens,
			(long long)b->t.budget);
	return buyer_sign(b, b->seq + 1, b->in_tokens, b->out_tokens, want, commit, buyer, v);
}
