/* matmul.c - Y = X * W^T on the thread pool.
 *
 * Each activation row is quantized once to W's vec_dot_type (into the
 * context's scratch); then the rows of W are split among the threads and
 * each thread computes every token for its rows. Every Y[t][r] is one
 * vec_dot in its type's canonical order, so neither the thread count, nor
 * the batch size, nor the tiling of an ISA's kernel changes a bit.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kern/quants.h"

#define MM_ALIGN 64
/* Rows per thread part are a multiple of this (the SIMD tiles' height). */
#define MM_ROW_ALIGN 16
/* Rows per tile of the generic loop: their weights stay in cache while
 * every token passes over them. */
#define MM_GEN_ROWS 16
/* Threads with their own run of chunks (more share one counter). */
#define MM_MAX_THREADS 64
/* Rows per chunk when threads take chunks as they go (R16 matrices). */
#define MM_CHUNK_ROWS 64
/* Below this many activation values, they are quantized in the caller. */
#define MM_QUANT_PAR_MIN (64 * 1024)

void kern_ctx_init(kern_ctx_t *k, pool_t *pool)
{
	k->pool = pool;
	k->scratch = NULL;
	k->scratch_size = 0;
}

void kern_ctx_close(kern_ctx_t *k)
{
	free(k->scratch);
	k->scratch = NULL;
	k->scratch_size = 0;
}

static int scratch_reserve(kern_ctx_t *k, size_t size)
{
	if (size <= k->scratch_size)
		return 0;
	size = (size + 4095) & ~(size_t)4095;
	void *p = NULL;
	if (posix_memalign(&p, MM_ALIGN, size) != 0)
		return ERR_NOMEM;
	free(k->scratch);
	k->scratch = p;
	k->scratch_size = size;
	return 0;
}

static size_t align_up(size_t v) { return (v + MM_ALIGN - 1) & ~(size_t)(MM_ALIGN - 1); }

/* The generic slice: vec_dot per (row, token), rows in tiles. */
static void mm_generic(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	(void)ws;
	const char *w = a->W->data;
	const char *x = a->xq;
	int64_t rows = a->W->rows, cols = a->W->cols;
	for (int64_t rb = r0; rb < r1; rb += MM_GEN_ROWS) {
		int64_t re = rb + MM_GEN_ROWS < r1 ? rb + MM_GEN_ROWS : r1;
		for (int64_t t = 0; t < a->n; t++)
			for (int64_t r = rb; r < re; r++)
				a->vec_dot(cols, &a->Y[t * rows + r], w + (size_t)r * a->wrow,
					   x + (size_t)t * a->xrow);
	}
}

/* The generic slice for R16 matrices: each 16-row group back to rows in the
 * workspace, then the vec_dot loop (same bits as on the file's layout). */
static void mm_generic_r16(const kern_mm_args_t *a, int64_t r0, int64_t r1, void *ws)
{
	char *rowbuf = ws;
	int64_t rows = a->W->rows, cols = a->W->cols;
	for (int64_t rb = r0; rb < r1; rb += R16) {
		for (int r = 0; r < R16; r++)
			kern__r16_get_row(a->W, rb + r, rowbuf + (size_t)r * a->wrow);
		for (int64_t t = 0; t < a->n; t++)
			for (int r = 0; r < R16; r++)
				a->vec_dot(cols, &a->Y[t * rows + rb + r], rowbuf + (size_t)r * a->wrow,
					   (const char *)a->xq + (size_t)t * a->xrow);
	}
}

#define MM_MAX_MULTI 4

typedef struct mm_job {
	kern_mm_args_t args;       /* of the first matrix; the others differ in W and Y */
	const kern_mat_t *Ws[MM_MAX_MULTI];
	float *Ys[MM_MAX_MULTI];
	int nw;
	kern_from_float_fn quantize;
	const float *X;
	kern_mm_fn mm;
	char *ws;
	size_t ws_size;
	void (*prep)(const kern_mm_args_t *a, void *xt, int ith, int nth);
	void *xt;
	/* Chunked scheduling: chunk c of the job's matrices, taken in order. */
	int chunked;
	long nchunks;
	atomic_long next;
	/* Per thread, its own contiguous run of chunks [front, back) packed in
	 * one word (front << 32 | back): the owner takes from the front, so its
	 * reads stay one sequential stream; a thread that ran out takes from
	 * the back of another's run. */
	_Atomic uint64_t run[MM_MAX_THREADS];
} mm_job_t;

static void quantize_worker(void *arg, int ith, int nth)
{
	mm_job_t *j = arg;
	long lo, hi;
	pool_split((long)j->args.n, ith, nth, 1, &lo, &hi);
	for (long t = lo; t < hi; t++)
		j->quantize(j->X + (size_t)t * j->args.W->cols,
			    (char *)j->args.xq + (size_t)t * j->args.xrow, j->args.W->cols);
}

static void prep_worker(void *arg, int ith, int nth)
{
	mm_job_t *j = arg;
	j->prep(&j->args, j->xt, ith, nth);
}

/* Takes a chunk from the front (the owner) or the back of a run; -1 if empty. */
static long run_take(_Atomic uint64_t *r, int front)
{
	uint64_t v = atomic_load_explicit(r, memory_order_relaxed);
	for (;;) {
		uint64_t f = v >> 32, b = v & 0xffffffffu;
		if (f >= b)
			return -1;
		uint64_t nv = front ? (f + 1) << 32 | b : f << 32 | (b - 1);
		if (atomic_compare_exchange_weak_explicit(r, &v, nv, memory_order_relaxed, memory_order_relaxed))
			return (long)(front ? f : b - 1);
	}
}

/* Each thread computes its share of the rows of every matrix of the job:
 * a fixed part, or (chunked) chunks of MM_CHUNK_ROWS: first those of its
 * own contiguous run, in order (one sequential stream for the hardware
 * prefetcher), then chunks taken from the back of other threads' runs, so
 * that a thread slowed down by its neighbours on the machine does not hold
 * the others at the barrier. (Handing out chunks from one shared counter
 * interleaved the threads' chunks and was 4-16% slower in generation.)
 * Which thread computes a row never changes its bits. */
static void mm_worker(void *arg, int ith, int nth)
{
	mm_job_t *j = arg;
	char *ws = j->ws + (size_t)ith * j->ws_size;
	if (j->chunked) {
		int fresh = 1, victim = 0;
		for (;;) {
			long c = -1;
			if (nth > MM_MAX_THREADS) {
				c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
				if (c >= j->nchunks)
					break;
			} else {
				c = run_take(&j->run[ith], 1);
				while (c < 0 && victim < nth) {
					if (victim != ith)
						c = run_take(&j->run[victim], 0);
					if (c < 0)
						victim++;
				}
				if (c < 0)
					break;
			}
			int w = 0;
			long per;
			while (c >= (per = (long)((j->Ws[w]->rows + MM_CHUNK_ROWS - 1) / MM_CHUNK_ROWS))) {
				c -= per;
				w++;
			}
			kern_mm_args_t a = j->args;
			a.W = j->Ws[w];
			a.Y = j->Ys[w];
			a.fresh = fresh;
			fresh = 0;
			int64_t lo = (int64_t)c * MM_CHUNK_ROWS;
			int64_t hi = lo + MM_CHUNK_ROWS < a.W->rows ? lo + MM_CHUNK_ROWS : a.W->rows;
			j->mm(&a, lo, hi, ws);
		}
		return;
	}
	for (int w = 0; w < j->nw; w++) {
		kern_mm_args_t a = j->args;
		a.W = j->Ws[w];
		a.Y = j->Ys[w];
		a.fresh = 1;
		long lo, hi;
		pool_split((long)a.W->rows, ith, nth, MM_ROW_ALIGN, &lo, &hi);
		if (lo < hi)
			j->mm(&a, lo, hi, ws);
	}
}

int kern_matmul(kern_ctx_t *k, const kern_mat_t *W, const float *X, int64_t n, float *Y)
{
	return kern_matmul_multi(k, &W, 1, X, n, &Y);
}

int kern_matmul_multi(kern_ctx_t *k, const kern_mat_t *const *Wv, int nw, const float *X, int64_t n, float *const *Yv)
{
	if (nw < 1)
		return ERR_INVAL;
	if (nw > MM_MAX_MULTI) {
		for (int i = 0; i < nw; i += MM_MAX_MULTI) {
			int r = kern_matmul_multi(k, Wv + i, nw - i < MM_MAX_MULTI ? nw - i : MM_MAX_MULTI, X, n, Yv + i);
			if (r)
				return r;
		}
		return 0;
	}
	for (int i = 1; i < nw; i++)
		if (Wv[i]->type != Wv[0]->type || Wv[i]->cols != Wv[0]->cols || Wv[i]->rows < 0 ||
		    Wv[i]->layout != Wv[0]->layout) {
			/* Different shapes or types: one product at a time. */
			for (int w = 0; w < nw; w++) {
				int r = kern_matmul_multi(k, &Wv[w], 1, X, n, &Yv[w]);
				if (r)
					return r;
			}
			return 0;
		}
	const kern_mat_t *W = Wv[0];
	float *Y = Yv[0];
	const kern_traits_t *tr = kern_traits(W->type);
	if (!tr || !tr->supported || !tr->vec_dot)
		return ERR_UNSUPPORTED;
	if (n < 0 || W->rows < 0 || W->cols < 0)
		return ERR_INVAL;
	size_t wrow = kern_row_size(W->type, W->cols);
	if (wrow == 0 && W->cols > 0)
		return ERR_INVAL;
	int r16 = W->layout == KERN_LAYOUT_R16;
	if (W->layout != KERN_LAYOUT_ROWS && !r16)
		return ERR_INVAL;
	if (r16) {
		kern_mat_t plain = *W;
		plain.layout = KERN_LAYOUT_ROWS;
		if (!kern_repack_ok(&plain) || ((uintptr_t)W->data & 63))
			return ERR_INVAL;
		for (int w = 1; w < nw; w++)
			if (Wv[w]->rows % R16 || ((uintptr_t)Wv[w]->data & 63))
				return ERR_INVAL;
	}
	if (n == 0)
		return 0;
	if (W->cols == 0) {
		for (int w = 0; w < nw; w++)
			for (int64_t i = 0; i < n * Wv[w]->rows; i++)
				Yv[w][i] = 0.0f;
		return 0;
	}
	const kern_ops_t *ops = kern__ops();
	int vdt = tr->vec_dot_type;
	int nth = pool_size(k->pool);

	mm_job_t j;
	memset(&j, 0, sizeof(j));
	j.args.W = W;
	j.nw = nw;
	for (int w = 0; w < nw; w++) {
		j.Ws[w] = Wv[w];
		j.Ys[w] = Yv[w];
	}
	j.args.wrow = wrow;
	j.args.n = n;
	j.args.Y = Y;
	j.args.vec_dot = tr->vec_dot;
	j.X = X;
	if (r16) {
		j.chunked = 1;
		for (int w = 0; w < nw; w++)
			j.nchunks += (long)((Wv[w]->rows + MM_CHUNK_ROWS - 1) / MM_CHUNK_ROWS);
		atomic_init(&j.next, 0);
		for (int t = 0; t < nth && t < MM_MAX_THREADS; t++) {
			long lo, hi;
			pool_split(j.nchunks, t, nth, 1, &lo, &hi);
			atomic_init(&j.run[t], (uint64_t)lo << 32 | (uint64_t)hi);
		}
		j.mm = ops->mm_r16[W->type] ? ops->mm_r16[W->type] : mm_generic_r16;
		j.ws_size = align_up(ops->mm_r16[W->type] ? ops->mm_r16_ws(W->type, W->cols, n) : R16 * wrow);
	} else {
		j.mm = ops->mm[W->type] ? ops->mm[W->type] : mm_generic;
		j.ws_size = ops->mm[W->type] && ops->mm_ws ? align_up(ops->mm_ws(W->type, W->cols, n)) : 0;
	}

	size_t xbytes = 0;
	if (vdt != KERN_F32) {
		j.args.xrow = kern_row_size(vdt, W->cols);
		if (j.args.xrow == 0)
			return ERR_INVAL;    /* cols not a multiple of the activation block */
		if ((uint64_t)n > SIZE_MAX / 2 / j.args.xrow)
			return ERR_RANGE;
		xbytes = align_up((size_t)n * j.args.xrow);
		j.quantize = ops->quantize[vdt];
	} else {
		j.args.xrow = (size_t)W->cols * sizeof(float);
		j.args.xq = X;
	}
	size_t pbytes = 0;
	if ((r16 ? ops->mm_r16[W->type] : ops->mm[W->type]) && ops->mm_prep)
		pbytes = align_up(ops->mm_prep_size(W->type, W->layout, W->cols, n));
	int rc = scratch_reserve(k, xbytes + pbytes + j.ws_size * (size_t)nth);
	if (rc)
		return rc;
	j.ws = (char *)k->scratch + xbytes + pbytes;
	if (vdt != KERN_F32) {
		j.args.xq = k->scratch;
		/* A few rows quantize faster in the caller than a wake-up of the
		 * pool costs (generation: one row per matmul, hundreds per token). */
		if (n * W->cols < MM_QUANT_PAR_MIN)
			quantize_worker(&j, 0, 1);
		else
			pool_run(k->pool, quantize_worker, &j);
	}
	if (pbytes) {
		j.prep = ops->mm_prep;
		j.xt = (char *)k->scratch + xbytes;
		pool_run(k->pool, prep_worker, &j);
		j.args.xt = j.xt;
	}
	pool_run(k->pool, mm_worker, &j);
	return 0;
}
