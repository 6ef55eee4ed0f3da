/* noise.h - the Noise Protocol Framework (revision 34), suite
 * 25519_ChaChaPoly_BLAKE2b, on libsodium's primitives.
 *
 * A general engine: CipherState, SymmetricState (inside noise.c) and
 * HandshakeState for every handshake pattern of the specification's
 * sections 7.4-7.5 (one-way, interactive, deferred), pre-messages, a
 * prologue, payloads, Split(), the pskN modifiers and Rekey(). It does no I/O:
 * the caller moves each handshake message (at most NOISE_MAX_MSG bytes) and
 * frames it on the wire as it likes. colony's own use of it, Noise XX with
 * node identities, is in noise_xx.h.
 *
 * Primitives: X25519 = crypto_scalarmult (a DH result of all zeros, from a
 * small-order public key, is refused), ChaChaPoly = the IETF
 * ChaCha20-Poly1305 AEAD (96-bit nonce = 4 zero bytes || n as u64
 * little-endian), HASH = unkeyed BLAKE2b-512 (crypto_generichash), HMAC and
 * HKDF over it exactly as the spec's section 4.3 defines them (block 128
 * bytes, output 64; keys truncated to 32 bytes).
 */
#ifndef COLONY_NET_NOISE_H
#define COLONY_NET_NOISE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define NOISE_DHLEN 32
#define NOISE_HASHLEN 64
#define NOISE_KEYLEN 32
#define NOISE_TAGLEN 16
#define NOISE_PSKLEN 32
#define NOISE_MAX_MSG 65535      /* the spec's limit on any Noise message */
#define NOISE_MAX_PSKS 4         /* psk tokens one pattern may carry */
/* The spec reserves n = 2^64-1 (Rekey uses it): the last usable nonce is 2^64-2. */
#define NOISE_NONCE_MAX UINT64_MAX

/* ---- CipherState ---- */

/* A key and a nonce. Plain memory: the owner embeds it where it likes and
 * must call noise_cipher_close, which wipes the key. */
typedef struct noise_cipher {
	uint8_t k[NOISE_KEYLEN];
	uint64_t n;
	uint8_t has_key;
	uint8_t dead;      /* a MAC failed or the nonces ran out: refuses everything */
} noise_cipher_t;

/* InitializeKey(k): k NULL = empty (encryption is the identity, handshake only). */
void noise_cipher_init(noise_cipher_t *c, const uint8_t *k);
void noise_cipher_close(noise_cipher_t *c);
int noise_cipher_has_key(const noise_cipher_t *c);

/* EncryptWithAd: out[len + NOISE_TAGLEN] (just out[len] without a key); out
 * may be pt itself (exactly, not a shifted overlap). n increments. Errors:
 * ERR_RANGE when n reached 2^64-1 (the cipher is then dead: rekeying cannot
 * renew nonces, only a new handshake can), ERR_INVAL on a dead cipher. */
int noise_cipher_encrypt(noise_cipher_t *c, const uint8_t *ad, size_t adlen,
	const uint8_t *pt, size_t len, uint8_t *out) WUR;

/* DecryptWithAd: ct[len] (len >= NOISE_TAGLEN with a key) into out[len -
 * NOISE_TAGLEN]; out may be ct itself. A failed authentication (ERR_FORMAT)
 * zeroes out and kills the cipher: every later call fails (ERR_INVAL), the
 * connection it belongs to is over. ERR_TRUNCATED if len < NOISE_TAGLEN. */
int noise_cipher_decrypt(noise_cipher_t *c, const uint8_t *ad, size_t adlen,
	const uint8_t *ct, size_t len, uint8_t *out) WUR;

/* Rekey(): k = the first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zero bytes).
 * n is kept. Both ends must rekey at the same point of the stream. */
void noise_cipher_rekey(noise_cipher_t *c);

/* SetNonce (tests reach nonce exhaustion with it). */
void noise_cipher_set_nonce(noise_cipher_t *c, uint64_t n);

/* ---- HandshakeState ---- */

typedef struct noise_hs noise_hs_t;

typedef struct noise_hs_cfg {
	/* "Noise_<pattern>_25519_ChaChaPoly_BLAKE2b"; <pattern> is a name of
	 * the spec (NN, XK1, I1X1 ...) with optional modifiers pskN joined by
	 * '+' (XXpsk3, NNpsk0+psk2). */
	const char *protocol;
	int initiator;
	const uint8_t *prologue;
	size_t prologue_len;
	const uint8_t *s_priv;   /* local static private key, if the pattern needs one */
	const uint8_t *e_priv;   /* fixed local ephemeral (test vectors only); NULL = fresh */
	const uint8_t *rs;       /* remote static public key of a pre-message */
	const uint8_t *re;       /* remote ephemeral public key of a pre-message */
	const uint8_t (*psks)[NOISE_PSKLEN];   /* one per psk token, in order */
	size_t n_psks;
} noise_hs_cfg_t;

/* What the handshake expects next. */
enum noise_action {
	NOISE_ACTION_WRITE = 1,  /* call noise_hs_write */
	NOISE_ACTION_READ,       /* call noise_hs_read */
	NOISE_ACTION_SPLIT,      /* handshake complete: call noise_hs_split */
	NOISE_ACTION_DONE,       /* split already */
	NOISE_ACTION_FAILED,     /* an error ended it; only noise_hs_free is useful */
};

/* Initialize(): copies everything it needs from cfg (keys included, into
 * sodium_malloc memory); the caller may wipe its copies afterwards.
 * ERR_UNSUPPORTED for an unknown pattern, modifier or suite; ERR_INVAL when
 * a key the pattern needs is missing or the psk count does not match. */
int noise_hs_new(const noise_hs_cfg_t *cfg, noise_hs_t **out, err_msg_t *e) WUR;
/* Wipes and frees; NULL is fine. */
void noise_hs_free(noise_hs_t *hs);

enum noise_action noise_hs_action(const noise_hs_t *hs);

/* Bytes the next message will take with a payload of plen bytes (0 if it is
 * not our turn to write). */
size_t noise_hs_write_size(const noise_hs_t *hs, size_t plen);

/* WriteMessage(payload) into out[cap]. ERR_FULL if cap is short (nothing
 * changes), ERR_RANGE if the message would exceed NOISE_MAX_MSG, ERR_INVAL
 * out of turn. Any other failure kills the handshake. */
int noise_hs_write(noise_hs_t *hs, const uint8_t *payload, size_t plen,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e) WUR;

/* ReadMessage(msg) into payload[cap] (cap >= len is always enough; payload
 * must not overlap msg). Any
 * failure (short message, bad MAC, small-order key, cap too small) kills
 * the handshake and zeroes payload[0..cap). */
int noise_hs_read(noise_hs_t *hs, const uint8_t *msg, size_t len,
	uint8_t *payload, size_t cap, size_t *plen, err_msg_t *e) WUR;

/* The same two steps in two phases, for payloads that must cover the
 * handshake hash up to their own position (noise_xx signs it): the tokens
 * (keys and DHs) first, then the payload. noise_hs_hash() between the two
 * calls is the h the payload is encrypted under. Same errors as above;
 * read_payload takes the rest of the message after the `used` bytes. */
int noise_hs_write_tokens(noise_hs_t *hs, uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e) WUR;
int noise_hs_write_payload(noise_hs_t *hs, const uint8_t *payload, size_t plen,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e) WUR;
int noise_hs_read_tokens(noise_hs_t *hs, const uint8_t *msg, size_t len, size_t *used, err_msg_t *e) WUR;
int noise_hs_read_payload(noise_hs_t *hs, const uint8_t *ct, size_t len,
	uint8_t *payload, size_t cap, size_t *plen, err_msg_t *e) WUR;

/* Split(): the two transport CipherStates, as this side uses them: tx
 * encrypts what it sends, rx decrypts what it receives (initiator: tx = c1,
 * rx = c2; responder: the reverse). One-way patterns only use the
 * initiator's tx. Wipes the chaining key; the handshake hash stays. */
int noise_hs_split(noise_hs_t *hs, noise_cipher_t *tx, noise_cipher_t *rx) WUR;

/* h: NOISE_HASHLEN bytes, the handshake hash so far (final once the
 * handshake is complete: channel binding). */
const uint8_t *noise_hs_hash(const noise_hs_t *hs);
/* The remote static public key, NULL until known. */
const uint8_t *noise_hs_remote_static(const noise_hs_t *hs);
/* The local static public key, NULL if none. */
const uint8_t *noise_hs_local_static(const noise_hs_t *hs);
/* 1 for initiator. */
int noise_hs_is_initiator(const noise_hs_t *hs);
/* Messages of the pattern and the index of the next one. */
int noise_hs_msg_count(const noise_hs_t *hs);
int noise_hs_msg_index(const noise_hs_t *hs);

#endif
