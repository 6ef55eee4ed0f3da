/* test_qwen2.c - the qwen2 family (NeoX RoPE, Q/K/V biases).
 *
 * A llama model with "normal" RoPE rotates pairs (2i, 2i+1) of each head; a
 * NeoX model rotates (i, i + hd/2) with the same frequencies. So a qwen2 GGUF
 * whose attn_q/attn_k rows are the llama rows permuted per head into that
 * order, with zero biases, computes the same function: its logits must equal
 * the llama model's up to the order of the attention dot products. */
#include <unistd.h>

#include "test.h"
#include "infer/gen.h"
#include "model/synth.h"

struct src {
	const gguf_t *g;
	int hd, n_head, n_head_kv, bias_v;
	const char **names;
};

static int is_qk(const char *n) { return strstr(n, "attn_q.weight") || strstr(n, "attn_k.weight"); }

static int fill(void *arg, int64_t i, void *buf, uint64_t nbytes)
{
	struct src *s = arg;
	const char *name = s->names[i];
	if (strstr(name, ".bias")) {
		float *b = buf;
		for (uint64_t k = 0; k < nbytes / 4; k++)
			b[k] = (s->bias_v && strstr(name, "attn_v")) ? 0.05f * (float)(k % 7) : 0.0f;
		return 0;
	}
	const gguf_tensor_t *t = gguf_tensor_find(s->g, name);
	if (!t || t->nbytes != nbytes)
		return ERR_INVAL;
	if (!is_qk(name)) {
		memcpy(buf, t->data, nbytes);
		return 0;
	}
	size_t row = (size_t)t->ne[0] * sizeof(float);
	int64_t rows = t->ne[1], half = s->hd / 2;
	for (int64_t r = 0; r < rows; r++) {
		int64_t h = r / s->hd, k = r % s->hd;
		/* NeoX row k of the head takes llama row 2k (k < half) or 2(k-half)+1 */
		int64_t from = h * s->hd + (k < half ? 2 * k : 2 * (k - half) + 1);
		memcpy((char *)buf + (size_t)r * row, (const char *)t->data + (size_t)from * row, row);
	}
	return 0;
}

static int write_qwen2(const gguf_t *g, const char *path, int bias_v)
{
	gguf_writer_t *w = gguf_writer_new();
	int r = 0;
	for (int64_t i = 0; i < gguf_n_kv(g) && !r; i++) {
		const gguf_kv_t *kv = gguf_kv_at(g, i);
		char key[160];
		if (!strcmp(kv->key, "general.architecture"))
			r = gguf_writer_set_str(w, kv->key, "qwen2");
		else if (!strncmp(kv->key, "llama.", 6)) {
			snprintf(key, sizeof(key), "qwen2.%s", kv->key + 6);
			if (kv->type == GGUF_FLOAT32)
				r = gguf_writer_set_f32(w, key, (float)kv->v.f64);
			else
				r = gguf_writer_set_u32(w, key, (uint32_t)kv->v.u64);
		} else
			r = gguf_writer_copy_kv(w, kv);
	}
	uint32_t nl = 0, d = 0, nh = 0, nkv = 0;
	if (r || gguf_get_u32(g, "llama.block_count", &nl) || gguf_get_u32(g, "llama.embedding_length", &d) ||
	    gguf_get_u32(g, "llama.attention.head_count", &nh) || gguf_get_u32(g, "llama.attention.head_count_kv", &nkv))
		return -1;
	const char **names = calloc((size_t)gguf_n_tensors(g) + 3 * nl, sizeof(char *));
	char (*bn)[64] = calloc(3 * nl, 64);
	int64_t k = 0;
	for (int64_t i = 0; i < gguf_n_tensors(g) && !r; i++) {
		const gguf_tensor_t *t = gguf_tensor_at(g, i);
		names[k++] = t->name;
		r = gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne);
	}
	int hd = (int)(d / nh);
	for (uint32_t l = 0; l < nl && !r; l++) {
		const char *which[3] = { "q", "k", "v" };
		for (int q = 0; q < 3 && !r; q++) {
			char *n = bn[l * 3 + q];
			snprintf(n, 64, "blk.%u.attn_%s.bias", l, which[q]);
			int64_t ne[1] = { q == 0 ? (int64_t)d : (int64_t)nkv * hd };
			names[k++] = n;
			r = gguf_writer_add_tensor(w, n, KERN_F32, 1, ne);
		}
	}
	struct src s = { g, hd, (int)nh, (int)nkv, bias_v, names };
	err_msg_t e;
	if (!r)
		r = gguf_writer_write(w, path, fill, &s, &e);
	gguf_writer_free(w);
	free(names);
	free(bn);
	return r;
}

static float *logits_of(const char *path, const int32_t *toks, int n, int *nv)
{
	gguf_t *g;
	model_t *m;
	gen_t *gen;
	err_msg_t e;
	if (gguf_open(path, &g, &e) || model_load(g, &m, &e)) {
		fprintf(stderr, "  %s: %s\n", path, e.msg);
		return NULL;
	}
	*nv = m->hp.n_vocab;
	float *out = malloc(sizeof(float) * (size_t)n * (size_t)*nv);
	gen_opts_t o = { .n_ctx = 64 };
	if (gen_new(m, NULL, &o, &gen, &e) || gen_eval(gen, toks, n, NULL, out, &e)) {
		fprintf(stderr, "  %s\n", e.msg);
		free(out);
		out = NULL;
	}
	gen_free(gen);
	model_free(m);
	gguf_free(g);
	return out;
}

static void test_neox_equals_permuted_norm(void)
{
	char lp[128], qp[128], bp[128];
	snprintf(lp, sizeof(lp), "/tmp/colony-qwen-%d-llama.gguf", (int)getpid());
	snprintf(qp, sizeof(qp), "/tmp/colony-qwen-%d-qwen2.gguf", (int)getpid());
	snprintf(bp, sizeof(bp), "/tmp/colony-qwen-%d-bias.gguf", (int)getpid());
	synth_params_t p;
	err_msg_t e;
	REQUIRE(synth_preset("tiny", &p) == 0);
	p.type = KERN_F32;
	REQUIRE(synth_write(&p, lp, &e) == 0);
	gguf_t *g;
	REQUIRE(gguf_open(lp, &g, &e) == 0);
	REQUIRE(write_qwen2(g, qp, 0) == 0);
	REQUIRE(write_qwen2(g, bp, 1) == 0);
	gguf_free(g);
	int32_t toks[12] = { 1, 40, 300, 7, 99, 5, 260, 261, 17, 450, 3, 88 };
	int nv1, nv2, nv3;
	float *a = logits_of(lp, toks, 12, &nv1), *b = logits_of(qp, toks, 12, &nv2), *c = logits_of(bp, toks, 12, &nv3);
	REQUIRE(a && b && c && nv1 == nv2);
	double maxd = 0, maxa = 0, maxc = 0;
	for (int i = 0; i < 12 * nv1; i++) {
		maxd = fmax(maxd, fabs(a[i] - b[i]));
		maxa = fmax(maxa, fabs(a[i]));
		maxc = fmax(maxc, fabs(a[i] - c[i]));
	}
	fprintf(stderr, "  max |llama - qwen2| = %.3g (max |logit| %.3g); with a V bias: %.3g\n", maxd, maxa, maxc);
	CHECK(maxd <= 1e-5 * fmax(1.0, maxa));
	CHECK(maxc > 1e-3);   /* the bias is applied */
	free(a), free(b), free(c);
	unlink(lp), unlink(qp), unlink(bp);
}

TEST_MAIN(test_neox_equals_permuted_norm)
