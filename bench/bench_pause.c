/* bench_pause.c - what a pause before each step costs a shard's compute, with
 * no network at all: one process holds layers [A, B) of a model as a node
 * does (huge pages, repacked) and runs one-token steps through them, back to
 * back, or after sleeping PAUSE_US microseconds before each step (a hop of a
 * chain waits for the other hops between its tokens), optionally spinning
 * SPIN_US after the pause (on the calling thread; on every thread of the
 * pool with BENCH_SPIN_ALL=1 in the environment). The settings alternate
 * within each round, since the machine's speed drifts. Prints the mean step
 * time per setting.
 *
 * usage: bench_pause MODEL A B [rounds (4)] [PAUSE_US[:SPIN_US] ...]
 *   default settings: 0 30000 30000:5000 2000
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/pool.h"
#include "infer/fwd.h"
#include "model/gguf.h"
#include "model/model.h"

#define MAX_SET 8
#define STEPS 40
#define WARM 4

struct spin_job {
	uint64_t ns;
};

static void spin_cb(void *arg, int ith, int nth)
{
	(void)ith;
	(void)nth;
	const struct spin_job *j = arg;
	for (uint64_t t0 = clock_ns(); clock_ns() - t0 < j->ns;)
		;
}

static void pause_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: bench_pause MODEL A B [rounds] [PAUSE_US[:SPIN_US] ...]\n");
		return 2;
	}
	int a = atoi(argv[2]), b = atoi(argv[3]);
	int rounds = argc > 4 ? atoi(argv[4]) : 4;
	long pause[MAX_SET] = { 0, 30000, 30000, 2000 }, spin[MAX_SET] = { 0, 0, 5000, 0 };
	int nset = 4;
	if (argc > 5) {
		nset = 0;
		for (int i = 5; i < argc && nset < MAX_SET; i++, nset++) {
			char *end;
			pause[nset] = strtol(argv[i], &end, 10);
			spin[nset] = *end == ':' ? strtol(end + 1, NULL, 10) : 0;
			if (pause[nset] < 0 || spin[nset] < 0) {
				fprintf(stderr, "bench_pause: bad setting '%s'\n", argv[i]);
				return 2;
			}
		}
	}
	if (rounds < 1)
		rounds = 1;
	gguf_t *g;
	model_t *m;
	err_msg_t e;
	if (gguf_open(argv[1], &g, &e) || model_load_range(g, a, b, 0, &m, &e)) {
		fprintf(stderr, "%s: %s\n", argv[1], e.msg);
		return 1;
	}
	if (model_pin(m, &e))
		fprintf(stderr, "%s: weights stay mapped: %s\n", argv[1], e.msg);
	pool_t *pool = pool_new(2);
	fwd_ctx_t *c = NULL;
	int d = m->hp.n_embd;
	float *x = malloc(sizeof(float) * (size_t)d);
	if (!pool || !x || fwd_ctx_new(pool, &c)) {
		fprintf(stderr, "bench_pause: out of memory\n");
		return 1;
	}
	int spin_all = getenv("BENCH_SPIN_ALL") != NULL;
	double sum[MAX_SET] = { 0 };
	for (int r = 0; r < rounds; r++)
		for (int k = 0; k < nset; k++) {
			fwd_state_t *st;
			if (fwd_state_new(m, a, b, STEPS + 1, FWD_KV_F32, &st)) {
				fprintf(stderr, "bench_pause: out of memory for the KV cache\n");
				return 1;
			}
			double t = 0;
			for (int i = 0; i < STEPS; i++) {
				for (int j = 0; j < d; j++)
					x[j] = 0.01f * (float)((j * 7 + i) % 13) - 0.06f;
				if (pause[k]) {
					pool_rest(pool);   /* as a shard does when its queue is empty */
					pause_us(pause[k]);
				}
				if (spin[k]) {
					struct spin_job sj = { (uint64_t)spin[k] * 1000 };
					if (spin_all)
						pool_run(pool, spin_cb, &sj);
					else
						spin_cb(&sj, 0, 1);
				}
				fwd_seg_t sg = { st, 1 };
				uint64_t t0 = clock_ns();
				if (fwd_forward(c, m, &sg, 1, x, &e)) {
					fprintf(stderr, "bench_pause: %s\n", e.msg);
					return 1;
				}
				if (i >= WARM)
					t += (double)(clock_ns() - t0) * 1e-6;
			}
			sum[k] += t / (STEPS - WARM);
			fwd_state_free(st);
		}
	printf("layers [%d,%d) of %s, one-token steps, 2 threads, %d rounds of %d steps; spins on %s\n", a, b, argv[1],
	       rounds, STEPS, spin_all ? "every thread" : "the calling thread");
	for (int k = 0; k < nset; k++)
		printf("pause %6ld us, spin %5ld us: %7.3f ms per step (%+.0f%% vs the first setting)\n", pause[k], spin[k],
		       sum[k] / rounds, 100.0 * (sum[k] / sum[0] - 1.0));
	fwd_ctx_free(c);
	pool_free(pool);
	free(x);
	model_free(m);
	gguf_free(g);
	return 0;
}
