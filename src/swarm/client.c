/* client.c - the swarm client: a loop thread with the DHT view, connections
 * to the shard servers and the sessions of every job (see client.h). */
#include "swarm/client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "net/ident.h"
#include "net/peer.h"
#include "swarm/client_pay.h"
#include "swarm/client_rep.h"

#define CL_MAX_SERVERS 256
#define CL_TICK_MS 20
#define CL_VIEW_MS 500             /* re-read the DHT view */
#define CL_REFRESH_MS 1000         /* re-dial, refresh candidates (RTTs) */
#define CL_LOOKUP_MS 10000         /* own DHT node: a full lookup besides the watch */
#define CL_LOOKUP_WAIT_MS 1500
#define CL_REP_MS 1000             /* re-score providers from tallies and digests */

/* A message waiting for its turn (pacing); FORWARD data copied after it. */
struct qmsg {
	struct qmsg *next;
	wire_msg_t m;
	uint8_t data[];
};

struct server {
	ann_t rec;
	peer_conn_t *conn;
	int ready, dialing;
	int dial_failed;           /* the last dial did not reach READY */
	uint64_t last_dial;
	uint64_t not_before;       /* not dialed before this loop time (after a loss or a failed dial) */
	int close_pending;         /* a send failed: close (or report) on the next tick */
	int listed;                /* in the last DHT view */
	double tokens;             /* pacing bucket */
	uint64_t t_tokens;
	struct qmsg *q_head, *q_tail;
	cpay_terms_t pay;          /* its PAY_TERMS (per connection) */
	crep_peer_t rp;            /* reputation: our tally of it, its digests and score */
};

struct swarm_job {
	swarm_client_t *c;
	struct swarm_job *next;    /* incoming list, then the loop's active list */
	/* the request, immutable after submit */
	int32_t *prompt;
	int n_prompt, n_predict;
	int32_t *stops;
	int n_stops;
	smp_params_t sp;
	smp_chain_t *ext_smp;
	uint32_t discover_ms;
	sess_token_cb on_token;
	void *user;
	double t_submit;
	/* loop thread only */
	sess_t *sess;
	smp_chain_t *own_smp;
	uint64_t deadline;
	int started, finished;
	int stopped_by_token, stopped_by_cb;
	double t_first;
	cpay_job_t pay;            /* payments (cfg.pay_wallet) */
	/* shared, under c->mu */
	pthread_cond_t cond;
	int32_t *toks;
	int n_toks, cap_toks, n_taken;
	enum swarm_job_state state;
	int rc;
	char msg[320];
	swarm_result_t res;
	char route[512];
	int cancel;                /* also read by the loop without the lock (atomic) */
	int owner_gone, loop_gone;
	swarm_job_info_t info;     /* route, failovers, tokens (for status pages) */
};

struct swarm_client {
	swarm_client_cfg_t cfg;
	uint8_t model_id[WIRE_MODEL_ID_LEN];
	uv_loop_t loop;
	pthread_t thread;
	int thread_started;
	ident_t *id;
	dht_node_t *dht;
	int own_dht, watching;
	peer_net_t *net;
	uv_timer_t timer, t_pace;
	uv_async_t async;
	int handles_open;
	struct server srv[CL_MAX_SERVERS];
	int n_srv;
	uint64_t t_start, last_view, last_refresh, last_lookup;
	uv_work_t lookup_work;
	int lookup_busy;
	int closing;               /* loop side: shutting down */
	struct swarm_job *active;
	int n_active;
	int dht_changed;           /* atomic: the watch fired */
	/* shared, under mu */
	pthread_mutex_t mu;
	struct swarm_job *incoming;
	int n_jobs;                /* submitted, not yet released by the loop */
	int stopping;
	int async_dead;            /* the async handle is closed: wake the loop no more */
	int cancel_pending;
	swarm_view_t view;
	uint64_t jobs_total, tokens_total, failovers_total;
	swarm_server_info_t *infos;    /* the servers as of the last view */
	int n_infos;
	/* loop thread only: bytes of connections already closed */
	uint64_t closed_in, closed_out;
	uint64_t last_rep, last_rep_pub;
	crep_state_t rep;          /* loop thread only */
	crep_peer_t *rep_tab[CL_MAX_SERVERS];
	int pub_req, pub_done, pub_count;   /* swarm_client_publish_digests, under mu */
};

void swarm_client_cfg_default(swarm_client_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->network = SWARM_DEFAULT_NETWORK;
	c->enc = WIRE_ENC_F32;
	c->kv_type = WIRE_KV_F32;
	c->discover_ms = SWARM_DEFAULT_DISCOVER_MS;
	c->timeout_ms = SWARM_DEFAULT_TIMEOUT_MS;
	c->max_jobs = SWARM_DEFAULT_MAX_JOBS;
	c->max_msgs_per_sec = SWARM_DEFAULT_MSGS_PER_SEC;
}

static uint64_t sid_of(swarm_client_t *c, struct server *s) { return (uint64_t)(s - c->srv) + 1; }

static struct server *by_conn(swarm_client_t *c, peer_conn_t *pc)
{
	for (int i = 0; i < c->n_srv; i++)
		if (c->srv[i].conn == pc)
			return &c->srv[i];
	return NULL;
}

static void cond_deadline(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* ---- candidates */

static void candidate_set(swarm_client_t *c, struct swarm_job *j, struct server *s, int usable)
{
	if (!j->sess || j->finished)
		return;
	double rtt = -1;
	if (s->conn && s->ready) {
		peer_stats_t st;
		peer_conn_stats(s->conn, &st);
		rtt = st.rtt_ms;
	}
	route_server_t rs;
	route_server_from_ann(&rs, sid_of(c, s), &s->rec, rtt);
	rs.rep = s->rp.rep;
	rs.rep_known = s->rp.rep >= 0;
	if (!usable)
		rs.free_sessions = 0;   /* sess has no "remove": a full server is never routed to */
	if (sess_server_set(j->sess, &rs) != 0)
		log_debug("client", "candidate table full");
}

static void candidates_refresh(swarm_client_t *c, struct server *s)
{
	if (!s->ready)
		return;
	for (struct swarm_job *j = c->active; j; j = j->next)
		candidate_set(c, j, s, 1);
}

/* ---- pacing and sending */

static void q_free(struct server *s)
{
	while (s->q_head) {
		struct qmsg *q = s->q_head;
		s->q_head = q->next;
		free(q);
	}
	s->q_tail = NULL;
}

static void bucket_refill(swarm_client_t *c, struct server *s)
{
	uint64_t now = uv_now(&c->loop);
	double rate = c->cfg.max_msgs_per_sec, cap = rate / 4 > 1 ? rate / 4 : 1;
	s->tokens += (double)(now - s->t_tokens) * rate / 1000.0;
	s->t_tokens = now;
	if (s->tokens > cap)
		s->tokens = cap;
}

static void mark_send_failed(swarm_client_t *c, struct server *s)
{
	s->close_pending = 1;
	q_free(s);
}

static void drain(swarm_client_t *c, struct server *s)
{
	if (!s->q_head)
		return;
	bucket_refill(c, s);
	while (s->q_head && s->tokens >= 1) {
		struct qmsg *q = s->q_head;
		s->q_head = q->next;
		if (!s->q_head)
			s->q_tail = NULL;
		s->tokens -= 1;
		err_msg_t e;
		int r = s->conn && s->ready ? peer_send(s->conn, &q->m, &e) : ERR_INVAL;
		free(q);
		if (r) {
			mark_send_failed(c, s);
			return;
		}
	}
}

static void pace_cb(uv_timer_t *t);

static void pace_arm(swarm_client_t *c)
{
	if (c->closing || uv_is_active((uv_handle_t *)&c->t_pace))
		return;
	uint64_t ms = (uint64_t)(1000.0 / c->cfg.max_msgs_per_sec) + 1;
	uv_timer_start(&c->t_pace, pace_cb, ms, 0);
}

static void pace_cb(uv_timer_t *t)
{
	swarm_client_t *c = t->data;
	int more = 0;
	for (int i = 0; i < c->n_srv; i++) {
		drain(c, &c->srv[i]);
		more |= c->srv[i].q_head != NULL;
	}
	if (more)
		pace_arm(c);
}

static void srv_send(swarm_client_t *c, struct server *s, const wire_msg_t *m)
{
	if (!s->conn || !s->ready || s->close_pending) {
		/* sess must not be re-entered from its own send: reported on the next tick */
		mark_send_failed(c, s);
		return;
	}
	bucket_refill(c, s);
	if (!s->q_head && s->tokens >= 1) {
		s->tokens -= 1;
		err_msg_t e;
		if (peer_send(s->conn, m, &e) != 0)
			mark_send_failed(c, s);
		return;
	}
	size_t dl = m->type == WIRE_FORWARD ? m->u.forward.data_len : 0;
	struct qmsg *q = malloc(sizeof(*q) + dl);
	if (!q) {
		mark_send_failed(c, s);
		return;
	}
	q->next = NULL;
	q->m = *m;
	if (dl) {
		memcpy(q->data, m->u.forward.data, dl);
		q->m.u.forward.data = q->data;
	}
	if (s->q_tail)
		s->q_tail->next = q;
	else
		s->q_head = q;
	s->q_tail = q;
	pace_arm(c);
}

static void send_cb(void *user, uint64_t server, const wire_msg_t *m)
{
	struct swarm_job *j = user;
	swarm_client_t *c = j->c;
	if (server < 1 || server > (uint64_t)c->n_srv)
		return;
	srv_send(c, &c->srv[server - 1], m);
}

/* ---- payments (docs/PROTOCOL.md "Paid sessions") */

static void terms_ask(swarm_client_t *c, struct server *s)
{
	if (!c->cfg.pay_wallet || s->pay.state != CPAY_TERMS_UNASKED || !s->conn || !s->ready)
		return;
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_PAY_TERMS_REQ;
	m.u.pay.id = sid_of(c, s);
	s->pay.state = CPAY_TERMS_ASKED;
	srv_send(c, s, &m);
}

static void reap(swarm_client_t *c);

/* cpay_ops_t of a job (client_pay.h) */
static cpay_terms_t *pay_terms_op(void *user, uint64_t server)
{
	struct swarm_job *j = user;
	swarm_client_t *c = j->c;
	if (server < 1 || server > (uint64_t)c->n_srv)
		return NULL;
	return &c->srv[server - 1].pay;
}

static void pay_ask_op(void *user, uint64_t server)
{
	struct swarm_job *j = user;
	if (server >= 1 && server <= (uint64_t)j->c->n_srv)
		terms_ask(j->c, &j->c->srv[server - 1]);
}

static sess_t *pay_live_sess_op(void *user)
{
	struct swarm_job *j = user;
	return j->sess && !j->finished && !j->c->closing ? j->sess : NULL;
}

static void pay_reserved_op(void *user)
{
	struct swarm_job *j = user;
	reap(j->c);
}

static const cpay_ops_t pay_ops = { pay_terms_op, pay_ask_op, pay_live_sess_op, pay_reserved_op };

/* sess hooks */
static int pay_open_cb(void *user, uint64_t server, uint64_t sid)
{
	struct swarm_job *j = user;
	return cpay_open(&j->pay, server, sid);
}

static int pay_count_cb(void *user, uint64_t server, uint64_t sid, int start, int n, int final, wire_msg_t *out)
{
	struct swarm_job *j = user;
	return cpay_count(&j->pay, server, sid, start, n, final, out);
}

/* ---- jobs on the loop */

static void route_str(swarm_client_t *c, sess_t *sess, char *buf, size_t cap)
{
	sess_hop_info_t hops[SESS_MAX_HOPS];
	int nh = sess_route(sess, hops, SESS_MAX_HOPS);
	size_t off = 0;
	buf[0] = 0;
	for (int i = 0; i < nh && i < SESS_MAX_HOPS && off + 64 < cap; i++) {
		if (hops[i].server < 1 || hops[i].server > (uint64_t)c->n_srv)
			continue;
		struct server *s = &c->srv[hops[i].server - 1];
		char sid[IDENT_SHORT_STRLEN] = "?", addr[64] = "";
		ident_id_short(s->rec.node_id, sid);
		if (s->rec.n_addrs)
			ann_addr_str(&s->rec.addrs[0], addr, sizeof(addr));
		char tok[32] = "";
		if (hops[i].tok_ms > 0)
			snprintf(tok, sizeof(tok), " (%.2f ms/token)", hops[i].tok_ms);
		int k = snprintf(buf + off, cap - off, "%s[%d,%d) %.8s %s%s", i ? " -> " : "", hops[i].layer_a,
				 hops[i].layer_b, sid, addr, tok);
		if (k < 0 || (size_t)k >= cap - off)
			break;
		off += (size_t)k;
	}
}

/* The job's route, failovers and tokens for swarm_job_info (loop thread). */
static void job_info_publish(swarm_client_t *c, struct swarm_job *j)
{
	if (!j->sess)
		return;
	sess_hop_info_t hops[SESS_MAX_HOPS];
	sess_stats_t ss;
	int nh = sess_route(j->sess, hops, SESS_MAX_HOPS);
	sess_stats(j->sess, &ss);
	swarm_job_info_t in;
	memset(&in, 0, sizeof(in));
	for (int i = 0; i < nh && i < SESS_MAX_HOPS && in.n_hops < SWARM_INFO_MAX_HOPS; i++) {
		if (hops[i].server < 1 || hops[i].server > (uint64_t)c->n_srv)
			continue;
		struct server *s = &c->srv[hops[i].server - 1];
		swarm_hop_t *h = &in.hops[in.n_hops++];
		memcpy(h->node_id, s->rec.node_id, ANN_IDLEN);
		if (s->rec.n_addrs)
			ann_addr_str(&s->rec.addrs[0], h->addr, sizeof(h->addr));
		h->layer_a = hops[i].layer_a;
		h->layer_b = hops[i].layer_b;
	}
	in.failovers = ss.failovers;
	pthread_mutex_lock(&c->mu);
	in.state = j->state;
	in.n_tokens = j->n_toks;
	j->info = in;
	pthread_mutex_unlock(&c->mu);
}

/* ---- reputation (client_rep.h) */

/* Tallies a finished job: every server of its final route served a session
 * (ok unless the job failed and it had failed too), every server banned
 * during the job failed once per ban, and its pay lines paid their wallets. */
static void rep_job_end(swarm_client_t *c, struct swarm_job *j, int rc, const swarm_result_t *res)
{
	if (!j->started || !j->sess)
		return;
	sess_hop_info_t hops[SESS_MAX_HOPS];
	int nh = sess_route(j->sess, hops, SESS_MAX_HOPS);
	for (int i = 0; i < c->n_srv; i++) {
		struct server *s = &c->srv[i];
		const route_server_t *rs = sess_server_get(j->sess, sid_of(c, s));
		uint32_t fails = rs ? rs->n_bans : 0;
		uint32_t touts = rs ? (rs->n_timeouts < fails ? rs->n_timeouts : fails) : 0;
		int in_route = 0;
		for (int k = 0; k < nh && k < SESS_MAX_HOPS; k++)
			in_route |= hops[k].server == sid_of(c, s);
		if (!in_route && !fails)
			continue;
		double lat = -1;
		if (s->conn && s->ready) {
			peer_stats_t st;
			peer_conn_stats(s->conn, &st);
			lat = st.rtt_ms;
		}
		crep_tally_session(&s->rp.tally, in_route && (rc == 0 || !fails), fails - touts, touts,
				   in_route ? (uint64_t)j->n_prompt + (uint64_t)res->n_tokens : 0, lat);
	}
	for (int k = 0; k < res->n_pay; k++) {
		const swarm_pay_line_t *l = &res->pay[k];
		if (l->paid > 0)
			c->rep.spent_total = c->rep.spent_total > INT64_MAX - l->paid ? INT64_MAX : c->rep.spent_total + l->paid;
		for (int i = 0; i < c->n_srv; i++) {
			struct server *s = &c->srv[i];
			if ((s->pay.state == CPAY_TERMS_KNOWN && !memcmp(s->pay.terms.wallet, l->provider, WALLET_PUBLEN)) ||
			    !memcmp(s->rp.tally.wallet, l->provider, WALLET_PUBLEN)) {
				crep_tally_paid(&s->rp.tally, l->provider, l->channel, l->paid);
				break;
			}
		}
	}
}

/* The servers' reputation state, for client_rep.c (loop thread). */
static crep_peer_t **rep_peers(swarm_client_t *c)
{
	for (int i = 0; i < c->n_srv; i++)
		c->rep_tab[i] = &c->srv[i].rp;
	return c->rep_tab;
}

/* The job's outcome is published (DONE); the loop releases it in reap(). */
static void job_publish_done(struct swarm_job *j, int rc, const char *msg)
{
	swarm_client_t *c = j->c;
	double t_end = clock_sec();
	swarm_result_t res;
	memset(&res, 0, sizeof(res));
	if (j->sess) {
		sess_stats(j->sess, &res.stats);
		route_str(c, j->sess, res.route, sizeof(res.route));
	}
	res.n_tokens = res.stats.n_generated;
	res.seconds_prompt = j->t_first > 0 ? j->t_first - j->t_submit : 0;
	res.seconds_gen = j->t_first > 0 && t_end > j->t_first ? t_end - j->t_first : 0;
	cpay_lines(&j->pay, &res);
	rep_job_end(c, j, rc, &res);
	res.stopped_by_token = j->stopped_by_token;
	res.cancelled = j->stopped_by_cb || __atomic_load_n(&j->cancel, __ATOMIC_RELAXED);
	j->finished = 1;
	job_info_publish(c, j);
	pthread_mutex_lock(&c->mu);
	j->res = res;
	j->rc = rc;
	snprintf(j->msg, sizeof(j->msg), "%s", msg ? msg : "");
	j->state = SWARM_JOB_DONE;
	c->failovers_total += (uint64_t)res.stats.failovers;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&c->mu);
}

static int token_cb(void *user, int32_t token, const float *logits, int n_vocab)
{
	struct swarm_job *j = user;
	swarm_client_t *c = j->c;
	if (j->t_first == 0)
		j->t_first = clock_sec();
	int stop = 0;
	if (j->on_token && j->on_token(j->user, token, logits, n_vocab)) {
		j->stopped_by_cb = 1;
		stop = 1;
	}
	for (int i = 0; i < j->n_stops; i++)
		if (j->stops[i] == token) {
			j->stopped_by_token = 1;
			stop = 1;
		}
	pthread_mutex_lock(&c->mu);
	if (j->n_toks == j->cap_toks) {
		int cap = j->cap_toks ? j->cap_toks * 2 : 64;
		int32_t *nt = realloc(j->toks, sizeof(int32_t) * (size_t)cap);
		if (nt) {
			j->toks = nt;
			j->cap_toks = cap;
		}
	}
	if (j->n_toks < j->cap_toks)
		j->toks[j->n_toks++] = token;
	else
		stop = 1;   /* out of memory: end here rather than lose tokens silently */
	c->tokens_total++;
	if (j->cancel)
		stop = 1;
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&c->mu);
	return stop;
}

static void done_cb(void *user, int rc, const char *msg)
{
	job_publish_done(user, rc, msg);
}

static int pending_servers(swarm_client_t *c)
{
	uint64_t now = uv_now(&c->loop);
	int k = 0;
	for (int i = 0; i < c->n_srv; i++) {
		struct server *s = &c->srv[i];
		if (!s->ready && !s->dial_failed && s->rec.n_addrs && now >= s->not_before)
			k++;
	}
	return k;
}

static void job_try_start(swarm_client_t *c, struct swarm_job *j)
{
	uint64_t now = uv_now(&c->loop);
	if (j->started || j->finished)
		return;
	if (__atomic_load_n(&j->cancel, __ATOMIC_RELAXED)) {
		job_publish_done(j, 0, "cancelled");
		return;
	}
	/* Routing needs measured candidates: in the client's first moments,
	 * give the servers found a chance to connect before planning. */
	if (pending_servers(c) > 0 && now - c->t_start < SWARM_SETTLE_MS && now < j->deadline)
		return;
	/* Routing on reputation: the same grace for the digests and their checks. */
	if (c->cfg.w_rep > 0 && !c->rep.settled && now - c->t_start < CREP_GRACE_MS && now < j->deadline)
		return;
	err_msg_t e = { { 0 } };
	sess_tick(j->sess, now);
	int r = sess_start(j->sess, j->prompt, j->n_prompt, j->n_predict, &e);
	if (r == 0) {
		j->started = 1;
		job_info_publish(c, j);
		char route[512];
		route_str(c, j->sess, route, sizeof(route));
		pthread_mutex_lock(&c->mu);
		memcpy(j->route, route, sizeof(route));
		if (j->state == SWARM_JOB_WAITING)
			j->state = SWARM_JOB_RUNNING;
		pthread_cond_broadcast(&j->cond);
		pthread_mutex_unlock(&c->mu);
		return;
	}
	if (r != ERR_NOTFOUND || now >= j->deadline)
		job_publish_done(j, r, e.msg);
}

static void job_setup(swarm_client_t *c, struct swarm_job *j)
{
	err_msg_t e = { { 0 } };
	smp_chain_t *smp = j->ext_smp;
	if (!smp)
		smp = j->own_smp = smp_chain_new_default(&j->sp);
	sess_cfg_t sc;
	sess_cfg_default(&sc);
	sc.model = c->cfg.model;
	sc.pool = c->cfg.pool;
	memcpy(sc.model_id, c->model_id, WIRE_MODEL_ID_LEN);
	sc.enc = c->cfg.enc;
	sc.kv_type = c->cfg.kv_type;
	sc.timeout_ms = c->cfg.timeout_ms;
	sc.smp = smp;
	/* Each hop costs serialisation, syscalls and a scheduling round beyond
	 * its RTT and compute (measured ~1 ms per hop on loopback with the 1.1B
	 * model): with similar RTTs, fewer hops win. */
	route_cost_default(&sc.cost);
	sc.cost.hop_ms = 1.0;
	sc.cost.lambda = c->cfg.price_weight;
	sc.cost.prefer = c->cfg.prefer;
	sc.cost.w_price = c->cfg.w_price;
	sc.cost.w_speed = c->cfg.w_speed;
	sc.cost.w_rep = c->cfg.w_rep;
	sc.send = send_cb;
	sc.on_token = token_cb;
	sc.on_done = done_cb;
	if (c->cfg.pay_wallet) {
		sc.pay_open = pay_open_cb;
		sc.pay_count = pay_count_cb;
	}
	sc.user = j;
	j->deadline = uv_now(&c->loop) + (j->discover_ms ? j->discover_ms : c->cfg.discover_ms);
	if (!smp || sess_new(&sc, &j->sess, &e) != 0) {
		job_publish_done(j, smp ? ERR_INVAL : ERR_NOMEM, smp ? e.msg : "out of memory");
		return;
	}
	for (int i = 0; i < c->n_srv; i++)
		if (c->srv[i].ready)
			candidate_set(c, j, &c->srv[i], 1);
	job_try_start(c, j);
}

static void job_destroy(struct swarm_job *j)
{
	pthread_cond_destroy(&j->cond);
	free(j->prompt);
	free(j->stops);
	free(j->toks);
	cpay_job_close(&j->pay);
	free(j);
}

/* Releases the loop's part of finished jobs (never from inside a sess callback). */
static void reap(swarm_client_t *c)
{
	struct swarm_job **pp = &c->active;
	while (*pp) {
		struct swarm_job *j = *pp;
		if (!j->finished || j->pay.busy) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		c->n_active--;
		sess_free(j->sess);
		j->sess = NULL;
		smp_chain_free(j->own_smp);
		j->own_smp = NULL;
		pthread_mutex_lock(&c->mu);
		j->loop_gone = 1;
		c->n_jobs--;
		int gone = j->owner_gone;
		pthread_mutex_unlock(&c->mu);
		if (gone)
			job_destroy(j);
	}
}

/* ---- servers */

static void dial(swarm_client_t *c, struct server *s)
{
	uint64_t now = uv_now(&c->loop);
	if (c->closing || s->conn || s->dialing || now < s->not_before || now - s->last_dial < 1000 || !s->rec.n_addrs)
		return;
	char host[64];
	ann_addr_str(&s->rec.addrs[0], host, sizeof(host));
	char *colon = strrchr(host, ':');
	if (!colon)
		return;
	*colon = 0;
	char *h = host;
	if (h[0] == '[') {
		h++;
		h[strlen(h) - 1] = 0;
	}
	err_msg_t e;
	s->last_dial = now;
	if (peer_net_connect(c->net, h, s->rec.addrs[0].port, s->rec.node_id, &s->conn, &e) == 0)
		s->dialing = 1;
}

static void merge_view(swarm_client_t *c)
{
	ann_t *buf = malloc(sizeof(ann_t) * CL_MAX_SERVERS);
	size_t cnt = 0;
	if (!buf)
		return;
	if (dht_node_peers(c->dht, c->model_id, buf, CL_MAX_SERVERS, &cnt) == 0) {
		for (int k = 0; k < c->n_srv; k++)
			c->srv[k].listed = c->srv[k].rp.listed = 0;
		for (size_t i = 0; i < cnt && i < CL_MAX_SERVERS; i++) {
			struct server *s = NULL;
			for (int k = 0; k < c->n_srv; k++)
				if (!memcmp(c->srv[k].rec.node_id, buf[i].node_id, ANN_IDLEN))
					s = &c->srv[k];
			if (!s && c->n_srv < CL_MAX_SERVERS) {
				s = &c->srv[c->n_srv++];
				memset(s, 0, sizeof(*s));
				crep_peer_init(&s->rp, buf[i].node_id);
				s->tokens = c->cfg.max_msgs_per_sec / 4;
				s->t_tokens = uv_now(&c->loop);
			}
			if (!s)
				continue;
			s->listed = 1;
			s->rp.listed = 1;
			if (s->rec.seq != buf[i].seq) {
				s->rec = buf[i];
				candidates_refresh(c, s);
			}
			dial(c, s);
		}
	}
	free(buf);
}

static void publish_view(swarm_client_t *c)
{
	int L = c->cfg.model->hp.n_layer;
	int *cov = calloc((size_t)L, sizeof(int));
	swarm_view_t v;
	memset(&v, 0, sizeof(v));
	v.n_layer = L;
	v.servers_known = c->n_srv;
	for (int i = 0; i < c->n_srv; i++) {
		struct server *s = &c->srv[i];
		if (!s->ready)
			continue;
		v.servers_ready++;
		for (uint32_t l = s->rec.layer_a; cov && l < s->rec.layer_b && l < (uint32_t)L; l++)
			cov[l]++;
	}
	v.min_replicas = cov && L > 0 ? cov[0] : 0;
	for (int l = 0; cov && l < L; l++) {
		v.layers_covered += cov[l] > 0;
		if (cov[l] < v.min_replicas)
			v.min_replicas = cov[l];
	}
	free(cov);
	v.wire_bytes_in = c->closed_in;
	v.wire_bytes_out = c->closed_out;
	swarm_server_info_t *infos = calloc((size_t)(c->n_srv > 0 ? c->n_srv : 1), sizeof(*infos));
	for (int i = 0; i < c->n_srv; i++) {
		struct server *s = &c->srv[i];
		peer_stats_t ps;
		memset(&ps, 0, sizeof(ps));
		ps.rtt_ms = -1;
		if (s->conn)
			peer_conn_stats(s->conn, &ps);
		v.wire_bytes_in += ps.bytes_in;
		v.wire_bytes_out += ps.bytes_out;
		if (!infos)
			continue;
		swarm_server_info_t *in = &infos[i];
		memcpy(in->node_id, s->rec.node_id, ANN_IDLEN);
		if (s->rec.n_addrs)
			ann_addr_str(&s->rec.addrs[0], in->addr, sizeof(in->addr));
		in->layer_a = s->rec.layer_a;
		in->layer_b = s->rec.layer_b;
		in->price = s->rec.price;
		in->throughput_milli = s->rec.throughput_milli;
		in->free_sessions = s->rec.free_sessions;
		in->timestamp_ms = s->rec.timestamp_ms;
		in->listed = s->listed;
		in->connected = s->ready;
		in->rtt_ms = s->ready ? ps.rtt_ms : -1;
		in->rep = s->rp.rep;
		in->digests = s->rp.n_digests;
		in->sessions = s->rp.tally.sessions;
		in->failures = s->rp.tally.failures;
		in->paid = s->rp.tally.paid;
	}
	v.spent_total = c->rep.spent_total;
	v.digests_published = c->rep.n_pub;
	for (struct swarm_job *j = c->active; j; j = j->next)
		if (j->started && !j->finished)
			job_info_publish(c, j);
	pthread_mutex_lock(&c->mu);
	if (infos) {
		free(c->infos);
		c->infos = infos;
		c->n_infos = c->n_srv;
	}
	v.jobs = c->n_jobs;
	v.jobs_total = c->jobs_total;
	v.tokens_total = c->tokens_total;
	v.failovers_total = c->failovers_total;
	c->view = v;
	pthread_mutex_unlock(&c->mu);
}

static void on_state(peer_conn_t *pc, enum peer_state st, const char *why, void *user)
{
	swarm_client_t *c = user;
	struct server *s = by_conn(c, pc);
	if (!s)
		return;
	uint64_t now = uv_now(&c->loop);
	if (st == PEER_READY) {
		s->ready = 1;
		s->dialing = 0;
		s->dial_failed = 0;
		s->close_pending = 0;
		s->pay.state = CPAY_TERMS_UNASKED;
		terms_ask(c, s);
		candidates_refresh(c, s);
		return;
	}
	if (st != PEER_CLOSED)
		return;
	peer_stats_t ps;
	peer_conn_stats(pc, &ps);
	c->closed_in += ps.bytes_in;
	c->closed_out += ps.bytes_out;
	int was_ready = s->ready;
	s->conn = NULL;
	s->ready = 0;
	s->dialing = 0;
	s->close_pending = 0;
	q_free(s);
	s->not_before = now + SWARM_REDIAL_MS;
	if (!was_ready) {
		s->dial_failed = 1;   /* e.g. a stale record of a node that is gone */
		return;
	}
	if (c->closing)
		return;
	log_info("client", "lost a server: %s", why);
	for (struct swarm_job *j = c->active; j; j = j->next) {
		candidate_set(c, j, s, 0);
		if (j->started && !j->finished)
			sess_on_server_lost(j->sess, sid_of(c, s));
	}
}

static uint64_t msg_session(const wire_msg_t *m, int *has)
{
	*has = 1;
	switch (m->type) {
	case WIRE_OPEN_OK: return m->u.open_ok.session_id;
	case WIRE_OPEN_ERR: return m->u.error.session_id;
	case WIRE_FORWARD_RESULT: return m->u.forward.session_id;
	case WIRE_CLOSE_SESSION: return m->u.close.session_id;
	default: *has = 0; return 0;
	}
}

static void on_msg(peer_conn_t *pc, const wire_msg_t *m, void *user)
{
	swarm_client_t *c = user;
	struct server *s = by_conn(c, pc);
	if (!s || c->closing)
		return;
	uint64_t server = sid_of(c, s);
	if (m->type == WIRE_PAY_TERMS) {
		if (!c->cfg.pay_wallet || m->u.pay.id != server)
			return;
		s->pay.terms = m->u.pay;
		s->pay.state = CPAY_TERMS_KNOWN;
		for (struct swarm_job *j = c->active; j; j = j->next)
			if (j->started && !j->finished)
				cpay_kick(&j->pay, pay_live_sess_op(j));
		return;
	}
	if (m->type == WIRE_RECEIPT) {
		/* held by the job's payments until the FORWARD_RESULT that follows */
		for (struct swarm_job *j = c->active; j; j = j->next)
			if (j->started && !j->finished && cpay_receipt(&j->pay, server, &m->u.pay))
				break;
		return;
	}
	if (m->type == WIRE_ERROR) {
		/* the CLOSE_SESSION that follows names the session (shard.h) */
		log_debug("client", "server error %u: %s", m->u.error.code, m->u.error.msg);
		return;
	}
	int has = 0;
	uint64_t sid = msg_session(m, &has);
	sess_hop_info_t hops[SESS_MAX_HOPS];
	for (struct swarm_job *j = c->active; j; j = j->next) {
		if (!j->started || j->finished)
			continue;
		int nh = sess_route(j->sess, hops, SESS_MAX_HOPS), mine = 0;
		for (int k = 0; k < nh && k < SESS_MAX_HOPS; k++)
			if (hops[k].server == server && (!has || hops[k].session_id == sid))
				mine = 1;
		if (!mine)
			continue;
		sess_on_msg(j->sess, server, m);
		if (has)
			break;   /* session ids are random 64-bit: one owner */
	}
}

/* ---- the loop */

static void lookup_work(uv_work_t *w)
{
	swarm_client_t *c = w->data;
	size_t cnt = 0;
	if (dht_node_lookup(c->dht, c->model_id, CL_LOOKUP_WAIT_MS, NULL, 0, &cnt) != 0)
		log_debug("client", "lookup failed");
}

static void lookup_done(uv_work_t *w, int status)
{
	swarm_client_t *c = w->data;
	c->lookup_busy = 0;
	if (!c->closing)
		merge_view(c);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void net_closed(void *arg)
{
	swarm_client_t *c = arg;
	c->net = NULL;
	uv_walk(&c->loop, close_walk, NULL);
}

static void shutdown_loop(swarm_client_t *c)
{
	if (c->closing)
		return;
	/* sessions are closed at their servers while the connections still exist */
	for (struct swarm_job *j = c->active; j; j = j->next) {
		if (j->started && !j->finished)
			sess_cancel(j->sess);
		if (!j->finished)
			job_publish_done(j, ERR_INVAL, "client closed");
	}
	for (int i = 0; i < c->n_srv; i++)
		drain(c, &c->srv[i]);
	c->closing = 1;
	reap(c);
	crep_close(&c->rep, rep_peers(c), c->n_srv);
	if (c->watching && dht_node_unwatch(c->dht, c->model_id) != 0)
		log_debug("client", "unwatch failed");
	c->watching = 0;
	pthread_mutex_lock(&c->mu);
	c->async_dead = 1;
	pthread_mutex_unlock(&c->mu);
	if (c->net)
		peer_net_close(c->net, net_closed, c);
	else
		uv_walk(&c->loop, close_walk, NULL);
}

static void on_async(uv_async_t *a)
{
	swarm_client_t *c = a->data;
	if (c->closing)
		return;
	pthread_mutex_lock(&c->mu);
	struct swarm_job *in = c->incoming;
	c->incoming = NULL;
	int stopping = c->stopping, cancels = c->cancel_pending;
	c->cancel_pending = 0;
	pthread_mutex_unlock(&c->mu);
	/* in arrival order (the list was pushed at its head) */
	struct swarm_job *rev = NULL;
	while (in) {
		struct swarm_job *nx = in->next;
		in->next = rev;
		rev = in;
		in = nx;
	}
	while (rev) {
		struct swarm_job *j = rev;
		rev = rev->next;
		j->next = c->active;
		c->active = j;
		c->n_active++;
		job_setup(c, j);
	}
	if (cancels)
		for (struct swarm_job *j = c->active; j; j = j->next)
			if (__atomic_load_n(&j->cancel, __ATOMIC_RELAXED) && !j->finished) {
				if (j->started)
					sess_cancel(j->sess);
				else
					job_publish_done(j, 0, "cancelled");
			}
	if (__atomic_exchange_n(&c->dht_changed, 0, __ATOMIC_ACQ_REL))
		merge_view(c);
	reap(c);
	if (stopping)
		shutdown_loop(c);
}

static void on_change(void *ud, const uint8_t model_id[ANN_MODELLEN])
{
	swarm_client_t *c = ud;
	__atomic_store_n(&c->dht_changed, 1, __ATOMIC_RELEASE);
	uv_async_send(&c->async);
}

static void on_timer(uv_timer_t *t)
{
	swarm_client_t *c = t->data;
	if (c->closing)
		return;
	uint64_t now = uv_now(&c->loop);
	for (int i = 0; i < c->n_srv; i++) {
		struct server *s = &c->srv[i];
		if (!s->close_pending)
			continue;
		s->close_pending = 0;
		if (s->conn) {
			peer_close(s->conn, "send failed");   /* on_state tells the sessions */
		} else {
			for (struct swarm_job *j = c->active; j; j = j->next) {
				candidate_set(c, j, s, 0);
				if (j->started && !j->finished)
					sess_on_server_lost(j->sess, sid_of(c, s));
			}
		}
	}
	if (now - c->last_view >= CL_VIEW_MS) {
		c->last_view = now;
		merge_view(c);
		publish_view(c);
	}
	if (now - c->last_refresh >= CL_REFRESH_MS) {
		c->last_refresh = now;
		for (int i = 0; i < c->n_srv; i++) {
			dial(c, &c->srv[i]);
			candidates_refresh(c, &c->srv[i]);
		}
	}
	if (now - c->last_rep >= (c->rep.settled ? CL_REP_MS : CL_REP_MS / 4)) {
		c->last_rep = now;
		crep_refresh(&c->rep, rep_peers(c), c->n_srv);
		/* The jobs' candidate tables carry the scores: a route planned
		 * right after this round must see the new ones. */
		if (c->cfg.w_rep > 0)
			for (int i = 0; i < c->n_srv; i++)
				candidates_refresh(c, &c->srv[i]);
	}
	pthread_mutex_lock(&c->mu);
	int pub_req = c->pub_req;
	c->pub_req = 0;
	pthread_mutex_unlock(&c->mu);
	if (pub_req) {
		if (c->cfg.pay_wallet)
			crep_publish(&c->rep, rep_peers(c), c->n_srv, wallet_pub(c->cfg.pay_wallet));
		pthread_mutex_lock(&c->mu);
		c->pub_done = 1;
		c->pub_count = c->rep.n_pub;
		pthread_mutex_unlock(&c->mu);
	}
	uint64_t pub_ms = c->cfg.rep_publish_ms ? c->cfg.rep_publish_ms : SWARM_REP_PUBLISH_MS;
	if (c->cfg.pay_wallet && c->cfg.rep_publish_ms != UINT32_MAX &&
	    (c->last_rep_pub == 0 || now - c->last_rep_pub >= pub_ms) &&
	    crep_publish(&c->rep, rep_peers(c), c->n_srv, wallet_pub(c->cfg.pay_wallet)))
		c->last_rep_pub = now;
	if (c->own_dht && !c->lookup_busy && now - c->last_lookup >= CL_LOOKUP_MS) {
		c->last_lookup = now;
		c->lookup_busy = 1;
		c->lookup_work.data = c;
		if (uv_queue_work(&c->loop, &c->lookup_work, lookup_work, lookup_done) != 0)
			c->lookup_busy = 0;
	}
	for (struct swarm_job *j = c->active; j; j = j->next) {
		if (j->finished)
			continue;
		if (!j->started) {
			job_try_start(c, j);
		} else {
			if (c->cfg.pay_wallet)
				cpay_kick(&j->pay, pay_live_sess_op(j));
			sess_tick(j->sess, now);
		}
	}
	reap(c);
}

static void *thread_main(void *arg)
{
	swarm_client_t *c = arg;
	uv_run(&c->loop, UV_RUN_DEFAULT);
	return NULL;
}

static void sign_cb(void *ud, const void *msg, size_t len, uint8_t sig[ANN_SIGLEN])
{
	ident_sign(ud, msg, len, sig);
}

/* ---- public */

void swarm_client_free(swarm_client_t *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->mu);
		c->stopping = 1;
		if (!c->async_dead)
			uv_async_send(&c->async);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
	} else if (c->handles_open) {
		c->closing = 1;
		if (c->net)
			peer_net_close(c->net, net_closed, c);
		else
			uv_walk(&c->loop, close_walk, NULL);
		uv_run(&c->loop, UV_RUN_DEFAULT);
	}
	if (c->handles_open && uv_loop_close(&c->loop) != 0)
		log_debug("client", "loop closed with handles left");
	/* jobs that never reached the loop */
	while (c->incoming) {
		struct swarm_job *j = c->incoming;
		c->incoming = j->next;
		pthread_mutex_lock(&c->mu);
		j->rc = ERR_INVAL;
		snprintf(j->msg, sizeof(j->msg), "client closed");
		j->state = SWARM_JOB_DONE;
		j->loop_gone = 1;
		int gone = j->owner_gone;
		pthread_cond_broadcast(&j->cond);
		pthread_mutex_unlock(&c->mu);
		if (gone)
			job_destroy(j);
	}
	if (c->own_dht)
		dht_node_free(c->dht);
	for (int i = 0; i < c->n_srv; i++)
		q_free(&c->srv[i]);
	ident_free(c->id);
	pthread_mutex_destroy(&c->mu);
	free(c->infos);
	free(c);
}

int swarm_client_new(const swarm_client_cfg_t *cfg, swarm_client_t **out, err_msg_t *e)
{
	*out = NULL;
	if (!cfg->model || !cfg->model->has_embd || !cfg->model_id)
		return err_set(e, ERR_INVAL, "a swarm client needs a model with its embedding and head, and its id");
	if (!cfg->dht && cfg->n_bootstrap < 0)
		return err_set(e, ERR_INVAL, "bad bootstrap count");
	if (cfg->pay_wallet && (!cfg->pay_settle.ops || cfg->pay_budget <= 0))
		return err_set(e, ERR_INVAL, "payments need a settlement layer and a budget > 0");
	swarm_client_t *c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(e, ERR_NOMEM, "out of memory");
	c->cfg = *cfg;
	if (!c->cfg.network)
		c->cfg.network = "colony";
	if (c->cfg.max_jobs <= 0)
		c->cfg.max_jobs = SWARM_DEFAULT_MAX_JOBS;
	if (!(c->cfg.max_msgs_per_sec > 0))
		c->cfg.max_msgs_per_sec = SWARM_DEFAULT_MSGS_PER_SEC;
	if (!c->cfg.discover_ms)
		c->cfg.discover_ms = 15000;
	memcpy(c->model_id, cfg->model_id, WIRE_MODEL_ID_LEN);
	pthread_mutex_init(&c->mu, NULL);
	int r;
	if (uv_loop_init(&c->loop) != 0) {
		free(c);
		return err_set(e, ERR_NOMEM, "cannot start an event loop");
	}
	c->handles_open = 1;
	uv_async_init(&c->loop, &c->async, on_async);
	c->async.data = c;
	uv_timer_init(&c->loop, &c->timer);
	c->timer.data = c;
	uv_timer_init(&c->loop, &c->t_pace);
	c->t_pace.data = c;
	if ((r = ident_new(NULL, &c->id))) {
		err_set(e, r, "cannot create an identity");
		goto fail;
	}
	peer_cfg_t pc;
	peer_cfg_default(&pc);
	pc.id = c->id;
	pc.network = c->cfg.network;
	pc.software = "colony/0.1.0 client";
	pc.caps = WIRE_CAP_CLIENT | WIRE_CAP_PROBE;
	pc.on_state = on_state;
	pc.on_msg = on_msg;
	pc.user = c;
	/* The servers' replies for every session arrive on one connection each:
	 * the flood limit meant for unknown peers would cut our own servers off. */
	pc.msgs_per_sec = 1e6;
	if ((r = peer_net_new(&c->loop, &pc, &c->net, e)))
		goto fail;
	if (cfg->dht) {
		c->dht = cfg->dht;
	} else {
		dht_node_cfg_t dc;
		dht_node_cfg_default(&dc);
		dc.network = dht_network_id(c->cfg.network);
		dc.node_id = ident_pub(c->id);
		dc.sign = sign_cb;      /* a client announces nothing, but the DHT node wants a signer */
		dc.sign_ud = c->id;
		if (c->cfg.stale_ms)
			dc.stale_ms = c->cfg.stale_ms;
		if ((r = dht_node_new(&dc, &c->dht, e)))
			goto fail;
		c->own_dht = 1;
		for (int i = 0; i < cfg->n_bootstrap; i++)
			if ((r = dht_node_bootstrap(c->dht, cfg->bootstrap[i], e)))
				goto fail;
		if ((r = dht_node_watch(c->dht, c->model_id, on_change, c))) {
			err_set(e, r, "cannot watch the model's key");
			goto fail;
		}
		c->watching = 1;
		/* a first lookup (blocking, short) so the view starts full */
		size_t cnt = 0;
		if (dht_node_lookup(c->dht, c->model_id, CL_LOOKUP_WAIT_MS, NULL, 0, &cnt) != 0)
			log_debug("client", "first lookup failed");
	}
	crep_state_init(&c->rep, &c->loop, c->dht, !c->own_dht, c->cfg.pay_settle, c->cfg.w_rep > 0 || c->cfg.rep_view);
	uv_update_time(&c->loop);
	c->t_start = c->last_lookup = c->last_view = c->last_refresh = uv_now(&c->loop);
	merge_view(c);
	publish_view(c);
	uv_timer_start(&c->timer, on_timer, CL_TICK_MS, CL_TICK_MS);
	if (pthread_create(&c->thread, NULL, thread_main, c) != 0) {
		r = err_set(e, ERR_NOMEM, "cannot start the client's thread");
		goto fail;
	}
	c->thread_started = 1;
	*out = c;
	return 0;
fail:
	if (c->watching && dht_node_unwatch(c->dht, c->model_id) != 0)
		log_debug("client", "unwatch failed");
	c->watching = 0;
	swarm_client_free(c);
	return r;
}

dht_node_t *swarm_client_dht(swarm_client_t *c) { return c->dht; }

void swarm_client_view(swarm_client_t *c, swarm_view_t *v)
{
	pthread_mutex_lock(&c->mu);
	*v = c->view;
	v->jobs = c->n_jobs;
	pthread_mutex_unlock(&c->mu);
}

int swarm_client_servers(swarm_client_t *c, swarm_server_info_t *out, int cap)
{
	pthread_mutex_lock(&c->mu);
	int n = c->n_infos;
	for (int i = 0; i < n && i < cap; i++)
		out[i] = c->infos[i];
	pthread_mutex_unlock(&c->mu);
	return n;
}

int swarm_client_submit(swarm_client_t *c, const swarm_req_t *r, swarm_job_t **out, err_msg_t *e)
{
	*out = NULL;
	int nv = c->cfg.model->hp.n_vocab;
	if (!r->prompt || r->n_prompt < 1 || r->n_predict < 1 || r->n_stop_tokens < 0 || (r->n_stop_tokens && !r->stop_tokens))
		return err_set(e, ERR_INVAL, "need a prompt of at least one token and n_predict >= 1");
	for (int i = 0; i < r->n_prompt; i++)
		if (r->prompt[i] < 0 || r->prompt[i] >= nv)
			return err_set(e, ERR_INVAL, "prompt token %d at %d is outside the vocabulary (%d)", r->prompt[i], i, nv);
	struct swarm_job *j = calloc(1, sizeof(*j));
	if (!j)
		return err_set(e, ERR_NOMEM, "out of memory");
	j->c = c;
	j->prompt = malloc(sizeof(int32_t) * (size_t)r->n_prompt);
	j->stops = r->n_stop_tokens ? malloc(sizeof(int32_t) * (size_t)r->n_stop_tokens) : NULL;
	if (!j->prompt || (r->n_stop_tokens && !j->stops)) {
		free(j->prompt);
		free(j->stops);
		free(j);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	memcpy(j->prompt, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
	if (r->n_stop_tokens)
		memcpy(j->stops, r->stop_tokens, sizeof(int32_t) * (size_t)r->n_stop_tokens);
	j->n_prompt = r->n_prompt;
	cpay_job_init(&j->pay, &c->loop, &c->cfg, &pay_ops, j, r->n_prompt);
	j->n_predict = r->n_predict;
	j->n_stops = r->n_stop_tokens;
	j->sp = r->sp;
	j->ext_smp = r->smp;
	j->discover_ms = r->discover_ms;
	j->on_token = r->on_token;
	j->user = r->user;
	j->t_submit = clock_sec();
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&j->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_lock(&c->mu);
	if (c->stopping || c->async_dead || c->n_jobs >= c->cfg.max_jobs) {
		int full = !c->stopping;
		pthread_mutex_unlock(&c->mu);
		job_destroy(j);
		return full ? err_set(e, ERR_FULL, "%d generations are running (the limit)", c->cfg.max_jobs)
			    : err_set(e, ERR_INVAL, "the client is closing");
	}
	c->n_jobs++;
	c->jobs_total++;
	j->next = c->incoming;
	c->incoming = j;
	uv_async_send(&c->async);
	pthread_mutex_unlock(&c->mu);
	*out = j;
	return 0;
}

int swarm_job_poll(swarm_job_t *j, int timeout_ms, int32_t *toks, int cap, enum swarm_job_state *st)
{
	swarm_client_t *c = j->c;
	pthread_mutex_lock(&c->mu);
	if (timeout_ms > 0 && j->n_taken == j->n_toks && j->state != SWARM_JOB_DONE) {
		struct timespec ts;
		cond_deadline(&ts, timeout_ms);
		enum swarm_job_state s0 = j->state;
		while (j->n_taken == j->n_toks && j->state == s0) {
			if (pthread_cond_timedwait(&j->cond, &c->mu, &ts) != 0)
				break;
		}
	}
	int k = j->n_toks - j->n_taken;
	if (k > cap)
		k = cap;
	if (k > 0) {
		memcpy(toks, j->toks + j->n_taken, sizeof(int32_t) * (size_t)k);
		j->n_taken += k;
	}
	if (st)
		*st = j->state == SWARM_JOB_DONE && j->n_taken < j->n_toks ? SWARM_JOB_RUNNING : j->state;
	pthread_mutex_unlock(&c->mu);
	return k;
}

void swarm_job_cancel(swarm_job_t *j)
{
	swarm_client_t *c = j->c;
	pthread_mutex_lock(&c->mu);
	int send = !j->loop_gone && j->state != SWARM_JOB_DONE && !c->async_dead;
	__atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
	if (send) {
		c->cancel_pending = 1;
		uv_async_send(&c->async);
	}
	pthread_mutex_unlock(&c->mu);
}

int swarm_job_result(swarm_job_t *j, swarm_result_t *res, err_msg_t *e)
{
	swarm_client_t *c = j->c;
	pthread_mutex_lock(&c->mu);
	int rc = j->state == SWARM_JOB_DONE ? j->rc : ERR_INVAL;
	if (res)
		*res = j->res;
	if (rc)
		err_set(e, rc, "%s", j->state == SWARM_JOB_DONE ? (j->msg[0] ? j->msg : err_str(rc)) : "the job is not done");
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void swarm_job_route(swarm_job_t *j, char *buf, size_t cap)
{
	swarm_client_t *c = j->c;
	pthread_mutex_lock(&c->mu);
	snprintf(buf, cap, "%s", j->state == SWARM_JOB_DONE && j->res.route[0] ? j->res.route : j->route);
	pthread_mutex_unlock(&c->mu);
}

void swarm_job_info(swarm_job_t *j, swarm_job_info_t *out)
{
	swarm_client_t *c = j->c;
	pthread_mutex_lock(&c->mu);
	*out = j->info;
	out->state = j->state;
	out->n_tokens = j->n_toks;
	pthread_mutex_unlock(&c->mu);
}

void swarm_job_free(swarm_job_t *j)
{
	if (!j)
		return;
	swarm_client_t *c = j->c;
	pthread_mutex_lock(&c->mu);
	j->owner_gone = 1;
	int gone = j->loop_gone;
	if (!gone && j->state != SWARM_JOB_DONE && !c->async_dead) {
		__atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
		c->cancel_pending = 1;
		uv_async_send(&c->async);
	}
	pthread_mutex_unlock(&c->mu);
	if (gone)
		job_destroy(j);
}

int swarm_client_publish_digests(swarm_client_t *c, int timeout_ms)
{
	pthread_mutex_lock(&c->mu);
	c->pub_req = 1;
	c->pub_done = 0;
	pthread_mutex_unlock(&c->mu);
	double t0 = clock_sec();
	for (;;) {
		pthread_mutex_lock(&c->mu);
		int done = c->pub_done, n = c->pub_count;
		pthread_mutex_unlock(&c->mu);
		if (done)
			return n;
		if ((clock_sec() - t0) * 1000.0 >= timeout_ms)
			return -1;
		usleep(10000);
	}
}
