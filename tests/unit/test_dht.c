/* test_dht.c - discovery over a real OpenDHT swarm in this process: six
 * nodes on 127.0.0.1 (ephemeral UDP ports, one bootstrap, a random private
 * network id, no multicast), short refresh and staleness so the whole story
 * fits in well under a minute:
 *   every node finds every other's announcement; a node that dies without a
 *   tombstone drops out once stale (and not before); a clean shutdown hides a
 *   node at once; a restart with the same key shows up with a higher
 *   sequence; forged records put straight into the DHT are ignored; a watch
 *   delivers new announcements through its callback.
 */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <sodium.h>

#include "base/clock.h"
#include "dht/dht.h"

#define N 6
#define REFRESH_MS 1000
#define STALE_MS 3000
#define SKEW_MS 1000

static uint32_t g_net;
static uint8_t g_model[32];
static uint8_t g_sk[N + 2][64], g_pk[N + 2][32];
static dht_node_t *g_node[N + 2];
static char g_boot[64];

static double now_s(void) { return clock_sec(); }

static void keys_init(void)
{
	REQUIRE(sodium_init() >= 0);
	g_net = 0x10000000u | randombytes_uniform(0x0fffffffu);   /* random, never 0 */
	randombytes_buf(g_model, sizeof(g_model));
	for (int i = 0; i < N + 2; i++)
		crypto_sign_keypair(g_pk[i], g_sk[i]);
}

static dht_node_t *start(int i, const char *boot)
{
	dht_node_cfg_t c;
	dht_node_cfg_default(&c);
	c.network = g_net;
	c.sk = g_sk[i];
	c.refresh_ms = REFRESH_MS;
	c.stale_ms = STALE_MS;
	c.skew_ms = SKEW_MS;
	dht_node_t *n = NULL;
	err_msg_t e = { "" };
	int rc = dht_node_new(&c, &n, &e);
	if (rc)
		fprintf(stderr, "  dht_node_new: %s\n", e.msg);
	REQUIRE(rc == 0);
	CHECK(dht_node_port(n) != 0);
	CHECK(memcmp(dht_node_id(n), g_pk[i], 32) == 0);
	if (boot)
		CHECK_OK(dht_node_bootstrap(n, boot, &e));
	return n;
}

static ann_t record_for(int i)
{
	ann_t a;
	memset(&a, 0, sizeof(a));
	a.kind = ANN_SHARD;
	memcpy(a.model_id, g_model, 32);
	a.layer_a = (uint32_t)(4 * i);
	a.layer_b = (uint32_t)(4 * i + 4);
	a.price = 1000u * (uint64_t)(i + 1);
	a.throughput_milli = 50000u + (uint32_t)i;
	a.free_sessions = 8;
	a.n_addrs = 1;
	uint8_t lo[4] = { 127, 0, 0, 1 };
	ann_addr_set(&a.addrs[0], 4, lo, (uint16_t)(20000 + i));
	snprintf(a.sw_version, sizeof(a.sw_version), "colony-test/%d", i);
	return a;
}

static void announce(int i)
{
	ann_t a = record_for(i);
	err_msg_t e = { "" };
	int rc = dht_node_announce(g_node[i], &a, &e);
	if (rc)
		fprintf(stderr, "  announce %d: %s\n", i, e.msg);
	CHECK_EQ_INT(rc, 0);
}

/* Looks up from node `from`; returns the index of key `who` in out, or -1. */
static int lookup_find(int from, int who, ann_t *out, size_t cap, size_t *count)
{
	CHECK_OK(dht_node_lookup(g_node[from], g_model, 1500, out, cap, count));
	for (size_t j = 0; j < *count && j < cap; j++)
		if (memcmp(out[j].node_id, g_pk[who], 32) == 0)
			return (int)j;
	return -1;
}

/* The sequence of node `who` as seen from `from` (0 if absent). */
static uint64_t seq_seen(int from, int who)
{
	ann_t out[16];
	size_t count;
	int j = lookup_find(from, who, out, 16, &count);
	return j < 0 ? 0 : out[j].seq;
}

static void test_bootstrap_syntax(void)
{
	keys_init();
	dht_node_t *n = start(0, NULL);
	err_msg_t e;
	const char *bad[] = { "127.0.0.1", ":5", "[::1]5", "[::1]", "[]:5", "h:0", "h:65536", "h:", "h:5x",
		"::1:5", "h:-1", "h:+5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e.msg[0] = 0;
		CHECK_EQ_INT(dht_node_bootstrap(n, bad[i], &e), ERR_INVAL);
		CHECK(e.msg[0] != 0);
	}
	/* Well-formed ones are taken (nobody listens there: harmless). */
	CHECK_OK(dht_node_bootstrap(n, "[::1]:9", &e));
	CHECK_OK(dht_node_bootstrap(n, "127.0.0.1:9", &e));
	dht_node_free(n);
	/* Bad configurations. */
	dht_node_cfg_t c;
	dht_node_cfg_default(&c);
	CHECK_EQ_INT(dht_node_new(&c, &n, NULL), ERR_INVAL);      /* no identity */
	c.sk = g_sk[0];
	c.network = 0;
	CHECK_EQ_INT(dht_node_new(&c, &n, NULL), ERR_INVAL);      /* OpenDHT's public network */
	dht_node_free(NULL);
}

static void test_key_derivation(void)
{
	uint8_t m[32], k[DHT_KEY_LEN], h[32];
	for (int i = 0; i < 32; i++)
		m[i] = (uint8_t)i;
	dht_model_key(0xabcd, m, k);
	const char *s = "colony/0000abcd/model/000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	crypto_generichash(h, 32, (const uint8_t *)s, strlen(s), NULL, 0);
	CHECK(memcmp(k, h, DHT_KEY_LEN) == 0);
	uint8_t k2[DHT_KEY_LEN];
	dht_model_key(0xabce, m, k2);
	CHECK(memcmp(k, k2, DHT_KEY_LEN) != 0);
}

static atomic_int g_changes;
static atomic_int g_seen_new;
static pthread_mutex_t g_cb_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t g_cb_model[32];

static void on_change(void *ud, const uint8_t model_id[32])
{
	/* On OpenDHT's thread: only copy and count. */
	pthread_mutex_lock(&g_cb_mu);
	memcpy(g_cb_model, model_id, 32);
	pthread_mutex_unlock(&g_cb_mu);
	atomic_fetch_add(&g_changes, 1);
	(void)ud;
}

static void test_swarm(void)
{
	if (!g_net)
		keys_init();
	double t0 = now_s();
	g_node[0] = start(0, NULL);
	snprintf(g_boot, sizeof(g_boot), "127.0.0.1:%u", dht_node_port(g_node[0]));
	for (int i = 1; i < N; i++)
		g_node[i] = start(i, g_boot);
	for (int i = 0; i < N; i++)
		announce(i);

	/* 1. Every node finds every other's announcement within a few seconds. */
	int found_all = 0;
	ann_t out[16];
	size_t count;
	while (!found_all && now_s() - t0 < 15) {
		found_all = 1;
		for (int i = 0; i < N; i++) {
			CHECK_OK(dht_node_lookup(g_node[i], g_model, 1500, out, 16, &count));
			if (count != N)
				found_all = 0;
		}
	}
	double t_found = now_s() - t0;
	fprintf(stderr, "  all %d nodes saw all %d records after %.2f s\n", N, N, t_found);
	REQUIRE(found_all);
	CHECK(t_found < 10);
	/* What they see is what was announced. */
	for (int i = 0; i < N; i++) {
		int j = lookup_find((i + 1) % N, i, out, 16, &count);
		REQUIRE(j >= 0);
		ann_t want = record_for(i);
		CHECK(out[j].layer_a == want.layer_a && out[j].layer_b == want.layer_b);
		CHECK(out[j].price == want.price && out[j].throughput_milli == want.throughput_milli);
		CHECK(out[j].addrs[0].port == want.addrs[0].port);
		CHECK(strcmp(out[j].sw_version, want.sw_version) == 0);
		CHECK(out[j].kind == ANN_SHARD && out[j].seq > 0);
	}
	/* Deterministic order: by node id. */
	CHECK_OK(dht_node_lookup(g_node[2], g_model, 1500, out, 16, &count));
	for (size_t j = 1; j < count; j++)
		CHECK(memcmp(out[j - 1].node_id, out[j].node_id, 32) < 0);

	/* 2. Node 5 dies without a tombstone: still listed right after (its
	 * record is fresh), gone once stale, not much later. */
	double t_kill = now_s();
	dht_node_free(g_node[5]);
	g_node[5] = NULL;
	CHECK(seq_seen(1, 5) != 0);
	double t_gone = -1;
	while (now_s() - t_kill < (STALE_MS + 4 * REFRESH_MS) / 1000.0) {
		if (seq_seen(1, 5) == 0) {
			t_gone = now_s() - t_kill;
			break;
		}
		usleep(100000);
	}
	fprintf(stderr, "  killed node gone after %.2f s (staleness bound %.1f s)\n", t_gone, STALE_MS / 1000.0);
	CHECK(t_gone > 0);
	/* Not before its last refresh (at most REFRESH_MS before the kill) went stale. */
	CHECK(t_gone >= (STALE_MS - REFRESH_MS) / 1000.0 - 0.2);
	/* The others stayed listed throughout (they keep refreshing). */
	CHECK(seq_seen(1, 0) && seq_seen(1, 2) && seq_seen(1, 3) && seq_seen(1, 4));

	/* 3. Node 4 shuts down cleanly: its tombstone hides it at once. */
	uint64_t seq4 = seq_seen(2, 4);
	CHECK(seq4 != 0);
	err_msg_t e = { "" };
	double t_stop = now_s();
	int rc = dht_node_shutdown(g_node[4], 3000, &e);
	if (rc)
		fprintf(stderr, "  shutdown: %s\n", e.msg);
	CHECK_OK(rc);
	fprintf(stderr, "  shutdown (tombstone stored) took %.2f s\n", now_s() - t_stop);
	ann_t again = record_for(4);
	CHECK_EQ_INT(dht_node_announce(g_node[4], &again, NULL), ERR_INVAL);   /* shut down */
	dht_node_free(g_node[4]);
	g_node[4] = NULL;
	CHECK_EQ_INT(seq_seen(2, 4), 0);
	CHECK_EQ_INT(seq_seen(3, 4), 0);
	double t_hidden = now_s() - t_stop;
	fprintf(stderr, "  clean stop hidden after %.2f s (well under the %.1f s staleness)\n", t_hidden,
		STALE_MS / 1000.0);
	CHECK(t_hidden < STALE_MS / 1000.0);

	/* 4. Node 4 restarts with the same key: found again, higher sequence. */
	g_node[4] = start(4, g_boot);
	announce(4);
	uint64_t seq4b = 0;
	double t_restart = now_s();
	while (now_s() - t_restart < 10 && !(seq4b = seq_seen(2, 4)))
		usleep(100000);
	fprintf(stderr, "  restarted node found after %.2f s, sequence %llu -> %llu\n", now_s() - t_restart,
		(unsigned long long)seq4, (unsigned long long)seq4b);
	CHECK(seq4b > seq4);

	/* 5. Forged records put straight into the DHT are ignored. */
	{
		uint8_t buf[ANN_MAX_SIZE];
		size_t len;
		/* (a) a real record of a fresh key, signature damaged */
		ann_t f = record_for(6);
		memcpy(f.node_id, g_pk[6], 32);
		f.timestamp_ms = dht_now_ms();
		f.seq = f.timestamp_ms;
		CHECK_OK(ann_encode(&f, g_net, g_sk[6], buf, sizeof(buf), &len, NULL));
		buf[len - 3] ^= 0x40;
		CHECK_OK(dht_node_put_raw(g_node[3], g_model, buf, len, 3000));
		/* (b) node 0's id, another span, signed by another key */
		ann_t g = record_for(0);
		g.layer_a = 999;
		g.layer_b = 1000;
		memcpy(g.node_id, g_pk[6], 32);
		g.timestamp_ms = dht_now_ms();
		g.seq = g.timestamp_ms + 1000000;
		CHECK_OK(ann_encode(&g, g_net, g_sk[6], buf, sizeof(buf), &len, NULL));
		memcpy(buf + 8, g_pk[0], 32);
		CHECK_OK(dht_node_put_raw(g_node[3], g_model, buf, len, 3000));
		/* (c) node 1's own key, an older sequence than it has published,
		 * fresh timestamp, other span: a replay must not win */
		uint64_t cur1 = seq_seen(2, 1);
		REQUIRE(cur1 > 1);
		ann_t r = record_for(1);
		r.layer_a = 500;
		r.layer_b = 501;
		memcpy(r.node_id, g_pk[1], 32);
		r.timestamp_ms = dht_now_ms();
		r.seq = cur1 - 1;
		CHECK_OK(ann_encode(&r, g_net, g_sk[1], buf, sizeof(buf), &len, NULL));
		CHECK_OK(dht_node_put_raw(g_node[3], g_model, buf, len, 3000));
		/* (d) a valid record of a fresh key, for another network */
		ann_t w = record_for(7);
		memcpy(w.node_id, g_pk[7], 32);
		w.timestamp_ms = dht_now_ms();
		w.seq = w.timestamp_ms;
		CHECK_OK(ann_encode(&w, g_net ^ 0x5, g_sk[7], buf, sizeof(buf), &len, NULL));
		CHECK_OK(dht_node_put_raw(g_node[3], g_model, buf, len, 3000));
		/* (e) garbage */
		CHECK_OK(dht_node_put_raw(g_node[3], g_model, (const uint8_t *)"CLNY\x01\x01garbage", 14, 3000));

		/* A brand-new reader (no earlier view to lean on) sees only the truth. */
		g_node[6] = start(6, g_boot);
		int ok = 0;
		double t_new = now_s();
		while (!ok && now_s() - t_new < 10) {
			CHECK_OK(dht_node_lookup(g_node[6], g_model, 1500, out, 16, &count));
			ok = count == N - 1;   /* 0..4; 5 is dead */
		}
		CHECK(ok);
		for (size_t j = 0; j < count && j < 16; j++) {
			CHECK(out[j].layer_b != 1000 && out[j].layer_b != 501);
			CHECK(memcmp(out[j].node_id, g_pk[6], 32) != 0 && memcmp(out[j].node_id, g_pk[7], 32) != 0);
			if (memcmp(out[j].node_id, g_pk[1], 32) == 0)
				CHECK(out[j].seq >= cur1 && out[j].layer_a == 4);
		}
		ann_store_stats_t st;
		size_t bytes = 0;
		CHECK_OK(dht_node_view_stats(g_node[6], g_model, &st, &bytes));
		fprintf(stderr, "  new reader: accepted %llu, bad signature %llu, malformed %llu, replay %llu, stale %llu; view %zu bytes\n",
			(unsigned long long)st.accepted, (unsigned long long)st.bad_sig,
			(unsigned long long)st.malformed, (unsigned long long)st.replay,
			(unsigned long long)st.stale, bytes);
		CHECK(st.bad_sig >= 3);     /* (a), (b), (d) were received and refused */
		CHECK(st.malformed >= 1);   /* (e) */
	}

	/* 6. A watch delivers a new node's announcement through its callback. */
	CHECK_OK(dht_node_watch(g_node[2], g_model, on_change, NULL));
	CHECK_EQ_INT(dht_node_watch(g_node[2], g_model, on_change, NULL), ERR_INVAL);
	double t_w = now_s();
	size_t before = 0;
	while (now_s() - t_w < 5) {   /* the listen's initial values first */
		CHECK_OK(dht_node_peers(g_node[2], g_model, out, 16, &before));
		if (before >= (size_t)N - 1)
			break;
		usleep(50000);
	}
	g_node[7] = start(7, g_boot);
	ann_t a7 = record_for(7);
	t_w = now_s();
	CHECK_OK(dht_node_announce(g_node[7], &a7, NULL));
	int seen = 0;
	while (!seen && now_s() - t_w < 10) {
		CHECK_OK(dht_node_peers(g_node[2], g_model, out, 16, &count));
		for (size_t j = 0; j < count && j < 16; j++)
			if (memcmp(out[j].node_id, g_pk[7], 32) == 0)
				seen = 1;
		if (!seen)
			usleep(20000);
	}
	fprintf(stderr, "  watch saw the new node after %.2f s (%d change callbacks)\n", now_s() - t_w,
		atomic_load(&g_changes));
	CHECK(seen);
	CHECK(atomic_load(&g_changes) > 0);
	pthread_mutex_lock(&g_cb_mu);
	CHECK(memcmp(g_cb_model, g_model, 32) == 0);
	pthread_mutex_unlock(&g_cb_mu);
	CHECK_OK(dht_node_unwatch(g_node[2], g_model));
	CHECK_EQ_INT(dht_node_unwatch(g_node[2], g_model), ERR_NOTFOUND);
	int after_unwatch = atomic_load(&g_changes);
	/* Withdraw one model explicitly (node 7): gone from a fresh lookup. */
	CHECK_OK(dht_node_withdraw(g_node[7], g_model, 3000, NULL));
	CHECK_EQ_INT(dht_node_withdraw(g_node[7], g_model, 100, NULL), ERR_NOTFOUND);
	CHECK_EQ_INT(seq_seen(3, 7), 0);
	usleep(300000);
	CHECK_EQ_INT(atomic_load(&g_changes), after_unwatch);   /* no callback after unwatch */
	(void)g_seen_new;

	uint8_t other[32] = { 1 };
	CHECK_EQ_INT(dht_node_peers(g_node[2], other, out, 16, &count), ERR_NOTFOUND);

	for (int i = 0; i < N + 2; i++) {
		dht_node_free(g_node[i]);
		g_node[i] = NULL;
	}
	fprintf(stderr, "  whole swarm test: %.1f s\n", now_s() - t0);
}

TEST_MAIN(test_bootstrap_syntax, test_key_derivation, test_swarm)
