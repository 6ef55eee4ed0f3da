/* route.h - route planning: the cheapest chain of servers covering a layer
 * span, and bans with exponential backoff. Pure: no I/O, no clock (time is
 * what the caller says), no allocation beyond the call.
 *
 * The graph: the layer boundaries a..b are nodes; a server whose span is
 * [la, lb) with a <= la < lb <= b is an edge la -> lb. A route is a path from
 * a to b, so consecutive hops join exactly (no overlap, no gap). Edges only go
 * forward, so the shortest path is one pass over the boundaries in order.
 *
 * Edge cost (milliseconds per token through that hop):
 *     rtt_ms (or cost.default_rtt_ms when unknown)
 *   + ms_per_token (or cost.default_ms_per_token when unknown)
 *   + cost.lambda * price
 * Servers with no free session, or banned at `now`, are left out.
 *
 * Policies (cost.prefer, `--prefer` and `--prefer-weights`). With a policy
 * the edge cost is instead a weighted mix of three terms, each in [0, 1]:
 *     w_price * price / P  +  w_speed * ms / M  +  w_rep * (1 - rep)
 * where ms = rtt + ms_per_token + hop_ms (defaults for unknowns as above),
 * P and M are the highest price and ms among the usable candidates inside
 * the planned span (so the terms compare like with like, whatever the
 * units), and rep is the server's reputation score (rep.h rep_scores;
 * ROUTE_REP_UNKNOWN when none). Each term is summed over the hops, so a
 * route of two servers pays both prices, both latencies and both risks.
 * A tiny share (ROUTE_TIE_EPS) of every term is added so that what the
 * policy ignores still breaks its ties (the cheapest of equally fast
 * servers, say). ROUTE_PREFER_NONE keeps the cost above, unchanged.
 *
 * Ties (equal total cost) are broken deterministically and independently of
 * the order of the candidates: fewer hops first, then the lower id of the hop
 * that enters each boundary. Ids must be unique among the candidates.
 */
#ifndef COLONY_SWARM_ROUTE_H
#define COLONY_SWARM_ROUTE_H

#include <stdint.h>

#include "base/err.h"
#include "dht/ann.h"

#define ROUTE_DEFAULT_RTT_MS 50.0        /* a server never pinged */
#define ROUTE_DEFAULT_MS_PER_TOKEN 100.0 /* a server that announced no throughput */
#define ROUTE_BAN_BASE_MS 2000u          /* first ban */
#define ROUTE_BAN_MAX_MS 300000u         /* cap of the doubling */
#define ROUTE_MAX_LAYERS 65536           /* bound on b (matches WIRE_MAX_LAYER) */
#define ROUTE_REP_UNKNOWN 0.5            /* the score of a server nobody has reported on */
#define ROUTE_TIE_EPS 1e-3               /* weight of every term in a policy, besides its own */

enum route_prefer {
	ROUTE_PREFER_NONE = 0,    /* the ms cost (default) */
	ROUTE_PREFER_PRICE,       /* weights 1:0:0 */
	ROUTE_PREFER_SPEED,       /* 0:1:0 */
	ROUTE_PREFER_REP,         /* 0:0:1 */
	ROUTE_PREFER_WEIGHTS,     /* w_price:w_speed:w_rep as given */
};

/* One candidate server, as the caller knows it (from its DHT record and its
 * connection's measurements), plus the ban state route_ban keeps. */
typedef struct route_server {
	uint64_t id;               /* the caller's handle; unique among candidates */
	int layer_a, layer_b;      /* span [a, b) it serves */
	double rtt_ms;             /* measured round trip; < 0: unknown */
	double ms_per_token;       /* its compute time per token for its span; < 0: unknown */
	uint32_t free_sessions;    /* 0: at capacity, left out */
	uint64_t price;            /* micro-units per 1M tokens (as announced) */
	uint64_t banned_until_ms;  /* left out while now < this */
	uint32_t n_bans;           /* bans so far (the backoff exponent) */
	uint32_t n_timeouts;       /* of them: it stopped answering (stall timeout), for reputation */
	double rep;                /* reputation score in [0, 1] when rep_known */
	int rep_known;             /* 0: ROUTE_REP_UNKNOWN is used */
} route_server_t;

typedef struct route_cost {
	double default_rtt_ms;        /* for rtt_ms < 0 */
	double default_ms_per_token;  /* for ms_per_token < 0 */
	double lambda;                /* ms per unit of price */
	double hop_ms;                /* fixed cost of every hop (encode, send, schedule); 0 by default */
	uint64_t ban_base_ms;         /* first ban; doubles with each further ban */
	uint64_t ban_max_ms;          /* cap */
	int prefer;                   /* enum route_prefer */
	double w_price, w_speed, w_rep;  /* ROUTE_PREFER_WEIGHTS (the presets set them too) */
} route_cost_t;

/* One hop of a planned route. */
typedef struct route_hop {
	int index;                 /* into the candidates array given */
	uint64_t id;
	int layer_a, layer_b;
	double cost;               /* this edge's cost */
} route_hop_t;

/* The defaults above, lambda 0. */
void route_cost_default(route_cost_t *c);

/* Fills a candidate from a shard record: span, price, free sessions, and
 * ms_per_token = 1000 / (throughput_milli / 1000) for its span (unknown when
 * 0). rtt_ms < 0 means unmeasured. Ban state is zeroed. */
void route_server_from_ann(route_server_t *s, uint64_t id, const ann_t *a, double rtt_ms);

/* Cost of one server's edge under c (ignores bans and capacity). With a
 * policy this is the mix above normalised by the server's own values (each
 * term 1 when nonzero); route_plan normalises over the candidates instead. */
double route_edge_cost(const route_server_t *s, const route_cost_t *c);

/* Sets c's policy from a name ("price", "speed", "reputation"; NULL or
 * "" for none) and/or weights "P:S:R" (three finite numbers >= 0, not all
 * 0; NULL or "" for the preset's). Weights without a name set
 * ROUTE_PREFER_WEIGHTS. ERR_INVAL with a message for anything else. */
int route_prefer_parse(route_cost_t *c, const char *name, const char *weights, err_msg_t *e) WUR;
/* "price", "speed", "reputation", "weights" or "none". */
const char *route_prefer_name(int prefer);

/* 1 if s can be used at now_ms (free session, not banned). */
int route_server_usable(const route_server_t *s, uint64_t now_ms);

/* Plans the cheapest chain covering [a, b) exactly (0 <= a < b <=
 * ROUTE_MAX_LAYERS) over srv[0..n). Writes the hops in layer order to
 * hops[0..cap) and their count to *n_hops; *total (may be NULL) gets the sum
 * of the edge costs. Errors:
 *   ERR_NOTFOUND  no chain: e names the layers no usable server covers
 *                 ("layers 2..3 ([2, 4)) are not served by any available
 *                 server (1 banned, 0 full)"), or, when every layer is
 *                 covered but the spans do not join, the boundary where
 *                 chains stop;
 *   ERR_FULL      the route needs more than cap hops;
 *   ERR_INVAL     a bad span or argument. */
int route_plan(const route_server_t *srv, int n, int a, int b, const route_cost_t *c, uint64_t now_ms,
	route_hop_t *hops, int cap, int *n_hops, double *total, err_msg_t *e) WUR;

/* Bans s from now_ms for base << n_bans ms (capped at c->ban_max_ms) and
 * counts the ban: 2 s, 4 s, 8 s, ... with the defaults. Returns the ban's
 * length in ms. */
uint64_t route_ban(route_server_t *s, uint64_t now_ms, const route_cost_t *c);

/* Forgets s's ban history (call after it served a session well), so its next
 * ban starts from the base again. Does not lift a running ban. */
void route_forgive(route_server_t *s);

#endif
