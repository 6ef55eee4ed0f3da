/* x86_common.h - 256-bit kernels shared by the AVX2 and AVX-512 files.
 *
 * Included by kern_avx2.c and kern_avx512.c, each compiled with its own
 * target flags; every function here is static, so each file gets its own
 * copy. The only difference is the u8 x s8 dot primitive: AVX2 uses
 * vpmaddubsw + vpmaddwd, AVX-512 VNNI uses vpdpbusd. Both are exact for our
 * operands (pair sums of vpmaddubsw stay below 2^15: |u| <= 128, |s| <= 127
 * for Q8_0; u <= 63 for the 4- and 6-bit types), so both give the same
 * integers, and the float steps follow quants_ref.c operation by operation.
 */
#ifndef COLONY_KERN_X86_COMMON_H
#define COLONY_KERN_X86_COMMON_H

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kern/quants.h"

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#ifdef X86_VNNI
/* int32 lane k = sum of the 4 products u8 * s8 in bytes 4k..4k+3 */
static inline __m256i dot4(__m256i u, __m256i s)
{
	return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}
/* Like dot4, each lane times a (lanes 0-3) or b (lanes 4-7). */
static inline __m256i dot4_sc(__m256i u, __m256i s, int a, int b)
{
	return _mm256_mullo_epi32(dot4(u, s), _mm256_setr_epi32(a, a, a, a, b, b, b, b));
}
#else
static inline __m256i dot4(__m256i u, __m256i s)
{
	return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
static inline __m256i dot4_sc(__m256i u, __m256i s, int a, int b)
{
	return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s),
				 _mm256_setr_epi16((short)a, (short)a, (short)a, (short)a, (short)a, (short)a, (short)a, (short)a,
						   (short)b, (short)b, (short)b, (short)b, (short)b, (short)b, (short)b, (short)b));
}
#endif

static inline int hsum_i32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
	return _mm_cvtsi128_si32(s);
}

static inline float hmax_f32(__m256 v)
{
	__m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_max_ps(s, _mm_movehl_ps(s, s));
	s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
	return _mm_cvtss_f32(s);
}

/* kern__fold16 on lanes 0-7 in lo and 8-15 in hi. */
static inline float fold16_2x8(__m256 lo, __m256 hi)
{
	__m256 a = _mm256_add_ps(lo, hi);
	__m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
	b = _mm_add_ps(b, _mm_movehl_ps(b, b));
	b = _mm_add_ss(b, _mm_shuffle_ps(b, b, 1));
	return _mm_cvtss_f32(b);
}

/* Finishes a striped dot: the lanes go to memory, the tail (fewer than 16
 * elements, starting at a multiple of 16) continues each lane's chain. */
#define STRIPED_TAIL(lo, hi, i, n, A, B)                                       \
	do {                                                                   \
		float l_[16];                                                  \
		_mm256_storeu_ps(l_, lo);                                      \
		_mm256_storeu_ps(l_ + 8, hi);                                  \
		for (; i < n; i++)                                             \
			l_[i & 15] = fmaf(A, B, l_[i & 15]);                   \
		return kern__fold16(l_);                                       \
	} while (0)

static float x_dot_f32(int64_t n, const float *a, const float *b)
{
	__m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), lo);
		hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), hi);
	}
	if (i == n)
		return fold16_2x8(lo, hi);
	STRIPED_TAIL(lo, hi, i, n, a[i], b[i]);
}

static inline __m256 load_f16(const uint16_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 load_bf16(const uint16_t *p)
{
	__m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
	return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static float x_dot_f32_f16(int64_t n, const float *a, const uint16_t *b)
{
	__m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load_f16(b + i), lo);
		hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load_f16(b + i + 8), hi);
	}
	if (i == n)
		return fold16_2x8(lo, hi);
	STRIPED_TAIL(lo, hi, i, n, a[i], h2f(b[i]));
}

static float x_dot_f32_bf16(int64_t n, const float *a, const uint16_t *b)
{
	__m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16) {
		lo = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load_bf16(b + i), lo);
		hi = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load_bf16(b + i + 8), hi);
	}
	if (i == n)
		return fold16_2x8(lo, hi);
	STRIPED_TAIL(lo, hi, i, n, a[i], kern_bf16_to_f32(b[i]));
}

static void x_vec_dot_f32(int64_t n, float *s, const void *x, const void *y)
{
	*s = x_dot_f32(n, y, x);
}
static void x_vec_dot_f16(int64_t n, float *s, const void *x, const void *y)
{
	*s = x_dot_f32_f16(n, y, x);
}
static void x_vec_dot_bf16(int64_t n, float *s, const void *x, const void *y)
{
	*s = x_dot_f32_bf16(n, y, x);
}

static void x_axpy_f32(int64_t n, float a, const float *x, float *y)
{
	__m256 va = _mm256_set1_ps(a);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] = fmaf(a, x[i], y[i]);
}

static void x_axpy_f16(int64_t n, float a, const uint16_t *x, float *y)
{
	__m256 va = _mm256_set1_ps(a);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16(x + i), _mm256_loadu_ps(y + i)));
	for (; i < n; i++)
		y[i] = fmaf(a, h2f(x[i]), y[i]);
}

/* ---- activation quantizers (same bytes as the _ref ones) ---- */

/* 32 floats -> 32 int8 = nearbyint(clamp(x * id, -127, 127)). */
static inline __m256i quant32(const float *x, __m256 id)
{
	const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
	__m256i q[4];
	for (int k = 0; k < 4; k++) {
		/* max(v, lo): a NaN v gives lo, as fmaxf in the ref */
		__m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), id), lo), hi);
		q[k] = _mm256_cvtps_epi32(v);   /* MXCSR default: round half to even */
	}
	__m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
	__m256i p = _mm256_packs_epi16(p01, p23);
	return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline float amax32(const float *x)
{
	const __m256 sign = _mm256_set1_ps(-0.0f);
	__m256 m = _mm256_setzero_ps();
	for (int k = 0; k < 4; k++)
		m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k)));
	return hmax_f32(m);
}

static void x_quantize_q8_0(const float *x, void *vy, int64_t n)
{
	kern_block_q8_0 *b = vy;
	for (int64_t i = 0; i < n / QK8_0; i++) {
		const float *v = x + i * QK8_0;
		float d = amax32(v) / 127.0f;
		float id = d != 0.0f ? 1.0f / d : 0.0f;
		b[i].d = kern_f32_to_f16(d);
		_mm256_storeu_si256((__m256i *)b[i].qs, quant32(v, _mm256_set1_ps(id)));
	}
}

static void x_quantize_q8_k(const float *x, void *vy, int64_t n)
{
	kern_block_q8_k *b = vy;
	for (int64_t i = 0; i < n / QK_K; i++) {
		const float *v = x + i * QK_K;
		float amax = 0.0f;
		for (int k = 0; k < 8; k++)
			amax = fmaxf(amax, amax32(v + 32 * k));
		float d = amax / 127.0f;
		float id = d != 0.0f ? 1.0f / d : 0.0f;
		b[i].d = d;
		__m256 vid = _mm256_set1_ps(id);
		for (int k = 0; k < 8; k++) {
			__m256i q = quant32(v + 32 * k, vid);
			_mm256_storeu_si256((__m256i *)(b[i].qs + 32 * k), q);
			/* two 16-byte group sums -> bsums[2k], bsums[2k+1] */
			__m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
			__m128i lo = _mm256_castsi256_si128(s), hi = _mm256_extracti128_si256(s, 1);
			lo = _mm_add_epi32(lo, _mm_shuffle_epi32(lo, 0x4e));
			lo = _mm_add_epi32(lo, _mm_shuffle_epi32(lo, 0xb1));
			hi = _mm_add_epi32(hi, _mm_shuffle_epi32(hi, 0x4e));
			hi = _mm_add_epi32(hi, _mm_shuffle_epi32(hi, 0xb1));
			b[i].bsums[2 * k] = (int16_t)_mm_cvtsi128_si32(lo);
			b[i].bsums[2 * k + 1] = (int16_t)_mm_cvtsi128_si32(hi);
		}
	}
}

/* ---- block dots, one pair ---- */

/* Exact int32 dot of one Q8_0 weight block with one Q8_0 activation block. */
static inline int isum_q8_0(const int8_t *w, const int8_t *x)
{
	__m256i wq = _mm256_loadu_si256((const __m256i *)w);
	__m256i xq = _mm256_loadu_si256((const __m256i *)x);
	return hsum_i32(dot4(_mm256_abs_epi8(wq), _mm256_sign_epi8(xq, wq)));
}

static void x_vec_dot_q8_0(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_block_q8_0 *w = vx, *a = vy;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK8_0; i++) {
		int isum = isum_q8_0(w[i].qs, a[i].qs);
		acc = fmaf(h2f(w[i].d) * h2f(a[i].d), (float)isum, acc);
	}
	*s = acc;
}

/* The 32 nibbles of a Q4_0 block as bytes 0..15 in element order. */
static inline __m256i unpack_q4_0(const uint8_t *qs)
{
	__m128i q = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(15);
	return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
}

static inline int isum_q4_0(const uint8_t *qs, const int8_t *x)
{
	__m256i xq = _mm256_loadu_si256((const __m256i *)x);
	__m256i p = dot4(unpack_q4_0(qs), xq);
	__m256i sx = dot4(_mm256_set1_epi8(1), xq);
	return hsum_i32(_mm256_sub_epi32(p, _mm256_slli_epi32(sx, 3)));
}

static void x_vec_dot_q4_0(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_block_q4_0 *w = vx;
	const kern_block_q8_0 *a = vy;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK4_0; i++) {
		int isum = isum_q4_0(w[i].qs, a[i].qs);
		acc = fmaf(h2f(w[i].d) * h2f(a[i].d), (float)isum, acc);
	}
	*s = acc;
}

static inline void q4k_scales(const uint8_t *s, int *sc, int *m)
{
	for (int j = 0; j < 8; j++)
		kern__q4k_scale_min(s, j, &sc[j], &m[j]);
}

/* S1 = sum_j sc_j * isum_j of one Q4_K block against one Q8_K block. */
static inline int s1_q4_k(const kern_block_q4_k *w, const kern_block_q8_k *a, const int *sc)
{
	const __m256i m4 = _mm256_set1_epi8(15);
	__m256i acc = _mm256_setzero_si256();
	for (int c = 0; c < 4; c++) {
		__m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * c));
		__m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
		__m256i xl = _mm256_loadu_si256((const __m256i *)(a->qs + 64 * c));
		__m256i xh = _mm256_loadu_si256((const __m256i *)(a->qs + 64 * c + 32));
		acc = _mm256_add_epi32(acc, dot4_sc(lo, xl, sc[2 * c], sc[2 * c]));
		acc = _mm256_add_epi32(acc, dot4_sc(hi, xh, sc[2 * c + 1], sc[2 * c + 1]));
	}
	return hsum_i32(acc);
}

static void x_vec_dot_q4_k(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_block_q4_k *w = vx;
	const kern_block_q8_k *a = vy;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK_K; i++) {
		int sc[8], m[8];
		q4k_scales(w[i].scales, sc, m);
		int s1 = s1_q4_k(&w[i], &a[i], sc), s2 = 0;
		for (int j = 0; j < 8; j++)
			s2 += m[j] * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
		float d = a[i].d * h2f(w[i].d), dm = a[i].d * h2f(w[i].dmin);
		acc = fmaf(d, (float)s1, acc);
		acc = fmaf(-dm, (float)s2, acc);
	}
	*s = acc;
}

/* S = sum_j sc_j * sum_{e in j} (q_e - 32) x_e of one Q6_K block. */
static inline int s_q6_k(const kern_block_q6_k *w, const kern_block_q8_k *a)
{
	const __m256i m4 = _mm256_set1_epi8(15), m30 = _mm256_set1_epi8(0x30);
	const int8_t *sc = w->scales;
	__m256i acc = _mm256_setzero_si256();
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
			__m256i x = _mm256_loadu_si256((const __m256i *)(a->qs + 128 * h + 32 * k));
			int j = 8 * h + 2 * k;
			acc = _mm256_add_epi32(acc, dot4_sc(q[k], x, sc[j], sc[j + 1]));
		}
	}
	/* the -32 offset: 32 * sum_j sc_j * (sum of x over sub-block j) */
	__m256i bs = _mm256_loadu_si256((const __m256i *)a->bsums);
	__m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
	int off = hsum_i32(_mm256_madd_epi16(bs, sc16));
	return hsum_i32(acc) - 32 * off;
}

static void x_vec_dot_q6_k(int64_t n, float *s, const void *vx, const void *vy)
{
	const kern_block_q6_k *w = vx;
	const kern_block_q8_k *a = vy;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK_K; i++) {
		int si = s_q6_k(&w[i], &a[i]);
		acc = fmaf(a[i].d * h2f(w[i].d), (float)si, acc);
	}
	*s = acc;
}

#define X86_COMMON_OPS                                          \
	.vec_dot = {                                            \
		[KERN_F32] = x_vec_dot_f32,                     \
		[KERN_F16] = x_vec_dot_f16,                     \
		[KERN_BF16] = x_vec_dot_bf16,                   \
		[KERN_Q8_0] = x_vec_dot_q8_0,                   \
		[KERN_Q4_0] = x_vec_dot_q4_0,                   \
		[KERN_Q4_K] = x_vec_dot_q4_k,                   \
		[KERN_Q6_K] = x_vec_dot_q6_k,                   \
	},                                                      \
	.quantize = {                                           \
		[KERN_Q8_0] = x_quantize_q8_0,                  \
		[KERN_Q8_K] = x_quantize_q8_k,                  \
	},                                                      \
	.dot_f32 = x_dot_f32,                                   \
	.dot_f32_f16 = x_dot_f32_f16,                           \
	.axpy_f32 = x_axpy_f32,                                 \
	.axpy_f16 = x_axpy_f16

#endif
