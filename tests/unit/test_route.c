/* test_route.c - route planning: exact routes on hand-made server sets
 * (cheapest wins, unknown RTT default, replicas, ties, capacity), gaps named
 * in the error, bans with exponential backoff and expiry, sub-routes;
 * policies (--prefer price|speed|reputation, weights) with reputation
 * scores from rep_scores on the numbers. */
#include "test.h"
#include "swarm/route.h"
#include "market/rep.h"

static route_server_t S(uint64_t id, int a, int b, double rtt, double ms)
{
	route_server_t s;
	memset(&s, 0, sizeof(s));
	s.id = id;
	s.layer_a = a;
	s.layer_b = b;
	s.rtt_ms = rtt;
	s.ms_per_token = ms;
	s.free_sessions = 4;
	return s;
}

static route_cost_t cost0(void)
{
	route_cost_t c;
	route_cost_default(&c);
	return c;
}

/* Plans [a, b) and compares the hop ids with want[0..nw). */
static int plan_is(const route_server_t *srv, int n, int a, int b, const route_cost_t *c, uint64_t now,
		   const uint64_t *want, int nw)
{
	route_hop_t h[16];
	int nh = -1;
	err_msg_t e;
	int rc = route_plan(srv, n, a, b, c, now, h, 16, &nh, NULL, &e);
	if (rc) {
		fprintf(stderr, "  route_plan: %s\n", e.msg);
		return 0;
	}
	int ok = nh == nw;
	for (int i = 0; ok && i < nh; i++)
		ok = h[i].id == want[i] && h[i].layer_a == srv[h[i].index].layer_a && h[i].id == srv[h[i].index].id;
	if (!ok) {
		fprintf(stderr, "  got %d hops:", nh);
		for (int i = 0; i < nh; i++)
			fprintf(stderr, " %llu[%d,%d)", (unsigned long long)h[i].id, h[i].layer_a, h[i].layer_b);
		fprintf(stderr, "\n");
	}
	return ok;
}

static void test_cheapest_chain(void)
{
	route_cost_t c = cost0();
	route_server_t s[] = {
		S(1, 0, 4, 10, 5),    /* 15 */
		S(2, 4, 8, 10, 5),    /* 15: 1+2 = 30 */
		S(3, 0, 8, 20, 15),   /* 35: one hop but dearer */
		S(4, 0, 2, 1, 1),     /* 2 */
		S(5, 2, 4, 1, 1),     /* 2: 4+5+2 = 19 */
		S(6, 3, 8, 0, 0),     /* starts mid-span: only usable after a hop ending at 3 (none) */
	};
	CHECK(plan_is(s, 6, 0, 8, &c, 0, (uint64_t[]){ 4, 5, 2 }, 3));
	double total = 0;
	route_hop_t h[4];
	int nh;
	err_msg_t e;
	CHECK_OK(route_plan(s, 6, 0, 8, &c, 0, h, 4, &nh, &total, &e));
	CHECK_NEAR(total, 2 + 2 + 15, 1e-9);
	CHECK_NEAR(h[2].cost, 15, 1e-9);
	/* Making the single server cheap wins over three hops. */
	s[2].rtt_ms = 1;
	s[2].ms_per_token = 1;
	CHECK(plan_is(s, 6, 0, 8, &c, 0, (uint64_t[]){ 3 }, 1));
	/* Price with lambda: 3 becomes dear. */
	s[2].price = 100;
	c.lambda = 1.0;
	CHECK(plan_is(s, 6, 0, 8, &c, 0, (uint64_t[]){ 4, 5, 2 }, 3));
	/* Too many hops for the room given. */
	CHECK_EQ_INT(route_plan(s, 6, 0, 8, &c, 0, h, 2, &nh, NULL, &e), ERR_FULL);
	CHECK_EQ_INT(route_plan(s, 6, 3, 3, &c, 0, h, 4, &nh, NULL, &e), ERR_INVAL);
}

static void test_unknown_rtt_default(void)
{
	route_cost_t c = cost0();
	c.default_rtt_ms = 50;
	route_server_t s[] = { S(1, 0, 2, -1, 1), S(2, 0, 2, 40, 1) };   /* unknown = 50 > 40 */
	CHECK(plan_is(s, 2, 0, 2, &c, 0, (uint64_t[]){ 2 }, 1));
	c.default_rtt_ms = 30;                                           /* now 30 < 40 */
	CHECK(plan_is(s, 2, 0, 2, &c, 0, (uint64_t[]){ 1 }, 1));
	/* Unknown compute time too. */
	s[0].rtt_ms = 40;
	s[0].ms_per_token = -1;
	c.default_ms_per_token = 0.5;
	CHECK(plan_is(s, 2, 0, 2, &c, 0, (uint64_t[]){ 1 }, 1));
	CHECK_NEAR(route_edge_cost(&s[0], &c), 40.5, 1e-12);
}

static void test_ties_are_deterministic(void)
{
	route_cost_t c = cost0();
	/* Equal cost: fewer hops wins, then the lower id, whatever the order. */
	route_server_t a[] = { S(9, 0, 2, 1, 1), S(3, 0, 2, 1, 1), S(7, 2, 4, 1, 1), S(5, 2, 4, 1, 1),
			       S(8, 0, 4, 2, 2) };
	CHECK(plan_is(a, 5, 0, 4, &c, 0, (uint64_t[]){ 8 }, 1));
	a[4].rtt_ms = 2.5;   /* now the 2-hop chains (4) are cheaper than 4.5 */
	CHECK(plan_is(a, 5, 0, 4, &c, 0, (uint64_t[]){ 3, 5 }, 2));
	route_server_t b[] = { a[3], a[2], a[4], a[1], a[0] };   /* reversed */
	CHECK(plan_is(b, 5, 0, 4, &c, 0, (uint64_t[]){ 3, 5 }, 2));
}

static void test_replicas_capacity(void)
{
	route_cost_t c = cost0();
	route_server_t s[] = { S(1, 0, 3, 5, 5), S(2, 0, 3, 6, 5), S(3, 3, 5, 5, 5) };
	CHECK(plan_is(s, 3, 0, 5, &c, 0, (uint64_t[]){ 1, 3 }, 2));
	s[0].free_sessions = 0;   /* full: the replica takes over */
	CHECK(plan_is(s, 3, 0, 5, &c, 0, (uint64_t[]){ 2, 3 }, 2));
}

static void test_gaps_named(void)
{
	route_cost_t c = cost0();
	route_server_t s[] = { S(1, 0, 2, 1, 1), S(2, 4, 5, 1, 1), S(3, 2, 4, 1, 1) };
	route_hop_t h[8];
	int nh = 7;
	err_msg_t e;
	s[2].free_sessions = 0;
	CHECK_EQ_INT(route_plan(s, 3, 0, 5, &c, 0, h, 8, &nh, NULL, &e), ERR_NOTFOUND);
	CHECK_EQ_INT(nh, 0);
	CHECK(strstr(e.msg, "layers 2..3 ([2, 4))") != NULL);
	CHECK(strstr(e.msg, "1 full") != NULL);
	/* Two holes. */
	CHECK_EQ_INT(route_plan(s, 2, 0, 8, &c, 0, h, 8, &nh, NULL, &e), ERR_NOTFOUND);
	CHECK(strstr(e.msg, "[2, 4), [5, 8)") != NULL);
	/* Every layer served, but spans overlap without joining. */
	route_server_t o[] = { S(1, 0, 3, 1, 1), S(2, 2, 5, 1, 1) };
	CHECK_EQ_INT(route_plan(o, 2, 0, 5, &c, 0, h, 8, &nh, NULL, &e), ERR_NOTFOUND);
	CHECK(strstr(e.msg, "boundary 3") != NULL);
	/* No candidates at all. */
	CHECK_EQ_INT(route_plan(NULL, 0, 0, 5, &c, 0, h, 8, &nh, NULL, &e), ERR_NOTFOUND);
	CHECK(strstr(e.msg, "layers 0..4") != NULL);
}

static void test_ban_backoff(void)
{
	route_cost_t c = cost0();
	c.ban_base_ms = 1000;
	c.ban_max_ms = 5000;
	route_server_t s[] = { S(1, 0, 2, 1, 1), S(2, 0, 2, 9, 9) };
	CHECK_EQ_INT(route_ban(&s[0], 100, &c), 1000);
	CHECK_EQ_INT(s[0].banned_until_ms, 1100);
	CHECK(plan_is(s, 2, 0, 2, &c, 1099, (uint64_t[]){ 2 }, 1));
	CHECK(plan_is(s, 2, 0, 2, &c, 1100, (uint64_t[]){ 1 }, 1));   /* expired */
	CHECK_EQ_INT(route_ban(&s[0], 2000, &c), 2000);                 /* doubled */
	CHECK(plan_is(s, 2, 0, 2, &c, 3999, (uint64_t[]){ 2 }, 1));
	CHECK(plan_is(s, 2, 0, 2, &c, 4000, (uint64_t[]){ 1 }, 1));
	CHECK_EQ_INT(route_ban(&s[0], 5000, &c), 4000);
	CHECK_EQ_INT(route_ban(&s[0], 9000, &c), 5000);                 /* capped */
	CHECK_EQ_INT(route_ban(&s[0], 14000, &c), 5000);
	CHECK_EQ_INT(s[0].n_bans, 5);
	/* Both banned: the error says so. */
	route_ban(&s[1], 14000, &c);
	route_hop_t h[2];
	int nh;
	err_msg_t e;
	CHECK_EQ_INT(route_plan(s, 2, 0, 2, &c, 14500, h, 2, &nh, NULL, &e), ERR_NOTFOUND);
	CHECK(strstr(e.msg, "2 banned") != NULL);
	route_forgive(&s[0]);
	CHECK_EQ_INT(route_ban(&s[0], 20000, &c), 1000);
}

static void test_sub_route(void)
{
	route_cost_t c = cost0();
	route_server_t s[] = {
		S(1, 0, 2, 1, 1), S(2, 2, 4, 1, 1), S(3, 4, 5, 1, 1),
		S(4, 2, 3, 5, 5), S(5, 3, 4, 5, 5),   /* a finer split of [2, 4) */
		S(6, 1, 4, 0, 0),                     /* overlaps the span's start: unusable for [2, 4) */
		S(7, 2, 5, 0, 0),                     /* runs past the span's end: unusable */
	};
	CHECK(plan_is(s, 7, 2, 4, &c, 0, (uint64_t[]){ 2 }, 1));
	route_ban(&s[1], 0, &c);
	CHECK(plan_is(s, 7, 2, 4, &c, 10, (uint64_t[]){ 4, 5 }, 2));
	s[4].free_sessions = 0;
	route_hop_t h[4];
	int nh;
	err_msg_t e;
	CHECK_EQ_INT(route_plan(s, 7, 2, 4, &c, 10, h, 4, &nh, NULL, &e), ERR_NOTFOUND);
	CHECK(strstr(e.msg, "layers 3..3 ([3, 4))") != NULL);
}

static void test_from_ann(void)
{
	ann_t a;
	memset(&a, 0, sizeof(a));
	a.kind = ANN_SHARD;
	a.layer_a = 3;
	a.layer_b = 7;
	a.throughput_milli = 50000;   /* 50 tokens/s -> 20 ms a token */
	a.free_sessions = 2;
	a.price = 11;
	route_server_t s;
	route_server_from_ann(&s, 42, &a, 3.5);
	CHECK_EQ_INT(s.id, 42);
	CHECK_EQ_INT(s.layer_a, 3);
	CHECK_EQ_INT(s.layer_b, 7);
	CHECK_NEAR(s.ms_per_token, 20.0, 1e-12);
	CHECK_NEAR(s.rtt_ms, 3.5, 0);
	CHECK_EQ_INT(s.price, 11);
	CHECK_EQ_INT(s.free_sessions, 2);
	a.throughput_milli = 0;
	route_server_from_ann(&s, 42, &a, -1);
	CHECK(s.ms_per_token < 0);
}

/* ---- policies */

static route_cost_t policy(const char *name, const char *w)
{
	route_cost_t c = cost0();
	err_msg_t e;
	if (route_prefer_parse(&c, name, w, &e) != 0)
		fprintf(stderr, "  route_prefer_parse: %s\n", e.msg);
	return c;
}

static void test_prefer_parse(void)
{
	route_cost_t c = cost0();
	err_msg_t e;
	REQUIRE(route_prefer_parse(&c, "price", NULL, &e) == 0);
	CHECK(c.prefer == ROUTE_PREFER_PRICE && c.w_price == 1 && c.w_speed == 0 && c.w_rep == 0);
	REQUIRE(route_prefer_parse(&c, NULL, "2:1:0.5", &e) == 0);
	CHECK(c.prefer == ROUTE_PREFER_WEIGHTS && c.w_price == 2 && c.w_speed == 1 && c.w_rep == 0.5);
	REQUIRE(route_prefer_parse(&c, "reputation", "0:1:3", &e) == 0);
	CHECK(c.prefer == ROUTE_PREFER_REP && c.w_speed == 1 && c.w_rep == 3);
	REQUIRE(route_prefer_parse(&c, NULL, NULL, &e) == 0);
	CHECK(c.prefer == ROUTE_PREFER_NONE);
	CHECK_EQ_INT(route_prefer_parse(&c, "cheap", NULL, &e), ERR_INVAL);
	CHECK(strstr(e.msg, "cheap") != NULL);
	CHECK_EQ_INT(route_prefer_parse(&c, NULL, "1:2", &e), ERR_INVAL);
	CHECK_EQ_INT(route_prefer_parse(&c, NULL, "1:2:3:4", &e), ERR_INVAL);
	CHECK_EQ_INT(route_prefer_parse(&c, NULL, "0:0:0", &e), ERR_INVAL);
	CHECK_EQ_INT(route_prefer_parse(&c, NULL, "-1:1:1", &e), ERR_INVAL);
	CHECK_EQ_INT(route_prefer_parse(&c, NULL, "nan:1:1", &e), ERR_INVAL);
	CHECK_EQ_INT(route_prefer_parse(&c, NULL, "1:x:1", &e), ERR_INVAL);
	CHECK(!strcmp(route_prefer_name(ROUTE_PREFER_SPEED), "speed"));
}

/* Two servers of the same span [0, 8): ids 1 (A) and 2 (B). */
static uint64_t pick(route_server_t *a, route_server_t *b, const route_cost_t *c)
{
	route_server_t s[2] = { *a, *b };
	route_hop_t h[4];
	int nh = 0;
	err_msg_t e;
	if (route_plan(s, 2, 0, 8, c, 0, h, 4, &nh, NULL, &e) != 0 || nh != 1)
		return 0;
	return h[0].id;
}

static void test_prefer_price_speed(void)
{
	route_server_t a = S(1, 0, 8, 10, 40), b = S(2, 0, 8, 10, 20);   /* B twice as fast */
	a.price = 100000;
	b.price = 300000;                                                 /* A a third of B's price */
	route_cost_t none = cost0(), pr = policy("price", NULL), sp = policy("speed", NULL);
	CHECK(pick(&a, &b, &none) == 2);        /* default: ms only, unchanged */
	CHECK(pick(&a, &b, &pr) == 1);          /* price: the cheaper */
	CHECK(pick(&a, &b, &sp) == 2);          /* speed: the faster */
	/* Weights trade them: 3 x price against speed. */
	route_cost_t w = policy(NULL, "3:1:0");
	CHECK(pick(&a, &b, &w) == 1);
	w = policy(NULL, "0.1:1:0");
	CHECK(pick(&a, &b, &w) == 2);
	/* Order of candidates does not matter. */
	CHECK(pick(&b, &a, &pr) == 1);
	/* Equal prices under "price": the speed tie-break picks the faster. */
	b.price = a.price;
	CHECK(pick(&a, &b, &pr) == 2);
	/* A price policy over a chain: two cheap hops vs one dear hop. */
	route_server_t s[3] = { S(1, 0, 4, 10, 10), S(2, 4, 8, 10, 10), S(3, 0, 8, 10, 10) };
	s[0].price = s[1].price = 100;
	s[2].price = 150;                       /* 150 < 100 + 100: the one hop */
	uint64_t want12[] = { 1, 2 }, want3[] = { 3 };
	CHECK(plan_is(s, 3, 0, 8, &pr, 0, want3, 1));
	s[2].price = 250;                       /* 250 > 200: the two hops */
	CHECK(plan_is(s, 3, 0, 8, &pr, 0, want12, 2));
}

/* The numbers: 10 honest buyers paid A 1,000,000 each and report
 * 20 good sessions; 50 Sybil buyers paid B nothing and report perfection.
 * Node 0 is self, 1 = A, 2 = B, 3..12 honest, 13..62 Sybils. */
static void test_prefer_reputation_sybil(void)
{
	enum { A = 1, B = 2, N = 63 };
	rep_report_t r[60];
	int k = 0;
	for (uint32_t i = 3; i < 13; i++)
		r[k++] = (rep_report_t){ i, A, { .sessions = 20, .tokens_served = 50000, .paid = 1000000, .latency_ms = 40 } };
	for (uint32_t i = 13; i < 63; i++)
		r[k++] = (rep_report_t){ i, B, { .sessions = 1000, .tokens_served = 1000000, .paid = 0 } };
	double score[N];
	err_msg_t e;
	REQUIRE(rep_scores(N, r, (size_t)k, NULL, score, &e) == 0);
	CHECK_NEAR(score[A], 1.0, 1e-9);
	CHECK(score[B] >= 0 && score[B] < 1e-9);
	CHECK(score[0] == -1.0);

	route_server_t a = S(1, 0, 8, 10, 20), b = S(2, 0, 8, 10, 20);
	a.price = b.price = 1000;
	a.rep = score[A];
	a.rep_known = 1;
	b.rep = score[B];
	b.rep_known = 1;
	route_cost_t rp = policy("reputation", NULL);
	CHECK(pick(&a, &b, &rp) == 1);
	CHECK(pick(&b, &a, &rp) == 1);
	/* Unknown reputation sits between: A beats it, it beats a bad one. */
	route_server_t u = b;
	u.rep_known = 0;
	CHECK(pick(&a, &u, &rp) == 1);
	CHECK(pick(&u, &b, &rp) == 2);
	/* Even with B twice as fast, reputation 1:1 with speed keeps A. */
	b.ms_per_token = 10;
	route_cost_t w = policy(NULL, "0:1:1");
	CHECK(pick(&a, &b, &w) == 1);
	/* And the Sybils paying 1 micro-unit each do not change that. */
	for (int i = 10; i < 60; i++)
		r[i].obs.paid = 1;
	REQUIRE(rep_scores(N, r, (size_t)k, NULL, score, &e) == 0);
	CHECK(score[B] > 0 && score[B] < 1e-3);
	/* Bad input. */
	rep_report_t bad = { 0, 99, { .paid = 1 } };
	CHECK_EQ_INT(rep_scores(N, &bad, 1, NULL, score, &e), ERR_INVAL);
	bad = (rep_report_t){ 0, 1, { .paid = -1 } };
	CHECK_EQ_INT(rep_scores(N, &bad, 1, NULL, score, &e), ERR_INVAL);
}

/* 20% failed sessions against 1%, same price and speed: the 1% provider
 * wins, from paid reports, and from self's own unpaid sessions alone. */
static void test_prefer_reputation_failures(void)
{
	enum { X = 1, Y = 2, N = 13 };
	rep_report_t r[22];
	int k = 0;
	for (uint32_t i = 3; i < 13; i++) {
		r[k++] = (rep_report_t){ i, X, { .sessions = 100, .failures = 20, .tokens_served = 100000, .paid = 1000000, .latency_ms = 50 } };
		r[k++] = (rep_report_t){ i, Y, { .sessions = 100, .failures = 1, .tokens_served = 100000, .paid = 1000000, .latency_ms = 50 } };
	}
	double score[N];
	err_msg_t e;
	REQUIRE(rep_scores(N, r, (size_t)k, NULL, score, &e) == 0);
	CHECK(score[Y] > score[X]);
	CHECK_NEAR(score[Y], 1.0, 1e-9);
	route_server_t x = S(1, 0, 8, 10, 20), y = S(2, 0, 8, 10, 20);
	x.price = y.price = 5000;
	x.rep = score[X];
	y.rep = score[Y];
	x.rep_known = y.rep_known = 1;
	route_cost_t rp = policy("reputation", NULL), w = policy(NULL, "1:1:1");
	CHECK(pick(&x, &y, &rp) == 2);
	CHECK(pick(&y, &x, &rp) == 2);
	CHECK(pick(&x, &y, &w) == 2);
	/* Self's own unpaid sessions only: local scores. */
	rep_report_t own[2] = {
		{ 0, X, { .sessions = 100, .failures = 20, .latency_ms = 50 } },
		{ 0, Y, { .sessions = 100, .failures = 1, .latency_ms = 50 } },
	};
	REQUIRE(rep_scores(N, own, 2, NULL, score, &e) == 0);
	CHECK_NEAR(score[X], rep_local_score(&own[0].obs, NULL), 1e-12);
	CHECK(score[Y] > score[X]);
	CHECK(score[3] == -1.0);
	x.rep = score[X];
	y.rep = score[Y];
	CHECK(pick(&x, &y, &rp) == 2);
	/* Without a policy the default cost ignores reputation (a tie on ms: lower id). */
	route_cost_t none = cost0();
	CHECK(pick(&x, &y, &none) == 1);
}

TEST_MAIN(test_cheapest_chain, test_unknown_rtt_default, test_ties_are_deterministic, test_replicas_capacity,
	  test_gaps_named, test_ban_backoff, test_sub_route, test_from_ann, test_prefer_parse, test_prefer_price_speed,
	  test_prefer_reputation_sybil, test_prefer_reputation_failures)
