/* test_ledger_crash.c - SIGKILL a process in the middle of ledger work, 50
 * times, at random points; after each kill the database must reopen, pass
 * ledger_audit() (conservation; every channel paid exactly its highest
 * redeemed voucher, so no voucher was paid twice), and agree with what a
 * replay of the same vouchers pays: nothing more.
 *
 * The child runs random operations forever: deposits, withdrawals, stakes,
 * slashes, reserves, redeems and closes. Channels are named by a nonce from
 * a small set and vouchers are deterministic (ed25519 signatures are), so
 * every child re-reserves (idempotently) and re-redeems the channels and
 * vouchers of the children killed before it: a voucher paid before a crash
 * must pay nothing after it.
 *
 * Then 30 kills of a process running the ledger service's guarded requests
 * (ledger_guarded: nonce and operation in one transaction): no nonce is
 * ever spent without its operation, and no operation runs twice. */
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "market/ledger.h"
#include "market/voucher.h"
#include "market/wallet.h"
#include "test.h"

#define NBUYERS 3
#define NPROVS 2
#define NCHANNELS 24          /* nonces 0..23 */
#define MAXSEQ 40
#define WINDOW 5
#define KILLS 50

static wallet_t *wallet_seeded(uint8_t b)
{
	uint8_t seed[WALLET_SEEDLEN];
	memset(seed, b, sizeof(seed));
	wallet_t *w = NULL;
	if (wallet_new(seed, &w) != 0)
		_exit(3);
	return w;
}

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* The terms of channel k: fixed, so every child names the same channel. */
static void channel_terms(int k, wallet_t **buyers, wallet_t **provs, int64_t t0, settle_reserve_t *r)
{
	memset(r, 0, sizeof(*r));
	memcpy(r->buyer, wallet_pub(buyers[k % NBUYERS]), 32);
	memcpy(r->provider, wallet_pub(provs[k % NPROVS]), 32);
	r->budget = 10000 + 100 * k;
	r->expiry = t0 + 3600;
	r->nonce[0] = (uint8_t)k;
}

/* Voucher seq of channel k: cumulative amount 17 * seq (within every budget). */
static voucher_t channel_voucher(int k, uint64_t seq, wallet_t **buyers, const uint8_t *id)
{
	voucher_t v = { .seq = seq, .amount = (amount_t)(17 * seq), .in_tokens = seq * 3, .out_tokens = seq };
	memcpy(v.channel, id, 32);
	if (voucher_sign(&v, buyers[k % NBUYERS]) != 0)
		_exit(3);
	return v;
}

/* Never returns: random operations until killed. Exits 2 if an operation
 * fails in a way the rules do not allow. */
static void child(const char *path, uint64_t seed, int64_t t0)
{
	wallet_t *buyers[NBUYERS], *provs[NPROVS], *auditor = wallet_seeded(99);
	for (int i = 0; i < NBUYERS; i++)
		buyers[i] = wallet_seeded((uint8_t)(1 + i));
	for (int i = 0; i < NPROVS; i++)
		provs[i] = wallet_seeded((uint8_t)(50 + i));
	ledger_opts_t o;
	ledger_opts_default(&o);
	o.window = WINDOW;
	ledger_t *l = NULL;
	err_msg_t e = { "" };
	if (ledger_open(path, &o, &l, &e) != 0) {
		fprintf(stderr, "child: %s\n", e.msg);
		_exit(2);
	}
	uint64_t x = seed | 1;
	for (uint64_t n = 0;; n++) {
		int op = (int)(rnd(&x) % 100);
		int k = (int)(rnd(&x) % NCHANNELS);
		int rc = 0;
		int64_t now = t0 + (int64_t)(n / 50);
		amount_t got;
		if (op < 15) {
			rc = ledger_deposit(l, wallet_pub(buyers[rnd(&x) % NBUYERS]), 5000 + (amount_t)(rnd(&x) % 20000), &e);
		} else if (op < 20) {
			/* Withdraw what there is, or part of it: refusals are fine, errors are not. */
			wallet_t *w = rnd(&x) & 1 ? provs[rnd(&x) % NPROVS] : buyers[rnd(&x) % NBUYERS];
			rc = ledger_withdraw(l, wallet_pub(w), 1 + (amount_t)(rnd(&x) % 3000), &e);
			if (rc == ERR_RANGE)
				rc = 0;
		} else if (op < 25) {
			rc = ledger_stake(l, wallet_pub(provs[rnd(&x) % NPROVS]), 1 + (amount_t)(rnd(&x) % 500), &e);
			if (rc == ERR_RANGE)
				rc = 0;
		} else if (op < 28) {
			uint8_t ev[32] = { 0 };
			ev[0] = (uint8_t)(rnd(&x) % 16);   /* repeated evidence slashes once */
			rc = ledger_slash(l, wallet_pub(provs[rnd(&x) % NPROVS]), 1 + (amount_t)(rnd(&x) % 300),
				wallet_pub(auditor), ev, now, &got, &e);
		} else if (op < 40) {
			settle_reserve_t r;
			uint8_t id[32];
			channel_terms(k, buyers, provs, t0, &r);
			rc = ledger_reserve(l, &r, now, id, &e);
			if (rc == ERR_RANGE)
				rc = 0;        /* the buyer's balance was short */
		} else if (op < 99) {
			settle_reserve_t r;
			uint8_t id[32];
			channel_terms(k, buyers, provs, t0, &r);
			voucher_channel_id(r.buyer, r.provider, r.nonce, id);
			voucher_t v = channel_voucher(k, 1 + rnd(&x) % MAXSEQ, buyers, id);
			rc = ledger_redeem(l, &v, now, &got, &e);
			if (rc == ERR_NOTFOUND || rc == VOUCHER_E_CLOSED)
				rc = 0;
		} else {
			settle_reserve_t r;
			uint8_t id[32];
			settle_channel_t c;
			channel_terms(k, buyers, provs, t0, &r);
			voucher_channel_id(r.buyer, r.provider, r.nonce, id);
			rc = ledger_close(l, id, (int)(rnd(&x) & 1), now, &c, &e);
			if (rc == ERR_NOTFOUND)
				rc = 0;
		}
		if (rc) {
			fprintf(stderr, "child: op %d failed (%d): %s\n", op, rc, e.msg);
			_exit(2);
		}
	}
}


static void test_ledger_sigkill(void)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/ledger.db", test_tmp_root());
	int64_t t0 = (int64_t)time(NULL);
	uint64_t x = (uint64_t)t0 * 2654435761u | 1;
	err_msg_t e = { "" };
	int64_t max_redemptions = 0;
	for (int it = 0; it < KILLS; it++) {
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0)
			child(path, rnd(&x), t0);
		/* 2..60 ms: often inside a transaction, sometimes inside open. */
		usleep((useconds_t)(2000 + rnd(&x) % 58000));
		kill(pid, SIGKILL);
		int st = 0;
		REQUIRE(waitpid(pid, &st, 0) == pid);
		if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
			fprintf(stderr, "  iteration %d: the child ended by itself (status %d)\n", it, st);
			CHECK(0);
			break;
		}
		ledger_t *l = NULL;
		int rc = ledger_open(path, NULL, &l, &e);
		if (rc)
			fprintf(stderr, "  iteration %d: reopen: %s\n", it, e.msg);
		REQUIRE(rc == 0);
		ledger_totals_t tot;
		rc = ledger_audit(l, &tot, &e);
		if (rc)
			fprintf(stderr, "  iteration %d: audit: %s\n", it, e.msg);
		CHECK_OK(rc);
		/* Work is kept across kills, never lost or repeated. */
		CHECK(tot.redemptions >= max_redemptions);
		max_redemptions = tot.redemptions;
		ledger_free(l);
		if (t_cur_fail)
			break;
	}
	/* Finally: replay every voucher of every channel; nothing pays again
	 * beyond each channel's highest voucher, and the audit still holds. */
	wallet_t *buyers[NBUYERS], *provs[NPROVS];
	for (int i = 0; i < NBUYERS; i++)
		buyers[i] = wallet_seeded((uint8_t)(1 + i));
	for (int i = 0; i < NPROVS; i++)
		provs[i] = wallet_seeded((uint8_t)(50 + i));
	ledger_t *l = NULL;
	REQUIRE(ledger_open(path, NULL, &l, &e) == 0);
	int open_channels = 0;
	for (int k = 0; k < NCHANNELS; k++) {
		settle_reserve_t r;
		uint8_t id[32];
		settle_channel_t c;
		channel_terms(k, buyers, provs, t0, &r);
		voucher_channel_id(r.buyer, r.provider, r.nonce, id);
		if (ledger_channel(l, id, &c, &e) != 0)
			continue;
		if (c.state == SETTLE_CLOSED)
			continue;
		open_channels++;
		amount_t paid_total = 0;
		for (uint64_t s = 1; s <= MAXSEQ; s++) {
			voucher_t v = channel_voucher(k, s, buyers, id);
			amount_t p = 0;
			int rc = ledger_redeem(l, &v, t0, &p, &e);
			CHECK(rc == 0 || rc == VOUCHER_E_CLOSED || rc == VOUCHER_E_EXPIRED);
			paid_total += p;
		}
		settle_channel_t c2;
		REQUIRE(ledger_channel(l, id, &c2, &e) == 0);
		/* The replay paid exactly what was owed above the old high mark:
		 * nothing for any voucher redeemed before a crash. */
		CHECK_EQ_INT(paid_total, 17 * MAXSEQ - c.redeemed);
		CHECK_EQ_INT(c2.redeemed, 17 * MAXSEQ);
	}
	ledger_totals_t tot;
	CHECK_OK(ledger_audit(l, &tot, &e));
	fprintf(stderr, "  %d kills: %lld accounts, %lld channels (%d still open), %lld redemptions, "
		"redeemed %lld, refunded %lld, slashed %lld\n", KILLS, (long long)tot.accounts,
		(long long)tot.channels, open_channels, (long long)tot.redemptions, (long long)tot.redeemed,
		(long long)tot.refunded, (long long)tot.slashed);
	CHECK(tot.redemptions > 0);
	ledger_free(l);
	for (int i = 0; i < NBUYERS; i++)
		wallet_free(buyers[i]);
	for (int i = 0; i < NPROVS; i++)
		wallet_free(provs[i]);
}

/* ---- guarded requests: nonce and operation commit together ---- */

struct dep1 {
	ledger_t *l;
	const uint8_t *addr;
};

static int dep1_run(void *arg, err_msg_t *e)
{
	struct dep1 *d = arg;
	return ledger_deposit(d->l, d->addr, 1, e);
}

static int read_run(void *arg, err_msg_t *e)
{
	struct dep1 *d = arg;
	settle_account_t a;
	return ledger_account(d->l, d->addr, &a, e);
}

static int wd_huge_run(void *arg, err_msg_t *e)
{
	struct dep1 *d = arg;
	return ledger_withdraw(d->l, d->addr, AMOUNT_MAX, e);
}

static amount_t balance_of(ledger_t *l, const uint8_t *addr)
{
	settle_account_t a;
	err_msg_t e = { "" };
	if (ledger_account(l, addr, &a, &e) != 0)
		return -1;
	return a.balance;
}

/* Deposits of 1 micro-unit, request n carrying nonce n: after any crash the
 * balance must equal the last nonce taken, so the next child starts at
 * balance + 1 and is refused if a nonce was ever spent without its deposit
 * (or ran twice). */
static void guarded_child(const char *path, const uint8_t *addr)
{
	ledger_t *l = NULL;
	err_msg_t e = { "" };
	if (ledger_open(path, NULL, &l, &e) != 0)
		_exit(2);
	amount_t b = balance_of(l, addr);
	if (b < 0)
		_exit(2);
	struct dep1 d = { l, addr };
	for (uint64_t n = (uint64_t)b + 1;; n++)
		if (ledger_guarded(l, addr, n, dep1_run, &d, &e) != 0) {
			fprintf(stderr, "guarded child: nonce %llu: %s\n", (unsigned long long)n, e.msg);
			_exit(2);
		}
}

static void test_guarded_sigkill(void)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/guarded.db", test_tmp_root());
	wallet_t *w = wallet_seeded(77);
	const uint8_t *addr = wallet_pub(w);
	uint64_t x = (uint64_t)time(NULL) * 40503u | 1;
	err_msg_t e = { "" };
	for (int it = 0; it < 30; it++) {
		pid_t pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0)
			guarded_child(path, addr);
		usleep((useconds_t)(3000 + rnd(&x) % 40000));
		kill(pid, SIGKILL);
		int st = 0;
		REQUIRE(waitpid(pid, &st, 0) == pid);
		if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
			fprintf(stderr, "  iteration %d: the guarded child failed (status %d)\n", it, st);
			CHECK(0);
			break;
		}
	}
	ledger_t *l = NULL;
	REQUIRE(ledger_open(path, NULL, &l, &e) == 0);
	amount_t b = balance_of(l, addr);
	fprintf(stderr, "  30 kills of guarded deposits: %lld deposits, each with its own nonce\n", (long long)b);
	CHECK(b > 0);
	struct dep1 d = { l, addr };
	/* The last nonce is exactly the balance: it is refused, the next passes. */
	CHECK(ledger_guarded(l, addr, (uint64_t)b, read_run, &d, &e) == ERR_INVAL);
	CHECK_OK(ledger_guarded(l, addr, (uint64_t)b + 1, read_run, &d, &e));
	/* A refused operation still spends its nonce. */
	CHECK(ledger_guarded(l, addr, (uint64_t)b + 2, wd_huge_run, &d, &e) == ERR_RANGE);
	CHECK(ledger_guarded(l, addr, (uint64_t)b + 2, read_run, &d, &e) == ERR_INVAL);
	CHECK_OK(ledger_guarded(l, addr, (uint64_t)b + 3, dep1_run, &d, &e));
	CHECK_EQ_INT(balance_of(l, addr), b + 1);
	ledger_free(l);
	wallet_free(w);
}

TEST_MAIN(test_ledger_sigkill, test_guarded_sigkill)
