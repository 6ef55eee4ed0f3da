/* fuzz_gguf.c - libFuzzer target for the GGUF reader: any input either is
 * refused with a message, or opens into something every accessor can walk
 * without leaving the buffer (the reader's promise). Under the replay driver
 * the committed corpus in tests/fuzz/corpus/gguf/ runs through it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern/kern.h"
#include "model/gguf.h"

/* A crash the sanitizers would not see on their own. */
#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_gguf: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

static volatile uint64_t sink;

static int inside(const uint8_t *base, size_t size, const void *p, uint64_t n)
{
	const uint8_t *q = p;
	return q >= base && q <= base + size && n <= (uint64_t)(base + size - q);
}

static void walk_kv(const gguf_t *g, const gguf_kv_t *kv, const uint8_t *base, size_t size)
{
	uint64_t acc = strlen(kv->key);
	FUZZ_ASSERT(gguf_kv_find(g, kv->key) == kv);
	FUZZ_ASSERT((int)kv->type >= 0 && (int)kv->type < GGUF_VTYPE_COUNT);
	uint32_t u32;
	uint64_t u64;
	int64_t i64;
	float f;
	int b;
	gguf_str_t s;
	/* Every getter on every key: each either converts or says why not. */
	acc += gguf_get_u32(g, kv->key, &u32) == 0 ? u32 : 1;
	acc += gguf_get_u64(g, kv->key, &u64) == 0 ? u64 : 2;
	acc += gguf_get_i64(g, kv->key, &i64) == 0 ? (uint64_t)i64 : 3;
	acc += gguf_get_f32(g, kv->key, &f) == 0 ? (uint64_t)(f == f) : 4;
	acc += gguf_get_bool(g, kv->key, &b) == 0 ? (uint64_t)b : 5;
	if (gguf_get_str(g, kv->key, &s) == 0) {
		FUZZ_ASSERT(inside(base, size, s.p, s.n));
		for (uint64_t k = 0; k < s.n; k++)
			acc += (uint8_t)s.p[k];
	}
	if (kv->type == GGUF_BOOL)
		FUZZ_ASSERT(kv->v.u64 <= 1);
	if (kv->type != GGUF_ARRAY) {
		sink += acc;
		return;
	}
	FUZZ_ASSERT(kv->arr_type != GGUF_ARRAY && (int)kv->arr_type < GGUF_VTYPE_COUNT);
	if (kv->arr_type == GGUF_STRING) {
		for (uint64_t i = 0; i < kv->arr_n; i++) {
			gguf_str_t e = gguf_arr_str(kv, i);
			FUZZ_ASSERT(inside(base, size, e.p, e.n));
			if (e.n)
				acc += (uint8_t)e.p[0] + (uint8_t)e.p[e.n - 1];
		}
	} else if (kv->arr_type == GGUF_FLOAT32 || kv->arr_type == GGUF_FLOAT64) {
		FUZZ_ASSERT(inside(base, size, kv->data, kv->arr_n * gguf_vtype_size(kv->arr_type)));
		for (uint64_t i = 0; i < kv->arr_n; i++)
			acc += (uint64_t)(gguf_arr_float(kv, i) != 0);
	} else {
		FUZZ_ASSERT(inside(base, size, kv->data, kv->arr_n * gguf_vtype_size(kv->arr_type)));
		for (uint64_t i = 0; i < kv->arr_n; i++) {
			int64_t v = gguf_arr_int(kv, i);
			if (kv->arr_type == GGUF_BOOL)
				FUZZ_ASSERT(v == 0 || v == 1);
			acc += (uint64_t)v;
		}
	}
	sink += acc;
}

static void walk_tensor(const gguf_t *g, const gguf_tensor_t *t, const uint8_t *base, size_t size)
{
	FUZZ_ASSERT(gguf_tensor_find(g, t->name) == t);
	FUZZ_ASSERT(t->n_dims <= GGUF_MAX_DIMS);
	const kern_traits_t *tr = kern_traits(t->type);
	FUZZ_ASSERT(tr && tr->blck_size > 0);
	int64_t nel = 1;
	for (int d = 0; d < GGUF_MAX_DIMS; d++) {
		FUZZ_ASSERT(t->ne[d] >= 1);
		nel *= t->ne[d];
	}
	FUZZ_ASSERT(t->ne[0] % tr->blck_size == 0);
	FUZZ_ASSERT(t->nbytes == kern_row_size(t->type, t->ne[0]) * (uint64_t)(nel / t->ne[0]));
	FUZZ_ASSERT(t->offset % gguf_alignment(g) == 0);
	FUZZ_ASSERT(inside(base, size, t->data, t->nbytes));
	FUZZ_ASSERT((const uint8_t *)t->data >= base + gguf_data_offset(g));
	const uint8_t *p = t->data;
	sink += p[0] + p[t->nbytes - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	gguf_t *g = NULL;
	err_msg_t e = { "" };
	int rc = gguf_open_mem(data, size, &g, &e);
	if (rc != 0) {
		FUZZ_ASSERT(g == NULL);
		FUZZ_ASSERT(rc < 0 && rc >= ERR_CODE_MIN);
		FUZZ_ASSERT(e.msg[0] != 0);
		return 0;
	}
	FUZZ_ASSERT(g != NULL);
	uint64_t a = gguf_alignment(g);
	FUZZ_ASSERT(a >= 1 && (a & (a - 1)) == 0 && a <= GGUF_MAX_ALIGNMENT);
	FUZZ_ASSERT(gguf_version(g) == 2 || gguf_version(g) == 3);
	FUZZ_ASSERT(gguf_file_size(g) == size);
	for (int64_t i = 0; i < gguf_n_kv(g); i++)
		walk_kv(g, gguf_kv_at(g, i), data, size);
	for (int64_t i = 0; i < gguf_n_tensors(g); i++)
		walk_tensor(g, gguf_tensor_at(g, i), data, size);
	FUZZ_ASSERT(gguf_kv_at(g, gguf_n_kv(g)) == NULL);
	FUZZ_ASSERT(gguf_tensor_at(g, gguf_n_tensors(g)) == NULL);
	gguf_free(g);
	return 0;
}
