/* bench_dht.c - discovery on a loopback swarm: how long a new node takes to
 * appear in the others' views, and what a known record costs in memory.
 *
 * usage: bench_dht [nodes (30)] [trials (5)] [records (1000)]
 *
 * All nodes run in this process on 127.0.0.1 (ephemeral UDP ports, a random
 * private network id, default refresh and staleness), each bootstrapped from
 * a random earlier node, each announcing one shard record of the same model.
 * Per trial a new node starts, bootstraps from a random node, announces; the
 * clock starts just before it is created. Two ways of seeing it are timed,
 * for every old node, in separate trials (so neither helps the other):
 *   pull  each old node runs lookups back to back on its own thread (no
 *         watches anywhere); time until a lookup returns the new node;
 *   push  each old node watches the model (OpenDHT listen); time until its
 *         change callback finds the new node in its view.
 * Memory: one reader's view is filled with `records` distinct nodes' records
 * (put by helper nodes). Reported: the view's bytes per record (our cost),
 * and the growth of the process heap (glibc mallinfo2: every live malloc and
 * C++ new, OpenDHT's included) per record after the puts (the DHT nodes'
 * stored replicas) and after the reader's lookup (its search cache and view).
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "base/clock.h"
#include "dht/dht.h"

#define MAXN 256

static uint32_t g_net;
static uint8_t g_model[32];
static dht_node_t *g_nodes[MAXN];
static uint8_t g_sk[MAXN][64], g_pk[MAXN][32];

/* The node being timed, and when it started. */
static atomic_int g_target = -1;
static double g_t0;
static double g_push_s[MAXN], g_pull_s[MAXN];
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static double heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();
	return (double)mi.uordblks + (double)mi.hblkhd;
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static dht_node_t *start(int i, const char *boot)
{
	dht_node_cfg_t c;
	dht_node_cfg_default(&c);
	c.network = g_net;
	c.sk = g_sk[i];
	dht_node_t *n = NULL;
	err_msg_t e = { "" };
	if (dht_node_new(&c, &n, &e) != 0) {
		fprintf(stderr, "node %d: %s\n", i, e.msg);
		exit(1);
	}
	if (boot && dht_node_bootstrap(n, boot, &e) != 0) {
		fprintf(stderr, "bootstrap: %s\n", e.msg);
		exit(1);
	}
	return n;
}

static void announce(int i)
{
	ann_t a;
	memset(&a, 0, sizeof(a));
	a.kind = ANN_SHARD;
	memcpy(a.model_id, g_model, 32);
	a.layer_a = (uint32_t)i;
	a.layer_b = (uint32_t)i + 1;
	a.price = 1000;
	a.n_addrs = 1;
	uint8_t lo[4] = { 127, 0, 0, 1 };
	ann_addr_set(&a.addrs[0], 4, lo, (uint16_t)(10000 + i));
	strcpy(a.sw_version, "bench");
	err_msg_t e = { "" };
	if (dht_node_announce(g_nodes[i], &a, &e) != 0) {
		fprintf(stderr, "announce %d: %s\n", i, e.msg);
		exit(1);
	}
}

static int has(const ann_t *out, size_t n, int who)
{
	for (size_t j = 0; j < n; j++)
		if (memcmp(out[j].node_id, g_pk[who], 32) == 0)
			return 1;
	return 0;
}

/* Push: the watch callback of node (intptr_t)ud. Runs on OpenDHT's thread
 * with no lock held, so it may read the view. */
static void on_change(void *ud, const uint8_t model[32])
{
	int i = (int)(intptr_t)ud, t = atomic_load(&g_target);
	if (t < 0)
		return;
	static __thread ann_t out[MAXN];
	size_t n = 0;
	if (dht_node_peers(g_nodes[i], model, out, MAXN, &n) != 0)
		return;
	if (has(out, n < MAXN ? n : MAXN, t)) {
		double dt = clock_sec() - g_t0;
		pthread_mutex_lock(&g_mu);
		if (g_push_s[i] < 0)
			g_push_s[i] = dt;
		pthread_mutex_unlock(&g_mu);
	}
}

/* Pull: lookups back to back until the target shows up (or 20 s). */
static void *puller(void *arg)
{
	int i = (int)(intptr_t)arg, t = atomic_load(&g_target);
	ann_t *out = malloc(MAXN * sizeof(ann_t));
	while (clock_sec() - g_t0 < 20) {
		size_t n = 0;
		if (dht_node_lookup(g_nodes[i], g_model, 2000, out, MAXN, &n) != 0)
			break;
		if (has(out, n < MAXN ? n : MAXN, t)) {
			g_pull_s[i] = clock_sec() - g_t0;
			break;
		}
	}
	free(out);
	return NULL;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void summary(const char *name, double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_d);
	int missing = 0;
	while (missing < n && v[missing] < 0)
		missing++;
	double *ok = v + missing;
	int k = n - missing;
	if (k == 0) {
		printf("  %-5s none seen\n", name);
		return;
	}
	printf("  %-5s n=%d  median %.3f s  p90 %.3f s  max %.3f s  (missed %d)\n", name, k, ok[k / 2],
		ok[(k * 9) / 10 < k ? (k * 9) / 10 : k - 1], ok[k - 1], missing);
}

int main(int argc, char **argv)
{
	int nodes = argc > 1 ? atoi(argv[1]) : 30;
	int trials = argc > 2 ? atoi(argv[2]) : 5;
	int records = argc > 3 ? atoi(argv[3]) : 1000;
	if (nodes < 9 || nodes + 2 * trials + 2 > MAXN || records < 1 || records > (int)DHT_MAX_RECORDS_DEFAULT) {
		fprintf(stderr, "usage: bench_dht [nodes 9..] [trials] [records 1..%u]\n", DHT_MAX_RECORDS_DEFAULT);
		return 1;
	}
	if (sodium_init() < 0)
		return 1;
	g_net = 0x20000000u | randombytes_uniform(0x0fffffffu);
	randombytes_buf(g_model, sizeof(g_model));
	for (int i = 0; i < MAXN; i++)
		crypto_sign_keypair(g_pk[i], g_sk[i]);

	long rss0 = rss_kib();
	double t = clock_sec();
	char boot[64];
	g_nodes[0] = start(0, NULL);
	for (int i = 1; i < nodes; i++) {
		snprintf(boot, sizeof(boot), "127.0.0.1:%u", dht_node_port(g_nodes[randombytes_uniform((uint32_t)i)]));
		g_nodes[i] = start(i, boot);
	}
	for (int i = 0; i < nodes; i++)
		announce(i);
	/* Converge: every node sees all. */
	ann_t *out = malloc(MAXN * sizeof(ann_t));
	int all = 0;
	while (!all && clock_sec() - t < 60) {
		all = 1;
		for (int i = 0; i < nodes; i++) {
			size_t n = 0;
			if (dht_node_lookup(g_nodes[i], g_model, 2000, out, MAXN, &n) != 0 || n < (size_t)nodes)
				all = 0;
		}
	}
	printf("swarm of %d nodes on 127.0.0.1: all see all %d records after %.2f s (%s); RSS %ld KiB (%.0f KiB/node)\n",
		nodes, nodes, clock_sec() - t, all ? "converged" : "NOT converged", rss_kib(),
		(double)(rss_kib() - rss0) / nodes);
	double *push = malloc(sizeof(double) * (size_t)(nodes * trials));
	double *pull = malloc(sizeof(double) * (size_t)(nodes * trials));
	int n_push = 0, n_pull = 0;
	for (int phase = 0; phase < 2; phase++) {
		if (phase == 1) {
			for (int i = 0; i < nodes; i++)
				if (dht_node_watch(g_nodes[i], g_model, on_change, (void *)(intptr_t)i) != 0)
					return 1;
			usleep(1000000);   /* the listens' initial values */
		}
		for (int tr = 0; tr < trials; tr++) {
			int idx = nodes + phase * trials + tr;
			for (int i = 0; i < MAXN; i++)
				g_push_s[i] = g_pull_s[i] = -1;
			snprintf(boot, sizeof(boot), "127.0.0.1:%u",
				dht_node_port(g_nodes[randombytes_uniform((uint32_t)nodes)]));
			g_t0 = clock_sec();
			atomic_store(&g_target, idx);
			g_nodes[idx] = start(idx, boot);
			announce(idx);
			if (phase == 0) {
				pthread_t th[MAXN];
				for (int i = 0; i < nodes; i++)
					pthread_create(&th[i], NULL, puller, (void *)(intptr_t)i);
				for (int i = 0; i < nodes; i++)
					pthread_join(th[i], NULL);
			} else {
				int seen = 0;
				while (seen < nodes && clock_sec() - g_t0 < 20) {
					usleep(10000);
					pthread_mutex_lock(&g_mu);
					seen = 0;
					for (int i = 0; i < nodes; i++)
						seen += g_push_s[i] >= 0;
					pthread_mutex_unlock(&g_mu);
				}
			}
			atomic_store(&g_target, -1);
			int seen = 0;
			pthread_mutex_lock(&g_mu);
			for (int i = 0; i < nodes; i++) {
				double v = phase ? g_push_s[i] : g_pull_s[i];
				seen += v >= 0;
				if (phase)
					push[n_push++] = v;
				else
					pull[n_pull++] = v;
			}
			pthread_mutex_unlock(&g_mu);
			printf("%s trial %d: new node seen by %d/%d nodes\n", phase ? "push" : "pull", tr, seen, nodes);
		}
	}
	printf("time for a new node to appear in the others' views, from its start (%d nodes x %d trials each):\n",
		nodes, trials);
	summary("pull", pull, n_pull);
	summary("push", push, n_push);

	/* Memory per known record. */
	for (int i = 0; i < nodes + 2 * trials; i++) {
		dht_node_free(g_nodes[i]);
		g_nodes[i] = NULL;
	}
	g_nodes[0] = start(0, NULL);
	snprintf(boot, sizeof(boot), "127.0.0.1:%u", dht_node_port(g_nodes[0]));
	for (int i = 1; i < 8; i++)
		g_nodes[i] = start(i, boot);
	int reader = 8;
	g_nodes[reader] = start(reader, boot);
	uint8_t model2[32];
	randombytes_buf(model2, sizeof(model2));
	usleep(500000);
	double heap_a = heap_bytes();
	uint64_t now = dht_now_ms();
	for (int r = 0; r < records; r++) {
		uint8_t pk[32], sk[64], buf[ANN_MAX_SIZE];
		crypto_sign_keypair(pk, sk);
		ann_t a;
		memset(&a, 0, sizeof(a));
		a.kind = ANN_SHARD;
		memcpy(a.node_id, pk, 32);
		memcpy(a.model_id, model2, 32);
		a.timestamp_ms = now;
		a.seq = now;
		a.layer_a = 0;
		a.layer_b = 32;
		a.n_addrs = 2;
		uint8_t ip[4] = { 10, (uint8_t)(r >> 8), (uint8_t)r, 1 };
		uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [14] = (uint8_t)(r >> 8), [15] = (uint8_t)r };
		ann_addr_set(&a.addrs[0], 4, ip, 4222);
		ann_addr_set(&a.addrs[1], 6, v6, 4222);
		strcpy(a.sw_version, "colony/0.1.0");
		size_t len;
		if (ann_encode(&a, g_net, sk, buf, sizeof(buf), &len, NULL) != 0 ||
		    dht_node_put_raw(g_nodes[1 + r % 7], model2, buf, len, 5000) != 0) {
			fprintf(stderr, "put %d failed\n", r);
			return 1;
		}
	}
	double heap_b = heap_bytes();
	size_t n = 0;
	double tl = clock_sec();
	ann_t *big = malloc((size_t)records * sizeof(ann_t));
	if (dht_node_lookup(g_nodes[reader], model2, 10000, big, (size_t)records, &n) != 0)
		return 1;
	tl = clock_sec() - tl;
	double heap_c = heap_bytes();
	ann_store_stats_t st;
	size_t bytes = 0;
	if (dht_node_view_stats(g_nodes[reader], model2, &st, &bytes) != 0)
		return 1;
	printf("memory: %d records of %zu bytes on the wire (2 addresses)\n", records, (size_t)(88 + 33 + 7 + 19 + 13 + 64));
	printf("  reader's lookup returned %zu in %.2f s; view %zu bytes = %.0f bytes/record (sizeof(ann_t) = %zu)\n",
		n, tl, bytes, n ? (double)bytes / (double)n : 0.0, sizeof(ann_t));
	printf("  process heap: +%.0f bytes/record after the puts (stored by the DHT nodes, every replica), +%.0f bytes/record after the reader's lookup\n",
		(heap_b - heap_a) / records, (heap_c - heap_b) / records);
	for (int i = 0; i <= reader; i++)
		dht_node_free(g_nodes[i]);
	free(big);
	free(out);
	free(push);
	free(pull);
	return 0;
}
