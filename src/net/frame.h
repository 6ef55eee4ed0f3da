/* frame.h - encrypted, length-prefixed frames after the handshake.
 *
 * A frame on the wire: u32 little-endian L (ciphertext bytes, tag included)
 * || ChaCha20-Poly1305 ciphertext of L bytes, encrypted with the direction's
 * transport CipherState (its nonce n counts frames from 0) and the 4 header
 * bytes as associated data. L >= 16 (an empty frame is just a tag);
 * L <= max_plain + 16, checked as soon as the 4 header bytes are in, before
 * anything is buffered.
 *
 * Rekey: after every FRAME_REKEY_FRAMES frames or FRAME_REKEY_BYTES bytes of
 * plaintext in one direction (whichever comes first), both ends apply
 * Noise's Rekey() to that direction's key. No message announces it: both
 * ends count the same frames. The nonce keeps counting.
 *
 * Failure: a bad MAC, a length out of bounds, exhausted nonces (2^64-1
 * frames) or a failed allocation end the channel (every later call fails):
 * the connection must be closed. Pure code, no I/O; not thread-safe (one
 * channel belongs to one connection on one loop).
 *
 * Memory: the receive buffer grows to the frame being received (at most
 * max_plain + 16 bytes) and is released after a frame larger than
 * FRAME_KEEP_BUF, so an idle channel holds only this struct.
 */
#ifndef COLONY_NET_FRAME_H
#define COLONY_NET_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "net/noise.h"

#define FRAME_HDR 4
#define FRAME_TAG NOISE_TAGLEN
/* Default largest plaintext of one frame (both ends must agree). */
#ifndef FRAME_MAX_PLAIN
#define FRAME_MAX_PLAIN (1u << 20)
#endif
/* Hard ceiling for frame_set_max (L must fit a u32 with room to spare). */
#define FRAME_MAX_PLAIN_LIMIT (1u << 30)
#ifndef FRAME_REKEY_FRAMES
#define FRAME_REKEY_FRAMES (1u << 16)
#endif
#ifndef FRAME_REKEY_BYTES
#define FRAME_REKEY_BYTES (256ull << 20)
#endif
/* A receive buffer up to this size is kept between frames. */
#ifndef FRAME_KEEP_BUF
#define FRAME_KEEP_BUF (64u << 10)
#endif

typedef struct frame_chan {
	noise_cipher_t tx, rx;
	uint32_t max_plain;
	uint32_t rekey_frames;
	uint64_t rekey_bytes;
	/* since the last rekey, per direction */
	uint64_t tx_frames, tx_bytes, rx_frames, rx_bytes;
	/* totals, for statistics */
	uint64_t frames_sent, frames_received;
	/* decoder */
	uint8_t hdr[FRAME_HDR];
	uint8_t hdr_have;
	uint8_t in_body;         /* header done, reading the ciphertext */
	uint8_t delivered;       /* buf holds a plaintext handed out last call */
	uint8_t failed;
	uint32_t need, have;     /* ciphertext bytes of the frame, received so far */
	uint8_t *buf;
	size_t buf_cap;
} frame_chan_t;

/* Takes the handshake's transport ciphers (tx: ours to send, rx: the
 * peer's), wiping the caller's copies. max_plain = FRAME_MAX_PLAIN, the
 * default rekey interval. */
void frame_init(frame_chan_t *f, noise_cipher_t *tx, noise_cipher_t *rx);
/* Wipes keys and buffers. */
void frame_close(frame_chan_t *f);

/* Largest plaintext accepted and sent (1..FRAME_MAX_PLAIN_LIMIT; both ends
 * must use the same). ERR_RANGE otherwise. */
int frame_set_max(frame_chan_t *f, uint32_t max_plain) WUR;
/* Rekey every `frames` frames or `bytes` bytes (0 = never by that measure).
 * Both ends must use the same values: they are protocol constants, this is
 * for tests. */
void frame_set_rekey(frame_chan_t *f, uint32_t frames, uint64_t bytes);

/* Bytes a frame of len plaintext bytes takes on the wire. */
static inline size_t frame_wire_size(size_t len) { return FRAME_HDR + len + FRAME_TAG; }

/* Encrypts plain[0..len) into out[cap] as one frame (frame_wire_size(len)
 * bytes). plain may be exactly out + FRAME_HDR (encrypting in place).
 * ERR_RANGE: len > max_plain (nothing changes) or nonces exhausted (fatal);
 * ERR_FULL: cap too small (nothing changes); ERR_INVAL: channel dead. */
int frame_encode(frame_chan_t *f, const uint8_t *plain, size_t len,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e) WUR;

/* Incremental decoder. Consumes in[0..n) up to the end of the first frame
 * it completes (*consumed tells how far) and then points *plain at its
 * plaintext (*plain_len bytes; owned by f, valid until the next
 * frame_feed or frame_close); *plain is NULL if no frame completed. Call
 * again with the rest. Errors are fatal: ERR_FORMAT (bad MAC, L < 16),
 * ERR_RANGE (L above max_plain + 16, or nonces exhausted), ERR_NOMEM,
 * ERR_INVAL (channel already dead). */
int frame_feed(frame_chan_t *f, const uint8_t *in, size_t n, size_t *consumed,
	const uint8_t **plain, size_t *plain_len, err_msg_t *e) WUR;

/* Bytes the decoder holds now (the buffer's capacity). */
size_t frame_buffered(const frame_chan_t *f);

#endif
