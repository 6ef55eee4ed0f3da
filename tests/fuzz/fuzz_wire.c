/* fuzz_wire.c - libFuzzer target for the wire codec: any input either is
 * refused with a message, or decodes into a message that re-encodes to the
 * very same bytes (the codec is canonical). Hidden states of FORWARD
 * messages are decoded too, and F32/F16 ones re-encode to the same bytes;
 * so are the vouchers and receipts that VOUCHER and RECEIPT carry.
 * Under the replay driver the corpus in tests/fuzz/corpus/wire/ runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "market/voucher.h"
#include "net/wire.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_wire: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

static uint8_t out[WIRE_MAX_MSG];
static float vals[WIRE_MAX_MSG];        /* enough for any decodable shape */
static uint8_t hid[WIRE_MAX_MSG];

static void check_hidden(const wire_forward_t *f)
{
	err_msg_t e = { "" };
	size_t nv = (size_t)f->n_tokens * f->dim;
	FUZZ_ASSERT(nv <= sizeof(vals) / sizeof(vals[0]));
	int rc = wire_hidden_decode(f->enc, f->data, f->data_len, f->n_tokens, f->dim, vals, &e);
	if (rc) {
		FUZZ_ASSERT(rc == ERR_FORMAT && e.msg[0]);
		return;
	}
	rc = wire_hidden_encode(f->enc, vals, f->n_tokens, f->dim, hid, sizeof(hid), &e);
	if (f->enc == WIRE_ENC_Q8) {
		/* values d * q with |q| <= 128 and a finite f16 d re-encode, maybe
		 * to other bytes (the scale is recomputed). */
		FUZZ_ASSERT(rc == 0 || rc == ERR_RANGE);
		return;
	}
	FUZZ_ASSERT(rc == 0);
	FUZZ_ASSERT(memcmp(hid, f->data, f->data_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	wire_msg_t m;
	err_msg_t e = { "" };
	int rc = wire_decode(data, size, &m, &e);
	if (rc) {
		FUZZ_ASSERT(rc < 0 && rc >= ERR_CODE_MIN);
		FUZZ_ASSERT(e.msg[0] != 0);
		return 0;
	}
	size_t n = 0;
	FUZZ_ASSERT(wire_encoded_size(&m) == size);
	rc = wire_encode(&m, out, sizeof(out), &n, &e);
	FUZZ_ASSERT(rc == 0);
	FUZZ_ASSERT(n == size && memcmp(out, data, size) == 0);
	/* views stay inside the input */
	if (m.type == WIRE_FORWARD || m.type == WIRE_FORWARD_RESULT) {
		FUZZ_ASSERT(m.u.forward.data >= data && m.u.forward.data + m.u.forward.data_len <= data + size);
		check_hidden(&m.u.forward);
	}
	if (m.type == WIRE_PROBE_DATA && m.u.probe.n_bytes)
		FUZZ_ASSERT(m.u.probe.data >= data && m.u.probe.data + m.u.probe.n_bytes <= data + size);
	/* the market records inside pay messages: refused with a message, or
	 * canonical too */
	if (m.type == WIRE_VOUCHER || m.type == WIRE_RECEIPT) {
		voucher_t v;
		receipt_t r;
		uint8_t rec[RECEIPT_SIZE];
		int vr = m.type == WIRE_VOUCHER ? voucher_decode(m.u.pay.voucher, WIRE_VOUCHER_LEN, &v, &e)
						: receipt_decode(m.u.pay.receipt, WIRE_RECEIPT_LEN, &r, &e);
		if (vr) {
			FUZZ_ASSERT(vr < 0 && e.msg[0] != 0);
		} else if (m.type == WIRE_VOUCHER) {
			FUZZ_ASSERT(voucher_encode(&v, rec) == 0);
			FUZZ_ASSERT(memcmp(rec, m.u.pay.voucher, WIRE_VOUCHER_LEN) == 0);
		} else {
			FUZZ_ASSERT(receipt_encode(&r, rec) == 0);
			FUZZ_ASSERT(memcmp(rec, m.u.pay.receipt, WIRE_RECEIPT_LEN) == 0);
		}
	}
	/* a short output buffer is refused, never overrun */
	if (size > 1) {
		rc = wire_encode(&m, out, size - 1, &n, &e);
		FUZZ_ASSERT(rc == ERR_FULL);
	}
	return 0;
}
