/* wallet.c - the wallet key file, backups and signatures (see wallet.h). */
#include "market/wallet.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "base/secfile.h"

/* Plain key file (docs/PROTOCOL.md, "Wallet files"): secfile's layout. */
#define WK_MAGIC "COLONYWL"
#define WK_SUMLEN 32
_Static_assert(WALLET_FILE_SIZE == SECFILE_KEY_SIZE && WALLET_SEEDLEN == SECFILE_SEEDLEN, "key file layout");

/* Encrypted export. */
#define WE_MAGIC "COLONYWE"
#define WE_VERSION 1u
#define WE_OFF_VERSION 8
#define WE_OFF_OPS 12
#define WE_OFF_MEM 20
#define WE_OFF_SALT 28
#define WE_OFF_NONCE 44
#define WE_OFF_PUB 68
#define WE_OFF_BOX 100
#define WE_BOXLEN (crypto_secretbox_MACBYTES + WALLET_SEEDLEN)
#define WE_OFF_SUM 148

_Static_assert(WE_OFF_BOX + WE_BOXLEN == WE_OFF_SUM, "export layout");
_Static_assert(WE_OFF_SUM + WK_SUMLEN == WALLET_EXPORT_ENC_SIZE, "export size");
_Static_assert(crypto_pwhash_SALTBYTES == 16 && crypto_secretbox_NONCEBYTES == 24, "sodium sizes");

struct wallet {
	uint8_t sk[crypto_sign_SECRETKEYBYTES];   /* seed || pub, libsodium's form */
	uint8_t pub[WALLET_PUBLEN];
};

void wallet_kdf_moderate(wallet_kdf_t *k)
{
	k->opslimit = crypto_pwhash_OPSLIMIT_MODERATE;
	k->memlimit = crypto_pwhash_MEMLIMIT_MODERATE;
}

void wallet_kdf_interactive(wallet_kdf_t *k)
{
	k->opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
	k->memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
}

static int wallet_alloc(const uint8_t seed[WALLET_SEEDLEN], wallet_t **out)
{
	*out = NULL;
	if (sodium_init() < 0)
		return ERR_UNSUPPORTED;
	wallet_t *w = sodium_malloc(sizeof(*w));
	if (!w)
		return ERR_NOMEM;
	crypto_sign_seed_keypair(w->pub, w->sk, seed);
	*out = w;
	return 0;
}

int wallet_new(const uint8_t *seed, wallet_t **out)
{
	uint8_t s[WALLET_SEEDLEN];
	*out = NULL;
	if (sodium_init() < 0)
		return ERR_UNSUPPORTED;
	if (seed)
		memcpy(s, seed, sizeof(s));
	else
		randombytes_buf(s, sizeof(s));
	int rc = wallet_alloc(s, out);
	sodium_memzero(s, sizeof(s));
	return rc;
}

void wallet_free(wallet_t *w)
{
	if (w)
		sodium_free(w);   /* wipes before unmapping */
}

const uint8_t *wallet_pub(const wallet_t *w) { return w->pub; }

void wallet_sign(const wallet_t *w, const void *msg, size_t len, uint8_t sig[WALLET_SIGLEN])
{
	crypto_sign_detached(sig, NULL, msg, len, w->sk);
}

int wallet_verify(const uint8_t pub[WALLET_PUBLEN], const void *msg, size_t len,
	const uint8_t sig[WALLET_SIGLEN])
{
	return crypto_sign_verify_detached(sig, msg, len, pub) == 0 ? 0 : ERR_FORMAT;
}

char *wallet_addr_str(const uint8_t pub[WALLET_PUBLEN], char out[WALLET_ADDR_STRLEN])
{
	sodium_bin2hex(out, WALLET_ADDR_STRLEN, pub, WALLET_PUBLEN);
	return out;
}

int wallet_addr_parse(const char *s, uint8_t pub[WALLET_PUBLEN], err_msg_t *e)
{
	size_t n = strnlen(s, 2 * WALLET_PUBLEN + 1), got = 0;
	const char *end = NULL;
	if (n != 2 * WALLET_PUBLEN)
		return err_set(e, ERR_FORMAT, "wallet address must be %d hex digits (got %zu characters)",
			2 * WALLET_PUBLEN, n);
	if (sodium_hex2bin(pub, WALLET_PUBLEN, s, n, NULL, &got, &end) != 0 || got != WALLET_PUBLEN)
		return err_set(e, ERR_FORMAT, "wallet address: character %d is not a hex digit",
			end ? (int)(end - s) : 0);
	return 0;
}

/* ---- little-endian helpers ---- */

static void put_u32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64le(const uint8_t *p)
{
	return (uint64_t)get_u32le(p) | (uint64_t)get_u32le(p + 4) << 32;
}

/* ---- files ---- */

/* Reads a whole small file that only its owner may access into buf[cap].
 * *got = bytes read (cap + 1 means "longer than cap"). */
/* The plain key file of a seed. */
static void keyfile_build(const uint8_t seed[WALLET_SEEDLEN], uint8_t b[WALLET_FILE_SIZE])
{
	secfile_key_build(WK_MAGIC, seed, b);
}

static int keyfile_parse(const uint8_t *b, const char *path, wallet_t **out, err_msg_t *e)
{
	uint8_t seed[WALLET_SEEDLEN];
	int rc = secfile_key_parse(b, WK_MAGIC, "wallet key file", path, seed, e);
	if (rc == 0 && (rc = wallet_alloc(seed, out)) != 0)
		err_set(e, rc, "%s: cannot allocate secure memory", path);
	sodium_memzero(seed, sizeof(seed));
	return rc;
}

int wallet_load_file(const char *path, wallet_t **out, err_msg_t *e)
{
	*out = NULL;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	uint8_t buf[WALLET_FILE_SIZE];
	size_t got = 0;
	int rc = secfile_read(path, "the wallet's secret key", buf, sizeof(buf), &got, e);
	if (rc == 0 && got != WALLET_FILE_SIZE)
		rc = err_set(e, ERR_FORMAT, "%s: %s%zu bytes, a wallet key file has exactly %d", path,
			got > WALLET_FILE_SIZE ? "more than " : "", got > WALLET_FILE_SIZE ? (size_t)WALLET_FILE_SIZE : got,
			WALLET_FILE_SIZE);
	if (rc == 0)
		rc = keyfile_parse(buf, path, out, e);
	sodium_memzero(buf, sizeof(buf));
	return rc;
}

static int home_key_path(const char *home, char *path, size_t cap, err_msg_t *e)
{
	if (snprintf(path, cap, "%s/%s", home, WALLET_FILE_NAME) >= (int)cap)
		return err_set(e, ERR_INVAL, "home directory path too long");
	return 0;
}

int wallet_load_or_create(const char *home, wallet_t **out, int *created, err_msg_t *e)
{
	*out = NULL;
	if (created)
		*created = 0;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	int rc = secfile_mkdir_p(home, e);
	char path[PATH_MAX];
	if (rc == 0)
		rc = home_key_path(home, path, sizeof(path), e);
	if (rc)
		return rc;
	rc = wallet_load_file(path, out, e);
	if (rc != ERR_NOTFOUND)
		return rc;
	uint8_t seed[WALLET_SEEDLEN], b[WALLET_FILE_SIZE];
	randombytes_buf(seed, sizeof(seed));
	keyfile_build(seed, b);
	int exists = 0;
	rc = secfile_create(path, b, sizeof(b), &exists, e);
	sodium_memzero(seed, sizeof(seed));
	sodium_memzero(b, sizeof(b));
	if (rc && !exists)
		return rc;
	/* Lost a race with another process creating it: load theirs. */
	rc = wallet_load_file(path, out, e);
	if (rc == 0 && created && !exists)
		*created = 1;
	return rc;
}

/* ---- backups ---- */

static int kdf_check(uint64_t ops, uint64_t mem, const char *what, err_msg_t *e)
{
	if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > WALLET_KDF_MAX_OPS)
		return err_set(e, ERR_INVAL, "%s: Argon2id passes %llu outside %llu..%d", what,
			(unsigned long long)ops, (unsigned long long)crypto_pwhash_OPSLIMIT_MIN, WALLET_KDF_MAX_OPS);
	if (mem < crypto_pwhash_MEMLIMIT_MIN || mem > WALLET_KDF_MAX_MEM)
		return err_set(e, ERR_INVAL, "%s: Argon2id memory %llu bytes outside %llu..%llu", what,
			(unsigned long long)mem, (unsigned long long)crypto_pwhash_MEMLIMIT_MIN,
			(unsigned long long)WALLET_KDF_MAX_MEM);
	return 0;
}

static int derive_key(const char *pass, const uint8_t salt[16], uint64_t ops, uint64_t mem,
	uint8_t key[crypto_secretbox_KEYBYTES], err_msg_t *e)
{
	if (crypto_pwhash(key, crypto_secretbox_KEYBYTES, pass, strlen(pass), salt,
			ops, (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
		return err_set(e, ERR_NOMEM, "Argon2id could not allocate %llu bytes", (unsigned long long)mem);
	return 0;
}

int wallet_export(const wallet_t *w, const char *path, const char *passphrase,
	const wallet_kdf_t *kdf, err_msg_t *e)
{
	uint8_t b[WALLET_EXPORT_ENC_SIZE], key[crypto_secretbox_KEYBYTES];
	int exists = 0, rc;
	if (!passphrase) {
		keyfile_build(w->sk, b);            /* sk starts with the seed */
		rc = secfile_create(path, b, WALLET_FILE_SIZE, &exists, e);
		sodium_memzero(b, sizeof(b));
		return rc;
	}
	if (!*passphrase)
		return err_set(e, ERR_INVAL, "the passphrase is empty");
	wallet_kdf_t k;
	if (kdf)
		k = *kdf;
	else
		wallet_kdf_moderate(&k);
	rc = kdf_check(k.opslimit, k.memlimit, "export", e);
	if (rc)
		return rc;
	memcpy(b, WE_MAGIC, 8);
	put_u32le(b + WE_OFF_VERSION, WE_VERSION);
	put_u64le(b + WE_OFF_OPS, k.opslimit);
	put_u64le(b + WE_OFF_MEM, k.memlimit);
	randombytes_buf(b + WE_OFF_SALT, crypto_pwhash_SALTBYTES);
	randombytes_buf(b + WE_OFF_NONCE, crypto_secretbox_NONCEBYTES);
	memcpy(b + WE_OFF_PUB, w->pub, WALLET_PUBLEN);
	rc = derive_key(passphrase, b + WE_OFF_SALT, k.opslimit, k.memlimit, key, e);
	if (rc == 0) {
		crypto_secretbox_easy(b + WE_OFF_BOX, w->sk, WALLET_SEEDLEN, b + WE_OFF_NONCE, key);
		crypto_generichash(b + WE_OFF_SUM, WK_SUMLEN, b, WE_OFF_SUM, NULL, 0);
		rc = secfile_create(path, b, sizeof(b), &exists, e);
	}
	sodium_memzero(key, sizeof(key));
	sodium_memzero(b, sizeof(b));
	return rc;
}

static int backup_decrypt(const uint8_t *b, const char *path, const char *pass, wallet_t **out, err_msg_t *e)
{
	/* The checksum comes first: a damaged file must not be blamed on the passphrase. */
	uint8_t sum[WK_SUMLEN], key[crypto_secretbox_KEYBYTES], seed[WALLET_SEEDLEN];
	crypto_generichash(sum, sizeof(sum), b, WE_OFF_SUM, NULL, 0);
	if (sodium_memcmp(sum, b + WE_OFF_SUM, WK_SUMLEN) != 0)
		return err_set(e, ERR_FORMAT, "%s: checksum mismatch (the backup is corrupted)", path);
	uint32_t ver = get_u32le(b + WE_OFF_VERSION);
	if (ver != WE_VERSION)
		return err_set(e, ERR_FORMAT, "%s: encrypted wallet version %u is not supported (expected %u)",
			path, ver, WE_VERSION);
	uint64_t ops = get_u64le(b + WE_OFF_OPS), mem = get_u64le(b + WE_OFF_MEM);
	int rc = kdf_check(ops, mem, path, e);
	if (rc)
		return err_set(e, ERR_FORMAT, "%s: Argon2id cost out of bounds (%llu passes, %llu bytes)", path,
			(unsigned long long)ops, (unsigned long long)mem);
	if (!pass)
		return err_set(e, ERR_INVAL, "%s: this backup is encrypted; a passphrase is needed", path);
	rc = derive_key(pass, b + WE_OFF_SALT, ops, mem, key, e);
	if (rc)
		return rc;
	if (crypto_secretbox_open_easy(seed, b + WE_OFF_BOX, WE_BOXLEN, b + WE_OFF_NONCE, key) != 0) {
		rc = err_set(e, ERR_INVAL, "%s: wrong passphrase", path);
	} else {
		rc = wallet_alloc(seed, out);
		if (rc)
			err_set(e, rc, "%s: cannot allocate secure memory", path);
		else if (sodium_memcmp((*out)->pub, b + WE_OFF_PUB, WALLET_PUBLEN) != 0) {
			wallet_free(*out);
			*out = NULL;
			rc = err_set(e, ERR_FORMAT, "%s: the public key does not match the secret key", path);
		}
	}
	sodium_memzero(key, sizeof(key));
	sodium_memzero(seed, sizeof(seed));
	return rc;
}

int wallet_parse_backup(const uint8_t *b, size_t got, const char *name, const char *passphrase,
	wallet_t **out, err_msg_t *e)
{
	*out = NULL;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	/* got may be one more than the largest kind: "longer than that". */
	if (got >= 8 && memcmp(b, WK_MAGIC, 8) == 0 && got == WALLET_FILE_SIZE)
		return keyfile_parse(b, name, out, e);
	if (got >= 8 && memcmp(b, WE_MAGIC, 8) == 0 && got == WALLET_EXPORT_ENC_SIZE)
		return backup_decrypt(b, name, passphrase, out, e);
	if (got >= 8 && (memcmp(b, WK_MAGIC, 8) == 0 || memcmp(b, WE_MAGIC, 8) == 0))
		return err_set(e, ERR_FORMAT, "%s: %zu bytes, a wallet backup has %d (plain) or %d (encrypted)%s",
			name, got > WALLET_EXPORT_ENC_SIZE ? (size_t)WALLET_EXPORT_ENC_SIZE : got, WALLET_FILE_SIZE,
			WALLET_EXPORT_ENC_SIZE, got > WALLET_EXPORT_ENC_SIZE ? " or more" : "");
	return err_set(e, ERR_FORMAT, "%s: not a colony wallet backup (%s)", name,
		got < 8 ? "too short" : "bad magic");
}

int wallet_read_backup(const char *path, const char *passphrase, wallet_t **out, err_msg_t *e)
{
	*out = NULL;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	uint8_t b[WALLET_EXPORT_ENC_SIZE];
	size_t got = 0;
	int rc = secfile_read(path, "the wallet's secret key", b, sizeof(b), &got, e);
	if (rc == 0)
		rc = wallet_parse_backup(b, got, path, passphrase, out, e);
	sodium_memzero(b, sizeof(b));
	return rc;
}

int wallet_import(const char *home, const char *path, const char *passphrase,
	wallet_t **out, err_msg_t *e)
{
	*out = NULL;
	wallet_t *w = NULL;
	int rc = wallet_read_backup(path, passphrase, &w, e);
	char kp[PATH_MAX];
	if (rc == 0)
		rc = secfile_mkdir_p(home, e);
	if (rc == 0)
		rc = home_key_path(home, kp, sizeof(kp), e);
	if (rc == 0) {
		uint8_t b[WALLET_FILE_SIZE];
		int exists = 0;
		keyfile_build(w->sk, b);
		rc = secfile_create(kp, b, sizeof(b), &exists, e);
		sodium_memzero(b, sizeof(b));
		if (exists)
			rc = err_set(e, ERR_INVAL, "%s already has a wallet (%s); move it away first", home, kp);
	}
	if (rc) {
		wallet_free(w);
		return rc;
	}
	*out = w;
	return 0;
}
