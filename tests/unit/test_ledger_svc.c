/* test_ledger_svc.c - the ledger service without the network: the
 * LEDGER_REQ/LEDGER_RESP codec (every op round-trips, every truncation and
 * out-of-range field is refused), the request signature (bound to one
 * ledger id and to every byte), who may do what, and the replay guard.
 * With COLONY_WRITE_SEEDS=DIR it also writes one encoded message per op
 * there (the fuzz corpus seeds in tests/fuzz/corpus/wire/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "market/ledger_svc.h"
#include "market/voucher.h"
#include "test.h"

static int enc(const wire_msg_t *m, uint8_t *buf, size_t cap, size_t *n)
{
	err_msg_t e = { "" };
	return wire_encode(m, buf, cap, n, &e);
}

static void seed(const uint8_t *b, size_t n)
{
	const char *dir = getenv("COLONY_WRITE_SEEDS");
	if (!dir)
		return;
	uint8_t h[20];
	crypto_generichash(h, sizeof(h), b, n, NULL, 0);
	char hex[41], path[1024];
	sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
	snprintf(path, sizeof(path), "%s/ledger-%s", dir, hex);
	FILE *f = fopen(path, "wb");
	if (f) {
		fwrite(b, 1, n, f);
		fclose(f);
	}
}

/* Round trip, then every strict prefix and one extra byte are refused. */
static void roundtrip(const wire_msg_t *m)
{
	uint8_t buf[2048], buf2[2048];
	size_t n = 0, n2 = 0;
	REQUIRE(enc(m, buf, sizeof(buf), &n) == 0);
	CHECK_EQ_INT(n, wire_encoded_size(m));
	seed(buf, n);
	wire_msg_t d;
	err_msg_t e = { "" };
	REQUIRE(wire_decode(buf, n, &d, &e) == 0);
	REQUIRE(enc(&d, buf2, sizeof(buf2), &n2) == 0);
	CHECK(n2 == n && memcmp(buf, buf2, n) == 0);
	for (size_t k = 0; k < n; k++)
		CHECK(wire_decode(buf, k, &d, &e) != 0);
	buf[n] = 0;
	CHECK_EQ_INT(wire_decode(buf, n + 1, &d, &e), ERR_FORMAT);
}

static void test_codec(void)
{
	for (int op = 1; op <= WIRE_LOP_MAX; op++) {
		wire_msg_t m;
		memset(&m, 0, sizeof(m));
		m.type = WIRE_LEDGER_REQ;
		wire_ledger_req_t *q = &m.u.lreq;
		q->req_id = 77 + (uint64_t)op;
		q->op = (uint8_t)op;
		q->nonce = 1700000000000000ull + (uint64_t)op;
		memset(q->wallet, 0x11, 32);
		memset(q->sig, 0x5a, 64);
		/* only the op's own fields: the others would not survive decoding */
		if (op == WIRE_LOP_REDEEM) {
			memset(q->voucher, 0x22, sizeof(q->voucher));
		} else {
			memset(q->addr, 0x33, 32);
			if (op <= WIRE_LOP_UNSTAKE || op == WIRE_LOP_RESERVE || op == WIRE_LOP_SLASH)
				q->amount = 1234567;
			if (op == WIRE_LOP_RESERVE) {
				q->expiry = 1800000000;
				memset(q->key2, 0x44, 32);
			}
			if (op == WIRE_LOP_SLASH) {
				memset(q->key2, 0x55, 32);
				memset(q->key3, 0x66, 32);
			}
			if (op == WIRE_LOP_CLOSE)
				q->party = 1;
		}
		roundtrip(&m);
		CHECK_EQ_INT(wire_ledger_req_body_size(op) + WIRE_SIGLEN, wire_encoded_size(&m));

		wire_msg_t r;
		memset(&r, 0, sizeof(r));
		r.type = WIRE_LEDGER_RESP;
		wire_ledger_resp_t *p = &r.u.lresp;
		p->req_id = q->req_id;
		p->op = (uint8_t)op;
		if (op <= WIRE_LOP_UNSTAKE || op == WIRE_LOP_ACCOUNT) {
			p->balance = 5;
			p->stake = 6;
			p->reserved = 7;
		} else if (op == WIRE_LOP_RESERVE) {
			memset(p->ch.id, 0x77, 32);
		} else if (op == WIRE_LOP_REDEEM || op == WIRE_LOP_SLASH) {
			p->amount = 99;
		} else {
			memset(p->ch.id, 1, 32);
			memset(p->ch.buyer, 2, 32);
			memset(p->ch.provider, 3, 32);
			p->ch.budget = 10;
			p->ch.redeemed = 4;
			p->ch.refunded = 6;
			p->ch.expiry = 1800000000;
			p->ch.close_at = 1800003600;
			p->ch.last_seq = 12;
			p->ch.state = 2;
		}
		roundtrip(&r);
		wire_msg_t bad;
		memset(&bad, 0, sizeof(bad));
		bad.type = WIRE_LEDGER_RESP;
		bad.u.lresp.req_id = 1;
		bad.u.lresp.op = (uint8_t)op;
		bad.u.lresp.status = (uint16_t)-ERR_RANGE;
		snprintf(bad.u.lresp.msg, sizeof(bad.u.lresp.msg), "ledger: withdraw of 5: balance 4 is too small");
		roundtrip(&bad);
	}
	/* Out-of-range fields, refused by both directions. */
	uint8_t buf[1024];
	size_t n = 0;
	wire_msg_t m, d;
	err_msg_t e = { "" };
	memset(&m, 0, sizeof(m));
	m.type = WIRE_LEDGER_REQ;
	m.u.lreq.op = WIRE_LOP_CLOSE;
	m.u.lreq.party = 2;
	CHECK(enc(&m, buf, sizeof(buf), &n) == ERR_FORMAT);
	m.u.lreq.party = 0;
	REQUIRE(enc(&m, buf, sizeof(buf), &n) == 0);
	buf[1 + 8 + 1 + 8 + 32 + 32] = 2;            /* the party byte */
	CHECK_EQ_INT(wire_decode(buf, n, &d, &e), ERR_FORMAT);
	buf[9] = WIRE_LOP_MAX + 1;                   /* the op */
	CHECK_EQ_INT(wire_decode(buf, n, &d, &e), ERR_UNSUPPORTED);
	m.u.lreq.op = WIRE_LOP_DEPOSIT;
	REQUIRE(enc(&m, buf, sizeof(buf), &n) == 0);
	buf[1 + 8 + 1 + 8 + 32 + 32 + 7] = 0x80;     /* amount's top bit */
	CHECK_EQ_INT(wire_decode(buf, n, &d, &e), ERR_RANGE);
	m.u.lreq.amount = -1;
	CHECK_EQ_INT(enc(&m, buf, sizeof(buf), &n), ERR_RANGE);
}

/* ---- the service's rules ---- */

static struct fx {
	char path[600];
	ledger_t *l;
	wallet_t *op, *buyer, *prov, *eve;
	ledger_svc_cfg_t cfg;
	uint64_t nonce;
} F;

static void fx_open(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(F.path, sizeof(F.path), "%s/test_ledger_svc.%d.db", t && *t ? t : "/tmp", (int)getpid());
	unlink(F.path);
	err_msg_t e = { "" };
	REQUIRE(ledger_open(F.path, NULL, &F.l, &e) == 0);
	uint8_t s[32];
	memset(s, 1, 32); REQUIRE(wallet_new(s, &F.op) == 0);
	memset(s, 2, 32); REQUIRE(wallet_new(s, &F.buyer) == 0);
	memset(s, 3, 32); REQUIRE(wallet_new(s, &F.prov) == 0);
	memset(s, 4, 32); REQUIRE(wallet_new(s, &F.eve) == 0);
	memset(&F.cfg, 0, sizeof(F.cfg));
	F.cfg.ledger = F.l;
	memset(F.cfg.ledger_id, 0xab, 32);
	memcpy(F.cfg.operator_addr, wallet_pub(F.op), 32);
	F.cfg.has_operator = 1;
	F.nonce = 100;
}

static void fx_close(void)
{
	ledger_free(F.l);
	wallet_free(F.op);
	wallet_free(F.buyer);
	wallet_free(F.prov);
	wallet_free(F.eve);
	char p[620];
	unlink(F.path);
	snprintf(p, sizeof(p), "%s-wal", F.path); unlink(p);
	snprintf(p, sizeof(p), "%s-shm", F.path); unlink(p);
}

/* Signs q as w (fresh nonce) for the fixture's ledger and runs it. */
static int run(wire_ledger_req_t *q, const wallet_t *w, wire_ledger_resp_t *r)
{
	q->nonce = ++F.nonce;
	err_msg_t e = { "" };
	if (ledger_req_sign(q, F.cfg.ledger_id, w, &e) != 0)
		return 1000;
	ledger_svc_exec(&F.cfg, q, 1000, r);
	return -(int)r->status;
}

static wire_ledger_req_t req(int op, const uint8_t *addr, int64_t amount)
{
	wire_ledger_req_t q;
	memset(&q, 0, sizeof(q));
	q.op = (uint8_t)op;
	q.req_id = 5;
	if (addr)
		memcpy(q.addr, addr, 32);
	q.amount = amount;
	return q;
}

static void test_rules(void)
{
	fx_open();
	wire_ledger_resp_t r;
	wire_ledger_req_t q = req(WIRE_LOP_DEPOSIT, wallet_pub(F.buyer), 1000);
	CHECK_EQ_INT(run(&q, F.buyer, &r), ERR_INVAL);               /* not the operator */
	CHECK(strstr(r.msg, "not authorized") != NULL);
	CHECK_EQ_INT(run(&q, F.op, &r), 0);
	CHECK_EQ_INT(r.balance, 1000);
	CHECK_EQ_INT(r.req_id, 5);

	/* Replay: the same signed request again, and an older nonce. */
	ledger_svc_exec(&F.cfg, &q, 1000, &r);
	CHECK_EQ_INT(-(int)r.status, ERR_INVAL);
	CHECK(strstr(r.msg, "replayed") != NULL);
	wire_ledger_req_t old = req(WIRE_LOP_ACCOUNT, wallet_pub(F.op), 0);
	old.nonce = 50;
	err_msg_t e = { "" };
	REQUIRE(ledger_req_sign(&old, F.cfg.ledger_id, F.op, &e) == 0);
	ledger_svc_exec(&F.cfg, &old, 1000, &r);
	CHECK(strstr(r.msg, "replayed") != NULL);

	/* The signature binds the ledger id and every field. */
	q = req(WIRE_LOP_DEPOSIT, wallet_pub(F.buyer), 1000);
	q.nonce = ++F.nonce;
	REQUIRE(ledger_req_sign(&q, F.cfg.ledger_id, F.op, &e) == 0);
	q.amount = 1000000;
	ledger_svc_exec(&F.cfg, &q, 1000, &r);
	CHECK_EQ_INT(-(int)r.status, ERR_FORMAT);
	q.amount = 1000;
	uint8_t other[32];
	memset(other, 0xcd, 32);
	REQUIRE(ledger_req_sign(&q, other, F.op, &e) == 0);
	ledger_svc_exec(&F.cfg, &q, 1000, &r);
	CHECK_EQ_INT(-(int)r.status, ERR_FORMAT);
	/* A refused signature spent no nonce: the honest request still goes. */
	REQUIRE(ledger_req_sign(&q, F.cfg.ledger_id, F.op, &e) == 0);
	ledger_svc_exec(&F.cfg, &q, 1000, &r);
	CHECK_EQ_INT(r.status, 0);
	CHECK_EQ_INT(r.balance, 2000);

	/* Accounts: own wallet or operator. */
	q = req(WIRE_LOP_ACCOUNT, wallet_pub(F.buyer), 0);
	CHECK_EQ_INT(run(&q, F.eve, &r), ERR_INVAL);
	CHECK_EQ_INT(run(&q, F.buyer, &r), 0);
	CHECK_EQ_INT(run(&q, F.op, &r), 0);
	q = req(WIRE_LOP_STAKE, wallet_pub(F.buyer), 10);
	CHECK_EQ_INT(run(&q, F.eve, &r), ERR_INVAL);
	CHECK_EQ_INT(run(&q, F.buyer, &r), 0);
	CHECK_EQ_INT(r.stake, 10);

	/* A channel; close by its parties only. */
	q = req(WIRE_LOP_RESERVE, wallet_pub(F.prov), 500);
	q.expiry = 5000;
	memset(q.key2, 9, 32);
	CHECK_EQ_INT(run(&q, F.buyer, &r), 0);
	uint8_t ch[32];
	memcpy(ch, r.ch.id, 32);
	uint8_t want[32];
	voucher_channel_id(wallet_pub(F.buyer), wallet_pub(F.prov), q.key2, want);
	CHECK(memcmp(ch, want, 32) == 0);
	voucher_t v;
	memset(&v, 0, sizeof(v));
	memcpy(v.channel, ch, 32);
	v.seq = 1;
	v.amount = 120;
	REQUIRE(voucher_sign(&v, F.buyer) == 0);
	q = req(WIRE_LOP_REDEEM, NULL, 0);
	REQUIRE(voucher_encode(&v, q.voucher) == 0);
	CHECK_EQ_INT(run(&q, F.eve, &r), 0);                          /* anyone may present it */
	CHECK_EQ_INT(r.amount, 120);
	CHECK_EQ_INT(run(&q, F.prov, &r), 0);
	CHECK_EQ_INT(r.amount, 0);                                     /* paid once */
	q = req(WIRE_LOP_CHANNEL, ch, 0);
	CHECK_EQ_INT(run(&q, F.eve, &r), ERR_INVAL);
	CHECK_EQ_INT(run(&q, F.prov, &r), 0);
	CHECK_EQ_INT(r.ch.redeemed, 120);
	q = req(WIRE_LOP_CLOSE, ch, 0);
	q.party = SETTLE_BY_PROVIDER;
	CHECK_EQ_INT(run(&q, F.buyer, &r), ERR_INVAL);
	CHECK_EQ_INT(run(&q, F.eve, &r), ERR_INVAL);
	CHECK_EQ_INT(run(&q, F.prov, &r), 0);
	CHECK_EQ_INT(r.ch.state, SETTLE_CLOSED);
	CHECK_EQ_INT(r.ch.refunded, 380);

	/* No operator configured: no deposits at all. */
	F.cfg.has_operator = 0;
	q = req(WIRE_LOP_DEPOSIT, wallet_pub(F.op), 1);
	CHECK_EQ_INT(run(&q, F.op, &r), ERR_INVAL);
	CHECK(strstr(r.msg, "no operator") != NULL);
	CHECK_OK(ledger_audit(F.l, NULL, &e));
	fx_close();
}

TEST_MAIN(test_codec, test_rules)
