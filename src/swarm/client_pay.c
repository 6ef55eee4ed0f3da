/* client_pay.c - the buyer side of paid sessions for the swarm client
 * (see client_pay.h). */
#include "swarm/client_pay.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"

void cpay_job_init(cpay_job_t *p, uv_loop_t *loop, swarm_client_cfg_t *cfg, const cpay_ops_t *ops,
		   void *user, int n_prompt)
{
	memset(p, 0, sizeof(*p));
	p->loop = loop;
	p->cfg = cfg;
	p->ops = ops;
	p->user = user;
	p->n_prompt = n_prompt;
}

void cpay_job_close(cpay_job_t *p)
{
	free(p->chans);
	p->chans = NULL;
	p->n_chans = p->cap_chans = 0;
}

int cpay_terms_free(const wire_pay_t *t)
{
	static const uint8_t zero[WIRE_KEYLEN];
	return memcmp(t->wallet, zero, WIRE_KEYLEN) == 0;
}

/* No channel for a free server, nor for one paid into this client's own
 * wallet (a gateway inside a node that serves layers too): paying oneself
 * moves nothing, and the ledger refuses a channel whose buyer is its
 * provider. Such a hop is opened unpaid. */
static int cpay_no_channel(const cpay_job_t *p, const wire_pay_t *t)
{
	return cpay_terms_free(t) || memcmp(t->wallet, wallet_pub(p->cfg->pay_wallet), WIRE_KEYLEN) == 0;
}

static cpay_chan_t *cpay_chan_find(cpay_job_t *p, uint64_t server, uint64_t sid)
{
	for (int i = 0; i < p->n_chans; i++)
		if (p->chans[i].server == server && p->chans[i].sid == sid)
			return &p->chans[i];
	return NULL;
}

struct cpay_work {
	uv_work_t w;
	cpay_job_t *p;
	uint64_t server, sid;
	settle_reserve_t r;
	uint8_t id[MARKET_IDLEN];
	int rc;
	err_msg_t e;
};

/* On a libuv worker: the ledger call blocks for a round trip. */
static void cpay_reserve_work(uv_work_t *w)
{
	struct cpay_work *pw = w->data;
	pw->rc = settle_reserve(&pw->p->cfg->pay_settle, &pw->r, (int64_t)time(NULL), pw->id, &pw->e);
}

static void cpay_reserve_done(uv_work_t *w, int status)
{
	struct cpay_work *pw = w->data;
	cpay_job_t *p = pw->p;
	p->busy--;
	cpay_chan_t *ch = cpay_chan_find(p, pw->server, pw->sid);
	const cpay_terms_t *st = p->ops->terms(p->user, pw->server);
	sess_t *sess = p->ops->live_sess(p->user);
	if (status != 0 && pw->rc == 0)
		pw->rc = err_set(&pw->e, ERR_IO, "reserve cancelled");
	if (ch && st && sess) {
		chan_terms_t t;
		memset(&t, 0, sizeof(t));
		memcpy(t.channel, pw->id, MARKET_IDLEN);
		memcpy(t.buyer, pw->r.buyer, WALLET_PUBLEN);
		memcpy(t.provider, pw->r.provider, WALLET_PUBLEN);
		t.budget = pw->r.budget;
		t.expiry = pw->r.expiry;
		t.price_in = st->terms.price_in;
		t.price_out = st->terms.price_out;
		t.chunk = st->terms.chunk;
		if (pw->rc == 0 && chan_buyer_init(&ch->b, &t) != 0)
			pw->rc = err_set(&pw->e, ERR_INVAL, "unusable terms (price %" PRId64 "/%" PRId64 ", chunk %u)",
					 t.price_in, t.price_out, st->terms.chunk);
		if (pw->rc == 0) {
			ch->state = CPAY_CH_OPEN;
			wire_msg_t m;
			memset(&m, 0, sizeof(m));
			m.type = WIRE_PAY_OPEN;
			m.u.pay.id = pw->sid;
			memcpy(m.u.pay.channel, t.channel, WIRE_KEYLEN);
			memcpy(m.u.pay.wallet, t.buyer, WIRE_KEYLEN);
			m.u.pay.budget = t.budget;
			m.u.pay.expiry = t.expiry;
			m.u.pay.price_in = t.price_in;
			m.u.pay.price_out = t.price_out;
			m.u.pay.chunk = st->terms.chunk;
			m.u.pay.n_prompt = (uint32_t)p->n_prompt;
			sess_pay_ready(sess, pw->server, pw->sid, &m);
		} else {
			ch->state = CPAY_CH_DONE;
			log_warn("client", "cannot reserve a channel: %s", pw->e.msg);
			sess_pay_failed(sess, pw->server, pw->sid, pw->e.msg);
		}
	}
	free(pw);
	p->ops->reserved(p->user);
}

static void cpay_reserve_start(cpay_job_t *p, sess_t *sess, cpay_chan_t *ch, const cpay_terms_t *st)
{
	struct cpay_work *pw = calloc(1, sizeof(*pw));
	if (!pw) {
		ch->state = CPAY_CH_DONE;
		sess_pay_failed(sess, ch->server, ch->sid, "out of memory");
		return;
	}
	pw->w.data = pw;
	pw->p = p;
	pw->server = ch->server;
	pw->sid = ch->sid;
	memcpy(pw->r.buyer, wallet_pub(p->cfg->pay_wallet), WALLET_PUBLEN);
	memcpy(pw->r.provider, st->terms.wallet, WALLET_PUBLEN);
	pw->r.budget = p->cfg->pay_budget;
	pw->r.expiry = (int64_t)time(NULL) + (p->cfg->pay_expiry_s ? p->cfg->pay_expiry_s : 3600);
	randombytes_buf(pw->r.nonce, sizeof(pw->r.nonce));
	ch->state = CPAY_CH_RESERVING;
	p->busy++;
	if (uv_queue_work(p->loop, &pw->w, cpay_reserve_work, cpay_reserve_done) != 0) {
		p->busy--;
		free(pw);
		ch->state = CPAY_CH_DONE;
		sess_pay_failed(sess, ch->server, ch->sid, "cannot queue the reserve");
	}
}

int cpay_open(cpay_job_t *p, uint64_t server, uint64_t sid)
{
	if (!p->cfg->pay_wallet)
		return 0;
	const cpay_terms_t *st = p->ops->terms(p->user, server);
	if (!st)
		return 0;
	if (st->state == CPAY_TERMS_KNOWN && cpay_no_channel(p, &st->terms))
		return 0;
	if (p->n_chans == p->cap_chans) {
		int cap = p->cap_chans ? p->cap_chans * 2 : 8;
		cpay_chan_t *n = realloc(p->chans, sizeof(*n) * (size_t)cap);
		if (!n)
			return 0;   /* unpaid: a shard that requires payment refuses it */
		p->chans = n;
		p->cap_chans = cap;
	}
	cpay_chan_t *ch = &p->chans[p->n_chans++];
	memset(ch, 0, sizeof(*ch));
	ch->server = server;
	ch->sid = sid;
	ch->state = CPAY_CH_TERMS;
	/* Held (the hook may not call back into sess): the reserve starts now
	 * if the terms are known, or when they arrive; either ends in
	 * sess_pay_ready / sess_pay_failed from the loop. */
	p->ops->ask(p->user, server);
	return SESS_PAY_WAIT;
}

void cpay_kick(cpay_job_t *p, sess_t *sess)
{
	for (int i = 0; i < p->n_chans && sess; i++) {
		cpay_chan_t *ch = &p->chans[i];
		if (ch->state != CPAY_CH_TERMS)
			continue;
		const cpay_terms_t *st = p->ops->terms(p->user, ch->server);
		if (!st)
			continue;
		if (st->state != CPAY_TERMS_KNOWN) {
			p->ops->ask(p->user, ch->server);
			continue;
		}
		if (cpay_no_channel(p, &st->terms)) {
			ch->state = CPAY_CH_DONE;
			sess_pay_ready(sess, ch->server, ch->sid, NULL);
		} else
			cpay_reserve_start(p, sess, ch, st);
		i = -1;   /* sess calls may have added channels (failover): rescan */
		sess = p->ops->live_sess(p->user);
	}
}

int cpay_receipt(cpay_job_t *p, uint64_t server, const wire_pay_t *m)
{
	cpay_chan_t *ch = cpay_chan_find(p, server, m->id);
	if (!ch || ch->state != CPAY_CH_OPEN)
		return 0;
	if (ch->n_rcpt++ == 0)
		memcpy(ch->rcpt, m->receipt, WIRE_RECEIPT_LEN);
	return 1;
}

/* Checks the held receipt against the counts just updated; 1 with the
 * answering voucher in *v, or -1 with why in *e. */
static int cpay_answer(cpay_job_t *p, cpay_chan_t *ch, voucher_t *v, err_msg_t *e)
{
	int n = ch->n_rcpt;
	ch->n_rcpt = 0;
	if (n > 1) {
		err_set(e, ERR_FORMAT, "%d receipts before one result", n);
		return -1;
	}
	receipt_t r;
	int rc = receipt_decode(ch->rcpt, WIRE_RECEIPT_LEN, &r, e);
	if (rc == 0)
		rc = chan_buyer_answer(&ch->b, &r, p->cfg->pay_wallet, (int64_t)time(NULL), v, e);
	if (rc != 0) {
		char why[sizeof(e->msg)];
		snprintf(why, sizeof(why), "%s", e->msg);
		err_set(e, rc, "%s: %s", voucher_err_str(rc), why);
		return -1;
	}
	ch->receipts++;
	return 1;
}

static int cpay_count_chan(cpay_job_t *p, cpay_chan_t *ch, uint64_t sid, int start, int n, int final,
			   wire_msg_t *out)
{
	chan_buyer_t *b = &ch->b;
	if (n > 0) {
		int in = start >= p->n_prompt ? 0 : (start + n <= p->n_prompt ? n : p->n_prompt - start);
		if (chan_buyer_count(b, (uint64_t)in, (uint64_t)(n - in)) != 0)
			return 0;
	}
	voucher_t v;
	err_msg_t e = { { 0 } };
	if (ch->n_rcpt > 0 && n > 0) {
		if (cpay_answer(p, ch, &v, &e) < 0) {
			ch->refused = 1;
			log_warn("client", "receipt refused, session %016" PRIx64 " ended: %s", sid, e.msg);
			memset(out, 0, sizeof(*out));
			out->type = WIRE_ERROR;
			out->u.error.code = WIRE_E_PAYMENT;
			snprintf(out->u.error.msg, sizeof(out->u.error.msg), "receipt refused (%s)", e.msg);
			return -1;
		}
	} else {
		uint64_t unpaid = b->in_tokens + b->out_tokens - b->paid_in - b->paid_out;
		if (unpaid == 0 || (!final && unpaid < b->t.chunk))
			return 0;
		if (chan_buyer_voucher(b, p->cfg->pay_wallet, (int64_t)time(NULL), NULL, &v, &e) != 0) {
			log_warn("client", "cannot sign a voucher: %s", e.msg);
			return 0;
		}
	}
	memset(out, 0, sizeof(*out));
	out->type = WIRE_VOUCHER;
	out->u.pay.id = sid;
	if (voucher_encode(&v, out->u.pay.voucher) != 0)
		return 0;
	return 1;
}

int cpay_count(cpay_job_t *p, uint64_t server, uint64_t sid, int start, int n, int final, wire_msg_t *out)
{
	cpay_chan_t *ch = cpay_chan_find(p, server, sid);
	if (!ch || ch->state != CPAY_CH_OPEN || ch->refused)
		return 0;
	/* Timed: it runs on the token path (docs/PERFORMANCE.md, "Payment
	 * overhead inside sessions"). */
	uint64_t t0 = clock_ns();
	int rc = cpay_count_chan(p, ch, sid, start, n, final, out);
	ch->work_ns += clock_ns() - t0;
	return rc;
}

void cpay_lines(const cpay_job_t *p, swarm_result_t *res)
{
	for (int i = 0; i < p->n_chans && res->n_pay < SWARM_PAY_MAX_LINES; i++) {
		const chan_buyer_t *b = &p->chans[i].b;
		if (p->chans[i].state != CPAY_CH_OPEN)
			continue;
		swarm_pay_line_t *l = &res->pay[res->n_pay++];
		memcpy(l->provider, b->t.provider, WALLET_PUBLEN);
		memcpy(l->channel, b->t.channel, sizeof(l->channel));
		l->in_tokens = b->in_tokens;
		l->out_tokens = b->out_tokens;
		l->paid = b->paid;
		l->price_in = b->t.price_in;
		l->price_out = b->t.price_out;
		char ch[17];
		for (int k = 0; k < 8; k++)
			snprintf(ch + 2 * k, 3, "%02x", b->t.channel[k]);
		log_info("client", "channel %s..: %u receipts from the provider matched our count; paid %" PRId64
			 " for %" PRIu64 "+%" PRIu64 " tokens; payment work %.0f us", ch, p->chans[i].receipts, b->paid,
			 b->paid_in, b->paid_out, (double)p->chans[i].work_ns / 1e3);
	}
}
