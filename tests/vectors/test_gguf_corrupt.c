/* test_gguf_corrupt.c - hand-built corrupt GGUF files: each must be refused
 * with the right code and a message that says what and where, and never
 * crash or read out of bounds (every input sits in a buffer of exactly its
 * size, so the sanitizer build catches any over-read). */
#include <stdint.h>

#include "kern/kern.h"
#include "model/gguf.h"
#include "test.h"

/* ---- a byte builder */

typedef struct buf {
	uint8_t p[8192];
	size_t n;
} buf_t;

static void put(buf_t *b, const void *s, size_t n)
{
	REQUIRE(b->n + n <= sizeof(b->p));
	memcpy(b->p + b->n, s, n);
	b->n += n;
}
static void u8(buf_t *b, uint8_t v) { put(b, &v, 1); }
static void u32(buf_t *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf_t *b, uint64_t v) { put(b, &v, 8); }
static void str(buf_t *b, const char *s) { u64(b, strlen(s)); put(b, s, strlen(s)); }
static void zeros(buf_t *b, size_t n) { while (n--) u8(b, 0); }
static void pad(buf_t *b, size_t a) { while (b->n % a) u8(b, 0); }

static void hdr(buf_t *b, uint32_t version, uint64_t n_t, uint64_t n_kv)
{
	b->n = 0;
	put(b, "GGUF", 4);
	u32(b, version);
	u64(b, n_t);
	u64(b, n_kv);
}

static void kv_u32(buf_t *b, const char *k, uint32_t v) { str(b, k); u32(b, GGUF_UINT32); u32(b, v); }
static void kv_str(buf_t *b, const char *k, const char *v) { str(b, k); u32(b, GGUF_STRING); str(b, v); }

/* A tensor info with n_dims given dims. */
static void ti(buf_t *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off)
{
	str(b, name);
	u32(b, n_dims);
	for (uint32_t d = 0; d < n_dims; d++)
		u64(b, ne[d]);
	u32(b, type);
	u64(b, off);
}

/* Opens b from an exact-size copy; checks the code, that *out is set only on
 * success, and that the message is there and mentions `needle`. */
static int expect_at(const buf_t *b, size_t len, int code, const char *needle, int line)
{
	uint8_t *copy = malloc(len ? len : 1);
	if (len)
		memcpy(copy, b->p, len);
	gguf_t *g = (gguf_t *)1;
	err_msg_t e = { "" };
	int rc = gguf_open_mem(copy, len, &g, &e);
	int ok = rc == code;
	if (rc == 0) {
		ok = ok && g != NULL;
	} else {
		ok = ok && g == NULL && e.msg[0] != 0;
		if (needle && !strstr(e.msg, needle))
			ok = 0;
	}
	if (!ok) {
		fprintf(stderr, "  line %d: expected %d (%s) with \"%s\", got %d: %s\n", line, code,
			err_str(code), needle ? needle : "", rc, e.msg);
		t_cur_fail = 1;
	}
	gguf_free(rc == 0 ? g : NULL);
	free(copy);
	return ok;
}
#define EXPECT(b, code, needle) expect_at((b), (b)->n, (code), (needle), __LINE__)

/* ---- a small valid file: every kind of pair, three tensors, and the last
 * tensor ends exactly at the end of the file (so every truncation cuts
 * something the reader needs). */
static void small_valid(buf_t *b)
{
	hdr(b, 3, 3, 5);
	kv_str(b, "general.architecture", "llama");
	kv_u32(b, "llama.block_count", 2);
	str(b, "tok.list");
	u32(b, GGUF_ARRAY);
	u32(b, GGUF_STRING);
	u64(b, 3);
	str(b, "a");
	str(b, "");
	str(b, "bc");
	str(b, "f.arr");
	u32(b, GGUF_ARRAY);
	u32(b, GGUF_FLOAT32);
	u64(b, 2);
	u32(b, 0x3f800000);
	u32(b, 0x40000000);
	str(b, "flag");
	u32(b, GGUF_BOOL);
	u8(b, 1);
	uint64_t ne_a[2] = { 8, 2 }, ne_b[1] = { 32 }, ne_c[1] = { 8 };
	ti(b, "w.a", 2, ne_a, KERN_F32, 0);       /* 64 bytes */
	ti(b, "w.b", 1, ne_b, KERN_Q8_0, 64);     /* 34 bytes, padded to 64 */
	ti(b, "w.c", 1, ne_c, KERN_F32, 128);     /* 32 bytes */
	pad(b, 32);
	for (int i = 0; i < 160; i++)
		u8(b, (uint8_t)i);
}

static void test_valid_baseline(void)
{
	buf_t b;
	small_valid(&b);
	EXPECT(&b, 0, NULL);
	gguf_t *g = NULL;
	err_msg_t e;
	REQUIRE(gguf_open_mem(b.p, b.n, &g, &e) == 0);
	CHECK_EQ_INT(gguf_n_kv(g), 5);
	CHECK_EQ_INT(gguf_n_tensors(g), 3);
	CHECK_EQ_INT(gguf_tensor_find(g, "w.b")->nbytes, 34);
	CHECK_EQ_INT(gguf_data_offset(g) + 160, b.n);
	gguf_free(g);
}

static void test_truncated_everywhere(void)
{
	buf_t b;
	small_valid(&b);
	int bad = 0;
	for (size_t len = 0; len < b.n; len++)
		bad += !expect_at(&b, len, ERR_TRUNCATED, NULL, (int)len);
	CHECK_EQ_INT(bad, 0);
	fprintf(stderr, "  %zu truncations refused\n", b.n);
}

/* Every byte replaced by a few values: no crash, and any refusal has a
 * message. (Some mutations stay valid, e.g. in tensor data.) */
static void test_byte_mutations(void)
{
	buf_t b;
	small_valid(&b);
	static const uint8_t vals[] = { 0x00, 0x01, 0x02, 0x1f, 0x7f, 0x80, 0xff };
	int refused = 0, total = 0;
	uint8_t *copy = malloc(b.n);
	REQUIRE(copy);
	for (size_t i = 0; i < b.n; i++) {
		for (size_t k = 0; k < sizeof(vals); k++) {
			memcpy(copy, b.p, b.n);
			if (copy[i] == vals[k])
				continue;
			copy[i] = vals[k];
			gguf_t *g = NULL;
			err_msg_t e = { "" };
			int rc = gguf_open_mem(copy, b.n, &g, &e);
			total++;
			if (rc) {
				refused++;
				CHECK(e.msg[0] != 0 && g == NULL && rc >= ERR_CODE_MIN);
			} else {
				/* Still valid: walk it. */
				for (int64_t t = 0; t < gguf_n_tensors(g); t++) {
					const gguf_tensor_t *ti_ = gguf_tensor_at(g, t);
					CHECK((const uint8_t *)ti_->data + ti_->nbytes <= copy + b.n);
				}
				gguf_free(g);
			}
		}
	}
	free(copy);
	fprintf(stderr, "  %d of %d one-byte mutations refused\n", refused, total);
	CHECK(refused > total / 4);
}

static void test_header(void)
{
	buf_t b;
	small_valid(&b);
	b.p[0] = 'g';
	EXPECT(&b, ERR_FORMAT, "magic");
	hdr(&b, 1, 0, 0);
	EXPECT(&b, ERR_UNSUPPORTED, "version 1");
	hdr(&b, 99, 0, 0);
	EXPECT(&b, ERR_UNSUPPORTED, "version 99");
	hdr(&b, 0, 0, 0);
	EXPECT(&b, ERR_UNSUPPORTED, "version 0");
	hdr(&b, 0x03000000, 0, 0);
	EXPECT(&b, ERR_UNSUPPORTED, "big-endian");
	/* A v1 header is shorter (u32 counts): refused on the version alone. */
	b.n = 0;
	put(&b, "GGUF", 4);
	u32(&b, 1);
	u32(&b, 0);
	u32(&b, 0);
	EXPECT(&b, ERR_UNSUPPORTED, "version 1");
	/* Not GGUF at all. */
	b.n = 0;
	put(&b, "\x7f" "ELF", 4);
	zeros(&b, 60);
	EXPECT(&b, ERR_FORMAT, "magic");
}

static void test_counts(void)
{
	buf_t b;
	hdr(&b, 3, 0, 1ULL << 60);
	EXPECT(&b, ERR_RANGE, "key/value count");
	hdr(&b, 3, 1ULL << 60, 0);
	EXPECT(&b, ERR_RANGE, "tensor count");
	hdr(&b, 3, UINT64_MAX, UINT64_MAX);
	EXPECT(&b, ERR_RANGE, "count");
	/* Under the limits, but more than the file could hold. */
	hdr(&b, 3, 0, 1000);
	kv_u32(&b, "a", 1);
	EXPECT(&b, ERR_TRUNCATED, "cannot fit");
	hdr(&b, 3, 1000, 0);
	EXPECT(&b, ERR_TRUNCATED, "cannot fit");
	hdr(&b, 3, GGUF_MAX_TENSORS, GGUF_MAX_KV);
	EXPECT(&b, ERR_TRUNCATED, "cannot fit");
	/* The second pair is cut short. */
	hdr(&b, 3, 0, 2);
	kv_u32(&b, "a", 1);
	str(&b, "bb");
	u32(&b, GGUF_UINT32);
	zeros(&b, 2);
	EXPECT(&b, ERR_TRUNCATED, "'bb'");
}

static void test_strings(void)
{
	buf_t b;
	/* Key length past the end / over the limit. */
	hdr(&b, 3, 0, 1);
	u64(&b, 100);
	put(&b, "abcdef", 6);
	u32(&b, 0);
	EXPECT(&b, ERR_TRUNCATED, "key");
	hdr(&b, 3, 0, 1);
	u64(&b, 1ULL << 63);
	zeros(&b, 16);
	EXPECT(&b, ERR_RANGE, "limit");
	hdr(&b, 3, 0, 1);
	u64(&b, UINT64_MAX);
	zeros(&b, 16);
	EXPECT(&b, ERR_RANGE, "limit");
	/* Empty key, key with a NUL. */
	hdr(&b, 3, 0, 1);
	u64(&b, 0);
	u32(&b, GGUF_UINT8);
	u8(&b, 0);
	zeros(&b, 8);
	EXPECT(&b, ERR_FORMAT, "empty");
	hdr(&b, 3, 0, 1);
	u64(&b, 3);
	put(&b, "a\0b", 3);
	u32(&b, GGUF_UINT8);
	u8(&b, 0);
	zeros(&b, 8);
	EXPECT(&b, ERR_FORMAT, "NUL");
	/* String value length past the end / over the limit. */
	hdr(&b, 3, 0, 1);
	str(&b, "s.v");
	u32(&b, GGUF_STRING);
	u64(&b, 50);
	put(&b, "short", 5);
	EXPECT(&b, ERR_TRUNCATED, "'s.v'");
	hdr(&b, 3, 0, 1);
	str(&b, "s.v");
	u32(&b, GGUF_STRING);
	u64(&b, 1ULL << 40);
	put(&b, "short", 5);
	EXPECT(&b, ERR_RANGE, "'s.v'");
	/* A key shown safely in the message: control bytes escaped. */
	hdr(&b, 3, 0, 1);
	str(&b, "bad\x01key");
	u32(&b, 77);
	zeros(&b, 8);
	EXPECT(&b, ERR_FORMAT, "bad\\x01key");
}

static void test_values(void)
{
	buf_t b;
	hdr(&b, 3, 0, 1);
	str(&b, "v");
	u32(&b, 13);
	zeros(&b, 8);
	EXPECT(&b, ERR_FORMAT, "unknown value type 13");
	hdr(&b, 3, 0, 1);
	str(&b, "v");
	u32(&b, UINT32_MAX);
	zeros(&b, 8);
	EXPECT(&b, ERR_FORMAT, "unknown value type");
	/* bool must be 0 or 1, scalars and array elements alike. */
	hdr(&b, 3, 0, 1);
	str(&b, "v.bool");
	u32(&b, GGUF_BOOL);
	u8(&b, 2);
	EXPECT(&b, ERR_FORMAT, "'v.bool'");
	hdr(&b, 3, 0, 1);
	str(&b, "v.bools");
	u32(&b, GGUF_ARRAY);
	u32(&b, GGUF_BOOL);
	u64(&b, 3);
	u8(&b, 1);
	u8(&b, 0);
	u8(&b, 255);
	EXPECT(&b, ERR_FORMAT, "element 2");
	/* A scalar cut short. */
	hdr(&b, 3, 0, 1);
	str(&b, "v.u64");
	u32(&b, GGUF_UINT64);
	zeros(&b, 5);
	EXPECT(&b, ERR_TRUNCATED, "'v.u64'");
}

static void test_arrays(void)
{
	buf_t b;
	/* Nested arrays are refused, clearly. */
	hdr(&b, 3, 0, 1);
	str(&b, "nest");
	u32(&b, GGUF_ARRAY);
	u32(&b, GGUF_ARRAY);
	u64(&b, 1);
	u32(&b, GGUF_UINT8);
	u64(&b, 1);
	u8(&b, 0);
	EXPECT(&b, ERR_UNSUPPORTED, "nested");
	hdr(&b, 3, 0, 1);
	str(&b, "a");
	u32(&b, GGUF_ARRAY);
	u32(&b, 13);
	u64(&b, 0);
	EXPECT(&b, ERR_FORMAT, "element type 13");
	/* Huge counts: over the limit, or more than the file holds. */
	hdr(&b, 3, 0, 1);
	str(&b, "a");
	u32(&b, GGUF_ARRAY);
	u32(&b, GGUF_UINT32);
	u64(&b, 1ULL << 60);
	zeros(&b, 16);
	EXPECT(&b, ERR_RANGE, "limit");
	hdr(&b, 3, 0, 1);
	str(&b, "a");
	u32(&b, GGUF_ARRAY);
	u32(&b, GGUF_UINT64);
	u64(&b, 1000);
	zeros(&b, 16);
	EXPECT(&b, ERR_TRUNCATED, "'a'");
	hdr(&b, 3, 0, 1);
	str(&b, "a");
	u32(&b, GGUF_ARRAY);
	u32(&b, GGUF_STRING);
	u64(&b, GGUF_MAX_ARRAY);   /* would be a 512 MiB index: refused before allocating */
	zeros(&b, 64);
	EXPECT(&b, ERR_TRUNCATED, "strings need");
	/* A string inside an array running past the end. */
	hdr(&b, 3, 0, 1);
	str(&b, "toks");
	u32(&b, GGUF_ARRAY);
	u32(&b, GGUF_STRING);
	u64(&b, 3);
	str(&b, "ok");
	u64(&b, 1000);
	zeros(&b, 12);
	EXPECT(&b, ERR_TRUNCATED, "element 1");
}

static void test_duplicates(void)
{
	buf_t b;
	hdr(&b, 3, 0, 3);
	kv_u32(&b, "x.a", 1);
	kv_u32(&b, "x.b", 1);
	kv_str(&b, "x.a", "again");
	EXPECT(&b, ERR_FORMAT, "duplicate key 'x.a'");
	uint64_t ne[1] = { 8 };
	hdr(&b, 3, 2, 0);
	ti(&b, "w", 1, ne, KERN_F32, 0);
	ti(&b, "w", 1, ne, KERN_F32, 32);
	pad(&b, 32);
	zeros(&b, 64);
	EXPECT(&b, ERR_FORMAT, "duplicate tensor name 'w'");
}

/* One tensor with the given dims/type/offset, and `data` bytes of data. */
static void one_tensor(buf_t *b, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off, size_t data)
{
	hdr(b, 3, 1, 0);
	ti(b, "t.x", n_dims, ne, type, off);
	pad(b, 32);
	zeros(b, data);
}

static void test_tensor_shapes(void)
{
	buf_t b;
	uint64_t ne[8] = { 4, 4, 4, 4, 4, 4, 4, 4 };
	one_tensor(&b, 4, ne, KERN_F32, 0, 1024);
	EXPECT(&b, 0, NULL);
	one_tensor(&b, 5, ne, KERN_F32, 0, 4096);
	EXPECT(&b, ERR_FORMAT, "5 dimensions");
	hdr(&b, 3, 1, 0);
	str(&b, "t.x");
	u32(&b, UINT32_MAX);
	zeros(&b, 64);
	EXPECT(&b, ERR_FORMAT, "dimensions");
	/* n_dims 0: a scalar. */
	one_tensor(&b, 0, ne, KERN_F32, 0, 4);
	EXPECT(&b, 0, NULL);
	uint64_t zero[2] = { 4, 0 };
	one_tensor(&b, 2, zero, KERN_F32, 0, 64);
	EXPECT(&b, ERR_FORMAT, "dimension 1 is 0");
	/* Products that overflow 64 bits, or pass the element limit. */
	uint64_t ovf[2] = { 1ULL << 32, 1ULL << 32 };
	one_tensor(&b, 2, ovf, KERN_F32, 0, 64);
	EXPECT(&b, ERR_RANGE, "'t.x'");
	uint64_t big[1] = { 1ULL << 63 };
	one_tensor(&b, 1, big, KERN_F32, 0, 64);
	EXPECT(&b, ERR_RANGE, "'t.x'");
	uint64_t neg[1] = { UINT64_MAX };
	one_tensor(&b, 1, neg, KERN_F32, 0, 64);
	EXPECT(&b, ERR_RANGE, "'t.x'");
	uint64_t over[3] = { 1ULL << 20, 1ULL << 20, 1ULL << 10 };
	one_tensor(&b, 3, over, KERN_F32, 0, 64);
	EXPECT(&b, ERR_RANGE, "elements");
	/* Under the element limit, but far bigger than the file. */
	uint64_t large[2] = { 1ULL << 24, 1ULL << 23 };
	one_tensor(&b, 2, large, KERN_F32, 0, 64);
	EXPECT(&b, ERR_TRUNCATED, "'t.x'");
}

static void test_tensor_types(void)
{
	buf_t b;
	uint64_t ne[2] = { 256, 2 };
	static const uint32_t bad_ids[] = { 4, 5, 31, 32, 33, 36, 37, 38, 40, 1000, 0x80000000u, UINT32_MAX };
	for (size_t k = 0; k < sizeof(bad_ids) / sizeof(bad_ids[0]); k++) {
		one_tensor(&b, 2, ne, bad_ids[k], 0, 4096);
		char needle[48];
		snprintf(needle, sizeof(needle), "type id %u", bad_ids[k]);
		EXPECT(&b, ERR_FORMAT, needle);
	}
	/* Every id that has a layout is accepted, kernels or not (the model
	 * loader refuses unsupported ones by name), with the right size. */
	int known = 0;
	for (int t = 0; t < KERN_TYPE_COUNT; t++) {
		const kern_traits_t *tr = kern_traits(t);
		if (!tr)
			continue;
		known++;
		uint64_t row = kern_row_size(t, 256);
		REQUIRE(row > 0 && row <= 2048);
		one_tensor(&b, 2, ne, (uint32_t)t, 0, 2 * row);
		if (!EXPECT(&b, 0, NULL))
			fprintf(stderr, "  type %d (%s)\n", t, kern_type_name(t));
		gguf_t *g = NULL;
		err_msg_t e;
		REQUIRE(gguf_open_mem(b.p, b.n, &g, &e) == 0);
		CHECK_EQ_INT(gguf_tensor_at(g, 0)->nbytes, 2 * row);
		gguf_free(g);
		/* One byte short of its data. */
		b.n--;
		EXPECT(&b, ERR_TRUNCATED, "'t.x'");
	}
	CHECK(known >= 30);
	/* A row that is not a whole number of blocks. */
	uint64_t part[1] = { 16 };
	one_tensor(&b, 1, part, KERN_Q4_0, 0, 64);
	EXPECT(&b, ERR_FORMAT, "block size");
	uint64_t part_k[1] = { 128 };
	one_tensor(&b, 1, part_k, KERN_Q4_K, 0, 512);
	EXPECT(&b, ERR_FORMAT, "block size");
}

static void test_tensor_offsets(void)
{
	buf_t b;
	uint64_t ne[1] = { 8 };   /* 32 bytes of f32 */
	one_tensor(&b, 1, ne, KERN_F32, 4, 64);
	EXPECT(&b, ERR_FORMAT, "not a multiple of the alignment");
	one_tensor(&b, 1, ne, KERN_F32, 64, 64);
	EXPECT(&b, ERR_TRUNCATED, "past the end");
	one_tensor(&b, 1, ne, KERN_F32, 1ULL << 62, 64);
	EXPECT(&b, ERR_TRUNCATED, "past the end");
	one_tensor(&b, 1, ne, KERN_F32, UINT64_MAX - 31, 64);   /* offset + size overflows */
	EXPECT(&b, ERR_TRUNCATED, "past the end");
	/* Overlapping tensors, declared in either order. */
	uint64_t ne2[1] = { 16 };   /* 64 bytes */
	hdr(&b, 3, 2, 0);
	ti(&b, "t.a", 1, ne2, KERN_F32, 0);
	ti(&b, "t.b", 1, ne, KERN_F32, 32);
	pad(&b, 32);
	zeros(&b, 96);
	EXPECT(&b, ERR_FORMAT, "overlaps");
	hdr(&b, 3, 2, 0);
	ti(&b, "t.b", 1, ne, KERN_F32, 32);
	ti(&b, "t.a", 1, ne2, KERN_F32, 0);
	pad(&b, 32);
	zeros(&b, 96);
	EXPECT(&b, ERR_FORMAT, "'t.a'");
	/* Out of order but disjoint is fine; so is sharing nothing but a boundary. */
	hdr(&b, 3, 2, 0);
	ti(&b, "t.b", 1, ne, KERN_F32, 64);
	ti(&b, "t.a", 1, ne2, KERN_F32, 0);
	pad(&b, 32);
	zeros(&b, 96);
	EXPECT(&b, 0, NULL);
	/* The data section itself starts past the end of the file. */
	hdr(&b, 3, 1, 0);
	ti(&b, "t.a", 1, ne, KERN_F32, 0);
	EXPECT(&b, ERR_TRUNCATED, "data section");
}

static void align_file(buf_t *b, uint32_t vtype, uint64_t value, size_t vsize)
{
	uint64_t ne[1] = { 8 };
	hdr(b, 3, 1, 1);
	str(b, "general.alignment");
	u32(b, vtype);
	put(b, &value, vsize);
	ti(b, "t", 1, ne, KERN_F32, 0);
	pad(b, 64);
	zeros(b, 32);
}

static void test_alignment(void)
{
	buf_t b;
	align_file(&b, GGUF_UINT32, 0, 4);
	EXPECT(&b, ERR_FORMAT, "general.alignment");
	align_file(&b, GGUF_UINT32, 3, 4);
	EXPECT(&b, ERR_FORMAT, "power of two");
	align_file(&b, GGUF_UINT32, 48, 4);
	EXPECT(&b, ERR_FORMAT, "power of two");
	align_file(&b, GGUF_UINT32, 1u << 31, 4);
	EXPECT(&b, ERR_RANGE, "general.alignment");
	align_file(&b, GGUF_INT32, (uint32_t)-32, 4);
	EXPECT(&b, ERR_FORMAT, "negative");
	align_file(&b, GGUF_FLOAT32, 0x42000000, 4);   /* 32.0f */
	EXPECT(&b, ERR_FORMAT, "not an integer");
	align_file(&b, GGUF_UINT32, 64, 4);
	EXPECT(&b, 0, NULL);
	align_file(&b, GGUF_UINT64, 16, 8);
	EXPECT(&b, 0, NULL);
	/* Alignment 64 makes an offset of 32 misaligned. */
	uint64_t ne[1] = { 8 };
	hdr(&b, 3, 1, 1);
	kv_u32(&b, "general.alignment", 64);
	ti(&b, "t", 1, ne, KERN_F32, 32);
	pad(&b, 64);
	zeros(&b, 64);
	EXPECT(&b, ERR_FORMAT, "alignment (64)");
}

/* Files with no tensors may end right after their pairs (no padding). */
static void test_no_tensors(void)
{
	buf_t b;
	hdr(&b, 3, 0, 1);
	kv_str(&b, "general.name", "x");
	EXPECT(&b, 0, NULL);
	hdr(&b, 2, 0, 0);
	EXPECT(&b, 0, NULL);
}

TEST_MAIN(test_valid_baseline, test_truncated_everywhere, test_byte_mutations, test_header, test_counts,
	test_strings, test_values, test_arrays, test_duplicates, test_tensor_shapes, test_tensor_types,
	test_tensor_offsets, test_alignment, test_no_tensors)
