/* bandwidth.c - DRAM read bandwidth: threads stream AVX loads over a 1 GiB
 * buffer, split in contiguous parts, several repetitions; prints the best
 * and the mean GB/s.
 *
 * usage: bandwidth [threads (2)] [MiB (1024)] [repetitions (10)] [huge]
 *   huge: back the buffer with 2 MiB transparent huge pages (madvise)
 */
#include <sys/mman.h>
#include <immintrin.h>
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
	memset(buf, 1, j.size);             /* fault every page in */
	j.buf = buf;
	pool_t *pool = pool_new(nth);
	if (!pool)
		return 1;
	pool_run(pool, reader, &j);         /* warm-up */
	double best = 0, sum = 0;
	for (int r = 0; r < reps; r++) {
		double t0 = clock_sec();
		pool_run(pool, reader, &j);
		double gbs = (double)j.size / (clock_sec() - t0) * 1e-9;
		sum += gbs;
		if (gbs > best)
			best = gbs;
	}
	printf("read bandwidth, %d threads, %zu MiB x %d%s: best %.2f GB/s, mean %.2f GB/s\n",
	       nth, mib, reps, huge ? ", huge pages" : "", best, sum / reps);
	pool_free(pool);
	free(buf);
	return 0;
}
