/* quants_ref.c - the scalar reference kernels, one per type.
 *
 * These define the results every SIMD kernel must reproduce bit for bit.
 *
 * Canonical orders (why they are ISA-independent):
 *   - Block-quantized dots (Q8_0, Q4_0 against Q8_0; Q4_K, Q6_K against
 *     Q8_K) compute each block's integer dot product exactly in int32 (no
 *     order dependence: integer addition is associative), then fold the
 *     blocks into one f32 accumulator sequentially, block 0 first:
 *       Q8_0, Q4_0: acc = fmaf(dw * dx, (float)isum, acc)
 *       Q4_K:       S1 = sum_j sc_j * isum_j, S2 = sum_j m_j * xsum_j
 *                   acc = fmaf(dx * d, (float)S1, acc)
 *                   acc = fmaf(-(dx * dmin), (float)S2, acc)
 *       Q6_K:       S = sum_j sc_j * isum_j;  acc = fmaf(dx * d, (float)S, acc)
 *     SIMD kernels vectorise across (row, token) pairs or compute the
 *     integer parts in any order, and then apply the same float operations.
 *   - Float dots (F32, F16, BF16 weights against f32, and kern_dot_f32*):
 *     16 lanes; element i goes to lane i mod 16 with fmaf, in increasing i;
 *     then lanes fold by halves (kern__fold16). AVX-512 keeps one 16-lane
 *     register, AVX2 two 8-lane ones: the same operations.
 *   - Quantizers: d = amax / 127 (Q8_0, Q8_K), id = d ? 1/d : 0,
 *     q = nearbyintf(clamp(x * id)) - round half to even, as SIMD converts.
 */
#include <math.h>
#include <string.h>

#include "kern/quants.h"

static inline float clampf(float v, float lo, float hi)
{
	/* fmaxf first: a NaN becomes lo, as SIMD max/min do with this order. */
	return fminf(fmaxf(v, lo), hi);
}

/* ---- F32 / F16 / BF16 ---- */

void kern__f32_to_float_ref(const void *x, float *y, int64_t n)
{
	memcpy(y, x, (size_t)n * sizeof(float));
}

void kern__f32_from_float_ref(const float *x, void *y, int64_t n)
{
	memcpy(y, x, (size_t)n * sizeof(float));
}

void kern__f16_to_float_ref(const void *x, float *y, int64_t n)
{
	const uint16_t *h = x;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_f16_to_f32(h[i]);
}

void kern__f16_from_float_ref(const float *x, void *y, int64_t n)
{
	uint16_t *h = y;
	for (int64_t i = 0; i < n; i++)
		h[i] = kern_f32_to_f16(x[i]);
}

void kern__bf16_to_float_ref(const void *x, float *y, int64_t n)
{
	const uint16_t *h = x;
	for (int64_t i = 0; i < n; i++)
		y[i] = kern_bf16_to_f32(h[i]);
}

void kern__bf16_from_float_ref(const float *x, void *y, int64_t n)
{
	uint16_t *h = y;
	for (int64_t i = 0; i < n; i++)
		h[i] = kern_f32_to_bf16(x[i]);
}

float kern__dot_f32_ref(int64_t n, const float *a, const float *b)
{
	float acc[16] = { 0 };
	for (int64_t i = 0; i < n; i++)
		acc[i & 15] = fmaf(a[i], b[i], acc[i & 15]);
	return kern__fold16(acc);
}

float kern__dot_f32_f16_ref(int64_t n, const float *a, const uint16_t *b)
{
	float acc[16] = { 0 };
	for (int64_t i = 0; i < n; i++)
		acc[i & 15] = fmaf(a[i], kern_f16_to_f32(b[i]), acc[i & 15]);
	return kern__fold16(acc);
}

static float dot_f32_bf16_ref(int64_t n, const float *a, const uint16_t *b)
{
	float acc[16] = { 0 };
	for (int64_t i = 0; i < n; i++)
		acc[i & 15] = fmaf(a[i], kern_bf16_to_f32(b[i]), acc[i & 15]);
	return kern__fold16(acc);
}

void kern__axpy_f32_ref(int64_t n, float a, const float *x, float *y)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = fmaf(a, x[i], y[i]);
}

void kern__axpy_f16_ref(int64_t n, float a, const uint16_t *x, float *y)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = fmaf(a, kern_f16_to_f32(x[i]), y[i]);
}

/* Weights x, activations y (f32). */
void kern__vec_dot_f32_ref(int64_t n, float *s, const void *x, const void *y)
{
	*s = kern__dot_f32_ref(n, y, x);
}

void kern__vec_dot_f16_ref(int64_t n, float *s, const void *x, const void *y)
{
	*s = kern__dot_f32_f16_ref(n, y, x);
}

void kern__vec_dot_bf16_ref(int64_t n, float *s, const void *x, const void *y)
{
	*s = dot_f32_bf16_ref(n, y, x);
}

/* ---- Q8_0 ---- */

void kern__q8_0_to_float_ref(const void *x, float *y, int64_t n)
{
	const kern_block_q8_0 *b = x;
	for (int64_t i = 0; i < n / QK8_0; i++) {
		float d = kern_f16_to_f32(b[i].d);
		for (int j = 0; j < QK8_0; j++)
			y[i * QK8_0 + j] = d * (float)b[i].qs[j];
	}
}

void kern__q8_0_from_float_ref(const float *x, void *y, int64_t n)
{
	kern_block_q8_0 *b = y;
	for (int64_t i = 0; i < n / QK8_0; i++) {
		const float *v = x + i * QK8_0;
		float amax = 0.0f;
		for (int j = 0; j < QK8_0; j++)
			amax = fmaxf(amax, fabsf(v[j]));
		float d = amax / 127.0f;
		float id = d != 0.0f ? 1.0f / d : 0.0f;
		b[i].d = kern_f32_to_f16(d);
		for (int j = 0; j < QK8_0; j++)
			b[i].qs[j] = (int8_t)nearbyintf(clampf(v[j] * id, -127.0f, 127.0f));
	}
}

void kern__vec_dot_q8_0_ref(int64_t n, float *s, const void *x, const void *y)
{
	const kern_block_q8_0 *w = x, *a = y;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK8_0; i++) {
		int32_t isum = 0;
		for (int j = 0; j < QK8_0; j++)
			isum += (int32_t)w[i].qs[j] * a[i].qs[j];
		float d = kern_f16_to_f32(w[i].d) * kern_f16_to_f32(a[i].d);
		acc = fmaf(d, (float)isum, acc);
	}
	*s = acc;
}

/* ---- Q4_0 ---- */

void kern__q4_0_to_float_ref(const void *x, float *y, int64_t n)
{
	const kern_block_q4_0 *b = x;
	for (int64_t i = 0; i < n / QK4_0; i++) {
		float d = kern_f16_to_f32(b[i].d);
		for (int j = 0; j < QK4_0 / 2; j++) {
			y[i * QK4_0 + j] = d * (float)((b[i].qs[j] & 15) - 8);
			y[i * QK4_0 + j + 16] = d * (float)((b[i].qs[j] >> 4) - 8);
		}
	}
}

/* The value of largest magnitude maps to -8 (the end with more room). */
void kern__q4_0_from_float_ref(const float *x, void *y, int64_t n)
{
	kern_block_q4_0 *b = y;
	for (int64_t i = 0; i < n / QK4_0; i++) {
		const float *v = x + i * QK4_0;
		float amax = 0.0f, max = 0.0f;
		for (int j = 0; j < QK4_0; j++) {
			if (fabsf(v[j]) > amax) {
				amax = fabsf(v[j]);
				max = v[j];
			}
		}
		float d = max / -8.0f;
		float id = d != 0.0f ? 1.0f / d : 0.0f;
		b[i].d = kern_f32_to_f16(d);
		for (int j = 0; j < QK4_0 / 2; j++) {
			int q0 = (int)nearbyintf(clampf(v[j] * id, -8.0f, 7.0f)) + 8;
			int q1 = (int)nearbyintf(clampf(v[j + 16] * id, -8.0f, 7.0f)) + 8;
			b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
		}
	}
}

void kern__vec_dot_q4_0_ref(int64_t n, float *s, const void *x, const void *y)
{
	const kern_block_q4_0 *w = x;
	const kern_block_q8_0 *a = y;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK4_0; i++) {
		int32_t isum = 0;
		for (int j = 0; j < QK4_0 / 2; j++) {
			isum += ((w[i].qs[j] & 15) - 8) * (int32_t)a[i].qs[j];
			isum += ((w[i].qs[j] >> 4) - 8) * (int32_t)a[i].qs[j + 16];
		}
		float d = kern_f16_to_f32(w[i].d) * kern_f16_to_f32(a[i].d);
		acc = fmaf(d, (float)isum, acc);
	}
	*s = acc;
}

/* ---- Q8_K ---- */

void kern__q8_k_to_float_ref(const void *x, float *y, int64_t n)
{
	const kern_block_q8_k *b = x;
	for (int64_t i = 0; i < n / QK_K; i++)
		for (int j = 0; j < QK_K; j++)
			y[i * QK_K + j] = b[i].d * (float)b[i].qs[j];
}

void kern__q8_k_from_float_ref(const float *x, void *y, int64_t n)
{
	kern_block_q8_k *b = y;
	for (int64_t i = 0; i < n / QK_K; i++) {
		const float *v = x + i * QK_K;
		float amax = 0.0f;
		for (int j = 0; j < QK_K; j++)
			amax = fmaxf(amax, fabsf(v[j]));
		float d = amax / 127.0f;
		float id = d != 0.0f ? 1.0f / d : 0.0f;
		b[i].d = d;
		for (int j = 0; j < QK_K; j++)
			b[i].qs[j] = (int8_t)nearbyintf(clampf(v[j] * id, -127.0f, 127.0f));
		for (int g = 0; g < QK_K / 16; g++) {
			int s = 0;
			for (int j = 0; j < 16; j++)
				s += b[i].qs[16 * g + j];
			b[i].bsums[g] = (int16_t)s;
		}
	}
}

/* ---- Q4_K ---- */

/* Element e of a Q4_K block (0..15). */
static inline int q4k_q(const kern_block_q4_k *b, int e)
{
	int c = e / 64, l = e % 64;
	return l < 32 ? b->qs[32 * c + l] & 15 : b->qs[32 * c + l - 32] >> 4;
}

void kern__q4_k_to_float_ref(const void *x, float *y, int64_t n)
{
	const kern_block_q4_k *b = x;
	for (int64_t i = 0; i < n / QK_K; i++) {
		float d = kern_f16_to_f32(b[i].d), dmin = kern_f16_to_f32(b[i].dmin);
		for (int j = 0; j < 8; j++) {
			int sc, m;
			kern__q4k_scale_min(b[i].scales, j, &sc, &m);
			float d1 = d * (float)sc, m1 = dmin * (float)m;
			for (int e = 32 * j; e < 32 * j + 32; e++)
				y[i * QK_K + e] = d1 * (float)q4k_q(&b[i], e) - m1;
		}
	}
}

/* A simple quantizer: each sub-block of 32 gets scale (max - min) / 15 and
 * min -min (min clamped to <= 0); the super-block scales of both are
 * max / 63; 6-bit sub-block values by rounding; then the quants are
 * rounded against the scales the block actually stores. */
void kern__q4_k_from_float_ref(const float *x, void *y, int64_t n)
{
	kern_block_q4_k *b = y;
	for (int64_t i = 0; i < n / QK_K; i++) {
		const float *v = x + i * QK_K;
		float scale[8], mn[8], maxs = 0.0f, maxm = 0.0f;
		for (int j = 0; j < 8; j++) {
			float lo = 0.0f, hi = -INFINITY;
			for (int e = 0; e < 32; e++) {
				lo = fminf(lo, v[32 * j + e]);
				hi = fmaxf(hi, v[32 * j + e]);
			}
			if (hi < lo)
				hi = lo;
			scale[j] = (hi - lo) / 15.0f;
			mn[j] = -lo;
			maxs = fmaxf(maxs, scale[j]);
			maxm = fmaxf(maxm, mn[j]);
		}
		float d = maxs / 63.0f, dmin = maxm / 63.0f;
		b[i].d = kern_f32_to_f16(d);
		b[i].dmin = kern_f32_to_f16(dmin);
		d = kern_f16_to_f32(b[i].d);
		dmin = kern_f16_to_f32(b[i].dmin);
		int sc[8], m[8];
		for (int j = 0; j < 8; j++) {
			sc[j] = d > 0.0f ? (int)nearbyintf(clampf(scale[j] / d, 0.0f, 63.0f)) : 0;
			m[j] = dmin > 0.0f ? (int)nearbyintf(clampf(mn[j] / dmin, 0.0f, 63.0f)) : 0;
		}
		memset(b[i].scales, 0, sizeof(b[i].scales));
		for (int j = 0; j < 4; j++) {
			b[i].scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
			b[i].scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
			b[i].scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
		}
		memset(b[i].qs, 0, sizeof(b[i].qs));
		for (int j = 0; j < 8; j++) {
			float d1 = d * (float)sc[j], m1 = dmin * (float)m[j];
			float id = d1 > 0.0f ? 1.0f / d1 : 0.0f;
			for (int e = 32 * j; e < 32 * j + 32; e++) {
				int q = (int)nearbyintf(clampf((v[e] + m1) * id, 0.0f, 15.0f));
				int c = e / 64, l = e % 64;
				if (l < 32)
					b[i].qs[32 * c + l] |= (uint8_t)q;
				else
					b[i].qs[32 * c + l - 32] |= (uint8_t)(q << 4);
			}
		}
	}
}

void kern__vec_dot_q4_k_ref(int64_t n, float *s, const void *x, const void *y)
{
	const kern_block_q4_k *w = x;
	const kern_block_q8_k *a = y;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK_K; i++) {
		int32_t s1 = 0, s2 = 0;
		for (int j = 0; j < 8; j++) {
			int sc, m;
			kern__q4k_scale_min(w[i].scales, j, &sc, &m);
			int32_t isum = 0;
			for (int e = 32 * j; e < 32 * j + 32; e++)
				isum += q4k_q(&w[i], e) * (int32_t)a[i].qs[e];
			s1 += sc * isum;
			s2 += m * (a[i].bsums[2 * j] + a[i].bsums[2 * j + 1]);
		}
		float d = a[i].d * kern_f16_to_f32(w[i].d);
		float dm = a[i].d * kern_f16_to_f32(w[i].dmin);
		acc = fmaf(d, (float)s1, acc);
		acc = fmaf(-dm, (float)s2, acc);
	}
	*s = acc;
}

/* ---- Q6_K ---- */

/* Element e of a Q6_K block, 0..63 (subtract 32 for the signed value). */
static inline int q6k_q(const kern_block_q6_k *b, int e)
{
	int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
	int lo = b->ql[64 * h + l + (k & 1) * 32];
	lo = k < 2 ? lo & 15 : lo >> 4;
	int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
	return lo | (hi << 4);
}

void kern__q6_k_to_float_ref(const void *x, float *y, int64_t n)
{
	const kern_block_q6_k *b = x;
	for (int64_t i = 0; i < n / QK_K; i++) {
		float d = kern_f16_to_f32(b[i].d);
		for (int e = 0; e < QK_K; e++)
			y[i * QK_K + e] = d * (float)b[i].scales[e / 16] * (float)(q6k_q(&b[i], e) - 32);
	}
}

/* Each sub-block of 16: the value of largest magnitude maps to -32; the
 * sub-block scales are rounded to int8 against d = max |scale| / 127. */
void kern__q6_k_from_float_ref(const float *x, void *y, int64_t n)
{
	kern_block_q6_k *b = y;
	for (int64_t i = 0; i < n / QK_K; i++) {
		const float *v = x + i * QK_K;
		float scale[16], maxs = 0.0f;
		for (int j = 0; j < 16; j++) {
			float amax = 0.0f, max = 0.0f;
			for (int e = 16 * j; e < 16 * j + 16; e++) {
				if (fabsf(v[e]) > amax) {
					amax = fabsf(v[e]);
					max = v[e];
				}
			}
			scale[j] = max / -32.0f;
			maxs = fmaxf(maxs, fabsf(scale[j]));
		}
		float d = maxs / 127.0f;
		b[i].d = kern_f32_to_f16(d);
		d = kern_f16_to_f32(b[i].d);
		uint8_t q[QK_K];
		for (int j = 0; j < 16; j++) {
			int sc = d > 0.0f ? (int)nearbyintf(clampf(scale[j] / d, -127.0f, 127.0f)) : 0;
			b[i].scales[j] = (int8_t)sc;
			float d1 = d * (float)sc;
			float id = d1 != 0.0f ? 1.0f / d1 : 0.0f;
			for (int e = 16 * j; e < 16 * j + 16; e++)
				q[e] = (uint8_t)((int)nearbyintf(clampf(v[e] * id, -32.0f, 31.0f)) + 32);
		}
		for (int h = 0; h < 2; h++) {
			const uint8_t *qq = q + 128 * h;
			for (int l = 0; l < 32; l++) {
				b[i].ql[64 * h + l] = (uint8_t)((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
				b[i].ql[64 * h + l + 32] = (uint8_t)((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
				b[i].qh[32 * h + l] = (uint8_t)((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) |
					((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
			}
		}
	}
}

void kern__vec_dot_q6_k_ref(int64_t n, float *s, const void *x, const void *y)
{
	const kern_block_q6_k *w = x;
	const kern_block_q8_k *a = y;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK_K; i++) {
		int32_t s1 = 0;
		for (int j = 0; j < 16; j++) {
			int32_t isum = 0;
			for (int e = 16 * j; e < 16 * j + 16; e++)
				isum += (q6k_q(&w[i], e) - 32) * (int32_t)a[i].qs[e];
			s1 += w[i].scales[j] * isum;
		}
		float d = a[i].d * kern_f16_to_f32(w[i].d);
		acc = fmaf(d, (float)s1, acc);
	}
	*s = acc;
}
