#include "model/manifest.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct hash_job {
	const gguf_t *g;
	uint8_t (*out)[32];
	int64_t n;
};

static void hash_cb(void *arg, int ith, int nth)
{
	struct hash_job *j = arg;
	/* Interleave tensors so big and small ones spread over the threads. */
	for (int64_t i = ith; i < j->n; i += nth) {
		const gguf_tensor_t *t = gguf_tensor_at(j->g, i);
		crypto_generichash(j->out[i], 32, t->data, t->nbytes, NULL, 0);
		/* read once for the id: its file pages leave RSS (a process uses
		 * its own copy of the tensors it needs, or faults them in again) */
		gguf_drop_range(j->g, t->data, t->nbytes);
	}
}

static void put_u32(crypto_generichash_state *st, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
	crypto_generichash_update(st, b, 4);
}

static void put_u64(crypto_generichash_state *st, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_generichash_update(st, b, 8);
}

int manifest_model_id(const gguf_t *g, pool_t *pool, uint8_t id[MANIFEST_ID_LEN], err_msg_t *e)
{
	if (sodium_init() < 0)
		return err_set(e, ERR_IO, "libsodium failed to initialise");
	int64_t n = gguf_n_tensors(g);
	uint8_t (*th)[32] = calloc((size_t)(n > 0 ? n : 1), 32);
	if (!th)
		return err_set(e, ERR_NOMEM, "out of memory");
	struct hash_job j = { g, th, n };
	pool_run(pool, hash_cb, &j);

	/* The metadata section: from the header to the first tensor info. The
	 * reader validated the file, so the offsets below are inside it. */
	const uint8_t *base = gguf_base(g);
	uint64_t meta_begin = 24, meta_end = gguf_tensor_info_offset(g);
	uint8_t mh[32];
	crypto_generichash(mh, 32, base + meta_begin, (size_t)(meta_end - meta_begin), NULL, 0);

	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)MANIFEST_TAG, strlen(MANIFEST_TAG));
	crypto_generichash_update(&st, mh, 32);
	put_u64(&st, (uint64_t)n);
	for (int64_t i = 0; i < n; i++) {
		const gguf_tensor_t *t = gguf_tensor_at(g, i);
		size_t nl = strlen(t->name);
		put_u32(&st, (uint32_t)nl);
		crypto_generichash_update(&st, (const uint8_t *)t->name, nl);
		put_u32(&st, (uint32_t)t->type);
		put_u32(&st, t->n_dims);
		for (uint32_t d = 0; d < t->n_dims; d++)
			put_u64(&st, (uint64_t)t->ne[d]);
		crypto_generichash_update(&st, th[i], 32);
	}
	crypto_generichash_final(&st, id, MANIFEST_ID_LEN);
	free(th);
	return 0;
}

char *manifest_id_hex(const uint8_t id[MANIFEST_ID_LEN], char out[65])
{
	static const char hx[] = "0123456789abcdef";
	for (int i = 0; i < MANIFEST_ID_LEN; i++) {
		out[2 * i] = hx[id[i] >> 4];
		out[2 * i + 1] = hx[id[i] & 15];
	}
	out[64] = 0;
	return out;
}

int manifest_id_parse(const char *s, uint8_t id[MANIFEST_ID_LEN])
{
	if (!s || strlen(s) != 64)
		return ERR_FORMAT;
	for (int i = 0; i < 64; i++) {
		int c = s[i], v;
		if (c >= '0' && c <= '9') v = c - '0';
		else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
		else return ERR_FORMAT;
		if (i % 2 == 0) id[i / 2] = (uint8_t)(v << 4);
		else id[i / 2] |= (uint8_t)v;
	}
	return 0;
}
