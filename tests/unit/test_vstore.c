/* test_vstore.c - the two local stores of paid sessions: the provider's
 * voucher store (vstore.h: the best voucher per channel survives a reopen,
 * older ones never replace it, redeemed/refused bookkeeping, malformed rows
 * skipped, a foreign file refused) and the buyer's channel store (chstore.h);
 * and the crash window between a redeem and its record: redeeming the stored
 * voucher again at a real ledger pays nothing, so the books still add up. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "market/chstore.h"
#include "market/ledger.h"
#include "market/voucher.h"
#include "market/vstore.h"
#include "market/wallet.h"
#include "test.h"
#include "test_wallet.h"

/* A fresh directory per test under one temporary root. */
static const char *tmp_dir(const char *name)
{
	static char out[700];
	test_tmp_dir(out, sizeof(out), name);
	return out;
}

static voucher_t voucher_make(const uint8_t ch[MARKET_IDLEN], uint64_t seq, amount_t amount, const wallet_t *buyer)
{
	voucher_t v;
	memset(&v, 0, sizeof(v));
	memcpy(v.channel, ch, MARKET_IDLEN);
	v.seq = seq;
	v.amount = amount;
	v.out_tokens = seq * 8;
	REQUIRE(voucher_sign(&v, buyer) == 0);
	return v;
}

#define MAXE 8
struct entries {
	vstore_entry_t e[MAXE];
	int n;
};

static int take(void *ud, const vstore_entry_t *en)
{
	struct entries *l = ud;
	if (l->n < MAXE)
		l->e[l->n++] = *en;
	return 0;
}

static struct entries list_all(vstore_t *s, size_t *bad)
{
	struct entries l;
	memset(&l, 0, sizeof(l));
	err_msg_t e;
	CHECK_OK(vstore_foreach(s, take, &l, bad, &e));
	return l;
}

static void test_vstore_keeps_best(void)
{
	const char *dir = tmp_dir("best");
	wallet_t *b = wallet_seeded(1);
	uint8_t ch[MARKET_IDLEN];
	memset(ch, 0xab, sizeof(ch));
	vstore_t *s = NULL;
	err_msg_t e;
	REQUIRE(vstore_open(dir, &s, &e) == 0);
	voucher_t v1 = voucher_make(ch, 1, 10, b), v2 = voucher_make(ch, 2, 20, b), v3 = voucher_make(ch, 3, 30, b);
	CHECK_OK(vstore_put(s, &v1, 100, &e));
	CHECK_OK(vstore_put(s, &v3, 101, &e));
	CHECK_OK(vstore_put(s, &v2, 102, &e));   /* late and older: ignored */
	vstore_free(s);

	/* A new handle (a restarted provider) sees the best one, pending. */
	REQUIRE(vstore_open(dir, &s, &e) == 0);
	size_t bad = 9;
	struct entries l = list_all(s, &bad);
	CHECK_EQ_INT(bad, 0);
	REQUIRE(l.n == 1);
	CHECK_EQ_INT(l.e[0].best.seq, 3);
	CHECK_EQ_INT(l.e[0].best.amount, 30);
	CHECK(memcmp(l.e[0].best.sig, v3.sig, WALLET_SIGLEN) == 0);
	CHECK(voucher_verify(&l.e[0].best, wallet_pub(b)) == 0);
	CHECK(vstore_entry_pending(&l.e[0]));
	CHECK_EQ_INT(l.e[0].updated, 101);

	/* Confirmed: not pending. An older confirmation does not move it back. */
	CHECK_OK(vstore_redeemed(s, &v3, 110, &e));
	CHECK_OK(vstore_redeemed(s, &v1, 111, &e));
	l = list_all(s, NULL);
	CHECK(!vstore_entry_pending(&l.e[0]));
	CHECK_EQ_INT(l.e[0].redeemed_seq, 3);
	CHECK_EQ_INT(l.e[0].redeemed, 30);

	/* A newer voucher is pending again; a final refusal stops retries; a
	 * still newer voucher clears the refusal. */
	voucher_t v4 = voucher_make(ch, 4, 40, b), v5 = voucher_make(ch, 5, 50, b);
	CHECK_OK(vstore_put(s, &v4, 120, &e));
	l = list_all(s, NULL);
	CHECK(vstore_entry_pending(&l.e[0]));
	CHECK_EQ_INT(l.e[0].redeemed, 30);
	CHECK_OK(vstore_refused(s, &v3, VOUCHER_E_CLOSED, "stale", 121, &e));   /* not the best: no effect */
	l = list_all(s, NULL);
	CHECK(vstore_entry_pending(&l.e[0]));
	CHECK_OK(vstore_refused(s, &v4, VOUCHER_E_CLOSED, "ledger: the channel is closed", 122, &e));
	l = list_all(s, NULL);
	CHECK(!vstore_entry_pending(&l.e[0]));
	CHECK_EQ_INT(l.e[0].refused, VOUCHER_E_CLOSED);
	CHECK(strstr(l.e[0].why, "closed") != NULL);
	CHECK_OK(vstore_put(s, &v5, 130, &e));
	l = list_all(s, NULL);
	CHECK(vstore_entry_pending(&l.e[0]));
	CHECK_EQ_INT(l.e[0].refused, 0);

	/* Channels are independent. */
	uint8_t ch2[MARKET_IDLEN];
	memset(ch2, 0x01, sizeof(ch2));
	voucher_t w1 = voucher_make(ch2, 1, 7, b);
	CHECK_OK(vstore_put(s, &w1, 140, &e));
	l = list_all(s, NULL);
	REQUIRE(l.n == 2);
	CHECK_EQ_INT(l.e[0].best.amount, 7);   /* channel-id order */
	CHECK_EQ_INT(l.e[1].best.amount, 50);
	vstore_free(s);
	vstore_free(NULL);

	/* Owner-only file. */
	char path[800];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, VSTORE_FILE_NAME);
	REQUIRE(stat(path, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 077, 0);
	wallet_free(b);
}

/* Rows are not trusted: a voucher that does not decode or does not match its
 * key columns is skipped and counted; a file of another kind is refused. */
static void test_vstore_defensive(void)
{
	const char *dir = tmp_dir("bad");
	wallet_t *b = wallet_seeded(2);
	uint8_t ch[MARKET_IDLEN];
	memset(ch, 0x33, sizeof(ch));
	vstore_t *s = NULL;
	err_msg_t e;
	REQUIRE(vstore_open(dir, &s, &e) == 0);
	voucher_t v = voucher_make(ch, 2, 20, b);
	CHECK_OK(vstore_put(s, &v, 1, &e));
	vstore_free(s);

	char path[800];
	snprintf(path, sizeof(path), "%s/%s", dir, VSTORE_FILE_NAME);
	sqlite3 *db = NULL;
	REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
	/* Another channel's key holding the same voucher bytes; a row whose
	 * voucher has version 9; a row with an impossible redeemed amount. */
	const char *sql =
		"PRAGMA ignore_check_constraints = 1;"
		"INSERT INTO vouchers SELECT zeroblob(32), seq, amount, voucher, 0, 0, 0, '', 1 FROM vouchers;"
		"INSERT INTO vouchers SELECT randomblob(32), seq, amount, x'09' || substr(voucher, 2), 0, 0, 0, '', 1 FROM vouchers LIMIT 1;"
		"INSERT INTO vouchers VALUES (x'" "3333333333333333333333333333333333333333333333333333333333333334" "', 2, 20, "
		"(SELECT voucher FROM vouchers LIMIT 1), 0, 0, 0, '', 1);"
		"UPDATE vouchers SET redeemed = 999 WHERE channel = x'3333333333333333333333333333333333333333333333333333333333333334';";
	CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	REQUIRE(vstore_open(dir, &s, &e) == 0);
	size_t bad = 0;
	struct entries l = list_all(s, &bad);
	CHECK_EQ_INT(l.n, 1);
	CHECK_EQ_INT(bad, 3);
	CHECK(l.n == 1 && memcmp(l.e[0].best.channel, ch, MARKET_IDLEN) == 0);
	vstore_free(s);

	/* A ledger database is not a voucher store; nor is a text file. */
	const char *d2 = tmp_dir("foreign");
	snprintf(path, sizeof(path), "%s/%s", d2, VSTORE_FILE_NAME);
	ledger_t *lg = NULL;
	REQUIRE(ledger_open(path, NULL, &lg, &e) == 0);
	ledger_free(lg);
	CHECK_EQ_INT(vstore_open(d2, &s, &e), ERR_FORMAT);
	CHECK(s == NULL);
	const char *d3 = tmp_dir("text");
	snprintf(path, sizeof(path), "%s/%s", d3, VSTORE_FILE_NAME);
	FILE *f = fopen(path, "w");
	REQUIRE(f);
	fputs("this is not a database, it only has a name that looks like one\n", f);
	fclose(f);
	CHECK(vstore_open(d3, &s, &e) != 0);
	CHECK(s == NULL);
	wallet_free(b);
}

/* The provider redeems its stored voucher and crashes before recording it:
 * after the restart the voucher is still pending, is redeemed again, and the
 * ledger pays nothing more. Then a closed channel's newer voucher is refused
 * for good. The ledger audits after every step. */
static void test_redeem_after_crash(void)
{
	const char *dir = tmp_dir("crash");
	char lpath[800];
	snprintf(lpath, sizeof(lpath), "%s/ledger.db", dir);
	ledger_opts_t o;
	ledger_opts_default(&o);
	o.window = 100;
	ledger_t *l = NULL;
	err_msg_t e;
	REQUIRE(ledger_open(lpath, &o, &l, &e) == 0);
	settle_t st = ledger_settle(l);
	wallet_t *b = wallet_seeded(3), *p = wallet_seeded(4);
	const int64_t now = 1700000000;
	CHECK_OK(settle_deposit(&st, wallet_pub(b), 1000, &e));
	settle_reserve_t r;
	memset(&r, 0, sizeof(r));
	memcpy(r.buyer, wallet_pub(b), WALLET_PUBLEN);
	memcpy(r.provider, wallet_pub(p), WALLET_PUBLEN);
	r.budget = 500;
	r.expiry = now + 3600;
	memset(r.nonce, 7, sizeof(r.nonce));
	uint8_t ch[MARKET_IDLEN];
	REQUIRE(settle_reserve(&st, &r, now, ch, &e) == 0);

	vstore_t *s = NULL;
	REQUIRE(vstore_open(dir, &s, &e) == 0);
	for (uint64_t k = 1; k <= 3; k++) {
		voucher_t v = voucher_make(ch, k, (amount_t)(40 * k), b);
		CHECK_OK(vstore_put(s, &v, now, &e));
	}
	struct entries en = list_all(s, NULL);
	REQUIRE(en.n == 1 && vstore_entry_pending(&en.e[0]));
	amount_t paid = -1;
	CHECK_OK(settle_redeem(&st, &en.e[0].best, now + 1, &paid, &e));
	CHECK_EQ_INT(paid, 120);
	vstore_free(s);   /* the crash: the redeem is not recorded */

	REQUIRE(vstore_open(dir, &s, &e) == 0);
	en = list_all(s, NULL);
	REQUIRE(en.n == 1 && vstore_entry_pending(&en.e[0]));
	paid = -1;
	CHECK_OK(settle_redeem(&st, &en.e[0].best, now + 2, &paid, &e));
	CHECK_EQ_INT(paid, 0);
	CHECK_OK(vstore_redeemed(s, &en.e[0].best, now + 2, &e));
	en = list_all(s, NULL);
	CHECK(!vstore_entry_pending(&en.e[0]));
	settle_account_t a;
	CHECK_OK(settle_account(&st, wallet_pub(p), &a, &e));
	CHECK_EQ_INT(a.balance, 120);
	ledger_totals_t t;
	CHECK_OK(ledger_audit(l, &t, &e));
	CHECK_EQ_INT(t.redemptions, 1);

	/* The buyer closes, the window passes, the rest goes back; a newer
	 * voucher is then refused for good and the store says so. */
	settle_channel_t c;
	CHECK_OK(settle_close(&st, ch, SETTLE_BY_BUYER, now + 10, &c, &e));
	CHECK_EQ_INT(c.state, SETTLE_CLOSING);
	CHECK_OK(settle_close(&st, ch, SETTLE_BY_BUYER, now + 200, &c, &e));
	CHECK_EQ_INT(c.state, SETTLE_CLOSED);
	CHECK_EQ_INT(c.refunded, 380);
	voucher_t v4 = voucher_make(ch, 4, 160, b);
	CHECK_OK(vstore_put(s, &v4, now + 201, &e));
	int rc = settle_redeem(&st, &v4, now + 201, &paid, &e);
	CHECK_EQ_INT(rc, VOUCHER_E_CLOSED);
	CHECK_OK(vstore_refused(s, &v4, rc, e.msg, now + 201, &e));
	en = list_all(s, NULL);
	CHECK(!vstore_entry_pending(&en.e[0]));
	CHECK_EQ_INT(en.e[0].redeemed, 120);
	CHECK_OK(settle_account(&st, wallet_pub(b), &a, &e));
	CHECK_EQ_INT(a.balance + 120, 1000);
	CHECK_EQ_INT(a.reserved, 0);
	CHECK_OK(ledger_audit(l, &t, &e));
	vstore_free(s);
	ledger_free(l);
	wallet_free(b);
	wallet_free(p);
}

#define MAXC 8
struct chans {
	chstore_chan_t c[MAXC];
	int n;
};

static int take_chan(void *ud, const chstore_chan_t *c)
{
	struct chans *l = ud;
	if (l->n < MAXC)
		l->c[l->n++] = *c;
	return 0;
}

static void test_chstore(void)
{
	const char *dir = tmp_dir("chans");
	chstore_t *s = NULL;
	err_msg_t e;
	REQUIRE(chstore_open(dir, &s, &e) == 0);
	chstore_chan_t c;
	memset(&c, 0, sizeof(c));
	memset(c.id, 0x11, sizeof(c.id));
	memset(c.provider, 0x22, sizeof(c.provider));
	memset(c.ledger_id, 0x44, sizeof(c.ledger_id));
	c.budget = 1000000;
	c.expiry = 5000;
	snprintf(c.ledger, sizeof(c.ledger), "127.0.0.1:7000");
	CHECK_OK(chstore_add(s, &c, 100, &e));
	chstore_chan_t c2 = c;
	memset(c2.id, 0x10, sizeof(c2.id));
	c2.budget = 5;
	CHECK_OK(chstore_add(s, &c2, 101, &e));
	c.budget = 7;   /* the same id again: a retried reserve, nothing changes */
	CHECK_OK(chstore_add(s, &c, 102, &e));
	c.budget = 1000000;
	CHECK_OK(chstore_set(s, c.id, CHSTORE_CLOSING, 4000, 300, 0, 103, &e));
	uint8_t other[MARKET_IDLEN] = { 9 };
	CHECK_EQ_INT(chstore_set(s, other, CHSTORE_CLOSED, 0, 0, 0, 104, &e), ERR_NOTFOUND);
	CHECK_EQ_INT(chstore_set(s, c.id, 7, 0, 0, 0, 104, &e), ERR_INVAL);
	c.budget = 0;
	CHECK_EQ_INT(chstore_add(s, &c, 105, &e), ERR_INVAL);
	c.budget = 1000000;
	chstore_free(s);

	REQUIRE(chstore_open(dir, &s, &e) == 0);
	struct chans l;
	memset(&l, 0, sizeof(l));
	size_t bad = 9;
	CHECK_OK(chstore_foreach(s, take_chan, &l, &bad, &e));
	CHECK_EQ_INT(bad, 0);
	REQUIRE(l.n == 2);
	/* Oldest first. */
	CHECK(memcmp(l.c[0].id, c.id, MARKET_IDLEN) == 0);
	CHECK_EQ_INT(l.c[0].budget, 1000000);
	CHECK_EQ_INT(l.c[0].state, CHSTORE_CLOSING);
	CHECK_EQ_INT(l.c[0].close_at, 4000);
	CHECK_EQ_INT(l.c[0].redeemed, 300);
	CHECK_EQ_INT(l.c[0].expiry, 5000);
	CHECK(!strcmp(l.c[0].ledger, "127.0.0.1:7000"));
	CHECK(memcmp(l.c[0].provider, c.provider, WALLET_PUBLEN) == 0);
	CHECK(memcmp(l.c[0].ledger_id, c.ledger_id, WALLET_PUBLEN) == 0);
	CHECK_EQ_INT(l.c[1].state, CHSTORE_RESERVING);
	CHECK_EQ_INT(l.c[1].created, 101);
	CHECK(!strcmp(chstore_state_str(CHSTORE_GONE), "gone"));
	CHECK(!strcmp(chstore_state_str(42), "?"));
	chstore_free(s);

	/* Malformed rows (a short id, a state out of range, redeemed over the
	 * budget) are skipped and counted. */
	char path[800];
	snprintf(path, sizeof(path), "%s/%s", dir, CHSTORE_FILE_NAME);
	sqlite3 *db = NULL;
	REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db,
			   "PRAGMA ignore_check_constraints = 1;"
			   "INSERT INTO channels SELECT x'00', provider, budget, expiry, ledger_id, ledger, 0, 0, 0, 0, 200, 200 FROM channels LIMIT 1;"
			   "INSERT INTO channels SELECT randomblob(32), provider, budget, expiry, ledger_id, ledger, 9, 0, 0, 0, 201, 201 FROM channels LIMIT 1;"
			   "INSERT INTO channels SELECT randomblob(32), provider, budget, expiry, ledger_id, ledger, 1, 0, budget + 1, 0, 202, 202 FROM channels LIMIT 1;",
			   NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	REQUIRE(chstore_open(dir, &s, &e) == 0);
	memset(&l, 0, sizeof(l));
	CHECK_OK(chstore_foreach(s, take_chan, &l, &bad, &e));
	CHECK_EQ_INT(l.n, 2);
	CHECK_EQ_INT(bad, 3);
	chstore_free(s);
	chstore_free(NULL);
}

TEST_MAIN(test_vstore_keeps_best, test_vstore_defensive, test_redeem_after_crash, test_chstore)
