/* test_sampler.c - the sampler chain: each sampler on hand-made logits,
 * determinism of the seeded draw, its distribution, hostile parameters, and
 * the cost on a 128k vocabulary. */
#include "test.h"

#include <float.h>
#include <stdint.h>

#include "base/clock.h"
#include "infer/sampler.h"

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* A test-local generator for inputs (independent of the one under test). */
static uint64_t lcg_state = 88172645463325252ull;
static uint32_t lcg_u32(void)
{
	lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(lcg_state >> 33);
}
static float lcg_float(float lo, float hi)
{
	return lo + (hi - lo) * (float)(lcg_u32() & 0xffffff) / 16777216.0f;
}

/* Applies one sampler to a fresh candidates array over logits. */
static void apply1(smp_sampler_t *s, smp_cands_t *c, smp_cand_t *buf, const float *l, int n)
{
	smp_cands_init(c, buf, l, (size_t)n);
	smp_sampler_apply(s, c);
}

static int naive_argmax(const float *l, int n)
{
	int b = -1;
	for (int i = 0; i < n; i++) {
		if (isnan(l[i]))
			continue;
		if (b < 0 || l[i] > l[b])
			b = i;
	}
	return b < 0 ? 0 : b;
}

/* ---- PRNG ---------------------------------------------------------------- */

static void test_rng_vectors(void)
{
	/* First words are splitmix64's published sequence for seed 0; the
	 * xoshiro256** outputs were computed with an independent implementation.
	 * These pin the stream: a given seed gives the same tokens everywhere. */
	smp_rng_t r;
	smp_rng_seed(&r, 0);
	CHECK(r.s[0] == 0xe220a8397b1dcdafull);
	CHECK(r.s[1] == 0x6e789e6aa1b965f4ull);
	CHECK(r.s[2] == 0x06c45d188009454full);
	CHECK(r.s[3] == 0xf88bb8a8724c81ecull);
	const uint64_t want0[] = { 0x99ec5f36cb75f2b4ull, 0xbf6e1f784956452aull,
				   0x1a5f849d4933e6e0ull, 0x6aa594f1262d2d2cull };
	for (int i = 0; i < 4; i++)
		CHECK(smp_rng_next(&r) == want0[i]);
	smp_rng_seed(&r, 42);
	const uint64_t want42[] = { 0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull,
				    0xae17533239e499a1ull, 0xecb8ad4703b360a1ull };
	for (int i = 0; i < 4; i++)
		CHECK(smp_rng_next(&r) == want42[i]);
	smp_rng_seed(&r, UINT64_MAX);
	const uint64_t wantmax[] = { 0x8f5520d52a7ead08ull, 0xc476a018caa1802dull,
				     0x81de31c0d260469eull, 0xbf658d7e065f3c2full };
	for (int i = 0; i < 4; i++)
		CHECK(smp_rng_next(&r) == wantmax[i]);
	smp_rng_seed(&r, 1234);
	CHECK(smp_rng_uniform(&r) == 0.045582166320754625);
	CHECK(smp_rng_uniform(&r) == 0.8428688286913699);
	CHECK(smp_rng_uniform(&r) == 0.6909004824270624);
	for (int i = 0; i < 100000; i++) {
		double u = smp_rng_uniform(&r);
		REQUIRE(u >= 0.0 && u < 1.0);
	}
}

/* ---- each sampler ---------------------------------------------------------- */

static void test_cands_init(void)
{
	float l[] = { 1.0f, NAN, -INFINITY, INFINITY, -NAN };
	smp_cand_t buf[5];
	smp_cands_t c;
	smp_cands_init(&c, buf, l, 5);
	CHECK_EQ_INT(c.size, 5);
	CHECK_EQ_INT(c.selected, -1);
	CHECK(!c.sorted);
	for (int i = 0; i < 5; i++)
		CHECK_EQ_INT(buf[i].id, i);
	CHECK(buf[0].logit == 1.0f);
	CHECK(buf[1].logit == -INFINITY);
	CHECK(buf[2].logit == -INFINITY);
	CHECK(buf[3].logit == INFINITY);
	CHECK(buf[4].logit == -INFINITY);
}

static void test_greedy(void)
{
	smp_sampler_t *g = smp_greedy_new();
	REQUIRE(g);
	CHECK(strcmp(smp_sampler_name(g), "greedy") == 0);
	smp_cand_t buf[64];
	smp_cands_t c;
	float l1[] = { 0.5f, 2.0f, -1.0f, 2.0f, 1.9f };
	apply1(g, &c, buf, l1, 5);
	CHECK_EQ_INT(c.selected, 1);            /* tie 1/3 -> lowest id */
	CHECK_EQ_INT(c.size, 5);                /* greedy selects, does not filter */
	float l2[] = { -3.0f, -2.0f, -2.5f };
	apply1(g, &c, buf, l2, 3);
	CHECK_EQ_INT(c.selected, 1);
	/* Random vectors with many ties: always the naive argmax. */
	float l[64];
	for (int t = 0; t < 2000; t++) {
		int n = 1 + (int)(lcg_u32() % 64);
		for (int i = 0; i < n; i++)
			l[i] = (float)(int)(lcg_u32() % 8) - 4.0f;
		apply1(g, &c, buf, l, n);
		REQUIRE(c.selected >= 0 && c.selected < n);
		CHECK_EQ_INT(buf[c.selected].id, naive_argmax(l, n));
	}
	smp_sampler_free(g);
}

static void test_temp(void)
{
	smp_cand_t buf[8];
	smp_cands_t c;
	float l[] = { 1.0f, 2.0f, -3.0f, 0.0f };
	smp_sampler_t *t = smp_temp_new(0.5f);
	REQUIRE(t);
	apply1(t, &c, buf, l, 4);
	CHECK_EQ_INT(c.size, 4);
	CHECK(buf[0].logit == 2.0f && buf[1].logit == 4.0f && buf[2].logit == -6.0f &&
	      buf[3].logit == 0.0f);
	smp_sampler_free(t);

	t = smp_temp_new(2.0f);
	apply1(t, &c, buf, l, 4);
	CHECK(buf[0].logit == 0.5f && buf[1].logit == 1.0f && buf[2].logit == -1.5f);
	smp_sampler_free(t);

	/* temp <= 0 (and NaN): only the argmax survives. */
	const float zeros[] = { 0.0f, -1.0f, NAN, -INFINITY };
	for (int k = 0; k < N_OF(zeros); k++) {
		t = smp_temp_new(zeros[k]);
		float lt[] = { 1.0f, 3.0f, 3.0f, 0.0f };
		apply1(t, &c, buf, lt, 4);
		CHECK_EQ_INT(c.size, 1);
		CHECK_EQ_INT(c.data[0].id, 1);
		smp_sampler_free(t);
	}
	/* temp = +inf is clamped to FLT_MAX: finite logits shrink, ±inf stay. */
	t = smp_temp_new(INFINITY);
	float li[] = { 1.0f, INFINITY, -INFINITY };
	apply1(t, &c, buf, li, 3);
	CHECK(isfinite(buf[0].logit) && buf[0].logit >= 0.0f);
	CHECK(buf[1].logit == INFINITY && buf[2].logit == -INFINITY);
	smp_sampler_free(t);
}

static void test_top_k(void)
{
	smp_cand_t buf[256];
	smp_cands_t c;
	float l[] = { 0.1f, 3.0f, 2.0f, 3.0f, 1.0f, -1.0f };
	smp_sampler_t *k3 = smp_top_k_new(3);
	REQUIRE(k3);
	apply1(k3, &c, buf, l, 6);
	REQUIRE(c.size == 3);
	CHECK(c.sorted);
	CHECK_EQ_INT(c.data[0].id, 1);
	CHECK_EQ_INT(c.data[1].id, 3);
	CHECK_EQ_INT(c.data[2].id, 2);
	smp_sampler_free(k3);

	smp_sampler_t *k1 = smp_top_k_new(1);
	apply1(k1, &c, buf, l, 6);
	CHECK_EQ_INT(c.size, 1);
	CHECK_EQ_INT(c.data[0].id, 1);
	smp_sampler_free(k1);

	/* Disabled or larger than n: everything is kept, in place. */
	const int32_t offs[] = { 0, -5, 6, 100, INT32_MAX, INT32_MIN };
	for (int i = 0; i < N_OF(offs); i++) {
		smp_sampler_t *s = smp_top_k_new(offs[i]);
		apply1(s, &c, buf, l, 6);
		CHECK_EQ_INT(c.size, 6);
		for (int j = 0; j < 6; j++)
			CHECK_EQ_INT(c.data[j].id, j);
		smp_sampler_free(s);
	}

	/* Against a full sort, with ties, for many n and k. */
	smp_cand_t ref[256];
	float lr[256];
	for (int t = 0; t < 500; t++) {
		int n = 1 + (int)(lcg_u32() % 256);
		int k = 1 + (int)(lcg_u32() % (unsigned)n);   /* k == n: no-op */
		for (int i = 0; i < n; i++)
			lr[i] = (float)(int)(lcg_u32() % 16) * 0.25f;
		smp_sampler_t *s = smp_top_k_new(k);
		apply1(s, &c, buf, lr, n);
		smp_sampler_free(s);
		/* reference: selection sort by (logit desc, id asc) */
		for (int i = 0; i < n; i++)
			ref[i] = (smp_cand_t){ i, lr[i], 0 };
		for (int i = 0; i < k; i++) {
			int b = i;
			for (int j = i + 1; j < n; j++)
				if (ref[j].logit > ref[b].logit ||
				    (ref[j].logit == ref[b].logit && ref[j].id < ref[b].id))
					b = j;
			smp_cand_t x = ref[i]; ref[i] = ref[b]; ref[b] = x;
		}
		REQUIRE((int)c.size == k);
		for (int i = 0; i < k; i++)
			REQUIRE(c.data[i].id == (k < n ? ref[i].id : i));
	}
}

/* probs 0.5 / 0.2 / 0.2 / 0.1, laid out shuffled, as log-probabilities */
static void make_probs(float *l)
{
	l[0] = logf(0.2f);   /* id 0: 0.2 */
	l[1] = logf(0.1f);   /* id 1: 0.1 */
	l[2] = logf(0.5f);   /* id 2: 0.5 */
	l[3] = logf(0.2f);   /* id 3: 0.2 */
}

static void test_top_p(void)
{
	smp_cand_t buf[8];
	smp_cands_t c;
	float l[4];
	make_probs(l);
	struct { float p; size_t min_keep; int size; int ids[4]; } cases[] = {
		{ 0.45f, 1, 1, { 2 } },
		{ 0.60f, 1, 2, { 2, 0 } },          /* 0.7 >= 0.6 */
		{ 0.75f, 1, 3, { 2, 0, 3 } },       /* 0.7 < 0.75 <= 0.9 */
		{ 0.95f, 1, 4, { 2, 0, 3, 1 } },
		{ 0.10f, 3, 3, { 2, 0, 3 } },       /* min_keep wins */
		{ 0.0f, 1, 1, { 2 } },              /* p <= 0: min_keep only */
		{ -1.0f, 0, 1, { 2 } },             /* min_keep 0 acts as 1 */
	};
	for (int i = 0; i < N_OF(cases); i++) {
		smp_sampler_t *s = smp_top_p_new(cases[i].p, cases[i].min_keep);
		REQUIRE(s);
		apply1(s, &c, buf, l, 4);
		CHECK_EQ_INT(c.size, cases[i].size);
		CHECK(c.sorted);
		for (int j = 0; j < cases[i].size && j < (int)c.size; j++)
			CHECK_EQ_INT(c.data[j].id, cases[i].ids[j]);
		CHECK_NEAR(c.data[0].p, 0.5, 1e-6);   /* p of the full softmax */
		smp_sampler_free(s);
	}
	/* Off: p >= 1, NaN; array untouched and unsorted. */
	const float offs[] = { 1.0f, 1.5f, INFINITY, NAN };
	for (int i = 0; i < N_OF(offs); i++) {
		smp_sampler_t *s = smp_top_p_new(offs[i], 1);
		apply1(s, &c, buf, l, 4);
		CHECK_EQ_INT(c.size, 4);
		CHECK(!c.sorted);
		CHECK_EQ_INT(c.data[0].id, 0);
		smp_sampler_free(s);
	}

	/* The unsorted large-array path (growing prefixes) against a full sort. */
	enum { N = 5000 };
	static float lb[N];
	static smp_cand_t bb[N], ref[N];
	const float ps[] = { 0.05f, 0.5f, 0.9f, 0.99f, 0.9999f };
	for (int t = 0; t < N_OF(ps); t++) {
		for (int i = 0; i < N; i++)
			lb[i] = lcg_float(-4.0f, 4.0f);
		lb[17] = lb[4000];     /* a tie */
		smp_sampler_t *s = smp_top_p_new(ps[t], 1);
		apply1(s, &c, bb, lb, N);
		smp_sampler_free(s);
		for (int i = 0; i < N; i++)
			ref[i] = (smp_cand_t){ i, lb[i], 0 };
		smp_cands_t rc = { ref, N, -1, false };
		smp_sampler_t *all = smp_top_k_new(N - 1);   /* sorts (keeps N-1) */
		smp_sampler_apply(all, &rc);
		smp_sampler_free(all);
		double m = ref[0].logit, tot = 0, cum = 0;
		for (int i = 0; i < N; i++)
			tot += exp((double)lb[i] - m);
		int want = 0;
		while (want < N - 1) {
			cum += exp((double)ref[want].logit - m);
			want++;
			if (cum >= ps[t] * tot)
				break;
		}
		CHECK_EQ_INT(c.size, want);
		for (int i = 0; i < want && i < (int)c.size; i++)
			REQUIRE(c.data[i].id == ref[i].id);
	}
}

static void test_min_p(void)
{
	smp_cand_t buf[8];
	smp_cands_t c;
	float l[4];
	make_probs(l);            /* ids: 0.2, 0.1, 0.5, 0.2 */
	struct { float p; size_t min_keep; int size; int ids[4]; } cases[] = {
		{ 0.3f, 1, 3, { 0, 2, 3 } },        /* p >= 0.15, order kept */
		{ 0.5f, 1, 1, { 2 } },              /* p >= 0.25 */
		{ 0.1f, 1, 4, { 0, 1, 2, 3 } },     /* p >= 0.05: all */
		{ 2.0f, 1, 1, { 2 } },              /* > 1 acts as 1 */
		{ 0.9f, 2, 2, { 2, 0 } },           /* min_keep: top-2, tie -> lower id */
	};
	for (int i = 0; i < N_OF(cases); i++) {
		smp_sampler_t *s = smp_min_p_new(cases[i].p, cases[i].min_keep);
		REQUIRE(s);
		apply1(s, &c, buf, l, 4);
		CHECK_EQ_INT(c.size, cases[i].size);
		for (int j = 0; j < cases[i].size && j < (int)c.size; j++)
			CHECK_EQ_INT(c.data[j].id, cases[i].ids[j]);
		smp_sampler_free(s);
	}
	const float offs[] = { 0.0f, -0.5f, NAN, -INFINITY };
	for (int i = 0; i < N_OF(offs); i++) {
		smp_sampler_t *s = smp_min_p_new(offs[i], 1);
		apply1(s, &c, buf, l, 4);
		CHECK_EQ_INT(c.size, 4);
		smp_sampler_free(s);
	}
	/* p = 1 keeps exactly the ties of the maximum. */
	float lt[] = { 1.0f, 3.0f, 2.0f, 3.0f };
	smp_sampler_t *s = smp_min_p_new(1.0f, 1);
	apply1(s, &c, buf, lt, 4);
	CHECK_EQ_INT(c.size, 2);
	CHECK(c.data[0].id == 1 && c.data[1].id == 3);
	smp_sampler_free(s);
}

static void test_penalties(void)
{
	smp_cand_t buf[8];
	smp_cands_t c;
	float l[] = { 2.0f, -2.0f, 0.0f, 0.5f, 3.0f };
	smp_sampler_t *s = smp_penalties_new(64, 2.0f, 0.5f, 0.25f);
	REQUIRE(s);
	CHECK(strcmp(smp_sampler_name(s), "penalties") == 0);
	apply1(s, &c, buf, l, 5);                 /* nothing accepted yet */
	for (int i = 0; i < 5; i++)
		CHECK(buf[i].logit == l[i]);
	const int32_t hist[] = { 0, 1, 0, 3, 2, 7, -1, INT32_MAX };   /* 7.. not in vocab */
	for (int i = 0; i < N_OF(hist); i++)
		smp_sampler_accept(s, hist[i]);
	apply1(s, &c, buf, l, 5);
	/* positive / 2, negative * 2, zero * 2, then - (count*0.5 + 0.25) */
	CHECK(buf[0].logit == -0.25f);            /* 2/2 - (2*0.5 + 0.25) */
	CHECK(buf[1].logit == -4.75f);            /* -2*2 - 0.75 */
	CHECK(buf[2].logit == -0.75f);            /* 0*2 - 0.75 */
	CHECK(buf[3].logit == -0.5f);             /* 0.5/2 - 0.75 */
	CHECK(buf[4].logit == 3.0f);              /* never seen */

	/* The same through the general path (candidates not in id layout). */
	smp_cand_t rev[5];
	for (int i = 0; i < 5; i++)
		rev[i] = (smp_cand_t){ 4 - i, l[4 - i], 0 };
	smp_cands_t rc = { rev, 5, -1, true };
	smp_sampler_apply(s, &rc);
	CHECK(!rc.sorted);
	CHECK(rev[4].id == 0 && rev[4].logit == -0.25f);
	CHECK(rev[3].id == 1 && rev[3].logit == -4.75f);
	CHECK(rev[1].id == 3 && rev[1].logit == -0.5f);
	CHECK(rev[0].id == 4 && rev[0].logit == 3.0f);

	smp_sampler_reset(s);
	apply1(s, &c, buf, l, 5);
	for (int i = 0; i < 5; i++)
		CHECK(buf[i].logit == l[i]);
	smp_sampler_free(s);

	/* The window: only the last 2 tokens count. */
	s = smp_penalties_new(2, 2.0f, 0.5f, 0.25f);
	const int32_t h2[] = { 0, 1, 0, 3 };
	for (int i = 0; i < 4; i++)
		smp_sampler_accept(s, h2[i]);
	apply1(s, &c, buf, l, 5);
	CHECK(buf[0].logit == 0.25f);             /* count 1: 1 - 0.75 */
	CHECK(buf[1].logit == -2.0f);             /* slid out */
	CHECK(buf[3].logit == -0.5f);
	smp_sampler_free(s);

	/* Repeat penalty only (llama.cpp's classic): 1.1 on +1.1 and -1.1. */
	s = smp_penalties_new(8, 1.25f, 0.0f, 0.0f);
	float l3[] = { 2.5f, -2.0f };
	smp_sampler_accept(s, 0);
	smp_sampler_accept(s, 1);
	smp_sampler_accept(s, 1);
	apply1(s, &c, buf, l3, 2);
	CHECK(buf[0].logit == 2.0f);
	CHECK(buf[1].logit == -2.5f);             /* count does not matter */
	smp_sampler_free(s);

	/* Off: last_n 0; nonsense penalties become neutral. */
	s = smp_penalties_new(0, 2.0f, 1.0f, 1.0f);
	smp_sampler_accept(s, 0);
	apply1(s, &c, buf, l, 5);
	CHECK(buf[0].logit == 2.0f);
	smp_sampler_free(s);
	s = smp_penalties_new(4, NAN, INFINITY, NAN);
	smp_sampler_accept(s, 0);
	smp_sampler_accept(s, 1);
	apply1(s, &c, buf, l, 5);
	CHECK(buf[0].logit == 2.0f && buf[1].logit == -2.0f);
	smp_sampler_free(s);
	s = smp_penalties_new(4, -3.0f, 0.0f, 0.0f);
	smp_sampler_accept(s, 0);
	apply1(s, &c, buf, l, 5);
	CHECK(buf[0].logit == 2.0f);
	smp_sampler_free(s);
}

/* ---- the seeded draw ---------------------------------------------------------- */

static smp_chain_t *dist_chain(uint64_t seed)
{
	smp_chain_t *ch = smp_chain_new();
	if (ch && smp_chain_add(ch, smp_dist_new(seed)) != 0) {
		smp_chain_free(ch);
		return NULL;
	}
	return ch;
}

static void test_dist_golden(void)
{
	/* Computed by an independent implementation of the documented algorithm
	 * (xoshiro256** via splitmix64, u = top 53 bits * 2^-53, weights
	 * exp(l - max) summed in double in id order, first cum > u * total). */
	float l[] = { 1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -0.5f };
	const int want[] = { 5, 4, 6, 6, 7, 6, 1, 1, 4, 1, 4, 6, 6, 6, 4, 4, 3, 4, 1, 1, 1, 4, 4, 4 };
	smp_chain_t *ch = dist_chain(7);
	REQUIRE(ch);
	for (int i = 0; i < N_OF(want); i++) {
		int32_t t = smp_sample(ch, l, 8);
		CHECK_EQ_INT(t, want[i]);
	}
	/* reset restarts the stream */
	smp_reset(ch);
	for (int i = 0; i < N_OF(want); i++)
		CHECK_EQ_INT(smp_sample(ch, l, 8), want[i]);
	smp_chain_free(ch);
}

static void test_seed_determinism(void)
{
	enum { N = 1000, T = 300 };
	static float l[N];
	for (int i = 0; i < N; i++)
		l[i] = lcg_float(-2.0f, 2.0f);
	smp_params_t p = smp_params_default();
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.temp = 1.5f;
	p.repeat_penalty = 1.1f;
	p.seed = 12345;
	smp_chain_t *a = smp_chain_new_default(&p), *b = smp_chain_new_default(&p);
	p.seed = 12346;
	smp_chain_t *d = smp_chain_new_default(&p);
	REQUIRE(a && b && d);
	int32_t seq[T];
	int differ = 0;
	for (int i = 0; i < T; i++) {
		int32_t ta = smp_sample(a, l, N), tb = smp_sample(b, l, N), td = smp_sample(d, l, N);
		REQUIRE(ta >= 0 && ta < N);
		CHECK_EQ_INT(ta, tb);
		differ += ta != td;
		seq[i] = ta;
		smp_accept(a, ta);
		smp_accept(b, tb);
		smp_accept(d, td);
	}
	CHECK(differ > T / 2);       /* 1000 near-uniform tokens: ~all differ */
	smp_reset(a);                /* history and RNG back to the start */
	for (int i = 0; i < T; i++) {
		int32_t ta = smp_sample(a, l, N);
		CHECK_EQ_INT(ta, seq[i]);
		smp_accept(a, ta);
	}
	smp_chain_free(a);
	smp_chain_free(b);
	smp_chain_free(d);
}

static void test_dist_distribution(void)
{
	/* 100k draws against softmax probabilities, by chi-square. The draw is
	 * seeded, so this is deterministic; the bound is the 0.999 quantile for
	 * 7 degrees of freedom (24.32), i.e. a real skew fails, luck cannot. */
	float l[] = { 1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -0.5f };
	enum { K = 8, DRAWS = 100000 };
	double p[K], m = 3.0, tot = 0;
	for (int i = 0; i < K; i++)
		tot += (p[i] = exp(l[i] - m));
	for (int i = 0; i < K; i++)
		p[i] /= tot;
	smp_chain_t *ch = dist_chain(2024);
	REQUIRE(ch);
	long cnt[K] = { 0 };
	for (int i = 0; i < DRAWS; i++) {
		int32_t t = smp_sample(ch, l, K);
		REQUIRE(t >= 0 && t < K);
		cnt[t]++;
	}
	/* The dist sampler writes the softmax into p. */
	const smp_cands_t *c = smp_chain_cands(ch);
	double psum = 0;
	for (size_t i = 0; i < c->size; i++) {
		CHECK_NEAR(c->data[i].p, p[c->data[i].id], 1e-6);
		psum += c->data[i].p;
	}
	CHECK_NEAR(psum, 1.0, 1e-5);
	double chi = 0;
	for (int i = 0; i < K; i++) {
		double e = p[i] * DRAWS;
		chi += (cnt[i] - e) * (cnt[i] - e) / e;
	}
	fprintf(stderr, "  chi-square over 100k draws, 7 dof: %.2f (bound 24.32)\n", chi);
	CHECK(chi < 24.32);
	smp_chain_free(ch);

	/* A skewed sampler would fail: counts from a wrong distribution
	 * (temperature 1.1) against the same p score far above the bound. */
	smp_chain_t *w = smp_chain_new();
	REQUIRE(w);
	REQUIRE(smp_chain_add(w, smp_temp_new(1.1f)) == 0);
	REQUIRE(smp_chain_add(w, smp_dist_new(2024)) == 0);
	long wc[K] = { 0 };
	for (int i = 0; i < DRAWS; i++)
		wc[smp_sample(w, l, K)]++;
	double wchi = 0;
	for (int i = 0; i < K; i++) {
		double e = p[i] * DRAWS;
		wchi += (wc[i] - e) * (wc[i] - e) / e;
	}
	CHECK(wchi > 100.0);
	smp_chain_free(w);
}

/* ---- the chain ----------------------------------------------------------------- */

static void check_names(const smp_chain_t *ch, const char *const *want, int n)
{
	CHECK_EQ_INT(smp_chain_n(ch), n);
	for (int i = 0; i < n && i < smp_chain_n(ch); i++)
		CHECK(strcmp(smp_sampler_name(smp_chain_get(ch, i)), want[i]) == 0);
}

static void test_default_chain(void)
{
	smp_params_t p = smp_params_default();
	smp_chain_t *ch = smp_chain_new_default(&p);
	REQUIRE(ch);
	const char *const w1[] = { "top-k", "top-p", "min-p", "temp", "dist" };
	check_names(ch, w1, 5);
	CHECK(smp_chain_get(ch, 5) == NULL && smp_chain_get(ch, -1) == NULL);
	smp_chain_free(ch);

	p.repeat_penalty = 1.1f;
	ch = smp_chain_new_default(&p);
	const char *const w2[] = { "penalties", "top-k", "top-p", "min-p", "temp", "dist" };
	check_names(ch, w2, 6);
	smp_chain_free(ch);

	p.temp = 0.0f;
	ch = smp_chain_new_default(&p);
	const char *const w3[] = { "penalties", "greedy" };
	check_names(ch, w3, 2);
	smp_chain_free(ch);

	ch = smp_chain_new_default(NULL);          /* NULL = defaults */
	check_names(ch, w1, 5);
	smp_chain_free(ch);

	/* temp 0: the chain is argmax on every vector, and the candidates buffer
	 * is reused (no allocation per token). */
	p = smp_params_default();
	p.temp = 0.0f;
	ch = smp_chain_new_default(&p);
	REQUIRE(smp_chain_reserve(ch, 300) == 0);
	const smp_cand_t *data0 = smp_chain_cands(ch)->data;
	float l[300];
	for (int t = 0; t < 500; t++) {
		int n = 1 + (int)(lcg_u32() % 300);
		for (int i = 0; i < n; i++)
			l[i] = (float)(int)(lcg_u32() % 32) * 0.5f - 8.0f;
		CHECK_EQ_INT(smp_sample(ch, l, n), naive_argmax(l, n));
	}
	CHECK(smp_chain_cands(ch)->data == data0);
	smp_chain_free(ch);

	/* With penalties, greedy avoids the repeated token. */
	p.repeat_penalty = 4.0f;
	ch = smp_chain_new_default(&p);
	float lp[] = { 1.0f, 3.0f, 2.0f };
	CHECK_EQ_INT(smp_sample(ch, lp, 3), 1);
	smp_accept(ch, 1);                         /* 3 / 4 = 0.75 */
	CHECK_EQ_INT(smp_sample(ch, lp, 3), 2);
	smp_accept(ch, 2);                         /* 2 / 4 = 0.5 */
	CHECK_EQ_INT(smp_sample(ch, lp, 3), 0);
	smp_reset(ch);
	CHECK_EQ_INT(smp_sample(ch, lp, 3), 1);
	smp_chain_free(ch);

	/* Filters really filter inside the chain: top-k 2 never yields the rest. */
	p = smp_params_default();
	p.top_k = 2;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.temp = 5.0f;
	ch = smp_chain_new_default(&p);
	float lk[] = { 0.0f, 1.0f, 0.9f, 0.8f, 0.7f };
	int seen[5] = { 0 };
	for (int i = 0; i < 2000; i++)
		seen[smp_sample(ch, lk, 5)]++;
	CHECK(seen[0] == 0 && seen[3] == 0 && seen[4] == 0);
	CHECK(seen[1] > 0 && seen[2] > 0);
	smp_chain_free(ch);
}

/* A custom sampler that misbehaves: selects out of range. */
static const char *bad_name(const smp_sampler_t *s) { return "bad"; }
static void bad_apply(smp_sampler_t *s, smp_cands_t *c) { c->selected = 1000000; }
static const smp_iface_t bad_iface = { .name = bad_name, .apply = bad_apply };

static void test_custom_and_errors(void)
{
	smp_chain_t *ch = smp_chain_new();
	REQUIRE(ch);
	CHECK_EQ_INT(smp_chain_add(ch, NULL), ERR_INVAL);
	CHECK_EQ_INT(smp_chain_add(NULL, smp_greedy_new()), ERR_INVAL);   /* freed */
	float l[] = { 0.0f, 5.0f, 1.0f };
	/* An empty chain returns the argmax. */
	CHECK_EQ_INT(smp_sample(ch, l, 3), 1);
	REQUIRE(smp_chain_add(ch, smp_sampler_new(&bad_iface, NULL)) == 0);
	CHECK_EQ_INT(smp_sample(ch, l, 3), 1);
	CHECK_EQ_INT(smp_sample(ch, NULL, 3), ERR_INVAL);
	CHECK_EQ_INT(smp_sample(ch, l, 0), ERR_INVAL);
	CHECK_EQ_INT(smp_sample(ch, l, -7), ERR_INVAL);
	CHECK_EQ_INT(smp_sample(NULL, l, 3), ERR_INVAL);
	CHECK_EQ_INT(smp_chain_reserve(ch, 0), ERR_INVAL);
	smp_accept(NULL, 1);
	smp_reset(NULL);
	smp_chain_free(ch);
	smp_chain_free(NULL);
	smp_sampler_free(NULL);
}

/* ---- hostile values -------------------------------------------------------------- */

static void test_hostile_logits(void)
{
	smp_chain_t *g = smp_chain_new_default(&(smp_params_t){ .temp = 0.0f });
	smp_chain_t *d = dist_chain(99);
	REQUIRE(g && d);
	float nan4[] = { NAN, NAN, NAN, NAN };
	CHECK_EQ_INT(smp_sample(g, nan4, 4), 0);
	for (int i = 0; i < 100; i++) {
		int32_t t = smp_sample(d, nan4, 4);
		CHECK(t >= 0 && t < 4);
	}
	float ninf[] = { -INFINITY, -INFINITY, -INFINITY };
	CHECK_EQ_INT(smp_sample(g, ninf, 3), 0);
	int hit[3] = { 0 };
	for (int i = 0; i < 300; i++) {
		int32_t t = smp_sample(d, ninf, 3);
		REQUIRE(t >= 0 && t < 3);
		hit[t]++;
	}
	CHECK(hit[0] > 0 && hit[1] > 0 && hit[2] > 0);   /* uniform over all */
	float pinf[] = { 1.0f, NAN, INFINITY, -INFINITY, FLT_MAX, INFINITY, 3.0f };
	CHECK_EQ_INT(smp_sample(g, pinf, 7), 2);
	int hi[7] = { 0 };
	for (int i = 0; i < 400; i++)
		hi[smp_sample(d, pinf, 7)]++;
	CHECK(hi[2] + hi[5] == 400 && hi[2] > 0 && hi[5] > 0);
	float nanmix[] = { NAN, -1.0f, NAN, -2.0f };
	CHECK_EQ_INT(smp_sample(g, nanmix, 4), 1);
	for (int i = 0; i < 100; i++) {
		int32_t t = smp_sample(d, nanmix, 4);
		CHECK(t == 1 || t == 3);
	}
	float one[] = { NAN };
	CHECK_EQ_INT(smp_sample(g, one, 1), 0);
	CHECK_EQ_INT(smp_sample(d, one, 1), 0);
	smp_chain_free(g);
	smp_chain_free(d);
}

static void test_hostile_params(void)
{
	const float temps[] = { 0.8f, 0.0f, -1.0f, NAN, INFINITY, -INFINITY, 1e-30f, 1e30f };
	const int32_t ks[] = { 40, 0, -1, 1, 7, INT32_MAX, INT32_MIN };
	const float ps[] = { 0.95f, 0.0f, -1.0f, 1.0f, 2.0f, NAN, INFINITY, 1e-30f };
	const float mps[] = { 0.05f, 0.0f, -1.0f, 1.0f, 5.0f, NAN, INFINITY };
	const float reps[] = { 1.1f, 0.0f, -2.0f, NAN, INFINITY, 1e-30f, 1e30f };
	const int32_t lastns[] = { 64, 0, -1, 1, INT32_MAX, INT32_MIN };
	const float fps[] = { 0.0f, 0.5f, -0.5f, NAN, INFINITY, -INFINITY, 1e30f };

	enum { N = 37 };
	float vecs[4][N];
	for (int i = 0; i < N; i++) {
		vecs[0][i] = lcg_float(-5.0f, 5.0f);
		vecs[1][i] = (i % 3 == 0) ? NAN : (i % 3 == 1) ? INFINITY : -INFINITY;
		vecs[2][i] = (i % 5 == 0) ? FLT_MAX : (i % 5 == 1) ? -FLT_MAX : 1e-38f;
		vecs[3][i] = NAN;
	}
	long runs = 0;
	for (int a = 0; a < N_OF(temps); a++)
	for (int b = 0; b < N_OF(ks); b++)
	for (int e = 0; e < N_OF(ps); e++) {
		/* rotate the other dimensions instead of a full product */
		int r = a + b * 3 + e * 5;
		smp_params_t p = {
			.temp = temps[a], .top_k = ks[b], .top_p = ps[e],
			.min_p = mps[r % N_OF(mps)],
			.repeat_penalty = reps[(r / 2) % N_OF(reps)],
			.repeat_last_n = lastns[(r / 3) % N_OF(lastns)],
			.freq_penalty = fps[(r / 5) % N_OF(fps)],
			.presence_penalty = fps[(r / 7) % N_OF(fps)],
			.seed = (uint64_t)r * 0x9e3779b97f4a7c15ull,
		};
		smp_chain_t *ch = smp_chain_new_default(&p);
		REQUIRE(ch);
		for (int v = 0; v < 4; v++) {
			for (int step = 0; step < 3; step++) {
				int32_t t = smp_sample(ch, vecs[v], N);
				REQUIRE(t >= 0 && t < N);
				smp_accept(ch, t);
				smp_accept(ch, -5);          /* junk history too */
				smp_accept(ch, 1 << 30);
				runs++;
			}
			const smp_cands_t *c = smp_chain_cands(ch);
			REQUIRE(c->size >= 1 && c->size <= N);
			for (size_t i = 0; i < c->size; i++)
				REQUIRE(!isnan(c->data[i].logit));
		}
		smp_chain_free(ch);
	}
	fprintf(stderr, "  %ld hostile samples, all in range\n", runs);
}

/* ---- real logits ----------------------------------------------------------------- */

static void test_real_logits(void)
{
	/* stories260K's logits at the last prompt position, with llama.cpp's top-5
	 * (id, logit) from reference.json; greedy must give its first token. */
	struct { const char *file; int top5[5]; float l0; } cases[] = {
		{ "logits/stories260K_once_kvf32.f32", { 432, 383, 322, 353, 323 }, 17.7993965f },
		{ "logits/stories260K_lily_kvf32.f32", { 426, 335, 267, 269, 263 }, 14.316124f },
		{ "logits/stories260K_once_kvf16.f32", { 432, 383, 322, 353, 323 }, 17.7989159f },
		{ "logits/stories260K_lily_kvf16.f32", { 426, 335, 267, 269, 263 }, 14.3128262f },
	};
	for (int k = 0; k < N_OF(cases); k++) {
		float l[512];
		FILE *f = fopen(fixture_path(cases[k].file), "rb");
		REQUIRE(f);
		size_t got = fread(l, sizeof(float), 512, f);
		fclose(f);
		REQUIRE(got == 512);
		smp_chain_t *g = smp_chain_new_default(&(smp_params_t){ .temp = 0.0f });
		REQUIRE(g);
		CHECK_EQ_INT(smp_sample(g, l, 512), cases[k].top5[0]);
		smp_chain_free(g);

		smp_sampler_t *tk = smp_top_k_new(5);
		smp_cand_t buf[512];
		smp_cands_t c;
		apply1(tk, &c, buf, l, 512);
		REQUIRE(c.size == 5);
		for (int i = 0; i < 5; i++)
			CHECK_EQ_INT(c.data[i].id, cases[k].top5[i]);
		CHECK_NEAR(c.data[0].logit, cases[k].l0, 1e-5);
		smp_sampler_free(tk);

		/* The default chain only ever draws from that head here. */
		smp_params_t p = smp_params_default();
		p.seed = (uint64_t)k;
		smp_chain_t *ch = smp_chain_new_default(&p);
		for (int i = 0; i < 200; i++) {
			int32_t t = smp_sample(ch, l, 512);
			int in = 0;
			for (int j = 0; j < 5; j++)
				in |= t == cases[k].top5[j];
			REQUIRE(in);
		}
		smp_chain_free(ch);
	}
}

/* ---- a 128k vocabulary ---------------------------------------------------------- */

static void test_large_vocab(void)
{
	enum { N = 128256, T = 200 };
	float *l = malloc(N * sizeof(float));
	REQUIRE(l);
	for (int i = 0; i < N; i++)
		l[i] = lcg_float(-10.0f, 10.0f);
	for (int i = 0; i < 50; i++)                  /* a peaked head, like a real model */
		l[lcg_u32() % N] += 8.0f;
	/* the 40th best logit, for checking the result */
	float *cp = malloc(N * sizeof(float));
	REQUIRE(cp);
	memcpy(cp, l, N * sizeof(float));
	float kth = -INFINITY;
	for (int r = 0; r < 40; r++) {
		int b = 0;
		for (int i = 1; i < N; i++)
			if (cp[i] > cp[b])
				b = i;
		kth = cp[b];
		cp[b] = -INFINITY;
	}
	free(cp);

	struct { const char *what; smp_params_t p; } cfg[] = {
		{ "default (penalties, top-k 40, top-p .95, min-p .05, temp .8)", smp_params_default() },
		{ "greedy", smp_params_default() },
		{ "top-p .95 only, no top-k", smp_params_default() },
	};
	cfg[0].p.repeat_penalty = 1.1f;
	cfg[1].p.temp = 0.0f;
	cfg[2].p.top_k = 0;
	cfg[2].p.min_p = 0.0f;
	for (int k = 0; k < N_OF(cfg); k++) {
		smp_chain_t *ch = smp_chain_new_default(&cfg[k].p);
		REQUIRE(ch);
		REQUIRE(smp_chain_reserve(ch, N) == 0);
		double t0 = clock_sec();
		for (int i = 0; i < T; i++) {
			int32_t t = smp_sample(ch, l, N);
			REQUIRE(t >= 0 && t < N);
			if (k == 0)
				CHECK(l[t] >= kth);          /* within the top 40 */
			smp_accept(ch, t);
		}
		double us = (clock_sec() - t0) / T * 1e6;
		fprintf(stderr, "  n_vocab %d, %s: %.1f us/token (%zu candidates left)\n", N,
			cfg[k].what, us, smp_chain_cands(ch)->size);
		smp_chain_free(ch);
	}
	free(l);
}

TEST_MAIN(test_rng_vectors, test_cands_init, test_greedy, test_temp, test_top_k, test_top_p,
	  test_min_p, test_penalties, test_dist_golden, test_seed_determinism,
	  test_dist_distribution, test_default_chain, test_custom_and_errors,
	  test_hostile_logits, test_hostile_params, test_real_logits, test_large_vocab)
