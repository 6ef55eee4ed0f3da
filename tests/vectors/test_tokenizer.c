/* test_tokenizer.c - the tokenizers against llama.cpp's vectors
 * (../shared/fixtures/ggml-vocab-llama-{spm,bpe}.gguf.{inp,out}: no BOS/EOS,
 * special tokens not parsed), decode(tokenize(s)) round trips, and the
 * stories260K prompts of reference.json (BOS prepended, specials parsed). */
#define _GNU_SOURCE
#include <jansson.h>
#include <time.h>

#include "test.h"
#include "model/gguf.h"
#include "model/unicode.h"
#include "model/vocab.h"

#define SEP "\n__ggml_vocab_test__\n"

typedef struct vec {
	char *inp;          /* the whole .inp file; strings are cut in place */
	char *outp;
	size_t n;
	const char *s[256];
	size_t len[256];
	const char *want[256];   /* " 1 2 3" lines, NUL-terminated */
} vec_t;

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)n + 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	if (b) {
		b[n] = 0;
		if (len)
			*len = (size_t)n;
	}
	return b;
}

/* Every string is followed by SEP (the last one too). */
static int load_vectors(const char *name, vec_t *v)
{
	char p[256];
	memset(v, 0, sizeof(*v));
	snprintf(p, sizeof(p), "%s.inp", name);
	size_t n;
	v->inp = slurp(fixture_path(p), &n);
	snprintf(p, sizeof(p), "%s.out", name);
	v->outp = slurp(fixture_path(p), NULL);
	if (!v->inp || !v->outp)
		return -1;
	char *at = v->inp, *end = v->inp + n;
	while (at < end) {
		char *sep = strstr(at, SEP);
		if (!sep || v->n == 256)
			return -1;
		v->s[v->n] = at;
		v->len[v->n] = (size_t)(sep - at);
		*sep = 0;
		v->n++;
		at = sep + strlen(SEP);
	}
	/* .out: one line per string */
	char *line = v->outp;
	for (size_t i = 0; i < v->n; i++) {
		char *nl = strchr(line, '\n');
		if (!nl)
			return -1;
		*nl = 0;
		v->want[i] = line;
		line = nl + 1;
	}
	return 0;
}

static void free_vectors(vec_t *v)
{
	free(v->inp);
	free(v->outp);
}

static size_t parse_ids(const char *s, int32_t *ids, size_t cap)
{
	size_t n = 0;
	char *e;
	for (;;) {
		long x = strtol(s, &e, 10);
		if (e == s || n == cap)
			break;
		ids[n++] = (int32_t)x;
		s = e;
	}
	return n;
}

static vocab_t *load_vocab(const char *name)
{
	gguf_t *g = NULL;
	vocab_t *v = NULL;
	err_msg_t e = { { 0 } };
	const char *path = fixture_path(name);
	if (gguf_open(path, &g, &e)) {
		fprintf(stderr, "  %s: %s\n", name, e.msg);
		return NULL;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int rc = vocab_new_from_gguf(g, &v, &e);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	gguf_free(g);
	if (rc) {
		fprintf(stderr, "  %s: %s\n", name, e.msg);
		return NULL;
	}
	fprintf(stderr, "  %s: %d tokens, loaded in %.1f ms\n", name, (int)vocab_n_tokens(v),
		(double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
	return v;
}

static int valid_utf8(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		int k = unicode_valid_prefix((const uint8_t *)s + i, n - i);
		if (k <= 0)
			return 0;
		i += (size_t)k;
	}
	return 1;
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
	fprintf(stderr, "    %s:", what);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %d", ids[i]);
	fprintf(stderr, "\n");
}

static void run_vectors(const char *name)
{
	vec_t vec;
	REQUIRE(load_vectors(name, &vec) == 0);
	vocab_t *v = load_vocab(name);
	REQUIRE(v);
	int spm = vocab_get_type(v) == VOCAB_SPM;
	static int32_t got[4096], want[4096];
	static char dec[16384];
	size_t pass = 0, trips = 0;
	for (size_t i = 0; i < vec.n; i++) {
		size_t ng, nw = parse_ids(vec.want[i], want, 4096);
		CHECK_OK(vocab_tokenize(v, vec.s[i], vec.len[i], 0, 0, got, 4096, &ng));
		if (ng == nw && memcmp(got, want, nw * sizeof(int32_t)) == 0) {
			pass++;
		} else {
			fprintf(stderr, "  FAIL %s vector %zu: '%s'\n", name, i, vec.s[i]);
			print_ids("got ", got, ng);
			print_ids("want", want, nw);
			t_cur_fail = 1;
		}
		/* decode(tokenize(s)) == s, except where SPM cannot: U+2581 in
		 * the text decodes as a space. */
		if (spm && memmem(vec.s[i], vec.len[i], "\xE2\x96\x81", 3))
			continue;
		size_t nd;
		CHECK_OK(vocab_detokenize(v, got, ng, VOCAB_DECODE_STRIP_SPACE, dec, sizeof(dec), &nd));
		if (nd == vec.len[i] && memcmp(dec, vec.s[i], nd) == 0) {
			trips++;
		} else {
			fprintf(stderr, "  FAIL %s round trip %zu: '%s' -> '%.*s'\n", name, i, vec.s[i], (int)nd, dec);
			t_cur_fail = 1;
		}
		/* The streaming decoder gives the same text, token by token. */
		if (valid_utf8(vec.s[i], vec.len[i])) {
			vocab_decoder_t d;
			vocab_decoder_init(&d, v, VOCAB_DECODE_STRIP_SPACE);
			size_t at = 0, k;
			char buf[256];
			for (size_t j = 0; j < ng; j++) {
				CHECK_OK(vocab_decoder_push(&d, got[j], buf, sizeof(buf), &k));
				memcpy(dec + at, buf, k);
				at += k;
			}
			CHECK_OK(vocab_decoder_flush(&d, buf, sizeof(buf), &k));
			CHECK_EQ_INT(k, 0);
			CHECK(at == vec.len[i] && memcmp(dec, vec.s[i], at) == 0);
		}
	}
	fprintf(stderr, "  %s: %zu/%zu vectors match, %zu round trips\n", name, pass, vec.n, trips);
	CHECK(vec.n >= 40);
	vocab_free(v);
	free_vectors(&vec);
}

static void test_spm_vectors(void)
{
	run_vectors("ggml-vocab-llama-spm.gguf");
}

static void test_bpe_vectors(void)
{
	run_vectors("ggml-vocab-llama-bpe.gguf");
}

/* Prompts of the reference runs, tokenized as llama.cpp did for them. */
static void test_stories_prompts(void)
{
	json_error_t je;
	json_t *root = json_load_file(fixture_path("reference.json"), 0, &je);
	REQUIRE(root);
	vocab_t *v = load_vocab("stories260K.gguf");
	REQUIRE(v);
	CHECK_EQ_INT(vocab_n_tokens(v), 512);
	CHECK_EQ_INT(vocab_bos(v), 1);
	CHECK_EQ_INT(vocab_eos(v), 2);
	CHECK(vocab_adds_bos(v));
	json_t *cases = json_object_get(root, "cases");
	size_t ci;
	json_t *cs;
	int n_checked = 0;
	json_array_foreach(cases, ci, cs) {
		const char *prompt = json_string_value(json_object_get(cs, "prompt"));
		json_t *runs = json_object_get(cs, "runs");
		const char *rn;
		json_t *run;
		json_object_foreach(runs, rn, run) {
			json_t *ids = json_object_get(run, "prompt_token_ids");
			json_t *pieces = json_object_get(run, "prompt_pieces");
			int32_t got[256];
			size_t ng;
			CHECK_OK(vocab_tokenize(v, prompt, strlen(prompt), 1, 1, got, 256, &ng));
			CHECK_EQ_INT(ng, json_array_size(ids));
			for (size_t i = 0; i < ng && i < json_array_size(ids); i++) {
				CHECK_EQ_INT(got[i], json_integer_value(json_array_get(ids, i)));
				/* and each piece as llama.cpp printed it (specials shown) */
				char pc[64];
				size_t np;
				CHECK_OK(vocab_token_to_piece(v, got[i], VOCAB_DECODE_SPECIAL, pc, sizeof(pc), &np));
				const char *want = json_string_value(json_array_get(pieces, i));
				CHECK(want && strlen(want) == np && memcmp(pc, want, np) == 0);
			}
			n_checked++;
		}
	}
	CHECK(n_checked >= 2);
	vocab_free(v);
	json_decref(root);
}

/* Tokenize speed on a long text made of the vector strings (both
 * tokenizers); printed, and bounded loosely so a pathological slowdown fails. */
static void bench(const char *name)
{
	vec_t vec;
	REQUIRE(load_vectors(name, &vec) == 0);
	vocab_t *v = load_vocab(name);
	REQUIRE(v);
	size_t cap = 4 << 20, len = 0;
	char *text = malloc(cap);
	REQUIRE(text);
	for (size_t r = 0; len < cap - 4096; r++) {
		size_t i = r % vec.n;
		if (len + vec.len[i] + 1 > cap)
			break;
		memcpy(text + len, vec.s[i], vec.len[i]);
		len += vec.len[i];
		text[len++] = r % 7 == 0 ? '\n' : ' ';
	}
	size_t cap_ids = len + 16, n;
	int32_t *ids = malloc(cap_ids * sizeof(int32_t));
	REQUIRE(ids);
	struct timespec t0, t1;   /* CPU time: the figure should not depend on other load */
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
	CHECK_OK(vocab_tokenize(v, text, len, 1, 0, ids, cap_ids, &n));
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	fprintf(stderr, "  %s: %.1f MB -> %zu tokens in %.3f s CPU: %.2f MB/s\n", name, (double)len / 1e6, n, s,
		(double)len / 1e6 / s);
	CHECK(s < 30.0);
	/* and back */
	char *back = malloc(len + 16);
	size_t nb;
	REQUIRE(back);
	CHECK_OK(vocab_detokenize(v, ids, n, VOCAB_DECODE_STRIP_SPACE, back, len + 16, &nb));
	if (vocab_get_type(v) == VOCAB_BPE)
		CHECK(nb == len && memcmp(back, text, len) == 0);
	free(back);
	free(ids);
	free(text);
	vocab_free(v);
	free_vectors(&vec);
}

static void test_speed(void)
{
	bench("ggml-vocab-llama-spm.gguf");
	bench("ggml-vocab-llama-bpe.gguf");
}

TEST_MAIN(test_spm_vectors, test_bpe_vectors, test_stories_prompts, test_speed)
