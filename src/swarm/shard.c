/* shard.c - the shard server (see shard.h). */
#include "swarm/shard.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"

struct sess;

/* One FORWARD waiting in the queue, its rows already decoded. */
struct req {
	struct req *next;
	struct sess *ss;
	uint32_t start, n;
	float *x;                  /* n x d */
};

struct sess {
	void *client;
	uint64_t id;
	fwd_state_t *st;
	uint64_t bytes;            /* KV bytes counted against the budget */
	uint32_t max_len;
	uint8_t enc;
	uint32_t next_pos;         /* position after every queued request */
	int n_queued;
	int busy;                  /* its state belongs to the running step */
	int dead;                  /* ended while busy: freed by shard_step_end */
	uint64_t last_ms;
	uint64_t mark;             /* step number that last considered it */
	/* Paid sessions only (NULL otherwise): the channel, and the tokens
	 * delivered so far (counted as FORWARDs are admitted). */
	chan_provider_t *pay;
	uint32_t n_prompt;
	uint64_t pay_in, pay_out;
	/* ... and the tokens served (results sent), and their total at the
	 * last receipt. */
	uint64_t served_in, served_out;
	uint64_t rcpt_total;
	uint64_t pay_ns;           /* time spent on its payments (token path) */
};

/* A PAY_OPEN waiting for its OPEN_SESSION. */
struct pay_pending {
	void *client;
	uint64_t sid;
	chan_terms_t t;
	uint32_t n_prompt;
	char bad[160];             /* non-empty: the terms are refused, with this reason */
	uint64_t ticket;           /* of the pending channel check (cfg.pay.verify) */
	int verifying;             /* the check has not answered yet */
	int has_open;              /* an OPEN_SESSION waits for it: */
	wire_open_t open;
};

/* One segment of the running step. */
struct item {
	struct sess *ss;
	uint32_t start, n;
	uint8_t *out;              /* encoded result */
	size_t out_len;
	int code;                  /* 0, or a wire_err for this segment */
	char msg[WIRE_MAX_ERRMSG + 1];
};

struct shard {
	shard_cfg_t cfg;
	int d;                     /* n_embd */
	int max_len;               /* cap on a session's positions */
	fwd_ctx_t *ctx;
	struct sess **slots;       /* cfg.max_sessions entries, NULL = free */
	int n_sess;
	uint64_t kv_used;
	struct req *qhead, *qtail;
	int n_queued;
	uint64_t queue_bytes;
	uint64_t now_ms;
	uint64_t step_no;
	/* The running step (owned by shard_step_run between begin and end). */
	int running;
	struct item *items;        /* max_sessions entries */
	fwd_seg_t *segs;
	int n_items;
	float *x;
	size_t x_floats;
	int rc;                    /* fwd_forward's result */
	uint64_t fwd_ns;           /* and its duration */
	err_msg_t err;
	shard_stats_t stats;
	struct pay_pending *pend; /* max_sessions entries, client NULL = free */
	uint64_t next_ticket;
};

void shard_cfg_default(shard_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->kv_mem = SHARD_DEFAULT_KV_MEM;
	c->max_sessions = SHARD_DEFAULT_MAX_SESSIONS;
	c->idle_ms = SHARD_DEFAULT_IDLE_MS;
	c->max_step_rows = SHARD_DEFAULT_STEP_ROWS;
	c->queue_mem = SHARD_DEFAULT_QUEUE_MEM;
}

int shard_new(const shard_cfg_t *cfg, shard_t **out, err_msg_t *e)
{
	*out = NULL;
	const model_t *m = cfg->model;
	if (!m || !cfg->reply)
		return err_set(e, ERR_INVAL, "shard needs a model and a reply callback");
	if (cfg->layer_a < m->layer_a || cfg->layer_b > m->layer_b || cfg->layer_a >= cfg->layer_b)
		return err_set(e, ERR_INVAL, "span [%d, %d) is not loaded (model holds [%d, %d))", cfg->layer_a,
			       cfg->layer_b, m->layer_a, m->layer_b);
	shard_t *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ERR_NOMEM, "out of memory");
	s->cfg = *cfg;
	if (!s->cfg.kv_mem)
		s->cfg.kv_mem = SHARD_DEFAULT_KV_MEM;
	if (s->cfg.max_sessions <= 0)
		s->cfg.max_sessions = SHARD_DEFAULT_MAX_SESSIONS;
	if (!s->cfg.idle_ms)
		s->cfg.idle_ms = SHARD_DEFAULT_IDLE_MS;
	if (s->cfg.max_step_rows <= 0)
		s->cfg.max_step_rows = SHARD_DEFAULT_STEP_ROWS;
	if (!s->cfg.queue_mem)
		s->cfg.queue_mem = SHARD_DEFAULT_QUEUE_MEM;
	s->d = m->hp.n_embd;
	int cap = m->hp.n_ctx_train > 0 ? m->hp.n_ctx_train : 4096;
	if (s->cfg.max_len > 0 && s->cfg.max_len < cap)
		cap = s->cfg.max_len;
	if (cap > (int)WIRE_MAX_CTX)
		cap = (int)WIRE_MAX_CTX;
	s->max_len = cap;
	if (!s->cfg.pay.chunk)
		s->cfg.pay.chunk = SHARD_DEFAULT_PAY_CHUNK;
	if (s->cfg.pay.price_in < 0 || s->cfg.pay.price_out < 0) {
		free(s);
		return err_set(e, ERR_INVAL, "negative price");
	}
	if (s->cfg.pay.require_payment && !s->cfg.pay.wallet) {
		free(s);
		return err_set(e, ERR_INVAL, "payment required but no wallet to be paid in");
	}
	int n = s->cfg.max_sessions;
	s->pend = calloc((size_t)n, sizeof(*s->pend));
	s->slots = calloc((size_t)n, sizeof(*s->slots));
	s->items = calloc((size_t)n, sizeof(*s->items));
	s->segs = calloc((size_t)n, sizeof(*s->segs));
	if (!s->slots || !s->items || !s->segs || !s->pend || fwd_ctx_new(s->cfg.pool, &s->ctx) != 0) {
		shard_free(s);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	*out = s;
	return 0;
}

static void sess_free(shard_t *s, struct sess *ss)
{
	for (int i = 0; i < s->cfg.max_sessions; i++)
		if (s->slots[i] == ss) {
			s->slots[i] = NULL;
			break;
		}
	s->kv_used -= ss->bytes;
	s->n_sess--;
	fwd_state_free(ss->st);
	if (ss->pay) {
		log_info("shard", "paid session %016" PRIx64 " ended: served %" PRIu64 "+%" PRIu64 " tokens, %" PRIu64
			 " receipts, voucher %" PRIu64 " for %" PRIu64 "+%" PRIu64 "; payment work %.0f us", ss->id,
			 ss->served_in, ss->served_out, ss->pay->receipt_seq, ss->pay->last.seq, ss->pay->last.in_tokens,
			 ss->pay->last.out_tokens, (double)ss->pay_ns / 1e3);
		chan_provider_close(ss->pay);
		if (ss->pay->last.seq > 0 && s->cfg.pay.on_settle)
			s->cfg.pay.on_settle(s->cfg.user, &ss->pay->last);
		free(ss->pay);
	}
	free(ss);
}

static void queue_drop_session(shard_t *s, struct sess *ss)
{
	struct req **pp = &s->qhead, *prev = NULL;
	while (*pp) {
		struct req *r = *pp;
		if (r->ss == ss) {
			*pp = r->next;
			if (s->qtail == r)
				s->qtail = prev;
			s->queue_bytes -= (uint64_t)r->n * (uint64_t)s->d * sizeof(float);
			s->n_queued--;
			free(r->x);
			free(r);
		} else {
			prev = r;
			pp = &r->next;
		}
	}
	ss->n_queued = 0;
}

void shard_free(shard_t *s)
{
	if (!s)
		return;
	if (s->slots) {
		for (int i = 0; i < s->cfg.max_sessions; i++)
			if (s->slots[i]) {
				queue_drop_session(s, s->slots[i]);
				sess_free(s, s->slots[i]);
			}
	}
	for (int i = 0; i < s->n_items; i++)
		free(s->items ? s->items[i].out : NULL);
	fwd_ctx_free(s->ctx);
	free(s->slots);
	free(s->items);
	free(s->segs);
	free(s->x);
	free(s->pend);
	free(s);
}

/* ---- replies */

static void send_open_err(shard_t *s, void *client, uint64_t sid, int code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void send_open_err(shard_t *s, void *client, uint64_t sid, int code, const char *fmt, ...)
{
	wire_msg_t r;
	memset(&r, 0, sizeof(r));
	r.type = WIRE_OPEN_ERR;
	r.u.error.session_id = sid;
	r.u.error.code = (uint16_t)code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r.u.error.msg, sizeof(r.u.error.msg), fmt, ap);
	va_end(ap);
	s->cfg.reply(s->cfg.user, client, &r);
}

/* ERROR (code, "session <id>: text") then CLOSE_SESSION(id, code). */
static void send_session_err(shard_t *s, void *client, uint64_t sid, int code, const char *text)
{
	wire_msg_t r;
	memset(&r, 0, sizeof(r));
	r.type = WIRE_ERROR;
	r.u.error.code = (uint16_t)code;
	snprintf(r.u.error.msg, sizeof(r.u.error.msg), "session %016" PRIx64 ": %s", sid, text);
	s->cfg.reply(s->cfg.user, client, &r);
	memset(&r, 0, sizeof(r));
	r.type = WIRE_CLOSE_SESSION;
	r.u.close.session_id = sid;
	r.u.close.reason = (uint16_t)code;
	s->cfg.reply(s->cfg.user, client, &r);
}

/* Ends a session: its queue is dropped, its state freed now or (when the
 * running step holds it) by shard_step_end. */
static void sess_end(shard_t *s, struct sess *ss)
{
	queue_drop_session(s, ss);
	if (ss->busy)
		ss->dead = 1;
	else
		sess_free(s, ss);
}

static struct sess *find(shard_t *s, void *client, uint64_t sid)
{
	for (int i = 0; i < s->cfg.max_sessions; i++) {
		struct sess *ss = s->slots[i];
		if (ss && !ss->dead && ss->client == client && ss->id == sid)
			return ss;
	}
	return NULL;
}

/* ---- messages */

/* The PAY_OPEN announced for (client, sid), or NULL. */
static struct pay_pending *pay_take(shard_t *s, void *client, uint64_t sid)
{
	for (int i = 0; i < s->cfg.max_sessions; i++)
		if (s->pend[i].client == client && s->pend[i].sid == sid)
			return &s->pend[i];
	return NULL;
}

static void on_pay_open(shard_t *s, void *client, const wire_pay_t *p)
{
	struct pay_pending *pp = pay_take(s, client, p->id);
	for (int i = 0; i < s->cfg.max_sessions && !pp; i++)
		if (!s->pend[i].client)
			pp = &s->pend[i];
	if (!pp) {
		send_session_err(s, client, p->id, WIRE_E_BUSY, "too many PAY_OPEN waiting for their OPEN_SESSION");
		return;
	}
	memset(pp, 0, sizeof(*pp));
	pp->client = client;
	pp->sid = p->id;
	pp->n_prompt = p->n_prompt;
	chan_terms_t *t = &pp->t;
	memcpy(t->channel, p->channel, MARKET_IDLEN);
	memcpy(t->buyer, p->wallet, WALLET_PUBLEN);
	t->budget = p->budget;
	t->expiry = p->expiry;
	t->price_in = p->price_in;
	t->price_out = p->price_out;
	t->chunk = p->chunk;
	const shard_pay_cfg_t *pc = &s->cfg.pay;
	if (!pc->wallet) {
		snprintf(pp->bad, sizeof(pp->bad), "this shard takes no payments");
		return;
	}
	memcpy(t->provider, wallet_pub(pc->wallet), WALLET_PUBLEN);
	/* The terms must be exactly the announced ones: both sides compute
	 * every charge from them. */
	if (p->price_in != pc->price_in || p->price_out != pc->price_out || p->chunk != pc->chunk)
		snprintf(pp->bad, sizeof(pp->bad),
			 "prices in %" PRId64 " out %" PRId64 " chunk %u offered, this shard asks in %" PRId64
			 " out %" PRId64 " chunk %u",
			 p->price_in, p->price_out, p->chunk, pc->price_in, pc->price_out, pc->chunk);
	else if (p->expiry <= (int64_t)time(NULL))
		snprintf(pp->bad, sizeof(pp->bad), "the channel has expired");
	if (!pp->bad[0] && pc->verify) {
		/* Last: verify may answer (shard_pay_verified) before it returns. */
		pp->ticket = ++s->next_ticket;
		pp->verifying = 1;
		pc->verify(s->cfg.user, pp->ticket, t->channel);
	}
}

static void on_pay_terms_req(shard_t *s, void *client, const wire_pay_t *q)
{
	wire_msg_t r;
	memset(&r, 0, sizeof(r));
	r.type = WIRE_PAY_TERMS;
	r.u.pay.id = q->id;
	r.u.pay.chunk = s->cfg.pay.chunk;
	if (s->cfg.pay.wallet) {
		memcpy(r.u.pay.wallet, wallet_pub(s->cfg.pay.wallet), WIRE_KEYLEN);
		r.u.pay.price_in = s->cfg.pay.price_in;
		r.u.pay.price_out = s->cfg.pay.price_out;
		r.u.pay.flags = s->cfg.pay.require_payment ? WIRE_PAY_REQUIRED : 0;
	}
	s->cfg.reply(s->cfg.user, client, &r);
}

static void on_voucher(shard_t *s, void *client, const wire_pay_t *p)
{
	struct sess *ss = find(s, client, p->id);
	if (!ss || !ss->pay) {
		send_session_err(s, client, p->id, ss ? WIRE_E_BAD_REQUEST : WIRE_E_NO_SESSION,
				 ss ? "a voucher for an unpaid session" : "no such session");
		return;
	}
	voucher_t v;
	err_msg_t e = { { 0 } };
	uint64_t t0 = clock_ns();
	int rc = voucher_decode(p->voucher, WIRE_VOUCHER_LEN, &v, &e);
	if (rc == 0)
		rc = chan_provider_accept(ss->pay, &v, (int64_t)time(NULL), &e);
	/* The store's synced write is part of what paying costs the token path. */
	if (rc == 0 && s->cfg.pay.on_voucher && (rc = s->cfg.pay.on_voucher(s->cfg.user, &v)) != 0)
		err_set(&e, rc, "the provider could not store it");
	ss->pay_ns += clock_ns() - t0;
	if (rc != 0) {
		char text[300];
		snprintf(text, sizeof(text), "payment required: voucher refused (%s: %.200s)", voucher_err_str(rc), e.msg);
		sess_end(s, ss);
		send_session_err(s, client, p->id, WIRE_E_PAYMENT, text);
		return;
	}
	ss->last_ms = s->now_ms;
}

static void on_open(shard_t *s, void *client, const wire_open_t *o)
{
	const model_t *m = s->cfg.model;
	struct pay_pending *wait = pay_take(s, client, o->session_id);
	if (wait && wait->verifying) {
		/* Its channel is being checked: answered by shard_pay_verified. */
		wait->open = *o;
		wait->has_open = 1;
		return;
	}
	if (memcmp(o->model_id, s->cfg.model_id, WIRE_MODEL_ID_LEN) != 0) {
		send_open_err(s, client, o->session_id, WIRE_E_UNSUPPORTED, "this shard serves another model");
		return;
	}
	if ((int64_t)o->layer_a != s->cfg.layer_a || (int64_t)o->layer_b != s->cfg.layer_b) {
		send_open_err(s, client, o->session_id, WIRE_E_BAD_REQUEST,
			      "span [%u, %u) asked, this shard serves exactly [%d, %d)", o->layer_a, o->layer_b,
			      s->cfg.layer_a, s->cfg.layer_b);
		return;
	}
	enum fwd_kv_type kv;
	if (o->kv_type == WIRE_KV_F32)
		kv = FWD_KV_F32;
	else if (o->kv_type == WIRE_KV_F16)
		kv = FWD_KV_F16;
	else {
		send_open_err(s, client, o->session_id, WIRE_E_UNSUPPORTED,
			      "KV cache type %u is not served (F32 = 0, F16 = 1)", o->kv_type);
		return;
	}
	if (wire_hidden_row_size(o->enc, (uint32_t)s->d) == 0) {
		send_open_err(s, client, o->session_id, WIRE_E_UNSUPPORTED,
			      "hidden encoding %u is not usable with hidden size %d", o->enc, s->d);
		return;
	}
	if (o->max_len < 1 || o->max_len > (uint32_t)s->max_len) {
		send_open_err(s, client, o->session_id, WIRE_E_BAD_REQUEST,
			      "max_len %u is outside 1..%d (this model's context)", o->max_len, s->max_len);
		return;
	}
	if (find(s, client, o->session_id)) {
		send_open_err(s, client, o->session_id, WIRE_E_BAD_REQUEST, "session id %016" PRIx64 " is already open",
			      o->session_id);
		return;
	}
	if (s->n_sess >= s->cfg.max_sessions) {
		send_open_err(s, client, o->session_id, WIRE_E_BUSY, "shard is at its limit of %d sessions",
			      s->cfg.max_sessions);
		return;
	}
	uint64_t need = fwd_state_bytes_for(m, s->cfg.layer_a, s->cfg.layer_b, (int)o->max_len, kv);
	uint64_t left = s->cfg.kv_mem - s->kv_used;
	if (need > left) {
		send_open_err(s, client, o->session_id, WIRE_E_BUSY,
			      "KV cache of %u positions needs %" PRIu64 " bytes, %" PRIu64 " of %" PRIu64 " left",
			      o->max_len, need, left, s->cfg.kv_mem);
		return;
	}
	struct pay_pending *pp = pay_take(s, client, o->session_id);
	if (pp && pp->bad[0]) {
		send_open_err(s, client, o->session_id, WIRE_E_PAYMENT, "payment terms refused: %s", pp->bad);
		pp->client = NULL;
		return;
	}
	if (!pp && s->cfg.pay.require_payment) {
		send_open_err(s, client, o->session_id, WIRE_E_PAYMENT,
			      "payment required: this shard serves paid sessions only (PAY_OPEN with a channel, "
			      "price in %" PRId64 " out %" PRId64 " per 1M tokens)", s->cfg.pay.price_in, s->cfg.pay.price_out);
		return;
	}
	chan_provider_t *pay = NULL;
	if (pp) {
		pay = calloc(1, sizeof(*pay));
		if (!pay || chan_provider_init(pay, &pp->t) != 0) {
			free(pay);
			pp->client = NULL;
			send_open_err(s, client, o->session_id, WIRE_E_PAYMENT, "payment terms refused: unusable channel");
			return;
		}
	}
	uint32_t n_prompt = pp ? pp->n_prompt : 0;
	if (pp)
		pp->client = NULL;
	int slot = -1;
	for (int i = 0; i < s->cfg.max_sessions && slot < 0; i++)
		if (!s->slots[i])
			slot = i;
	struct sess *ss = calloc(1, sizeof(*ss));
	if (slot < 0 || !ss ||
	    fwd_state_new(m, s->cfg.layer_a, s->cfg.layer_b, (int)o->max_len, kv, &ss->st) != 0) {
		free(ss);
		free(pay);
		send_open_err(s, client, o->session_id, WIRE_E_INTERNAL, "out of memory for the KV cache");
		return;
	}
	ss->client = client;
	ss->id = o->session_id;
	ss->bytes = need;
	ss->max_len = o->max_len;
	ss->enc = o->enc;
	ss->last_ms = s->now_ms;
	ss->pay = pay;
	ss->n_prompt = n_prompt;
	s->slots[slot] = ss;
	s->n_sess++;
	s->kv_used += need;

	wire_msg_t r;
	memset(&r, 0, sizeof(r));
	r.type = WIRE_OPEN_OK;
	r.u.open_ok.session_id = o->session_id;
	r.u.open_ok.max_len = o->max_len;
	s->cfg.reply(s->cfg.user, client, &r);
}

/* Why the settlement layer's channel does not back what PAY_OPEN claimed
 * (written into bad), or nothing. */
static void pay_check_channel(const struct pay_pending *pp, const settle_channel_t *ch, char *bad, size_t cap)
{
	const chan_terms_t *t = &pp->t;
	static const char *states[] = { "open", "closing", "closed" };
	if (memcmp(ch->id, t->channel, MARKET_IDLEN) != 0)
		snprintf(bad, cap, "the ledger answered for another channel");
	else if (ch->state != SETTLE_OPEN)
		snprintf(bad, cap, "the channel is %s at the ledger",
			 ch->state >= 0 && ch->state <= 2 ? states[ch->state] : "not open");
	else if (memcmp(ch->buyer, t->buyer, WALLET_PUBLEN) != 0)
		snprintf(bad, cap, "the channel belongs to another buyer");
	else if (memcmp(ch->provider, t->provider, WALLET_PUBLEN) != 0)
		snprintf(bad, cap, "the channel pays another provider");
	else if (ch->budget != t->budget)
		snprintf(bad, cap, "budget %" PRId64 " claimed, the ledger holds %" PRId64, t->budget, ch->budget);
	else if (ch->expiry != t->expiry)
		snprintf(bad, cap, "expiry %" PRId64 " claimed, the ledger says %" PRId64, t->expiry, ch->expiry);
	else if (ch->redeemed != 0 || ch->last_seq != 0)
		/* Vouchers start again at sequence 1 in a session: a used channel
		 * would let the buyer pay with amounts already redeemed. */
		snprintf(bad, cap, "the channel was already redeemed from (%" PRId64 " paid)", ch->redeemed);
	else if (ch->expiry <= (int64_t)time(NULL))
		snprintf(bad, cap, "the channel has expired");
}

void shard_pay_verified(shard_t *s, uint64_t ticket, int rc, const settle_channel_t *ch, const char *why)
{
	struct pay_pending *pp = NULL;
	for (int i = 0; i < s->cfg.max_sessions && !pp; i++)
		if (s->pend[i].client && s->pend[i].verifying && s->pend[i].ticket == ticket)
			pp = &s->pend[i];
	if (!pp)
		return;
	pp->verifying = 0;
	char id[17];
	for (int i = 0; i < 8; i++)
		snprintf(id + 2 * i, 3, "%02x", pp->t.channel[i]);
	char bad[sizeof(pp->bad) - 32] = "";
	if (rc == ERR_NOTFOUND)
		snprintf(bad, sizeof(bad), "no such channel at the ledger");
	else if (rc != 0 || !ch)
		snprintf(bad, sizeof(bad), "the ledger could not be asked (%.80s)", why ? why : err_str(rc));
	else
		pay_check_channel(pp, ch, bad, sizeof(bad));
	if (bad[0])
		snprintf(pp->bad, sizeof(pp->bad), "channel %.16s..: %.127s", id, bad);
	if (pp->has_open) {
		pp->has_open = 0;
		wire_open_t o = pp->open;
		on_open(s, pp->client, &o);
	}
}

static void forward_err(shard_t *s, void *client, struct sess *ss, uint64_t sid, int code, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static void forward_err(shard_t *s, void *client, struct sess *ss, uint64_t sid, int code, const char *fmt, ...)
{
	char text[WIRE_MAX_ERRMSG - 32];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (ss)
		sess_end(s, ss);
	send_session_err(s, client, sid, code, text);
}

static void on_forward(shard_t *s, void *client, const wire_forward_t *f)
{
	struct sess *ss = find(s, client, f->session_id);
	if (!ss) {
		forward_err(s, client, NULL, f->session_id, WIRE_E_NO_SESSION, "no such session");
		return;
	}
	if (f->enc != ss->enc) {
		forward_err(s, client, ss, f->session_id, WIRE_E_BAD_REQUEST,
			    "encoding %u, the session was opened with %u", f->enc, ss->enc);
		return;
	}
	if (f->dim != (uint32_t)s->d) {
		forward_err(s, client, ss, f->session_id, WIRE_E_BAD_REQUEST, "dim %u, this model's hidden size is %d",
			    f->dim, s->d);
		return;
	}
	if (f->n_tokens < 1 || f->n_tokens > WIRE_MAX_TOKENS) {
		forward_err(s, client, ss, f->session_id, WIRE_E_BAD_REQUEST, "%u rows (1..%d)", f->n_tokens,
			    WIRE_MAX_TOKENS);
		return;
	}
	if (f->start_pos > ss->next_pos) {
		forward_err(s, client, ss, f->session_id, WIRE_E_BAD_REQUEST,
			    "start_pos %u leaves a gap: the session is at position %u", f->start_pos, ss->next_pos);
		return;
	}
	if ((uint64_t)f->start_pos + f->n_tokens > ss->max_len) {
		forward_err(s, client, ss, f->session_id, WIRE_E_BAD_REQUEST,
			    "positions %u..%u are past the session's max_len %u", f->start_pos,
			    f->start_pos + f->n_tokens - 1, ss->max_len);
		return;
	}
	size_t want = wire_hidden_size(f->enc, f->n_tokens, f->dim);
	if (!f->data || f->data_len != want) {
		forward_err(s, client, ss, f->session_id, WIRE_E_PROTOCOL,
			    "hidden data is %zu bytes, %u rows of %u in encoding %u take %zu", f->data ? f->data_len : 0,
			    f->n_tokens, f->dim, f->enc, want);
		return;
	}
	if (ss->pay) {
		/* Bounded credit: the first row must still be within one chunk of
		 * the last voucher (then the whole request is served). Not timed:
		 * a few additions. */
		uint64_t n_in = 0;
		if (f->start_pos < ss->n_prompt)
			n_in = ss->n_prompt - f->start_pos < f->n_tokens ? ss->n_prompt - f->start_pos : f->n_tokens;
		int first_in = f->start_pos < ss->n_prompt;
		if (!chan_provider_may_serve(ss->pay, ss->pay_in + (first_in ? 1 : 0), ss->pay_out + (first_in ? 0 : 1))) {
			forward_err(s, client, ss, f->session_id, WIRE_E_PAYMENT,
				    "payment required: %" PRIu64 " tokens delivered, the last voucher covers %" PRIu64
				    " (credit: one chunk of %" PRIu64 ")",
				    ss->pay_in + ss->pay_out, ss->pay->last.in_tokens + ss->pay->last.out_tokens,
				    ss->pay->t.chunk);
			return;
		}
		ss->pay_in += n_in;
		ss->pay_out += f->n_tokens - n_in;
	}
	uint64_t bytes = (uint64_t)f->n_tokens * (uint64_t)s->d * sizeof(float);
	if (ss->n_queued >= SHARD_MAX_QUEUED_PER_SESSION || s->queue_bytes + bytes > s->cfg.queue_mem) {
		forward_err(s, client, ss, f->session_id, WIRE_E_BUSY, "too many requests queued");
		return;
	}
	struct req *rq = calloc(1, sizeof(*rq));
	float *x = malloc((size_t)bytes);
	if (!rq || !x) {
		free(rq);
		free(x);
		forward_err(s, client, ss, f->session_id, WIRE_E_INTERNAL, "out of memory");
		return;
	}
	err_msg_t e = { { 0 } };
	if (wire_hidden_decode(f->enc, f->data, f->data_len, f->n_tokens, f->dim, x, &e) != 0) {
		free(rq);
		free(x);
		forward_err(s, client, ss, f->session_id, WIRE_E_BAD_REQUEST, "hidden states: %s", e.msg);
		return;
	}
	rq->ss = ss;
	rq->start = f->start_pos;
	rq->n = f->n_tokens;
	rq->x = x;
	if (s->qtail)
		s->qtail->next = rq;
	else
		s->qhead = rq;
	s->qtail = rq;
	s->n_queued++;
	s->queue_bytes += bytes;
	ss->n_queued++;
	ss->next_pos = f->start_pos + f->n_tokens;
	ss->last_ms = s->now_ms;
}

int shard_handle(shard_t *s, void *client, const wire_msg_t *m)
{
	switch (m->type) {
	case WIRE_OPEN_SESSION:
		on_open(s, client, &m->u.open);
		return 0;
	case WIRE_FORWARD:
		on_forward(s, client, &m->u.forward);
		return 0;
	case WIRE_CLOSE_SESSION: {
		struct sess *ss = find(s, client, m->u.close.session_id);
		if (ss && ss->pay && ss->pay->last.in_tokens + ss->pay->last.out_tokens < ss->served_in + ss->served_out)
			/* The last voucher (sent before CLOSE) should cover everything
			 * served; a buyer that pays less keeps at most a chunk. */
			log_warn("shard", "session %016" PRIx64 " closed: %" PRIu64 "+%" PRIu64 " tokens served, the last "
				 "voucher pays %" PRIu64 "+%" PRIu64, ss->id, ss->served_in, ss->served_out,
				 ss->pay->last.in_tokens, ss->pay->last.out_tokens);
		if (ss)
			sess_end(s, ss);
		return 0;
	}
	case WIRE_PAY_TERMS_REQ:
		on_pay_terms_req(s, client, &m->u.pay);
		return 0;
	case WIRE_PAY_OPEN:
		on_pay_open(s, client, &m->u.pay);
		return 0;
	case WIRE_VOUCHER:
		on_voucher(s, client, &m->u.pay);
		return 0;
	default:
		return ERR_INVAL;
	}
}

void shard_drop_client(shard_t *s, void *client)
{
	for (int i = 0; i < s->cfg.max_sessions; i++)
		if (s->pend[i].client == client)
			s->pend[i].client = NULL;
	for (int i = 0; i < s->cfg.max_sessions; i++) {
		struct sess *ss = s->slots[i];
		if (ss && !ss->dead && ss->client == client)
			sess_end(s, ss);
	}
}

void shard_tick(shard_t *s, uint64_t now_ms)
{
	s->now_ms = now_ms;
	for (int i = 0; i < s->cfg.max_sessions; i++) {
		struct sess *ss = s->slots[i];
		if (!ss || ss->dead || ss->busy || ss->n_queued || now_ms - ss->last_ms < s->cfg.idle_ms)
			continue;
		void *client = ss->client;
		uint64_t sid = ss->id;
		char text[96];
		snprintf(text, sizeof(text), "closed after %" PRIu64 " ms idle", now_ms - ss->last_ms);
		sess_end(s, ss);
		send_session_err(s, client, sid, WIRE_E_NO_SESSION, text);
	}
}

void shard_free_capacity(const shard_t *s, uint32_t *free_sessions, uint64_t *free_kv_bytes)
{
	*free_sessions = (uint32_t)(s->cfg.max_sessions - s->n_sess);
	*free_kv_bytes = s->cfg.kv_mem - s->kv_used;
}

void shard_stats(const shard_t *s, shard_stats_t *st)
{
	*st = s->stats;
	st->sessions = s->n_sess;
	st->kv_used = s->kv_used;
	st->queued = s->n_queued;
}

/* ---- steps */

/* A paid session's rows [start, start + n) were computed: counts them as
 * served and, once they are a chunk beyond the last receipt, sends the
 * receipt for the cumulative counts (before the FORWARD_RESULT, so the
 * buyer holds it when it counts that result and answers before its next
 * FORWARD: no round trip is added). */
static void pay_served(shard_t *s, struct sess *ss, uint32_t start, uint32_t n)
{
	uint64_t in = 0;
	if (start < ss->n_prompt)
		in = ss->n_prompt - start < n ? ss->n_prompt - start : n;
	ss->served_in += in;
	ss->served_out += n - in;
	uint64_t total = ss->served_in + ss->served_out;
	if (total - ss->rcpt_total < ss->pay->t.chunk)
		return;
	receipt_t rc;
	int r = chan_provider_receipt(ss->pay, ss->served_in, ss->served_out, NULL, s->cfg.pay.wallet, &rc);
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_RECEIPT;
	m.u.pay.id = ss->id;
	if (r == 0)
		r = receipt_encode(&rc, m.u.pay.receipt);
	if (r != 0) {
		log_warn("shard", "session %016" PRIx64 ": no receipt for %" PRIu64 "+%" PRIu64 " tokens (%s)", ss->id,
			 ss->served_in, ss->served_out, voucher_err_str(r));
		return;
	}
	ss->rcpt_total = total;
	s->cfg.reply(s->cfg.user, ss->client, &m);
}

int shard_pending(const shard_t *s) { return !s->running && s->qhead != NULL; }

int shard_step_begin(shard_t *s)
{
	if (!shard_pending(s))
		return 0;
	s->step_no++;
	int rows = 0, ni = 0;
	struct req **pp = &s->qhead, *prev = NULL;
	while (*pp && ni < s->cfg.max_sessions) {
		struct req *r = *pp;
		struct sess *ss = r->ss;
		/* One request per session per step, the earliest: a later one of
		 * a session whose first was skipped must wait too. */
		int take = ss->mark != s->step_no && (ni == 0 || rows + (int)r->n <= s->cfg.max_step_rows);
		ss->mark = s->step_no;
		if (!take) {
			prev = r;
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		if (s->qtail == r)
			s->qtail = prev;
		s->n_queued--;
		s->queue_bytes -= (uint64_t)r->n * (uint64_t)s->d * sizeof(float);
		ss->n_queued--;

		struct item *it = &s->items[ni];
		memset(it, 0, sizeof(*it));
		it->ss = ss;
		it->start = r->start;
		it->n = r->n;
		int pos = fwd_state_pos(ss->st);
		if ((int)r->start > pos) {
			/* Cannot happen (a failed request ends its session), kept as a guard. */
			it->code = WIRE_E_BAD_REQUEST;
			snprintf(it->msg, sizeof(it->msg), "start_pos %u is past the session's position %d", r->start, pos);
		} else if ((int)r->start < pos && fwd_state_truncate(ss->st, (int)r->start) != 0) {
			it->code = WIRE_E_INTERNAL;
			snprintf(it->msg, sizeof(it->msg), "cannot rewind to %u", r->start);
		}
		size_t need = (size_t)(rows + (int)r->n) * (size_t)s->d;
		if (!it->code && need > s->x_floats) {
			float *nx = realloc(s->x, need * sizeof(float));
			if (!nx) {
				it->code = WIRE_E_INTERNAL;
				snprintf(it->msg, sizeof(it->msg), "out of memory for the batch");
			} else {
				s->x = nx;
				s->x_floats = need;
			}
		}
		if (!it->code) {
			memcpy(s->x + (size_t)rows * (size_t)s->d, r->x, (size_t)r->n * (size_t)s->d * sizeof(float));
			rows += (int)r->n;
		}
		ss->busy = 1;
		free(r->x);
		free(r);
		ni++;
	}
	s->n_items = ni;
	s->running = 1;
	return 1;
}

void shard_step_run(shard_t *s)
{
	int ns = 0;
	for (int i = 0; i < s->n_items; i++)
		if (!s->items[i].code) {
			s->segs[ns].st = s->items[i].ss->st;
			s->segs[ns].n = (int)s->items[i].n;
			ns++;
		}
	s->rc = 0;
	if (ns == 0)
		return;
	uint64_t t0 = clock_ns();
	s->rc = fwd_forward(s->ctx, s->cfg.model, s->segs, ns, s->x, &s->err);
	s->fwd_ns = clock_ns() - t0;
	if (s->rc)
		return;
	size_t row = 0;
	for (int i = 0; i < s->n_items; i++) {
		struct item *it = &s->items[i];
		if (it->code)
			continue;
		const float *y = s->x + row * (size_t)s->d;
		row += it->n;
		size_t sz = wire_hidden_size(it->ss->enc, it->n, (uint32_t)s->d);
		err_msg_t e = { { 0 } };
		it->out = malloc(sz ? sz : 1);
		if (!it->out) {
			it->code = WIRE_E_INTERNAL;
			snprintf(it->msg, sizeof(it->msg), "out of memory for the result");
		} else if (wire_hidden_encode(it->ss->enc, y, it->n, (uint32_t)s->d, it->out, sz, &e) != 0) {
			it->code = WIRE_E_UNSUPPORTED;
			snprintf(it->msg, sizeof(it->msg), "result does not fit the session's encoding: %s", e.msg);
		} else {
			it->out_len = sz;
		}
	}
}

int shard_step_end(shard_t *s)
{
	if (!s->running)
		return shard_pending(s);
	int ns = 0;
	for (int i = 0; i < s->n_items; i++)
		ns += !s->items[i].code;
	if (ns > 0 && s->rc == 0) {
		s->stats.steps++;
		if ((uint64_t)ns > s->stats.max_batch)
			s->stats.max_batch = (uint64_t)ns;
		if (ns > 1)
			s->stats.batched_steps++;
		if (ns == 1 && s->segs[0].n == 1) {
			s->stats.tok_steps++;
			s->stats.tok_ns += s->fwd_ns;
		}
	}
	for (int i = 0; i < s->n_items; i++) {
		struct item *it = &s->items[i];
		struct sess *ss = it->ss;
		ss->busy = 0;
		if (!it->code && s->rc) {
			it->code = WIRE_E_INTERNAL;
			snprintf(it->msg, sizeof(it->msg), "forward pass failed: %s", s->err.msg);
		}
		if (ss->dead) {
			sess_free(s, ss);
		} else if (it->code) {
			void *client = ss->client;
			uint64_t sid = ss->id;
			sess_end(s, ss);
			send_session_err(s, client, sid, it->code, it->msg);
		} else {
			s->stats.rows += it->n;
			ss->last_ms = s->now_ms;
			if (ss->pay) {
				uint64_t t0 = clock_ns();
				pay_served(s, ss, it->start, it->n);
				ss->pay_ns += clock_ns() - t0;
			}
			wire_msg_t r;
			memset(&r, 0, sizeof(r));
			r.type = WIRE_FORWARD_RESULT;
			r.u.forward.session_id = ss->id;
			r.u.forward.start_pos = it->start;
			r.u.forward.n_tokens = it->n;
			r.u.forward.dim = (uint32_t)s->d;
			r.u.forward.enc = ss->enc;
			r.u.forward.data = it->out;
			r.u.forward.data_len = it->out_len;
			s->cfg.reply(s->cfg.user, ss->client, &r);
		}
		free(it->out);
		it->out = NULL;
	}
	s->n_items = 0;
	s->running = 0;
	return shard_pending(s);
}

int shard_step(shard_t *s)
{
	if (!shard_step_begin(s))
		return 0;
	shard_step_run(s);
	shard_step_end(s);
	return 1;
}
