/* test_vocab.c - the tokenizers on small hand-made vocabularies, hostile
 * metadata, special tokens, output bounds, the pre-tokenizers, and the
 * streaming decoder with UTF-8 split across tokens. */
#include "test.h"
#include "model/gguf.h"
#include "model/vocab.h"
#include "model/vocab_impl.h"

/* ---- a small in-memory GGUF builder (no tensors), to feed the loader
 * metadata a well-behaved writer would refuse to produce. */
typedef struct gb {
	uint8_t *p;
	size_t n, cap;
	uint64_t n_kv;
} gb_t;

static void gb_put(gb_t *b, const void *x, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 256;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, x, n);
	b->n += n;
}
static void gb_u32(gb_t *b, uint32_t x) { gb_put(b, &x, 4); }
static void gb_u64(gb_t *b, uint64_t x) { gb_put(b, &x, 8); }
static void gb_str(gb_t *b, const char *s) { gb_u64(b, strlen(s)); gb_put(b, s, strlen(s)); }
static void gb_key(gb_t *b, const char *k, enum gguf_vtype t) { gb_str(b, k); gb_u32(b, t); b->n_kv++; }
static void gb_kv_str(gb_t *b, const char *k, const char *v) { gb_key(b, k, GGUF_STRING); gb_str(b, v); }
static void gb_kv_u32(gb_t *b, const char *k, uint32_t v) { gb_key(b, k, GGUF_UINT32); gb_u32(b, v); }
static void gb_kv_strs(gb_t *b, const char *k, const char *const *s, size_t n)
{
	gb_key(b, k, GGUF_ARRAY);
	gb_u32(b, GGUF_STRING);
	gb_u64(b, n);
	for (size_t i = 0; i < n; i++)
		gb_str(b, s[i]);
}
static void gb_kv_arr(gb_t *b, const char *k, enum gguf_vtype t, const void *x, size_t n, size_t es)
{
	gb_key(b, k, GGUF_ARRAY);
	gb_u32(b, t);
	gb_u64(b, n);
	gb_put(b, x, n * es);
}

/* Header in front, padding behind; returns the loader's code. */
static int gb_load(gb_t *kvs, vocab_t **v, err_msg_t *e)
{
	gb_t f = { 0 };
	gb_put(&f, "GGUF", 4);
	gb_u32(&f, 3);
	gb_u64(&f, 0);
	gb_u64(&f, kvs->n_kv);
	gb_put(&f, kvs->p, kvs->n);
	static const uint8_t zero[32];
	gb_put(&f, zero, 32 - f.n % 32);
	gguf_t *g = NULL;
	int rc = gguf_open_mem(f.p, f.n, &g, e);
	if (rc == 0) {
		rc = vocab_new_from_gguf(g, v, e);
		gguf_free(g);
	}
	free(f.p);
	free(kvs->p);
	memset(kvs, 0, sizeof(*kvs));
	return rc;
}

static const char *const mini_toks[] = { "<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a" };

/* A minimal valid SPM file plus one change. */
static void mini_spm(gb_t *b, int skip)
{
	float sc[7] = { 0, 0, 0, -1, -2, -3, -0.5f };
	int32_t ty[7] = { 2, 3, 3, 1, 1, 1, 1 };
	gb_kv_str(b, "tokenizer.ggml.model", "llama");
	gb_kv_strs(b, "tokenizer.ggml.tokens", mini_toks, 7);
	if (skip != 1)
		gb_kv_arr(b, "tokenizer.ggml.scores", GGUF_FLOAT32, sc, 7, 4);
	if (skip != 2)
		gb_kv_arr(b, "tokenizer.ggml.token_type", GGUF_INT32, ty, 7, 4);
}

static void expect_fail(gb_t *b, int want, const char *needle)
{
	vocab_t *v = (vocab_t *)1;
	err_msg_t e = { { 0 } };
	int rc = gb_load(b, &v, &e);
	if (rc != want || v != NULL || !strstr(e.msg, needle))
		fprintf(stderr, "  got %d (%s) '%s', want %d with '%s'\n", rc, err_str(rc), e.msg, want, needle);
	CHECK_EQ_INT(rc, want);
	CHECK(v == NULL);
	CHECK(strstr(e.msg, needle) != NULL);
}

static void test_gguf_hostile(void)
{
	gb_t b = { 0 };
	vocab_t *v = NULL;
	err_msg_t e = { { 0 } };

	/* the baseline loads */
	mini_spm(&b, 0);
	REQUIRE(gb_load(&b, &v, &e) == 0);
	CHECK_EQ_INT(vocab_n_tokens(v), 7);
	CHECK_EQ_INT(vocab_bos(v), 1);   /* SPM defaults */
	CHECK_EQ_INT(vocab_unk(v), 0);
	vocab_free(v);

	/* no tokenizer at all */
	gb_kv_u32(&b, "general.x", 1);
	expect_fail(&b, ERR_NOTFOUND, "tokenizer.ggml.model");
	/* other tokenizer models */
	gb_kv_str(&b, "tokenizer.ggml.model", "bert");
	expect_fail(&b, ERR_UNSUPPORTED, "bert");
	gb_kv_u32(&b, "tokenizer.ggml.model", 5);
	expect_fail(&b, ERR_FORMAT, "not a string");
	/* missing, mistyped and empty token lists */
	gb_kv_str(&b, "tokenizer.ggml.model", "llama");
	expect_fail(&b, ERR_FORMAT, "tokens is missing");
	gb_kv_str(&b, "tokenizer.ggml.model", "llama");
	uint32_t nums[3] = { 1, 2, 3 };
	gb_kv_arr(&b, "tokenizer.ggml.tokens", GGUF_UINT32, nums, 3, 4);
	expect_fail(&b, ERR_FORMAT, "not strings");
	gb_kv_str(&b, "tokenizer.ggml.model", "llama");
	gb_kv_strs(&b, "tokenizer.ggml.tokens", mini_toks, 0);
	expect_fail(&b, ERR_FORMAT, "empty");
	/* array lengths that disagree */
	mini_spm(&b, 1);
	float sc6[6] = { 0 };
	gb_kv_arr(&b, "tokenizer.ggml.scores", GGUF_FLOAT32, sc6, 6, 4);
	expect_fail(&b, ERR_FORMAT, "scores has 6 entries for 7 tokens");
	mini_spm(&b, 2);
	int32_t ty8[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
	gb_kv_arr(&b, "tokenizer.ggml.token_type", GGUF_INT32, ty8, 8, 4);
	expect_fail(&b, ERR_FORMAT, "token_type has 8 entries for 7 tokens");
	/* wrong element types */
	mini_spm(&b, 1);
	gb_kv_strs(&b, "tokenizer.ggml.scores", mini_toks, 7);
	expect_fail(&b, ERR_FORMAT, "not floats");
	mini_spm(&b, 2);
	float fty[7] = { 1, 1, 1, 1, 1, 1, 1 };
	gb_kv_arr(&b, "tokenizer.ggml.token_type", GGUF_FLOAT32, fty, 7, 4);
	expect_fail(&b, ERR_FORMAT, "not integers");
	/* bad values */
	mini_spm(&b, 2);
	int32_t tyb[7] = { 2, 3, 3, 1, 9, 1, 1 };
	gb_kv_arr(&b, "tokenizer.ggml.token_type", GGUF_INT32, tyb, 7, 4);
	expect_fail(&b, ERR_FORMAT, "token 4: unknown token type 9");
	mini_spm(&b, 2);
	int32_t tyy[7] = { 2, 3, 3, 1, 6, 1, 1 };   /* "a" claimed as a byte token */
	gb_kv_arr(&b, "tokenizer.ggml.token_type", GGUF_INT32, tyy, 7, 4);
	expect_fail(&b, ERR_FORMAT, "not <0xNN>");
	mini_spm(&b, 1);
	float scn[7] = { 0, 0, 0, NAN, 0, 0, 0 };
	gb_kv_arr(&b, "tokenizer.ggml.scores", GGUF_FLOAT32, scn, 7, 4);
	expect_fail(&b, ERR_FORMAT, "not a number");
	/* ids out of range; -1 / 0xFFFFFFFF mean none */
	mini_spm(&b, 0);
	gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", 7);
	expect_fail(&b, ERR_RANGE, "BOS token id 7");
	mini_spm(&b, 0);
	gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", 0x7FFFFFF0);
	expect_fail(&b, ERR_RANGE, "EOS token id");
	mini_spm(&b, 0);
	gb_kv_u32(&b, "tokenizer.ggml.padding_token_id", 0xFFFFFFFFu);
	gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", 0xFFFFFFFFu);
	REQUIRE(gb_load(&b, &v, &e) == 0);
	CHECK_EQ_INT(vocab_pad(v), VOCAB_NONE);
	CHECK_EQ_INT(vocab_bos(v), VOCAB_NONE);
	CHECK(!vocab_adds_bos(v));   /* nothing to add */
	vocab_free(v);
	mini_spm(&b, 0);
	gb_kv_str(&b, "tokenizer.ggml.bos_token_id", "1");
	expect_fail(&b, ERR_FORMAT, "not an integer");
	/* duplicate texts */
	gb_kv_str(&b, "tokenizer.ggml.model", "llama");
	const char *dup[3] = { "x", "y", "x" };
	gb_kv_strs(&b, "tokenizer.ggml.tokens", dup, 3);
	expect_fail(&b, ERR_FORMAT, "token 2 has the same text as token 0");

	/* BPE: merges required and well formed, known pre-tokenizers only */
	const char *bt[4] = { "a", "b", "ab", "\xC4\xA0" };
	gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
	gb_kv_strs(&b, "tokenizer.ggml.tokens", bt, 4);
	expect_fail(&b, ERR_FORMAT, "merges is missing");
	const char *bad_merges[][2] = { { "a b", "ab" }, { "a b", "a " }, { "a b", " ab" } };
	for (size_t i = 0; i < 3; i++) {
		gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
		gb_kv_strs(&b, "tokenizer.ggml.tokens", bt, 4);
		gb_kv_strs(&b, "tokenizer.ggml.merges", bad_merges[i], 2);
		expect_fail(&b, ERR_FORMAT, "merge 1");
	}
	gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
	gb_kv_str(&b, "tokenizer.ggml.pre", "no-such-pre");
	gb_kv_strs(&b, "tokenizer.ggml.tokens", bt, 4);
	gb_kv_strs(&b, "tokenizer.ggml.merges", bad_merges[0], 1);
	expect_fail(&b, ERR_UNSUPPORTED, "no-such-pre");
	gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
	gb_kv_str(&b, "tokenizer.ggml.pre", "qwen2");
	gb_kv_strs(&b, "tokenizer.ggml.tokens", bt, 4);
	gb_kv_strs(&b, "tokenizer.ggml.merges", bad_merges[0], 1);
	REQUIRE(gb_load(&b, &v, &e) == 0);
	CHECK(strcmp(vocab_pre_name(v), "qwen2") == 0);
	CHECK(!vocab_adds_bos(v));
	int32_t ids[8];
	size_t n;
	CHECK_OK(vocab_tokenize(v, "ab", 2, 1, 0, ids, 8, &n));
	CHECK(n == 1 && ids[0] == 2);
	vocab_free(v);
}

/* ---- SPM on a hand-made vocabulary: merge order by score */

static vocab_t *make_spm(const char *const *toks, const float *scores, const int32_t *types, size_t n)
{
	vocab_desc_t d;
	vocab_desc_init(&d, VOCAB_SPM);
	d.n_tokens = n;
	d.tokens = toks;
	d.scores = scores;
	d.types = types;
	vocab_t *v = NULL;
	err_msg_t e = { { 0 } };
	if (vocab_new_from_arrays(&d, &v, &e))
		fprintf(stderr, "  %s\n", e.msg);
	return v;
}

#define U "\xE2\x96\x81"

static void test_spm_merge_order(void)
{
	/* "abc": the pairs ab (score -1) and bc (-2) compete; ab wins, then
	 * "ab"+"c" has no token, so the result is [ab, c]. With bc scored
	 * higher it is [a, bc]. */
	const char *toks[] = { "<unk>", "<s>", "</s>", U, "a", "b", "c", "ab", "bc", U "a" };
	float sc[] = { 0, 0, 0, -5, -5, -5, -5, -1, -2, -0.5f };
	int32_t ty[] = { 2, 3, 3, 1, 1, 1, 1, 1, 1, 1 };
	vocab_t *v = make_spm(toks, sc, ty, 10);
	REQUIRE(v);
	int32_t ids[16];
	size_t n;
	CHECK_OK(vocab_tokenize(v, "abc", 3, 0, 0, ids, 16, &n));
	/* leading marker: "▁a" (-0.5) beats "ab" (-1): [▁a, bc] */
	CHECK(n == 2 && ids[0] == 9 && ids[1] == 8);
	vocab_free(v);
	sc[9] = -3;   /* now "ab" first: [▁, ab, c] */
	v = make_spm(toks, sc, ty, 10);
	REQUIRE(v);
	CHECK_OK(vocab_tokenize(v, "abc", 3, 0, 0, ids, 16, &n));
	CHECK(n == 3 && ids[0] == 3 && ids[1] == 7 && ids[2] == 6);
	/* equal scores: the leftmost pair first */
	vocab_free(v);
	sc[7] = sc[8] = -1;
	v = make_spm(toks, sc, ty, 10);
	CHECK_OK(vocab_tokenize(v, "abc", 3, 0, 0, ids, 16, &n));
	CHECK(n == 3 && ids[1] == 7);
	/* no byte tokens: unknown characters become <unk>, one per byte */
	CHECK_OK(vocab_tokenize(v, "\xC3\xA9", 2, 0, 0, ids, 16, &n));
	CHECK(n == 3 && ids[0] == 3 && ids[1] == 0 && ids[2] == 0);
	/* add_special: BOS by default for SPM, no EOS */
	CHECK_OK(vocab_tokenize(v, "", 0, 1, 0, ids, 16, &n));
	CHECK(n == 1 && ids[0] == 1);
	CHECK_OK(vocab_tokenize(v, "", 0, 0, 0, ids, 16, &n));
	CHECK_EQ_INT(n, 0);
	vocab_free(v);
}

static void test_add_eos_and_flags(void)
{
	const char *toks[] = { "<unk>", "<s>", "</s>", U, "a" };
	vocab_desc_t d;
	vocab_desc_init(&d, VOCAB_SPM);
	d.n_tokens = 5;
	d.tokens = toks;
	d.add_eos = 1;
	d.add_bos = 0;
	d.add_space_prefix = 0;
	vocab_t *v = NULL;
	err_msg_t e;
	REQUIRE(vocab_new_from_arrays(&d, &v, &e) == 0);
	int32_t ids[8];
	size_t n;
	CHECK_OK(vocab_tokenize(v, "a a", 3, 1, 0, ids, 8, &n));
	CHECK(n == 4 && ids[0] == 4 && ids[1] == 3 && ids[2] == 4 && ids[3] == 2);
	CHECK(vocab_is_eog(v, 2) && !vocab_is_eog(v, 1));
	vocab_free(v);
	/* arguments the builder refuses */
	d.n_tokens = 0;
	CHECK_EQ_INT(vocab_new_from_arrays(&d, &v, &e), ERR_FORMAT);
	d.n_tokens = 5;
	d.bos = 5;
	CHECK_EQ_INT(vocab_new_from_arrays(&d, &v, &e), ERR_RANGE);
	CHECK(v == NULL);
	vocab_free(NULL);
}

/* ---- fixtures: special tokens, bounds, decoding */

static vocab_t *load_fixture(const char *name)
{
	gguf_t *g = NULL;
	vocab_t *v = NULL;
	err_msg_t e = { { 0 } };
	if (gguf_open(fixture_path(name), &g, &e) == 0) {
		if (vocab_new_from_gguf(g, &v, &e))
			fprintf(stderr, "  %s: %s\n", name, e.msg);
		gguf_free(g);
	}
	return v;
}

static void test_parse_special(void)
{
	vocab_t *v = load_fixture("ggml-vocab-llama-bpe.gguf");
	REQUIRE(v);
	int32_t bot = vocab_find(v, "<|begin_of_text|>", 17), eot = vocab_find(v, "<|eot_id|>", 10);
	CHECK_EQ_INT(bot, 128000);
	CHECK_EQ_INT(eot, 128009);
	CHECK(vocab_token_type(v, eot) == VOCAB_TT_CONTROL);
	CHECK(vocab_is_eog(v, eot) && vocab_is_eog(v, vocab_eos(v)));
	const char *s = "<|begin_of_text|>Hi<|eot_id|><|eot_id|>x<|eot_id";
	int32_t ids[64], plain[64];
	size_t n, np;
	CHECK_OK(vocab_tokenize(v, s, strlen(s), 0, 1, ids, 64, &n));
	CHECK_OK(vocab_tokenize(v, s, strlen(s), 0, 0, plain, 64, &np));
	/* parsed: BOT, "Hi", EOT, EOT, "x", then the unfinished marker as text */
	REQUIRE(n >= 6);
	CHECK(ids[0] == bot && ids[2] == eot && ids[3] == eot);
	CHECK(ids[1] == vocab_find(v, "Hi", 2));
	CHECK(ids[4] == vocab_find(v, "x", 1));
	for (size_t i = 5; i < n; i++)
		CHECK(ids[i] < 128000);
	/* not parsed: only ordinary tokens */
	for (size_t i = 0; i < np; i++)
		CHECK(plain[i] < 128000);
	/* decoding shows the specials only when asked */
	char buf[256];
	size_t nb;
	CHECK_OK(vocab_detokenize(v, ids, n, VOCAB_DECODE_SPECIAL, buf, sizeof(buf), &nb));
	CHECK(nb == strlen(s) && memcmp(buf, s, nb) == 0);
	CHECK_OK(vocab_detokenize(v, ids, n, 0, buf, sizeof(buf), &nb));
	CHECK(nb == strlen("Hix<|eot_id") && memcmp(buf, "Hix<|eot_id", nb) == 0);
	CHECK_OK(vocab_detokenize(v, plain, np, 0, buf, sizeof(buf), &nb));
	CHECK(nb == strlen(s) && memcmp(buf, s, nb) == 0);
	/* add_special: llama-3 adds BOS (pre-tokenizer default), not EOS */
	CHECK_OK(vocab_tokenize(v, "Hi", 2, 1, 0, ids, 64, &n));
	CHECK(n == 2 && ids[0] == bot);
	vocab_free(v);

	/* SPM: after a special token the text gets its space marker again */
	v = load_fixture("ggml-vocab-llama-spm.gguf");
	REQUIRE(v);
	CHECK_OK(vocab_tokenize(v, "Hi</s>Hi", 8, 0, 1, ids, 64, &n));
	CHECK_OK(vocab_tokenize(v, "Hi", 2, 0, 0, plain, 64, &np));
	REQUIRE(np >= 1 && n == 2 * np + 1);
	CHECK(memcmp(ids, plain, np * 4) == 0 && ids[np] == 2 && memcmp(ids + np + 1, plain, np * 4) == 0);
	vocab_free(v);
}

static void test_user_defined_and_priority(void)
{
	/* USER_DEFINED matches without parse_special; CONTROL needs it; a longer
	 * special wins over a shorter one it contains. */
	const char *toks[] = { "<unk>", "<s>", "</s>", U, "x", "<u>", "<c>", "<u><c>", "<", ">", "u", "c" };
	int32_t ty[] = { 2, 3, 3, 1, 1, 4, 3, 4, 1, 1, 1, 1 };
	vocab_t *v = make_spm(toks, NULL, ty, 12);
	REQUIRE(v);
	int32_t ids[32];
	size_t n;
	CHECK_OK(vocab_tokenize(v, "x<u>x", 5, 0, 0, ids, 32, &n));
	CHECK(n == 5 && ids[0] == 3 && ids[1] == 4 && ids[2] == 5 && ids[3] == 3 && ids[4] == 4);
	CHECK_OK(vocab_tokenize(v, "<c>", 3, 0, 0, ids, 32, &n));
	CHECK(n > 1);   /* as text */
	CHECK_OK(vocab_tokenize(v, "<c>", 3, 0, 1, ids, 32, &n));
	CHECK(n == 1 && ids[0] == 6);
	CHECK_OK(vocab_tokenize(v, "<u><c><c>", 9, 0, 1, ids, 32, &n));
	CHECK(n == 2 && ids[0] == 7 && ids[1] == 6);
	/* USER_DEFINED pieces are their text even without VOCAB_DECODE_SPECIAL */
	char buf[16];
	size_t nb;
	CHECK_OK(vocab_token_to_piece(v, 5, 0, buf, sizeof(buf), &nb));
	CHECK(nb == 3 && memcmp(buf, "<u>", 3) == 0);
	CHECK_OK(vocab_token_to_piece(v, 6, 0, buf, sizeof(buf), &nb));
	CHECK_EQ_INT(nb, 0);
	vocab_free(v);
}

static void test_output_bounds(void)
{
	vocab_t *v = load_fixture("ggml-vocab-llama-bpe.gguf");
	REQUIRE(v);
	const char *s = "The quick brown fox jumps over the lazy dog, 12345 times.";
	int32_t all[64], part[64];
	size_t n, m;
	CHECK_OK(vocab_tokenize(v, s, strlen(s), 1, 0, all, 64, &n));
	REQUIRE(n > 4);
	for (size_t cap = 0; cap < n; cap++) {
		for (size_t i = 0; i < 64; i++)
			part[i] = -7;
		CHECK_EQ_INT(vocab_tokenize(v, s, strlen(s), 1, 0, cap ? part : NULL, cap, &m), ERR_FULL);
		CHECK_EQ_INT(m, n);
		CHECK(memcmp(part, all, cap * 4) == 0 && part[cap] == -7);
	}
	CHECK_EQ_INT(vocab_tokenize(v, s, strlen(s), 1, 0, part, n, &m), 0);
	CHECK_EQ_INT(vocab_tokenize(v, NULL, 3, 0, 0, part, n, &m), ERR_INVAL);
	/* pieces and sequences: same contract */
	char buf[8];
	size_t nb;
	int32_t quick = vocab_find(v, "\xC4\xA0quick", 7);
	REQUIRE(quick >= 0);
	CHECK_EQ_INT(vocab_token_to_piece(v, quick, 0, buf, 3, &nb), ERR_FULL);
	CHECK(nb == 6 && memcmp(buf, " qu", 3) == 0);
	CHECK_OK(vocab_token_to_piece(v, quick, 0, buf, 6, &nb));
	CHECK(memcmp(buf, " quick", 6) == 0);
	CHECK_EQ_INT(vocab_token_to_piece(v, -1, 0, buf, 8, &nb), ERR_RANGE);
	CHECK_EQ_INT(vocab_token_to_piece(v, 128256, 0, buf, 8, &nb), ERR_RANGE);
	CHECK_EQ_INT(vocab_detokenize(v, all, n, 0, buf, 8, &nb), ERR_FULL);
	CHECK(nb == strlen(s) && memcmp(buf, s, 8) == 0);
	int32_t bad[2] = { 5, 999999 };
	CHECK_EQ_INT(vocab_detokenize(v, bad, 2, 0, buf, 8, &nb), ERR_RANGE);
	vocab_free(v);
}

static void test_spm_pieces(void)
{
	vocab_t *v = load_fixture("ggml-vocab-llama-spm.gguf");
	REQUIRE(v);
	char buf[32];
	size_t nb;
	CHECK_OK(vocab_token_to_piece(v, 3 + 0x41, 0, buf, sizeof(buf), &nb));   /* <0x41> */
	CHECK(nb == 1 && buf[0] == 'A');
	CHECK_OK(vocab_token_to_piece(v, 3 + 0xC3, 0, buf, sizeof(buf), &nb));
	CHECK(nb == 1 && (uint8_t)buf[0] == 0xC3);
	int32_t hello = vocab_find(v, U "Hello", 8);
	REQUIRE(hello >= 0);
	CHECK_OK(vocab_token_to_piece(v, hello, 0, buf, sizeof(buf), &nb));
	CHECK(nb == 6 && memcmp(buf, " Hello", 6) == 0);
	CHECK_OK(vocab_token_to_piece(v, hello, VOCAB_DECODE_STRIP_SPACE, buf, sizeof(buf), &nb));
	CHECK(nb == 5 && memcmp(buf, "Hello", 5) == 0);
	CHECK_OK(vocab_token_to_piece(v, 1, 0, buf, sizeof(buf), &nb));
	CHECK_EQ_INT(nb, 0);
	CHECK_OK(vocab_token_to_piece(v, 1, VOCAB_DECODE_SPECIAL, buf, sizeof(buf), &nb));
	CHECK(nb == 3 && memcmp(buf, "<s>", 3) == 0);
	/* BOS then text: the strip applies to the first real token */
	int32_t ids[16];
	size_t n;
	CHECK_OK(vocab_tokenize(v, "Hello world", 11, 1, 0, ids, 16, &n));
	CHECK(ids[0] == 1 && ids[1] == hello);
	CHECK_OK(vocab_detokenize(v, ids, n, VOCAB_DECODE_STRIP_SPACE, buf, sizeof(buf), &nb));
	CHECK(nb == 11 && memcmp(buf, "Hello world", 11) == 0);
	CHECK_OK(vocab_detokenize(v, ids, n, VOCAB_DECODE_SPECIAL | VOCAB_DECODE_STRIP_SPACE, buf, sizeof(buf), &nb));
	CHECK(nb == 14 && memcmp(buf, "<s>Hello world", 14) == 0);
	vocab_free(v);
}

/* ---- streaming decoder */

/* Feeds bytes as SPM byte tokens one at a time, collecting the output. */
static size_t stream_bytes(const vocab_t *v, const uint8_t *s, size_t n, char *out)
{
	vocab_decoder_t d;
	vocab_decoder_init(&d, v, 0);
	size_t at = 0, k;
	for (size_t i = 0; i < n; i++) {
		CHECK_OK(vocab_decoder_push(&d, 3 + s[i], out + at, 16, &k));
		at += k;
	}
	CHECK_OK(vocab_decoder_flush(&d, out + at, 16, &k));
	return at + k;
}

static void test_stream_decoder(void)
{
	vocab_t *v = load_fixture("ggml-vocab-llama-spm.gguf");
	REQUIRE(v);
	vocab_decoder_t d;
	char out[256];
	size_t k;
	/* "é" split over two byte tokens: nothing, then the character */
	vocab_decoder_init(&d, v, 0);
	CHECK_OK(vocab_decoder_push(&d, 3 + 0xC3, out, sizeof(out), &k));
	CHECK_EQ_INT(k, 0);
	CHECK_OK(vocab_decoder_push(&d, 3 + 0xA9, out, sizeof(out), &k));
	CHECK(k == 2 && memcmp(out, "\xC3\xA9", 2) == 0);
	/* a 4-byte emoji in every split, with text around */
	const uint8_t emoji[] = "a\xF0\x9F\xA6\x99z";
	size_t m = stream_bytes(v, emoji, 6, out);
	CHECK(m == 6 && memcmp(out, emoji, 6) == 0);
	vocab_decoder_init(&d, v, 0);
	int32_t two[2] = { 3 + 0xF0, 3 + 0x9F };
	CHECK_OK(vocab_decoder_push(&d, two[0], out, sizeof(out), &k));
	CHECK_OK(vocab_decoder_push(&d, two[1], out, sizeof(out), &k));
	CHECK_EQ_INT(k, 0);
	CHECK_EQ_INT(d.n_held, 2);
	/* too little room: nothing consumed, the size needed reported */
	int32_t rest = vocab_find(v, U "Hello", 8);
	CHECK_EQ_INT(vocab_decoder_push(&d, 3 + 0xA6, out, 0, &k), 0);   /* still incomplete: needs 0 */
	CHECK_EQ_INT(d.n_held, 3);
	CHECK_EQ_INT(vocab_decoder_push(&d, rest, out, 3, &k), ERR_FULL);
	CHECK_EQ_INT(k, 9);   /* U+FFFD for the cut sequence, then " Hello" */
	CHECK_EQ_INT(d.n_held, 3);
	CHECK_OK(vocab_decoder_push(&d, rest, out, 9, &k));
	CHECK(k == 9 && memcmp(out, "\xEF\xBF\xBD Hello", 9) == 0);
	CHECK_EQ_INT(vocab_decoder_push(&d, -3, out, 9, &k), ERR_RANGE);
	/* invalid bytes: one U+FFFD per maximal invalid subsequence */
	struct { const char *in, *want; } cases[] = {
		{ "\x80", "\xEF\xBF\xBD" },
		{ "A\xC3" "B", "A\xEF\xBF\xBD" "B" },
		{ "\xE2\x96" "B", "\xEF\xBF\xBD" "B" },              /* cut 3-byte sequence */
		{ "\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD" },          /* overlong: two */
		{ "\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },   /* surrogate */
		{ "\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },   /* > U+10FFFF */
		{ "\xF0\x9F\xA6", "\xEF\xBF\xBD" },                  /* flushed incomplete */
		{ "\xFF\xFE", "\xEF\xBF\xBD\xEF\xBF\xBD" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		m = stream_bytes(v, (const uint8_t *)cases[i].in, strlen(cases[i].in), out);
		if (m != strlen(cases[i].want) || memcmp(out, cases[i].want, m) != 0) {
			fprintf(stderr, "  case %zu: got %zu bytes\n", i, m);
			t_cur_fail = 1;
		}
	}
	/* strip space: only the first real token loses its space */
	vocab_decoder_init(&d, v, VOCAB_DECODE_STRIP_SPACE);
	CHECK_OK(vocab_decoder_push(&d, 1, out, sizeof(out), &k));   /* <s>: hidden */
	CHECK_EQ_INT(k, 0);
	CHECK_OK(vocab_decoder_push(&d, rest, out, sizeof(out), &k));
	CHECK(k == 5 && memcmp(out, "Hello", 5) == 0);
	CHECK_OK(vocab_decoder_push(&d, rest, out, sizeof(out), &k));
	CHECK(k == 6 && memcmp(out, " Hello", 6) == 0);
	CHECK(VOCAB_DECODER_OUT_MAX(vocab_max_piece_len(v)) >= 3 * (vocab_max_piece_len(v) + 3));
	vocab_free(v);
}

/* ---- pre-tokenizers, on their own */

static void check_split(enum vocab__pre pre, const char *s, const char *const *want, size_t n_want)
{
	uint32_t cps[128], off[129], ends[128], tmp[128];
	size_t n = 0, len = strlen(s);
	for (size_t i = 0; i < len;) {
		uint32_t c;
		size_t k = unicode_decode((const uint8_t *)s + i, len - i, &c);
		off[n] = (uint32_t)i;
		cps[n++] = VOCAB_CP(c, unicode_class(c));
		i += k;
	}
	off[n] = (uint32_t)len;
	size_t nw = vocab__pretokenize(pre, cps, n, ends, tmp);
	int ok = nw == n_want;
	size_t a = 0;
	for (size_t i = 0; ok && i < nw; i++) {
		size_t b = off[ends[i]], st = off[a];
		ok = strlen(want[i]) == b - st && memcmp(want[i], s + st, b - st) == 0;
		a = ends[i];
	}
	if (!ok) {
		fprintf(stderr, "  pre %d on '%s': got", (int)pre, s);
		a = 0;
		for (size_t i = 0; i < nw; i++) {
			fprintf(stderr, " [%.*s]", (int)(off[ends[i]] - off[a]), s + off[a]);
			a = ends[i];
		}
		fprintf(stderr, "\n");
		t_cur_fail = 1;
	}
}

#define SPLIT(pre, s, ...) do { const char *const _w[] = { __VA_ARGS__ }; \
	check_split(pre, s, _w, sizeof(_w) / sizeof(_w[0])); } while (0)

static void test_pretokenizers(void)
{
	const char *s = "Hello world 12345 it's";
	SPLIT(VOCAB_PRE_LLAMA3, s, "Hello", " world", " ", "123", "45", " it", "'s");
	SPLIT(VOCAB_PRE_QWEN2, s, "Hello", " world", " ", "1", "2", "3", "4", "5", " it", "'s");
	SPLIT(VOCAB_PRE_GPT2, s, "Hello", " world", " 12345", " it", "'s");
	SPLIT(VOCAB_PRE_SMOLLM, s, "Hello", " world", " ", "1", "2", "3", "4", "5", " it", "'s");
	SPLIT(VOCAB_PRE_DEFAULT, s, "Hello", " world", " ", "123", "45", " it", "'", "s");
	SPLIT(VOCAB_PRE_FALCON, s, "Hello", " world", " ", "123", "45", " it", "'", "s");
	/* contractions: case-insensitive for llama-3 only */
	SPLIT(VOCAB_PRE_LLAMA3, "WE'VEN'Ts", "WE", "'VE", "N", "'T", "s");
	SPLIT(VOCAB_PRE_GPT2, "WE'VEN'Ts", "WE", "'", "VEN", "'", "Ts");
	SPLIT(VOCAB_PRE_GPT2, "we'ven'ts", "we", "'ve", "n", "'t", "s");
	/* white space: runs keep one space for the next word; newlines */
	SPLIT(VOCAB_PRE_LLAMA3, "a   b\n\n c  ", "a", "  ", " b", "\n\n", " c", "  ");
	SPLIT(VOCAB_PRE_GPT2, "a   b\n\n c  ", "a", "  ", " b", "\n\n", " c", "  ");
	SPLIT(VOCAB_PRE_LLAMA3, "x!!\n\ny", "x", "!!\n\n", "y");
	/* letters across scripts, numbers beyond ASCII, marks */
	SPLIT(VOCAB_PRE_LLAMA3, "\xD0\xBD\xD0\xB5 \xD9\xA3\xD9\xA4", "\xD0\xBD\xD0\xB5", " ", "\xD9\xA3\xD9\xA4");
	SPLIT(VOCAB_PRE_LLAMA3, "e\xCC\x81t", "e", "\xCC\x81t");
	SPLIT(VOCAB_PRE_DEFAULT, "a<=>b $5", "a", "<=>", "b", " ", "$", "5");
	check_split(VOCAB_PRE_LLAMA3, "", NULL, 0);
}

static void test_bpe_invalid_utf8_round_trip(void)
{
	vocab_t *v = load_fixture("ggml-vocab-llama-bpe.gguf");
	REQUIRE(v);
	const char s[] = "\xFF\xFE ab\xC3 \xE2\x96 \xF0\x9F\xA6\x99\xED\xA0\x80 \x00 end";
	size_t len = sizeof(s) - 1, n, nb;
	int32_t ids[64];
	char buf[64];
	CHECK_OK(vocab_tokenize(v, s, len, 0, 0, ids, 64, &n));
	CHECK_OK(vocab_detokenize(v, ids, n, 0, buf, sizeof(buf), &nb));
	CHECK(nb == len && memcmp(buf, s, len) == 0);
	vocab_free(v);
}

TEST_MAIN(test_gguf_hostile, test_spm_merge_order, test_add_eos_and_flags, test_parse_special,
	  test_user_defined_and_priority, test_output_bounds, test_spm_pieces, test_stream_decoder,
	  test_pretokenizers, test_bpe_invalid_utf8_round_trip)
