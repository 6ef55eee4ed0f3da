/* vocab_bpe.c - byte-level BPE ("gpt2" vocabularies).
 *
 * A fragment of text is decoded into codepoints (only to classify them: the
 * words keep the original bytes), split into words by the pre-tokenizer, and
 * each word is merged on its own. In a word every byte starts as one symbol,
 * standing for the GPT-2 codepoint of that byte; symbols are string ids of
 * the interned table, so a merge lookup is one hash probe on a pair of ids.
 * Adjacent pairs that have a merge rule go into a queue (lowest rank first;
 * on equal ranks the leftmost); popping a pair whose sides have changed since
 * is skipped. Final symbols that are not tokens fall back to single-byte
 * tokens of their UTF-8 text, as llama.cpp does (real vocabularies never
 * need this: every byte's codepoint is a token).
 *
 * Invalid UTF-8: a byte that does not start a complete sequence is
 * classified as U+FFFD (which splits words exactly as llama.cpp does), but
 * the word keeps the byte itself, so decoding gives back the input bytes
 * where llama.cpp would give EF BF BD.
 *
 * With ignore_merges (the llama-3 pre-tokenizers) a word that is a token as
 * a whole becomes that token directly.
 */
#include "model/vocab_impl.h"

typedef struct sym {
	int32_t prev, next;
	int32_t sid;         /* string id, -1 if the text is not interned */
	uint32_t start, n;   /* bytes of the word; n = 0 once merged away */
} sym_t;

typedef struct pair {
	int32_t rank;
	int32_t left, right;
	int32_t sl, sr;      /* string ids of the sides when queued */
	int32_t res;         /* string id of the merged text */
} pair_t;

static inline int before(const pair_t *a, const pair_t *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

typedef struct queue {
	vocab__buf_t *buf;
	size_t n;
} queue_t;

static int push(queue_t *q, const pair_t *p)
{
	if (vocab__reserve(q->buf, (q->n + 1) * sizeof(pair_t)))
		return ERR_NOMEM;
	pair_t *h = q->buf->p;
	size_t i = q->n++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!before(p, &h[up]))
			break;
		h[i] = h[up];
		i = up;
	}
	h[i] = *p;
	return 0;
}

static pair_t pop(queue_t *q)
{
	pair_t *h = q->buf->p;
	pair_t top = h[0], last = h[--q->n];
	size_t i = 0, n = q->n;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && before(&h[c + 1], &h[c]))
			c++;
		if (!before(&h[c], &last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (n)
		h[i] = last;
	return top;
}

static const vocab__merge_t *merge_find(const vocab_t *v, int32_t sl, int32_t sr)
{
	uint64_t key = ((uint64_t)(uint32_t)sl << 32) | (uint32_t)sr;
	uint64_t h = key * 0x9E3779B97F4A7C15ull;
	for (uint32_t i = (uint32_t)(h >> 32) & v->merge_mask;; i = (i + 1) & v->merge_mask) {
		const vocab__merge_t *m = &v->merges[i];
		if (m->key == key)
			return m;
		if (m->key == UINT64_MAX)
			return NULL;
	}
}

static int try_pair(const vocab_t *v, const sym_t *s, int32_t l, int32_t r, queue_t *q)
{
	if (l < 0 || r < 0 || s[l].sid < 0 || s[r].sid < 0)
		return 0;
	const vocab__merge_t *m = merge_find(v, s[l].sid, s[r].sid);
	if (!m)
		return 0;
	pair_t p = { m->rank, l, r, s[l].sid, s[r].sid, m->res };
	return push(q, &p);
}

/* Emits the tokens of one word, p[0..n) (raw bytes). */
static int bpe_word(const vocab_t *v, vocab__work_t *w, const uint8_t *p, size_t n, vocab__out_t *o)
{
	if (v->ignore_merges) {
		if (vocab__reserve(&w->text, 2 * n))
			return ERR_NOMEM;
		uint8_t *x = w->text.p;
		size_t m = 0;
		for (size_t i = 0; i < n; i++) {
			memcpy(x + m, v->byte_enc[p[i]], v->byte_enc_len[p[i]]);
			m += v->byte_enc_len[p[i]];
		}
		int32_t tok = vocab__find_tok(v, x, m);
		if (tok >= 0) {
			vocab__emit(o, tok);
			return 0;
		}
	}
	if (vocab__reserve(&w->sym, n * sizeof(sym_t)))
		return ERR_NOMEM;
	sym_t *s = w->sym.p;
	for (size_t i = 0; i < n; i++)
		s[i] = (sym_t){ (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, v->byte_str[p[i]], (uint32_t)i, 1 };
	queue_t q = { &w->heap, 0 };
	for (size_t i = 1; i < n; i++)
		if (try_pair(v, s, (int32_t)i - 1, (int32_t)i, &q))
			return ERR_NOMEM;
	while (q.n) {
		pair_t pr = pop(&q);
		sym_t *l = &s[pr.left], *r = &s[pr.right];
		if (l->n == 0 || r->n == 0 || l->sid != pr.sl || r->sid != pr.sr || l->next != pr.right)
			continue;   /* stale */
		l->sid = pr.res;
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			s[r->next].prev = pr.left;
		if (try_pair(v, s, l->prev, pr.left, &q) || try_pair(v, s, pr.left, l->next, &q))
			return ERR_NOMEM;
	}
	for (int32_t i = 0; i >= 0; i = s[i].next) {
		int32_t tok = s[i].sid >= 0 ? v->st.s[s[i].sid].tok : -1;
		if (tok >= 0) {
			vocab__emit(o, tok);
			continue;
		}
		for (uint32_t j = 0; j < s[i].n; j++) {
			uint8_t b = p[s[i].start + j];
			for (uint8_t k = 0; k < v->byte_enc_len[b]; k++) {
				int32_t bt = v->single_tok[v->byte_enc[b][k]];
				if (bt >= 0)
					vocab__emit(o, bt);
			}
		}
	}
	return 0;
}

int vocab__bpe_tokenize(const vocab_t *v, vocab__work_t *w, const uint8_t *t, size_t n, vocab__out_t *o)
{
	if (n == 0)
		return 0;
	if (vocab__reserve(&w->cps, (n + 1) * sizeof(uint32_t)) ||
	    vocab__reserve(&w->cls, n * sizeof(uint32_t)) ||
	    vocab__reserve(&w->ends[0], n * sizeof(uint32_t)) ||
	    vocab__reserve(&w->ends[1], n * sizeof(uint32_t)))
		return ERR_NOMEM;
	uint32_t *off = w->cps.p, *cp = w->cls.p;
	size_t ncp = 0;
	for (size_t i = 0; i < n;) {
		uint32_t c;
		size_t k = unicode_decode(t + i, n - i, &c);
		off[ncp] = (uint32_t)i;
		cp[ncp] = VOCAB_CP(c, unicode_class(c));
		ncp++;
		i += k;
	}
	off[ncp] = (uint32_t)n;
	uint32_t *ends = w->ends[0].p;
	size_t nw = vocab__pretokenize(v->pre, cp, ncp, ends, w->ends[1].p);
	size_t a = 0;
	for (size_t i = 0; i < nw; i++) {
		size_t b = ends[i];
		int rc = bpe_word(v, w, t + off[a], off[b] - off[a], o);
		if (rc)
			return rc;
		a = b;
	}
	return 0;
}
