/* kern_avx2.c - AVX2 + FMA + F16C kernels: the 256-bit kernels of
 * x86_common.h (vpmaddubsw/vpmaddwd integer dot), plus batched matmul
 * tiles.
 *
 * Batched tiles (n >= MM_MIN_N) put one token in each of 8 lanes. Without
 * VNNI the exact integer product is vpmaddwd on int16: mm_prep widens the
 * quantized activations of 8 tokens per group to int16 pairs (pair p of
 * token t at lane t of vector p), and each tile widens its weight rows once
 * to int16; a broadcast weight pair times a vector of 8 tokens' pairs gives
 * each token's 2-element dot, summed exactly in int32. Each lane then
 * applies the ref's float steps for its (row, token) pair, so the bits are
 * those of the _ref kernels.
 */
#if defined(__x86_64__)
#include "kern/arch/x86/x86_common.h"

#define MM_MIN_N 4      /* below this, per-pair vec_dot (same bits) */
#define GT 8            /* tokens per group (ymm lanes) */
#define GR 6            /* weight rows per Q8_0/Q4_0 tile */
#define KR 4            /* weight rows per K-quant tile */

/* ---- activations: per (group, 32-element chunk) 16 x 32 bytes of int16
 * pairs; Q8_0 adds 8 f32 scales per block; Q8_K per super-block adds 8 f32
 * scales and 4 x 8 int16 pairs of 32-element sums (for Q4_K's mins) ---- */
#define XT80_BYTES (16 * 32 + 32)
#define XTK_BYTES (8 * 16 * 32 + 32 + 4 * 32)

static size_t mm_prep_size(int type, int layout, int64_t cols, int64_t n)
{
	(void)layout;   /* no R16 kernels here: every matrix is in rows */
	if (n < MM_MIN_N)
		return 0;
	size_t ng = (size_t)((n + GT - 1) / GT);
	switch (type) {
	case KERN_Q8_0: case KERN_Q4_0: return ng * (size_t)(cols / 32) * XT80_BYTES;
	case KERN_Q4_K: case KERN_Q6_K: return ng * (size_t)(cols / QK_K) * XTK_BYTES;
	default: return 0;
	}
}

/* 32 int8 of one token -> its lane t of 16 pair vectors. */
static inline void widen32(const int8_t *q, uint32_t *dst, int t)
{
	for (int p = 0; p < 16; p++)
		dst[8 * p + t] = (uint32_t)(uint16_t)q[2 * p] | (uint32_t)(uint16_t)q[2 * p + 1] << 16;
}

static void mm_prep(const kern_mm_args_t *a, void *xt, int ith, int nth)
{
	int k = a->W->type == KERN_Q4_K || a->W->type == KERN_Q6_K;
	int64_t bsz = k ? QK_K : 32, nb = a->W->cols / bsz, ng = (a->n + GT - 1) / GT;
	size_t xb = k ? XTK_BYTES : XT80_BYTES;
	long lo, hi;
	pool_split((long)(ng * nb), ith, nth, 1, &lo, &hi);
	for (long it = lo; it < hi; it++) {
		int64_t g = it / nb, b = it % nb;
		uint32_t *dst = (uint32_t *)((char *)xt + (size_t)it * xb);
		float *dx = (float *)(dst + (bsz / 32) * 128);
		int16_t *xs = (int16_t *)(dx + 8);
		for (int t = 0; t < GT; t++) {
			int64_t tok = g * GT + t;
			const char *row = (const char *)a->xq + (size_t)(tok < a->n ? tok : 0) * a->xrow;
			if (k) {
				const kern_block_q8_k *blk = (const kern_block_q8_k *)row + b;
				for (int c = 0; c < 8; c++)
					widen32(blk->qs + 32 * c, dst + 128 * c, t);
				dx[t] = blk->d;
				for (int j = 0; j < 8; j++)
					xs[16 * (j / 2) + 2 * t + j % 2] = (int16_t)(blk->bsums[2 * j] + blk->bsums[2 * j + 1]);
			} else {
				const kern_block_q8_0 *blk = (const kern_block_q8_0 *)row + b;
				widen32(blk->qs, dst, t);
				dx[t] = h2f(blk->d);
			}
			/* padding lanes (tok >= n) hold token 0: computed, never stored */
		}
	}
}

static size_t mm_ws(int type, int64_t cols, int64_t n)
{
	/* int16 weights of a tile, plus per-(row, sub-block) tables */
	return (size_t)GR * (size_t)cols * 2 + (size_t)GR * (size_t)(cols / 16) * 8 + 256;
}

static inline __m256i bcst32(const int16_t *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return _mm256_set1_epi32(v);
}

static inline void store_tile(const kern_mm_args_t *a, int64_t g, int64_t row, const __m256 *acc, int R)
{
	float tmp[GT];
	int64_t nt = a->n - g * GT < GT ? a->n - g * GT : GT;
	for (int r = 0; r < R; r++) {
		_mm256_storeu_ps(tmp, acc[r]);
		for (int64_t t = 0; t < nt; t++)
			a->Y[(g * GT + t) * a->W->rows + row + r] = tmp[t];
	}
}

static void mm_pairs(const kern_mm_args_t *a, int64_t r0, int64_t r1)
{
	const char *w = a->W->data, *x = a->xq;
	int64_t rows = a->W->rows, cols = a->W->cols;
	for (int64_t rb = r0; rb < r1; rb += 16) {
		int64_t re = rb + 16 < r1 ? rb + 16 : r1;
		for (int64_t t = 0; t < a->n; t++)
			for (int64_t r = rb; r < re; r++)
				a->vec_dot(cols, &a->Y[t * rows + r], w + (size_t)r * a->wrow, x + (size_t)t * a->xrow);
	}
}

static inline void widen_store(int16_t *dst, __m256i q)
{
	_mm256_storeu_si256((__m256i *)dst, _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q)));
	_mm256_storeu_si256((__m256i *)(dst + 16), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1)));
}

/* Q8_0 / Q4_0: GR rows of int16 weights w16 (row r at w16 + r * cols) and
 * scales dw[r * nb + b]; acc = fmaf(dw * dx, (float)isum, acc) per block. */
static void tile_q8(const kern_mm_args_t *a, int64_t row, int R, const int16_t *w16, const float *dw)
{
	int64_t cols = a->W->cols, nb = cols / 32, ng = (a->n + GT - 1) / GT;
	for (int64_t g = 0; g < ng; g++) {
		__m256 acc[GR];
#pragma GCC unroll 8
		for (int r = 0; r < GR; r++)
			acc[r] = _mm256_setzero_ps();
		const char *xg = (const char *)a->xt + (size_t)g * nb * XT80_BYTES;
		for (int64_t b = 0; b < nb; b++) {
			const char *xb = xg + (size_t)b * XT80_BYTES;
			__m256i s[GR];
#pragma GCC unroll 8
			for (int r = 0; r < GR; r++)
				s[r] = _mm256_setzero_si256();
#pragma GCC unroll 4
			for (int p = 0; p < 16; p++) {
				__m256i x = _mm256_load_si256((const __m256i *)(xb + 32 * p));
#pragma GCC unroll 8
				for (int r = 0; r < GR; r++)
					s[r] = _mm256_add_epi32(s[r], _mm256_madd_epi16(x, bcst32(w16 + r * cols + 32 * b + 2 * p)));
			}
			__m256 dx = _mm256_load_ps((const float *)(xb + 512));
#pragma GCC unroll 8
			for (int r = 0; r < GR; r++) {
				__m256 d = _mm256_mul_ps(_mm256_set1_ps(dw[r * nb + b]), dx);
				acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s[r]), acc[r]);
			}
		}
		store_tile(a, g, row, acc, R);
	}
}

static void mm_q4_q8(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (!a->xt) {
		mm_pairs(a, r0, r1);
		return;
	}
	int q4 = a->W->type == KERN_Q4_0;
	int64_t cols = a->W->cols, nb = cols / 32;
	int16_t *w16 = ws;
	float *dw = (float *)(w16 + GR * cols);
	for (int64_t rb = r0; rb < r1; rb += GR) {
		int R = r1 - rb < GR ? (int)(r1 - rb) : GR;
		for (int r = 0; r < GR; r++) {
			const char *w = (const char *)a->W->data + (size_t)(rb + (r < R ? r : R - 1)) * a->wrow;
			for (int64_t b = 0; b < nb; b++) {
				__m256i q;
				if (q4) {
					const kern_block_q4_0 *blk = (const kern_block_q4_0 *)w + b;
					q = _mm256_sub_epi8(unpack_q4_0(blk->qs), _mm256_set1_epi8(8));
					dw[r * nb + b] = h2f(blk->d);
				} else {
					const kern_block_q8_0 *blk = (const kern_block_q8_0 *)w + b;
					q = _mm256_loadu_si256((const __m256i *)blk->qs);
					dw[r * nb + b] = h2f(blk->d);
				}
				widen_store(w16 + r * cols + 32 * b, q);
			}
		}
		tile_q8(a, rb, R, w16, dw);
	}
}

/* K-quants: rows widened to int16 (Q4_K: q; Q6_K: q - 32) with per-row,
 * per-super-block tables: sc[16], mn2[4] (Q4_K mins as int16 pairs), d,
 * dmin. The same integers and float steps as the _ref kernels. */
typedef struct kmeta {
	int32_t sc[16];
	int32_t mn2[4];
	float d, dmin;
} kmeta_t;

static void tile_k(const kern_mm_args_t *a, int64_t row, int R, const int16_t *w16, const kmeta_t *M, int q6)
{
	int64_t cols = a->W->cols, nb = cols / QK_K, ng = (a->n + GT - 1) / GT;
	for (int64_t g = 0; g < ng; g++) {
		__m256 acc[KR];
#pragma GCC unroll 4
		for (int r = 0; r < KR; r++)
			acc[r] = _mm256_setzero_ps();
		const char *xg = (const char *)a->xt + (size_t)g * nb * XTK_BYTES;
		for (int64_t b = 0; b < nb; b++) {
			const char *xb = xg + (size_t)b * XTK_BYTES;
			__m256i S[KR];
#pragma GCC unroll 4
			for (int r = 0; r < KR; r++)
				S[r] = _mm256_setzero_si256();
			for (int c = 0; c < 8; c++) {           /* 32-element chunks */
				__m256i t0[KR], t1[KR];
#pragma GCC unroll 4
				for (int r = 0; r < KR; r++)
					t0[r] = t1[r] = _mm256_setzero_si256();
#pragma GCC unroll 8
				for (int p = 0; p < 8; p++) {
					__m256i x0 = _mm256_load_si256((const __m256i *)(xb + 512 * c + 32 * p));
					__m256i x1 = _mm256_load_si256((const __m256i *)(xb + 512 * c + 32 * (p + 8)));
#pragma GCC unroll 4
					for (int r = 0; r < KR; r++) {
						const int16_t *w = w16 + r * cols + QK_K * b + 32 * c;
						t0[r] = _mm256_add_epi32(t0[r], _mm256_madd_epi16(x0, bcst32(w + 2 * p)));
						t1[r] = _mm256_add_epi32(t1[r], _mm256_madd_epi16(x1, bcst32(w + 16 + 2 * p)));
					}
				}
#pragma GCC unroll 4
				for (int r = 0; r < KR; r++) {
					const kmeta_t *m = &M[r * nb + b];
					if (q6) {   /* two 16-element sub-blocks */
						S[r] = _mm256_add_epi32(S[r], _mm256_mullo_epi32(t0[r], _mm256_set1_epi32(m->sc[2 * c])));
						S[r] = _mm256_add_epi32(S[r], _mm256_mullo_epi32(t1[r], _mm256_set1_epi32(m->sc[2 * c + 1])));
					} else {
						S[r] = _mm256_add_epi32(S[r], _mm256_mullo_epi32(_mm256_add_epi32(t0[r], t1[r]),
												 _mm256_set1_epi32(m->sc[c])));
					}
				}
			}
			__m256 dx = _mm256_load_ps((const float *)(xb + 4096));
#pragma GCC unroll 4
			for (int r = 0; r < KR; r++) {
				const kmeta_t *m = &M[r * nb + b];
				__m256 d = _mm256_mul_ps(dx, _mm256_set1_ps(m->d));
				acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(S[r]), acc[r]);
				if (!q6) {
					__m256i s2 = _mm256_setzero_si256();
					for (int p = 0; p < 4; p++)
						s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(
							_mm256_load_si256((const __m256i *)(xb + 4096 + 32 + 32 * p)),
							_mm256_set1_epi32(m->mn2[p])));
					__m256 dm = _mm256_mul_ps(dx, _mm256_set1_ps(m->dmin));
					acc[r] = _mm256_fnmadd_ps(dm, _mm256_cvtepi32_ps(s2), acc[r]);
				}
			}
		}
		store_tile(a, g, row, acc, R);
	}
}

static void mm_k(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (!a->xt) {
		mm_pairs(a, r0, r1);
		return;
	}
	int q6 = a->W->type == KERN_Q6_K;
	int64_t cols = a->W->cols, nb = cols / QK_K;
	int16_t *w16 = ws;
	kmeta_t *M = (kmeta_t *)(w16 + KR * cols);
	const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
	for (int64_t rb = r0; rb < r1; rb += KR) {
		int R = r1 - rb < KR ? (int)(r1 - rb) : KR;
		for (int r = 0; r < KR; r++) {
			const char *w = (const char *)a->W->data + (size_t)(rb + (r < R ? r : R - 1)) * a->wrow;
			for (int64_t b = 0; b < nb; b++) {
				int16_t *o = w16 + r * cols + QK_K * b;
				kmeta_t *m = &M[r * nb + b];
				if (q6) {
					const kern_block_q6_k *blk = (const kern_block_q6_k *)w + b;
					for (int h = 0; h < 2; h++) {
						__m256i l0 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h));
						__m256i l1 = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32));
						__m256i hb = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
						__m256i q[4];
						q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
						q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
						q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
						q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
								       _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
						for (int k = 0; k < 4; k++)
							widen_store(o + 128 * h + 32 * k, _mm256_sub_epi8(q[k], k32));
					}
					for (int j = 0; j < 16; j++)
						m->sc[j] = blk->scales[j];
					m->d = h2f(blk->d);
				} else {
					const kern_block_q4_k *blk = (const kern_block_q4_k *)w + b;
					int sc[8], mn[8];
					q4k_scales(blk->scales, sc, mn);
					for (int c = 0; c < 4; c++) {
						__m256i q = _mm256_loadu_si256((const __m256i *)(blk->qs + 32 * c));
						widen_store(o + 64 * c, _mm256_and_si256(q, m4));
						widen_store(o + 64 * c + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
					}
					for (int j = 0; j < 8; j++)
						m->sc[j] = sc[j];
					for (int p = 0; p < 4; p++)
						m->mn2[p] = (int32_t)((uint32_t)mn[2 * p] | ((uint32_t)mn[2 * p + 1] << 16));
					m->d = h2f(blk->d);
					m->dmin = h2f(blk->dmin);
				}
			}
		}
		tile_k(a, rb, R, w16, M, q6);
	}
}

static const kern_ops_t ops_avx2 = {
	X86_COMMON_OPS,
	.mm = {
		[KERN_Q8_0] = mm_q4_q8,
		[KERN_Q4_0] = mm_q4_q8,
		[KERN_Q4_K] = mm_k,
		[KERN_Q6_K] = mm_k,
	},
	.mm_ws = mm_ws,
	.mm_prep_size = mm_prep_size,
	.mm_prep = mm_prep,
};

const kern_ops_t *kern__ops_avx2(void) { return &ops_avx2; }
#else
#include "kern/quants.h"
const kern_ops_t *kern__ops_avx2(void) { return NULL; }
#endif
