/* client.c - a generation through a swarm (see client.h). */
#include "swarm/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "dht/dht.h"
#include "net/ident.h"
#include "net/peer.h"

#define CL_MAX_SERVERS 256
#define SWARM_SETTLE_MS 2000   /* wait at most this long for found servers to connect */

struct server {
	ann_t rec;
	peer_conn_t *conn;
	int ready, dialing, lost;
	int dial_failed;           /* the last dial did not reach READY (retried, but not waited for) */
	uint64_t last_dial;
};

struct client {
	swarm_cfg_t cfg;
	uv_loop_t loop;
	ident_t *id;
	dht_node_t *dht;
	peer_net_t *net;
	sess_t *sess;
	uv_timer_t timer;
	uv_async_t async;
	struct server srv[CL_MAX_SERVERS];
	int n_srv;
	int started, finished, closing;
	int rc;
	char msg[256];
	uint64_t t_start;
	double t_first, t_end;
	int n_tokens;
	const int32_t *prompt;
	int n_prompt, n_predict;
	uint64_t pending_lost[CL_MAX_SERVERS];
	int n_pending_lost;
};

void swarm_cfg_default(swarm_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->network = "colony";
	c->enc = WIRE_ENC_F32;
	c->kv_type = WIRE_KV_F32;
	c->discover_ms = 15000;
	c->timeout_ms = 10000;
}

static struct server *by_conn(struct client *c, peer_conn_t *pc)
{
	for (int i = 0; i < c->n_srv; i++)
		if (c->srv[i].conn == pc)
			return &c->srv[i];
	return NULL;
}

static uint64_t sid_of(struct client *c, struct server *s) { return (uint64_t)(s - c->srv) + 1; }

static void update_candidate(struct client *c, struct server *s)
{
	if (!c->sess || !s->ready || s->lost)
		return;
	peer_stats_t st;
	peer_conn_stats(s->conn, &st);
	route_server_t rs;
	route_server_from_ann(&rs, sid_of(c, s), &s->rec, st.rtt_ms);
	if (sess_server_set(c->sess, &rs) != 0)
		log_debug("client", "candidate table full");
}

static void dial(struct client *c, struct server *s)
{
	uint64_t now = uv_now(&c->loop);
	if (s->conn || s->dialing || s->lost || now - s->last_dial < 1000 || !s->rec.n_addrs)
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

static void merge_view(struct client *c)
{
	ann_t *buf = malloc(sizeof(ann_t) * CL_MAX_SERVERS);
	size_t cnt = 0;
	if (!buf)
		return;
	if (dht_node_peers(c->dht, c->cfg.model_id, buf, CL_MAX_SERVERS, &cnt) == 0) {
		for (size_t i = 0; i < cnt && i < CL_MAX_SERVERS; i++) {
			struct server *s = NULL;
			for (int k = 0; k < c->n_srv; k++)
				if (!memcmp(c->srv[k].rec.node_id, buf[i].node_id, ANN_IDLEN))
					s = &c->srv[k];
			if (!s && c->n_srv < CL_MAX_SERVERS) {
				s = &c->srv[c->n_srv++];
				memset(s, 0, sizeof(*s));
			}
			if (!s)
				continue;
			s->rec = buf[i];
			dial(c, s);
			update_candidate(c, s);
		}
	}
	free(buf);
}

static void on_async(uv_async_t *a) { merge_view(a->data); }

static void on_change(void *ud, const uint8_t model_id[ANN_MODELLEN]) { uv_async_send(&((struct client *)ud)->async); }

static void finish(struct client *c);

static void sign_cb(void *ud, const void *msg, size_t len, uint8_t sig[ANN_SIGLEN])
{
	ident_sign(ud, msg, len, sig);
}

static void send_cb(void *user, uint64_t server, const wire_msg_t *m)
{
	struct client *c = user;
	if (server < 1 || server > (uint64_t)c->n_srv)
		return;
	struct server *s = &c->srv[server - 1];
	err_msg_t e;
	if (!s->conn || !s->ready || peer_send(s->conn, m, &e) != 0) {
		/* sess must not be re-entered from its own send: report it later */
		if (c->n_pending_lost < CL_MAX_SERVERS)
			c->pending_lost[c->n_pending_lost++] = server;
	}
}

static int token_cb(void *user, int32_t token, const float *logits, int n_vocab)
{
	struct client *c = user;
	if (c->n_tokens++ == 0)
		c->t_first = clock_sec();
	return c->cfg.on_token ? c->cfg.on_token(c->cfg.user, token, logits, n_vocab) : 0;
}

static void done_cb(void *user, int rc, const char *msg)
{
	struct client *c = user;
	c->rc = rc;
	snprintf(c->msg, sizeof(c->msg), "%s", msg ? msg : "");
	c->t_end = clock_sec();
	c->finished = 1;
}

static void on_state(peer_conn_t *pc, enum peer_state st, const char *why, void *user)
{
	struct client *c = user;
	struct server *s = by_conn(c, pc);
	if (!s)
		return;
	if (st == PEER_READY) {
		s->ready = 1;
		s->dialing = 0;
		s->dial_failed = 0;
		update_candidate(c, s);
	} else if (st == PEER_CLOSED) {
		int was_ready = s->ready;
		if (!was_ready)
			s->dial_failed = 1;   /* e.g. a stale record of a node that is gone */
		s->conn = NULL;
		s->ready = 0;
		s->dialing = 0;
		if (was_ready && !c->closing) {
			/* a server that dropped its connection is not dialed again */
			s->lost = 1;
			log_info("client", "lost a server: %s", why);
			if (c->sess && c->started && !c->finished)
				sess_on_server_lost(c->sess, sid_of(c, s));
		}
	}
}

static void on_msg(peer_conn_t *pc, const wire_msg_t *m, void *user)
{
	struct client *c = user;
	struct server *s = by_conn(c, pc);
	if (s && c->sess && c->started && !c->finished)
		sess_on_msg(c->sess, sid_of(c, s), m);
}

/* Servers found but not connected yet (still dialing or in the handshake). */
static int pending_servers(struct client *c)
{
	int k = 0;
	for (int i = 0; i < c->n_srv; i++)
		if (!c->srv[i].ready && !c->srv[i].lost && !c->srv[i].dial_failed && c->srv[i].rec.n_addrs)
			k++;
	return k;
}

static void try_start(struct client *c)
{
	err_msg_t e = { { 0 } };
	/* Routing needs measured candidates: give the servers found a moment to
	 * connect before the route is planned, so the best chain is not missed
	 * for one that merely answered first. */
	if (pending_servers(c) > 0 && uv_now(&c->loop) - c->t_start < SWARM_SETTLE_MS)
		return;
	sess_tick(c->sess, uv_now(&c->loop));   /* its clock is the loop's */
	int r = sess_start(c->sess, c->prompt, c->n_prompt, c->n_predict, &e);
	if (r == 0) {
		c->started = 1;
		c->t_start = uv_now(&c->loop);
		return;
	}
	if (r != ERR_NOTFOUND || uv_now(&c->loop) - c->t_start > c->cfg.discover_ms) {
		c->rc = r;
		snprintf(c->msg, sizeof(c->msg), "%.250s", e.msg);
		c->finished = 1;
	}
}

static void on_timer(uv_timer_t *t)
{
	struct client *c = t->data;
	if (c->closing)
		return;
	while (c->n_pending_lost > 0 && c->started && !c->finished) {
		uint64_t sv = c->pending_lost[--c->n_pending_lost];
		c->srv[sv - 1].lost = 1;
		if (c->srv[sv - 1].conn)
			peer_close(c->srv[sv - 1].conn, "send failed");
		sess_on_server_lost(c->sess, sv);
	}
	for (int i = 0; i < c->n_srv; i++) {
		dial(c, &c->srv[i]);
		update_candidate(c, &c->srv[i]);
	}
	if (!c->started && !c->finished)
		try_start(c);
	if (c->started && !c->finished)
		sess_tick(c->sess, uv_now(&c->loop));
	if (c->finished)
		finish(c);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void net_closed(void *arg)
{
	struct client *c = arg;
	c->net = NULL;
	uv_walk(&c->loop, close_walk, NULL);
}

static void finish(struct client *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (c->dht && dht_node_unwatch(c->dht, c->cfg.model_id) != 0)
		log_debug("client", "unwatch failed");
	if (c->net)
		peer_net_close(c->net, net_closed, c);
	else
		uv_walk(&c->loop, close_walk, NULL);
}

int swarm_generate(const swarm_cfg_t *cfg, const int32_t *prompt, int n_prompt, int n_predict, swarm_result_t *res,
		   err_msg_t *e)
{
	memset(res, 0, sizeof(*res));
	struct client *c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(e, ERR_NOMEM, "out of memory");
	c->cfg = *cfg;
	c->prompt = prompt;
	c->n_prompt = n_prompt;
	c->n_predict = n_predict;
	int r = 0;
	uv_loop_init(&c->loop);
	uv_async_init(&c->loop, &c->async, on_async);
	c->async.data = c;
	uv_timer_init(&c->loop, &c->timer);
	c->timer.data = c;

	if ((r = ident_new(NULL, &c->id))) {
		err_set(e, r, "cannot create an identity");
		goto out;
	}
	sess_cfg_t sc;
	sess_cfg_default(&sc);
	sc.model = cfg->model;
	sc.pool = cfg->pool;
	memcpy(sc.model_id, cfg->model_id, WIRE_MODEL_ID_LEN);
	sc.enc = cfg->enc;
	sc.kv_type = cfg->kv_type;
	sc.timeout_ms = cfg->timeout_ms;
	sc.smp = cfg->smp;
	/* Each hop costs serialisation, syscalls and a scheduling round beyond
	 * its RTT and compute (measured ~1 ms per hop on loopback with the 1.1B
	 * model): with similar RTTs, fewer hops win. */
	route_cost_default(&sc.cost);
	sc.cost.hop_ms = 1.0;
	sc.cost.lambda = cfg->price_weight;
	sc.send = send_cb;
	sc.on_token = token_cb;
	sc.on_done = done_cb;
	sc.user = c;
	if ((r = sess_new(&sc, &c->sess, e)))
		goto out;
	peer_cfg_t pc;
	peer_cfg_default(&pc);
	pc.id = c->id;
	pc.network = cfg->network;
	pc.software = "colony/0.1.0 client";
	pc.caps = WIRE_CAP_CLIENT | WIRE_CAP_PROBE;
	pc.on_state = on_state;
	pc.on_msg = on_msg;
	pc.user = c;
	if ((r = peer_net_new(&c->loop, &pc, &c->net, e)))
		goto out;
	dht_node_cfg_t dc;
	dht_node_cfg_default(&dc);
	dc.network = dht_network_id(cfg->network);
	dc.node_id = ident_pub(c->id);
	dc.sign = sign_cb;      /* a client announces nothing, but the DHT node wants a signer */
	dc.sign_ud = c->id;
	if ((r = dht_node_new(&dc, &c->dht, e)))
		goto out;
	for (int i = 0; i < cfg->n_bootstrap; i++)
		if ((r = dht_node_bootstrap(c->dht, cfg->bootstrap[i], e)))
			goto out;
	if ((r = dht_node_watch(c->dht, cfg->model_id, on_change, c))) {
		err_set(e, r, "cannot watch the model's key");
		goto out;
	}
	c->t_start = uv_now(&c->loop);
	{
		/* a first lookup (blocking, short) so the view starts full */
		size_t cnt = 0;
		if (dht_node_lookup(c->dht, cfg->model_id, 1500, NULL, 0, &cnt) == 0)
			merge_view(c);
	}
	uv_timer_start(&c->timer, on_timer, 20, 20);
	double t0 = clock_sec();
	uv_run(&c->loop, UV_RUN_DEFAULT);
	r = c->rc;
	if (r)
		err_set(e, r, "%s", c->msg[0] ? c->msg : err_str(r));
	res->n_tokens = c->n_tokens;
	res->seconds_prompt = c->t_first > 0 ? c->t_first - t0 : 0;
	res->seconds_gen = c->t_first > 0 && c->t_end > c->t_first ? c->t_end - c->t_first : 0;
	sess_stats(c->sess, &res->stats);
	sess_hop_info_t hops[SESS_MAX_HOPS];
	int nh = sess_route(c->sess, hops, SESS_MAX_HOPS);
	size_t off = 0;
	for (int i = 0; i < nh && off < sizeof(res->route) - 64; i++) {
		char sid[IDENT_SHORT_STRLEN] = "?";
		if (hops[i].server >= 1 && hops[i].server <= (uint64_t)c->n_srv) {
			struct server *s = &c->srv[hops[i].server - 1];
			ident_id_short(s->rec.node_id, sid);
			char addr[64] = "";
			if (s->rec.n_addrs)
				ann_addr_str(&s->rec.addrs[0], addr, sizeof(addr));
			off += (size_t)snprintf(res->route + off, sizeof(res->route) - off, "%s[%d,%d) %.8s %s",
						i ? " -> " : "", hops[i].layer_a, hops[i].layer_b, sid, addr);
		}
	}
out:
	if (!c->closing) {
		c->closing = 1;
		if (c->net)
			peer_net_close(c->net, net_closed, c);
		else
			uv_walk(&c->loop, close_walk, NULL);
		uv_run(&c->loop, UV_RUN_DEFAULT);
	}
	if (uv_loop_close(&c->loop) != 0)
		log_debug("client", "loop closed with handles left");
	dht_node_free(c->dht);
	sess_free(c->sess);
	ident_free(c->id);
	free(c);
	return r;
}
