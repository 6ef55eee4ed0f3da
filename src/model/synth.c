#include "model/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern/kern.h"
#include "model/gguf.h"

int synth_preset(const char *name, synth_params_t *p)
{
	memset(p, 0, sizeof(*p));
	p->type = KERN_F16;
	p->seed = 1234;
	p->n_ctx = 2048;
	if (!strcmp(name, "tiny")) {
		*p = (synth_params_t){ .dim = 64, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .n_ff = 160,
				       .n_vocab = 512, .n_ctx = 256 };
	} else if (!strcmp(name, "small")) {
		*p = (synth_params_t){ .dim = 256, .n_layer = 4, .n_head = 8, .n_head_kv = 4, .n_ff = 768,
				       .n_vocab = 2048, .n_ctx = 512 };
	} else if (!strcmp(name, "110m")) {
		*p = (synth_params_t){ .dim = 768, .n_layer = 12, .n_head = 12, .n_head_kv = 12, .n_ff = 2048,
				       .n_vocab = 32000, .n_ctx = 1024 };
	} else if (!strcmp(name, "1.1b")) {
		*p = (synth_params_t){ .dim = 2048, .n_layer = 22, .n_head = 32, .n_head_kv = 4, .n_ff = 5632,
				       .n_vocab = 32000, .n_ctx = 2048 };
	} else {
		return ERR_NOTFOUND;
	}
	p->type = KERN_F16;
	p->seed = 1234;
	return 0;
}

/* ---- built-in vocabulary ---- */

static int vocab_push(synth_vocab_t *v, int cap, const char *s, int type)
{
	if (v->n >= cap)
		return 0;
	v->tokens[v->n] = strdup(s);
	if (!v->tokens[v->n])
		return ERR_NOMEM;
	v->scores[v->n] = -(float)v->n;
	v->types[v->n] = type;
	v->n++;
	return 0;
}

int synth_vocab_build(int n, synth_vocab_t *v)
{
	memset(v, 0, sizeof(*v));
	if (n < 259 || n > (1 << 20))
		return ERR_RANGE;
	v->tokens = calloc((size_t)n, sizeof(char *));
	v->scores = calloc((size_t)n, sizeof(float));
	v->types = calloc((size_t)n, sizeof(int32_t));
	if (!v->tokens || !v->scores || !v->types) {
		synth_vocab_free(v);
		return ERR_NOMEM;
	}
	/* Token types as in GGUF: 1 normal, 2 unknown, 3 control, 6 byte. */
	const char *sp = "\xe2\x96\x81"; /* U+2581, SentencePiece's space */
	char buf[32];
	int r = vocab_push(v, n, "<unk>", 2) | vocab_push(v, n, "<s>", 3) | vocab_push(v, n, "</s>", 3);
	for (int b = 0; b < 256 && !r; b++) {
		snprintf(buf, sizeof(buf), "<0x%02X>", b);
		r = vocab_push(v, n, buf, 6);
	}
	r |= vocab_push(v, n, sp, 1);
	for (int c = 33; c < 127 && !r; c++) {
		buf[0] = (char)c;
		buf[1] = 0;
		r = vocab_push(v, n, buf, 1);
	}
	/* "▁x" for letters and digits, then letter bigrams, "▁xy", "▁xyz", "xyz". */
	const char *al = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	for (const char *a = al; *a && !r; a++) {
		snprintf(buf, sizeof(buf), "%s%c", sp, *a);
		r = vocab_push(v, n, buf, 1);
	}
	for (int pass = 0; pass < 4 && !r && v->n < n; pass++)
		for (int a = 'a'; a <= 'z' && !r; a++)
			for (int b = 'a'; b <= 'z' && !r; b++) {
				if (pass < 2) {
					snprintf(buf, sizeof(buf), "%s%c%c", pass ? sp : "", a, b);
					r = vocab_push(v, n, buf, 1);
				} else {
					for (int c = 'a'; c <= 'z' && !r; c++) {
						snprintf(buf, sizeof(buf), "%s%c%c%c", pass == 2 ? sp : "", a, b, c);
						r = vocab_push(v, n, buf, 1);
					}
				}
			}
	/* Past every trigram (more than 36k tokens): numbered filler pieces. */
	for (int i = 0; v->n < n && !r; i++) {
		snprintf(buf, sizeof(buf), "<extra_%d>", i);
		r = vocab_push(v, n, buf, 4);
	}
	if (r) {
		synth_vocab_free(v);
		return ERR_NOMEM;
	}
	return 0;
}

void synth_vocab_free(synth_vocab_t *v)
{
	if (v->tokens)
		for (int i = 0; i < v->n; i++)
			free(v->tokens[i]);
	free(v->tokens);
	free(v->scores);
	free(v->types);
	memset(v, 0, sizeof(*v));
}

/* ---- weights ---- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* normal(0, sd) by Box-Muller from 53-bit uniforms. */
static void fill_normal(uint64_t *s, float *out, int64_t n, float sd)
{
	for (int64_t i = 0; i < n; i += 2) {
		double u1 = ((double)(splitmix64(s) >> 11) + 1.0) * 0x1.0p-53;
		double u2 = (double)(splitmix64(s) >> 11) * 0x1.0p-53;
		double rad = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
		out[i] = (float)(rad * cos(th)) * sd;
		if (i + 1 < n)
			out[i + 1] = (float)(rad * sin(th)) * sd;
	}
}

struct tensor_plan {
	char name[64];
	int type;
	int64_t ne0, ne1;     /* ne1 = 1 for vectors */
	int is_norm;
};

struct writer_state {
	const synth_params_t *p;
	struct tensor_plan *t;
	int64_t nt;
	float *row;
	uint64_t done, total;
};

static int fill_cb(void *arg, int64_t i, void *buf, uint64_t nbytes)
{
	struct writer_state *w = arg;
	const struct tensor_plan *tp = &w->t[i];
	uint64_t seed = w->p->seed * 0x100000001b3ull + (uint64_t)i * 0x9e3779b97f4a7c15ull;
	const kern_traits_t *tr = kern_traits(tp->type);
	size_t rs = kern_row_size(tp->type, tp->ne0);
	if ((uint64_t)rs * (uint64_t)tp->ne1 != nbytes)
		return ERR_INVAL;
	for (int64_t r = 0; r < tp->ne1; r++) {
		if (tp->is_norm)
			for (int64_t k = 0; k < tp->ne0; k++)
				w->row[k] = 1.0f;
		else
			fill_normal(&seed, w->row, tp->ne0, 0.02f);
		char *dst = (char *)buf + (size_t)r * rs;
		if (tp->type == KERN_F32)
			memcpy(dst, w->row, rs);
		else
			tr->from_float(w->row, dst, tp->ne0);
	}
	w->done += nbytes;
	if (w->p->progress_cb)
		w->p->progress_cb(w->p->progress_arg, w->done, w->total);
	return 0;
}

static int copy_tokenizer_kv(gguf_writer_t *wr, const char *path, err_msg_t *e, int *n_vocab)
{
	gguf_t *g = NULL;
	int r = gguf_open(path, &g, e);
	if (r)
		return err_prefix(e, r, "%s", path);
	const gguf_kv_t *toks = gguf_kv_find(g, "tokenizer.ggml.tokens");
	if (!toks || toks->type != GGUF_ARRAY || toks->arr_type != GGUF_STRING || toks->arr_n == 0) {
		gguf_free(g);
		return err_set(e, ERR_FORMAT, "%s has no tokenizer.ggml.tokens string array", path);
	}
	*n_vocab = (int)toks->arr_n;
	for (int64_t i = 0; i < gguf_n_kv(g); i++) {
		const gguf_kv_t *kv = gguf_kv_at(g, i);
		if (strncmp(kv->key, "tokenizer.", 10) != 0)
			continue;
		if ((r = gguf_writer_copy_kv(wr, kv)) != 0) {
			gguf_free(g);
			return err_set(e, r, "copying '%s' failed", kv->key);
		}
	}
	gguf_free(g);
	return 0;
}

int synth_write(const synth_params_t *p, const char *path, err_msg_t *e)
{
	const kern_traits_t *tr = kern_traits(p->type);
	if (!tr || !tr->supported || !tr->from_float || p->type == KERN_Q8_K)
		return err_set(e, ERR_UNSUPPORTED, "cannot write weights of type %s", kern_type_name(p->type));
	if (p->dim < 8 || p->n_layer < 1 || p->n_head < 1 || p->n_head_kv < 1 || p->n_ff < 1 ||
	    p->dim % p->n_head || p->n_head % p->n_head_kv || (p->dim / p->n_head) % 2 || p->n_ctx < 1 ||
	    p->dim > 65536 || p->n_ff > 262144 || p->n_layer > 512)
		return err_set(e, ERR_RANGE, "inconsistent shape: dim %d, layers %d, heads %d/%d, ffn %d",
			       p->dim, p->n_layer, p->n_head, p->n_head_kv, p->n_ff);
	if (p->dim % tr->blck_size || p->n_ff % tr->blck_size)
		return err_set(e, ERR_RANGE, "type %s needs dim (%d) and ffn (%d) to be multiples of %lld",
			       tr->name, p->dim, p->n_ff, (long long)tr->blck_size);

	gguf_writer_t *wr = gguf_writer_new();
	if (!wr)
		return err_set(e, ERR_NOMEM, "out of memory");
	int r = 0, n_vocab = p->n_vocab;
	const char *ar = "llama";
	char key[96];
#define SETU(k, v) (snprintf(key, sizeof(key), "%s.%s", ar, k), gguf_writer_set_u32(wr, key, (uint32_t)(v)))
	r |= gguf_writer_set_str(wr, "general.architecture", ar);
	r |= gguf_writer_set_str(wr, "general.name", p->name ? p->name : "colony synthetic");
	r |= gguf_writer_set_u32(wr, "general.alignment", 32);
	r |= SETU("context_length", p->n_ctx);
	r |= SETU("embedding_length", p->dim);
	r |= SETU("block_count", p->n_layer);
	r |= SETU("feed_forward_length", p->n_ff);
	r |= SETU("attention.head_count", p->n_head);
	r |= SETU("attention.head_count_kv", p->n_head_kv);
	r |= SETU("rope.dimension_count", p->dim / p->n_head);
	snprintf(key, sizeof(key), "%s.attention.layer_norm_rms_epsilon", ar);
	r |= gguf_writer_set_f32(wr, key, 1e-5f);
	snprintf(key, sizeof(key), "%s.rope.freq_base", ar);
	r |= gguf_writer_set_f32(wr, key, 10000.0f);
#undef SETU
	if (r) {
		gguf_writer_free(wr);
		return err_set(e, ERR_NOMEM, "building metadata failed");
	}
	if (p->vocab_from) {
		if ((r = copy_tokenizer_kv(wr, p->vocab_from, e, &n_vocab))) {
			gguf_writer_free(wr);
			return r;
		}
	} else {
		synth_vocab_t v;
		if (n_vocab < 259)
			n_vocab = 259;
		if ((r = synth_vocab_build(n_vocab, &v))) {
			gguf_writer_free(wr);
			return err_set(e, r, "building the vocabulary failed");
		}
		r |= gguf_writer_set_str(wr, "tokenizer.ggml.model", "llama");
		r |= gguf_writer_set_arr_str(wr, "tokenizer.ggml.tokens", (const char *const *)v.tokens, (uint64_t)v.n);
		r |= gguf_writer_set_arr(wr, "tokenizer.ggml.scores", GGUF_FLOAT32, v.scores, (uint64_t)v.n);
		r |= gguf_writer_set_arr(wr, "tokenizer.ggml.token_type", GGUF_INT32, v.types, (uint64_t)v.n);
		r |= gguf_writer_set_u32(wr, "tokenizer.ggml.unknown_token_id", 0);
		r |= gguf_writer_set_u32(wr, "tokenizer.ggml.bos_token_id", 1);
		r |= gguf_writer_set_u32(wr, "tokenizer.ggml.eos_token_id", 2);
		r |= gguf_writer_set_bool(wr, "tokenizer.ggml.add_bos_token", 1);
		r |= gguf_writer_set_bool(wr, "tokenizer.ggml.add_eos_token", 0);
		synth_vocab_free(&v);
		if (r) {
			gguf_writer_free(wr);
			return err_set(e, ERR_NOMEM, "building vocabulary metadata failed");
		}
	}

	int hd = p->dim / p->n_head;
	int64_t nt = 3 + 9LL * p->n_layer;
	struct tensor_plan *t = calloc((size_t)nt, sizeof(*t));
	float *row = malloc(sizeof(float) * (size_t)(p->dim > p->n_ff ? p->dim : p->n_ff));
	if (!t || !row) {
		free(t);
		free(row);
		gguf_writer_free(wr);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	int64_t k = 0;
#define PLAN(nm, ty, a, b, norm) (snprintf(t[k].name, sizeof(t[k].name), "%s", nm), t[k].type = (ty), \
				     t[k].ne0 = (a), t[k].ne1 = (b), t[k].is_norm = (norm), k++)
	PLAN("token_embd.weight", p->type, p->dim, n_vocab, 0);
	for (int il = 0; il < p->n_layer; il++) {
		char nm[64];
#define L(s) (snprintf(nm, sizeof(nm), "blk.%d.%s", il, s), nm)
		PLAN(L("attn_norm.weight"), KERN_F32, p->dim, 1, 1);
		PLAN(L("attn_q.weight"), p->type, p->dim, p->dim, 0);
		PLAN(L("attn_k.weight"), p->type, p->dim, p->n_head_kv * hd, 0);
		PLAN(L("attn_v.weight"), p->type, p->dim, p->n_head_kv * hd, 0);
		PLAN(L("attn_output.weight"), p->type, p->dim, p->dim, 0);
		PLAN(L("ffn_norm.weight"), KERN_F32, p->dim, 1, 1);
		PLAN(L("ffn_gate.weight"), p->type, p->dim, p->n_ff, 0);
		PLAN(L("ffn_up.weight"), p->type, p->dim, p->n_ff, 0);
		PLAN(L("ffn_down.weight"), p->type, p->n_ff, p->dim, 0);
#undef L
	}
	PLAN("output_norm.weight", KERN_F32, p->dim, 1, 1);
	/* As llama.cpp's quantizer does for its 4-bit file types, the output head
	 * of a Q4_0/Q4_K model is Q6_K (when the shape allows): the head is the
	 * most sensitive matrix, and files people download are made this way. */
	int out_type = p->type;
	if ((p->type == KERN_Q4_0 || p->type == KERN_Q4_K) && p->dim % 256 == 0)
		out_type = KERN_Q6_K;
	PLAN("output.weight", out_type, p->dim, n_vocab, 0);
#undef PLAN
	struct writer_state ws = { p, t, k, row, 0, 0 };
	for (int64_t i = 0; i < k && !r; i++) {
		int64_t ne[2] = { t[i].ne0, t[i].ne1 };
		r = gguf_writer_add_tensor(wr, t[i].name, t[i].type, t[i].ne1 == 1 ? 1 : 2, ne);
		ws.total += (uint64_t)kern_row_size(t[i].type, t[i].ne0) * (uint64_t)t[i].ne1;
	}
	if (r)
		err_set(e, r, "declaring tensors failed");
	else
		r = gguf_writer_write(wr, path, fill_cb, &ws, e);
	free(t);
	free(row);
	gguf_writer_free(wr);
	return r;
}
