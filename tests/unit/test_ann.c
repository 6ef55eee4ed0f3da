/* test_ann.c - the DHT record codec and the per-key filter (src/dht/ann.h). */
#include "test.h"

#include <sodium.h>

#include "dht/ann.h"

#define NET 0x7e57c0deu

typedef struct key {
	uint8_t pk[32], sk[64];
} key_t_;

static void key_make(key_t_ *k, int seed)
{
	uint8_t s[32] = { 0 };
	s[0] = (uint8_t)seed;
	s[1] = (uint8_t)(seed >> 8);
	s[31] = 0x5a;
	REQUIRE(sodium_init() >= 0);
	crypto_sign_seed_keypair(k->pk, k->sk, s);
}

static void model_make(uint8_t m[32], int v)
{
	for (int i = 0; i < 32; i++)
		m[i] = (uint8_t)(v * 7 + i);
}

static ann_t shard(const key_t_ *k, uint64_t ts, uint64_t seq)
{
	ann_t a;
	memset(&a, 0, sizeof(a));
	a.kind = ANN_SHARD;
	memcpy(a.node_id, k->pk, 32);
	a.timestamp_ms = ts;
	a.seq = seq;
	model_make(a.model_id, 1);
	a.layer_a = 4;
	a.layer_b = 12;
	a.price = 1500000;
	a.throughput_milli = 123456;
	a.free_sessions = 7;
	a.free_kv_bytes = 1ull << 33;
	a.n_addrs = 2;
	uint8_t v4[4] = { 192, 168, 1, 20 };
	uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 };
	ann_addr_set(&a.addrs[0], 4, v4, 4222);
	ann_addr_set(&a.addrs[1], 6, v6, 4223);
	strcpy(a.sw_version, "colony/0.1.0");
	return a;
}

static ann_t tomb(const key_t_ *k, uint64_t ts, uint64_t seq)
{
	ann_t a;
	memset(&a, 0, sizeof(a));
	a.kind = ANN_TOMBSTONE;
	memcpy(a.node_id, k->pk, 32);
	a.timestamp_ms = ts;
	a.seq = seq;
	model_make(a.model_id, 1);
	return a;
}

static size_t enc(const ann_t *a, const key_t_ *k, uint32_t net, uint8_t *buf)
{
	size_t len = 0;
	err_msg_t e = { "" };
	int rc = ann_encode(a, net, k->sk, buf, ANN_MAX_SIZE, &len, &e);
	if (rc)
		fprintf(stderr, "  encode: %s\n", e.msg);
	REQUIRE(rc == 0);
	return len;
}

/* Re-signs buf[0..len) in place (the last 64 bytes) with k for net, so a test
 * can change a field and see the field check, not the signature, refuse it. */
static void resign(uint8_t *buf, size_t len, const key_t_ *k, uint32_t net)
{
	uint8_t msg[16 + 4 + 1024];
	REQUIRE(len <= 1024);
	memcpy(msg, ANN_SIG_DOMAIN, 16);
	for (int i = 0; i < 4; i++)
		msg[16 + i] = (uint8_t)(net >> (8 * i));
	memcpy(msg + 20, buf, len - 64);
	crypto_sign_detached(buf + len - 64, NULL, msg, 20 + len - 64, k->sk);
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void test_roundtrip_and_layout(void)
{
	key_t_ k;
	key_make(&k, 1);
	ann_t a = shard(&k, 1700000000123ull, 42), b;
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = enc(&a, &k, NET, buf);
	/* head 88 + body 33 + v4 7 + v6 19 + version 1+12 + signature 64 */
	CHECK_EQ_INT(len, 88 + 33 + 7 + 19 + 13 + 64);
	err_msg_t e = { "" };
	CHECK_OK(ann_decode(buf, len, NET, &b, &e));
	CHECK(memcmp(&a, &b, sizeof(a)) == 0);
	/* The documented layout, byte by byte. */
	CHECK(memcmp(buf, "CLNY", 4) == 0);
	CHECK_EQ_INT(buf[4], 1);
	CHECK_EQ_INT(buf[5], ANN_SHARD);
	CHECK(buf[6] == 0 && buf[7] == 0);
	CHECK(memcmp(buf + 8, k.pk, 32) == 0);
	CHECK(rd64(buf + 40) == 1700000000123ull);
	CHECK(rd64(buf + 48) == 42);
	CHECK(memcmp(buf + 56, a.model_id, 32) == 0);
	CHECK(buf[88] == 4 && buf[89] == 0 && buf[92] == 12);
	CHECK(rd64(buf + 96) == 1500000);
	CHECK(buf[104] == (123456 & 0xff) && buf[105] == ((123456 >> 8) & 0xff));
	CHECK_EQ_INT(buf[108], 7);
	CHECK(rd64(buf + 112) == (1ull << 33));
	CHECK_EQ_INT(buf[120], 2);                               /* address count */
	CHECK(buf[121] == 4 && buf[122] == 192 && buf[125] == 20);
	CHECK(buf[126] == (4222 & 0xff) && buf[127] == (4222 >> 8));
	CHECK(buf[128] == 6 && buf[129] == 0x20 && buf[144] == 1);
	CHECK(buf[145] == (4223 & 0xff) && buf[146] == (4223 >> 8));
	CHECK_EQ_INT(buf[147], 12);
	CHECK(memcmp(buf + 148, "colony/0.1.0", 12) == 0);
	/* The signature covers domain || network (LE) || record. */
	uint8_t msg[16 + 4 + ANN_MAX_SIZE];
	memcpy(msg, "colony-record-v1", 16);
	msg[16] = 0xde; msg[17] = 0xc0; msg[18] = 0x57; msg[19] = 0x7e;
	memcpy(msg + 20, buf, len - 64);
	CHECK(crypto_sign_verify_detached(buf + len - 64, msg, 20 + len - 64, k.pk) == 0);

	/* Tombstone: the head and the signature only. */
	ann_t t = tomb(&k, 1700000000999ull, 43);
	len = enc(&t, &k, NET, buf);
	CHECK_EQ_INT(len, ANN_MIN_SIZE);
	CHECK_EQ_INT(buf[5], ANN_TOMBSTONE);
	CHECK_OK(ann_decode(buf, len, NET, &b, &e));
	CHECK(memcmp(&t, &b, sizeof(t)) == 0);

	/* The largest shard record: 8 IPv6 addresses and a 32-byte version. */
	a.n_addrs = ANN_MAX_ADDRS;
	for (int i = 0; i < ANN_MAX_ADDRS; i++) {
		uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = (uint8_t)(i + 1) };
		ann_addr_set(&a.addrs[i], 6, v6, (uint16_t)(1000 + i));
	}
	memset(a.sw_version, 'v', ANN_MAX_SWVER);
	a.sw_version[ANN_MAX_SWVER] = 0;
	a.layer_a = 0;
	a.layer_b = ANN_MAX_LAYER;
	a.price = UINT64_MAX;
	len = enc(&a, &k, NET, buf);
	CHECK_EQ_INT(len, ANN_MAX_SHARD_SIZE);
	CHECK_OK(ann_decode(buf, len, NET, &b, &e));
	CHECK(memcmp(&a, &b, sizeof(a)) == 0);
	/* A buffer one byte short is refused, not overrun. */
	size_t l2;
	CHECK(ann_encode(&a, NET, k.sk, buf, ANN_MAX_SHARD_SIZE - 1, &l2, &e) == ERR_INVAL);
}

static void test_every_truncation(void)
{
	key_t_ k;
	key_make(&k, 2);
	ann_t a = shard(&k, 1700000000000ull, 9), b;
	uint8_t buf[ANN_MAX_SIZE + 1];
	size_t len = enc(&a, &k, NET, buf);
	for (size_t n = 0; n < len; n++) {
		err_msg_t e = { "" };
		int rc = ann_decode(buf, n, NET, &b, &e);
		CHECK_EQ_INT(rc, ERR_TRUNCATED);
		CHECK(e.msg[0] != 0);
		CHECK(b.kind == 0 && b.seq == 0);   /* output zeroed on error */
	}
	ann_t t = tomb(&k, 1700000000000ull, 10);
	len = enc(&t, &k, NET, buf);
	for (size_t n = 0; n < len; n++)
		CHECK_EQ_INT(ann_decode(buf, n, NET, &b, NULL), ERR_TRUNCATED);
	/* One byte too many. */
	buf[len] = 0;
	err_msg_t e = { "" };
	CHECK_EQ_INT(ann_decode(buf, len + 1, NET, &b, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "trailing") != NULL);
}

/* Changes one byte of a valid record, re-signs, and expects `want`. */
static void expect_field(const uint8_t *orig, size_t len, size_t off, uint8_t val, const key_t_ *k,
	int want, const char *what)
{
	uint8_t buf[ANN_MAX_SIZE];
	memcpy(buf, orig, len);
	buf[off] = val;
	resign(buf, len, k, NET);
	ann_t b;
	err_msg_t e = { "" };
	int rc = ann_decode(buf, len, NET, &b, &e);
	if (rc != want)
		fprintf(stderr, "  %s: got %d (%s), want %d\n", what, rc, e.msg, want);
	CHECK_EQ_INT(rc, want);
	CHECK(e.msg[0] != 0);
}

static void test_every_bound(void)
{
	key_t_ k;
	key_make(&k, 3);
	ann_t a = shard(&k, 1700000000000ull, 9);
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = enc(&a, &k, NET, buf);
	/* Head. */
	expect_field(buf, len, 0, 'X', &k, ERR_FORMAT, "magic");
	expect_field(buf, len, 4, 2, &k, ERR_UNSUPPORTED, "version 2");
	expect_field(buf, len, 4, 0, &k, ERR_FORMAT, "version 0");
	expect_field(buf, len, 5, 0, &k, ERR_UNSUPPORTED, "kind 0");
	expect_field(buf, len, 5, 6, &k, ERR_UNSUPPORTED, "kind 6");
	expect_field(buf, len, 5, 200, &k, ERR_UNSUPPORTED, "kind 200");
	expect_field(buf, len, 6, 1, &k, ERR_FORMAT, "flags");
	expect_field(buf, len, 7, 0x80, &k, ERR_FORMAT, "flags high");
	/* Span [4,12): a == b, a > b, b beyond the bound. */
	expect_field(buf, len, 88, 12, &k, ERR_RANGE, "a == b");
	expect_field(buf, len, 88, 13, &k, ERR_RANGE, "a > b");
	expect_field(buf, len, 94, 1, &k, ERR_RANGE, "b > 65536");   /* b = 12 + 65536 */
	/* Address list: count 0 and 9, family 5, port 0, martian addresses. */
	expect_field(buf, len, 120, 0, &k, ERR_RANGE, "0 addresses");
	expect_field(buf, len, 120, 9, &k, ERR_RANGE, "9 addresses");
	expect_field(buf, len, 121, 5, &k, ERR_FORMAT, "family 5");
	{
		uint8_t b2[ANN_MAX_SIZE];
		memcpy(b2, buf, len);
		b2[126] = 0;
		expect_field(b2, len, 127, 0, &k, ERR_RANGE, "port 0");
	}
	expect_field(buf, len, 122, 0, &k, ERR_RANGE, "0.x.x.x");
	expect_field(buf, len, 122, 224, &k, ERR_RANGE, "multicast v4");
	expect_field(buf, len, 122, 255, &k, ERR_RANGE, "reserved/broadcast v4");
	expect_field(buf, len, 129, 0xff, &k, ERR_RANGE, "multicast v6");
	{
		uint8_t b2[ANN_MAX_SIZE];
		memcpy(b2, buf, len);
		b2[129] = 0xfe;
		expect_field(b2, len, 130, 0x80, &k, ERR_RANGE, "link-local v6");
		memset(b2 + 129, 0, 16);
		expect_field(b2, len, 144, 0, &k, ERR_RANGE, "::");
		b2[139] = 0xff;
		b2[140] = 0xff;
		expect_field(b2, len, 144, 4, &k, ERR_FORMAT, "v4-mapped v6");
	}
	/* Version string: control byte, NUL, length beyond 32 (the record then
	 * also ends early: the length check comes first). */
	expect_field(buf, len, 150, 0x07, &k, ERR_FORMAT, "control char");
	expect_field(buf, len, 150, 0x00, &k, ERR_FORMAT, "NUL in version");
	expect_field(buf, len, 147, 33, &k, ERR_RANGE, "version 33 bytes");
	expect_field(buf, len, 147, 13, &k, ERR_TRUNCATED, "version longer than the record");
	/* Timestamp and sequence 0. */
	{
		uint8_t b2[ANN_MAX_SIZE];
		memcpy(b2, buf, len);
		memset(b2 + 40, 0, 8);
		expect_field(b2, len, 40, 0, &k, ERR_RANGE, "timestamp 0");
		memcpy(b2, buf, len);
		memset(b2 + 48, 0, 8);
		expect_field(b2, len, 48, 0, &k, ERR_RANGE, "seq 0");
	}
	/* Repeated address: make address 1 an IPv4 copy of address 0 by hand. */
	{
		ann_t d = a;
		d.addrs[1] = d.addrs[0];
		err_msg_t e = { "" };
		size_t l2;
		uint8_t b2[ANN_MAX_SIZE];
		CHECK_EQ_INT(ann_encode(&d, NET, k.sk, b2, sizeof(b2), &l2, &e), ERR_FORMAT);
		CHECK(strstr(e.msg, "repeats") != NULL);
	}
	/* Oversized input is refused before anything is read. */
	{
		uint8_t big[ANN_MAX_SIZE + 1] = { 0 };
		memcpy(big, buf, len);
		ann_t b;
		CHECK_EQ_INT(ann_decode(big, sizeof(big), NET, &b, NULL), ERR_FORMAT);
	}
	/* The encoder refuses what the decoder would. */
	uint8_t out[ANN_MAX_SIZE];
	size_t l2;
	ann_t d = a;
	d.layer_b = d.layer_a;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = a;
	d.n_addrs = 0;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = a;
	d.addrs[0].port = 0;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = a;
	d.sw_version[3] = '\n';
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_FORMAT);
	d = a;
	d.kind = 6;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_UNSUPPORTED);
	d = a;
	d.kind = ANN_SKILL;   /* a shard's fields do not make a skill record (no name) */
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = a;
	d.seq = 0;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = a;
	d.addrs[0].ip[7] = 1;   /* IPv4 with bytes past the first 4 */
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_FORMAT);
}

struct other_signer {
	const uint8_t *sk;
};
static void sign_with(void *ud, const void *msg, size_t len, uint8_t sig[64])
{
	crypto_sign_detached(sig, NULL, msg, len, ((struct other_signer *)ud)->sk);
}

static void test_signatures(void)
{
	key_t_ k, m;
	key_make(&k, 4);
	key_make(&m, 5);
	ann_t a = shard(&k, 1700000000000ull, 9), b;
	uint8_t buf[ANN_MAX_SIZE], bad[ANN_MAX_SIZE];
	size_t len = enc(&a, &k, NET, buf);
	err_msg_t e = { "" };
	/* Any flipped bit anywhere (field or signature) fails verification or
	 * parsing: never accepted as something else. */
	for (size_t i = 0; i < len; i++) {
		memcpy(bad, buf, len);
		bad[i] ^= 0x10;
		CHECK(ann_decode(bad, len, NET, &b, NULL) != 0);
	}
	memcpy(bad, buf, len);
	bad[len - 1] ^= 1;
	CHECK_EQ_INT(ann_decode(bad, len, NET, &b, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "signature") != NULL);
	/* Another node's id with our signature. */
	memcpy(bad, buf, len);
	memcpy(bad + 8, m.pk, 32);
	CHECK_EQ_INT(ann_decode(bad, len, NET, &b, NULL), ERR_FORMAT);
	/* The encoder refuses a key that is not the record's. */
	size_t l2;
	CHECK_EQ_INT(ann_encode(&a, NET, m.sk, bad, sizeof(bad), &l2, NULL), ERR_INVAL);
	struct other_signer os = { m.sk };
	CHECK_EQ_INT(ann_encode_with(&a, NET, sign_with, &os, bad, sizeof(bad), &l2, NULL), ERR_INVAL);
	os.sk = k.sk;
	CHECK_OK(ann_encode_with(&a, NET, sign_with, &os, bad, sizeof(bad), &l2, NULL));
	CHECK(l2 == len && memcmp(bad, buf, len) == 0);   /* ed25519 is deterministic */
	/* Signed for another network. */
	CHECK_EQ_INT(ann_decode(buf, len, NET + 1, &b, NULL), ERR_FORMAT);
	len = enc(&a, &k, NET + 1, bad);
	CHECK_OK(ann_decode(bad, len, NET + 1, &b, NULL));
	CHECK_EQ_INT(ann_decode(bad, len, NET, &b, NULL), ERR_FORMAT);
	/* Unverified parsing accepts the bad signature, decode does not. */
	memcpy(bad, buf, len);
	bad[len - 5] ^= 0xff;
	CHECK_OK(ann_parse_unverified(bad, len, &b, NULL));
	CHECK(ann_decode(bad, len, NET, &b, NULL) != 0);
}

static void test_time_rules(void)
{
	key_t_ k;
	key_make(&k, 6);
	const uint64_t now = 1700000000000ull, stale = 180000, skew = 30000;
	ann_t a = shard(&k, now, 1);
	CHECK_OK(ann_check_time(&a, now, stale, skew, NULL));
	a.timestamp_ms = now - stale;
	CHECK_OK(ann_check_time(&a, now, stale, skew, NULL));
	a.timestamp_ms = now - stale - 1;
	CHECK_EQ_INT(ann_check_time(&a, now, stale, skew, NULL), ERR_RANGE);
	a.timestamp_ms = now + skew;
	CHECK_OK(ann_check_time(&a, now, stale, skew, NULL));
	a.timestamp_ms = now + skew + 1;
	CHECK_EQ_INT(ann_check_time(&a, now, stale, skew, NULL), ERR_RANGE);
	a.timestamp_ms = UINT64_MAX;   /* no wrap-around */
	CHECK_EQ_INT(ann_check_time(&a, now, stale, skew, NULL), ERR_RANGE);
	a.timestamp_ms = 1;
	CHECK_EQ_INT(ann_check_time(&a, now, stale, skew, NULL), ERR_RANGE);
	CHECK_EQ_INT(ann_check_time(&a, now, UINT64_MAX, skew, NULL), 0);
}

/* ---- the store ---------------------------------------------------------- */

static ann_store_t *store_make(uint32_t max_nodes)
{
	ann_store_cfg_t c = { .network = NET, .stale_ms = 3000, .skew_ms = 1000, .max_nodes = max_nodes };
	model_make(c.model_id, 1);
	ann_store_t *s = NULL;
	REQUIRE(ann_store_new(&c, &s) == 0);
	return s;
}

static int add(ann_store_t *s, const ann_t *a, const key_t_ *k, uint64_t now)
{
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = enc(a, k, NET, buf);
	return ann_store_add(s, buf, len, now, NULL);
}

static void test_store_latest_and_replay(void)
{
	const uint64_t T = 1700000000000ull;
	key_t_ k;
	key_make(&k, 10);
	ann_store_t *s = store_make(16);
	ann_t a5 = shard(&k, T, 5), a7 = shard(&k, T + 10, 7), a6 = shard(&k, T + 5, 6), out[4];
	a7.price = 777;
	CHECK_OK(add(s, &a5, &k, T));
	CHECK_EQ_INT(add(s, &a5, &k, T), ERR_RANGE);           /* the same record again */
	CHECK_OK(add(s, &a7, &k, T + 10));
	CHECK_EQ_INT(add(s, &a6, &k, T + 10), ERR_RANGE);      /* replayed older sequence */
	CHECK_EQ_INT(ann_store_count(s), 1);
	CHECK_EQ_INT(ann_store_collect(s, T + 10, out, 4), 1);
	CHECK(out[0].seq == 7 && out[0].price == 777);
	/* Equal sequence, other content (equivocation): the first kept wins. */
	ann_t a7b = a7;
	a7b.price = 1;
	CHECK_EQ_INT(add(s, &a7b, &k, T + 10), ERR_RANGE);
	CHECK_EQ_INT(ann_store_collect(s, T + 10, out, 4), 1);
	CHECK(out[0].price == 777);
	const ann_store_stats_t *st = ann_store_stats(s);
	CHECK(st->accepted == 2 && st->replay == 3 && st->bad_sig == 0);

	/* Older copies are refused before their signature is checked: a corrupted
	 * old record counts as a replay, not as a bad signature. */
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = enc(&a5, &k, NET, buf);
	buf[len - 1] ^= 1;
	CHECK_EQ_INT(ann_store_add(s, buf, len, T + 10, NULL), ERR_RANGE);
	CHECK(st->replay == 4 && st->bad_sig == 0);
	/* A newer record with a bad signature changes nothing. */
	ann_t a9 = shard(&k, T + 20, 9);
	len = enc(&a9, &k, NET, buf);
	buf[len - 1] ^= 1;
	err_msg_t e = { "" };
	CHECK_EQ_INT(ann_store_add(s, buf, len, T + 20, &e), ERR_FORMAT);
	CHECK(st->bad_sig == 1);
	CHECK_EQ_INT(ann_store_collect(s, T + 20, out, 4), 1);
	CHECK(out[0].seq == 7);
	ann_store_free(s);
}

static void test_store_tombstones(void)
{
	const uint64_t T = 1700000000000ull;
	key_t_ k, j;
	key_make(&k, 11);
	key_make(&j, 12);
	ann_store_t *s = store_make(16);
	ann_t out[4];
	ann_t a5 = shard(&k, T, 5), t6 = tomb(&k, T + 1, 6), a7 = shard(&k, T + 2, 7);
	ann_t b1 = shard(&j, T, 1);
	CHECK_OK(add(s, &a5, &k, T));
	CHECK_OK(add(s, &b1, &j, T));
	CHECK_EQ_INT(ann_store_collect(s, T + 1, out, 4), 2);
	CHECK_OK(add(s, &t6, &k, T + 1));                      /* hides k at once */
	CHECK_EQ_INT(ann_store_collect(s, T + 1, out, 4), 1);
	CHECK(memcmp(out[0].node_id, j.pk, 32) == 0);
	CHECK_EQ_INT(add(s, &a5, &k, T + 1), ERR_RANGE);       /* older record cannot resurrect it */
	CHECK_EQ_INT(ann_store_collect(s, T + 1, out, 4), 1);
	CHECK_OK(add(s, &a7, &k, T + 2));                      /* restarted: higher sequence */
	CHECK_EQ_INT(ann_store_collect(s, T + 2, out, 4), 2);
	ann_store_free(s);

	/* The tombstone arrives first (values come in any order). */
	s = store_make(16);
	CHECK_OK(add(s, &t6, &k, T + 1));
	CHECK_EQ_INT(add(s, &a5, &k, T + 1), ERR_RANGE);
	CHECK_EQ_INT(ann_store_collect(s, T + 1, out, 4), 0);
	CHECK_EQ_INT(ann_store_count(s), 1);                   /* the tombstone is kept */
	ann_store_prune(s, T + 1 + 3000 + 1);                   /* until it is stale */
	CHECK_EQ_INT(ann_store_count(s), 0);
	/* A tombstone for another model (copied under this key) is refused. */
	ann_t t_other = tomb(&k, T + 1, 99);
	model_make(t_other.model_id, 2);
	CHECK_EQ_INT(add(s, &t_other, &k, T + 1), ERR_RANGE);
	CHECK(ann_store_stats(s)->wrong_scope == 1);
	ann_store_free(s);
}

static void test_store_freshness(void)
{
	const uint64_t T = 1700000000000ull;
	key_t_ k, j;
	key_make(&k, 13);
	key_make(&j, 14);
	ann_store_t *s = store_make(16);   /* stale 3000, skew 1000 */
	ann_t out[4];
	ann_t a = shard(&k, T, 1);
	CHECK_OK(add(s, &a, &k, T + 100));
	CHECK_EQ_INT(ann_store_collect(s, T + 3000, out, 4), 1);
	CHECK_EQ_INT(ann_store_collect(s, T + 3001, out, 4), 0);   /* stale: no longer listed */
	CHECK_EQ_INT(ann_store_count(s), 1);
	ann_store_prune(s, T + 3001);
	CHECK_EQ_INT(ann_store_count(s), 0);
	/* Already stale on arrival. */
	CHECK_EQ_INT(add(s, &a, &k, T + 3001), ERR_RANGE);
	CHECK(ann_store_stats(s)->stale == 1);
	/* From the future: within the tolerance it counts, beyond it not. */
	ann_t f = shard(&j, T + 1000, 1);
	CHECK_OK(add(s, &f, &j, T));
	ann_t g = shard(&k, T + 1001, 2);
	CHECK_EQ_INT(add(s, &g, &k, T), ERR_RANGE);
	CHECK(ann_store_stats(s)->future == 1);
	ann_store_free(s);
	/* Bad configurations. */
	ann_store_cfg_t c = { .network = NET, .stale_ms = 0, .max_nodes = 1 };
	CHECK_EQ_INT(ann_store_new(&c, &s), ERR_INVAL);
	c.stale_ms = 1;
	c.max_nodes = 0;
	CHECK_EQ_INT(ann_store_new(&c, &s), ERR_INVAL);
}

static void test_store_caps_and_order(void)
{
	const uint64_t T = 1700000000000ull;
	enum { N = 40 };
	static key_t_ ks[N];
	for (int i = 0; i < N; i++)
		key_make(&ks[i], 100 + i);
	/* Per key: 4 nodes at most. */
	ann_store_t *s = store_make(4);
	ann_t out[N];
	for (int i = 0; i < 4; i++) {
		ann_t a = shard(&ks[i], T + (uint64_t)i, 1);
		CHECK_OK(add(s, &a, &ks[i], T + 10));
	}
	size_t full_bytes = ann_store_bytes(s);
	ann_t newer = shard(&ks[4], T + 5, 1);
	CHECK_OK(add(s, &newer, &ks[4], T + 10));                 /* evicts the oldest (ks[0]) */
	CHECK(ann_store_stats(s)->evicted == 1);
	ann_t older = shard(&ks[5], T, 1);
	CHECK_EQ_INT(add(s, &older, &ks[5], T + 10), ERR_FULL);   /* older than every kept one */
	CHECK_EQ_INT(ann_store_count(s), 4);
	CHECK_EQ_INT(ann_store_collect(s, T + 10, out, N), 4);
	for (int i = 0; i < 4; i++)
		CHECK(memcmp(out[i].node_id, ks[0].pk, 32) != 0);
	/* Once entries go stale they make room without eviction. */
	ann_t late = shard(&ks[6], T + 3500, 1);
	CHECK_OK(add(s, &late, &ks[6], T + 3500));
	CHECK(ann_store_stats(s)->evicted == 1);
	CHECK(ann_store_bytes(s) == full_bytes);                  /* never grew past the cap */
	ann_store_free(s);

	/* Per node: one record kept, however many sequences arrive. */
	s = store_make(8);
	for (int q = 1; q <= 200; q++) {
		ann_t a = shard(&ks[7], T + (uint64_t)q, (uint64_t)q);
		CHECK_OK(add(s, &a, &ks[7], T + 200));
	}
	CHECK_EQ_INT(ann_store_count(s), 1);
	ann_store_free(s);

	/* Spam: many nodes, many records, memory stays at the cap. */
	s = store_make(16);
	for (int r = 0; r < 3; r++)
		for (int i = 0; i < N; i++) {
			ann_t a = shard(&ks[i], T + (uint64_t)(r * 100 + i), (uint64_t)(r + 1));
			int rc = add(s, &a, &ks[i], T + 400);
			CHECK(rc == 0 || rc == ERR_FULL);
		}
	CHECK_EQ_INT(ann_store_count(s), 16);
	CHECK(ann_store_bytes(s) <= 16 * sizeof(ann_t) + 256);
	ann_store_free(s);

	/* Deterministic order: by node id, whatever the arrival order. */
	ann_store_t *s1 = store_make(N), *s2 = store_make(N);
	for (int i = 0; i < N; i++) {
		ann_t a = shard(&ks[i], T, 1), b = shard(&ks[N - 1 - i], T, 1);
		CHECK_OK(add(s1, &a, &ks[i], T));
		CHECK_OK(add(s2, &b, &ks[N - 1 - i], T));
	}
	ann_t o2[N];
	CHECK_EQ_INT(ann_store_collect(s1, T, out, N), N);
	CHECK_EQ_INT(ann_store_collect(s2, T, o2, N), N);
	CHECK(memcmp(out, o2, sizeof(out)) == 0);
	for (int i = 1; i < N; i++)
		CHECK(memcmp(out[i - 1].node_id, out[i].node_id, 32) < 0);
	/* A short output buffer still reports the full count. */
	CHECK_EQ_INT(ann_store_collect(s1, T, out, 3), N);
	CHECK_EQ_INT(ann_store_collect(s1, T, NULL, 0), N);
	ann_store_free(s1);
	ann_store_free(s2);
	ann_store_free(NULL);
}

static void test_store_scope(void)
{
	const uint64_t T = 1700000000000ull;
	key_t_ k;
	key_make(&k, 15);
	ann_store_t *s = store_make(8);
	ann_t a = shard(&k, T, 1);
	model_make(a.model_id, 9);                 /* another model's record */
	CHECK_EQ_INT(add(s, &a, &k, T), ERR_RANGE);
	a = shard(&k, T, 1);                       /* this model, another network */
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = enc(&a, &k, NET ^ 1, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, T, NULL), ERR_FORMAT);
	CHECK_EQ_INT(ann_store_add(s, buf, 10, T, NULL), ERR_TRUNCATED);
	const ann_store_stats_t *st = ann_store_stats(s);
	CHECK(st->wrong_scope == 1 && st->bad_sig == 1 && st->malformed == 1 && st->accepted == 0);
	CHECK_EQ_INT(ann_store_count(s), 0);
	ann_store_free(s);
}

static void test_addr_str(void)
{
	ann_addr_t a;
	char s[64];
	uint8_t v4[4] = { 127, 0, 0, 1 };
	uint8_t v6[16] = { [15] = 1 };
	ann_addr_set(&a, 4, v4, 80);
	CHECK(strcmp(ann_addr_str(&a, s, sizeof(s)), "127.0.0.1:80") == 0);
	ann_addr_set(&a, 6, v6, 443);
	CHECK(strcmp(ann_addr_str(&a, s, sizeof(s)), "[::1]:443") == 0);
}

/* ---- skill records (kinds 3 and 4) -------------------------------------- */

static ann_t skill(const key_t_ *k, const char *name, const char *desc, uint64_t ts, uint64_t seq)
{
	ann_t a;
	memset(&a, 0, sizeof(a));
	a.kind = ANN_SKILL;
	memcpy(a.node_id, k->pk, 32);
	a.timestamp_ms = ts;
	a.seq = seq;
	ann_skill_id(name, a.model_id);
	model_make(a.skill_model, 1);
	a.fee_call = 2500;
	a.price_out = 1000000;
	a.n_addrs = 1;
	uint8_t v4[4] = { 127, 0, 0, 1 };
	ann_addr_set(&a.addrs[0], 4, v4, 8080);
	snprintf(a.skill_name, sizeof(a.skill_name), "%s", name);
	snprintf(a.skill_desc, sizeof(a.skill_desc), "%s", desc);
	return a;
}

static void test_skill_record(void)
{
	key_t_ k, other;
	key_make(&k, 21);
	key_make(&other, 22);
	const uint64_t T = 1700000000000ull;
	ann_t a = skill(&k, "story", "Short stories for children \xc3\xa9t\xc3\xa9", T, 5), b;
	memset(a.skill_wallet, 0xa7, sizeof(a.skill_wallet));
	uint8_t buf[1024];
	size_t len = enc(&a, &k, NET, buf);
	size_t dl = strlen(a.skill_desc);
	/* head, model 32, fee 8, price 8, wallet 32, 1 v4 address 1+7, name 1+5, description 1+dl, signature */
	CHECK_EQ_INT(len, 88 + 32 + 16 + 32 + 8 + 6 + 1 + dl + 64);
	CHECK_EQ_INT(buf[5], ANN_SKILL);
	uint8_t id[32], want[32];
	ann_skill_id("story", id);
	crypto_generichash(want, 32, (const uint8_t *)"colony-skill:story", 18, NULL, 0);
	CHECK(memcmp(id, want, 32) == 0 && memcmp(buf + 56, want, 32) == 0);
	CHECK(rd64(buf + 120) == 2500 && rd64(buf + 128) == 1000000);
	CHECK(buf[136] == 0xa7 && buf[167] == 0xa7);
	err_msg_t e = { "" };
	CHECK_OK(ann_decode(buf, len, NET, &b, &e));
	CHECK(memcmp(&a, &b, sizeof(a)) == 0);

	/* forged: any byte changed, another network, another key */
	for (size_t i = 88; i < len - 64; i++) {
		buf[i] ^= 0x20;
		CHECK(ann_decode(buf, len, NET, &b, NULL) != 0);
		buf[i] ^= 0x20;
	}
	CHECK_EQ_INT(ann_decode(buf, len, NET ^ 1, &b, NULL), ERR_FORMAT);
	resign(buf, len, &other, NET);                          /* signed by a key not its node id */
	CHECK_EQ_INT(ann_decode(buf, len, NET, &b, NULL), ERR_FORMAT);
	len = enc(&a, &k, NET, buf);

	/* copied under another skill's key: a valid signature, the wrong scope */
	ann_skill_id("poem", buf + 56);
	resign(buf, len, &k, NET);
	CHECK_EQ_INT(ann_decode(buf, len, NET, &b, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "scope") != NULL);
	len = enc(&a, &k, NET, buf);

	/* the description: invalid UTF-8 or a control character, even when signed */
	size_t doff = len - 64 - dl;
	buf[doff] = 0xc3;
	buf[doff + 1] = 0x28;
	resign(buf, len, &k, NET);
	CHECK_EQ_INT(ann_decode(buf, len, NET, &b, NULL), ERR_FORMAT);
	len = enc(&a, &k, NET, buf);
	buf[doff] = '\n';
	resign(buf, len, &k, NET);
	CHECK_EQ_INT(ann_decode(buf, len, NET, &b, NULL), ERR_FORMAT);

	/* oversized: a description over the bound, by the encoder and by hand */
	char big[ANN_MAX_SKILL_DESC + 2];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	ann_t c = skill(&k, "story", "", T, 6);
	memcpy(c.skill_desc, big, ANN_MAX_SKILL_DESC);      /* exactly at the bound: fine */
	c.skill_desc[ANN_MAX_SKILL_DESC] = 0;
	len = enc(&c, &k, NET, buf);
	CHECK(len <= ANN_MAX_SIZE);
	/* one byte more, length byte 201, re-signed: refused for its field */
	size_t lenpos = len - 64 - ANN_MAX_SKILL_DESC - 1;
	CHECK_EQ_INT(buf[lenpos], ANN_MAX_SKILL_DESC);
	memmove(buf + len - 64 + 1, buf + len - 64, 64);
	buf[len - 64] = 'x';
	buf[lenpos] = ANN_MAX_SKILL_DESC + 1;
	resign(buf, len + 1, &k, NET);
	CHECK_EQ_INT(ann_decode(buf, len + 1, NET, &b, &e), ERR_RANGE);
	/* anything over ANN_MAX_SIZE is refused before parsing */
	uint8_t huge[ANN_MAX_SIZE + 1] = { 'C', 'L', 'N', 'Y', 1, ANN_SKILL };
	CHECK_EQ_INT(ann_decode(huge, sizeof(huge), NET, &b, NULL), ERR_FORMAT);

	/* the encoder refuses what the decoder would */
	uint8_t out[1024];
	size_t l2;
	ann_t d = a;
	strcpy(d.skill_desc, big);   /* 201 bytes into a 201-byte field: no NUL within the bound */
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = a;
	d.fee_call = -1;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = a;
	strcpy(d.skill_name, "Story");   /* upper case: also a scope mismatch, the name is checked first */
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_FORMAT);
	d = a;
	strcpy(d.skill_name, "poem");    /* scope of "story" */
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_FORMAT);
	CHECK_EQ_INT(ann_skill_name_check("a-b.c_9", NULL), 0);
	CHECK_EQ_INT(ann_skill_name_check("-ab", NULL), ERR_FORMAT);
	CHECK_EQ_INT(ann_skill_name_check("", NULL), ERR_RANGE);
	CHECK_EQ_INT(ann_skill_name_check("abcdefghijabcdefghijabcdefghijabc", NULL), ERR_RANGE);   /* 33 */
}

static void test_skill_index_and_store(void)
{
	key_t_ k, k2;
	key_make(&k, 23);
	key_make(&k2, 24);
	const uint64_t T = 1700000000000ull;
	ann_t x;
	memset(&x, 0, sizeof(x));
	x.kind = ANN_SKILL_INDEX;
	memcpy(x.node_id, k.pk, 32);
	x.timestamp_ms = T;
	x.seq = 1;
	ann_skill_index_id(x.model_id);
	x.n_skills = 2;
	strcpy(x.skills[0], "story");
	strcpy(x.skills[1], "poem");
	uint8_t buf[1024], out[1024];
	size_t len = enc(&x, &k, NET, buf), l2;
	CHECK_EQ_INT(len, 88 + 1 + 6 + 5 + 64);
	ann_t b;
	CHECK_OK(ann_decode(buf, len, NET, &b, NULL));
	CHECK(memcmp(&x, &b, sizeof(x)) == 0);
	ann_t d = x;
	strcpy(d.skills[1], "story");
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_FORMAT);   /* a name twice */
	d = x;
	d.n_skills = ANN_MAX_SKILLS + 1;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_RANGE);
	d = x;
	model_make(d.model_id, 1);      /* an index record under a model's key */
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, out, sizeof(out), &l2, NULL), ERR_FORMAT);
	buf[88] = ANN_MAX_SKILLS + 1;   /* count over the bound, re-signed */
	resign(buf, len, &k, NET);
	CHECK(ann_decode(buf, len, NET, &b, NULL) != 0);

	/* A store under a skill's key lists its offers; a model's store refuses them. */
	ann_store_cfg_t c = { .network = NET, .stale_ms = 3000, .skew_ms = 1000, .max_nodes = 4 };
	ann_skill_id("story", c.model_id);
	ann_store_t *s = NULL;
	REQUIRE(ann_store_new(&c, &s) == 0);
	ann_t a1 = skill(&k, "story", "one", T, 1), a2 = skill(&k2, "story", "two", T, 1);
	CHECK_OK(add(s, &a1, &k, T));
	CHECK_OK(add(s, &a2, &k2, T));
	ann_t got[4];
	CHECK_EQ_INT(ann_store_collect(s, T, got, 4), 2);
	CHECK(got[0].kind == ANN_SKILL && got[1].kind == ANN_SKILL);
	/* forged (another key signs a record naming k's id): refused, k's offer kept */
	ann_t f = skill(&k, "story", "forged", T, 9);
	len = enc(&f, &k, NET, buf);
	resign(buf, len, &k2, NET);
	CHECK_EQ_INT(ann_store_add(s, buf, len, T, NULL), ERR_FORMAT);
	/* oversized value: refused before parsing */
	uint8_t huge[ANN_MAX_SIZE + 100];
	memset(huge, 0, sizeof(huge));
	memcpy(huge, buf, len);
	CHECK(ann_store_add(s, huge, sizeof(huge), T, NULL) != 0);
	/* replay of an older sequence, then stale */
	CHECK_EQ_INT(add(s, &a1, &k, T), ERR_RANGE);
	CHECK_EQ_INT(ann_store_collect(s, T + 3001, got, 4), 0);
	CHECK_EQ_INT(ann_store_collect(s, T + 10, got, 4), 2);
	CHECK(strcmp(got[0].skill_desc, "one") == 0 || strcmp(got[1].skill_desc, "one") == 0);
	const ann_store_stats_t *st = ann_store_stats(s);
	CHECK(st->accepted == 2 && st->bad_sig == 1 && st->replay == 1 && st->malformed == 1);
	ann_store_free(s);
	s = store_make(4);              /* a model's key */
	CHECK_EQ_INT(add(s, &a1, &k, T), ERR_RANGE);
	ann_store_free(s);
}

TEST_MAIN(test_roundtrip_and_layout, test_every_truncation, test_every_bound, test_signatures,
	test_time_rules, test_store_latest_and_replay, test_store_tombstones, test_store_freshness,
	test_store_caps_and_order, test_store_scope, test_addr_str, test_skill_record, test_skill_index_and_store)
