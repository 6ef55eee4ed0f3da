/* bench_market.c - what payments cost: the per-chunk work of a session's
 * payment (the provider signs a receipt, the buyer checks it and signs a
 * voucher, the provider checks the voucher), and ledger redeem throughput
 * (SQLite, WAL) with synchronous=NORMAL and FULL, from one thread and from
 * 4 threads with their own connections.
 *
 * usage: bench_market [chunks (5000)] [redeems (3000)] [dir ($TMPDIR or /tmp)]
 *
 * The overhead on generation is the per-chunk cost divided by the time the
 * chunk's tokens take to generate; it is printed for a few chunk sizes and
 * token rates (the payment work runs on the session's thread between steps).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "market/channel.h"
#include "market/ledger.h"

#define NOW 1700000000

static wallet_t *seeded(uint8_t b)
{
	uint8_t s[32];
	memset(s, b, sizeof(s));
	wallet_t *w = NULL;
	if (wallet_new(s, &w) != 0)
		exit(1);
	return w;
}

static double bench_chunks(int n, const wallet_t *buyer, const wallet_t *prov, double *sign_us, double *verify_us)
{
	chan_terms_t t;
	memset(&t, 0, sizeof(t));
	memset(t.channel, 7, 32);
	memcpy(t.buyer, wallet_pub(buyer), 32);
	memcpy(t.provider, wallet_pub(prov), 32);
	t.budget = AMOUNT_MAX;
	t.expiry = NOW + 3600;
	t.price_in = 100000;
	t.price_out = 400000;
	t.chunk = 16;
	chan_provider_t c;
	chan_buyer_t b;
	err_msg_t e = { "" };
	if (chan_provider_init(&c, &t) || chan_buyer_init(&b, &t))
		exit(1);
	uint64_t t0 = clock_ns();
	for (int i = 0; i < n; i++) {
		receipt_t r;
		voucher_t v;
		if (chan_buyer_count(&b, 0, 16) || chan_provider_receipt(&c, 0, b.out_tokens, NULL, prov, &r) ||
				chan_buyer_answer(&b, &r, buyer, NOW, &v, &e) || chan_provider_accept(&c, &v, NOW, &e)) {
			fprintf(stderr, "chunk %d: %s\n", i, e.msg);
			exit(1);
		}
	}
	double per_chunk = (double)(clock_ns() - t0) / 1e3 / n;
	/* The parts: one signature, one verification. */
	voucher_t v = c.last;
	t0 = clock_ns();
	for (int i = 0; i < n; i++)
		if (voucher_sign(&v, buyer) != 0)
			exit(1);
	*sign_us = (double)(clock_ns() - t0) / 1e3 / n;
	t0 = clock_ns();
	for (int i = 0; i < n; i++)
		if (voucher_verify(&v, wallet_pub(buyer)) != 0)
			exit(1);
	*verify_us = (double)(clock_ns() - t0) / 1e3 / n;
	return per_chunk;
}

typedef struct job {
	const char *path;
	const voucher_t *v;
	int from, to;
	int sync_normal;
	int failed;
} job_t;

static void *redeem_range(void *arg)
{
	job_t *j = arg;
	ledger_opts_t o;
	ledger_opts_default(&o);
	o.sync_normal = j->sync_normal;
	ledger_t *l = NULL;
	err_msg_t e = { "" };
	if (ledger_open(j->path, &o, &l, &e) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		j->failed = 1;
		return NULL;
	}
	for (int i = j->from; i < j->to; i++) {
		amount_t paid;
		if (ledger_redeem(l, &j->v[i], NOW, &paid, &e) != 0) {
			fprintf(stderr, "redeem %d: %s\n", i, e.msg);
			j->failed = 1;
			break;
		}
	}
	ledger_free(l);
	return NULL;
}

/* Redeems n vouchers of one channel (in order) from `threads` connections;
 * returns redeems per second. */
static double bench_redeem(const char *dir, int n, int threads, int sync_normal,
	const wallet_t *buyer, const wallet_t *prov)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/bench_market.%d.db", dir, (int)getpid());
	ledger_t *l = NULL;
	err_msg_t e = { "" };
	ledger_opts_t o;
	ledger_opts_default(&o);
	o.sync_normal = sync_normal;
	if (ledger_open(path, &o, &l, &e) != 0) {
		fprintf(stderr, "%s\n", e.msg);
		exit(1);
	}
	settle_reserve_t r;
	memset(&r, 0, sizeof(r));
	memcpy(r.buyer, wallet_pub(buyer), 32);
	memcpy(r.provider, wallet_pub(prov), 32);
	r.budget = (amount_t)n * 1000;
	r.expiry = NOW + 3600;
	uint8_t id[32];
	if (ledger_deposit(l, r.buyer, r.budget, &e) || ledger_reserve(l, &r, NOW, id, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		exit(1);
	}
	voucher_t *v = calloc((size_t)n, sizeof(*v));
	for (int i = 0; i < n; i++) {
		v[i] = (voucher_t){ .seq = (uint64_t)i + 1, .amount = (amount_t)(i + 1) * 1000, .out_tokens = (uint64_t)i * 16 };
		memcpy(v[i].channel, id, 32);
		if (voucher_sign(&v[i], buyer) != 0)
			exit(1);
	}
	job_t jobs[8];
	pthread_t th[8];
	uint64_t t0 = clock_ns();
	for (int k = 0; k < threads; k++) {
		jobs[k] = (job_t){ path, v, n * k / threads, n * (k + 1) / threads, sync_normal, 0 };
		if (pthread_create(&th[k], NULL, redeem_range, &jobs[k]) != 0)
			exit(1);
	}
	for (int k = 0; k < threads; k++) {
		pthread_join(th[k], NULL);
		if (jobs[k].failed)
			exit(1);
	}
	double per_s = n / ((double)(clock_ns() - t0) / 1e9);
	if (ledger_audit(l, NULL, &e) != 0) {
		fprintf(stderr, "audit: %s\n", e.msg);
		exit(1);
	}
	ledger_free(l);
	free(v);
	char p2[1100];
	unlink(path);
	snprintf(p2, sizeof(p2), "%s-wal", path);
	unlink(p2);
	snprintf(p2, sizeof(p2), "%s-shm", path);
	unlink(p2);
	return per_s;
}

int main(int argc, char **argv)
{
	int chunks = argc > 1 ? atoi(argv[1]) : 5000;
	int redeems = argc > 2 ? atoi(argv[2]) : 3000;
	const char *dir = argc > 3 ? argv[3] : getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/tmp";
	if (chunks < 1 || redeems < 8) {
		fprintf(stderr, "usage: bench_market [chunks >= 1] [redeems >= 8] [dir]\n");
		return 2;
	}
	wallet_t *buyer = seeded(1), *prov = seeded(2);
	double sign_us, verify_us;
	double chunk_us = bench_chunks(chunks, buyer, prov, &sign_us, &verify_us);
	printf("voucher sign: %.1f us, verify: %.1f us\n", sign_us, verify_us);
	printf("per chunk (receipt sign + buyer verify/sign + provider verify): %.1f us over %d chunks\n",
		chunk_us, chunks);
	static const int sizes[] = { 16, 64 };
	static const double rates[] = { 20, 100, 1000 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (size_t j = 0; j < sizeof(rates) / sizeof(rates[0]); j++)
			printf("  overhead at chunk %d, %.0f tokens/s: %.4f%%\n", sizes[i], rates[j],
				100.0 * chunk_us / (sizes[i] * 1e6 / rates[j]));
	for (int sync = 1; sync >= 0; sync--)
		for (int threads = 1; threads <= 4; threads += 3)
			printf("ledger redeem, synchronous=%s, %d connection%s: %.0f /s (%d vouchers, one channel)\n",
				sync ? "NORMAL" : "FULL", threads, threads > 1 ? "s" : "",
				bench_redeem(dir, redeems, threads, sync, buyer, prov), redeems);
	wallet_free(buyer);
	wallet_free(prov);
	return 0;
}
