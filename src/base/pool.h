/* pool.h - a fixed thread pool that runs one parallel job at a time.
 *
 * pool_run(p, fn, arg) calls fn(arg, ith, nth) once on each of the pool's nth
 * threads (the caller is thread 0) and returns when all calls have returned.
 * Kernels split their output rows by ith/nth, so the work a thread does, and
 * the order of every reduction, never depends on nth: results are identical
 * for any thread count.
 *
 * Workers spin briefly after a job before sleeping, since a forward pass
 * dispatches hundreds of short jobs per token. A pool is used by one caller
 * thread at a time.
 */
#ifndef COLONY_BASE_POOL_H
#define COLONY_BASE_POOL_H

#include "base/err.h"

typedef struct pool pool_t;
typedef void (*pool_fn_cb)(void *arg, int ith, int nth);

/* nthreads >= 1 (1 = run everything in the caller). NULL on failure. */
pool_t *pool_new(int nthreads);
void pool_free(pool_t *p);            /* joins the workers; NULL is fine */
int pool_size(const pool_t *p);       /* 1 for NULL */
/* p may be NULL: then fn(arg, 0, 1) runs in the caller. */
void pool_run(pool_t *p, pool_fn_cb fn, void *arg);

/* The job just run was the last for a while (a shard step, a token waiting
 * on the network): idle workers go to sleep at once instead of spinning, so
 * they leave the CPU to other processes. The next pool_run undoes it. */
void pool_rest(pool_t *p);
/* Workers asleep on the condition variable now (a snapshot, for tests). */
int pool_sleeping(pool_t *p);
/* Split [0, n) into nth nearly equal contiguous parts; part ith is [*lo, *hi).
 * `align` rounds part boundaries to multiples of align (except the end). */
void pool_split(long n, int ith, int nth, long align, long *lo, long *hi);

#endif
