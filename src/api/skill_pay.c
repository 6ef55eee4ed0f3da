/* skill_pay.c - paid skill calls: the provider's checks, credit and
 * receipts, the buyer's channels and its reader of the paid answer (see
 * skill_pay.h). */
#define _GNU_SOURCE
#include "api/skill_pay.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "base/log.h"
#include "base/sbuf.h"
#include "market/chstore.h"
#include "market/settle.h"
#include "market/settle_remote.h"
#include "market/vstore.h"
#include "market/wallet.h"

#define SLICE_MS 50
#define MAX_LINE (64u << 10)        /* an SSE line of the paid answer */
#define MAX_TERMS_BODY (16u << 10)  /* a 402 body read by the buyer */
#define TERMS_CACHE 64

/* A channel as the provider sees it. */
struct pchan {
	int used;
	chan_provider_t cp;
	uint64_t calls;             /* calls counted by the running (or last) call's first voucher */
	uint64_t base;              /* output tokens before the running call */
	uint64_t receipted;         /* output tokens of the running call in its last receipt */
	uint64_t redeemed_seq;
	int busy;                   /* a call runs on it */
	int fresh;                  /* no voucher accepted yet: calls before unknown */
	int64_t checked_at, used_at;
};

/* A channel as the buyer sees it. */
struct bchan {
	int used, busy, dead;
	chan_buyer_t b;
	int64_t used_at;
};

struct tcache {
	int used;
	uint8_t node[ANN_IDLEN];
	spay_terms_t t;
};

struct spay {
	wallet_t *wallet;
	char ledger_host[256];
	int ledger_port;
	char network[65];
	int64_t budget;
	uint32_t chunk;
	int timeout_ms;
	settle_t given;             /* the caller's settlement backend (tests), or ops NULL */
	pthread_mutex_t lmu;        /* dialling the ledger */
	settle_remote_t *settle;
	vstore_t *vs;               /* provider: vouchers on disk before their credit is served */
	chstore_t *cs;              /* buyer: channels on disk before they are reserved */
	pthread_mutex_t mu;         /* the rest */
	pthread_cond_t cond;        /* a voucher was accepted */
	struct pchan pch[SPAY_MAX_CHANNELS];
	struct bchan bch[SPAY_MAX_CHANNELS];
	struct tcache terms[TERMS_CACHE];
	int64_t earned, spent;
};

struct spay_call {
	spay_t *p;
	struct pchan *ch;
	int64_t fee;
	voucher_t before;           /* the channel's best voucher before this call */
	uint64_t calls_before, receipt_seq_before;
	int fresh_before;
};

struct spay_relay {
	spay_t *p;                  /* NULL: the fuzz target's reader */
	struct bchan *ch;
	chan_buyer_t *b;            /* &ch->b, or own_b; NULL: no channel (receipts ignored) */
	chan_buyer_t own_b;
	const wallet_t *wallet;
	ann_addr_t addr;
	skill_fwd_t *f;
	int (*gone)(void *);
	void *ud;
	uint64_t call_base;         /* b's output tokens when the call began */
	int64_t max_tokens;
	int client_stream, client_usage;
	int status;
	char ctype[128];
	int raw;                    /* not a paid stream: bytes pass through as they are */
	int ended;
	char *line;
	size_t line_len, line_cap;
	char *out;
	size_t out_len, out_off, out_cap;
	/* the whole answer, for a client that asked for no stream */
	char *text;
	size_t text_len, text_cap;
	char id[64], model[256], finish[32];
	int64_t created;
	int have_usage;
	oai_usage_t usage;
	char *error_json;
	int receipts;
};

static int64_t now_s(void) { return (int64_t)time(NULL); }

static int unhex(const char *s, size_t len, uint8_t *out, size_t n)
{
	size_t got = 0;
	if (len != 2 * n || sodium_hex2bin(out, n, s, len, NULL, &got, NULL) != 0 || got != n)
		return -1;
	return 0;
}

/* ---- life cycle --------------------------------------------------------- */

int spay_new(const spay_cfg_t *cfg, spay_t **out, err_msg_t *e)
{
	*out = NULL;
	spay_t *p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(e, ERR_NOMEM, "out of memory");
	const char *lp = cfg->ledger_peer ? cfg->ledger_peer : "";
	const char *colon = strrchr(lp, ':');
	size_t hl = colon ? (size_t)(colon - lp) : 0;
	p->ledger_port = colon ? atoi(colon + 1) : 0;
	if (cfg->settle.ops)
		;   /* no ledger node to dial */
	else if (!colon || hl == 0 || hl >= sizeof(p->ledger_host) || p->ledger_port <= 0 || p->ledger_port > 65535) {
		free(p);
		return err_set(e, ERR_INVAL, "ledger peer '%.100s': expected HOST:PORT", lp);
	}
	if (hl < sizeof(p->ledger_host))
		memcpy(p->ledger_host, lp, hl);
	snprintf(p->network, sizeof(p->network), "%s", cfg->network ? cfg->network : "colony");
	p->budget = cfg->budget > 0 ? cfg->budget : SPAY_DEFAULT_BUDGET;
	p->chunk = cfg->chunk ? cfg->chunk : SPAY_DEFAULT_CHUNK;
	p->timeout_ms = cfg->ledger_timeout_ms > 0 ? cfg->ledger_timeout_ms : 5000;
	p->given = cfg->settle;
	int r = wallet_load_or_create(cfg->wallet_home, &p->wallet, NULL, e);
	if (r) {
		free(p);
		return err_prefix(e, r, "wallet in %s", cfg->wallet_home);
	}
	/* the same stores as the node's paid sessions: its periodic redeem and
	 * `colony wallet reclaim` cover skill payments too */
	if ((r = vstore_open(cfg->wallet_home, &p->vs, e)) || (r = chstore_open(cfg->wallet_home, &p->cs, e))) {
		vstore_free(p->vs);
		wallet_free(p->wallet);
		free(p);
		return r;
	}
	pthread_mutex_init(&p->lmu, NULL);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cond, NULL);
	*out = p;
	return 0;
}

void spay_free(spay_t *p)
{
	if (!p)
		return;
	settle_remote_free(p->settle);
	vstore_free(p->vs);
	chstore_free(p->cs);
	wallet_free(p->wallet);
	pthread_mutex_destroy(&p->lmu);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cond);
	free(p);
}

const uint8_t *spay_wallet(const spay_t *p) { return wallet_pub(p->wallet); }
int64_t spay_earned(const spay_t *p) { return __atomic_load_n(&p->earned, __ATOMIC_RELAXED); }
int64_t spay_spent(const spay_t *p) { return __atomic_load_n(&p->spent, __ATOMIC_RELAXED); }

/* The ledger client, dialled on first use (a blocking call). */
static int ledger(spay_t *p, settle_t *st, err_msg_t *e)
{
	int r = 0;
	if (p->given.ops) {
		*st = p->given;
		return 0;
	}
	pthread_mutex_lock(&p->lmu);
	if (!p->settle) {
		settle_remote_cfg_t rc;
		settle_remote_cfg_default(&rc);
		rc.host = p->ledger_host;
		rc.port = p->ledger_port;
		rc.network = p->network;
		rc.wallet = p->wallet;
		rc.timeout_ms = p->timeout_ms;
		r = settle_remote_new(&rc, &p->settle, e);
	}
	if (!r)
		*st = settle_remote_settle(p->settle);
	pthread_mutex_unlock(&p->lmu);
	return r;
}

/* price_in of a skill channel: fee_call per call as "per 1M input units". */
static int fee_price(int64_t fee, amount_t *out)
{
	return amount_mul(fee, AMOUNT_PER_TOKENS, out);
}

/* ---- terms -------------------------------------------------------------- */

char *spay_terms_json(const spay_t *p, const skill_def_t *sk, const char *msg)
{
	char w[WALLET_ADDR_STRLEN];
	wallet_addr_str(wallet_pub(p->wallet), w);
	json_t *o = json_pack("{s:{s:s,s:s,s:n,s:s},s:{s:s,s:I,s:I,s:I,s:s}}", "error", "message", msg, "type",
			      "invalid_request_error", "param", "code", "payment_required", "payment", "wallet", w,
			      "fee_call", (json_int_t)sk->fee_call, "price_out", (json_int_t)sk->price_out, "chunk",
			      (json_int_t)p->chunk, "skill", sk->name);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

static int get_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *v, err_msg_t *e)
{
	json_t *x = json_object_get(o, k);
	if (!json_is_integer(x))
		return err_set(e, ERR_FORMAT, "payment terms: \"%s\" is not an integer", k);
	json_int_t n = json_integer_value(x);
	if (n < lo || n > hi)
		return err_set(e, ERR_FORMAT, "payment terms: \"%s\" = %lld is out of range", k, (long long)n);
	*v = (int64_t)n;
	return 0;
}

int spay_terms_parse(const char *body, size_t len, spay_terms_t *t, err_msg_t *e)
{
	memset(t, 0, sizeof(*t));
	json_error_t je;
	json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return err_set(e, ERR_FORMAT, "payment terms: not JSON (line %d column %d: %.80s)", je.line, je.column,
			       je.text);
	int r;
	json_t *pay = json_object_get(o, "payment");
	json_t *w = json_object_get(pay, "wallet");
	int64_t chunk = 0;
	if (!json_is_object(pay))
		r = err_set(e, ERR_FORMAT, "payment terms: no \"payment\" object");
	else if (!json_is_string(w) || wallet_addr_parse(json_string_value(w), t->wallet, NULL) != 0)
		r = err_set(e, ERR_FORMAT, "payment terms: \"wallet\" is not 64 hex digits");
	else if (!(r = get_int(pay, "fee_call", 0, AMOUNT_MAX / AMOUNT_PER_TOKENS, &t->fee_call, e)) &&
		 !(r = get_int(pay, "price_out", 0, AMOUNT_MAX, &t->price_out, e)) &&
		 !(r = get_int(pay, "chunk", 1, 1 << 20, &chunk, e)))
		t->chunk = (uint32_t)chunk;
	json_decref(o);
	return r;
}

/* ---- receipt lines ------------------------------------------------------ */

size_t spay_receipt_line(const receipt_t *r, char *out, size_t cap)
{
	uint8_t b[RECEIPT_SIZE];
	size_t tl = strlen(SPAY_RECEIPT_TAG);
	if (cap < tl + 2 * RECEIPT_SIZE + 3 || receipt_encode(r, b) != 0)
		return 0;
	memcpy(out, SPAY_RECEIPT_TAG, tl);
	sodium_bin2hex(out + tl, 2 * RECEIPT_SIZE + 1, b, RECEIPT_SIZE);
	memcpy(out + tl + 2 * RECEIPT_SIZE, "\n\n", 3);
	return tl + 2 * RECEIPT_SIZE + 2;
}

int spay_receipt_parse(const char *line, size_t len, receipt_t *r, err_msg_t *e)
{
	size_t tl = strlen(SPAY_RECEIPT_TAG);
	uint8_t b[RECEIPT_SIZE];
	if (len < tl || memcmp(line, SPAY_RECEIPT_TAG, tl))
		return err_set(e, ERR_FORMAT, "not a receipt line");
	line += tl;
	len -= tl;
	while (len && (line[len - 1] == ' ' || line[len - 1] == '\r'))
		len--;
	if (unhex(line, len, b, sizeof(b)))
		return err_set(e, ERR_FORMAT, "receipt line: %zu characters, want %d hex digits", len, 2 * RECEIPT_SIZE);
	return receipt_decode(b, sizeof(b), r, e);
}

/* ---- provider ----------------------------------------------------------- */

static struct pchan *pch_find(spay_t *p, const uint8_t id[MARKET_IDLEN])
{
	for (int i = 0; i < SPAY_MAX_CHANNELS; i++)
		if (p->pch[i].used && !memcmp(p->pch[i].cp.t.channel, id, MARKET_IDLEN))
			return &p->pch[i];
	return NULL;
}

/* A free slot, or the least recently used idle channel with nothing left
 * to redeem. */
static struct pchan *pch_slot(spay_t *p)
{
	struct pchan *best = NULL;
	for (int i = 0; i < SPAY_MAX_CHANNELS; i++) {
		struct pchan *c = &p->pch[i];
		if (!c->used)
			return c;
		if (!c->busy && c->redeemed_seq >= c->cp.last.seq && (!best || c->used_at < best->used_at))
			best = c;
	}
	return best;
}

__attribute__((format(printf, 4, 5)))
static int pay_err(oai_err_t *err, int status, const char *code, const char *fmt, ...)
{
	char m[sizeof(err->message)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	return oai_err_set(err, status, status == 503 ? "server_error" : "invalid_request_error", NULL, code, "%s", m);
}

int spay_call_open(spay_t *p, const skill_def_t *sk, const char *channel, const char *buyer, const char *voucher,
	spay_call_t **out, oai_err_t *err)
{
	*out = NULL;
	uint8_t id[MARKET_IDLEN], bw[WALLET_PUBLEN], vb[VOUCHER_SIZE];
	voucher_t v;
	err_msg_t e = { { 0 } };
	if (!channel || unhex(channel, strlen(channel), id, sizeof(id)))
		return pay_err(err, 400, "bad_payment", "%s: expected 64 hex digits", SPAY_HDR_CHANNEL);
	if (!buyer || unhex(buyer, strlen(buyer), bw, sizeof(bw)))
		return pay_err(err, 400, "bad_payment", "%s: expected 64 hex digits", SPAY_HDR_BUYER);
	if (!voucher || unhex(voucher, strlen(voucher), vb, sizeof(vb)))
		return oai_err_set(err, 400, "invalid_request_error", NULL, "bad_payment", "%s: expected %d hex digits",
				   SPAY_HDR_VOUCHER, 2 * VOUCHER_SIZE);
	if (voucher_decode(vb, sizeof(vb), &v, &e))
		return pay_err(err, 400, "bad_payment", "%s: %s", SPAY_HDR_VOUCHER, e.msg);
	if (memcmp(v.channel, id, MARKET_IDLEN))
		return pay_err(err, 402, "payment_required", "the voucher is for another channel");
	amount_t pin;
	if (fee_price(sk->fee_call, &pin))
		return pay_err(err, 503, "server_error", "the skill's fee is too large");
	int64_t now = now_s();
	pthread_mutex_lock(&p->mu);
	struct pchan *ch = pch_find(p, id);
	int busy = ch && ch->busy;
	int check = !ch || now - ch->checked_at >= SPAY_RECHECK_S;
	pthread_mutex_unlock(&p->mu);
	if (busy)
		return pay_err(err, 409, "channel_busy", "the channel serves another call now: use another one");
	settle_channel_t sc;
	memset(&sc, 0, sizeof(sc));
	if (check) {
		/* the ledger says what the channel is: whose, how much, until when */
		settle_t st;
		int r = ledger(p, &st, &e);
		if (!r)
			r = settle_channel(&st, id, &sc, &e);
		if (r == ERR_NOTFOUND)
			return pay_err(err, 402, "payment_required", "no such channel at the ledger");
		if (r)
			return pay_err(err, 503, "ledger_unreachable", "cannot check the channel at the ledger: %s", e.msg);
		const char *why = NULL;
		if (memcmp(sc.buyer, bw, WALLET_PUBLEN))
			why = "its buyer is not " SPAY_HDR_BUYER;
		else if (memcmp(sc.provider, wallet_pub(p->wallet), WALLET_PUBLEN))
			why = "it pays another provider";
		else if (sc.state != SETTLE_OPEN)
			why = "it is closed";
		else if (sc.expiry <= now)
			why = "it has expired";
		else if (sc.budget <= 0)
			why = "it has no budget";
		if (why)
			return pay_err(err, 402, "payment_required", "the channel is refused: %s", why);
	}
	pthread_mutex_lock(&p->mu);
	int status = 0;
	ch = pch_find(p, id);
	if (!ch) {
		if (!check || !(ch = pch_slot(p))) {
			status = pay_err(err, 503, "server_error", "too many payment channels open here");
			goto out;
		}
		memset(ch, 0, sizeof(*ch));
		chan_terms_t t;
		memset(&t, 0, sizeof(t));
		memcpy(t.channel, id, MARKET_IDLEN);
		memcpy(t.buyer, sc.buyer, WALLET_PUBLEN);
		memcpy(t.provider, sc.provider, WALLET_PUBLEN);
		t.budget = sc.budget;
		t.expiry = sc.expiry;
		t.price_in = pin;
		t.price_out = sk->price_out;
		t.chunk = p->chunk;
		if (chan_provider_init(&ch->cp, &t) != 0) {
			status = pay_err(err, 402, "payment_required", "unusable channel terms");
			goto out;
		}
		/* What the ledger already paid: a voucher must go beyond it. */
		ch->cp.last.seq = sc.last_seq;
		ch->cp.last.amount = sc.redeemed;
		ch->redeemed_seq = sc.last_seq;
		ch->used = 1;
		ch->fresh = 1;
	}
	if (check)
		ch->checked_at = now;
	if (ch->busy) {
		status = pay_err(err, 409, "channel_busy", "the channel serves another call now: use another one");
		goto out;
	}
	if (ch->cp.t.price_in != pin || ch->cp.t.price_out != sk->price_out) {
		status = pay_err(err, 402, "payment_required", "the channel was opened for another skill's prices");
		goto out;
	}
	/* The call is paid for from its first voucher: one more call counted
	 * (a fresh entry knows only what the ledger paid: at least the fee more). */
	if (ch->fresh ? sk->fee_call > 0 && v.amount < ch->cp.last.amount + sk->fee_call : v.in_tokens <= ch->calls) {
		char m[160];
		snprintf(m, sizeof(m), "the voucher does not pay for this call (it counts %" PRIu64 " calls, %" PRIu64
			 " were paid before)", v.in_tokens, ch->calls);
		status = pay_err(err, 402, "payment_required", "%s", m);
		goto out;
	}
	voucher_t before = ch->cp.last;
	int rc = chan_provider_accept(&ch->cp, &v, now, &e);
	if (rc) {
		status = pay_err(err, 402, "payment_required", "voucher refused (%s): %s", voucher_err_str(rc), e.msg);
		goto out;
	}
	if (vstore_put(p->vs, &v, now, &e)) {
		ch->cp.last = before;
		status = pay_err(err, 503, "server_error", "the voucher could not be stored: %s", e.msg);
		goto out;
	}
	spay_call_t *c = calloc(1, sizeof(*c));
	if (!c) {
		status = pay_err(err, 503, "server_error", "out of memory");
		goto out;
	}
	c->p = p;
	c->ch = ch;
	c->fee = sk->fee_call;
	c->before = before;
	c->calls_before = ch->calls;
	c->receipt_seq_before = ch->cp.receipt_seq;
	c->fresh_before = ch->fresh;
	ch->fresh = 0;
	ch->calls = v.in_tokens;
	/* Output before this call: the buyer's count. Tokens of an earlier call
	 * that its vouchers never covered (at most a chunk) are forgiven. */
	ch->base = v.out_tokens;
	ch->receipted = 0;
	ch->cp.receipt_seq = ch->cp.last.seq;
	ch->busy = 1;
	ch->used_at = now;
	*out = c;
out:
	pthread_mutex_unlock(&p->mu);
	return status;
}

uint64_t spay_call_credit(spay_call_t *c, uint64_t done, int *broke)
{
	struct pchan *ch = c->ch;
	*broke = 0;
	pthread_mutex_lock(&c->p->mu);
	uint64_t cur = ch->base + done, lim = ch->cp.last.out_tokens + ch->cp.t.chunk;
	uint64_t credit = lim > cur ? lim - cur : 0;
	amount_t fees;
	if (amount_mul(c->fee, ch->calls, &fees) != 0 || fees > ch->cp.t.budget) {
		*broke = 1;
		credit = 0;
	} else if (ch->cp.t.price_out > 0) {
		/* ceil(out * price / 1e6) <= budget - fees  <=>  out * price <= (budget - fees) * 1e6 */
		unsigned __int128 most = (unsigned __int128)(ch->cp.t.budget - fees) * AMOUNT_PER_TOKENS /
					 (unsigned __int128)ch->cp.t.price_out;
		if (most <= cur) {
			*broke = 1;
			credit = 0;
		} else if (most - cur < credit) {
			credit = (uint64_t)(most - cur);
		}
	}
	pthread_mutex_unlock(&c->p->mu);
	return credit;
}

int spay_call_wait(spay_call_t *c, int wait_ms)
{
	spay_t *p = c->p;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += wait_ms / 1000;
	ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&p->mu);
	uint64_t seq = c->ch->cp.last.seq;
	while (c->ch->cp.last.seq == seq)
		if (pthread_cond_timedwait(&p->cond, &p->mu, &ts) != 0)
			break;
	int got = c->ch->cp.last.seq != seq;
	pthread_mutex_unlock(&p->mu);
	return got;
}

int spay_call_receipt_due(spay_call_t *c, uint64_t done, int final)
{
	pthread_mutex_lock(&c->p->mu);
	uint64_t r = c->ch->receipted;
	int due = done > r && (final || done - r >= c->ch->cp.t.chunk);
	pthread_mutex_unlock(&c->p->mu);
	return due;
}

size_t spay_call_receipt(spay_call_t *c, uint64_t done, char *line, size_t cap)
{
	struct pchan *ch = c->ch;
	receipt_t r;
	pthread_mutex_lock(&c->p->mu);
	int rc = chan_provider_receipt(&ch->cp, ch->calls, ch->base + done, NULL, c->p->wallet, &r);
	if (!rc)
		ch->receipted = done;
	pthread_mutex_unlock(&c->p->mu);
	if (rc) {
		log_warn("skill", "cannot sign a receipt for %" PRIu64 " output tokens: %s", ch->base + done,
			 voucher_err_str(rc));
		return 0;
	}
	return spay_receipt_line(&r, line, cap);
}

int spay_call_covered(spay_call_t *c, uint64_t done)
{
	pthread_mutex_lock(&c->p->mu);
	int ok = c->ch->cp.last.out_tokens >= c->ch->base + done;
	pthread_mutex_unlock(&c->p->mu);
	return ok;
}

void spay_call_close(spay_call_t *c)
{
	if (!c)
		return;
	spay_t *p = c->p;
	struct pchan *ch = c->ch;
	pthread_mutex_lock(&p->mu);
	ch->busy = 0;
	voucher_t v = ch->cp.last;
	int due = v.seq > ch->redeemed_seq;
	pthread_mutex_unlock(&p->mu);
	char id[WALLET_ADDR_STRLEN];
	wallet_addr_str(v.channel, id);
	if (due) {
		settle_t st;
		err_msg_t e = { { 0 } };
		amount_t paid = 0;
		int r = ledger(p, &st, &e);
		if (!r)
			r = settle_redeem(&st, &v, now_s(), &paid, &e);
		err_msg_t se;
		int final = (r <= VOUCHER_E_FORGED && r >= VOUCHER_E_MIN) || r == ERR_NOTFOUND;
		if ((!r && vstore_redeemed(p->vs, &v, now_s(), &se)) ||
		    (final && vstore_refused(p->vs, &v, r, e.msg, now_s(), &se)))
			log_warn("skill", "voucher store: %s", se.msg);
		if (r) {
			log_warn("skill", "redeem of channel %.16s (seq %" PRIu64 ") failed: %s%s", id, v.seq, e.msg,
				 final ? "" : " (the node retries it)");
		} else {
			pthread_mutex_lock(&p->mu);
			if (v.seq > ch->redeemed_seq && !memcmp(ch->cp.t.channel, v.channel, MARKET_IDLEN))
				ch->redeemed_seq = v.seq;
			pthread_mutex_unlock(&p->mu);
			__atomic_add_fetch(&p->earned, paid, __ATOMIC_RELAXED);
			log_info("skill", "paid skill call settled: channel %.16s seq %" PRIu64 " amount %lld (%" PRIu64
				 " calls, %" PRIu64 " output tokens), redeemed %lld", id, v.seq, (long long)v.amount,
				 v.in_tokens, v.out_tokens, (long long)paid);
		}
	}
	free(c);
}

void spay_call_abort(spay_call_t *c)
{
	if (!c)
		return;
	struct pchan *ch = c->ch;
	pthread_mutex_lock(&c->p->mu);
	ch->cp.last = c->before;
	ch->calls = c->calls_before;
	ch->cp.receipt_seq = c->receipt_seq_before;
	ch->fresh = c->fresh_before;
	ch->busy = 0;
	pthread_mutex_unlock(&c->p->mu);
	free(c);
}

int spay_voucher_body_parse(const char *body, size_t len, voucher_t *v, oai_err_t *err)
{
	char hex[2 * VOUCHER_SIZE + 1];
	const char *s = body ? body : "";
	size_t n = body ? len : 0;
	while (n && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t'))
		s++, n--;
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
		n--;
	if (n && *s == '{') {
		json_error_t je;
		json_t *o = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
		json_t *js = json_object_get(o, "voucher");
		int ok = json_is_string(js) && json_string_length(js) < sizeof(hex);
		if (ok)
			memcpy(hex, json_string_value(js), json_string_length(js) + 1);
		json_decref(o);
		if (!ok)
			return oai_err_set(err, 400, "invalid_request_error", "voucher", "bad_payment",
					   "expected {\"voucher\": \"<%d hex digits>\"} or the hex digits", 2 * VOUCHER_SIZE);
		s = hex;
		n = strlen(hex);
	}
	uint8_t b[VOUCHER_SIZE];
	err_msg_t e = { { 0 } };
	if (unhex(s, n, b, sizeof(b)))
		return oai_err_set(err, 400, "invalid_request_error", "voucher", "bad_payment",
				   "a voucher is %d hex digits", 2 * VOUCHER_SIZE);
	if (voucher_decode(b, sizeof(b), v, &e))
		return oai_err_set(err, 400, "invalid_request_error", "voucher", "bad_payment", "voucher: %s", e.msg);
	return 0;
}

int spay_voucher_post(spay_t *p, const char *body, size_t len, oai_err_t *err)
{
	voucher_t v;
	int perr = spay_voucher_body_parse(body, len, &v, err);
	if (perr)
		return perr;
	err_msg_t e = { { 0 } };
	pthread_mutex_lock(&p->mu);
	struct pchan *ch = pch_find(p, v.channel);
	int status = 0, rc = 0;
	voucher_t before;
	memset(&before, 0, sizeof(before));
	if (ch)
		before = ch->cp.last;
	if (!ch)
		status = oai_err_set(err, 402, "invalid_request_error", "voucher", "payment_required",
				     "voucher refused: no paid call on its channel here");
	else if (voucher_verify(&v, ch->cp.t.buyer) != 0)   /* a forger learns nothing more */
		status = oai_err_set(err, 402, "invalid_request_error", "voucher", "payment_required",
				     "voucher refused (%s)", voucher_err_str(VOUCHER_E_FORGED));
	else if (v.in_tokens != ch->calls)
		status = oai_err_set(err, 402, "invalid_request_error", "voucher", "payment_required",
				     "voucher refused: it counts %" PRIu64 " calls, the channel is at %" PRIu64, v.in_tokens,
				     ch->calls);
	else if ((rc = chan_provider_accept(&ch->cp, &v, now_s(), &e)))
		status = oai_err_set(err, 402, "invalid_request_error", "voucher", "payment_required",
				     "voucher refused (%s): %s", voucher_err_str(rc), e.msg);
	else if (vstore_put(p->vs, &v, now_s(), &e)) {
		ch->cp.last = before;   /* not served on: the call ends for want of credit */
		status = oai_err_set(err, 503, "server_error", NULL, NULL, "the voucher could not be stored: %s", e.msg);
	} else
		pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
	return status;
}

/* ---- buyer: channels ---------------------------------------------------- */

static void terms_put(spay_t *p, const uint8_t node[ANN_IDLEN], const spay_terms_t *t)
{
	pthread_mutex_lock(&p->mu);
	struct tcache *slot = NULL;
	for (int i = 0; i < TERMS_CACHE && !slot; i++)
		if (p->terms[i].used && !memcmp(p->terms[i].node, node, ANN_IDLEN))
			slot = &p->terms[i];
	for (int i = 0; i < TERMS_CACHE && !slot; i++)
		if (!p->terms[i].used)
			slot = &p->terms[i];
	if (!slot)
		slot = &p->terms[randombytes_uniform(TERMS_CACHE)];
	slot->used = 1;
	memcpy(slot->node, node, ANN_IDLEN);
	slot->t = *t;
	pthread_mutex_unlock(&p->mu);
}

static int terms_get(spay_t *p, const uint8_t node[ANN_IDLEN], spay_terms_t *t)
{
	int got = 0;
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < TERMS_CACHE && !got; i++)
		if (p->terms[i].used && !memcmp(p->terms[i].node, node, ANN_IDLEN)) {
			*t = p->terms[i].t;
			got = 1;
		}
	pthread_mutex_unlock(&p->mu);
	return got;
}

/* Room on channel b for one more call of up to `out` output tokens. */
static int room_for(const chan_buyer_t *b, uint64_t out)
{
	amount_t want;
	if (amount_charge2(b->in_tokens + 1, b->t.price_in, b->out_tokens + out, b->t.price_out, &want) != 0)
		return 0;
	return want <= b->t.budget;
}

/* An idle channel to the provider at these prices with room for the call,
 * or a new one reserved at the ledger. Marked busy. */
static int bch_get(spay_t *p, const spay_terms_t *t, uint64_t need_out, struct bchan **out, oai_err_t *err)
{
	*out = NULL;
	amount_t pin;
	if (fee_price(t->fee_call, &pin))
		return oai_err_set(err, 502, "server_error", NULL, "bad_terms", "the provider's fee is out of range");
	int64_t now = now_s();
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < SPAY_MAX_CHANNELS; i++) {
		struct bchan *c = &p->bch[i];
		if (c->used && !c->busy && !c->dead && !memcmp(c->b.t.provider, t->wallet, WALLET_PUBLEN) &&
		    c->b.t.price_in == pin && c->b.t.price_out == t->price_out && c->b.t.chunk == t->chunk &&
		    c->b.t.expiry - now > 60 && room_for(&c->b, need_out)) {
			c->busy = 1;
			c->used_at = now;
			*out = c;
			break;
		}
	}
	pthread_mutex_unlock(&p->mu);
	if (*out)
		return 0;
	chan_terms_t ct;
	memset(&ct, 0, sizeof(ct));
	ct.budget = p->budget;
	ct.price_in = pin;
	ct.price_out = t->price_out;
	ct.chunk = t->chunk;
	chan_buyer_t probe;
	if (chan_buyer_init(&probe, &ct) != 0 || !room_for(&probe, need_out))
		return oai_err_set(err, 402, "invalid_request_error", NULL, "payment_required",
				   "the skill budget (%lld micro-units per channel) does not cover one call of %" PRIu64
				   " output tokens at %lld per call + %lld per 1M tokens (--skill-budget)",
				   (long long)p->budget, need_out, (long long)t->fee_call, (long long)t->price_out);
	settle_reserve_t r;
	memset(&r, 0, sizeof(r));
	memcpy(r.buyer, wallet_pub(p->wallet), WALLET_PUBLEN);
	memcpy(r.provider, t->wallet, WALLET_PUBLEN);
	r.budget = p->budget;
	r.expiry = now + SPAY_EXPIRY_S;
	randombytes_buf(r.nonce, sizeof(r.nonce));
	settle_t st;
	err_msg_t e = { { 0 } };
	int rc = ledger(p, &st, &e);
	if (rc)
		return oai_err_set(err, 503, "server_error", NULL, "ledger_unreachable", "cannot reach the ledger: %s", e.msg);
	chstore_chan_t cc;
	memset(&cc, 0, sizeof(cc));
	voucher_channel_id(r.buyer, r.provider, r.nonce, cc.id);
	memcpy(cc.provider, r.provider, WALLET_PUBLEN);
	cc.budget = r.budget;
	cc.expiry = r.expiry;
	snprintf(cc.ledger, sizeof(cc.ledger), "%.100s:%d", p->ledger_host, p->ledger_port);
	if (p->settle && settle_remote_ledger_id(p->settle))
		memcpy(cc.ledger_id, settle_remote_ledger_id(p->settle), WALLET_PUBLEN);
	if ((rc = chstore_add(p->cs, &cc, now, &e)))
		return oai_err_set(err, 503, "server_error", NULL, NULL, "no channel reserved: it could not be recorded "
				   "first: %s", e.msg);
	uint8_t id[MARKET_IDLEN];
	rc = settle_reserve(&st, &r, now, id, &e);
	err_msg_t ig;
	/* ERR_IO: it may have run; the record stays "reserving" for reclaim */
	if (rc != ERR_IO && chstore_set(p->cs, cc.id, rc ? CHSTORE_GONE : CHSTORE_OPEN, 0, 0, 0, now_s(), &ig))
		log_warn("skill", "channel store: %s", ig.msg);
	if (rc == ERR_IO)
		return oai_err_set(err, 503, "server_error", NULL, "ledger_unreachable", "reserving a channel failed: %s",
				   e.msg);
	if (rc)
		return oai_err_set(err, 402, "invalid_request_error", NULL, "payment_required",
				   "cannot reserve a channel of %lld micro-units at the ledger to pay for the skill: %s",
				   (long long)p->budget, e.msg);
	memcpy(ct.channel, id, MARKET_IDLEN);
	memcpy(ct.buyer, r.buyer, WALLET_PUBLEN);
	memcpy(ct.provider, r.provider, WALLET_PUBLEN);
	ct.expiry = r.expiry;
	char hid[WALLET_ADDR_STRLEN];
	log_info("skill", "reserved channel %s: %lld micro-units for paid skill calls", wallet_addr_str(id, hid),
		 (long long)p->budget);
	pthread_mutex_lock(&p->mu);
	struct bchan *slot = NULL;
	for (int i = 0; i < SPAY_MAX_CHANNELS; i++) {
		struct bchan *c = &p->bch[i];
		if (!c->used) {
			slot = c;
			break;
		}
		if (!c->busy && (!slot || c->dead > slot->dead || (c->dead == slot->dead && c->used_at < slot->used_at)))
			slot = c;
	}
	if (slot) {
		memset(slot, 0, sizeof(*slot));
		slot->used = slot->busy = 1;
		slot->used_at = now;
		if (chan_buyer_init(&slot->b, &ct) != 0)
			slot->used = slot->busy = 0, slot = NULL;
	}
	pthread_mutex_unlock(&p->mu);
	if (!slot)
		return oai_err_set(err, 503, "server_error", NULL, NULL, "too many payment channels in use");
	*out = slot;
	return 0;
}

/* ---- buyer: the answer -------------------------------------------------- */

static int relay_fail(spay_relay_t *r, oai_err_t *err, int status, const char *code, const char *msg)
{
	oai_err_set(err, status, status == 502 ? "server_error" : "invalid_request_error", NULL, code, "%s", msg);
	if (r->ch) {
		pthread_mutex_lock(&r->p->mu);
		r->ch->dead = 1;   /* no later call pays on a channel in dispute */
		pthread_mutex_unlock(&r->p->mu);
	}
	return status;
}

/* Sends voucher v to the provider's gateway and waits for its answer. */
static void post_voucher(spay_relay_t *r, const voucher_t *v)
{
	uint8_t b[VOUCHER_SIZE];
	char body[2 * VOUCHER_SIZE + 32];
	if (voucher_encode(v, b) != 0)
		return;
	memcpy(body, "{\"voucher\":\"", 12);
	sodium_bin2hex(body + 12, 2 * VOUCHER_SIZE + 1, b, VOUCHER_SIZE);
	memcpy(body + 12 + 2 * VOUCHER_SIZE, "\"}", 3);
	skill_fwd_t *f = NULL;
	err_msg_t e = { { 0 } };
	int ready = 0, rc = skill_fwd_open(&r->addr, SPAY_VOUCHER_PATH, body, strlen(body), 3000, &f, &e);
	for (int i = 0; !rc && !ready && i < SPAY_WAIT_MS / SLICE_MS; i++)
		rc = skill_fwd_head(f, SLICE_MS, &ready, &e);
	if (rc || !ready)
		log_warn("skill", "voucher %" PRIu64 " not delivered: %s", v->seq, rc ? e.msg : "no answer");
	else if (skill_fwd_status(f) != 200)
		log_warn("skill", "voucher %" PRIu64 " refused by the provider (HTTP %d)", v->seq, skill_fwd_status(f));
	skill_fwd_free(f);
}

static int on_receipt(spay_relay_t *r, const char *line, size_t len, oai_err_t *err)
{
	receipt_t rc;
	err_msg_t e = { { 0 } };
	char m[400];
	if (spay_receipt_parse(line, len, &rc, &e)) {
		snprintf(m, sizeof(m), "the skill's provider sent a malformed receipt: %s", e.msg);
		return relay_fail(r, err, 502, "bad_receipt", m);
	}
	chan_buyer_t *b = r->b;
	if (!b)
		return 0;   /* a call not paid: nothing to answer */
	r->receipts++;
	if (rc.in_tokens != b->in_tokens || rc.out_tokens < b->out_tokens ||
	    (r->max_tokens > 0 && rc.out_tokens - r->call_base > (uint64_t)r->max_tokens)) {
		snprintf(m, sizeof(m), "the skill's provider sent a bad receipt: %" PRIu64 " calls and %" PRIu64
			 " output tokens, after %" PRIu64 " calls and %" PRIu64 " tokens (at most %lld asked)",
			 rc.in_tokens, rc.out_tokens, b->in_tokens, b->out_tokens, (long long)r->max_tokens);
		return relay_fail(r, err, 502, "bad_receipt", m);
	}
	chan_buyer_t keep = *b;
	voucher_t v;
	amount_t before = b->paid;
	int x = chan_buyer_count(b, 0, rc.out_tokens - b->out_tokens);
	if (!x)
		x = chan_buyer_answer(b, &rc, r->wallet, now_s(), &v, &e);
	if (x) {
		*b = keep;
		snprintf(m, sizeof(m), "the skill's provider sent a bad receipt (%s): %s", voucher_err_str(x), e.msg);
		return relay_fail(r, err, 502, "bad_receipt", m);
	}
	if (r->p) {
		__atomic_add_fetch(&r->p->spent, b->paid - before, __ATOMIC_RELAXED);
		post_voucher(r, &v);
	}
	return 0;
}

static int out_event(spay_relay_t *r, const char *data, size_t n)
{
	if (!r->client_stream)
		return 0;
	int x = sbuf_append(&r->out, &r->out_len, &r->out_cap, "data: ", 6);
	if (!x)
		x = sbuf_append(&r->out, &r->out_len, &r->out_cap, data, n);
	if (!x)
		x = sbuf_append(&r->out, &r->out_len, &r->out_cap, "\n\n", 2);
	return x;
}

static int on_data(spay_relay_t *r, const char *d, size_t n, oai_err_t *err)
{
	if (n == 6 && !memcmp(d, "[DONE]", 6)) {
		r->ended = 1;
		return out_event(r, d, n) ? relay_fail(r, err, 503, NULL, "out of memory") : 0;
	}
	json_error_t je;
	json_t *o = json_loadb(d, n, 0, &je);
	if (!json_is_object(o)) {
		json_decref(o);
		return relay_fail(r, err, 502, "bad_answer", "the skill's provider sent a malformed event");
	}
	int drop = 0;
	if (json_object_get(o, "error")) {
		free(r->error_json);
		r->error_json = strndup(d, n);
	} else {
		json_t *x;
		if (json_is_string(x = json_object_get(o, "id")))
			snprintf(r->id, sizeof(r->id), "%s", json_string_value(x));
		if (json_is_string(x = json_object_get(o, "model")))
			snprintf(r->model, sizeof(r->model), "%s", json_string_value(x));
		if (json_is_integer(x = json_object_get(o, "created")))
			r->created = (int64_t)json_integer_value(x);
		json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
		json_t *delta = json_object_get(ch, "delta");
		if (json_is_string(x = json_object_get(delta, "content")) &&
		    sbuf_append(&r->text, &r->text_len, &r->text_cap, json_string_value(x), json_string_length(x))) {
			json_decref(o);
			return relay_fail(r, err, 503, NULL, "out of memory");
		}
		if (json_is_string(x = json_object_get(ch, "finish_reason")))
			snprintf(r->finish, sizeof(r->finish), "%s", json_string_value(x));
		json_t *u = json_object_get(o, "usage");
		if (json_is_object(u)) {
			json_t *pt = json_object_get(u, "prompt_tokens"), *ct = json_object_get(u, "completion_tokens");
			if (json_is_integer(pt) && json_is_integer(ct) && json_integer_value(pt) >= 0 &&
			    json_integer_value(ct) >= 0 && json_integer_value(pt) <= INT32_MAX &&
			    json_integer_value(ct) <= INT32_MAX) {
				r->have_usage = 1;
				r->usage.prompt_tokens = (int)json_integer_value(pt);
				r->usage.completion_tokens = (int)json_integer_value(ct);
			}
			/* the usage chunk goes to a client that asked for it only */
			drop = !r->client_usage && !ch;
		}
	}
	json_decref(o);
	if (!drop && out_event(r, d, n))
		return relay_fail(r, err, 503, NULL, "out of memory");
	return 0;
}

static int on_line(spay_relay_t *r, const char *l, size_t n, oai_err_t *err)
{
	if (n && l[n - 1] == '\r')
		n--;
	size_t tl = strlen(SPAY_RECEIPT_TAG);
	if (n >= tl - 1 && !memcmp(l, SPAY_RECEIPT_TAG, tl - 1))
		return on_receipt(r, l, n, err);
	if (n >= 5 && !memcmp(l, "data:", 5)) {
		l += 5;
		n -= 5;
		if (n && *l == ' ')
			l++, n--;
		return on_data(r, l, n, err);
	}
	return 0;   /* blank lines, other comments and fields */
}

/* Splits the answer into lines. */
static int feed(spay_relay_t *r, const char *d, size_t n, oai_err_t *err)
{
	if (r->raw)
		return sbuf_append(&r->out, &r->out_len, &r->out_cap, d, n) ? relay_fail(r, err, 503, NULL, "out of memory") : 0;
	while (n) {
		const char *nl = memchr(d, '\n', n);
		size_t k = nl ? (size_t)(nl - d) : n;
		if (r->line_len + k > MAX_LINE)
			return relay_fail(r, err, 502, "bad_answer", "the skill's provider sent an SSE line over 64 KiB");
		if (sbuf_append(&r->line, &r->line_len, &r->line_cap, d, k))
			return relay_fail(r, err, 503, NULL, "out of memory");
		if (!nl)
			break;
		int x = on_line(r, r->line, r->line_len, err);
		r->line_len = 0;
		if (x)
			return x;
		d += k + 1;
		n -= k + 1;
	}
	return 0;
}

spay_relay_t *spay_relay_test_new(const chan_terms_t *t, const wallet_t *buyer, int client_stream, int client_usage,
	int64_t max_tokens)
{
	spay_relay_t *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	if (t) {
		if (chan_buyer_init(&r->own_b, t) != 0 || chan_buyer_count(&r->own_b, 1, 0) != 0) {
			free(r);
			return NULL;
		}
		r->b = &r->own_b;
	}
	r->wallet = buyer;
	r->client_stream = client_stream;
	r->client_usage = client_usage;
	r->max_tokens = max_tokens;
	r->status = 200;
	return r;
}

int spay_relay_test_feed(spay_relay_t *r, const char *data, size_t n, oai_err_t *err)
{
	int x = feed(r, data, n, err);
	r->out_len = r->out_off = 0;   /* what the client would get: dropped */
	return x;
}

/* The request as the provider gets it: streamed, with the usage. */
static char *paid_body(const char *body, size_t len)
{
	json_t *o = json_loadb(body, len, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return NULL;
	}
	json_object_set_new(o, "stream", json_true());
	json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* Reads a whole (small) body: a 402's terms. */
static char *read_small(skill_fwd_t *f, size_t *len)
{
	char *b = malloc(MAX_TERMS_BODY + 1);
	size_t n = 0;
	err_msg_t e;
	for (int i = 0; b && !skill_fwd_done(f) && n < MAX_TERMS_BODY && i < 100; i++) {
		size_t k = 0;
		if (skill_fwd_read(f, b + n, MAX_TERMS_BODY - n, SLICE_MS, &k, &e))
			break;
		n += k;
	}
	if (b)
		b[n] = 0;
	*len = n;
	return b;
}

int spay_relay_open(spay_t *p, const ann_t *offer, const char *path, const char *body, size_t len,
	int client_stream, int client_usage, int64_t max_tokens, int (*gone)(void *), void *ud,
	spay_relay_t **out, oai_err_t *err)
{
	*out = NULL;
	char *pb = paid_body(body, len);
	if (!pb)
		return oai_err_set(err, 400, "invalid_request_error", NULL, NULL, "the request body is not a JSON object");
	spay_relay_t *r = calloc(1, sizeof(*r));
	if (!r) {
		free(pb);
		return oai_err_set(err, 503, "server_error", NULL, NULL, "out of memory");
	}
	r->p = p;
	r->wallet = p->wallet;
	r->addr = offer->addrs[0];
	r->gone = gone;
	r->ud = ud;
	r->max_tokens = max_tokens;
	r->client_stream = client_stream;
	r->client_usage = client_usage;
	spay_terms_t t;
	int have = terms_get(p, offer->node_id, &t), status = 0;
	if (have && (t.fee_call != offer->fee_call || t.price_out != offer->price_out ||
		     memcmp(t.wallet, offer->skill_wallet, WALLET_PUBLEN) != 0))
		have = 0;   /* the provider announced new prices or a new wallet: ask again */
	err_msg_t e = { { 0 } };
	chan_buyer_t keep;
	for (int attempt = 0; attempt < 3; attempt++) {
		char hdrs[1024] = "";
		if (have) {
			uint64_t need = max_tokens > 0 ? (uint64_t)max_tokens : t.chunk;
			if ((status = bch_get(p, &t, need, &r->ch, err)))
				goto fail;
			chan_buyer_t *b = &r->ch->b;
			keep = *b;
			r->b = b;
			r->call_base = b->out_tokens;
			voucher_t v;
			uint8_t vb[VOUCHER_SIZE];
			char vh[2 * VOUCHER_SIZE + 1], ch[WALLET_ADDR_STRLEN], bw[WALLET_ADDR_STRLEN];
			amount_t before = b->paid;
			if (chan_buyer_count(b, 1, 0) || chan_buyer_voucher(b, p->wallet, now_s(), NULL, &v, &e) ||
			    voucher_encode(&v, vb)) {
				status = relay_fail(r, err, 402, "payment_required", "cannot sign the call's voucher");
				goto fail;
			}
			__atomic_add_fetch(&p->spent, b->paid - before, __ATOMIC_RELAXED);
			sodium_bin2hex(vh, sizeof(vh), vb, sizeof(vb));
			snprintf(hdrs, sizeof(hdrs), "%s: %s\r\n%s: %s\r\n%s: %s\r\n", SPAY_HDR_CHANNEL,
				 wallet_addr_str(b->t.channel, ch), SPAY_HDR_BUYER, wallet_addr_str(b->t.buyer, bw),
				 SPAY_HDR_VOUCHER, vh);
		}
		if (skill_fwd_open_hdr(&r->addr, path, hdrs, pb, strlen(pb), 3000, &r->f, &e)) {
			if (r->b) {
				/* the provider never saw this voucher */
				__atomic_sub_fetch(&p->spent, r->b->paid - keep.paid, __ATOMIC_RELAXED);
				*r->b = keep;
			}
			status = oai_err_set(err, 503, "server_error", NULL, "skill_unreachable", "%s", e.msg);
			goto fail;
		}
		for (int ready = 0; !ready;) {
			if (skill_fwd_head(r->f, SLICE_MS, &ready, &e)) {
				status = relay_fail(r, err, 503, "skill_unreachable", e.msg);
				goto fail;
			}
			if (!ready && gone && gone(ud)) {
				status = oai_err_set(err, 499, "invalid_request_error", NULL, NULL, "the client went away");
				goto fail;
			}
		}
		r->status = skill_fwd_status(r->f);
		snprintf(r->ctype, sizeof(r->ctype), "%s", skill_fwd_content_type(r->f));
		if (r->status == 402 && attempt < 2) {
			size_t bl = 0;
			char *tb = read_small(r->f, &bl);
			spay_terms_t nt;
			int bad = !tb || spay_terms_parse(tb, bl, &nt, &e) != 0;
			free(tb);
			skill_fwd_free(r->f);
			r->f = NULL;
			if (bad) {
				status = oai_err_set(err, 502, "server_error", NULL, "bad_terms",
						     "the skill's provider asks for payment without usable terms: %s", e.msg);
				goto fail;
			}
			if (nt.fee_call != offer->fee_call || nt.price_out != offer->price_out) {
				status = oai_err_set(err, 502, "server_error", NULL, "bad_terms",
						     "the skill's provider asks %lld per call + %lld per 1M tokens; it announced "
						     "%lld + %lld", (long long)nt.fee_call, (long long)nt.price_out,
						     (long long)offer->fee_call, (long long)offer->price_out);
				goto fail;
			}
			/* The terms come over plain HTTP from whatever answers at the
			 * offer's address: pay only the wallet the signed offer names. */
			static const uint8_t zero[WALLET_PUBLEN];
			if (memcmp(nt.wallet, offer->skill_wallet, WALLET_PUBLEN) != 0) {
				char tw[WALLET_ADDR_STRLEN], ow[WALLET_ADDR_STRLEN];
				status = oai_err_set(err, 502, "server_error", NULL, "bad_terms",
						     memcmp(offer->skill_wallet, zero, WALLET_PUBLEN)
							     ? "the skill's provider asks to be paid at wallet %.16s..; its signed "
							       "offer names %.16s.."
							     : "the skill's provider asks to be paid at wallet %.16s..; its signed "
							       "offer names no wallet%.0s",
						     wallet_addr_str(nt.wallet, tw), wallet_addr_str(offer->skill_wallet, ow));
				goto fail;
			}
			if (r->ch) {
				/* refused: this channel is done with; the next try reserves another */
				__atomic_sub_fetch(&p->spent, r->b->paid - keep.paid, __ATOMIC_RELAXED);
				pthread_mutex_lock(&p->mu);
				r->ch->dead = 1;
				r->ch->busy = 0;
				pthread_mutex_unlock(&p->mu);
				r->ch = NULL;
				r->b = NULL;
			}
			terms_put(p, offer->node_id, &nt);
			t = nt;
			have = 1;
			continue;
		}
		if (r->status != 200 && r->b) {
			/* refused after our voucher: the provider drops it too (spay_call_abort) */
			__atomic_sub_fetch(&p->spent, r->b->paid - keep.paid, __ATOMIC_RELAXED);
			*r->b = keep;
		}
		if (r->status != 200 || strncmp(r->ctype, "text/event-stream", 17)) {
			r->raw = 1;   /* an error (or an answer unasked for): as it is */
			if (r->status == 200) {
				status = relay_fail(r, err, 502, "bad_answer", "the skill's provider did not stream its answer");
				goto fail;
			}
		}
		free(pb);
		*out = r;
		return 0;
	}
	status = oai_err_set(err, 502, "server_error", NULL, "payment_refused",
			     "the skill's provider refused payment on a fresh channel");
fail:
	free(pb);
	spay_relay_free(r);
	return status;
}

int spay_relay_status(const spay_relay_t *r) { return r->status; }
const char *spay_relay_content_type(const spay_relay_t *r) { return r->ctype; }

/* One read from the provider into the parser. */
static int pump(spay_relay_t *r, int wait_ms, oai_err_t *err)
{
	char buf[4096];
	size_t n = 0;
	err_msg_t e = { { 0 } };
	if (skill_fwd_done(r->f)) {
		if (!r->raw && !r->ended && r->line_len == 0 && !r->error_json)
			return relay_fail(r, err, 502, "bad_answer", "the skill's answer ended before [DONE]");
		r->ended = 1;
		return 0;
	}
	if (skill_fwd_read(r->f, buf, sizeof(buf), wait_ms, &n, &e))
		return relay_fail(r, err, 502, "bad_answer", e.msg);
	return n ? feed(r, buf, n, err) : 0;
}

int spay_relay_read(spay_relay_t *r, char *buf, size_t max, int wait_ms, size_t *n, int *done, oai_err_t *err)
{
	*n = 0;
	*done = 0;
	for (int i = 0; i < 2; i++) {
		if (r->out_off < r->out_len) {
			size_t k = r->out_len - r->out_off;
			if (k > max)
				k = max;
			memcpy(buf, r->out + r->out_off, k);
			r->out_off += k;
			if (r->out_off == r->out_len)
				r->out_off = r->out_len = 0;
			*n = k;
			return 0;
		}
		if (r->ended && (r->raw ? skill_fwd_done(r->f) : 1)) {
			*done = 1;
			return 0;
		}
		if (r->raw && skill_fwd_done(r->f)) {
			*done = 1;
			return 0;
		}
		int x = pump(r, wait_ms, err);
		if (x)
			return x;
	}
	return 0;
}

int spay_relay_whole(spay_relay_t *r, int *status, char **body, oai_err_t *err)
{
	*body = NULL;
	*status = 0;
	while (!r->ended && !(r->raw && skill_fwd_done(r->f))) {
		int x = pump(r, SLICE_MS, err);
		if (x)
			return x;
		if (r->gone && r->gone(r->ud))
			return oai_err_set(err, 499, "invalid_request_error", NULL, NULL, "the client went away");
	}
	if (r->raw) {
		*status = r->status;
		*body = strndup(r->out ? r->out : "", r->out_len);
	} else if (r->error_json) {
		*status = 502;
		*body = strdup(r->error_json);
	} else {
		*status = 200;
		*body = oai_response_json(OAI_CHAT, r->id, r->created, r->model, r->text ? r->text : "", r->text_len,
					  r->finish[0] ? r->finish : "stop", r->have_usage ? &r->usage : NULL);
	}
	if (!*body)
		return oai_err_set(err, 503, "server_error", NULL, NULL, "out of memory");
	return 0;
}

void spay_relay_free(spay_relay_t *r)
{
	if (!r)
		return;
	if (r->ch && r->b && r->have_usage && r->receipts &&
	    (uint64_t)r->usage.completion_tokens != r->b->out_tokens - r->call_base)
		log_warn("skill", "the provider's usage says %d output tokens, its receipts %" PRIu64,
			 r->usage.completion_tokens, r->b->out_tokens - r->call_base);
	if (r->ch) {
		pthread_mutex_lock(&r->p->mu);
		r->ch->busy = 0;
		pthread_mutex_unlock(&r->p->mu);
	}
	skill_fwd_free(r->f);
	free(r->line);
	free(r->out);
	free(r->text);
	free(r->error_json);
	free(r);
}

/* ---- buyer: the streamed answer through libmicrohttpd ------------------- */

struct paid_stream {
	spay_relay_t *r;
	int fd;
	const int *stopping;
	char *tail;                 /* the error event that ends a failed stream */
	size_t tail_len, tail_off;
};

static int socket_gone(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLRDHUP };
	if (fd < 0 || poll(&p, 1, 0) <= 0)
		return 0;
	return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static ssize_t paid_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct paid_stream *p = cls;
	(void)pos;
	for (;;) {
		if (p->tail) {
			size_t k = p->tail_len - p->tail_off < max ? p->tail_len - p->tail_off : max;
			memcpy(buf, p->tail + p->tail_off, k);
			p->tail_off += k;
			return k ? (ssize_t)k : MHD_CONTENT_READER_END_OF_STREAM;
		}
		if (__atomic_load_n(p->stopping, __ATOMIC_RELAXED) || socket_gone(p->fd))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		size_t n = 0;
		int done = 0;
		oai_err_t err;
		if (spay_relay_read(p->r, buf, max, SLICE_MS, &n, &done, &err)) {
			log_warn("skill", "paid skill call: %s", err.message);
			char *j = oai_error_json(&err);
			if (!j || !(p->tail = malloc(strlen(j) + 32))) {
				free(j);
				return MHD_CONTENT_READER_END_WITH_ERROR;
			}
			p->tail_len = (size_t)sprintf(p->tail, "data: %s\n\ndata: [DONE]\n\n", j);
			free(j);
			continue;
		}
		if (n)
			return (ssize_t)n;
		if (done)
			return MHD_CONTENT_READER_END_OF_STREAM;
	}
}

static void paid_free(void *cls)
{
	struct paid_stream *p = cls;
	spay_relay_free(p->r);
	free(p->tail);
	free(p);
}

struct MHD_Response *spay_relay_response(spay_relay_t *r, int fd, const int *stopping, size_t block,
	const uint8_t provider_node[ANN_IDLEN])
{
	char prov[2 * ANN_IDLEN + 1];
	struct paid_stream *p = calloc(1, sizeof(*p));
	struct MHD_Response *resp = p ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, paid_reader, p,
									   paid_free) : NULL;
	if (!resp) {
		free(p);
		spay_relay_free(r);
		return NULL;
	}
	p->r = r;
	p->fd = fd;
	p->stopping = stopping;
	MHD_add_response_header(resp, "Content-Type", "text/event-stream");
	MHD_add_response_header(resp, "Cache-Control", "no-cache");
	sodium_bin2hex(prov, sizeof(prov), provider_node, ANN_IDLEN);
	MHD_add_response_header(resp, "X-Colony-Skill-Provider", prov);
	return resp;
}
