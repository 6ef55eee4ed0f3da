/* ident.c - node identity key file and signatures (see ident.h). */
#include "net/ident.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "base/secfile.h"

/* Key file (docs/PROTOCOL.md, "Identity key file"): secfile's layout. */
#define KF_MAGIC "COLONYID"
_Static_assert(IDENT_FILE_SIZE == SECFILE_KEY_SIZE && IDENT_SEEDLEN == SECFILE_SEEDLEN, "key file layout");

struct ident {
	uint8_t sk[crypto_sign_SECRETKEYBYTES];   /* seed || pub, libsodium's form */
	uint8_t pub[IDENT_PUBLEN];
	uint8_t dh_priv[IDENT_DHLEN];
	uint8_t dh_pub[IDENT_DHLEN];
};

static int ident_alloc(const uint8_t seed[IDENT_SEEDLEN], ident_t **out)
{
	*out = NULL;
	if (sodium_init() < 0)
		return ERR_UNSUPPORTED;
	ident_t *id = sodium_malloc(sizeof(*id));
	if (!id)
		return ERR_NOMEM;
	crypto_sign_seed_keypair(id->pub, id->sk, seed);
	randombytes_buf(id->dh_priv, sizeof(id->dh_priv));
	if (crypto_scalarmult_base(id->dh_pub, id->dh_priv) != 0) {
		sodium_free(id);
		return ERR_UNSUPPORTED;
	}
	*out = id;
	return 0;
}

int ident_new(const uint8_t *seed, ident_t **out)
{
	uint8_t s[IDENT_SEEDLEN];
	if (sodium_init() < 0)
		return ERR_UNSUPPORTED;
	if (seed)
		memcpy(s, seed, sizeof(s));
	else
		randombytes_buf(s, sizeof(s));
	int rc = ident_alloc(s, out);
	sodium_memzero(s, sizeof(s));
	return rc;
}

void ident_free(ident_t *id)
{
	if (id)
		sodium_free(id);   /* sodium_free wipes before unmapping */
}

const uint8_t *ident_pub(const ident_t *id) { return id->pub; }
const uint8_t *ident_dh_pub(const ident_t *id) { return id->dh_pub; }
const uint8_t *ident_dh_priv(const ident_t *id) { return id->dh_priv; }

void ident_sign(const ident_t *id, const void *msg, size_t len, uint8_t sig[IDENT_SIGLEN])
{
	crypto_sign_detached(sig, NULL, msg, len, id->sk);
}

int ident_verify(const uint8_t pub[IDENT_PUBLEN], const void *msg, size_t len,
	const uint8_t sig[IDENT_SIGLEN])
{
	/* libsodium refuses small-order keys and non-canonical signatures. */
	return crypto_sign_verify_detached(sig, msg, len, pub) == 0 ? 0 : ERR_FORMAT;
}

static const char hexd[] = "0123456789abcdef";

char *ident_id_short(const uint8_t pub[IDENT_PUBLEN], char out[IDENT_SHORT_STRLEN])
{
	for (int i = 0; i < 8; i++) {
		out[2 * i] = hexd[pub[i] >> 4];
		out[2 * i + 1] = hexd[pub[i] & 15];
	}
	out[16] = 0;
	return out;
}

char *ident_id_full(const uint8_t pub[IDENT_PUBLEN], char out[IDENT_FULL_STRLEN])
{
	for (int i = 0; i < IDENT_PUBLEN; i++) {
		out[2 * i] = hexd[pub[i] >> 4];
		out[2 * i + 1] = hexd[pub[i] & 15];
	}
	out[64] = 0;
	return out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ident_id_parse(const char *s, uint8_t pub[IDENT_PUBLEN], err_msg_t *e)
{
	size_t n = strnlen(s, 2 * IDENT_PUBLEN + 1);
	if (n != 2 * IDENT_PUBLEN)
		return err_set(e, ERR_FORMAT, "node id must be %d hex digits (got %zu characters)",
			2 * IDENT_PUBLEN, n);
	for (int i = 0; i < IDENT_PUBLEN; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return err_set(e, ERR_FORMAT, "node id: character %d is not a hex digit",
				hi < 0 ? 2 * i : 2 * i + 1);
		pub[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* ---- the key file ---- */

/* Parses the 108 bytes of a key file into an ident. */
static int keyfile_parse(const uint8_t *b, const char *path, ident_t **out, err_msg_t *e)
{
	uint8_t seed[IDENT_SEEDLEN];
	int rc = secfile_key_parse(b, KF_MAGIC, "key file", path, seed, e);
	if (rc == 0 && (rc = ident_alloc(seed, out)) != 0)
		err_set(e, rc, "%s: cannot allocate secure memory", path);
	sodium_memzero(seed, sizeof(seed));
	return rc;
}

int ident_load_file(const char *path, ident_t **out, err_msg_t *e)
{
	*out = NULL;
	uint8_t buf[IDENT_FILE_SIZE];
	size_t got = 0;
	int rc = secfile_read(path, "the node's secret key", buf, sizeof(buf), &got, e);
	if (rc == 0 && got != IDENT_FILE_SIZE)
		rc = err_set(e, ERR_FORMAT, "%s: %s%zu bytes, a key file has exactly %d", path,
			got > IDENT_FILE_SIZE ? "more than " : "", got > IDENT_FILE_SIZE ? (size_t)IDENT_FILE_SIZE : got,
			IDENT_FILE_SIZE);
	if (rc == 0)
		rc = keyfile_parse(buf, path, out, e);
	sodium_memzero(buf, sizeof(buf));
	return rc;
}

/* Writes a new key file at path; *lost_race = 1 when another process
 * created it first (then that one is the key). */
static int keyfile_create(const char *path, int *lost_race, err_msg_t *e)
{
	uint8_t b[IDENT_FILE_SIZE], seed[IDENT_SEEDLEN];
	randombytes_buf(seed, sizeof(seed));
	secfile_key_build(KF_MAGIC, seed, b);
	sodium_memzero(seed, sizeof(seed));
	int rc = secfile_create(path, b, sizeof(b), lost_race, e);
	if (*lost_race)
		rc = 0;
	sodium_memzero(b, sizeof(b));
	return rc;
}

int ident_load_or_create(const char *home, ident_t **out, int *created, err_msg_t *e)
{
	*out = NULL;
	if (created)
		*created = 0;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	int rc = secfile_mkdir_p(home, e);
	if (rc)
		return rc;
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", home, IDENT_FILE_NAME) >= (int)sizeof(path))
		return err_set(e, ERR_INVAL, "home directory path too long");
	rc = ident_load_file(path, out, e);
	if (rc != ERR_NOTFOUND)
		return rc;
	int lost = 0;
	rc = keyfile_create(path, &lost, e);
	if (rc)
		return rc;
	rc = ident_load_file(path, out, e);
	if (rc == 0 && created && !lost)
		*created = 1;
	return rc;
}
