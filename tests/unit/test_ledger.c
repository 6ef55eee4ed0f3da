/* test_ledger.c - the SQLite settlement backend: deposits, withdrawals,
 * stakes, channels, idempotent redeems, close with its challenge window,
 * expiry, slashing, conservation after every step (ledger_audit), and
 * concurrent redeems of one channel from 4 threads (own handles and one
 * shared handle). Crashes are in test_ledger_crash.c. */
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "market/ledger.h"
#include "market/voucher.h"
#include "market/wallet.h"
#include "test.h"
#include "test_wallet.h"

static void tmp_path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", test_tmp_root(), name);
}

#define NOW 1700000000
#define WINDOW 100

static ledger_t *open_ledger(const char *name)
{
	char path[700];
	tmp_path(path, sizeof(path), name);
	ledger_opts_t o;
	ledger_opts_default(&o);
	o.window = WINDOW;
	ledger_t *l = NULL;
	err_msg_t e = { "" };
	int rc = ledger_open(path, &o, &l, &e);
	if (rc)
		fprintf(stderr, "  ledger_open: %s\n", e.msg);
	REQUIRE(rc == 0);
	return l;
}

static void audit_ok(ledger_t *l)
{
	err_msg_t e = { "" };
	int rc = ledger_audit(l, NULL, &e);
	if (rc)
		fprintf(stderr, "  audit: %s\n", e.msg);
	CHECK_OK(rc);
}

static amount_t balance(ledger_t *l, const wallet_t *w)
{
	settle_account_t a;
	err_msg_t e = { "" };
	REQUIRE(ledger_account(l, wallet_pub(w), &a, &e) == 0);
	return a.balance;
}

static voucher_t mkv(const uint8_t *channel, const wallet_t *w, uint64_t seq, amount_t amount)
{
	voucher_t v = { .seq = seq, .amount = amount, .in_tokens = seq, .out_tokens = seq };
	memcpy(v.channel, channel, MARKET_IDLEN);
	if (voucher_sign(&v, w) != 0)
		memset(v.sig, 0, sizeof(v.sig));
	return v;
}

static void reserve_req(settle_reserve_t *r, const wallet_t *buyer, const wallet_t *prov, amount_t budget,
	int64_t expiry, uint8_t nonce)
{
	memset(r, 0, sizeof(*r));
	memcpy(r->buyer, wallet_pub(buyer), 32);
	memcpy(r->provider, wallet_pub(prov), 32);
	r->budget = budget;
	r->expiry = expiry;
	memset(r->nonce, nonce, sizeof(r->nonce));
}

static void test_ledger_accounts(void)
{
	ledger_t *l = open_ledger("acc.db");
	wallet_t *a = wallet_seeded(1), *b = wallet_seeded(2);
	err_msg_t e = { "" };
	settle_t s = ledger_settle(l);
	CHECK_EQ_INT(balance(l, a), 0);
	REQUIRE(settle_deposit(&s, wallet_pub(a), 5000000, &e) == 0);
	REQUIRE(settle_deposit(&s, wallet_pub(b), 1000, &e) == 0);
	CHECK_EQ_INT(balance(l, a), 5000000);
	audit_ok(l);
	CHECK_EQ_INT(settle_deposit(&s, wallet_pub(a), 0, &e), ERR_RANGE);
	CHECK_EQ_INT(settle_deposit(&s, wallet_pub(a), -5, &e), ERR_RANGE);
	/* Deposits are bounded by AMOUNT_MAX in total, so no sum can overflow. */
	CHECK_EQ_INT(settle_deposit(&s, wallet_pub(a), AMOUNT_MAX, &e), ERR_RANGE);
	CHECK_EQ_INT(balance(l, a), 5000000);
	REQUIRE(settle_withdraw(&s, wallet_pub(a), 1000000, &e) == 0);
	CHECK_EQ_INT(balance(l, a), 4000000);
	CHECK_EQ_INT(settle_withdraw(&s, wallet_pub(b), 1001, &e), ERR_RANGE);
	CHECK(strstr(e.msg, "balance") != NULL);
	CHECK_EQ_INT(balance(l, b), 1000);
	REQUIRE(settle_stake(&s, wallet_pub(a), 3000000, &e) == 0);
	settle_account_t acc;
	REQUIRE(settle_account(&s, wallet_pub(a), &acc, &e) == 0);
	CHECK_EQ_INT(acc.balance, 1000000);
	CHECK_EQ_INT(acc.stake, 3000000);
	CHECK_EQ_INT(settle_stake(&s, wallet_pub(a), 1000001, &e), ERR_RANGE);
	CHECK_EQ_INT(settle_unstake(&s, wallet_pub(a), 3000001, &e), ERR_RANGE);
	REQUIRE(settle_unstake(&s, wallet_pub(a), 500000, &e) == 0);
	/* Staked money cannot be withdrawn. */
	CHECK_EQ_INT(settle_withdraw(&s, wallet_pub(a), 1500001, &e), ERR_RANGE);
	ledger_totals_t t;
	REQUIRE(ledger_audit(l, &t, &e) == 0);
	CHECK_EQ_INT(t.deposits, 5001000);
	CHECK_EQ_INT(t.withdrawals, 1000000);
	CHECK_EQ_INT(t.stakes, 2500000);
	CHECK_EQ_INT(t.balances, 1501000);
	ledger_free(l);

	/* Reopening sees the same state. */
	l = open_ledger("acc.db");
	CHECK_EQ_INT(balance(l, a), 1500000);
	audit_ok(l);
	ledger_free(l);
	wallet_free(a);
	wallet_free(b);
}

static void test_ledger_redeem(void)
{
	ledger_t *l = open_ledger("redeem.db");
	wallet_t *buyer = wallet_seeded(1), *prov = wallet_seeded(2), *mallory = wallet_seeded(3);
	err_msg_t e = { "" };
	settle_t s = ledger_settle(l);
	REQUIRE(settle_deposit(&s, wallet_pub(buyer), 10000, &e) == 0);
	settle_reserve_t r;
	uint8_t id[32], id2[32];
	reserve_req(&r, buyer, prov, 4000, NOW + 1000, 7);
	REQUIRE(settle_reserve(&s, &r, NOW, id, &e) == 0);
	uint8_t want[32];
	voucher_channel_id(r.buyer, r.provider, r.nonce, want);
	CHECK(memcmp(id, want, 32) == 0);
	settle_account_t acc;
	REQUIRE(settle_account(&s, wallet_pub(buyer), &acc, &e) == 0);
	CHECK_EQ_INT(acc.balance, 6000);
	CHECK_EQ_INT(acc.reserved, 4000);
	audit_ok(l);
	/* A retried reserve: same id, nothing moves; other terms under that id: refused. */
	REQUIRE(settle_reserve(&s, &r, NOW + 1, id2, &e) == 0);
	CHECK(memcmp(id, id2, 32) == 0);
	CHECK_EQ_INT(balance(l, buyer), 6000);
	r.budget = 3000;
	CHECK_EQ_INT(settle_reserve(&s, &r, NOW, id2, &e), ERR_INVAL);
	/* Refusals: too big, in the past, self-dealing. */
	reserve_req(&r, buyer, prov, 6001, NOW + 1000, 8);
	CHECK_EQ_INT(settle_reserve(&s, &r, NOW, id2, &e), ERR_RANGE);
	reserve_req(&r, buyer, prov, 100, NOW, 8);
	CHECK_EQ_INT(settle_reserve(&s, &r, NOW, id2, &e), ERR_RANGE);
	reserve_req(&r, buyer, buyer, 100, NOW + 10, 8);
	CHECK_EQ_INT(settle_reserve(&s, &r, NOW, id2, &e), ERR_INVAL);
	CHECK_EQ_INT(balance(l, buyer), 6000);

	amount_t paid = -1;
	voucher_t v1 = mkv(id, buyer, 1, 100), v2 = mkv(id, buyer, 2, 250), v3 = mkv(id, buyer, 3, 200);
	REQUIRE(settle_redeem(&s, &v1, NOW, &paid, &e) == 0);
	CHECK_EQ_INT(paid, 100);
	/* The same voucher again pays nothing (and is not an error: retries are safe). */
	REQUIRE(settle_redeem(&s, &v1, NOW, &paid, &e) == 0);
	CHECK_EQ_INT(paid, 0);
	REQUIRE(settle_redeem(&s, &v2, NOW, &paid, &e) == 0);
	CHECK_EQ_INT(paid, 150);              /* only the difference */
	REQUIRE(settle_redeem(&s, &v1, NOW, &paid, &e) == 0);
	CHECK_EQ_INT(paid, 0);
	REQUIRE(settle_redeem(&s, &v3, NOW, &paid, &e) == 0);   /* newer but lower: nothing */
	CHECK_EQ_INT(paid, 0);
	CHECK_EQ_INT(balance(l, prov), 250);
	/* Forged (also under a sequence already redeemed), over budget, unknown channel. */
	voucher_t f = mkv(id, mallory, 4, 4000);
	CHECK_EQ_INT(settle_redeem(&s, &f, NOW, &paid, &e), VOUCHER_E_FORGED);
	f = mkv(id, mallory, 2, 250);
	CHECK_EQ_INT(settle_redeem(&s, &f, NOW, &paid, &e), VOUCHER_E_FORGED);
	f = mkv(id, buyer, 4, 300);
	f.amount = 3000;                       /* changed after signing */
	CHECK_EQ_INT(settle_redeem(&s, &f, NOW, &paid, &e), VOUCHER_E_FORGED);
	f = mkv(id, buyer, 4, 4001);
	CHECK_EQ_INT(settle_redeem(&s, &f, NOW, &paid, &e), VOUCHER_E_OVER_BUDGET);
	uint8_t nowhere[32] = { 9 };
	f = mkv(nowhere, buyer, 1, 1);
	CHECK_EQ_INT(settle_redeem(&s, &f, NOW, &paid, &e), ERR_NOTFOUND);
	/* A refused voucher's sequence is still free for the real one. */
	voucher_t v4 = mkv(id, buyer, 4, 4000);
	REQUIRE(settle_redeem(&s, &v4, NOW, &paid, &e) == 0);
	CHECK_EQ_INT(paid, 3750);
	CHECK_EQ_INT(balance(l, prov), 4000);
	settle_channel_t c;
	REQUIRE(settle_channel(&s, id, &c, &e) == 0);
	CHECK_EQ_INT(c.redeemed, 4000);
	CHECK_EQ_INT(c.last_seq, 4);
	CHECK_EQ_INT(c.state, SETTLE_OPEN);
	CHECK(memcmp(c.buyer, wallet_pub(buyer), 32) == 0);
	CHECK_EQ_INT(settle_channel(&s, nowhere, &c, &e), ERR_NOTFOUND);
	ledger_totals_t t;
	REQUIRE(ledger_audit(l, &t, &e) == 0);
	CHECK_EQ_INT(t.redemptions, 4);        /* v1, v2, v3, v4 */
	CHECK_EQ_INT(t.redeemed, 4000);
	ledger_free(l);
	wallet_free(buyer);
	wallet_free(prov);
	wallet_free(mallory);
}

static void test_ledger_close(void)
{
	ledger_t *l = open_ledger("close.db");
	wallet_t *buyer = wallet_seeded(1), *prov = wallet_seeded(2);
	err_msg_t e = { "" };
	settle_t s = ledger_settle(l);
	REQUIRE(settle_deposit(&s, wallet_pub(buyer), 10000, &e) == 0);
	settle_reserve_t r;
	uint8_t a[32], b[32], c3[32];
	settle_channel_t c;
	amount_t paid;

	/* Buyer's close: a window in which the provider still redeems. */
	reserve_req(&r, buyer, prov, 1000, NOW + 1000, 1);
	REQUIRE(settle_reserve(&s, &r, NOW, a, &e) == 0);
	REQUIRE(settle_redeem(&s, &(voucher_t){ 0 }, NOW, &paid, &e) != 0);   /* seq 0 */
	voucher_t v1 = mkv(a, buyer, 1, 100), v2 = mkv(a, buyer, 2, 300);
	REQUIRE(settle_redeem(&s, &v1, NOW, &paid, &e) == 0);
	REQUIRE(settle_close(&s, a, SETTLE_BY_BUYER, NOW + 10, &c, &e) == 0);
	CHECK_EQ_INT(c.state, SETTLE_CLOSING);
	CHECK_EQ_INT(c.close_at, NOW + 10 + WINDOW);
	CHECK_EQ_INT(balance(l, buyer), 9000);                       /* nothing refunded yet */
	REQUIRE(settle_close(&s, a, SETTLE_BY_BUYER, NOW + 50, &c, &e) == 0);  /* too early: no change */
	CHECK_EQ_INT(c.state, SETTLE_CLOSING);
	CHECK_EQ_INT(c.close_at, NOW + 10 + WINDOW);
	REQUIRE(settle_redeem(&s, &v2, NOW + 60, &paid, &e) == 0);    /* inside the window */
	CHECK_EQ_INT(paid, 200);
	audit_ok(l);
	voucher_t v3 = mkv(a, buyer, 3, 400);
	CHECK_EQ_INT(settle_redeem(&s, &v3, NOW + 10 + WINDOW, &paid, &e), VOUCHER_E_CLOSED);
	REQUIRE(settle_close(&s, a, SETTLE_BY_BUYER, NOW + 10 + WINDOW, &c, &e) == 0);
	CHECK_EQ_INT(c.state, SETTLE_CLOSED);
	CHECK_EQ_INT(c.refunded, 700);
	CHECK_EQ_INT(balance(l, buyer), 9700);
	CHECK_EQ_INT(balance(l, prov), 300);
	/* Closing again refunds nothing more; redeem after close is refused,
	 * and an already redeemed voucher still answers "paid nothing". */
	REQUIRE(settle_close(&s, a, SETTLE_BY_PROVIDER, NOW + 500, &c, &e) == 0);
	CHECK_EQ_INT(balance(l, buyer), 9700);
	CHECK_EQ_INT(settle_redeem(&s, &v3, NOW + 500, &paid, &e), VOUCHER_E_CLOSED);
	REQUIRE(settle_redeem(&s, &v2, NOW + 500, &paid, &e) == 0);
	CHECK_EQ_INT(paid, 0);
	audit_ok(l);

	/* Provider's close: settles at once. */
	reserve_req(&r, buyer, prov, 2000, NOW + 1000, 2);
	REQUIRE(settle_reserve(&s, &r, NOW, b, &e) == 0);
	voucher_t w1 = mkv(b, buyer, 1, 1500);
	REQUIRE(settle_redeem(&s, &w1, NOW, &paid, &e) == 0);
	REQUIRE(settle_close(&s, b, SETTLE_BY_PROVIDER, NOW + 1, &c, &e) == 0);
	CHECK_EQ_INT(c.state, SETTLE_CLOSED);
	CHECK_EQ_INT(c.refunded, 500);
	CHECK_EQ_INT(balance(l, buyer), 9700 - 2000 + 500);
	CHECK_EQ_INT(settle_close(&s, b, 7, NOW, &c, &e), ERR_INVAL);
	audit_ok(l);

	/* Expiry: the last voucher is redeemable for one window after it;
	 * after that, a buyer's close refunds at once. */
	reserve_req(&r, buyer, prov, 1000, NOW + 100, 3);
	REQUIRE(settle_reserve(&s, &r, NOW, c3, &e) == 0);
	voucher_t x1 = mkv(c3, buyer, 1, 10), x2 = mkv(c3, buyer, 2, 20);
	REQUIRE(settle_redeem(&s, &x1, NOW + 100 + WINDOW - 1, &paid, &e) == 0);
	CHECK_EQ_INT(paid, 10);
	CHECK_EQ_INT(settle_redeem(&s, &x2, NOW + 100 + WINDOW, &paid, &e), VOUCHER_E_EXPIRED);
	amount_t before = balance(l, buyer);
	REQUIRE(settle_close(&s, c3, SETTLE_BY_BUYER, NOW + 100 + WINDOW, &c, &e) == 0);
	CHECK_EQ_INT(c.state, SETTLE_CLOSED);
	CHECK_EQ_INT(balance(l, buyer), before + 990);
	settle_account_t acc;
	REQUIRE(settle_account(&s, wallet_pub(buyer), &acc, &e) == 0);
	CHECK_EQ_INT(acc.reserved, 0);
	CHECK_EQ_INT(settle_close(&s, (uint8_t[32]){ 1 }, SETTLE_BY_BUYER, NOW, &c, &e), ERR_NOTFOUND);
	audit_ok(l);
	ledger_free(l);
	wallet_free(buyer);
	wallet_free(prov);
}

static void test_ledger_slash(void)
{
	ledger_t *l = open_ledger("slash.db");
	wallet_t *prov = wallet_seeded(2), *auditor = wallet_seeded(4);
	err_msg_t e = { "" };
	settle_t s = ledger_settle(l);
	REQUIRE(settle_deposit(&s, wallet_pub(prov), 1000, &e) == 0);
	REQUIRE(settle_stake(&s, wallet_pub(prov), 500, &e) == 0);
	uint8_t ev1[32], ev2[32];
	memset(ev1, 1, 32);
	memset(ev2, 2, 32);
	amount_t got = -1;
	REQUIRE(settle_slash(&s, wallet_pub(prov), 200, wallet_pub(auditor), ev1, NOW, &got, &e) == 0);
	CHECK_EQ_INT(got, 200);
	/* The same evidence slashes once. */
	REQUIRE(settle_slash(&s, wallet_pub(prov), 200, wallet_pub(auditor), ev1, NOW, &got, &e) == 0);
	CHECK_EQ_INT(got, 0);
	/* More than the stake: takes what is there, never the free balance. */
	REQUIRE(settle_slash(&s, wallet_pub(prov), 10000, wallet_pub(auditor), ev2, NOW, &got, &e) == 0);
	CHECK_EQ_INT(got, 300);
	settle_account_t a;
	REQUIRE(settle_account(&s, wallet_pub(prov), &a, &e) == 0);
	CHECK_EQ_INT(a.stake, 0);
	CHECK_EQ_INT(a.balance, 500);
	CHECK_EQ_INT(balance(l, auditor), 500);
	CHECK_EQ_INT(settle_slash(&s, wallet_pub(prov), 0, wallet_pub(auditor), ev2, NOW, &got, &e), ERR_RANGE);
	ledger_totals_t t;
	REQUIRE(ledger_audit(l, &t, &e) == 0);
	CHECK_EQ_INT(t.slashed, 500);
	ledger_free(l);
	wallet_free(prov);
	wallet_free(auditor);
}

/* ---- concurrency ---- */

#define NV 120
#define NTHREADS 4

typedef struct worker {
	ledger_t *l;                  /* shared, or NULL: open its own */
	const char *path;
	const voucher_t *v;
	unsigned seed;
	amount_t paid;
	int errors;
} worker_t;

static void *redeem_worker(void *arg)
{
	worker_t *w = arg;
	err_msg_t e = { "" };
	ledger_t *l = w->l;
	if (!l) {
		ledger_opts_t o;
		ledger_opts_default(&o);
		o.window = WINDOW;
		o.sync_normal = 1;
		if (ledger_open(w->path, &o, &l, &e) != 0) {
			w->errors++;
			return NULL;
		}
	}
	/* Each thread redeems every voucher, in its own shuffled order. */
	int order[NV];
	for (int i = 0; i < NV; i++)
		order[i] = i;
	unsigned x = w->seed;
	for (int i = NV - 1; i > 0; i--) {
		x = x * 1103515245u + 12345u;
		int j = (int)((x >> 8) % (unsigned)(i + 1));
		int t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int i = 0; i < NV; i++) {
		amount_t p = 0;
		if (ledger_redeem(l, &w->v[order[i]], NOW, &p, &e) != 0) {
			fprintf(stderr, "  redeem: %s\n", e.msg);
			w->errors++;
		}
		w->paid += p;
	}
	if (!w->l)
		ledger_free(l);
	return NULL;
}

static void concurrent_run(int shared)
{
	char path[700];
	tmp_path(path, sizeof(path), shared ? "conc_shared.db" : "conc_own.db");
	ledger_t *l = open_ledger(shared ? "conc_shared.db" : "conc_own.db");
	wallet_t *buyer = wallet_seeded(1), *prov = wallet_seeded(2);
	err_msg_t e = { "" };
	REQUIRE(ledger_deposit(l, wallet_pub(buyer), 1000000, &e) == 0);
	settle_reserve_t r;
	uint8_t id[32];
	reserve_req(&r, buyer, prov, 1000000, NOW + 1000, 1);
	REQUIRE(ledger_reserve(l, &r, NOW, id, &e) == 0);
	static voucher_t v[NV];
	for (int i = 0; i < NV; i++)
		v[i] = mkv(id, buyer, (uint64_t)i + 1, (amount_t)(i + 1) * 37);
	worker_t w[NTHREADS];
	pthread_t th[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (worker_t){ .l = shared ? l : NULL, .path = path, .v = v, .seed = 77u + (unsigned)i };
		REQUIRE(pthread_create(&th[i], NULL, redeem_worker, &w[i]) == 0);
	}
	amount_t total = 0;
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ_INT(w[i].errors, 0);
		total += w[i].paid;
	}
	/* Paid exactly once, in total the highest voucher, whatever the interleaving. */
	CHECK_EQ_INT(total, NV * 37);
	CHECK_EQ_INT(balance(l, prov), NV * 37);
	ledger_totals_t t;
	REQUIRE(ledger_audit(l, &t, &e) == 0);
	CHECK_EQ_INT(t.redemptions, NV);
	CHECK_EQ_INT(t.redeemed, NV * 37);
	ledger_free(l);
	wallet_free(buyer);
	wallet_free(prov);
}

static void test_ledger_concurrent_handles(void) { concurrent_run(0); }
static void test_ledger_concurrent_shared(void) { concurrent_run(1); }

static void test_ledger_files(void)
{
	char path[700];
	err_msg_t e = { "" };
	ledger_t *l = open_ledger("mode.db");
	tmp_path(path, sizeof(path), "mode.db");
	struct stat st;
	REQUIRE(stat(path, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 077, 0);
	ledger_free(l);
	/* Not a ledger: refused with a message, not a crash. */
	tmp_path(path, sizeof(path), "junk.db");
	FILE *f = fopen(path, "wb");
	REQUIRE(f != NULL);
	for (int i = 0; i < 4096; i++)
		fputc(i * 7, f);
	fclose(f);
	CHECK(ledger_open(path, NULL, &l, &e) != 0);
	CHECK(l == NULL);
	CHECK(e.msg[0] != 0);
	CHECK_EQ_INT(ledger_open("/nonexistent/dir/x.db", NULL, &l, &e), ERR_IO);
}

TEST_MAIN(test_ledger_accounts, test_ledger_redeem, test_ledger_close, test_ledger_slash,
	test_ledger_concurrent_handles, test_ledger_concurrent_shared, test_ledger_files)
