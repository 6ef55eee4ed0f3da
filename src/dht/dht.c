/* dht.c - the discovery node over OpenDHT's C binding (see dht.h).
 *
 * Lifetimes, the part that needs care. OpenDHT calls us back on its own
 * thread with a user-data pointer, and when the runner is deleted it drops
 * pending operations without calling their done callbacks (measured with
 * 2.4.12). So:
 *  - every get/put in flight is an op_t on the node's list; its done callback
 *    either wakes the waiter or, if the waiter gave up (timeout), frees it;
 *    ops still listed when the runner is gone are freed by dht_node_free;
 *  - a view (per-model store) is referenced by each op that feeds it and by
 *    its OpenDHT listen until the listen's done callback (fired when OpenDHT
 *    destroys the listen, possibly inside dht_runner_delete on our thread);
 *    a view is only evicted when nothing references it;
 *  - user change callbacks run with cb_active counted under the lock, so
 *    unwatch and free can wait until none is running;
 *  - nothing calls into OpenDHT while holding n->mu, since OpenDHT's thread
 *    may be waiting for n->mu inside one of our callbacks.
 */
#include "dht/dht.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <opendht/opendht_c.h>
#include <sodium.h>

#include "base/log.h"

_Static_assert(DHT_KEY_LEN == HASH_LEN, "OpenDHT InfoHash size");

typedef struct view view_t;

struct view {
	view_t *next;
	dht_node_t *node;
	uint8_t model[ANN_MODELLEN];
	dht_infohash key;
	ann_store_t *store;
	int refs;                 /* ops feeding it + a live OpenDHT listen */
	int watched;              /* listen callbacks still wanted */
	dht_op_token *listen;     /* token of the live listen, if any */
	dht_change_cb cb;
	void *cb_ud;
	uint64_t last_used;       /* a counter, for LRU eviction */
};

typedef struct op {
	struct op *next;
	dht_node_t *node;
	view_t *view;             /* get ops: the view fed (holds a ref) */
	int done, ok, abandoned;
	uint32_t values;          /* values examined (get) */
} op_t;

typedef struct announce {
	int active;
	ann_t rec;                /* last published (node_id, ts, seq filled) */
	dht_infohash key;
	uint64_t value_id;        /* OpenDHT id of the last put, to stop re-announcing it */
	uint64_t next_mono_ms;    /* next refresh, monotonic */
	int early;                /* early re-announcements done (see early_delay) */
} announce_t;

struct dht_node {
	dht_runner *runner;
	uint32_t network;
	uint16_t port;
	uint64_t refresh_ms, stale_ms, skew_ms;
	uint32_t max_records;
	uint8_t node_id[ANN_IDLEN];
	uint8_t *sk;              /* sodium_malloc, or NULL when signing is delegated */
	ann_sign_cb sign;
	void *sign_ud;

	pthread_mutex_t mu;
	pthread_cond_t cv;        /* ops done, callbacks finished, timer wake-ups */
	pthread_t timer;
	int timer_started, stopping, closing, shut;
	int cb_active;
	uint64_t last_seq;
	uint64_t use_counter;
	announce_t ann[DHT_MAX_ANNOUNCE];
	view_t *views;
	int n_views;
	op_t *ops;
};

uint32_t dht_network_id(const char *name)
{
	uint32_t h = 2166136261u;
	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 16777619u;
	return h ? h : 1;
}

uint64_t dht_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits on n->cv until the monotonic deadline; returns 0 on timeout. */
static int wait_until(dht_node_t *n, uint64_t deadline_mono_ms)
{
	uint64_t now = mono_ms();
	if (now >= deadline_mono_ms)
		return 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t ns = (uint64_t)ts.tv_nsec + (deadline_mono_ms - now) * 1000000u;
	ts.tv_sec += (time_t)(ns / 1000000000u);
	ts.tv_nsec = (long)(ns % 1000000000u);
	return pthread_cond_timedwait(&n->cv, &n->mu, &ts) != ETIMEDOUT;
}

void dht_node_cfg_default(dht_node_cfg_t *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->network = DHT_NETWORK_DEFAULT;
	cfg->refresh_ms = DHT_REFRESH_MS_DEFAULT;
	cfg->skew_ms = DHT_SKEW_MS_DEFAULT;
	cfg->max_records = DHT_MAX_RECORDS_DEFAULT;
}

void dht_model_key(uint32_t network, const uint8_t model_id[ANN_MODELLEN], uint8_t key[DHT_KEY_LEN])
{
	char s[16 + 8 + 7 + 2 * ANN_MODELLEN + 1];
	int k = snprintf(s, sizeof(s), "colony/%08x/model/", network);
	for (int i = 0; i < ANN_MODELLEN; i++)
		k += snprintf(s + k, sizeof(s) - (size_t)k, "%02x", model_id[i]);
	uint8_t h[32];
	crypto_generichash(h, sizeof(h), (const uint8_t *)s, (size_t)k, NULL, 0);
	memcpy(key, h, DHT_KEY_LEN);
}

static dht_infohash infohash_of(uint32_t network, const uint8_t model_id[ANN_MODELLEN])
{
	dht_infohash h;
	dht_model_key(network, model_id, h.d);
	return h;
}

/* ---- ops and views (all under n->mu) ------------------------------------ */

static op_t *op_new(dht_node_t *n, view_t *v)
{
	op_t *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->node = n;
	o->view = v;
	if (v)
		v->refs++;
	o->next = n->ops;
	n->ops = o;
	return o;
}

static void op_free(dht_node_t *n, op_t *o)
{
	for (op_t **p = &n->ops; *p; p = &(*p)->next)
		if (*p == o) {
			*p = o->next;
			break;
		}
	if (o->view)
		o->view->refs--;
	free(o);
}

static view_t *view_find(dht_node_t *n, const uint8_t model[ANN_MODELLEN])
{
	for (view_t *v = n->views; v; v = v->next)
		if (memcmp(v->model, model, ANN_MODELLEN) == 0)
			return v;
	return NULL;
}

static void view_free(view_t *v)
{
	if (!v)
		return;
	ann_store_free(v->store);
	free(v);
}

/* The view of a model, created (evicting the least recently used idle view
 * when DHT_MAX_VIEWS are in use) if needed. */
static int view_get(dht_node_t *n, const uint8_t model[ANN_MODELLEN], view_t **out)
{
	view_t *v = view_find(n, model);
	if (!v) {
		if (n->n_views >= DHT_MAX_VIEWS) {
			view_t **victim = NULL;
			for (view_t **p = &n->views; *p; p = &(*p)->next)
				if ((*p)->refs == 0 && !(*p)->watched && (!victim || (*p)->last_used < (*victim)->last_used))
					victim = p;
			if (!victim)
				return ERR_FULL;
			view_t *dead = *victim;
			*victim = dead->next;
			view_free(dead);
			n->n_views--;
		}
		v = calloc(1, sizeof(*v));
		if (!v)
			return ERR_NOMEM;
		ann_store_cfg_t sc = { .network = n->network, .stale_ms = n->stale_ms, .skew_ms = n->skew_ms,
			.max_nodes = n->max_records };
		memcpy(sc.model_id, model, ANN_MODELLEN);
		if (ann_store_new(&sc, &v->store) != 0) {
			free(v);
			return ERR_NOMEM;
		}
		v->node = n;
		memcpy(v->model, model, ANN_MODELLEN);
		v->key = infohash_of(n->network, model);
		v->next = n->views;
		n->views = v;
		n->n_views++;
	}
	v->last_used = ++n->use_counter;
	*out = v;
	return 0;
}

/* Offers one value to a view; 1 if the view changed. */
static int view_offer(view_t *v, const dht_value *value)
{
	dht_data_view d = dht_value_get_data(value);
	int debug = log_level_get() <= LOG_DEBUG;
	err_msg_t e;
	int rc = ann_store_add(v->store, d.data, d.size, dht_now_ms(), debug ? &e : NULL);
	if (rc == 0)
		return 1;
	if (debug)
		log_debug("dht", "record refused: %s", e.msg);
	return 0;
}

/* ---- OpenDHT callbacks (OpenDHT's thread, or ours inside runner delete) -- */

static bool on_get_value(const dht_value *value, void *ud)
{
	op_t *o = ud;
	dht_node_t *n = o->node;
	pthread_mutex_lock(&n->mu);
	bool more = !o->abandoned && !n->closing && ++o->values <= DHT_MAX_VALUES_PER_GET;
	if (more)
		view_offer(o->view, value);
	pthread_mutex_unlock(&n->mu);
	return more;
}

static void on_op_done(bool ok, void *ud)
{
	op_t *o = ud;
	dht_node_t *n = o->node;
	pthread_mutex_lock(&n->mu);
	if (o->abandoned) {
		op_free(n, o);
	} else {
		o->done = 1;
		o->ok = ok;
		pthread_cond_broadcast(&n->cv);
	}
	pthread_mutex_unlock(&n->mu);
}

static bool on_listen_value(const dht_value *value, bool expired, void *ud)
{
	view_t *v = ud;
	dht_node_t *n = v->node;
	pthread_mutex_lock(&n->mu);
	if (!v->watched || n->closing) {
		pthread_mutex_unlock(&n->mu);
		return false;
	}
	/* An expiry only means OpenDHT's 10-minute TTL ran out: our own
	 * freshness rules have already hidden such a record. */
	int changed = !expired && view_offer(v, value);
	dht_change_cb cb = v->cb;
	void *cb_ud = v->cb_ud;
	uint8_t model[ANN_MODELLEN];
	memcpy(model, v->model, ANN_MODELLEN);
	if (changed && cb) {
		n->cb_active++;
		pthread_mutex_unlock(&n->mu);
		cb(cb_ud, model);
		pthread_mutex_lock(&n->mu);
		n->cb_active--;
		pthread_cond_broadcast(&n->cv);
	}
	pthread_mutex_unlock(&n->mu);
	return true;
}

/* OpenDHT destroyed the listen: drop its reference to the view. */
static void on_listen_gone(void *ud)
{
	view_t *v = ud;
	dht_node_t *n = v->node;
	pthread_mutex_lock(&n->mu);
	v->refs--;
	pthread_mutex_unlock(&n->mu);
}

/* ---- publishing --------------------------------------------------------- */

/* A value put while the node's routing table is still filling lands on nodes
 * that are not the key's closest, where later lookups never ask (measured: in
 * a 30-node loopback swarm one announcement in ten stayed invisible to part of
 * the swarm until the next refresh). So a new announcement is re-published a
 * few times early, by which time the table has converged, then every
 * refresh_ms. */
static const uint64_t early_ms[] = { 1000, 3000, 10000, 30000 };
#define N_EARLY ((int)(sizeof(early_ms) / sizeof(early_ms[0])))

static uint64_t early_delay(const dht_node_t *n, int early)
{
	if (early < N_EARLY && early_ms[early] < n->refresh_ms)
		return early_ms[early];
	return n->refresh_ms;
}

static uint64_t next_seq(dht_node_t *n, uint64_t now_ms)
{
	uint64_t s = n->last_seq + 1 > now_ms ? n->last_seq + 1 : now_ms;
	n->last_seq = s;
	return s;
}

static void sk_sign(void *ud, const void *msg, size_t len, uint8_t sig[ANN_SIGLEN])
{
	crypto_sign_detached(sig, NULL, msg, len, ud);
}

/* Encodes and puts one record; with a waiter op when `wait` is set (the op is
 * returned, owned by the node's list), fire-and-forget otherwise. Called
 * without n->mu. *value_id gets OpenDHT's id of the value put. */
static int publish(dht_node_t *n, const dht_infohash *key, const ann_t *rec, op_t **wait,
	uint64_t *value_id, err_msg_t *e)
{
	uint8_t buf[ANN_MAX_SIZE];
	size_t len;
	int rc = ann_encode_with(rec, n->network, n->sign, n->sign_ud, buf, sizeof(buf), &len, e);
	if (rc)
		return rc;
	dht_value *val = dht_value_new(buf, len);
	if (!val)
		return err_set(e, ERR_NOMEM, "out of memory");
	op_t *o = NULL;
	pthread_mutex_lock(&n->mu);
	o = op_new(n, NULL);
	if (o && !wait)
		o->abandoned = 1;
	pthread_mutex_unlock(&n->mu);
	if (!o) {
		dht_value_unref(val);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	if (wait)
		*wait = o;
	dht_runner_put(n->runner, key, val, on_op_done, o, false);
	if (value_id)
		*value_id = dht_value_get_id(val);   /* assigned synchronously by put */
	dht_value_unref(val);
	return 0;
}

/* Waits (n->mu held) until every op of ops[] is done or the deadline passes;
 * frees the done ones and abandons the rest. Returns how many succeeded. */
static int wait_ops(dht_node_t *n, op_t **ops, int k, uint64_t deadline)
{
	for (;;) {
		int pending = 0;
		for (int i = 0; i < k; i++)
			pending += ops[i] && !ops[i]->done;
		if (!pending || !wait_until(n, deadline))
			break;
	}
	int ok = 0;
	for (int i = 0; i < k; i++) {
		if (!ops[i])
			continue;
		if (ops[i]->done) {
			ok += ops[i]->ok;
			op_free(n, ops[i]);
		} else {
			ops[i]->abandoned = 1;
		}
	}
	return ok;
}

static void *timer_main(void *arg)
{
	dht_node_t *n = arg;
	pthread_mutex_lock(&n->mu);
	while (!n->stopping) {
		uint64_t now = mono_ms(), wall = dht_now_ms();
		ann_t due[DHT_MAX_ANNOUNCE];
		int idx[DHT_MAX_ANNOUNCE], k = 0;
		uint64_t next = now + n->refresh_ms;
		for (int i = 0; i < DHT_MAX_ANNOUNCE; i++) {
			announce_t *a = &n->ann[i];
			if (!a->active)
				continue;
			if (a->next_mono_ms <= now) {
				a->rec.timestamp_ms = wall;
				a->rec.seq = next_seq(n, wall);
				a->next_mono_ms = now + early_delay(n, ++a->early);
				due[k] = a->rec;
				idx[k++] = i;
			}
			if (a->next_mono_ms < next)
				next = a->next_mono_ms;
		}
		for (view_t *v = n->views; v; v = v->next)
			ann_store_prune(v->store, wall);
		for (int j = 0; j < k; j++) {
			dht_infohash key = n->ann[idx[j]].key;
			uint64_t old = n->ann[idx[j]].value_id, id = 0;
			pthread_mutex_unlock(&n->mu);
			err_msg_t e;
			if (old)
				dht_runner_cancel_put(n->runner, &key, old);
			if (publish(n, &key, &due[j], NULL, &id, &e) != 0)
				log_warn("dht", "refresh failed: %s", e.msg);
			pthread_mutex_lock(&n->mu);
			/* Only if it is still the same announcement (not withdrawn meanwhile). */
			if (n->ann[idx[j]].active && n->ann[idx[j]].rec.seq == due[j].seq)
				n->ann[idx[j]].value_id = id;
		}
		if (k)
			continue;   /* re-evaluate: time passed while publishing */
		wait_until(n, next);
	}
	pthread_mutex_unlock(&n->mu);
	return NULL;
}

/* ---- life cycle --------------------------------------------------------- */

int dht_node_new(const dht_node_cfg_t *cfg, dht_node_t **out, err_msg_t *e)
{
	*out = NULL;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	if (cfg->network == 0)
		return err_set(e, ERR_INVAL, "network id 0 is OpenDHT's public network; use a private one");
	if (cfg->refresh_ms < 100)
		return err_set(e, ERR_INVAL, "refresh period %llu ms (at least 100)", (unsigned long long)cfg->refresh_ms);
	if (cfg->max_records == 0)
		return err_set(e, ERR_INVAL, "max_records 0");
	if (!cfg->sk && !(cfg->node_id && cfg->sign))
		return err_set(e, ERR_INVAL, "no signing identity (sk, or node_id with sign)");
	dht_node_t *n = calloc(1, sizeof(*n));
	if (!n)
		return err_set(e, ERR_NOMEM, "out of memory");
	n->network = cfg->network;
	n->refresh_ms = cfg->refresh_ms;
	n->stale_ms = cfg->stale_ms ? cfg->stale_ms : DHT_STALE_FACTOR * cfg->refresh_ms;
	n->skew_ms = cfg->skew_ms;
	n->max_records = cfg->max_records;
	if (cfg->sk) {
		n->sk = sodium_malloc(ANN_SKLEN);
		if (!n->sk) {
			free(n);
			return err_set(e, ERR_NOMEM, "out of memory");
		}
		memcpy(n->sk, cfg->sk, ANN_SKLEN);
		memcpy(n->node_id, cfg->sk + 32, ANN_IDLEN);
		n->sign = sk_sign;
		n->sign_ud = n->sk;
	} else {
		memcpy(n->node_id, cfg->node_id, ANN_IDLEN);
		n->sign = cfg->sign;
		n->sign_ud = cfg->sign_ud;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&n->mu, NULL);

	n->runner = dht_runner_new();
	if (!n->runner) {
		dht_node_free(n);
		return err_set(e, ERR_NOMEM, "cannot create the DHT runner");
	}
	dht_runner_config rc;
	dht_runner_config_default(&rc);
	rc.dht_config.node_config.network = cfg->network;
	rc.threaded = true;
	rc.peer_discovery = false;   /* no multicast on the LAN */
	rc.peer_publish = false;
	rc.log = false;
	int r = dht_runner_run_config(n->runner, cfg->port, &rc);
	if (r != 0) {
		dht_node_free(n);
		return err_set(e, ERR_IO, "cannot start the DHT on UDP port %u (error %d)", cfg->port, r);
	}
	n->port = dht_runner_get_bound_port(n->runner, AF_INET);
	if (pthread_create(&n->timer, NULL, timer_main, n) != 0) {
		dht_node_free(n);
		return err_set(e, ERR_NOMEM, "cannot start the refresh thread");
	}
	n->timer_started = 1;
	*out = n;
	return 0;
}

void dht_node_free(dht_node_t *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&n->mu);
	n->stopping = 1;
	n->closing = 1;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
	if (n->timer_started)
		pthread_join(n->timer, NULL);
	pthread_mutex_lock(&n->mu);
	while (n->cb_active > 0)
		pthread_cond_wait(&n->cv, &n->mu);
	pthread_mutex_unlock(&n->mu);
	/* Joins OpenDHT's thread; listens are destroyed inside (on_listen_gone
	 * runs here, on this thread) and pending ops are dropped uncalled. */
	if (n->runner)
		dht_runner_delete(n->runner);
	while (n->ops) {
		op_t *o = n->ops;
		n->ops = o->next;
		free(o);
	}
	while (n->views) {
		view_t *v = n->views;
		n->views = v->next;
		if (v->listen)
			dht_op_token_delete(v->listen);
		view_free(v);
	}
	if (n->sk)
		sodium_free(n->sk);   /* wipes */
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->mu);
	free(n);
}

uint16_t dht_node_port(const dht_node_t *n) { return n->port; }
const uint8_t *dht_node_id(const dht_node_t *n) { return n->node_id; }

int dht_node_bootstrap(dht_node_t *n, const char *host_port, err_msg_t *e)
{
	char host[256];
	const char *port;
	size_t len = strlen(host_port);
	if (host_port[0] == '[') {
		const char *rb = strchr(host_port, ']');
		if (!rb || rb[1] != ':')
			return err_set(e, ERR_INVAL, "'%s': want [IPv6]:PORT", host_port);
		len = (size_t)(rb - host_port - 1);
		if (len == 0 || len >= sizeof(host))
			return err_set(e, ERR_INVAL, "'%s': bad host", host_port);
		memcpy(host, host_port + 1, len);
		port = rb + 2;
	} else {
		const char *c = strrchr(host_port, ':');
		if (!c || c == host_port)
			return err_set(e, ERR_INVAL, "'%s': want HOST:PORT", host_port);
		len = (size_t)(c - host_port);
		if (len >= sizeof(host) || memchr(host_port, ':', len))
			return err_set(e, ERR_INVAL, "'%s': bad host (an IPv6 address goes in brackets)", host_port);
		memcpy(host, host_port, len);
		port = c + 1;
	}
	host[len] = 0;
	char *end;
	errno = 0;
	unsigned long p = strtoul(port, &end, 10);
	if (*port == 0 || *end != 0 || errno || p == 0 || p > 65535 || port[0] == '+' || port[0] == '-')
		return err_set(e, ERR_INVAL, "'%s': bad port", host_port);
	char ps[8];
	snprintf(ps, sizeof(ps), "%lu", p);
	dht_runner_bootstrap(n->runner, host, ps);
	return 0;
}

/* ---- announce / withdraw ------------------------------------------------ */

int dht_node_announce(dht_node_t *n, const ann_t *rec, err_msg_t *e)
{
	if (rec->kind != ANN_SHARD && rec->kind != ANN_SKILL && rec->kind != ANN_SKILL_INDEX && rec->kind != ANN_REP)
		return err_set(e, ERR_INVAL, "only shard, skill and digest records are announced (kind %u)", rec->kind);
	ann_t r = *rec;
	memcpy(r.node_id, n->node_id, ANN_IDLEN);
	r.timestamp_ms = 1;
	r.seq = 1;
	int rc = ann_check(&r, e);
	if (rc)
		return rc;
	pthread_mutex_lock(&n->mu);
	if (n->shut) {
		pthread_mutex_unlock(&n->mu);
		return err_set(e, ERR_INVAL, "node is shut down");
	}
	int slot = -1;
	for (int i = 0; i < DHT_MAX_ANNOUNCE; i++)
		if (n->ann[i].active && memcmp(n->ann[i].rec.model_id, r.model_id, ANN_MODELLEN) == 0)
			slot = i;
	for (int i = 0; slot < 0 && i < DHT_MAX_ANNOUNCE; i++)
		if (!n->ann[i].active)
			slot = i;
	if (slot < 0) {
		pthread_mutex_unlock(&n->mu);
		return err_set(e, ERR_FULL, "already announcing %d models", DHT_MAX_ANNOUNCE);
	}
	announce_t *a = &n->ann[slot];
	uint64_t old = a->active ? a->value_id : 0;
	uint64_t wall = dht_now_ms();
	r.timestamp_ms = wall;
	r.seq = next_seq(n, wall);
	a->active = 1;
	a->rec = r;
	a->key = infohash_of(n->network, r.model_id);
	a->value_id = 0;
	a->early = 0;
	a->next_mono_ms = mono_ms() + early_delay(n, 0);
	dht_infohash key = a->key;
	pthread_cond_broadcast(&n->cv);   /* the timer recomputes its deadline */
	pthread_mutex_unlock(&n->mu);

	if (old)
		dht_runner_cancel_put(n->runner, &key, old);
	uint64_t id = 0;
	rc = publish(n, &key, &r, NULL, &id, e);
	pthread_mutex_lock(&n->mu);
	if (a->active && a->rec.seq == r.seq)
		a->value_id = id;
	pthread_mutex_unlock(&n->mu);
	return rc;
}

/* Withdraws the announcements matching model (all when model is NULL). */
static int withdraw(dht_node_t *n, const uint8_t *model, int timeout_ms, int shut, err_msg_t *e)
{
	ann_t tomb[DHT_MAX_ANNOUNCE];
	dht_infohash keys[DHT_MAX_ANNOUNCE];
	uint64_t olds[DHT_MAX_ANNOUNCE];
	op_t *ops[DHT_MAX_ANNOUNCE] = { 0 };
	int k = 0;
	uint64_t deadline = mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	pthread_mutex_lock(&n->mu);
	if (shut)
		n->shut = 1;
	uint64_t wall = dht_now_ms();
	for (int i = 0; i < DHT_MAX_ANNOUNCE; i++) {
		announce_t *a = &n->ann[i];
		if (!a->active || (model && memcmp(a->rec.model_id, model, ANN_MODELLEN) != 0))
			continue;
		ann_t t;
		memset(&t, 0, sizeof(t));
		t.kind = ANN_TOMBSTONE;
		memcpy(t.node_id, n->node_id, ANN_IDLEN);
		memcpy(t.model_id, a->rec.model_id, ANN_MODELLEN);
		t.timestamp_ms = wall;
		t.seq = next_seq(n, wall);
		tomb[k] = t;
		keys[k] = a->key;
		olds[k] = a->value_id;
		k++;
		a->active = 0;
	}
	pthread_mutex_unlock(&n->mu);
	if (model && k == 0)
		return err_set(e, ERR_NOTFOUND, "model not announced");
	int rc = 0;
	for (int i = 0; i < k; i++) {
		if (olds[i])
			dht_runner_cancel_put(n->runner, &keys[i], olds[i]);
		int r = publish(n, &keys[i], &tomb[i], &ops[i], NULL, e);
		if (r && !rc)
			rc = r;
	}
	pthread_mutex_lock(&n->mu);
	int started = 0;
	for (int i = 0; i < k; i++)
		started += ops[i] != NULL;
	int ok = wait_ops(n, ops, k, deadline);
	pthread_mutex_unlock(&n->mu);
	if (rc)
		return rc;
	if (ok < started)
		return err_set(e, ERR_IO, "%d of %d tombstones not confirmed within %d ms", started - ok, started, timeout_ms);
	return 0;
}

int dht_node_withdraw(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], int timeout_ms, err_msg_t *e)
{
	return withdraw(n, model_id, timeout_ms, 0, e);
}

int dht_node_shutdown(dht_node_t *n, int timeout_ms, err_msg_t *e)
{
	return withdraw(n, NULL, timeout_ms, 1, e);
}

int dht_node_put_raw(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], const uint8_t *buf, size_t len,
	int timeout_ms)
{
	dht_infohash key = infohash_of(n->network, model_id);
	uint64_t deadline = mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	dht_value *val = dht_value_new(buf, len);
	if (!val)
		return ERR_NOMEM;
	pthread_mutex_lock(&n->mu);
	op_t *o = op_new(n, NULL);
	pthread_mutex_unlock(&n->mu);
	if (!o) {
		dht_value_unref(val);
		return ERR_NOMEM;
	}
	dht_runner_put(n->runner, &key, val, on_op_done, o, false);
	dht_value_unref(val);
	pthread_mutex_lock(&n->mu);
	int ok = wait_ops(n, &o, 1, deadline);
	pthread_mutex_unlock(&n->mu);
	return ok == 1 ? 0 : ERR_IO;
}

/* ---- lookups and watches ------------------------------------------------ */

int dht_node_lookup(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], int timeout_ms,
	ann_t *out, size_t cap, size_t *count)
{
	*count = 0;
	uint64_t deadline = mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
	pthread_mutex_lock(&n->mu);
	view_t *v;
	int rc = view_get(n, model_id, &v);
	op_t *o = rc ? NULL : op_new(n, v);
	pthread_mutex_unlock(&n->mu);
	if (rc)
		return rc;
	if (!o)
		return ERR_NOMEM;
	dht_infohash key = v->key;   /* immutable once the view exists */
	dht_runner_get(n->runner, &key, on_get_value, on_op_done, o);
	pthread_mutex_lock(&n->mu);
	(void)wait_ops(n, &o, 1, deadline);
	/* The view outlives the op: the lookup's own reference is gone, but
	 * nothing can evict it while we hold the lock. */
	*count = ann_store_collect(v->store, dht_now_ms(), out, cap);
	pthread_mutex_unlock(&n->mu);
	return 0;
}

int dht_node_watch(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], dht_change_cb cb, void *ud)
{
	pthread_mutex_lock(&n->mu);
	view_t *v = view_find(n, model_id);
	if (v && (v->watched || v->listen)) {
		pthread_mutex_unlock(&n->mu);
		return ERR_INVAL;
	}
	int rc = view_get(n, model_id, &v);
	if (rc) {
		pthread_mutex_unlock(&n->mu);
		return rc;
	}
	v->watched = 1;
	v->cb = cb;
	v->cb_ud = ud;
	v->refs++;   /* the listen's; dropped in on_listen_gone */
	dht_infohash key = v->key;
	pthread_mutex_unlock(&n->mu);
	dht_op_token *t = dht_runner_listen(n->runner, &key, on_listen_value, on_listen_gone, v);
	pthread_mutex_lock(&n->mu);
	int keep = v->watched && !v->listen;
	if (keep)
		v->listen = t;
	pthread_mutex_unlock(&n->mu);
	if (!keep) {   /* unwatched (or re-watched) by another thread meanwhile */
		dht_runner_cancel_listen(n->runner, &key, t);
		dht_op_token_delete(t);
	}
	return 0;
}

int dht_node_unwatch(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN])
{
	pthread_mutex_lock(&n->mu);
	view_t *v = view_find(n, model_id);
	if (!v || !v->watched) {
		pthread_mutex_unlock(&n->mu);
		return ERR_NOTFOUND;
	}
	v->watched = 0;
	v->cb = NULL;
	dht_op_token *t = v->listen;
	v->listen = NULL;
	while (n->cb_active > 0)
		pthread_cond_wait(&n->cv, &n->mu);
	dht_infohash key = v->key;
	pthread_mutex_unlock(&n->mu);
	if (t) {
		dht_runner_cancel_listen(n->runner, &key, t);
		dht_op_token_delete(t);
	}
	return 0;
}

int dht_node_peers(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], ann_t *out, size_t cap, size_t *count)
{
	*count = 0;
	pthread_mutex_lock(&n->mu);
	view_t *v = view_find(n, model_id);
	if (v) {
		v->last_used = ++n->use_counter;
		*count = ann_store_collect(v->store, dht_now_ms(), out, cap);
	}
	pthread_mutex_unlock(&n->mu);
	return v ? 0 : ERR_NOTFOUND;
}

int dht_node_view_stats(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], ann_store_stats_t *out,
	size_t *bytes)
{
	pthread_mutex_lock(&n->mu);
	view_t *v = view_find(n, model_id);
	if (v) {
		*out = *ann_store_stats(v->store);
		if (bytes)
			*bytes = ann_store_bytes(v->store) + sizeof(*v);
	}
	pthread_mutex_unlock(&n->mu);
	return v ? 0 : ERR_NOTFOUND;
}
