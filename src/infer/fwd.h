/* fwd.h - the forward pass, split the way the network needs it.
 *
 *   fwd_embed(tokens)                  -> hidden [n x d]
 *   fwd_forward(states, layers [a,b))  -> hidden [n x d], in place
 *   fwd_head(hidden)                   -> logits [n x n_vocab]
 *
 * A whole generation is embed -> forward over [0, L) -> head; a pipeline of
 * peers runs the same three steps with forward split into ranges held by
 * different processes. Each layer range keeps its own state (fwd_state_t: the
 * KV cache of its layers for one sequence), so ranges never share memory.
 *
 * One fwd_forward call may carry rows of several sequences (continuous
 * batching): the batch is a list of segments, each a run of consecutive
 * positions of one sequence's state. The result for a row never depends on
 * the other rows of the batch, on the thread count, or on whether its
 * sequence was processed as one prompt batch or token by token: matrix
 * products use the kernels' fixed reduction order (kern.h), attention and
 * norms are computed per row with fixed sequential reductions.
 */
#ifndef COLONY_INFER_FWD_H
#define COLONY_INFER_FWD_H

#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "kern/kern.h"
#include "model/model.h"

/* Compute context of one thread of control: pool, kernel scratch, buffers.
 * Not shared between concurrent callers. */
typedef struct fwd_ctx fwd_ctx_t;

int fwd_ctx_new(pool_t *pool, fwd_ctx_t **out) WUR;   /* pool borrowed, may be NULL */
void fwd_ctx_free(fwd_ctx_t *c);
kern_ctx_t *fwd_ctx_kern(fwd_ctx_t *c);

/* KV cache element type. */
enum fwd_kv_type { FWD_KV_F32 = 0, FWD_KV_F16 = 1 };

/* State of layers [a, b) for one sequence: a KV cache of n_ctx positions. */
typedef struct fwd_state fwd_state_t;

int fwd_state_new(const model_t *m, int a, int b, int n_ctx, enum fwd_kv_type kv, fwd_state_t **out) WUR;
void fwd_state_free(fwd_state_t *s);
int fwd_state_pos(const fwd_state_t *s);        /* positions already in the cache */
int fwd_state_ctx(const fwd_state_t *s);        /* capacity */
/* Forgets positions >= n (n <= pos): for replays and rewinds. */
int fwd_state_truncate(fwd_state_t *s, int n) WUR;
/* Bytes of KV cache this state holds. */
uint64_t fwd_state_bytes(const fwd_state_t *s);
/* Bytes a state would need (for admission control before allocating). */
uint64_t fwd_state_bytes_for(const model_t *m, int a, int b, int n_ctx, enum fwd_kv_type kv);

/* One run of consecutive new positions of one sequence within a batch. */
typedef struct fwd_seg {
	fwd_state_t *st;
	int n;            /* rows of this segment; positions st->pos .. st->pos + n - 1 */
} fwd_seg_t;

/* Embeds n tokens: hidden[i] = token_embd[tokens[i]]. Ids are checked. */
int fwd_embed(const model_t *m, const int32_t *tokens, int n, float *hidden, err_msg_t *e) WUR;

/* Runs layers [a, b) of every segment's state over hidden (sum of seg n rows,
 * segment after segment), in place. All states must cover exactly [a, b) of
 * model m. ERR_FULL (nothing changed) if a segment would pass its context. */
int fwd_forward(fwd_ctx_t *c, const model_t *m, const fwd_seg_t *segs, int nseg, float *hidden,
		err_msg_t *e) WUR;

/* Final norm and output head for n rows of hidden: logits [n x n_vocab]. */
int fwd_head(fwd_ctx_t *c, const model_t *m, const float *hidden, int n, float *logits, err_msg_t *e) WUR;

#endif
