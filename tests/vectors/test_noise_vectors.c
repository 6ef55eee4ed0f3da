/* test_noise_vectors.c - the cacophony test vectors for every
 * 25519_ChaChaPoly_BLAKE2b pattern (59 of them): both sides run each
 * handshake with the fixed keys, every ciphertext must match byte for byte,
 * every payload must come back, both handshake hashes must equal the
 * vector's, then the transport messages go through Split()'s ciphers.
 * Must-fail cases: a tampered message, a wrong psk, a wrong prologue. */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "net/noise.h"
#include "test.h"

#define MAXB 4096

typedef struct bytes {
	uint8_t b[MAXB];
	size_t n;
	int present;
} bytes_t;

static int hex_get(json_t *obj, const char *key, bytes_t *out)
{
	memset(out, 0, sizeof(*out));
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	const char *s = json_string_value(v);
	if (!s)
		return -1;
	size_t n = strlen(s);
	if (n % 2 || n / 2 > MAXB)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned x;
		if (sscanf(s + 2 * i, "%2x", &x) != 1)
			return -1;
		out->b[i] = (uint8_t)x;
	}
	out->n = n / 2;
	out->present = 1;
	return 0;
}

static json_t *root, *vectors;

static void unload(void)
{
	json_decref(root);
}

static json_t *load(void)
{
	if (vectors)
		return vectors;
	const char *p = fixture_path("noise/cacophony-25519-ChaChaPoly-BLAKE2b.json");
	json_error_t je;
	root = json_load_file(p, 0, &je);
	REQUIRE(root != NULL);
	atexit(unload);
	vectors = json_object_get(root, "vectors");
	REQUIRE(json_is_array(vectors));
	return vectors;
}

typedef struct side {
	bytes_t prologue, e, s, rs, psk_store[NOISE_MAX_PSKS];
	uint8_t psks[NOISE_MAX_PSKS][NOISE_PSKLEN];
	size_t n_psks;
} side_t;

static int side_load(json_t *v, const char *who, side_t *sd)
{
	char k[64];
	memset(sd, 0, sizeof(*sd));
	snprintf(k, sizeof(k), "%s_prologue", who);
	if (hex_get(v, k, &sd->prologue))
		return -1;
	snprintf(k, sizeof(k), "%s_ephemeral", who);
	if (hex_get(v, k, &sd->e))
		return -1;
	snprintf(k, sizeof(k), "%s_static", who);
	if (hex_get(v, k, &sd->s))
		return -1;
	snprintf(k, sizeof(k), "%s_remote_static", who);
	if (hex_get(v, k, &sd->rs))
		return -1;
	snprintf(k, sizeof(k), "%s_psks", who);
	json_t *ps = json_object_get(v, k);
	if (ps) {
		for (size_t i = 0; i < json_array_size(ps); i++) {
			const char *s = json_string_value(json_array_get(ps, i));
			if (!s || strlen(s) != 64 || i >= NOISE_MAX_PSKS)
				return -1;
			for (int j = 0; j < 32; j++) {
				unsigned x;
				if (sscanf(s + 2 * j, "%2x", &x) != 1)
					return -1;
				sd->psks[i][j] = (uint8_t)x;
			}
			sd->n_psks++;
		}
	}
	return 0;
}

static int hs_make(const char *proto, int initiator, side_t *sd, noise_hs_t **hs, err_msg_t *e)
{
	noise_hs_cfg_t c = {
		.protocol = proto,
		.initiator = initiator,
		.prologue = sd->prologue.b,
		.prologue_len = sd->prologue.n,
		.s_priv = sd->s.present ? sd->s.b : NULL,
		.e_priv = sd->e.present ? sd->e.b : NULL,
		.rs = sd->rs.present ? sd->rs.b : NULL,
		.psks = (const uint8_t (*)[NOISE_PSKLEN])sd->psks,
		.n_psks = sd->n_psks,
	};
	return noise_hs_new(&c, hs, e);
}

static int one_way(const char *proto)
{
	/* Noise_N_, Noise_K_, Noise_X_ and their psk variants: one message. */
	const char *p = proto + 6;
	return (p[0] == 'N' || p[0] == 'K' || p[0] == 'X') && (p[1] == '_' || p[1] == 'p');
}

/* Runs one vector; returns 0 when everything matched. */
static int run_vector(json_t *v, int verbose)
{
	const char *proto = json_string_value(json_object_get(v, "protocol_name"));
	if (!proto)
		return -1;
	side_t si, sr;
	bytes_t hh;
	if (side_load(v, "init", &si) || side_load(v, "resp", &sr) || hex_get(v, "handshake_hash", &hh))
		return -1;
	err_msg_t e = { "" };
	noise_hs_t *hi = NULL, *hr = NULL;
	noise_cipher_t ti, ri, tr, rr;
	int ok = 0;
	if (hs_make(proto, 1, &si, &hi, &e) || hs_make(proto, 0, &sr, &hr, &e)) {
		if (verbose)
			fprintf(stderr, "  %s: %s\n", proto, e.msg);
		goto out;
	}
	json_t *msgs = json_object_get(v, "messages");
	size_t nm = json_array_size(msgs);
	int nhs = noise_hs_msg_count(hi);
	int split = 0;
	for (size_t i = 0; i < nm; i++) {
		bytes_t pl, ct;
		static uint8_t out[MAXB], back[MAXB];
		size_t on = 0, bn = 0;
		if (hex_get(json_array_get(msgs, i), "payload", &pl) || hex_get(json_array_get(msgs, i), "ciphertext", &ct))
			goto out;
		int from_init = one_way(proto) ? 1 : (i % 2 == 0);
		if ((int)i < nhs) {
			noise_hs_t *w = from_init ? hi : hr, *r = from_init ? hr : hi;
			if (noise_hs_action(w) != NOISE_ACTION_WRITE || noise_hs_action(r) != NOISE_ACTION_READ)
				goto out;
			if (noise_hs_write_size(w, pl.n) != ct.n)
				goto out;
			if (noise_hs_write(w, pl.b, pl.n, out, sizeof(out), &on, &e))
				goto out;
			if (on != ct.n || memcmp(out, ct.b, on) != 0) {
				if (verbose)
					fprintf(stderr, "  %s: message %zu ciphertext differs\n", proto, i);
				goto out;
			}
			if (noise_hs_read(r, out, on, back, sizeof(back), &bn, &e))
				goto out;
			if (bn != pl.n || memcmp(back, pl.b, bn) != 0)
				goto out;
			continue;
		}
		if (!split) {
			if (noise_hs_action(hi) != NOISE_ACTION_SPLIT || noise_hs_action(hr) != NOISE_ACTION_SPLIT)
				goto out;
			if (memcmp(noise_hs_hash(hi), hh.b, NOISE_HASHLEN) || memcmp(noise_hs_hash(hr), hh.b, NOISE_HASHLEN)) {
				if (verbose)
					fprintf(stderr, "  %s: handshake hash differs\n", proto);
				goto out;
			}
			if (noise_hs_split(hi, &ti, &ri) || noise_hs_split(hr, &tr, &rr))
				goto out;
			split = 1;
		}
		noise_cipher_t *enc = from_init ? &ti : &tr, *dec = from_init ? &rr : &ri;
		if (noise_cipher_encrypt(enc, NULL, 0, pl.b, pl.n, out))
			goto out;
		if (pl.n + NOISE_TAGLEN != ct.n || memcmp(out, ct.b, ct.n) != 0) {
			if (verbose)
				fprintf(stderr, "  %s: transport message %zu differs\n", proto, i);
			goto out;
		}
		if (noise_cipher_decrypt(dec, NULL, 0, out, ct.n, back) || memcmp(back, pl.b, pl.n) != 0)
			goto out;
	}
	ok = split;
out:
	if (!ok && verbose && e.msg[0])
		fprintf(stderr, "  %s: %s\n", proto, e.msg);
	noise_hs_free(hi);
	noise_hs_free(hr);
	return ok ? 0 : -1;
}

static void test_all_vectors(void)
{
	json_t *vs = load();
	size_t n = json_array_size(vs);
	CHECK_EQ_INT(n, 59);
	int passed = 0, has_xx = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(vs, i);
		const char *name = json_string_value(json_object_get(v, "protocol_name"));
		int r = run_vector(v, 1);
		if (r == 0)
			passed++;
		else
			fprintf(stderr, "  vector %zu (%s) failed\n", i, name ? name : "?");
		CHECK(r == 0);
		if (name && strcmp(name, "Noise_XX_25519_ChaChaPoly_BLAKE2b") == 0 && r == 0)
			has_xx = 1;
	}
	fprintf(stderr, "  %d of %zu patterns pass\n", passed, n);
	CHECK(has_xx);
	CHECK_EQ_INT(passed, 59);
}

static json_t *find(const char *proto)
{
	json_t *vs = load();
	for (size_t i = 0; i < json_array_size(vs); i++) {
		json_t *v = json_array_get(vs, i);
		if (strcmp(json_string_value(json_object_get(v, "protocol_name")), proto) == 0)
			return v;
	}
	return NULL;
}

/* Runs the handshake of vector v with one change applied to the responder
 * side (or to a message in flight) and expects the responder's or the
 * initiator's read to fail at message fail_at (0-based), with nothing after. */
enum mutation { MUT_NONE, MUT_FLIP_BYTE, MUT_PSK, MUT_PROLOGUE, MUT_TRUNCATE };

static int run_mutated(json_t *v, enum mutation mut, size_t which_msg, size_t byte_at, int *failed_at)
{
	const char *proto = json_string_value(json_object_get(v, "protocol_name"));
	side_t si, sr;
	REQUIRE(side_load(v, "init", &si) == 0 && side_load(v, "resp", &sr) == 0);
	if (mut == MUT_PSK)
		sr.psks[0][7] ^= 1;
	if (mut == MUT_PROLOGUE) {
		if (sr.prologue.n == 0)
			sr.prologue.n = 1;
		sr.prologue.b[0] ^= 0x20;
	}
	err_msg_t e = { "" };
	noise_hs_t *hi = NULL, *hr = NULL;
	REQUIRE(hs_make(proto, 1, &si, &hi, &e) == 0);
	REQUIRE(hs_make(proto, 0, &sr, &hr, &e) == 0);
	*failed_at = -1;
	int nhs = noise_hs_msg_count(hi);
	for (int i = 0; i < nhs; i++) {
		uint8_t out[512], back[512];
		size_t on = 0, bn = 0;
		const uint8_t pl[] = "payload";
		noise_hs_t *w = i % 2 == 0 ? hi : hr, *r = i % 2 == 0 ? hr : hi;
		REQUIRE(noise_hs_write(w, pl, sizeof(pl), out, sizeof(out), &on, &e) == 0);
		if ((size_t)i == which_msg && mut == MUT_FLIP_BYTE)
			out[byte_at % on] ^= 0x01;
		if ((size_t)i == which_msg && mut == MUT_TRUNCATE)
			on = byte_at % on;
		memset(back, 0xAA, sizeof(back));
		int rc = noise_hs_read(r, out, on, back, sizeof(back), &bn, &e);
		if (rc) {
			*failed_at = i;
			CHECK(e.msg[0] != 0);
			CHECK(noise_hs_action(r) == NOISE_ACTION_FAILED);
			/* a failed read leaves no plaintext behind */
			for (size_t k = 0; k < sizeof(back); k++)
				if (back[k]) {
					CHECK(!"payload buffer not wiped");
					break;
				}
			/* and the dead state refuses to go on */
			CHECK(noise_hs_read(r, out, on, back, sizeof(back), &bn, &e) != 0);
			break;
		}
	}
	noise_hs_free(hi);
	noise_hs_free(hr);
	return *failed_at;
}

static void test_tampered_fails(void)
{
	json_t *v = find("Noise_XX_25519_ChaChaPoly_BLAKE2b");
	REQUIRE(v);
	int at;
	/* Message 1 of XX is e plus a clear payload: flipping e is caught by
	 * message 2 (its keys derive from the wrong e); message 2 and 3 are
	 * authenticated from their first encrypted byte. */
	for (size_t b = 0; b < 200; b += 7) {
		run_mutated(v, MUT_FLIP_BYTE, 1, b, &at);
		CHECK_EQ_INT(at, 1);
		run_mutated(v, MUT_FLIP_BYTE, 2, b, &at);
		CHECK_EQ_INT(at, 2);
	}
	run_mutated(v, MUT_FLIP_BYTE, 0, 3, &at);   /* e of message 1 */
	CHECK_EQ_INT(at, 1);
	for (size_t n = 0; n < 64; n += 5) {
		run_mutated(v, MUT_TRUNCATE, 1, n, &at);
		CHECK_EQ_INT(at, 1);
	}
	/* the control: no mutation, no failure */
	run_mutated(v, MUT_NONE, 0, 0, &at);
	CHECK_EQ_INT(at, -1);
}

static void test_wrong_psk_fails(void)
{
	const char *names[] = { "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b", "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b",
		"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b" };
	for (int i = 0; i < 3; i++) {
		json_t *v = find(names[i]);
		REQUIRE(v);
		int at;
		run_mutated(v, MUT_PSK, 0, 0, &at);
		CHECK(at >= 0);
		run_mutated(v, MUT_NONE, 0, 0, &at);
		CHECK_EQ_INT(at, -1);
	}
}

static void test_wrong_prologue_fails(void)
{
	const char *names[] = { "Noise_NN_25519_ChaChaPoly_BLAKE2b", "Noise_XX_25519_ChaChaPoly_BLAKE2b",
		"Noise_IK_25519_ChaChaPoly_BLAKE2b" };
	for (int i = 0; i < 3; i++) {
		json_t *v = find(names[i]);
		REQUIRE(v);
		int at;
		run_mutated(v, MUT_PROLOGUE, 0, 0, &at);
		/* The prologue only enters h: the first encrypted item is refused. */
		CHECK(at >= 0);
	}
}

TEST_MAIN(test_all_vectors, test_tampered_fails, test_wrong_psk_fails, test_wrong_prologue_fails)
