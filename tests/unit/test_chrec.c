/* test_chrec.c - the buyer's recording settle_t (market/chrec.h) over a real
 * SQLite ledger: every reserve is in channels.db before the ledger sees it
 * (a settle_t underneath checks the record at the moment of each reserve),
 * reserves from 4 threads at once, a refused reserve marked gone, a lost
 * reply kept and closed, closing one generation's channels and not the
 * others', a close that fails tried again, and the second close after the
 * challenge window that refunds the rest. */
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "market/chrec.h"
#include "market/chstore.h"
#include "market/ledger.h"
#include "market/wallet.h"
#include "test.h"
#include "test_wallet.h"

/* A fresh folder under the test's temporary root. */
static void tmp_dir(char *out, size_t n, const char *name)
{
	test_tmp_dir(out, n, name);
}

#define WINDOW 1
#define BUDGET 1000

/* The ledger, seen through a settle_t that can lose a reserve's reply
 * (after it ran), refuse closes, and checks that each reserve was recorded
 * before it arrived. */
struct flaky {
	ledger_t *l;
	settle_t ls;
	chstore_t *cs;                 /* to look the record up */
	int lose_reply;                /* next reserve: runs, then ERR_IO */
	int fail_close;                /* closes: ERR_IO without running */
	int unrecorded;                /* reserves that arrived before their record (atomic) */
};

static int rec_seen(void *ud, const chstore_chan_t *c)
{
	const uint8_t *id = ud;
	return memcmp(c->id, id, MARKET_IDLEN) == 0 ? 1 : 0;
}

static int fl_reserve(void *impl, const settle_reserve_t *r, int64_t now, uint8_t id[MARKET_IDLEN], err_msg_t *e)
{
	struct flaky *f = impl;
	uint8_t want[MARKET_IDLEN];
	voucher_channel_id(r->buyer, r->provider, r->nonce, want);
	err_msg_t ig;
	if (chstore_foreach(f->cs, rec_seen, want, NULL, &ig) != 1)
		__atomic_add_fetch(&f->unrecorded, 1, __ATOMIC_RELAXED);
	int rc = settle_reserve(&f->ls, r, now, id, e);
	if (rc == 0 && __atomic_exchange_n(&f->lose_reply, 0, __ATOMIC_RELAXED))
		return err_set(e, ERR_IO, "the reply was lost");
	return rc;
}

static int fl_close(void *impl, const uint8_t id[MARKET_IDLEN], int party, int64_t now, settle_channel_t *out,
		    err_msg_t *e)
{
	struct flaky *f = impl;
	if (f->fail_close)
		return err_set(e, ERR_IO, "ledger unreachable");
	return settle_close(&f->ls, id, party, now, out, e);
}

static int fl_account(void *impl, const uint8_t a[WALLET_PUBLEN], settle_account_t *out, err_msg_t *e)
{ return settle_account(&((struct flaky *)impl)->ls, a, out, e); }
static int fl_channel(void *impl, const uint8_t id[MARKET_IDLEN], settle_channel_t *out, err_msg_t *e)
{ return settle_channel(&((struct flaky *)impl)->ls, id, out, e); }

static const settle_ops_t fl_ops = { NULL, NULL, NULL, NULL, fl_reserve, NULL, fl_close, NULL, fl_account, fl_channel };

struct fixture {
	char dir[600];
	ledger_t *l;
	chstore_t *cs;
	struct flaky f;
	chrec_t *rec;
	settle_t s;
	wallet_t *buyer, *prov;
};

static void fx_open(struct fixture *x, const char *name, amount_t deposit)
{
	memset(x, 0, sizeof(*x));
	REQUIRE(sodium_init() >= 0);
	tmp_dir(x->dir, sizeof(x->dir), name);
	char path[700];
	snprintf(path, sizeof(path), "%s/ledger.db", x->dir);
	ledger_opts_t o;
	ledger_opts_default(&o);
	o.window = WINDOW;
	err_msg_t e = { "" };
	REQUIRE(ledger_open(path, &o, &x->l, &e) == 0);
	REQUIRE(chstore_open(x->dir, &x->cs, &e) == 0);
	x->buyer = wallet_seeded(1);
	x->prov = wallet_seeded(2);
	REQUIRE(ledger_deposit(x->l, wallet_pub(x->buyer), deposit, &e) == 0);
	x->f.l = x->l;
	x->f.ls = ledger_settle(x->l);
	x->f.cs = x->cs;
	settle_t inner = { &fl_ops, &x->f };
	uint8_t lid[WALLET_PUBLEN];
	memset(lid, 7, sizeof(lid));
	chrec_cfg_t cc = { inner, x->cs, lid, "127.0.0.1:9" };
	REQUIRE(chrec_new(&cc, &x->rec, &e) == 0);
	x->s = chrec_settle(x->rec);
}

static void fx_close(struct fixture *x)
{
	err_msg_t e = { "" };
	CHECK_OK(ledger_audit(x->l, NULL, &e));
	chrec_free(x->rec);
	chstore_free(x->cs);
	ledger_free(x->l);
	wallet_free(x->buyer);
	wallet_free(x->prov);
}

static int reserve(struct fixture *x, amount_t budget, uint8_t id[MARKET_IDLEN], err_msg_t *e)
{
	settle_reserve_t r;
	memset(&r, 0, sizeof(r));
	memcpy(r.buyer, wallet_pub(x->buyer), WALLET_PUBLEN);
	memcpy(r.provider, wallet_pub(x->prov), WALLET_PUBLEN);
	r.budget = budget;
	r.expiry = (int64_t)time(NULL) + 3600;
	randombytes_buf(r.nonce, sizeof(r.nonce));
	return settle_reserve(&x->s, &r, (int64_t)time(NULL), id, e);
}

/* The record of id in channels.db (state -1: none). */
struct find { const uint8_t *id; chstore_chan_t c; int found; };
static int find_cb(void *ud, const chstore_chan_t *c)
{
	struct find *f = ud;
	if (memcmp(c->id, f->id, MARKET_IDLEN))
		return 0;
	f->c = *c;
	f->found = 1;
	return 0;
}
static int rec_state(struct fixture *x, const uint8_t id[MARKET_IDLEN])
{
	struct find f;
	memset(&f, 0, sizeof(f));
	f.id = id;
	err_msg_t e = { "" };
	CHECK_OK(chstore_foreach(x->cs, find_cb, &f, NULL, &e));
	return f.found ? f.c.state : -1;
}

static amount_t reserved(struct fixture *x)
{
	settle_account_t a;
	err_msg_t e = { "" };
	CHECK_OK(ledger_account(x->l, wallet_pub(x->buyer), &a, &e));
	return a.reserved;
}

static int count_cb(void *ud, const chstore_chan_t *c)
{
	int *n = ud;
	if (c->state >= 0 && c->state < 5)
		n[c->state]++;
	return 0;
}

struct tally { int n, failed, closing, closed; };
static void tally_cb(void *ud, const chrec_closed_t *c)
{
	struct tally *t = ud;
	t->n++;
	t->failed += c->rc != 0;
	t->closing += c->rc == 0 && c->state == CHSTORE_CLOSING;
	t->closed += c->rc == 0 && c->state == CHSTORE_CLOSED;
}

/* Until the ledger's window for every closing channel has passed (the
 * ledger compares whole seconds). */
static void wait_window(void)
{
	int64_t until = (int64_t)time(NULL) + WINDOW + 1;
	while ((int64_t)time(NULL) < until)
		usleep(50000);
}

#define THREADS 4
#define PER_THREAD 8

struct worker { struct fixture *x; int fails; };
static void *reserve_main(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < PER_THREAD; i++) {
		uint8_t id[MARKET_IDLEN];
		err_msg_t e = { "" };
		if (reserve(w->x, BUDGET, id, &e) != 0)
			w->fails++;
	}
	return NULL;
}

static void test_threads_record_first(void)
{
	struct fixture x;
	fx_open(&x, "threads", 1000000);
	pthread_t th[THREADS];
	struct worker w[THREADS];
	for (int i = 0; i < THREADS; i++) {
		w[i].x = &x;
		w[i].fails = 0;
		REQUIRE(pthread_create(&th[i], NULL, reserve_main, &w[i]) == 0);
	}
	int fails = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		fails += w[i].fails;
	}
	CHECK_EQ_INT(fails, 0);
	CHECK_EQ_INT(x.f.unrecorded, 0);
	CHECK_EQ_INT(chrec_count(x.rec), THREADS * PER_THREAD);
	CHECK_EQ_INT(reserved(&x), (amount_t)THREADS * PER_THREAD * BUDGET);
	struct tally t = { 0, 0, 0, 0 };
	CHECK_EQ_INT(chrec_close_all(x.rec, tally_cb, &t), THREADS * PER_THREAD);
	CHECK_EQ_INT(t.closing, THREADS * PER_THREAD);
	/* closed once: nothing more to close now */
	CHECK_EQ_INT(chrec_close_all(x.rec, NULL, NULL), 0);
	fx_close(&x);
}

static void test_refused_and_lost(void)
{
	struct fixture x;
	fx_open(&x, "refused", 5 * BUDGET);
	uint8_t a[MARKET_IDLEN], b[MARKET_IDLEN], c[MARKET_IDLEN];
	err_msg_t e = { "" };
	/* more than the balance: the ledger's refusal; the record is gone */
	CHECK_EQ_INT(reserve(&x, 10 * BUDGET, a, &e), ERR_RANGE);
	CHECK_EQ_INT(chrec_count(x.rec), 1);
	/* a reply lost after the reserve ran: kept "reserving", then closed */
	x.f.lose_reply = 1;
	CHECK_EQ_INT(reserve(&x, BUDGET, b, &e), ERR_IO);
	CHECK_OK(reserve(&x, BUDGET, c, &e));
	CHECK_EQ_INT(rec_state(&x, c), CHSTORE_OPEN);
	CHECK_EQ_INT(reserved(&x), 2 * BUDGET);
	struct tally t = { 0, 0, 0, 0 };
	CHECK_EQ_INT(chrec_close_all(x.rec, tally_cb, &t), 2);   /* b and c; never the refused one */
	CHECK_EQ_INT(t.closing, 2);
	CHECK_EQ_INT(rec_state(&x, c), CHSTORE_CLOSING);
	/* the refused reserve's record: GONE, never closed */
	int n[5] = { 0 };
	CHECK_OK(chstore_foreach(x.cs, count_cb, n, NULL, &e));
	CHECK_EQ_INT(n[CHSTORE_GONE], 1);
	CHECK_EQ_INT(n[CHSTORE_CLOSING], 2);
	wait_window();
	memset(&t, 0, sizeof(t));
	CHECK_EQ_INT(chrec_finish(x.rec, (int64_t)time(NULL), tally_cb, &t), 0);
	CHECK_EQ_INT(t.closed, 2);
	CHECK_EQ_INT(rec_state(&x, c), CHSTORE_CLOSED);
	CHECK_EQ_INT(rec_state(&x, b), CHSTORE_CLOSED);
	CHECK_EQ_INT(reserved(&x), 0);
	fx_close(&x);
}

static void test_close_one_generation(void)
{
	struct fixture x;
	fx_open(&x, "subset", 100 * BUDGET);
	uint8_t ids[3][MARKET_IDLEN];
	err_msg_t e = { "" };
	for (int i = 0; i < 3; i++)
		CHECK_OK(reserve(&x, BUDGET, ids[i], &e));
	/* a channel this buyer did not reserve through r is not touched */
	uint8_t other[1][MARKET_IDLEN];
	memset(other, 0x5a, sizeof(other));
	CHECK_EQ_INT(chrec_close(x.rec, (const uint8_t(*)[MARKET_IDLEN])other, 1, NULL, NULL), 0);
	/* one generation's two channels: the third stays open */
	struct tally t = { 0, 0, 0, 0 };
	CHECK_EQ_INT(chrec_close(x.rec, (const uint8_t(*)[MARKET_IDLEN])ids, 2, tally_cb, &t), 2);
	CHECK_EQ_INT(t.closing, 2);
	CHECK_EQ_INT(rec_state(&x, ids[0]), CHSTORE_CLOSING);
	CHECK_EQ_INT(rec_state(&x, ids[2]), CHSTORE_OPEN);
	/* the window has not passed: still waiting, nothing refunded */
	CHECK_EQ_INT(chrec_finish(x.rec, (int64_t)time(NULL) - 10, NULL, NULL), 2);
	CHECK_EQ_INT(reserved(&x), 3 * BUDGET);
	/* the ledger decides: closed again too early, a channel stays closing */
	memset(&t, 0, sizeof(t));
	int left = chrec_finish(x.rec, (int64_t)time(NULL) + 100, tally_cb, &t);
	CHECK(t.closing + t.closed == 2);   /* closed if this machine was slow */
	CHECK_EQ_INT(left, t.closing);
	wait_window();
	memset(&t, 0, sizeof(t));
	CHECK_EQ_INT(chrec_finish(x.rec, (int64_t)time(NULL), tally_cb, &t), 0);
	CHECK_EQ_INT(rec_state(&x, ids[0]), CHSTORE_CLOSED);
	CHECK_EQ_INT(rec_state(&x, ids[1]), CHSTORE_CLOSED);
	CHECK_EQ_INT(rec_state(&x, ids[2]), CHSTORE_OPEN);
	CHECK_EQ_INT(reserved(&x), BUDGET);
	/* a close that fails is reported, and tried again by finish */
	x.f.fail_close = 1;
	memset(&t, 0, sizeof(t));
	CHECK_EQ_INT(chrec_close(x.rec, (const uint8_t(*)[MARKET_IDLEN])&ids[2], 1, tally_cb, &t), 1);
	CHECK_EQ_INT(t.failed, 1);
	CHECK_EQ_INT(rec_state(&x, ids[2]), CHSTORE_OPEN);
	CHECK_EQ_INT(chrec_finish(x.rec, (int64_t)time(NULL), NULL, NULL), 1);   /* not yet: a retry waits */
	x.f.fail_close = 0;
	memset(&t, 0, sizeof(t));
	chrec_finish(x.rec, (int64_t)time(NULL) + 60, tally_cb, &t);
	CHECK_EQ_INT(t.closing, 1);
	CHECK_EQ_INT(rec_state(&x, ids[2]), CHSTORE_CLOSING);
	wait_window();
	CHECK_EQ_INT(chrec_finish(x.rec, (int64_t)time(NULL), NULL, NULL), 0);
	CHECK_EQ_INT(reserved(&x), 0);
	fx_close(&x);
}

TEST_MAIN(test_threads_record_first, test_refused_and_lost, test_close_one_generation)
