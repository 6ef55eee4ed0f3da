/* route.c - route planning and bans (see route.h). */
#include "swarm/route.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void route_cost_default(route_cost_t *c)
{
	memset(c, 0, sizeof(*c));
	c->default_rtt_ms = ROUTE_DEFAULT_RTT_MS;
	c->default_ms_per_token = ROUTE_DEFAULT_MS_PER_TOKEN;
	c->lambda = 0.0;
	c->ban_base_ms = ROUTE_BAN_BASE_MS;
	c->ban_max_ms = ROUTE_BAN_MAX_MS;
}

void route_server_from_ann(route_server_t *s, uint64_t id, const ann_t *a, double rtt_ms)
{
	memset(s, 0, sizeof(*s));
	s->id = id;
	s->layer_a = (int)a->layer_a;
	s->layer_b = (int)a->layer_b;
	s->rtt_ms = rtt_ms;
	/* throughput_milli is tokens/s x 1000 through its span. */
	s->ms_per_token = a->throughput_milli ? 1e6 / (double)a->throughput_milli : -1.0;
	s->free_sessions = a->free_sessions;
	s->price = a->price;
}

/* Milliseconds per token through s (RTT, compute, the fixed hop cost). */
static double edge_ms(const route_server_t *s, const route_cost_t *c)
{
	double rtt = s->rtt_ms >= 0 && isfinite(s->rtt_ms) ? s->rtt_ms : c->default_rtt_ms;
	double comp = s->ms_per_token >= 0 && isfinite(s->ms_per_token) ? s->ms_per_token : c->default_ms_per_token;
	return rtt + comp + c->hop_ms;
}

/* The scales of a policy's terms: the highest price and ms. */
struct norm {
	double price, ms;
};

static double policy_cost(const route_server_t *s, const route_cost_t *c, const struct norm *nm)
{
	double p = nm->price > 0 ? (double)s->price / nm->price : 0.0;
	double m = nm->ms > 0 ? edge_ms(s, c) / nm->ms : 0.0;
	double r = s->rep_known && isfinite(s->rep) ? s->rep : ROUTE_REP_UNKNOWN;
	r = 1.0 - (r < 0 ? 0 : r > 1 ? 1 : r);
	return c->w_price * p + c->w_speed * m + c->w_rep * r + ROUTE_TIE_EPS * (p + m + r);
}

double route_edge_cost(const route_server_t *s, const route_cost_t *c)
{
	if (c->prefer != ROUTE_PREFER_NONE) {
		struct norm nm = { (double)s->price, edge_ms(s, c) };
		return policy_cost(s, c, &nm);
	}
	/* Spelled as before policies existed, so the default's sums are bit-identical. */
	double rtt = s->rtt_ms >= 0 && isfinite(s->rtt_ms) ? s->rtt_ms : c->default_rtt_ms;
	double comp = s->ms_per_token >= 0 && isfinite(s->ms_per_token) ? s->ms_per_token : c->default_ms_per_token;
	return rtt + comp + c->lambda * (double)s->price + c->hop_ms;
}

static int weight_ok(double w) { return isfinite(w) && w >= 0 && w <= 1e6; }

int route_prefer_parse(route_cost_t *c, const char *name, const char *weights, err_msg_t *e)
{
	int prefer = ROUTE_PREFER_NONE;
	double w[3] = { 0, 0, 0 };
	if (name && *name) {
		if (!strcmp(name, "price"))
			prefer = ROUTE_PREFER_PRICE, w[0] = 1;
		else if (!strcmp(name, "speed"))
			prefer = ROUTE_PREFER_SPEED, w[1] = 1;
		else if (!strcmp(name, "reputation") || !strcmp(name, "rep"))
			prefer = ROUTE_PREFER_REP, w[2] = 1;
		else
			return err_set(e, ERR_INVAL, "--prefer '%s': want price, speed or reputation", name);
	}
	if (weights && *weights) {
		const char *p = weights;
		for (int i = 0; i < 3; i++) {
			char *end;
			errno = 0;
			w[i] = strtod(p, &end);
			if (end == p || errno || !weight_ok(w[i]) || (i < 2 && *end != ':') || (i == 2 && *end))
				return err_set(e, ERR_INVAL, "--prefer-weights '%s': want P:S:R, three numbers >= 0", weights);
			p = end + 1;
		}
		if (w[0] + w[1] + w[2] <= 0)
			return err_set(e, ERR_INVAL, "--prefer-weights '%s': all weights are 0", weights);
		if (prefer == ROUTE_PREFER_NONE)
			prefer = ROUTE_PREFER_WEIGHTS;
	}
	c->prefer = prefer;
	c->w_price = w[0];
	c->w_speed = w[1];
	c->w_rep = w[2];
	return 0;
}

const char *route_prefer_name(int prefer)
{
	switch (prefer) {
	case ROUTE_PREFER_PRICE: return "price";
	case ROUTE_PREFER_SPEED: return "speed";
	case ROUTE_PREFER_REP: return "reputation";
	case ROUTE_PREFER_WEIGHTS: return "weights";
	default: return "none";
	}
}

int route_server_usable(const route_server_t *s, uint64_t now_ms)
{
	return s->free_sessions > 0 && now_ms >= s->banned_until_ms;
}

/* Best known way into one boundary. */
struct best {
	double cost;
	int hops;
	int edge;              /* candidate index of the entering hop; -1: none (or the start) */
};

/* 1 if (cost, hops, id) is better than what *b holds. */
static int better(const struct best *b, const route_server_t *srv, double cost, int hops, uint64_t id)
{
	if (b->hops < 0)
		return 1;
	if (cost != b->cost)
		return cost < b->cost;
	if (hops != b->hops)
		return hops < b->hops;
	return b->edge >= 0 && id < srv[b->edge].id;
}

/* ERR_NOTFOUND with a message naming the uncovered layers of [a, b). */
static int explain(const route_server_t *srv, int n, int a, int b, uint64_t now_ms, const struct best *bt,
		   err_msg_t *e)
{
	int banned = 0, full = 0;
	for (int i = 0; i < n; i++) {
		const route_server_t *s = &srv[i];
		if (s->layer_a < a || s->layer_b > b || s->layer_a >= s->layer_b)
			continue;
		if (s->free_sessions == 0)
			full++;
		else if (now_ms < s->banned_until_ms)
			banned++;
	}
	char runs[200];
	size_t len = 0;
	runs[0] = 0;
	int n_runs = 0, first_lo = -1, first_hi = -1;
	for (int l = a; l < b;) {
		int covered = 0;
		for (int i = 0; i < n && !covered; i++) {
			const route_server_t *s = &srv[i];
			covered = s->layer_a >= a && s->layer_b <= b && s->layer_a <= l && l < s->layer_b &&
				  route_server_usable(s, now_ms);
		}
		if (covered) {
			l++;
			continue;
		}
		int lo = l;
		while (l < b) {
			int c2 = 0;
			for (int i = 0; i < n && !c2; i++) {
				const route_server_t *s = &srv[i];
				c2 = s->layer_a >= a && s->layer_b <= b && s->layer_a <= l && l < s->layer_b &&
				     route_server_usable(s, now_ms);
			}
			if (c2)
				break;
			l++;
		}
		if (n_runs == 0) {
			first_lo = lo;
			first_hi = l;
		}
		n_runs++;
		if (len < sizeof(runs) - 32) {
			int w = snprintf(runs + len, sizeof(runs) - len, "%s[%d, %d)", n_runs > 1 ? ", " : "", lo, l);
			if (w > 0)
				len += (size_t)w;
		}
	}
	if (n_runs > 0) {
		if (n_runs == 1)
			return err_set(e, ERR_NOTFOUND,
				       "no route over layers [%d, %d): layers %d..%d ([%d, %d)) are not served by any "
				       "available server (%d banned, %d full)",
				       a, b, first_lo, first_hi - 1, first_lo, first_hi, banned, full);
		return err_set(e, ERR_NOTFOUND,
			       "no route over layers [%d, %d): layers %s are not served by any available server "
			       "(%d banned, %d full)",
			       a, b, runs, banned, full);
	}
	/* Every layer is served but the spans do not join: say how far chains reach. */
	int reach = a;
	for (int p = a; p <= b; p++)
		if (bt[p - a].hops >= 0)
			reach = p;
	return err_set(e, ERR_NOTFOUND,
		       "no route over layers [%d, %d): every layer is served, but no chain of spans continues "
		       "from layer boundary %d",
		       a, b, reach);
}

int route_plan(const route_server_t *srv, int n, int a, int b, const route_cost_t *c, uint64_t now_ms,
	       route_hop_t *hops, int cap, int *n_hops, double *total, err_msg_t *e)
{
	*n_hops = 0;
	if (total)
		*total = 0;
	if (!c || n < 0 || (n > 0 && !srv) || cap < 0 || (cap > 0 && !hops))
		return err_set(e, ERR_INVAL, "route_plan: bad arguments");
	if (a < 0 || a >= b || b > ROUTE_MAX_LAYERS)
		return err_set(e, ERR_INVAL, "route_plan: bad span [%d, %d)", a, b);
	int nb = b - a + 1;
	struct best *bt = malloc(sizeof(*bt) * (size_t)nb);
	if (!bt)
		return err_set(e, ERR_NOMEM, "out of memory");
	for (int i = 0; i < nb; i++)
		bt[i] = (struct best){ 0.0, -1, -1 };
	struct norm nm = { 0, 0 };
	for (int i = 0; c->prefer != ROUTE_PREFER_NONE && i < n; i++) {
		const route_server_t *s = &srv[i];
		if (s->layer_a < a || s->layer_b > b || s->layer_a >= s->layer_b || !route_server_usable(s, now_ms))
			continue;
		if ((double)s->price > nm.price)
			nm.price = (double)s->price;
		if (edge_ms(s, c) > nm.ms)
			nm.ms = edge_ms(s, c);
	}
	bt[0].hops = 0;
	/* Boundaries in increasing order: every edge into p comes from a
	 * boundary before p, so bt[p] is final when p is reached. */
	for (int p = a; p < b; p++) {
		const struct best *from = &bt[p - a];
		if (from->hops < 0)
			continue;
		for (int i = 0; i < n; i++) {
			const route_server_t *s = &srv[i];
			if (s->layer_a != p || s->layer_b <= p || s->layer_b > b || !route_server_usable(s, now_ms))
				continue;
			double cost = from->cost + (c->prefer ? policy_cost(s, c, &nm) : route_edge_cost(s, c));
			struct best *to = &bt[s->layer_b - a];
			if (better(to, srv, cost, from->hops + 1, s->id))
				*to = (struct best){ cost, from->hops + 1, i };
		}
	}
	if (bt[nb - 1].hops < 0) {
		int rc = explain(srv, n, a, b, now_ms, bt, e);
		free(bt);
		return rc;
	}
	int nh = bt[nb - 1].hops;
	if (nh > cap) {
		free(bt);
		return err_set(e, ERR_FULL, "the route over [%d, %d) needs %d hops, room for %d", a, b, nh, cap);
	}
	int p = b;
	for (int k = nh - 1; k >= 0; k--) {
		const route_server_t *s = &srv[bt[p - a].edge];
		hops[k] = (route_hop_t){ bt[p - a].edge, s->id, s->layer_a, s->layer_b,
					 c->prefer ? policy_cost(s, c, &nm) : route_edge_cost(s, c) };
		p = s->layer_a;
	}
	*n_hops = nh;
	if (total)
		*total = bt[nb - 1].cost;
	free(bt);
	return 0;
}

uint64_t route_ban(route_server_t *s, uint64_t now_ms, const route_cost_t *c)
{
	uint64_t base = c->ban_base_ms ? c->ban_base_ms : ROUTE_BAN_BASE_MS;
	uint64_t cap = c->ban_max_ms ? c->ban_max_ms : ROUTE_BAN_MAX_MS;
	uint64_t len = base;
	for (uint32_t i = 0; i < s->n_bans && len < cap; i++)
		len *= 2;
	if (len > cap)
		len = cap;
	if (s->n_bans < UINT32_MAX)
		s->n_bans++;
	s->banned_until_ms = now_ms + len;
	return len;
}

void route_forgive(route_server_t *s) { s->n_bans = 0; s->n_timeouts = 0; }
