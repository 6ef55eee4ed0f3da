#include "model/model.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

static int get_u32_arch(const gguf_t *g, const char *arch, const char *suffix, uint32_t *out,
			int required, err_msg_t *e)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", arch, suffix);
	int r = gguf_get_u32(g, key, out);
	if (r == ERR_NOTFOUND && !required)
		return ERR_NOTFOUND;
	if (r != 0)
		return err_set(e, r == ERR_NOTFOUND ? ERR_FORMAT : r, "metadata '%s' %s", key,
			       r == ERR_NOTFOUND ? "is missing" : "is not a valid unsigned 32-bit integer");
	return 0;
}

static int get_f32_arch(const gguf_t *g, const char *arch, const char *suffix, float *out, err_msg_t *e)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", arch, suffix);
	int r = gguf_get_f32(g, key, out);
	if (r == ERR_NOTFOUND)
		return ERR_NOTFOUND;
	if (r != 0)
		return err_set(e, r, "metadata '%s' is not a float", key);
	return 0;
}

static int read_hparams(const gguf_t *g, model_hparams_t *hp, err_msg_t *e)
{
	memset(hp, 0, sizeof(*hp));
	gguf_str_t a;
	if (gguf_get_str(g, "general.architecture", &a) != 0)
		return err_set(e, ERR_FORMAT, "metadata 'general.architecture' is missing or not a string");
	if (a.n == 0 || a.n >= sizeof(hp->arch))
		return err_set(e, ERR_UNSUPPORTED, "architecture name of %llu bytes is not supported",
			       (unsigned long long)a.n);
	memcpy(hp->arch, a.p, a.n);
	hp->arch[a.n] = 0;
	if (!strcmp(hp->arch, "llama") || !strcmp(hp->arch, "mistral"))
		hp->rope_type = MODEL_ROPE_NORM;
	else if (!strcmp(hp->arch, "qwen2"))
		hp->rope_type = MODEL_ROPE_NEOX;
	else
		return err_set(e, ERR_UNSUPPORTED,
			       "architecture '%s' is not supported (supported: llama, mistral, qwen2)", hp->arch);

	const char *ar = hp->arch;
	uint32_t v;
	int r;
#define REQ(field, suffix)                                                                 \
	if ((r = get_u32_arch(g, ar, suffix, &v, 1, e)) != 0)                              \
		return r;                                                                  \
	if (v == 0 || v > MODEL_MAX_DIM)                                                   \
		return err_set(e, ERR_RANGE, "metadata '%s.%s' = %u is out of range", ar,  \
			       suffix, v);                                                 \
	hp->field = (int)v;
	REQ(n_embd, "embedding_length");
	REQ(n_layer, "block_count");
	REQ(n_head, "attention.head_count");
	REQ(n_ff, "feed_forward_length");
#undef REQ
	if (hp->n_layer > MODEL_MAX_LAYERS)
		return err_set(e, ERR_RANGE, "block_count %d exceeds the limit %d", hp->n_layer, MODEL_MAX_LAYERS);
	r = get_u32_arch(g, ar, "attention.head_count_kv", &v, 0, e);
	if (r == ERR_NOTFOUND)
		v = (uint32_t)hp->n_head;
	else if (r)
		return r;
	if (v == 0 || v > (uint32_t)hp->n_head || hp->n_head % (int)v != 0)
		return err_set(e, ERR_RANGE, "head_count_kv %u does not divide head_count %d", v, hp->n_head);
	hp->n_head_kv = (int)v;

	hp->head_dim = hp->n_embd / hp->n_head;
	r = get_u32_arch(g, ar, "attention.key_length", &v, 0, e);
	if (r == 0) {
		uint32_t vl = v;
		if (get_u32_arch(g, ar, "attention.value_length", &vl, 0, e) == 0 && vl != v)
			return err_set(e, ERR_UNSUPPORTED, "key_length %u != value_length %u is not supported", v, vl);
		hp->head_dim = (int)v;
	} else if (r != ERR_NOTFOUND) {
		return r;
	} else if (hp->n_embd % hp->n_head != 0) {
		return err_set(e, ERR_RANGE, "embedding_length %d is not a multiple of head_count %d",
			       hp->n_embd, hp->n_head);
	}
	if (hp->head_dim < 2 || hp->head_dim % 2 || hp->head_dim > 1024)
		return err_set(e, ERR_RANGE, "head dimension %d is out of range", hp->head_dim);

	r = get_u32_arch(g, ar, "context_length", &v, 0, e);
	if (r == ERR_NOTFOUND)
		v = 2048;
	else if (r)
		return r;
	if (v == 0 || v > (1u << 24))
		return err_set(e, ERR_RANGE, "context_length %u is out of range", v);
	hp->n_ctx_train = (int)v;

	r = get_f32_arch(g, ar, "attention.layer_norm_rms_epsilon", &hp->rms_eps, e);
	if (r == ERR_NOTFOUND)
		hp->rms_eps = 1e-5f;
	else if (r)
		return r;
	if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
		return err_set(e, ERR_RANGE, "rms epsilon %g is out of range", (double)hp->rms_eps);
	r = get_f32_arch(g, ar, "rope.freq_base", &hp->rope_theta, e);
	if (r == ERR_NOTFOUND)
		hp->rope_theta = 10000.0f;
	else if (r)
		return r;
	if (!(hp->rope_theta > 1 && hp->rope_theta < 1e12f))
		return err_set(e, ERR_RANGE, "rope freq_base %g is out of range", (double)hp->rope_theta);
	r = get_u32_arch(g, ar, "rope.dimension_count", &v, 0, e);
	if (r == ERR_NOTFOUND)
		v = (uint32_t)hp->head_dim;
	else if (r)
		return r;
	if (v < 2 || v % 2 || v > (uint32_t)hp->head_dim)
		return err_set(e, ERR_RANGE, "rope dimension_count %u is out of range (head dim %d)", v, hp->head_dim);
	hp->rope_dim = (int)v;
	return 0;
}

/* Finds a tensor and checks it is a matrix (rows, cols) of a supported type. */
static int get_mat(const gguf_t *g, const char *name, int64_t rows, int64_t cols, int required,
		   kern_mat_t *m, err_msg_t *e)
{
	const gguf_tensor_t *t = gguf_tensor_find(g, name);
	memset(m, 0, sizeof(*m));
	if (!t)
		return required ? err_set(e, ERR_FORMAT, "tensor '%s' is missing", name) : ERR_NOTFOUND;
	const kern_traits_t *tr = kern_traits(t->type);
	if (!tr || !tr->supported || !tr->vec_dot)
		return err_set(e, ERR_UNSUPPORTED,
			       "tensor '%s' has type %s, which this engine does not support "
			       "(supported: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)",
			       name, kern_type_name(t->type));
	if (t->n_dims > 2 || t->ne[0] != cols || t->ne[1] != rows)
		return err_set(e, ERR_FORMAT, "tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", name,
			       (long long)t->ne[0], (long long)t->ne[1], (long long)cols, (long long)rows);
	m->data = t->data;
	m->type = t->type;
	m->rows = rows;
	m->cols = cols;
	return 0;
}

static int get_vec(const gguf_t *g, const char *name, int64_t n, int required, const float **out, err_msg_t *e)
{
	const gguf_tensor_t *t = gguf_tensor_find(g, name);
	*out = NULL;
	if (!t)
		return required ? err_set(e, ERR_FORMAT, "tensor '%s' is missing", name) : ERR_NOTFOUND;
	if (t->type != KERN_F32)
		return err_set(e, ERR_UNSUPPORTED, "tensor '%s' has type %s; vectors (norms, biases) must be f32",
			       name, kern_type_name(t->type));
	if (t->n_dims != 1 || t->ne[0] != n)
		return err_set(e, ERR_FORMAT, "tensor '%s' has %u dims and %lld elements, expected a vector of %lld",
			       name, t->n_dims, (long long)t->ne[0], (long long)n);
	*out = t->data;
	return 0;
}

static int load_layer(const gguf_t *g, const model_hparams_t *hp, int il, model_layer_t *L, err_msg_t *e)
{
	char n[96];
	int r;
	int64_t d = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
#define NAME(s) (snprintf(n, sizeof(n), "blk.%d.%s", il, s), n)
	if ((r = get_vec(g, NAME("attn_norm.weight"), d, 1, &L->attn_norm, e))) return r;
	if ((r = get_mat(g, NAME("attn_q.weight"), qd, d, 1, &L->wq, e))) return r;
	if ((r = get_mat(g, NAME("attn_k.weight"), kvd, d, 1, &L->wk, e))) return r;
	if ((r = get_mat(g, NAME("attn_v.weight"), kvd, d, 1, &L->wv, e))) return r;
	if ((r = get_mat(g, NAME("attn_output.weight"), d, qd, 1, &L->wo, e))) return r;
	if ((r = get_vec(g, NAME("ffn_norm.weight"), d, 1, &L->ffn_norm, e))) return r;
	if ((r = get_mat(g, NAME("ffn_gate.weight"), hp->n_ff, d, 1, &L->w_gate, e))) return r;
	if ((r = get_mat(g, NAME("ffn_up.weight"), hp->n_ff, d, 1, &L->w_up, e))) return r;
	if ((r = get_mat(g, NAME("ffn_down.weight"), d, hp->n_ff, 1, &L->w_down, e))) return r;
	r = get_vec(g, NAME("attn_q.bias"), qd, 0, &L->bq, e);
	if (r && r != ERR_NOTFOUND) return r;
	r = get_vec(g, NAME("attn_k.bias"), kvd, 0, &L->bk, e);
	if (r && r != ERR_NOTFOUND) return r;
	r = get_vec(g, NAME("attn_v.bias"), kvd, 0, &L->bv, e);
	if (r && r != ERR_NOTFOUND) return r;
#undef NAME
	return 0;
}

int model_load_range(const gguf_t *g, int a, int b, int with_embd, model_t **out, err_msg_t *e)
{
	*out = NULL;
	model_t *m = calloc(1, sizeof(*m));
	if (!m)
		return err_set(e, ERR_NOMEM, "out of memory");
	int r = read_hparams(g, &m->hp, e);
	if (r)
		goto fail;
	model_hparams_t *hp = &m->hp;
	if (a < 0 || b > hp->n_layer || a > b) {
		r = err_set(e, ERR_RANGE, "layer range [%d, %d) is outside the model's %d layers", a, b, hp->n_layer);
		goto fail;
	}
	m->gguf = g;
	m->layer_a = a;
	m->layer_b = b;

	/* Vocabulary size: the embedding's rows, else the tokenizer's token list. */
	const gguf_tensor_t *te = gguf_tensor_find(g, "token_embd.weight");
	if (te && te->n_dims == 2)
		hp->n_vocab = (int)(te->ne[1] > 0 && te->ne[1] < (1 << 24) ? te->ne[1] : 0);
	if (!hp->n_vocab) {
		const gguf_kv_t *kv = gguf_kv_find(g, "tokenizer.ggml.tokens");
		if (kv && kv->type == GGUF_ARRAY && kv->arr_n > 0 && kv->arr_n < (1 << 24))
			hp->n_vocab = (int)kv->arr_n;
	}
	if (!hp->n_vocab && with_embd) {
		r = err_set(e, ERR_FORMAT, "cannot tell the vocabulary size (no token_embd.weight)");
		goto fail;
	}

	if (with_embd) {
		if ((r = get_mat(g, "token_embd.weight", hp->n_vocab, hp->n_embd, 1, &m->tok_embd, e)))
			goto fail;
		if ((r = get_vec(g, "output_norm.weight", hp->n_embd, 1, &m->out_norm, e)))
			goto fail;
		r = get_mat(g, "output.weight", hp->n_vocab, hp->n_embd, 0, &m->output, e);
		if (r == ERR_NOTFOUND) {
			m->output = m->tok_embd;
			m->tied_output = 1;
		} else if (r) {
			goto fail;
		}
		m->has_embd = 1;
	}
	r = get_vec(g, "rope_freqs.weight", hp->rope_dim / 2, 0, &m->rope_freqs, e);
	if (r && r != ERR_NOTFOUND)
		goto fail;

	m->layers = calloc((size_t)hp->n_layer, sizeof(model_layer_t));
	if (!m->layers) {
		r = err_set(e, ERR_NOMEM, "out of memory");
		goto fail;
	}
	for (int il = a; il < b; il++)
		if ((r = load_layer(g, hp, il, &m->layers[il], e)))
			goto fail;
	*out = m;
	return 0;
fail:
	model_free(m);
	return r;
}

int model_load(const gguf_t *g, model_t **out, err_msg_t *e)
{
	model_hparams_t hp;
	int r = read_hparams(g, &hp, e);
	if (r) {
		*out = NULL;
		return r;
	}
	return model_load_range(g, 0, hp.n_layer, 1, out, e);
}

void model_free(model_t *m)
{
	if (!m)
		return;
	if (m->pinned)
		munmap(m->pinned, m->pinned_len);
	free(m->layers);
	free(m);
}

static uint64_t mat_bytes(const kern_mat_t *w)
{
	return w->data ? (uint64_t)w->rows * kern_row_size(w->type, w->cols) : 0;
}

uint64_t model_weight_bytes(const model_t *m, int a, int b, int with_head)
{
	uint64_t s = 0;
	for (int il = a; il < b && il < m->layer_b; il++) {
		if (il < m->layer_a)
			continue;
		const model_layer_t *L = &m->layers[il];
		s += mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) + mat_bytes(&L->wo);
		s += mat_bytes(&L->w_gate) + mat_bytes(&L->w_up) + mat_bytes(&L->w_down);
		s += 2 * (uint64_t)m->hp.n_embd * sizeof(float);
	}
	if (with_head && m->has_embd)
		s += mat_bytes(&m->output) + (uint64_t)m->hp.n_embd * sizeof(float);
	return s;
}

/* ---- pinning into huge pages ---- */

struct pin {
	uint8_t *base;      /* NULL: first pass, only sizes are summed */
	size_t off;
	const gguf_t *g;    /* the source mapping, whose pages are dropped once copied */
	int repack;         /* R16 where the kernels gain from it */
};

static void *pin_at(struct pin *p, size_t n)
{
	size_t at = (p->off + 63) & ~(size_t)63;
	p->off = at + n;
	return p->base ? p->base + at : NULL;
}

static const void *pin_one(struct pin *p, const void *src, size_t n)
{
	if (!src || !n)
		return src;
	void *dst = pin_at(p, n);
	if (!dst)
		return src;
	memcpy(dst, src, n);
	gguf_drop_range(p->g, src, n);
	return dst;
}

/* Matrices the generation kernels read faster in R16 layout are repacked
 * on the way (kern.h); the others are copied as they are. */
static void pin_mat(struct pin *p, kern_mat_t *w)
{
	if (!w->data)
		return;
	size_t n = (size_t)w->rows * kern_row_size(w->type, w->cols);
	if (!p->repack || !kern_repack_useful(w)) {
		w->data = pin_one(p, w->data, n);
		return;
	}
	void *dst = pin_at(p, n);
	if (!dst)
		return;
	kern_repack(w, dst);
	gguf_drop_range(p->g, w->data, n);
	w->data = dst;
	w->layout = KERN_LAYOUT_R16;
}

static void pin_vec(struct pin *p, const float **v, int64_t n)
{
	if (*v)
		*v = pin_one(p, *v, (size_t)n * sizeof(float));
}

static void pin_all(model_t *m, struct pin *p)
{
	const model_hparams_t *hp = &m->hp;
	int64_t d = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
	if (m->has_embd) {
		int tied = m->tied_output;
		pin_mat(p, &m->tok_embd);
		if (tied)
			m->output = m->tok_embd;
		else
			pin_mat(p, &m->output);
		pin_vec(p, &m->out_norm, d);
	}
	pin_vec(p, &m->rope_freqs, hp->rope_dim / 2);
	for (int il = m->layer_a; il < m->layer_b; il++) {
		model_layer_t *L = &m->layers[il];
		pin_vec(p, &L->attn_norm, d);
		pin_vec(p, &L->ffn_norm, d);
		pin_vec(p, &L->bq, qd);
		pin_vec(p, &L->bk, kvd);
		pin_vec(p, &L->bv, kvd);
		pin_mat(p, &L->wq);
		pin_mat(p, &L->wk);
		pin_mat(p, &L->wv);
		pin_mat(p, &L->wo);
		pin_mat(p, &L->w_gate);
		pin_mat(p, &L->w_up);
		pin_mat(p, &L->w_down);
	}
}

int model_pin(model_t *m, err_msg_t *e)
{
	return model_pin_ex(m, 0, e);
}

int model_pin_ex(model_t *m, int flags, err_msg_t *e)
{
	if (m->pinned)
		return 0;
	/* Sizes first (a dry run on a copy, so nothing is repointed yet). */
	model_t dry = *m;
	model_layer_t *layers = malloc(sizeof(model_layer_t) * (size_t)m->hp.n_layer);
	if (!layers)
		return err_set(e, ERR_NOMEM, "out of memory");
	memcpy(layers, m->layers, sizeof(model_layer_t) * (size_t)m->hp.n_layer);
	dry.layers = layers;
	struct pin p = { NULL, 0, m->gguf, !(flags & MODEL_PIN_NO_REPACK) };
	pin_all(&dry, &p);
	free(layers);
	const size_t huge = 2u << 20;
	size_t len = (p.off + huge - 1) / huge * huge + huge;
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return err_set(e, ERR_NOMEM, "cannot allocate %zu bytes for the weights", len);
	uint8_t *base = (uint8_t *)(((uintptr_t)map + huge - 1) & ~(uintptr_t)(huge - 1));
	madvise(base, len - (size_t)(base - (uint8_t *)map), MADV_HUGEPAGE);
	struct pin q = { base, 0, m->gguf, !(flags & MODEL_PIN_NO_REPACK) };
	pin_all(m, &q);
	mprotect(map, len, PROT_READ);
	m->pinned = map;
	m->pinned_len = len;
	return 0;
}
