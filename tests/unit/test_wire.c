/* test_wire.c - the wire codec: every message round-trips (struct -> bytes
 * -> struct -> the same bytes), its exact layout for a few known byte
 * strings, every truncation and every trailing byte refused, every bounded
 * field at its limit (accepted) and one past it (refused, by the encoder
 * and the decoder alike), and the hidden-state encodings. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "kern/kern.h"
#include "net/wire.h"
#include "test.h"

static uint8_t hidden_buf[WIRE_MAX_MSG];
static uint8_t probe_buf[WIRE_MAX_PROBE];

/* Sample messages: index 0.. until it returns 0. */
static int sample(int i, wire_msg_t *m)
{
	memset(m, 0, sizeof(*m));
	switch (i) {
	case 0:
		m->type = WIRE_HELLO;
		m->u.hello = (wire_hello_t){ .version = 1, .min_version = 1, .max_version = 1,
			.caps = WIRE_CAP_SHARD | WIRE_CAP_HIDDEN_F16 | (1ull << 63) };
		strcpy(m->u.hello.software, "colony 0.1.0 (test)");
		strcpy(m->u.hello.network, "colony-test-net");
		return 1;
	case 1:
		m->type = WIRE_HELLO;
		m->u.hello = (wire_hello_t){ .version = 3, .min_version = 2, .max_version = 7 };
		strcpy(m->u.hello.network, "n");   /* empty software string */
		return 1;
	case 2:
		m->type = WIRE_PING;
		m->u.ping = (wire_ping_t){ 0x0102030405060708ull, 1700000000123456ull };
		return 1;
	case 3:
		m->type = WIRE_PONG;
		m->u.ping = (wire_ping_t){ UINT64_MAX, 0 };
		return 1;
	case 4:
		m->type = WIRE_ERROR;
		m->u.error.code = WIRE_E_BUSY;
		strcpy(m->u.error.msg, "at capacity: 64 sessions open");
		return 1;
	case 5:
		m->type = WIRE_ERROR;
		m->u.error.code = 65535;   /* unknown codes pass */
		return 1;
	case 6:
		m->type = WIRE_OPEN_SESSION;
		m->u.open = (wire_open_t){ .session_id = 0xdeadbeefcafef00dull, .layer_a = 0, .layer_b = 5,
			.max_len = 2048, .enc = WIRE_ENC_F16, .kv_type = WIRE_KV_F16 };
		for (int k = 0; k < 32; k++)
			m->u.open.model_id[k] = (uint8_t)(k * 11);
		return 1;
	case 7:
		m->type = WIRE_OPEN_OK;
		m->u.open_ok = (wire_open_ok_t){ 42, 1024 };
		return 1;
	case 8:
		m->type = WIRE_OPEN_ERR;
		m->u.error.session_id = 42;
		m->u.error.code = WIRE_E_UNSUPPORTED;
		strcpy(m->u.error.msg, "layers [40, 80) not served here");
		return 1;
	case 9:
	case 10:
	case 11:
	case 12: {
		m->type = i == 12 ? WIRE_FORWARD_RESULT : WIRE_FORWARD;
		int enc = i == 12 ? WIRE_ENC_F32 : i - 9;
		uint32_t n = 3, dim = 64;
		float x[3 * 64];
		for (int k = 0; k < 3 * 64; k++)
			x[k] = sinf((float)k * 0.37f) * (float)(k % 7);
		size_t sz = wire_hidden_size(enc, n, dim);
		if (wire_hidden_encode(enc, x, n, dim, hidden_buf, sizeof(hidden_buf), NULL) != 0)
			return -1;
		m->u.forward = (wire_forward_t){ .session_id = 7, .start_pos = 100, .n_tokens = n, .dim = dim,
			.enc = (uint8_t)enc, .data = hidden_buf, .data_len = sz };
		return 1;
	}
	case 13:
		m->type = WIRE_CLOSE_SESSION;
		m->u.close = (wire_close_t){ 7, 0 };
		return 1;
	case 14:
		m->type = WIRE_PROBE_REQ;
		m->u.probe = (wire_probe_t){ .probe_id = 9, .n_bytes = 65536 };
		return 1;
	case 15:
		m->type = WIRE_PROBE_DATA;
		for (int k = 0; k < 1000; k++)
			probe_buf[k] = (uint8_t)(k ^ 0x5a);
		m->u.probe = (wire_probe_t){ .probe_id = 9, .n_bytes = 1000, .flags = WIRE_PROBE_ACK_WANTED,
			.data = probe_buf };
		return 1;
	case 16:
		m->type = WIRE_PROBE_DATA;
		m->u.probe = (wire_probe_t){ .probe_id = 10, .n_bytes = 0, .data = probe_buf };
		return 1;
	case 17:
		m->type = WIRE_PROBE_ACK;
		m->u.probe = (wire_probe_t){ .probe_id = 9, .n_bytes = 1000 };
		return 1;
	default:
		return 0;
	}
}

static int msg_equal(const wire_msg_t *a, const wire_msg_t *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case WIRE_HELLO:
		return a->u.hello.version == b->u.hello.version && a->u.hello.min_version == b->u.hello.min_version &&
			a->u.hello.max_version == b->u.hello.max_version && a->u.hello.caps == b->u.hello.caps &&
			strcmp(a->u.hello.software, b->u.hello.software) == 0 &&
			strcmp(a->u.hello.network, b->u.hello.network) == 0;
	case WIRE_PING:
	case WIRE_PONG:
		return a->u.ping.nonce == b->u.ping.nonce && a->u.ping.timestamp_us == b->u.ping.timestamp_us;
	case WIRE_ERROR:
	case WIRE_OPEN_ERR:
		return a->u.error.session_id == b->u.error.session_id && a->u.error.code == b->u.error.code &&
			strcmp(a->u.error.msg, b->u.error.msg) == 0;
	case WIRE_OPEN_SESSION:
		return memcmp(&a->u.open.model_id, &b->u.open.model_id, 32) == 0 &&
			a->u.open.session_id == b->u.open.session_id && a->u.open.layer_a == b->u.open.layer_a &&
			a->u.open.layer_b == b->u.open.layer_b && a->u.open.max_len == b->u.open.max_len &&
			a->u.open.enc == b->u.open.enc && a->u.open.kv_type == b->u.open.kv_type;
	case WIRE_OPEN_OK:
		return a->u.open_ok.session_id == b->u.open_ok.session_id && a->u.open_ok.max_len == b->u.open_ok.max_len;
	case WIRE_FORWARD:
	case WIRE_FORWARD_RESULT: {
		const wire_forward_t *x = &a->u.forward, *y = &b->u.forward;
		return x->session_id == y->session_id && x->start_pos == y->start_pos && x->n_tokens == y->n_tokens &&
			x->dim == y->dim && x->enc == y->enc && x->data_len == y->data_len &&
			memcmp(x->data, y->data, x->data_len) == 0;
	}
	case WIRE_CLOSE_SESSION:
		return a->u.close.session_id == b->u.close.session_id && a->u.close.reason == b->u.close.reason;
	case WIRE_PROBE_REQ:
	case WIRE_PROBE_ACK:
		return a->u.probe.probe_id == b->u.probe.probe_id && a->u.probe.n_bytes == b->u.probe.n_bytes &&
			a->u.probe.flags == b->u.probe.flags;
	case WIRE_PROBE_DATA:
		return a->u.probe.probe_id == b->u.probe.probe_id && a->u.probe.n_bytes == b->u.probe.n_bytes &&
			a->u.probe.flags == b->u.probe.flags &&
			(a->u.probe.n_bytes == 0 || memcmp(a->u.probe.data, b->u.probe.data, a->u.probe.n_bytes) == 0);
	}
	return 0;
}

static uint8_t enc1[WIRE_MAX_MSG + 64], enc2[WIRE_MAX_MSG + 64];

static void test_roundtrip_all(void)
{
	wire_msg_t m, d;
	err_msg_t e = { "" };
	int count = 0, types_seen[256] = { 0 };
	for (int i = 0; sample(i, &m) > 0; i++) {
		size_t n1 = 0, n2 = 0;
		REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n1, &e) == 0);
		CHECK_EQ_INT(n1, wire_encoded_size(&m));
		CHECK_EQ_INT(enc1[0], m.type);
		int rc = wire_decode(enc1, n1, &d, &e);
		if (rc)
			fprintf(stderr, "  sample %d: %s\n", i, e.msg);
		REQUIRE(rc == 0);
		CHECK(msg_equal(&m, &d));
		REQUIRE(wire_encode(&d, enc2, sizeof(enc2), &n2, &e) == 0);
		CHECK(n1 == n2 && memcmp(enc1, enc2, n1) == 0);
		types_seen[m.type] = 1;
		count++;
	}
	CHECK_EQ_INT(count, 18);
	const int all[] = { WIRE_HELLO, WIRE_PING, WIRE_PONG, WIRE_ERROR, WIRE_OPEN_SESSION, WIRE_OPEN_OK,
		WIRE_OPEN_ERR, WIRE_FORWARD, WIRE_FORWARD_RESULT, WIRE_CLOSE_SESSION, WIRE_PROBE_REQ, WIRE_PROBE_DATA,
		WIRE_PROBE_ACK };
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		CHECK(types_seen[all[i]]);
		CHECK(strcmp(wire_type_name(all[i]), "unknown") != 0);
	}
}

/* The documented layouts, byte for byte. */
static void test_known_bytes(void)
{
	wire_msg_t m;
	err_msg_t e;
	size_t n = 0;
	sample(2, &m);   /* PING */
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	const uint8_t ping[] = { 0x02, 8, 7, 6, 5, 4, 3, 2, 1, 0x40, 0x22, 0x20, 0x18, 0x24, 0x0a, 0x06, 0x00 };
	CHECK(n == sizeof(ping) && memcmp(enc1, ping, n) == 0);

	memset(&m, 0, sizeof(m));
	m.type = WIRE_HELLO;
	m.u.hello = (wire_hello_t){ .version = 1, .min_version = 1, .max_version = 2, .caps = 0x0102 };
	strcpy(m.u.hello.software, "v1");
	strcpy(m.u.hello.network, "net");
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	const uint8_t hello[] = { 0x01, 1, 0, 1, 0, 2, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 2, 'v', '1', 3, 'n', 'e', 't' };
	CHECK(n == sizeof(hello) && memcmp(enc1, hello, n) == 0);

	memset(&m, 0, sizeof(m));
	m.type = WIRE_OPEN_ERR;
	m.u.error.session_id = 0x11;
	m.u.error.code = 0x0203;
	strcpy(m.u.error.msg, "no");
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	const uint8_t oerr[] = { 0x12, 0x11, 0, 0, 0, 0, 0, 0, 0, 0x03, 0x02, 2, 0, 'n', 'o' };
	CHECK(n == sizeof(oerr) && memcmp(enc1, oerr, n) == 0);

	/* FORWARD: 22-byte header then the rows */
	float x[2] = { 1.0f, -2.0f };
	uint8_t hs[8];
	REQUIRE(wire_hidden_encode(WIRE_ENC_F32, x, 1, 2, hs, sizeof(hs), &e) == 0);
	memset(&m, 0, sizeof(m));
	m.type = WIRE_FORWARD;
	m.u.forward = (wire_forward_t){ .session_id = 1, .start_pos = 2, .n_tokens = 1, .dim = 2, .enc = 0,
		.data = hs, .data_len = 8 };
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	const uint8_t fwd[] = { 0x13, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0,
		0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0 };
	CHECK(n == sizeof(fwd) && memcmp(enc1, fwd, n) == 0);
}

static void test_truncations_refused(void)
{
	wire_msg_t m, d;
	err_msg_t e = { "" };
	for (int i = 0; sample(i, &m) > 0; i++) {
		size_t n = 0;
		REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
		for (size_t k = 0; k < n; k++) {
			e.msg[0] = 0;
			int rc = wire_decode(enc1, k, &d, &e);
			CHECK(rc == ERR_TRUNCATED || rc == ERR_FORMAT);
			if (rc == 0)
				fprintf(stderr, "  sample %d accepted at %zu of %zu bytes\n", i, k, n);
			CHECK(e.msg[0] != 0);
		}
		/* one byte more is refused too */
		enc1[n] = 0;
		CHECK_EQ_INT(wire_decode(enc1, n + 1, &d, &e), ERR_FORMAT);
		CHECK(strstr(e.msg, "after the last field") != NULL);
	}
}

/* Encodes *m expecting `want` (0 = accepted). When it is refused, the bytes
 * a non-checking encoder would produce are built by patching an accepted
 * neighbour, so the decoder is tested on them too (patch callback). */
static void expect_encode(const wire_msg_t *m, int want, const char *what)
{
	err_msg_t e = { "" };
	size_t n = 0;
	int rc = wire_encode(m, enc1, sizeof(enc1), &n, &e);
	if (rc != want)
		fprintf(stderr, "  %s: encode gave %d (%s), wanted %d\n", what, rc, e.msg, want);
	CHECK_EQ_INT(rc, want);
	CHECK_EQ_INT(wire_encoded_size(m) != 0, want == 0);
	if (rc == 0) {
		wire_msg_t d;
		CHECK_OK(wire_decode(enc1, n, &d, &e));
	}
}

static void expect_decode(const uint8_t *b, size_t n, int want, const char *what)
{
	wire_msg_t d;
	err_msg_t e = { "" };
	int rc = wire_decode(b, n, &d, &e);
	if (rc != want)
		fprintf(stderr, "  %s: decode gave %d (%s), wanted %d\n", what, rc, e.msg, want);
	CHECK_EQ_INT(rc, want);
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static void test_string_limits(void)
{
	wire_msg_t m;
	err_msg_t e;
	size_t n;
	/* software 64 accepted; 65 refused by the encoder and the decoder */
	sample(0, &m);
	memset(m.u.hello.software, 'a', 64);
	m.u.hello.software[64] = 0;
	expect_encode(&m, 0, "software 64");
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	/* bytes with a 65-byte string: patch the length and insert a byte */
	static uint8_t b[1024];
	size_t off = 1 + 6 + 8;
	memcpy(b, enc1, off);
	b[off] = 65;
	memset(b + off + 1, 'a', 65);
	memcpy(b + off + 66, enc1 + off + 65, n - off - 65);
	expect_decode(b, n + 1, ERR_RANGE, "software 65 (decode)");
	b[off] = 255;
	expect_decode(b, n + 1, ERR_RANGE, "software 255 (decode)");
	/* network: 64 ok, 65 refused, empty refused, a space refused */
	sample(0, &m);
	memset(m.u.hello.network, 'n', 64);
	m.u.hello.network[64] = 0;
	expect_encode(&m, 0, "network 64");
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	memcpy(b, enc1, n);
	b[n - 65] = 65;
	b[n] = 'n';
	expect_decode(b, n + 1, ERR_RANGE, "network 65 (decode)");
	m.u.hello.network[0] = 0;
	expect_encode(&m, ERR_FORMAT, "network empty");
	strcpy(m.u.hello.network, "has space");
	expect_encode(&m, ERR_FORMAT, "network with a space");
	strcpy(m.u.hello.network, "ok");
	strcpy(m.u.hello.software, "tab\there");
	expect_encode(&m, ERR_FORMAT, "software with a tab");
	/* error text: 512 ok; 513 refused; a NUL inside refused */
	sample(4, &m);
	memset(m.u.error.msg, 'x', 512);
	m.u.error.msg[512] = 0;
	expect_encode(&m, 0, "error text 512");
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	memcpy(b, enc1, n);
	b[3] = 513 & 255;
	b[4] = 513 >> 8;
	b[n] = 'x';
	expect_decode(b, n + 1, ERR_RANGE, "error text 513 (decode)");
	b[3] = 0xff;
	b[4] = 0xff;
	expect_decode(b, n + 1, ERR_RANGE, "error text 65535 (decode)");
	memcpy(b, enc1, n);
	b[10] = 0;
	expect_decode(b, n, ERR_FORMAT, "error text with NUL");
	/* ERROR has no session id */
	sample(4, &m);
	m.u.error.session_id = 1;
	expect_encode(&m, ERR_FORMAT, "ERROR with a session id");
}

static void test_numeric_limits(void)
{
	wire_msg_t m;
	err_msg_t e;
	size_t n;
	/* HELLO versions */
	sample(0, &m);
	m.u.hello.min_version = 0;
	m.u.hello.version = 0;
	expect_encode(&m, ERR_FORMAT, "min version 0");
	sample(0, &m);
	m.u.hello.version = 2;
	expect_encode(&m, ERR_FORMAT, "version above max");
	sample(0, &m);
	m.u.hello.min_version = 2;
	m.u.hello.version = 2;
	expect_encode(&m, ERR_FORMAT, "min above max");
	/* OPEN_SESSION span, max_len, enc, kv */
	sample(6, &m);
	m.u.open.layer_a = WIRE_MAX_LAYER - 1;
	m.u.open.layer_b = WIRE_MAX_LAYER;
	expect_encode(&m, 0, "span at the limit");
	m.u.open.layer_b = WIRE_MAX_LAYER + 1;
	expect_encode(&m, ERR_RANGE, "span beyond the limit");
	REQUIRE(wire_encode(&(wire_msg_t){ 0 }, enc1, sizeof(enc1), &n, &e) != 0);
	sample(6, &m);
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	uint8_t b[128];
	memcpy(b, enc1, n);
	put32(b + 41, 5);
	put32(b + 45, 5);
	expect_decode(b, n, ERR_RANGE, "empty span (decode)");
	put32(b + 41, 6);
	expect_decode(b, n, ERR_RANGE, "reversed span (decode)");
	memcpy(b, enc1, n);
	put32(b + 49, WIRE_MAX_CTX);
	expect_decode(b, n, 0, "max_len at the limit (decode)");
	put32(b + 49, WIRE_MAX_CTX + 1);
	expect_decode(b, n, ERR_RANGE, "max_len beyond (decode)");
	put32(b + 49, 0);
	expect_decode(b, n, ERR_RANGE, "max_len 0 (decode)");
	memcpy(b, enc1, n);
	b[53] = 3;
	expect_decode(b, n, ERR_UNSUPPORTED, "encoding 3 (decode)");
	memcpy(b, enc1, n);
	b[54] = 2;
	expect_decode(b, n, ERR_UNSUPPORTED, "kv type 2 (decode)");
	b[54] = 8;
	expect_decode(b, n, 0, "kv type q8_0 (decode)");
	/* OPEN_OK max_len */
	sample(7, &m);
	m.u.open_ok.max_len = WIRE_MAX_CTX;
	expect_encode(&m, 0, "granted max_len at the limit");
	m.u.open_ok.max_len = WIRE_MAX_CTX + 1;
	expect_encode(&m, ERR_RANGE, "granted max_len beyond");
	/* PROBE payloads */
	sample(15, &m);
	m.u.probe.n_bytes = WIRE_MAX_PROBE;
	expect_encode(&m, 0, "probe at the limit");
	m.u.probe.n_bytes = WIRE_MAX_PROBE + 1;
	expect_encode(&m, ERR_RANGE, "probe beyond the limit");
	sample(14, &m);
	m.u.probe.n_bytes = WIRE_MAX_PROBE + 1;
	expect_encode(&m, ERR_RANGE, "probe request beyond the limit");
	sample(15, &m);
	m.u.probe.flags = 2;
	expect_encode(&m, ERR_FORMAT, "probe reserved flag");
	sample(17, &m);
	m.u.probe.flags = 1;
	expect_encode(&m, ERR_FORMAT, "ack with a flag");
	sample(15, &m);
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	put32(enc1 + 10, 1001);   /* claims one byte more than it carries */
	expect_decode(enc1, n, ERR_TRUNCATED, "probe claims more (decode)");
	put32(enc1 + 10, 999);
	expect_decode(enc1, n, ERR_FORMAT, "probe claims less (decode)");
	put32(enc1 + 10, 0xffffffff);
	expect_decode(enc1, n, ERR_RANGE, "probe claims 4 GiB (decode)");
	/* a message above WIRE_MAX_MSG is refused before anything else */
	expect_decode(enc1, WIRE_MAX_MSG + 1, ERR_RANGE, "over-long message");
	/* unknown type */
	uint8_t u[4] = { 0x7f, 0, 0, 0 };
	expect_decode(u, 4, ERR_UNSUPPORTED, "unknown type");
	expect_decode(u, 0, ERR_TRUNCATED, "empty");
	m.type = 0x7f;
	expect_encode(&m, ERR_UNSUPPORTED, "unknown type (encode)");
}

static void test_forward_limits(void)
{
	wire_msg_t m;
	/* rows at the limit, with a dim small enough to fit a message */
	float *x = calloc((size_t)WIRE_MAX_TOKENS * 32, sizeof(float));
	REQUIRE(x);
	err_msg_t e = { "" };
	REQUIRE(wire_hidden_encode(WIRE_ENC_F16, x, WIRE_MAX_TOKENS, 32, hidden_buf, sizeof(hidden_buf), &e) == 0);
	memset(&m, 0, sizeof(m));
	m.type = WIRE_FORWARD;
	m.u.forward = (wire_forward_t){ .session_id = 1, .n_tokens = WIRE_MAX_TOKENS, .dim = 32, .enc = WIRE_ENC_F16,
		.data = hidden_buf, .data_len = wire_hidden_size(WIRE_ENC_F16, WIRE_MAX_TOKENS, 32) };
	expect_encode(&m, 0, "n_tokens at the limit");
	m.u.forward.n_tokens = WIRE_MAX_TOKENS + 1;
	m.u.forward.data_len = wire_hidden_size(WIRE_ENC_F16, WIRE_MAX_TOKENS + 1, 32);
	expect_encode(&m, ERR_RANGE, "n_tokens beyond");
	m.u.forward.n_tokens = 0;
	m.u.forward.data_len = 0;
	expect_encode(&m, ERR_RANGE, "n_tokens 0");
	/* dim at the limit with one row (f32: 256 KiB) */
	m.u.forward = (wire_forward_t){ .session_id = 1, .n_tokens = 1, .dim = WIRE_MAX_DIM, .enc = WIRE_ENC_F32,
		.data = hidden_buf, .data_len = (size_t)WIRE_MAX_DIM * 4 };
	memset(hidden_buf, 0, m.u.forward.data_len);
	expect_encode(&m, 0, "dim at the limit");
	m.u.forward.dim = WIRE_MAX_DIM + 1;
	m.u.forward.data_len += 4;
	expect_encode(&m, ERR_RANGE, "dim beyond");
	/* the largest payload a message holds, and one row more */
	uint32_t dim = 4096, rows = (WIRE_MAX_MSG - 22) / (dim * 2);
	m.u.forward = (wire_forward_t){ .session_id = 1, .n_tokens = rows, .dim = dim, .enc = WIRE_ENC_F16,
		.data = hidden_buf, .data_len = (size_t)rows * dim * 2 };
	expect_encode(&m, 0, "largest f16 message");
	m.u.forward.n_tokens = rows + 1;
	m.u.forward.data_len += (size_t)dim * 2;
	expect_encode(&m, ERR_RANGE, "one row too many for a message");
	/* positions: start + n at the context limit, and past it */
	m.u.forward = (wire_forward_t){ .session_id = 1, .start_pos = WIRE_MAX_CTX - 2, .n_tokens = 2, .dim = 32,
		.enc = WIRE_ENC_Q8, .data = hidden_buf, .data_len = 2 * 34 };
	memset(hidden_buf, 0, 68);
	expect_encode(&m, 0, "positions at the limit");
	m.u.forward.start_pos = WIRE_MAX_CTX - 1;
	expect_encode(&m, ERR_RANGE, "positions beyond");
	m.u.forward.start_pos = 0xffffffffu;
	expect_encode(&m, ERR_RANGE, "positions wrapping");
	/* Q8 needs whole blocks */
	m.u.forward.start_pos = 0;
	m.u.forward.dim = 48;
	m.u.forward.data_len = 0;
	expect_encode(&m, ERR_FORMAT, "q8 dim 48");
	/* data length must match the shape, in the decoder too */
	size_t n;
	sample(9, &m);
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	put32(enc1 + 13, 4);   /* n_tokens 3 -> 4: the data is short */
	expect_decode(enc1, n, ERR_TRUNCATED, "forward rows > data (decode)");
	put32(enc1 + 13, 2);   /* data is long */
	expect_decode(enc1, n, ERR_FORMAT, "forward rows < data (decode)");
	put32(enc1 + 13, 0xffffffff);
	expect_decode(enc1, n, ERR_RANGE, "forward rows 2^32-1 (decode)");
	put32(enc1 + 13, 3);
	put32(enc1 + 17, 0);
	expect_decode(enc1, n, ERR_RANGE, "forward dim 0 (decode)");
	free(x);
}

static void test_hidden_encodings(void)
{
	enum { N = 4, D = 96 };
	float x[N * D], y[N * D];
	for (int i = 0; i < N * D; i++)
		x[i] = sinf((float)i * 1.3f) * (i % 5 == 0 ? 40.0f : 1.5f) + (i == 17 ? 1e-6f : 0.0f);
	uint8_t b[N * D * 4];
	err_msg_t e = { "" };
	/* F32: exact */
	REQUIRE(wire_hidden_encode(WIRE_ENC_F32, x, N, D, b, sizeof(b), &e) == 0);
	REQUIRE(wire_hidden_decode(WIRE_ENC_F32, b, (size_t)N * D * 4, N, D, y, &e) == 0);
	CHECK(memcmp(x, y, sizeof(x)) == 0);
	/* F16: relative error 2^-11 (normal range) */
	REQUIRE(wire_hidden_encode(WIRE_ENC_F16, x, N, D, b, sizeof(b), &e) == 0);
	REQUIRE(wire_hidden_decode(WIRE_ENC_F16, b, (size_t)N * D * 2, N, D, y, &e) == 0);
	for (int i = 0; i < N * D; i++)
		CHECK(fabsf(y[i] - x[i]) <= fabsf(x[i]) * (1.0f / 2048.0f) + 6e-8f);
	CHECK_EQ_INT(b[2 * 5] | b[2 * 5 + 1] << 8, kern_f32_to_f16(x[5]));
	/* Q8: error at most half a step of its block, and the bytes are those
	 * of the Q8_0 reference quantizer (this host is little-endian) */
	size_t qn = wire_hidden_size(WIRE_ENC_Q8, N, D);
	CHECK_EQ_INT(qn, N * D / 32 * 34);
	REQUIRE(wire_hidden_encode(WIRE_ENC_Q8, x, N, D, b, sizeof(b), &e) == 0);
	REQUIRE(wire_hidden_decode(WIRE_ENC_Q8, b, qn, N, D, y, &e) == 0);
	for (int blk = 0; blk < N * D / 32; blk++) {
		float amax = 0;
		for (int j = 0; j < 32; j++)
			amax = fmaxf(amax, fabsf(x[blk * 32 + j]));
		float step = amax / 127.0f;
		for (int j = 0; j < 32; j++)
			CHECK(fabsf(y[blk * 32 + j] - x[blk * 32 + j]) <= step * 0.5f + amax * 1e-3f);
	}
	uint8_t ref[N * D / 32 * 34];
	kern_traits(KERN_Q8_0)->from_float(x, ref, N * D);
	CHECK(memcmp(ref, b, qn) == 0);
	/* an all-zero block has scale 0 and decodes to zeros */
	float z[32] = { 0 }, zy[32];
	REQUIRE(wire_hidden_encode(WIRE_ENC_Q8, z, 1, 32, b, sizeof(b), &e) == 0);
	REQUIRE(wire_hidden_decode(WIRE_ENC_Q8, b, 34, 1, 32, zy, &e) == 0);
	CHECK(memcmp(z, zy, sizeof(z)) == 0);

	/* refused: non-finite values, f16 overflow, wrong sizes */
	float bad[32];
	memcpy(bad, x, sizeof(bad));
	bad[7] = NAN;
	CHECK_EQ_INT(wire_hidden_encode(WIRE_ENC_F32, bad, 1, 32, b, sizeof(b), &e), ERR_RANGE);
	bad[7] = INFINITY;
	CHECK_EQ_INT(wire_hidden_encode(WIRE_ENC_Q8, bad, 1, 32, b, sizeof(b), &e), ERR_RANGE);
	bad[7] = 70000.0f;
	CHECK_EQ_INT(wire_hidden_encode(WIRE_ENC_F16, bad, 1, 32, b, sizeof(b), &e), ERR_RANGE);
	CHECK_OK(wire_hidden_encode(WIRE_ENC_Q8, bad, 1, 32, b, sizeof(b), &e));
	bad[7] = 65504.0f;
	CHECK_OK(wire_hidden_encode(WIRE_ENC_F16, bad, 1, 32, b, sizeof(b), &e));
	bad[7] = 1e10f;
	CHECK_EQ_INT(wire_hidden_encode(WIRE_ENC_Q8, bad, 1, 32, b, sizeof(b), &e), ERR_RANGE);
	CHECK_EQ_INT(wire_hidden_encode(WIRE_ENC_F32, x, 1, 32, b, 127, &e), ERR_FULL);
	CHECK(wire_hidden_encode(WIRE_ENC_Q8, x, 1, 33, b, sizeof(b), &e) != 0);
	uint8_t nanbytes[4] = { 0, 0, 0xc0, 0x7f };
	CHECK_EQ_INT(wire_hidden_decode(WIRE_ENC_F32, nanbytes, 4, 1, 1, y, &e), ERR_FORMAT);
	uint8_t h16inf[2] = { 0x00, 0x7c };
	CHECK_EQ_INT(wire_hidden_decode(WIRE_ENC_F16, h16inf, 2, 1, 1, y, &e), ERR_FORMAT);
	memset(b, 0, 34);
	b[0] = 0x00;
	b[1] = 0x7e;   /* NaN scale */
	CHECK_EQ_INT(wire_hidden_decode(WIRE_ENC_Q8, b, 34, 1, 32, y, &e), ERR_FORMAT);
	CHECK_EQ_INT(wire_hidden_decode(WIRE_ENC_F32, b, 7, 1, 2, y, &e), ERR_FORMAT);
	CHECK_EQ_INT(wire_hidden_decode(5, b, 8, 1, 2, y, &e), ERR_FORMAT);
	CHECK_EQ_INT(wire_hidden_row_size(WIRE_ENC_F16, WIRE_MAX_DIM + 1), 0);
	CHECK_EQ_INT(wire_hidden_row_size(WIRE_ENC_F16, 0), 0);
}

static void test_version_pick(void)
{
	wire_hello_t a = { .version = 3, .min_version = 1, .max_version = 3 };
	wire_hello_t b = { .version = 5, .min_version = 2, .max_version = 5 };
	wire_hello_t c = { .version = 9, .min_version = 4, .max_version = 9 };
	uint16_t v = 0;
	err_msg_t e;
	CHECK_OK(wire_version_pick(&a, &b, &v, &e));
	CHECK_EQ_INT(v, 3);
	CHECK_OK(wire_version_pick(&b, &c, &v, &e));
	CHECK_EQ_INT(v, 5);
	CHECK_EQ_INT(wire_version_pick(&a, &c, &v, &e), ERR_UNSUPPORTED);
}

/* The five PAY messages: round trip byte for byte, sizes, and the checks. */
static void test_pay_msgs(void)
{
	wire_msg_t m, d;
	err_msg_t e = { "" };
	const int types[] = { WIRE_PAY_TERMS_REQ, WIRE_PAY_TERMS, WIRE_PAY_OPEN, WIRE_VOUCHER, WIRE_RECEIPT };
	const size_t sizes[] = { 9, 62, 113, 170, 186 };
	for (int i = 0; i < 5; i++) {
		memset(&m, 0, sizeof(m));
		m.type = (uint8_t)types[i];
		wire_pay_t *p = &m.u.pay;
		p->id = 0x1122334455667788ull;
		if (types[i] == WIRE_PAY_TERMS || types[i] == WIRE_PAY_OPEN) {
			memset(p->wallet, 0xab, sizeof(p->wallet));
			p->price_in = 1500000;
			p->price_out = 4000000;
			p->chunk = 64;
		}
		if (types[i] == WIRE_PAY_TERMS)
			p->flags = WIRE_PAY_REQUIRED;
		if (types[i] == WIRE_PAY_OPEN) {
			memset(p->channel, 0xcd, sizeof(p->channel));
			p->budget = 1000000;
			p->expiry = 1900000000;
			p->n_prompt = 17;
		}
		if (types[i] == WIRE_VOUCHER)
			for (int k = 0; k < WIRE_VOUCHER_LEN; k++)
				p->voucher[k] = (uint8_t)k;
		if (types[i] == WIRE_RECEIPT)
			for (int k = 0; k < WIRE_RECEIPT_LEN; k++)
				p->receipt[k] = (uint8_t)(255 - k);
		size_t n1 = 0, n2 = 0;
		REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n1, &e) == 0);
		CHECK_EQ_INT(n1, sizes[i]);
		CHECK_EQ_INT(n1, wire_encoded_size(&m));
		REQUIRE(wire_decode(enc1, n1, &d, &e) == 0);
		CHECK(memcmp(&m.u.pay, &d.u.pay, sizeof(wire_pay_t)) == 0);
		REQUIRE(wire_encode(&d, enc2, sizeof(enc2), &n2, &e) == 0);
		CHECK(n1 == n2 && memcmp(enc1, enc2, n1) == 0);
		CHECK(strcmp(wire_type_name(types[i]), "unknown") != 0);
		/* every truncation and one byte too many are refused */
		for (size_t k = 1; k < n1; k++)
			CHECK(wire_decode(enc1, k, &d, &e) == ERR_TRUNCATED);
		enc1[n1] = 0;
		CHECK(wire_decode(enc1, n1 + 1, &d, &e) == ERR_FORMAT);
	}
	/* field checks */
	memset(&m, 0, sizeof(m));
	m.type = WIRE_PAY_TERMS;
	m.u.pay.chunk = 0;
	size_t n = 0;
	CHECK(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == ERR_RANGE);
	m.u.pay.chunk = 1;
	m.u.pay.flags = 2;
	CHECK(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == ERR_FORMAT);
	m.u.pay.flags = 0;
	m.u.pay.price_out = -1;
	CHECK(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == ERR_RANGE);
	m.u.pay.price_out = 0;
	REQUIRE(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == 0);
	enc1[n - 1] = 0x80;   /* a reserved flag bit on the wire */
	CHECK(wire_decode(enc1, n, &d, &e) == ERR_FORMAT);
	m.type = WIRE_PAY_OPEN;
	m.u.pay.budget = 0;
	CHECK(wire_encode(&m, enc1, sizeof(enc1), &n, &e) == ERR_RANGE);
}

TEST_MAIN(test_pay_msgs, test_roundtrip_all, test_known_bytes, test_truncations_refused, test_string_limits,
	test_numeric_limits, test_forward_limits, test_hidden_encodings, test_version_pick)
