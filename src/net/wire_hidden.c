/* wire_hidden.c - hidden-state encodings of FORWARD / FORWARD_RESULT
 * (see wire.h; layouts in docs/PROTOCOL.md). All little-endian, written
 * byte by byte so the format does not depend on the host. */
#include "net/wire.h"

#include <math.h>
#include <string.h>

#include "kern/kern.h"

size_t wire_hidden_row_size(int enc, uint32_t dim)
{
	if (dim < 1 || dim > WIRE_MAX_DIM)
		return 0;
	switch (enc) {
	case WIRE_ENC_F32: return (size_t)dim * 4;
	case WIRE_ENC_F16: return (size_t)dim * 2;
	case WIRE_ENC_Q8:
		if (dim % WIRE_Q8_BLOCK)
			return 0;
		return (size_t)dim / WIRE_Q8_BLOCK * WIRE_Q8_BLOCK_BYTES;
	default: return 0;
	}
}

size_t wire_hidden_size(int enc, uint32_t n, uint32_t dim)
{
	/* n <= 2^32 and a row <= 2^18 bytes: the product fits 64 bits. */
	return (size_t)((uint64_t)wire_hidden_row_size(enc, dim) * n);
}

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

#define F16_MAX 65504.0f

/* One Q8 block, the same arithmetic as the Q8_0 reference quantizer:
 * d = max|x| / 127 (stored as f16), q = round-half-even(x / d). */
static int q8_block(const float *x, uint8_t *out)
{
	float amax = 0.0f;
	for (int j = 0; j < WIRE_Q8_BLOCK; j++)
		amax = fmaxf(amax, fabsf(x[j]));
	float d = amax / 127.0f;
	if (d > F16_MAX)
		return ERR_RANGE;
	float id = d != 0.0f ? 1.0f / d : 0.0f;
	uint16_t h = kern_f32_to_f16(d);
	out[0] = (uint8_t)h;
	out[1] = (uint8_t)(h >> 8);
	for (int j = 0; j < WIRE_Q8_BLOCK; j++) {
		float v = x[j] * id;
		v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
		out[2 + j] = (uint8_t)(int8_t)nearbyintf(v);
	}
	return 0;
}

int wire_hidden_encode(int enc, const float *x, uint32_t n, uint32_t dim,
	uint8_t *out, size_t cap, err_msg_t *e)
{
	size_t need = wire_hidden_size(enc, n, dim);
	if (need == 0 && n != 0)
		return err_set(e, ERR_INVAL, "hidden states: encoding %d cannot hold rows of %u values", enc, dim);
	if (need > cap)
		return err_set(e, ERR_FULL, "hidden states need %zu bytes, buffer holds %zu", need, cap);
	size_t total = (size_t)n * dim;
	for (size_t i = 0; i < total; i++)
		if (!isfinite(x[i]))
			return err_set(e, ERR_RANGE, "hidden state [%zu][%zu] is not finite", i / dim, i % dim);
	uint8_t *p = out;
	switch (enc) {
	case WIRE_ENC_F32:
		for (size_t i = 0; i < total; i++, p += 4) {
			uint32_t u = f32_bits(x[i]);
			p[0] = (uint8_t)u; p[1] = (uint8_t)(u >> 8); p[2] = (uint8_t)(u >> 16); p[3] = (uint8_t)(u >> 24);
		}
		return 0;
	case WIRE_ENC_F16:
		for (size_t i = 0; i < total; i++, p += 2) {
			if (fabsf(x[i]) > F16_MAX)
				return err_set(e, ERR_RANGE, "hidden state [%zu][%zu] = %g overflows f16",
					i / dim, i % dim, (double)x[i]);
			uint16_t h = kern_f32_to_f16(x[i]);
			p[0] = (uint8_t)h;
			p[1] = (uint8_t)(h >> 8);
		}
		return 0;
	case WIRE_ENC_Q8:
		for (size_t i = 0; i < total; i += WIRE_Q8_BLOCK, p += WIRE_Q8_BLOCK_BYTES)
			if (q8_block(x + i, p) != 0)
				return err_set(e, ERR_RANGE, "hidden states row %zu: a Q8 block's scale overflows f16",
					i / dim);
		return 0;
	}
	return err_set(e, ERR_INVAL, "unknown hidden-state encoding %d", enc);
}

int wire_hidden_decode(int enc, const uint8_t *data, size_t len, uint32_t n, uint32_t dim,
	float *y, err_msg_t *e)
{
	size_t need = wire_hidden_size(enc, n, dim);
	if ((need == 0 && n != 0) || len != need)
		return err_set(e, ERR_FORMAT, "hidden states: %zu bytes for %u x %u in encoding %d (expected %zu)",
			len, n, dim, enc, need);
	size_t total = (size_t)n * dim;
	const uint8_t *p = data;
	switch (enc) {
	case WIRE_ENC_F32:
		for (size_t i = 0; i < total; i++, p += 4) {
			y[i] = bits_f32((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
			if (!isfinite(y[i]))
				return err_set(e, ERR_FORMAT, "hidden state [%zu][%zu] is not finite", i / dim, i % dim);
		}
		return 0;
	case WIRE_ENC_F16:
		for (size_t i = 0; i < total; i++, p += 2) {
			y[i] = kern_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
			if (!isfinite(y[i]))
				return err_set(e, ERR_FORMAT, "hidden state [%zu][%zu] is not finite", i / dim, i % dim);
		}
		return 0;
	case WIRE_ENC_Q8:
		for (size_t i = 0; i < total; i += WIRE_Q8_BLOCK, p += WIRE_Q8_BLOCK_BYTES) {
			float d = kern_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
			if (!isfinite(d))
				return err_set(e, ERR_FORMAT, "hidden states row %zu: a Q8 scale is not finite", i / dim);
			for (int j = 0; j < WIRE_Q8_BLOCK; j++)
				y[i + j] = d * (float)(int8_t)p[2 + j];
		}
		return 0;
	}
	return err_set(e, ERR_FORMAT, "unknown hidden-state encoding %d", enc);
}
