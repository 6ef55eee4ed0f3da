/* gen.h - local generation: embed -> forward over layer ranges -> head.
 *
 * A gen_t runs one sequence through a whole model held in this process. The
 * layers may be split into several ranges, each with its own fwd_state_t,
 * exactly as a pipeline of peers would hold them (tests use this to check that
 * any split gives the same bits). Prompts are processed as matrices, up to
 * n_batch rows per forward call.
 */
#ifndef COLONY_INFER_GEN_H
#define COLONY_INFER_GEN_H

#include "infer/fwd.h"

#define GEN_MAX_RANGES 16

typedef struct gen_opts {
	int n_ctx;                 /* 0: the model's training context, capped at 4096 */
	enum fwd_kv_type kv;
	int n_batch;               /* rows per forward call; 0: 512 */
	int n_ranges;              /* split the layers into this many ranges (1 = whole) */
} gen_opts_t;

typedef struct gen gen_t;

int gen_new(const model_t *m, pool_t *pool, const gen_opts_t *o, gen_t **out, err_msg_t *e) WUR;
void gen_free(gen_t *g);

/* Appends n tokens at the current position and computes the logits of the
 * last one (borrowed, n_vocab floats, valid until the next call). ERR_FULL if
 * they do not fit in the context (nothing is changed then). If all_logits is
 * not NULL it receives n x n_vocab floats (the logits of every row). */
int gen_eval(gen_t *g, const int32_t *tokens, int n, const float **logits, float *all_logits, err_msg_t *e) WUR;
int gen_pos(const gen_t *g);
int gen_ctx(const gen_t *g);
/* Forgets positions >= n (all ranges). */
int gen_rewind(gen_t *g, int n) WUR;

#endif
