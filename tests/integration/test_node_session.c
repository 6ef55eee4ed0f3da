/* test_node_session.c - a client drives shard sessions of real `colony node`
 * processes over Noise: two nodes serve layers [0,3) and [3,5) of
 * stories260K; the client embeds a prompt, sends the rows through both, and
 * gets bit for bit the hidden states of a local forward pass (F32 wire).
 * Then admission control, a wrong model id, and a node killed with SIGKILL
 * mid-session (the client sees the connection close, the other node goes on).
 * Built as an integration test: it starts the binary named by COLONY_BIN. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "infer/fwd.h"
#include "model/manifest.h"
#include "net/peer.h"

struct node_proc {
	pid_t pid;
	char home[128];
	int port;
};

static int start_node(struct node_proc *np, const char *model, const char *layers, const char *kvmem)
{
	snprintf(np->home, sizeof(np->home), "/tmp/colony-ns-%d-%s", (int)getpid(), layers);
	char log[200];
	snprintf(log, sizeof(log), "%s.log", np->home);
	unlink(log);
	np->pid = fork();
	if (np->pid == 0) {
		FILE *f = freopen(log, "w", stderr);
		(void)f;
		execl(getenv("COLONY_BIN"), "colony", "node", "--home", np->home, "--model", model, "--layers", layers,
		      "--kv-mem", kvmem, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		usleep(100000);
		FILE *f = fopen(log, "r");
		char line[512];
		while (f && fgets(line, sizeof(line), f)) {
			char *p = strstr(line, "transport 127.0.0.1:");
			if (p) {
				np->port = atoi(p + strlen("transport 127.0.0.1:"));
				fclose(f);
				return np->port > 0 ? 0 : -1;
			}
		}
		if (f)
			fclose(f);
	}
	return -1;
}

static void stop_node(struct node_proc *np, int sig)
{
	if (np->pid > 0) {
		kill(np->pid, sig);
		waitpid(np->pid, NULL, 0);
		np->pid = 0;
	}
}

struct client {
	ident_t *id;
	peer_net_t *net;
	peer_conn_t *conn[2];
	int ready, closed, got;
	wire_msg_t last;
	float out[64 * 64];
	int last_type;
	uint16_t last_code;
};

static struct client C;

static void on_state(peer_conn_t *c, enum peer_state st, const char *why, void *u)
{
	if (st == PEER_READY)
		C.ready++;
	if (st == PEER_CLOSED) {
		C.closed++;
		for (int i = 0; i < 2; i++)
			if (C.conn[i] == c)
				C.conn[i] = NULL;
	}
}

static void on_msg(peer_conn_t *c, const wire_msg_t *m, void *u)
{
	C.got++;
	C.last_type = m->type;
	if (m->type == WIRE_FORWARD_RESULT) {
		err_msg_t e;
		if (wire_hidden_decode(m->u.forward.enc, m->u.forward.data, m->u.forward.data_len, m->u.forward.n_tokens,
				       m->u.forward.dim, C.out, &e) != 0)
			C.last_type = -1;
	} else if (m->type == WIRE_OPEN_ERR || m->type == WIRE_ERROR) {
		C.last_code = m->u.error.code;
	}
}

static int wait_got(uv_loop_t *loop, int want)
{
	for (int i = 0; i < 5000 && C.got < want; i++) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	return C.got >= want;
}

static int send_open(int k, uint64_t sid, const uint8_t *mid, int a, int b, uint32_t max_len)
{
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_OPEN_SESSION;
	m.u.open.session_id = sid;
	memcpy(m.u.open.model_id, mid, 32);
	m.u.open.layer_a = (uint32_t)a;
	m.u.open.layer_b = (uint32_t)b;
	m.u.open.max_len = max_len;
	m.u.open.enc = WIRE_ENC_F32;
	m.u.open.kv_type = WIRE_KV_F32;
	err_msg_t e;
	return C.conn[k] ? peer_send(C.conn[k], &m, &e) : -1;
}

static int send_forward(int k, uint64_t sid, uint32_t start, uint32_t n, uint32_t dim, const float *x, uint8_t *buf)
{
	err_msg_t e;
	size_t len = wire_hidden_size(WIRE_ENC_F32, n, dim);
	if (wire_hidden_encode(WIRE_ENC_F32, x, n, dim, buf, len, &e) != 0)
		return -1;
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_FORWARD;
	m.u.forward.session_id = sid;
	m.u.forward.start_pos = start;
	m.u.forward.n_tokens = n;
	m.u.forward.dim = dim;
	m.u.forward.enc = WIRE_ENC_F32;
	m.u.forward.data = buf;
	m.u.forward.data_len = len;
	return C.conn[k] ? peer_send(C.conn[k], &m, &e) : -1;
}

static void test_two_node_chain(void)
{
	if (!getenv("COLONY_BIN"))
		SKIP("COLONY_BIN not set (run under ctest)");
	const char *mp = fixture_path("stories260K.gguf");
	gguf_t *g;
	model_t *m;
	err_msg_t e;
	REQUIRE(gguf_open(mp, &g, &e) == 0 && model_load(g, &m, &e) == 0);
	uint8_t mid[32];
	REQUIRE(manifest_model_id(g, NULL, mid, &e) == 0);
	int d = m->hp.n_embd;

	struct node_proc n0, n1;
	REQUIRE(start_node(&n0, mp, "0:3", "64M") == 0);
	REQUIRE(start_node(&n1, mp, "3:5", "24K") == 0);   /* 16 KiB per 32-position session: room for one */

	uv_loop_t loop;
	uv_loop_init(&loop);
	memset(&C, 0, sizeof(C));
	REQUIRE(ident_new(NULL, &C.id) == 0);
	peer_cfg_t pc;
	peer_cfg_default(&pc);
	pc.id = C.id;
	pc.on_state = on_state;
	pc.on_msg = on_msg;
	REQUIRE(peer_net_new(&loop, &pc, &C.net, &e) == 0);
	REQUIRE(peer_net_connect(C.net, "127.0.0.1", n0.port, NULL, &C.conn[0], &e) == 0);
	REQUIRE(peer_net_connect(C.net, "127.0.0.1", n1.port, NULL, &C.conn[1], &e) == 0);
	for (int i = 0; i < 3000 && C.ready < 2; i++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	REQUIRE(C.ready == 2);

	/* local reference: the whole range [0, 5) */
	int32_t toks[7] = { 1, 403, 407, 261, 378, 31, 200 };
	float ref[7 * 64], x[7 * 64];
	fwd_ctx_t *fc;
	fwd_state_t *st;
	REQUIRE(fwd_ctx_new(NULL, &fc) == 0 && fwd_state_new(m, 0, 5, 64, FWD_KV_F32, &st) == 0);
	REQUIRE(fwd_embed(m, toks, 7, ref, &e) == 0);
	memcpy(x, ref, sizeof(x));
	fwd_seg_t seg = { st, 7 };
	REQUIRE(fwd_forward(fc, m, &seg, 1, ref, &e) == 0);

	uint8_t *buf = malloc(wire_hidden_size(WIRE_ENC_F32, 64, 64));
	/* a wrong model id is refused */
	uint8_t bad[32];
	memcpy(bad, mid, 32);
	bad[0] ^= 1;
	REQUIRE(send_open(0, 9, bad, 0, 3, 64) == 0);
	REQUIRE(wait_got(&loop, 1));
	CHECK(C.last_type == WIRE_OPEN_ERR && C.last_code == WIRE_E_UNSUPPORTED);
	/* the chain: open both, forward through both */
	REQUIRE(send_open(0, 1, mid, 0, 3, 64) == 0 && send_open(1, 2, mid, 3, 5, 32) == 0);
	REQUIRE(wait_got(&loop, 3));
	CHECK(C.last_type == WIRE_OPEN_OK);
	/* admission: node 1 has room for one session of 32 positions only */
	REQUIRE(send_open(1, 3, mid, 3, 5, 32) == 0);
	REQUIRE(wait_got(&loop, 4));
	CHECK(C.last_type == WIRE_OPEN_ERR && C.last_code == WIRE_E_BUSY);
	REQUIRE(send_forward(0, 1, 0, 7, (uint32_t)d, x, buf) == 0);
	REQUIRE(wait_got(&loop, 5));
	REQUIRE(C.last_type == WIRE_FORWARD_RESULT);
	memcpy(x, C.out, sizeof(float) * 7 * (size_t)d);
	REQUIRE(send_forward(1, 2, 0, 7, (uint32_t)d, x, buf) == 0);
	REQUIRE(wait_got(&loop, 6));
	REQUIRE(C.last_type == WIRE_FORWARD_RESULT);
	CHECK(memcmp(C.out, ref, sizeof(float) * 7 * (size_t)d) == 0);

	/* SIGKILL node 1 mid-session: the client sees its connection close; node 0 still serves */
	stop_node(&n1, SIGKILL);
	for (int i = 0; i < 3000 && C.conn[1]; i++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	CHECK(C.conn[1] == NULL);
	/* sessions opened right after a node starts must survive its first
	 * idle-timeout ticks (the shard's clock starts with the node's) */
	for (int i = 0; i < 1500; i++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	float one[64];
	REQUIRE(fwd_embed(m, &toks[3], 1, one, &e) == 0);
	REQUIRE(send_forward(0, 1, 7, 1, (uint32_t)d, one, buf) == 0);
	REQUIRE(wait_got(&loop, 7));
	CHECK(C.last_type == WIRE_FORWARD_RESULT);

	/* thousands of opens: the node admits up to its session limit, refuses
	 * the rest with BUSY, stays up and keeps its memory bounded */
	char stp[64];
	snprintf(stp, sizeof(stp), "/proc/%d/status", (int)n0.pid);
	long rss0 = 0, rss1 = 0;
	FILE *sf = fopen(stp, "r");
	char ln[128];
	while (sf && fgets(ln, sizeof(ln), sf))
		if (!strncmp(ln, "VmRSS:", 6))
			rss0 = atol(ln + 6);
	if (sf)
		fclose(sf);
	int got0 = C.got;
	for (int i = 0; i < 2000; i++) {
		REQUIRE(send_open(0, 1000 + (uint64_t)i, mid, 0, 3, 64) == 0);
		if (i % 100 == 99) {
			REQUIRE(wait_got(&loop, got0 + i + 1));
		}
	}
	REQUIRE(wait_got(&loop, got0 + 2000));
	sf = fopen(stp, "r");
	while (sf && fgets(ln, sizeof(ln), sf))
		if (!strncmp(ln, "VmRSS:", 6))
			rss1 = atol(ln + 6);
	if (sf)
		fclose(sf);
	fprintf(stderr, "  2000 opens: node RSS %ld -> %ld KiB\n", rss0, rss1);
	CHECK(C.last_type == WIRE_OPEN_ERR && C.last_code == WIRE_E_BUSY);
	CHECK(rss1 - rss0 < 32 * 1024);
	CHECK(kill(n0.pid, 0) == 0);

	stop_node(&n0, SIGTERM);
	peer_net_close(C.net, NULL, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&loop) == 0);
	ident_free(C.id);
	free(buf);
	fwd_state_free(st);
	fwd_ctx_free(fc);
	model_free(m);
	gguf_free(g);
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s %s.log %s.log", n0.home, n1.home, n0.home, n1.home);
	CHECK(system(cmd) == 0);
}

TEST_MAIN(test_two_node_chain)
