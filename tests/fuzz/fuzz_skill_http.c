/* fuzz_skill_http.c - libFuzzer target for what a gateway reads from another
 * gateway named by a signed DHT record but otherwise untrusted (src/api/skill.c
 * and src/api/skill_pay.c). Each input goes through three parsers:
 *  - the HTTP/1.1 response parser of the skill relay: the input is written
 *    into one end of a socket pair, which is then closed; the parser must
 *    return an error with a message or a body no longer than the input;
 *  - the terms of a 402 answer (spay_terms_parse);
 *  - the body of POST /v1/pay/voucher (spay_voucher_body_parse): refused
 *    with 400 and a message, or a voucher with sequence > 0 and an amount
 *    in range;
 *  - the reader of a paid answer (SSE lines, ": colony-receipt" lines checked
 *    against a channel of fixed keys, so a seed can carry a receipt that
 *    verifies), fed whole and then in two parts.
 * None may crash, hang or read out of bounds. Under the replay driver the
 * corpus in tests/fuzz/corpus/skill_http/ runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/skill.h"
#include "api/skill_pay.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_skill_http: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

/* The channel the paid-answer reader checks receipts against: buyer and
 * provider keys from fixed seeds (1s and 2s), channel id all 3s, fee 1000,
 * 2500000 per 1M output tokens, chunk 8, budget 1e6. */
static void paid_reader(const uint8_t *data, size_t size)
{
	static wallet_t *buyer;
	static chan_terms_t t;
	if (!buyer) {
		uint8_t seed[WALLET_SEEDLEN];
		wallet_t *prov = NULL;
		memset(seed, 2, sizeof(seed));
		if (wallet_new(seed, &prov) != 0)
			return;
		memset(seed, 1, sizeof(seed));
		if (wallet_new(seed, &buyer) != 0)
			return;
		memset(t.channel, 3, sizeof(t.channel));
		memcpy(t.buyer, wallet_pub(buyer), WALLET_PUBLEN);
		memcpy(t.provider, wallet_pub(prov), WALLET_PUBLEN);
		wallet_free(prov);
		t.budget = 1000000;
		t.expiry = INT64_MAX;
		t.price_in = 1000 * (amount_t)AMOUNT_PER_TOKENS;
		t.price_out = 2500000;
		t.chunk = 8;
	}
	for (int split = 0; split < 2; split++) {
		spay_relay_t *r = spay_relay_test_new(&t, buyer, split, !split, 64);
		if (!r)
			return;
		oai_err_t err;
		size_t half = split ? size / 2 : size;
		err.message[0] = 0;
		int rc = spay_relay_test_feed(r, (const char *)data, half, &err);
		if (!rc && half < size)
			rc = spay_relay_test_feed(r, (const char *)data + half, size - half, &err);
		if (rc)
			FUZZ_ASSERT(rc >= 400 && rc <= 599 && err.message[0]);
		spay_relay_free(r);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	spay_terms_t terms;
	err_msg_t te = { "" };
	if (size <= 64 * 1024 && spay_terms_parse((const char *)data, size, &terms, &te) != 0)
		FUZZ_ASSERT(te.msg[0]);
	if (size <= 64 * 1024) {
		voucher_t v;
		oai_err_t ve;
		memset(&ve, 0, sizeof(ve));
		int vs = spay_voucher_body_parse((const char *)data, size, &v, &ve);
		if (vs)
			FUZZ_ASSERT(vs == 400 && ve.message[0]);
		else
			FUZZ_ASSERT(v.seq > 0 && v.amount >= 0);
	}
	if (size <= 64 * 1024)
		paid_reader(data, size);
	/* the socket buffer holds the whole input, so one write then close */
	if (size > 64 * 1024)
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return 0;
	int sz = 256 * 1024;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	size_t off = 0;
	while (off < size) {
		ssize_t k = write(sv[0], data + off, size - off);
		if (k <= 0)
			break;
		off += (size_t)k;
	}
	close(sv[0]);
	skill_fwd_t *f = NULL;
	err_msg_t e = { "" };
	if (skill_fwd_from_fd(sv[1], &f, &e) != 0)
		return 0;
	int ready = 0, rc = 0;
	for (int i = 0; i < 4 && !ready && rc == 0; i++)
		rc = skill_fwd_head(f, 50, &ready, &e);
	if (rc) {
		FUZZ_ASSERT(e.msg[0]);
	} else if (ready) {
		FUZZ_ASSERT(skill_fwd_status(f) >= 100 && skill_fwd_status(f) <= 999);
		size_t total = 0;
		char buf[4096];
		for (int i = 0; i < 1024 && !skill_fwd_done(f); i++) {
			size_t n = 0;
			e.msg[0] = 0;
			rc = skill_fwd_read(f, buf, sizeof(buf), 10, &n, &e);
			if (rc) {
				FUZZ_ASSERT(e.msg[0]);
				break;
			}
			FUZZ_ASSERT(n <= sizeof(buf));
			total += n;
			FUZZ_ASSERT(total <= size);
			if (n == 0)
				break;
		}
	}
	skill_fwd_free(f);
	return 0;
}
