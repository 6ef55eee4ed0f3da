/* bench_peer.c - the encrypted transport on loopback: bulk throughput of
 * FORWARD messages (MB/s), round-trip latency of a small message (us), and
 * memory per idle connection. Usage: bench_peer [n_idle_conns] */
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "net/peer.h"

struct side {
	peer_net_t *net;
	ident_t *id;
	int ready, msgs;
	peer_conn_t *last;
	uint64_t bytes;
};

static void on_state(peer_conn_t *c, enum peer_state st, const char *why, void *u)
{
	struct side *s = u;
	if (st == PEER_READY) {
		s->ready++;
		s->last = c;
	} else if (st == PEER_CLOSED && s->last == c) {
		fprintf(stderr, "connection closed: %s\n", why);
		s->last = NULL;
	}
}

static struct side *g_echo_to;

static void on_msg(peer_conn_t *c, const wire_msg_t *m, void *u)
{
	struct side *s = u;
	s->msgs++;
	if (m->type == WIRE_FORWARD)
		s->bytes += m->u.forward.data_len;
	if (m->type == WIRE_CLOSE_SESSION && s == g_echo_to) {
		err_msg_t e;
		if (peer_send(c, m, &e) != 0)
			fprintf(stderr, "echo: %s\n", e.msg);
	}
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			v = atol(line + 6);
	if (f)
		fclose(f);
	return v;
}

static void side_init(struct side *s, uv_loop_t *loop, uint32_t max_per_addr)
{
	memset(s, 0, sizeof(*s));
	if (ident_new(NULL, &s->id))
		exit(1);
	peer_cfg_t cfg;
	peer_cfg_default(&cfg);
	cfg.id = s->id;
	cfg.network = "bench";
	cfg.max_conns = 100000;
	cfg.max_per_addr = max_per_addr;
	cfg.accept_per_sec = 100000;
	cfg.msgs_per_sec = 1e9;
	cfg.bytes_per_sec = 1e12;
	cfg.ping_ms = 1000000;
	cfg.on_state = on_state;
	cfg.on_msg = on_msg;
	cfg.user = s;
	err_msg_t e;
	if (peer_net_new(loop, &cfg, &s->net, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		exit(1);
	}
}

static void run_until(uv_loop_t *loop, int *v, int want)
{
	while (*v < want)
		uv_run(loop, UV_RUN_ONCE);
}

/* Baseline: the same round trip over plain loopback TCP sockets, no loop,
 * no encryption, so the added latency of colony's transport can be told. */
static double raw_rtt_us(int rounds)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	socklen_t sl = sizeof(sa);
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1) || getsockname(ls, (struct sockaddr *)&sa, &sl))
		return -1;
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&sa, sizeof(sa)))
		return -1;
	int s = accept(ls, NULL, NULL);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	char buf[16] = "0123456789";
	double t0 = clock_sec();
	for (int i = 0; i < rounds; i++) {
		if (write(c, buf, 11) != 11 || read(s, buf, 11) != 11 || write(s, buf, 11) != 11 || read(c, buf, 11) != 11)
			return -1;
	}
	double dt = clock_sec() - t0;
	close(c), close(s), close(ls);
	return dt / rounds * 1e6;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	int n_idle = argc > 1 ? atoi(argv[1]) : 1000;
	uv_loop_t loop;
	uv_loop_init(&loop);
	struct side a, b;
	side_init(&a, &loop, 1000000);
	side_init(&b, &loop, 1000000);
	err_msg_t e;
	int port;
	if (peer_net_listen(a.net, "127.0.0.1", 0, &port, &e) || peer_net_connect(b.net, "127.0.0.1", port, NULL, NULL, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		return 1;
	}
	run_until(&loop, &b.ready, 1);
	run_until(&loop, &a.ready, 1);

	/* Bulk: FORWARD messages of 128 rows x 2048 f16 (512 KiB), as a shard sends. */
	size_t dlen = 128 * 2048 * 2;
	uint8_t *data = calloc(1, dlen);
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_FORWARD;
	m.u.forward.session_id = 1;
	m.u.forward.n_tokens = 128;
	m.u.forward.dim = 2048;
	m.u.forward.enc = WIRE_ENC_F16;
	m.u.forward.data = data;
	m.u.forward.data_len = dlen;
	int total = 2000;
	double t0 = clock_sec();
	int sent = 0;
	while (a.msgs < total) {
		if (!b.last)
			return 1;
		int r = 0;
		while (sent < total && (r = peer_send(b.last, &m, &e)) == 0)
			sent++;
		if (r && r != ERR_FULL) {
			fprintf(stderr, "send: %s\n", e.msg);
			return 1;
		}
		uv_run(&loop, UV_RUN_ONCE);
	}
	double dt = clock_sec() - t0;
	printf("bulk: %d FORWARD messages of %zu KiB in %.2f s: %.0f MB/s of payload (encrypt + send + receive + decrypt + decode, one core)\n",
	       total, dlen >> 10, dt, (double)a.bytes / dt / 1e6);

	/* Latency: a small message echoed back, one at a time. */
	g_echo_to = &a;
	wire_msg_t c;
	memset(&c, 0, sizeof(c));
	c.type = WIRE_CLOSE_SESSION;
	int rounds = 20000, got0 = b.msgs;
	t0 = clock_sec();
	for (int i = 0; i < rounds; i++) {
		if (peer_send(b.last, &c, &e))
			return 1;
		run_until(&loop, &b.msgs, got0 + i + 1);
	}
	dt = clock_sec() - t0;
	double raw = raw_rtt_us(rounds);
	printf("latency: %d round trips of a 11-byte message: %.1f us each (loopback TCP + Noise frames, both ends on one loop); "
	       "plain blocking TCP: %.1f us; added per round trip: %.1f us\n",
	       rounds, dt / rounds * 1e6, raw, dt / rounds * 1e6 - raw);

	/* Memory per idle connection: n_idle more clients, handshake done. */
	long r0 = rss_kib();
	size_t h0 = mallinfo2().uordblks;
	struct side cl;
	side_init(&cl, &loop, 1000000);
	for (int i = 0; i < n_idle; i++)
		if (peer_net_connect(cl.net, "127.0.0.1", port, NULL, NULL, &e)) {
			fprintf(stderr, "connect: %s\n", e.msg);
			return 1;
		}
	run_until(&loop, &cl.ready, n_idle);
	for (int i = 0; i < 50; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	long r1 = rss_kib();
	size_t h1 = mallinfo2().uordblks;
	printf("memory: %d idle connections (both ends in this process): %.2f KiB of heap per connection end "
	       "(RSS grew %.1f KiB per end; kernel socket buffers not counted)\n", n_idle,
	       (double)(h1 - h0) / 1024.0 / (2.0 * n_idle), (double)(r1 - r0) / (2.0 * n_idle));
	free(data);
	return 0;
}
