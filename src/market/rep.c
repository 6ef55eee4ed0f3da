/* rep.c - local scores and the paid-weighted EigenTrust view (see rep.h). */
#include "market/rep.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rep_params_default(rep_params_t *p)
{
	p->prior_good = 1.0;
	p->prior_bad = 1.0;
	p->timeout_weight = 1.0;
	p->unsettled_weight = 0.5;
	p->audit_factor = 0.05;
	p->latency_ref_ms = 1000.0;
	p->alpha = 0.15;
	p->self_weight = 0.5;
	p->max_iter = 100;
	p->eps = 1e-10;
}

double rep_local_score(const rep_obs_t *o, const rep_params_t *p)
{
	rep_params_t d;
	if (!p) {
		rep_params_default(&d);
		p = &d;
	}
	double n = (double)o->sessions;
	double bad = (double)o->failures + p->timeout_weight * (double)o->timeouts +
		p->unsettled_weight * (double)o->unsettled;
	if (bad > n)
		bad = n;             /* inconsistent counts: never below zero good sessions */
	double s = (n - bad + p->prior_good) / (n + p->prior_good + p->prior_bad);
	if (p->latency_ref_ms > 0 && o->latency_ms > 0)
		s *= p->latency_ref_ms / (p->latency_ref_ms + o->latency_ms);
	for (uint64_t i = 0; i < o->failed_audits && s > 0; i++)
		s *= p->audit_factor;
	return s < 0 ? 0 : s > 1 ? 1 : s;
}

int rep_network(uint32_t n, uint32_t self, const rep_edge_t *edges, size_t n_edges,
	const rep_params_t *p, double *trust, err_msg_t *e)
{
	rep_params_t d;
	if (!p) {
		rep_params_default(&d);
		p = &d;
	}
	if (n == 0 || self >= n)
		return err_set(e, ERR_INVAL, "rep: %u nodes, self %u", n, self);
	for (size_t k = 0; k < n_edges; k++) {
		const rep_edge_t *x = &edges[k];
		if (x->from >= n || x->to >= n || x->paid < 0 || !isfinite(x->score) || x->score < 0 || x->score > 1)
			return err_set(e, ERR_INVAL, "rep: edge %zu (%u -> %u, paid %lld, score %g) is invalid",
				k, x->from, x->to, (long long)x->paid, x->score);
	}
	/* rowsum[i]: i's total opinion weight; spent[i]: what i paid in all. */
	double *rowsum = calloc(n, sizeof(double)), *spent = calloc(n, sizeof(double));
	double *next = calloc(n, sizeof(double));
	if (!rowsum || !spent || !next) {
		free(rowsum);
		free(spent);
		free(next);
		return err_set(e, ERR_NOMEM, "rep: out of memory for %u nodes", n);
	}
	for (size_t k = 0; k < n_edges; k++) {
		rowsum[edges[k].from] += (double)edges[k].paid * edges[k].score;
		if (edges[k].from != self)
			spent[edges[k].from] += (double)edges[k].paid;
	}
	double spent_all = 0;
	for (uint32_t i = 0; i < n; i++)
		spent_all += spent[i];
	/* Self's row: its own observations and the reporters by money spent. */
	double own_share = rowsum[self] > 0 ? (spent_all > 0 ? p->self_weight : 1.0) : 0.0;
	double rep_share = spent_all > 0 ? 1.0 - own_share : 0.0;

	memset(trust, 0, n * sizeof(double));
	trust[self] = 1.0;
	for (int it = 0; it < p->max_iter; it++) {
		memset(next, 0, n * sizeof(double));
		double dangling = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (i == self) {
				if (own_share + rep_share == 0)
					dangling += trust[i];
				if (rep_share > 0)
					for (uint32_t j = 0; j < n; j++)
						next[j] += trust[i] * rep_share * spent[j] / spent_all;
			} else if (rowsum[i] <= 0) {
				dangling += trust[i];
			}
		}
		for (size_t k = 0; k < n_edges; k++) {
			const rep_edge_t *x = &edges[k];
			double w = (double)x->paid * x->score;
			if (w <= 0)
				continue;
			double share = x->from == self ? own_share : 1.0;
			next[x->to] += trust[x->from] * share * w / rowsum[x->from];
		}
		next[self] += dangling;
		double diff = 0;
		for (uint32_t j = 0; j < n; j++) {
			double v = (1.0 - p->alpha) * next[j] + (j == self ? p->alpha : 0.0);
			diff += fabs(v - trust[j]);
			trust[j] = v;
		}
		if (diff < p->eps)
			break;
	}
	free(rowsum);
	free(spent);
	free(next);
	return 0;
}

int rep_scores(uint32_t n, const rep_report_t *r, size_t n_r, const rep_params_t *p, double *score, err_msg_t *e)
{
	if (n == 0)
		return err_set(e, ERR_INVAL, "rep: no nodes");
	for (size_t k = 0; k < n_r; k++)
		if (r[k].reporter >= n || r[k].provider >= n || r[k].obs.paid < 0)
			return err_set(e, ERR_INVAL, "rep: report %zu (%u -> %u, paid %lld) is invalid", k, r[k].reporter,
				r[k].provider, (long long)r[k].obs.paid);
	rep_edge_t *edges = malloc((n_r ? n_r : 1) * sizeof(*edges));
	double *trust = malloc(n * sizeof(double));
	if (!edges || !trust) {
		free(edges);
		free(trust);
		return err_set(e, ERR_NOMEM, "rep: out of memory for %u nodes", n);
	}
	int paid_any = 0;
	for (size_t k = 0; k < n_r; k++) {
		edges[k] = (rep_edge_t){ r[k].reporter, r[k].provider, r[k].obs.paid, rep_local_score(&r[k].obs, p) };
		paid_any |= r[k].obs.paid > 0 && r[k].reporter != r[k].provider;
	}
	for (uint32_t i = 0; i < n; i++)
		score[i] = -1.0;
	int rc = 0;
	if (paid_any) {
		rc = rep_network(n, 0, edges, n_r, p, trust, e);
		/* Over the providers only: a reporter's trust (it passes its own on)
		 * is not a service record. */
		double top = 0;
		for (size_t k = 0; rc == 0 && k < n_r; k++)
			if (r[k].provider != 0 && trust[r[k].provider] > top)
				top = trust[r[k].provider];
		for (size_t k = 0; rc == 0 && top > 0 && k < n_r; k++)
			if (r[k].provider != 0)
				score[r[k].provider] = trust[r[k].provider] / top;
	} else {
		/* Self's own sessions, summed per provider. */
		for (size_t k = 0; k < n_r; k++) {
			if (r[k].reporter != 0 || r[k].provider == 0)
				continue;
			rep_obs_t sum = r[k].obs;
			int first = 1;
			for (size_t m = 0; m < k && first; m++)
				first = !(r[m].reporter == 0 && r[m].provider == r[k].provider);
			if (!first)
				continue;
			for (size_t m = k + 1; m < n_r; m++) {
				if (r[m].reporter != 0 || r[m].provider != r[k].provider)
					continue;
				sum.sessions += r[m].obs.sessions;
				sum.failures += r[m].obs.failures;
				sum.timeouts += r[m].obs.timeouts;
				sum.unsettled += r[m].obs.unsettled;
				sum.failed_audits += r[m].obs.failed_audits;
				sum.tokens_served += r[m].obs.tokens_served;
			}
			if (sum.sessions > 0)
				score[r[k].provider] = rep_local_score(&sum, p);
		}
	}
	free(edges);
	free(trust);
	return rc;
}
