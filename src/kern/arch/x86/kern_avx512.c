/* kern_avx512.c - AVX-512 (F/BW/VL/DQ/VNNI) kernels: the 256-bit kernels of
 * x86_common.h with vpdpbusd, plus the batched matmul tiles.
 *
 * Batched tiles (n >= MM_MIN_N tokens) vectorise across tokens: each zmm
 * lane is one token, so a block's integer dot for 16 tokens needs no
 * horizontal sum, and each lane then applies exactly the ref's float steps
 * for its (row, token) pair. mm_prep re-lays the quantized activations of
 * 16 tokens per group: for each block, dword k of token t at lane t of
 * vector k, with bytes biased to u8 (x + 128, i.e. x ^ 0x80) for vpdpbusd;
 * the weights are the s8 operand, broadcast from memory one dword at a
 * time, and the bias is removed with corr = 128 * sum(w) per weight block.
 */
#if defined(__x86_64__)
#define X86_VNNI 1
#include "kern/arch/x86/x86_common.h"

#define MM_MIN_N 8      /* below this, per-pair vec_dot (same bits) */
#define GT 16           /* tokens per group (zmm lanes) */
#define GR 16           /* weight rows per tile */

/* ---- Q8_0 activations, 16-token groups: per (group, block) 8 x 64 bytes
 * of biased dwords, then 16 f32 scales ---- */
#define XT80_BYTES (8 * 64 + 64)

static size_t prep_size_q8_0(int64_t cols, int64_t n)
{
	if (n < MM_MIN_N)
		return 0;
	return (size_t)((n + GT - 1) / GT) * (size_t)(cols / 32) * XT80_BYTES;
}

static void prep_q8_0(const kern_mm_args_t *a, void *xt, int ith, int nth)
{
	int64_t nb = a->W->cols / 32, ng = (a->n + GT - 1) / GT;
	long lo, hi;
	pool_split((long)(ng * nb), ith, nth, 1, &lo, &hi);
	for (long it = lo; it < hi; it++) {
		int64_t g = it / nb, b = it % nb;
		uint32_t *dst = (uint32_t *)((char *)xt + (size_t)it * XT80_BYTES);
		float *dx = (float *)(dst + 128);
		for (int t = 0; t < GT; t++) {
			int64_t tok = g * GT + t;
			if (tok >= a->n) {
				for (int k = 0; k < 8; k++)
					dst[16 * k + t] = 0x80808080u;
				dx[t] = 0.0f;
				continue;
			}
			const kern_block_q8_0 *blk = (const kern_block_q8_0 *)((const char *)a->xq +
				(size_t)tok * a->xrow) + b;
			dx[t] = h2f(blk->d);
			for (int k = 0; k < 8; k++) {
				uint32_t v;
				memcpy(&v, blk->qs + 4 * k, 4);
				dst[16 * k + t] = v ^ 0x80808080u;
			}
		}
	}
}

/* ---- Q8_K activations: per (group, super-block) 64 x 64 bytes of biased
 * dwords, 16 f32 scales, then 8 x 16 int32 sub-block sums (of 32) ---- */
#define XTK_BYTES (64 * 64 + 64 + 8 * 64)

static size_t prep_size_q8_k(int64_t cols, int64_t n)
{
	if (n < MM_MIN_N)
		return 0;
	return (size_t)((n + GT - 1) / GT) * (size_t)(cols / QK_K) * XTK_BYTES;
}

static void prep_q8_k(const kern_mm_args_t *a, void *xt, int ith, int nth)
{
	int64_t nb = a->W->cols / QK_K, ng = (a->n + GT - 1) / GT;
	long lo, hi;
	pool_split((long)(ng * nb), ith, nth, 1, &lo, &hi);
	for (long it = lo; it < hi; it++) {
		int64_t g = it / nb, b = it % nb;
		uint32_t *dst = (uint32_t *)((char *)xt + (size_t)it * XTK_BYTES);
		float *dx = (float *)(dst + 64 * 16);
		int32_t *xs = (int32_t *)(dx + 16);
		for (int t = 0; t < GT; t++) {
			int64_t tok = g * GT + t;
			if (tok >= a->n) {
				for (int k = 0; k < 64; k++)
					dst[16 * k + t] = 0x80808080u;
				dx[t] = 0.0f;
				for (int j = 0; j < 8; j++)
					xs[16 * j + t] = 0;
				continue;
			}
			const kern_block_q8_k *blk = (const kern_block_q8_k *)((const char *)a->xq +
				(size_t)tok * a->xrow) + b;
			dx[t] = blk->d;
			for (int k = 0; k < 64; k++) {
				uint32_t v;
				memcpy(&v, blk->qs + 4 * k, 4);
				dst[16 * k + t] = v ^ 0x80808080u;
			}
			for (int j = 0; j < 8; j++)
				xs[16 * j + t] = blk->bsums[2 * j] + blk->bsums[2 * j + 1];
		}
	}
}

static size_t mm_prep_size(int type, int64_t cols, int64_t n)
{
	switch (type) {
	case KERN_Q8_0: case KERN_Q4_0: return prep_size_q8_0(cols, n);
	case KERN_Q4_K: case KERN_Q6_K: return prep_size_q8_k(cols, n);
	default: return 0;
	}
}

static void mm_prep(const kern_mm_args_t *a, void *xt, int ith, int nth)
{
	switch (a->W->type) {
	case KERN_Q8_0: case KERN_Q4_0: prep_q8_0(a, xt, ith, nth); break;
	case KERN_Q4_K: case KERN_Q6_K: prep_q8_k(a, xt, ith, nth); break;
	default: break;
	}
}

/* Per-thread workspace: a tile of GR rows unpacked to int8 (Q4_0, K-quants)
 * plus per-(row, sub-block) scale and bias-correction tables. */
static size_t mm_ws(int type, int64_t cols, int64_t n)
{
	return (size_t)GR * (size_t)cols * 2 + 4096;
}

/* The slice for small n: vec_dot per pair. */
static void mm_pairs(const kern_mm_args_t *a, int64_t r0, int64_t r1)
{
	const char *w = a->W->data, *x = a->xq;
	int64_t rows = a->W->rows, cols = a->W->cols;
	for (int64_t rb = r0; rb < r1; rb += GR) {
		int64_t re = rb + GR < r1 ? rb + GR : r1;
		for (int64_t t = 0; t < a->n; t++)
			for (int64_t r = rb; r < re; r++)
				a->vec_dot(cols, &a->Y[t * rows + r], w + (size_t)r * a->wrow, x + (size_t)t * a->xrow);
	}
}

static inline void store_tile(const kern_mm_args_t *a, int64_t g, int64_t row, const __m512 *acc, int R)
{
	float tmp[GT];
	int64_t nt = a->n - g * GT < GT ? a->n - g * GT : GT;
	for (int r = 0; r < R; r++) {
		_mm512_storeu_ps(tmp, acc[r]);
		for (int64_t t = 0; t < nt; t++)
			a->Y[(g * GT + t) * a->W->rows + row + r] = tmp[t];
	}
}

static inline __m512i bcst32(const int8_t *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm512_set1_epi32(v);
}

/* Q8_0-shaped tile: GR rows whose blocks are 32 int8 at wp[r] + b * bstride,
 * with scales dw[r * nb + b] and corrections corr[r * nb + b]. For each
 * (row, token): acc = fmaf(dw * dx, (float)isum, acc) over the blocks. */
static void tile_q8(const kern_mm_args_t *a, int64_t row, int R, const int8_t *const *wp,
		    size_t bstride, const float *dw, const int32_t *corr)
{
	int64_t nb = a->W->cols / 32, ng = (a->n + GT - 1) / GT;
	for (int64_t g = 0; g < ng; g++) {
		__m512 acc[GR];
#pragma GCC unroll 16
		for (int r = 0; r < GR; r++)
			acc[r] = _mm512_setzero_ps();
		const char *xg = (const char *)a->xt + (size_t)g * nb * XT80_BYTES;
		for (int64_t b = 0; b < nb; b++) {
			const char *xb = xg + (size_t)b * XT80_BYTES;
			__m512i A[8];
#pragma GCC unroll 8
			for (int k = 0; k < 8; k++)
				A[k] = _mm512_load_si512(xb + 64 * k);
			__m512 dx = _mm512_load_ps(xb + 512);
#pragma GCC unroll 16
			for (int r = 0; r < GR; r++) {
				const int8_t *w = wp[r] + b * bstride;
				__m512i s = _mm512_setzero_si512();
#pragma GCC unroll 8
				for (int k = 0; k < 8; k++)
					s = _mm512_dpbusd_epi32(s, A[k], bcst32(w + 4 * k));
				s = _mm512_sub_epi32(s, _mm512_set1_epi32(corr[r * nb + b]));
				__m512 d = _mm512_mul_ps(_mm512_set1_ps(dw[r * nb + b]), dx);
				acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[r]);
			}
		}
		store_tile(a, g, row, acc, R);
	}
}

static inline int32_t sum_i8x32(const int8_t *w)
{
	__m256i v = _mm256_loadu_si256((const __m256i *)w);
	return hsum_i32(dot4(_mm256_set1_epi8(1), v));
}

static void mm_q8_0(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (!a->xt) {
		mm_pairs(a, r0, r1);
		return;
	}
	int64_t nb = a->W->cols / 32;
	float *dw = ws;
	int32_t *corr = (int32_t *)(dw + GR * nb);
	for (int64_t rb = r0; rb < r1; rb += GR) {
		int R = r1 - rb < GR ? (int)(r1 - rb) : GR;
		const int8_t *wp[GR];
		for (int r = 0; r < GR; r++) {
			/* rows past the end repeat the last one; their results are dropped */
			const kern_block_q8_0 *blk = (const kern_block_q8_0 *)((const char *)a->W->data +
				(size_t)(rb + (r < R ? r : R - 1)) * a->wrow);
			wp[r] = blk->qs;
			for (int64_t b = 0; b < nb; b++) {
				dw[r * nb + b] = h2f(blk[b].d);
				corr[r * nb + b] = 128 * sum_i8x32(blk[b].qs);
			}
		}
		tile_q8(a, rb, R, wp, sizeof(kern_block_q8_0), dw, corr);
	}
}

static void mm_q4_0(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (!a->xt) {
		mm_pairs(a, r0, r1);
		return;
	}
	int64_t nb = a->W->cols / 32;
	float *dw = ws;
	int32_t *corr = (int32_t *)(dw + GR * nb);
	int8_t *unp = (int8_t *)(corr + GR * nb);
	const __m256i eight = _mm256_set1_epi8(8);
	for (int64_t rb = r0; rb < r1; rb += GR) {
		int R = r1 - rb < GR ? (int)(r1 - rb) : GR;
		const int8_t *wp[GR];
		for (int r = 0; r < GR; r++) {
			const kern_block_q4_0 *blk = (const kern_block_q4_0 *)((const char *)a->W->data +
				(size_t)(rb + (r < R ? r : R - 1)) * a->wrow);
			int8_t *u = unp + (size_t)r * nb * 32;
			wp[r] = u;
			for (int64_t b = 0; b < nb; b++) {
				__m256i q = _mm256_sub_epi8(unpack_q4_0(blk[b].qs), eight);
				_mm256_storeu_si256((__m256i *)(u + 32 * b), q);
				dw[r * nb + b] = h2f(blk[b].d);
				corr[r * nb + b] = 128 * hsum_i32(dot4(_mm256_set1_epi8(1), q));
			}
		}
		tile_q8(a, rb, R, wp, 32, dw, corr);
	}
}

static const kern_ops_t ops_avx512 = {
	X86_COMMON_OPS,
	.mm = {
		[KERN_Q8_0] = mm_q8_0,
		[KERN_Q4_0] = mm_q4_0,
	},
	.mm_ws = mm_ws,
	.mm_prep_size = mm_prep_size,
	.mm_prep = mm_prep,
};

const kern_ops_t *kern__ops_avx512(void) { return &ops_avx512; }
#else
#include "kern/quants.h"
const kern_ops_t *kern__ops_avx512(void) { return NULL; }
#endif
