/* frame.c - encrypted length-prefixed frames (see frame.h). */
#include "net/frame.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

void frame_init(frame_chan_t *f, noise_cipher_t *tx, noise_cipher_t *rx)
{
	memset(f, 0, sizeof(*f));
	f->tx = *tx;
	f->rx = *rx;
	noise_cipher_close(tx);
	noise_cipher_close(rx);
	f->max_plain = FRAME_MAX_PLAIN;
	f->rekey_frames = FRAME_REKEY_FRAMES;
	f->rekey_bytes = FRAME_REKEY_BYTES;
}

static void buf_release(frame_chan_t *f)
{
	if (f->buf) {
		sodium_memzero(f->buf, f->buf_cap);
		free(f->buf);
	}
	f->buf = NULL;
	f->buf_cap = 0;
}

void frame_close(frame_chan_t *f)
{
	buf_release(f);
	sodium_memzero(f, sizeof(*f));
}

int frame_set_max(frame_chan_t *f, uint32_t max_plain)
{
	if (max_plain < 1 || max_plain > FRAME_MAX_PLAIN_LIMIT)
		return ERR_RANGE;
	f->max_plain = max_plain;
	return 0;
}

void frame_set_rekey(frame_chan_t *f, uint32_t frames, uint64_t bytes)
{
	f->rekey_frames = frames;
	f->rekey_bytes = bytes;
}

size_t frame_buffered(const frame_chan_t *f) { return f->buf_cap; }

/* Counts a frame of len plaintext bytes in one direction, rekeying at the
 * interval. */
static void count(frame_chan_t *f, noise_cipher_t *c, uint64_t *frames, uint64_t *bytes, size_t len)
{
	(*frames)++;
	*bytes += len;
	if ((f->rekey_frames && *frames >= f->rekey_frames) || (f->rekey_bytes && *bytes >= f->rekey_bytes)) {
		noise_cipher_rekey(c);
		*frames = 0;
		*bytes = 0;
	}
}

static void put_u32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

int frame_encode(frame_chan_t *f, const uint8_t *plain, size_t len,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e)
{
	*out_len = 0;
	if (f->failed)
		return err_set(e, ERR_INVAL, "frame channel is closed after an earlier error");
	if (len > f->max_plain)
		return err_set(e, ERR_RANGE, "frame of %zu bytes exceeds the maximum of %u", len, f->max_plain);
	size_t need = frame_wire_size(len);
	if (cap < need)
		return err_set(e, ERR_FULL, "frame needs %zu bytes, buffer holds %zu", need, cap);
	put_u32le(out, (uint32_t)(len + FRAME_TAG));
	int rc = noise_cipher_encrypt(&f->tx, out, FRAME_HDR, plain, len, out + FRAME_HDR);
	if (rc) {
		f->failed = 1;
		return err_set(e, rc, rc == ERR_RANGE ? "send nonces exhausted (2^64-1 frames): the session must end"
			: "send cipher unusable");
	}
	count(f, &f->tx, &f->tx_frames, &f->tx_bytes, len);
	f->frames_sent++;
	*out_len = need;
	return 0;
}

static int feed_fail(frame_chan_t *f, int rc)
{
	f->failed = 1;
	buf_release(f);
	return rc;
}

int frame_feed(frame_chan_t *f, const uint8_t *in, size_t n, size_t *consumed,
	const uint8_t **plain, size_t *plain_len, err_msg_t *e)
{
	*consumed = 0;
	*plain = NULL;
	*plain_len = 0;
	if (f->failed)
		return err_set(e, ERR_INVAL, "frame channel is closed after an earlier error");
	if (f->delivered) {
		/* The plaintext handed out last time is no longer the caller's; a
		 * big buffer goes back (wiped), a small one is reused. */
		f->delivered = 0;
		if (f->buf_cap > FRAME_KEEP_BUF)
			buf_release(f);
	}
	size_t pos = 0;
	while (pos < n) {
		if (!f->in_body) {
			while (f->hdr_have < FRAME_HDR && pos < n)
				f->hdr[f->hdr_have++] = in[pos++];
			if (f->hdr_have < FRAME_HDR)
				break;
			uint32_t len = (uint32_t)f->hdr[0] | (uint32_t)f->hdr[1] << 8 |
				(uint32_t)f->hdr[2] << 16 | (uint32_t)f->hdr[3] << 24;
			*consumed = pos;
			if (len < FRAME_TAG)
				return feed_fail(f, err_set(e, ERR_FORMAT, "frame %llu: length %u is shorter than the %d-byte tag",
					(unsigned long long)f->frames_received, len, FRAME_TAG));
			if ((uint64_t)len > (uint64_t)f->max_plain + FRAME_TAG)
				return feed_fail(f, err_set(e, ERR_RANGE, "frame %llu: length %u exceeds the maximum of %u",
					(unsigned long long)f->frames_received, len, f->max_plain + FRAME_TAG));
			if (f->buf_cap < len) {
				buf_release(f);
				f->buf = malloc(len);
				if (!f->buf)
					return feed_fail(f, err_set(e, ERR_NOMEM, "cannot allocate %u bytes for a frame", len));
				f->buf_cap = len;
			}
			f->need = len;
			f->have = 0;
			f->in_body = 1;
			continue;
		}
		const uint8_t *ct = f->buf;
		if (f->have == 0 && n - pos >= f->need) {
			/* The whole ciphertext is in the caller's chunk: decrypt it
			 * from there, sparing a copy. */
			ct = in + pos;
			pos += f->need;
		} else {
			size_t take = f->need - f->have;
			if (take > n - pos)
				take = n - pos;
			memcpy(f->buf + f->have, in + pos, take);
			f->have += (uint32_t)take;
			pos += take;
			if (f->have < f->need)
				break;
		}
		*consumed = pos;
		int rc = noise_cipher_decrypt(&f->rx, f->hdr, FRAME_HDR, ct, f->need, f->buf);
		if (rc)
			return feed_fail(f, err_set(e, rc, rc == ERR_FORMAT
				? "frame %llu: authentication failed (bad MAC: corrupted, forged or out of order)"
				: "frame %llu: receive nonces exhausted", (unsigned long long)f->frames_received));
		size_t len = f->need - FRAME_TAG;
		count(f, &f->rx, &f->rx_frames, &f->rx_bytes, len);
		f->frames_received++;
		f->in_body = 0;
		f->hdr_have = 0;
		f->delivered = 1;
		*plain = f->buf;
		*plain_len = len;
		return 0;
	}
	*consumed = pos;
	return 0;
}
