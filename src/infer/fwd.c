/* fwd.c - Llama-family forward pass over a layer range (see fwd.h).
 *
 * Per layer, for the n rows x of the batch (shapes in comments: rows x cols):
 *   xn  = rmsnorm(x) * attn_norm                      (n, d)
 *   q,k,v = xn Wq^T (+bq), xn Wk^T (+bk), xn Wv^T (+bv)  (n, H*hd) (n, Hkv*hd) x2
 *   rope(q, k) at each row's position; k, v -> the row's KV cache
 *   att = softmax(q K^T / sqrt(hd)) V per head, causal (n, H*hd)
 *   x  += att Wo^T
 *   xn  = rmsnorm(x) * ffn_norm
 *   x  += (silu(xn Wg^T) * (xn Wu^T)) Wd^T
 */
#include "infer/fwd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fwd_state {
	int a, b;               /* layer range */
	int n_ctx, pos;
	enum fwd_kv_type kv;
	int kvd;                /* n_head_kv * head_dim */
	size_t esz;             /* bytes per cache element */
	void *k, *v;            /* [layer - a][n_ctx][kvd] */
};

struct fwd_ctx {
	kern_ctx_t kern;
	pool_t *pool;
	float *buf;             /* activation buffers, see ensure_bufs */
	size_t buf_floats;
	float *att_scratch;     /* per thread: scores of up to max_ctx positions */
	size_t att_floats;
};

int fwd_ctx_new(pool_t *pool, fwd_ctx_t **out)
{
	fwd_ctx_t *c = calloc(1, sizeof(*c));
	*out = c;
	if (!c)
		return ERR_NOMEM;
	c->pool = pool;
	kern_ctx_init(&c->kern, pool);
	return 0;
}

void fwd_ctx_free(fwd_ctx_t *c)
{
	if (!c)
		return;
	kern_ctx_close(&c->kern);
	free(c->buf);
	free(c->att_scratch);
	free(c);
}

kern_ctx_t *fwd_ctx_kern(fwd_ctx_t *c) { return &c->kern; }

static int grow(float **p, size_t *have, size_t need)
{
	if (*have >= need)
		return 0;
	float *q = realloc(*p, need * sizeof(float));
	if (!q)
		return ERR_NOMEM;
	*p = q;
	*have = need;
	return 0;
}

uint64_t fwd_state_bytes_for(const model_t *m, int a, int b, int n_ctx, enum fwd_kv_type kv)
{
	uint64_t kvd = (uint64_t)m->hp.n_head_kv * (uint64_t)m->hp.head_dim;
	uint64_t esz = kv == FWD_KV_F16 ? 2 : 4;
	return 2ull * (uint64_t)(b - a) * (uint64_t)n_ctx * kvd * esz;
}

int fwd_state_new(const model_t *m, int a, int b, int n_ctx, enum fwd_kv_type kv, fwd_state_t **out)
{
	*out = NULL;
	if (a < m->layer_a || b > m->layer_b || a > b || n_ctx < 1 || n_ctx > (1 << 24) ||
	    (kv != FWD_KV_F32 && kv != FWD_KV_F16))
		return ERR_INVAL;
	fwd_state_t *s = calloc(1, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	s->a = a;
	s->b = b;
	s->n_ctx = n_ctx;
	s->kv = kv;
	s->kvd = m->hp.n_head_kv * m->hp.head_dim;
	s->esz = kv == FWD_KV_F16 ? 2 : 4;
	size_t half = fwd_state_bytes_for(m, a, b, n_ctx, kv) / 2;
	if (half) {
		s->k = malloc(half);
		s->v = malloc(half);
		if (!s->k || !s->v) {
			fwd_state_free(s);
			return ERR_NOMEM;
		}
	}
	*out = s;
	return 0;
}

void fwd_state_free(fwd_state_t *s)
{
	if (!s)
		return;
	free(s->k);
	free(s->v);
	free(s);
}

int fwd_state_pos(const fwd_state_t *s) { return s->pos; }
int fwd_state_ctx(const fwd_state_t *s) { return s->n_ctx; }
uint64_t fwd_state_bytes(const fwd_state_t *s)
{
	return 2ull * (uint64_t)(s->b - s->a) * (uint64_t)s->n_ctx * (uint64_t)s->kvd * s->esz;
}

int fwd_state_truncate(fwd_state_t *s, int n)
{
	if (n < 0 || n > s->pos)
		return ERR_RANGE;
	s->pos = n;
	return 0;
}

static inline void *kv_at(const fwd_state_t *s, void *base, int layer, int pos)
{
	size_t off = (((size_t)(layer - s->a) * (size_t)s->n_ctx) + (size_t)pos) * (size_t)s->kvd;
	return (char *)base + off * s->esz;
}

int fwd_embed(const model_t *m, const int32_t *tokens, int n, float *hidden, err_msg_t *e)
{
	if (!m->has_embd)
		return err_set(e, ERR_INVAL, "this model was loaded without its embedding");
	for (int i = 0; i < n; i++) {
		if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab)
			return err_set(e, ERR_RANGE, "token id %d at index %d is outside the vocabulary (%d)",
				       tokens[i], i, m->hp.n_vocab);
		int r = kern_get_row(&m->tok_embd, tokens[i], hidden + (size_t)i * m->hp.n_embd);
		if (r)
			return err_set(e, r, "embedding lookup failed for token %d", tokens[i]);
	}
	return 0;
}

/* y = x / rms(x) * w, one row; the sum of squares uses the canonical dot. */
static void rmsnorm_row(float *y, const float *x, const float *w, int d, float eps)
{
	float ss = kern_dot_f32(d, x, x);
	float scale = 1.0f / sqrtf(ss / (float)d + eps);
	for (int i = 0; i < d; i++)
		y[i] = (x[i] * scale) * w[i];
}

struct rms_job {
	float *y;
	const float *x, *w;
	int n, d;
	float eps;
};

static void rms_job_cb(void *arg, int ith, int nth)
{
	struct rms_job *j = arg;
	long lo, hi;
	pool_split(j->n, ith, nth, 1, &lo, &hi);
	for (long i = lo; i < hi; i++)
		rmsnorm_row(j->y + i * j->d, j->x + i * j->d, j->w, j->d, j->eps);
}

/* Runs a job on the pool, or in the caller when it is too small to be worth
 * waking the workers (`work` ~ floating-point operations). The split never
 * changes results, only who computes which rows. */
#ifndef FWD_PAR_MIN_WORK
#define FWD_PAR_MIN_WORK 32768
#endif
static void run_job(fwd_ctx_t *c, pool_fn_cb fn, void *arg, double work)
{
	if (work < FWD_PAR_MIN_WORK)
		fn(arg, 0, 1);
	else
		pool_run(c->pool, fn, arg);
}

static void rmsnorm(fwd_ctx_t *c, float *y, const float *x, const float *w, int n, int d, float eps)
{
	struct rms_job j = { y, x, w, n, d, eps };
	run_job(c, rms_job_cb, &j, 3.0 * n * d);
}

/* The rotation of position pos: cs[i], sn[i] for i < rope_dim / 2. Angles
 * are computed in double from the position, never accumulated, so they do
 * not depend on how the sequence was batched. */
#define ROPE_MAX_HALF 512   /* head_dim <= 1024 (model.c) */
static void rope_angles(int pos, const model_hparams_t *hp, const float *freqs, float *cs, float *sn)
{
	int half = hp->rope_dim / 2;
	for (int i = 0; i < half; i++) {
		double inv = pow((double)hp->rope_theta, -2.0 * i / (double)hp->rope_dim);
		if (freqs)
			inv /= (double)freqs[i];
		double ang = (double)pos * inv;
		cs[i] = (float)cos(ang);
		sn[i] = (float)sin(ang);
	}
}

/* Rotates one head vector v (head_dim) by the angles of its position. */
static void rope_head(float *v, const model_hparams_t *hp, const float *cs, const float *sn)
{
	int half = hp->rope_dim / 2;
	for (int i = 0; i < half; i++) {
		int i0, i1;
		if (hp->rope_type == MODEL_ROPE_NEOX) {
			i0 = i;
			i1 = i + half;
		} else {
			i0 = 2 * i;
			i1 = 2 * i + 1;
		}
		float x0 = v[i0], x1 = v[i1];
		v[i0] = x0 * cs[i] - x1 * sn[i];
		v[i1] = x0 * sn[i] + x1 * cs[i];
	}
}

/* The rows of a batch, flattened: row r belongs to state st[r] at position pos[r]. */
struct attn_job {
	const model_t *m;
	int layer, n;
	fwd_state_t *const *st;
	const int *pos;
	float *q, *k, *v;       /* (n, qd), (n, kvd), (n, kvd) */
	float *out;             /* (n, qd) */
	float *scratch;         /* per thread: max_ctx floats */
	size_t scratch_per;
};

/* Adds biases, applies RoPE and stores K and V of each row into its cache. */
static void qkv_store_cb(void *arg, int ith, int nth)
{
	struct attn_job *j = arg;
	const model_hparams_t *hp = &j->m->hp;
	const model_layer_t *L = &j->m->layers[j->layer];
	int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
	long lo, hi;
	pool_split(j->n, ith, nth, 1, &lo, &hi);
	for (long r = lo; r < hi; r++) {
		float *q = j->q + r * qd, *k = j->k + r * kvd, *v = j->v + r * kvd;
		if (L->bq)
			for (int i = 0; i < qd; i++) q[i] += L->bq[i];
		if (L->bk)
			for (int i = 0; i < kvd; i++) k[i] += L->bk[i];
		if (L->bv)
			for (int i = 0; i < kvd; i++) v[i] += L->bv[i];
		/* one set of angles per row, for all its heads */
		float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
		rope_angles(j->pos[r], hp, j->m->rope_freqs, cs, sn);
		for (int h = 0; h < hp->n_head; h++)
			rope_head(q + h * hp->head_dim, hp, cs, sn);
		for (int h = 0; h < hp->n_head_kv; h++)
			rope_head(k + h * hp->head_dim, hp, cs, sn);
		fwd_state_t *s = j->st[r];
		void *kc = kv_at(s, s->k, j->layer, j->pos[r]);
		void *vc = kv_at(s, s->v, j->layer, j->pos[r]);
		if (s->kv == FWD_KV_F32) {
			memcpy(kc, k, (size_t)kvd * sizeof(float));
			memcpy(vc, v, (size_t)kvd * sizeof(float));
		} else {
			uint16_t *kh = kc, *vh = vc;
			for (int i = 0; i < kvd; i++) {
				kh[i] = kern_f32_to_f16(k[i]);
				vh[i] = kern_f32_to_f16(v[i]);
			}
		}
	}
}

/* Causal attention for (row, head) pairs split across threads. */
static void attn_cb(void *arg, int ith, int nth)
{
	struct attn_job *j = arg;
	const model_hparams_t *hp = &j->m->hp;
	int hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
	int group = hp->n_head / hp->n_head_kv;
	float scale = 1.0f / sqrtf((float)hd);
	float *sc = j->scratch + (size_t)ith * j->scratch_per;
	long lo, hi;
	pool_split((long)j->n * hp->n_head, ith, nth, 1, &lo, &hi);
	for (long p = lo; p < hi; p++) {
		int r = (int)(p / hp->n_head), h = (int)(p % hp->n_head), g = h / group;
		const fwd_state_t *s = j->st[r];
		const float *q = j->q + (size_t)r * qd + (size_t)h * hd;
		float *o = j->out + (size_t)r * qd + (size_t)h * hd;
		/* With an F16 cache, Q and the softmax weights are rounded to F16
		 * too, as llama.cpp's F16 attention products do: the same model
		 * then gives the same logits (within ~3e-5) in both engines. */
		int f16 = s->kv == FWD_KV_F16;
		float qh[1024];
		if (f16) {
			for (int i = 0; i < hd; i++)
				qh[i] = kern_f16_to_f32(kern_f32_to_f16(q[i]));
			q = qh;
		}
		int npos = j->pos[r] + 1;
		float mx = -INFINITY;
		for (int t = 0; t < npos; t++) {
			const void *kt = kv_at(s, s->k, j->layer, t);
			float d = !f16 ? kern_dot_f32(hd, q, (const float *)kt + (size_t)g * hd)
						      : kern_dot_f32_f16(hd, q, (const uint16_t *)kt + (size_t)g * hd);
			sc[t] = d * scale;
			if (sc[t] > mx)
				mx = sc[t];
		}
		float sum = 0.0f;
		for (int t = 0; t < npos; t++) {
			sc[t] = expf(sc[t] - mx);
			sum += sc[t];
		}
		float inv = 1.0f / sum;
		memset(o, 0, (size_t)hd * sizeof(float));
		for (int t = 0; t < npos; t++) {
			const void *vt = kv_at(s, s->v, j->layer, t);
			if (s->kv == FWD_KV_F32)
				kern_axpy_f32(hd, sc[t] * inv, (const float *)vt + (size_t)g * hd, o);
			else
				kern_axpy_f16(hd, kern_f16_to_f32(kern_f32_to_f16(sc[t] * inv)),
					      (const uint16_t *)vt + (size_t)g * hd, o);
		}
		(void)kvd;
	}
}

struct swiglu_job {
	float *g;
	const float *u;
	long n;
};

static void swiglu_cb(void *arg, int ith, int nth)
{
	struct swiglu_job *j = arg;
	long lo, hi;
	pool_split(j->n, ith, nth, 64, &lo, &hi);
	for (long i = lo; i < hi; i++) {
		float x = j->g[i];
		j->g[i] = x / (1.0f + expf(-x)) * j->u[i];
	}
}

static int matmul(fwd_ctx_t *c, const kern_mat_t *w, const float *x, int n, float *y, err_msg_t *e)
{
	int r = kern_matmul(&c->kern, w, x, n, y);
	if (r)
		return err_set(e, r, "matrix product failed (%s, %lld x %lld)", kern_type_name(w->type),
			       (long long)w->rows, (long long)w->cols);
	return 0;
}

/* Products of the same activations (one pass of the pool). */
static int matmul_multi(fwd_ctx_t *c, const kern_mat_t *const *w, int nw, const float *x, int n, float *const *y,
			err_msg_t *e)
{
	int r = kern_matmul_multi(&c->kern, w, nw, x, n, y);
	if (r)
		return err_set(e, r, "matrix product failed (%s, %lld x %lld)", kern_type_name(w[0]->type),
			       (long long)w[0]->rows, (long long)w[0]->cols);
	return 0;
}

int fwd_forward(fwd_ctx_t *c, const model_t *m, const fwd_seg_t *segs, int nseg, float *x, err_msg_t *e)
{
	const model_hparams_t *hp = &m->hp;
	int n = 0, max_ctx = 1;
	if (nseg < 1)
		return err_set(e, ERR_INVAL, "empty batch");
	for (int i = 0; i < nseg; i++) {
		const fwd_state_t *s = segs[i].st;
		if (!s || segs[i].n < 1)
			return err_set(e, ERR_INVAL, "segment %d is empty", i);
		if (i > 0 && s->a != segs[0].st->a)
			return err_set(e, ERR_INVAL, "segments cover different layer ranges");
		if (s->a < m->layer_a || s->b > m->layer_b)
			return err_set(e, ERR_INVAL, "state layers [%d, %d) are not loaded", s->a, s->b);
		if (segs[i].n > s->n_ctx - s->pos)
			return err_set(e, ERR_FULL, "context is full: %d positions used of %d, %d more asked",
				       s->pos, s->n_ctx, segs[i].n);
		for (int k = 0; k < i; k++)
			if (segs[k].st == s)
				return err_set(e, ERR_INVAL, "a state appears twice in one batch");
		n += segs[i].n;
		if (s->pos + segs[i].n > max_ctx)
			max_ctx = s->pos + segs[i].n;
	}
	int a = segs[0].st->a, b = segs[0].st->b;
	int d = hp->n_embd, qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim, ff = hp->n_ff;

	/* Buffers: xn (n,d) q (n,qd) k,v (n,kvd) att (n,qd) tmp (n,d) g,u (n,ff), plus row maps. */
	size_t nn = (size_t)n;
	size_t need = nn * ((size_t)d * 2 + (size_t)qd * 2 + (size_t)kvd * 2 + (size_t)ff * 2);
	need += nn * (sizeof(void *) + sizeof(int)) / sizeof(float) + 4;
	int nth = pool_size(c->pool);
	if (grow(&c->buf, &c->buf_floats, need) ||
	    grow(&c->att_scratch, &c->att_floats, (size_t)nth * (size_t)max_ctx))
		return err_set(e, ERR_NOMEM, "out of memory for a batch of %d rows", n);
	float *xn = c->buf, *q = xn + nn * d, *k = q + nn * qd, *v = k + nn * kvd;
	float *att = v + nn * kvd, *tmp = att + nn * qd, *gg = tmp + nn * d, *uu = gg + nn * ff;
	fwd_state_t **st = (fwd_state_t **)(void *)(uu + nn * ff);
	int *pos = (int *)(void *)(st + nn);
	for (int i = 0, r = 0; i < nseg; i++)
		for (int t = 0; t < segs[i].n; t++, r++) {
			st[r] = segs[i].st;
			pos[r] = segs[i].st->pos + t;
		}

	int rc;
	for (int il = a; il < b; il++) {
		const model_layer_t *L = &m->layers[il];
		rmsnorm(c, xn, x, L->attn_norm, n, d, hp->rms_eps);
		{
			const kern_mat_t *W3[3] = { &L->wq, &L->wk, &L->wv };
			float *Y3[3] = { q, k, v };
			if ((rc = matmul_multi(c, W3, 3, xn, n, Y3, e)))
				return rc;
		}
		struct attn_job aj = { m, il, n, st, pos, q, k, v, att, c->att_scratch, (size_t)max_ctx };
		run_job(c, qkv_store_cb, &aj, 8.0 * n * (qd + kvd));
		run_job(c, attn_cb, &aj, 4.0 * n * qd * (double)max_ctx);
		if ((rc = matmul(c, &L->wo, att, n, tmp, e)))
			return rc;
		for (size_t i = 0; i < nn * d; i++)
			x[i] += tmp[i];
		rmsnorm(c, xn, x, L->ffn_norm, n, d, hp->rms_eps);
		{
			const kern_mat_t *W2[2] = { &L->w_gate, &L->w_up };
			float *Y2[2] = { gg, uu };
			if ((rc = matmul_multi(c, W2, 2, xn, n, Y2, e)))
				return rc;
		}
		struct swiglu_job sj = { gg, uu, (long)nn * ff };
		run_job(c, swiglu_cb, &sj, 20.0 * nn * ff);
		if ((rc = matmul(c, &L->w_down, gg, n, tmp, e)))
			return rc;
		for (size_t i = 0; i < nn * d; i++)
			x[i] += tmp[i];
	}
	for (int i = 0; i < nseg; i++)
		segs[i].st->pos += segs[i].n;
	return 0;
}

int fwd_head(fwd_ctx_t *c, const model_t *m, const float *hidden, int n, float *logits, err_msg_t *e)
{
	if (!m->has_embd)
		return err_set(e, ERR_INVAL, "this model was loaded without its output head");
	int d = m->hp.n_embd;
	size_t need = (size_t)n * d;
	if (grow(&c->buf, &c->buf_floats, need))
		return err_set(e, ERR_NOMEM, "out of memory");
	rmsnorm(c, c->buf, hidden, m->out_norm, n, d, m->hp.rms_eps);
	return matmul(c, &m->output, c->buf, n, logits, e);
}
