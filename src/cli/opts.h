/* opts.h - small helpers shared by the subcommands: strict number parsing and
 * opening a model file with a clear message. */
#ifndef COLONY_CLI_OPTS_H
#define COLONY_CLI_OPTS_H

#include <stdint.h>

#include "model/gguf.h"
#include "model/model.h"

/* Parse the whole string or fail with a message naming the option. */
int opt_int(const char *opt, const char *s, long lo, long hi, long *out);
int opt_u64(const char *opt, const char *s, uint64_t *out);
int opt_float(const char *opt, const char *s, double lo, double hi, double *out);
/* Value of an option that takes one: argv[++*i], or a usage error. */
const char *opt_arg(int argc, char **argv, int *i);
/* Parses "f32", "q8_0", ... into a kern type id. */
int opt_type(const char *opt, const char *s, int *out);
/* "ref", "avx2", "avx512" into the kernels' ISA selection. */
int opt_isa(const char *s);

/* Opens and validates a GGUF and loads the model; prints "colony: PATH: why"
 * and returns a CMD_EXIT_* code on failure. use_mmap 0: the weights are
 * copied into huge pages (model_pin, repacked where that pays); 1: the file
 * stays mapped; 2: copied without repacking; 3: like 0, but only the
 * embedding, final norm and head (a swarm client's part). */
int opt_open_model(const char *path, int use_mmap, gguf_t **g, model_t **m);

/* Human-readable byte count into buf. */
const char *opt_bytes(uint64_t n, char *buf, int len);

#endif
