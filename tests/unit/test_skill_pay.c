/* test_skill_pay.c - paid skill calls (src/api/skill_pay.c) against a real
 * SQLite ledger in a temporary directory: the provider's checks of the
 * channel and of each voucher, bounded credit, receipts answered by the
 * buyer's metering, the redeem at the end of a call and the charge formula;
 * the buyer's reader of the paid answer (receipts checked, bad ones end the
 * call); the 402 terms round trip. */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "api/skill_pay.h"
#include "market/ledger.h"
#include "test.h"

#define FEE 1000
#define PRICE 2222222
#define CHUNK 8

static char root[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st, (void)flag, (void)f;
	return remove(p);
}

/* A ledger, a provider and a buyer (each its own wallet), and a channel
 * buyer -> provider of `budget` with FEE / PRICE. */
typedef struct world {
	ledger_t *l;
	spay_t *prov, *buy;
	wallet_t *bw;               /* the buyer's key, to sign by hand */
	chan_buyer_t b;
	skill_def_t sk;
} world_t;

static int world_init(world_t *w, amount_t budget)
{
	memset(w, 0, sizeof(*w));
	snprintf(root, sizeof(root), "/tmp/colony-skillpay.XXXXXX");
	if (!mkdtemp(root))
		return -1;
	char p[512];
	err_msg_t e = { { 0 } };
	snprintf(p, sizeof(p), "%s/ledger.db", root);
	if (ledger_open(p, NULL, &w->l, &e))
		return -1;
	spay_cfg_t c = { 0 };
	c.settle = ledger_settle(w->l);
	c.chunk = CHUNK;
	snprintf(p, sizeof(p), "%s/prov", root);
	c.wallet_home = p;
	if (spay_new(&c, &w->prov, &e))
		return -1;
	char q[512];
	snprintf(q, sizeof(q), "%s/buy", root);
	c.wallet_home = q;
	if (spay_new(&c, &w->buy, &e))
		return -1;
	snprintf(q, sizeof(q), "%s/buy/wallet.key", root);
	if (wallet_load_file(q, &w->bw, &e))
		return -1;
	if (ledger_deposit(w->l, spay_wallet(w->buy), 10 * AMOUNT_UNIT, &e))
		return -1;
	settle_reserve_t r;
	memset(&r, 0, sizeof(r));
	memcpy(r.buyer, spay_wallet(w->buy), WALLET_PUBLEN);
	memcpy(r.provider, spay_wallet(w->prov), WALLET_PUBLEN);
	r.budget = budget;
	r.expiry = (int64_t)time(NULL) + 3600;
	randombytes_buf(r.nonce, sizeof(r.nonce));
	chan_terms_t t;
	memset(&t, 0, sizeof(t));
	if (ledger_reserve(w->l, &r, (int64_t)time(NULL), t.channel, &e))
		return -1;
	memcpy(t.buyer, r.buyer, WALLET_PUBLEN);
	memcpy(t.provider, r.provider, WALLET_PUBLEN);
	t.budget = budget;
	t.expiry = r.expiry;
	t.price_in = (amount_t)FEE * AMOUNT_PER_TOKENS;
	t.price_out = PRICE;
	t.chunk = CHUNK;
	if (chan_buyer_init(&w->b, &t))
		return -1;
	snprintf(w->sk.name, sizeof(w->sk.name), "story");
	w->sk.fee_call = FEE;
	w->sk.price_out = PRICE;
	return 0;
}

static void world_close(world_t *w)
{
	spay_free(w->prov);
	spay_free(w->buy);
	wallet_free(w->bw);
	ledger_free(w->l);
	if (root[0])
		nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	root[0] = 0;
}

static void hex_of(const voucher_t *v, char out[2 * VOUCHER_SIZE + 1])
{
	uint8_t b[VOUCHER_SIZE];
	if (voucher_encode(v, b) != 0)
		out[0] = 0;
	else
		sodium_bin2hex(out, 2 * VOUCHER_SIZE + 1, b, VOUCHER_SIZE);
}

/* The buyer's voucher opening one more call: its headers' values. */
static void call_voucher(world_t *w, char ch[65], char bw[65], char vh[2 * VOUCHER_SIZE + 1])
{
	voucher_t v;
	err_msg_t e = { { 0 } };
	CHECK_OK(chan_buyer_count(&w->b, 1, 0));
	CHECK_OK(chan_buyer_voucher(&w->b, w->bw, (int64_t)time(NULL), NULL, &v, &e));
	wallet_addr_str(w->b.t.channel, ch);
	wallet_addr_str(w->b.t.buyer, bw);
	hex_of(&v, vh);
}

/* The provider's receipt line for `done` tokens, answered by the buyer:
 * the voucher's hex in vh. */
static int answer(world_t *w, spay_call_t *c, uint64_t done, char vh[2 * VOUCHER_SIZE + 1])
{
	char line[400];
	size_t n = spay_call_receipt(c, done, line, sizeof(line));
	if (n < 3 || line[n - 1] != '\n' || line[n - 2] != '\n')
		return -1;
	receipt_t r;
	err_msg_t e = { { 0 } };
	if (spay_receipt_parse(line, n - 2, &r, &e))
		return -1;
	if (chan_buyer_count(&w->b, 0, r.out_tokens - w->b.out_tokens))
		return -1;
	voucher_t v;
	if (chan_buyer_answer(&w->b, &r, w->bw, (int64_t)time(NULL), &v, &e))
		return -1;
	hex_of(&v, vh);
	return 0;
}

static amount_t charge(uint64_t calls, uint64_t out)
{
	return (amount_t)calls * FEE + (amount_t)((out * (uint64_t)PRICE + 999999) / 1000000);
}

static void test_call_credit_redeem(void)
{
	world_t w;
	REQUIRE(world_init(&w, 100000) == 0);
	char ch[65], bw[65], vh[2 * VOUCHER_SIZE + 1];
	oai_err_t err;
	spay_call_t *c = NULL;
	/* malformed headers */
	CHECK_EQ_INT(spay_call_open(w.prov, &w.sk, "zz", "zz", "zz", &c, &err), 400);
	call_voucher(&w, ch, bw, vh);
	/* a buyer header that is not the channel's buyer */
	char other[65];
	wallet_addr_str(spay_wallet(w.prov), other);
	CHECK_EQ_INT(spay_call_open(w.prov, &w.sk, ch, other, vh, &c, &err), 402);
	REQUIRE(spay_call_open(w.prov, &w.sk, ch, bw, vh, &c, &err) == 0);
	/* one call per channel at a time */
	spay_call_t *c2 = NULL;
	CHECK_EQ_INT(spay_call_open(w.prov, &w.sk, ch, bw, vh, &c2, &err), 409);
	/* bounded credit: one chunk beyond the last voucher */
	int broke = 1;
	CHECK_EQ_INT(spay_call_credit(c, 0, &broke), CHUNK);
	CHECK(!broke);
	CHECK_EQ_INT(spay_call_credit(c, CHUNK, &broke), 0);
	CHECK(!broke);
	CHECK(!spay_call_receipt_due(c, CHUNK - 1, 0));
	CHECK(spay_call_receipt_due(c, CHUNK, 0));
	CHECK(!spay_call_wait(c, 20));   /* nobody pays: no voucher comes */
	REQUIRE(answer(&w, c, CHUNK, vh) == 0);
	CHECK(!spay_call_covered(c, CHUNK));
	CHECK_OK(spay_voucher_post(w.prov, vh, strlen(vh), &err));
	CHECK(spay_call_covered(c, CHUNK));
	CHECK_EQ_INT(spay_call_credit(c, CHUNK, &broke), CHUNK);
	/* the same voucher again, and one signed by another wallet: 402 */
	CHECK_EQ_INT(spay_voucher_post(w.prov, vh, strlen(vh), &err), 402);
	voucher_t fv;
	memset(&fv, 0, sizeof(fv));
	memcpy(fv.channel, w.b.t.channel, MARKET_IDLEN);
	fv.seq = 99;
	fv.in_tokens = 1;
	fv.out_tokens = 100;
	fv.amount = charge(1, 100);
	wallet_t *mal = NULL;
	REQUIRE(wallet_new(NULL, &mal) == 0);
	CHECK_OK(voucher_sign(&fv, mal));
	wallet_free(mal);
	char fh[2 * VOUCHER_SIZE + 1];
	hex_of(&fv, fh);
	CHECK_EQ_INT(spay_voucher_post(w.prov, fh, strlen(fh), &err), 402);
	CHECK(strstr(err.message, "forged") != NULL);
	/* as JSON, with a malformed body */
	CHECK_EQ_INT(spay_voucher_post(w.prov, "{\"voucher\":1}", 13, &err), 400);
	/* 11 tokens in all: the last receipt, paid, then the end of the call */
	CHECK(spay_call_receipt_due(c, 11, 1));
	REQUIRE(answer(&w, c, 11, vh) == 0);
	char js[2 * VOUCHER_SIZE + 20];
	snprintf(js, sizeof(js), "{\"voucher\":\"%s\"}", vh);
	CHECK_OK(spay_voucher_post(w.prov, js, strlen(js), &err));
	CHECK(spay_call_covered(c, 11));
	spay_call_close(c);
	settle_channel_t sc;
	err_msg_t e = { { 0 } };
	CHECK_OK(ledger_channel(w.l, w.b.t.channel, &sc, &e));
	CHECK_EQ_INT(sc.redeemed, charge(1, 11));
	CHECK_EQ_INT(spay_earned(w.prov), charge(1, 11));
	/* the next call must count itself: a voucher of the same calls is refused */
	voucher_t v;
	CHECK_OK(chan_buyer_count(&w.b, 0, 0));
	w.b.out_tokens++;   /* something new to sign, calls unchanged */
	CHECK_OK(chan_buyer_voucher(&w.b, w.bw, (int64_t)time(NULL), NULL, &v, &e));
	hex_of(&v, vh);
	CHECK_EQ_INT(spay_call_open(w.prov, &w.sk, ch, bw, vh, &c, &err), 402);
	call_voucher(&w, ch, bw, vh);
	REQUIRE(spay_call_open(w.prov, &w.sk, ch, bw, vh, &c, &err) == 0);
	spay_call_close(c);
	CHECK_OK(ledger_channel(w.l, w.b.t.channel, &sc, &e));
	CHECK_EQ_INT(sc.redeemed, charge(2, 12));
	/* a call refused after its voucher (no route...) is aborted: both sides
	 * forget it, and the same voucher opens the next call */
	chan_buyer_t keep = w.b;
	call_voucher(&w, ch, bw, vh);
	REQUIRE(spay_call_open(w.prov, &w.sk, ch, bw, vh, &c, &err) == 0);
	spay_call_abort(c);
	w.b = keep;
	call_voucher(&w, ch, bw, vh);
	REQUIRE(spay_call_open(w.prov, &w.sk, ch, bw, vh, &c, &err) == 0);
	spay_call_close(c);
	CHECK_OK(ledger_channel(w.l, w.b.t.channel, &sc, &e));
	CHECK_EQ_INT(sc.redeemed, charge(3, 12));
	/* a skill at other prices may not use the channel */
	skill_def_t sk2 = w.sk;
	sk2.fee_call = FEE + 1;
	call_voucher(&w, ch, bw, vh);
	CHECK_EQ_INT(spay_call_open(w.prov, &sk2, ch, bw, vh, &c, &err), 402);
	ledger_totals_t tot;
	CHECK_OK(ledger_audit(w.l, &tot, &e));
	world_close(&w);
}

static void test_budget(void)
{
	/* 1000 fee + 10 tokens x 2.22 = 1023: the 11th token is beyond the budget */
	world_t w;
	REQUIRE(world_init(&w, 1023) == 0);
	char ch[65], bw[65], vh[2 * VOUCHER_SIZE + 1];
	oai_err_t err;
	spay_call_t *c = NULL;
	call_voucher(&w, ch, bw, vh);
	REQUIRE(spay_call_open(w.prov, &w.sk, ch, bw, vh, &c, &err) == 0);
	int broke = 0;
	CHECK_EQ_INT(spay_call_credit(c, 0, &broke), CHUNK);
	REQUIRE(answer(&w, c, CHUNK, vh) == 0);
	CHECK_OK(spay_voucher_post(w.prov, vh, strlen(vh), &err));
	CHECK_EQ_INT(spay_call_credit(c, CHUNK, &broke), 10 - CHUNK);
	CHECK_EQ_INT(spay_call_credit(c, 10, &broke), 0);
	CHECK(broke);
	spay_call_close(c);
	world_close(&w);
}

static void test_terms_json(void)
{
	world_t w;
	REQUIRE(world_init(&w, 5000) == 0);
	char *j = spay_terms_json(w.prov, &w.sk, "pay \"first\"");
	REQUIRE(j != NULL);
	spay_terms_t t;
	err_msg_t e = { { 0 } };
	CHECK_OK(spay_terms_parse(j, strlen(j), &t, &e));
	CHECK(!memcmp(t.wallet, spay_wallet(w.prov), WALLET_PUBLEN));
	CHECK_EQ_INT(t.fee_call, FEE);
	CHECK_EQ_INT(t.price_out, PRICE);
	CHECK_EQ_INT(t.chunk, CHUNK);
	free(j);
	const char *bad[] = { "", "{}", "{\"payment\":{}}", "[1]",
			      "{\"payment\":{\"wallet\":\"ab\",\"fee_call\":1,\"price_out\":1,\"chunk\":1}}",
			      "{\"payment\":{\"wallet\":\"0000000000000000000000000000000000000000000000000000000000000000\","
			      "\"fee_call\":-1,\"price_out\":1,\"chunk\":1}}" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e.msg[0] = 0;
		CHECK(spay_terms_parse(bad[i], strlen(bad[i]), &t, &e) == ERR_FORMAT);
		CHECK(e.msg[0] != 0);
	}
	world_close(&w);
}

/* The buyer's reader: receipts in the stream are checked and answered. */
static void test_relay_reader(void)
{
	world_t w;
	REQUIRE(world_init(&w, 100000) == 0);
	chan_provider_t pc;
	chan_terms_t t = w.b.t;
	REQUIRE(chan_provider_init(&pc, &t) == 0);
	wallet_t *pw = NULL;
	char q[512];
	err_msg_t e = { { 0 } };
	snprintf(q, sizeof(q), "%s/prov/wallet.key", root);
	REQUIRE(wallet_load_file(q, &pw, &e) == 0);
	receipt_t r;
	char line[400];
	oai_err_t err;
	/* a good receipt of 8 tokens, split across two reads */
	spay_relay_t *rl = spay_relay_test_new(&t, w.bw, 1, 0, 16);
	REQUIRE(rl != NULL);
	const char *d1 = "data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
	CHECK_OK(spay_relay_test_feed(rl, d1, strlen(d1), &err));
	REQUIRE(chan_provider_receipt(&pc, 1, 8, NULL, pw, &r) == 0);
	size_t n = spay_receipt_line(&r, line, sizeof(line));
	REQUIRE(n > 0);
	CHECK_OK(spay_relay_test_feed(rl, line, 40, &err));
	CHECK_OK(spay_relay_test_feed(rl, line + 40, n - 40, &err));
	/* then one claiming more than max_tokens: the call ends, 502 */
	REQUIRE(chan_provider_receipt(&pc, 1, 17, NULL, pw, &r) == 0);
	n = spay_receipt_line(&r, line, sizeof(line));
	CHECK_EQ_INT(spay_relay_test_feed(rl, line, n, &err), 502);
	CHECK(!strcmp(err.code, "bad_receipt"));
	spay_relay_free(rl);
	/* a receipt signed by another key, and a malformed one */
	rl = spay_relay_test_new(&t, w.bw, 0, 0, 16);
	REQUIRE(rl != NULL);
	REQUIRE(chan_provider_receipt(&pc, 1, 9, NULL, w.bw, &r) == 0);
	n = spay_receipt_line(&r, line, sizeof(line));
	CHECK_EQ_INT(spay_relay_test_feed(rl, line, n, &err), 502);
	CHECK(strstr(err.message, "forged") != NULL);
	spay_relay_free(rl);
	rl = spay_relay_test_new(&t, w.bw, 0, 0, 16);
	const char *junk = ": colony-receipt 00ff\n";
	CHECK_EQ_INT(spay_relay_test_feed(rl, junk, strlen(junk), &err), 502);
	spay_relay_free(rl);
	wallet_free(pw);
	world_close(&w);
}

TEST_MAIN(test_call_credit_redeem, test_budget, test_terms_json, test_relay_reader)
