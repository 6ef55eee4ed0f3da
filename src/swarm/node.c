/* node.c - the node daemon (see node.h). */
#include "swarm/node.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/pool.h"
#include "infer/fwd.h"
#include "market/ledger.h"
#include "market/ledger_svc.h"
#include "market/settle_remote.h"
#include "market/vstore.h"
#include "market/wallet.h"
#include "dht/dht.h"
#include "model/gguf.h"
#include "model/manifest.h"
#include "model/model.h"
#include "net/ident.h"
#include "net/peer.h"
#include "swarm/shard.h"

#define NODE_MAX_KNOWN 1024
#define NODE_LOOKUP_MS 2000
#define NODE_LOOKUP_WAIT_MS 1500
#define NODE_PROBE_MS 15000
#define NODE_PROBE_BYTES (256u << 10)
#define NODE_DIAL_BACKOFF_MS 2000
#define NODE_SOFTWARE "colony/0.1.0"
#define NODE_SHARD_TICK_MS 1000
#define NODE_CAPACITY_ANNOUNCE_MS 5000   /* at most one capacity re-announce per period */
#define NODE_REDEEM_SCAN_MS 60000        /* stored vouchers not yet redeemed are retried this often */
#define NODE_REDEEM_RETRY_MS 1000        /* ... and after a failure sooner: 1 s, doubling up to the above */

struct known {
	ann_t rec;
	peer_conn_t *conn;     /* READY connection, or NULL */
	int dialing;
	uint64_t last_dial;
	double rtt_ms, thr_mbs;
};

struct node {
	node_cfg_t cfg;
	uv_loop_t loop;
	ident_t *id;
	gguf_t *gguf;
	model_t *model;
	int serving, watching;
	uint8_t model_id[ANN_MODELLEN];
	peer_net_t *net;
	int port;
	dht_node_t *dht;
	uv_pipe_t ctl;
	int ctl_open;
	char ctl_path[1024];
	uv_timer_t t_lookup, t_probe;
	uv_signal_t sigint, sigterm;
	uv_async_t async;
	uv_work_t work;
	int work_busy;
	ann_t *lookup_buf;
	size_t lookup_n;
	struct known *known;
	size_t n_known;
	int stopping;
	/* Shard server (serving nodes): steps run on a libuv worker. */
	shard_t *shard;
	pool_t *pool;
	uv_work_t step_work;
	int step_busy;
	uv_timer_t t_shard;
	ann_t ann;                  /* our announcement, re-sent when capacity changes */
	uint64_t ann_sent_ms;
	/* Ledger service (--ledger): requests run on libuv workers. */
	ledger_t *ledger;
	ledger_svc_t *lsvc;
	/* Paid sessions: the wallet paid into, and the ledger client that
	 * redeems vouchers (created on first use, on a worker thread). */
	wallet_t *wallet;
	settle_remote_t *settle;
	pthread_mutex_t settle_mu;  /* its creation: redeems and channel checks run on workers */
	/* Channel checks (shard verify hook): one on a worker at a time, the
	 * rest wait here, so a slow ledger holds one worker, not the pool the
	 * shard's steps run on. */
	struct verify_job *vq_head, *vq_tail;
	int verify_busy;
	/* Every accepted voucher is stored (vstore.h) before its credit is
	 * served; the loop redeems what is stored and not yet confirmed at
	 * start, every NODE_REDEEM_SCAN_MS, and sooner after a failure. Only the
	 * loop thread (or, after the loop, the main thread) touches vs. */
	vstore_t *vs;
	uv_timer_t t_redeem;
	int scan_jobs;              /* redeems of the current scan still on workers */
	int redeem_failed;          /* a redeem failed (ledger unreachable) since the last scan began */
	uint64_t next_scan_ms, retry_ms;
	char ledger_host[256];
	int ledger_port;
	int64_t earned;             /* micro-units redeemed for paid sessions (atomic: redeemed
	                               on the loop, or inline at shutdown) */
	int loop_done;              /* uv_run has returned: no more workers */
};

/* One redeem, on a libuv worker (settle_remote blocks). */
struct redeem_job {
	uv_work_t w;
	struct node *n;
	voucher_t v;
	int rc;
	amount_t paid;
	err_msg_t e;
	int from_scan;
};

void node_cfg_default(node_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->network = "colony";
	c->listen_host = "127.0.0.1";
}

static int same_id(const uint8_t *a, const uint8_t *b) { return memcmp(a, b, ANN_IDLEN) == 0; }

static struct known *find_known(struct node *n, const uint8_t *id)
{
	for (size_t i = 0; i < n->n_known; i++)
		if (same_id(n->known[i].rec.node_id, id))
			return &n->known[i];
	return NULL;
}

static void addr_host(const ann_addr_t *a, char *host, size_t cap)
{
	inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->ip, host, (socklen_t)cap);
}

static void dial(struct node *n, struct known *k)
{
	uint64_t now = uv_now(&n->loop);
	if (k->conn || k->dialing || now - k->last_dial < NODE_DIAL_BACKOFF_MS || k->rec.n_addrs == 0)
		return;
	char host[64];
	addr_host(&k->rec.addrs[0], host, sizeof(host));
	err_msg_t e;
	k->last_dial = now;
	if (peer_net_connect(n->net, host, k->rec.addrs[0].port, k->rec.node_id, NULL, &e) == 0)
		k->dialing = 1;
	else
		log_debug("node", "dial %s:%u: %s", host, k->rec.addrs[0].port, e.msg);
}

/* Replaces the known table with a view from the DHT (our own record left out). */
static void merge_view(struct node *n, const ann_t *view, size_t cnt)
{
	struct known *nk = calloc(NODE_MAX_KNOWN, sizeof(*nk));
	if (!nk)
		return;
	size_t m = 0;
	for (size_t i = 0; i < cnt && m < NODE_MAX_KNOWN; i++) {
		if (same_id(view[i].node_id, ident_pub(n->id)))
			continue;
		struct known *old = find_known(n, view[i].node_id);
		if (old) {
			nk[m] = *old;
			old->conn = NULL;   /* moved */
		} else {
			nk[m].rtt_ms = -1;
			nk[m].thr_mbs = -1;
		}
		nk[m].rec = view[i];
		m++;
	}
	/* Peers that left the view (tombstoned or stale): drop their connection. */
	for (size_t i = 0; i < n->n_known; i++)
		if (n->known[i].conn)
			peer_close(n->known[i].conn, "peer no longer announced");
	free(n->known);
	n->known = nk;
	n->n_known = m;
	for (size_t i = 0; i < n->n_known; i++)
		dial(n, &n->known[i]);
}

static void refresh_from_view(struct node *n)
{
	if (!n->watching || n->stopping)
		return;
	size_t cnt = 0;
	ann_t *buf = malloc(sizeof(ann_t) * NODE_MAX_KNOWN);
	if (!buf)
		return;
	if (dht_node_peers(n->dht, n->model_id, buf, NODE_MAX_KNOWN, &cnt) == 0)
		merge_view(n, buf, cnt < NODE_MAX_KNOWN ? cnt : NODE_MAX_KNOWN);
	free(buf);
}

/* ---- DHT: lookups on a worker thread, watch notifications through async */

static void lookup_work(uv_work_t *w)
{
	struct node *n = w->data;
	size_t cnt = 0;
	if (dht_node_lookup(n->dht, n->model_id, NODE_LOOKUP_WAIT_MS, n->lookup_buf, NODE_MAX_KNOWN, &cnt) != 0)
		cnt = 0;
	n->lookup_n = cnt < NODE_MAX_KNOWN ? cnt : NODE_MAX_KNOWN;
}

static void lookup_done(uv_work_t *w, int status)
{
	struct node *n = w->data;
	n->work_busy = 0;
	if (status == 0 && !n->stopping)
		merge_view(n, n->lookup_buf, n->lookup_n);
}

static void on_lookup_timer(uv_timer_t *t)
{
	struct node *n = t->data;
	if (n->work_busy || n->stopping || !n->watching)
		return;
	n->work_busy = 1;
	n->work.data = n;
	if (uv_queue_work(&n->loop, &n->work, lookup_work, lookup_done) != 0)
		n->work_busy = 0;
}

static void on_dht_change(void *ud, const uint8_t model_id[ANN_MODELLEN])
{
	struct node *n = ud;
	uv_async_send(&n->async);   /* the only thing safe to do from the DHT's thread */
}

static void on_async(uv_async_t *a)
{
	refresh_from_view(a->data);
}

/* ---- peers */

static void on_peer_state(peer_conn_t *c, enum peer_state st, const char *why, void *user)
{
	struct node *n = user;
	const uint8_t *pid = peer_conn_id(c);
	if (st == PEER_READY && pid) {
		struct known *k = find_known(n, pid);
		if (k) {
			k->dialing = 0;
			if (!k->conn) {
				k->conn = c;
			} else if (k->conn != c) {
				/* Both sides dialed: keep the connection whose initiator has
				 * the smaller node id. Both ends apply the same rule, so they
				 * close the same one. */
				peer_stats_t s_old, s_new;
				peer_conn_stats(k->conn, &s_old);
				peer_conn_stats(c, &s_new);
				if (s_old.inbound != s_new.inbound) {
					int me_smaller = memcmp(ident_pub(n->id), pid, IDENT_PUBLEN) < 0;
					/* the new one was initiated by me iff it is outbound */
					int keep_new = s_new.inbound ? !me_smaller : me_smaller;
					peer_conn_t *drop = keep_new ? k->conn : c;
					if (keep_new)
						k->conn = c;
					peer_close(drop, "duplicate connection");
					if (drop == c)
						return;
				}
			}
		}
		peer_conn_set_user(c, NULL);
		if (peer_probe(c, NODE_PROBE_BYTES) != 0)
			log_debug("node", "probe not sent");
		return;
	}
	if (st == PEER_CLOSED) {
		if (n->shard)
			shard_drop_client(n->shard, c);   /* its sessions die with it */
		ledger_svc_conn_closed(n->lsvc, c);
		for (size_t i = 0; i < n->n_known; i++) {
			struct known *k = &n->known[i];
			if (k->conn == c) {
				peer_stats_t s;
				peer_conn_stats(c, &s);
				k->rtt_ms = s.rtt_ms;
				k->thr_mbs = s.throughput_mbs;
				k->conn = NULL;
			}
			if (k->dialing && !k->conn && (!pid || same_id(pid, k->rec.node_id)))
				k->dialing = 0;
		}
	}
}

static void shard_kick(struct node *n);

static void on_peer_msg(peer_conn_t *c, const wire_msg_t *m, void *user)
{
	struct node *n = user;
	if (m->type == WIRE_LEDGER_REQ) {
		if (n->lsvc) {
			ledger_svc_handle(n->lsvc, c, m);
		} else {
			wire_msg_t r;
			memset(&r, 0, sizeof(r));
			r.type = WIRE_LEDGER_RESP;
			r.u.lresp.req_id = m->u.lreq.req_id;
			r.u.lresp.op = m->u.lreq.op;
			r.u.lresp.status = (uint16_t)-ERR_UNSUPPORTED;
			snprintf(r.u.lresp.msg, sizeof(r.u.lresp.msg), "this node runs no ledger (colony node --ledger)");
			err_msg_t e;
			if (peer_send(c, &r, &e) != 0)
				log_debug("node", "reply failed: %s", e.msg);
		}
		return;
	}
	if (n->shard && (m->type == WIRE_OPEN_SESSION || m->type == WIRE_FORWARD || m->type == WIRE_CLOSE_SESSION ||
			 m->type == WIRE_PAY_TERMS_REQ || m->type == WIRE_PAY_OPEN || m->type == WIRE_VOUCHER)) {
		if (shard_handle(n->shard, c, m) == 0)
			shard_kick(n);
		return;
	}
	/* A node that serves no layers refuses sessions. */
	if (m->type == WIRE_OPEN_SESSION) {
		wire_msg_t r;
		memset(&r, 0, sizeof(r));
		r.type = WIRE_OPEN_ERR;
		r.u.error.session_id = m->u.open.session_id;
		r.u.error.code = WIRE_E_UNSUPPORTED;
		snprintf(r.u.error.msg, sizeof(r.u.error.msg), "this node serves no layers");
		err_msg_t e;
		if (peer_send(c, &r, &e) != 0)
			log_debug("node", "reply failed: %s", e.msg);
	}
}

/* ---- shard server: messages on the loop, steps on a libuv worker thread
 * (shard.h's threading contract: begin and end here, run on the worker). */

static void shard_reply(void *user, void *client, const wire_msg_t *m)
{
	struct node *n = user;
	err_msg_t e;
	if (n->stopping)
		return;
	if (peer_send(client, m, &e) != 0)
		log_debug("node", "shard reply %s not sent: %s", wire_type_name(m->type), e.msg);
}

/* The ledger client, connected on first use (on a worker: it blocks). */
static int node_settle(struct node *n, settle_t *st, err_msg_t *e)
{
	int r = 0;
	pthread_mutex_lock(&n->settle_mu);
	if (!n->settle) {
		settle_remote_cfg_t rc;
		settle_remote_cfg_default(&rc);
		rc.host = n->ledger_host;
		rc.port = n->ledger_port;
		rc.network = n->cfg.network;
		rc.wallet = n->wallet;
		r = settle_remote_new(&rc, &n->settle, e);
	}
	if (r == 0)
		*st = settle_remote_settle(n->settle);
	pthread_mutex_unlock(&n->settle_mu);
	return r;
}

static void redeem_run(struct redeem_job *j)
{
	struct node *n = j->n;
	settle_t st;
	if ((j->rc = node_settle(n, &st, &j->e)))
		return;
	j->rc = settle_redeem(&st, &j->v, 0, &j->paid, &j->e);
	/* A connection the ledger closed while idle fails the first call after
	 * it (the next dials again); a redeem is safe to repeat. */
	if (j->rc == ERR_IO)
		j->rc = settle_redeem(&st, &j->v, 0, &j->paid, &j->e);
}

static void redeem_log(struct redeem_job *j)
{
	char ch[WALLET_ADDR_STRLEN];
	wallet_addr_str(j->v.channel, ch);
	if (j->rc)
		log_warn("node", "redeem of channel %.16s (seq %llu) failed: %s", ch, (unsigned long long)j->v.seq,
			 j->e.msg);
	else {
		__atomic_add_fetch(&j->n->earned, j->paid, __ATOMIC_RELAXED);
		log_info("node", "paid session settled: channel %.16s seq %llu amount %lld, redeemed %lld (in %llu out %llu)",
			 ch, (unsigned long long)j->v.seq, (long long)j->v.amount, (long long)j->paid,
			 (unsigned long long)j->v.in_tokens, (unsigned long long)j->v.out_tokens);
	}
}

/* A refusal that a retry cannot change: the channel is closed, expired or
 * unknown, or the voucher is not the buyer's. Anything else (the ledger
 * unreachable, a lost reply) is retried; the ledger pays a (channel,
 * sequence) once, so a retry never pays twice. */
static int redeem_final(int rc)
{
	return (rc <= VOUCHER_E_FORGED && rc >= VOUCHER_E_MIN) || rc == ERR_NOTFOUND;
}

/* Loop thread (or after the loop): what the ledger said goes into the store. */
static void redeem_record(struct redeem_job *j)
{
	struct node *n = j->n;
	err_msg_t e;
	int64_t now = (int64_t)time(NULL);
	int r = 0;
	if (n->vs && j->rc == 0)
		r = vstore_redeemed(n->vs, &j->v, now, &e);
	else if (n->vs && redeem_final(j->rc))
		r = vstore_refused(n->vs, &j->v, j->rc, j->e.msg, now, &e);
	if (r)
		log_warn("node", "voucher store: %s", e.msg);
	if (j->rc && !redeem_final(j->rc) && !n->loop_done) {
		/* Try again soon (the delay doubles while scans keep failing). */
		uint64_t at = uv_now(&n->loop) + n->retry_ms;
		if (at < n->next_scan_ms)
			n->next_scan_ms = at;
		n->redeem_failed = 1;
	}
}

static void redeem_work(uv_work_t *w) { redeem_run(w->data); }

static void redeem_done(uv_work_t *w, int status)
{
	struct redeem_job *j = w->data;
	(void)status;
	redeem_log(j);
	redeem_record(j);
	if (j->from_scan)
		j->n->scan_jobs--;
	free(j);
}

/* A paid session ended with a voucher: cash it without blocking the loop. */
static void shard_settle(void *user, const voucher_t *v)
{
	struct node *n = user;
	if (!n->ledger_port) {
		log_info("node", "paid session ended (amount %lld): no --ledger-peer to redeem at", (long long)v->amount);
		return;
	}
	struct redeem_job *j = calloc(1, sizeof(*j));
	if (!j) {
		log_warn("node", "out of memory: voucher not redeemed");
		return;
	}
	j->n = n;
	j->v = *v;
	j->w.data = j;
	/* After the loop has ended (shutdown) there is no worker: redeem here. */
	if (n->loop_done || uv_queue_work(&n->loop, &j->w, redeem_work, redeem_done) != 0) {
		redeem_run(j);
		redeem_log(j);
		redeem_record(j);
		free(j);
	}
}

/* shard.h on_voucher: the voucher is on disk before its credit is served. */
static int shard_voucher(void *user, const voucher_t *v)
{
	struct node *n = user;
	err_msg_t e;
	int r = vstore_put(n->vs, v, (int64_t)time(NULL), &e);
	if (r)
		log_warn("node", "voucher not stored, its session ends: %s", e.msg);
	return r;
}

/* Queues a redeem of a stored voucher the ledger has not confirmed (after a
 * crash of this node, of the ledger, or a lost reply). */
static int scan_one(void *ud, const vstore_entry_t *en)
{
	struct node *n = ud;
	if (!vstore_entry_pending(en))
		return 0;
	struct redeem_job *j = calloc(1, sizeof(*j));
	if (!j)
		return ERR_NOMEM;
	j->n = n;
	j->v = en->best;
	j->from_scan = 1;
	j->w.data = j;
	if (uv_queue_work(&n->loop, &j->w, redeem_work, redeem_done) != 0) {
		free(j);
		return ERR_IO;
	}
	n->scan_jobs++;
	return 0;
}

static void on_redeem_timer(uv_timer_t *t)
{
	struct node *n = t->data;
	uint64_t now = uv_now(&n->loop);
	if (n->stopping || n->scan_jobs > 0 || now < n->next_scan_ms)
		return;
	n->next_scan_ms = now + NODE_REDEEM_SCAN_MS;
	n->retry_ms = !n->redeem_failed ? NODE_REDEEM_RETRY_MS
		: n->retry_ms * 2 > NODE_REDEEM_SCAN_MS ? NODE_REDEEM_SCAN_MS : n->retry_ms * 2;
	n->redeem_failed = 0;
	err_msg_t e;
	size_t bad = 0;
	int r = vstore_foreach(n->vs, scan_one, n, &bad, &e);
	if (r)
		log_warn("node", "redeem of stored vouchers: %s", r == ERR_NOMEM ? "out of memory" : e.msg);
	if (bad)
		log_warn("node", "voucher store: %zu malformed rows skipped", bad);
	if (n->scan_jobs)
		log_info("node", "redeeming %d stored voucher%s", n->scan_jobs, n->scan_jobs == 1 ? "" : "s");
}

/* One channel check before a paid session is served, on a worker. */
struct verify_job {
	uv_work_t w;
	struct verify_job *next;
	struct node *n;
	uint64_t ticket;
	uint8_t id[MARKET_IDLEN];
	int rc;
	settle_channel_t ch;
	err_msg_t e;
};

static void verify_work(uv_work_t *w)
{
	struct verify_job *j = w->data;
	settle_t st;
	if ((j->rc = node_settle(j->n, &st, &j->e)) != 0)
		return;
	j->rc = settle_channel(&st, j->id, &j->ch, &j->e);
	/* The ledger closes idle connections: the first call after a quiet
	 * spell finds it gone and settle_remote dials again on the next. A
	 * channel read is safe to repeat. */
	if (j->rc == ERR_IO)
		j->rc = settle_channel(&st, j->id, &j->ch, &j->e);
}

static void verify_done(uv_work_t *w, int status);

/* Starts the next waiting check if none runs. */
static void verify_next(struct node *n)
{
	while (!n->verify_busy && n->vq_head && !n->stopping) {
		struct verify_job *j = n->vq_head;
		n->vq_head = j->next;
		if (!n->vq_head)
			n->vq_tail = NULL;
		if (uv_queue_work(&n->loop, &j->w, verify_work, verify_done) == 0) {
			n->verify_busy = 1;
			return;
		}
		if (n->shard)
			shard_pay_verified(n->shard, j->ticket, ERR_IO, NULL, "cannot queue the check");
		free(j);
	}
}

static void verify_done(uv_work_t *w, int status)
{
	struct verify_job *j = w->data;
	struct node *n = j->n;
	n->verify_busy = 0;
	if (status != 0 && j->rc == 0)
		j->rc = err_set(&j->e, ERR_IO, "cancelled");
	if (j->rc && j->rc != ERR_NOTFOUND)
		log_warn("node", "channel check failed: %s", j->e.msg);
	if (n->shard && !n->stopping) {
		shard_pay_verified(n->shard, j->ticket, j->rc, j->rc ? NULL : &j->ch, j->e.msg);
		shard_kick(n);
	}
	free(j);
	verify_next(n);
}

/* shard verify hook: ask the ledger for the channel a PAY_OPEN names. */
static void shard_verify(void *user, uint64_t ticket, const uint8_t channel[MARKET_IDLEN])
{
	struct node *n = user;
	struct verify_job *j = calloc(1, sizeof(*j));
	if (!j) {
		shard_pay_verified(n->shard, ticket, ERR_NOMEM, NULL, "out of memory");
		return;
	}
	j->n = n;
	j->ticket = ticket;
	memcpy(j->id, channel, MARKET_IDLEN);
	j->w.data = j;
	if (n->loop_done || n->stopping) {
		free(j);
		shard_pay_verified(n->shard, ticket, ERR_IO, NULL, "the node is stopping");
		return;
	}
	if (n->vq_tail)
		n->vq_tail->next = j;
	else
		n->vq_head = j;
	n->vq_tail = j;
	verify_next(n);
}

static void step_work(uv_work_t *w)
{
	struct node *n = w->data;
	shard_step_run(n->shard);
}

static void step_done(uv_work_t *w, int status)
{
	struct node *n = w->data;
	n->step_busy = 0;
	shard_step_end(n->shard);
	shard_kick(n);
	/* Nothing else to compute: the next step waits on the network, so the
	 * compute threads sleep now rather than spin on CPUs that the other
	 * processes of a machine (a chain's next hop, the client) need. */
	if (!n->step_busy)
		pool_rest(n->pool);
}

static void shard_kick(struct node *n)
{
	if (n->step_busy || n->stopping || !shard_step_begin(n->shard))
		return;
	n->step_busy = 1;
	n->step_work.data = n;
	if (uv_queue_work(&n->loop, &n->step_work, step_work, step_done) != 0) {
		/* No worker: compute here rather than drop the batch. */
		n->step_busy = 0;
		shard_step_run(n->shard);
		shard_step_end(n->shard);
	}
}

static void on_shard_timer(uv_timer_t *t)
{
	struct node *n = t->data;
	uint64_t now = uv_now(&n->loop);
	shard_tick(n->shard, now);
	uint32_t fs;
	uint64_t fk;
	shard_free_capacity(n->shard, &fs, &fk);
	if ((fs != n->ann.free_sessions || fk != n->ann.free_kv_bytes) &&
	    now - n->ann_sent_ms >= NODE_CAPACITY_ANNOUNCE_MS && !n->stopping) {
		err_msg_t e;
		n->ann.free_sessions = fs;
		n->ann.free_kv_bytes = fk;
		n->ann_sent_ms = now;
		if (dht_node_announce(n->dht, &n->ann, &e) != 0)
			log_debug("node", "capacity re-announce failed: %s", e.msg);
	}
}

static void probe_one(peer_conn_t *c, void *arg)
{
	if (peer_conn_state(c) == PEER_READY && peer_probe(c, NODE_PROBE_BYTES) != 0)
		log_debug("node", "probe not sent");
}

static void on_probe_timer(uv_timer_t *t)
{
	struct node *n = t->data;
	peer_net_foreach(n->net, probe_one, NULL);
	for (size_t i = 0; i < n->n_known; i++)
		dial(n, &n->known[i]);
}

/* ---- control socket */

struct ctl_client {
	uv_pipe_t pipe;
	struct node *n;
	char in[256];
	size_t n_in;
	char *out;
	size_t n_out, cap_out;
	int answered;
};

static void out_printf(struct ctl_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(struct ctl_client *c, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		size_t room = c->cap_out - c->n_out;
		va_start(ap, fmt);
		int k = vsnprintf(c->out ? c->out + c->n_out : NULL, c->out ? room : 0, fmt, ap);
		va_end(ap);
		if (k < 0)
			return;
		if ((size_t)k < room) {
			c->n_out += (size_t)k;
			return;
		}
		size_t nc = (c->cap_out + (size_t)k + 1) * 2;
		char *p = realloc(c->out, nc);
		if (!p)
			return;
		c->out = p;
		c->cap_out = nc;
	}
}

static void ctl_closed(uv_handle_t *h)
{
	struct ctl_client *c = h->data;
	free(c->out);
	free(c);
}

static void ctl_written(uv_write_t *w, int status)
{
	struct ctl_client *c = w->data;
	free(w);
	uv_close((uv_handle_t *)&c->pipe, ctl_closed);
}

static void ctl_answer(struct ctl_client *c)
{
	struct node *n = c->n;
	char hex[65], sid[IDENT_SHORT_STRLEN];
	uint64_t now = dht_now_ms();
	c->answered = 1;
	if (!strncmp(c->in, "peers", 5)) {
		for (size_t i = 0; i < n->n_known; i++) {
			struct known *k = &n->known[i];
			double rtt = k->rtt_ms, thr = k->thr_mbs;
			if (k->conn) {
				peer_stats_t s;
				peer_conn_stats(k->conn, &s);
				rtt = s.rtt_ms;
				thr = s.throughput_mbs;
			}
			char addr[64] = "";
			if (k->rec.n_addrs)
				ann_addr_str(&k->rec.addrs[0], addr, sizeof(addr));
			char mid[65];
			out_printf(c,
				"{\"id\":\"%s\",\"short\":\"%s\",\"addr\":\"%s\",\"model\":\"%s\",\"layers\":[%u,%u],"
				"\"price\":%llu,\"seq\":%llu,\"age_ms\":%lld,\"connected\":%s,\"rtt_ms\":%.3f,"
				"\"throughput_mbs\":%.2f,\"free_sessions\":%u,\"tokens_per_s\":%.1f,\"version\":\"%s\"}\n",
				ident_id_full(k->rec.node_id, hex), ident_id_short(k->rec.node_id, sid), addr,
				manifest_id_hex(k->rec.model_id, mid), k->rec.layer_a, k->rec.layer_b,
				(unsigned long long)k->rec.price, (unsigned long long)k->rec.seq,
				(long long)now - (long long)k->rec.timestamp_ms, k->conn ? "true" : "false", rtt, thr,
				k->rec.free_sessions, k->rec.throughput_milli / 1000.0, k->rec.sw_version);
		}
	} else if (!strncmp(c->in, "status", 6)) {
		char mid[65] = "";
		if (n->watching)
			manifest_id_hex(n->model_id, mid);
		shard_stats_t ss;
		memset(&ss, 0, sizeof(ss));
		if (n->shard)
			shard_stats(n->shard, &ss);
		out_printf(c,
			"{\"id\":\"%s\",\"short\":\"%s\",\"network\":\"%s\",\"port\":%d,\"dht_port\":%u,"
			"\"model\":\"%s\",\"serving\":%s,\"layers\":[%d,%d],\"known_peers\":%zu,\"connections\":%d,"
			"\"sessions\":%d,\"kv_used\":%llu,\"steps\":%llu,\"rows\":%llu,\"max_batch\":%llu,"
			"\"batched_steps\":%llu,\"tok_steps\":%llu,\"tok_ms\":%.3f,\"earned\":%lld,\"spent\":%lld}\n",
			ident_id_full(ident_pub(n->id), hex), ident_id_short(ident_pub(n->id), sid), n->cfg.network,
			n->port, dht_node_port(n->dht), mid, n->serving ? "true" : "false", n->cfg.layer_a,
			n->cfg.layer_b, n->n_known, peer_net_count(n->net), ss.sessions, (unsigned long long)ss.kv_used,
			(unsigned long long)ss.steps, (unsigned long long)ss.rows, (unsigned long long)ss.max_batch,
			(unsigned long long)ss.batched_steps, (unsigned long long)ss.tok_steps,
			ss.tok_steps ? (double)ss.tok_ns / (double)ss.tok_steps * 1e-6 : 0.0,
			(long long)__atomic_load_n(&n->earned, __ATOMIC_RELAXED),
			(long long)(n->cfg.spent ? n->cfg.spent(n->cfg.hook_ud) : 0));
	} else {
		out_printf(c, "{\"error\":\"unknown command (peers, status)\"}\n");
	}
	out_printf(c, ".\n");
	uv_write_t *w = malloc(sizeof(*w));
	if (!w || !c->out) {
		free(w);
		uv_close((uv_handle_t *)&c->pipe, ctl_closed);
		return;
	}
	w->data = c;
	uv_buf_t b = uv_buf_init(c->out, (unsigned)c->n_out);
	if (uv_write(w, (uv_stream_t *)&c->pipe, &b, 1, ctl_written) != 0) {
		free(w);
		uv_close((uv_handle_t *)&c->pipe, ctl_closed);
	}
}

static void ctl_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
	struct ctl_client *c = h->data;
	*b = uv_buf_init(c->in + c->n_in, (unsigned)(sizeof(c->in) - 1 - c->n_in));
}

static void ctl_read(uv_stream_t *s, ssize_t nr, const uv_buf_t *b)
{
	struct ctl_client *c = s->data;
	if (c->answered)
		return;
	if (nr < 0 || (nr == 0 && c->n_in >= sizeof(c->in) - 1)) {
		uv_close((uv_handle_t *)&c->pipe, ctl_closed);
		return;
	}
	c->n_in += (size_t)nr;
	c->in[c->n_in] = 0;
	if (strchr(c->in, '\n') || c->n_in >= sizeof(c->in) - 1) {
		uv_read_stop(s);
		ctl_answer(c);
	}
}

static void on_ctl_conn(uv_stream_t *srv, int status)
{
	struct node *n = srv->data;
	if (status < 0)
		return;
	struct ctl_client *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->n = n;
	uv_pipe_init(&n->loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(srv, (uv_stream_t *)&c->pipe) != 0 ||
	    uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_read) != 0)
		uv_close((uv_handle_t *)&c->pipe, ctl_closed);
}

/* ---- start and stop */

/* Tokens/s of one session through the served layers, measured once at start
 * (a few single-token steps after a warm-up) and announced, so clients route
 * on this node's real compute time rather than a default. 0 if it fails. */
static uint32_t measure_throughput_milli(struct node *n)
{
	const model_t *m = n->model;
	int d = m->hp.n_embd, steps = 6;
	fwd_ctx_t *fc = NULL;
	fwd_state_t *st = NULL;
	float *x = malloc(sizeof(float) * (size_t)d);
	uint32_t out = 0;
	err_msg_t e;
	if (!x || fwd_ctx_new(n->pool, &fc) || fwd_state_new(m, n->cfg.layer_a, n->cfg.layer_b, steps + 2, FWD_KV_F32, &st))
		goto done;
	for (int i = 0; i < d; i++)
		x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
	fwd_seg_t seg = { st, 1 };
	if (fwd_forward(fc, m, &seg, 1, x, &e))   /* warm-up: first touch of the weights */
		goto done;
	double t0 = clock_sec();
	for (int i = 0; i < steps; i++)
		if (fwd_forward(fc, m, &seg, 1, x, &e))
			goto done;
	double per = (clock_sec() - t0) / steps;
	double milli = per > 0 ? 1000.0 / per : 0;
	out = milli > 4e9 ? 4000000000u : (uint32_t)milli;
done:
	fwd_state_free(st);
	fwd_ctx_free(fc);
	free(x);
	return out;
}

static void sign_cb(void *ud, const void *msg, size_t len, uint8_t sig[ANN_SIGLEN])
{
	ident_sign(ud, msg, len, sig);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void net_closed(void *arg)
{
	struct node *n = arg;
	n->net = NULL;
	uv_walk(&n->loop, close_walk, NULL);
}

static void begin_stop(struct node *n, const char *why)
{
	if (n->stopping)
		return;
	n->stopping = 1;
	log_info("node", "%s: shutting down", why);
	err_msg_t e = { { 0 } };
	if (n->dht) {
		if (n->watching && dht_node_unwatch(n->dht, n->model_id) != 0)
			log_debug("node", "unwatch failed");
		if (dht_node_shutdown(n->dht, 2000, &e) != 0)
			log_warn("node", "tombstone not confirmed: %s", e.msg);
	}
	if (n->ctl_open)
		unlink(n->ctl_path);
	ledger_svc_stop(n->lsvc);
	peer_net_close(n->net, net_closed, n);
}

static void on_signal(uv_signal_t *s, int signum)
{
	begin_stop(s->data, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static int start(struct node *n, err_msg_t *e)
{
	const node_cfg_t *cfg = &n->cfg;
	int created = 0, r;
	if ((r = ident_load_or_create(cfg->home, &n->id, &created, e)))
		return err_prefix(e, r, "identity in %s", cfg->home);
	char sid[IDENT_SHORT_STRLEN];
	log_info("node", "node %s (%s identity in %s)", ident_id_short(ident_pub(n->id), sid),
		 created ? "new" : "existing", cfg->home);

	if (cfg->model_path) {
		if ((r = gguf_open(cfg->model_path, &n->gguf, e)))
			return err_prefix(e, r, "%s", cfg->model_path);
		model_hparams_t hp;
		model_t *whole = NULL;
		if ((r = model_load_range(n->gguf, 0, 0, 0, &whole, e)))
			return err_prefix(e, r, "%s", cfg->model_path);
		hp = whole->hp;
		model_free(whole);
		if (n->cfg.layer_b == 0)
			n->cfg.layer_b = hp.n_layer;
		if (n->cfg.layer_a < 0 || n->cfg.layer_a >= n->cfg.layer_b || n->cfg.layer_b > hp.n_layer)
			return err_set(e, ERR_RANGE, "--layers %d:%d is outside the model's %d layers", n->cfg.layer_a,
				       n->cfg.layer_b, hp.n_layer);
		if ((r = model_load_range(n->gguf, n->cfg.layer_a, n->cfg.layer_b, 0, &n->model, e)))
			return err_prefix(e, r, "%s", cfg->model_path);
		/* Only the served layers, in huge pages: faster, and a shard holds
		 * no more of the model than it serves. */
		if (model_pin(n->model, e) != 0)
			log_warn("node", "weights stay mapped from the file: %s", e->msg);
		if ((r = manifest_model_id(n->gguf, NULL, n->model_id, e)))
			return r;
		if (n->model->pinned)
			gguf_drop_pages(n->gguf);   /* hashing read the whole file; the copy is what we use */
		n->serving = n->watching = 1;
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		n->pool = pool_new(ncpu < 1 ? 1 : ncpu > 16 ? 16 : (int)ncpu);
		shard_cfg_t sc;
		shard_cfg_default(&sc);
		sc.model = n->model;
		sc.layer_a = n->cfg.layer_a;
		sc.layer_b = n->cfg.layer_b;
		memcpy(sc.model_id, n->model_id, WIRE_MODEL_ID_LEN);
		if (cfg->kv_mem)
			sc.kv_mem = cfg->kv_mem;
		sc.pool = n->pool;
		sc.reply = shard_reply;
		sc.user = n;
		if (cfg->price_in || cfg->price_out || cfg->require_payment || cfg->ledger_peer) {
			const char *wh = cfg->wallet_home ? cfg->wallet_home : cfg->home;
			if ((r = wallet_load_or_create(wh, &n->wallet, NULL, e)))
				return err_prefix(e, r, "wallet in %s", wh);
			if (cfg->ledger_peer) {
				const char *colon = strrchr(cfg->ledger_peer, ':');
				size_t hl = colon ? (size_t)(colon - cfg->ledger_peer) : 0;
				n->ledger_port = colon ? atoi(colon + 1) : 0;
				if (!colon || hl == 0 || hl >= sizeof(n->ledger_host) || n->ledger_port <= 0 || n->ledger_port > 65535)
					return err_set(e, ERR_INVAL, "--ledger-peer %s: expected HOST:PORT", cfg->ledger_peer);
				memcpy(n->ledger_host, cfg->ledger_peer, hl);
				n->ledger_host[hl] = 0;
			}
			sc.pay.wallet = n->wallet;
			sc.pay.price_in = cfg->price_in;
			sc.pay.price_out = cfg->price_out;
			sc.pay.chunk = cfg->pay_chunk;
			sc.pay.require_payment = cfg->require_payment;
			sc.pay.on_settle = shard_settle;
			if ((r = vstore_open(wh, &n->vs, e)))
				return r;
			sc.pay.on_voucher = shard_voucher;
			if (n->ledger_port)
				sc.pay.verify = shard_verify;
			else
				log_warn("node", "paid sessions without --ledger-peer: channels are not verified (the "
					 "budget and expiry a buyer claims are trusted) and vouchers are not redeemed");
			char addr[WALLET_ADDR_STRLEN];
			log_info("node", "paid sessions: wallet %s, in %lld out %lld per 1M tokens, chunk %u%s",
				 wallet_addr_str(wallet_pub(n->wallet), addr), (long long)cfg->price_in,
				 (long long)cfg->price_out, cfg->pay_chunk ? cfg->pay_chunk : SHARD_DEFAULT_PAY_CHUNK,
				 cfg->require_payment ? ", required" : "");
		}
		if (!n->pool)
			return err_set(e, ERR_NOMEM, "cannot start the compute threads");
		if ((r = shard_new(&sc, &n->shard, e)))
			return r;
		/* The shard's clock is ours: set it before any session is stamped,
		 * or sessions opened before the first tick look idle for ever. */
		uv_update_time(&n->loop);
		shard_tick(n->shard, uv_now(&n->loop));
		if (n->vs && n->ledger_port) {
			/* The first scan runs as the loop starts: what a crash left unredeemed. */
			n->retry_ms = NODE_REDEEM_RETRY_MS;
			uv_timer_init(&n->loop, &n->t_redeem);
			n->t_redeem.data = n;
			uv_timer_start(&n->t_redeem, on_redeem_timer, 0, 250);
		}
		char mid[65];
		log_info("node", "serving layers [%d, %d) of %s (model %s)", n->cfg.layer_a, n->cfg.layer_b,
			 cfg->model_path, manifest_id_hex(n->model_id, mid));
	} else if (cfg->watch_model) {
		if (manifest_id_parse(cfg->watch_model, n->model_id) != 0)
			return err_set(e, ERR_INVAL, "--watch expects a 64-digit hex model id");
		n->watching = 1;
	}

	if (cfg->ledger_db) {
		ledger_svc_cfg_t lc;
		memset(&lc, 0, sizeof(lc));
		memcpy(lc.ledger_id, ident_pub(n->id), WALLET_PUBLEN);
		if (cfg->ledger_operator) {
			if ((r = wallet_addr_parse(cfg->ledger_operator, lc.operator_addr, e)))
				return err_prefix(e, r, "--ledger-operator");
			lc.has_operator = 1;
		}
		ledger_opts_t lo;
		ledger_opts_default(&lo);
		if (cfg->ledger_window > 0)
			lo.window = cfg->ledger_window;
		if ((r = ledger_open(cfg->ledger_db, &lo, &n->ledger, e)))
			return r;
		lc.ledger = n->ledger;
		if ((r = ledger_svc_new(&n->loop, &lc, &n->lsvc, e)))
			return r;
		log_info("node", "ledger service on %s (%s)", cfg->ledger_db,
			 lc.has_operator ? "deposits by the operator wallet" : "no operator: no deposits");
	}

	peer_cfg_t pc;
	peer_cfg_default(&pc);
	pc.id = n->id;
	pc.network = cfg->network;
	pc.software = NODE_SOFTWARE;
	pc.caps = WIRE_CAP_PROBE | (n->serving ? WIRE_CAP_SHARD : 0) | (n->lsvc ? WIRE_CAP_LEDGER : 0);
	pc.on_state = on_peer_state;
	pc.on_msg = on_peer_msg;
	pc.user = n;
	if ((r = peer_net_new(&n->loop, &pc, &n->net, e)))
		return r;
	if ((r = peer_net_listen(n->net, cfg->listen_host, cfg->port, &n->port, e)))
		return r;

	dht_node_cfg_t dc;
	dht_node_cfg_default(&dc);
	dc.port = (uint16_t)cfg->dht_port;
	dc.node_id = ident_pub(n->id);
	dc.sign = sign_cb;
	dc.sign_ud = n->id;
	/* Swarms of different names stay apart at the DHT level as well as in
	 * the Noise prologue. */
	dc.network = dht_network_id(cfg->network);
	if (cfg->refresh_ms)
		dc.refresh_ms = cfg->refresh_ms;
	if (cfg->stale_ms)
		dc.stale_ms = cfg->stale_ms;
	if ((r = dht_node_new(&dc, &n->dht, e)))
		return err_prefix(e, r, "DHT");
	for (int i = 0; i < cfg->n_bootstrap; i++)
		if ((r = dht_node_bootstrap(n->dht, cfg->bootstrap[i], e)))
			return r;
	log_info("node", "transport %s:%d (TCP), DHT port %u (UDP)%s", cfg->listen_host, n->port,
		 dht_node_port(n->dht), cfg->n_bootstrap ? "" : ", bootstrap node");

	if (n->serving) {
		ann_t rec;
		memset(&rec, 0, sizeof(rec));
		rec.kind = ANN_SHARD;
		memcpy(rec.model_id, n->model_id, ANN_MODELLEN);
		rec.layer_a = (uint32_t)n->cfg.layer_a;
		rec.layer_b = (uint32_t)n->cfg.layer_b;
		rec.price = cfg->price;
		shard_free_capacity(n->shard, &rec.free_sessions, &rec.free_kv_bytes);
		rec.throughput_milli = measure_throughput_milli(n);
		log_info("node", "measured %.1f tokens/s through layers [%d, %d) (announced)",
			 rec.throughput_milli / 1000.0, n->cfg.layer_a, n->cfg.layer_b);
		rec.n_addrs = 1;
		const char *ah = cfg->announce_host ? cfg->announce_host : cfg->listen_host;
		uint16_t ap = (uint16_t)(cfg->announce_port ? cfg->announce_port : n->port);
		uint8_t ip[16] = { 0 };
		if (inet_pton(AF_INET, ah, ip) == 1)
			ann_addr_set(&rec.addrs[0], 4, ip, ap);
		else if (inet_pton(AF_INET6, ah, ip) == 1)
			ann_addr_set(&rec.addrs[0], 6, ip, ap);
		else
			return err_set(e, ERR_INVAL, "announce address '%s' is not an IP address", ah);
		if (ap != n->port)
			log_info("node", "announced at %s port %u (the transport listens on %d)", ah, ap, n->port);
		snprintf(rec.sw_version, sizeof(rec.sw_version), "%s", NODE_SOFTWARE);
		if ((r = dht_node_announce(n->dht, &rec, e)))
			return err_prefix(e, r, "announce");
		n->ann = rec;
		uv_timer_init(&n->loop, &n->t_shard);
		n->t_shard.data = n;
		uv_timer_start(&n->t_shard, on_shard_timer, NODE_SHARD_TICK_MS, NODE_SHARD_TICK_MS);
	}

	uv_async_init(&n->loop, &n->async, on_async);
	n->async.data = n;
	if (n->watching && (r = dht_node_watch(n->dht, n->model_id, on_dht_change, n)))
		return err_set(e, r, "cannot watch the model's key");
	uv_timer_init(&n->loop, &n->t_lookup);
	n->t_lookup.data = n;
	uv_timer_start(&n->t_lookup, on_lookup_timer, 200, NODE_LOOKUP_MS);
	uv_timer_init(&n->loop, &n->t_probe);
	n->t_probe.data = n;
	uv_timer_start(&n->t_probe, on_probe_timer, NODE_PROBE_MS, NODE_PROBE_MS);

	/* Control socket, owner-only. */
	snprintf(n->ctl_path, sizeof(n->ctl_path), "%s/%s", cfg->home, NODE_CONTROL_SOCK);
	unlink(n->ctl_path);
	uv_pipe_init(&n->loop, &n->ctl, 0);
	n->ctl.data = n;
	mode_t old = umask(077);
	r = uv_pipe_bind(&n->ctl, n->ctl_path);
	umask(old);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&n->ctl, 16, on_ctl_conn);
	if (r)
		return err_set(e, ERR_IO, "control socket %s: %s", n->ctl_path, uv_strerror(r));
	n->ctl_open = 1;

	uv_signal_init(&n->loop, &n->sigint);
	uv_signal_init(&n->loop, &n->sigterm);
	n->sigint.data = n->sigterm.data = n;
	uv_signal_start(&n->sigint, on_signal, SIGINT);
	uv_signal_start(&n->sigterm, on_signal, SIGTERM);
	return 0;
}

int node_run(const node_cfg_t *cfg, err_msg_t *e)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return err_set(e, ERR_NOMEM, "out of memory");
	n->cfg = *cfg;
	n->settle_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
	n->lookup_buf = malloc(sizeof(ann_t) * NODE_MAX_KNOWN);
	if (!n->lookup_buf || uv_loop_init(&n->loop) != 0) {
		free(n->lookup_buf);
		free(n);
		return err_set(e, ERR_NOMEM, "cannot start the event loop");
	}
	signal(SIGPIPE, SIG_IGN);
	int r = start(n, e);
	if (r) {
		/* Undo what started: close every handle, then the loop. */
		if (n->net)
			peer_net_close(n->net, NULL, NULL);
		uv_walk(&n->loop, close_walk, NULL);
	}
	int hooked = 0;
	if (!r && cfg->on_started) {
		if (cfg->earned_ref)
			*cfg->earned_ref = &n->earned;
		r = cfg->on_started(cfg->hook_ud, n->dht, n->gguf, n->serving ? n->model_id : NULL, e);
		if (r)
			begin_stop(n, "the service beside the node failed to start");
		hooked = !r;
	}
	uv_run(&n->loop, UV_RUN_DEFAULT);
	n->loop_done = 1;
	if (uv_loop_close(&n->loop) != 0)
		log_warn("node", "event loop closed with handles left");
	if (hooked && cfg->on_stopped)
		cfg->on_stopped(cfg->hook_ud);
	dht_node_free(n->dht);
	shard_free(n->shard);   /* the loop has ended: no step is running */
	while (n->vq_head) {    /* channel checks that never started */
		struct verify_job *j = n->vq_head;
		n->vq_head = j->next;
		free(j);
	}
	vstore_free(n->vs);     /* after shard_free: its last sessions' redeems are recorded */
	settle_remote_free(n->settle);
	wallet_free(n->wallet);
	ledger_svc_free(n->lsvc);   /* nor any ledger request */
	ledger_free(n->ledger);
	pool_free(n->pool);
	model_free(n->model);
	gguf_free(n->gguf);
	ident_free(n->id);
	free(n->known);
	free(n->lookup_buf);
	free(n);
	if (!r)
		log_info("node", "stopped");
	return r;
}
