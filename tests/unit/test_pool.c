/* test_pool.c - the thread pool: every thread runs each job exactly once, the
 * caller sees the workers' writes when pool_run returns, back-to-back short
 * jobs, sleeping workers wake up, pool_free with idle or just-started workers,
 * pool_rest putting idle workers to sleep, and pool_split's cover of [0, n).
 *
 * A lost job or a lost wakeup shows up as a hang, so a watchdog (SIGALRM,
 * whose default action ends the process) turns a hang into a failure instead
 * of waiting for ctest's timeout. Run this under ThreadSanitizer too
 * (-DCOLONY_TSAN=ON). */
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "base/pool.h"

#define MAXTH 16

/* Default SIGALRM action ends the process: a hang fails in bounded time
 * instead of at ctest's timeout. Generous, since TSan slows things a lot. */
static void watchdog(void) { alarm(120); }

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- every ith once per job ---------------------------------------------- */

struct count_job {
	atomic_int calls[MAXTH];
	atomic_int bad_nth;
	atomic_int bad_ith;
	int want_nth;
	long seen_job[MAXTH];   /* plain writes: the caller reads them after pool_run */
	long job;               /* plain: written by the caller before pool_run */
};

static void count_fn(void *arg, int ith, int nth)
{
	struct count_job *j = arg;
	if (nth != j->want_nth)
		atomic_fetch_add(&j->bad_nth, 1);
	if (ith < 0 || ith >= nth || ith >= MAXTH) {
		atomic_fetch_add(&j->bad_ith, 1);
		return;
	}
	atomic_fetch_add(&j->calls[ith], 1);
	j->seen_job[ith] = j->job;
}

static void test_each_thread_once(void)
{
	watchdog();
	const int sizes[] = { 1, 2, 3, 4, 8, 16 };
	for (int si = 0; si < (int)(sizeof(sizes) / sizeof(sizes[0])); si++) {
		int n = sizes[si];
		pool_t *p = pool_new(n);
		REQUIRE(p);
		CHECK_EQ_INT(pool_size(p), n);
		struct count_job j;
		memset(&j, 0, sizeof(j));
		j.want_nth = n;
		for (long job = 1; job <= 300; job++) {
			j.job = job;
			pool_run(p, count_fn, &j);
			/* pool_run has returned: every call has finished, and their
			 * plain writes are visible here. */
			for (int i = 0; i < n; i++) {
				REQUIRE(atomic_load(&j.calls[i]) == job);
				REQUIRE(j.seen_job[i] == job);
			}
		}
		CHECK_EQ_INT(atomic_load(&j.bad_nth), 0);
		CHECK_EQ_INT(atomic_load(&j.bad_ith), 0);
		for (int i = n; i < MAXTH; i++)
			CHECK_EQ_INT(atomic_load(&j.calls[i]), 0);
		pool_free(p);
	}
}

/* ---- many short jobs, each with its own fn/arg --------------------------- */

struct sum_job {
	long base;
	long out[MAXTH];
};

static void sum_fn(void *arg, int ith, int nth)
{
	struct sum_job *j = arg;
	j->out[ith] = j->base + ith;
}

static void neg_fn(void *arg, int ith, int nth)
{
	struct sum_job *j = arg;
	j->out[ith] = -(j->base + ith);
}

static void test_many_short_jobs(void)
{
	watchdog();
	enum { NTH = 3, JOBS = 3000 };   /* modest: spinning workers on a loaded 2-core box cost ~ms per job */
	pool_t *p = pool_new(NTH);
	REQUIRE(p);
	/* Two argument blocks and two functions alternate, so a worker that ran
	 * a stale fn or arg would leave a wrong value behind. */
	struct sum_job a[2];
	memset(a, 0, sizeof(a));
	long bad = 0;
	for (long k = 0; k < JOBS; k++) {
		struct sum_job *j = &a[k & 1];
		j->base = k * 100;
		pool_run(p, (k & 2) ? neg_fn : sum_fn, j);
		for (int i = 0; i < NTH; i++) {
			long want = (k & 2) ? -(k * 100 + i) : k * 100 + i;
			bad += j->out[i] != want;
		}
	}
	CHECK_EQ_INT(bad, 0);
	pool_free(p);
}

/* ---- nth = 1 and NULL ------------------------------------------------------ */

struct self_job {
	pthread_t caller;
	int calls, same_thread, ith, nth;
};

static void self_fn(void *arg, int ith, int nth)
{
	struct self_job *j = arg;
	j->calls++;
	j->same_thread = pthread_equal(pthread_self(), j->caller);
	j->ith = ith;
	j->nth = nth;
}

static void test_single_thread(void)
{
	watchdog();
	const int asks[] = { 1, 0, -5 };   /* < 1 means 1 */
	for (int a = 0; a < 3; a++) {
		pool_t *p = pool_new(asks[a]);
		REQUIRE(p);
		CHECK_EQ_INT(pool_size(p), 1);
		struct self_job j = { .caller = pthread_self() };
		for (int k = 0; k < 10; k++)
			pool_run(p, self_fn, &j);
		CHECK_EQ_INT(j.calls, 10);
		CHECK(j.same_thread);
		CHECK(j.ith == 0 && j.nth == 1);
		pool_free(p);
	}
	struct self_job j = { .caller = pthread_self() };
	pool_run(NULL, self_fn, &j);
	CHECK_EQ_INT(j.calls, 1);
	CHECK(j.same_thread && j.ith == 0 && j.nth == 1);
	CHECK_EQ_INT(pool_size(NULL), 1);
	pool_free(NULL);

	/* In a bigger pool, ith 0 is the caller. */
	pool_t *p = pool_new(3);
	REQUIRE(p);
	struct count_job c;
	memset(&c, 0, sizeof(c));
	c.want_nth = 3;
	pool_run(p, count_fn, &c);
	CHECK_EQ_INT(atomic_load(&c.calls[0]), 1);
	pool_free(p);
}

/* ---- start-up and shut-down ------------------------------------------------ */

static void test_run_right_after_new(void)
{
	watchdog();
	/* The first job is posted before the workers have necessarily started
	 * running: none of them may miss it. */
	for (int k = 0; k < 100; k++) {
		int n = 2 + k % 7;
		pool_t *p = pool_new(n);
		REQUIRE(p);
		struct count_job j;
		memset(&j, 0, sizeof(j));
		j.want_nth = n;
		j.job = 1;
		pool_run(p, count_fn, &j);
		for (int i = 0; i < n; i++)
			REQUIRE(atomic_load(&j.calls[i]) == 1);
		pool_free(p);
	}
}

static void test_free_idle(void)
{
	watchdog();
	/* Never used, freed at once (workers may not even have started). */
	for (int k = 0; k < 100; k++)
		pool_free(pool_new(1 + k % 8));

	/* Workers spinning right after a job. */
	for (int k = 0; k < 50; k++) {
		pool_t *p = pool_new(4);
		REQUIRE(p);
		struct count_job j;
		memset(&j, 0, sizeof(j));
		j.want_nth = 4;
		pool_run(p, count_fn, &j);
		pool_free(p);
	}

	/* Workers asleep on the condition variable (spinning ends well within
	 * 50 ms): they must wake for a job and for pool_free. */
	pool_t *p = pool_new(4);
	REQUIRE(p);
	struct count_job j;
	memset(&j, 0, sizeof(j));
	j.want_nth = 4;
	for (long k = 1; k <= 8; k++) {
		sleep_ms(k & 1 ? 50 : 1);      /* asleep, or somewhere in between */
		j.job = k;
		pool_run(p, count_fn, &j);
		for (int i = 0; i < 4; i++)
			REQUIRE(atomic_load(&j.calls[i]) == k && j.seen_job[i] == k);
	}
	sleep_ms(50);
	pool_free(p);
}

static void test_wake_race(void)
{
	watchdog();
	/* Pauses of a few hundred microseconds land near the spin-to-sleep
	 * switch, where a wakeup could be lost between a worker deciding to
	 * sleep and the caller deciding nobody sleeps. */
	pool_t *p = pool_new(3);
	REQUIRE(p);
	struct count_job j;
	memset(&j, 0, sizeof(j));
	j.want_nth = 3;
	for (long k = 1; k <= 400; k++) {
		struct timespec ts = { 0, (k % 40) * 25000L };   /* 0 .. 1 ms */
		nanosleep(&ts, NULL);
		j.job = k;
		pool_run(p, count_fn, &j);
		REQUIRE(atomic_load(&j.calls[1]) == k && atomic_load(&j.calls[2]) == k);
	}
	pool_free(p);
}

/* pool_rest: idle workers stop spinning and sleep at once (well before the
 * spin would end: 20000 polls), and wake for the next job; rests at any
 * point between jobs lose no job. */
static void test_rest(void)
{
	watchdog();
	pool_t *p = pool_new(4);
	REQUIRE(p);
	struct count_job j;
	memset(&j, 0, sizeof(j));
	j.want_nth = 4;
	for (long k = 1; k <= 20; k++) {
		j.job = k;
		pool_run(p, count_fn, &j);
		pool_rest(p);
		int waited = 0;
		while (pool_sleeping(p) < 3 && waited < 5000) {
			sleep_ms(1);
			waited++;
		}
		CHECK(pool_sleeping(p) == 3);
		for (int i = 0; i < 4; i++)
			REQUIRE(atomic_load(&j.calls[i]) == k && j.seen_job[i] == k);
	}
	/* Rests racing with jobs: right after one, or after a short pause. */
	for (long k = 21; k <= 400; k++) {
		if (k % 3 == 0) {
			struct timespec ts = { 0, (k % 7) * 20000L };
			nanosleep(&ts, NULL);
		}
		j.job = k;
		pool_run(p, count_fn, &j);
		if (k % 2)
			pool_rest(p);
		for (int i = 0; i < 4; i++)
			REQUIRE(atomic_load(&j.calls[i]) == k);
	}
	pool_rest(NULL);
	CHECK(pool_sleeping(NULL) == 0);
	pool_free(p);
}

/* ---- pool_split ------------------------------------------------------------- */

static void test_split(void)
{
	const long aligns[] = { 1, 2, 3, 4, 8, 16, 32, 64, 0, -4 };
	long bad = 0;
	for (long n = 0; n <= 300; n++)
	for (int nth = 1; nth <= 9; nth++)
	for (int a = 0; a < (int)(sizeof(aligns) / sizeof(aligns[0])); a++) {
		long al = aligns[a] < 1 ? 1 : aligns[a];
		long prev_hi = 0, minu = -1, maxu = -1;
		for (int ith = 0; ith < nth; ith++) {
			long lo = -1, hi = -1;
			pool_split(n, ith, nth, aligns[a], &lo, &hi);
			if (lo != prev_hi || hi < lo || hi > n)
				bad++;                          /* contiguous, in range */
			if ((lo != n && lo % al != 0) || (hi != n && hi % al != 0))
				bad++;                          /* aligned, except at n */
			long units = (hi - lo + al - 1) / al;
			if (minu < 0 || units < minu) minu = units;
			if (units > maxu) maxu = units;
			prev_hi = hi;
		}
		if (prev_hi != n)
			bad++;                                  /* covers [0, n) */
		if (maxu - minu > 1)
			bad++;                                  /* balanced to one unit */
	}
	CHECK_EQ_INT(bad, 0);

	/* exact small cases */
	long lo, hi;
	pool_split(10, 0, 3, 1, &lo, &hi); CHECK(lo == 0 && hi == 4);
	pool_split(10, 1, 3, 1, &lo, &hi); CHECK(lo == 4 && hi == 7);
	pool_split(10, 2, 3, 1, &lo, &hi); CHECK(lo == 7 && hi == 10);
	pool_split(10, 0, 2, 4, &lo, &hi); CHECK(lo == 0 && hi == 8);   /* 3 units: 2 + 1 */
	pool_split(10, 1, 2, 4, &lo, &hi); CHECK(lo == 8 && hi == 10);
	pool_split(3, 3, 4, 1, &lo, &hi);  CHECK(lo == 3 && hi == 3);   /* more threads than work */
	/* large n does not overflow */
	long big = 1L << 40;
	pool_split(big, 7, 8, 32, &lo, &hi);
	CHECK(lo == big / 8 * 7 && hi == big);
}

/* ---- a split job gives the same bits for every thread count ----------------- */

struct rows_job {
	const float *x;
	float *y;
	long rows, cols;
};

static void rows_fn(void *arg, int ith, int nth)
{
	struct rows_job *j = arg;
	long lo, hi;
	pool_split(j->rows, ith, nth, 4, &lo, &hi);
	for (long r = lo; r < hi; r++) {
		float s = 0.0f;
		for (long c = 0; c < j->cols; c++)
			s += j->x[r * j->cols + c] * (float)(c + 1);
		j->y[r] = s;
	}
}

static void test_split_job_identical(void)
{
	watchdog();
	enum { R = 203, C = 97 };
	static float x[R * C], y1[R], yn[R];
	for (long i = 0; i < R * C; i++)
		x[i] = (float)((i * 2654435761u) % 1000) / 997.0f - 0.5f;
	struct rows_job j = { x, y1, R, C };
	pool_run(NULL, rows_fn, &j);
	for (int n = 2; n <= 8; n++) {
		pool_t *p = pool_new(n);
		REQUIRE(p);
		memset(yn, 0xff, sizeof(yn));
		j.y = yn;
		pool_run(p, rows_fn, &j);
		CHECK(memcmp(y1, yn, sizeof(y1)) == 0);
		pool_free(p);
	}
}

TEST_MAIN(test_each_thread_once, test_many_short_jobs, test_single_thread,
	  test_run_right_after_new, test_free_idle, test_wake_race, test_rest, test_split,
	  test_split_job_identical)
