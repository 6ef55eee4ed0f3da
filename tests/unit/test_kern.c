/* test_kern.c - traits, conversions, quantization round trips, and every
 * ISA's kernels against the _ref ones (bitwise), matmul invariance. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"
#include "kern/kern.h"
#include "kern/quants.h"
#include "test.h"

static const int wtypes[] = { KERN_F32, KERN_F16, KERN_BF16, KERN_Q8_0, KERN_Q4_0, KERN_Q4_K, KERN_Q6_K, KERN_Q8_K };
#define N_WTYPES (int)(sizeof(wtypes) / sizeof(wtypes[0]))

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16);
}
static float frand(void) { return (float)rnd() / 4294967296.0f * 2.0f - 1.0f; }
static void fill(float *x, int64_t n, float scale)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = frand() * scale;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_traits(void)
{
	struct { int t; int64_t b; size_t s; int sup; } want[] = {
		{ KERN_F32, 1, 4, 1 }, { KERN_F16, 1, 2, 1 }, { KERN_BF16, 1, 2, 1 },
		{ KERN_Q4_0, 32, 18, 1 }, { KERN_Q4_1, 32, 20, 0 }, { KERN_Q5_0, 32, 22, 0 },
		{ KERN_Q5_1, 32, 24, 0 }, { KERN_Q8_0, 32, 34, 1 }, { KERN_Q8_1, 32, 36, 0 },
		{ KERN_Q2_K, 256, 84, 0 }, { KERN_Q3_K, 256, 110, 0 }, { KERN_Q4_K, 256, 144, 1 },
		{ KERN_Q5_K, 256, 176, 0 }, { KERN_Q6_K, 256, 210, 1 }, { KERN_Q8_K, 256, 292, 1 },
		{ KERN_IQ2_XXS, 256, 66, 0 }, { KERN_IQ2_XS, 256, 74, 0 }, { KERN_IQ3_XXS, 256, 98, 0 },
		{ KERN_IQ1_S, 256, 50, 0 }, { KERN_IQ4_NL, 32, 18, 0 }, { KERN_IQ3_S, 256, 110, 0 },
		{ KERN_IQ2_S, 256, 82, 0 }, { KERN_IQ4_XS, 256, 136, 0 }, { KERN_I8, 1, 1, 0 },
		{ KERN_I16, 1, 2, 0 }, { KERN_I32, 1, 4, 0 }, { KERN_I64, 1, 8, 0 }, { KERN_F64, 1, 8, 0 },
		{ KERN_IQ1_M, 256, 56, 0 }, { KERN_TQ1_0, 256, 54, 0 }, { KERN_TQ2_0, 256, 66, 0 },
		{ KERN_MXFP4, 32, 17, 0 },
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const kern_traits_t *tr = kern_traits(want[i].t);
		REQUIRE(tr != NULL);
		CHECK_EQ_INT(tr->blck_size, want[i].b);
		CHECK_EQ_INT(tr->type_size, want[i].s);
		CHECK_EQ_INT(tr->supported, want[i].sup);
		if (tr->supported) {
			CHECK(tr->to_float && tr->from_float && tr->vec_dot);
			const kern_traits_t *vt = kern_traits(tr->vec_dot_type);
			CHECK(vt && vt->supported);
		}
		CHECK(strcmp(kern_type_name(want[i].t), tr->name) == 0);
	}
	int unused[] = { -1, 4, 5, 31, 32, 33, 36, 37, 38, 40, 1000 };
	for (size_t i = 0; i < sizeof(unused) / sizeof(unused[0]); i++) {
		CHECK(kern_traits(unused[i]) == NULL);
		CHECK_EQ_INT(kern_row_size(unused[i], 32), 0);
	}
	CHECK(strcmp(kern_type_name(KERN_Q4_K), "q4_k") == 0);
	CHECK_EQ_INT(kern_row_size(KERN_Q8_0, 2048), 64 * 34);
	CHECK_EQ_INT(kern_row_size(KERN_Q4_K, 5632), 22 * 144);
	CHECK_EQ_INT(kern_row_size(KERN_Q8_0, 33), 0);
	CHECK_EQ_INT(kern_row_size(KERN_Q8_0, -32), 0);
	CHECK_EQ_INT(kern_row_size(KERN_F32, 0), 0);
	CHECK_EQ_INT(kern_row_size(KERN_F64, (1LL << 48) - 8), ((1LL << 48) - 8) * 8);
	CHECK_EQ_INT(kern_row_size(KERN_Q8_K, 256LL << 40), (1LL << 40) * 292);
	/* huge n: either exact or 0, never wrapped */
	size_t big = kern_row_size(KERN_F64, INT64_MAX - 7);
	CHECK(big == 0 || big / 8 == (size_t)(INT64_MAX - 7));
}

static void test_f16(void)
{
	CHECK_EQ_INT(kern_f32_to_f16(0.0f), 0x0000);
	CHECK_EQ_INT(kern_f32_to_f16(-0.0f), 0x8000);
	CHECK_EQ_INT(kern_f32_to_f16(1.0f), 0x3c00);
	CHECK_EQ_INT(kern_f32_to_f16(-2.0f), 0xc000);
	CHECK_EQ_INT(kern_f32_to_f16(65504.0f), 0x7bff);
	CHECK_EQ_INT(kern_f32_to_f16(65519.99f), 0x7bff);
	CHECK_EQ_INT(kern_f32_to_f16(65520.0f), 0x7c00);        /* tie to even -> inf */
	CHECK_EQ_INT(kern_f32_to_f16(1e10f), 0x7c00);
	CHECK_EQ_INT(kern_f32_to_f16(-INFINITY), 0xfc00);
	CHECK_EQ_INT(kern_f32_to_f16(0x1p-24f), 0x0001);        /* smallest subnormal */
	CHECK_EQ_INT(kern_f32_to_f16(0x1p-25f), 0x0000);        /* tie to even -> 0 */
	CHECK_EQ_INT(kern_f32_to_f16(0x1.8p-25f), 0x0001);
	CHECK_EQ_INT(kern_f32_to_f16(0x1.8p-24f), 0x0002);      /* 1.5 ulp: tie to even 2 */
	CHECK_EQ_INT(kern_f32_to_f16(0x1p-14f), 0x0400);        /* smallest normal */
	CHECK_EQ_INT(kern_f32_to_f16(0x1.ff8p-15f), 0x03ff);    /* largest subnormal */
	CHECK_EQ_INT(kern_f32_to_f16(0x1.ffap-15f), 0x03ff);
	CHECK_EQ_INT(kern_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* tie, odd: up into normal */
	CHECK_EQ_INT(kern_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie, even stays */
	CHECK_EQ_INT(kern_f32_to_f16(1.0f + 0x1.8p-10f), 0x3c02); /* tie, odd rounds up */
	CHECK_EQ_INT(kern_f32_to_f16(1e-10f), 0x0000);
	uint16_t nan = kern_f32_to_f16(NAN);
	CHECK((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
	CHECK(isnan(kern_f16_to_f32(0x7c01)));
	CHECK(isnan(kern_f16_to_f32(0xfe00)));
	CHECK(kern_f16_to_f32(0x7c00) == INFINITY);
	CHECK(kern_f16_to_f32(0xfc00) == -INFINITY);
	CHECK(kern_f16_to_f32(0x0001) == 0x1p-24f);
	CHECK(kern_f16_to_f32(0x3555) == 0x1.554p-2f);
	CHECK(signbit(kern_f16_to_f32(0x8000)));
	/* every non-NaN half survives f16 -> f32 -> f16 */
	for (uint32_t h = 0; h < 65536; h++) {
		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
			continue;
		if (kern_f32_to_f16(kern_f16_to_f32((uint16_t)h)) != h) {
			CHECK_EQ_INT(kern_f32_to_f16(kern_f16_to_f32((uint16_t)h)), h);
			break;
		}
	}
	/* random floats: the result is the nearest half (ties to even) */
	for (int i = 0; i < 200000; i++) {
		float f = u2f(rnd() & 0xc7ffffffu);    /* magnitudes below 2^16 or so */
		uint16_t h = kern_f32_to_f16(f);
		float g = kern_f16_to_f32(h);
		if (isinf(g))
			continue;
		float up = kern_f16_to_f32((uint16_t)(h + 1)), dn = kern_f16_to_f32((uint16_t)(h - 1));
		double e = fabs((double)g - f);
		int ok = e <= fabs((double)up - f) && ((h & 0x7fff) == 0 || e <= fabs((double)dn - f));
		if (!ok) {
			CHECK(ok);
			fprintf(stderr, "  f=%a h=%04x\n", f, h);
			break;
		}
	}
}

static void test_bf16(void)
{
	CHECK_EQ_INT(kern_f32_to_bf16(1.0f), 0x3f80);
	CHECK_EQ_INT(kern_f32_to_bf16(-0.0f), 0x8000);
	CHECK_EQ_INT(kern_f32_to_bf16(u2f(0x3f808000)), 0x3f80);  /* tie, even */
	CHECK_EQ_INT(kern_f32_to_bf16(u2f(0x3f818000)), 0x3f82);  /* tie, odd up */
	CHECK_EQ_INT(kern_f32_to_bf16(u2f(0x3f808001)), 0x3f81);
	CHECK_EQ_INT(kern_f32_to_bf16(u2f(0x7f7fffff)), 0x7f80);  /* max float -> inf */
	CHECK_EQ_INT(kern_f32_to_bf16(INFINITY), 0x7f80);
	CHECK_EQ_INT(kern_f32_to_bf16(-INFINITY), 0xff80);
	uint16_t nan = kern_f32_to_bf16(u2f(0x7f800001));         /* NaN stays NaN */
	CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
	CHECK(kern_bf16_to_f32(0x3f80) == 1.0f);
	CHECK(kern_bf16_to_f32(0x0001) == u2f(0x00010000));
	for (uint32_t h = 0; h < 65536; h++)
		if (!isnan(kern_bf16_to_f32((uint16_t)h)))
			if (kern_f32_to_bf16(kern_bf16_to_f32((uint16_t)h)) != h) {
				CHECK_EQ_INT(kern_f32_to_bf16(kern_bf16_to_f32((uint16_t)h)), h);
				break;
			}
}

/* Quantize -> dequantize: the error relative to the data's RMS is within
 * what each format's bits allow. */
static void test_roundtrip(void)
{
	struct { int t; double tol; } tt[] = {
		{ KERN_F32, 0.0 }, { KERN_F16, 1e-3 }, { KERN_BF16, 4e-3 }, { KERN_Q8_0, 0.01 },
		{ KERN_Q4_0, 0.11 }, { KERN_Q4_K, 0.11 }, { KERN_Q6_K, 0.03 }, { KERN_Q8_K, 0.01 },
	};
	int64_t n = 4096;
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	void *q = malloc(kern_row_size(KERN_F32, n));
	REQUIRE(x && y && q);
	for (size_t k = 0; k < sizeof(tt) / sizeof(tt[0]); k++) {
		const kern_traits_t *tr = kern_traits(tt[k].t);
		for (int dist = 0; dist < 3; dist++) {
			for (int64_t i = 0; i < n; i++) {
				float v = frand();
				if (dist == 1)      /* gaussian-ish */
					v = (frand() + frand() + frand() + frand()) * 0.5f;
				if (dist == 2)      /* per-block scale changes, some zero blocks */
					v *= (i / 256) % 3 == 0 ? 0.0f : (float)((i / 32) % 7 + 1) * 0.01f;
				x[i] = v;
			}
			tr->from_float(x, q, n);
			tr->to_float(q, y, n);
			double se = 0, sx = 0;
			for (int64_t i = 0; i < n; i++) {
				se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
				sx += (double)x[i] * x[i];
			}
			double rel = sqrt(se / sx);
			if (!(rel <= tt[k].tol))
				fprintf(stderr, "  %s dist %d: rel rms error %g > %g\n", tr->name, dist, rel, tt[k].tol);
			CHECK(rel <= tt[k].tol);
			/* quantizing is deterministic and idempotent on its own output */
			if (tt[k].t != KERN_F32) {
				void *q2 = malloc(kern_row_size(KERN_F32, n));
				REQUIRE(q2);
				tr->from_float(x, q2, n);
				CHECK(memcmp(q, q2, kern_row_size(tt[k].t, n)) == 0);
				free(q2);
			}
		}
	}
	/* Zero input gives zero output and no NaN. */
	memset(x, 0, n * sizeof(float));
	for (size_t k = 0; k < sizeof(tt) / sizeof(tt[0]); k++) {
		const kern_traits_t *tr = kern_traits(tt[k].t);
		tr->from_float(x, q, n);
		tr->to_float(q, y, n);
		int bad = 0;
		for (int64_t i = 0; i < n; i++)
			bad |= y[i] != 0.0f;
		CHECK(!bad);
	}
	free(x);
	free(y);
	free(q);
}

/* Independent statement of the GGML Q4_K and Q6_K layouts (as the format's
 * dequantizer walks them), checked against our to_float on random bytes. */
static void test_k_layouts(void)
{
	kern_block_q4_k b4[2];
	kern_block_q6_k b6[2];
	for (size_t i = 0; i < sizeof(b4); i++)
		((uint8_t *)b4)[i] = (uint8_t)rnd();
	for (size_t i = 0; i < sizeof(b6); i++)
		((uint8_t *)b6)[i] = (uint8_t)rnd();
	for (int k = 0; k < 2; k++) {
		b4[k].d = kern_f32_to_f16(0.5f + (float)k);
		b4[k].dmin = kern_f32_to_f16(0.25f);
		b6[k].d = kern_f32_to_f16(0.125f * (float)(k + 1));
	}
	float y[512], want[512];
	kern_traits(KERN_Q4_K)->to_float(b4, y, 512);
	for (int k = 0; k < 2; k++) {
		const uint8_t *q = b4[k].qs, *s = b4[k].scales;
		float d = kern_f16_to_f32(b4[k].d), mn = kern_f16_to_f32(b4[k].dmin);
		float *o = want + 256 * k;
		for (int c = 0; c < 4; c++) {
			int is = 2 * c, sc[2], m[2];
			for (int u = 0; u < 2; u++) {
				int jj = is + u;
				if (jj < 4) {
					sc[u] = s[jj] & 63;
					m[u] = s[jj + 4] & 63;
				} else {
					sc[u] = (s[jj + 4] & 0xF) | ((s[jj - 4] >> 6) << 4);
					m[u] = (s[jj + 4] >> 4) | ((s[jj] >> 6) << 4);
				}
			}
			for (int l = 0; l < 32; l++) {
				*o++ = d * sc[0] * (q[l] & 0xF) - mn * m[0];
			}
			for (int l = 0; l < 32; l++)
				*o++ = d * sc[1] * (q[l] >> 4) - mn * m[1];
			q += 32;
		}
	}
	CHECK(memcmp(y, want, sizeof(y)) == 0);
	kern_traits(KERN_Q6_K)->to_float(b6, y, 512);
	for (int k = 0; k < 2; k++) {
		const uint8_t *ql = b6[k].ql, *qh = b6[k].qh;
		const int8_t *sc = b6[k].scales;
		float d = kern_f16_to_f32(b6[k].d);
		float *o = want + 256 * k;
		for (int h = 0; h < 2; h++) {
			for (int l = 0; l < 32; l++) {
				int is = l / 16;
				int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
				int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
				int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
				int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
				o[l] = d * sc[is] * q1;
				o[l + 32] = d * sc[is + 2] * q2;
				o[l + 64] = d * sc[is + 4] * q3;
				o[l + 96] = d * sc[is + 6] * q4;
			}
			o += 128;
			ql += 64;
			qh += 32;
			sc += 8;
		}
	}
	CHECK(memcmp(y, want, sizeof(y)) == 0);
}

/* The dot product of the dequantized weights with the dequantized
 * activations agrees with vec_dot up to float rounding. */
static void test_vec_dot_value(void)
{
	int64_t n = 2048;
	float *w = malloc(n * 4), *x = malloc(n * 4), *wf = malloc(n * 4), *xf = malloc(n * 4);
	char *wq = malloc(n * 4), *xq = malloc(n * 4);
	REQUIRE(w && x && wf && xf && wq && xq);
	fill(w, n, 1.0f);
	fill(x, n, 3.0f);
	for (int k = 0; k < N_WTYPES; k++) {
		const kern_traits_t *tr = kern_traits(wtypes[k]), *vt = kern_traits(tr->vec_dot_type);
		tr->from_float(w, wq, n);
		tr->to_float(wq, wf, n);
		vt->from_float(x, xq, n);
		vt->to_float(xq, xf, n);
		double want = 0, mag = 0;
		for (int64_t i = 0; i < n; i++) {
			want += (double)wf[i] * xf[i];
			mag += fabs((double)wf[i] * xf[i]);
		}
		float s;
		tr->vec_dot(n, &s, wq, xq);
		CHECK_NEAR(s, want, mag * 1e-5);
	}
	free(w); free(x); free(wf); free(xf); free(wq); free(xq);
}

/* Every ISA's kernels give the same bits as the ref ones. */
static void test_isa_bitexact(void)
{
	static const int64_t nblk[] = { 1, 2, 3, 7, 8, 9, 16, 33, 64, 176 };
	int64_t nmax = 176 * 256;
	float *w = malloc(nmax * 4), *x = malloc(nmax * 4);
	char *wq = malloc(nmax * 4), *xq = malloc(nmax * 4), *xq2 = malloc(nmax * 4);
	uint16_t *h = malloc(nmax * 2);
	float *y1 = malloc(nmax * 4), *y2 = malloc(nmax * 4);
	REQUIRE(w && x && wq && xq && xq2 && h && y1 && y2);
	const kern_ops_t *ref = kern__ops_isa(KERN_ISA_REF);
	for (int isa = KERN_ISA_AVX2; isa < KERN_ISA_COUNT; isa++) {
		const kern_ops_t *ops = kern__ops_isa(isa);
		if (!ops) {
			fprintf(stderr, "isa %s: not available, skipped\n", kern_isa_name(isa));
			continue;
		}
		int bad = 0;
		for (int k = 0; k < N_WTYPES; k++) {
			int t = wtypes[k];
			const kern_traits_t *tr = kern_traits(t);
			int vdt = tr->vec_dot_type;
			for (size_t bi = 0; bi < sizeof(nblk) / sizeof(nblk[0]); bi++) {
				for (int rep = 0; rep < 3; rep++) {
					int64_t n = nblk[bi] * (tr->blck_size > 1 ? tr->blck_size : 32);
					if (tr->blck_size == 1 && rep == 1)
						n += 1 + rnd() % 15;     /* float types: odd lengths */
					fill(w, n, rep == 2 ? 100.0f : 1.0f);
					fill(x, n, rep == 2 ? 1e-3f : 2.0f);
					tr->from_float(w, wq, n);
					const void *xa = x;
					if (vdt != KERN_F32) {
						ref->quantize[vdt](x, xq, n);
						ops->quantize[vdt](x, xq2, n);
						if (memcmp(xq, xq2, kern_row_size(vdt, n)) != 0) {
							fprintf(stderr, "  %s: quantize %s differs from ref (n=%lld)\n",
								kern_isa_name(isa), kern_type_name(vdt), (long long)n);
							bad++;
						}
						xa = xq;
					}
					float s1, s2;
					ref->vec_dot[t](n, &s1, wq, xa);
					ops->vec_dot[t](n, &s2, wq, xa);
					if (f2u(s1) != f2u(s2)) {
						fprintf(stderr, "  %s: vec_dot %s n=%lld: %a != ref %a\n",
							kern_isa_name(isa), tr->name, (long long)n, s2, s1);
						bad++;
					}
				}
			}
		}
		/* attention helpers */
		for (int64_t n = 1; n < 300; n += 1 + n / 4) {
			fill(w, n, 1.0f);
			fill(x, n, 1.0f);
			for (int64_t i = 0; i < n; i++)
				h[i] = kern_f32_to_f16(x[i]);
			if (f2u(ref->dot_f32(n, w, x)) != f2u(ops->dot_f32(n, w, x)) ||
			    f2u(ref->dot_f32_f16(n, w, h)) != f2u(ops->dot_f32_f16(n, w, h))) {
				fprintf(stderr, "  %s: dot_f32/dot_f32_f16 n=%lld differ\n", kern_isa_name(isa), (long long)n);
				bad++;
			}
			memcpy(y1, x, n * 4);
			memcpy(y2, x, n * 4);
			ref->axpy_f32(n, 0.37f, w, y1);
			ops->axpy_f32(n, 0.37f, w, y2);
			ref->axpy_f16(n, -1.3f, h, y1);
			ops->axpy_f16(n, -1.3f, h, y2);
			if (memcmp(y1, y2, n * 4) != 0) {
				fprintf(stderr, "  %s: axpy n=%lld differ\n", kern_isa_name(isa), (long long)n);
				bad++;
			}
		}
		CHECK_EQ_INT(bad, 0);
		fprintf(stderr, "isa %s: ran\n", kern_isa_name(isa));
	}
	free(w); free(x); free(wq); free(xq); free(xq2); free(h); free(y1); free(y2);
}

/* kern_matmul: Y[t][r] equals the ref vec_dot of (row r, quantized token t)
 * bit for bit, for any ISA, batch size and thread count. */
static void test_matmul(void)
{
	static const int64_t ns[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 33, 128 };
	static const int64_t shapes[][2] = { { 37, 256 }, { 70, 512 }, { 16, 2304 }, { 5, 768 }, { 48, 320 } };
	enum { NSHAPES = sizeof(shapes) / sizeof(shapes[0]) };
	pool_t *p2 = pool_new(2);
	REQUIRE(p2);
	kern_ctx_t k1, k2;
	kern_ctx_init(&k1, NULL);
	kern_ctx_init(&k2, p2);
	const kern_ops_t *ref = kern__ops_isa(KERN_ISA_REF);
	enum kern_isa saved = kern_isa_active();
	int64_t nmax = 128;
	for (int s = 0; s < NSHAPES; s++) {
		int64_t rows = shapes[s][0], cols = shapes[s][1];
		float *wf = malloc(rows * cols * 4), *X = malloc(nmax * cols * 4);
		float *want = malloc(nmax * rows * 4), *Y = malloc(nmax * rows * 4);
		char *wq = malloc(rows * cols * 4), *xq = malloc(cols * 4);
		REQUIRE(wf && X && want && Y && wq && xq);
		fill(wf, rows * cols, 0.5f);
		fill(X, nmax * cols, 2.0f);
		for (int k = 0; k < N_WTYPES; k++) {
			int t = wtypes[k];
			const kern_traits_t *tr = kern_traits(t);
			if (cols % tr->blck_size)
				continue;
			size_t rs = kern_row_size(t, cols);
			for (int64_t r = 0; r < rows; r++)
				tr->from_float(wf + r * cols, wq + r * rs, cols);
			for (int64_t tk = 0; tk < nmax; tk++) {
				const void *xa = X + tk * cols;
				if (tr->vec_dot_type != KERN_F32) {
					ref->quantize[tr->vec_dot_type](X + tk * cols, xq, cols);
					xa = xq;
				}
				for (int64_t r = 0; r < rows; r++)
					ref->vec_dot[t](cols, &want[tk * rows + r], wq + r * rs, xa);
			}
			kern_mat_t W0 = { wq, t, rows, cols, KERN_LAYOUT_ROWS }, W = W0;
			/* the same matrix repacked (R16) must give the same bits */
			void *r16 = NULL;
			int layouts = 1;
			if (kern_repack_ok(&W0)) {
				REQUIRE(posix_memalign(&r16, 64, rows * rs) == 0);
				kern_repack(&W0, r16);
				layouts = 2;
				float row1[2304], row2[2304];
				for (int64_t r = 0; r < rows; r++) {
					kern_mat_t Wr = { r16, t, rows, cols, KERN_LAYOUT_R16 };
					CHECK_OK(kern_get_row(&W0, r, row1));
					CHECK_OK(kern_get_row(&Wr, r, row2));
					CHECK(memcmp(row1, row2, cols * 4) == 0);
				}
			}
			for (int lay = 0; lay < layouts; lay++)
			for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
				if (kern_isa_select(isa) != 0)
					continue;
				if (lay) {
					W.data = r16;
					W.layout = KERN_LAYOUT_R16;
				}
				for (size_t ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
					int64_t n = ns[ni];
					for (int th = 0; th < 2; th++) {
						for (int64_t i = 0; i < n * rows; i++)
							Y[i] = NAN;
						CHECK_OK(kern_matmul(th ? &k2 : &k1, &W, X, n, Y));
						if (memcmp(Y, want, n * rows * 4) != 0) {
							CHECK(!"matmul differs from ref vec_dot");
							fprintf(stderr, "  type %s isa %s shape %lldx%lld n=%lld threads=%d%s\n",
								tr->name, kern_isa_name(isa), (long long)rows,
								(long long)cols, (long long)n, th + 1, lay ? " r16" : "");
							free(r16);
							goto next_type;
						}
					}
				}
			}
			free(r16);
		next_type:;
		}
		free(wf); free(X); free(want); free(Y); free(wq); free(xq);
	}
	CHECK_OK(kern_isa_select(saved));
	/* bad arguments */
	float x[32], y[4];
	kern_mat_t bad = { x, KERN_Q4_1, 1, 32, KERN_LAYOUT_ROWS };
	CHECK_EQ_INT(kern_matmul(&k1, &bad, x, 1, y), ERR_UNSUPPORTED);
	kern_mat_t odd = { x, KERN_Q8_0, 1, 33, KERN_LAYOUT_ROWS };
	CHECK(kern_matmul(&k1, &odd, x, 1, y) != 0);
	/* R16 needs a repackable shape and 64-byte alignment */
	kern_mat_t r16bad = { x, KERN_Q8_0, 1, 32, KERN_LAYOUT_R16 };
	CHECK_EQ_INT(kern_matmul(&k1, &r16bad, x, 1, y), ERR_INVAL);
	kern_mat_t badlay = { x, KERN_Q8_0, 1, 32, 7 };
	CHECK_EQ_INT(kern_matmul(&k1, &badlay, x, 1, y), ERR_INVAL);
	kern_ctx_close(&k1);
	kern_ctx_close(&k2);
	pool_free(p2);
}

static void test_get_row(void)
{
	int64_t rows = 5, cols = 512;
	float *wf = malloc(rows * cols * 4), *y = malloc(cols * 4), *ref = malloc(cols * 4);
	char *wq = malloc(rows * cols * 4);
	REQUIRE(wf && y && wq && ref);
	fill(wf, rows * cols, 1.0f);
	for (int k = 0; k < N_WTYPES; k++) {
		const kern_traits_t *tr = kern_traits(wtypes[k]);
		size_t rs = kern_row_size(wtypes[k], cols);
		for (int64_t r = 0; r < rows; r++)
			tr->from_float(wf + r * cols, wq + r * rs, cols);
		kern_mat_t W = { wq, wtypes[k], rows, cols, KERN_LAYOUT_ROWS };
		CHECK_OK(kern_get_row(&W, 3, y));
		tr->to_float(wq + 3 * rs, ref, cols);
		CHECK(memcmp(y, ref, cols * 4) == 0);
		CHECK(kern_get_row(&W, 5, y) == ERR_RANGE);
		CHECK(kern_get_row(&W, -1, y) == ERR_RANGE);
	}
	free(wf); free(y); free(wq); free(ref);
}

static void test_isa_select(void)
{
	CHECK(kern_isa_available(KERN_ISA_REF));
	enum kern_isa cur = kern_isa_active();
	CHECK(kern_isa_available(cur));
	CHECK_OK(kern_isa_select(KERN_ISA_REF));
	CHECK(kern_isa_active() == KERN_ISA_REF);
	CHECK(kern_traits(KERN_Q8_0)->vec_dot == kern_vec_dot_isa(KERN_Q8_0, KERN_ISA_REF));
	CHECK(kern_isa_select((enum kern_isa)7) != 0);
	CHECK_OK(kern_isa_select(cur));
	for (int i = 0; i < KERN_ISA_COUNT; i++)
		fprintf(stderr, "isa %s: %s\n", kern_isa_name(i),
			kern_isa_available(i) ? "available" : "not available");
}

TEST_MAIN(test_traits, test_f16, test_bf16, test_roundtrip, test_k_layouts, test_vec_dot_value,
	  test_isa_bitexact, test_matmul, test_get_row, test_isa_select)
