#include "infer/sampler.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- candidates ------------------------------------------------------- */

void smp_cands_init(smp_cands_t *c, smp_cand_t *data, const float *logits, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float l = logits[i];
		data[i].id = (int32_t)i;
		data[i].logit = isnan(l) ? -INFINITY : l;
		data[i].p = 0.0f;
	}
	c->data = data;
	c->size = n;
	c->selected = -1;
	c->sorted = false;
}

/* The one total order every sampler uses: higher logit first, then lower id.
 * Logits are never NaN here (smp_cands_init and the transforms keep it so),
 * so ties are the only ambiguity and the id settles them. */
static inline bool cand_better(const smp_cand_t *a, const smp_cand_t *b)
{
	if (a->logit != b->logit)
		return a->logit > b->logit;
	return a->id < b->id;
}

static int cand_cmp(const void *pa, const void *pb)
{
	const smp_cand_t *a = pa, *b = pb;
	if (cand_better(a, b))
		return -1;
	return cand_better(b, a) ? 1 : 0;
}

static size_t cands_argmax(const smp_cands_t *c)
{
	/* best kept in registers: this loop runs over the whole vocabulary */
	size_t best = 0;
	float bl = c->data[0].logit;
	int32_t bid = c->data[0].id;
	for (size_t i = 1; i < c->size; i++) {
		float l = c->data[i].logit;
		if (l > bl || (l == bl && c->data[i].id < bid)) {
			best = i;
			bl = l;
			bid = c->data[i].id;
		}
	}
	return best;
}

/* Heap with the *worst* candidate at the root (a min-heap under cand_better). */
static void heap_sift_down(smp_cand_t *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, w = i;
		if (l < n && cand_better(&h[w], &h[l]))
			w = l;
		if (r < n && cand_better(&h[w], &h[r]))
			w = r;
		if (w == i)
			return;
		smp_cand_t t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

/* Moves the k best candidates to data[0..k), sorted best first, and sets
 * size = k. O(n log k) with the heap kept in place in the array's head. */
static void cands_top_k(smp_cands_t *c, size_t k)
{
	if (k >= c->size) {
		if (!c->sorted)
			qsort(c->data, c->size, sizeof(*c->data), cand_cmp);
		c->sorted = true;
		return;
	}
	if (k == 0)
		k = 1;
	if (!c->sorted) {
		smp_cand_t *d = c->data;
		for (size_t i = k / 2; i-- > 0;)
			heap_sift_down(d, k, i);
		for (size_t j = k; j < c->size; j++) {
			if (cand_better(&d[j], &d[0])) {
				/* swap, not overwrite: the buffer stays a permutation
				 * of the input, nothing is lost or duplicated */
				smp_cand_t t = d[0];
				d[0] = d[j];
				d[j] = t;
				heap_sift_down(d, k, 0);
			}
		}
		qsort(d, k, sizeof(*d), cand_cmp);
	}
	c->size = k;
	c->sorted = true;
	c->selected = -1;
}

/* Unnormalized softmax weight of each candidate relative to the maximum m,
 * handling the infinite cases without producing NaN. */
static inline double cand_weight(float l, float m)
{
	if (m == INFINITY)
		return l == INFINITY ? 1.0 : 0.0;
	if (m == -INFINITY)
		return 1.0;              /* everything is -inf: uniform */
	return exp((double)l - (double)m);
}

static float cands_max_logit(const smp_cands_t *c)
{
	float m = -INFINITY;
	for (size_t i = 0; i < c->size; i++)
		if (c->data[i].logit > m)
			m = c->data[i].logit;
	return m;
}

/* ---- the generic sampler object --------------------------------------- */

smp_sampler_t *smp_sampler_new(const smp_iface_t *iface, void *ctx)
{
	smp_sampler_t *s = malloc(sizeof(*s));
	if (!s)
		return NULL;
	s->iface = iface;
	s->ctx = ctx;
	return s;
}

void smp_sampler_free(smp_sampler_t *s)
{
	if (!s)
		return;
	if (s->iface && s->iface->free)
		s->iface->free(s);
	free(s);
}

const char *smp_sampler_name(const smp_sampler_t *s)
{
	if (!s || !s->iface || !s->iface->name)
		return "?";
	return s->iface->name(s);
}

void smp_sampler_apply(smp_sampler_t *s, smp_cands_t *c)
{
	if (c->size == 0)
		return;
	s->iface->apply(s, c);
}

void smp_sampler_accept(smp_sampler_t *s, int32_t token)
{
	if (s->iface->accept)
		s->iface->accept(s, token);
}

void smp_sampler_reset(smp_sampler_t *s)
{
	if (s->iface->reset)
		s->iface->reset(s);
}

/* Helper for the built-ins: a sampler whose ctx is one malloc'd block. */
static smp_sampler_t *sampler_with_ctx(const smp_iface_t *iface, void *ctx)
{
	if (!ctx)
		return NULL;
	smp_sampler_t *s = smp_sampler_new(iface, ctx);
	if (!s)
		free(ctx);
	return s;
}

static void free_ctx(smp_sampler_t *s) { free(s->ctx); }

static size_t sane_min_keep(size_t m) { return m < 1 ? 1 : m; }

/* ---- greedy ---------------------------------------------------------------- */

static const char *greedy_name(const smp_sampler_t *s) { return "greedy"; }

static void greedy_apply(smp_sampler_t *s, smp_cands_t *c)
{
	c->selected = (int64_t)cands_argmax(c);
}

static const smp_iface_t greedy_iface = {
	.name = greedy_name, .apply = greedy_apply,
};

smp_sampler_t *smp_greedy_new(void) { return smp_sampler_new(&greedy_iface, NULL); }

/* ---- temperature ----------------------------------------------------------- */

struct temp_ctx { float t; };

static const char *temp_name(const smp_sampler_t *s) { return "temp"; }

static void temp_apply(smp_sampler_t *s, smp_cands_t *c)
{
	const struct temp_ctx *tc = s->ctx;
	if (!(tc->t > 0.0f)) {
		/* Zero temperature is the limit of a distribution concentrating on
		 * the maximum: keep only it. */
		size_t b = cands_argmax(c);
		c->data[0] = c->data[b];
		c->size = 1;
		c->sorted = true;
		c->selected = -1;
		return;
	}
	/* t is finite and > 0, so x / t is never NaN (±inf stay ±inf) and the
	 * order of the candidates does not change. */
	for (size_t i = 0; i < c->size; i++)
		c->data[i].logit /= tc->t;
}

static const smp_iface_t temp_iface = {
	.name = temp_name, .apply = temp_apply, .free = free_ctx,
};

smp_sampler_t *smp_temp_new(float temp)
{
	struct temp_ctx *tc = malloc(sizeof(*tc));
	if (tc) {
		if (isnan(temp) || temp <= 0.0f)
			temp = 0.0f;
		else if (temp > FLT_MAX)
			temp = FLT_MAX;
		tc->t = temp;
	}
	return sampler_with_ctx(&temp_iface, tc);
}

/* ---- top-k ------------------------------------------------------------------ */

struct top_k_ctx { int32_t k; };

static const char *top_k_name(const smp_sampler_t *s) { return "top-k"; }

static void top_k_apply(smp_sampler_t *s, smp_cands_t *c)
{
	const struct top_k_ctx *kc = s->ctx;
	if (kc->k <= 0 || (size_t)kc->k >= c->size)
		return;            /* off, or keeps everything: no need to sort */
	cands_top_k(c, (size_t)kc->k);
}

static const smp_iface_t top_k_iface = {
	.name = top_k_name, .apply = top_k_apply, .free = free_ctx,
};

smp_sampler_t *smp_top_k_new(int32_t k)
{
	struct top_k_ctx *kc = malloc(sizeof(*kc));
	if (kc)
		kc->k = k;
	return sampler_with_ctx(&top_k_iface, kc);
}

/* ---- top-p (nucleus) ---------------------------------------------------------- */

/* An unsorted array (typically the whole vocabulary) is not sorted: one pass
 * histograms the weights by distance below the maximum logit, the buckets
 * that hold the nucleus are moved to the front, and only those are sorted.
 * Bucket order is logit order, so the moved set is exactly a prefix of the
 * full sort and the result is the same as sorting everything. */
#define TOP_P_BUCKETS 1024
#define TOP_P_RANGE 32.0      /* logits further below the max share the last bucket */
#define TOP_P_SMALL 256       /* below this, just sort */

struct top_p_ctx {
	float p;
	size_t min_keep;
	double mass[TOP_P_BUCKETS];
	size_t count[TOP_P_BUCKETS];
};

static const char *top_p_name(const smp_sampler_t *s) { return "top-p"; }

static inline int top_p_bucket(float m, float l)
{
	double x = (double)m - (double)l;       /* >= 0; +inf for l = -inf */
	if (!(x < TOP_P_RANGE))
		return TOP_P_BUCKETS - 1;
	return (int)(x * (TOP_P_BUCKETS / TOP_P_RANGE));
}

/* Length of the shortest sorted prefix of d[0..n) whose weight reaches
 * target and that has at least min_keep entries; 0 if it is not reached.
 * Writes p (weight / total) for the entries it passes. */
static size_t top_p_prefix(smp_cand_t *d, size_t n, float m, double total, double target,
			   size_t min_keep)
{
	double cum = 0.0;
	for (size_t i = 0; i < n; i++) {
		double w = cand_weight(d[i].logit, m);
		d[i].p = (float)(w / total);
		cum += w;
		if (cum >= target && i + 1 >= min_keep)
			return i + 1;
	}
	return 0;
}

static void top_p_apply(smp_sampler_t *s, smp_cands_t *c)
{
	struct top_p_ctx *pc = s->ctx;
	size_t n = c->size;
	if (!(pc->p < 1.0f) || n <= 1 || pc->min_keep >= n)
		return;                 /* NaN or >= 1: off */
	smp_cand_t *d = c->data;
	float m = cands_max_logit(c);
	bool bucket = !c->sorted && n > TOP_P_SMALL && isfinite(m);
	if (bucket) {
		memset(pc->mass, 0, sizeof(pc->mass));
		memset(pc->count, 0, sizeof(pc->count));
	}
	/* The total is summed in the input order on every path. */
	double total = 0.0;
	for (size_t i = 0; i < n; i++) {
		double w = cand_weight(d[i].logit, m);
		total += w;
		if (bucket) {
			int b = top_p_bucket(m, d[i].logit);
			pc->mass[b] += w;
			pc->count[b]++;
		}
	}
	double target = pc->p > 0.0f ? (double)pc->p * total : 0.0;
	if (bucket) {
		double cum = 0.0;
		size_t cnt = 0;
		int last = TOP_P_BUCKETS - 1;
		for (int b = 0; b < TOP_P_BUCKETS; b++) {
			cum += pc->mass[b];
			cnt += pc->count[b];
			if (cum >= target && cnt >= pc->min_keep) {
				last = b;
				break;
			}
		}
		size_t front = 0;
		for (size_t i = 0; i < n; i++) {
			if (top_p_bucket(m, d[i].logit) <= last) {
				smp_cand_t t = d[front];
				d[front++] = d[i];
				d[i] = t;
			}
		}
		if (front < n) {
			qsort(d, front, sizeof(*d), cand_cmp);
			size_t k = top_p_prefix(d, front, m, total, target, pc->min_keep);
			if (k) {
				c->size = k;
				c->sorted = true;
				c->selected = -1;
				return;
			}
		}
		/* The nucleus is (nearly) everything, or summation rounding left
		 * it a hair short: sort it all. */
	}
	if (!c->sorted) {
		qsort(d, n, sizeof(*d), cand_cmp);
		c->sorted = true;
	}
	size_t k = top_p_prefix(d, n, m, total, target, pc->min_keep);
	c->size = k ? k : n;
	c->selected = -1;
}

static const smp_iface_t top_p_iface = {
	.name = top_p_name, .apply = top_p_apply, .free = free_ctx,
};

smp_sampler_t *smp_top_p_new(float p, size_t min_keep)
{
	struct top_p_ctx *pc = malloc(sizeof(*pc));   /* ~12 KiB: the buckets */
	if (pc) {
		pc->p = p;
		pc->min_keep = sane_min_keep(min_keep);
	}
	return sampler_with_ctx(&top_p_iface, pc);
}

/* ---- min-p ---------------------------------------------------------------------- */

struct min_p_ctx { float p; size_t min_keep; };

static const char *min_p_name(const smp_sampler_t *s) { return "min-p"; }

static void min_p_apply(smp_sampler_t *s, smp_cands_t *c)
{
	const struct min_p_ctx *mc = s->ctx;
	if (!(mc->p > 0.0f))
		return;                 /* NaN or <= 0: off */
	/* prob_i >= p * prob_max  <=>  logit_i >= logit_max + log(p): no softmax
	 * needed. With p >= 1 only the ties of the maximum pass. */
	double lp = mc->p >= 1.0f ? 0.0 : log((double)mc->p);
	float m = cands_max_logit(c);
	double thr = (double)m + lp;
	size_t pass = 0;
	for (size_t i = 0; i < c->size; i++)
		pass += (double)c->data[i].logit >= thr;
	if (pass < mc->min_keep) {
		cands_top_k(c, mc->min_keep);
		return;
	}
	if (pass == c->size)
		return;
	size_t w = 0;            /* stable compaction keeps a sorted array sorted */
	for (size_t i = 0; i < c->size; i++)
		if ((double)c->data[i].logit >= thr)
			c->data[w++] = c->data[i];
	c->size = w;
	c->selected = -1;
}

static const smp_iface_t min_p_iface = {
	.name = min_p_name, .apply = min_p_apply, .free = free_ctx,
};

smp_sampler_t *smp_min_p_new(float p, size_t min_keep)
{
	struct min_p_ctx *mc = malloc(sizeof(*mc));
	if (mc) {
		mc->p = p;
		mc->min_keep = sane_min_keep(min_keep);
	}
	return sampler_with_ctx(&min_p_iface, mc);
}

/* ---- penalties --------------------------------------------------------------- */

struct pen_ctx {
	float repeat, freq, presence;
	int32_t cap;      /* window length */
	int32_t n;        /* tokens in the window */
	int32_t head;     /* next slot to write */
	int32_t *ring;    /* cap entries */
	int32_t *scratch; /* cap entries, for sorting a copy of the window */
};

static const char *pen_name(const smp_sampler_t *s) { return "penalties"; }

static void pen_accept(smp_sampler_t *s, int32_t token)
{
	struct pen_ctx *pc = s->ctx;
	if (pc->cap == 0)
		return;
	pc->ring[pc->head] = token;
	pc->head = (pc->head + 1) % pc->cap;
	if (pc->n < pc->cap)
		pc->n++;
}

static void pen_reset(smp_sampler_t *s)
{
	struct pen_ctx *pc = s->ctx;
	pc->n = 0;
	pc->head = 0;
}

static int i32_cmp(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

static void pen_one(const struct pen_ctx *pc, smp_cand_t *d, int32_t count)
{
	float l = d->logit;
	if (l <= 0.0f)
		l *= pc->repeat;
	else
		l /= pc->repeat;
	l -= (float)count * pc->freq + pc->presence;
	d->logit = isnan(l) ? -INFINITY : l;   /* inf - inf cannot happen; be sure */
}

/* Index of token t in the sorted distinct list u[0..nu), or -1. */
static int32_t find_token(const int32_t *u, int32_t nu, int32_t t)
{
	int32_t lo = 0, hi = nu;
	while (lo < hi) {
		int32_t mid = lo + (hi - lo) / 2;
		if (u[mid] < t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nu && u[lo] == t ? lo : -1;
}

static void pen_apply(smp_sampler_t *s, smp_cands_t *c)
{
	struct pen_ctx *pc = s->ctx;
	if (pc->n == 0)
		return;
	/* A sorted copy of the window: each distinct token is one run, and the
	 * run's length is its count. O(w log w) per token for a window of w,
	 * independent of the vocabulary size. */
	memcpy(pc->scratch, pc->ring, (size_t)pc->n * sizeof(int32_t));
	qsort(pc->scratch, (size_t)pc->n, sizeof(int32_t), i32_cmp);

	/* Fast path: the candidates are still the identity layout that
	 * smp_cands_init makes (penalties come first in a chain). */
	bool identity = true;
	for (int32_t i = 0; i < pc->n && identity; i++) {
		int32_t t = pc->scratch[i];
		identity = t >= 0 && (size_t)t < c->size && c->data[t].id == t;
	}
	/* Tokens outside the candidates (negative, too large) are simply not
	 * found; they penalize nothing. */
	if (identity) {
		for (int32_t i = 0; i < pc->n;) {
			int32_t t = pc->scratch[i], j = i;
			while (j < pc->n && pc->scratch[j] == t)
				j++;
			pen_one(pc, &c->data[t], j - i);
			i = j;
		}
	} else {
		for (size_t k = 0; k < c->size; k++) {
			int32_t at = find_token(pc->scratch, pc->n, c->data[k].id);
			if (at < 0)
				continue;
			int32_t j = at;
			while (j < pc->n && pc->scratch[j] == c->data[k].id)
				j++;
			pen_one(pc, &c->data[k], j - at);
		}
	}
	c->sorted = false;
	c->selected = -1;
}

static void pen_free(smp_sampler_t *s)
{
	struct pen_ctx *pc = s->ctx;
	if (pc) {
		free(pc->ring);
		free(pc->scratch);
		free(pc);
	}
}

static const smp_iface_t pen_iface = {
	.name = pen_name, .apply = pen_apply, .accept = pen_accept,
	.reset = pen_reset, .free = pen_free,
};

smp_sampler_t *smp_penalties_new(int32_t last_n, float repeat, float freq, float presence)
{
	struct pen_ctx *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return NULL;
	if (last_n < 0 || last_n > SMP_LAST_N_MAX)
		last_n = SMP_LAST_N_MAX;
	pc->repeat = (isfinite(repeat) && repeat > 0.0f) ? repeat : 1.0f;
	pc->freq = isfinite(freq) ? freq : 0.0f;
	pc->presence = isfinite(presence) ? presence : 0.0f;
	pc->cap = last_n;
	if (last_n > 0) {
		pc->ring = malloc((size_t)last_n * sizeof(int32_t));
		pc->scratch = malloc((size_t)last_n * sizeof(int32_t));
		if (!pc->ring || !pc->scratch) {
			free(pc->ring);
			free(pc->scratch);
			free(pc);
			return NULL;
		}
	}
	smp_sampler_t *s = smp_sampler_new(&pen_iface, pc);
	if (!s)
		pen_free(&(smp_sampler_t){ .ctx = pc });
	return s;
}

/* ---- the PRNG ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void smp_rng_seed(smp_rng_t *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
	/* splitmix64 is a bijection of a counter, so four consecutive outputs
	 * cannot all be zero: the state is always valid. */
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t smp_rng_next(smp_rng_t *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double smp_rng_uniform(smp_rng_t *r)
{
	/* The top 53 bits scaled by 2^-53: exact in a double, so every machine
	 * gets the same value. */
	return (double)(smp_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- dist --------------------------------------------------------------------------- */

struct dist_ctx { uint64_t seed; smp_rng_t rng; };

static const char *dist_name(const smp_sampler_t *s) { return "dist"; }

static void dist_apply(smp_sampler_t *s, smp_cands_t *c)
{
	struct dist_ctx *dc = s->ctx;
	const smp_cand_t *d = c->data;
	float m = cands_max_logit(c);
	double total = 0.0;
	for (size_t i = 0; i < c->size; i++)
		total += cand_weight(d[i].logit, m);
	/* One target in [0, total), then the weights walked in candidate order,
	 * in double. total >= 1 (the maximum weighs 1). A candidate of weight 0
	 * can never be chosen (strict >). The walk goes on to the end to write
	 * p for every candidate. */
	double target = smp_rng_uniform(&dc->rng) * total;
	double cum = 0.0;
	int64_t sel = -1;
	size_t last_nonzero = 0;
	for (size_t i = 0; i < c->size; i++) {
		double w = cand_weight(d[i].logit, m);
		c->data[i].p = (float)(w / total);
		if (w > 0.0)
			last_nonzero = i;
		cum += w;
		if (sel < 0 && cum > target)
			sel = (int64_t)i;
	}
	/* sel < 0 only if rounding made u * total come out as total. */
	c->selected = sel >= 0 ? sel : (int64_t)last_nonzero;
}

static void dist_reset(smp_sampler_t *s)
{
	struct dist_ctx *dc = s->ctx;
	smp_rng_seed(&dc->rng, dc->seed);
}

static const smp_iface_t dist_iface = {
	.name = dist_name, .apply = dist_apply, .reset = dist_reset, .free = free_ctx,
};

smp_sampler_t *smp_dist_new(uint64_t seed)
{
	struct dist_ctx *dc = malloc(sizeof(*dc));
	if (dc) {
		dc->seed = seed;
		smp_rng_seed(&dc->rng, seed);
	}
	return sampler_with_ctx(&dist_iface, dc);
}

/* ---- the chain --------------------------------------------------------------------- */

struct smp_chain {
	smp_sampler_t **s;
	int n, cap;
	smp_cand_t *buf;     /* candidates buffer, reused across calls */
	size_t buf_cap;
	smp_cands_t cands;   /* the last call's result */
};

smp_params_t smp_params_default(void)
{
	return (smp_params_t){
		.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
		.repeat_penalty = 1.0f, .repeat_last_n = 64,
		.freq_penalty = 0.0f, .presence_penalty = 0.0f, .seed = 0,
	};
}

smp_chain_t *smp_chain_new(void)
{
	return calloc(1, sizeof(smp_chain_t));
}

void smp_chain_free(smp_chain_t *ch)
{
	if (!ch)
		return;
	for (int i = 0; i < ch->n; i++)
		smp_sampler_free(ch->s[i]);
	free(ch->s);
	free(ch->buf);
	free(ch);
}

int smp_chain_add(smp_chain_t *ch, smp_sampler_t *s)
{
	if (!ch || !s) {
		smp_sampler_free(s);
		return ERR_INVAL;
	}
	if (ch->n == ch->cap) {
		int nc = ch->cap ? ch->cap * 2 : 8;
		smp_sampler_t **ns = realloc(ch->s, (size_t)nc * sizeof(*ns));
		if (!ns) {
			smp_sampler_free(s);
			return ERR_NOMEM;
		}
		ch->s = ns;
		ch->cap = nc;
	}
	ch->s[ch->n++] = s;
	return 0;
}

int smp_chain_n(const smp_chain_t *ch) { return ch ? ch->n : 0; }

smp_sampler_t *smp_chain_get(const smp_chain_t *ch, int i)
{
	if (!ch || i < 0 || i >= ch->n)
		return NULL;
	return ch->s[i];
}

int smp_chain_reserve(smp_chain_t *ch, int32_t n_vocab)
{
	if (!ch || n_vocab <= 0)
		return ERR_INVAL;
	if ((size_t)n_vocab <= ch->buf_cap)
		return 0;
	smp_cand_t *nb = malloc((size_t)n_vocab * sizeof(*nb));
	if (!nb)
		return ERR_NOMEM;
	free(ch->buf);
	ch->buf = nb;
	ch->buf_cap = (size_t)n_vocab;
	ch->cands = (smp_cands_t){ .data = nb, .size = 0, .selected = -1 };
	return 0;
}

smp_chain_t *smp_chain_new_default(const smp_params_t *p)
{
	smp_params_t d = p ? *p : smp_params_default();
	smp_chain_t *ch = smp_chain_new();
	if (!ch)
		return NULL;
	int rc = 0;
	bool pen_on = d.repeat_last_n != 0 &&
		((isfinite(d.repeat_penalty) && d.repeat_penalty > 0.0f && d.repeat_penalty != 1.0f) ||
		 (isfinite(d.freq_penalty) && d.freq_penalty != 0.0f) ||
		 (isfinite(d.presence_penalty) && d.presence_penalty != 0.0f));
	if (pen_on)
		rc = smp_chain_add(ch, smp_penalties_new(d.repeat_last_n, d.repeat_penalty,
							 d.freq_penalty, d.presence_penalty));
	if (isnan(d.temp) || d.temp <= 0.0f) {
		if (rc == 0)
			rc = smp_chain_add(ch, smp_greedy_new());
	} else {
		if (rc == 0 && d.top_k > 0)
			rc = smp_chain_add(ch, smp_top_k_new(d.top_k));
		if (rc == 0 && d.top_p < 1.0f)      /* false for NaN */
			rc = smp_chain_add(ch, smp_top_p_new(d.top_p, 1));
		if (rc == 0 && d.min_p > 0.0f)      /* false for NaN */
			rc = smp_chain_add(ch, smp_min_p_new(d.min_p, 1));
		if (rc == 0)
			rc = smp_chain_add(ch, smp_temp_new(d.temp));
		if (rc == 0)
			rc = smp_chain_add(ch, smp_dist_new(d.seed));
	}
	if (rc != 0) {
		smp_chain_free(ch);
		return NULL;
	}
	return ch;
}

int32_t smp_sample(smp_chain_t *ch, const float *logits, int32_t n_vocab)
{
	if (!ch || !logits || n_vocab <= 0)
		return ERR_INVAL;
	int rc = smp_chain_reserve(ch, n_vocab);
	if (rc != 0)
		return rc;
	smp_cands_t *c = &ch->cands;
	smp_cands_init(c, ch->buf, logits, (size_t)n_vocab);
	for (int i = 0; i < ch->n; i++)
		smp_sampler_apply(ch->s[i], c);
	/* A custom sampler could leave anything behind: never trust it with the
	 * returned id. */
	if (c->size == 0 || c->size > (size_t)n_vocab) {
		smp_cands_init(c, ch->buf, logits, (size_t)n_vocab);
		c->selected = -1;
	}
	if (c->selected < 0 || (size_t)c->selected >= c->size)
		c->selected = (int64_t)cands_argmax(c);
	int32_t id = c->data[c->selected].id;
	if (id < 0 || id >= n_vocab)
		return ERR_RANGE;
	return id;
}

const smp_cands_t *smp_chain_cands(const smp_chain_t *ch) { return &ch->cands; }

void smp_accept(smp_chain_t *ch, int32_t token)
{
	if (!ch)
		return;
	for (int i = 0; i < ch->n; i++)
		smp_sampler_accept(ch->s[i], token);
}

void smp_reset(smp_chain_t *ch)
{
	if (!ch)
		return;
	for (int i = 0; i < ch->n; i++)
		smp_sampler_reset(ch->s[i]);
}
