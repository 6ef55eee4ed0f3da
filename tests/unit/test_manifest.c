#define _GNU_SOURCE
/* test_manifest.c - model ids: stable for a file, different for any change. */
#include <unistd.h>

#include "test.h"
#include "model/manifest.h"

static int id_of_buf(const uint8_t *buf, size_t len, uint8_t id[32], int threads)
{
	gguf_t *g;
	err_msg_t e;
	if (gguf_open_mem(buf, len, &g, &e))
		return -1;
	pool_t *p = pool_new(threads);
	int r = manifest_model_id(g, p, id, &e);
	pool_free(p);
	gguf_free(g);
	return r;
}

static void test_model_id(void)
{
	FILE *f = fopen(fixture_path("stories260K.gguf"), "rb");
	REQUIRE(f);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *buf = malloc((size_t)n);
	REQUIRE(fread(buf, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	uint8_t a[32], b[32], c[32], d[32];
	REQUIRE(id_of_buf(buf, (size_t)n, a, 1) == 0);
	REQUIRE(id_of_buf(buf, (size_t)n, b, 2) == 0);
	CHECK(memcmp(a, b, 32) == 0);            /* threads do not matter */
	char hex[65];
	fprintf(stderr, "  stories260K model id %s\n", manifest_id_hex(a, hex));
	uint8_t back[32];
	CHECK(manifest_id_parse(hex, back) == 0 && memcmp(back, a, 32) == 0);
	CHECK(manifest_id_parse("xyz", back) != 0);
	buf[n - 100] ^= 1;                       /* one bit of a weight */
	REQUIRE(id_of_buf(buf, (size_t)n, c, 2) == 0);
	CHECK(memcmp(a, c, 32) != 0);
	buf[n - 100] ^= 1;
	/* one byte of metadata: the architecture's first character, 'l' -> 'L' */
	uint8_t *p = memmem(buf, 14000, "llama", 5);
	REQUIRE(p);
	*p = 'L';
	REQUIRE(id_of_buf(buf, (size_t)n, d, 2) == 0);
	CHECK(memcmp(a, d, 32) != 0);
	free(buf);
}

/* Loading into huge pages and mapping the file give the same model. */
static void test_open_modes(void)
{
	gguf_t *a, *b;
	err_msg_t e;
	uint8_t ia[32], ib[32];
	REQUIRE(gguf_open_ex(fixture_path("stories260K.gguf"), 0, &a, &e) == 0);
	REQUIRE(gguf_open_ex(fixture_path("stories260K.gguf"), GGUF_OPEN_HUGE, &b, &e) == 0);
	CHECK(gguf_file_size(a) == gguf_file_size(b));
	CHECK(memcmp(gguf_base(a), gguf_base(b), gguf_file_size(a)) == 0);
	CHECK(((uintptr_t)gguf_base(b) & ((2u << 20) - 1)) == 0);
	REQUIRE(manifest_model_id(a, NULL, ia, &e) == 0);
	REQUIRE(manifest_model_id(b, NULL, ib, &e) == 0);
	CHECK(memcmp(ia, ib, 32) == 0);
	gguf_free(a);
	gguf_free(b);
}

TEST_MAIN(test_model_id, test_open_modes)
