/* unicode.c - UTF-8 helpers, the class lookup, GPT-2's byte map. */
#include "model/unicode.h"

enum unicode_class unicode_class_slow(uint32_t cp)
{
	if (cp > UNICODE_MAX)
		return UNICODE_OTHER;
	/* The last run whose first codepoint is <= cp. */
	uint32_t lo = 0, hi = unicode__n_runs;   /* invariant: runs[lo] <= cp < runs[hi] */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if ((unicode__runs[mid] >> 3) <= cp)
			lo = mid;
		else
			hi = mid;
	}
	return (enum unicode_class)(unicode__runs[lo] & 7);
}

size_t unicode_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
	uint8_t b = s[0];
	size_t len;
	uint32_t v;
	if (b < 0x80) {
		*cp = b;
		return 1;
	}
	if ((b & 0xE0) == 0xC0) {
		len = 2;
		v = b & 0x1F;
	} else if ((b & 0xF0) == 0xE0) {
		len = 3;
		v = b & 0x0F;
	} else if ((b & 0xF8) == 0xF0) {
		len = 4;
		v = b & 0x07;
	} else {   /* a continuation byte, or 0xF8..0xFF */
		*cp = UNICODE_REPLACEMENT;
		return 1;
	}
	if (n < len) {
		*cp = UNICODE_REPLACEMENT;
		return 1;
	}
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*cp = UNICODE_REPLACEMENT;
			return 1;
		}
		v = (v << 6) | (s[i] & 0x3F);
	}
	*cp = v;
	return len;
}

int unicode_valid_prefix(const uint8_t *s, size_t n)
{
	uint8_t b = s[0];
	if (b < 0x80)
		return 1;
	size_t len;
	uint8_t lo = 0x80, hi = 0xBF;   /* allowed range of the second byte */
	if (b >= 0xC2 && b <= 0xDF) {
		len = 2;
	} else if (b >= 0xE0 && b <= 0xEF) {
		len = 3;
		if (b == 0xE0)
			lo = 0xA0;          /* no overlongs */
		else if (b == 0xED)
			hi = 0x9F;          /* no surrogates */
	} else if (b >= 0xF0 && b <= 0xF4) {
		len = 4;
		if (b == 0xF0)
			lo = 0x90;
		else if (b == 0xF4)
			hi = 0x8F;          /* <= U+10FFFF */
	} else {
		return 0;
	}
	for (size_t i = 1; i < len; i++) {
		if (i >= n)
			return -(int)i;
		uint8_t c = s[i];
		if (i == 1 ? (c < lo || c > hi) : (c & 0xC0) != 0x80)
			return 0;
	}
	return (int)len;
}

size_t unicode_encode(uint32_t cp, uint8_t out[4])
{
	if (cp < 0x80) {
		out[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t)(0xC0 | (cp >> 6));
		out[1] = (uint8_t)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (uint8_t)(0xE0 | (cp >> 12));
		out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (uint8_t)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (uint8_t)(0xF0 | ((cp >> 18) & 0x07));
	out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (uint8_t)(0x80 | (cp & 0x3F));
	return 4;
}

/* Bytes GPT-2 keeps as themselves: the printable Latin-1 ones. */
static int byte_is_direct(unsigned b)
{
	return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t unicode_byte_to_cp(uint8_t b)
{
	if (byte_is_direct(b))
		return b;
	/* The k-th byte (in byte order) that is not direct maps to U+0100 + k:
	 * 0x00..0x20 are k = 0..32, 0x7F..0xA0 are 33..66, 0xAD is 67. */
	if (b <= 0x20)
		return 0x100u + b;
	if (b <= 0xA0)
		return 0x100u + 33 + (b - 0x7Fu);
	return 0x100u + 67;   /* 0xAD */
}

int unicode_cp_to_byte(uint32_t cp)
{
	if (cp < 0x100)
		return byte_is_direct(cp) ? (int)cp : -1;
	if (cp < 0x100 + 33)
		return (int)(cp - 0x100);
	if (cp < 0x100 + 67)
		return (int)(cp - 0x100 - 33 + 0x7F);
	if (cp == 0x100 + 67)
		return 0xAD;
	return -1;
}
