/* bandwidth.c - DRAM read bandwidth: threads stream AVX loads over a 1 GiB
 * buffer, split in contiguous parts, several repetitions; prints the best
 * and the mean GB/s.
 *
 * usage: bandwidth [threads (2)] [MiB (1024)] [repetitions (10)] [huge]
 *   huge: back the buffer with 2 MiB transparent huge pages (madvise)
 */
#include <sys/mman.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/pool.h"

typedef struct job {
	const char *buf;
	size_t size;
	long long sink[64];
} job_t;

__attribute__((target("avx2")))
static void reader(void *arg, int ith, int nth)
{
	job_t *j = arg;
	long lo, hi;
	pool_split((long)(j->size / 256), ith, nth, 1, &lo, &hi);
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	for (long i = lo; i < hi; i++) {
		const __m256i *p = (const __m256i *)(j->buf + (size_t)i * 256);
		a0 = _mm256_xor_si256(a0, _mm256_load_si256(p + 0));
		a1 = _mm256_xor_si256(a1, _mm256_load_si256(p + 1));
		a2 = _mm256_xor_si256(a2, _mm256_load_si256(p + 2));
		a3 = _mm256_xor_si256(a3, _mm256_load_si256(p + 3));
		a0 = _mm256_xor_si256(a0, _mm256_load_si256(p + 4));
		a1 = _mm256_xor_si256(a1, _mm256_load_si256(p + 5));
		a2 = _mm256_xor_si256(a2, _mm256_load_si256(p + 6));
		a3 = _mm256_xor_si256(a3, _mm256_load_si256(p + 7));
	}
	__m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
	j->sink[ith % 64] = _mm256_extract_epi64(a, 0);
}

/* Many streams: each thread reads 8 parts of its range side by side with
 * software prefetch, as the GEMV kernels do (16 weight rows at a time). More
 * reads in flight than one stream gets from the hardware prefetchers. */
#define NSTREAM 8
__attribute__((target("avx2")))
static void reader_multi(void *arg, int ith, int nth)
{
	job_t *j = arg;
	long lo, hi;
	pool_split((long)(j->size / 256), ith, nth, NSTREAM, &lo, &hi);
	long per = (hi - lo) / NSTREAM;
	__m256i acc[NSTREAM];
	for (int s = 0; s < NSTREAM; s++)
		acc[s] = _mm256_setzero_si256();
	for (long i = 0; i < per; i++) {
		for (int s = 0; s < NSTREAM; s++) {
			const char *p = j->buf + (size_t)(lo + s * per + i) * 256;
			_mm_prefetch(p + 2048, _MM_HINT_T0);
			_mm_prefetch(p + 2048 + 64, _MM_HINT_T0);
			_mm_prefetch(p + 2048 + 128, _MM_HINT_T0);
			_mm_prefetch(p + 2048 + 192, _MM_HINT_T0);
			const __m256i *q = (const __m256i *)p;
			__m256i x = _mm256_xor_si256(_mm256_load_si256(q + 0), _mm256_load_si256(q + 1));
			x = _mm256_xor_si256(x, _mm256_xor_si256(_mm256_load_si256(q + 2), _mm256_load_si256(q + 3)));
			x = _mm256_xor_si256(x, _mm256_xor_si256(_mm256_load_si256(q + 4), _mm256_load_si256(q + 5)));
			x = _mm256_xor_si256(x, _mm256_xor_si256(_mm256_load_si256(q + 6), _mm256_load_si256(q + 7)));
			acc[s] = _mm256_xor_si256(acc[s], x);
		}
	}
	__m256i a = acc[0];
	for (int s = 1; s < NSTREAM; s++)
		a = _mm256_xor_si256(a, acc[s]);
	j->sink[ith % 64] = _mm256_extract_epi64(a, 0);
}

static double measure(pool_t *pool, job_t *j, pool_fn_cb fn, int reps, double *mean)
{
	double best = 0, sum = 0;
	pool_run(pool, fn, j);   /* warm-up */
	for (int r = 0; r < reps; r++) {
		double t0 = clock_sec();
		pool_run(pool, fn, j);
		double gbs = (double)j->size / (clock_sec() - t0) * 1e-9;
		sum += gbs;
		if (gbs > best)
			best = gbs;
	}
	*mean = sum / reps;
	return best;
}

int main(int argc, char **argv)
{
	int nth = argc > 1 ? atoi(argv[1]) : 2;
	size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
	int reps = argc > 3 ? atoi(argv[3]) : 10;
	job_t j = { 0 };
	j.size = mib << 20;
	char *buf = NULL;
	int huge = argc > 4 && !strcmp(argv[4], "huge");
	if (posix_memalign((void **)&buf, huge ? (2u << 20) : 4096, j.size) != 0)
		return 1;
	if (huge && madvise(buf, j.size, MADV_HUGEPAGE) != 0)
		perror("madvise(MADV_HUGEPAGE)");
	/* Fault every page in with distinct pseudo-random contents: pages of
	 * identical bytes can be merged by the host (KSM) or the kernel, and
	 * then reads hit cache, not DRAM (a constant fill read 57 GB/s here). */
	uint64_t st = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < j.size / 8; i++) {
		st ^= st << 13, st ^= st >> 7, st ^= st << 17;
		((uint64_t *)buf)[i] = st;
	}
	j.buf = buf;
	pool_t *pool = pool_new(nth);
	if (!pool)
		return 1;
	double m1, m2;
	double b1 = measure(pool, &j, reader, reps, &m1);
	double b2 = measure(pool, &j, reader_multi, reps, &m2);
	printf("read bandwidth, %d threads, %zu MiB x %d%s: one stream per thread best %.2f GB/s (mean %.2f); "
	       "%d streams per thread with prefetch best %.2f GB/s (mean %.2f); best %.2f GB/s\n",
	       nth, mib, reps, huge ? ", huge pages" : "", b1, m1, NSTREAM, b2, m2, b1 > b2 ? b1 : b2);
	pool_free(pool);
	free(buf);
	return 0;
}
