/* colony bench: prompt-processing and generation speed of a model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/pool.h"
#include "cli/cmd.h"
#include "cli/opts.h"
#include "infer/gen.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: colony bench -m MODEL [-p N] [-n N] [-t THREADS] [-r REPS]\n"
		"\n"
		"Times prompt processing of N tokens as one batch (pp) and generation of N\n"
		"tokens one at a time (tg), REPS times each after a warm-up, and prints\n"
		"tokens/s (mean and standard deviation), the weight bytes read per generated\n"
		"token and the bandwidth that implies, and the GFLOP/s of prompt processing.\n"
		"\n"
		"  -m, --model FILE     GGUF model (required)\n"
		"  -p N                 prompt tokens (default 128; 0 skips pp)\n"
		"  -n N                 generated tokens (default 64; 0 skips tg)\n"
		"  -t, --threads N      threads (default 2)\n"
		"  -r, --reps N         repetitions (default 5)\n"
		"  --kv f32|f16         KV cache type (default f32)\n"
		"  --isa ref|avx2|avx512  force one kernel set (default: the best available)\n"
		"  --mmap               map the model file instead of loading it into huge pages\n"
		"  --no-repack          keep the file's weight layout in the huge pages (to compare)\n"
		"\nexit codes: 0 ok, 1 error, 2 usage, 3 bad model file\n");
}

static void stats(const double *v, int n, double *mean, double *sd)
{
	double s = 0, s2 = 0;
	for (int i = 0; i < n; i++)
		s += v[i];
	*mean = s / n;
	for (int i = 0; i < n; i++)
		s2 += (v[i] - *mean) * (v[i] - *mean);
	*sd = n > 1 ? sqrt(s2 / (n - 1)) : 0;
}

int cmd_bench(int argc, char **argv)
{
	const char *path = NULL;
	long np = 128, ng = 64, nt = 2, reps = 5;
	enum fwd_kv_type kv = FWD_KV_F32;
	int use_mmap = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--mmap")) {
			use_mmap = 1;
			continue;
		}
		if (!strcmp(a, "--no-repack")) {
			use_mmap = 2;
			continue;
		}
		if (!(v = opt_arg(argc, argv, &i)))
			return CMD_EXIT_USAGE;
		if (!strcmp(a, "-m") || !strcmp(a, "--model"))
			path = v;
		else if (!strcmp(a, "-p")) {
			if (opt_int(a, v, 0, 1 << 16, &np)) return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "-n")) {
			if (opt_int(a, v, 0, 1 << 16, &ng)) return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
			if (opt_int(a, v, 1, 256, &nt)) return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "-r") || !strcmp(a, "--reps")) {
			if (opt_int(a, v, 1, 1000, &reps)) return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "--kv")) {
			if (!strcmp(v, "f32")) kv = FWD_KV_F32;
			else if (!strcmp(v, "f16")) kv = FWD_KV_F16;
			else { fprintf(stderr, "colony: --kv expects f32 or f16\n"); return CMD_EXIT_USAGE; }
		} else if (!strcmp(a, "--isa")) {
			if (opt_isa(v)) return CMD_EXIT_USAGE;
		} else {
			fprintf(stderr, "colony: bench: unknown option '%s'\n", a);
			usage(stderr);
			return CMD_EXIT_USAGE;
		}
	}
	if (!path) {
		fprintf(stderr, "colony: bench: -m MODEL is required\n");
		usage(stderr);
		return CMD_EXIT_USAGE;
	}
	gguf_t *g;
	model_t *m;
	int rc = opt_open_model(path, use_mmap, &g, &m);
	if (rc)
		return rc;
	pool_t *pool = pool_new((int)nt);
	gen_t *gen = NULL;
	err_msg_t e = { { 0 } };
	gen_opts_t go = { .n_ctx = (int)(np + ng + 1), .kv = kv, .n_batch = np > 0 ? (int)np : 1 };
	int32_t *toks = malloc(sizeof(int32_t) * (size_t)(np + ng + 1));
	double *tp = calloc((size_t)reps, sizeof(double)), *tg = calloc((size_t)reps, sizeof(double));
	rc = CMD_EXIT_ERROR;
	if (!pool || !toks || !tp || !tg) {
		fprintf(stderr, "colony: bench: out of memory\n");
		goto done;
	}
	if (gen_new(m, pool, &go, &gen, &e)) {
		fprintf(stderr, "colony: bench: %s\n", e.msg);
		goto done;
	}
	/* Fixed pseudo-random tokens: the speed does not depend on which. */
	uint32_t x = 12345;
	for (long i = 0; i < np + ng + 1; i++) {
		x = x * 1103515245u + 12345u;
		toks[i] = (int32_t)((x >> 8) % (uint32_t)m->hp.n_vocab);
	}
	const float *lg;
	for (long rep = -1; rep < reps; rep++) {   /* rep -1 is the warm-up */
		if (gen_rewind(gen, 0)) goto done;
		if (np > 0) {
			double t0 = clock_sec();
			if (gen_eval(gen, toks, (int)np, &lg, NULL, &e)) {
				fprintf(stderr, "colony: bench: %s\n", e.msg);
				goto done;
			}
			if (rep >= 0) tp[rep] = (double)np / (clock_sec() - t0);
		}
		if (ng > 0) {
			if (gen_rewind(gen, 0)) goto done;
			if (gen_eval(gen, toks, 1, &lg, NULL, &e)) goto fail_eval;
			double t0 = clock_sec();
			for (long i = 0; i < ng; i++)
				if (gen_eval(gen, toks + 1 + i, 1, &lg, NULL, &e)) goto fail_eval;
			if (rep >= 0) tg[rep] = (double)ng / (clock_sec() - t0);
		}
	}
	char b1[32];
	uint64_t wbytes = model_weight_bytes(m, 0, m->hp.n_layer, 1);
	double params = 0;
	for (int il = 0; il < m->hp.n_layer; il++) {
		const model_layer_t *L = &m->layers[il];
		params += (double)(L->wq.rows * L->wq.cols + L->wk.rows * L->wk.cols + L->wv.rows * L->wv.cols +
				   L->wo.rows * L->wo.cols + L->w_gate.rows * L->w_gate.cols +
				   L->w_up.rows * L->w_up.cols + L->w_down.rows * L->w_down.cols);
	}
	params += (double)m->output.rows * (double)m->output.cols;
	printf("model: %s (%s, %d layers, dim %d), weights read per token %s, threads %ld, kernels %s, %s\n", path,
	       m->hp.arch, m->hp.n_layer, m->hp.n_embd, opt_bytes(wbytes, b1, sizeof(b1)), nt,
	       kern_isa_name(kern_isa_active()), use_mmap == 1 ? "file mapped" : use_mmap == 2 ? "huge pages, file layout" : "huge pages, repacked");
	printf("%-8s %8s %14s %10s %12s\n", "test", "tokens", "tokens/s", "+/-", "derived");
	double mean, sd;
	if (np > 0) {
		stats(tp, (int)reps, &mean, &sd);
		printf("%-8s %8ld %14.2f %10.2f %8.1f GFLOP/s\n", "pp", np, mean, sd, mean * 2.0 * params * 1e-9);
	}
	if (ng > 0) {
		stats(tg, (int)reps, &mean, &sd);
		printf("%-8s %8ld %14.2f %10.2f %9.2f GB/s\n", "tg", ng, mean, sd, mean * (double)wbytes * 1e-9);
	}
	rc = 0;
	goto done;
fail_eval:
	fprintf(stderr, "colony: bench: %s\n", e.msg);
done:
	gen_free(gen);
	pool_free(pool);
	free(toks);
	free(tp);
	free(tg);
	model_free(m);
	gguf_free(g);
	return rc;
}
