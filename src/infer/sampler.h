/* sampler.h - choosing the next token from a logits vector.
 *
 * A sampler is a small object behind an interface (name, apply, accept, reset,
 * free). Samplers are composed into a chain; smp_sample() turns the logits of
 * one position into a candidates array (id, logit, p), passes it through every
 * sampler in order, and returns the token the last one selected. Filters
 * (top-k, top-p, min-p) shrink the array, transforms (penalties, temperature)
 * change logits, and a final sampler (greedy or dist) selects one candidate.
 *
 * Determinism: the dist sampler draws from its own xoshiro256** generator
 * seeded through splitmix64, turns 53 random bits into a double exactly, and
 * accumulates weights in double in candidate order, so one seed gives the same
 * tokens on every machine and compiler. The one remaining dependency is libm's
 * exp(), whose results may differ by an ulp between C libraries; that can only
 * matter when a draw lands within ~1e-16 of a bucket boundary.
 *
 * Hostile values, and what they do (never an out-of-range id, never a crash):
 *   - NaN logits are treated as -inf (never chosen unless every logit is).
 *   - +inf logits win: greedy picks the lowest-id +inf, dist picks uniformly
 *     among the +inf entries. If every logit is -inf/NaN, greedy picks the
 *     lowest id and dist picks uniformly among the remaining candidates.
 *   - top_k <= 0 disables top-k; top_k >= n keeps everything.
 *   - top_p NaN or >= 1 disables top-p; top_p <= 0 keeps only min_keep.
 *   - min_p NaN or <= 0 disables min-p; min_p > 1 acts as 1 (keeps the ties
 *     of the maximum).
 *   - temp NaN or <= 0 means greedy; temp is clamped to FLT_MAX.
 *   - repeat_penalty NaN, inf or <= 0 means 1 (off); freq/presence penalties
 *     that are not finite mean 0 (off); repeat_last_n 0 = off, < 0 or larger
 *     than SMP_LAST_N_MAX means SMP_LAST_N_MAX.
 * Every filter keeps at least one candidate (min_keep is raised to 1).
 *
 * Cost: the chain owns one candidates buffer, grown only when a larger vocab
 * comes in, so sampling does not allocate per token. Top-k selects with an
 * in-place heap, O(n log k); top-p on an unsorted array buckets the weights
 * and sorts only the buckets that hold the nucleus.
 *
 * Ownership: smp_*_new() return heap objects freed with smp_sampler_free()
 * (or by the chain that owns them). Not thread-safe: one chain per session.
 */
#ifndef COLONY_INFER_SAMPLER_H
#define COLONY_INFER_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Longest penalty window (tokens). */
#ifndef SMP_LAST_N_MAX
#define SMP_LAST_N_MAX 65536
#endif

/* ---- candidates ------------------------------------------------------- */

typedef struct smp_cand {
	int32_t id;
	float logit;
	float p;        /* probability over the candidates the last top-p or dist
			 * sampler saw; written for what top-p keeps, for all by dist */
} smp_cand_t;

typedef struct smp_cands {
	smp_cand_t *data;   /* borrowed; size entries */
	size_t size;
	int64_t selected;   /* index into data chosen by a final sampler, or -1 */
	bool sorted;        /* data is ordered by logit desc, then id asc */
} smp_cands_t;

/* Fills data[0..n) with {i, logits[i], 0} (NaN becomes -inf) and sets up *c
 * over it: size n, selected -1, not sorted. data must hold n entries. */
void smp_cands_init(smp_cands_t *c, smp_cand_t *data, const float *logits, size_t n);

/* ---- the sampler interface ----------------------------------------------- */

typedef struct smp_sampler smp_sampler_t;

typedef struct smp_iface {
	const char *(*name)(const smp_sampler_t *s);
	void (*apply)(smp_sampler_t *s, smp_cands_t *c);   /* required */
	void (*accept)(smp_sampler_t *s, int32_t token);   /* may be NULL */
	void (*reset)(smp_sampler_t *s);                   /* may be NULL */
	void (*free)(smp_sampler_t *s);                    /* frees ctx; may be NULL */
} smp_iface_t;

struct smp_sampler {
	const smp_iface_t *iface;   /* borrowed; must outlive the sampler */
	void *ctx;                  /* owned by the sampler (released by iface->free) */
};

/* Wraps a custom implementation. NULL on allocation failure (ctx is then not
 * freed: the caller still owns it). */
smp_sampler_t *smp_sampler_new(const smp_iface_t *iface, void *ctx);
void smp_sampler_free(smp_sampler_t *s);            /* NULL is fine */
const char *smp_sampler_name(const smp_sampler_t *s);
void smp_sampler_apply(smp_sampler_t *s, smp_cands_t *c);
void smp_sampler_accept(smp_sampler_t *s, int32_t token);
void smp_sampler_reset(smp_sampler_t *s);

/* The built-in samplers; each returns NULL only when out of memory. */
smp_sampler_t *smp_greedy_new(void);                   /* selects argmax, ties -> lowest id */
smp_sampler_t *smp_temp_new(float temp);               /* logit / temp; temp <= 0: keep argmax only */
smp_sampler_t *smp_top_k_new(int32_t k);               /* keeps the k best, sorted */
smp_sampler_t *smp_top_p_new(float p, size_t min_keep);/* smallest prefix with mass >= p; sorts */
smp_sampler_t *smp_min_p_new(float p, size_t min_keep);/* keeps prob >= p * max prob; order kept */
/* llama.cpp semantics over the last `last_n` accepted tokens: for each token
 * seen count > 0 times, a positive logit is divided by `repeat`, a negative
 * one multiplied, then count * freq + presence is subtracted. */
smp_sampler_t *smp_penalties_new(int32_t last_n, float repeat, float freq, float presence);
/* Softmax (writes p), then one seeded draw. reset() restarts from the seed. */
smp_sampler_t *smp_dist_new(uint64_t seed);

/* ---- the PRNG (exposed for tests and other deterministic users) ---------- */

typedef struct smp_rng {
	uint64_t s[4];
} smp_rng_t;

void smp_rng_seed(smp_rng_t *r, uint64_t seed);     /* splitmix64 expansion */
uint64_t smp_rng_next(smp_rng_t *r);                /* xoshiro256** */
double smp_rng_uniform(smp_rng_t *r);               /* [0, 1), 53 bits, exact */

/* ---- the chain ------------------------------------------------------------ */

typedef struct smp_chain smp_chain_t;

typedef struct smp_params {
	float temp;              /* <= 0: greedy */
	int32_t top_k;           /* <= 0: off */
	float top_p;             /* >= 1: off */
	float min_p;             /* <= 0: off */
	float repeat_penalty;    /* 1: off */
	int32_t repeat_last_n;   /* 0: off */
	float freq_penalty;      /* 0: off */
	float presence_penalty;  /* 0: off */
	uint64_t seed;           /* used as is: every seed is reproducible */
} smp_params_t;

/* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, no penalties (last_n 64), seed 0. */
smp_params_t smp_params_default(void);

smp_chain_t *smp_chain_new(void);                   /* NULL on OOM */
void smp_chain_free(smp_chain_t *ch);               /* frees its samplers; NULL is fine */
/* Appends s; the chain owns s from now on, even when this fails (then s is
 * freed). ERR_INVAL for s == NULL (lets callers chain constructors). */
int smp_chain_add(smp_chain_t *ch, smp_sampler_t *s) WUR;
int smp_chain_n(const smp_chain_t *ch);
smp_sampler_t *smp_chain_get(const smp_chain_t *ch, int i);   /* borrowed; NULL if out of range */
/* Grows the candidates buffer now, so the first smp_sample() does not allocate. */
int smp_chain_reserve(smp_chain_t *ch, int32_t n_vocab) WUR;

/* penalties -> top-k -> top-p -> min-p -> temp -> dist, leaving out the stages
 * the params disable. With temp <= 0 it is penalties -> greedy (the filters
 * always keep the argmax, so they cannot change a greedy pick). NULL on OOM. */
smp_chain_t *smp_chain_new_default(const smp_params_t *p);

/* Runs the chain over logits[0..n_vocab) and returns a token id in
 * [0, n_vocab), or ERR_INVAL (NULL arguments, n_vocab <= 0), ERR_NOMEM, or
 * ERR_RANGE (a custom sampler wrote an id outside [0, n_vocab)).
 * If no sampler selected a candidate, the argmax of what is left is returned.
 * Does not accept the token: call smp_accept() with the token actually used. */
int32_t smp_sample(smp_chain_t *ch, const float *logits, int32_t n_vocab) WUR;
/* The candidates left by the last smp_sample() (borrowed until the next call). */
const smp_cands_t *smp_chain_cands(const smp_chain_t *ch);
void smp_accept(smp_chain_t *ch, int32_t token);   /* records for penalties */
void smp_reset(smp_chain_t *ch);                   /* history cleared, RNG reseeded */

#endif
