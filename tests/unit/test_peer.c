/* test_peer.c - encrypted connections on a real loop over 127.0.0.1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test.h"
#include "net/peer.h"

struct side {
	peer_net_t *net;
	ident_t *id;
	int ready, closed, msgs;
	peer_conn_t *last;
	char last_why[160];
	uint64_t last_session;
};

static void on_state(peer_conn_t *c, enum peer_state st, const char *why, void *user)
{
	struct side *s = user;
	if (st == PEER_READY) {
		s->ready++;
		s->last = c;
	} else if (st == PEER_CLOSED) {
		s->closed++;
		snprintf(s->last_why, sizeof(s->last_why), "%s", why);
		if (s->last == c)
			s->last = NULL;
	}
}

static void on_msg(peer_conn_t *c, const wire_msg_t *m, void *user)
{
	struct side *s = user;
	s->msgs++;
	if (m->type == WIRE_CLOSE_SESSION)
		s->last_session = m->u.close.session_id;
}

static void side_init(struct side *s, uv_loop_t *loop, const char *network, peer_cfg_t *base)
{
	memset(s, 0, sizeof(*s));
	REQUIRE(ident_new(NULL, &s->id) == 0);
	peer_cfg_t cfg;
	if (base)
		cfg = *base;
	else
		peer_cfg_default(&cfg);
	cfg.id = s->id;
	cfg.network = network;
	cfg.on_state = on_state;
	cfg.on_msg = on_msg;
	cfg.user = s;
	err_msg_t e;
	REQUIRE(peer_net_new(loop, &cfg, &s->net, &e) == 0);
}

static int closed_nets;
static void net_done(void *arg) { closed_nets++; }

static void side_close(struct side *s, uv_loop_t *loop)
{
	int before = closed_nets;
	peer_net_close(s->net, net_done, NULL);
	while (closed_nets == before)
		uv_run(loop, UV_RUN_ONCE);
	ident_free(s->id);
}

/* Runs the loop until *flag >= want or ms pass. */
static int run_until(uv_loop_t *loop, volatile int *flag, int want, int ms)
{
	uint64_t end = uv_now(loop) + (uint64_t)ms;
	while (*flag < want && uv_now(loop) < end) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
		uv_update_time(loop);
	}
	return *flag >= want;
}

static void run_for(uv_loop_t *loop, int ms)
{
	int never = 0;
	run_until(loop, &never, 1, ms);
}

static void test_handshake_and_messages(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct side a, b;
	peer_cfg_t cfg;
	peer_cfg_default(&cfg);
	cfg.ping_ms = 100;
	side_init(&a, &loop, "test-net", &cfg);
	side_init(&b, &loop, "test-net", &cfg);
	err_msg_t e;
	int port = 0;
	REQUIRE(peer_net_listen(a.net, "127.0.0.1", 0, &port, &e) == 0);
	REQUIRE(port > 0);
	peer_conn_t *c;
	REQUIRE(peer_net_connect(b.net, "127.0.0.1", port, ident_pub(a.id), &c, &e) == 0);
	REQUIRE(run_until(&loop, &b.ready, 1, 3000));
	REQUIRE(run_until(&loop, &a.ready, 1, 3000));
	CHECK(memcmp(peer_conn_id(b.last), ident_pub(a.id), IDENT_PUBLEN) == 0);
	CHECK(memcmp(peer_conn_id(a.last), ident_pub(b.id), IDENT_PUBLEN) == 0);
	CHECK(strcmp(peer_conn_hello(a.last)->network, "test-net") == 0);

	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_CLOSE_SESSION;
	m.u.close.session_id = 0x1122334455667788ull;
	CHECK(peer_send(b.last, &m, &e) == 0);
	CHECK(run_until(&loop, &a.msgs, 1, 2000));
	CHECK(a.last_session == 0x1122334455667788ull);

	/* keepalive gives an RTT; a probe gives a throughput */
	run_for(&loop, 400);
	peer_stats_t st;
	peer_conn_stats(b.last, &st);
	CHECK(st.rtt_ms >= 0 && st.rtt_ms < 1000);
	CHECK(peer_probe(b.last, 256 * 1024) == 0);
	run_for(&loop, 300);
	peer_conn_stats(b.last, &st);
	fprintf(stderr, "  rtt %.3f ms, probe %.1f MB/s\n", st.rtt_ms, st.throughput_mbs);
	CHECK(st.throughput_mbs > 0);

	side_close(&b, &loop);
	CHECK(run_until(&loop, &a.closed, 1, 2000));
	side_close(&a, &loop);
	CHECK(uv_loop_close(&loop) == 0);
}

static void test_wrong_peer_and_network(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct side a, b, other;
	side_init(&a, &loop, "net-one", NULL);
	side_init(&b, &loop, "net-one", NULL);
	side_init(&other, &loop, "net-two", NULL);
	err_msg_t e;
	int port;
	REQUIRE(peer_net_listen(a.net, "127.0.0.1", 0, &port, &e) == 0);
	/* expecting another node id: refused */
	REQUIRE(peer_net_connect(b.net, "127.0.0.1", port, ident_pub(other.id), NULL, &e) == 0);
	CHECK(run_until(&loop, &b.closed, 1, 3000));
	CHECK(b.ready == 0);
	/* another network: the prologue differs, the handshake fails */
	REQUIRE(peer_net_connect(other.net, "127.0.0.1", port, NULL, NULL, &e) == 0);
	CHECK(run_until(&loop, &other.closed, 1, 3000));
	CHECK(other.ready == 0 && a.ready == 0);
	/* and a good one still works */
	REQUIRE(peer_net_connect(b.net, "127.0.0.1", port, NULL, NULL, &e) == 0);
	CHECK(run_until(&loop, &b.ready, 1, 3000));
	side_close(&b, &loop);
	side_close(&other, &loop);
	side_close(&a, &loop);
	CHECK(uv_loop_close(&loop) == 0);
}

static int raw_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Garbage, truncated handshakes and floods are cut off; others keep working. */
static void test_hostile_clients(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	peer_cfg_t cfg;
	peer_cfg_default(&cfg);
	cfg.handshake_ms = 300;
	cfg.max_per_addr = 4;
	struct side a, b;
	side_init(&a, &loop, "n", &cfg);
	side_init(&b, &loop, "n", &cfg);
	err_msg_t e;
	int port;
	REQUIRE(peer_net_listen(a.net, "127.0.0.1", 0, &port, &e) == 0);
	/* random bytes */
	int g = raw_connect(port);
	REQUIRE(g >= 0);
	uint8_t junk[300];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	CHECK(write(g, junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	/* a truncated handshake: a valid length prefix, then silence */
	int t = raw_connect(port);
	uint8_t part[10] = { 32, 0, 1, 2, 3 };
	CHECK(write(t, part, sizeof(part)) == (ssize_t)sizeof(part));
	/* an oversized length prefix */
	int o = raw_connect(port);
	uint8_t big[2] = { 0xff, 0xff };
	CHECK(write(o, big, 2) == 2);
	run_for(&loop, 700);
	CHECK_EQ_INT(peer_net_count(a.net), 0);
	char buf[16];
	CHECK(read(g, buf, sizeof(buf)) <= 0);
	close(g), close(t), close(o);
	/* a flood of connections from one address: at most max_per_addr stay */
	int fds[12];
	for (int i = 0; i < 12; i++)
		fds[i] = raw_connect(port);
	run_for(&loop, 100);
	CHECK(peer_net_count(a.net) <= 4);
	/* a real peer still gets through once the flood times out */
	run_for(&loop, 600);
	for (int i = 0; i < 12; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	REQUIRE(peer_net_connect(b.net, "127.0.0.1", port, NULL, NULL, &e) == 0);
	CHECK(run_until(&loop, &a.ready, 1, 3000));
	side_close(&b, &loop);
	side_close(&a, &loop);
	CHECK(uv_loop_close(&loop) == 0);
}

/* A peer over its message rate is cut off. */
static void test_rate_limit(void)
{
	uv_loop_t loop;
	uv_loop_init(&loop);
	peer_cfg_t cfg;
	peer_cfg_default(&cfg);
	cfg.msgs_per_sec = 50;
	struct side a, b;
	side_init(&a, &loop, "n", &cfg);
	side_init(&b, &loop, "n", NULL);
	err_msg_t e;
	int port;
	REQUIRE(peer_net_listen(a.net, "127.0.0.1", 0, &port, &e) == 0);
	REQUIRE(peer_net_connect(b.net, "127.0.0.1", port, NULL, NULL, &e) == 0);
	REQUIRE(run_until(&loop, &b.ready, 1, 3000));
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_CLOSE_SESSION;
	for (int i = 0; i < 500 && b.last; i++)
		if (peer_send(b.last, &m, &e) != 0)
			break;
	CHECK(run_until(&loop, &a.closed, 1, 3000));
	CHECK(strstr(a.last_why, "rate") != NULL);
	side_close(&b, &loop);
	side_close(&a, &loop);
	CHECK(uv_loop_close(&loop) == 0);
}

TEST_MAIN(test_handshake_and_messages, test_wrong_peer_and_network, test_hostile_clients, test_rate_limit)
