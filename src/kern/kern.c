/* kern.c - the type-traits table, ISA selection, conversions and the small
 * public kernels. Canonical reduction orders are documented in
 * quants_ref.c, whose kernels define them.
 */
#include "kern/kern.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern/quants.h"

/* ---- f16 / bf16 ---- */

float kern_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t e = (h >> 10) & 31, m = h & 0x3ff, bits;
	if (e == 0) {
		/* zero or subnormal: m * 2^-24, exact in f32 */
		float v = (float)m * 0x1p-24f;
		memcpy(&bits, &v, 4);
		bits |= sign;
	} else if (e == 31) {
		/* inf, or NaN made quiet with its payload kept (as F16C does) */
		bits = sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0);
	} else {
		bits = sign | ((e + 112) << 23) | (m << 13);
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

float kern__f16_to_f32(uint16_t h) { return kern_f16_to_f32(h); }

uint16_t kern_f32_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
	x &= 0x7fffffffu;
	if (x > 0x7f800000u)                       /* NaN: quiet, top payload bits */
		return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff));
	if (x >= 0x47800000u)                      /* >= 2^16: inf */
		return sign | 0x7c00;
	if (x < 0x38800000u) {                     /* below 2^-14: subnormal half */
		if (x < 0x33000000u)               /* <= 2^-25 rounds to zero */
			return sign;
		uint32_t e = x >> 23, m = (x & 0x7fffff) | 0x800000;
		uint32_t shift = 126 - e;          /* 14..24 */
		uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return (uint16_t)(sign | r);
	}
	uint32_t h = ((x >> 23) - 112) << 10 | ((x >> 13) & 0x3ff);
	uint32_t rem = x & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++;                               /* may carry into inf: correct */
	return (uint16_t)(sign | h);
}

float kern_bf16_to_f32(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

uint16_t kern_f32_to_bf16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40);       /* quiet NaN */
	x += 0x7fffu + ((x >> 16) & 1);
	return (uint16_t)(x >> 16);
}

/* ---- the traits table ---- */

/* Block layouts of every GGML type id (GGUF files carry these ids). Ids 4,
 * 5, 31-33 and 36-38 were removed from GGML and stay unused. */
static const struct {
	const char *name;
	int64_t blck;
	size_t size;
} type_info[KERN_TYPE_COUNT] = {
	[KERN_F32] = { "f32", 1, 4 },
	[KERN_F16] = { "f16", 1, 2 },
	[KERN_Q4_0] = { "q4_0", 32, 18 },
	[KERN_Q4_1] = { "q4_1", 32, 20 },
	[KERN_Q5_0] = { "q5_0", 32, 22 },
	[KERN_Q5_1] = { "q5_1", 32, 24 },
	[KERN_Q8_0] = { "q8_0", 32, 34 },
	[KERN_Q8_1] = { "q8_1", 32, 36 },
	[KERN_Q2_K] = { "q2_k", 256, 84 },
	[KERN_Q3_K] = { "q3_k", 256, 110 },
	[KERN_Q4_K] = { "q4_k", 256, 144 },
	[KERN_Q5_K] = { "q5_k", 256, 176 },
	[KERN_Q6_K] = { "q6_k", 256, 210 },
	[KERN_Q8_K] = { "q8_k", 256, 292 },
	[KERN_IQ2_XXS] = { "iq2_xxs", 256, 66 },
	[KERN_IQ2_XS] = { "iq2_xs", 256, 74 },
	[KERN_IQ3_XXS] = { "iq3_xxs", 256, 98 },
	[KERN_IQ1_S] = { "iq1_s", 256, 50 },
	[KERN_IQ4_NL] = { "iq4_nl", 32, 18 },
	[KERN_IQ3_S] = { "iq3_s", 256, 110 },
	[KERN_IQ2_S] = { "iq2_s", 256, 82 },
	[KERN_IQ4_XS] = { "iq4_xs", 256, 136 },
	[KERN_I8] = { "i8", 1, 1 },
	[KERN_I16] = { "i16", 1, 2 },
	[KERN_I32] = { "i32", 1, 4 },
	[KERN_I64] = { "i64", 1, 8 },
	[KERN_F64] = { "f64", 1, 8 },
	[KERN_IQ1_M] = { "iq1_m", 256, 56 },
	[KERN_BF16] = { "bf16", 1, 2 },
	[KERN_TQ1_0] = { "tq1_0", 256, 54 },
	[KERN_TQ2_0] = { "tq2_0", 256, 66 },
	[KERN_MXFP4] = { "mxfp4", 32, 17 },
};

/* Q8_K against Q8_K: only so that every `supported` type has a vec_dot. */
static void vec_dot_q8_k_ref(int64_t n, float *s, const void *x, const void *y)
{
	const kern_block_q8_k *w = x, *a = y;
	float acc = 0.0f;
	for (int64_t i = 0; i < n / QK_K; i++) {
		int32_t isum = 0;
		for (int j = 0; j < QK_K; j++)
			isum += (int32_t)w[i].qs[j] * a[i].qs[j];
		acc = fmaf(w[i].d * a[i].d, (float)isum, acc);
	}
	*s = acc;
}

static const struct {
	kern_to_float_fn to_float;
	kern_from_float_fn from_float;
	int vec_dot_type;
} type_fns[KERN_TYPE_COUNT] = {
	[KERN_F32] = { kern__f32_to_float_ref, kern__f32_from_float_ref, KERN_F32 },
	[KERN_F16] = { kern__f16_to_float_ref, kern__f16_from_float_ref, KERN_F32 },
	[KERN_BF16] = { kern__bf16_to_float_ref, kern__bf16_from_float_ref, KERN_F32 },
	[KERN_Q8_0] = { kern__q8_0_to_float_ref, kern__q8_0_from_float_ref, KERN_Q8_0 },
	[KERN_Q4_0] = { kern__q4_0_to_float_ref, kern__q4_0_from_float_ref, KERN_Q8_0 },
	[KERN_Q4_K] = { kern__q4_k_to_float_ref, kern__q4_k_from_float_ref, KERN_Q8_K },
	[KERN_Q6_K] = { kern__q6_k_to_float_ref, kern__q6_k_from_float_ref, KERN_Q8_K },
	[KERN_Q8_K] = { kern__q8_k_to_float_ref, kern__q8_k_from_float_ref, KERN_Q8_K },
};

static kern_ops_t ref_ops = {
	.vec_dot = {
		[KERN_F32] = kern__vec_dot_f32_ref,
		[KERN_F16] = kern__vec_dot_f16_ref,
		[KERN_BF16] = kern__vec_dot_bf16_ref,
		[KERN_Q8_0] = kern__vec_dot_q8_0_ref,
		[KERN_Q4_0] = kern__vec_dot_q4_0_ref,
		[KERN_Q4_K] = kern__vec_dot_q4_k_ref,
		[KERN_Q6_K] = kern__vec_dot_q6_k_ref,
		[KERN_Q8_K] = vec_dot_q8_k_ref,
	},
	.quantize = {
		[KERN_Q8_0] = kern__q8_0_from_float_ref,
		[KERN_Q8_K] = kern__q8_k_from_float_ref,
	},
	.dot_f32 = kern__dot_f32_ref,
	.dot_f32_f16 = kern__dot_f32_f16_ref,
	.axpy_f32 = kern__axpy_f32_ref,
	.axpy_f16 = kern__axpy_f16_ref,
};

const kern_ops_t *kern__ops_ref(void) { return &ref_ops; }

/* One-time CPU detection fills these; afterwards they are read-only. */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int isa_ok[KERN_ISA_COUNT];
static kern_ops_t isa_ops[KERN_ISA_COUNT];
static kern_traits_t isa_traits[KERN_ISA_COUNT][KERN_TYPE_COUNT];
static atomic_int isa_cur;

static void ops_overlay(kern_ops_t *dst, const kern_ops_t *src)
{
	if (!src)
		return;
	for (int t = 0; t < KERN_TYPE_COUNT; t++) {
		if (src->vec_dot[t])
			dst->vec_dot[t] = src->vec_dot[t];
		if (src->quantize[t])
			dst->quantize[t] = src->quantize[t];
		if (src->mm[t])
			dst->mm[t] = src->mm[t];
		if (src->mm_r16[t])
			dst->mm_r16[t] = src->mm_r16[t];
	}
	if (src->mm_ws)
		dst->mm_ws = src->mm_ws;
	if (src->mm_r16_ws)
		dst->mm_r16_ws = src->mm_r16_ws;
	if (src->mm_prep) {
		dst->mm_prep = src->mm_prep;
		dst->mm_prep_size = src->mm_prep_size;
	}
#define OV(f) if (src->f) dst->f = src->f
	OV(dot_f32);
	OV(dot_f32_f16);
	OV(axpy_f32);
	OV(axpy_f16);
#undef OV
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
/* F16C from CPUID leaf 1, ECX bit 29: clang 14's __builtin_cpu_supports does
 * not know the "f16c" name (AVX state is checked by the avx2 probe). */
static int cpu_has_f16c(void)
{
	unsigned a, b, c, d;
	return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

static void kern_init(void)
{
	isa_ok[KERN_ISA_REF] = 1;
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	isa_ok[KERN_ISA_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
		cpu_has_f16c() && __builtin_cpu_supports("bmi2") &&
		kern__ops_avx2() != NULL;
	isa_ok[KERN_ISA_AVX512] = isa_ok[KERN_ISA_AVX2] &&
		__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
		__builtin_cpu_supports("avx512vnni") && kern__ops_avx512() != NULL;
#endif
	isa_ops[KERN_ISA_REF] = ref_ops;
	isa_ops[KERN_ISA_AVX2] = ref_ops;
	isa_ops[KERN_ISA_AVX512] = ref_ops;
#if defined(__x86_64__) || defined(__i386__)
	if (isa_ok[KERN_ISA_AVX2]) {
		ops_overlay(&isa_ops[KERN_ISA_AVX2], kern__ops_avx2());
		ops_overlay(&isa_ops[KERN_ISA_AVX512], kern__ops_avx2());
	}
	if (isa_ok[KERN_ISA_AVX512])
		ops_overlay(&isa_ops[KERN_ISA_AVX512], kern__ops_avx512());
#endif
	for (int i = 0; i < KERN_ISA_COUNT; i++) {
		for (int t = 0; t < KERN_TYPE_COUNT; t++) {
			kern_traits_t *tr = &isa_traits[i][t];
			tr->name = type_info[t].name;
			tr->blck_size = type_info[t].blck;
			tr->type_size = type_info[t].size;
			tr->supported = type_fns[t].to_float != NULL;
			tr->to_float = type_fns[t].to_float;
			tr->from_float = type_fns[t].from_float;
			tr->vec_dot_type = tr->supported ? type_fns[t].vec_dot_type : -1;
			tr->vec_dot = isa_ops[i].vec_dot[t];
		}
	}
	int best = KERN_ISA_REF;
	if (isa_ok[KERN_ISA_AVX2])
		best = KERN_ISA_AVX2;
	if (isa_ok[KERN_ISA_AVX512])
		best = KERN_ISA_AVX512;
	atomic_store(&isa_cur, best);
}

static inline void ensure_init(void) { pthread_once(&init_once, kern_init); }

const kern_traits_t *kern_traits(int t)
{
	if (t < 0 || t >= KERN_TYPE_COUNT || type_info[t].blck == 0)
		return NULL;
	ensure_init();
	return &isa_traits[atomic_load_explicit(&isa_cur, memory_order_relaxed)][t];
}

const char *kern_type_name(int t)
{
	if (t < 0 || t >= KERN_TYPE_COUNT || type_info[t].blck == 0)
		return "unknown";
	return type_info[t].name;
}

size_t kern_row_size(int t, int64_t n)
{
	if (t < 0 || t >= KERN_TYPE_COUNT || type_info[t].blck == 0 || n < 0)
		return 0;
	int64_t b = type_info[t].blck;
	if (n % b)
		return 0;
	uint64_t nb = (uint64_t)(n / b);
	if (nb > SIZE_MAX / type_info[t].size)
		return 0;
	return (size_t)nb * type_info[t].size;
}

int kern_isa_available(enum kern_isa isa)
{
	if ((int)isa < 0 || isa >= KERN_ISA_COUNT)
		return 0;
	ensure_init();
	return isa_ok[isa];
}

enum kern_isa kern_isa_active(void)
{
	ensure_init();
	return (enum kern_isa)atomic_load(&isa_cur);
}

const char *kern_isa_name(enum kern_isa isa)
{
	switch (isa) {
	case KERN_ISA_REF: return "ref";
	case KERN_ISA_AVX2: return "avx2";
	case KERN_ISA_AVX512: return "avx512";
	default: return "unknown";
	}
}

int kern_isa_select(enum kern_isa isa)
{
	if (!kern_isa_available(isa))
		return ERR_UNSUPPORTED;
	atomic_store(&isa_cur, (int)isa);
	return 0;
}

const kern_ops_t *kern__ops_isa(enum kern_isa isa)
{
	if (!kern_isa_available(isa))
		return NULL;
	return &isa_ops[isa];
}

const kern_ops_t *kern__ops(void)
{
	ensure_init();
	return &isa_ops[atomic_load_explicit(&isa_cur, memory_order_relaxed)];
}

kern_vec_dot_fn kern_vec_dot_isa(int t, enum kern_isa isa)
{
	if (t < 0 || t >= KERN_TYPE_COUNT || !kern_isa_available(isa))
		return NULL;
	return isa_ops[isa].vec_dot[t];
}

/* ---- small public kernels ---- */

int kern_get_row(const kern_mat_t *W, int64_t r, float *y)
{
	const kern_traits_t *tr = kern_traits(W->type);
	if (!tr || !tr->supported)
		return ERR_UNSUPPORTED;
	if (r < 0 || r >= W->rows)
		return ERR_RANGE;
	size_t rs = kern_row_size(W->type, W->cols);
	if (rs == 0 && W->cols != 0)
		return ERR_INVAL;
	if (W->layout == KERN_LAYOUT_R16) {
		/* a few rows at a time through a stack buffer */
		uint8_t buf[16 * sizeof(kern_block_q8_0)];
		kern_mat_t part = *W;
		for (int64_t c = 0; c < W->cols; c += 16 * 32) {
			part.cols = W->cols - c < 16 * 32 ? W->cols - c : 16 * 32;
			kern__r16_get_row_part(W, r, c / 32, part.cols / 32, buf);
			tr->to_float(buf, y + c, part.cols);
		}
		return 0;
	}
	tr->to_float((const char *)W->data + (size_t)r * rs, y, W->cols);
	return 0;
}

float kern_dot_f32(int64_t n, const float *a, const float *b)
{
	return kern__ops()->dot_f32(n, a, b);
}

float kern_dot_f32_f16(int64_t n, const float *a, const uint16_t *b)
{
	return kern__ops()->dot_f32_f16(n, a, b);
}

void kern_axpy_f32(int64_t n, float a, const float *x, float *y)
{
	kern__ops()->axpy_f32(n, a, x, y);
}

void kern_axpy_f16(int64_t n, float a, const uint16_t *x, float *y)
{
	kern__ops()->axpy_f16(n, a, x, y);
}
