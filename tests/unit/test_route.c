/* test_route.c - route planning: exact routes on hand-made server sets
 * (cheapest wins, unknown RTT default, replicas, ties, capacity), gaps named
 * in the error, bans with exponential backoff and expiry, sub-routes. */
#include "test.h"
#include "swarm/route.h"

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

TEST_MAIN(test_cheapest_chain, test_unknown_rtt_default, test_ties_are_deterministic, test_replicas_capacity,
	  test_gaps_named, test_ban_backoff, test_sub_route, test_from_ann)
