/* vocab_decode.c - tokens back to bytes: pieces (precomputed at load),
 * whole sequences, and the streaming decoder that only ever emits complete,
 * valid UTF-8 characters. */
#include "model/vocab_impl.h"

static int is_special(const vocab_t *v, int32_t id)
{
	return v->types[id] == VOCAB_TT_CONTROL || v->types[id] == VOCAB_TT_UNKNOWN;
}

const char *vocab_piece(const vocab_t *v, int32_t id, size_t *len)
{
	if (id < 0 || id >= v->n_tokens)
		return NULL;
	*len = v->piece_off[id + 1] - v->piece_off[id];
	return v->piece_pool + v->piece_off[id];
}

size_t vocab_max_piece_len(const vocab_t *v)
{
	return v->max_piece;
}

/* The piece as the flags want it: hidden control tokens are empty, and the
 * strip flag removes one leading space. *strip is cleared once a token that
 * is not CONTROL/UNKNOWN went by. */
static const char *piece_for(const vocab_t *v, int32_t id, int flags, int *strip, size_t *len)
{
	const char *p = vocab_piece(v, id, len);
	if (is_special(v, id)) {
		if (!(flags & VOCAB_DECODE_SPECIAL))
			*len = 0;
		return p;
	}
	if (*strip) {
		*strip = 0;
		if (*len > 0 && p[0] == ' ') {
			p++;
			(*len)--;
		}
	}
	return p;
}

static int strip_initial(const vocab_t *v, int flags)
{
	return (flags & VOCAB_DECODE_STRIP_SPACE) && v->add_space_prefix;
}

int vocab_token_to_piece(const vocab_t *v, int32_t id, int flags, char *buf, size_t cap, size_t *n)
{
	*n = 0;
	if (id < 0 || id >= v->n_tokens)
		return ERR_RANGE;
	int strip = strip_initial(v, flags);
	size_t len;
	const char *p = piece_for(v, id, flags, &strip, &len);
	*n = len;
	memcpy(buf, p, len < cap ? len : cap);
	return len > cap ? ERR_FULL : 0;
}

int vocab_detokenize(const vocab_t *v, const int32_t *ids, size_t n, int flags, char *buf, size_t cap, size_t *n_out)
{
	*n_out = 0;
	int strip = strip_initial(v, flags);
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0 || ids[i] >= v->n_tokens)
			return ERR_RANGE;
		size_t len;
		const char *p = piece_for(v, ids[i], flags, &strip, &len);
		if (total < cap)
			memcpy(buf + total, p, len < cap - total ? len : cap - total);
		total += len;
	}
	*n_out = total;
	return total > cap ? ERR_FULL : 0;
}

/* ---- streaming decoder */

void vocab_decoder_init(vocab_decoder_t *d, const vocab_t *v, int flags)
{
	memset(d, 0, sizeof(*d));
	d->v = v;
	d->flags = flags;
	d->strip_pending = strip_initial(v, flags);
}

static const uint8_t repl[3] = { 0xEF, 0xBF, 0xBD };

/* Runs the bytes held + p[0..n) through the validator. Writes to out only
 * what fits in cap, returns the total size, and leaves the bytes of an
 * incomplete final sequence in held/n_held. */
static size_t run(const uint8_t *held_in, uint8_t n_held_in, const uint8_t *p, size_t n,
		  uint8_t *out, size_t cap, uint8_t *held, uint8_t *n_held)
{
	/* Work over the concatenation without copying: at most 3 held bytes
	 * are in front, so a small window handles sequences that straddle. */
	size_t total = n_held_in + n, o = 0, i = 0;
	uint8_t win[4];
	while (i < total) {
		/* Gather up to 4 bytes starting at logical position i. */
		size_t m = 0;
		for (size_t j = i; j < total && m < 4; j++, m++)
			win[m] = j < n_held_in ? held_in[j] : p[j - n_held_in];
		int k = unicode_valid_prefix(win, m);
		if (k > 0) {
			for (int j = 0; j < k; j++, o++)
				if (o < cap)
					out[o] = win[j];
			i += (size_t)k;
		} else if (k < 0) {
			/* a valid but incomplete sequence at the very end: hold it */
			for (int j = 0; j < -k; j++)
				held[j] = win[j];
			*n_held = (uint8_t)-k;
			return o;
		} else {
			/* One U+FFFD for the maximal invalid subpart: the lead byte
			 * and whatever continuation bytes were still acceptable. */
			size_t bad = 1;
			for (size_t j = 2; j <= m; j++) {
				if (unicode_valid_prefix(win, j) < 0)
					bad = j;
				else
					break;
			}
			for (int j = 0; j < 3; j++, o++)
				if (o < cap)
					out[o] = repl[j];
			i += bad;
		}
	}
	*n_held = 0;
	return o;
}

int vocab_decoder_push(vocab_decoder_t *d, int32_t id, char *out, size_t cap, size_t *n_out)
{
	*n_out = 0;
	const vocab_t *v = d->v;
	if (id < 0 || id >= v->n_tokens)
		return ERR_RANGE;
	int strip = d->strip_pending;
	size_t len;
	const char *p = piece_for(v, id, d->flags, &strip, &len);
	uint8_t held[4], n_held;
	size_t need = run(d->held, d->n_held, (const uint8_t *)p, len, (uint8_t *)out, cap, held, &n_held);
	*n_out = need;
	if (need > cap)
		return ERR_FULL;   /* nothing consumed: the caller retries with more room */
	d->strip_pending = strip;
	memcpy(d->held, held, n_held);
	d->n_held = n_held;
	return 0;
}

int vocab_decoder_flush(vocab_decoder_t *d, char *out, size_t cap, size_t *n_out)
{
	*n_out = d->n_held ? 3 : 0;
	if (*n_out > cap)
		return ERR_FULL;
	if (d->n_held)
		memcpy(out, repl, 3);
	d->n_held = 0;
	return 0;
}
