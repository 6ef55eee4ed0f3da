/* colony mkmodel: writes a synthetic random-weight Llama GGUF. */
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "cli/cmd.h"
#include "cli/opts.h"
#include "cli/progress.h"
#include "kern/kern.h"
#include "model/synth.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: colony mkmodel -o FILE [--preset NAME] [--type T] [options]\n"
		"\n"
		"Writes a standard GGUF Llama model with random weights, normal(0, 0.02), norms 1,\n"
		"for tests and benchmarks at realistic sizes without a download.\n"
		"\n"
		"  -o, --output FILE    where to write (required)\n"
		"  --preset NAME        tiny | small | 110m | 1.1b (default tiny)\n"
		"                       110m: dim 768, 12 layers, 12 heads, ffn 2048, vocab 32000\n"
		"                       1.1b: dim 2048, 22 layers, 32 heads, 4 kv heads, ffn 5632, vocab 32000\n"
		"  --type T             f32 | f16 | bf16 | q8_0 | q4_0 | q4_k | q6_k (default f16);\n"
		"                       with q4_0 and q4_k the output head is q6_k, as llama.cpp makes them\n"
		"  --dim N --layers N --heads N --kv-heads N --ffn N --vocab N --ctx N\n"
		"                       override the preset's shape\n"
		"  --vocab-from GGUF    copy the tokenizer (and vocabulary size) from this GGUF;\n"
		"                       without it a built-in SentencePiece-style vocabulary is used\n"
		"  --seed S             weight seed (default 1234); same seed, same file\n"
		"  -q, --quiet          no progress\n"
		"\nexit codes: 0 ok, 1 error, 2 usage\n");
}

static void progress(void *arg, uint64_t done, uint64_t total)
{
	prog_t *p = arg;
	char a[32], b[32];
	prog_update(p, 0, "writing tensors %3d%% (%s of %s)", total ? (int)(done * 100 / total) : 100,
		    opt_bytes(done, a, sizeof(a)), opt_bytes(total, b, sizeof(b)));
}

int cmd_mkmodel(int argc, char **argv)
{
	synth_params_t p;
	const char *out = NULL, *preset = "tiny";
	int quiet = 0;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--preset") && i + 1 < argc)
			preset = argv[i + 1];
	if (synth_preset(preset, &p) != 0) {
		fprintf(stderr, "colony: unknown preset '%s' (tiny, small, 110m, 1.1b)\n", preset);
		return CMD_EXIT_USAGE;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		long n;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			quiet = 1;
			continue;
		}
		if (!(v = opt_arg(argc, argv, &i)))
			return CMD_EXIT_USAGE;
#define INTOPT(name, field, lo, hi)                                              \
	else if (!strcmp(a, name)) {                                             \
		if (opt_int(name, v, lo, hi, &n)) return CMD_EXIT_USAGE;         \
		p.field = (int)n;                                                \
	}
		if (!strcmp(a, "-o") || !strcmp(a, "--output"))
			out = v;
		else if (!strcmp(a, "--preset"))
			;
		else if (!strcmp(a, "--type")) {
			if (opt_type(a, v, &p.type))
				return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "--vocab-from"))
			p.vocab_from = v;
		else if (!strcmp(a, "--seed")) {
			if (opt_u64(a, v, &p.seed))
				return CMD_EXIT_USAGE;
		}
		INTOPT("--dim", dim, 8, 65536)
		INTOPT("--layers", n_layer, 1, 512)
		INTOPT("--heads", n_head, 1, 1024)
		INTOPT("--kv-heads", n_head_kv, 1, 1024)
		INTOPT("--ffn", n_ff, 1, 262144)
		INTOPT("--vocab", n_vocab, 259, 1 << 20)
		INTOPT("--ctx", n_ctx, 1, 1 << 24)
		else {
			fprintf(stderr, "colony: mkmodel: unknown option '%s'\n", a);
			usage(stderr);
			return CMD_EXIT_USAGE;
		}
#undef INTOPT
	}
	if (!out) {
		fprintf(stderr, "colony: mkmodel: -o FILE is required\n");
		usage(stderr);
		return CMD_EXIT_USAGE;
	}
	prog_t pg;
	prog_init(&pg, "mkmodel", quiet);
	p.progress_cb = progress;
	p.progress_arg = &pg;
	err_msg_t e = { { 0 } };
	int r = synth_write(&p, out, &e);
	if (r) {
		prog_done(&pg, "failed");
		fprintf(stderr, "colony: mkmodel: %s\n", e.msg[0] ? e.msg : err_str(r));
		return r == ERR_RANGE || r == ERR_UNSUPPORTED ? CMD_EXIT_USAGE : CMD_EXIT_ERROR;
	}
	pg.always = 1;   /* the summary line is wanted even for a tiny model */
	prog_done(&pg, "wrote %s (dim %d, %d layers, %d/%d heads, ffn %d, %s)", out, p.dim, p.n_layer, p.n_head,
		  p.n_head_kv, p.n_ff, kern_type_name(p.type));
	return 0;
}
