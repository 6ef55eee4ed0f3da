/* wallet.h - the node's wallet: an ed25519 key pair in <home>/wallet.key,
 * separate from the node identity (node.key), so the money key can be
 * backed up, moved or kept elsewhere without touching the node's name.
 *
 * Address = the 32-byte ed25519 public key; its text form is 64 lowercase
 * hex digits. Vouchers and receipts are signed with it (voucher.h).
 *
 * The key file (108 bytes, docs/PROTOCOL.md "Wallet files") follows the
 * node key's rules: created through a temporary file (O_CREAT|O_EXCL, mode
 * 0600, fsync) hard-linked into place, so it is never overwritten; loading
 * refuses a symlink, a non-regular file, any group/other permission bit,
 * another owner, a wrong size, a bad magic or version, a checksum mismatch,
 * a public key that does not match the seed.
 *
 * Export writes a backup file (never over an existing one, mode 0600),
 * either the plain key file or, with a passphrase, the seed encrypted with
 * crypto_secretbox under a key derived by Argon2id (crypto_pwhash). Import
 * reads either kind and installs it as <home>/wallet.key (refused if the
 * home already has a wallet). A wrong passphrase and a corrupted file are
 * told apart: the file carries an unkeyed checksum of all its bytes.
 *
 * Secrets live in sodium_malloc memory and are wiped by wallet_free.
 */
#ifndef COLONY_MARKET_WALLET_H
#define COLONY_MARKET_WALLET_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define WALLET_PUBLEN 32
#define WALLET_SEEDLEN 32
#define WALLET_SIGLEN 64
#define WALLET_ADDR_STRLEN 65          /* 64 hex digits + NUL */
#define WALLET_FILE_NAME "wallet.key"
#define WALLET_FILE_SIZE 108           /* plain key file */
#define WALLET_EXPORT_ENC_SIZE 180     /* passphrase-encrypted export */

typedef struct wallet wallet_t;

/* Argon2id cost of an encrypted export. */
typedef struct wallet_kdf {
	uint64_t opslimit;
	uint64_t memlimit;            /* bytes */
} wallet_kdf_t;

/* libsodium's "moderate" (3 passes, 256 MiB, about a second): the default. */
void wallet_kdf_moderate(wallet_kdf_t *k);
/* libsodium's "interactive" (2 passes, 64 MiB): tests, weak machines. */
void wallet_kdf_interactive(wallet_kdf_t *k);

/* Loads <home>/wallet.key or creates it (and <home>, mode 0700). *created
 * (may be NULL) says which. The wallet is the caller's (wallet_free).
 * ERR_IO, ERR_FORMAT (malformed/corrupted), ERR_INVAL (unsafe mode/owner),
 * ERR_NOMEM. */
int wallet_load_or_create(const char *home, wallet_t **out, int *created, err_msg_t *e) WUR;

/* Loads an existing key file with the same checks; ERR_NOTFOUND if absent. */
int wallet_load_file(const char *path, wallet_t **out, err_msg_t *e) WUR;

/* A wallet only in memory: from a 32-byte seed (tests, benches) or fresh
 * randomness (seed NULL). */
int wallet_new(const uint8_t *seed, wallet_t **out) WUR;

/* Wipes and frees; NULL is fine. */
void wallet_free(wallet_t *w);

/* The public key (= address bytes), valid while w lives. */
const uint8_t *wallet_pub(const wallet_t *w);

/* sig = ed25519 signature of msg[0..len). */
void wallet_sign(const wallet_t *w, const void *msg, size_t len, uint8_t sig[WALLET_SIGLEN]);

/* 0 if sig is pub's signature of msg, ERR_FORMAT otherwise (small-order
 * keys and non-canonical signatures included). */
int wallet_verify(const uint8_t pub[WALLET_PUBLEN], const void *msg, size_t len,
	const uint8_t sig[WALLET_SIGLEN]) WUR;

/* Address text (64 lowercase hex digits); returns out. */
char *wallet_addr_str(const uint8_t pub[WALLET_PUBLEN], char out[WALLET_ADDR_STRLEN]);
/* Parses 64 hex digits (either case); ERR_FORMAT otherwise. */
int wallet_addr_parse(const char *s, uint8_t pub[WALLET_PUBLEN], err_msg_t *e) WUR;

/* Writes a backup of w to path (which must not exist). passphrase NULL: the
 * plain key file; otherwise the encrypted form with kdf's cost (NULL =
 * moderate). ERR_IO (exists, cannot write), ERR_INVAL (empty passphrase,
 * cost below libsodium's minimum or above WALLET_KDF_MAX_*), ERR_NOMEM. */
int wallet_export(const wallet_t *w, const char *path, const char *passphrase,
	const wallet_kdf_t *kdf, err_msg_t *e) WUR;

/* Reads a backup (either kind) and returns the wallet in it. An encrypted
 * file needs passphrase (ERR_INVAL if NULL: "this backup is encrypted").
 * ERR_FORMAT: corrupted or not a wallet file; ERR_INVAL: wrong passphrase
 * (the message says so). */
int wallet_read_backup(const char *path, const char *passphrase, wallet_t **out, err_msg_t *e) WUR;

/* The parser behind wallet_read_backup, on bytes already read: b[0..got),
 * where got == WALLET_EXPORT_ENC_SIZE + 1 means "longer than any backup".
 * name only labels messages. Same results as wallet_read_backup. */
int wallet_parse_backup(const uint8_t *b, size_t got, const char *name, const char *passphrase,
	wallet_t **out, err_msg_t *e) WUR;

/* wallet_read_backup, then installs it as <home>/wallet.key (mode 0600,
 * never replacing an existing one: ERR_INVAL "already has a wallet"). */
int wallet_import(const char *home, const char *path, const char *passphrase,
	wallet_t **out, err_msg_t *e) WUR;

/* Bounds on the Argon2id cost read from a file, so a crafted backup cannot
 * make import allocate or spin without limit. */
#define WALLET_KDF_MAX_OPS 64
#define WALLET_KDF_MAX_MEM (4ull << 30)

#endif
