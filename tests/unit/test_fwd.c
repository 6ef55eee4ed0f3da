/* test_fwd.c - the forward pass: determinism (batching, threads, ranges,
 * mixed batches), context limits, and quantization error of synthetic models. */
#include <unistd.h>

#include "test.h"
#include "infer/gen.h"
#include "model/synth.h"

struct mdl {
	gguf_t *g;
	model_t *m;
	char path[256];
};

static void mdl_close(struct mdl *d)
{
	model_free(d->m);
	gguf_free(d->g);
	if (d->path[0])
		unlink(d->path);
	memset(d, 0, sizeof(*d));
}

static void open_fixture(struct mdl *d)
{
	err_msg_t e;
	memset(d, 0, sizeof(*d));
	REQUIRE(gguf_open(fixture_path("stories260K.gguf"), &d->g, &e) == 0);
	REQUIRE(model_load(d->g, &d->m, &e) == 0);
}

static void open_synth(struct mdl *d, const char *preset, int type)
{
	synth_params_t p;
	err_msg_t e = { { 0 } };
	memset(d, 0, sizeof(*d));
	REQUIRE(synth_preset(preset, &p) == 0);
	p.type = type;
	static int seq;
	snprintf(d->path, sizeof(d->path), "/tmp/colony-test-%d-%s-%d-%d.gguf", (int)getpid(), preset, type, seq++);
	int r = synth_write(&p, d->path, &e);
	if (r)
		fprintf(stderr, "  synth_write: %s\n", e.msg);
	REQUIRE(r == 0);
	REQUIRE(gguf_open(d->path, &d->g, &e) == 0);
	r = model_load(d->g, &d->m, &e);
	if (r)
		fprintf(stderr, "  model_load: %s\n", e.msg);
	REQUIRE(r == 0);
}

static void make_tokens(int32_t *t, int n, int nv, uint32_t seed)
{
	for (int i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		t[i] = (int32_t)((seed >> 8) % (uint32_t)nv);
	}
}

/* Logits of every position of toks, processed in chunks of `chunk` rows. */
static float *all_logits(const model_t *m, const int32_t *toks, int n, int chunk, int nth, int nranges,
			 enum fwd_kv_type kv)
{
	pool_t *pool = pool_new(nth);
	gen_t *g = NULL;
	err_msg_t e;
	gen_opts_t o = { .n_ctx = n + 4, .kv = kv, .n_batch = chunk, .n_ranges = nranges };
	float *out = malloc(sizeof(float) * (size_t)n * (size_t)m->hp.n_vocab);
	if (gen_new(m, pool, &o, &g, &e) != 0 || !out) {
		fprintf(stderr, "  gen_new: %s\n", e.msg);
		free(out);
		pool_free(pool);
		return NULL;
	}
	for (int off = 0; off < n; off += chunk) {
		int nb = n - off < chunk ? n - off : chunk;
		if (gen_eval(g, toks + off, nb, NULL, out + (size_t)off * m->hp.n_vocab, &e) != 0) {
			fprintf(stderr, "  gen_eval: %s\n", e.msg);
			free(out);
			out = NULL;
			break;
		}
	}
	gen_free(g);
	pool_free(pool);
	return out;
}

static void check_invariance(const model_t *m, enum fwd_kv_type kv)
{
	enum { N = 37 };
	int32_t toks[N];
	make_tokens(toks, N, m->hp.n_vocab, 7);
	size_t sz = sizeof(float) * N * (size_t)m->hp.n_vocab;
	float *base = all_logits(m, toks, N, N, 1, 1, kv);          /* one batch, 1 thread */
	REQUIRE(base);
	float *tok1 = all_logits(m, toks, N, 1, 1, 1, kv);          /* token by token */
	float *b2 = all_logits(m, toks, N, N, 2, 1, kv);            /* 2 threads */
	float *c5 = all_logits(m, toks, N, 5, 2, 1, kv);            /* chunks of 5 */
	int nr = m->hp.n_layer >= 3 ? 3 : m->hp.n_layer;
	float *r3 = all_logits(m, toks, N, N, 2, nr, kv);           /* layers in 2-3 ranges */
	float *r2 = all_logits(m, toks, N, 3, 1, 2 <= m->hp.n_layer ? 2 : 1, kv);
	REQUIRE(tok1 && b2 && c5 && r3 && r2);
	CHECK(memcmp(base, tok1, sz) == 0);
	CHECK(memcmp(base, b2, sz) == 0);
	CHECK(memcmp(base, c5, sz) == 0);
	CHECK(memcmp(base, r3, sz) == 0);
	CHECK(memcmp(base, r2, sz) == 0);
	free(base), free(tok1), free(b2), free(c5), free(r3), free(r2);
}

static void test_invariance_stories(void)
{
	struct mdl d;
	open_fixture(&d);
	check_invariance(d.m, FWD_KV_F32);
	check_invariance(d.m, FWD_KV_F16);
	mdl_close(&d);
}

/* Weights pinned to huge pages, repacked (R16) where the kernels gain from
 * it: the same bits as the file's layout, batched, chunked and token by token. */
static void check_pinned(const char *preset, int type)
{
	enum { N = 37 };
	struct mdl a, b;
	err_msg_t e;
	open_synth(&a, preset, type);
	open_synth(&b, preset, type);
	REQUIRE(model_pin(b.m, &e) == 0);
	if (kern_isa_active() == KERN_ISA_AVX512 && (type == KERN_Q8_0 || type == KERN_Q4_0))
		CHECK(b.m->layers[0].wq.layout == KERN_LAYOUT_R16);
	int32_t toks[N];
	make_tokens(toks, N, a.m->hp.n_vocab, 11);
	size_t sz = sizeof(float) * N * (size_t)a.m->hp.n_vocab;
	float *base = all_logits(a.m, toks, N, N, 1, 1, FWD_KV_F32);
	float *p1 = all_logits(b.m, toks, N, N, 2, 1, FWD_KV_F32);
	float *p2 = all_logits(b.m, toks, N, 1, 2, 2, FWD_KV_F32);
	float *p3 = all_logits(b.m, toks, N, 9, 1, 1, FWD_KV_F32);
	REQUIRE(base && p1 && p2 && p3);
	CHECK(memcmp(base, p1, sz) == 0);
	CHECK(memcmp(base, p2, sz) == 0);
	CHECK(memcmp(base, p3, sz) == 0);
	free(base), free(p1), free(p2), free(p3);
	mdl_close(&a);
	mdl_close(&b);
}

static void test_invariance_synth_types(void)
{
	check_pinned("tiny", KERN_Q8_0);
	check_pinned("tiny", KERN_Q4_0);
	check_pinned("small", KERN_Q8_0);
	int types[] = { KERN_F16, KERN_Q8_0, KERN_Q4_0, KERN_BF16 };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		struct mdl d;
		fprintf(stderr, "  type %s\n", kern_type_name(types[i]));
		open_synth(&d, "tiny", types[i]);
		check_invariance(d.m, FWD_KV_F32);
		mdl_close(&d);
	}
	int ktypes[] = { KERN_Q4_K, KERN_Q6_K };
	for (size_t i = 0; i < 2; i++) {
		struct mdl d;
		fprintf(stderr, "  type %s\n", kern_type_name(ktypes[i]));
		open_synth(&d, "small", ktypes[i]);
		check_invariance(d.m, FWD_KV_F16);
		mdl_close(&d);
	}
}

/* A sequence's rows give the same hidden states alone and inside a batch with
 * other sequences (continuous batching). */
static void test_mixed_batch(void)
{
	struct mdl d;
	open_fixture(&d);
	const model_t *m = d.m;
	int L = m->hp.n_layer, dm = m->hp.n_embd;
	err_msg_t e;
	fwd_ctx_t *c;
	pool_t *pool = pool_new(2);
	REQUIRE(fwd_ctx_new(pool, &c) == 0);
	int32_t a[9], b[6];
	make_tokens(a, 9, m->hp.n_vocab, 1);
	make_tokens(b, 6, m->hp.n_vocab, 2);
	fwd_state_t *sa, *sb, *solo;
	REQUIRE(fwd_state_new(m, 0, L, 64, FWD_KV_F32, &sa) == 0);
	REQUIRE(fwd_state_new(m, 0, L, 64, FWD_KV_F32, &sb) == 0);
	REQUIRE(fwd_state_new(m, 0, L, 64, FWD_KV_F32, &solo) == 0);
	float ha[9 * 64], hb[6 * 64], hs[9 * 64], mix[15 * 64];
	REQUIRE(dm <= 64);
	/* solo: a's first 4 tokens, then the next 5 */
	REQUIRE(fwd_embed(m, a, 9, hs, &e) == 0);
	fwd_seg_t s1 = { solo, 4 }, s2 = { solo, 5 };
	REQUIRE(fwd_forward(c, m, &s1, 1, hs, &e) == 0);
	REQUIRE(fwd_forward(c, m, &s2, 1, hs + 4 * dm, &e) == 0);
	/* mixed: a's first 4 with b's first 3, then b's next 3 with a's next 5 */
	REQUIRE(fwd_embed(m, a, 9, ha, &e) == 0);
	REQUIRE(fwd_embed(m, b, 6, hb, &e) == 0);
	memcpy(mix, ha, sizeof(float) * 4 * dm);
	memcpy(mix + 4 * dm, hb, sizeof(float) * 3 * dm);
	fwd_seg_t m1[2] = { { sa, 4 }, { sb, 3 } };
	REQUIRE(fwd_forward(c, m, m1, 2, mix, &e) == 0);
	CHECK(memcmp(mix, hs, sizeof(float) * 4 * dm) == 0);
	memcpy(mix, hb + 3 * dm, sizeof(float) * 3 * dm);
	memcpy(mix + 3 * dm, ha + 4 * dm, sizeof(float) * 5 * dm);
	fwd_seg_t m2[2] = { { sb, 3 }, { sa, 5 } };
	REQUIRE(fwd_forward(c, m, m2, 2, mix, &e) == 0);
	CHECK(memcmp(mix + 3 * dm, hs + 4 * dm, sizeof(float) * 5 * dm) == 0);
	CHECK_EQ_INT(fwd_state_pos(sa), 9);
	CHECK_EQ_INT(fwd_state_pos(sb), 6);
	/* the same state twice in one batch is refused */
	fwd_seg_t dup[2] = { { sa, 1 }, { sa, 1 } };
	CHECK(fwd_forward(c, m, dup, 2, mix, &e) == ERR_INVAL);
	fwd_state_free(sa), fwd_state_free(sb), fwd_state_free(solo);
	fwd_ctx_free(c);
	pool_free(pool);
	mdl_close(&d);
}

static void test_context_limit(void)
{
	struct mdl d;
	open_fixture(&d);
	err_msg_t e = { { 0 } };
	gen_t *g;
	gen_opts_t o = { .n_ctx = 8 };
	REQUIRE(gen_new(d.m, NULL, &o, &g, &e) == 0);
	int32_t t[9] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	const float *lg;
	CHECK(gen_eval(g, t, 9, &lg, NULL, &e) == ERR_FULL);
	CHECK(strstr(e.msg, "context") != NULL);
	CHECK_EQ_INT(gen_pos(g), 0);
	CHECK(gen_eval(g, t, 8, &lg, NULL, &e) == 0);
	CHECK(gen_eval(g, t, 1, &lg, NULL, &e) == ERR_FULL);
	CHECK_EQ_INT(gen_pos(g), 8);
	/* a bad token id is refused, position unchanged */
	CHECK(gen_rewind(g, 2) == 0);
	int32_t bad = d.m->hp.n_vocab;
	CHECK(gen_eval(g, &bad, 1, &lg, NULL, &e) == ERR_RANGE);
	CHECK_EQ_INT(gen_pos(g), 2);
	gen_free(g);
	mdl_close(&d);
}

/* Relative RMS error of logits of quantized versions against F16 (random
 * weights, 110M shape). llama.cpp: 3-5% for Q8_0, 34-58% for Q4_0. */
static void test_quant_error(void)
{
	if (getenv("COLONY_SANITIZED"))
		SKIP("too slow under sanitizers");
	enum { N = 16 };
	struct mdl f16, q8, q4;
	open_synth(&f16, "110m", KERN_F16);
	int32_t toks[N];
	make_tokens(toks, N, f16.m->hp.n_vocab, 3);
	float *ref = all_logits(f16.m, toks, N, N, 2, 1, FWD_KV_F32);
	mdl_close(&f16);
	REQUIRE(ref);
	size_t n = (size_t)N * 32000;
	double err[2];
	int types[2] = { KERN_Q8_0, KERN_Q4_0 };
	for (int k = 0; k < 2; k++) {
		struct mdl *d = k ? &q4 : &q8;
		open_synth(d, "110m", types[k]);
		float *lg = all_logits(d->m, toks, N, N, 2, 1, FWD_KV_F32);
		REQUIRE(lg);
		double se = 0, sr = 0;
		for (size_t i = 0; i < n; i++) {
			se += (double)(lg[i] - ref[i]) * (lg[i] - ref[i]);
			sr += (double)ref[i] * ref[i];
		}
		err[k] = sqrt(se / sr);
		fprintf(stderr, "  110m %s vs f16: relative RMS error of logits %.2f%%\n", kern_type_name(types[k]),
			100 * err[k]);
		free(lg);
		mdl_close(d);
	}
	CHECK(err[0] <= 0.05 * 1.25);
	CHECK(err[1] <= 0.58 * 1.25);
	CHECK(err[0] < err[1]);
	free(ref);
}

TEST_MAIN(test_invariance_stories, test_invariance_synth_types, test_mixed_batch, test_context_limit,
	  test_quant_error)
