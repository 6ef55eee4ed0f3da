/* noise_xx.h - colony's handshake: Noise_XX_25519_ChaChaPoly_BLAKE2b with
 * node identities (docs/PROTOCOL.md, "Handshake").
 *
 *   -> e                          (empty payload)
 *   <- e, ee, s, es               (payload: responder's identity proof)
 *   -> s, se                      (payload: initiator's identity proof)
 *
 * Prologue: "colony-noise-xx-v1" || u8 n || network id (n bytes), so nodes
 * of another protocol version or network fail at message 2.
 *
 * Identity proof (97 bytes): u8 version (1) || ed25519 node id (32) ||
 * ed25519 signature (64) of
 *     "colony-noise-identity-v1" (24 bytes) || u8 role (1 initiator,
 *     2 responder) || the sender's Noise static key (32) || h (64)
 * where h is the handshake hash just before the payload is encrypted: it
 * covers the prologue and both ephemerals and the sender's encrypted static
 * key. The signature thus says "node N owns static key S in this very
 * handshake": it cannot be replayed into another session (h differs), moved
 * to the other role (role byte), or bound to a static key the signer does
 * not hold (the Noise DHs with S authenticate S itself).
 *
 * On the wire (this state machine does the framing) each handshake message
 * is a u16 little-endian length then the Noise message; the lengths are
 * fixed (32, 193, 161) and any other is refused before buffering.
 *
 * Pure code: the caller feeds received bytes in arbitrary chunks and sends
 * whatever comes out. Each handshake in progress holds one sodium_malloc
 * block (its keys: about 16 KiB of address space in 3-4 mappings, locked
 * when allowed) until it is split or freed, so a server should cap the
 * handshakes it runs at once.
 */
#ifndef COLONY_NET_NOISE_XX_H
#define COLONY_NET_NOISE_XX_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "net/ident.h"
#include "net/noise.h"

#define NOISE_XX_PROTOCOL "Noise_XX_25519_ChaChaPoly_BLAKE2b"
#define NOISE_XX_PROLOGUE_TAG "colony-noise-xx-v1"
#define NOISE_XX_SIG_CONTEXT "colony-noise-identity-v1"
#define NOISE_XX_NETWORK_MAX 64      /* bytes of a network id */
#define NOISE_XX_PROLOGUE_MAX (18 + 1 + NOISE_XX_NETWORK_MAX)
#define NOISE_XX_ID_VERSION 1
#define NOISE_XX_ID_PAYLOAD 97       /* u8 version, id, signature */
#define NOISE_XX_MSG1 32
#define NOISE_XX_MSG2 (32 + 48 + NOISE_XX_ID_PAYLOAD + 16)   /* 193 */
#define NOISE_XX_MSG3 (48 + NOISE_XX_ID_PAYLOAD + 16)        /* 161 */
#define NOISE_XX_OUT_MAX (2 + NOISE_XX_MSG2)   /* the most one step emits */
#define NOISE_XX_ROLE_INITIATOR 1
#define NOISE_XX_ROLE_RESPONDER 2

typedef struct noise_xx noise_xx_t;

/* A handshake for `id` (borrowed: it must outlive the handshake) on network
 * `network` (1..NOISE_XX_NETWORK_MAX bytes, no NUL). ERR_INVAL, ERR_NOMEM. */
int noise_xx_new(const ident_t *id, const char *network, int initiator, noise_xx_t **out,
	err_msg_t *e) WUR;
/* Wipes and frees; NULL is fine. */
void noise_xx_free(noise_xx_t *x);

/* Refuse any peer but this node id (a dialer that knows whom it calls). */
void noise_xx_expect_peer(noise_xx_t *x, const uint8_t peer_id[IDENT_PUBLEN]);

/* One step: consumes bytes of in[0..n) (*consumed tells how many; it stops
 * at the end of the handshake, the rest belongs to the frames that follow),
 * and writes what must be sent into out[cap] (cap >= NOISE_XX_OUT_MAX;
 * *out_len may be 0). The initiator's first call, with n = 0, yields
 * message 1. Call again while bytes remain and the handshake is not done.
 * Any error is final (the handshake is dead and the connection should be
 * closed): ERR_FORMAT (bad length, MAC, key or identity signature, with a
 * message saying which), ERR_INVAL (wrong peer or state), ERR_FULL (cap). */
int noise_xx_step(noise_xx_t *x, const uint8_t *in, size_t n, size_t *consumed,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e) WUR;

/* 1 once the handshake completed (the initiator after sending message 3,
 * the responder after verifying it), then the accessors below apply. */
int noise_xx_done(const noise_xx_t *x);
int noise_xx_failed(const noise_xx_t *x);
/* The peer's verified node id (IDENT_PUBLEN bytes) once done, else NULL. */
const uint8_t *noise_xx_peer_id(const noise_xx_t *x);
/* The final handshake hash (NOISE_HASHLEN), for channel binding. */
const uint8_t *noise_xx_hash(const noise_xx_t *x);
/* The transport ciphers (tx: what we send; rx: what we receive). Once. */
int noise_xx_split(noise_xx_t *x, noise_cipher_t *tx, noise_cipher_t *rx) WUR;

/* Building blocks, public for tests and fuzzers that play a misbehaving
 * peer with the general engine. */
/* The prologue for a network id; returns its length, 0 if network is invalid. */
size_t noise_xx_prologue(const char *network, uint8_t out[NOISE_XX_PROLOGUE_MAX]);
/* The identity proof for role (NOISE_XX_ROLE_*), static key and h. */
void noise_xx_id_payload(const ident_t *id, int role, const uint8_t static_pub[NOISE_DHLEN],
	const uint8_t h[NOISE_HASHLEN], uint8_t out[NOISE_XX_ID_PAYLOAD]);
/* Checks a proof; on success copies the node id out. ERR_FORMAT with a
 * message otherwise. */
int noise_xx_id_verify(const uint8_t *payload, size_t len, int role,
	const uint8_t static_pub[NOISE_DHLEN], const uint8_t h[NOISE_HASHLEN],
	uint8_t node_id[IDENT_PUBLEN], err_msg_t *e) WUR;

#endif
