/* ident.h - the node's identity: an ed25519 key pair kept in <home>/node.key.
 *
 * Node id = the ed25519 public key (32 bytes). Its full form is 64 lowercase
 * hex digits; its short human form is the first 8 bytes as 16 hex digits
 * (64 bits: enough to tell peers apart in logs, never to authenticate one).
 *
 * The key file (108 bytes, see docs/PROTOCOL.md) is created on first start
 * with mode 0600 through a temporary file (O_CREAT|O_EXCL, write, fsync, then
 * link into place, so two processes starting at once never clobber each
 * other). A file that group or others may access, that another user owns, or
 * that is malformed is refused with a message saying why; it is never
 * rewritten.
 *
 * Besides the ed25519 key, an ident holds an X25519 key pair for the Noise
 * handshake. It is generated afresh each time an ident is loaded and never
 * written anywhere: the ed25519 key certifies it inside every handshake.
 *
 * Secrets live in sodium_malloc memory (guard pages, locked when the system
 * allows) and are wiped by ident_free.
 */
#ifndef COLONY_NET_IDENT_H
#define COLONY_NET_IDENT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define IDENT_PUBLEN 32          /* ed25519 public key = node id */
#define IDENT_SEEDLEN 32         /* ed25519 seed (the secret in the file) */
#define IDENT_SIGLEN 64          /* ed25519 signature */
#define IDENT_DHLEN 32           /* X25519 keys */
#define IDENT_FILE_NAME "node.key"
#define IDENT_FILE_SIZE 108
#define IDENT_SHORT_STRLEN 17    /* 16 hex digits + NUL */
#define IDENT_FULL_STRLEN 65     /* 64 hex digits + NUL */

typedef struct ident ident_t;

/* Loads <home>/node.key, or creates it (and <home>, mode 0700) if it does not
 * exist. *created (may be NULL) tells which. The ident is the caller's, to
 * free with ident_free. Errors: ERR_IO (cannot create/read), ERR_FORMAT
 * (malformed or corrupted file), ERR_INVAL (unsafe mode or owner), ERR_NOMEM. */
int ident_load_or_create(const char *home, ident_t **out, int *created, err_msg_t *e) WUR;

/* Loads an existing key file (same checks as above); ERR_NOTFOUND if absent. */
int ident_load_file(const char *path, ident_t **out, err_msg_t *e) WUR;

/* An ident that lives only in memory: from a 32-byte seed (tests, benches)
 * or from fresh randomness (seed NULL). */
int ident_new(const uint8_t *seed, ident_t **out) WUR;

/* Wipes and frees; NULL is fine. */
void ident_free(ident_t *id);

/* The node id (IDENT_PUBLEN bytes), valid while id lives. */
const uint8_t *ident_pub(const ident_t *id);

/* The X25519 key pair for Noise (IDENT_DHLEN bytes each), valid while id
 * lives. The private key must not leave the process. */
const uint8_t *ident_dh_pub(const ident_t *id);
const uint8_t *ident_dh_priv(const ident_t *id);

/* sig = ed25519 signature of msg[0..len). */
void ident_sign(const ident_t *id, const void *msg, size_t len, uint8_t sig[IDENT_SIGLEN]);

/* 0 if sig is pub's valid signature of msg, ERR_FORMAT otherwise (including
 * a public key that is not a valid point or has small order). */
int ident_verify(const uint8_t pub[IDENT_PUBLEN], const void *msg, size_t len,
	const uint8_t sig[IDENT_SIGLEN]) WUR;

/* Textual forms of a node id. Return out. */
char *ident_id_short(const uint8_t pub[IDENT_PUBLEN], char out[IDENT_SHORT_STRLEN]);
char *ident_id_full(const uint8_t pub[IDENT_PUBLEN], char out[IDENT_FULL_STRLEN]);

/* Parses a full id (64 hex digits, either case). ERR_FORMAT otherwise. */
int ident_id_parse(const char *s, uint8_t pub[IDENT_PUBLEN], err_msg_t *e) WUR;

#endif
