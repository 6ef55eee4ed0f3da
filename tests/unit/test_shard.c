/* test_shard.c - the shard server: a 2-shard chain reproduces local
 * generation bit for bit, continuous batching gives each session its
 * single-session bits in one forward call, admission control by KV budget,
 * rewinds, idle timeouts, hostile requests, and paid sessions (terms, refusal
 * without a channel, bounded credit, forged vouchers, the voucher redeemed;
 * receipts answered by the buyer's code, tampered receipts refused, channels
 * checked at a real SQLite ledger). */
#include "test.h"
#include "infer/gen.h"
#include "market/ledger.h"
#include "model/manifest.h"
#include "swarm/client_pay.h"
#include "swarm/shard.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---- replies: every reply is encoded (so it must be a valid wire message)
 * and kept as bytes; tests decode them back. */

#define MAX_REPLIES 64

struct reply {
	void *client;
	uint8_t *buf;
	size_t len;
	wire_msg_t m;          /* decoded, views into buf */
};

struct box {
	struct reply r[MAX_REPLIES];
	int n;
	int bad;               /* replies that failed to encode or decode */
};

static void box_clear(struct box *b)
{
	for (int i = 0; i < b->n; i++)
		free(b->r[i].buf);
	b->n = 0;
}

static void on_reply(void *user, void *client, const wire_msg_t *m)
{
	struct box *b = user;
	if (b->n >= MAX_REPLIES) {
		b->bad++;
		return;
	}
	struct reply *r = &b->r[b->n];
	size_t cap = wire_encoded_size(m);
	err_msg_t e;
	r->buf = malloc(cap ? cap : 1);
	if (!cap || !r->buf || wire_encode(m, r->buf, cap, &r->len, &e) != 0 ||
	    wire_decode(r->buf, r->len, &r->m, &e) != 0) {
		free(r->buf);
		b->bad++;
		return;
	}
	r->client = client;
	b->n++;
}

/* ---- fixture */

struct fx {
	gguf_t *g;
	model_t *whole;        /* the client's: embedding, head, all layers */
	model_t *m[2];         /* shard models: [0, 3) and [3, 5) */
	uint8_t id[MANIFEST_ID_LEN];
	pool_t *pool;
	fwd_ctx_t *ctx;
};

static const int SPLIT = 3;

static void fx_open(struct fx *f)
{
	err_msg_t e;
	memset(f, 0, sizeof(*f));
	REQUIRE(gguf_open(fixture_path("stories260K.gguf"), &f->g, &e) == 0);
	REQUIRE(model_load(f->g, &f->whole, &e) == 0);
	REQUIRE(f->whole->hp.n_layer == 5);
	REQUIRE(model_load_range(f->g, 0, SPLIT, 0, &f->m[0], &e) == 0);
	REQUIRE(model_load_range(f->g, SPLIT, 5, 0, &f->m[1], &e) == 0);
	REQUIRE(manifest_model_id(f->g, NULL, f->id, &e) == 0);
	f->pool = pool_new(2);
	REQUIRE(f->pool);
	REQUIRE(fwd_ctx_new(f->pool, &f->ctx) == 0);
}

static void fx_close(struct fx *f)
{
	fwd_ctx_free(f->ctx);
	pool_free(f->pool);
	model_free(f->m[0]);
	model_free(f->m[1]);
	model_free(f->whole);
	gguf_free(f->g);
	memset(f, 0, sizeof(*f));
}

static shard_t *mk_shard(struct fx *f, int which, struct box *b, uint64_t kv_mem)
{
	shard_cfg_t c;
	shard_cfg_default(&c);
	c.model = f->m[which];
	c.layer_a = which ? SPLIT : 0;
	c.layer_b = which ? 5 : SPLIT;
	memcpy(c.model_id, f->id, sizeof(f->id));
	if (kv_mem)
		c.kv_mem = kv_mem;
	c.pool = f->pool;
	c.reply = on_reply;
	c.user = b;
	shard_t *s = NULL;
	err_msg_t e;
	if (shard_new(&c, &s, &e) != 0)
		fprintf(stderr, "  shard_new: %s\n", e.msg);
	return s;
}

static wire_msg_t open_msg(struct fx *f, int which, uint64_t sid, uint32_t max_len, int enc)
{
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_OPEN_SESSION;
	m.u.open.session_id = sid;
	memcpy(m.u.open.model_id, f->id, WIRE_MODEL_ID_LEN);
	m.u.open.layer_a = which ? SPLIT : 0;
	m.u.open.layer_b = which ? 5 : SPLIT;
	m.u.open.max_len = max_len;
	m.u.open.enc = (uint8_t)enc;
	m.u.open.kv_type = WIRE_KV_F32;
	return m;
}

static uint8_t wbuf[1 << 20];

/* A FORWARD of n rows of x (encoded in enc into wbuf). */
static wire_msg_t fwd_msg(uint64_t sid, uint32_t start, const float *x, uint32_t n, uint32_t dim, int enc)
{
	wire_msg_t m;
	err_msg_t e;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_FORWARD;
	m.u.forward.session_id = sid;
	m.u.forward.start_pos = start;
	m.u.forward.n_tokens = n;
	m.u.forward.dim = dim;
	m.u.forward.enc = (uint8_t)enc;
	size_t sz = wire_hidden_size(enc, n, dim);
	if (wire_hidden_encode(enc, x, n, dim, wbuf, sizeof(wbuf), &e) != 0)
		fprintf(stderr, "  encode: %s\n", e.msg);
	m.u.forward.data = wbuf;
	m.u.forward.data_len = sz;
	return m;
}

/* The only reply in b must be `type`; returns it. */
static const wire_msg_t *one_reply(struct box *b, int type)
{
	if (b->n != 1 || b->bad || b->r[0].m.type != type) {
		fprintf(stderr, "  expected one %s, got %d replies (%d bad)%s%s\n", wire_type_name(type), b->n, b->bad,
			b->n ? ", first " : "", b->n ? wire_type_name(b->r[0].m.type) : "");
		if (b->n && (b->r[0].m.type == WIRE_ERROR || b->r[0].m.type == WIRE_OPEN_ERR))
			fprintf(stderr, "  error %u: %s\n", b->r[0].m.u.error.code, b->r[0].m.u.error.msg);
		return NULL;
	}
	return &b->r[0].m;
}

static int open_ok(shard_t *s, struct box *b, void *client, const wire_msg_t *m)
{
	box_clear(b);
	if (shard_handle(s, client, m) != 0)
		return 0;
	const wire_msg_t *r = one_reply(b, WIRE_OPEN_OK);
	return r && r->u.open_ok.session_id == m->u.open.session_id && r->u.open_ok.max_len == m->u.open.max_len;
}

/* Sends one FORWARD, runs a step, decodes the FORWARD_RESULT into y. A
 * paid session's RECEIPT may come first (then it is b->r[0]). */
static int forward1(shard_t *s, struct box *b, void *client, uint64_t sid, uint32_t start, float *x, uint32_t n,
		    int dim, int enc, float *y)
{
	box_clear(b);
	wire_msg_t m = fwd_msg(sid, start, x, n, (uint32_t)dim, enc);
	if (shard_handle(s, client, &m) != 0 || b->n != 0)
		return 0;
	if (shard_step(s) != 1)
		return 0;
	int rcpt = b->n == 2 && b->r[0].m.type == WIRE_RECEIPT && b->r[0].m.u.pay.id == sid && b->r[0].client == client;
	const wire_msg_t *r;
	if (rcpt) {
		r = b->r[1].m.type == WIRE_FORWARD_RESULT ? &b->r[1].m : NULL;
	} else
		r = one_reply(b, WIRE_FORWARD_RESULT);
	err_msg_t e;
	if (!r || b->r[b->n - 1].client != client || r->u.forward.session_id != sid || r->u.forward.start_pos != start ||
	    r->u.forward.n_tokens != n || r->u.forward.dim != (uint32_t)dim || r->u.forward.enc != enc)
		return 0;
	return wire_hidden_decode(enc, r->u.forward.data, r->u.forward.data_len, n, (uint32_t)dim, y, &e) == 0;
}

/* The RECEIPT of the last forward1, decoded and checked against the
 * provider's key, or 0. */
static int got_receipt(struct box *b, const wallet_t *prov, receipt_t *r)
{
	err_msg_t e;
	return b->n == 2 && b->r[0].m.type == WIRE_RECEIPT &&
	       receipt_decode(b->r[0].m.u.pay.receipt, WIRE_RECEIPT_LEN, r, &e) == 0 &&
	       receipt_verify(r, wallet_pub(prov)) == 0;
}

/* Expects ERROR(code) then CLOSE_SESSION(sid, code). */
static int got_session_err(struct box *b, uint64_t sid, int code)
{
	int ok = b->n == 2 && !b->bad && b->r[0].m.type == WIRE_ERROR && b->r[0].m.u.error.code == code &&
		 b->r[1].m.type == WIRE_CLOSE_SESSION && b->r[1].m.u.close.session_id == sid &&
		 b->r[1].m.u.close.reason == code;
	if (!ok) {
		fprintf(stderr, "  expected ERROR %d + CLOSE: %d replies", code, b->n);
		if (b->n && b->r[0].m.type == WIRE_ERROR)
			fprintf(stderr, ", ERROR %u '%s'", b->r[0].m.u.error.code, b->r[0].m.u.error.msg);
		fprintf(stderr, "\n");
	}
	return ok;
}

static int got_open_err(struct box *b, uint64_t sid, int code)
{
	const wire_msg_t *r = one_reply(b, WIRE_OPEN_ERR);
	if (r && (r->u.error.code != code || r->u.error.session_id != sid))
		fprintf(stderr, "  OPEN_ERR %u '%s', expected %d\n", r->u.error.code, r->u.error.msg, code);
	return r && r->u.error.code == code && r->u.error.session_id == sid;
}

static int argmax(const float *v, int n)
{
	int k = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[k])
			k = i;
	return k;
}

static const int32_t PROMPT[] = { 1, 403, 407, 261, 378, 395, 286, 259 };
#define NPROMPT ((int)(sizeof(PROMPT) / sizeof(PROMPT[0])))
#define NSTEPS 20

/* ---- the chain reproduces local generation */

static void run_chain(int enc, int bitwise)
{
	struct fx f;
	fx_open(&f);
	int d = f.whole->hp.n_embd, nv = f.whole->hp.n_vocab;
	err_msg_t e;

	/* Local reference: prompt, then NSTEPS greedy tokens, logits of each. */
	gen_opts_t o = { .n_ctx = 64, .kv = FWD_KV_F32, .n_batch = 512, .n_ranges = 1 };
	gen_t *g = NULL;
	REQUIRE(gen_new(f.whole, f.pool, &o, &g, &e) == 0);
	float *ref = malloc(sizeof(float) * (size_t)nv * (NSTEPS + 1));
	int32_t ref_tok[NSTEPS + 1];
	const float *lg;
	REQUIRE(ref);
	REQUIRE(gen_eval(g, PROMPT, NPROMPT, &lg, NULL, &e) == 0);
	for (int s = 0;; s++) {
		memcpy(ref + (size_t)s * nv, lg, sizeof(float) * (size_t)nv);
		ref_tok[s] = argmax(lg, nv);
		if (s == NSTEPS)
			break;
		REQUIRE(gen_eval(g, &ref_tok[s], 1, &lg, NULL, &e) == 0);
	}
	gen_free(g);

	/* Through two shards. */
	struct box b[2];
	memset(b, 0, sizeof(b));
	shard_t *sh[2] = { mk_shard(&f, 0, &b[0], 0), mk_shard(&f, 1, &b[1], 0) };
	REQUIRE(sh[0] && sh[1]);
	int client;
	const uint64_t sid = 0x1234567890abcdefull;
	for (int k = 0; k < 2; k++) {
		wire_msg_t om = open_msg(&f, k, sid, 64, enc);
		REQUIRE(open_ok(sh[k], &b[k], &client, &om));
	}
	float *x = malloc(sizeof(float) * (size_t)d * NPROMPT), *y = malloc(sizeof(float) * (size_t)d * NPROMPT);
	float *logits = malloc(sizeof(float) * (size_t)nv);
	REQUIRE(x && y && logits);
	int32_t tok[NSTEPS + 1];
	int pos = 0, same_bits = 1, same_tok = 1;
	for (int s = 0; s <= NSTEPS; s++) {
		const int32_t *in = s == 0 ? PROMPT : &tok[s - 1];
		int n = s == 0 ? NPROMPT : 1;
		REQUIRE(fwd_embed(f.whole, in, n, x, &e) == 0);
		REQUIRE(forward1(sh[0], &b[0], &client, sid, (uint32_t)pos, x, (uint32_t)n, d, enc, y));
		REQUIRE(forward1(sh[1], &b[1], &client, sid, (uint32_t)pos, y, (uint32_t)n, d, enc, x));
		REQUIRE(fwd_head(f.ctx, f.whole, x + (size_t)(n - 1) * d, 1, logits, &e) == 0);
		tok[s] = argmax(logits, nv);
		if (memcmp(logits, ref + (size_t)s * nv, sizeof(float) * (size_t)nv) != 0)
			same_bits = 0;
		if (tok[s] != ref_tok[s])
			same_tok = 0;
		pos += n;
	}
	CHECK(same_tok);
	if (bitwise)
		CHECK(same_bits);
	for (int k = 0; k < 2; k++) {
		shard_stats_t st;
		shard_stats(sh[k], &st);
		CHECK_EQ_INT(st.steps, NSTEPS + 1);
		CHECK_EQ_INT(st.rows, NPROMPT + NSTEPS);
		shard_free(sh[k]);
		box_clear(&b[k]);
	}
	free(x);
	free(y);
	free(logits);
	free(ref);
	fx_close(&f);
}

static void test_chain_f32_bitwise(void) { run_chain(WIRE_ENC_F32, 1); }
static void test_chain_f16_tokens(void) { run_chain(WIRE_ENC_F16, 0); }
static void test_chain_q8_tokens(void) { run_chain(WIRE_ENC_Q8, 0); }

/* ---- continuous batching */

static void make_rows(struct fx *f, uint32_t seed, int n, float *x)
{
	int32_t t[16];
	err_msg_t e;
	for (int i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		t[i] = (int32_t)((seed >> 8) % (uint32_t)f->whole->hp.n_vocab);
	}
	if (fwd_embed(f->whole, t, n, x, &e) != 0)
		memset(x, 0, sizeof(float) * (size_t)n * f->whole->hp.n_embd);
}

static void test_batching(void)
{
	struct fx f;
	fx_open(&f);
	int d = f.whole->hp.n_embd;
	enum { NS = 3, ROUNDS = 5 };
	const int prompt_n[NS] = { 3, 7, 5 };
	/* rows[s][round]: the input rows of session s in that round. */
	static float in[NS][ROUNDS][8 * 64], solo[NS][ROUNDS][8 * 64], batched[NS][ROUNDS][8 * 64];
	REQUIRE(d == 64);
	for (int s = 0; s < NS; s++)
		for (int r = 0; r < ROUNDS; r++)
			make_rows(&f, 100 * s + r, r == 0 ? prompt_n[s] : 1, in[s][r]);

	struct box b;
	memset(&b, 0, sizeof(b));
	int client;
	/* One at a time, each session on its own. */
	shard_t *sh = mk_shard(&f, 0, &b, 0);
	REQUIRE(sh);
	for (int s = 0; s < NS; s++) {
		wire_msg_t om = open_msg(&f, 0, 10 + s, 32, WIRE_ENC_F32);
		REQUIRE(open_ok(sh, &b, &client, &om));
		int pos = 0;
		for (int r = 0; r < ROUNDS; r++) {
			int n = r == 0 ? prompt_n[s] : 1;
			REQUIRE(forward1(sh, &b, &client, 10 + s, (uint32_t)pos, in[s][r], (uint32_t)n, d, WIRE_ENC_F32,
					 solo[s][r]));
			pos += n;
		}
	}
	shard_stats_t st;
	shard_stats(sh, &st);
	CHECK_EQ_INT(st.batched_steps, 0);
	/* every round after each prompt was one row of one session, timed */
	CHECK_EQ_INT(st.tok_steps, NS * (ROUNDS - 1));
	CHECK(st.tok_ns > 0);
	shard_free(sh);

	/* All three queued together each round: one step, one forward call. */
	sh = mk_shard(&f, 0, &b, 0);
	REQUIRE(sh);
	for (int s = 0; s < NS; s++) {
		wire_msg_t om = open_msg(&f, 0, 10 + s, 32, WIRE_ENC_F32);
		REQUIRE(open_ok(sh, &b, &client, &om));
	}
	int pos[NS] = { 0 };
	for (int r = 0; r < ROUNDS; r++) {
		box_clear(&b);
		for (int s = 0; s < NS; s++) {
			int n = r == 0 ? prompt_n[s] : 1;
			wire_msg_t m = fwd_msg(10 + s, (uint32_t)pos[s], in[s][r], (uint32_t)n, (uint32_t)d, WIRE_ENC_F32);
			REQUIRE(shard_handle(sh, &client, &m) == 0);
			pos[s] += n;
		}
		CHECK_EQ_INT(b.n, 0);
		REQUIRE(shard_pending(sh));
		REQUIRE(shard_step(sh) == 1);
		CHECK(!shard_pending(sh));
		REQUIRE(b.n == NS);
		for (int k = 0; k < NS; k++) {
			const wire_msg_t *m = &b.r[k].m;
			REQUIRE(m->type == WIRE_FORWARD_RESULT);
			int s = (int)m->u.forward.session_id - 10;
			REQUIRE(s == k);   /* replies in arrival order */
			err_msg_t e;
			REQUIRE(wire_hidden_decode(m->u.forward.enc, m->u.forward.data, m->u.forward.data_len,
						   m->u.forward.n_tokens, (uint32_t)d, batched[s][r], &e) == 0);
		}
	}
	shard_stats(sh, &st);
	CHECK_EQ_INT(st.steps, ROUNDS);        /* one fwd_forward call per round */
	CHECK_EQ_INT(st.batched_steps, ROUNDS);
	CHECK_EQ_INT(st.max_batch, NS);
	CHECK_EQ_INT(st.tok_steps, 0);         /* batched steps are not one-row steps */
	CHECK(memcmp(solo, batched, sizeof(solo)) == 0);

	/* Two FORWARDs of one session queued together run in two steps, in order
	 * (at most one per session per step), alongside another session. */
	box_clear(&b);
	float y[8 * 64];
	wire_msg_t m = fwd_msg(10, (uint32_t)pos[0], in[1][1], 1, (uint32_t)d, WIRE_ENC_F32);
	REQUIRE(shard_handle(sh, &client, &m) == 0);
	m = fwd_msg(10, (uint32_t)pos[0] + 1, in[1][2], 1, (uint32_t)d, WIRE_ENC_F32);
	REQUIRE(shard_handle(sh, &client, &m) == 0);
	m = fwd_msg(11, (uint32_t)pos[1], in[2][1], 1, (uint32_t)d, WIRE_ENC_F32);
	REQUIRE(shard_handle(sh, &client, &m) == 0);
	CHECK_EQ_INT(shard_step(sh), 1);
	CHECK_EQ_INT(b.n, 2);
	CHECK_EQ_INT(shard_step(sh), 1);
	CHECK_EQ_INT(shard_step(sh), 0);
	REQUIRE(b.n == 3);
	CHECK(b.r[0].m.u.forward.session_id == 10 && b.r[0].m.u.forward.start_pos == (uint32_t)pos[0]);
	CHECK(b.r[1].m.u.forward.session_id == 11);
	CHECK(b.r[2].m.u.forward.session_id == 10 && b.r[2].m.u.forward.start_pos == (uint32_t)pos[0] + 1);
	(void)y;
	shard_free(sh);
	box_clear(&b);
	fx_close(&f);
}

/* A rewind re-computes a suffix with the same bits. */
static void test_rewind(void)
{
	struct fx f;
	fx_open(&f);
	int d = f.whole->hp.n_embd;
	struct box b;
	memset(&b, 0, sizeof(b));
	int client;
	shard_t *sh = mk_shard(&f, 1, &b, 0);
	REQUIRE(sh);
	wire_msg_t om = open_msg(&f, 1, 7, 16, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &client, &om));
	float x[6 * 64], y1[6 * 64], y2[6 * 64];
	make_rows(&f, 42, 6, x);
	REQUIRE(forward1(sh, &b, &client, 7, 0, x, 6, d, WIRE_ENC_F32, y1));
	REQUIRE(forward1(sh, &b, &client, 7, 2, x + 2 * d, 4, d, WIRE_ENC_F32, y2));
	CHECK(memcmp(y1 + 2 * d, y2, sizeof(float) * 4 * (size_t)d) == 0);
	/* A replay from 0 on the same session. */
	REQUIRE(forward1(sh, &b, &client, 7, 0, x, 6, d, WIRE_ENC_F32, y2));
	CHECK(memcmp(y1, y2, sizeof(float) * 6 * (size_t)d) == 0);
	shard_free(sh);
	box_clear(&b);
	fx_close(&f);
}

/* ---- admission control */

static void test_admission(void)
{
	struct fx f;
	fx_open(&f);
	struct box b;
	memset(&b, 0, sizeof(b));
	int client;
	uint64_t one = fwd_state_bytes_for(f.m[0], 0, SPLIT, 100, FWD_KV_F32);
	shard_t *sh = mk_shard(&f, 0, &b, 2 * one + one / 2);
	REQUIRE(sh);
	uint32_t fs;
	uint64_t fk;
	shard_free_capacity(sh, &fs, &fk);
	CHECK_EQ_INT(fk, 2 * one + one / 2);
	CHECK_EQ_INT(fs, SHARD_DEFAULT_MAX_SESSIONS);
	for (int i = 1; i <= 2; i++) {
		wire_msg_t om = open_msg(&f, 0, (uint64_t)i, 100, WIRE_ENC_F32);
		REQUIRE(open_ok(sh, &b, &client, &om));
	}
	shard_free_capacity(sh, &fs, &fk);
	CHECK_EQ_INT(fk, one / 2);
	CHECK_EQ_INT(fs, SHARD_DEFAULT_MAX_SESSIONS - 2);
	wire_msg_t om = open_msg(&f, 0, 3, 100, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &om) == 0);
	CHECK(got_open_err(&b, 3, WIRE_E_BUSY));
	if (b.n)
		CHECK(strstr(b.r[0].m.u.error.msg, "KV cache") != NULL);
	/* A smaller session still fits. */
	wire_msg_t small = open_msg(&f, 0, 4, 40, WIRE_ENC_F32);
	CHECK(open_ok(sh, &b, &client, &small));
	wire_msg_t cl;
	memset(&cl, 0, sizeof(cl));
	cl.type = WIRE_CLOSE_SESSION;
	cl.u.close.session_id = 4;
	box_clear(&b);
	CHECK(shard_handle(sh, &client, &cl) == 0);
	cl.u.close.session_id = 1;
	CHECK(shard_handle(sh, &client, &cl) == 0);
	CHECK_EQ_INT(b.n, 0);   /* CLOSE_SESSION has no reply */
	CHECK(open_ok(sh, &b, &client, &om));
	shard_free_capacity(sh, &fs, &fk);
	CHECK_EQ_INT(fk, one / 2);

	/* Session count limit, and a dropped client's sessions are freed. */
	shard_free(sh);
	shard_cfg_t c;
	shard_cfg_default(&c);
	c.model = f.m[0];
	c.layer_a = 0;
	c.layer_b = SPLIT;
	memcpy(c.model_id, f.id, sizeof(f.id));
	c.max_sessions = 2;
	c.reply = on_reply;
	c.user = &b;
	err_msg_t e;
	REQUIRE(shard_new(&c, &sh, &e) == 0);
	int other;
	wire_msg_t o1 = open_msg(&f, 0, 1, 16, WIRE_ENC_F32), o2 = open_msg(&f, 0, 2, 16, WIRE_ENC_F32);
	CHECK(open_ok(sh, &b, &client, &o1));
	CHECK(open_ok(sh, &b, &client, &o2));
	box_clear(&b);
	REQUIRE(shard_handle(sh, &other, &o1) == 0);
	CHECK(got_open_err(&b, 1, WIRE_E_BUSY));
	box_clear(&b);
	shard_drop_client(sh, &client);
	CHECK_EQ_INT(b.n, 0);
	shard_free_capacity(sh, &fs, &fk);
	CHECK_EQ_INT(fs, 2);
	CHECK(open_ok(sh, &b, &other, &o1));   /* same id, another client: its own session */

	/* Idle timeout: ERROR + CLOSE, capacity back. */
	shard_tick(sh, 1000);
	box_clear(&b);
	shard_tick(sh, 1000 + SHARD_DEFAULT_IDLE_MS);
	CHECK(got_session_err(&b, 1, WIRE_E_NO_SESSION));
	CHECK(b.n == 2 && b.r[0].client == &other);
	shard_free_capacity(sh, &fs, &fk);
	CHECK_EQ_INT(fs, 2);
	shard_free(sh);
	box_clear(&b);
	fx_close(&f);
}

/* ---- hostile requests */

static void test_hostile(void)
{
	struct fx f;
	fx_open(&f);
	int d = f.whole->hp.n_embd;
	struct box b;
	memset(&b, 0, sizeof(b));
	int alice, mallory;
	shard_t *sh = mk_shard(&f, 0, &b, 0);
	REQUIRE(sh);
	const uint64_t S = 77;
	wire_msg_t om = open_msg(&f, 0, S, 64, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &alice, &om));
	float x[8 * 64], y[8 * 64], ref[8 * 64];
	int pos = 0;
	/* Alice's session must keep working, with the bits of an undisturbed run. */
	make_rows(&f, 5, 4, x);
	REQUIRE(forward1(sh, &b, &alice, S, 0, x, 4, d, WIRE_ENC_F32, ref));
	pos = 4;
#define ALICE_OK() do { \
		make_rows(&f, 1000 + pos, 1, x); \
		CHECK(forward1(sh, &b, &alice, S, (uint32_t)pos, x, 1, d, WIRE_ENC_F32, y)); \
		pos++; \
	} while (0)

	wire_msg_t m;
	/* Wrong model id. */
	m = open_msg(&f, 0, 900, 64, WIRE_ENC_F32);
	m.u.open.model_id[5] ^= 1;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &mallory, &m) == 0);
	CHECK(got_open_err(&b, 900, WIRE_E_UNSUPPORTED));
	/* Wrong span (the other shard's, and one layer more). */
	m = open_msg(&f, 1, 901, 64, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &mallory, &m) == 0);
	CHECK(got_open_err(&b, 901, WIRE_E_BAD_REQUEST));
	m = open_msg(&f, 0, 901, 64, WIRE_ENC_F32);
	m.u.open.layer_b = SPLIT + 1;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &mallory, &m) == 0);
	CHECK(got_open_err(&b, 901, WIRE_E_BAD_REQUEST));
	/* max_len beyond the model's context; KV type not served. */
	m = open_msg(&f, 0, 902, (uint32_t)f.whole->hp.n_ctx_train + 1, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &mallory, &m) == 0);
	CHECK(got_open_err(&b, 902, WIRE_E_BAD_REQUEST));
	m = open_msg(&f, 0, 903, 64, WIRE_ENC_F32);
	m.u.open.kv_type = WIRE_KV_Q8_0;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &mallory, &m) == 0);
	CHECK(got_open_err(&b, 903, WIRE_E_UNSUPPORTED));
	/* Duplicate session id (same client). */
	m = open_msg(&f, 0, S, 64, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &alice, &m) == 0);
	CHECK(got_open_err(&b, S, WIRE_E_BAD_REQUEST));
	ALICE_OK();

	/* Unknown session. */
	make_rows(&f, 9, 1, x);
	m = fwd_msg(12345, 0, x, 1, (uint32_t)d, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &alice, &m) == 0);
	CHECK(got_session_err(&b, 12345, WIRE_E_NO_SESSION));
	/* Another client's session: cannot forward on it nor close it. */
	m = fwd_msg(S, (uint32_t)pos, x, 1, (uint32_t)d, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &mallory, &m) == 0);
	CHECK(got_session_err(&b, S, WIRE_E_NO_SESSION));
	CHECK(b.n == 2 && b.r[0].client == &mallory && b.r[1].client == &mallory);
	m.type = WIRE_CLOSE_SESSION;
	m.u.close.session_id = S;
	m.u.close.reason = 0;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &mallory, &m) == 0);
	CHECK_EQ_INT(b.n, 0);
	shard_drop_client(sh, &mallory);
	CHECK(!shard_pending(sh));
	ALICE_OK();

	/* Errors that end the offending session only: each on a fresh victim. */
	struct {
		const char *what;
		int code;
	} cases[] = {
		{ "gap in start_pos", WIRE_E_BAD_REQUEST }, { "past max_len", WIRE_E_BAD_REQUEST },
		{ "dim mismatch", WIRE_E_BAD_REQUEST },     { "truncated data", WIRE_E_PROTOCOL },
		{ "NaN", WIRE_E_BAD_REQUEST },              { "encoding mismatch", WIRE_E_BAD_REQUEST },
	};
	for (int k = 0; k < (int)(sizeof(cases) / sizeof(cases[0])); k++) {
		uint64_t v = 500 + (uint64_t)k;
		wire_msg_t ov = open_msg(&f, 0, v, 8, WIRE_ENC_F32);
		REQUIRE(open_ok(sh, &b, &alice, &ov));
		make_rows(&f, 77, 8, x);
		REQUIRE(forward1(sh, &b, &alice, v, 0, x, 2, d, WIRE_ENC_F32, y));
		switch (k) {
		case 0: m = fwd_msg(v, 3, x, 1, (uint32_t)d, WIRE_ENC_F32); break;
		case 1: m = fwd_msg(v, 2, x, 7, (uint32_t)d, WIRE_ENC_F32); break;   /* 2 + 7 > 8 */
		case 2: m = fwd_msg(v, 2, x, 2, 32, WIRE_ENC_F32); break;
		case 3: m = fwd_msg(v, 2, x, 1, (uint32_t)d, WIRE_ENC_F32); m.u.forward.data_len -= 3; break;
		case 4: {
			float nan = NAN;
			m = fwd_msg(v, 2, x, 1, (uint32_t)d, WIRE_ENC_F32);
			memcpy(wbuf + 40, &nan, 4);
			break;
		}
		case 5: m = fwd_msg(v, 2, x, 1, (uint32_t)d, WIRE_ENC_F16); break;
		}
		box_clear(&b);
		REQUIRE(shard_handle(sh, &alice, &m) == 0);
		if (!got_session_err(&b, v, cases[k].code))
			CHECK(!cases[k].what);
		CHECK(!shard_pending(sh));
		/* The victim is gone. */
		make_rows(&f, 78, 1, x);
		m = fwd_msg(v, 2, x, 1, (uint32_t)d, WIRE_ENC_F32);
		box_clear(&b);
		REQUIRE(shard_handle(sh, &alice, &m) == 0);
		CHECK(got_session_err(&b, v, WIRE_E_NO_SESSION));
		ALICE_OK();
	}
	/* Anything else is not the shard's. */
	m.type = WIRE_PING;
	CHECK(shard_handle(sh, &alice, &m) == ERR_INVAL);

	shard_stats_t st;
	shard_stats(sh, &st);
	CHECK_EQ_INT(st.sessions, 1);
	shard_free(sh);
	box_clear(&b);
	fx_close(&f);
#undef ALICE_OK
}

/* A session closed, or its client dropped, while its step runs is freed
 * when the step ends, and its result is not sent. */
static void test_close_during_step(void)
{
	struct fx f;
	fx_open(&f);
	int d = f.whole->hp.n_embd;
	struct box b;
	memset(&b, 0, sizeof(b));
	int c1, c2;
	shard_t *sh = mk_shard(&f, 0, &b, 0);
	REQUIRE(sh);
	wire_msg_t o1 = open_msg(&f, 0, 1, 8, WIRE_ENC_F32), o2 = open_msg(&f, 0, 2, 8, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &c1, &o1));
	REQUIRE(open_ok(sh, &b, &c2, &o2));
	float x[64];
	make_rows(&f, 3, 1, x);
	box_clear(&b);
	wire_msg_t m = fwd_msg(1, 0, x, 1, (uint32_t)d, WIRE_ENC_F32);
	REQUIRE(shard_handle(sh, &c1, &m) == 0);
	m = fwd_msg(2, 0, x, 1, (uint32_t)d, WIRE_ENC_F32);
	REQUIRE(shard_handle(sh, &c2, &m) == 0);
	REQUIRE(shard_step_begin(sh) == 1);
	CHECK_EQ_INT(shard_step_begin(sh), 0);   /* one step at a time */
	shard_drop_client(sh, &c1);
	shard_stats_t st;
	shard_stats(sh, &st);
	CHECK_EQ_INT(st.sessions, 2);            /* still held by the step */
	shard_step_run(sh);
	CHECK_EQ_INT(shard_step_end(sh), 0);
	REQUIRE(b.n == 1);
	CHECK(b.r[0].client == &c2 && b.r[0].m.type == WIRE_FORWARD_RESULT);
	shard_stats(sh, &st);
	CHECK_EQ_INT(st.sessions, 1);
	shard_free(sh);
	box_clear(&b);
	fx_close(&f);
}

/* ---- paid sessions (shard.h "Payments") */

struct settled {
	struct box *b;
	voucher_t v;
	int n;
};

static void on_settle(void *user, const voucher_t *v)
{
	struct settled *st = user;
	st->v = *v;
	st->n++;
}

/* reply callback sharing the user pointer with on_settle */
static void on_reply_settled(void *user, void *client, const wire_msg_t *m)
{
	on_reply(((struct settled *)user)->b, client, m);
}

static void test_paid(void)
{
	struct fx f;
	fx_open(&f);
	int d = f.whole->hp.n_embd;
	struct box b;
	memset(&b, 0, sizeof(b));
	struct settled st;
	memset(&st, 0, sizeof(st));
	st.b = &b;
	wallet_t *prov = NULL, *buyer = NULL, *other = NULL;
	REQUIRE(wallet_new(NULL, &prov) == 0 && wallet_new(NULL, &buyer) == 0 && wallet_new(NULL, &other) == 0);
	const uint32_t N = 4;   /* tokens per voucher */
	shard_cfg_t c;
	shard_cfg_default(&c);
	c.model = f.m[1];
	c.layer_a = SPLIT;
	c.layer_b = 5;
	memcpy(c.model_id, f.id, sizeof(f.id));
	c.pool = f.pool;
	c.reply = on_reply_settled;
	c.user = &st;
	c.pay.wallet = prov;
	c.pay.price_in = 1000000;     /* 1 per input token */
	c.pay.price_out = 3000000;    /* 3 per output token */
	c.pay.chunk = N;
	c.pay.require_payment = 1;
	c.pay.on_settle = on_settle;
	shard_t *sh = NULL;
	err_msg_t e;
	REQUIRE(shard_new(&c, &sh, &e) == 0);
	int client;

	/* The terms, as a client asks for them. */
	wire_msg_t q;
	memset(&q, 0, sizeof(q));
	q.type = WIRE_PAY_TERMS_REQ;
	q.u.pay.id = 99;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &q) == 0);
	const wire_msg_t *r = one_reply(&b, WIRE_PAY_TERMS);
	REQUIRE(r);
	CHECK(r->u.pay.id == 99 && r->u.pay.price_in == 1000000 && r->u.pay.price_out == 3000000 &&
	      r->u.pay.chunk == N && r->u.pay.flags == WIRE_PAY_REQUIRED);
	CHECK(memcmp(r->u.pay.wallet, wallet_pub(prov), WALLET_PUBLEN) == 0);

	/* Unpaid: refused. */
	wire_msg_t om = open_msg(&f, 1, 5, 32, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &om) == 0);
	CHECK(got_open_err(&b, 5, WIRE_E_PAYMENT));

	/* Wrong price: refused. */
	chan_terms_t t;
	memset(&t, 0, sizeof(t));
	memset(t.channel, 7, sizeof(t.channel));
	memcpy(t.buyer, wallet_pub(buyer), WALLET_PUBLEN);
	memcpy(t.provider, wallet_pub(prov), WALLET_PUBLEN);
	t.budget = 1000;
	t.expiry = (int64_t)time(NULL) + 3600;
	t.price_in = 1000000;
	t.price_out = 3000000;
	t.chunk = N;
	wire_msg_t po;
	memset(&po, 0, sizeof(po));
	po.type = WIRE_PAY_OPEN;
	po.u.pay.id = 6;
	memcpy(po.u.pay.channel, t.channel, 32);
	memcpy(po.u.pay.wallet, t.buyer, 32);
	po.u.pay.budget = t.budget;
	po.u.pay.expiry = t.expiry;
	po.u.pay.price_in = 1000000;
	po.u.pay.price_out = 2000000;
	po.u.pay.chunk = N;
	po.u.pay.n_prompt = 3;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &po) == 0);
	CHECK_EQ_INT(b.n, 0);
	om = open_msg(&f, 1, 6, 32, WIRE_ENC_F32);
	REQUIRE(shard_handle(sh, &client, &om) == 0);
	CHECK(got_open_err(&b, 6, WIRE_E_PAYMENT));

	/* The agreed terms: a paid session. 3 prompt positions, then 1 at a time. */
	po.u.pay.price_out = 3000000;
	po.u.pay.id = 8;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &po) == 0);
	om = open_msg(&f, 1, 8, 32, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &client, &om));
	chan_buyer_t cb;
	REQUIRE(chan_buyer_init(&cb, &t) == 0);
	float x[16 * 64], y[16 * 64];
	make_rows(&f, 3, 16, x);
	REQUIRE(forward1(sh, &b, &client, 8, 0, x, 3, d, WIRE_ENC_F32, y));   /* 3 in: within credit */
	CHECK_EQ_INT(b.n, 1);   /* no receipt before a whole chunk */
	REQUIRE(chan_buyer_count(&cb, 3, 0) == 0);
	REQUIRE(forward1(sh, &b, &client, 8, 3, x + 3 * d, 1, d, WIRE_ENC_F32, y));   /* 4th: still */
	REQUIRE(chan_buyer_count(&cb, 0, 1) == 0);
	/* The chunk is complete: its receipt came first, signed by the provider. */
	receipt_t rc;
	CHECK(got_receipt(&b, prov, &rc));
	CHECK(rc.seq == 1 && rc.in_tokens == 3 && rc.out_tokens == 1 && rc.amount == 6 && rc.price_in == 1000000 &&
	      rc.price_out == 3000000 && memcmp(rc.channel, t.channel, 32) == 0);
	/* The buyer pays for the 4 (3 in, 1 out: 3 + 3 = 6). */
	voucher_t v;
	REQUIRE(chan_buyer_voucher(&cb, buyer, (int64_t)time(NULL), NULL, &v, &e) == 0);
	CHECK(v.amount == 6);
	wire_msg_t vm;
	memset(&vm, 0, sizeof(vm));
	vm.type = WIRE_VOUCHER;
	vm.u.pay.id = 8;
	REQUIRE(voucher_encode(&v, vm.u.pay.voucher) == 0);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &vm) == 0);
	CHECK_EQ_INT(b.n, 0);
	/* Then it stops paying: N more tokens are served, not one more. */
	for (uint32_t i = 0; i < N; i++)
		REQUIRE(forward1(sh, &b, &client, 8, 4 + i, x + (4 + i) * d, 1, d, WIRE_ENC_F32, y));
	CHECK(got_receipt(&b, prov, &rc) && rc.seq == 2 && rc.in_tokens == 3 && rc.out_tokens == 5 && rc.amount == 18);
	wire_msg_t fm = fwd_msg(8, 4 + N, x + (4 + N) * d, 1, (uint32_t)d, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &fm) == 0);
	CHECK(got_session_err(&b, 8, WIRE_E_PAYMENT));
	CHECK(b.n >= 1 && strstr(b.r[0].m.u.error.msg, "payment required") != NULL);
	/* The session ended: the last voucher is what is redeemed. */
	CHECK_EQ_INT(st.n, 1);
	CHECK(st.v.seq == v.seq && st.v.amount == 6 && st.v.in_tokens == 3 && st.v.out_tokens == 1);

	/* A forged voucher (signed by another wallet) ends the session. */
	po.u.pay.id = 9;
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &po) == 0);
	om = open_msg(&f, 1, 9, 32, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &client, &om));
	REQUIRE(forward1(sh, &b, &client, 9, 0, x, 3, d, WIRE_ENC_F32, y));
	chan_buyer_t cf;
	REQUIRE(chan_buyer_init(&cf, &t) == 0);
	REQUIRE(chan_buyer_count(&cf, 3, 0) == 0);
	REQUIRE(chan_buyer_voucher(&cf, other, (int64_t)time(NULL), NULL, &v, &e) == 0);
	vm.u.pay.id = 9;
	REQUIRE(voucher_encode(&v, vm.u.pay.voucher) == 0);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &vm) == 0);
	CHECK(got_session_err(&b, 9, WIRE_E_PAYMENT));
	CHECK_EQ_INT(st.n, 1);   /* nothing accepted: nothing to redeem */

	shard_free(sh);
	box_clear(&b);
	wallet_free(prov);
	wallet_free(buyer);
	wallet_free(other);
	fx_close(&f);
}

/* A paid shard over [SPLIT, 5): 1 per input token, 3 per output token,
 * chunk N, payment required. */
static shard_t *mk_paid(struct fx *f, struct settled *st, const wallet_t *prov, uint32_t N, shard_verify_cb verify)
{
	shard_cfg_t c;
	shard_cfg_default(&c);
	c.model = f->m[1];
	c.layer_a = SPLIT;
	c.layer_b = 5;
	memcpy(c.model_id, f->id, sizeof(f->id));
	c.pool = f->pool;
	c.reply = on_reply_settled;
	c.user = st;
	c.pay.wallet = prov;
	c.pay.price_in = 1000000;
	c.pay.price_out = 3000000;
	c.pay.chunk = N;
	c.pay.require_payment = 1;
	c.pay.on_settle = on_settle;
	c.pay.verify = verify;
	shard_t *sh = NULL;
	err_msg_t e;
	REQUIRE(shard_new(&c, &sh, &e) == 0);
	return sh;
}

static wire_msg_t pay_open_msg(uint64_t sid, const chan_terms_t *t, uint32_t n_prompt)
{
	wire_msg_t po;
	memset(&po, 0, sizeof(po));
	po.type = WIRE_PAY_OPEN;
	po.u.pay.id = sid;
	memcpy(po.u.pay.channel, t->channel, 32);
	memcpy(po.u.pay.wallet, t->buyer, 32);
	po.u.pay.budget = t->budget;
	po.u.pay.expiry = t->expiry;
	po.u.pay.price_in = t->price_in;
	po.u.pay.price_out = t->price_out;
	po.u.pay.chunk = (uint32_t)t->chunk;
	po.u.pay.n_prompt = n_prompt;
	return po;
}

/* A buyer job of client_pay.c with one open channel per session id. */
static void buyer_job(cpay_job_t *pj, swarm_client_cfg_t *cc, const wallet_t *buyer, const chan_terms_t *t,
		      const uint64_t *sids, int n, int n_prompt)
{
	memset(cc, 0, sizeof(*cc));
	cc->pay_wallet = buyer;
	cpay_job_init(pj, NULL, cc, NULL, NULL, n_prompt);
	pj->chans = calloc((size_t)n, sizeof(cpay_chan_t));
	REQUIRE(pj->chans);
	pj->n_chans = pj->cap_chans = n;
	for (int i = 0; i < n; i++) {
		cpay_chan_t *ch = &pj->chans[i];
		ch->server = 1;
		ch->sid = sids[i];
		ch->state = CPAY_CH_OPEN;
		REQUIRE(chan_buyer_init(&ch->b, t) == 0);
	}
}

/* What the client does with the replies of one forward1: a RECEIPT goes to
 * the job, the result is counted (cpay_count), and a voucher it answers
 * with goes to the shard. Returns cpay_count's result (out: its message). */
static int buyer_step(shard_t *sh, struct box *b, void *client, cpay_job_t *pj, uint64_t sid, uint32_t start,
		      uint32_t n, wire_msg_t *out)
{
	for (int i = 0; i < b->n; i++)
		if (b->r[i].m.type == WIRE_RECEIPT)
			CHECK(cpay_receipt(pj, 1, &b->r[i].m.u.pay) == 1);
	int rc = cpay_count(pj, 1, sid, (int)start, (int)n, 0, out);
	if (rc == 1) {
		box_clear(b);
		CHECK(shard_handle(sh, client, out) == 0);
		CHECK_EQ_INT(b->n, 0);   /* accepted silently */
	}
	return rc;
}

/* Receipts end to end: the shard's receipts are answered by the buyer's
 * code (client_pay.c) with vouchers for exactly their counts; a receipt that
 * overcharges or is forged is refused, and nothing is paid for it. */
static void test_paid_receipts(void)
{
	struct fx f;
	fx_open(&f);
	int d = f.whole->hp.n_embd;
	struct box b;
	memset(&b, 0, sizeof(b));
	struct settled st;
	memset(&st, 0, sizeof(st));
	st.b = &b;
	wallet_t *prov = NULL, *buyer = NULL;
	REQUIRE(wallet_new(NULL, &prov) == 0 && wallet_new(NULL, &buyer) == 0);
	const uint32_t N = 4;
	shard_t *sh = mk_paid(&f, &st, prov, N, NULL);
	int client;
	chan_terms_t t;
	memset(&t, 0, sizeof(t));
	memset(t.channel, 9, sizeof(t.channel));
	memcpy(t.buyer, wallet_pub(buyer), WALLET_PUBLEN);
	memcpy(t.provider, wallet_pub(prov), WALLET_PUBLEN);
	t.budget = 1000;
	t.expiry = (int64_t)time(NULL) + 3600;
	t.price_in = 1000000;
	t.price_out = 3000000;
	t.chunk = N;
	const uint64_t sids[] = { 10, 11, 12 };
	cpay_job_t pj;
	swarm_client_cfg_t cc;
	buyer_job(&pj, &cc, buyer, &t, sids, 3, 3);
	float x[32 * 64], y[32 * 64];
	make_rows(&f, 5, 16, x);   /* 16 rows at most per call */
	make_rows(&f, 6, 4, x + 16 * d);
	wire_msg_t po, om, out;

	/* Session 10: 3 prompt rows then 15 one at a time; every 4th token
	 * brings a receipt, answered at once. */
	po = pay_open_msg(10, &t, 3);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &po) == 0);
	om = open_msg(&f, 1, 10, 32, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &client, &om));
	REQUIRE(forward1(sh, &b, &client, 10, 0, x, 3, d, WIRE_ENC_F32, y));
	CHECK_EQ_INT(buyer_step(sh, &b, &client, &pj, 10, 0, 3, &out), 0);
	int vouchers = 0;
	for (uint32_t p = 3; p < 18; p++) {
		REQUIRE(forward1(sh, &b, &client, 10, p, x + p * d, 1, d, WIRE_ENC_F32, y));
		int had = b.n == 2;
		int rc = buyer_step(sh, &b, &client, &pj, 10, p, 1, &out);
		CHECK_EQ_INT(rc, had);   /* a voucher exactly when a receipt came */
		vouchers += rc == 1;
	}
	CHECK_EQ_INT(vouchers, 4);
	CHECK_EQ_INT(pj.chans[0].receipts, 4);
	CHECK(pj.chans[0].b.paid_in == 3 && pj.chans[0].b.paid_out == 13 && pj.chans[0].b.paid == 42);
	/* The end: the tail (2 tokens) is paid from the buyer's count, then CLOSE. */
	CHECK_EQ_INT(cpay_count(&pj, 1, 10, 0, 0, 1, &out), 1);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &out) == 0);
	wire_msg_t cm;
	memset(&cm, 0, sizeof(cm));
	cm.type = WIRE_CLOSE_SESSION;
	cm.u.close.session_id = 10;
	REQUIRE(shard_handle(sh, &client, &cm) == 0);
	CHECK_EQ_INT(b.n, 0);
	CHECK_EQ_INT(st.n, 1);
	CHECK(st.v.seq == 5 && st.v.in_tokens == 3 && st.v.out_tokens == 15 && st.v.amount == 48);

	/* Session 11: the provider's receipt claims one token more than was
	 * delivered (validly signed): refused, the hop fails, no voucher. */
	po = pay_open_msg(11, &t, 3);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &po) == 0);
	om = open_msg(&f, 1, 11, 32, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &client, &om));
	REQUIRE(forward1(sh, &b, &client, 11, 0, x, 3, d, WIRE_ENC_F32, y));
	CHECK_EQ_INT(buyer_step(sh, &b, &client, &pj, 11, 0, 3, &out), 0);
	REQUIRE(forward1(sh, &b, &client, 11, 3, x + 3 * d, 1, d, WIRE_ENC_F32, y));
	REQUIRE(b.n == 2 && b.r[0].m.type == WIRE_RECEIPT);
	chan_provider_t cheat;
	REQUIRE(chan_provider_init(&cheat, &t) == 0);
	receipt_t rr;
	REQUIRE(chan_provider_receipt(&cheat, 3, 2, NULL, prov, &rr) == 0);
	REQUIRE(receipt_encode(&rr, b.r[0].m.u.pay.receipt) == 0);
	CHECK_EQ_INT(buyer_step(sh, &b, &client, &pj, 11, 3, 1, &out), -1);
	CHECK(out.type == WIRE_ERROR && out.u.error.code == WIRE_E_PAYMENT);
	CHECK(strstr(out.u.error.msg, "counts differ") != NULL && strstr(out.u.error.msg, "3+2") != NULL);
	CHECK(pj.chans[1].refused && pj.chans[1].b.seq == 0);
	CHECK_EQ_INT(cpay_count(&pj, 1, 11, 0, 0, 1, &out), 0);   /* no voucher at the close either */
	box_clear(&b);
	cm.u.close.session_id = 11;
	REQUIRE(shard_handle(sh, &client, &cm) == 0);
	CHECK_EQ_INT(st.n, 1);   /* nothing to redeem */

	/* Session 12: a receipt with one byte changed (the charge) no longer
	 * carries the provider's signature: refused as forged. */
	po = pay_open_msg(12, &t, 3);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &po) == 0);
	om = open_msg(&f, 1, 12, 32, WIRE_ENC_F32);
	REQUIRE(open_ok(sh, &b, &client, &om));
	REQUIRE(forward1(sh, &b, &client, 12, 0, x, 4, d, WIRE_ENC_F32, y));
	REQUIRE(b.n == 2 && b.r[0].m.type == WIRE_RECEIPT);
	b.r[0].m.u.pay.receipt[73] ^= 1;   /* the amount's low byte */
	CHECK_EQ_INT(buyer_step(sh, &b, &client, &pj, 12, 0, 4, &out), -1);
	CHECK(strstr(out.u.error.msg, "forged") != NULL);
	CHECK(pj.chans[2].refused && pj.chans[2].b.seq == 0);

	cpay_job_close(&pj);
	shard_free(sh);
	CHECK_EQ_INT(st.n, 1);
	box_clear(&b);
	wallet_free(prov);
	wallet_free(buyer);
	fx_close(&f);
}

/* ---- channel checks at a real (SQLite) ledger */

static char tmpdir_[512];

static void tmp_cleanup(void)
{
	static const char *names[] = { "ledger.db", "ledger.db-wal", "ledger.db-shm", "ledger.db-journal" };
	char p[600];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", tmpdir_, names[i]);
		unlink(p);
	}
	rmdir(tmpdir_);
}

/* The verify hook's side: the ledger, and the last check asked for. */
struct verifier {
	settle_t st;
	int deferred;          /* 1: the test answers later (as a worker would) */
	uint64_t ticket;
	uint8_t id[MARKET_IDLEN];
	int calls;
	shard_t *sh;
};

static struct verifier *g_ver;   /* the shard's user pointer is the reply box */

static void answer(struct verifier *v)
{
	settle_channel_t ch;
	err_msg_t e = { "" };
	int rc = settle_channel(&v->st, v->id, &ch, &e);
	shard_pay_verified(v->sh, v->ticket, rc, rc ? NULL : &ch, e.msg);
}

static void verify_cb(void *user, uint64_t ticket, const uint8_t channel[MARKET_IDLEN])
{
	(void)user;
	struct verifier *v = g_ver;
	v->calls++;
	v->ticket = ticket;
	memcpy(v->id, channel, MARKET_IDLEN);
	if (!v->deferred)
		answer(v);
}

/* PAY_OPEN then OPEN_SESSION for sid claiming t: the OPEN_ERR's text, or
 * NULL if the session was not refused for payment. */
static const char *open_refused(shard_t *sh, struct fx *f, struct box *b, void *client, uint64_t sid,
				const chan_terms_t *t)
{
	wire_msg_t po = pay_open_msg(sid, t, 3), om = open_msg(f, 1, sid, 32, WIRE_ENC_F32);
	box_clear(b);
	if (shard_handle(sh, client, &po) != 0 || shard_handle(sh, client, &om) != 0)
		return NULL;
	return got_open_err(b, sid, WIRE_E_PAYMENT) ? b->r[0].m.u.error.msg : NULL;
}

static void test_paid_verify(void)
{
	struct fx f;
	fx_open(&f);
	struct box b;
	memset(&b, 0, sizeof(b));
	struct settled st;
	memset(&st, 0, sizeof(st));
	st.b = &b;
	wallet_t *prov = NULL, *buyer = NULL;
	REQUIRE(wallet_new(NULL, &prov) == 0 && wallet_new(NULL, &buyer) == 0);
	const char *td = getenv("TMPDIR");
	snprintf(tmpdir_, sizeof(tmpdir_), "%s/test_shard.XXXXXX", td && *td ? td : "/tmp");
	REQUIRE(mkdtemp(tmpdir_) != NULL);
	atexit(tmp_cleanup);
	char path[600];
	snprintf(path, sizeof(path), "%s/ledger.db", tmpdir_);
	ledger_t *l = NULL;
	err_msg_t e = { "" };
	REQUIRE(ledger_open(path, NULL, &l, &e) == 0);
	struct verifier ver;
	memset(&ver, 0, sizeof(ver));
	ver.st = ledger_settle(l);
	g_ver = &ver;
	int64_t now = (int64_t)time(NULL);
	REQUIRE(settle_deposit(&ver.st, wallet_pub(buyer), 10000, &e) == 0);
	settle_reserve_t rq;
	memset(&rq, 0, sizeof(rq));
	memcpy(rq.buyer, wallet_pub(buyer), WALLET_PUBLEN);
	memcpy(rq.provider, wallet_pub(prov), WALLET_PUBLEN);
	rq.budget = 1000;
	rq.expiry = now + 3600;
	memset(rq.nonce, 1, sizeof(rq.nonce));
	chan_terms_t t;
	memset(&t, 0, sizeof(t));
	REQUIRE(settle_reserve(&ver.st, &rq, now, t.channel, &e) == 0);
	memcpy(t.buyer, rq.buyer, WALLET_PUBLEN);
	memcpy(t.provider, rq.provider, WALLET_PUBLEN);
	t.budget = rq.budget;
	t.expiry = rq.expiry;
	t.price_in = 1000000;
	t.price_out = 3000000;
	t.chunk = 4;
	shard_t *sh = mk_paid(&f, &st, prov, 4, verify_cb);
	ver.sh = sh;
	int client, client2;

	/* The real channel, answered later: the OPEN_SESSION that arrived
	 * meanwhile waits, then is served. */
	ver.deferred = 1;
	wire_msg_t po = pay_open_msg(20, &t, 3), om = open_msg(&f, 1, 20, 32, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client, &po) == 0);
	CHECK_EQ_INT(ver.calls, 1);
	CHECK(memcmp(ver.id, t.channel, MARKET_IDLEN) == 0);
	REQUIRE(shard_handle(sh, &client, &om) == 0);
	CHECK_EQ_INT(b.n, 0);
	answer(&ver);
	const wire_msg_t *r = one_reply(&b, WIRE_OPEN_OK);
	CHECK(r && r->u.open_ok.session_id == 20);
	/* A late or repeated answer changes nothing. */
	box_clear(&b);
	answer(&ver);
	CHECK_EQ_INT(b.n, 0);

	/* Refusals, each with its reason. */
	ver.deferred = 0;
	chan_terms_t bad = t;
	memset(bad.channel, 0x5a, sizeof(bad.channel));
	const char *why = open_refused(sh, &f, &b, &client, 21, &bad);
	CHECK(why && strstr(why, "no such channel") != NULL);
	bad = t;
	bad.budget = t.budget * 10;
	why = open_refused(sh, &f, &b, &client, 22, &bad);
	CHECK(why && strstr(why, "budget 10000 claimed, the ledger holds 1000") != NULL);
	bad = t;
	bad.expiry = t.expiry + 60;
	why = open_refused(sh, &f, &b, &client, 23, &bad);
	CHECK(why && strstr(why, "expiry") != NULL);
	bad = t;
	memset(bad.buyer, 3, sizeof(bad.buyer));
	why = open_refused(sh, &f, &b, &client, 24, &bad);
	CHECK(why && strstr(why, "another buyer") != NULL);
	/* a channel the provider closed */
	settle_reserve_t rq2 = rq;
	memset(rq2.nonce, 2, sizeof(rq2.nonce));
	chan_terms_t t2 = t;
	REQUIRE(settle_reserve(&ver.st, &rq2, now, t2.channel, &e) == 0);
	REQUIRE(settle_close(&ver.st, t2.channel, SETTLE_BY_PROVIDER, now, NULL, &e) == 0);
	why = open_refused(sh, &f, &b, &client, 25, &t2);
	CHECK(why && strstr(why, "closed at the ledger") != NULL);
	/* a channel for another provider */
	wallet_t *other = NULL;
	REQUIRE(wallet_new(NULL, &other) == 0);
	settle_reserve_t rq3 = rq;
	memcpy(rq3.provider, wallet_pub(other), WALLET_PUBLEN);
	chan_terms_t t3 = t;
	REQUIRE(settle_reserve(&ver.st, &rq3, now, t3.channel, &e) == 0);
	why = open_refused(sh, &f, &b, &client, 26, &t3);
	CHECK(why && strstr(why, "another provider") != NULL);
	wallet_free(other);

	/* The client leaves while its check runs: the answer is dropped. */
	ver.deferred = 1;
	po = pay_open_msg(27, &t, 3);
	om = open_msg(&f, 1, 27, 32, WIRE_ENC_F32);
	box_clear(&b);
	REQUIRE(shard_handle(sh, &client2, &po) == 0);
	REQUIRE(shard_handle(sh, &client2, &om) == 0);
	shard_drop_client(sh, &client2);
	answer(&ver);
	CHECK_EQ_INT(b.n, 0);
	shard_stats_t ss;
	shard_stats(sh, &ss);
	CHECK_EQ_INT(ss.sessions, 1);   /* session 20 only */
	CHECK_EQ_INT(ver.calls, 8);

	shard_free(sh);
	ledger_free(l);
	box_clear(&b);
	wallet_free(prov);
	wallet_free(buyer);
	fx_close(&f);
}

TEST_MAIN(test_chain_f32_bitwise, test_chain_f16_tokens, test_chain_q8_tokens, test_batching, test_rewind,
	  test_admission, test_hostile, test_close_during_step, test_paid,
	  test_paid_receipts, test_paid_verify)
