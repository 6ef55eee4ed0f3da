/* model.h - a Llama-family model described from GGUF metadata.
 *
 * model_load() reads the hyper-parameters and maps every tensor the forward
 * pass needs to a borrowed view into the GGUF mapping, checking each shape and
 * type against the hyper-parameters. Families: llama (Llama 2/3, TinyLlama,
 * Mistral and SmolLM GGUFs use this architecture name), qwen2 (Q/K/V biases,
 * NeoX-style RoPE). The model_t borrows the gguf_t, which must outlive it.
 *
 * A model may be loaded for a layer range only (model_load_range): tensors of
 * other layers are then not required, so a shard can hold just its part.
 */
#ifndef COLONY_MODEL_MODEL_H
#define COLONY_MODEL_MODEL_H

#include <stdint.h>

#include "base/err.h"
#include "kern/kern.h"
#include "model/gguf.h"

#ifndef MODEL_MAX_LAYERS
#define MODEL_MAX_LAYERS 512
#endif
#ifndef MODEL_MAX_DIM
#define MODEL_MAX_DIM (1 << 16)   /* embedding, head and ffn sizes stay below this */
#endif

enum model_rope { MODEL_ROPE_NORM = 0, MODEL_ROPE_NEOX = 1 };

typedef struct model_hparams {
	char arch[32];
	int n_vocab;
	int n_embd;         /* d */
	int n_layer;
	int n_head;
	int n_head_kv;
	int head_dim;       /* d / n_head unless key_length says otherwise */
	int n_ff;
	int n_ctx_train;
	float rms_eps;
	float rope_theta;
	int rope_dim;       /* rotated dimensions per head (<= head_dim) */
	enum model_rope rope_type;
} model_hparams_t;

typedef struct model_layer {
	/* Shapes as (rows = outputs, cols = inputs). */
	const float *attn_norm;     /* (d) f32 */
	kern_mat_t wq;              /* (n_head * hd, d) */
	kern_mat_t wk;              /* (n_head_kv * hd, d) */
	kern_mat_t wv;              /* (n_head_kv * hd, d) */
	kern_mat_t wo;              /* (d, n_head * hd) */
	const float *bq, *bk, *bv;  /* biases (qwen2) or NULL */
	const float *ffn_norm;      /* (d) f32 */
	kern_mat_t w_gate;          /* (n_ff, d) */
	kern_mat_t w_up;            /* (n_ff, d) */
	kern_mat_t w_down;          /* (d, n_ff) */
} model_layer_t;

typedef struct model {
	model_hparams_t hp;
	const gguf_t *gguf;         /* borrowed */
	int layer_a, layer_b;       /* layers loaded: [a, b) */
	kern_mat_t tok_embd;        /* (n_vocab, d) */
	const float *out_norm;      /* (d) f32 */
	kern_mat_t output;          /* (n_vocab, d); the embedding when tied */
	int tied_output;
	const float *rope_freqs;    /* (rope_dim/2) frequency divisors, or NULL */
	int has_embd;               /* token_embd, output_norm and output present */
	model_layer_t *layers;      /* n_layer entries; only [a, b) filled */
	void *pinned;               /* huge-page copy of the loaded tensors (model_pin), or NULL */
	size_t pinned_len;
} model_t;

/* Loads the whole model. On error *out is NULL and *e says which tensor or key. */
int model_load(const gguf_t *g, model_t **out, err_msg_t *e) WUR;
/* Loads layers [a, b) only; with_embd also requires the embedding, final norm
 * and head (what a client holds). */
int model_load_range(const gguf_t *g, int a, int b, int with_embd, model_t **out, err_msg_t *e) WUR;
void model_free(model_t *m);

/* Copies the tensors this model uses (its layers, and the embedding and head
 * if loaded) into one region backed by transparent huge pages, and points the
 * model at the copy: weights then stream ~25% faster than from a file mapping,
 * and a shard holds only its own layers in memory. The gguf_t is still needed
 * for metadata. On failure the model keeps using the mapping. */
int model_pin(model_t *m, err_msg_t *e) WUR;
/* model_pin with flags: MODEL_PIN_NO_REPACK copies every matrix as it is in
 * the file (to compare the layouts; the results are the same bits). */
#define MODEL_PIN_NO_REPACK 1
int model_pin_ex(model_t *m, int flags, err_msg_t *e) WUR;

/* Bytes of weights read per token by layers [a, b) (+ head if with_head). */
uint64_t model_weight_bytes(const model_t *m, int a, int b, int with_head);

#endif
