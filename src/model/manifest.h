/* manifest.h - a model's identity: the BLAKE2b-256 of its manifest.
 *
 * manifest = "colony-manifest-v1" (18 bytes)
 *         || BLAKE2b-256 of the GGUF metadata section (the key/value bytes
 *            exactly as stored, from the end of the 24-byte header to the
 *            first tensor info)
 *         || u64 n_tensors
 *         || for each tensor in file order:
 *              u32 name length || name || u32 ggml type || u32 n_dims
 *              || u64 ne[n_dims] || BLAKE2b-256 of the tensor's bytes
 * model id = BLAKE2b-256(manifest), all integers little-endian.
 *
 * So a requantized or altered file is another model, and a node that holds
 * only some layers can still prove which model they belong to by showing
 * the manifest (the per-tensor hashes of the layers it does not hold).
 */
#ifndef COLONY_MODEL_MANIFEST_H
#define COLONY_MODEL_MANIFEST_H

#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "model/gguf.h"

#define MANIFEST_ID_LEN 32
#define MANIFEST_TAG "colony-manifest-v1"

/* Computes the model id of a validated GGUF. Tensor hashes are computed on
 * the pool's threads (pool may be NULL). */
int manifest_model_id(const gguf_t *g, pool_t *pool, uint8_t id[MANIFEST_ID_LEN], err_msg_t *e) WUR;

/* 64 lowercase hex digits + NUL. */
char *manifest_id_hex(const uint8_t id[MANIFEST_ID_LEN], char out[65]);
/* Parses 64 hex digits. */
int manifest_id_parse(const char *s, uint8_t id[MANIFEST_ID_LEN]) WUR;

#endif
