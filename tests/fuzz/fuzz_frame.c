/* fuzz_frame.c - libFuzzer target for the frame decoder.
 *
 * Input: byte 0 = mode, byte 1 = the receiver's max_plain selector, byte 2
 * = seed of the chunk sizes; the rest is either
 *   mode even: raw bytes fed to the decoder, or
 *   mode odd:  a script building a stream of genuine frames (op byte:
 *     0 frame of a length from the next byte, its plaintext taken from the
 *     input; 1 flip a bit of the stream so far; 2 append a raw byte;
 *     3 truncate the stream by a byte)
 * fed to the decoder in arbitrary chunks. Checked: the decoder always makes
 * progress, never hands out more than max_plain bytes, never buffers more
 * than max_plain + 16, stays dead after an error, delivers only genuine
 * frames in order, and on an untampered stream exactly those sent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/frame.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_frame: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

#define MAX_STREAM (1 << 16)
#define MAX_FRAMES 256

static uint8_t stream[MAX_STREAM];
static size_t frame_len[MAX_FRAMES], frame_off[MAX_FRAMES];
static uint8_t plain_store[MAX_STREAM];

static void chans(frame_chan_t *tx, frame_chan_t *rx)
{
	uint8_t k1[32], k2[32];
	for (int i = 0; i < 32; i++) {
		k1[i] = (uint8_t)(i * 7 + 1);
		k2[i] = (uint8_t)(i * 13 + 5);
	}
	noise_cipher_t a, b, c, d;
	noise_cipher_init(&a, k1);
	noise_cipher_init(&b, k2);
	noise_cipher_init(&c, k2);
	noise_cipher_init(&d, k1);
	frame_init(tx, &a, &b);
	frame_init(rx, &c, &d);
}

static uint32_t rng(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	int mode = data[0];
	uint32_t max_plain = data[1] == 0 ? FRAME_MAX_PLAIN : (uint32_t)data[1] * 37;
	uint32_t seed = data[2] | 0x100u;
	data += 3;
	size -= 3;
	frame_chan_t tx, rx;
	chans(&tx, &rx);
	FUZZ_ASSERT(frame_set_max(&tx, max_plain) == 0 && frame_set_max(&rx, max_plain) == 0);
	if (mode & 2) {   /* exercise rekeying too */
		frame_set_rekey(&tx, 2 + (mode >> 4), 100);
		frame_set_rekey(&rx, 2 + (mode >> 4), 100);
	}
	const uint8_t *in = data;
	size_t n = size, sent = 0;
	int tampered = 0;
	err_msg_t e = { "" };
	if (mode & 1) {
		size_t len = 0, pos = 0, poff = 0;
		while (pos < size) {
			uint8_t op = data[pos++] & 3;
			if (op == 0 && pos < size) {
				size_t pl = data[pos++] * 3u;
				if (pl > size - pos)
					pl = size - pos;
				if (sent >= MAX_FRAMES || frame_wire_size(pl) > MAX_STREAM - len)
					break;
				size_t w = 0;
				int rc = frame_encode(&tx, data + pos, pl, stream + len, MAX_STREAM - len, &w, &e);
				if (rc) {
					FUZZ_ASSERT(rc == ERR_RANGE && pl > max_plain);
					pos += pl;
					continue;
				}
				memcpy(plain_store + poff, data + pos, pl);
				frame_off[sent] = poff;
				frame_len[sent++] = pl;
				poff += pl;
				pos += pl;
				len += w;
			} else if (op == 1 && pos + 1 < size && len) {
				size_t at = (data[pos] | (size_t)data[pos + 1] << 8) % len;
				stream[at] ^= (uint8_t)(1u << (data[pos] & 7));
				pos += 2;
				tampered = 1;
			} else if (op == 2 && pos < size && len < MAX_STREAM) {
				stream[len++] = data[pos++];
				tampered = 1;
			} else if (op == 3 && len) {
				len--;
				tampered = 1;
			}
		}
		in = stream;
		n = len;
	}
	size_t got = 0;
	int failed = 0;
	while (n > 0) {
		size_t chunk = 1 + rng(&seed) % (n < 300 ? n : 300);
		if (chunk > n)
			chunk = n;
		size_t used = 0, pl = 0;
		const uint8_t *p = NULL;
		int rc = frame_feed(&rx, in, chunk, &used, &p, &pl, &e);
		FUZZ_ASSERT(used <= chunk);
		FUZZ_ASSERT(frame_buffered(&rx) <= (size_t)max_plain + FRAME_TAG);
		if (rc) {
			FUZZ_ASSERT(rc == ERR_FORMAT || rc == ERR_RANGE);
			FUZZ_ASSERT(p == NULL && e.msg[0]);
			FUZZ_ASSERT(frame_feed(&rx, in, chunk, &used, &p, &pl, &e) == ERR_INVAL);
			failed = 1;
			break;
		}
		FUZZ_ASSERT(used > 0 || p != NULL);
		if (p) {
			FUZZ_ASSERT(pl <= max_plain);
			if (mode & 1) {
				/* A frame that authenticates is the genuine one, tampered
				 * stream or not: nothing can be forged or reordered. */
				FUZZ_ASSERT(got < sent);
				FUZZ_ASSERT(pl == frame_len[got]);
				FUZZ_ASSERT(memcmp(p, plain_store + frame_off[got], pl) == 0);
			}
			got++;
		}
		in += used;
		n -= used;
	}
	if ((mode & 1) && !tampered) {
		FUZZ_ASSERT(!failed);
		FUZZ_ASSERT(got == sent);
	}
	frame_close(&tx);
	frame_close(&rx);
	return 0;
}
