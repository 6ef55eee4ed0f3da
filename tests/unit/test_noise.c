/* test_noise.c - CipherState rules (nonce limit, failed decryption, rekey)
 * and colony's XX handshake with node identities: good identities learn
 * each other's ids, forged / replayed / misbound proofs, another node's
 * key, another network and malformed input all fail. */
#include <stdint.h>

#include <sodium.h>

#include "net/noise.h"
#include "net/noise_xx.h"
#include "test.h"

#define NET "colony-test"

/* ---- CipherState ---- */

static void test_cipher_nonce_limit(void)
{
	uint8_t k[32];
	randombytes_buf(k, sizeof(k));
	noise_cipher_t a, b;
	noise_cipher_init(&a, k);
	noise_cipher_init(&b, k);
	uint8_t pt[20] = "nonce limit test", ct[36], back[20];
	noise_cipher_set_nonce(&a, NOISE_NONCE_MAX - 1);
	noise_cipher_set_nonce(&b, NOISE_NONCE_MAX - 1);
	CHECK_OK(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct));
	CHECK_OK(noise_cipher_decrypt(&b, NULL, 0, ct, sizeof(ct), back));
	CHECK(memcmp(back, pt, sizeof(pt)) == 0);
	/* 2^64-1 is reserved: both directions refuse, for good */
	CHECK_EQ_INT(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct), ERR_RANGE);
	CHECK_EQ_INT(noise_cipher_decrypt(&b, NULL, 0, ct, sizeof(ct), back), ERR_RANGE);
	noise_cipher_set_nonce(&a, 0);
	CHECK(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct) != 0);
	noise_cipher_close(&a);
	noise_cipher_close(&b);
}

static void test_cipher_bad_mac(void)
{
	uint8_t k[32];
	randombytes_buf(k, sizeof(k));
	noise_cipher_t a, b;
	noise_cipher_init(&a, k);
	noise_cipher_init(&b, k);
	uint8_t pt[40], ct[56], ct2[56], back[40];
	memset(pt, 'x', sizeof(pt));
	CHECK_OK(noise_cipher_encrypt(&a, (const uint8_t *)"ad", 2, pt, sizeof(pt), ct));
	CHECK_OK(noise_cipher_encrypt(&a, (const uint8_t *)"ad", 2, pt, sizeof(pt), ct2));
	uint8_t bad[56];
	memcpy(bad, ct, sizeof(ct));
	bad[5] ^= 1;
	memset(back, 0x55, sizeof(back));
	CHECK_EQ_INT(noise_cipher_decrypt(&b, (const uint8_t *)"ad", 2, bad, sizeof(bad), back), ERR_FORMAT);
	int zero = 1;
	for (size_t i = 0; i < sizeof(back); i++)
		zero &= back[i] == 0;
	CHECK(zero);   /* no unauthenticated plaintext escapes */
	/* the state is dead: even the genuine message is refused now */
	CHECK(noise_cipher_decrypt(&b, (const uint8_t *)"ad", 2, ct, sizeof(ct), back) != 0);
	/* control: a fresh state decrypts it; wrong ad is refused */
	noise_cipher_init(&b, k);
	CHECK_EQ_INT(noise_cipher_decrypt(&b, (const uint8_t *)"xx", 2, ct, sizeof(ct), back), ERR_FORMAT);
	noise_cipher_init(&b, k);
	CHECK_OK(noise_cipher_decrypt(&b, (const uint8_t *)"ad", 2, ct, sizeof(ct), back));
	CHECK(memcmp(back, pt, sizeof(pt)) == 0);
	/* out of order: message 2 cannot be read as message 1 */
	noise_cipher_init(&b, k);
	CHECK_EQ_INT(noise_cipher_decrypt(&b, (const uint8_t *)"ad", 2, ct2, sizeof(ct2), back), ERR_FORMAT);
	noise_cipher_init(&b, k);
	CHECK_EQ_INT(noise_cipher_decrypt(&b, NULL, 0, ct, 15, back), ERR_TRUNCATED);
}

static void test_cipher_rekey(void)
{
	uint8_t k[32];
	randombytes_buf(k, sizeof(k));
	noise_cipher_t a, b, c;
	noise_cipher_init(&a, k);
	noise_cipher_init(&b, k);
	noise_cipher_init(&c, k);
	noise_cipher_rekey(&a);
	noise_cipher_rekey(&b);
	CHECK(memcmp(a.k, k, 32) != 0);
	/* Rekey(k) is the first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros). */
	uint8_t zeros[32] = { 0 }, out[48], nb[12] = { 0 };
	memset(nb + 4, 0xff, 8);
	unsigned long long clen;
	crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, zeros, 32, NULL, 0, NULL, nb, k);
	CHECK(memcmp(a.k, out, 32) == 0);
	uint8_t pt[8] = "rekeyed", ct[24], back[8];
	CHECK_OK(noise_cipher_encrypt(&a, NULL, 0, pt, 8, ct));
	CHECK_OK(noise_cipher_decrypt(&b, NULL, 0, ct, 24, back));
	CHECK(memcmp(back, pt, 8) == 0);
	/* a side that did not rekey cannot read it */
	CHECK_EQ_INT(noise_cipher_decrypt(&c, NULL, 0, ct, 24, back), ERR_FORMAT);
	CHECK_EQ_INT(a.n, 1);   /* the nonce keeps counting */
}

/* ---- XX with identities ---- */

typedef struct peer {
	ident_t *id;
	noise_xx_t *x;
	uint8_t out[NOISE_XX_OUT_MAX];
	size_t out_len;
	int rc;
	err_msg_t e;
} peer_t;

/* Moves bytes both ways in chunks of `chunk` bytes until both are done or
 * one fails. Returns 0 when both completed. */
static int run_xx(noise_xx_t *xi, noise_xx_t *xr, size_t chunk, err_msg_t *ei, err_msg_t *er)
{
	uint8_t q_ir[1024], q_ri[1024];   /* bytes in flight each way */
	size_t n_ir = 0, n_ri = 0;
	uint8_t out[NOISE_XX_OUT_MAX];
	size_t used, olen;
	if (noise_xx_step(xi, NULL, 0, &used, out, sizeof(out), &olen, ei))
		return -1;
	memcpy(q_ir, out, olen);
	n_ir = olen;
	for (int guard = 0; guard < 10000; guard++) {
		if (noise_xx_done(xi) && noise_xx_done(xr))
			return 0;
		if (n_ir) {
			size_t c = n_ir < chunk ? n_ir : chunk;
			if (noise_xx_step(xr, q_ir, c, &used, out, sizeof(out), &olen, er))
				return -2;
			memmove(q_ir, q_ir + used, n_ir - used);
			n_ir -= used;
			memcpy(q_ri + n_ri, out, olen);
			n_ri += olen;
			continue;
		}
		if (n_ri) {
			size_t c = n_ri < chunk ? n_ri : chunk;
			if (noise_xx_step(xi, q_ri, c, &used, out, sizeof(out), &olen, ei))
				return -1;
			memmove(q_ri, q_ri + used, n_ri - used);
			n_ri -= used;
			memcpy(q_ir + n_ir, out, olen);
			n_ir += olen;
			continue;
		}
		return -3;   /* stalled */
	}
	return -4;
}

static void new_ids(ident_t **a, ident_t **b)
{
	REQUIRE(ident_new(NULL, a) == 0);
	REQUIRE(ident_new(NULL, b) == 0);
}

static void check_transport(noise_xx_t *xi, noise_xx_t *xr)
{
	noise_cipher_t ti, ri, tr, rr;
	REQUIRE(noise_xx_split(xi, &ti, &ri) == 0);
	REQUIRE(noise_xx_split(xr, &tr, &rr) == 0);
	CHECK(noise_xx_split(xi, &ti, &ri) != 0);   /* once */
	uint8_t pt[32] = "after the handshake", ct[48], back[32];
	CHECK_OK(noise_cipher_encrypt(&ti, NULL, 0, pt, 32, ct));
	CHECK_OK(noise_cipher_decrypt(&rr, NULL, 0, ct, 48, back));
	CHECK(memcmp(back, pt, 32) == 0);
	CHECK_OK(noise_cipher_encrypt(&tr, NULL, 0, pt, 32, ct));
	CHECK_OK(noise_cipher_decrypt(&ri, NULL, 0, ct, 48, back));
	CHECK(memcmp(back, pt, 32) == 0);
	/* the two directions use different keys */
	CHECK(memcmp(ti.k, ri.k, 32) != 0);
	noise_cipher_close(&ti);
	noise_cipher_close(&ri);
	noise_cipher_close(&tr);
	noise_cipher_close(&rr);
}

static void test_xx_good(void)
{
	ident_t *a, *b;
	new_ids(&a, &b);
	const size_t chunks[] = { 1, 2, 3, 7, 33, 194, 1000 };
	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		noise_xx_t *xi = NULL, *xr = NULL;
		err_msg_t ei = { "" }, er = { "" };
		REQUIRE(noise_xx_new(a, NET, 1, &xi, &ei) == 0);
		REQUIRE(noise_xx_new(b, NET, 0, &xr, &er) == 0);
		CHECK(noise_xx_peer_id(xi) == NULL);
		int rc = run_xx(xi, xr, chunks[k], &ei, &er);
		if (rc)
			fprintf(stderr, "  chunk %zu: rc %d: %s | %s\n", chunks[k], rc, ei.msg, er.msg);
		REQUIRE(rc == 0);
		REQUIRE(noise_xx_peer_id(xi) && noise_xx_peer_id(xr));
		CHECK(memcmp(noise_xx_peer_id(xi), ident_pub(b), IDENT_PUBLEN) == 0);
		CHECK(memcmp(noise_xx_peer_id(xr), ident_pub(a), IDENT_PUBLEN) == 0);
		CHECK(memcmp(noise_xx_hash(xi), noise_xx_hash(xr), NOISE_HASHLEN) == 0);
		check_transport(xi, xr);
		/* done: further steps are no-ops */
		size_t used, olen;
		uint8_t out[NOISE_XX_OUT_MAX];
		CHECK_OK(noise_xx_step(xr, (const uint8_t *)"abc", 3, &used, out, sizeof(out), &olen, &er));
		CHECK_EQ_INT(used, 0);
		noise_xx_free(xi);
		noise_xx_free(xr);
	}
	/* expecting the right peer works too */
	noise_xx_t *xi = NULL, *xr = NULL;
	err_msg_t ei, er;
	REQUIRE(noise_xx_new(a, NET, 1, &xi, &ei) == 0);
	REQUIRE(noise_xx_new(b, NET, 0, &xr, &er) == 0);
	noise_xx_expect_peer(xi, ident_pub(b));
	CHECK_EQ_INT(run_xx(xi, xr, 1000, &ei, &er), 0);
	noise_xx_free(xi);
	noise_xx_free(xr);
	ident_free(a);
	ident_free(b);
}

static void test_xx_expect_other_peer(void)
{
	ident_t *a, *b, *c;
	new_ids(&a, &b);
	REQUIRE(ident_new(NULL, &c) == 0);
	noise_xx_t *xi = NULL, *xr = NULL;
	err_msg_t ei = { "" }, er = { "" };
	REQUIRE(noise_xx_new(a, NET, 1, &xi, &ei) == 0);
	REQUIRE(noise_xx_new(b, NET, 0, &xr, &er) == 0);
	noise_xx_expect_peer(xi, ident_pub(c));   /* dialled c, b answered */
	CHECK_EQ_INT(run_xx(xi, xr, 1000, &ei, &er), -1);
	CHECK(noise_xx_failed(xi));
	CHECK(strstr(ei.msg, "not the expected node") != NULL);
	CHECK(noise_xx_peer_id(xi) == NULL);
	noise_xx_free(xi);
	noise_xx_free(xr);
	ident_free(a);
	ident_free(b);
	ident_free(c);
}

static void test_xx_wrong_network(void)
{
	ident_t *a, *b;
	new_ids(&a, &b);
	noise_xx_t *xi = NULL, *xr = NULL;
	err_msg_t ei = { "" }, er = { "" };
	REQUIRE(noise_xx_new(a, NET, 1, &xi, &ei) == 0);
	REQUIRE(noise_xx_new(b, "colony-other", 0, &xr, &er) == 0);
	CHECK_EQ_INT(run_xx(xi, xr, 1000, &ei, &er), -1);
	CHECK(strstr(ei.msg, "does not decrypt") != NULL);
	noise_xx_free(xi);
	noise_xx_free(xr);
	CHECK(noise_xx_new(a, "", 1, &xi, &ei) == ERR_INVAL);
	char longnet[80];
	memset(longnet, 'n', 65);
	longnet[65] = 0;
	CHECK(noise_xx_new(a, longnet, 1, &xi, &ei) == ERR_INVAL);
	ident_free(a);
	ident_free(b);
}

/* A misbehaving responder built on the general engine: it answers message
 * 1 with a message 2 whose identity proof is made by `make_proof`. */
enum forgery { F_GOOD, F_RANDOM_SIG, F_OTHER_SIGNER, F_OTHER_STATIC, F_WRONG_ROLE, F_REPLAY, F_BAD_VERSION, F_SHORT };

static uint8_t replay_store[NOISE_XX_ID_PAYLOAD];

static int forged_responder(ident_t *victim_peer, ident_t *signer, const uint8_t *static_priv,
	enum forgery f, const uint8_t *msg1, size_t n1, uint8_t *out, size_t *olen)
{
	uint8_t pro[NOISE_XX_PROLOGUE_MAX];
	size_t plen = noise_xx_prologue(NET, pro);
	noise_hs_cfg_t c = { .protocol = NOISE_XX_PROTOCOL, .initiator = 0, .prologue = pro,
		.prologue_len = plen, .s_priv = static_priv };
	noise_hs_t *hs = NULL;
	err_msg_t e;
	if (noise_hs_new(&c, &hs, &e))
		return -1;
	uint8_t pl[256];
	size_t pn = 0, a = 0, b = 0;
	if (n1 != 2 + NOISE_XX_MSG1 || noise_hs_read(hs, msg1 + 2, n1 - 2, pl, sizeof(pl), &pn, &e))
		return -1;
	if (noise_hs_write_tokens(hs, out + 2, 400, &a, &e))
		return -1;
	const uint8_t *h = noise_hs_hash(hs);
	uint8_t proof[NOISE_XX_ID_PAYLOAD];
	uint8_t other_static[32];
	randombytes_buf(other_static, 32);
	switch (f) {
	case F_GOOD:
	case F_BAD_VERSION:
	case F_SHORT:
		noise_xx_id_payload(signer, NOISE_XX_ROLE_RESPONDER, noise_hs_local_static(hs), h, proof);
		break;
	case F_RANDOM_SIG:
		noise_xx_id_payload(signer, NOISE_XX_ROLE_RESPONDER, noise_hs_local_static(hs), h, proof);
		randombytes_buf(proof + 33, 64);
		break;
	case F_OTHER_SIGNER:
		/* claims to be victim_peer, signed by someone else */
		noise_xx_id_payload(signer, NOISE_XX_ROLE_RESPONDER, noise_hs_local_static(hs), h, proof);
		memcpy(proof + 1, ident_pub(victim_peer), IDENT_PUBLEN);
		break;
	case F_OTHER_STATIC:
		/* a valid signature of the node, but over a Noise key it does not use here */
		noise_xx_id_payload(signer, NOISE_XX_ROLE_RESPONDER, other_static, h, proof);
		break;
	case F_WRONG_ROLE:
		noise_xx_id_payload(signer, NOISE_XX_ROLE_INITIATOR, noise_hs_local_static(hs), h, proof);
		break;
	case F_REPLAY:
		memcpy(proof, replay_store, sizeof(proof));
		break;
	}
	if (f == F_GOOD)
		memcpy(replay_store, proof, sizeof(proof));
	if (f == F_BAD_VERSION)
		proof[0] = 2;
	size_t prooflen = f == F_SHORT ? sizeof(proof) - 1 : sizeof(proof);
	if (noise_hs_write_payload(hs, proof, prooflen, out + 2 + a, 400, &b, &e))
		return -1;
	out[0] = (uint8_t)(a + b);
	out[1] = (uint8_t)((a + b) >> 8);
	*olen = 2 + a + b;
	noise_hs_free(hs);
	return 0;
}

static void test_xx_forged_responder(void)
{
	ident_t *a, *b, *m;
	new_ids(&a, &b);
	REQUIRE(ident_new(NULL, &m) == 0);
	const struct {
		enum forgery f;
		const char *want;
	} cases[] = {
		{ F_GOOD, NULL },
		{ F_RANDOM_SIG, "identity signature" },
		{ F_OTHER_SIGNER, "identity signature" },
		{ F_OTHER_STATIC, "identity signature" },
		{ F_WRONG_ROLE, "identity signature" },
		{ F_REPLAY, "identity signature" },
		{ F_BAD_VERSION, "version" },
		{ F_SHORT, "announces" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		noise_xx_t *xi = NULL;
		err_msg_t ei = { "" };
		REQUIRE(noise_xx_new(a, NET, 1, &xi, &ei) == 0);
		uint8_t m1[NOISE_XX_OUT_MAX], m2[512];
		size_t n1 = 0, n2 = 0, used = 0, olen = 0;
		REQUIRE(noise_xx_step(xi, NULL, 0, &used, m1, sizeof(m1), &n1, &ei) == 0);
		/* The forger is node m (it holds m's keys), except F_OTHER_SIGNER
		 * where m claims to be b, and F_REPLAY where it replays b's proof
		 * of an earlier session with b's own Noise key. */
		ident_t *signer = cases[i].f == F_GOOD || cases[i].f == F_REPLAY ? b : m;
		const uint8_t *spriv = cases[i].f == F_GOOD || cases[i].f == F_REPLAY ? ident_dh_priv(b) : ident_dh_priv(m);
		REQUIRE(forged_responder(b, signer, spriv, cases[i].f, m1, n1, m2, &n2) == 0);
		uint8_t m3[NOISE_XX_OUT_MAX];
		int rc = noise_xx_step(xi, m2, n2, &used, m3, sizeof(m3), &olen, &ei);
		if (!cases[i].want) {
			CHECK_OK(rc);
			CHECK(noise_xx_done(xi));
			CHECK(memcmp(noise_xx_peer_id(xi), ident_pub(b), IDENT_PUBLEN) == 0);
		} else {
			CHECK_EQ_INT(rc, ERR_FORMAT);
			CHECK(noise_xx_failed(xi));
			CHECK_EQ_INT(olen, 0);   /* nothing is sent to a forger */
			CHECK(strstr(ei.msg, cases[i].want) != NULL);
			if (!strstr(ei.msg, cases[i].want))
				fprintf(stderr, "  case %zu: %s\n", i, ei.msg);
		}
		noise_xx_free(xi);
	}
	ident_free(a);
	ident_free(b);
	ident_free(m);
}

/* The responder side: an initiator whose message 3 carries a bad proof. */
static void test_xx_forged_initiator(void)
{
	ident_t *a, *b, *m;
	new_ids(&a, &b);
	REQUIRE(ident_new(NULL, &m) == 0);
	for (int mode = 0; mode < 3; mode++) {
		noise_xx_t *xr = NULL;
		err_msg_t er = { "" }, e;
		REQUIRE(noise_xx_new(b, NET, 0, &xr, &er) == 0);
		uint8_t pro[NOISE_XX_PROLOGUE_MAX];
		size_t plen = noise_xx_prologue(NET, pro);
		noise_hs_cfg_t c = { .protocol = NOISE_XX_PROTOCOL, .initiator = 1, .prologue = pro,
			.prologue_len = plen, .s_priv = ident_dh_priv(m) };
		noise_hs_t *hs = NULL;
		REQUIRE(noise_hs_new(&c, &hs, &e) == 0);
		uint8_t buf[512], out[NOISE_XX_OUT_MAX], pl[256];
		size_t n = 0, used = 0, olen = 0, pn = 0, a1 = 0, b1 = 0;
		REQUIRE(noise_hs_write(hs, NULL, 0, buf + 2, 400, &n, &e) == 0);
		buf[0] = (uint8_t)n;
		buf[1] = 0;
		REQUIRE(noise_xx_step(xr, buf, n + 2, &used, out, sizeof(out), &olen, &er) == 0);
		REQUIRE(olen == 2 + NOISE_XX_MSG2);
		REQUIRE(noise_hs_read(hs, out + 2, olen - 2, pl, sizeof(pl), &pn, &e) == 0);
		REQUIRE(noise_hs_write_tokens(hs, buf + 2, 400, &a1, &e) == 0);
		uint8_t proof[NOISE_XX_ID_PAYLOAD];
		noise_xx_id_payload(m, NOISE_XX_ROLE_INITIATOR, ident_dh_pub(m), noise_hs_hash(hs), proof);
		if (mode == 1)
			memcpy(proof + 1, ident_pub(a), IDENT_PUBLEN);   /* claims to be a */
		if (mode == 2)
			proof[40] ^= 1;
		REQUIRE(noise_hs_write_payload(hs, proof, sizeof(proof), buf + 2 + a1, 400, &b1, &e) == 0);
		buf[0] = (uint8_t)(a1 + b1);
		buf[1] = 0;
		int rc = noise_xx_step(xr, buf, 2 + a1 + b1, &used, out, sizeof(out), &olen, &er);
		if (mode == 0) {
			CHECK_OK(rc);
			CHECK(noise_xx_done(xr));
			CHECK(memcmp(noise_xx_peer_id(xr), ident_pub(m), IDENT_PUBLEN) == 0);
		} else {
			CHECK_EQ_INT(rc, ERR_FORMAT);
			CHECK(strstr(er.msg, "initiator's identity signature") != NULL);
			CHECK(!noise_xx_done(xr));
		}
		noise_hs_free(hs);
		noise_xx_free(xr);
	}
	ident_free(a);
	ident_free(b);
	ident_free(m);
}

static void test_xx_malformed(void)
{
	ident_t *a, *b;
	new_ids(&a, &b);
	uint8_t out[NOISE_XX_OUT_MAX];
	size_t used, olen;
	err_msg_t e = { "" };
	/* a wrong length prefix is refused at once, before any body arrives */
	const uint16_t lens[] = { 0, 1, 31, 33, 193, 65535 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		noise_xx_t *xr = NULL;
		REQUIRE(noise_xx_new(b, NET, 0, &xr, &e) == 0);
		uint8_t hdr[2] = { (uint8_t)lens[i], (uint8_t)(lens[i] >> 8) };
		CHECK_EQ_INT(noise_xx_step(xr, hdr, 2, &used, out, sizeof(out), &olen, &e), ERR_FORMAT);
		CHECK(strstr(e.msg, "announces") != NULL);
		CHECK(noise_xx_failed(xr));
		CHECK_EQ_INT(noise_xx_step(xr, hdr, 2, &used, out, sizeof(out), &olen, &e), ERR_INVAL);
		noise_xx_free(xr);
	}
	/* random bytes: the responder must fail, never complete */
	for (int t = 0; t < 200; t++) {
		noise_xx_t *xr = NULL;
		REQUIRE(noise_xx_new(b, NET, 0, &xr, &e) == 0);
		uint8_t junk[300];
		randombytes_buf(junk, sizeof(junk));
		if (t % 2) {   /* a valid first message, then junk */
			junk[0] = 32;
			junk[1] = 0;
			junk[34] = 161;
			junk[35] = 0;
		}
		size_t off = 0;
		int rc = 0;
		while (off < sizeof(junk) && rc == 0 && !noise_xx_done(xr)) {
			rc = noise_xx_step(xr, junk + off, sizeof(junk) - off, &used, out, sizeof(out), &olen, &e);
			off += used;
		}
		CHECK(!noise_xx_done(xr));
		CHECK(rc != 0);
		noise_xx_free(xr);
	}
	/* a truncated handshake simply never completes */
	noise_xx_t *xi = NULL, *xr = NULL;
	REQUIRE(noise_xx_new(a, NET, 1, &xi, &e) == 0);
	REQUIRE(noise_xx_new(b, NET, 0, &xr, &e) == 0);
	uint8_t m1[NOISE_XX_OUT_MAX];
	size_t n1;
	REQUIRE(noise_xx_step(xi, NULL, 0, &used, m1, sizeof(m1), &n1, &e) == 0);
	CHECK_OK(noise_xx_step(xr, m1, n1 - 5, &used, out, sizeof(out), &olen, &e));
	CHECK_EQ_INT(olen, 0);
	CHECK(!noise_xx_done(xr) && !noise_xx_failed(xr));
	/* a small output buffer is refused without harm */
	CHECK_EQ_INT(noise_xx_step(xr, m1 + n1 - 5, 5, &used, out, 10, &olen, &e), ERR_FULL);
	CHECK(!noise_xx_failed(xr));
	noise_xx_free(xi);
	noise_xx_free(xr);
	ident_free(a);
	ident_free(b);
}

/* Bytes after message 3 belong to the frame layer: consumed stops there. */
static void test_xx_leftover(void)
{
	ident_t *a, *b;
	new_ids(&a, &b);
	noise_xx_t *xi = NULL, *xr = NULL;
	err_msg_t e;
	REQUIRE(noise_xx_new(a, NET, 1, &xi, &e) == 0);
	REQUIRE(noise_xx_new(b, NET, 0, &xr, &e) == 0);
	uint8_t m[NOISE_XX_OUT_MAX], r[NOISE_XX_OUT_MAX + 16];
	size_t n, used, rn;
	REQUIRE(noise_xx_step(xi, NULL, 0, &used, m, sizeof(m), &n, &e) == 0);
	REQUIRE(noise_xx_step(xr, m, n, &used, r, sizeof(r), &rn, &e) == 0 && used == n);
	REQUIRE(noise_xx_step(xi, r, rn, &used, m, sizeof(m), &n, &e) == 0 && used == rn);
	CHECK(noise_xx_done(xi));
	memcpy(m + n, "FRAMEDATA", 9);
	REQUIRE(noise_xx_step(xr, m, n + 9, &used, r, sizeof(r), &rn, &e) == 0);
	CHECK_EQ_INT(used, n);
	CHECK_EQ_INT(rn, 0);
	CHECK(noise_xx_done(xr));
	noise_xx_free(xi);
	noise_xx_free(xr);
	ident_free(a);
	ident_free(b);
}

TEST_MAIN(test_cipher_nonce_limit, test_cipher_bad_mac, test_cipher_rekey, test_xx_good,
	test_xx_expect_other_peer, test_xx_wrong_network, test_xx_forged_responder,
	test_xx_forged_initiator, test_xx_malformed, test_xx_leftover)
