/* test_gguf.c - the GGUF reader on real files, the writer by round trip, and
 * the API's edge cases. Corrupt files are in tests/vectors/test_gguf_corrupt.c. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kern/kern.h"
#include "model/gguf.h"
#include "test.h"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
	static char buf[4][512];
	static int slot;
	if (!tmpdir[0]) {
		const char *t = getenv("TMPDIR");
		snprintf(tmpdir, sizeof(tmpdir), "%s/test_gguf.XXXXXX", t && *t ? t : "/tmp");
		if (!mkdtemp(tmpdir)) {
			tmpdir[0] = 0;
			return NULL;
		}
	}
	char *p = buf[slot++ & 3];
	snprintf(p, 512, "%s/%s", tmpdir, name);
	return p;
}

static int str_eq(gguf_str_t s, const char *c)
{
	return s.n == strlen(c) && memcmp(s.p, c, s.n) == 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint8_t *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
	if (b && n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* ---- real files */

static void check_stories(const gguf_t *g)
{
	uint32_t u;
	float f;
	gguf_str_t s;
	CHECK_EQ_INT(gguf_version(g), 3);
	CHECK_EQ_INT(gguf_n_kv(g), 19);
	CHECK_EQ_INT(gguf_n_tensors(g), 48);
	CHECK_EQ_INT(gguf_alignment(g), 32);
	CHECK_EQ_INT(gguf_file_size(g), 1185376);
	CHECK_EQ_INT(gguf_data_offset(g), 14176);
	CHECK_OK(gguf_get_u32(g, "llama.embedding_length", &u));
	CHECK_EQ_INT(u, 64);
	CHECK_OK(gguf_get_u32(g, "llama.block_count", &u));
	CHECK_EQ_INT(u, 5);
	CHECK_OK(gguf_get_u32(g, "llama.feed_forward_length", &u));
	CHECK_EQ_INT(u, 172);
	CHECK_OK(gguf_get_u32(g, "llama.attention.head_count", &u));
	CHECK_EQ_INT(u, 8);
	CHECK_OK(gguf_get_u32(g, "llama.attention.head_count_kv", &u));
	CHECK_EQ_INT(u, 4);
	CHECK_OK(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u));
	CHECK_EQ_INT(u, 1);
	CHECK_OK(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f));
	CHECK_NEAR(f, 1e-5, 1e-9);
	CHECK_OK(gguf_get_str(g, "general.architecture", &s));
	CHECK(str_eq(s, "llama"));
	/* -1 stored as u32: not a valid i64 conversion problem, just a big u32. */
	int64_t i64;
	CHECK_OK(gguf_get_i64(g, "tokenizer.ggml.padding_token_id", &i64));
	CHECK_EQ_INT(i64, 0xffffffffLL);

	const gguf_kv_t *tok = gguf_kv_find(g, "tokenizer.ggml.tokens");
	REQUIRE(tok && tok->type == GGUF_ARRAY && tok->arr_type == GGUF_STRING);
	CHECK_EQ_INT(tok->arr_n, 512);
	CHECK(str_eq(gguf_arr_str(tok, 0), "<unk>"));
	CHECK(str_eq(gguf_arr_str(tok, 1), "<s>"));
	CHECK(str_eq(gguf_arr_str(tok, 2), "</s>"));
	const gguf_kv_t *tt = gguf_kv_find(g, "tokenizer.ggml.token_type");
	REQUIRE(tt && tt->arr_type == GGUF_INT32 && tt->arr_n == 512);
	CHECK_EQ_INT(gguf_arr_int(tt, 0), 2);   /* unknown */
	CHECK_EQ_INT(gguf_arr_int(tt, 1), 3);   /* control */
	const gguf_kv_t *sc = gguf_kv_find(g, "tokenizer.ggml.scores");
	REQUIRE(sc && sc->arr_type == GGUF_FLOAT32 && sc->arr_n == 512);

	const gguf_tensor_t *t = gguf_tensor_find(g, "token_embd.weight");
	REQUIRE(t);
	CHECK_EQ_INT(t->n_dims, 2);
	CHECK_EQ_INT(t->ne[0], 64);
	CHECK_EQ_INT(t->ne[1], 512);
	CHECK_EQ_INT(t->ne[2], 1);
	CHECK_EQ_INT(t->type, KERN_F32);
	CHECK_EQ_INT(t->offset, 0);
	CHECK_EQ_INT(t->nbytes, 64 * 512 * 4);
	CHECK(t->data == (const uint8_t *)gguf_base(g) + gguf_data_offset(g));
	t = gguf_tensor_find(g, "output_norm.weight");
	REQUIRE(t);
	CHECK_EQ_INT(t->n_dims, 1);
	CHECK_EQ_INT(t->ne[0], 64);
	/* RMS-norm gains of a trained model: finite, mostly positive. */
	const float *w = t->data;
	int pos = 0;
	for (int i = 0; i < 64; i++) {
		CHECK(isfinite(w[i]));
		pos += w[i] > 0;
	}
	CHECK(pos > 48);
	t = gguf_tensor_find(g, "blk.4.ffn_down.weight");
	REQUIRE(t);
	CHECK_EQ_INT(t->ne[0], 172);
	CHECK_EQ_INT(t->ne[1], 64);
	CHECK(gguf_tensor_find(g, "blk.5.ffn_down.weight") == NULL);
	for (int l = 0; l < 5; l++) {
		char nm[64];
		snprintf(nm, sizeof(nm), "blk.%d.attn_k.weight", l);
		t = gguf_tensor_find(g, nm);
		REQUIRE(t);
		CHECK_EQ_INT(t->ne[0], 64);
		CHECK_EQ_INT(t->ne[1], 32);   /* 4 KV heads of 8 */
	}
	/* Tensors tile the data section exactly. */
	uint64_t total = 0;
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor_t *ti = gguf_tensor_at(g, i);
		CHECK(gguf_tensor_find(g, ti->name) == ti);
		CHECK_EQ_INT(ti->offset % 32, 0);
		total += ti->nbytes;
	}
	CHECK_EQ_INT(gguf_data_offset(g) + total, gguf_file_size(g));
	for (int64_t i = 0; i < gguf_n_kv(g); i++)
		CHECK(gguf_kv_find(g, gguf_kv_at(g, i)->key) == gguf_kv_at(g, i));
}

static void test_stories260k(void)
{
	const char *path = fixture_path("stories260K.gguf");
	gguf_t *g = NULL;
	err_msg_t e = { "" };
	int rc = gguf_open(path, &g, &e);
	if (rc)
		fprintf(stderr, "  open: %s\n", e.msg);
	REQUIRE(rc == 0 && g);
	check_stories(g);
	gguf_free(g);

	/* The same bytes through gguf_open_mem. */
	size_t len;
	uint8_t *buf = read_all(path, &len);
	REQUIRE(buf);
	CHECK_OK(gguf_open_mem(buf, len, &g, &e));
	if (g) {
		check_stories(g);
		CHECK(gguf_base(g) == buf);
	}
	gguf_free(g);
	free(buf);
}

/* Checks the O(1) index against a plain walk of the array. */
static void check_str_index(const gguf_kv_t *kv)
{
	const uint8_t *p = kv->data;
	int bad = 0;
	for (uint64_t i = 0; i < kv->arr_n; i++) {
		uint64_t n;
		memcpy(&n, p, 8);
		gguf_str_t s = gguf_arr_str(kv, i);
		if (s.n != n || s.p != (const char *)p + 8)
			bad++;
		p += 8 + n;
	}
	CHECK_EQ_INT(bad, 0);
}

static void test_vocab_spm(void)
{
	gguf_t *g = NULL;
	err_msg_t e = { "" };
	int rc = gguf_open(fixture_path("ggml-vocab-llama-spm.gguf"), &g, &e);
	if (rc)
		fprintf(stderr, "  open: %s\n", e.msg);
	REQUIRE(rc == 0);
	CHECK_EQ_INT(gguf_n_tensors(g), 0);
	const gguf_kv_t *tok = gguf_kv_find(g, "tokenizer.ggml.tokens");
	REQUIRE(tok && tok->arr_type == GGUF_STRING);
	CHECK_EQ_INT(tok->arr_n, 32000);
	CHECK(str_eq(gguf_arr_str(tok, 1), "<s>"));
	CHECK(str_eq(gguf_arr_str(tok, 31999), "\xe7\xbb\x99"));   /* 给, the last piece */
	check_str_index(tok);
	int b;
	CHECK_OK(gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b));
	CHECK_EQ_INT(b, 1);
	CHECK_OK(gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b));
	CHECK_EQ_INT(b, 0);
	uint32_t u;
	CHECK_OK(gguf_get_u32(g, "llama.vocab_size", &u));
	CHECK_EQ_INT(u, 32000);
	gguf_free(g);
}

static void test_vocab_bpe(void)
{
	const char *path = fixture_path("ggml-vocab-llama-bpe.gguf");
	gguf_t *g = NULL;
	err_msg_t e = { "" };
	/* Warm the page cache, then time the open (validation + string index). */
	REQUIRE(gguf_open(path, &g, &e) == 0);
	gguf_free(g);
	double best = 1e9;
	for (int k = 0; k < 5; k++) {
		double t0 = now_s();
		int rc = gguf_open(path, &g, &e);
		double dt = now_s() - t0;
		REQUIRE(rc == 0);
		if (dt < best)
			best = dt;
		if (k < 4)
			gguf_free(g);
	}
	fprintf(stderr, "  open of the 128k-token vocabulary: %.2f ms (best of 5)\n", best * 1e3);
	const gguf_kv_t *tok = gguf_kv_find(g, "tokenizer.ggml.tokens");
	REQUIRE(tok && tok->arr_type == GGUF_STRING);
	CHECK_EQ_INT(tok->arr_n, 128256);
	CHECK(str_eq(gguf_arr_str(tok, 0), "!"));
	CHECK(str_eq(gguf_arr_str(tok, 128000), "<|begin_of_text|>"));
	check_str_index(tok);
	const gguf_kv_t *mg = gguf_kv_find(g, "tokenizer.ggml.merges");
	REQUIRE(mg && mg->arr_type == GGUF_STRING);
	CHECK_EQ_INT(mg->arr_n, 280147);
	CHECK(str_eq(gguf_arr_str(mg, 0), "\xc4\xa0 \xc4\xa0"));
	check_str_index(mg);
	uint32_t u;
	CHECK_OK(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u));
	CHECK_EQ_INT(u, 128000);
	gguf_str_t s;
	CHECK_OK(gguf_get_str(g, "tokenizer.ggml.pre", &s));
	CHECK(str_eq(s, "llama-bpe"));
	CHECK_OK(gguf_get_str(g, "tokenizer.chat_template", &s));
	CHECK(s.n > 100);
	gguf_free(g);
}

/* ---- writer round trip */

typedef struct rt_tensor {
	const char *name;
	int type;
	uint32_t n_dims;
	int64_t ne[4];
} rt_tensor_t;

static const rt_tensor_t rt_tensors[] = {
	{ "a.f32", KERN_F32, 2, { 8, 3 } },
	{ "b.f16", KERN_F16, 1, { 5 } },          /* 10 bytes: padded */
	{ "c.q8_0", KERN_Q8_0, 3, { 64, 2, 3 } },
	{ "d.q4_0", KERN_Q4_0, 2, { 32, 1 } },
	{ "e.q4_k", KERN_Q4_K, 2, { 256, 2 } },
	{ "f.q6_k", KERN_Q6_K, 4, { 256, 1, 1, 2 } },
	{ "g.iq2_xxs", KERN_IQ2_XXS, 1, { 256 } },   /* known, without kernels */
	{ "h.bf16", KERN_BF16, 1, { 3 } },
};
#define RT_NT (int)(sizeof(rt_tensors) / sizeof(rt_tensors[0]))

static uint8_t pattern(int64_t i, uint64_t k)
{
	return (uint8_t)(i * 131 + k * 7 + (k >> 8));
}

static int fill_pattern(void *arg, int64_t i, void *buf, uint64_t nbytes)
{
	int *calls = arg;
	(*calls)++;
	for (uint64_t k = 0; k < nbytes; k++)
		((uint8_t *)buf)[k] = pattern(i, k);
	return 0;
}

static const char *rt_strs[] = { "alpha", "", "\xe4\xbd\xa0\xe5\xa5\xbd", "with space", "x" };

static gguf_writer_t *rt_writer(void)
{
	gguf_writer_t *w = gguf_writer_new();
	REQUIRE(w);
	uint8_t u8 = 200;
	int8_t i8 = -100;
	uint16_t u16 = 60000;
	int16_t i16 = -30000;
	uint64_t u64 = 0xfedcba9876543210ULL;
	int64_t i64 = INT64_MIN + 5;
	double f64 = -1.0 / 3.0;
	CHECK_OK(gguf_writer_set_val(w, "t.u8", GGUF_UINT8, &u8));
	CHECK_OK(gguf_writer_set_val(w, "t.i8", GGUF_INT8, &i8));
	CHECK_OK(gguf_writer_set_val(w, "t.u16", GGUF_UINT16, &u16));
	CHECK_OK(gguf_writer_set_val(w, "t.i16", GGUF_INT16, &i16));
	CHECK_OK(gguf_writer_set_u32(w, "t.u32", 4000000000u));
	CHECK_OK(gguf_writer_set_i32(w, "t.i32", -2000000000));
	CHECK_OK(gguf_writer_set_f32(w, "t.f32", 0.1f));
	CHECK_OK(gguf_writer_set_bool(w, "t.bool", 1));
	CHECK_OK(gguf_writer_set_str(w, "t.str", "hello, GGUF"));
	CHECK_OK(gguf_writer_set_val(w, "t.u64", GGUF_UINT64, &u64));
	CHECK_OK(gguf_writer_set_val(w, "t.i64", GGUF_INT64, &i64));
	CHECK_OK(gguf_writer_set_val(w, "t.f64", GGUF_FLOAT64, &f64));
	CHECK_OK(gguf_writer_set_str(w, "t.empty_str", ""));

	uint8_t a_u8[3] = { 0, 128, 255 };
	int8_t a_i8[3] = { -128, 0, 127 };
	uint16_t a_u16[2] = { 1, 65535 };
	int16_t a_i16[2] = { -32768, 32767 };
	uint32_t a_u32[4] = { 0, 1, 2, 4294967295u };
	int32_t a_i32[3] = { -1, 0, 1 };
	float a_f32[3] = { 1.5f, -2.25f, 1e30f };
	uint8_t a_bool[4] = { 1, 0, 0, 1 };
	uint64_t a_u64[2] = { 0, UINT64_MAX };
	int64_t a_i64[2] = { INT64_MIN, INT64_MAX };
	double a_f64[2] = { 3.141592653589793, -0.0 };
	CHECK_OK(gguf_writer_set_arr(w, "a.u8", GGUF_UINT8, a_u8, 3));
	CHECK_OK(gguf_writer_set_arr(w, "a.i8", GGUF_INT8, a_i8, 3));
	CHECK_OK(gguf_writer_set_arr(w, "a.u16", GGUF_UINT16, a_u16, 2));
	CHECK_OK(gguf_writer_set_arr(w, "a.i16", GGUF_INT16, a_i16, 2));
	CHECK_OK(gguf_writer_set_arr(w, "a.u32", GGUF_UINT32, a_u32, 4));
	CHECK_OK(gguf_writer_set_arr(w, "a.i32", GGUF_INT32, a_i32, 3));
	CHECK_OK(gguf_writer_set_arr(w, "a.f32", GGUF_FLOAT32, a_f32, 3));
	CHECK_OK(gguf_writer_set_arr(w, "a.bool", GGUF_BOOL, a_bool, 4));
	CHECK_OK(gguf_writer_set_arr(w, "a.u64", GGUF_UINT64, a_u64, 2));
	CHECK_OK(gguf_writer_set_arr(w, "a.i64", GGUF_INT64, a_i64, 2));
	CHECK_OK(gguf_writer_set_arr(w, "a.f64", GGUF_FLOAT64, a_f64, 2));
	CHECK_OK(gguf_writer_set_arr(w, "a.empty", GGUF_UINT32, NULL, 0));
	CHECK_OK(gguf_writer_set_arr_str(w, "a.str", rt_strs, 5));
	CHECK_OK(gguf_writer_set_arr_str(w, "a.empty_str", NULL, 0));
	for (int i = 0; i < RT_NT; i++)
		CHECK_OK(gguf_writer_add_tensor(w, rt_tensors[i].name, rt_tensors[i].type,
			rt_tensors[i].n_dims, rt_tensors[i].ne));
	return w;
}

static void check_rt(const gguf_t *g)
{
	uint32_t u32;
	int64_t i64;
	uint64_t u64;
	float f;
	int b;
	gguf_str_t s;
	CHECK_EQ_INT(gguf_version(g), 3);
	CHECK_EQ_INT(gguf_n_kv(g), 27);
	CHECK_EQ_INT(gguf_n_tensors(g), RT_NT);
	/* Scalars: decoded values and type conversions. */
	const gguf_kv_t *kv = gguf_kv_find(g, "t.u8");
	REQUIRE(kv && kv->type == GGUF_UINT8);
	CHECK_EQ_INT(kv->v.u64, 200);
	CHECK_OK(gguf_get_u32(g, "t.u8", &u32));
	CHECK_EQ_INT(u32, 200);
	kv = gguf_kv_find(g, "t.i8");
	REQUIRE(kv && kv->type == GGUF_INT8);
	CHECK_EQ_INT(kv->v.i64, -100);
	CHECK_OK(gguf_get_i64(g, "t.i8", &i64));
	CHECK_EQ_INT(i64, -100);
	CHECK(gguf_get_u32(g, "t.i8", &u32) == ERR_FORMAT);
	CHECK(gguf_get_u64(g, "t.i8", &u64) == ERR_FORMAT);
	CHECK_OK(gguf_get_u32(g, "t.u16", &u32));
	CHECK_EQ_INT(u32, 60000);
	CHECK_OK(gguf_get_i64(g, "t.i16", &i64));
	CHECK_EQ_INT(i64, -30000);
	CHECK_OK(gguf_get_u32(g, "t.u32", &u32));
	CHECK_EQ_INT(u32, 4000000000u);
	CHECK_OK(gguf_get_i64(g, "t.i32", &i64));
	CHECK_EQ_INT(i64, -2000000000);
	CHECK_OK(gguf_get_f32(g, "t.f32", &f));
	CHECK(f == 0.1f);
	CHECK_OK(gguf_get_bool(g, "t.bool", &b));
	CHECK_EQ_INT(b, 1);
	CHECK_OK(gguf_get_str(g, "t.str", &s));
	CHECK(str_eq(s, "hello, GGUF"));
	CHECK_OK(gguf_get_str(g, "t.empty_str", &s));
	CHECK_EQ_INT(s.n, 0);
	CHECK_OK(gguf_get_u64(g, "t.u64", &u64));
	CHECK(u64 == 0xfedcba9876543210ULL);
	CHECK(gguf_get_u32(g, "t.u64", &u32) == ERR_FORMAT);   /* out of range */
	CHECK(gguf_get_i64(g, "t.u64", &i64) == ERR_FORMAT);
	CHECK_OK(gguf_get_i64(g, "t.i64", &i64));
	CHECK(i64 == INT64_MIN + 5);
	kv = gguf_kv_find(g, "t.f64");
	REQUIRE(kv && kv->type == GGUF_FLOAT64);
	CHECK(kv->v.f64 == -1.0 / 3.0);
	CHECK_OK(gguf_get_f32(g, "t.f64", &f));
	CHECK(f == (float)(-1.0 / 3.0));
	/* Wrong kinds and missing keys. */
	CHECK(gguf_get_u32(g, "t.str", &u32) == ERR_FORMAT);
	CHECK(gguf_get_f32(g, "t.u32", &f) == ERR_FORMAT);
	CHECK(gguf_get_bool(g, "t.u8", &b) == ERR_FORMAT);
	CHECK(gguf_get_str(g, "t.u8", &s) == ERR_FORMAT);
	CHECK(gguf_get_u32(g, "a.u32", &u32) == ERR_FORMAT);
	CHECK(gguf_get_u32(g, "no.such.key", &u32) == ERR_NOTFOUND);
	CHECK(gguf_get_str(g, "no.such.key", &s) == ERR_NOTFOUND);

	/* Arrays. */
	static const struct { const char *key; int type; uint64_t n; int64_t v0, vlast; } ai[] = {
		{ "a.u8", GGUF_UINT8, 3, 0, 255 }, { "a.i8", GGUF_INT8, 3, -128, 127 },
		{ "a.u16", GGUF_UINT16, 2, 1, 65535 }, { "a.i16", GGUF_INT16, 2, -32768, 32767 },
		{ "a.u32", GGUF_UINT32, 4, 0, 4294967295LL }, { "a.i32", GGUF_INT32, 3, -1, 1 },
		{ "a.bool", GGUF_BOOL, 4, 1, 1 }, { "a.u64", GGUF_UINT64, 2, 0, -1 },
		{ "a.i64", GGUF_INT64, 2, INT64_MIN, INT64_MAX },
	};
	for (size_t k = 0; k < sizeof(ai) / sizeof(ai[0]); k++) {
		kv = gguf_kv_find(g, ai[k].key);
		REQUIRE(kv && kv->type == GGUF_ARRAY);
		CHECK_EQ_INT(kv->arr_type, ai[k].type);
		CHECK_EQ_INT(kv->arr_n, ai[k].n);
		CHECK(gguf_arr_int(kv, 0) == ai[k].v0);
		CHECK(gguf_arr_int(kv, ai[k].n - 1) == ai[k].vlast);
	}
	kv = gguf_kv_find(g, "a.u8");
	CHECK_EQ_INT(gguf_arr_int(kv, 1), 128);
	kv = gguf_kv_find(g, "a.f32");
	REQUIRE(kv && kv->arr_type == GGUF_FLOAT32 && kv->arr_n == 3);
	CHECK(gguf_arr_float(kv, 0) == 1.5);
	CHECK(gguf_arr_float(kv, 1) == -2.25);
	CHECK(gguf_arr_float(kv, 2) == (double)1e30f);
	kv = gguf_kv_find(g, "a.f64");
	REQUIRE(kv && kv->arr_type == GGUF_FLOAT64 && kv->arr_n == 2);
	CHECK(gguf_arr_float(kv, 0) == 3.141592653589793);
	CHECK(signbit(gguf_arr_float(kv, 1)));
	kv = gguf_kv_find(g, "a.empty");
	REQUIRE(kv && kv->type == GGUF_ARRAY && kv->arr_type == GGUF_UINT32);
	CHECK_EQ_INT(kv->arr_n, 0);
	kv = gguf_kv_find(g, "a.empty_str");
	REQUIRE(kv && kv->arr_type == GGUF_STRING);
	CHECK_EQ_INT(kv->arr_n, 0);
	kv = gguf_kv_find(g, "a.str");
	REQUIRE(kv && kv->arr_type == GGUF_STRING && kv->arr_n == 5);
	for (int i = 0; i < 5; i++)
		CHECK(str_eq(gguf_arr_str(kv, (uint64_t)i), rt_strs[i]));

	/* Tensors: shapes, types, aligned offsets in order, the filled bytes. */
	uint64_t expect_off = 0;
	for (int i = 0; i < RT_NT; i++) {
		const gguf_tensor_t *t = gguf_tensor_at(g, i);
		REQUIRE(t);
		CHECK(strcmp(t->name, rt_tensors[i].name) == 0);
		CHECK(gguf_tensor_find(g, rt_tensors[i].name) == t);
		CHECK_EQ_INT(t->type, rt_tensors[i].type);
		CHECK_EQ_INT(t->n_dims, rt_tensors[i].n_dims);
		int64_t nel = 1;
		for (int d = 0; d < 4; d++) {
			int64_t want = d < (int)rt_tensors[i].n_dims ? rt_tensors[i].ne[d] : 1;
			CHECK_EQ_INT(t->ne[d], want);
			nel *= t->ne[d];
		}
		CHECK_EQ_INT(t->nbytes, kern_row_size(t->type, t->ne[0]) * (uint64_t)(nel / t->ne[0]));
		CHECK_EQ_INT(t->offset, expect_off);
		expect_off = (expect_off + t->nbytes + 31) / 32 * 32;
		int bad = 0;
		for (uint64_t k = 0; k < t->nbytes; k++)
			bad += ((const uint8_t *)t->data)[k] != pattern(i, k);
		CHECK_EQ_INT(bad, 0);
	}
	CHECK_EQ_INT(gguf_file_size(g), gguf_data_offset(g) + expect_off);
	CHECK_EQ_INT(kern_row_size(KERN_IQ2_XXS, 256), 66);
	CHECK_EQ_INT(gguf_tensor_find(g, "g.iq2_xxs")->nbytes, 66);
}

static void test_roundtrip(void)
{
	const char *p1 = tmp_path("rt1.gguf"), *p2 = tmp_path("rt2.gguf");
	REQUIRE(p1 && p2);
	gguf_writer_t *w = rt_writer();
	err_msg_t e = { "" };
	int calls = 0;
	int rc = gguf_writer_write(w, p1, fill_pattern, &calls, &e);
	if (rc)
		fprintf(stderr, "  write: %s\n", e.msg);
	REQUIRE(rc == 0);
	CHECK_EQ_INT(calls, RT_NT);
	gguf_writer_free(w);

	gguf_t *g = NULL;
	rc = gguf_open(p1, &g, &e);
	if (rc)
		fprintf(stderr, "  open: %s\n", e.msg);
	REQUIRE(rc == 0);
	check_rt(g);

	/* Copying every pair and re-declaring every tensor gives the same bytes. */
	w = gguf_writer_new();
	REQUIRE(w);
	for (int64_t i = 0; i < gguf_n_kv(g); i++)
		CHECK_OK(gguf_writer_copy_kv(w, gguf_kv_at(g, i)));
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor_t *t = gguf_tensor_at(g, i);
		CHECK_OK(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne));
	}
	calls = 0;
	CHECK_OK(gguf_writer_write(w, p2, fill_pattern, &calls, &e));
	gguf_writer_free(w);
	gguf_free(g);
	size_t n1, n2;
	uint8_t *b1 = read_all(p1, &n1), *b2 = read_all(p2, &n2);
	REQUIRE(b1 && b2);
	CHECK_EQ_INT(n1, n2);
	CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
	free(b1);
	free(b2);
	unlink(p1);
	unlink(p2);
}

/* The real vocabulary copied key by key survives intact (long string arrays). */
static void test_copy_vocab(void)
{
	const char *src = fixture_path("ggml-vocab-llama-spm.gguf");
	const char *dst = tmp_path("vocab.gguf");
	REQUIRE(dst);
	gguf_t *g = NULL, *h = NULL;
	err_msg_t e = { "" };
	REQUIRE(gguf_open(src, &g, &e) == 0);
	gguf_writer_t *w = gguf_writer_new();
	REQUIRE(w);
	for (int64_t i = 0; i < gguf_n_kv(g); i++)
		CHECK_OK(gguf_writer_copy_kv(w, gguf_kv_at(g, i)));
	CHECK_OK(gguf_writer_write(w, dst, NULL, NULL, &e));
	gguf_writer_free(w);
	REQUIRE(gguf_open(dst, &h, &e) == 0);
	REQUIRE(gguf_n_kv(h) == gguf_n_kv(g));
	/* The source has no padding after its pairs; ours has none either
	 * (no tensors), so the files are the same bytes. */
	CHECK_EQ_INT(gguf_file_size(h), gguf_file_size(g));
	CHECK(memcmp(gguf_base(h), gguf_base(g), gguf_file_size(g)) == 0);
	gguf_free(g);
	gguf_free(h);
	unlink(dst);
}

static int fill_fail(void *arg, int64_t i, void *buf, uint64_t nbytes)
{
	memset(buf, 0, nbytes);
	return i == 1 ? ERR_NOMEM : 0;
}

static int count_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static void test_writer_errors(void)
{
	gguf_writer_t *w = gguf_writer_new();
	REQUIRE(w);
	int64_t ne[4] = { 32, 2, 1, 1 };
	uint8_t two = 2;
	CHECK(gguf_writer_set_u32(w, "", 1) == ERR_INVAL);
	CHECK(gguf_writer_set_u32(w, NULL, 1) == ERR_INVAL);
	CHECK(gguf_writer_set_bool(w, "b", 2) == ERR_INVAL);
	CHECK(gguf_writer_set_val(w, "b", GGUF_BOOL, &two) == ERR_INVAL);
	CHECK(gguf_writer_set_val(w, "s", GGUF_STRING, "x") == ERR_INVAL);
	CHECK(gguf_writer_set_val(w, "s", GGUF_ARRAY, "x") == ERR_INVAL);
	CHECK(gguf_writer_set_val(w, "s", (enum gguf_vtype)13, "x") == ERR_INVAL);
	CHECK(gguf_writer_set_arr(w, "a", GGUF_STRING, "x", 1) == ERR_INVAL);
	CHECK(gguf_writer_set_arr(w, "a", GGUF_BOOL, &two, 1) == ERR_INVAL);
	CHECK(gguf_writer_set_arr(w, "a", GGUF_UINT8, NULL, 1) == ERR_INVAL);
	CHECK(gguf_writer_set_str(w, "s", NULL) == ERR_INVAL);
	const char *with_null[2] = { "a", NULL };
	CHECK(gguf_writer_set_arr_str(w, "as", with_null, 2) == ERR_INVAL);
	CHECK(gguf_writer_add_tensor(w, "t", 4, 1, ne) == ERR_INVAL);       /* retired id */
	CHECK(gguf_writer_add_tensor(w, "t", 99, 1, ne) == ERR_INVAL);
	CHECK(gguf_writer_add_tensor(w, "t", -1, 1, ne) == ERR_INVAL);
	CHECK(gguf_writer_add_tensor(w, "t", KERN_F32, 0, ne) == ERR_INVAL);
	CHECK(gguf_writer_add_tensor(w, "t", KERN_F32, 5, ne) == ERR_INVAL);
	CHECK(gguf_writer_add_tensor(w, "", KERN_F32, 1, ne) == ERR_INVAL);
	int64_t ne_bad[2] = { 16, 1 };
	CHECK(gguf_writer_add_tensor(w, "t", KERN_Q4_0, 1, ne_bad) == ERR_INVAL);   /* 16 % 32 */
	int64_t ne_zero[2] = { 32, 0 };
	CHECK(gguf_writer_add_tensor(w, "t", KERN_F32, 2, ne_zero) == ERR_INVAL);
	int64_t ne_huge[4] = { 1LL << 30, 1LL << 30, 1, 1 };
	CHECK(gguf_writer_add_tensor(w, "t", KERN_F32, 2, ne_huge) == ERR_INVAL);
	CHECK_OK(gguf_writer_add_tensor(w, "t", KERN_F32, 2, ne));
	CHECK(gguf_writer_add_tensor(w, "t", KERN_F16, 1, ne) == ERR_INVAL);      /* duplicate */
	CHECK_OK(gguf_writer_add_tensor(w, "u", KERN_Q8_0, 1, ne));

	/* Setting a key again replaces it where it stands. */
	CHECK_OK(gguf_writer_set_u32(w, "k.first", 1));
	CHECK_OK(gguf_writer_set_str(w, "k.second", "x"));
	CHECK_OK(gguf_writer_set_str(w, "k.first", "now a string"));

	/* A failing fill aborts the write and leaves nothing behind. */
	REQUIRE(tmp_path("x"));
	int before = count_dir_entries(tmpdir);
	err_msg_t e = { "" };
	const char *p = tmp_path("fail.gguf");
	CHECK(gguf_writer_write(w, p, fill_fail, NULL, &e) == ERR_NOMEM);
	CHECK(strstr(e.msg, "'u'") != NULL);
	CHECK_EQ_INT(count_dir_entries(tmpdir), before);
	CHECK(access(p, F_OK) != 0);
	/* No fill callback with tensors declared. */
	CHECK(gguf_writer_write(w, p, NULL, NULL, &e) == ERR_INVAL);
	/* An unwritable place: I/O error with a message. */
	e.msg[0] = 0;
	CHECK(gguf_writer_write(w, tmp_path("no/such/dir.gguf"), fill_fail, NULL, &e) == ERR_IO);
	CHECK(e.msg[0] != 0);

	/* A successful write over an existing file replaces it. */
	CHECK_OK(gguf_writer_write(w, p, fill_pattern, &(int){ 0 }, &e));
	gguf_t *g = NULL;
	REQUIRE(gguf_open(p, &g, &e) == 0);
	CHECK_EQ_INT(gguf_n_kv(g), 2);
	CHECK(strcmp(gguf_kv_at(g, 0)->key, "k.first") == 0);
	CHECK_EQ_INT(gguf_kv_at(g, 0)->type, GGUF_STRING);
	CHECK_EQ_INT(gguf_n_tensors(g), 2);
	gguf_free(g);
	CHECK_EQ_INT(count_dir_entries(tmpdir), before + 1);
	unlink(p);
	gguf_writer_free(w);
}

static void test_alignment(void)
{
	static const uint32_t aligns[] = { 1, 8, 64, 4096 };
	for (size_t k = 0; k < sizeof(aligns) / sizeof(aligns[0]); k++) {
		gguf_writer_t *w = gguf_writer_new();
		REQUIRE(w);
		CHECK_OK(gguf_writer_set_u32(w, "general.alignment", aligns[k]));
		int64_t a[1] = { 3 }, b[1] = { 7 };
		CHECK_OK(gguf_writer_add_tensor(w, "a", KERN_F32, 1, a));
		CHECK_OK(gguf_writer_add_tensor(w, "b", KERN_F16, 1, b));
		const char *p = tmp_path("align.gguf");
		err_msg_t e = { "" };
		int calls = 0;
		CHECK_OK(gguf_writer_write(w, p, fill_pattern, &calls, &e));
		gguf_writer_free(w);
		gguf_t *g = NULL;
		int rc = gguf_open(p, &g, &e);
		if (rc)
			fprintf(stderr, "  open (alignment %u): %s\n", aligns[k], e.msg);
		REQUIRE(rc == 0);
		CHECK_EQ_INT(gguf_alignment(g), aligns[k]);
		CHECK_EQ_INT(gguf_data_offset(g) % aligns[k], 0);
		const gguf_tensor_t *t = gguf_tensor_find(g, "b");
		REQUIRE(t);
		CHECK_EQ_INT(t->offset, (12 + aligns[k] - 1) / aligns[k] * aligns[k]);
		CHECK_EQ_INT(((uintptr_t)t->data - (uintptr_t)gguf_base(g)) % aligns[k], 0);
		gguf_free(g);
		unlink(p);
	}
	/* The writer refuses an alignment the reader would refuse. */
	gguf_writer_t *w = gguf_writer_new();
	REQUIRE(w);
	err_msg_t e = { "" };
	CHECK_OK(gguf_writer_set_u32(w, "general.alignment", 24));
	CHECK(gguf_writer_write(w, tmp_path("bad.gguf"), NULL, NULL, &e) == ERR_INVAL);
	CHECK_OK(gguf_writer_set_val(w, "general.alignment", GGUF_UINT64, &(uint64_t){ 32 }));
	CHECK(gguf_writer_write(w, tmp_path("bad.gguf"), NULL, NULL, &e) == ERR_INVAL);
	gguf_writer_free(w);
}

static void test_open_errors(void)
{
	gguf_t *g = (gguf_t *)1;
	err_msg_t e = { "" };
	CHECK(gguf_open(tmp_path("does-not-exist.gguf"), &g, &e) == ERR_IO);
	CHECK(g == NULL);
	CHECK(strstr(e.msg, "No such file") != NULL);
	e.msg[0] = 0;
	CHECK(gguf_open(tmpdir, &g, &e) == ERR_IO);   /* a folder */
	CHECK(e.msg[0] != 0);
	const char *p = tmp_path("empty.gguf");
	FILE *f = fopen(p, "wb");
	REQUIRE(f);
	fclose(f);
	e.msg[0] = 0;
	CHECK(gguf_open(p, &g, &e) == ERR_TRUNCATED);
	CHECK(e.msg[0] != 0);
	unlink(p);
	CHECK(gguf_open_mem(NULL, 0, &g, &e) == ERR_TRUNCATED);
	CHECK(gguf_open_mem(NULL, 10, &g, &e) == ERR_INVAL);
	CHECK(g == NULL);
}

static void test_api_edges(void)
{
	/* The smallest valid file: a header with no pairs and no tensors. */
	static const uint8_t min[24] = { 'G', 'G', 'U', 'F', 3 };
	gguf_t *g = NULL;
	err_msg_t e = { "" };
	REQUIRE(gguf_open_mem(min, sizeof(min), &g, &e) == 0);
	CHECK_EQ_INT(gguf_n_kv(g), 0);
	CHECK_EQ_INT(gguf_n_tensors(g), 0);
	CHECK_EQ_INT(gguf_alignment(g), 32);
	CHECK(gguf_kv_at(g, 0) == NULL);
	CHECK(gguf_kv_at(g, -1) == NULL);
	CHECK(gguf_tensor_at(g, 0) == NULL);
	CHECK(gguf_kv_find(g, "general.architecture") == NULL);
	CHECK(gguf_kv_find(g, NULL) == NULL);
	CHECK(gguf_tensor_find(g, "x") == NULL);
	uint32_t u;
	CHECK(gguf_get_u32(g, "x", &u) == ERR_NOTFOUND);
	gguf_free(g);
	/* Version 2 has the same layout. */
	uint8_t v2[24];
	memcpy(v2, min, 24);
	v2[4] = 2;
	REQUIRE(gguf_open_mem(v2, sizeof(v2), &g, &e) == 0);
	CHECK_EQ_INT(gguf_version(g), 2);
	gguf_free(g);
	gguf_free(NULL);
	gguf_writer_free(NULL);
	CHECK(strcmp(gguf_vtype_name(GGUF_UINT32), "u32") == 0);
	CHECK(strcmp(gguf_vtype_name(13), "unknown") == 0);
	CHECK(strcmp(gguf_vtype_name(-1), "unknown") == 0);
	CHECK_EQ_INT(gguf_vtype_size(GGUF_FLOAT64), 8);
	CHECK_EQ_INT(gguf_vtype_size(GGUF_BOOL), 1);
	CHECK_EQ_INT(gguf_vtype_size(GGUF_STRING), 0);
	CHECK_EQ_INT(gguf_vtype_size(99), 0);
}

/* f64 into float: out-of-range finite values are refused, not converted. */
static void test_f64_to_f32(void)
{
	gguf_writer_t *w = gguf_writer_new();
	REQUIRE(w);
	double big = 1e300, inf = INFINITY, small = 1e-300;
	CHECK_OK(gguf_writer_set_val(w, "big", GGUF_FLOAT64, &big));
	CHECK_OK(gguf_writer_set_val(w, "inf", GGUF_FLOAT64, &inf));
	CHECK_OK(gguf_writer_set_val(w, "small", GGUF_FLOAT64, &small));
	const char *p = tmp_path("f64.gguf");
	err_msg_t e = { "" };
	CHECK_OK(gguf_writer_write(w, p, NULL, NULL, &e));
	gguf_writer_free(w);
	gguf_t *g = NULL;
	REQUIRE(gguf_open(p, &g, &e) == 0);
	float f = 0;
	CHECK(gguf_get_f32(g, "big", &f) == ERR_FORMAT);
	CHECK_OK(gguf_get_f32(g, "inf", &f));
	CHECK(isinf(f) && f > 0);
	CHECK_OK(gguf_get_f32(g, "small", &f));
	CHECK(f == 0.0f);
	gguf_free(g);
	unlink(p);
}

/* A write that fails half-way (the file-size limit makes write(2) fail with
 * EFBIG) reports ERR_IO and leaves neither the file nor its temporary. */
static void test_write_io_error(void)
{
	gguf_writer_t *w = gguf_writer_new();
	REQUIRE(w);
	int64_t ne[2] = { 1024, 16 };   /* 64 KiB of f32 */
	CHECK_OK(gguf_writer_add_tensor(w, "big", KERN_F32, 2, ne));
	const char *p = tmp_path("efbig.gguf");
	int before = count_dir_entries(tmpdir);
	struct rlimit old, lim;
	REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
	void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 4096;
	REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	err_msg_t e = { "" };
	int calls = 0;
	int rc = gguf_writer_write(w, p, fill_pattern, &calls, &e);
	setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, old_sig);
	CHECK_EQ_INT(rc, ERR_IO);
	CHECK(strstr(e.msg, "large") != NULL || strstr(e.msg, "write") != NULL);
	fprintf(stderr, "  message: %s\n", e.msg);
	CHECK(access(p, F_OK) != 0);
	CHECK_EQ_INT(count_dir_entries(tmpdir), before);
	gguf_writer_free(w);
}

static void test_cleanup(void)
{
	if (tmpdir[0])
		CHECK(rmdir(tmpdir) == 0);
}

TEST_MAIN(test_stories260k, test_vocab_spm, test_vocab_bpe, test_roundtrip, test_copy_vocab,
	test_writer_errors, test_alignment, test_open_errors, test_api_edges, test_f64_to_f32, test_write_io_error,
	test_cleanup)
