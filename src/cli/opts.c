#include "cli/opts.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cmd.h"
#include "kern/kern.h"

int opt_int(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi) {
		fprintf(stderr, "colony: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

int opt_u64(const char *opt, const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-') {
		fprintf(stderr, "colony: %s expects a non-negative integer, got '%s'\n", opt, s);
		return -1;
	}
	*out = v;
	return 0;
}

int opt_float(const char *opt, const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
		fprintf(stderr, "colony: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

const char *opt_arg(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		fprintf(stderr, "colony: option %s needs a value\n", argv[*i]);
		return NULL;
	}
	return argv[++*i];
}

int opt_type(const char *opt, const char *s, int *out)
{
	for (int t = 0; t < KERN_TYPE_COUNT; t++) {
		const kern_traits_t *tr = kern_traits(t);
		if (tr && tr->blck_size && !strcasecmp(tr->name, s)) {
			*out = t;
			return 0;
		}
	}
	fprintf(stderr, "colony: %s: unknown type '%s' (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)\n", opt, s);
	return -1;
}

int opt_isa(const char *s)
{
	for (int i = 0; i < KERN_ISA_COUNT; i++)
		if (!strcmp(s, kern_isa_name((enum kern_isa)i))) {
			if (kern_isa_select((enum kern_isa)i) != 0) {
				fprintf(stderr, "colony: --isa %s: not available on this CPU\n", s);
				return -1;
			}
			return 0;
		}
	fprintf(stderr, "colony: --isa: unknown '%s' (ref, avx2, avx512)\n", s);
	return -1;
}

int opt_open_model(const char *path, int use_mmap, gguf_t **g, model_t **m)
{
	err_msg_t e = { { 0 } };
	*m = NULL;
	int r = gguf_open(path, g, &e);
	if (r) {
		fprintf(stderr, "colony: %s: %s\n", path, e.msg[0] ? e.msg : err_str(r));
		return r == ERR_IO || r == ERR_NOTFOUND ? CMD_EXIT_ERROR : CMD_EXIT_BADFILE;
	}
	/* mode 3: only what a swarm client holds (embedding, final norm, head) */
	r = use_mmap == 3 ? model_load_range(*g, 0, 0, 1, m, &e) : model_load(*g, m, &e);
	if (r) {
		fprintf(stderr, "colony: %s: %s\n", path, e.msg[0] ? e.msg : err_str(r));
		gguf_free(*g);
		*g = NULL;
		return r == ERR_NOMEM ? CMD_EXIT_ERROR : CMD_EXIT_BADFILE;
	}
	/* The weights the model uses go to huge pages (repacked for the
	 * generation kernels where that pays), tensor by tensor, each one's
	 * file pages dropped once copied: the peak stays near one model. */
	if (use_mmap != 1 && model_pin_ex(*m, use_mmap == 2 ? MODEL_PIN_NO_REPACK : 0, &e) != 0)
		fprintf(stderr, "colony: %s: weights stay mapped from the file: %s\n", path, e.msg);
	return 0;
}

const char *opt_bytes(uint64_t n, char *buf, int len)
{
	if (n >= (1ull << 30))
		snprintf(buf, (size_t)len, "%.2f GiB", (double)n / (1ull << 30));
	else if (n >= (1ull << 20))
		snprintf(buf, (size_t)len, "%.1f MiB", (double)n / (1ull << 20));
	else
		snprintf(buf, (size_t)len, "%llu KiB", (unsigned long long)(n >> 10));
	return buf;
}
