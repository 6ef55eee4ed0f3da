/* test_frame.c - encrypted frames: round trips, chunked feeding at every
 * split point, oversize and undersize lengths refused before buffering,
 * bad MACs anywhere, replays, nonce exhaustion, rekeying in step, and the
 * receive buffer released after big frames. */
#include <stdint.h>
#include <stdlib.h>

#include <sodium.h>

#include "net/frame.h"
#include "test.h"

/* Two channels wired to each other: a sends with k1 and b receives with
 * it; b sends with k2. */
static void pair(frame_chan_t *a, frame_chan_t *b)
{
	uint8_t k1[32], k2[32];
	randombytes_buf(k1, 32);
	randombytes_buf(k2, 32);
	noise_cipher_t at, ar, bt, br;
	noise_cipher_init(&at, k1);
	noise_cipher_init(&ar, k2);
	noise_cipher_init(&bt, k2);
	noise_cipher_init(&br, k1);
	frame_init(a, &at, &ar);
	frame_init(b, &bt, &br);
	/* frame_init takes the keys: the sources are wiped */
	CHECK(!noise_cipher_has_key(&at) && !noise_cipher_has_key(&br));
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

/* Feeds in[0..n) in one call sequence, collecting frames into a list of
 * (offset into out, length). Returns the number of frames or -rc. */
static int feed_all(frame_chan_t *f, const uint8_t *in, size_t n, uint8_t *out, size_t *lens, int max_frames,
	size_t *outpos, err_msg_t *e)
{
	int frames = 0;
	while (n > 0) {
		size_t used = 0, pl = 0;
		const uint8_t *p = NULL;
		int rc = frame_feed(f, in, n, &used, &p, &pl, e);
		if (rc)
			return rc;
		if (used == 0 && !p)
			return -100;   /* no progress: a decoder bug */
		in += used;
		n -= used;
		if (p) {
			if (frames >= max_frames)
				return -101;
			memcpy(out + *outpos, p, pl);
			*outpos += pl;
			lens[frames++] = pl;
		}
	}
	return frames;
}

static void test_roundtrip(void)
{
	frame_chan_t a, b;
	pair(&a, &b);
	const size_t sizes[] = { 0, 1, 15, 16, 17, 100, 4096, 65535, 65536, 300000, FRAME_MAX_PLAIN };
	uint8_t *pt = malloc(FRAME_MAX_PLAIN), *wire = malloc(frame_wire_size(FRAME_MAX_PLAIN)),
		*got = malloc(FRAME_MAX_PLAIN);
	REQUIRE(pt && wire && got);
	err_msg_t e = { "" };
	for (int dir = 0; dir < 2; dir++) {
		frame_chan_t *s = dir ? &b : &a, *r = dir ? &a : &b;
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			fill(pt, sizes[i], (unsigned)i);
			size_t wn = 0;
			REQUIRE(frame_encode(s, pt, sizes[i], wire, frame_wire_size(sizes[i]), &wn, &e) == 0);
			CHECK_EQ_INT(wn, frame_wire_size(sizes[i]));
			/* the header is L = plaintext + tag, little-endian */
			uint32_t L = wire[0] | wire[1] << 8 | wire[2] << 16 | (uint32_t)wire[3] << 24;
			CHECK_EQ_INT(L, sizes[i] + 16);
			size_t lens[2], pos = 0;
			int n = feed_all(r, wire, wn, got, lens, 2, &pos, &e);
			CHECK_EQ_INT(n, 1);
			CHECK_EQ_INT(lens[0], sizes[i]);
			CHECK(memcmp(got, pt, sizes[i]) == 0);
		}
	}
	CHECK_EQ_INT(a.frames_sent, 11);
	CHECK_EQ_INT(b.frames_received, 11);
	/* encrypting in place: plaintext already at out + FRAME_HDR */
	fill(wire + FRAME_HDR, 500, 9);
	memcpy(pt, wire + FRAME_HDR, 500);
	size_t wn = 0, lens[1], pos = 0;
	CHECK_OK(frame_encode(&a, wire + FRAME_HDR, 500, wire, frame_wire_size(500), &wn, &e));
	CHECK_EQ_INT(feed_all(&b, wire, wn, got, lens, 1, &pos, &e), 1);
	CHECK(memcmp(got, pt, 500) == 0);
	/* a too-large frame is refused by the sender without harm */
	CHECK_EQ_INT(frame_encode(&a, pt, FRAME_MAX_PLAIN + 1, wire, frame_wire_size(FRAME_MAX_PLAIN), &wn, &e), ERR_RANGE);
	CHECK_EQ_INT(frame_encode(&a, pt, 10, wire, 29, &wn, &e), ERR_FULL);
	CHECK_OK(frame_encode(&a, pt, 10, wire, 30, &wn, &e));
	free(pt);
	free(wire);
	free(got);
	frame_close(&a);
	frame_close(&b);
}

/* A stream of three frames, fed in two parts at every split point, then in
 * three parts at every pair of points, then byte by byte. */
static void test_chunked_every_split(void)
{
	const size_t sizes[] = { 0, 5, 100 };
	uint8_t pt[200], stream[400], got[400];
	size_t total = 0;
	for (size_t i = 0; i < 3; i++)
		total += frame_wire_size(sizes[i]);
	err_msg_t e = { "" };
	for (size_t s1 = 0; s1 <= total; s1++) {
		for (size_t s2 = s1; s2 <= total; s2 += (s1 % 13 == 0 ? 1 : total)) {
			frame_chan_t a, b;
			pair(&a, &b);
			size_t wn = 0;
			for (size_t i = 0; i < 3; i++) {
				size_t n = 0;
				fill(pt, sizes[i], (unsigned)i);
				REQUIRE(frame_encode(&a, pt, sizes[i], stream + wn, sizeof(stream) - wn, &n, &e) == 0);
				wn += n;
			}
			REQUIRE(wn == total);
			size_t lens[3], pos = 0;
			int n1 = feed_all(&b, stream, s1, got, lens, 3, &pos, &e);
			int n2 = feed_all(&b, stream + s1, s2 - s1, got, lens + (n1 > 0 ? n1 : 0), 3, &pos, &e);
			int n3 = feed_all(&b, stream + s2, total - s2, got, lens + (n1 > 0 ? n1 : 0) + (n2 > 0 ? n2 : 0),
				3, &pos, &e);
			REQUIRE(n1 >= 0 && n2 >= 0 && n3 >= 0);
			CHECK_EQ_INT(n1 + n2 + n3, 3);
			size_t off = 0;
			for (size_t i = 0; i < 3; i++) {
				fill(pt, sizes[i], (unsigned)i);
				CHECK_EQ_INT(lens[i], sizes[i]);
				CHECK(memcmp(got + off, pt, sizes[i]) == 0);
				off += sizes[i];
			}
			frame_close(&a);
			frame_close(&b);
		}
	}
	/* byte by byte */
	frame_chan_t a, b;
	pair(&a, &b);
	size_t wn = 0;
	for (size_t i = 0; i < 3; i++) {
		size_t n = 0;
		fill(pt, sizes[i], (unsigned)i);
		REQUIRE(frame_encode(&a, pt, sizes[i], stream + wn, sizeof(stream) - wn, &n, &e) == 0);
		wn += n;
	}
	int frames = 0;
	for (size_t i = 0; i < wn; i++) {
		size_t used = 0, pl = 0;
		const uint8_t *p = NULL;
		REQUIRE(frame_feed(&b, stream + i, 1, &used, &p, &pl, &e) == 0);
		CHECK_EQ_INT(used, 1);
		if (p) {
			CHECK_EQ_INT(pl, sizes[frames]);
			frames++;
		}
	}
	CHECK_EQ_INT(frames, 3);
	frame_close(&a);
	frame_close(&b);
}

static void test_length_limits(void)
{
	err_msg_t e = { "" };
	const struct {
		uint32_t len;
		int rc;
	} cases[] = {
		{ 0, ERR_FORMAT }, { 1, ERR_FORMAT }, { 15, ERR_FORMAT },
		{ FRAME_MAX_PLAIN + 17, ERR_RANGE }, { 0x7fffffff, ERR_RANGE }, { 0xffffffff, ERR_RANGE },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		frame_chan_t a, b;
		pair(&a, &b);
		uint8_t hdr[4] = { (uint8_t)cases[i].len, (uint8_t)(cases[i].len >> 8), (uint8_t)(cases[i].len >> 16),
			(uint8_t)(cases[i].len >> 24) };
		size_t used = 0, pl = 0;
		const uint8_t *p = NULL;
		/* the verdict comes with the 4th header byte, before any body */
		CHECK_OK(frame_feed(&b, hdr, 3, &used, &p, &pl, &e));
		CHECK_EQ_INT(frame_feed(&b, hdr + 3, 1, &used, &p, &pl, &e), cases[i].rc);
		CHECK(p == NULL);
		CHECK_EQ_INT(frame_buffered(&b), 0);
		CHECK(e.msg[0] != 0);
		/* dead for good */
		CHECK_EQ_INT(frame_feed(&b, hdr, 4, &used, &p, &pl, &e), ERR_INVAL);
		frame_close(&a);
		frame_close(&b);
	}
	/* exactly the maximum is fine, and a lower configured maximum applies */
	frame_chan_t a, b;
	pair(&a, &b);
	CHECK_EQ_INT(frame_set_max(&b, 0), ERR_RANGE);
	CHECK_EQ_INT(frame_set_max(&b, FRAME_MAX_PLAIN_LIMIT + 1), ERR_RANGE);
	CHECK_OK(frame_set_max(&b, 1000));
	uint8_t hdr[4] = { (1016) & 255, 1016 >> 8, 0, 0 };
	size_t used = 0, pl = 0;
	const uint8_t *p = NULL;
	CHECK_OK(frame_feed(&b, hdr, 4, &used, &p, &pl, &e));
	CHECK_EQ_INT(frame_buffered(&b), 1016);
	frame_close(&a);
	frame_close(&b);
	pair(&a, &b);
	CHECK_OK(frame_set_max(&b, 1000));
	hdr[0] = 1017 & 255;
	CHECK_EQ_INT(frame_feed(&b, hdr, 4, &used, &p, &pl, &e), ERR_RANGE);
	frame_close(&a);
	frame_close(&b);
}

static void test_bad_mac_anywhere(void)
{
	err_msg_t e = { "" };
	uint8_t pt[64], wire[200];
	fill(pt, sizeof(pt), 3);
	static uint8_t padded[70000 + 200];
	size_t wn = frame_wire_size(sizeof(pt));
	for (size_t i = 0; i < wn; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			frame_chan_t a, b;
			pair(&a, &b);
			size_t n;
			REQUIRE(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e) == 0);
			wire[i] ^= (uint8_t)(1 << bit);
			/* trailing zeros so that a grown length still completes */
			memset(padded, 0, sizeof(padded));
			memcpy(padded, wire, n);
			size_t lens[2], pos = 0;
			static uint8_t got[70000 + 200];
			int rc = feed_all(&b, padded, sizeof(padded), got, lens, 2, &pos, &e);
			CHECK(rc == ERR_FORMAT || rc == ERR_RANGE);
			CHECK_EQ_INT(pos, 0);   /* no plaintext delivered */
			CHECK_EQ_INT(b.frames_received, 0);
			frame_close(&a);
			frame_close(&b);
		}
	}
	/* a replayed frame is refused (the nonce moved on) */
	frame_chan_t a, b;
	pair(&a, &b);
	size_t n, lens[2], pos = 0;
	uint8_t got[200];
	REQUIRE(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e) == 0);
	CHECK_EQ_INT(feed_all(&b, wire, n, got, lens, 2, &pos, &e), 1);
	CHECK_EQ_INT(feed_all(&b, wire, n, got, lens, 2, &pos, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "authentication failed") != NULL);
	frame_close(&a);
	frame_close(&b);
	/* and a frame from the other direction (reflected) too */
	pair(&a, &b);
	REQUIRE(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e) == 0);
	pos = 0;
	CHECK_EQ_INT(feed_all(&a, wire, n, got, lens, 2, &pos, &e), ERR_FORMAT);
	frame_close(&a);
	frame_close(&b);
}

static void test_nonce_exhaustion(void)
{
	frame_chan_t a, b;
	pair(&a, &b);
	err_msg_t e = { "" };
	uint8_t pt[10] = "last ones", wire[64], got[64];
	size_t n, lens[2], pos = 0;
	/* the test hook: jump both ends near the end of the nonce space */
	noise_cipher_set_nonce(&a.tx, NOISE_NONCE_MAX - 1);
	noise_cipher_set_nonce(&b.rx, NOISE_NONCE_MAX - 1);
	REQUIRE(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e) == 0);
	CHECK_EQ_INT(feed_all(&b, wire, n, got, lens, 2, &pos, &e), 1);
	CHECK_EQ_INT(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e), ERR_RANGE);
	CHECK(strstr(e.msg, "exhausted") != NULL);
	CHECK_EQ_INT(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e), ERR_INVAL);
	frame_close(&a);
	frame_close(&b);
	/* the receiving side refuses at the limit as well */
	pair(&a, &b);
	noise_cipher_set_nonce(&a.tx, NOISE_NONCE_MAX - 2);
	noise_cipher_set_nonce(&b.rx, NOISE_NONCE_MAX);
	REQUIRE(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e) == 0);
	pos = 0;
	CHECK_EQ_INT(feed_all(&b, wire, n, got, lens, 2, &pos, &e), ERR_RANGE);
	frame_close(&a);
	frame_close(&b);
}

static void test_rekey_in_step(void)
{
	err_msg_t e = { "" };
	uint8_t pt[50], wire[128], got[128];
	for (int variant = 0; variant < 3; variant++) {
		frame_chan_t a, b;
		pair(&a, &b);
		uint8_t k0[32];
		memcpy(k0, a.tx.k, 32);
		if (variant == 0) {   /* both every 3 frames */
			frame_set_rekey(&a, 3, 0);
			frame_set_rekey(&b, 3, 0);
		} else if (variant == 1) {   /* both every 120 bytes */
			frame_set_rekey(&a, 0, 120);
			frame_set_rekey(&b, 0, 120);
		} else {   /* disagreeing ends: the receiver never rekeys */
			frame_set_rekey(&a, 3, 0);
			frame_set_rekey(&b, 0, 0);
		}
		int failed_at = -1;
		for (int i = 0; i < 20; i++) {
			size_t n, lens[1], pos = 0;
			fill(pt, sizeof(pt), (unsigned)i);
			REQUIRE(frame_encode(&a, pt, sizeof(pt), wire, sizeof(wire), &n, &e) == 0);
			int r = feed_all(&b, wire, n, got, lens, 1, &pos, &e);
			if (r != 1) {
				failed_at = i;
				break;
			}
			CHECK(memcmp(got, pt, sizeof(pt)) == 0);
		}
		CHECK(memcmp(a.tx.k, k0, 32) != 0);   /* the key did change */
		CHECK_EQ_INT(failed_at, variant == 2 ? 3 : -1);
		frame_close(&a);
		frame_close(&b);
	}
}

static void test_buffer_released(void)
{
	frame_chan_t a, b;
	pair(&a, &b);
	err_msg_t e = { "" };
	size_t big = 200000;
	uint8_t *pt = malloc(big), *wire = malloc(frame_wire_size(big));
	REQUIRE(pt && wire);
	fill(pt, big, 1);
	size_t n, used, pl;
	const uint8_t *p;
	REQUIRE(frame_encode(&a, pt, big, wire, frame_wire_size(big), &n, &e) == 0);
	REQUIRE(frame_feed(&b, wire, n, &used, &p, &pl, &e) == 0 && p && pl == big);
	CHECK(frame_buffered(&b) >= big);
	/* the next call (even with no bytes) takes the plaintext back */
	CHECK_OK(frame_feed(&b, wire, 0, &used, &p, &pl, &e));
	CHECK_EQ_INT(frame_buffered(&b), 0);
	/* small frames keep a small buffer */
	REQUIRE(frame_encode(&a, pt, 100, wire, frame_wire_size(100), &n, &e) == 0);
	REQUIRE(frame_feed(&b, wire, n, &used, &p, &pl, &e) == 0 && p && pl == 100);
	CHECK_OK(frame_feed(&b, wire, 0, &used, &p, &pl, &e));
	CHECK_EQ_INT(frame_buffered(&b), 116);
	free(pt);
	free(wire);
	frame_close(&a);
	frame_close(&b);
}

TEST_MAIN(test_roundtrip, test_chunked_every_split, test_length_limits, test_bad_mac_anywhere,
	test_nonce_exhaustion, test_rekey_in_step, test_buffer_released)
