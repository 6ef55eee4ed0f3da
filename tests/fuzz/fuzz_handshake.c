/* fuzz_handshake.c - libFuzzer target for colony's XX handshake.
 *
 * Byte 0 picks the scenario, byte 1 the chunk-size seed:
 *   0 a responder fed the input as its peer's bytes;
 *   1 an initiator that sent message 1, then fed the input;
 *   2 an honest pair whose messages in flight are XORed with the input
 *     (message 1 with the first bytes, then 2, then 3);
 *   3 an honest pair, then the input fed to the responder after message 1
 *     in place of the real message 3.
 * Checked: no crash, every error comes with a message and is final, a side
 * that completes has the id of a node whose key signed (nobody completes as
 * anyone else), and when both complete their keys agree.
 *
 * Randomness (ephemeral keys) comes from a deterministic generator reset for
 * every input, so a crash replays. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "net/noise_xx.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_handshake: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

#define NET "fuzz-net"

/* ---- deterministic randombytes for the harness ---- */
static uint64_t rs_state;
static const char *rs_name(void) { return "fuzz"; }
static uint32_t rs_random(void)
{
	rs_state = rs_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(rs_state >> 32);
}
static void rs_stir(void) {}
static uint32_t rs_uniform(const uint32_t upper) { return upper ? rs_random() % upper : 0; }
static void rs_buf(void *const buf, const size_t size)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < size; i++)
		p[i] = (uint8_t)(rs_random() >> 24);
}
static struct randombytes_implementation rs_impl = {
	.implementation_name = rs_name, .random = rs_random, .stir = rs_stir,
	.uniform = rs_uniform, .buf = rs_buf, .close = NULL,
};

static ident_t *ida, *idb;

static void setup(void)
{
	if (ida)
		return;
	randombytes_set_implementation(&rs_impl);
	if (sodium_init() < 0)
		abort();
	uint8_t sa[32], sb[32];
	memset(sa, 0xa1, 32);
	memset(sb, 0xb2, 32);
	FUZZ_ASSERT(ident_new(sa, &ida) == 0 && ident_new(sb, &idb) == 0);
}

static uint32_t rng(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Feeds in[0..n) to x in chunks; collects output into out (appending at
 * *olen). Returns the first error or 0. */
static int feed(noise_xx_t *x, const uint8_t *in, size_t n, uint32_t *seed, uint8_t *out, size_t *olen, size_t *fed)
{
	err_msg_t e = { "" };
	*fed = 0;
	while (n > 0 && !noise_xx_done(x)) {
		size_t chunk = 1 + rng(seed) % (n < 64 ? n : 64);
		size_t used = 0, ol = 0;
		uint8_t o[NOISE_XX_OUT_MAX];
		int rc = noise_xx_step(x, in, chunk, &used, o, sizeof(o), &ol, &e);
		FUZZ_ASSERT(used <= chunk);
		if (rc) {
			FUZZ_ASSERT(rc < 0 && e.msg[0]);
			FUZZ_ASSERT(ol == 0);
			FUZZ_ASSERT(noise_xx_failed(x) && !noise_xx_done(x));
			FUZZ_ASSERT(noise_xx_step(x, in, chunk, &used, o, sizeof(o), &ol, &e) == ERR_INVAL);
			FUZZ_ASSERT(noise_xx_peer_id(x) == NULL);
			return rc;
		}
		FUZZ_ASSERT(used > 0 || ol > 0 || noise_xx_done(x));
		if (out && ol) {
			memcpy(out + *olen, o, ol);
			*olen += ol;
		}
		in += used;
		n -= used;
		*fed += used;
	}
	return 0;
}

/* Only ida and idb hold signing keys here: a side that completes with any
 * other peer id was fooled by a forgery. (Completing at all is possible:
 * randomness is deterministic, so a recorded transcript replays.) */
static void check_done(noise_xx_t *x)
{
	if (!noise_xx_done(x))
		return;
	const uint8_t *p = noise_xx_peer_id(x);
	FUZZ_ASSERT(p != NULL);
	FUZZ_ASSERT(memcmp(p, ident_pub(ida), IDENT_PUBLEN) == 0 || memcmp(p, ident_pub(idb), IDENT_PUBLEN) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup();
	if (size < 2)
		return 0;
	rs_state = 0x1234567u;
	int mode = data[0] & 3;
	uint32_t seed = data[1] | 0x100u;
	data += 2;
	size -= 2;
	err_msg_t e = { "" };
	noise_xx_t *xi = NULL, *xr = NULL;
	FUZZ_ASSERT(noise_xx_new(ida, NET, 1, &xi, &e) == 0);
	FUZZ_ASSERT(noise_xx_new(idb, NET, 0, &xr, &e) == 0);
	uint8_t m1[NOISE_XX_OUT_MAX], m2[4 * NOISE_XX_OUT_MAX], m3[4 * NOISE_XX_OUT_MAX];
	size_t n1 = 0, n2 = 0, n3 = 0, used = 0, fed = 0;
	FUZZ_ASSERT(noise_xx_step(xi, NULL, 0, &used, m1, sizeof(m1), &n1, &e) == 0 && n1 == 2 + NOISE_XX_MSG1);

	if (mode == 0) {
		(void)feed(xr, data, size, &seed, NULL, &n2, &fed);
		check_done(xr);
	} else if (mode == 1) {
		(void)feed(xi, data, size, &seed, NULL, &n2, &fed);
		check_done(xi);
	} else if (mode == 2) {
		size_t k = 0;
		for (size_t i = 0; i < n1 && k < size; i++)
			m1[i] ^= data[k++];
		int rc = feed(xr, m1, n1, &seed, m2, &n2, &fed);
		if (rc == 0 && n2) {
			for (size_t i = 0; i < n2 && k < size; i++)
				m2[i] ^= data[k++];
			rc = feed(xi, m2, n2, &seed, m3, &n3, &fed);
			check_done(xi);
			if (rc == 0 && n3) {
				for (size_t i = 0; i < n3 && k < size; i++)
					m3[i] ^= data[k++];
				(void)feed(xr, m3, n3, &seed, NULL, &n2, &fed);
				check_done(xr);
			}
		}
		if (noise_xx_done(xi) && noise_xx_done(xr)) {
			/* both completed: they agree on everything */
			FUZZ_ASSERT(memcmp(noise_xx_hash(xi), noise_xx_hash(xr), NOISE_HASHLEN) == 0);
			noise_cipher_t ti, ri, tr, rr;
			FUZZ_ASSERT(noise_xx_split(xi, &ti, &ri) == 0 && noise_xx_split(xr, &tr, &rr) == 0);
			uint8_t pt[8] = "payload", ct[24], back[8];
			FUZZ_ASSERT(noise_cipher_encrypt(&ti, NULL, 0, pt, 8, ct) == 0);
			FUZZ_ASSERT(noise_cipher_decrypt(&rr, NULL, 0, ct, 24, back) == 0);
			FUZZ_ASSERT(memcmp(back, pt, 8) == 0);
			noise_cipher_close(&ti);
			noise_cipher_close(&ri);
			noise_cipher_close(&tr);
			noise_cipher_close(&rr);
		}
	} else {
		int rc = feed(xr, m1, n1, &seed, m2, &n2, &fed);
		FUZZ_ASSERT(rc == 0 && n2 == 2 + NOISE_XX_MSG2);
		(void)feed(xr, data, size, &seed, NULL, &n3, &fed);
		check_done(xr);
	}
	noise_xx_free(xi);
	noise_xx_free(xr);
	return 0;
}
