/* test_reference.c - stories260K against llama.cpp's reference runs
 * (../shared/fixtures/reference.json): prompt ids, 64 greedy ids, and the
 * logits of the last prompt position. */
#include <jansson.h>

#include "test.h"
#include "infer/gen.h"
#include "infer/sampler.h"

static json_t *load_ref(void)
{
	json_error_t je;
	json_t *root = json_load_file(fixture_path("reference.json"), 0, &je);
	if (!root)
		fprintf(stderr, "  reference.json: %s at line %d\n", je.text, je.line);
	return root;
}

static int read_f32(const char *path, float *out, int n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	size_t got = fread(out, sizeof(float), (size_t)n, f);
	fclose(f);
	return got == (size_t)n ? 0 : -1;
}

static void run_case(json_t *cs, const char *run_name, enum fwd_kv_type kv, int nthreads, int n_ranges)
{
	json_t *run = json_object_get(json_object_get(cs, "runs"), run_name);
	REQUIRE(run);
	gguf_t *g = NULL;
	model_t *m = NULL;
	err_msg_t e = { { 0 } };
	char mp[64];
	snprintf(mp, sizeof(mp), "%s", json_string_value(json_object_get(cs, "model_file")));
	REQUIRE(gguf_open(fixture_path(mp), &g, &e) == 0);
	REQUIRE(model_load(g, &m, &e) == 0);
	pool_t *pool = pool_new(nthreads);
	gen_t *gen = NULL;
	gen_opts_t o = { .n_ctx = 256, .kv = kv, .n_ranges = n_ranges };
	REQUIRE(gen_new(m, pool, &o, &gen, &e) == 0);

	json_t *pids = json_object_get(run, "prompt_token_ids");
	int np = (int)json_array_size(pids);
	int32_t toks[512];
	for (int i = 0; i < np; i++)
		toks[i] = (int32_t)json_integer_value(json_array_get(pids, (size_t)i));
	const float *lg;
	REQUIRE(gen_eval(gen, toks, np, &lg, NULL, &e) == 0);

	/* Last prompt position logits against llama.cpp's. */
	int nv = m->hp.n_vocab;
	float *ref = malloc(sizeof(float) * (size_t)nv);
	char lp[256];
	snprintf(lp, sizeof(lp), "%s", json_string_value(json_object_get(run, "last_prompt_pos_logits_file")));
	REQUIRE(read_f32(fixture_path(lp), ref, nv) == 0);
	double maxd = 0;
	for (int i = 0; i < nv; i++)
		if (fabs(lg[i] - ref[i]) > maxd)
			maxd = fabs(lg[i] - ref[i]);
	double tol = 1e-4; /* f16: llama.cpp rounds Q, K, V and softmax weights alike */
	fprintf(stderr, "  %s/%s threads %d ranges %d: max |logit - ref| = %.3g (bound %.g)\n",
		json_string_value(json_object_get(cs, "prompt")), run_name, nthreads, n_ranges, maxd, tol);
	CHECK(maxd <= tol);

	/* Greedy continuation: every id equal. */
	smp_params_t sp = smp_params_default();
	sp.temp = 0;
	smp_chain_t *ch = smp_chain_new_default(&sp);
	json_t *gids = json_object_get(run, "generated_token_ids");
	int ng = (int)json_array_size(gids), mism = 0;
	for (int i = 0; i < ng; i++) {
		int32_t t = smp_sample(ch, lg, nv);
		int32_t want = (int32_t)json_integer_value(json_array_get(gids, (size_t)i));
		if (t != want && !mism++)
			fprintf(stderr, "  first mismatch at step %d: got %d, want %d\n", i, t, want);
		smp_accept(ch, want);
		REQUIRE(gen_eval(gen, &want, 1, &lg, NULL, &e) == 0);
	}
	CHECK_EQ_INT(mism, 0);
	smp_chain_free(ch);
	free(ref);
	gen_free(gen);
	pool_free(pool);
	model_free(m);
	gguf_free(g);
}

static void for_each_case(const char *run, enum fwd_kv_type kv, int nth, int nr)
{
	json_t *root = load_ref();
	REQUIRE(root);
	json_t *cases = json_object_get(root, "cases");
	REQUIRE(json_array_size(cases) >= 2);
	for (size_t i = 0; i < json_array_size(cases); i++)
		run_case(json_array_get(cases, i), run, kv, nth, nr);
	json_decref(root);
}

static void test_kv_f32_one_thread(void) { for_each_case("kv_f32", FWD_KV_F32, 1, 1); }
static void test_kv_f32_two_threads_three_ranges(void) { for_each_case("kv_f32", FWD_KV_F32, 2, 3); }
static void test_kv_f16(void) { for_each_case("kv_f16", FWD_KV_F16, 2, 1); }

TEST_MAIN(test_kv_f32_one_thread, test_kv_f32_two_threads_three_ranges, test_kv_f16)
