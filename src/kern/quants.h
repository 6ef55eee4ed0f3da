/* quants.h - block layouts and kernel tables shared inside src/kern/.
 *
 * Not a public header: only src/kern/ and src/kern/arch/ include it (and the
 * kernel tests, which compare ISAs). The block layouts of the types that real
 * GGUF files carry are GGML's, byte for byte.
 */
#ifndef COLONY_KERN_QUANTS_H
#define COLONY_KERN_QUANTS_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "kern/kern.h"

#define QK4_0 32
#define QK8_0 32
#define QK_K 256

/* Q4_0: 32 weights w = d * (q - 8), q in 0..15; byte j holds element j in
 * its low nibble and element j + 16 in its high nibble. */
typedef struct {
	uint16_t d;                /* f16 */
	uint8_t qs[QK4_0 / 2];
} kern_block_q4_0;
static_assert(sizeof(kern_block_q4_0) == 18, "q4_0 block");

/* Q8_0: 32 weights w = d * q. Also the activation type of Q8_0/Q4_0
 * weights, where our quantizer keeps q in -127..127 (never -128). */
typedef struct {
	uint16_t d;                /* f16 */
	int8_t qs[QK8_0];
} kern_block_q8_0;
static_assert(sizeof(kern_block_q8_0) == 34, "q8_0 block");

/* Q4_K: 256 weights in 8 sub-blocks of 32; w = d*sc[j]*q - dmin*m[j] with
 * 6-bit sc/m packed in 12 bytes: for j < 4, sc[j] = s[j] & 63 and
 * m[j] = s[j+4] & 63; for j >= 4, sc[j] = (s[j+4] & 15) | (s[j-4] >> 6) << 4
 * and m[j] = (s[j+4] >> 4) | (s[j] >> 6) << 4. qs: four 32-byte groups;
 * group c holds elements 64c..64c+31 in low nibbles and 64c+32.. in high. */
typedef struct {
	uint16_t d;                /* f16, scale of the scales */
	uint16_t dmin;             /* f16, scale of the mins */
	uint8_t scales[12];
	uint8_t qs[QK_K / 2];
} kern_block_q4_k;
static_assert(sizeof(kern_block_q4_k) == 144, "q4_k block");

/* Q6_K: 256 weights in 16 sub-blocks of 16; w = d * sc[j] * (q - 32), q a
 * 6-bit value split in ql (low 4 bits) and qh (high 2 bits). In each half
 * h (128 elements), for l < 32: element l is ql[64h+l] & 15, l+32 is
 * ql[64h+l+32] & 15, l+64 is ql[64h+l] >> 4, l+96 is ql[64h+l+32] >> 4,
 * and their high bits are qh[32h+l] bits 0-1, 2-3, 4-5, 6-7. */
typedef struct {
	uint8_t ql[QK_K / 2];
	uint8_t qh[QK_K / 4];
	int8_t scales[QK_K / 16];
	uint16_t d;                /* f16 */
} kern_block_q6_k;
static_assert(sizeof(kern_block_q6_k) == 210, "q6_k block");

/* Q8_K: the activation type of K-quant weights. q in -127..127, bsums[i]
 * is the sum of q[16i..16i+15]. */
typedef struct {
	float d;
	int8_t qs[QK_K];
	int16_t bsums[QK_K / 16];
} kern_block_q8_k;
static_assert(sizeof(kern_block_q8_k) == 292, "q8_k block");

/* Unpacks the 6-bit scale and min of sub-block j of a Q4_K block. */
static inline void kern__q4k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

/* Scalar f16 <-> f32 (the public kern_f16_to_f32 is the same function). */
float kern__f16_to_f32(uint16_t h);

/* ---- reference kernels (quants_ref.c) ---- */
void kern__f32_to_float_ref(const void *x, float *y, int64_t n);
void kern__f32_from_float_ref(const float *x, void *y, int64_t n);
void kern__f16_to_float_ref(const void *x, float *y, int64_t n);
void kern__f16_from_float_ref(const float *x, void *y, int64_t n);
void kern__bf16_to_float_ref(const void *x, float *y, int64_t n);
void kern__bf16_from_float_ref(const float *x, void *y, int64_t n);
void kern__q4_0_to_float_ref(const void *x, float *y, int64_t n);
void kern__q4_0_from_float_ref(const float *x, void *y, int64_t n);
void kern__q8_0_to_float_ref(const void *x, float *y, int64_t n);
void kern__q8_0_from_float_ref(const float *x, void *y, int64_t n);
void kern__q4_k_to_float_ref(const void *x, float *y, int64_t n);
void kern__q4_k_from_float_ref(const float *x, void *y, int64_t n);
void kern__q6_k_to_float_ref(const void *x, float *y, int64_t n);
void kern__q6_k_from_float_ref(const float *x, void *y, int64_t n);
void kern__q8_k_to_float_ref(const void *x, float *y, int64_t n);
void kern__q8_k_from_float_ref(const float *x, void *y, int64_t n);

void kern__vec_dot_f32_ref(int64_t n, float *s, const void *x, const void *y);
void kern__vec_dot_f16_ref(int64_t n, float *s, const void *x, const void *y);
void kern__vec_dot_bf16_ref(int64_t n, float *s, const void *x, const void *y);
void kern__vec_dot_q4_0_ref(int64_t n, float *s, const void *x, const void *y);
void kern__vec_dot_q8_0_ref(int64_t n, float *s, const void *x, const void *y);
void kern__vec_dot_q4_k_ref(int64_t n, float *s, const void *x, const void *y);
void kern__vec_dot_q6_k_ref(int64_t n, float *s, const void *x, const void *y);

/* The 16-lane striped f32 reduction all float dots share: lane l holds the
 * fmaf chain of elements i = l (mod 16) in increasing i, then the lanes are
 * folded by halves: l += l+8, then l+4, l+2, l+1. */
static inline float kern__fold16(float *a)
{
	for (int h = 8; h >= 1; h /= 2)
		for (int l = 0; l < h; l++)
			a[l] = a[l] + a[l + h];
	return a[0];
}

/* ---- R16 layout (kern.h) ---- */

#define R16 16
/* Bytes of one row's quants in one block, and of one pair of blocks of a
 * 16-row group (64 bytes of scales, then two blocks of 16 rows). */
static inline size_t kern__r16_qbytes(int type) { return type == KERN_Q4_0 ? 16 : 32; }
static inline size_t kern__r16_pair(int type) { return 64 + 2 * R16 * kern__r16_qbytes(type); }
/* Offset of dword k of row r's quants (0..15) in a block of a group: the
 * block's quants are qbytes / 4 vectors of 64 bytes, vector k holding
 * dword k (bytes 4k..4k+3 of qs) of row r in its 32-bit lane r. */
static inline size_t kern__r16_qoff(int r, int k) { return (size_t)k * 64 + (size_t)r * 4; }
/* Row r of an R16 matrix in ROWS layout (kern_row_size bytes) into dst;
 * _part: only its nblk blocks from block b0. */
void kern__r16_get_row(const kern_mat_t *W, int64_t r, void *dst);
void kern__r16_get_row_part(const kern_mat_t *W, int64_t r, int64_t b0, int64_t nblk, void *dst);

/* ---- per-ISA kernel tables ---- */

/* Arguments of a matmul slice: Y[t][r] for r in [r0, r1), t in [0, n). */
typedef struct kern_mm_args {
	const kern_mat_t *W;
	size_t wrow;               /* bytes per weight row */
	const void *xq;            /* activations in vec_dot_type, n rows */
	size_t xrow;               /* bytes per activation row */
	int64_t n;
	float *Y;                  /* row t at Y + t * W->rows */
	kern_vec_dot_fn vec_dot;   /* the active ISA's vec_dot of W's type */
	const void *xt;            /* activations re-laid by mm_prep, or NULL */
	int fresh;                 /* the first slice this thread computes in this job:
	                              tables of the activations kept in the thread's
	                              workspace must be (re)computed */
} kern_mm_args_t;

typedef void (*kern_mm_fn)(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws);

typedef struct kern_ops {
	kern_vec_dot_fn vec_dot[KERN_TYPE_COUNT];
	/* Activation quantizers (Q8_0, Q8_K); same bytes as the _ref ones. */
	kern_from_float_fn quantize[KERN_TYPE_COUNT];
	/* Optional matmul slice kernels; NULL = the generic vec_dot loop. */
	kern_mm_fn mm[KERN_TYPE_COUNT];
	/* Per-thread workspace bytes the mm kernel of a type needs. */
	size_t (*mm_ws)(int type, int64_t cols, int64_t n);
	/* The same for R16 matrices; NULL = rows unpacked for the generic loop.
	 * Slices start on a multiple of 16 rows. */
	kern_mm_fn mm_r16[KERN_TYPE_COUNT];
	size_t (*mm_r16_ws)(int type, int64_t cols, int64_t n);
	/* Optional shared re-layout of the quantized activations, run on all
	 * threads before mm (part ith of nth); size 0 = not wanted for this
	 * type, weight layout (KERN_LAYOUT_*) and batch size. */
	size_t (*mm_prep_size)(int type, int layout, int64_t cols, int64_t n);
	void (*mm_prep)(const kern_mm_args_t *a, void *xt, int ith, int nth);
	float (*dot_f32)(int64_t n, const float *a, const float *b);
	float (*dot_f32_f16)(int64_t n, const float *a, const uint16_t *b);
	void (*axpy_f32)(int64_t n, float a, const float *x, float *y);
	void (*axpy_f16)(int64_t n, float a, const uint16_t *x, float *y);
} kern_ops_t;

/* Each ISA's table, filled once; NULL when that ISA was not compiled in.
 * Entries an ISA leaves NULL fall back to the ref ones. */
const kern_ops_t *kern__ops_ref(void);
const kern_ops_t *kern__ops_avx2(void);
const kern_ops_t *kern__ops_avx512(void);
/* The table of the active ISA (complete: no NULL except mm/mm_ws). */
const kern_ops_t *kern__ops(void);
/* The complete table of a given ISA, NULL if unavailable on this CPU. */
const kern_ops_t *kern__ops_isa(enum kern_isa isa);

/* Scalar helpers the ref and SIMD dot kernels share. */
float kern__dot_f32_ref(int64_t n, const float *a, const float *b);
float kern__dot_f32_f16_ref(int64_t n, const float *a, const uint16_t *b);
void kern__axpy_f32_ref(int64_t n, float a, const float *x, float *y);
void kern__axpy_f16_ref(int64_t n, float a, const uint16_t *x, float *y);

#endif
