/* rep.h - reputation: pure functions from evidence to scores.
 *
 * Local score: what this node saw of a provider (rep_obs_t) -> a number in
 * [0, 1]: the share of good sessions under a Beta(1, 1) prior (failures
 * and timeouts count fully, sessions reserved but never settled half),
 * times a speed factor, times audit_factor (0.05) per failed audit, so one
 * proven wrong answer outweighs any record of availability.
 *
 * Network view: nodes publish digests of their receipts: "I paid provider
 * P this much, and score it s". An opinion is only worth the money behind
 * it, so the view is an EigenTrust iteration where an edge i -> j weighs
 * paid(i, j) x s(i, j), and the pre-trusted node is this node itself: it
 * trusts its own observations, and each reporter in proportion to the
 * value that reporter verifiably paid (redeemed vouchers: the caller must
 * check that evidence before building edges). A reporter that paid nothing
 * carries no weight however many of them there are, so fake buyers cost
 * real money. Nodes with no outgoing weight hand their trust back to self.
 *
 * Known limit: a provider that pays itself through buyers it controls
 * gains weight in proportion to the money it cycles; fees on the ledger or
 * ageing of old payments would make that cost something.
 */
#ifndef COLONY_MARKET_REP_H
#define COLONY_MARKET_REP_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "market/amount.h"

typedef struct rep_obs {
	uint64_t sessions;            /* sessions opened with the provider */
	uint64_t failures;            /* of them: errors, dropped connections, bad output */
	uint64_t timeouts;            /* of them: no answer in time */
	uint64_t unsettled;           /* of them: reserved but never settled */
	uint64_t failed_audits;       /* signed audit failures against it */
	uint64_t tokens_served;
	amount_t paid;                /* value paid to it (redeemed) */
	double latency_ms;            /* mean latency per token (0: unknown) */
} rep_obs_t;

typedef struct rep_params {
	double prior_good, prior_bad; /* Beta prior pseudo-counts (1, 1) */
	double timeout_weight;        /* a timeout counts as this many failures (1) */
	double unsettled_weight;      /* an unsettled session (0.5) */
	double audit_factor;          /* multiplier per failed audit (0.05) */
	double latency_ref_ms;        /* speed factor = ref / (ref + latency); 0 ignores latency (1000) */
	double alpha;                 /* EigenTrust: weight of the restart at self (0.15) */
	double self_weight;           /* share of self's trust on its own observations when it has some (0.5) */
	int max_iter;                 /* (100) */
	double eps;                   /* stop when the L1 change is below (1e-10) */
} rep_params_t;

void rep_params_default(rep_params_t *p);

/* The local score of one provider, in [0, 1]. p NULL = defaults. */
double rep_local_score(const rep_obs_t *o, const rep_params_t *p);

/* One reported relation: `from` paid `to` the amount `paid` (verified) and
 * gives it the local score `score` in [0, 1]. Nodes are indices 0..n-1. */
typedef struct rep_edge {
	uint32_t from, to;
	amount_t paid;
	double score;
} rep_edge_t;

/* Global trust of every node (trust[n], summing to 1) seen from `self`.
 * ERR_INVAL: an index >= n, self >= n, a negative payment, a score outside
 * [0, 1] or not finite, n == 0. ERR_NOMEM. Rank providers by trust. */
int rep_network(uint32_t n, uint32_t self, const rep_edge_t *edges, size_t n_edges,
	const rep_params_t *p, double *trust, err_msg_t *e) WUR;

/* One reported tally: `reporter` (0 is self) saw `obs` of `provider`
 * (indices into the caller's node table). obs.paid is the value behind the
 * opinion: what the reporter paid that provider. */
typedef struct rep_report {
	uint32_t reporter, provider;
	rep_obs_t obs;
} rep_report_t;

/* Scores for routing, one per node, in [0, 1], or -1 when nothing is known.
 * Every report becomes an edge reporter -> provider weighing obs.paid x
 * rep_local_score(obs); rep_network ranks the nodes as seen from self (0);
 * a node's score is its trust over the highest trust of any provider (a
 * node some report is about, self aside), so the best-reputed provider
 * scores 1 and one that only unpaid reporters praise scores 0. When no report carries a payment (an unpaid
 * swarm) the network view says nothing, and a provider self has sessions
 * with scores its local score instead (self's own experience needs no
 * money behind it). Nodes no report is about stay -1. ERR_INVAL (n == 0, an index >= n,
 * a negative payment), ERR_NOMEM. */
int rep_scores(uint32_t n, const rep_report_t *r, size_t n_r, const rep_params_t *p, double *score,
	err_msg_t *e) WUR;

#endif
