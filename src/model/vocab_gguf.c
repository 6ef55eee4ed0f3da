/* vocab_gguf.c - reads tokenizer.ggml.* metadata into a vocab_desc_t and
 * builds the vocabulary from it. The reader has validated the file's
 * structure; here the types, lengths and values of the keys are checked. */
#include <stdio.h>

#include "model/vocab_impl.h"

static const gguf_kv_t *find_arr(const gguf_t *g, const char *key, int *rc, err_msg_t *e)
{
	const gguf_kv_t *kv = gguf_kv_find(g, key);
	*rc = 0;
	if (kv && kv->type != GGUF_ARRAY) {
		*rc = err_set(e, ERR_FORMAT, "%s is a %s, not an array", key, gguf_vtype_name(kv->type));
		return NULL;
	}
	return kv;
}

static int is_int_type(enum gguf_vtype t)
{
	return t == GGUF_UINT8 || t == GGUF_INT8 || t == GGUF_UINT16 || t == GGUF_INT16 ||
	       t == GGUF_UINT32 || t == GGUF_INT32 || t == GGUF_UINT64 || t == GGUF_INT64;
}

/* An optional token id: absent -> VOCAB_ID_DEFAULT; -1 or 0xFFFFFFFF (how
 * converters write "none") -> -1. Range is checked by the builder. */
static int get_id(const gguf_t *g, const char *key, int64_t *out, err_msg_t *e)
{
	int64_t x;
	int rc = gguf_get_i64(g, key, &x);
	if (rc == ERR_NOTFOUND) {
		*out = VOCAB_ID_DEFAULT;
		return 0;
	}
	if (rc)
		return err_set(e, ERR_FORMAT, "%s is not an integer", key);
	if (x == -1 || x == (int64_t)UINT32_MAX)
		x = -1;
	else if (x < 0 || x > INT32_MAX)
		return err_set(e, ERR_RANGE, "%s = %lld is out of range", key, (long long)x);
	*out = x;
	return 0;
}

static int get_flag(const gguf_t *g, const char *key, int *out, err_msg_t *e)
{
	int b;
	int rc = gguf_get_bool(g, key, &b);
	if (rc == ERR_NOTFOUND) {
		*out = -1;
		return 0;
	}
	if (rc)
		return err_set(e, ERR_FORMAT, "%s is not a bool", key);
	*out = !!b;
	return 0;
}

int vocab_new_from_gguf(const gguf_t *g, vocab_t **out, err_msg_t *e)
{
	*out = NULL;
	gguf_str_t model;
	int rc = gguf_get_str(g, "tokenizer.ggml.model", &model);
	if (rc == ERR_NOTFOUND)
		return err_set(e, ERR_NOTFOUND, "the file has no tokenizer (tokenizer.ggml.model)");
	if (rc)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.model is not a string");
	enum vocab_type type;
	if (model.n == 5 && memcmp(model.p, "llama", 5) == 0)
		type = VOCAB_SPM;
	else if (model.n == 4 && memcmp(model.p, "gpt2", 4) == 0)
		type = VOCAB_BPE;
	else
		return err_set(e, ERR_UNSUPPORTED, "tokenizer model '%.*s' is not supported (only llama, gpt2)",
			       (int)(model.n < 40 ? model.n : 40), model.p);

	vocab_desc_t d;
	vocab_desc_init(&d, type);
	char pre[64] = "";
	gguf_str_t ps;
	rc = gguf_get_str(g, "tokenizer.ggml.pre", &ps);
	if (rc == 0) {
		if (ps.n >= sizeof(pre) || memchr(ps.p, 0, ps.n))
			return err_set(e, ERR_UNSUPPORTED, "unknown BPE pre-tokenizer '%.*s'",
				       (int)(ps.n < 40 ? ps.n : 40), ps.p);
		memcpy(pre, ps.p, ps.n);
		pre[ps.n] = 0;
		d.pre = pre;
	} else if (rc != ERR_NOTFOUND) {
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.pre is not a string");
	}

	const gguf_kv_t *toks = find_arr(g, "tokenizer.ggml.tokens", &rc, e);
	if (rc)
		return rc;
	if (!toks)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.tokens is missing");
	if (toks->arr_type != GGUF_STRING)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.tokens holds %s, not strings",
			       gguf_vtype_name(toks->arr_type));
	uint64_t n = toks->arr_n;
	if (n == 0)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.tokens is empty");
	if (n > (1u << 28))
		return err_set(e, ERR_RANGE, "%llu tokens is too many", (unsigned long long)n);

	const gguf_kv_t *scores = find_arr(g, "tokenizer.ggml.scores", &rc, e);
	if (rc)
		return rc;
	if (scores && (scores->arr_type != GGUF_FLOAT32 && scores->arr_type != GGUF_FLOAT64))
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.scores holds %s, not floats",
			       gguf_vtype_name(scores->arr_type));
	if (scores && scores->arr_n != n)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.scores has %llu entries for %llu tokens",
			       (unsigned long long)scores->arr_n, (unsigned long long)n);
	const gguf_kv_t *types = find_arr(g, "tokenizer.ggml.token_type", &rc, e);
	if (rc)
		return rc;
	if (types && !is_int_type(types->arr_type))
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.token_type holds %s, not integers",
			       gguf_vtype_name(types->arr_type));
	if (types && types->arr_n != n)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.token_type has %llu entries for %llu tokens",
			       (unsigned long long)types->arr_n, (unsigned long long)n);
	const gguf_kv_t *merges = find_arr(g, "tokenizer.ggml.merges", &rc, e);
	if (rc)
		return rc;
	if (type == VOCAB_BPE && !merges)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.merges is missing (required by gpt2 tokenizers)");
	if (merges && merges->arr_type != GGUF_STRING)
		return err_set(e, ERR_FORMAT, "tokenizer.ggml.merges holds %s, not strings",
			       gguf_vtype_name(merges->arr_type));
	if (merges && merges->arr_n > (1u << 28))
		return err_set(e, ERR_RANGE, "%llu merges is too many", (unsigned long long)merges->arr_n);

	if ((rc = get_id(g, "tokenizer.ggml.bos_token_id", &d.bos, e)) ||
	    (rc = get_id(g, "tokenizer.ggml.eos_token_id", &d.eos, e)) ||
	    (rc = get_id(g, "tokenizer.ggml.unknown_token_id", &d.unk, e)) ||
	    (rc = get_id(g, "tokenizer.ggml.padding_token_id", &d.pad, e)) ||
	    (rc = get_id(g, "tokenizer.ggml.eot_token_id", &d.eot, e)) ||
	    (rc = get_id(g, "tokenizer.ggml.eom_token_id", &d.eom, e)) ||
	    (rc = get_flag(g, "tokenizer.ggml.add_bos_token", &d.add_bos, e)) ||
	    (rc = get_flag(g, "tokenizer.ggml.add_eos_token", &d.add_eos, e)) ||
	    (rc = get_flag(g, "tokenizer.ggml.add_space_prefix", &d.add_space_prefix, e)))
		return rc;
	/* Absent optional ids are none (their defaults are for bos/eos/unk). */
	if (d.pad == VOCAB_ID_DEFAULT)
		d.pad = -1;
	if (d.eot == VOCAB_ID_DEFAULT)
		d.eot = -1;
	if (d.eom == VOCAB_ID_DEFAULT)
		d.eom = -1;

	/* Flatten into arrays (pointers into the mapping; the builder copies). */
	size_t n_merges = merges ? (size_t)merges->arr_n : 0;
	const char **tp = malloc(n * sizeof(*tp));
	size_t *tl = malloc(n * sizeof(*tl));
	float *sc = scores ? malloc(n * sizeof(*sc)) : NULL;
	int32_t *ty = types ? malloc(n * sizeof(*ty)) : NULL;
	const char **mp = n_merges ? malloc(n_merges * sizeof(*mp)) : NULL;
	size_t *ml = n_merges ? malloc(n_merges * sizeof(*ml)) : NULL;
	if (!tp || !tl || (scores && !sc) || (types && !ty) || (n_merges && (!mp || !ml))) {
		rc = err_set(e, ERR_NOMEM, "out of memory reading the vocabulary");
		goto out;
	}
	for (uint64_t i = 0; i < n; i++) {
		gguf_str_t s = gguf_arr_str(toks, i);
		tp[i] = s.p ? s.p : "";
		tl[i] = (size_t)s.n;
		if (sc)
			sc[i] = (float)gguf_arr_float(scores, i);
		if (ty) {
			int64_t t = gguf_arr_int(types, i);
			ty[i] = t < INT32_MIN || t > INT32_MAX ? -1 : (int32_t)t;
		}
	}
	for (size_t i = 0; i < n_merges; i++) {
		gguf_str_t s = gguf_arr_str(merges, i);
		mp[i] = s.p ? s.p : "";
		ml[i] = (size_t)s.n;
	}
	d.n_tokens = (size_t)n;
	d.tokens = tp;
	d.token_lens = tl;
	d.scores = sc;
	d.types = ty;
	d.n_merges = type == VOCAB_BPE ? n_merges : 0;
	d.merges = mp;
	d.merge_lens = ml;
	rc = vocab_new_from_arrays(&d, out, e);
out:
	free(tp);
	free(tl);
	free(sc);
	free(ty);
	free(mp);
	free(ml);
	return rc;
}
