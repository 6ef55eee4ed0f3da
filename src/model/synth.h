/* synth.h - synthetic random-weight Llama models, written as standard GGUF.
 *
 * Benchmarks and tests need realistic shapes without a download: weights are
 * normal(0, 0.02) from a seeded generator, norms are 1, the vocabulary is
 * copied from a given GGUF or built in (a SentencePiece-style vocabulary of
 * byte tokens and ASCII pieces). The same parameters and seed always give the
 * same file.
 */
#ifndef COLONY_MODEL_SYNTH_H
#define COLONY_MODEL_SYNTH_H

#include <stdint.h>

#include "base/err.h"

typedef struct synth_params {
	int dim, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
	int type;                 /* kern type of the matrices: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K */
	uint64_t seed;
	const char *vocab_from;   /* GGUF whose tokenizer.* metadata is copied, or NULL */
	const char *name;         /* general.name */
	/* progress: called with done/total bytes of tensor data, may be NULL */
	void (*progress_cb)(void *arg, uint64_t done, uint64_t total);
	void *progress_arg;
} synth_params_t;

/* Fills p with a named shape: "tiny" (dim 64, 2 layers), "small" (dim 256,
 * 4 layers), "110m" (dim 768, 12 layers, 12 heads, ffn 2048, vocab 32000),
 * "1.1b" (TinyLlama: dim 2048, 22 layers, 32 heads, 4 kv heads, ffn 5632,
 * vocab 32000). ERR_NOTFOUND for an unknown name. */
int synth_preset(const char *name, synth_params_t *p) WUR;

/* Writes the model to path. */
int synth_write(const synth_params_t *p, const char *path, err_msg_t *e) WUR;

/* The built-in vocabulary (n >= 259 tokens: <unk> <s> </s>, 256 byte tokens,
 * then pieces). Fills arrays the caller frees with synth_vocab_free. */
typedef struct synth_vocab {
	int n;
	char **tokens;
	float *scores;
	int32_t *types;
} synth_vocab_t;
int synth_vocab_build(int n, synth_vocab_t *v) WUR;
void synth_vocab_free(synth_vocab_t *v);

#endif
