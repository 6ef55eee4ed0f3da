/* vocab.c - building a vocabulary from arrays (validation, hash tables,
 * special-token trie, decoded pieces) and the tokenize entry point.
 *
 * Loading is linear in the size of the vocabulary: token texts are interned in
 * one open-addressing hash table; BPE merges become a second table keyed by
 * the pair of string ids, so the merge loop never hashes text.
 */
#include <math.h>
#include <stdio.h>

#include "base/log.h"
#include "model/vocab_impl.h"

/* ---- hashing and the string table */

uint32_t vocab__hash(const void *p, size_t n)
{
	/* A multiply-xorshift mix over 8-byte words; good enough spread for
	 * token texts, and fast for the short ones that dominate. */
	const uint8_t *s = p;
	uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xFF51AFD7ED558CCDull;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	uint64_t w = 0;
	memcpy(&w, s, n);
	h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
	h ^= h >> 29;
	h *= 0x94D049BB133111EBull;
	h ^= h >> 32;
	return (uint32_t)h;
}

int32_t vocab__str_find(const vocab__strtab_t *t, const void *p, size_t n)
{
	if (!t->slot)
		return -1;
	uint32_t h = vocab__hash(p, n);
	/* The slot holds the hash too, so a probe that misses touches no entry. */
	for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
		uint64_t k = t->slot[i];
		if (k == 0)
			return -1;
		if ((uint32_t)(k >> 32) != h)
			continue;
		const vocab__str_t *e = &t->s[(uint32_t)k - 1];
		if (e->len == n && memcmp(t->pool + e->off, p, n) == 0)
			return (int32_t)((uint32_t)k - 1);
	}
}

static int strtab_rehash(vocab__strtab_t *t, uint32_t n_slots)
{
	uint64_t *slot = calloc(n_slots, sizeof(*slot));
	if (!slot)
		return ERR_NOMEM;
	uint32_t mask = n_slots - 1;
	for (uint32_t k = 0; k < t->n; k++) {
		uint32_t i = t->s[k].hash & mask;
		while (slot[i])
			i = (i + 1) & mask;
		slot[i] = ((uint64_t)t->s[k].hash << 32) | (k + 1);
	}
	free(t->slot);
	t->slot = slot;
	t->mask = mask;
	return 0;
}

int vocab__str_presize(vocab__strtab_t *t, size_t n_more)
{
	size_t want = (size_t)t->n + n_more;
	if (want >= (size_t)INT32_MAX - 1)
		return 0;   /* vocab__str_add refuses the excess later */
	if (want > t->cap) {
		vocab__str_t *s = realloc(t->s, want * sizeof(*s));
		if (!s)
			return ERR_NOMEM;
		t->s = s;
		t->cap = (uint32_t)want;
	}
	uint64_t n_slots = t->slot ? (uint64_t)t->mask + 1 : 2048;
	while ((uint64_t)want * 2 > n_slots)
		n_slots *= 2;
	if (!t->slot || n_slots > (uint64_t)t->mask + 1)
		return strtab_rehash(t, (uint32_t)n_slots);
	return 0;
}

int32_t vocab__str_add(vocab__strtab_t *t, const void *p, size_t n, int32_t tok)
{
	if (n > UINT32_MAX || t->n >= (uint32_t)INT32_MAX - 1 || t->pool_len + n > UINT32_MAX)
		return ERR_RANGE;
	if (t->n == t->cap) {
		uint32_t cap = t->cap ? t->cap * 2 : 1024;
		vocab__str_t *s = realloc(t->s, (size_t)cap * sizeof(*s));
		if (!s)
			return ERR_NOMEM;
		t->s = s;
		t->cap = cap;
	}
	if (!t->slot || (uint64_t)(t->n + 1) * 2 > (uint64_t)t->mask + 1) {
		uint32_t n_slots = t->slot ? (t->mask + 1) * 2 : 2048;
		while ((uint64_t)(t->n + 1) * 2 > n_slots)
			n_slots *= 2;
		if (strtab_rehash(t, n_slots))
			return ERR_NOMEM;
	}
	if (t->pool_len + n > t->pool_cap) {
		size_t cap = t->pool_cap ? t->pool_cap : 4096;
		while (cap < t->pool_len + n)
			cap *= 2;
		char *pool = realloc(t->pool, cap);
		if (!pool)
			return ERR_NOMEM;
		t->pool = pool;
		t->pool_cap = cap;
	}
	if (n)
		memcpy(t->pool + t->pool_len, p, n);
	vocab__str_t *e = &t->s[t->n];
	e->off = (uint32_t)t->pool_len;
	e->len = (uint32_t)n;
	e->hash = vocab__hash(p, n);
	e->tok = tok;
	t->pool_len += n;
	uint32_t i = e->hash & t->mask;
	while (t->slot[i])
		i = (i + 1) & t->mask;
	t->slot[i] = ((uint64_t)e->hash << 32) | (t->n + 1);
	return (int32_t)t->n++;
}

static int32_t str_intern(vocab__strtab_t *t, const void *p, size_t n)
{
	int32_t k = vocab__str_find(t, p, n);
	return k >= 0 ? k : vocab__str_add(t, p, n, -1);
}

int vocab__reserve(vocab__buf_t *b, size_t bytes)
{
	if (bytes <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < bytes)
		cap = cap > SIZE_MAX / 2 ? bytes : cap * 2;
	void *p = realloc(b->p, cap);
	if (!p)
		return ERR_NOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

void vocab__work_free(vocab__work_t *w)
{
	vocab__buf_t *bufs[] = { &w->text, &w->sym, &w->heap, &w->cps, &w->cls,
				 &w->ends[0], &w->ends[1], &w->frag, &w->seen };
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
		free(bufs[i]->p);
		bufs[i]->p = NULL;
		bufs[i]->cap = 0;
	}
}

/* ---- merges table */

static vocab__merge_t *merge_slot(vocab__merge_t *m, uint32_t mask, uint64_t key)
{
	uint64_t h = key * 0x9E3779B97F4A7C15ull;
	for (uint32_t i = (uint32_t)(h >> 32) & mask;; i = (i + 1) & mask)
		if (m[i].key == key || m[i].key == UINT64_MAX)
			return &m[i];
}

/* Splits "left right" at the first space after the first byte (a merge part
 * is never empty, and the left one may itself start with a space in
 * vocabularies that are not byte-level). */
static int merge_split(const char *s, size_t n, size_t *nl)
{
	if (n < 3)
		return ERR_FORMAT;
	const char *sp = memchr(s + 1, ' ', n - 1);
	if (!sp || sp == s + n - 1)
		return ERR_FORMAT;
	*nl = (size_t)(sp - s);
	return 0;
}

static int build_merges(vocab_t *v, const vocab_desc_t *d, err_msg_t *e)
{
	if (d->n_merges > (1u << 28))   /* keeps the table size in 32 bits; real files have < 1M */
		return err_set(e, ERR_RANGE, "%zu merges is too many", d->n_merges);
	uint32_t n_slots = 1024;
	while ((uint64_t)n_slots < (uint64_t)d->n_merges * 2 + 2)
		n_slots *= 2;
	v->merges = malloc((size_t)n_slots * sizeof(*v->merges));
	if (!v->merges)
		return ERR_NOMEM;
	for (uint32_t i = 0; i < n_slots; i++)
		v->merges[i].key = UINT64_MAX;
	v->merge_mask = n_slots - 1;
	char *cat = NULL;
	size_t cat_cap = 0;
	int rc = 0;
	for (size_t i = 0; i < d->n_merges; i++) {
		const char *s = d->merges[i];
		if (!s) {
			rc = err_set(e, ERR_FORMAT, "merge %zu is missing", i);
			break;
		}
		size_t n = d->merge_lens ? d->merge_lens[i] : strlen(s), nl;
		if (merge_split(s, n, &nl)) {
			rc = err_set(e, ERR_FORMAT, "merge %zu ('%.*s') is not two parts separated by a space",
				     i, (int)(n < 40 ? n : 40), s);
			break;
		}
		const char *r = s + nl + 1;
		size_t nr = n - nl - 1;
		if (nl + nr > cat_cap) {
			size_t cap = (nl + nr) * 2 + 64;
			char *c = realloc(cat, cap);
			if (!c) {
				rc = ERR_NOMEM;
				break;
			}
			cat = c;
			cat_cap = cap;
		}
		memcpy(cat, s, nl);
		memcpy(cat + nl, r, nr);
		int32_t sl = str_intern(&v->st, s, nl);
		int32_t sr = sl < 0 ? sl : str_intern(&v->st, r, nr);
		int32_t sm = sr < 0 ? sr : str_intern(&v->st, cat, nl + nr);
		if (sm < 0) {
			rc = err_set(e, sm, "merge %zu: %s", i, err_str(sm));
			break;
		}
		uint64_t key = ((uint64_t)(uint32_t)sl << 32) | (uint32_t)sr;
		vocab__merge_t *m = merge_slot(v->merges, v->merge_mask, key);
		if (m->key == UINT64_MAX) {   /* a repeated pair keeps its first rank */
			m->key = key;
			m->rank = (int32_t)i;
			m->res = sm;
		}
	}
	free(cat);
	return rc;
}

/* ---- special tokens */

static int spec_cmp(const void *a, const void *b)
{
	const vocab__special_t *x = a, *y = b;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

static uint64_t *trie_find_slot(const vocab_t *v, uint64_t key)
{
	uint64_t h = key * 0x9E3779B97F4A7C15ull;
	for (uint32_t i = (uint32_t)(h >> 32) & v->trie_mask;; i = (i + 1) & v->trie_mask)
		if (v->trie_key[i] == key || v->trie_key[i] == UINT64_MAX)
			return &v->trie_key[i];
}

static int build_specials(vocab_t *v)
{
	size_t n = 0, total = 0;
	for (int32_t i = 0; i < v->n_tokens; i++) {
		uint8_t t = v->types[i];
		if ((t == VOCAB_TT_CONTROL || t == VOCAB_TT_USER_DEFINED || t == VOCAB_TT_UNKNOWN) && v->tok_len[i]) {
			n++;
			total += v->tok_len[i];
		}
	}
	if (n == 0)
		return 0;
	if (total >= INT32_MAX / 2)
		return ERR_RANGE;
	v->spec = malloc(n * sizeof(*v->spec));
	if (!v->spec)
		return ERR_NOMEM;
	for (int32_t i = 0; i < v->n_tokens; i++) {
		uint8_t t = v->types[i];
		if ((t == VOCAB_TT_CONTROL || t == VOCAB_TT_USER_DEFINED || t == VOCAB_TT_UNKNOWN) && v->tok_len[i]) {
			vocab__special_t *s = &v->spec[v->n_spec++];
			s->id = i;
			s->len = v->tok_len[i];
			s->off = v->tok_off[i];
			s->always = t == VOCAB_TT_USER_DEFINED;
		}
	}
	qsort(v->spec, v->n_spec, sizeof(*v->spec), spec_cmp);

	/* Byte trie: node 0 is the root; edges in a hash table. */
	uint32_t n_slots = 64;
	while ((uint64_t)n_slots < (uint64_t)total * 2 + 2)
		n_slots *= 2;
	v->trie_key = malloc((size_t)n_slots * sizeof(*v->trie_key));
	v->trie_child = malloc((size_t)n_slots * sizeof(*v->trie_child));
	v->trie_term = malloc((total + 1) * sizeof(*v->trie_term));
	if (!v->trie_key || !v->trie_child || !v->trie_term)
		return ERR_NOMEM;
	for (uint32_t i = 0; i < n_slots; i++)
		v->trie_key[i] = UINT64_MAX;
	v->trie_mask = n_slots - 1;
	v->n_nodes = 1;
	v->trie_term[0] = -1;
	for (uint32_t k = 0; k < v->n_spec; k++) {
		const vocab__special_t *s = &v->spec[k];
		const uint8_t *p = (const uint8_t *)v->st.pool + s->off;
		v->spec_first[p[0]] |= s->always ? 3 : 1;
		uint32_t node = 0;
		for (uint32_t j = 0; j < s->len; j++) {
			uint64_t key = ((uint64_t)node << 8) | p[j];
			uint64_t *slot = trie_find_slot(v, key);
			size_t si = (size_t)(slot - v->trie_key);
			if (*slot == UINT64_MAX) {
				*slot = key;
				v->trie_child[si] = (int32_t)v->n_nodes;
				v->trie_term[v->n_nodes] = -1;
				v->n_nodes++;
			}
			node = (uint32_t)v->trie_child[si];
		}
		if (v->trie_term[node] < 0)   /* texts are unique, so this always holds */
			v->trie_term[node] = (int32_t)k;
	}
	return 0;
}

/* ---- decoded pieces */

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}


static int build_pieces(vocab_t *v)
{
	/* A piece is never longer than the token's text: U+2581 (3 bytes)
	 * becomes 1, a byte token 6 -> 1, a GPT-2 codepoint 1-2 -> 1, and
	 * codepoints copied as they are keep their length. */
	v->piece_pool = malloc(v->st.pool_len + 1);
	v->piece_off = malloc(((size_t)v->n_tokens + 1) * sizeof(*v->piece_off));
	if (!v->piece_pool || !v->piece_off)
		return ERR_NOMEM;
	uint32_t at = 0;
	for (int32_t i = 0; i < v->n_tokens; i++) {
		v->piece_off[i] = at;
		const uint8_t *t = (const uint8_t *)v->st.pool + v->tok_off[i];
		size_t n = v->tok_len[i];
		uint8_t *o = (uint8_t *)v->piece_pool + at;
		size_t m = 0;
		switch (v->types[i]) {
		case VOCAB_TT_CONTROL:
		case VOCAB_TT_UNKNOWN:
		case VOCAB_TT_USER_DEFINED:
			memcpy(o, t, n);
			m = n;
			break;
		case VOCAB_TT_NORMAL:
			if (v->type == VOCAB_SPM) {
				for (size_t j = 0; j < n;) {
					if (j + 3 <= n && t[j] == 0xE2 && t[j + 1] == 0x96 && t[j + 2] == 0x81) {
						o[m++] = ' ';
						j += 3;
					} else {
						o[m++] = t[j++];
					}
				}
			} else {
				for (size_t j = 0; j < n;) {
					uint32_t cp;
					size_t k = unicode_decode(t + j, n - j, &cp);
					int b = k > 1 || cp < 0x80 ? unicode_cp_to_byte(cp) : -1;
					if (b >= 0) {
						o[m++] = (uint8_t)b;
					} else {
						memcpy(o + m, t + j, k);
						m += k;
					}
					j += k;
				}
			}
			break;
		case VOCAB_TT_BYTE:
			if (v->type == VOCAB_SPM) {
				/* validated at load: "<0xHH>" */
				o[m++] = (uint8_t)(hexval(t[3]) * 16 + hexval(t[4]));
			}
			break;
		default:   /* UNUSED, UNDEFINED: nothing */
			break;
		}
		at += (uint32_t)m;
		if (m > v->max_piece)
			v->max_piece = m;
	}
	v->piece_off[v->n_tokens] = at;
	return 0;
}

/* ---- loading */

void vocab_desc_init(vocab_desc_t *d, enum vocab_type type)
{
	memset(d, 0, sizeof(*d));
	d->type = type;
	d->bos = d->eos = d->unk = VOCAB_ID_DEFAULT;
	d->pad = d->eot = d->eom = -1;
	d->add_bos = d->add_eos = d->add_space_prefix = -1;
}

static int resolve_id(const vocab_t *v, const char *what, int64_t id, int64_t dflt, int32_t *out, err_msg_t *e)
{
	if (id == VOCAB_ID_DEFAULT) {
		*out = dflt >= 0 && dflt < v->n_tokens ? (int32_t)dflt : VOCAB_NONE;
		return 0;
	}
	if (id == -1) {
		*out = VOCAB_NONE;
		return 0;
	}
	if (id < 0 || id >= v->n_tokens)
		return err_set(e, ERR_RANGE, "%s token id %lld is out of range (vocabulary of %d tokens)",
			       what, (long long)id, (int)v->n_tokens);
	*out = (int32_t)id;
	return 0;
}

/* Texts llama.cpp treats as end-of-generation markers (and forces to CONTROL). */
static int is_eog_text(const char *s, size_t n)
{
	static const char *const eog[] = { "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
					   "<|endoftext|>", "<|eom_id|>", "<EOT>" };
	for (size_t i = 0; i < sizeof(eog) / sizeof(eog[0]); i++)
		if (strlen(eog[i]) == n && memcmp(eog[i], s, n) == 0)
			return 1;
	return 0;
}

static int load(vocab_t *v, const vocab_desc_t *d, err_msg_t *e)
{
	int rc;
	if (d->type != VOCAB_SPM && d->type != VOCAB_BPE)
		return err_set(e, ERR_INVAL, "unknown vocabulary type %d", (int)d->type);
	if (d->n_tokens == 0)
		return err_set(e, ERR_FORMAT, "the vocabulary has no tokens");
	if (d->n_tokens > (1u << 28))   /* bounds every table size well inside 32 bits */
		return err_set(e, ERR_RANGE, "%zu tokens is too many", d->n_tokens);
	if (!d->tokens)
		return err_set(e, ERR_INVAL, "no token texts given");
	v->type = d->type;
	v->n_tokens = (int32_t)d->n_tokens;

	int pre_add_bos = -1;
	v->pre = VOCAB_PRE_NONE;
	v->pre_name = "";
	if (v->type == VOCAB_BPE) {
		size_t pl = d->pre ? strlen(d->pre) : 0;
		if (vocab__pre_lookup(d->pre, pl, &v->pre, &v->pre_name, &v->ignore_merges, &pre_add_bos))
			return err_set(e, ERR_UNSUPPORTED, "unknown BPE pre-tokenizer '%.60s'", d->pre);
	}

	size_t n = d->n_tokens;
	/* Room for the tokens and, for BPE, the merge parts that are not
	 * tokens (a guess: most are), so loading rehashes rarely. */
	if (vocab__str_presize(&v->st, n + (v->type == VOCAB_BPE ? d->n_merges / 4 : 0)))
		return ERR_NOMEM;
	v->tok_off = malloc(n * sizeof(*v->tok_off));
	v->tok_len = malloc(n * sizeof(*v->tok_len));
	v->scores = malloc(n * sizeof(*v->scores));
	v->types = malloc(n);
	v->tflags = calloc(n, 1);
	if (!v->tok_off || !v->tok_len || !v->scores || !v->types || !v->tflags)
		return ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *s = d->tokens[i];
		if (!s)
			return err_set(e, ERR_FORMAT, "token %zu has no text", i);
		size_t len = d->token_lens ? d->token_lens[i] : strlen(s);
		float sc = d->scores ? d->scores[i] : 0.0f;
		if (isnan(sc))
			return err_set(e, ERR_FORMAT, "token %zu: score is not a number", i);
		int32_t ty = d->types ? d->types[i] : VOCAB_TT_NORMAL;
		if (ty < VOCAB_TT_UNDEFINED || ty > VOCAB_TT_BYTE)
			return err_set(e, ERR_FORMAT, "token %zu: unknown token type %d", i, (int)ty);
		if (ty == VOCAB_TT_BYTE && v->type == VOCAB_SPM &&
		    (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' ||
		     hexval((uint8_t)s[3]) < 0 || hexval((uint8_t)s[4]) < 0))
			return err_set(e, ERR_FORMAT, "token %zu has type BYTE but its text is not <0xNN>", i);
		v->scores[i] = sc;
		v->types[i] = (uint8_t)ty;
		if (len == 0) {   /* kept, but can never match any text */
			v->tok_off[i] = 0;
			v->tok_len[i] = 0;
			continue;
		}
		int32_t dup = vocab__str_find(&v->st, s, len);
		if (dup >= 0)
			return err_set(e, ERR_FORMAT, "token %zu has the same text as token %d", i,
				       (int)v->st.s[dup].tok);
		int32_t k = vocab__str_add(&v->st, s, len, (int32_t)i);
		if (k < 0)
			return err_set(e, k, "token %zu: %s", i, err_str(k));
		v->tok_off[i] = v->st.s[k].off;
		v->tok_len[i] = (uint32_t)len;
		if (len > v->max_token_len)
			v->max_token_len = len;
		if (is_eog_text(s, len)) {
			v->tflags[i] |= VOCAB_TF_EOG;
			v->types[i] = VOCAB_TT_CONTROL;
		}
	}

	int spm = v->type == VOCAB_SPM;
	if ((rc = resolve_id(v, "BOS", d->bos, spm ? 1 : -1, &v->bos, e)) ||
	    (rc = resolve_id(v, "EOS", d->eos, spm ? 2 : -1, &v->eos, e)) ||
	    (rc = resolve_id(v, "unknown", d->unk, spm ? 0 : -1, &v->unk, e)) ||
	    (rc = resolve_id(v, "padding", d->pad, -1, &v->pad, e)) ||
	    (rc = resolve_id(v, "EOT", d->eot, -1, &v->eot, e)) ||
	    (rc = resolve_id(v, "EOM", d->eom, -1, &v->eom, e)))
		return rc;
	int32_t eogs[] = { v->eos, v->eot, v->eom };
	for (size_t i = 0; i < 3; i++)
		if (eogs[i] >= 0)
			v->tflags[eogs[i]] |= VOCAB_TF_EOG;

	v->add_bos = d->add_bos >= 0 ? !!d->add_bos : spm ? 1 : pre_add_bos > 0;
	v->add_eos = d->add_eos >= 0 ? !!d->add_eos : 0;
	v->add_space_prefix = d->add_space_prefix >= 0 ? !!d->add_space_prefix : spm;
	if (v->add_bos && v->bos < 0) {
		log_warn("vocab", "the vocabulary asks for BOS but has none; not adding it");
		v->add_bos = 0;
	}
	if (v->add_eos && v->eos < 0) {
		log_warn("vocab", "the vocabulary asks for EOS but has none; not adding it");
		v->add_eos = 0;
	}

	if (spm) {
		v->spm_split_words = 1;
		for (int32_t i = 0; i < v->n_tokens && v->spm_split_words; i++) {
			const uint8_t *t = (const uint8_t *)v->st.pool + v->tok_off[i];
			for (uint32_t j = 1; j + 3 <= v->tok_len[i]; j++) {
				if (t[j] == 0xE2 && t[j + 1] == 0x96 && t[j + 2] == 0x81 &&
				    !(j >= 3 && t[j - 3] == 0xE2 && t[j - 2] == 0x96 && t[j - 1] == 0x81)) {
					v->spm_split_words = 0;
					break;
				}
			}
		}
		for (int b = 0; b < 256; b++) {
			char hex[7];
			snprintf(hex, sizeof(hex), "<0x%02X>", b);
			int32_t t = vocab__find_tok(v, hex, 6);
			if (t < 0) {
				uint8_t c = (uint8_t)b;
				t = vocab__find_tok(v, &c, 1);
			}
			v->byte_tok[b] = t >= 0 ? t : v->unk;
		}
	} else {
		if (d->n_merges && !d->merges)
			return err_set(e, ERR_INVAL, "no merge texts given");
		if ((rc = build_merges(v, d, e)))
			return rc;
		for (int b = 0; b < 256; b++) {
			v->byte_enc_len[b] = (uint8_t)unicode_encode(unicode_byte_to_cp((uint8_t)b), v->byte_enc[b]);
			v->byte_str[b] = vocab__str_find(&v->st, v->byte_enc[b], v->byte_enc_len[b]);
			uint8_t c = (uint8_t)b;
			v->single_tok[b] = vocab__find_tok(v, &c, 1);
		}
	}
	if ((rc = build_specials(v)))
		return err_set(e, rc, "special tokens: %s", err_str(rc));
	if ((rc = build_pieces(v)))
		return rc;
	return 0;
}

int vocab_new_from_arrays(const vocab_desc_t *d, vocab_t **out, err_msg_t *e)
{
	*out = NULL;
	if (!d)
		return err_set(e, ERR_INVAL, "no vocabulary description");
	vocab_t *v = calloc(1, sizeof(*v));
	if (!v)
		return err_set(e, ERR_NOMEM, "out of memory");
	int rc = load(v, d, e);
	if (rc) {
		if (rc == ERR_NOMEM)
			err_set(e, ERR_NOMEM, "out of memory loading the vocabulary");
		vocab_free(v);
		return rc;
	}
	*out = v;
	return 0;
}

void vocab_free(vocab_t *v)
{
	if (!v)
		return;
	free(v->st.pool);
	free(v->st.s);
	free(v->st.slot);
	free(v->tok_off);
	free(v->tok_len);
	free(v->scores);
	free(v->types);
	free(v->tflags);
	free(v->piece_pool);
	free(v->piece_off);
	free(v->merges);
	free(v->spec);
	free(v->trie_key);
	free(v->trie_child);
	free(v->trie_term);
	free(v);
}

/* ---- accessors */

enum vocab_type vocab_get_type(const vocab_t *v) { return v->type; }
const char *vocab_pre_name(const vocab_t *v) { return v->pre_name; }
int32_t vocab_n_tokens(const vocab_t *v) { return v->n_tokens; }
int32_t vocab_bos(const vocab_t *v) { return v->bos; }
int32_t vocab_eos(const vocab_t *v) { return v->eos; }
int32_t vocab_eot(const vocab_t *v) { return v->eot; }
int32_t vocab_unk(const vocab_t *v) { return v->unk; }
int32_t vocab_pad(const vocab_t *v) { return v->pad; }
int vocab_adds_bos(const vocab_t *v) { return v->add_bos; }
int vocab_adds_eos(const vocab_t *v) { return v->add_eos; }

int vocab_is_eog(const vocab_t *v, int32_t id)
{
	return id >= 0 && id < v->n_tokens && (v->tflags[id] & VOCAB_TF_EOG);
}

const char *vocab_token_text(const vocab_t *v, int32_t id, size_t *len)
{
	if (id < 0 || id >= v->n_tokens)
		return NULL;
	if (len)
		*len = v->tok_len[id];
	return v->st.pool ? v->st.pool + v->tok_off[id] : "";
}

float vocab_token_score(const vocab_t *v, int32_t id)
{
	return id >= 0 && id < v->n_tokens ? v->scores[id] : 0.0f;
}

enum vocab_ttype vocab_token_type(const vocab_t *v, int32_t id)
{
	return id >= 0 && id < v->n_tokens ? (enum vocab_ttype)v->types[id] : VOCAB_TT_UNDEFINED;
}

int32_t vocab_find(const vocab_t *v, const char *s, size_t n)
{
	return n ? vocab__find_tok(v, s, n) : VOCAB_NONE;
}

/* ---- tokenize: special-token partition, then the model's tokenizer per
 * piece of plain text. */

/* A fragment of the text: plain text [start, start+len), or a special token.
 * Kept as a singly linked list in an array, in text order. */
typedef struct frag {
	uint32_t start, len;
	int32_t tok;     /* -1 for text */
	int32_t next;    /* index, -1 at the end */
} frag_t;

static int eligible(const vocab__special_t *s, int parse_special)
{
	return parse_special || s->always;
}

/* The partition llama.cpp does: for each special token in priority order,
 * every leftmost non-overlapping occurrence inside a still-plain fragment
 * becomes that token. To avoid a pass over the text per special token, a
 * first scan with the trie finds which special tokens occur at all; only
 * those are searched for. */
static int partition(const vocab_t *v, vocab__work_t *w, const uint8_t *t, size_t n, int parse_special,
		     frag_t **frags_out)
{
	if (vocab__reserve(&w->frag, sizeof(frag_t)))
		return ERR_NOMEM;
	frag_t *f = w->frag.p;
	f[0] = (frag_t){ 0, (uint32_t)n, -1, -1 };
	*frags_out = f;
	if (v->n_spec == 0)
		return 0;
	uint8_t need = parse_special ? 1 : 2;
	if (vocab__reserve(&w->seen, v->n_spec))
		return ERR_NOMEM;
	uint8_t *seen = w->seen.p;
	memset(seen, 0, v->n_spec);
	size_t n_seen = 0;
	for (size_t p = 0; p < n; p++) {
		if (!(v->spec_first[t[p]] & need))
			continue;
		uint32_t node = 0;
		for (size_t q = p; q < n; q++) {
			uint64_t key = ((uint64_t)node << 8) | t[q];
			uint64_t *slot = trie_find_slot(v, key);
			if (*slot == UINT64_MAX)
				break;
			node = (uint32_t)v->trie_child[slot - v->trie_key];
			int32_t k = v->trie_term[node];
			if (k >= 0 && !seen[k] && eligible(&v->spec[k], parse_special)) {
				seen[k] = 1;
				n_seen++;
			}
		}
	}
	if (n_seen == 0)
		return 0;

	size_t n_frag = 1;
	for (uint32_t k = 0; k < v->n_spec; k++) {
		if (!seen[k])
			continue;
		const vocab__special_t *s = &v->spec[k];
		const uint8_t *st = (const uint8_t *)v->st.pool + s->off;
		for (int32_t i = 0; i >= 0; i = f[i].next) {
			if (f[i].tok >= 0)
				continue;
			/* Search f[i]; on a match it becomes [text before] token [text after],
			 * and the search goes on in the part after. */
			size_t a = f[i].start, b = a + f[i].len;
			while (b - a >= s->len) {
				const uint8_t *m = NULL;
				for (const uint8_t *c = t + a; c + s->len <= t + b;) {
					c = memchr(c, st[0], (size_t)(t + b - c) - s->len + 1);
					if (!c)
						break;
					if (memcmp(c, st, s->len) == 0) {
						m = c;
						break;
					}
					c++;
				}
				if (!m)
					break;
				size_t mp = (size_t)(m - t), me = mp + s->len;
				/* At most two new fragments per match. */
				if (vocab__reserve(&w->frag, (n_frag + 2) * sizeof(frag_t)))
					return ERR_NOMEM;
				f = w->frag.p;
				*frags_out = f;
				int32_t after = f[i].next;
				int32_t cur = i;
				if (mp > a) {
					f[cur].len = (uint32_t)(mp - a);
					int32_t tk = (int32_t)n_frag++;
					f[cur].next = tk;
					cur = tk;
				}
				f[cur] = (frag_t){ (uint32_t)mp, (uint32_t)s->len, s->id, after };
				if (me < b) {
					int32_t rest = (int32_t)n_frag++;
					f[rest] = (frag_t){ (uint32_t)me, (uint32_t)(b - me), -1, after };
					f[cur].next = rest;
					i = rest;
					a = me;
				} else {
					i = cur;
					break;
				}
			}
		}
	}
	return 0;
}

static int spm_fragment(const vocab_t *v, vocab__work_t *w, const uint8_t *t, size_t n, int space,
			vocab__out_t *o)
{
	/* Escape: an optional leading marker, then every ' ' as U+2581. */
	if (vocab__reserve(&w->text, 3 * n + 3))
		return ERR_NOMEM;
	uint8_t *x = w->text.p;
	size_t m = 0;
	if (space) {
		x[m++] = 0xE2; x[m++] = 0x96; x[m++] = 0x81;
	}
	for (size_t i = 0; i < n; i++) {
		if (t[i] == ' ') {
			x[m++] = 0xE2; x[m++] = 0x96; x[m++] = 0x81;
		} else {
			x[m++] = t[i];
		}
	}
	return vocab__spm_tokenize(v, w, x, m, o);
}

int vocab_tokenize(const vocab_t *v, const char *text, size_t len, int add_special, int parse_special,
		   int32_t *out, size_t cap, size_t *n_out)
{
	if (!v || !n_out || (!text && len) || (!out && cap))
		return ERR_INVAL;
	*n_out = 0;
	if (len > VOCAB_MAX_TEXT)
		return ERR_RANGE;
	vocab__out_t o = { out, cap, 0 };
	vocab__work_t w = { 0 };
	const uint8_t *t = (const uint8_t *)text;
	int rc = 0;
	if (add_special && v->add_bos)
		vocab__emit(&o, v->bos);
	if (len > 0) {
		frag_t *f = NULL;
		rc = partition(v, &w, t, len, parse_special, &f);
		/* SPM puts a space marker before text that starts the input or
		 * follows a special token (llama.cpp's behaviour). */
		int prev_special = 1;
		for (int32_t i = 0; rc == 0 && i >= 0; i = f[i].next) {
			if (f[i].tok >= 0) {
				vocab__emit(&o, f[i].tok);
				prev_special = 1;
				continue;
			}
			if (v->type == VOCAB_SPM) {
				rc = spm_fragment(v, &w, t + f[i].start, f[i].len, v->add_space_prefix && prev_special, &o);
				prev_special = 0;
			} else {
				rc = vocab__bpe_tokenize(v, &w, t + f[i].start, f[i].len, &o);
			}
			f = w.frag.p;   /* the tokenizers do not touch it, but stay safe */
		}
	}
	if (rc == 0 && add_special && v->add_eos)
		vocab__emit(&o, v->eos);
	vocab__work_free(&w);
	if (rc)
		return rc;
	*n_out = o.n;
	return o.n > cap ? ERR_FULL : 0;
}
