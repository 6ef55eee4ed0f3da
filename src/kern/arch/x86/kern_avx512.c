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
 * Below MM_MIN_N tokens (generation) the Q8_0/Q4_0 GEMV tiles take 16
 * weight rows at a time, one row per lane of the result (see gemv_q); the
 * K-quants use their zmm pair dots; float weights use FR x FT tiles.
 */
#if defined(__x86_64__)
#define X86_VNNI 1
#include "kern/arch/x86/x86_common.h"

#define MM_MIN_N 8      /* below this, the GEMV paths (same bits) */
#define GT 16           /* tokens per group (zmm lanes) */
#define R16_GEMV_MAX 32 /* R16 matrices: up to this many tokens, gemv_r16 */
#define GR 16           /* weight rows per tile */

/* ---- zmm pair dots for the K-quants (same integers as x86_common.h) ---- */

static inline int hsum512(__m512i v)
{
	return hsum_i32(_mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1)));
}

/* The 6-bit scales and mins of a Q4_K block as 8 bytes each, with 32-bit
 * word operations on the 12 packed bytes (see kern__q4k_scale_min). */
static inline void q4k_scales8(const uint8_t *s, uint64_t *sc, uint64_t *mn)
{
	uint32_t u0, u1, u2;
	memcpy(&u0, s, 4);
	memcpy(&u1, s + 4, 4);
	memcpy(&u2, s + 8, 4);
	uint32_t sl = u0 & 0x3f3f3f3fu, sh = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);
	uint32_t ml = u1 & 0x3f3f3f3fu, mh = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u);
	*sc = sl | (uint64_t)sh << 32;
	*mn = ml | (uint64_t)mh << 32;
}

static void z_vec_dot_q4_k(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_block_q4_k *w = vx;
	const kern_block_q8_k *a = vy;
	const __m512i m4 = _mm512_set1_epi8(15);
	const __m512i half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK_K; i++) {
		uint64_t sc8, mn8;
		q4k_scales8(w[i].scales, &sc8, &mn8);
		__m512i scv = _mm512_castsi256_si512(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)sc8)));
		__m512i S = _mm512_setzero_si512();
#pragma GCC unroll 4
		for (int c = 0; c < 4; c++) {
			__m256i q = _mm256_loadu_si256((const __m256i *)(w[i].qs + 32 * c));
			__m512i qq = _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(q),
									 _mm256_srli_epi16(q, 4), 1), m4);
			__m512i x = _mm512_loadu_si512(a[i].qs + 64 * c);
			__m512i dp = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qq, x);
			/* lanes 0-7: sub-block 2c, lanes 8-15: 2c + 1 */
			__m512i scc = _mm512_permutexvar_epi32(_mm512_add_epi32(half, _mm512_set1_epi32(2 * c)), scv);
			S = _mm512_add_epi32(S, _mm512_mullo_epi32(dp, scc));
		}
		/* S2 = sum_i m[i / 2] * bsums[i] */
		__m128i mv = _mm_cvtsi64_si128((long long)mn8);
		__m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mv, mv));
		__m256i bs = _mm256_loadu_si256((const __m256i *)a[i].bsums);
		int s1 = hsum512(S), s2 = hsum_i32(_mm256_madd_epi16(bs, m16));
		float d = a[i].d * h2f(w[i].d), dm = a[i].d * h2f(w[i].dmin);
		acc = fmaf(d, (float)s1, acc);
		acc = fmaf(-dm, (float)s2, acc);
	}
	*s = acc;
}

static void z_vec_dot_q6_k(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_block_q6_k *w = vx;
	const kern_block_q8_k *a = vy;
	const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
	const __m512i quarter = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK_K; i++) {
		__m512i scv = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w[i].scales));
		__m512i S = _mm512_setzero_si512();
#pragma GCC unroll 2
		for (int h = 0; h < 2; h++) {
			__m512i L = _mm512_loadu_si512(w[i].ql + 64 * h);
			__m256i hb = _mm256_loadu_si256((const __m256i *)(w[i].qh + 32 * h));
			__m512i H01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_slli_epi16(hb, 4)),
							 _mm256_slli_epi16(hb, 2), 1);
			__m512i H23 = _mm512_inserti64x4(_mm512_castsi256_si512(hb), _mm256_srli_epi16(hb, 2), 1);
			__m512i Q01 = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_and_si512(H01, m30));
			__m512i Q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
						      _mm512_and_si512(H23, m30));
			__m512i d01 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), Q01,
							  _mm512_loadu_si512(a[i].qs + 128 * h));
			__m512i d23 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), Q23,
							  _mm512_loadu_si512(a[i].qs + 128 * h + 64));
			__m512i s01 = _mm512_permutexvar_epi32(_mm512_add_epi32(quarter, _mm512_set1_epi32(8 * h)), scv);
			__m512i s23 = _mm512_permutexvar_epi32(_mm512_add_epi32(quarter, _mm512_set1_epi32(8 * h + 4)), scv);
			S = _mm512_add_epi32(S, _mm512_mullo_epi32(d01, s01));
			S = _mm512_add_epi32(S, _mm512_mullo_epi32(d23, s23));
		}
		__m256i bs = _mm256_loadu_si256((const __m256i *)a[i].bsums);
		__m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[i].scales));
		int off = hsum_i32(_mm256_madd_epi16(bs, sc16));
		int si = hsum512(S) - 32 * off;
		acc = fmaf(a[i].d * h2f(w[i].d), (float)si, acc);
	}
	*s = acc;
}

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
 * dwords, 16 f32 scales, then 4 x 16 pairs of int16 sums of 32-element
 * sub-blocks (2p, 2p + 1), for vpdpwssd against Q4_K's mins ---- */
#define XTK_BYTES (64 * 64 + 64 + 4 * 64)

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
		int16_t *xs = (int16_t *)(dx + 16);
		for (int t = 0; t < GT; t++) {
			int64_t tok = g * GT + t;
			if (tok >= a->n) {
				for (int k = 0; k < 64; k++)
					dst[16 * k + t] = 0x80808080u;
				dx[t] = 0.0f;
				for (int j = 0; j < 8; j++)
					xs[32 * (j / 2) + 2 * t + j % 2] = 0;
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
				xs[32 * (j / 2) + 2 * t + j % 2] = (int16_t)(blk->bsums[2 * j] + blk->bsums[2 * j + 1]);
		}
	}
}

static size_t mm_prep_size(int type, int layout, int64_t cols, int64_t n)
{
	/* R16 matrices: gemv_r16 reads the quantized rows as they are */
	if (layout == KERN_LAYOUT_R16 && n <= R16_GEMV_MAX)
		return 0;
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

/* ---- GEMV tiles (n < MM_MIN_N): 16 weight rows per zmm of results ----
 * Each block's 16 row dots are computed two rows per zmm for Q8_0 (lanes
 * 0-7 one row, 8-15 the other) or four for Q4_0 (one per 128-bit quarter),
 * then reduce16 sums each row's lanes into lane r of one vector: integer
 * adds, exact. For Q8_0, Z[i] holds rows (i, i + 4) for i < 4 and
 * (i + 4, i + 8) for i >= 4, so the result comes out in row order. */
static const int zrow[8][2] = { { 0, 4 }, { 1, 5 }, { 2, 6 }, { 3, 7 },
				{ 8, 12 }, { 9, 13 }, { 10, 14 }, { 11, 15 } };

/* q4 = 0: Z[0..7] as above, quarters (A, A, B, B).
 * q4 = 1: Z[0..3], each quarter c of Z[j] one row (4c + j) with 4 lanes. */
static inline __m512i reduce16(const __m512i *Z, int q4)
{
	if (q4) {
		__m512i T0 = _mm512_add_epi32(_mm512_unpacklo_epi32(Z[0], Z[1]), _mm512_unpackhi_epi32(Z[0], Z[1]));
		__m512i T1 = _mm512_add_epi32(_mm512_unpacklo_epi32(Z[2], Z[3]), _mm512_unpackhi_epi32(Z[2], Z[3]));
		return _mm512_add_epi32(_mm512_unpacklo_epi64(T0, T1), _mm512_unpackhi_epi64(T0, T1));
	}
	__m512i T[4];
#pragma GCC unroll 4
	for (int i = 0; i < 4; i++)
		T[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(Z[2 * i], Z[2 * i + 1]),
					_mm512_unpackhi_epi32(Z[2 * i], Z[2 * i + 1]));
	__m512i U0 = _mm512_add_epi32(_mm512_unpacklo_epi64(T[0], T[1]), _mm512_unpackhi_epi64(T[0], T[1]));
	__m512i U1 = _mm512_add_epi32(_mm512_unpacklo_epi64(T[2], T[3]), _mm512_unpackhi_epi64(T[2], T[3]));
	return _mm512_add_epi32(_mm512_shuffle_i32x4(U0, U1, _MM_SHUFFLE(2, 0, 2, 0)),
				_mm512_shuffle_i32x4(U0, U1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* The f16 scales at offset 0 of block b of 16 rows (offsets off[r]).
 * Scalar loads: a vpgatherdd here ran several times slower with two
 * threads than with one. */
static inline __m512 gather_d(const char *base, const int32_t *off)
{
	uint16_t h[16];
	for (int r = 0; r < 16; r++)
		memcpy(&h[r], base + off[r], 2);
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

static inline void row_offsets(int R, size_t wrow, int32_t *o)
{
	for (int r = 0; r < 16; r++)
		o[r] = (int32_t)((size_t)(r < R ? r : R - 1) * wrow);
}

/* Q8_0 and Q4_0 rows against Q8_0 tokens: the weights are the u8 operand
 * (Q8_0 biased by 128, w ^ 0x80; Q4_0 nibbles as they are), so the
 * correction is per token block: isum = dot - bias * sum(x). */
static inline __attribute__((always_inline))
void gemv_q(const kern_mm_args_t *a, int64_t r0, int64_t r1, const int q4)
{
	int64_t nb = a->W->cols / 32, rows = a->W->rows;
	const size_t bs = q4 ? sizeof(kern_block_q4_0) : sizeof(kern_block_q8_0);
	const __m512i m4 = _mm512_set1_epi8(15), bias = _mm512_set1_epi8((char)0x80);
	for (int64_t rb = r0; rb < r1; rb += 16) {
		int R = r1 - rb < 16 ? (int)(r1 - rb) : 16;
		const char *w0 = (const char *)a->W->data + (size_t)rb * a->wrow;
		const char *wr[16];
		for (int r = 0; r < 16; r++)
			wr[r] = w0 + (size_t)(r < R ? r : R - 1) * a->wrow;
		int32_t off[16];
		row_offsets(R, a->wrow, off);
		/* bytes [pf_lo, pf_lo + pf_n) from w0: the next tile of this slice */
		size_t pf_lo = (size_t)16 * a->wrow;
		size_t pf_n = rb + 16 < r1 ? (size_t)(r1 - rb - 16 < 16 ? r1 - rb - 16 : 16) * a->wrow : 0;
		for (int64_t t = 0; t < a->n; t++) {
			const kern_block_q8_0 *x = (const kern_block_q8_0 *)((const char *)a->xq + (size_t)t * a->xrow);
			__m512 acc = _mm512_setzero_ps();
			for (int64_t b = 0; b < nb; b++) {
				__m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs);
				int xsum = hsum_i32(dot4(_mm256_set1_epi8(1), xq));
				__m512i xv = _mm512_castsi256_si512(xq), Z[8];
				size_t ob = (size_t)b * bs + 2;
				/* 16 rows read side by side are 16 streams, too many
				 * for the hardware prefetchers (cold GEMV ran at half
				 * the bandwidth): fetch the next tile, which is
				 * contiguous, in order into L2 while this one computes */
				if (t == 0)
					for (size_t l = pf_lo + (size_t)b * pf_n / nb, le = pf_lo + (size_t)(b + 1) * pf_n / nb;
					     l < le; l += 64)
						_mm_prefetch(w0 + l, _MM_HINT_T1);
				if (q4) {
					/* 4 rows per zmm, one per 128-bit quarter: low nibbles
					 * against x[0..15], high ones against x[16..31] */
					__m512i xl = _mm512_broadcast_i32x4(_mm256_castsi256_si128(xq));
					__m512i xh = _mm512_broadcast_i32x4(_mm256_extracti128_si256(xq, 1));
#pragma GCC unroll 4
					for (int j = 0; j < 4; j++) {
						__m512i q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(wr[j] + ob)));
						q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(wr[4 + j] + ob)), 1);
						q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(wr[8 + j] + ob)), 2);
						q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(wr[12 + j] + ob)), 3);
						__m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
						Z[j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xl), hi, xh);
					}
				} else {
					xv = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(1, 0, 1, 0));
#pragma GCC unroll 8
					for (int i = 0; i < 8; i++) {
						__m512i q = _mm512_inserti64x4(
							_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(wr[zrow[i][0]] + ob))),
							_mm256_loadu_si256((const __m256i *)(wr[zrow[i][1]] + ob)), 1);
						Z[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(q, bias), xv);
					}
				}
				__m512i isum = _mm512_sub_epi32(reduce16(Z, q4), _mm512_set1_epi32((q4 ? 8 : 128) * xsum));
				__m512 d = _mm512_mul_ps(gather_d(w0 + (size_t)b * bs, off), _mm512_set1_ps(h2f(x[b].d)));
				acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc);
			}
			float tmp[16];
			_mm512_storeu_ps(tmp, acc);
			for (int r = 0; r < R; r++)
				a->Y[t * rows + rb + r] = tmp[r];
		}
	}
}

static void gemv_q8_0(const kern_mm_args_t *a, int64_t r0, int64_t r1) { gemv_q(a, r0, r1, 0); }
static void gemv_q4_0(const kern_mm_args_t *a, int64_t r0, int64_t r1) { gemv_q(a, r0, r1, 1); }

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

/* Q8_0-shaped tile: GR rows of int8 weights, scales dw[b * GR + r] and bias
 * corrections corr[b * GR + r]. For each (row, token): acc = fmaf(dw * dx,
 * (float)isum, acc) over the blocks. The weights of row r, block b are
 *   r16 = 0: 32 bytes at wp[r] + b * bstride (rows as in the file, or unpacked);
 *   r16 = 1: dword k at base + (b / 2) * pstride + off0 + (b % 2) * 512 + 64k + 4r
 *            (the R16 layout, kern.h). */
static inline __attribute__((always_inline))
void tile_q8_t(const kern_mm_args_t *a, int64_t row, int R, const int8_t *const *wp, size_t bstride,
	       const char *base, size_t pstride, size_t off0, const float *dw, const int32_t *corr, const int r16)
{
	int64_t nb = a->W->cols / 32, ng = (a->n + GT - 1) / GT;
	const size_t ks = r16 ? 64 : 4;
	for (int64_t g = 0; g < ng; g++) {
		__m512 acc[GR];
#pragma GCC unroll 16
		for (int r = 0; r < GR; r++)
			acc[r] = _mm512_setzero_ps();
		const char *xg = (const char *)a->xt + (size_t)g * nb * XT80_BYTES;
		for (int64_t b = 0; b < nb; b++) {
			const char *xb = xg + (size_t)b * XT80_BYTES;
			const char *wb = r16 ? base + (size_t)(b >> 1) * pstride + off0 + (size_t)(b & 1) * 512 : NULL;
			__m512i A[8];
#pragma GCC unroll 8
			for (int k = 0; k < 8; k++)
				A[k] = _mm512_load_si512(xb + 64 * k);
			__m512 dx = _mm512_load_ps(xb + 512);
#pragma GCC unroll 16
			for (int r = 0; r < GR; r++) {
				const int8_t *w = r16 ? (const int8_t *)wb + 4 * r : wp[r] + b * bstride;
				__m512i s = _mm512_setzero_si512();
#pragma GCC unroll 8
				for (int k = 0; k < 8; k++)
					s = _mm512_dpbusd_epi32(s, A[k], bcst32(w + ks * k));
				s = _mm512_sub_epi32(s, _mm512_set1_epi32(corr[b * GR + r]));
				__m512 d = _mm512_mul_ps(_mm512_set1_ps(dw[b * GR + r]), dx);
				acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[r]);
			}
		}
		store_tile(a, g, row, acc, R);
	}
}

static void tile_q8(const kern_mm_args_t *a, int64_t row, int R, const int8_t *const *wp, size_t bstride,
		    const float *dw, const int32_t *corr)
{
	tile_q8_t(a, row, R, wp, bstride, NULL, 0, 0, dw, corr, 0);
}

static void tile_r16(const kern_mm_args_t *a, int64_t row, const char *base, size_t pstride, size_t off0,
		     const float *dw, const int32_t *corr)
{
	tile_q8_t(a, row, GR, NULL, 0, base, pstride, off0, dw, corr, 1);
}

static inline int32_t sum_i8x32(const int8_t *w)
{
	__m256i v = _mm256_loadu_si256((const __m256i *)w);
	return hsum_i32(dot4(_mm256_set1_epi8(1), v));
}

static void mm_q8_0(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (!a->xt) {
		gemv_q8_0(a, r0, r1);
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
				dw[b * GR + r] = h2f(blk[b].d);
				corr[b * GR + r] = 128 * sum_i8x32(blk[b].qs);
			}
		}
		tile_q8(a, rb, R, wp, sizeof(kern_block_q8_0), dw, corr);
	}
}

static void mm_q4_0(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (!a->xt) {
		gemv_q4_0(a, r0, r1);
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
				dw[b * GR + r] = h2f(blk[b].d);
				corr[b * GR + r] = 128 * hsum_i32(dot4(_mm256_set1_epi8(1), q));
			}
		}
		tile_q8(a, rb, R, wp, 32, dw, corr);
	}
}


/* ---- R16 matrices (kern.h): one sequential stream per 16-row group ----
 * Up to R16_GEMV_MAX tokens (generation, and the small batches of
 * continuous batching): per pair of blocks, one cache line of 32 scales;
 * per block, 8 vectors (Q8_0 biased to u8; Q4_0: 4, split into low and
 * high nibbles) whose lane r holds 4 quants of row r, so 8 vpdpbusd
 * against one broadcast dword of the token each leave the 16 rows' block
 * dots in the 16 lanes of one vector: nothing to fold. The weights stay in
 * registers while up to RT tokens pass over them. Per token and block the
 * integer dots and float steps are those of gemv_q, so the bits are the
 * same. For one token, software prefetch made this single stream slower
 * (the hardware prefetcher follows it); with several tokens each cache line
 * takes several times longer to consume, fewer lines are in flight, and
 * prefetching GEMV_PF_PAIRS block pairs ahead (from 4 tokens up; at 2 it
 * did not help) makes a step of 8 tokens 8-25% faster (bench_shard). */
#define RT 8
#define GEMV_PF_PAIRS 6

static inline __m512i bcst_dw(const int8_t *p, int k)
{
	int32_t v;
	memcpy(&v, p + 4 * k, 4);
	return _mm512_set1_epi32(v);
}

static inline __attribute__((always_inline))
void gemv_r16(const kern_mm_args_t *a, int64_t r0, int64_t r1, int32_t *xs, const int q4)
{
	const int64_t nb = a->W->cols / 32, rows = a->W->rows, n = a->n;
	const size_t qb = q4 ? 16 : 32, pair = 64 + 2 * 16 * qb;
	const __m512i m4 = _mm512_set1_epi8(15), bias = _mm512_set1_epi8((char)0x80);
	/* each token block's sum, for the u8 bias of the weights: once per job
	 * and thread (the matrices of a job share their activations) */
	for (int64_t t = 0; a->fresh && t < n; t++) {
		const kern_block_q8_0 *x = (const kern_block_q8_0 *)((const char *)a->xq + (size_t)t * a->xrow);
		for (int64_t b = 0; b < nb; b++)
			xs[t * nb + b] = (q4 ? 8 : 128) *
				hsum_i32(dot4(_mm256_set1_epi8(1), _mm256_loadu_si256((const __m256i *)x[b].qs)));
	}
	for (int64_t rb = r0; rb < r1; rb += 16) {
		const char *G = (const char *)a->W->data + (size_t)rb * a->wrow;
		for (int64_t t0 = 0; t0 < n; t0 += RT) {
			const int nt = n - t0 < RT ? (int)(n - t0) : RT;
			const char *xr = (const char *)a->xq + (size_t)t0 * a->xrow;
			__m512 acc[RT];
#pragma GCC unroll 8
			for (int t = 0; t < RT; t++)
				acc[t] = _mm512_setzero_ps();
			for (int64_t p = 0; p < nb / 2; p++) {
				const char *P = G + (size_t)p * pair;
				/* first pass over the group only; an address past the
				 * matrix is harmless (prefetches never fault) */
				if (n >= 4 && t0 == 0)
					for (size_t o = 0; o < pair; o += 64)
						_mm_prefetch((const char *)((uintptr_t)P + GEMV_PF_PAIRS * pair + o), _MM_HINT_T0);
				__m512 dws[2] = { _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)P)),
						  _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(P + 32))) };
#pragma GCC unroll 2
				for (int h = 0; h < 2; h++) {
					const int64_t b = 2 * p + h;
					const char *Q = P + 64 + (size_t)h * 16 * qb;
					/* Wv[k]: quants 4k..4k+3 of the 16 rows, as u8 */
					__m512i Wv[8];
					if (q4) {
#pragma GCC unroll 4
						for (int k = 0; k < 4; k++) {
							__m512i q = _mm512_load_si512(Q + 64 * k);
							Wv[k] = _mm512_and_si512(q, m4);
							Wv[4 + k] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
						}
					} else {
#pragma GCC unroll 8
						for (int k = 0; k < 8; k++)
							Wv[k] = _mm512_xor_si512(_mm512_load_si512(Q + 64 * k), bias);
					}
#pragma GCC unroll 8
					for (int t = 0; t < RT; t++) {
						if (t >= nt)
							break;
						const kern_block_q8_0 *x = (const kern_block_q8_0 *)(xr + (size_t)t * a->xrow) + b;
						__m512i Z = _mm512_setzero_si512();
#pragma GCC unroll 8
						for (int k = 0; k < 8; k++)
							Z = _mm512_dpbusd_epi32(Z, Wv[k], bcst_dw(x->qs, k));
						__m512i isum = _mm512_sub_epi32(Z, _mm512_set1_epi32(xs[(t0 + t) * nb + b]));
						__m512 d = _mm512_mul_ps(dws[h], _mm512_set1_ps(h2f(x->d)));
						acc[t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum), acc[t]);
					}
				}
			}
#pragma GCC unroll 8
			for (int t = 0; t < RT; t++) {
				if (t >= nt)
					break;
				_mm512_storeu_ps(&a->Y[(t0 + t) * rows + rb], acc[t]);
			}
		}
	}
}

/* Larger batches: the token-tiled kernel reading the R16 weights in place;
 * Q4_0 groups are first unpacked to int8 (q - 8) in that same layout. The
 * scales and bias corrections of a group come from whole vectors (one row
 * per lane). */
static void mm_r16_tiled(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws, const int q4)
{
	int64_t nb = a->W->cols / 32;
	const size_t qb = q4 ? 16 : 32, pair = 64 + 2 * 16 * qb;
	float *dw = ws;
	int32_t *corr = (int32_t *)(dw + GR * nb);
	char *unp = (char *)(corr + GR * nb);      /* Q4_0: nb blocks of 8 x 64 bytes */
	const __m512i m4 = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8), ones = _mm512_set1_epi8(1);
	for (int64_t rb = r0; rb < r1; rb += 16) {
		const char *G = (const char *)a->W->data + (size_t)rb * a->wrow;
		for (int64_t b = 0; b < nb; b++) {
			const char *P = G + (size_t)(b / 2) * pair;
			const char *Q = P + 64 + (size_t)(b % 2) * 16 * qb;
			__m512i Wv[8];
			if (q4) {
				for (int k = 0; k < 4; k++) {
					__m512i q = _mm512_load_si512(Q + 64 * k);
					Wv[k] = _mm512_sub_epi8(_mm512_and_si512(q, m4), eight);
					Wv[4 + k] = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(q, 4), m4), eight);
				}
				for (int k = 0; k < 8; k++)
					_mm512_store_si512(unp + (size_t)b * 512 + 64 * k, Wv[k]);
			} else {
				for (int k = 0; k < 8; k++)
					Wv[k] = _mm512_load_si512(Q + 64 * k);
			}
			__m512i sum = _mm512_setzero_si512();
			for (int k = 0; k < 8; k++)
				sum = _mm512_dpbusd_epi32(sum, ones, Wv[k]);
			_mm512_storeu_si512(corr + b * 16, _mm512_slli_epi32(sum, 7));
			_mm512_storeu_ps(dw + b * 16,
					 _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(P + 32 * (b % 2)))));
		}
		if (q4)
			tile_r16(a, rb, unp, 1024, 0, dw, corr);
		else
			tile_r16(a, rb, G, pair, 64, dw, corr);
	}
}

static void mm_r16_q8_0(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (a->n <= R16_GEMV_MAX)
		gemv_r16(a, r0, r1, ws, 0);
	else
		mm_r16_tiled(a, r0, r1, ws, 0);
}

static void mm_r16_q4_0(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (a->n <= R16_GEMV_MAX)
		gemv_r16(a, r0, r1, ws, 1);
	else
		mm_r16_tiled(a, r0, r1, ws, 1);
}

static size_t mm_r16_ws(int type, int64_t cols, int64_t n)
{
	(void)type;
	int64_t nb = cols / 32;
	size_t tiled = (size_t)GR * (size_t)nb * (4 + 4 + 32);
	size_t sums = (size_t)n * (size_t)nb * 4;
	return (tiled > sums ? tiled : sums) + 64;
}

/* ---- K-quant tiles: KR rows x 16 tokens ----
 * Each row's super-block is unpacked once per row tile to int8 in element
 * order with its integer scales, and the bias corrections folded into one
 * constant: S1 = sum_j sc_j * (dot_j - 128 * sum_j(q)) = sum_j sc_j * dot_j - c. */
#define KR 8

typedef struct kunp {
	int8_t q[QK_K];            /* Q4_K: q (0..15); Q6_K: q - 32 */
	int32_t sc[16];            /* Q4_K: 8 scales; Q6_K: 16 */
	int32_t mn2[4];            /* Q4_K mins as int16 pairs (2p, 2p + 1) */
	int32_t c;                 /* sum_j sc_j * 128 * sum(q over j) */
	float d, dmin;
	int32_t pad[9];
} kunp_t;
static_assert(sizeof(kunp_t) % 64 == 0, "kunp_t keeps 64-byte alignment");

static void unpack_q4_k(const kern_block_q4_k *w, kunp_t *u)
{
	const __m256i m4 = _mm256_set1_epi8(15);
	int sc[8], m[8];
	q4k_scales(w->scales, sc, m);
	int32_t c = 0;
	for (int k = 0; k < 4; k++) {
		__m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * k));
		__m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
		_mm256_storeu_si256((__m256i *)(u->q + 64 * k), lo);
		_mm256_storeu_si256((__m256i *)(u->q + 64 * k + 32), hi);
		c += sc[2 * k] * 128 * hsum_i32(dot4(_mm256_set1_epi8(1), lo));
		c += sc[2 * k + 1] * 128 * hsum_i32(dot4(_mm256_set1_epi8(1), hi));
	}
	for (int j = 0; j < 8; j++)
		u->sc[j] = sc[j];
	for (int p = 0; p < 4; p++)
		u->mn2[p] = (int32_t)((uint32_t)m[2 * p] | ((uint32_t)m[2 * p + 1] << 16));
	u->c = c;
	u->d = h2f(w->d);
	u->dmin = h2f(w->dmin);
}

static void unpack_q6_k(const kern_block_q6_k *w, kunp_t *u)
{
	const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
	int32_t c = 0;
	for (int h = 0; h < 2; h++) {
		__m256i l0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h));
		__m256i l1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32));
		__m256i hb = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
		__m256i q[4];
		q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m30));
		q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m30));
		q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(hb, m30));
		q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
				       _mm256_and_si256(_mm256_srli_epi16(hb, 2), m30));
		for (int k = 0; k < 4; k++) {
			__m256i v = _mm256_sub_epi8(q[k], k32);
			_mm256_storeu_si256((__m256i *)(u->q + 128 * h + 32 * k), v);
			/* sums of the two 16-element sub-blocks */
			__m256i s = dot4(_mm256_set1_epi8(1), v);
			__m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
			lo = _mm_add_epi32(lo, _mm_shuffle_epi32(lo, 0x4e));
			lo = _mm_add_epi32(lo, _mm_shuffle_epi32(lo, 0xb1));
			hi = _mm_add_epi32(hi, _mm_shuffle_epi32(hi, 0x4e));
			hi = _mm_add_epi32(hi, _mm_shuffle_epi32(hi, 0xb1));
			int j = 8 * h + 2 * k;
			c += w->scales[j] * 128 * _mm_cvtsi128_si32(lo);
			c += w->scales[j + 1] * 128 * _mm_cvtsi128_si32(hi);
		}
	}
	for (int j = 0; j < 16; j++)
		u->sc[j] = w->scales[j];
	u->c = c;
	u->d = h2f(w->d);
}

static void tile_q4_k(const kern_mm_args_t *a, int64_t row, int R, const kunp_t *U, int64_t nb)
{
	int64_t ng = (a->n + GT - 1) / GT;
	for (int64_t g = 0; g < ng; g++) {
		__m512 acc[KR];
#pragma GCC unroll 8
		for (int r = 0; r < KR; r++)
			acc[r] = _mm512_setzero_ps();
		const char *xg = (const char *)a->xt + (size_t)g * nb * XTK_BYTES;
		for (int64_t b = 0; b < nb; b++) {
			const char *xb = xg + (size_t)b * XTK_BYTES;
			__m512i S[KR];
#pragma GCC unroll 8
			for (int r = 0; r < KR; r++)
				S[r] = _mm512_setzero_si512();
			for (int j = 0; j < 8; j++) {
				__m512i A[8];
#pragma GCC unroll 8
				for (int k = 0; k < 8; k++)
					A[k] = _mm512_load_si512(xb + (8 * j + k) * 64);
#pragma GCC unroll 8
				for (int r = 0; r < KR; r++) {
					const kunp_t *u = &U[r * nb + b];
					__m512i t = _mm512_setzero_si512();
#pragma GCC unroll 8
					for (int k = 0; k < 8; k++)
						t = _mm512_dpbusd_epi32(t, A[k], bcst32(u->q + 32 * j + 4 * k));
					S[r] = _mm512_add_epi32(S[r], _mm512_mullo_epi32(t, _mm512_set1_epi32(u->sc[j])));
				}
			}
			__m512 dx = _mm512_load_ps(xb + 4096);
			__m512i X2[4];
			for (int p = 0; p < 4; p++)
				X2[p] = _mm512_load_si512(xb + 4096 + 64 + 64 * p);
#pragma GCC unroll 8
			for (int r = 0; r < KR; r++) {
				const kunp_t *u = &U[r * nb + b];
				__m512i s1 = _mm512_sub_epi32(S[r], _mm512_set1_epi32(u->c));
				__m512i s2 = _mm512_setzero_si512();
				for (int p = 0; p < 4; p++)
					s2 = _mm512_dpwssd_epi32(s2, X2[p], _mm512_set1_epi32(u->mn2[p]));
				__m512 d = _mm512_mul_ps(dx, _mm512_set1_ps(u->d));
				__m512 dm = _mm512_mul_ps(dx, _mm512_set1_ps(u->dmin));
				acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s1), acc[r]);
				acc[r] = _mm512_fnmadd_ps(dm, _mm512_cvtepi32_ps(s2), acc[r]);
			}
		}
		store_tile(a, g, row, acc, R);
	}
}

static void tile_q6_k(const kern_mm_args_t *a, int64_t row, int R, const kunp_t *U, int64_t nb)
{
	int64_t ng = (a->n + GT - 1) / GT;
	for (int64_t g = 0; g < ng; g++) {
		__m512 acc[KR];
#pragma GCC unroll 8
		for (int r = 0; r < KR; r++)
			acc[r] = _mm512_setzero_ps();
		const char *xg = (const char *)a->xt + (size_t)g * nb * XTK_BYTES;
		for (int64_t b = 0; b < nb; b++) {
			const char *xb = xg + (size_t)b * XTK_BYTES;
			__m512i S[KR];
#pragma GCC unroll 8
			for (int r = 0; r < KR; r++)
				S[r] = _mm512_setzero_si512();
			for (int j = 0; j < 8; j++) {
				__m512i A[8];
#pragma GCC unroll 8
				for (int k = 0; k < 8; k++)
					A[k] = _mm512_load_si512(xb + (8 * j + k) * 64);
#pragma GCC unroll 8
				for (int r = 0; r < KR; r++) {
					const kunp_t *u = &U[r * nb + b];
					__m512i t0 = _mm512_setzero_si512(), t1 = _mm512_setzero_si512();
#pragma GCC unroll 4
					for (int k = 0; k < 4; k++) {
						t0 = _mm512_dpbusd_epi32(t0, A[k], bcst32(u->q + 32 * j + 4 * k));
						t1 = _mm512_dpbusd_epi32(t1, A[k + 4], bcst32(u->q + 32 * j + 16 + 4 * k));
					}
					S[r] = _mm512_add_epi32(S[r], _mm512_mullo_epi32(t0, _mm512_set1_epi32(u->sc[2 * j])));
					S[r] = _mm512_add_epi32(S[r], _mm512_mullo_epi32(t1, _mm512_set1_epi32(u->sc[2 * j + 1])));
				}
			}
			__m512 dx = _mm512_load_ps(xb + 4096);
#pragma GCC unroll 8
			for (int r = 0; r < KR; r++) {
				const kunp_t *u = &U[r * nb + b];
				__m512i s = _mm512_sub_epi32(S[r], _mm512_set1_epi32(u->c));
				__m512 d = _mm512_mul_ps(dx, _mm512_set1_ps(u->d));
				acc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[r]);
			}
		}
		store_tile(a, g, row, acc, R);
	}
}

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

static void mm_k(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	if (!a->xt) {
		mm_pairs(a, r0, r1);
		return;
	}
	int q6 = a->W->type == KERN_Q6_K;
	int64_t nb = a->W->cols / QK_K;
	kunp_t *U = (kunp_t *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
	for (int64_t rb = r0; rb < r1; rb += KR) {
		int R = r1 - rb < KR ? (int)(r1 - rb) : KR;
		for (int r = 0; r < KR; r++) {
			const char *w = (const char *)a->W->data + (size_t)(rb + (r < R ? r : R - 1)) * a->wrow;
			for (int64_t b = 0; b < nb; b++) {
				if (q6)
					unpack_q6_k((const kern_block_q6_k *)w + b, &U[r * nb + b]);
				else
					unpack_q4_k((const kern_block_q4_k *)w + b, &U[r * nb + b]);
			}
		}
		if (q6)
			tile_q6_k(a, rb, R, U, nb);
		else
			tile_q4_k(a, rb, R, U, nb);
	}
}
/* ---- float weights (F32, F16, BF16) against f32 tokens ----
 * The canonical striped order is one zmm per (row, token): lane l holds the
 * fmaf chain of elements i = l (mod 16); the last partial chunk updates
 * only its lanes (mask3). Tiles of FR rows x FT tokens give independent
 * chains; rows or tokens past the end repeat the last one and are dropped. */
static inline float fold16_zmm(__m512 v)
{
	return fold16_2x8(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
}

static inline __attribute__((always_inline)) __m512 loadw(const void *w, int type, int64_t i, __mmask16 m)
{
	if (type == KERN_F32)
		return _mm512_maskz_loadu_ps(m, (const float *)w + i);
	__m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i);
	if (type == KERN_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline))
void tile_float(const kern_mm_args_t *a, int64_t rb, int R, int64_t tb, int T, const int type,
		const int FR, const int FT)
{
	int64_t cols = a->W->cols, rows = a->W->rows;
	const char *w[8];
	const float *x[8];
#pragma GCC unroll 8
	for (int r = 0; r < FR; r++)
		w[r] = (const char *)a->W->data + (size_t)(rb + (r < R ? r : R - 1)) * a->wrow;
#pragma GCC unroll 8
	for (int t = 0; t < FT; t++)
		x[t] = (const float *)((const char *)a->xq + (size_t)(tb + (t < T ? t : T - 1)) * a->xrow);
	__m512 acc[8][8];
#pragma GCC unroll 8
	for (int r = 0; r < FR; r++)
#pragma GCC unroll 8
		for (int t = 0; t < FT; t++)
			acc[r][t] = _mm512_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= cols; i += 16) {
		__m512 wv[8];
#pragma GCC unroll 8
		for (int r = 0; r < FR; r++)
			wv[r] = loadw(w[r], type, i, 0xffff);
#pragma GCC unroll 8
		for (int t = 0; t < FT; t++) {
			__m512 xv = _mm512_loadu_ps(x[t] + i);
#pragma GCC unroll 8
			for (int r = 0; r < FR; r++)
				acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
	if (i < cols) {
		__mmask16 m = (__mmask16)((1u << (cols - i)) - 1);
		__m512 wv[8];
#pragma GCC unroll 8
		for (int r = 0; r < FR; r++)
			wv[r] = loadw(w[r], type, i, m);
#pragma GCC unroll 8
		for (int t = 0; t < FT; t++) {
			__m512 xv = _mm512_maskz_loadu_ps(m, x[t] + i);
#pragma GCC unroll 8
			for (int r = 0; r < FR; r++)
				acc[r][t] = _mm512_mask3_fmadd_ps(wv[r], xv, acc[r][t], m);
		}
	}
#pragma GCC unroll 8
	for (int t = 0; t < T; t++)
#pragma GCC unroll 8
		for (int r = 0; r < R; r++)
			a->Y[(tb + t) * rows + rb + r] = fold16_zmm(acc[r][t]);
}

static inline __attribute__((always_inline))
void mm_float_t(const kern_mm_args_t *a, int64_t r0, int64_t r1, const int type)
{
	if (a->n >= 5) {
		for (int64_t rb = r0; rb < r1; rb += 4)
			for (int64_t tb = 0; tb < a->n; tb += 5)
				tile_float(a, rb, r1 - rb < 4 ? (int)(r1 - rb) : 4, tb,
					   a->n - tb < 5 ? (int)(a->n - tb) : 5, type, 4, 5);
	} else {
		for (int64_t rb = r0; rb < r1; rb += 8)
			for (int64_t tb = 0; tb < a->n; tb++)
				tile_float(a, rb, r1 - rb < 8 ? (int)(r1 - rb) : 8, tb, 1, type, 8, 1);
	}
}

static void mm_f32(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws) { mm_float_t(a, r0, r1, KERN_F32); }
static void mm_f16(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws) { mm_float_t(a, r0, r1, KERN_F16); }
static void mm_bf16(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws) { mm_float_t(a, r0, r1, KERN_BF16); }

static size_t mm_ws(int type, int64_t cols, int64_t n)
{
	if (type == KERN_F32 || type == KERN_F16 || type == KERN_BF16)
		return 0;
	if (type == KERN_Q4_K || type == KERN_Q6_K)
		return (size_t)KR * (size_t)(cols / QK_K) * sizeof(kunp_t) + 64;
	return (size_t)GR * (size_t)cols * 2 + 4096;
}

/* The common table with the zmm K-quant dots in place of the ymm ones. */
#pragma GCC diagnostic ignored "-Woverride-init"
static const kern_ops_t ops_avx512 = {
	X86_COMMON_OPS,
	.vec_dot[KERN_Q4_K] = z_vec_dot_q4_k,
	.vec_dot[KERN_Q6_K] = z_vec_dot_q6_k,
	.mm = {
		[KERN_Q8_0] = mm_q8_0,
		[KERN_Q4_0] = mm_q4_0,
		[KERN_Q4_K] = mm_k,
		[KERN_Q6_K] = mm_k,
		[KERN_F32] = mm_f32,
		[KERN_F16] = mm_f16,
		[KERN_BF16] = mm_bf16,
	},
	.mm_ws = mm_ws,
	.mm_r16 = {
		[KERN_Q8_0] = mm_r16_q8_0,
		[KERN_Q4_0] = mm_r16_q4_0,
	},
	.mm_r16_ws = mm_r16_ws,
	.mm_prep_size = mm_prep_size,
	.mm_prep = mm_prep,
};

const kern_ops_t *kern__ops_avx512(void) { return &ops_avx512; }
#else
#include "kern/quants.h"
const kern_ops_t *kern__ops_avx512(void) { return NULL; }
#endif
