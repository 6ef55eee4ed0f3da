#include "base/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How many polls a worker spins before it sleeps on the condition variable. */
#ifndef POOL_SPIN
#define POOL_SPIN 20000
#endif

/* How many polls pool_run spins waiting for workers before it yields. */
#ifndef POOL_WAIT_SPIN
#define POOL_WAIT_SPIN 2000
#endif

struct pool {
	int n;
	pthread_t *th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_uint gen;       /* bumped for each job */
	atomic_int pending;    /* workers still running the current job */
	atomic_int stop;
	atomic_int sleepers;
	atomic_int rest;       /* set by pool_rest: idle workers sleep at once */
	pool_fn_cb fn;
	void *arg;
};

struct worker_arg {
	pool_t *p;
	int ith;
};

static void *worker_main(void *a)
{
	struct worker_arg *wa = a;
	pool_t *p = wa->p;
	int ith = wa->ith;
	free(wa);
	/* Start from the generation the pool was created with (0), not from
	 * p->gen: pool_new returns before this thread runs, so the caller may
	 * already have posted job 1, and reading p->gen here would skip it and
	 * leave pool_run waiting forever on `pending`. */
	unsigned seen = 0;
	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
			if (atomic_load(&p->stop))
				return NULL;
			if (++spins < POOL_SPIN && !atomic_load_explicit(&p->rest, memory_order_relaxed)) {
				if (spins % 256 == 0)
					sched_yield();
				else
					cpu_relax();
				continue;
			}
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
				pthread_cond_wait(&p->cv, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
			spins = 0;
		}
		seen = g;
		p->fn(p->arg, ith, p->n);
		atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
	}
}

pool_t *pool_new(int nthreads)
{
	if (nthreads < 1)
		nthreads = 1;
	pool_t *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->n = nthreads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (nthreads > 1) {
		p->th = calloc((size_t)nthreads, sizeof(pthread_t));
		if (!p->th) {
			p->n = 1;          /* no workers to join */
			goto fail;
		}
		for (int i = 1; i < nthreads; i++) {
			struct worker_arg *wa = malloc(sizeof(*wa));
			if (!wa) {
				p->n = i;
				goto fail;
			}
			wa->p = p;
			wa->ith = i;
			if (pthread_create(&p->th[i], NULL, worker_main, wa) != 0) {
				free(wa);
				p->n = i;
				goto fail;
			}
		}
	}
	return p;
fail:
	pool_free(p);
	return NULL;
}

void pool_free(pool_t *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->stop, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->th);
	free(p);
}

int pool_size(const pool_t *p) { return p ? p->n : 1; }

void pool_run(pool_t *p, pool_fn_cb fn, void *arg)
{
	if (!p || p->n == 1) {
		fn(arg, 0, 1);
		return;
	}
	p->fn = fn;
	p->arg = arg;
	atomic_store_explicit(&p->rest, 0, memory_order_relaxed);
	atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
	/* seq_cst, not just release: with the worker's seq_cst sleepers++ then
	 * gen load, either we see its sleepers++ and broadcast, or it sees the
	 * new gen and does not sleep. A release store could be ordered after
	 * our sleepers load on weakly ordered CPUs, losing the wakeup. */
	atomic_fetch_add(&p->gen, 1);
	if (atomic_load(&p->sleepers) > 0) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
	fn(arg, 0, p->n);
	/* Spin a little, then yield: on an oversubscribed machine the worker we
	 * wait for may need this very CPU to finish. */
	for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; spins++) {
		if (spins < POOL_WAIT_SPIN)
			cpu_relax();
		else
			sched_yield();
	}
}

void pool_rest(pool_t *p)
{
	if (p)
		atomic_store_explicit(&p->rest, 1, memory_order_relaxed);
}

int pool_sleeping(pool_t *p)
{
	return p ? atomic_load(&p->sleepers) : 0;
}

void pool_split(long n, int ith, int nth, long align, long *lo, long *hi)
{
	if (align < 1)
		align = 1;
	long units = (n + align - 1) / align;
	long per = units / nth, rem = units % nth;
	long ulo = ith * per + (ith < rem ? ith : rem);
	long uhi = ulo + per + (ith < rem ? 1 : 0);
	*lo = ulo * align;
	*hi = uhi * align;
	if (*lo > n) *lo = n;
	if (*hi > n) *hi = n;
}
