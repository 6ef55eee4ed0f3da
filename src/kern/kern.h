/* kern.h - tensor types and the kernels that compute with them.
 *
 * One type-traits table drives every type. The ids are GGML's type ids, as
 * stored in GGUF files, so a tensor's type field indexes the table directly.
 * Every id GGUF defines has its block layout here (so the GGUF reader can
 * validate any file), but only `supported` types have kernels; the model
 * loader refuses the others by tensor name and type name.
 *
 * Determinism contract (the network relies on it: replay, batching, audits):
 *   - kern_matmul computes Y[t][r] = vec_dot(W row r, quantize(X row t)) with
 *     a reduction order fixed by the type alone: it never depends on the
 *     number of rows t in the batch, on the thread count, or on tiling.
 *   - Each type's scalar `_ref` kernel defines that order; the AVX2 and
 *     AVX-512 kernels reproduce it, so results are bit-identical across ISAs
 *     (see quants_ref.c for each type's canonical order). This holds for
 *     finite inputs; NaN or Inf activations give unspecified results, which
 *     may differ between ISAs (callers must not feed them).
 */
#ifndef COLONY_KERN_KERN_H
#define COLONY_KERN_KERN_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"

enum kern_type {
	KERN_F32 = 0, KERN_F16 = 1, KERN_Q4_0 = 2, KERN_Q4_1 = 3,
	KERN_Q5_0 = 6, KERN_Q5_1 = 7, KERN_Q8_0 = 8, KERN_Q8_1 = 9,
	KERN_Q2_K = 10, KERN_Q3_K = 11, KERN_Q4_K = 12, KERN_Q5_K = 13,
	KERN_Q6_K = 14, KERN_Q8_K = 15,
	KERN_IQ2_XXS = 16, KERN_IQ2_XS = 17, KERN_IQ3_XXS = 18, KERN_IQ1_S = 19,
	KERN_IQ4_NL = 20, KERN_IQ3_S = 21, KERN_IQ2_S = 22, KERN_IQ4_XS = 23,
	KERN_I8 = 24, KERN_I16 = 25, KERN_I32 = 26, KERN_I64 = 27, KERN_F64 = 28,
	KERN_IQ1_M = 29, KERN_BF16 = 30, KERN_TQ1_0 = 34, KERN_TQ2_0 = 35,
	KERN_MXFP4 = 39,
	KERN_TYPE_COUNT = 40
};

/* to_float / from_float: n is a multiple of blck_size. from_float is the
 * reference quantizer (round half to even); it is deterministic. */
typedef void (*kern_to_float_fn)(const void *x, float *y, int64_t n);
typedef void (*kern_from_float_fn)(const float *x, void *y, int64_t n);
/* *s = dot(x, y) over n elements; x of this type, y of vec_dot_type. */
typedef void (*kern_vec_dot_fn)(int64_t n, float *s, const void *x, const void *y);

typedef struct kern_traits {
	const char *name;          /* "q8_0" ... */
	int64_t blck_size;         /* elements per block (0 = id unused) */
	size_t type_size;          /* bytes per block */
	int supported;             /* kernels exist for this type */
	kern_to_float_fn to_float;
	kern_from_float_fn from_float;
	int vec_dot_type;          /* activations are converted to this type */
	kern_vec_dot_fn vec_dot;   /* the selected (fastest available) kernel */
} kern_traits_t;

/* Instruction sets a kernel may be built for. */
enum kern_isa { KERN_ISA_REF = 0, KERN_ISA_AVX2 = 1, KERN_ISA_AVX512 = 2, KERN_ISA_COUNT };

/* Traits of type id t, or NULL if t is not a GGML type id. */
const kern_traits_t *kern_traits(int t);
/* Name of type id t ("q4_k"), or "unknown(<id>)"-style static text. */
const char *kern_type_name(int t);
/* Bytes of a row of n elements of type t; 0 if t unknown or n not a multiple
 * of the block size. Never overflows for n < 2^48. */
size_t kern_row_size(int t, int64_t n);

/* CPU features detected at run time and the ISA kernels currently use. */
int kern_isa_available(enum kern_isa isa);
enum kern_isa kern_isa_active(void);
const char *kern_isa_name(enum kern_isa isa);
/* Force kernels of one ISA (for tests and `--isa`); fails if unavailable. */
int kern_isa_select(enum kern_isa isa) WUR;
/* The vec_dot of type t for a given ISA, NULL if none (tests compare them). */
kern_vec_dot_fn kern_vec_dot_isa(int t, enum kern_isa isa);

/* How a matrix's blocks are laid out in memory.
 *   ROWS: row-major, rows contiguous (row r starts at data +
 *         r * kern_row_size(type, cols)), as in a GGUF file.
 *   R16:  Q8_0 and Q4_0 only, made by kern_repack: groups of 16 rows; in a
 *         group, blocks go in pairs (2p, 2p + 1), each pair 64 bytes of the
 *         32 f16 scales (16 rows of block 2p, then of 2p + 1) followed by the
 *         quants of block 2p for the 16 rows, then of block 2p + 1, each
 *         block as 64-byte vectors whose 32-bit lane r holds 4 bytes of row
 *         r (vector k: bytes 4k..4k+3 of the block's qs). A group is one
 *         sequential stream of the same size as its 16 rows, and every pair
 *         starts on a 64-byte boundary. Same numbers, same results: only
 *         the order of the bytes changes. */
enum kern_layout { KERN_LAYOUT_ROWS = 0, KERN_LAYOUT_R16 = 1 };

/* A weight matrix: `rows` rows of `cols` elements of `type`. */
typedef struct kern_mat {
	const void *data;          /* 64-byte aligned for R16 */
	int type;
	int64_t rows, cols;
	int layout;                /* enum kern_layout; 0 = ROWS */
} kern_mat_t;

/* Whether W (ROWS layout) can be repacked to R16: Q8_0 or Q4_0, rows a
 * multiple of 16, an even number of blocks per row. */
int kern_repack_ok(const kern_mat_t *W);
/* kern_repack_ok, and the active ISA has R16 kernels for W's type (elsewhere
 * R16 still computes the same bits, through a slower generic path). */
int kern_repack_useful(const kern_mat_t *W);
/* Writes W (ROWS, kern_repack_ok) in R16 layout to dst (64-byte aligned,
 * rows * kern_row_size(type, cols) bytes, not overlapping W). */
void kern_repack(const kern_mat_t *W, void *dst);

/* Compute context: a thread pool and a scratch buffer for quantized
 * activations, grown on demand. */
typedef struct kern_ctx {
	pool_t *pool;              /* borrowed; NULL = single-threaded */
	void *scratch;
	size_t scratch_size;
} kern_ctx_t;

void kern_ctx_init(kern_ctx_t *k, pool_t *pool);
void kern_ctx_close(kern_ctx_t *k);

/* Y[n x W.rows] = X[n x W.cols] * W^T. X and Y are row-major f32, distinct.
 * Threads split the output (rows of W), never the reduction. */
int kern_matmul(kern_ctx_t *k, const kern_mat_t *W, const float *X, int64_t n, float *Y) WUR;

/* Several products of the same activations at once (q, k, v; gate, up):
 * Y[i] = X * W[i]^T, in one pass of the pool, the activations quantized once.
 * Every output is bit-identical to kern_matmul's. Matrices of different
 * types or widths are computed one after another. */
int kern_matmul_multi(kern_ctx_t *k, const kern_mat_t *const *W, int nw, const float *X, int64_t n,
		      float *const *Y) WUR;

/* Row r of W as f32 into y (W.cols floats): embedding look-up (any layout). */
int kern_get_row(const kern_mat_t *W, int64_t r, float *y) WUR;

/* Canonical-order f32 dot products for attention (bit-identical across ISAs). */
float kern_dot_f32(int64_t n, const float *a, const float *b);
float kern_dot_f32_f16(int64_t n, const float *a, const uint16_t *b);
/* y += a * x, elementwise (f32 and f16 x), for attention's weighted sum. */
void kern_axpy_f32(int64_t n, float a, const float *x, float *y);
void kern_axpy_f16(int64_t n, float a, const uint16_t *x, float *y);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float kern_f16_to_f32(uint16_t h);
uint16_t kern_f32_to_f16(float f);
float kern_bf16_to_f32(uint16_t h);
uint16_t kern_f32_to_bf16(float f);

#endif
