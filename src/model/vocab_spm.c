/* vocab_spm.c - the SentencePiece-style tokenizer of "llama" vocabularies.
 *
 * The text (spaces already replaced by U+2581) starts as one symbol per
 * UTF-8 character - by the lead byte's length, so invalid bytes are symbols
 * too. Every adjacent pair whose concatenation is a token goes into a queue
 * ordered by that token's score (highest first; on equal scores the leftmost
 * pair). The best pair is merged, its neighbours' pairs are queued, and so on
 * until no pair is left; queued pairs made stale by an earlier merge are
 * recognised by their length and skipped. Each final symbol is its token, or
 * if it is not one, its bytes as <0xNN> byte tokens.
 */
#include "model/vocab_impl.h"

typedef struct sym {
	int32_t prev, next;
	uint32_t start, n;   /* bytes of the text; n = 0 once merged away */
} sym_t;

typedef struct pair {
	float score;
	int32_t left, right;
	uint32_t size;       /* bytes of left + right when queued */
} pair_t;

/* Does a come out of the queue before b? */
static inline int before(const pair_t *a, const pair_t *b)
{
	return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct queue {
	vocab__buf_t *buf;
	size_t n;
} queue_t;

static int push(queue_t *q, pair_t p)
{
	if (vocab__reserve(q->buf, (q->n + 1) * sizeof(pair_t)))
		return ERR_NOMEM;
	pair_t *h = q->buf->p;
	size_t i = q->n++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!before(&p, &h[up]))
			break;
		h[i] = h[up];
		i = up;
	}
	h[i] = p;
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

static int try_pair(const vocab_t *v, const uint8_t *t, const sym_t *s, int32_t l, int32_t r, queue_t *q)
{
	if (l < 0 || r < 0)
		return 0;
	uint32_t size = s[l].n + s[r].n;
	if (size > v->max_token_len)
		return 0;
	int32_t tok = vocab__find_tok(v, t + s[l].start, size);
	if (tok < 0)
		return 0;
	return push(q, (pair_t){ v->scores[tok], l, r, size });
}

/* Merges symbols [a, b) (linked among themselves) and emits their tokens. */
static int run_chunk(const vocab_t *v, const uint8_t *t, sym_t *s, int32_t a, int32_t b, queue_t *q,
		     vocab__out_t *o)
{
	s[a].prev = -1;
	s[b - 1].next = -1;
	q->n = 0;
	for (int32_t i = a + 1; i < b; i++)
		if (try_pair(v, t, s, i - 1, i, q))
			return ERR_NOMEM;
	while (q->n) {
		pair_t p = pop(q);
		sym_t *l = &s[p.left], *r = &s[p.right];
		if (l->n == 0 || r->n == 0 || l->n + r->n != p.size || l->next != p.right)
			continue;   /* stale: one side changed since it was queued */
		l->n += r->n;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			s[r->next].prev = p.left;
		if (try_pair(v, t, s, l->prev, p.left, q) || try_pair(v, t, s, p.left, l->next, q))
			return ERR_NOMEM;
	}
	for (int32_t i = a; i >= 0; i = s[i].next) {
		int32_t tok = vocab__find_tok(v, t + s[i].start, s[i].n);
		if (tok >= 0) {
			vocab__emit(o, tok);
			continue;
		}
		for (uint32_t j = 0; j < s[i].n; j++) {
			int32_t bt = v->byte_tok[t[s[i].start + j]];
			if (bt >= 0)
				vocab__emit(o, bt);
		}
	}
	return 0;
}

static int is_marker(const uint8_t *t, const sym_t *s)
{
	return s->n == 3 && t[s->start] == 0xE2 && t[s->start + 1] == 0x96 && t[s->start + 2] == 0x81;
}

int vocab__spm_tokenize(const vocab_t *v, vocab__work_t *w, const uint8_t *t, size_t n, vocab__out_t *o)
{
	if (n == 0)
		return 0;
	if (vocab__reserve(&w->sym, n * sizeof(sym_t)))
		return ERR_NOMEM;
	sym_t *s = w->sym.p;
	int32_t ns = 0;
	for (size_t off = 0; off < n;) {
		size_t len = unicode_len_utf8(t[off]);
		if (len > n - off)
			len = n - off;
		s[ns] = (sym_t){ ns - 1, ns + 1, (uint32_t)off, (uint32_t)len };
		ns++;
		off += len;
	}
	/* The merge order is global, but where no token can span a symbol
	 * boundary the two sides never interact, so they can be merged one
	 * after the other with a small queue. With spm_split_words no token
	 * has U+2581 after another character, so every marker that follows a
	 * non-marker starts such an independent chunk (a word). */
	queue_t q = { &w->heap, 0 };
	int32_t a = 0;
	for (int32_t i = 1; i <= ns; i++) {
		if (i < ns && !(v->spm_split_words && is_marker(t, &s[i]) && !is_marker(t, &s[i - 1])))
			continue;
		int rc = run_chunk(v, t, s, a, i, &q, o);
		if (rc)
			return rc;
		a = i;
	}
	return 0;
}
