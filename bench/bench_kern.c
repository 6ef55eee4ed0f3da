/* bench_kern.c - GEMV (n = 1) and GEMM (n = 128) throughput of kern_matmul
 * on the TinyLlama 1.1B shapes.
 *
 * usage: bench_kern [threads (2)] [isa: ref|avx2|avx512] [type filter] [seconds per case (0.5)]
 *
 * GEMV cycles through copies of the weights filling >= 512 MiB, so every
 * call streams them from DRAM as a forward pass does; GB/s counts weight
 * bytes (mean, and the best single call, which shows the kernel's speed
 * when other processes share the cores; BENCH_HOT=1 in the environment keeps one cache-resident copy
 * instead, to time the kernels alone). GEMM reuses one copy (it is compute-bound); GFLOP/s = 2*rows*cols*n.
 * BENCH_GEMV_N=K times the generation kernel with K tokens per call instead
 * of 1 (the small batches of continuous batching; GFLOP/s then counts all K).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/pool.h"
#include "kern/kern.h"

static uint64_t rs = 88172645463325252ull;
static float frand(void)
{
	rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
	return (float)(rs >> 40) / 16777216.0f * 2.0f - 1.0f;
}

int main(int argc, char **argv)
{
	int nth = argc > 1 ? atoi(argv[1]) : 2;
	if (argc > 2) {
		for (int i = 0; i < KERN_ISA_COUNT; i++)
			if (strcmp(argv[2], kern_isa_name(i)) == 0 && kern_isa_select(i) != 0) {
				fprintf(stderr, "isa %s not available\n", argv[2]);
				return 1;
			}
	}
	const char *filter = argc > 3 && argv[3][0] ? argv[3] : NULL;
	int gn = getenv("BENCH_GEMV_N") ? atoi(getenv("BENCH_GEMV_N")) : 1;
	if (gn < 1 || gn > 128)
		gn = 1;
	double secs = argc > 4 ? atof(argv[4]) : 0.5;
	printf("threads %d, isa %s, gemv n = %d\n", nth, kern_isa_name(kern_isa_active()), gn);
	pool_t *pool = pool_new(nth);
	kern_ctx_t k;
	kern_ctx_init(&k, pool);
	const int types[] = { KERN_Q8_0, KERN_Q4_0, KERN_Q4_K, KERN_Q6_K, KERN_F16 };
	const int64_t shapes[][2] = { { 2048, 2048 }, { 5632, 2048 }, { 2048, 5632 }, { 256, 2048 } };
	const size_t big = (size_t)512 << 20;
	char *buf = NULL;
	if (posix_memalign((void **)&buf, 64, big) != 0)
		buf = NULL;
	float *X = malloc(128 * 5632 * sizeof(float)), *Y = malloc(128 * 5632 * sizeof(float));
	float *wf = malloc(5632 * 2048 * sizeof(float));
	if (!buf || !X || !Y || !wf || !pool)
		return 1;
	for (int i = 0; i < 128 * 5632; i++)
		X[i] = frand();
	for (int i = 0; i < 5632 * 2048; i++)
		wf[i] = frand() * 0.05f;
	printf("%-5s %-10s | %9s %8s %8s %8s | %9s %8s %8s\n", "type", "shape", "gemv us", "GB/s", "best", "GFLOP/s",
	       "gemm ms", "GFLOP/s", "best");
	for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
		const kern_traits_t *tr = kern_traits(types[ti]);
		if (filter && strcmp(filter, tr->name) != 0)
			continue;
		for (int s = 0; s < 8; s++) {
			/* each shape in the file's layout, then repacked (R16) where possible */
			int64_t rows = shapes[s / 2][0], cols = shapes[s / 2][1];
			int lay = s % 2;
			size_t rsz = kern_row_size(types[ti], cols), msz = rsz * rows;
			for (int64_t r = 0; r < rows; r++)
				tr->from_float(wf + r * cols, buf + r * rsz, cols);
			kern_mat_t Wp = { buf, types[ti], rows, cols, KERN_LAYOUT_ROWS };
			if (lay) {
				if (!kern_repack_ok(&Wp))
					continue;
				char *tmp = malloc(msz);
				if (!tmp)
					return 1;
				memcpy(tmp, buf, msz);
				Wp.data = tmp;
				kern_repack(&Wp, buf);
				free(tmp);
			}
			/* BENCH_HOT=1: one copy, cache-resident (kernel speed alone) */
			size_t ncopy = getenv("BENCH_HOT") ? 1 : big / msz;
			for (size_t c = 1; c < ncopy; c++)
				memcpy(buf + c * msz, buf, msz);
			/* GEMV */
			long it = 0;
			double t0 = clock_sec(), t, best = 1e9;
			do {
				kern_mat_t W = { buf + (it % ncopy) * msz, types[ti], rows, cols, lay };
				double t1 = clock_sec();
				if (kern_matmul(&k, &W, X, gn, Y) != 0)
					return 1;
				t1 = clock_sec() - t1;
				if (t1 < best)
					best = t1;
				it++;
			} while ((t = clock_sec() - t0) < secs);
			double gemv = t / it;
			/* GEMM, n = 128 */
			kern_mat_t W0 = { buf, types[ti], rows, cols, lay };
			if (kern_matmul(&k, &W0, X, 128, Y) != 0)
				return 1;
			long it2 = 0;
			double best2 = 1e9;
			t0 = clock_sec();
			do {
				double t1 = clock_sec();
				if (kern_matmul(&k, &W0, X, 128, Y) != 0)
					return 1;
				t1 = clock_sec() - t1;
				if (t1 < best2)
					best2 = t1;
				it2++;
			} while ((t = clock_sec() - t0) < secs);
			double gemm = t / it2;
			char shp[32];
			snprintf(shp, sizeof(shp), "%lldx%lld%s", (long long)rows, (long long)cols, lay ? "r" : "");
			printf("%-5s %-10s | %9.1f %8.2f %8.2f %8.2f | %9.3f %8.1f %8.1f\n", tr->name, shp, gemv * 1e6,
			       msz / gemv * 1e-9, msz / best * 1e-9, 2.0 * rows * cols * gn / gemv * 1e-9, gemm * 1e3,
			       2.0 * rows * cols * 128 / gemm * 1e-9, 2.0 * rows * cols * 128 / best2 * 1e-9);
			fflush(stdout);
		}
	}
	kern_ctx_close(&k);
	pool_free(pool);
	free(buf); free(X); free(Y); free(wf);
	return 0;
}
