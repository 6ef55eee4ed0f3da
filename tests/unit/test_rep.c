/* test_rep.c - receipt digests (DHT record kind 5, ANN_REP): the byte
 * layout, every refusal, the store's freshness and replay rules under a
 * provider's key; the client's tallies, the digests built from them, and
 * the scores computed from digests (paid reporters count, unpaid ones and
 * self-praise do not); and a digest announced by one DHT node on loopback,
 * found under the provider's key by another that watches it. */
#include "test.h"

#include <unistd.h>

#include <sodium.h>

#include "base/clock.h"
#include "dht/ann.h"
#include "dht/dht.h"
#include "market/rep.h"
#include "swarm/client_rep.h"

#define NET 0x436f6c79u

typedef struct key {
	uint8_t pk[32], sk[64];
} key_t_;

static void key_make(key_t_ *k, int seed)
{
	uint8_t s[32];
	memset(s, seed, sizeof(s));
	crypto_sign_seed_keypair(k->pk, k->sk, s);
}

/* A digest by k about provider p: 40 sessions, 2 failed, 1 timed out. */
static ann_t digest(const key_t_ *k, const key_t_ *p, uint64_t ts, uint64_t seq, int64_t paid)
{
	ann_t a;
	memset(&a, 0, sizeof(a));
	a.kind = ANN_REP;
	memcpy(a.node_id, k->pk, 32);
	a.timestamp_ms = ts;
	a.seq = seq;
	memcpy(a.rep_provider, p->pk, 32);
	ann_rep_id(p->pk, a.model_id);
	if (paid) {
		memset(a.rep_wallet, 0xb1, 32);
		memset(a.rep_provider_wallet, 0xc2, 32);
		memset(a.rep_receipts, 0xd3, 32);
		a.rep_n_channels = 2;
		memset(a.rep_channels[0], 0xe4, 32);
		memset(a.rep_channels[1], 0xf5, 32);
	}
	a.rep_paid = paid;
	a.rep_tokens = 123456;
	a.rep_sessions = 40;
	a.rep_failures = 2;
	a.rep_timeouts = 1;
	a.rep_latency_us = 42000;
	return a;
}

static size_t enc(const ann_t *a, const key_t_ *k, uint8_t *buf)
{
	size_t len = 0;
	err_msg_t e = { "" };
	if (ann_encode(a, NET, k->sk, buf, ANN_MAX_SIZE, &len, &e) != 0)
		fprintf(stderr, "  encode: %s\n", e.msg);
	return len;
}

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void test_layout_roundtrip(void)
{
	REQUIRE(sodium_init() >= 0);
	key_t_ k, p;
	key_make(&k, 1);
	key_make(&p, 2);
	ann_t a = digest(&k, &p, 1700000000000ull, 7, 2500000);
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = enc(&a, &k, buf);
	REQUIRE(len == ANN_MIN_REP_SIZE + 2 * 32);
	CHECK_EQ_INT(ANN_MIN_REP_SIZE, 313);
	CHECK_EQ_INT(ANN_MAX_REP_SIZE, 441);
	CHECK(buf[5] == ANN_REP);
	/* Body at 88, as docs/PROTOCOL.md lays it out. */
	CHECK(!memcmp(buf + 88, p.pk, 32));
	CHECK(buf[120] == 0xc2 && buf[152] == 0xb1);
	CHECK_EQ_INT(le(buf + 184, 8), 2500000);
	CHECK_EQ_INT(le(buf + 192, 8), 123456);
	CHECK_EQ_INT(le(buf + 200, 4), 40);
	CHECK_EQ_INT(le(buf + 204, 4), 2);
	CHECK_EQ_INT(le(buf + 208, 4), 1);
	CHECK_EQ_INT(le(buf + 212, 4), 42000);
	CHECK(buf[216] == 0xd3 && buf[247] == 0xd3);
	CHECK(buf[248] == 2 && buf[249] == 0xe4 && buf[281] == 0xf5 && buf[312] == 0xf5);
	ann_t b;
	err_msg_t e = { "" };
	REQUIRE(ann_decode(buf, len, NET, &b, &e) == 0);
	CHECK(memcmp(&a, &b, sizeof(a)) == 0);
	CHECK_EQ_INT(ann_decode(buf, len, NET + 1, &b, &e), ERR_FORMAT);
	/* Truncated anywhere, or one byte more: refused with a zeroed output. */
	for (size_t cut = 0; cut < len; cut += 13) {
		CHECK(ann_decode(buf, cut, NET, &b, &e) < 0);
		CHECK(b.kind == 0);
	}
	uint8_t big[ANN_MAX_SIZE + 1];
	memcpy(big, buf, len);
	big[len] = 0;
	CHECK_EQ_INT(ann_parse_unverified(big, len + 1, &b, &e), ERR_FORMAT);
	/* An unpaid digest is fine without wallets, and cites no channel. */
	ann_t u = digest(&k, &p, 1700000000000ull, 8, 0);
	CHECK(enc(&u, &k, buf) == ANN_MIN_REP_SIZE);
	/* Four channels: the largest digest. */
	ann_t f = a;
	f.rep_n_channels = 4;
	memset(f.rep_channels[2], 0x16, 32);
	memset(f.rep_channels[3], 0x27, 32);
	CHECK(enc(&f, &k, buf) == ANN_MAX_REP_SIZE);
	REQUIRE(ann_decode(buf, ANN_MAX_REP_SIZE, NET, &b, &e) == 0);
	CHECK(memcmp(&f, &b, sizeof(f)) == 0);
}

/* Re-signs buf after patching byte `off` to v, and expects rc from decode. */
static void expect_patch(const ann_t *a, const key_t_ *k, size_t off, const uint8_t *v, size_t n, int rc,
			 const char *what)
{
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = enc(a, k, buf);
	memcpy(buf + off, v, n);
	/* Re-sign so only the field check can refuse. */
	uint8_t msg[16 + 4 + ANN_MAX_SIZE];
	memcpy(msg, ANN_SIG_DOMAIN, 16);
	for (int i = 0; i < 4; i++)
		msg[16 + i] = (uint8_t)(NET >> (8 * i));
	memcpy(msg + 20, buf, len - 64);
	crypto_sign_detached(buf + len - 64, NULL, msg, 20 + len - 64, k->sk);
	ann_t b;
	err_msg_t e = { "" };
	int got = ann_decode(buf, len, NET, &b, &e);
	if (got != rc)
		fprintf(stderr, "  %s: got %d (%s), want %d\n", what, got, e.msg, rc);
	CHECK_EQ_INT(got, rc);
	if (rc)
		CHECK(e.msg[0] != 0 && b.kind == 0);
}

static void test_refusals(void)
{
	key_t_ k, p, q;
	key_make(&k, 1);
	key_make(&p, 2);
	key_make(&q, 3);
	ann_t a = digest(&k, &p, 1700000000000ull, 7, 1000);
	uint8_t zero[32] = { 0 }, ff[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	/* Another provider than the key names. */
	expect_patch(&a, &k, 88, q.pk, 32, ERR_FORMAT, "scope");
	/* Payment without a wallet on either side. */
	expect_patch(&a, &k, 120, zero, 32, ERR_FORMAT, "no provider wallet");
	expect_patch(&a, &k, 152, zero, 32, ERR_FORMAT, "no reporter wallet");
	/* Amount beyond INT64_MAX. */
	expect_patch(&a, &k, 184, ff, 8, ERR_RANGE, "amount");
	/* failures + timeouts > sessions (40 sessions: 40 failures + 1 timeout). */
	uint8_t f40[4] = { 40, 0, 0, 0 };
	expect_patch(&a, &k, 204, f40, 4, ERR_RANGE, "counts");
	uint8_t fmax[4] = { 0xff, 0xff, 0xff, 0xff };
	expect_patch(&a, &k, 208, fmax, 4, ERR_RANGE, "timeouts overflow");
	/* Channels: a repeat, an all-zero id, a count past the cap. */
	uint8_t e4[32];
	memset(e4, 0xe4, 32);
	expect_patch(&a, &k, 281, e4, 32, ERR_FORMAT, "repeated channel");
	expect_patch(&a, &k, 249, zero, 32, ERR_FORMAT, "zero channel");
	uint8_t five = 5, one = 1, none = 0;
	expect_patch(&a, &k, 248, &five, 1, ERR_RANGE, "5 channels");
	expect_patch(&a, &k, 248, &one, 1, ERR_FORMAT, "trailing bytes");
	/* A paid digest must cite a channel; an unpaid one none. */
	ann_t nc = a;
	nc.rep_n_channels = 0;
	uint8_t cbuf[ANN_MAX_SIZE];
	size_t clen;
	err_msg_t ce;
	CHECK_EQ_INT(ann_encode(&nc, NET, k.sk, cbuf, sizeof(cbuf), &clen, &ce), ERR_FORMAT);
	(void)none;
	/* The encoder refuses the same. */
	uint8_t buf[ANN_MAX_SIZE];
	size_t len;
	err_msg_t e;
	ann_t d = a;
	memcpy(d.rep_provider, k.pk, 32);       /* about itself */
	ann_rep_id(k.pk, d.model_id);
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, buf, sizeof(buf), &len, &e), ERR_FORMAT);
	d = a;
	d.rep_paid = -5;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, buf, sizeof(buf), &len, &e), ERR_RANGE);
	d = a;
	d.rep_failures = 40;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, buf, sizeof(buf), &len, &e), ERR_RANGE);
	d = a;
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, buf, ANN_MIN_REP_SIZE + 63, &len, &e), ERR_INVAL);
	d = a;
	d.rep_paid = 0;                          /* channels cited for no payment */
	memset(d.rep_wallet, 0, 32);
	memset(d.rep_provider_wallet, 0, 32);
	CHECK_EQ_INT(ann_encode(&d, NET, k.sk, buf, sizeof(buf), &len, &e), ERR_FORMAT);
}

static void test_store_rules(void)
{
	key_t_ k1, k2, p, q;
	key_make(&k1, 1);
	key_make(&k2, 4);
	key_make(&p, 2);
	key_make(&q, 3);
	ann_store_cfg_t c = { .network = NET, .stale_ms = 180000, .skew_ms = 30000, .max_nodes = 8 };
	ann_rep_id(p.pk, c.model_id);
	ann_store_t *s = NULL;
	REQUIRE(ann_store_new(&c, &s) == 0);
	uint64_t now = 1700000000000ull;
	uint8_t buf[ANN_MAX_SIZE];
	err_msg_t e;
	ann_t a = digest(&k1, &p, now, 10, 1000);
	size_t len = enc(&a, &k1, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), 0);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), ERR_RANGE);          /* replay */
	a = digest(&k1, &p, now + 5, 9, 5000);
	len = enc(&a, &k1, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), ERR_RANGE);          /* older sequence */
	a = digest(&k1, &p, now + 5, 11, 5000);                              /* a newer digest replaces */
	len = enc(&a, &k1, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), 0);
	a = digest(&k2, &p, now - 200000, 3, 1);                             /* stale */
	len = enc(&a, &k2, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), ERR_RANGE);
	a = digest(&k2, &p, now + 60000, 3, 1);                              /* from the future */
	len = enc(&a, &k2, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), ERR_RANGE);
	a = digest(&k2, &q, now, 3, 1);                                      /* about another provider */
	len = enc(&a, &k2, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), ERR_RANGE);
	a = digest(&k2, &p, now, 3, 0);
	len = enc(&a, &k2, buf);
	CHECK_EQ_INT(ann_store_add(s, buf, len, now, &e), 0);
	ann_t out[4];
	REQUIRE(ann_store_collect(s, now, out, 4) == 2);
	for (int i = 0; i < 2; i++) {
		CHECK(out[i].kind == ANN_REP);
		CHECK(!memcmp(out[i].rep_provider, p.pk, 32));
		if (!memcmp(out[i].node_id, k1.pk, 32))
			CHECK(out[i].rep_paid == 5000 && out[i].seq == 11);
	}
	CHECK(ann_store_stats(s)->replay == 2 && ann_store_stats(s)->wrong_scope == 1);
	ann_store_free(s);
}

static void test_tally_digest(void)
{
	key_t_ self, p;
	key_make(&self, 9);
	key_make(&p, 2);
	crep_tally_t t;
	crep_tally_init(&t, p.pk);
	crep_tally_session(&t, 1, 0, 0, 100, 20.0);
	crep_tally_session(&t, 0, 2, 0, 30, 40.0);   /* two failures in one job */
	crep_tally_session(&t, 1, 1, 0, 50, -1);     /* one failure, then ok */
	crep_tally_session(&t, 1, 0, 1, 10, -1);     /* a stall timeout, then ok */
	CHECK_EQ_INT(t.sessions, 7);
	CHECK_EQ_INT(t.failures, 3);
	CHECK_EQ_INT(t.timeouts, 1);
	CHECK_EQ_INT(t.tokens, 190);
	uint8_t wallet[32], mine[32], ch1[32], ch2[32];
	memset(wallet, 0x77, 32);
	memset(mine, 0x55, 32);
	memset(ch1, 1, 32);
	memset(ch2, 2, 32);
	ann_t d;
	err_msg_t e;
	/* Unpaid: no wallets, no amount. */
	REQUIRE(crep_digest(&t, self.pk, mine, &d, &e) == 0);
	CHECK(d.rep_paid == 0 && d.rep_wallet[0] == 0 && d.rep_provider_wallet[0] == 0);
	CHECK_EQ_INT(d.rep_latency_us, 30000);
	crep_tally_paid(&t, wallet, ch1, 1000);
	uint8_t r1[32];
	memcpy(r1, t.receipts, 32);
	crep_tally_paid(&t, wallet, ch2, 500);
	CHECK(t.paid == 1500);
	CHECK(memcmp(r1, t.receipts, 32) != 0);
	/* The chain depends on the order and the amounts. */
	crep_tally_t u;
	crep_tally_init(&u, p.pk);
	crep_tally_paid(&u, wallet, ch2, 500);
	crep_tally_paid(&u, wallet, ch1, 1000);
	CHECK(memcmp(u.receipts, t.receipts, 32) != 0);
	REQUIRE(crep_digest(&t, self.pk, mine, &d, &e) == 0);
	CHECK(d.rep_paid == 1500 && d.rep_wallet[0] == 0x55 && d.rep_provider_wallet[0] == 0x77);
	CHECK(!memcmp(d.rep_receipts, t.receipts, 32));
	CHECK_EQ_INT(d.rep_sessions, 7);
	CHECK_EQ_INT(d.rep_failures, 3);
	CHECK_EQ_INT(d.rep_timeouts, 1);
	/* It encodes (the node sets time and sequence). */
	d.timestamp_ms = 1700000000000ull;
	d.seq = 5;
	uint8_t buf[ANN_MAX_SIZE];
	CHECK(enc(&d, &self, buf) == ANN_MIN_REP_SIZE + 2 * 32);
	CHECK(d.rep_n_channels == 2 && !memcmp(d.rep_channels[0], ch1, 32) && !memcmp(d.rep_channels[1], ch2, 32));
	/* Without our wallet the payment is left out (it could not be checked). */
	REQUIRE(crep_digest(&t, self.pk, NULL, &d, &e) == 0);
	CHECK(d.rep_paid == 0);
	/* Never about ourselves. */
	crep_tally_t me;
	crep_tally_init(&me, self.pk);
	CHECK_EQ_INT(crep_digest(&me, self.pk, mine, &d, &e), ERR_INVAL);
}

/* Digests as found in the DHT: 10 buyers paid A and are happy; 50 Sybils
 * paid nothing and praise B; B also praises itself. A scores 1, B 0. */
static void test_scores_from_digests(void)
{
	key_t_ self, A, B, buyer[60];
	key_make(&self, 9);
	key_make(&A, 0x20);
	key_make(&B, 0x21);
	ann_t dig[62];
	size_t n = 0;
	for (int i = 0; i < 60; i++) {
		key_make(&buyer[i], 0x40 + i);
		if (i < 10) {
			dig[n] = digest(&buyer[i], &A, 1, 1, 1000000);
			dig[n].rep_failures = 0;
			dig[n++].rep_timeouts = 0;
		} else {
			dig[n] = digest(&buyer[i], &B, 1, 1, 0);
			dig[n].rep_sessions = 1000;
			dig[n].rep_failures = 0;
			dig[n++].rep_timeouts = 0;
		}
	}
	uint8_t prov[3][32];
	memcpy(prov[0], A.pk, 32);
	memcpy(prov[1], B.pk, 32);
	memset(prov[2], 0xee, 32);   /* a provider nobody reported on */
	double sc[3];
	err_msg_t e;
	REQUIRE(crep_scores(self.pk, NULL, 0, dig, n, NULL, (const uint8_t (*)[32])prov, 3, sc, &e) == 0);
	CHECK_NEAR(sc[0], 1.0, 1e-9);
	CHECK(sc[1] >= 0 && sc[1] < 1e-9);
	CHECK(sc[2] == -1.0);
	/* Our own paid experience counts as half of our view (rep.h): B, which
	 * served us well for real money, is now close to A, which failed us. */
	crep_tally_t own[2];
	crep_tally_init(&own[0], A.pk);
	own[0].sessions = 50;
	own[0].failures = 45;
	own[0].paid = 20000000;
	crep_tally_init(&own[1], B.pk);
	own[1].sessions = 50;
	own[1].paid = 20000000;
	REQUIRE(crep_scores(self.pk, own, 2, dig, n, NULL, (const uint8_t (*)[32])prov, 3, sc, &e) == 0);
	CHECK(sc[1] > 0.5 && sc[1] <= sc[0]);
	/* Digests we signed ourselves are skipped (our tallies speak for us). */
	ann_t mine = digest(&self, &B, 1, 1, 0);
	mine.rep_failures = 40;
	mine.rep_timeouts = 0;
	REQUIRE(crep_scores(self.pk, NULL, 0, &mine, 1, NULL, (const uint8_t (*)[32])prov, 3, sc, &e) == 0);
	CHECK(sc[0] == -1.0 && sc[1] == -1.0);
	/* No paid evidence anywhere: self's own unpaid sessions decide. */
	own[0].paid = own[1].paid = 0;
	REQUIRE(crep_scores(self.pk, own, 2, NULL, 0, NULL, (const uint8_t (*)[32])prov, 3, sc, &e) == 0);
	CHECK(sc[1] > sc[0] && sc[0] > 0);
	CHECK(sc[2] == -1.0);
}

/* Claims checked at the ledger: 10 honest buyers paid A for real; 50
 * Sybils claim they paid B 1,000,000 each, citing channels the ledger does
 * not have (or that are someone else's). Taken on trust, B wins; checked,
 * the Sybils count for nothing. */
static void test_verified_claims(void)
{
	key_t_ self, A, B, buyer[60];
	key_make(&self, 9);
	key_make(&A, 0x20);
	key_make(&B, 0x21);
	ann_t dig[60];
	int64_t paid[60];
	for (int i = 0; i < 60; i++) {
		key_make(&buyer[i], 0x40 + i);
		dig[i] = digest(&buyer[i], i < 10 ? &A : &B, 1, 1, 1000000);
		dig[i].rep_failures = dig[i].rep_timeouts = 0;
		memset(dig[i].rep_wallet, 0x80 + i, 32);   /* each buyer its own wallet */
		dig[i].rep_channels[0][0] = (uint8_t)i;   /* distinct channel ids */
		dig[i].rep_channels[1][0] = (uint8_t)(100 + i);
		if (i >= 10)
			dig[i].rep_sessions = 1000;          /* B: praise from many sessions */
		crep_channel_t ch[2];
		memset(ch, 0, sizeof(ch));
		if (i < 10) {
			/* the ledger: two channels from this buyer to A's wallet */
			for (int c = 0; c < 2; c++) {
				ch[c].found = 1;
				memcpy(ch[c].buyer, dig[i].rep_wallet, 32);
				memcpy(ch[c].provider, dig[i].rep_provider_wallet, 32);
				ch[c].redeemed = 600000;
			}
		} else if (i < 20) {
			/* real channels, but between other wallets */
			ch[0].found = 1;
			memset(ch[0].buyer, 0x01, 32);
			memcpy(ch[0].provider, dig[i].rep_provider_wallet, 32);
			ch[0].redeemed = 5000000;
			ch[1].found = 1;
			memcpy(ch[1].buyer, dig[i].rep_wallet, 32);
			memset(ch[1].provider, 0x02, 32);
			ch[1].redeemed = 5000000;
		}
		paid[i] = crep_verify(&dig[i], ch);
	}
	CHECK_EQ_INT(paid[0], 1000000);          /* 1,200,000 redeemed, capped at the claim */
	for (int i = 10; i < 60; i++)
		CHECK_EQ_INT(paid[i], 0);
	uint8_t prov[2][32];
	memcpy(prov[0], A.pk, 32);
	memcpy(prov[1], B.pk, 32);
	double sc[2];
	err_msg_t e;
	REQUIRE(crep_scores(self.pk, NULL, 0, dig, 60, NULL, (const uint8_t (*)[32])prov, 2, sc, &e) == 0);
	CHECK(sc[1] > sc[0]);                       /* on trust, the Sybils win */
	REQUIRE(crep_scores(self.pk, NULL, 0, dig, 60, paid, (const uint8_t (*)[32])prov, 2, sc, &e) == 0);
	CHECK_NEAR(sc[0], 1.0, 1e-9);
	CHECK(sc[1] >= 0 && sc[1] < 1e-9);
	/* A digest that cites the same channel twice counts it once. */
	ann_t d = dig[0];
	memcpy(d.rep_channels[1], d.rep_channels[0], 32);
	crep_channel_t ch[2];
	memset(ch, 0, sizeof(ch));
	for (int c = 0; c < 2; c++) {
		ch[c].found = 1;
		memcpy(ch[c].buyer, d.rep_wallet, 32);
		memcpy(ch[c].provider, d.rep_provider_wallet, 32);
		ch[c].redeemed = 300000;
	}
	CHECK_EQ_INT(crep_verify(&d, ch), 300000);
	/* One honest digest copied under 40 other identities: the copies cite
	 * the same channels and weigh nothing. */
	ann_t cp[41];
	int64_t w[41];
	for (int i = 0; i < 41; i++) {
		cp[i] = dig[0];
		cp[i].node_id[0] ^= (uint8_t)i;
		w[i] = 1000000;
	}
	crep_dedupe(cp, 41, w);
	CHECK_EQ_INT(w[0], 1000000);
	for (int i = 1; i < 41; i++)
		CHECK_EQ_INT(w[i], 0);
	/* Distinct channels are all kept; an unconfirmed first digest does not hide a later one. */
	int64_t w2[3] = { 0, 1000000, 1000000 };
	ann_t three[3] = { dig[0], dig[0], dig[1] };
	crep_dedupe(three, 3, w2);
	CHECK(w2[0] == 0 && w2[1] == 1000000 && w2[2] == 1000000);
}

static dht_node_t *dht_start(const key_t_ *k, uint32_t net, const char *boot)
{
	dht_node_cfg_t c;
	dht_node_cfg_default(&c);
	c.network = net;
	c.sk = k->sk;
	c.refresh_ms = 1000;
	c.stale_ms = 5000;
	dht_node_t *n = NULL;
	err_msg_t e = { "" };
	if (dht_node_new(&c, &n, &e) != 0) {
		fprintf(stderr, "  dht_node_new: %s\n", e.msg);
		return NULL;
	}
	if (boot && dht_node_bootstrap(n, boot, &e) != 0)
		fprintf(stderr, "  bootstrap: %s\n", e.msg);
	return n;
}

static void test_dht_roundtrip(void)
{
	key_t_ kb, kr, kp;
	key_make(&kb, 0x61);
	key_make(&kr, 0x62);   /* the buyer that reports */
	key_make(&kp, 0x63);   /* the provider */
	uint32_t net = 0x20000000u | randombytes_uniform(0x0fffffffu);
	dht_node_t *boot = dht_start(&kb, net, NULL);
	REQUIRE(boot != NULL);
	char where[64];
	snprintf(where, sizeof(where), "127.0.0.1:%u", dht_node_port(boot));
	dht_node_t *rn = dht_start(&kr, net, where);
	REQUIRE(rn != NULL);
	uint8_t id[32];
	ann_rep_id(kp.pk, id);
	CHECK_OK(dht_node_watch(boot, id, NULL, NULL));
	crep_tally_t t;
	crep_tally_init(&t, kp.pk);
	crep_tally_session(&t, 1, 0, 0, 500, 12.0);
	uint8_t w[32], pw[32], ch[32];
	memset(w, 0x5a, 32);
	memset(pw, 0x6b, 32);
	memset(ch, 0x7c, 32);
	crep_tally_paid(&t, pw, ch, 424242);
	ann_t d;
	err_msg_t e = { "" };
	REQUIRE(crep_digest(&t, kr.pk, w, &d, &e) == 0);
	CHECK_OK(dht_node_announce(rn, &d, &e));
	/* The watch brings it to the other node's view (a few ms on loopback;
	 * allow for the routing table to fill). */
	ann_t got[4];
	size_t cnt = 0;
	double t0 = clock_sec();
	while (clock_sec() - t0 < 20) {
		if (dht_node_peers(boot, id, got, 4, &cnt) == 0 && cnt > 0)
			break;
		usleep(50000);
	}
	REQUIRE(cnt == 1);
	CHECK(got[0].kind == ANN_REP && got[0].rep_paid == 424242 && got[0].rep_sessions == 1);
	CHECK(!memcmp(got[0].node_id, kr.pk, 32) && !memcmp(got[0].rep_wallet, w, 32));
	CHECK(!memcmp(got[0].rep_receipts, t.receipts, 32));
	/* Scored from that digest alone: the provider is the best-reputed one. */
	double sc = -2;
	uint8_t prov[1][32];
	memcpy(prov[0], kp.pk, 32);
	CHECK_OK(crep_scores(kb.pk, NULL, 0, got, cnt, NULL, (const uint8_t (*)[32])prov, 1, &sc, &e));
	CHECK_NEAR(sc, 1.0, 1e-9);
	/* A digest about the signer itself is refused at announce. */
	crep_tally_t me;
	crep_tally_init(&me, kr.pk);
	CHECK_EQ_INT(crep_digest(&me, kr.pk, w, &d, &e), ERR_INVAL);
	CHECK_OK(dht_node_unwatch(boot, id));
	dht_node_free(rn);
	dht_node_free(boot);
}

TEST_MAIN(test_layout_roundtrip, test_refusals, test_store_rules, test_tally_digest, test_scores_from_digests,
	  test_verified_claims, test_dht_roundtrip)
