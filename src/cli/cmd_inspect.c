/* cmd_inspect.c - `colony inspect FILE`: validates a GGUF file and lists its
 * metadata and tensors. */
#include <stdio.h>
#include <string.h>

#include "cli/cmd.h"
#include "kern/kern.h"
#include "model/gguf.h"

#define SHOW_STR_MAX 72      /* bytes of a string value shown */
#define SHOW_ELEM_STR_MAX 24 /* bytes of each string element shown */
#define SHOW_ELEMS 6         /* array elements shown */

static void usage(FILE *f)
{
	fprintf(f, "usage: colony inspect [--help] FILE\n\n"
		"Validates a GGUF file (v2 or v3) and prints its version, its metadata\n"
		"(arrays summarised: element type, count, first elements) and its tensor\n"
		"table (name, type, shape, offset in the data section, bytes).\n\n"
		"exit codes: 0 valid, 2 usage error, 3 the file is unreadable or invalid\n");
}

/* A string from the file, quoted: control bytes, quotes and backslashes
 * escaped, other bytes as they are (UTF-8), cut after max bytes on a
 * character boundary. */
static void put_str(const char *p, uint64_t n, uint64_t max)
{
	uint64_t show = n;
	if (show > max) {
		show = max;
		while (show > 0 && ((uint8_t)p[show] & 0xc0) == 0x80)
			show--;
	}
	putchar('"');
	for (uint64_t i = 0; i < show; i++) {
		uint8_t c = (uint8_t)p[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	putchar('"');
	if (show < n)
		printf("... (%llu bytes)", (unsigned long long)n);
}

static void put_scalar(const gguf_kv_t *kv)
{
	switch (kv->type) {
	case GGUF_UINT8: case GGUF_UINT16: case GGUF_UINT32: case GGUF_UINT64:
		printf("%llu", (unsigned long long)kv->v.u64);
		break;
	case GGUF_INT8: case GGUF_INT16: case GGUF_INT32: case GGUF_INT64:
		printf("%lld", (long long)kv->v.i64);
		break;
	case GGUF_FLOAT32:
		printf("%.9g", kv->v.f64);
		break;
	case GGUF_FLOAT64:
		printf("%.17g", kv->v.f64);
		break;
	case GGUF_BOOL:
		fputs(kv->v.u64 ? "true" : "false", stdout);
		break;
	case GGUF_STRING:
		put_str(kv->v.str.p, kv->v.str.n, SHOW_STR_MAX);
		break;
	default:
		break;
	}
}

static void put_array(const gguf_kv_t *kv)
{
	uint64_t n = kv->arr_n < SHOW_ELEMS ? kv->arr_n : SHOW_ELEMS;
	putchar('[');
	for (uint64_t i = 0; i < n; i++) {
		if (i)
			fputs(", ", stdout);
		switch (kv->arr_type) {
		case GGUF_STRING: {
			gguf_str_t s = gguf_arr_str(kv, i);
			put_str(s.p, s.n, SHOW_ELEM_STR_MAX);
			break;
		}
		case GGUF_FLOAT32: case GGUF_FLOAT64:
			printf("%g", gguf_arr_float(kv, i));
			break;
		case GGUF_BOOL:
			fputs(gguf_arr_int(kv, i) ? "true" : "false", stdout);
			break;
		case GGUF_UINT64:
			printf("%llu", (unsigned long long)gguf_arr_int(kv, i));
			break;
		default:
			printf("%lld", (long long)gguf_arr_int(kv, i));
			break;
		}
	}
	if (kv->arr_n > n)
		fputs(", ...", stdout);
	putchar(']');
}

static void put_meta(const gguf_t *g)
{
	int w = 0;
	for (int64_t i = 0; i < gguf_n_kv(g); i++) {
		int n = (int)strlen(gguf_kv_at(g, i)->key);
		if (n > w)
			w = n;
	}
	if (w > 48)
		w = 48;
	printf("metadata: %lld keys\n", (long long)gguf_n_kv(g));
	for (int64_t i = 0; i < gguf_n_kv(g); i++) {
		const gguf_kv_t *kv = gguf_kv_at(g, i);
		char type[48];
		if (kv->type == GGUF_ARRAY)
			snprintf(type, sizeof(type), "%s[%llu]", gguf_vtype_name(kv->arr_type),
				(unsigned long long)kv->arr_n);
		else
			snprintf(type, sizeof(type), "%s", gguf_vtype_name(kv->type));
		/* Keys are printed as stored; a key with control bytes is shown quoted. */
		int plain = 1;
		for (const char *c = kv->key; *c; c++)
			if ((uint8_t)*c < 0x20 || *c == 0x7f)
				plain = 0;
		fputs("  ", stdout);
		if (plain)
			printf("%-*s", w, kv->key);
		else
			put_str(kv->key, strlen(kv->key), 64);
		printf("  %-16s ", type);
		if (kv->type == GGUF_ARRAY)
			put_array(kv);
		else
			put_scalar(kv);
		putchar('\n');
	}
}

static void put_tensors(const gguf_t *g)
{
	uint64_t total = 0;
	int w = 4;
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor_t *t = gguf_tensor_at(g, i);
		int n = (int)strlen(t->name);
		if (n > w)
			w = n;
		total += t->nbytes;
	}
	if (w > 48)
		w = 48;
	printf("tensors: %lld, %llu bytes of data\n", (long long)gguf_n_tensors(g), (unsigned long long)total);
	if (gguf_n_tensors(g) == 0)
		return;
	printf("  %-*s  %-8s  %-24s  %12s  %12s\n", w, "name", "type", "shape", "offset", "bytes");
	for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
		const gguf_tensor_t *t = gguf_tensor_at(g, i);
		char shape[96];
		size_t o = 0;
		shape[0] = 0;
		for (uint32_t d = 0; d < t->n_dims; d++)
			o += (size_t)snprintf(shape + o, sizeof(shape) - o, "%s%lld", d ? " x " : "", (long long)t->ne[d]);
		if (t->n_dims == 0)
			snprintf(shape, sizeof(shape), "scalar");
		int plain = 1;
		for (const char *c = t->name; *c; c++)
			if ((uint8_t)*c < 0x20 || *c == 0x7f)
				plain = 0;
		fputs("  ", stdout);
		if (plain)
			printf("%-*s", w, t->name);
		else
			put_str(t->name, strlen(t->name), 64);
		printf("  %-8s  %-24s  %12llu  %12llu\n", kern_type_name(t->type), shape,
			(unsigned long long)t->offset, (unsigned long long)t->nbytes);
	}
}

int cmd_inspect(int argc, char **argv)
{
	const char *path = NULL;
	int opts_done = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!opts_done && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
			usage(stdout);
			return CMD_EXIT_OK;
		}
		if (!opts_done && !strcmp(a, "--")) {
			opts_done = 1;
		} else if (!opts_done && a[0] == '-' && a[1]) {
			fprintf(stderr, "colony inspect: unknown option '%s'\n", a);
			usage(stderr);
			return CMD_EXIT_USAGE;
		} else if (path) {
			fprintf(stderr, "colony inspect: one file at a time ('%s' and '%s')\n", path, a);
			return CMD_EXIT_USAGE;
		} else {
			path = a;
		}
	}
	if (!path) {
		usage(stderr);
		return CMD_EXIT_USAGE;
	}

	gguf_t *g = NULL;
	err_msg_t e = { "" };
	int rc = gguf_open(path, &g, &e);
	if (rc) {
		fprintf(stderr, "colony: %s: %s\n", path, e.msg);
		return rc == ERR_NOMEM ? CMD_EXIT_ERROR : CMD_EXIT_BADFILE;
	}
	printf("%s: GGUF v%u, %llu bytes, alignment %llu", path, gguf_version(g),
		(unsigned long long)gguf_file_size(g), (unsigned long long)gguf_alignment(g));
	if (gguf_n_tensors(g) > 0)
		printf(", tensor data at byte %llu", (unsigned long long)gguf_data_offset(g));
	putchar('\n');
	put_meta(g);
	put_tensors(g);
	gguf_free(g);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "colony: cannot write the listing\n");
		return CMD_EXIT_ERROR;
	}
	return CMD_EXIT_OK;
}
