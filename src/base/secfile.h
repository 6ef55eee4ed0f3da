/* secfile.h - small files holding secrets (node and wallet keys, backups).
 *
 * Reading refuses what a secret file must not be: a symlink (O_NOFOLLOW),
 * not a regular file, readable or writable by group or others, owned by
 * another user. Writing creates a new file only, mode exactly 0600, through
 * a temporary file (O_EXCL), fsync, link() into place (never replacing an
 * existing file, so a concurrent first start cannot swap a key under a
 * process that loaded it) and an fsync of the folder.
 */
#ifndef COLONY_BASE_SECFILE_H
#define COLONY_BASE_SECFILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Reads up to cap bytes into buf; *got = cap + 1 when the file is longer.
 * `what` names the secret in the error ("the node's secret key").
 * ERR_NOTFOUND when path does not exist. The caller wipes buf. */
int secfile_read(const char *path, const char *what, uint8_t *buf, size_t cap, size_t *got, err_msg_t *e) WUR;
/* Writes b[n] as a new file at path. ERR_IO with *exists = 1 when path is
 * already there (nothing is written then). */
int secfile_create(const char *path, const uint8_t *b, size_t n, int *exists, err_msg_t *e) WUR;
/* mkdir -p, mode 0700 for the components it creates; fails unless dir ends
 * up a directory. */
int secfile_mkdir_p(const char *dir, err_msg_t *e) WUR;

/* The ed25519 key file layout shared by node.key and wallet.key
 * (docs/PROTOCOL.md): an 8-byte magic naming the kind, u32 version 1
 * (little-endian), the 32-byte seed, the 32-byte public key, and
 * BLAKE2b-256 of the 76 bytes before it. */
#define SECFILE_KEY_SIZE 108
#define SECFILE_SEEDLEN 32

/* b = the key file of seed under magic. */
void secfile_key_build(const char magic[8], const uint8_t seed[SECFILE_SEEDLEN], uint8_t b[SECFILE_KEY_SIZE]);
/* Checks b (magic, version, checksum, and that its public key is the
 * seed's) and copies the seed out (the caller wipes it). kind names the
 * file in messages ("key file"); ERR_FORMAT says which check failed. */
int secfile_key_parse(const uint8_t b[SECFILE_KEY_SIZE], const char magic[8], const char *kind, const char *path,
	uint8_t seed[SECFILE_SEEDLEN], err_msg_t *e) WUR;

#endif
