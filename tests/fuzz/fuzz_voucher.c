/* fuzz_voucher.c - libFuzzer target for the market's record decoders
 * (src/market/voucher.h). Any input is either refused with a message and
 * an error code, or decodes into a voucher (or receipt) that re-encodes to
 * the very same bytes (the codec is canonical). A decoded voucher is then
 * verified against a fixed buyer key and offered to a provider's channel
 * state, whose invariants must hold whatever it accepts: the kept voucher
 * never exceeds the budget, never decreases, and is always correctly priced.
 * Under the replay driver, ctest runs tests/fuzz/corpus/voucher/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "market/channel.h"
#include "market/voucher.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_voucher: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

static wallet_t *g_buyer;

static void keys_once(void)
{
	if (g_buyer)
		return;
	uint8_t seed[WALLET_SEEDLEN];
	memset(seed, 0x42, sizeof(seed));   /* the corpus was signed with this key */
	FUZZ_ASSERT(wallet_new(seed, &g_buyer) == 0);
}

static void check_channel(const voucher_t *v)
{
	chan_terms_t t;
	memset(&t, 0, sizeof(t));
	memcpy(t.channel, v->channel, MARKET_IDLEN);   /* so the channel check passes */
	memcpy(t.buyer, wallet_pub(g_buyer), WALLET_PUBLEN);
	t.budget = 1000000;
	t.expiry = 2000000000;
	t.price_in = 2000000;
	t.price_out = 6000000;
	t.chunk = 16;
	chan_provider_t c;
	FUZZ_ASSERT(chan_provider_init(&c, &t) == 0);
	err_msg_t e = { "" };
	for (int round = 0; round < 2; round++) {
		voucher_t before = c.last;
		int rc = chan_provider_accept(&c, v, 1700000000, &e);
		if (rc) {
			FUZZ_ASSERT(rc >= VOUCHER_E_MIN && rc <= VOUCHER_E_FORGED);
			FUZZ_ASSERT(memcmp(&before, &c.last, sizeof(before)) == 0);
			continue;
		}
		FUZZ_ASSERT(round == 0);            /* the second time it is a replay */
		amount_t want;
		FUZZ_ASSERT(amount_charge2(v->in_tokens, t.price_in, v->out_tokens, t.price_out, &want) == 0);
		FUZZ_ASSERT(c.last.amount == want && want <= t.budget);
		FUZZ_ASSERT(c.last.seq > before.seq && c.last.amount >= before.amount);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	keys_once();
	err_msg_t e = { "" };
	voucher_t v;
	uint8_t out[RECEIPT_SIZE];
	int rc = voucher_decode(data, size, &v, &e);
	if (rc) {
		FUZZ_ASSERT(rc < 0 && rc >= ERR_CODE_MIN && e.msg[0]);
	} else {
		FUZZ_ASSERT(size == VOUCHER_SIZE);
		FUZZ_ASSERT(voucher_encode(&v, out) == 0);
		FUZZ_ASSERT(memcmp(out, data, size) == 0);
		rc = voucher_verify(&v, wallet_pub(g_buyer));
		FUZZ_ASSERT(rc == 0 || rc == VOUCHER_E_FORGED);
		check_channel(&v);
	}
	receipt_t r;
	e.msg[0] = 0;
	rc = receipt_decode(data, size, &r, &e);
	if (rc) {
		FUZZ_ASSERT(rc < 0 && rc >= ERR_CODE_MIN && e.msg[0]);
	} else {
		FUZZ_ASSERT(size == RECEIPT_SIZE);
		FUZZ_ASSERT(receipt_encode(&r, out) == 0);
		FUZZ_ASSERT(memcmp(out, data, size) == 0);
		rc = receipt_verify(&r, wallet_pub(g_buyer));
		FUZZ_ASSERT(rc == 0 || rc == VOUCHER_E_FORGED);
	}
	return 0;
}
