/* test_sess.c - the client session over real shard servers connected by an
 * in-memory network (every message is encoded and decoded on the way):
 * a 3-hop chain reproduces local generation token for token and, with F32
 * hidden states, logit for logit; a server that dies, stalls or refuses at
 * chosen points is replaced by a replica with the same tokens and logits; a
 * span with no replica fails with an error naming the layers; hostile
 * replies count as that server failing. */
#include "test.h"
#include "infer/gen.h"
#include "model/manifest.h"
#include "swarm/sess.h"
#include "swarm/shard.h"

#define N_PREDICT 30
#define MAX_NODES 8
#define MAX_VOCAB 1024

/* ---- fixture: the model split the ways the tests need */

enum { SP_01, SP_23, SP_4, SP_2, SP_3, N_SPANS };   /* [0,2) [2,4) [4,5) [2,3) [3,4) */
static const int span_ab[N_SPANS][2] = { { 0, 2 }, { 2, 4 }, { 4, 5 }, { 2, 3 }, { 3, 4 } };

struct fx {
	gguf_t *g;
	model_t *whole;              /* local reference */
	model_t *client;             /* embedding + head, no layers */
	model_t *span[N_SPANS];
	uint8_t id[MANIFEST_ID_LEN];
	pool_t *pool;
	int n_vocab;
};

static void fx_open(struct fx *f)
{
	err_msg_t e;
	memset(f, 0, sizeof(*f));
	REQUIRE(gguf_open(fixture_path("stories260K.gguf"), &f->g, &e) == 0);
	REQUIRE(model_load(f->g, &f->whole, &e) == 0);
	REQUIRE(f->whole->hp.n_layer == 5);
	REQUIRE(f->whole->hp.n_vocab <= MAX_VOCAB);
	REQUIRE(model_load_range(f->g, 0, 0, 1, &f->client, &e) == 0);
	for (int i = 0; i < N_SPANS; i++)
		REQUIRE(model_load_range(f->g, span_ab[i][0], span_ab[i][1], 0, &f->span[i], &e) == 0);
	REQUIRE(manifest_model_id(f->g, NULL, f->id, &e) == 0);
	f->pool = pool_new(1);
	REQUIRE(f->pool);
	f->n_vocab = f->whole->hp.n_vocab;
}

static void fx_close(struct fx *f)
{
	pool_free(f->pool);
	for (int i = 0; i < N_SPANS; i++)
		model_free(f->span[i]);
	model_free(f->client);
	model_free(f->whole);
	gguf_free(f->g);
}

static const int32_t PROMPT[] = { 1, 403, 407, 261, 378, 6, 55, 200, 77, 13, 99, 5 };
#define N_PROMPT ((int)(sizeof(PROMPT) / sizeof(PROMPT[0])))

/* The local run: N_PREDICT greedy tokens and the logits that chose each. */
struct ref {
	int32_t tok[N_PREDICT];
	float logits[N_PREDICT][MAX_VOCAB];
};

static void ref_run(struct fx *f, struct ref *r)
{
	gen_opts_t o = { .n_ctx = 256, .kv = FWD_KV_F32, .n_batch = 512, .n_ranges = 1 };
	gen_t *g = NULL;
	err_msg_t e;
	REQUIRE(gen_new(f->whole, f->pool, &o, &g, &e) == 0);
	const float *lg = NULL;
	REQUIRE(gen_eval(g, PROMPT, N_PROMPT, &lg, NULL, &e) == 0);
	for (int i = 0; i < N_PREDICT; i++) {
		memcpy(r->logits[i], lg, sizeof(float) * (size_t)f->n_vocab);
		int best = 0;
		for (int v = 1; v < f->n_vocab; v++)
			if (lg[v] > lg[best])
				best = v;
		r->tok[i] = best;
		if (i + 1 < N_PREDICT)
			REQUIRE(gen_eval(g, &r->tok[i], 1, &lg, NULL, &e) == 0);
	}
	gen_free(g);
}

/* ---- the in-memory network */

enum node_kind { NODE_SHARD, NODE_HOSTILE };
enum fault { F_NONE, F_DROP, F_STALL };
enum hostile { H_OPEN_SID, H_RESULT_SID, H_SHAPE, H_NAN, H_TYPE, H_POSITIONS };

struct net;

struct node {
	struct net *net;
	uint64_t id;
	int kind;
	int span;
	shard_t *sh;
	int alive, stalled;
	int fault;                   /* what happens when a FORWARD reaches fault_pos */
	int fault_pos;
	int fault_start;             /* start_pos of the FORWARD that triggered it; -1 */
	int hostile;                 /* enum hostile */
	uint64_t sid;                /* hostile: the session it was opened with */
};

struct msg {
	struct msg *next;
	int to_client;
	int node;
	uint8_t *buf;
	size_t len;
};

struct net {
	struct fx *fx;
	struct node n[MAX_NODES];
	int nn;
	struct msg *head, *tail;
	sess_t *sess;
	uint64_t now;
	int bad;                     /* messages that failed to encode or decode */
	int done_calls, done_rc;
	char done_msg[600];
	const struct ref *ref;
	int check_logits;
	int tok_mismatch, logit_mismatch, n_tok;
};

static void enqueue(struct net *nt, int to_client, int node, const wire_msg_t *m)
{
	size_t cap = wire_encoded_size(m);
	err_msg_t e;
	struct msg *q = calloc(1, sizeof(*q));
	uint8_t *buf = malloc(cap ? cap : 1);
	if (!q || !buf || !cap || wire_encode(m, buf, cap, &q->len, &e) != 0) {
		nt->bad++;
		free(q);
		free(buf);
		return;
	}
	q->to_client = to_client;
	q->node = node;
	q->buf = buf;
	if (nt->tail)
		nt->tail->next = q;
	else
		nt->head = q;
	nt->tail = q;
}

/* Messages to or from node i vanish (its connection is gone). */
static void purge(struct net *nt, int i)
{
	struct msg **pp = &nt->head, *prev = NULL;
	while (*pp) {
		struct msg *q = *pp;
		if (q->node == i) {
			*pp = q->next;
			if (nt->tail == q)
				nt->tail = prev;
			free(q->buf);
			free(q);
		} else {
			prev = q;
			pp = &q->next;
		}
	}
}

static void on_send(void *user, uint64_t server, const wire_msg_t *m)
{
	struct net *nt = user;
	if (server >= (uint64_t)nt->nn || !nt->n[server].alive)
		return;
	enqueue(nt, 0, (int)server, m);
}

static void on_shard_reply(void *user, void *client, const wire_msg_t *m)
{
	struct node *nd = user;
	(void)client;
	if (nd->alive && !nd->stalled)
		enqueue(nd->net, 1, (int)nd->id, m);
}

static int on_token(void *user, int32_t tok, const float *logits, int n_vocab)
{
	struct net *nt = user;
	int i = nt->n_tok++;
	if (i >= N_PREDICT || tok != nt->ref->tok[i]) {
		nt->tok_mismatch++;
		return 0;
	}
	if (nt->check_logits && memcmp(logits, nt->ref->logits[i], sizeof(float) * (size_t)n_vocab) != 0)
		nt->logit_mismatch++;
	return 0;
}

static void on_done(void *user, int rc, const char *msg)
{
	struct net *nt = user;
	nt->done_calls++;
	nt->done_rc = rc;
	snprintf(nt->done_msg, sizeof(nt->done_msg), "%s", msg);
}

static void net_init(struct net *nt, struct fx *f, const struct ref *r)
{
	memset(nt, 0, sizeof(*nt));
	nt->fx = f;
	nt->ref = r;
	nt->now = 1000;
}

/* Adds a server over span sp (kv_mem 0: the default budget). Its RTT, and so
 * its rank in the route, is given to sess_go. */
static int add_node(struct net *nt, int kind, int sp, uint64_t kv_mem)
{
	int i = nt->nn++;
	struct node *nd = &nt->n[i];
	memset(nd, 0, sizeof(*nd));
	nd->net = nt;
	nd->id = (uint64_t)i;
	nd->kind = kind;
	nd->span = sp;
	nd->alive = 1;
	nd->fault_start = -1;
	if (kind == NODE_SHARD) {
		shard_cfg_t c;
		shard_cfg_default(&c);
		c.model = nt->fx->span[sp];
		c.layer_a = span_ab[sp][0];
		c.layer_b = span_ab[sp][1];
		memcpy(c.model_id, nt->fx->id, sizeof(nt->fx->id));
		if (kv_mem)
			c.kv_mem = kv_mem;
		c.pool = nt->fx->pool;
		c.reply = on_shard_reply;
		c.user = nd;
		err_msg_t e;
		REQUIRE(shard_new(&c, &nd->sh, &e) == 0);
	}
	nd->fault = F_NONE;
	return i;
}

static void net_close(struct net *nt)
{
	sess_free(nt->sess);
	for (int i = 0; i < nt->nn; i++)
		shard_free(nt->n[i].sh);
	while (nt->head) {
		struct msg *q = nt->head;
		nt->head = q->next;
		free(q->buf);
		free(q);
	}
}

/* A hostile server's answer to m. */
static void hostile_reply(struct net *nt, struct node *nd, const wire_msg_t *m)
{
	wire_msg_t r;
	memset(&r, 0, sizeof(r));
	static uint8_t data[WIRE_MAX_MSG];
	if (m->type == WIRE_OPEN_SESSION) {
		nd->sid = m->u.open.session_id;
		r.type = WIRE_OPEN_OK;
		r.u.open_ok.session_id = nd->sid + (nd->hostile == H_OPEN_SID);
		r.u.open_ok.max_len = m->u.open.max_len;
		enqueue(nt, 1, (int)nd->id, &r);
		return;
	}
	if (m->type != WIRE_FORWARD)
		return;
	const wire_forward_t *f = &m->u.forward;
	if (nd->hostile == H_TYPE) {
		r.type = WIRE_OPEN_SESSION;   /* a server never sends this to a client */
		r.u.open = (wire_open_t){ .session_id = nd->sid, .layer_a = 0, .layer_b = 2, .max_len = 8 };
		enqueue(nt, 1, (int)nd->id, &r);
		return;
	}
	r.type = WIRE_FORWARD_RESULT;
	r.u.forward = *f;
	uint32_t dim = f->dim;
	if (nd->hostile == H_RESULT_SID)
		r.u.forward.session_id = nd->sid ^ 0x5a5a;
	if (nd->hostile == H_POSITIONS)
		r.u.forward.start_pos = f->start_pos + 1;
	if (nd->hostile == H_SHAPE)
		dim = r.u.forward.dim = f->dim / 2;
	size_t len = wire_hidden_size(f->enc, f->n_tokens, dim);
	memcpy(data, f->data, len <= f->data_len ? len : f->data_len);
	if (nd->hostile == H_NAN) {
		float nan = NAN;
		memcpy(data + 4 * (f->n_tokens / 2), &nan, 4);   /* F32: one value */
	}
	r.u.forward.data = data;
	r.u.forward.data_len = len;
	enqueue(nt, 1, (int)nd->id, &r);
}

static void kill_node(struct net *nt, int i)
{
	nt->n[i].alive = 0;
	purge(nt, i);
	sess_on_server_lost(nt->sess, (uint64_t)i);
}

/* Delivers one message. */
static void deliver(struct net *nt, struct msg *q)
{
	wire_msg_t m;
	err_msg_t e;
	if (wire_decode(q->buf, q->len, &m, &e) != 0) {
		nt->bad++;
		return;
	}
	struct node *nd = &nt->n[q->node];
	if (q->to_client) {
		sess_on_msg(nt->sess, nd->id, &m);
		return;
	}
	if (!nd->alive || nd->stalled)
		return;
	if (m.type == WIRE_FORWARD && nd->fault != F_NONE &&
	    (int)(m.u.forward.start_pos + m.u.forward.n_tokens) > nd->fault_pos) {
		nd->fault_start = (int)m.u.forward.start_pos;
		if (nd->fault == F_STALL) {
			nd->stalled = 1;
		} else {
			kill_node(nt, q->node);
		}
		nd->fault = F_NONE;
		return;
	}
	if (nd->kind == NODE_HOSTILE)
		hostile_reply(nt, nd, &m);
	else if (shard_handle(nd->sh, nt, &m) != 0)
		nt->bad++;
}

/* Runs the network until the session ends (or a step limit). */
static void net_run(struct net *nt)
{
	for (int iter = 0; iter < 100000 && sess_state(nt->sess) == SESS_RUNNING; iter++) {
		int progress = 0;
		while (nt->head) {
			struct msg *q = nt->head;
			nt->head = q->next;
			if (!nt->head)
				nt->tail = NULL;
			deliver(nt, q);
			free(q->buf);
			free(q);
			progress = 1;
		}
		for (int i = 0; i < nt->nn; i++) {
			struct node *nd = &nt->n[i];
			if (nd->sh && nd->alive && !nd->stalled && shard_step(nd->sh))
				progress = 1;
		}
		if (progress) {
			nt->now += 1;
		} else {
			/* Idle: jump to the next deadline (a stalled server's timeout). */
			uint64_t t = sess_next_deadline(nt->sess);
			if (t == UINT64_MAX)
				break;
			nt->now = t > nt->now ? t : nt->now + 1;
		}
		sess_tick(nt->sess, nt->now);
	}
}

/* Creates the session over every node (RTT = rtt[i]) and starts it. */
static int sess_go(struct net *nt, const double *rtt, int enc, int max_rows, smp_chain_t *ch)
{
	sess_cfg_t c;
	sess_cfg_default(&c);
	c.model = nt->fx->client;
	c.pool = nt->fx->pool;
	memcpy(c.model_id, nt->fx->id, sizeof(nt->fx->id));
	c.enc = (uint8_t)enc;
	c.kv_type = WIRE_KV_F32;
	c.max_rows = max_rows;
	c.timeout_ms = 500;
	c.smp = ch;
	c.sid_seed = 12345;
	c.send = on_send;
	c.on_token = on_token;
	c.on_done = on_done;
	c.user = nt;
	err_msg_t e;
	if (sess_new(&c, &nt->sess, &e) != 0) {
		fprintf(stderr, "  sess_new: %s\n", e.msg);
		return 0;
	}
	for (int i = 0; i < nt->nn; i++) {
		route_server_t s;
		memset(&s, 0, sizeof(s));
		s.id = (uint64_t)i;
		s.layer_a = span_ab[nt->n[i].span][0];
		s.layer_b = span_ab[nt->n[i].span][1];
		s.rtt_ms = rtt[i];
		s.ms_per_token = 1;
		s.free_sessions = 8;
		if (sess_server_set(nt->sess, &s) != 0)
			return 0;
	}
	sess_tick(nt->sess, nt->now);
	int rc = sess_start(nt->sess, PROMPT, N_PROMPT, N_PREDICT, &e);
	if (rc != 0) {
		fprintf(stderr, "  sess_start: %s\n", e.msg);
		return 0;
	}
	return 1;
}

/* Delivers what is still queued (the CLOSE_SESSIONs of the end). */
static void net_drain(struct net *nt)
{
	while (nt->head) {
		struct msg *q = nt->head;
		nt->head = q->next;
		if (!nt->head)
			nt->tail = NULL;
		deliver(nt, q);
		free(q->buf);
		free(q);
	}
}

/* Every shard still up has freed every session. */
static int all_closed(struct net *nt)
{
	net_drain(nt);
	for (int i = 0; i < nt->nn; i++) {
		if (!nt->n[i].sh || !nt->n[i].alive || nt->n[i].stalled)
			continue;
		shard_stats_t st;
		shard_stats(nt->n[i].sh, &st);
		if (st.sessions) {
			fprintf(stderr, "  node %d still holds %d sessions\n", i, st.sessions);
			return 0;
		}
	}
	return 1;
}

static smp_chain_t *greedy(void)
{
	smp_chain_t *ch = smp_chain_new();
	if (ch && smp_chain_add(ch, smp_greedy_new()) != 0) {
		smp_chain_free(ch);
		return NULL;
	}
	return ch;
}

/* The route's servers, in layer order, as a string like "0,2,4". */
static const char *route_str(sess_t *s)
{
	static char buf[128];
	sess_hop_info_t h[16];
	int n = sess_route(s, h, 16);
	size_t len = 0;
	buf[0] = 0;
	for (int i = 0; i < n && i < 16; i++)
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%llu", i ? "," : "",
					(unsigned long long)h[i].server);
	return buf;
}

/* The standard swarm: [0,2) x2, [2,4) x2, [4,5) x1; the first of each is cheaper. */
static const double RTT5[] = { 1, 2, 1, 2, 1 };
static void swarm5(struct net *nt)
{
	add_node(nt, NODE_SHARD, SP_01, 0);
	add_node(nt, NODE_SHARD, SP_01, 0);
	add_node(nt, NODE_SHARD, SP_23, 0);
	add_node(nt, NODE_SHARD, SP_23, 0);
	add_node(nt, NODE_SHARD, SP_4, 0);
}

static struct fx FX;
static struct ref REF;
static int fx_ready;

static void need_fx(void)
{
	if (!fx_ready) {
		fx_open(&FX);
		ref_run(&FX, &REF);
		fx_ready = 1;
	}
}

/* A finished run matched the local one token for token (and logits). */
static int run_matches(struct net *nt)
{
	const char *msg = "";
	int ok = sess_state(nt->sess) == SESS_DONE && nt->done_calls == 1 && nt->done_rc == 0 &&
		 nt->n_tok == N_PREDICT && nt->tok_mismatch == 0 && nt->logit_mismatch == 0 && nt->bad == 0;
	if (!ok) {
		sess_error(nt->sess, &msg);
		fprintf(stderr, "  state %d, done %d rc %d (%s), %d tokens, %d token and %d logit mismatches, %d bad\n",
			sess_state(nt->sess), nt->done_calls, nt->done_rc, nt->done_msg, nt->n_tok, nt->tok_mismatch,
			nt->logit_mismatch, nt->bad);
	}
	int n = 0;
	const int32_t *t = sess_tokens(nt->sess, &n);
	for (int i = 0; ok && i < n; i++)
		ok = t[i] == REF.tok[i];
	return ok;
}

/* ---- tests */

static void test_max_rows(void)
{
	CHECK_EQ_INT(sess_max_rows(WIRE_ENC_F16, 4096), 127);
	CHECK_EQ_INT(sess_max_rows(WIRE_ENC_Q8, 33), 0);
	static const int encs[] = { WIRE_ENC_F32, WIRE_ENC_F16, WIRE_ENC_Q8 };
	static const uint32_t dims[] = { 64, 4096, 8192 };
	static uint8_t dummy[WIRE_MAX_MSG];
	for (int i = 0; i < 3; i++)
		for (int k = 0; k < 3; k++) {
			int n = sess_max_rows(encs[i], dims[k]);
			wire_msg_t m;
			memset(&m, 0, sizeof(m));
			m.type = WIRE_FORWARD;
			m.u.forward.n_tokens = (uint32_t)n;
			m.u.forward.dim = dims[k];
			m.u.forward.enc = (uint8_t)encs[i];
			m.u.forward.data = dummy;
			m.u.forward.data_len = wire_hidden_size(encs[i], (uint32_t)n, dims[k]);
			size_t sz = wire_encoded_size(&m);
			CHECK(n >= 1 && sz > 0 && sz <= WIRE_MAX_MSG);
			/* One more row would not fit (or is past the row limit). */
			size_t more = sz + wire_hidden_row_size(encs[i], dims[k]);
			CHECK(more > WIRE_MAX_MSG || n == WIRE_MAX_TOKENS);
		}
}

static void test_chain_equals_local(void)
{
	need_fx();
	/* F32 hidden states, the prompt in chunks of 5 rows: tokens and logits
	 * bit for bit. */
	struct net nt;
	net_init(&nt, &FX, &REF);
	swarm5(&nt);
	smp_chain_t *ch = greedy();
	REQUIRE(ch);
	nt.check_logits = 1;
	REQUIRE(sess_go(&nt, RTT5, WIRE_ENC_F32, 5, ch));
	CHECK(strcmp(route_str(nt.sess), "0,2,4") == 0);
	net_run(&nt);
	CHECK(run_matches(&nt));
	sess_stats_t st;
	sess_stats(nt.sess, &st);
	CHECK_EQ_INT(st.failovers, 0);
	CHECK_EQ_INT(st.rows_replayed, 0);
	/* Every position went through each of the 3 hops once. */
	CHECK_EQ_INT(st.rows_sent, 3 * (N_PROMPT + N_PREDICT - 1));
	CHECK(all_closed(&nt));
	net_close(&nt);
	smp_chain_free(ch);

	/* F16 hidden states with the default chunking: the same tokens. */
	net_init(&nt, &FX, &REF);
	swarm5(&nt);
	ch = greedy();
	REQUIRE(ch);
	REQUIRE(sess_go(&nt, RTT5, WIRE_ENC_F16, 0, ch));
	net_run(&nt);
	CHECK(run_matches(&nt));
	CHECK(all_closed(&nt));
	net_close(&nt);
	smp_chain_free(ch);
}

/* Kills (or stalls) node `victim` when a FORWARD covering position pos
 * reaches it; the run must match and show one failover at that point. */
static void fault_case(int victim, int pos, int fault, const char *route_after)
{
	struct net nt;
	net_init(&nt, &FX, &REF);
	swarm5(&nt);
	smp_chain_t *ch = greedy();
	REQUIRE(ch);
	nt.check_logits = 1;
	nt.n[victim].fault = fault;
	nt.n[victim].fault_pos = pos;
	REQUIRE(sess_go(&nt, RTT5, WIRE_ENC_F32, 4, ch));
	net_run(&nt);
	CHECK(run_matches(&nt));
	sess_stats_t st;
	sess_stats(nt.sess, &st);
	CHECK(nt.n[victim].fault_start >= 0);   /* the fault did happen */
	CHECK(nt.n[victim].fault_start <= pos);
	CHECK_EQ_INT(st.failovers, 1);
	/* The replica replayed what the lost hop had computed. */
	CHECK_EQ_INT(st.rows_replayed, nt.n[victim].fault_start);
	/* It happened where asked: while the prompt was in flight, or when the
	 * FORWARD carrying position pos arrived (pos + 1 positions embedded). */
	CHECK_EQ_INT(st.last_failover_pos, pos < N_PROMPT ? N_PROMPT : pos + 1);
	CHECK(strcmp(route_str(nt.sess), route_after) == 0);
	if (strcmp(route_str(nt.sess), route_after) != 0)
		fprintf(stderr, "  route %s, expected %s\n", route_str(nt.sess), route_after);
	const route_server_t *rs = sess_server_get(nt.sess, (uint64_t)victim);
	CHECK(rs && rs->n_bans == 1 && rs->banned_until_ms > 0);
	/* Reputation tells a stall (no answer in time) from other failures. */
	CHECK(rs && rs->n_timeouts == (fault == F_STALL ? 1u : 0u));
	CHECK(all_closed(&nt));
	net_close(&nt);
	smp_chain_free(ch);
}

static void test_failover_drop(void)
{
	need_fx();
	const int at[3] = { 5, N_PROMPT, N_PROMPT + N_PREDICT - 3 };   /* prompt, first token, near the end */
	for (int k = 0; k < 3; k++) {
		fprintf(stderr, "  drop node 0 at %d\n", at[k]);
		fault_case(0, at[k], F_DROP, "1,2,4");
		fprintf(stderr, "  drop node 2 at %d\n", at[k]);
		fault_case(2, at[k], F_DROP, "0,3,4");
	}
}

static void test_failover_stall(void)
{
	need_fx();
	fault_case(2, N_PROMPT + 10, F_STALL, "0,3,4");
	fault_case(0, 2, F_STALL, "1,2,4");
}

static void test_failover_resplit(void)
{
	need_fx();
	/* [2,4) dies; the only standbys split it as [2,3) + [3,4): the new inner
	 * boundary is rebuilt by the replay, and with F32 the logits stay equal. */
	struct net nt;
	net_init(&nt, &FX, &REF);
	add_node(&nt, NODE_SHARD, SP_01, 0);
	add_node(&nt, NODE_SHARD, SP_23, 0);
	add_node(&nt, NODE_SHARD, SP_4, 0);
	add_node(&nt, NODE_SHARD, SP_2, 0);
	add_node(&nt, NODE_SHARD, SP_3, 0);
	static const double rtt[] = { 1, 1, 1, 3, 3 };
	smp_chain_t *ch = greedy();
	REQUIRE(ch);
	nt.check_logits = 1;
	nt.n[1].fault = F_DROP;
	nt.n[1].fault_pos = N_PROMPT + 7;
	REQUIRE(sess_go(&nt, rtt, WIRE_ENC_F32, 4, ch));
	CHECK(strcmp(route_str(nt.sess), "0,1,2") == 0);
	net_run(&nt);
	CHECK(run_matches(&nt));
	CHECK(strcmp(route_str(nt.sess), "0,3,4,2") == 0);
	sess_stats_t st;
	sess_stats(nt.sess, &st);
	CHECK_EQ_INT(st.failovers, 1);
	CHECK(all_closed(&nt));
	net_close(&nt);
	smp_chain_free(ch);
}

static void test_no_replica(void)
{
	need_fx();
	struct net nt;
	net_init(&nt, &FX, &REF);
	swarm5(&nt);
	smp_chain_t *ch = greedy();
	REQUIRE(ch);
	nt.n[4].fault = F_DROP;
	nt.n[4].fault_pos = N_PROMPT + 3;
	REQUIRE(sess_go(&nt, RTT5, WIRE_ENC_F32, 0, ch));
	net_run(&nt);
	const char *msg = NULL;
	CHECK_EQ_INT(sess_state(nt.sess), SESS_FAILED);
	CHECK_EQ_INT(sess_error(nt.sess, &msg), ERR_NOTFOUND);
	CHECK_EQ_INT(nt.done_calls, 1);
	CHECK_EQ_INT(nt.done_rc, ERR_NOTFOUND);
	CHECK(msg && strstr(msg, "layers 4..4 ([4, 5))") != NULL);
	CHECK(strstr(nt.done_msg, "[4, 5)") != NULL);
	fprintf(stderr, "  error: %s\n", msg ? msg : "");
	/* The tokens before the failure were right: the FORWARD of position
	 * N_PROMPT + 3 carried the 4th token. */
	CHECK(nt.n_tok == 4 && nt.tok_mismatch == 0);
	/* The surviving hops were told to close. */
	CHECK(all_closed(&nt));
	net_close(&nt);
	smp_chain_free(ch);

	/* No candidates at all: sess_start says which layers. */
	net_init(&nt, &FX, &REF);
	ch = greedy();
	REQUIRE(ch);
	CHECK(!sess_go(&nt, RTT5, WIRE_ENC_F32, 0, ch));
	int32_t bad = 1 << 20;
	err_msg_t e;
	CHECK_EQ_INT(sess_start(nt.sess, PROMPT, N_PROMPT, 4, &e), ERR_NOTFOUND);
	CHECK(strstr(e.msg, "layers 0..4") != NULL);
	add_node(&nt, NODE_SHARD, SP_01, 0);
	route_server_t s = { .id = 0, .layer_a = 0, .layer_b = 5, .rtt_ms = 1, .free_sessions = 1 };
	CHECK_OK(sess_server_set(nt.sess, &s));
	CHECK_EQ_INT(sess_start(nt.sess, &bad, 1, 4, &e), ERR_INVAL);
	CHECK_EQ_INT(sess_state(nt.sess), SESS_IDLE);
	net_close(&nt);
	smp_chain_free(ch);
}

static void test_busy_routed_around(void)
{
	need_fx();
	/* Node 0 has no KV budget: OPEN_ERR (busy), and the replica serves. */
	struct net nt;
	net_init(&nt, &FX, &REF);
	add_node(&nt, NODE_SHARD, SP_01, 1);
	add_node(&nt, NODE_SHARD, SP_01, 0);
	add_node(&nt, NODE_SHARD, SP_23, 0);
	add_node(&nt, NODE_SHARD, SP_23, 0);
	add_node(&nt, NODE_SHARD, SP_4, 0);
	smp_chain_t *ch = greedy();
	REQUIRE(ch);
	nt.check_logits = 1;
	REQUIRE(sess_go(&nt, RTT5, WIRE_ENC_F32, 0, ch));
	net_run(&nt);
	CHECK(run_matches(&nt));
	CHECK(strcmp(route_str(nt.sess), "1,2,4") == 0);
	sess_stats_t st;
	sess_stats(nt.sess, &st);
	CHECK_EQ_INT(st.failovers, 1);
	CHECK_EQ_INT(st.rows_replayed, 0);
	CHECK(all_closed(&nt));
	net_close(&nt);
	smp_chain_free(ch);
}

static void test_hostile_server(void)
{
	need_fx();
	static const char *names[] = { "OPEN_OK wrong id", "result wrong id", "wrong dim", "NaN", "wrong type",
				       "wrong positions" };
	for (int h = H_OPEN_SID; h <= H_POSITIONS; h++) {
		fprintf(stderr, "  hostile: %s\n", names[h]);
		struct net nt;
		net_init(&nt, &FX, &REF);
		add_node(&nt, NODE_HOSTILE, SP_01, 0);   /* the cheapest [0,2) */
		add_node(&nt, NODE_SHARD, SP_01, 0);
		add_node(&nt, NODE_SHARD, SP_23, 0);
		add_node(&nt, NODE_SHARD, SP_4, 0);
		nt.n[0].hostile = h;
		static const double rtt[] = { 0.5, 2, 1, 1 };
		smp_chain_t *ch = greedy();
		REQUIRE(ch);
		nt.check_logits = 1;
		REQUIRE(sess_go(&nt, rtt, WIRE_ENC_F32, 0, ch));
		CHECK(strcmp(route_str(nt.sess), "0,2,3") == 0);
		net_run(&nt);
		CHECK(run_matches(&nt));
		CHECK(strcmp(route_str(nt.sess), "1,2,3") == 0);
		sess_stats_t st;
		sess_stats(nt.sess, &st);
		CHECK_EQ_INT(st.failovers, 1);
		CHECK(all_closed(&nt));
		net_close(&nt);
		smp_chain_free(ch);
	}
}

static void test_zz_cleanup(void)
{
	if (fx_ready)
		fx_close(&FX);
	fx_ready = 0;
}

TEST_MAIN(test_max_rows, test_chain_equals_local, test_failover_drop, test_failover_stall, test_failover_resplit,
	  test_no_replica, test_busy_routed_around, test_hostile_server, test_zz_cleanup)
