#include "infer/gen.h"

#include <stdlib.h>
#include <string.h>

struct gen {
	const model_t *m;
	fwd_ctx_t *fc;
	int nr;
	fwd_state_t *st[GEN_MAX_RANGES];
	int n_batch, n_ctx;
	float *hidden;      /* n_batch x d */
	float *logits;      /* n_vocab */
};

int gen_new(const model_t *m, pool_t *pool, const gen_opts_t *o, gen_t **out, err_msg_t *e)
{
	*out = NULL;
	const model_hparams_t *hp = &m->hp;
	if (!m->has_embd || m->layer_a != 0 || m->layer_b != hp->n_layer)
		return err_set(e, ERR_INVAL, "local generation needs the whole model loaded");
	int nr = o->n_ranges > 0 ? o->n_ranges : 1;
	if (nr > GEN_MAX_RANGES || nr > hp->n_layer)
		return err_set(e, ERR_RANGE, "cannot split %d layers into %d ranges", hp->n_layer, nr);
	gen_t *g = calloc(1, sizeof(*g));
	if (!g)
		return err_set(e, ERR_NOMEM, "out of memory");
	g->m = m;
	g->nr = nr;
	g->n_ctx = o->n_ctx > 0 ? o->n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
	g->n_batch = o->n_batch > 0 ? o->n_batch : 512;
	int r = fwd_ctx_new(pool, &g->fc);
	if (r)
		goto oom;
	for (int i = 0; i < nr; i++) {
		int a = hp->n_layer * i / nr, b = hp->n_layer * (i + 1) / nr;
		if ((r = fwd_state_new(m, a, b, g->n_ctx, o->kv, &g->st[i])))
			goto oom;
	}
	g->hidden = malloc(sizeof(float) * (size_t)g->n_batch * (size_t)hp->n_embd);
	g->logits = malloc(sizeof(float) * (size_t)hp->n_vocab);
	if (!g->hidden || !g->logits)
		goto oom;
	*out = g;
	return 0;
oom:
	gen_free(g);
	return err_set(e, ERR_NOMEM, "out of memory for a context of %d positions (KV cache %llu MiB)",
		       o->n_ctx, (unsigned long long)(fwd_state_bytes_for(m, 0, hp->n_layer, o->n_ctx > 0 ? o->n_ctx : 1, o->kv) >> 20));
}

void gen_free(gen_t *g)
{
	if (!g)
		return;
	for (int i = 0; i < g->nr; i++)
		fwd_state_free(g->st[i]);
	fwd_ctx_free(g->fc);
	free(g->hidden);
	free(g->logits);
	free(g);
}

int gen_pos(const gen_t *g) { return fwd_state_pos(g->st[0]); }
int gen_ctx(const gen_t *g) { return g->n_ctx; }

int gen_rewind(gen_t *g, int n)
{
	if (n < 0 || n > gen_pos(g))
		return ERR_RANGE;
	for (int i = 0; i < g->nr; i++)
		if (fwd_state_truncate(g->st[i], n))
			return ERR_RANGE;
	return 0;
}

int gen_eval(gen_t *g, const int32_t *tokens, int n, const float **logits, float *all_logits, err_msg_t *e)
{
	if (n < 1)
		return err_set(e, ERR_INVAL, "no tokens to evaluate");
	if (n > g->n_ctx - gen_pos(g))
		return err_set(e, ERR_FULL, "context limit reached: %d positions used of %d, %d more asked",
			       gen_pos(g), g->n_ctx, n);
	const model_t *m = g->m;
	int d = m->hp.n_embd, r;
	int start = gen_pos(g);
	for (int off = 0; off < n; off += g->n_batch) {
		int nb = n - off < g->n_batch ? n - off : g->n_batch;
		if ((r = fwd_embed(m, tokens + off, nb, g->hidden, e)))
			goto fail;
		for (int i = 0; i < g->nr; i++) {
			fwd_seg_t seg = { g->st[i], nb };
			if ((r = fwd_forward(g->fc, m, &seg, 1, g->hidden, e)))
				goto fail;
		}
		if (all_logits) {
			if ((r = fwd_head(g->fc, m, g->hidden, nb, all_logits + (size_t)off * m->hp.n_vocab, e)))
				goto fail;
		}
		if (off + nb == n) {
			if ((r = fwd_head(g->fc, m, g->hidden + (size_t)(nb - 1) * d, 1, g->logits, e)))
				goto fail;
		}
	}
	if (logits)
		*logits = g->logits;
	return 0;
fail:
	/* Leave every range where it was before this call. */
	for (int i = 0; i < g->nr; i++)
		if (fwd_state_pos(g->st[i]) > start && fwd_state_truncate(g->st[i], start) != 0)
			break;
	return r;
}
