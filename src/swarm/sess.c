/* sess.c - the client session (see sess.h). */
#include "swarm/sess.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "base/clock.h"
#include "base/log.h"
#include "infer/fwd.h"

#define SESS_MAX_SERVERS 4096

struct hop {
	uint64_t server;
	int a, b;
	uint64_t sid;
	int open;              /* OPEN_OK received */
	int dead;              /* failed; being replaced (never sent to again) */
	int done;              /* positions computed: [0, done) */
	int inflight;          /* rows of the FORWARD in flight; 0: none */
	int replay_until;      /* positions a predecessor had computed when it was installed */
	uint64_t deadline;     /* of the OPEN or FORWARD in flight; 0: none */
	int pay_wait;          /* OPEN_SESSION held until its channel is ready (sess_pay_ready) */
	uint64_t sent_ns;      /* when the FORWARD in flight left */
	uint64_t tok_ns;       /* round trips of one-row FORWARDs (decoding), summed */
	uint32_t tok_n;        /* and counted */
};

/* Hidden states entering one layer boundary, positions [0, len). */
struct hist {
	float *x;
	int len, cap;
};

struct sess {
	sess_cfg_t cfg;
	int d, L, n_vocab;
	int max_len, max_rows;
	fwd_ctx_t *ctx;
	route_server_t *srv;
	int n_srv, cap_srv;
	struct hop hops[SESS_MAX_HOPS];
	int n_hops;
	struct hist *hist;     /* L entries, boundary p = hidden entering layer p */
	int32_t *toks;         /* prompt then generated tokens */
	int n_prompt, n_predict, n_gen;
	int sampled_at;        /* hist[0].len when the last token was sampled */
	float *rows;           /* max_rows x d: decoded results */
	float *logits;         /* n_vocab */
	uint8_t *wbuf;         /* one encoded FORWARD payload */
	size_t wcap;
	smp_rng_t rng;         /* session ids */
	enum sess_state state;
	int err;
	char errmsg[WIRE_MAX_ERRMSG + 256];
	uint64_t now;
	sess_stats_t stats;
};

void sess_cfg_default(sess_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->enc = WIRE_ENC_F16;
	c->kv_type = WIRE_KV_F16;
	c->timeout_ms = SESS_DEFAULT_TIMEOUT_MS;
	c->max_failovers = SESS_DEFAULT_MAX_FAILOVERS;
	route_cost_default(&c->cost);
}

int sess_max_rows(int enc, uint32_t dim)
{
	size_t row = wire_hidden_row_size(enc, dim);
	if (!row)
		return 0;
	/* The FORWARD header: what a 1-row message takes beyond its row. */
	static const uint8_t dummy[1];
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_FORWARD;
	m.u.forward.n_tokens = 1;
	m.u.forward.dim = dim;
	m.u.forward.enc = (uint8_t)enc;
	m.u.forward.data = dummy;
	m.u.forward.data_len = row;
	size_t one = wire_encoded_size(&m);
	if (!one || one > WIRE_MAX_MSG)
		return 0;
	size_t rows = (WIRE_MAX_MSG - (one - row)) / row;
	return rows > WIRE_MAX_TOKENS ? WIRE_MAX_TOKENS : (int)rows;
}

int sess_new(const sess_cfg_t *cfg, sess_t **out, err_msg_t *e)
{
	*out = NULL;
	const model_t *m = cfg->model;
	if (!m || !m->has_embd || !cfg->send || !cfg->smp)
		return err_set(e, ERR_INVAL, "a session needs a model with its embedding and head, a sampler and a send callback");
	int L = cfg->n_layer > 0 ? cfg->n_layer : m->hp.n_layer;
	if (L < 1 || L > ROUTE_MAX_LAYERS)
		return err_set(e, ERR_INVAL, "bad layer count %d", L);
	int max_rows = sess_max_rows(cfg->enc, (uint32_t)m->hp.n_embd);
	if (!max_rows)
		return err_set(e, ERR_UNSUPPORTED, "hidden encoding %u cannot carry rows of %d", cfg->enc, m->hp.n_embd);
	if (cfg->max_rows > 0 && cfg->max_rows < max_rows)
		max_rows = cfg->max_rows;
	if (cfg->max_len < 0 || cfg->max_len > (int)WIRE_MAX_CTX)
		return err_set(e, ERR_RANGE, "max_len %d is outside 0..%u", cfg->max_len, WIRE_MAX_CTX);
	sess_t *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ERR_NOMEM, "out of memory");
	s->cfg = *cfg;
	if (!s->cfg.timeout_ms)
		s->cfg.timeout_ms = SESS_DEFAULT_TIMEOUT_MS;
	if (s->cfg.max_failovers <= 0)
		s->cfg.max_failovers = SESS_DEFAULT_MAX_FAILOVERS;
	if (s->cfg.cost.ban_base_ms == 0 && s->cfg.cost.default_rtt_ms == 0 && s->cfg.cost.default_ms_per_token == 0)
		route_cost_default(&s->cfg.cost);
	s->d = m->hp.n_embd;
	s->L = L;
	s->n_vocab = m->hp.n_vocab;
	s->max_rows = max_rows;
	s->wcap = wire_hidden_size(cfg->enc, (uint32_t)max_rows, (uint32_t)s->d);
	s->hist = calloc((size_t)L, sizeof(*s->hist));
	s->rows = malloc(sizeof(float) * (size_t)max_rows * (size_t)s->d);
	s->logits = malloc(sizeof(float) * (size_t)s->n_vocab);
	s->wbuf = malloc(s->wcap);
	s->stats.last_failover_pos = -1;
	uint64_t seed = cfg->sid_seed;
	if (!seed) {
		if (sodium_init() < 0) {
			sess_free(s);
			return err_set(e, ERR_INVAL, "libsodium failed to start");
		}
		randombytes_buf(&seed, sizeof(seed));
	}
	smp_rng_seed(&s->rng, seed);
	if (!s->hist || !s->rows || !s->logits || !s->wbuf || fwd_ctx_new(cfg->pool, &s->ctx) != 0) {
		sess_free(s);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	*out = s;
	return 0;
}

void sess_free(sess_t *s)
{
	if (!s)
		return;
	if (s->hist)
		for (int i = 0; i < s->L; i++)
			free(s->hist[i].x);
	free(s->hist);
	fwd_ctx_free(s->ctx);
	free(s->srv);
	free(s->toks);
	free(s->rows);
	free(s->logits);
	free(s->wbuf);
	free(s);
}

/* ---- candidates */

static route_server_t *srv_find(const sess_t *s, uint64_t id)
{
	for (int i = 0; i < s->n_srv; i++)
		if (s->srv[i].id == id)
			return &s->srv[i];
	return NULL;
}

int sess_server_set(sess_t *s, const route_server_t *srv)
{
	route_server_t *old = srv_find(s, srv->id);
	if (old) {
		uint64_t until = old->banned_until_ms;
		uint32_t nb = old->n_bans, nt = old->n_timeouts;
		*old = *srv;
		old->banned_until_ms = until > srv->banned_until_ms ? until : srv->banned_until_ms;
		old->n_bans = nb > srv->n_bans ? nb : srv->n_bans;
		old->n_timeouts = nt > srv->n_timeouts ? nt : srv->n_timeouts;
		return 0;
	}
	if (s->n_srv >= SESS_MAX_SERVERS)
		return ERR_FULL;
	if (s->n_srv == s->cap_srv) {
		int cap = s->cap_srv ? s->cap_srv * 2 : 16;
		route_server_t *n = realloc(s->srv, sizeof(*n) * (size_t)cap);
		if (!n)
			return ERR_NOMEM;
		s->srv = n;
		s->cap_srv = cap;
	}
	s->srv[s->n_srv++] = *srv;
	return 0;
}

const route_server_t *sess_server_get(const sess_t *s, uint64_t id) { return srv_find(s, id); }

/* ---- history */

/* Appends rows [start, start + n) to boundary p, keeping only positions it
 * does not have yet (those it has are the same bits: the pass is
 * deterministic). 0, or ERR_RANGE for a gap, ERR_NOMEM. */
static int hist_put(sess_t *s, int p, int start, const float *x, int n)
{
	struct hist *h = &s->hist[p];
	if (start > h->len)
		return ERR_RANGE;
	int skip = h->len - start;
	if (skip >= n)
		return 0;
	int need = start + n;
	if (need > h->cap) {
		int cap = h->cap ? h->cap : 64;
		while (cap < need)
			cap *= 2;
		float *nx = realloc(h->x, sizeof(float) * (size_t)cap * (size_t)s->d);
		if (!nx)
			return ERR_NOMEM;
		h->x = nx;
		h->cap = cap;
	}
	memcpy(h->x + (size_t)h->len * (size_t)s->d, x + (size_t)skip * (size_t)s->d,
	       sizeof(float) * (size_t)(n - skip) * (size_t)s->d);
	h->len = need;
	return 0;
}

/* ---- sending */

static void send_msg(sess_t *s, uint64_t server, const wire_msg_t *m)
{
	s->stats.msgs_sent++;
	s->cfg.send(s->cfg.user, server, m);
}

static void send_close(sess_t *s, const struct hop *h, int reason)
{
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	/* The last voucher, for everything the hop delivered, goes before the close. */
	if (s->cfg.pay_count && h->open && s->cfg.pay_count(s->cfg.user, h->server, h->sid, 0, 0, 1, &m) == 1)
		send_msg(s, h->server, &m);
	memset(&m, 0, sizeof(m));
	m.type = WIRE_CLOSE_SESSION;
	m.u.close.session_id = h->sid;
	m.u.close.reason = (uint16_t)reason;
	send_msg(s, h->server, &m);
}

static void send_open(sess_t *s, struct hop *h)
{
	if (s->cfg.pay_open && !h->pay_wait && s->cfg.pay_open(s->cfg.user, h->server, h->sid) == SESS_PAY_WAIT) {
		h->pay_wait = 1;
		h->deadline = s->now + s->cfg.timeout_ms;
		return;
	}
	h->pay_wait = 0;
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_OPEN_SESSION;
	m.u.open.session_id = h->sid;
	memcpy(m.u.open.model_id, s->cfg.model_id, WIRE_MODEL_ID_LEN);
	m.u.open.layer_a = (uint32_t)h->a;
	m.u.open.layer_b = (uint32_t)h->b;
	m.u.open.max_len = (uint32_t)s->max_len;
	m.u.open.enc = s->cfg.enc;
	m.u.open.kv_type = s->cfg.kv_type;
	h->deadline = s->now + s->cfg.timeout_ms;
	send_msg(s, h->server, &m);
}

static void finish(sess_t *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void finish(sess_t *s, int rc, const char *fmt, ...)
{
	if (s->state != SESS_RUNNING)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
	va_end(ap);
	s->err = rc;
	s->state = rc ? SESS_FAILED : SESS_DONE;
	for (int j = 0; j < s->n_hops; j++)
		if (!s->hops[j].dead)
			send_close(s, &s->hops[j], rc ? WIRE_E_INTERNAL : 0);
	if (rc)
		log_msg(LOG_WARN, "sess", "session failed: %s", s->errmsg);
	if (s->cfg.on_done)
		s->cfg.on_done(s->cfg.user, rc, s->errmsg);
}

/* Sends every hop that is open and idle its next rows. */
static void pump(sess_t *s)
{
	for (int j = 0; j < s->n_hops && s->state == SESS_RUNNING; j++) {
		struct hop *h = &s->hops[j];
		const struct hist *in = &s->hist[h->a];
		if (!h->open || h->dead || h->inflight || h->done >= in->len)
			continue;
		int n = in->len - h->done;
		if (n > s->max_rows)
			n = s->max_rows;
		err_msg_t e = { { 0 } };
		if (wire_hidden_encode(s->cfg.enc, in->x + (size_t)h->done * (size_t)s->d, (uint32_t)n, (uint32_t)s->d,
				       s->wbuf, s->wcap, &e) != 0) {
			/* Our own hidden state does not fit the encoding (F16 overflow):
			 * no server can help with that. */
			finish(s, ERR_RANGE, "hidden state entering layer %d at positions %d..%d: %s", h->a, h->done,
			       h->done + n - 1, e.msg);
			return;
		}
		wire_msg_t m;
		memset(&m, 0, sizeof(m));
		m.type = WIRE_FORWARD;
		m.u.forward.session_id = h->sid;
		m.u.forward.start_pos = (uint32_t)h->done;
		m.u.forward.n_tokens = (uint32_t)n;
		m.u.forward.dim = (uint32_t)s->d;
		m.u.forward.enc = s->cfg.enc;
		m.u.forward.data = s->wbuf;
		m.u.forward.data_len = wire_hidden_size(s->cfg.enc, (uint32_t)n, (uint32_t)s->d);
		h->inflight = n;
		h->deadline = s->now + s->cfg.timeout_ms;
		h->sent_ns = clock_ns();
		s->stats.rows_sent += (uint64_t)n;
		if (h->done < h->replay_until)
			s->stats.rows_replayed +=
				(uint64_t)((h->done + n < h->replay_until ? h->done + n : h->replay_until) - h->done);
		send_msg(s, h->server, &m);
	}
}

/* ---- failover */

static uint64_t new_sid(sess_t *s) { return smp_rng_next(&s->rng); }

static int hop_find(const sess_t *s, uint64_t server)
{
	for (int j = 0; j < s->n_hops; j++)
		if (s->hops[j].server == server && !s->hops[j].dead)
			return j;
	return -1;
}

/* Replaces hop j (its server failed) by a chain over its span, or fails
 * the session. tell: send it CLOSE_SESSION first. */
static void fail_hop(sess_t *s, int j, int reason, int tell, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static void fail_hop(sess_t *s, int j, int reason, int tell, const char *fmt, ...)
{
	if (s->state != SESS_RUNNING)
		return;
	struct hop old = s->hops[j];
	char why[WIRE_MAX_ERRMSG + 64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	s->hops[j].dead = 1;
	if (tell)
		send_close(s, &old, reason ? reason : WIRE_E_PROTOCOL);
	route_server_t *rs = srv_find(s, old.server);
	uint64_t ban = rs ? route_ban(rs, s->now, &s->cfg.cost) : 0;
	log_msg(LOG_WARN, "sess", "hop [%d, %d) on server %016" PRIx64 " failed at position %d: %s (banned %" PRIu64
		" ms)", old.a, old.b, old.server, s->hist[0].len, why, ban);
	if (++s->stats.failovers > s->cfg.max_failovers) {
		finish(s, ERR_FULL, "gave up after %d failovers; the last: layers [%d, %d) on server %016" PRIx64 ": %s",
		       s->cfg.max_failovers, old.a, old.b, old.server, why);
		return;
	}
	route_hop_t plan[SESS_MAX_HOPS];
	int k = 0;
	err_msg_t e = { { 0 } };
	int room = SESS_MAX_HOPS - (s->n_hops - 1);
	int rc = route_plan(s->srv, s->n_srv, old.a, old.b, &s->cfg.cost, s->now, plan, room, &k, NULL, &e);
	if (rc) {
		finish(s, rc, "layers [%d, %d) lost (server %016" PRIx64 ": %s) and not replaceable: %s", old.a, old.b,
		       old.server, why, e.msg);
		return;
	}
	memmove(&s->hops[j + k], &s->hops[j + 1], sizeof(s->hops[0]) * (size_t)(s->n_hops - j - 1));
	s->n_hops += k - 1;
	for (int i = 0; i < k; i++) {
		struct hop *h = &s->hops[j + i];
		memset(h, 0, sizeof(*h));
		h->server = plan[i].id;
		h->a = plan[i].layer_a;
		h->b = plan[i].layer_b;
		h->sid = new_sid(s);
		h->replay_until = old.done;
		if (i > 0)
			s->hist[h->a].len = 0;   /* a new inner boundary: rebuilt by the replay */
	}
	s->stats.last_failover_pos = s->hist[0].len;
	for (int i = 0; i < k; i++)
		send_open(s, &s->hops[j + i]);
}

/* ---- sampling */

/* The last hop produced position T - 1 (row y): head, sample, next input. */
static void sample(sess_t *s, const float *y)
{
	err_msg_t e = { { 0 } };
	int T = s->hist[0].len;
	s->sampled_at = T;
	int hrc = fwd_head(s->ctx, s->cfg.model, y, 1, s->logits, &e);
	pool_rest(s->cfg.pool);   /* the next job waits on the network */
	if (hrc != 0) {
		finish(s, ERR_INVAL, "output head: %s", e.msg);
		return;
	}
	int32_t tok = smp_sample(s->cfg.smp, s->logits, s->n_vocab);
	if (tok < 0) {
		finish(s, tok, "sampler failed (%s)", err_str(tok));
		return;
	}
	smp_accept(s->cfg.smp, tok);
	s->toks[s->n_prompt + s->n_gen++] = tok;
	s->stats.n_generated = s->n_gen;
	int stop = s->cfg.on_token ? s->cfg.on_token(s->cfg.user, tok, s->logits, s->n_vocab) : 0;
	if (stop) {
		finish(s, 0, "stopped after %d tokens", s->n_gen);
		return;
	}
	if (s->n_gen >= s->n_predict) {
		finish(s, 0, "done: %d tokens", s->n_gen);
		return;
	}
	float *x = s->rows;   /* free now: y was read by the head */
	int rc = fwd_embed(s->cfg.model, &tok, 1, x, &e);
	if (rc == 0)
		rc = hist_put(s, 0, T, x, 1);
	if (rc)
		finish(s, rc, "cannot embed token %d: %s", tok, rc == ERR_NOMEM ? "out of memory" : e.msg);
}

/* ---- events */

static void on_result(sess_t *s, int j, const wire_forward_t *f)
{
	struct hop *h = &s->hops[j];
	if (!h->open || !h->inflight) {
		fail_hop(s, j, WIRE_E_PROTOCOL, 1, "FORWARD_RESULT with no FORWARD in flight");
		return;
	}
	if (f->session_id != h->sid) {
		fail_hop(s, j, WIRE_E_PROTOCOL, 1, "FORWARD_RESULT for session %016" PRIx64 ", ours is %016" PRIx64,
			 f->session_id, h->sid);
		return;
	}
	if (f->start_pos != (uint32_t)h->done || f->n_tokens != (uint32_t)h->inflight) {
		fail_hop(s, j, WIRE_E_PROTOCOL, 1, "FORWARD_RESULT for positions %u+%u, %d+%d were asked", f->start_pos,
			 f->n_tokens, h->done, h->inflight);
		return;
	}
	if (f->dim != (uint32_t)s->d || f->enc != s->cfg.enc) {
		fail_hop(s, j, WIRE_E_PROTOCOL, 1, "FORWARD_RESULT of dim %u encoding %u, the session uses %d and %u",
			 f->dim, f->enc, s->d, s->cfg.enc);
		return;
	}
	err_msg_t e = { { 0 } };
	int n = h->inflight;
	if (!f->data || wire_hidden_decode(f->enc, f->data, f->data_len, (uint32_t)n, (uint32_t)s->d, s->rows, &e) != 0) {
		fail_hop(s, j, WIRE_E_PROTOCOL, 1, "FORWARD_RESULT data: %s", f->data ? e.msg : "missing");
		return;
	}
	if (n == 1) {
		h->tok_ns += clock_ns() - h->sent_ns;
		h->tok_n++;
	}
	int start = h->done;
	h->done += n;
	h->inflight = 0;
	h->deadline = 0;
	if (s->cfg.pay_count) {
		wire_msg_t v;
		memset(&v, 0, sizeof(v));
		int pr = s->cfg.pay_count(s->cfg.user, h->server, h->sid, start, n, 0, &v);
		if (pr == 1)
			send_msg(s, h->server, &v);
		else if (pr < 0) {
			fail_hop(s, j, WIRE_E_PAYMENT, 1, "payment: %s", v.u.error.msg);
			return;
		}
	}
	if (h->b < s->L) {
		int rc = hist_put(s, h->b, start, s->rows, n);
		if (rc) {
			finish(s, rc, "cannot keep the inputs of layer %d (%s)", h->b,
			       rc == ERR_NOMEM ? "out of memory" : "positions out of order");
		}
		return;
	}
	/* The last hop: a result ending at the newest position, not sampled yet,
	 * gives the next token (replays of earlier positions give nothing). */
	if (start + n == s->hist[0].len && s->sampled_at < s->hist[0].len)
		sample(s, s->rows + (size_t)(n - 1) * (size_t)s->d);
}

void sess_on_msg(sess_t *s, uint64_t server, const wire_msg_t *m)
{
	if (s->state != SESS_RUNNING)
		return;
	int j = hop_find(s, server);
	if (j < 0)
		return;            /* not (or no longer) in the route */
	s->stats.msgs_received++;
	struct hop *h = &s->hops[j];
	switch (m->type) {
	case WIRE_OPEN_OK:
		if (h->open || m->u.open_ok.session_id != h->sid)
			fail_hop(s, j, WIRE_E_PROTOCOL, 1, "unexpected OPEN_OK for session %016" PRIx64,
				 m->u.open_ok.session_id);
		else if (m->u.open_ok.max_len < (uint32_t)s->max_len)
			fail_hop(s, j, WIRE_E_BAD_REQUEST, 1, "granted %u positions, %d are needed",
				 m->u.open_ok.max_len, s->max_len);
		else {
			h->open = 1;
			h->deadline = 0;
		}
		break;
	case WIRE_OPEN_ERR:
		if (m->u.error.session_id == h->sid && !h->open)
			fail_hop(s, j, m->u.error.code, 0, "refused the session (%u): %s", m->u.error.code,
				 m->u.error.msg);
		else
			fail_hop(s, j, WIRE_E_PROTOCOL, 1, "unexpected OPEN_ERR for session %016" PRIx64,
				 m->u.error.session_id);
		break;
	case WIRE_FORWARD_RESULT:
		on_result(s, j, &m->u.forward);
		break;
	case WIRE_CLOSE_SESSION:
		if (m->u.close.session_id == h->sid)
			fail_hop(s, j, m->u.close.reason, 0, "closed the session (reason %u)", m->u.close.reason);
		/* else: a late close of a session we left earlier */
		break;
	case WIRE_ERROR:
		fail_hop(s, j, m->u.error.code, 1, "error %u: %s", m->u.error.code, m->u.error.msg);
		break;
	default:
		fail_hop(s, j, WIRE_E_PROTOCOL, 1, "sent %s (type %u) to a client session", wire_type_name(m->type),
			 m->type);
		break;
	}
	pump(s);
}

static int hop_waiting(const sess_t *s, uint64_t server, uint64_t sid)
{
	if (s->state != SESS_RUNNING)
		return -1;
	for (int j = 0; j < s->n_hops; j++)
		if (s->hops[j].server == server && s->hops[j].sid == sid && !s->hops[j].dead && s->hops[j].pay_wait)
			return j;
	return -1;
}

void sess_pay_ready(sess_t *s, uint64_t server, uint64_t session_id, const wire_msg_t *pay_open)
{
	int j = hop_waiting(s, server, session_id);
	if (j < 0)
		return;
	if (pay_open)
		send_msg(s, server, pay_open);
	send_open(s, &s->hops[j]);
}

void sess_pay_failed(sess_t *s, uint64_t server, uint64_t session_id, const char *msg)
{
	int j = hop_waiting(s, server, session_id);
	if (j < 0)
		return;
	fail_hop(s, j, WIRE_E_PAYMENT, 0, "payment: %s", msg);
	pump(s);
}

void sess_on_server_lost(sess_t *s, uint64_t server)
{
	if (s->state != SESS_RUNNING)
		return;
	int j = hop_find(s, server);
	if (j < 0)
		return;
	fail_hop(s, j, 0, 0, "connection lost");
	pump(s);
}

void sess_tick(sess_t *s, uint64_t now_ms)
{
	s->now = now_ms;
	if (s->state != SESS_RUNNING)
		return;
	for (int j = 0; j < s->n_hops && s->state == SESS_RUNNING;) {
		struct hop *h = &s->hops[j];
		if (!h->dead && h->deadline && now_ms >= h->deadline) {
			/* The route changes under us: rescan from the start. The
			 * ban that follows is a timeout (reputation tells them apart). */
			route_server_t *rs = srv_find(s, h->server);
			if (rs && rs->n_timeouts < UINT32_MAX)
				rs->n_timeouts++;
			fail_hop(s, j, WIRE_E_PROTOCOL, 1, "no reply to %s within %u ms",
				 h->open ? "FORWARD" : "OPEN_SESSION", s->cfg.timeout_ms);
			j = 0;
			continue;
		}
		j++;
	}
	pump(s);
}

uint64_t sess_next_deadline(const sess_t *s)
{
	uint64_t t = UINT64_MAX;
	if (s->state == SESS_RUNNING)
		for (int j = 0; j < s->n_hops; j++)
			if (!s->hops[j].dead && s->hops[j].deadline && s->hops[j].deadline < t)
				t = s->hops[j].deadline;
	return t;
}

/* ---- start */

int sess_start(sess_t *s, const int32_t *prompt, int n_prompt, int n_predict, err_msg_t *e)
{
	if (s->state != SESS_IDLE)
		return err_set(e, ERR_INVAL, "the session was already started");
	if (!prompt || n_prompt < 1 || n_predict < 1)
		return err_set(e, ERR_INVAL, "need a prompt of at least one token and n_predict >= 1");
	int64_t need = (int64_t)n_prompt + n_predict;
	int max_len = s->cfg.max_len ? s->cfg.max_len : (int)(need > (int64_t)WIRE_MAX_CTX ? WIRE_MAX_CTX : need);
	/* The last token sampled is never forwarded: prompt + n_predict - 1 positions. */
	if (need - 1 > max_len)
		return err_set(e, ERR_RANGE, "%d prompt tokens + %d to generate need %" PRId64 " positions, max_len is %d",
			       n_prompt, n_predict, need - 1, max_len);
	for (int i = 0; i < n_prompt; i++)
		if (prompt[i] < 0 || prompt[i] >= s->n_vocab)
			return err_set(e, ERR_INVAL, "prompt token %d at %d is outside the vocabulary (%d)", prompt[i], i,
				       s->n_vocab);
	route_hop_t plan[SESS_MAX_HOPS];
	int k = 0;
	int rc = route_plan(s->srv, s->n_srv, 0, s->L, &s->cfg.cost, s->now, plan, SESS_MAX_HOPS, &k, NULL, e);
	if (rc)
		return rc;
	s->toks = malloc(sizeof(int32_t) * (size_t)need);
	float *x = malloc(sizeof(float) * (size_t)n_prompt * (size_t)s->d);
	if (!s->toks || !x) {
		free(x);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	rc = fwd_embed(s->cfg.model, prompt, n_prompt, x, e);
	if (rc == 0 && hist_put(s, 0, 0, x, n_prompt) != 0)
		rc = err_set(e, ERR_NOMEM, "out of memory");
	free(x);
	if (rc)
		return rc;
	memcpy(s->toks, prompt, sizeof(int32_t) * (size_t)n_prompt);
	for (int i = 0; i < n_prompt; i++)
		smp_accept(s->cfg.smp, prompt[i]);
	s->n_prompt = n_prompt;
	s->n_predict = n_predict;
	s->max_len = max_len;
	s->n_hops = k;
	for (int i = 0; i < k; i++) {
		struct hop *h = &s->hops[i];
		memset(h, 0, sizeof(*h));
		h->server = plan[i].id;
		h->a = plan[i].layer_a;
		h->b = plan[i].layer_b;
		h->sid = new_sid(s);
	}
	s->state = SESS_RUNNING;
	for (int i = 0; i < k; i++)
		send_open(s, &s->hops[i]);
	return 0;
}

void sess_cancel(sess_t *s) { finish(s, 0, "cancelled"); }

/* ---- queries */

enum sess_state sess_state(const sess_t *s) { return s->state; }

int sess_error(const sess_t *s, const char **msg)
{
	if (msg)
		*msg = s->state == SESS_FAILED ? s->errmsg : "";
	return s->state == SESS_FAILED ? s->err : 0;
}

const int32_t *sess_tokens(const sess_t *s, int *n)
{
	*n = s->n_gen;
	return s->toks ? s->toks + s->n_prompt : NULL;
}

void sess_stats(const sess_t *s, sess_stats_t *st) { *st = s->stats; }

int sess_route(const sess_t *s, sess_hop_info_t *out, int cap)
{
	int n = 0;
	for (int j = 0; j < s->n_hops; j++) {
		const struct hop *h = &s->hops[j];
		if (h->dead)
			continue;
		if (n < cap)
			out[n] = (sess_hop_info_t){ h->server, h->a, h->b, h->sid, h->open, h->done,
						    h->tok_n ? (double)h->tok_ns / h->tok_n * 1e-6 : 0 };
		n++;
	}
	return n;
}
