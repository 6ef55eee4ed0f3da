/* ledger.c - the SQLite settlement backend (see ledger.h and settle.h). */
#include "market/ledger.h"

#include <assert.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#define LEDGER_SCHEMA_VERSION 1

/* Amounts are SQLite INTEGERs (int64). The CHECKs repeat the rules the code
 * enforces first, so a bug cannot commit a state that breaks them. */
static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS totals("
	" id INTEGER PRIMARY KEY CHECK (id = 1),"
	" deposits INTEGER NOT NULL CHECK (deposits >= 0),"
	" withdrawals INTEGER NOT NULL CHECK (withdrawals >= 0 AND withdrawals <= deposits));"
	"INSERT OR IGNORE INTO totals VALUES (1, 0, 0);"
	"CREATE TABLE IF NOT EXISTS accounts("
	" addr BLOB PRIMARY KEY CHECK (length(addr) = 32),"
	" balance INTEGER NOT NULL CHECK (balance >= 0),"
	" stake INTEGER NOT NULL CHECK (stake >= 0)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS channels("
	" id BLOB PRIMARY KEY CHECK (length(id) = 32),"
	" buyer BLOB NOT NULL CHECK (length(buyer) = 32),"
	" provider BLOB NOT NULL CHECK (length(provider) = 32),"
	" budget INTEGER NOT NULL CHECK (budget > 0),"
	" redeemed INTEGER NOT NULL CHECK (redeemed >= 0 AND redeemed <= budget),"
	" refunded INTEGER NOT NULL CHECK (refunded >= 0 AND refunded <= budget - redeemed),"
	" expiry INTEGER NOT NULL,"
	" close_at INTEGER NOT NULL,"
	" last_seq INTEGER NOT NULL,"
	" state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),"
	" created INTEGER NOT NULL,"
	" CHECK (state = 2 OR refunded = 0),"
	" CHECK (state != 2 OR redeemed + refunded = budget)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS channels_buyer ON channels(buyer, state);"
	"CREATE TABLE IF NOT EXISTS redemptions("
	" channel BLOB NOT NULL REFERENCES channels(id),"
	" seq INTEGER NOT NULL,"
	" amount INTEGER NOT NULL CHECK (amount >= 0),"
	" paid INTEGER NOT NULL CHECK (paid >= 0 AND paid <= amount),"
	" at INTEGER NOT NULL,"
	" PRIMARY KEY (channel, seq)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS slashes("
	" evidence BLOB PRIMARY KEY CHECK (length(evidence) = 32),"
	" provider BLOB NOT NULL,"
	" beneficiary BLOB NOT NULL,"
	" amount INTEGER NOT NULL CHECK (amount >= 0),"
	" at INTEGER NOT NULL) WITHOUT ROWID;";

/* The ledger service's replay guard (ledger_nonce_take): a table added to
 * version 1 later, so it is created on every open and older files gain it. */
static const char nonces_sql[] =
	"CREATE TABLE IF NOT EXISTS nonces("
	" wallet BLOB PRIMARY KEY CHECK (length(wallet) = 32),"
	" last INTEGER NOT NULL CHECK (last > 0)) WITHOUT ROWID;";

enum {
	S_BEGIN, S_COMMIT, S_ROLLBACK,
	S_ACC_GET, S_ACC_PUT, S_TOT_GET, S_TOT_SET,
	S_CH_GET, S_CH_INS, S_CH_SET, S_CH_RESERVED,
	S_RED_GET, S_RED_INS, S_SLASH_GET, S_SLASH_INS,
	S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_ACC_GET] = "SELECT balance, stake FROM accounts WHERE addr = ?1",
	[S_ACC_PUT] = "INSERT INTO accounts(addr, balance, stake) VALUES (?1, ?2, ?3) "
		"ON CONFLICT(addr) DO UPDATE SET balance = ?2, stake = ?3",
	[S_TOT_GET] = "SELECT deposits, withdrawals FROM totals WHERE id = 1",
	[S_TOT_SET] = "UPDATE totals SET deposits = ?1, withdrawals = ?2 WHERE id = 1",
	[S_CH_GET] = "SELECT buyer, provider, budget, redeemed, refunded, expiry, close_at, last_seq, state "
		"FROM channels WHERE id = ?1",
	[S_CH_INS] = "INSERT INTO channels(id, buyer, provider, budget, redeemed, refunded, expiry, close_at, "
		"last_seq, state, created) VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, 0, 0, 0, ?6)",
	[S_CH_SET] = "UPDATE channels SET redeemed = ?2, refunded = ?3, close_at = ?4, last_seq = ?5, state = ?6 "
		"WHERE id = ?1",
	[S_CH_RESERVED] = "SELECT coalesce(sum(budget - redeemed - refunded), 0) FROM channels "
		"WHERE buyer = ?1 AND state != 2",
	[S_RED_GET] = "SELECT paid FROM redemptions WHERE channel = ?1 AND seq = ?2",
	[S_RED_INS] = "INSERT INTO redemptions(channel, seq, amount, paid, at) VALUES (?1, ?2, ?3, ?4, ?5)",
	[S_SLASH_GET] = "SELECT amount FROM slashes WHERE evidence = ?1",
	[S_SLASH_INS] = "INSERT INTO slashes(evidence, provider, beneficiary, amount, at) VALUES (?1, ?2, ?3, ?4, ?5)",
};

struct ledger {
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	pthread_mutex_t mu;          /* recursive: ledger_guarded holds it around an operation */
	ledger_opts_t o;
	/* ledger_guarded's request nonce, taken by the operation's own
	 * transaction (tx_begin) so that both commit together; only set while
	 * ledger_guarded holds mu. */
	const uint8_t *g_wallet;
	int64_t g_nonce;
	int g_taken;
};

void ledger_opts_default(ledger_opts_t *o)
{
	memset(o, 0, sizeof(*o));
	o->window = 3600;
	o->busy_timeout_ms = 10000;
}

/* ---- SQLite plumbing ---- */

static int db_err(ledger_t *l, int src, err_msg_t *e, const char *what)
{
	int code = ERR_IO;
	if ((src & 0xff) == SQLITE_CONSTRAINT)
		code = ERR_RANGE;   /* a CHECK caught what the code should have refused: still refuse */
	return err_set(e, code, "ledger: %s: %s", what, sqlite3_errmsg(l->db));
}

static sqlite3_stmt *stmt(ledger_t *l, int i)
{
	sqlite3_stmt *s = l->st[i];
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Runs a statement that returns no row. */
static int step_done(ledger_t *l, sqlite3_stmt *s, err_msg_t *e, const char *what)
{
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return db_err(l, rc, e, what);
	return 0;
}

static int do_nonce(ledger_t *l, const uint8_t *wallet, int64_t nonce, err_msg_t *e);

static int tx_begin(ledger_t *l, err_msg_t *e)
{
	int rc = step_done(l, stmt(l, S_BEGIN), e, "begin (another writer held the database too long?)");
	if (rc == 0 && l->g_wallet && !l->g_taken) {
		rc = do_nonce(l, l->g_wallet, l->g_nonce, e);
		if (rc) {
			err_msg_t ignore;
			(void)step_done(l, stmt(l, S_ROLLBACK), &ignore, "rollback");
		} else {
			l->g_taken = 1;
		}
	}
	return rc;
}

/* Commits if rc == 0, rolls back otherwise; returns rc or the commit's error. */
static int tx_end(ledger_t *l, int rc, err_msg_t *e)
{
	if (rc == 0) {
		rc = step_done(l, stmt(l, S_COMMIT), e, "commit");
		if (rc == 0)
			return 0;
	}
	if (!sqlite3_get_autocommit(l->db)) {
		err_msg_t ignore;
		(void)step_done(l, stmt(l, S_ROLLBACK), &ignore, "rollback");
	}
	l->g_taken = 0;   /* a guard nonce taken in this transaction went with it */
	return rc;
}

static void bind_key(sqlite3_stmt *s, int i, const uint8_t *k)
{
	sqlite3_bind_blob(s, i, k, 32, SQLITE_STATIC);
}

typedef struct acct {
	amount_t balance, stake;
} acct_t;

static int acct_get(ledger_t *l, const uint8_t *addr, acct_t *a, err_msg_t *e)
{
	sqlite3_stmt *s = stmt(l, S_ACC_GET);
	bind_key(s, 1, addr);
	int rc = sqlite3_step(s);
	a->balance = a->stake = 0;
	if (rc == SQLITE_ROW) {
		a->balance = sqlite3_column_int64(s, 0);
		a->stake = sqlite3_column_int64(s, 1);
	} else if (rc != SQLITE_DONE) {
		return db_err(l, rc, e, "reading an account");
	}
	sqlite3_reset(s);
	return 0;
}

static int acct_put(ledger_t *l, const uint8_t *addr, const acct_t *a, err_msg_t *e)
{
	sqlite3_stmt *s = stmt(l, S_ACC_PUT);
	bind_key(s, 1, addr);
	sqlite3_bind_int64(s, 2, a->balance);
	sqlite3_bind_int64(s, 3, a->stake);
	return step_done(l, s, e, "writing an account");
}

/* balance += amount (checked). */
static int acct_credit(ledger_t *l, const uint8_t *addr, amount_t amount, err_msg_t *e)
{
	acct_t a;
	int rc = acct_get(l, addr, &a, e);
	if (rc)
		return rc;
	if (amount_add(a.balance, amount, &a.balance) != 0)
		return err_set(e, ERR_RANGE, "ledger: a balance would overflow");
	return acct_put(l, addr, &a, e);
}

static int totals_get(ledger_t *l, amount_t *dep, amount_t *wd, err_msg_t *e)
{
	sqlite3_stmt *s = stmt(l, S_TOT_GET);
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return rc == SQLITE_DONE ? err_set(e, ERR_FORMAT, "ledger: the totals row is missing")
			: db_err(l, rc, e, "reading the totals");
	}
	*dep = sqlite3_column_int64(s, 0);
	*wd = sqlite3_column_int64(s, 1);
	sqlite3_reset(s);
	return 0;
}

static int totals_set(ledger_t *l, amount_t dep, amount_t wd, err_msg_t *e)
{
	sqlite3_stmt *s = stmt(l, S_TOT_SET);
	sqlite3_bind_int64(s, 1, dep);
	sqlite3_bind_int64(s, 2, wd);
	return step_done(l, s, e, "writing the totals");
}

static int chan_get(ledger_t *l, const uint8_t *id, settle_channel_t *c, err_msg_t *e)
{
	sqlite3_stmt *s = stmt(l, S_CH_GET);
	bind_key(s, 1, id);
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		if (rc == SQLITE_DONE) {
			char hex[2 * MARKET_IDLEN + 1];
			sodium_bin2hex(hex, sizeof(hex), id, MARKET_IDLEN);
			return err_set(e, ERR_NOTFOUND, "ledger: no channel %.16s", hex);
		}
		return db_err(l, rc, e, "reading a channel");
	}
	memset(c, 0, sizeof(*c));
	memcpy(c->id, id, MARKET_IDLEN);
	if (sqlite3_column_bytes(s, 0) != 32 || sqlite3_column_bytes(s, 1) != 32) {
		sqlite3_reset(s);
		return err_set(e, ERR_FORMAT, "ledger: a channel row has a malformed key");
	}
	memcpy(c->buyer, sqlite3_column_blob(s, 0), 32);
	memcpy(c->provider, sqlite3_column_blob(s, 1), 32);
	c->budget = sqlite3_column_int64(s, 2);
	c->redeemed = sqlite3_column_int64(s, 3);
	c->refunded = sqlite3_column_int64(s, 4);
	c->expiry = sqlite3_column_int64(s, 5);
	c->close_at = sqlite3_column_int64(s, 6);
	c->last_seq = (uint64_t)sqlite3_column_int64(s, 7);
	c->state = sqlite3_column_int(s, 8);
	sqlite3_reset(s);
	return 0;
}

static int chan_set(ledger_t *l, const settle_channel_t *c, err_msg_t *e)
{
	sqlite3_stmt *s = stmt(l, S_CH_SET);
	bind_key(s, 1, c->id);
	sqlite3_bind_int64(s, 2, c->redeemed);
	sqlite3_bind_int64(s, 3, c->refunded);
	sqlite3_bind_int64(s, 4, c->close_at);
	sqlite3_bind_int64(s, 5, (int64_t)c->last_seq);
	sqlite3_bind_int(s, 6, c->state);
	return step_done(l, s, e, "writing a channel");
}

/* ---- open / close ---- */

static int exec_sql(ledger_t *l, const char *sql, err_msg_t *e)
{
	char *msg = NULL;
	if (sqlite3_exec(l->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		err_set(e, ERR_IO, "ledger: %s: %s", sql[0] == 'P' ? sql : "creating the schema",
			msg ? msg : "error");
		sqlite3_free(msg);
		return ERR_IO;
	}
	return 0;
}

static int pragma_int(ledger_t *l, const char *sql, int64_t *v, err_msg_t *e)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(l->db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
		*v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return err_set(e, ERR_IO, "ledger: %s: %s", sql, sqlite3_errmsg(l->db));
	return 0;
}

int ledger_open(const char *path, const ledger_opts_t *opts, ledger_t **out, err_msg_t *e)
{
	*out = NULL;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	ledger_t *l = calloc(1, sizeof(*l));
	if (!l)
		return err_set(e, ERR_NOMEM, "ledger: out of memory");
	if (opts)
		l->o = *opts;
	else
		ledger_opts_default(&l->o);
	if (l->o.window < 0)
		l->o.window = 0;
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&l->mu, &ma);
	pthread_mutexattr_destroy(&ma);
	/* The money database is nobody else's business: create it 0600 (SQLite
	 * gives its -wal and -shm files the main file's mode). */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0)
		close(fd);
	int rc = sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		err_set(e, ERR_IO, "ledger: cannot open %s: %s", path, l->db ? sqlite3_errmsg(l->db) : "out of memory");
		ledger_free(l);
		return ERR_IO;
	}
	sqlite3_busy_timeout(l->db, l->o.busy_timeout_ms > 0 ? l->o.busy_timeout_ms : 10000);
	int64_t ver = 0;
	const char *sync = l->o.sync_normal ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL";
	rc = exec_sql(l, "PRAGMA journal_mode=WAL", e);
	if (rc == 0)
		rc = exec_sql(l, sync, e);
	if (rc == 0)
		rc = exec_sql(l, "PRAGMA foreign_keys=ON", e);
	if (rc == 0)
		rc = pragma_int(l, "PRAGMA user_version", &ver, e);
	if (rc == 0 && ver != 0 && ver != LEDGER_SCHEMA_VERSION)
		rc = err_set(e, ERR_FORMAT, "ledger: %s has schema version %lld, this build knows %d", path,
			(long long)ver, LEDGER_SCHEMA_VERSION);
	if (rc == 0 && ver == 0) {
		/* One transaction: two processes creating the file at once both end with one schema. */
		rc = exec_sql(l, "BEGIN IMMEDIATE", e);
		if (rc == 0) {
			rc = exec_sql(l, schema_sql, e);
			if (rc == 0)
				rc = exec_sql(l, "PRAGMA user_version=1", e);
			rc = exec_sql(l, rc == 0 ? "COMMIT" : "ROLLBACK", rc == 0 ? e : NULL) ? ERR_IO : rc;
		}
	}
	if (rc == 0)
		rc = exec_sql(l, nonces_sql, e);
	for (int i = 0; rc == 0 && i < S_COUNT; i++)
		if (sqlite3_prepare_v3(l->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &l->st[i], NULL) != SQLITE_OK)
			rc = err_set(e, ERR_FORMAT, "ledger: %s is not a colony ledger: %s", path, sqlite3_errmsg(l->db));
	if (rc) {
		ledger_free(l);
		return rc;
	}
	*out = l;
	return 0;
}

void ledger_free(ledger_t *l)
{
	if (!l)
		return;
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(l->st[i]);
	if (l->db)
		sqlite3_close(l->db);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

/* ---- operations ---- */

#define LOCKED(l, body) do { pthread_mutex_lock(&(l)->mu); body; pthread_mutex_unlock(&(l)->mu); } while (0)

static int positive(amount_t a, const char *what, err_msg_t *e)
{
	if (a <= 0)
		return err_set(e, ERR_RANGE, "ledger: %s of %lld: amounts must be positive", what, (long long)a);
	return 0;
}

static int do_deposit(ledger_t *l, const uint8_t *addr, amount_t amount, err_msg_t *e)
{
	amount_t dep, wd;
	int rc = totals_get(l, &dep, &wd, e);
	if (rc == 0 && amount_add(dep, amount, &dep) != 0)
		rc = err_set(e, ERR_RANGE, "ledger: deposits would exceed %lld micro-units", (long long)AMOUNT_MAX);
	if (rc == 0)
		rc = acct_credit(l, addr, amount, e);
	if (rc == 0)
		rc = totals_set(l, dep, wd, e);
	return rc;
}

int ledger_deposit(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{
	int rc = positive(amount, "deposit", e);
	if (rc)
		return rc;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_deposit(l, addr, amount, e), e);
	});
	return rc;
}

static int do_withdraw(ledger_t *l, const uint8_t *addr, amount_t amount, err_msg_t *e)
{
	amount_t dep, wd;
	acct_t a;
	int rc = totals_get(l, &dep, &wd, e);
	if (rc == 0)
		rc = acct_get(l, addr, &a, e);
	if (rc)
		return rc;
	if (amount_sub(a.balance, amount, &a.balance) != 0)
		return err_set(e, ERR_RANGE, "ledger: withdraw %lld: the balance is %lld", (long long)amount,
			(long long)a.balance);
	if (amount_add(wd, amount, &wd) != 0)
		return err_set(e, ERR_RANGE, "ledger: withdrawals overflow");
	rc = acct_put(l, addr, &a, e);
	if (rc == 0)
		rc = totals_set(l, dep, wd, e);
	return rc;
}

int ledger_withdraw(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{
	int rc = positive(amount, "withdraw", e);
	if (rc)
		return rc;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_withdraw(l, addr, amount, e), e);
	});
	return rc;
}

/* to_stake: balance -> stake; else stake -> balance. */
static int do_stake(ledger_t *l, const uint8_t *addr, amount_t amount, int to_stake, err_msg_t *e)
{
	acct_t a;
	int rc = acct_get(l, addr, &a, e);
	if (rc)
		return rc;
	amount_t *from = to_stake ? &a.balance : &a.stake, *to = to_stake ? &a.stake : &a.balance;
	if (amount_sub(*from, amount, from) != 0)
		return err_set(e, ERR_RANGE, "ledger: %s %lld: only %lld there", to_stake ? "stake" : "unstake",
			(long long)amount, (long long)*from);
	if (amount_add(*to, amount, to) != 0)
		return err_set(e, ERR_RANGE, "ledger: overflow");
	return acct_put(l, addr, &a, e);
}

int ledger_stake(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{
	int rc = positive(amount, "stake", e);
	if (rc)
		return rc;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_stake(l, addr, amount, 1, e), e);
	});
	return rc;
}

int ledger_unstake(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], amount_t amount, err_msg_t *e)
{
	int rc = positive(amount, "unstake", e);
	if (rc)
		return rc;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_stake(l, addr, amount, 0, e), e);
	});
	return rc;
}

static int do_reserve(ledger_t *l, const settle_reserve_t *r, int64_t now, const uint8_t *id, err_msg_t *e)
{
	settle_channel_t c;
	int rc = chan_get(l, id, &c, NULL);
	if (rc == 0) {
		/* A retry of the same reserve: nothing moves. */
		if (memcmp(c.buyer, r->buyer, 32) || memcmp(c.provider, r->provider, 32) ||
				c.budget != r->budget || c.expiry != r->expiry)
			return err_set(e, ERR_INVAL, "ledger: this channel id already names a channel with other terms");
		return 0;
	}
	if (rc != ERR_NOTFOUND)
		return chan_get(l, id, &c, e);
	acct_t a;
	rc = acct_get(l, r->buyer, &a, e);
	if (rc)
		return rc;
	if (amount_sub(a.balance, r->budget, &a.balance) != 0)
		return err_set(e, ERR_RANGE, "ledger: reserve %lld: the buyer's balance is %lld",
			(long long)r->budget, (long long)a.balance);
	rc = acct_put(l, r->buyer, &a, e);
	if (rc)
		return rc;
	sqlite3_stmt *s = stmt(l, S_CH_INS);
	bind_key(s, 1, id);
	bind_key(s, 2, r->buyer);
	bind_key(s, 3, r->provider);
	sqlite3_bind_int64(s, 4, r->budget);
	sqlite3_bind_int64(s, 5, r->expiry);
	sqlite3_bind_int64(s, 6, now);
	return step_done(l, s, e, "creating a channel");
}

int ledger_reserve(ledger_t *l, const settle_reserve_t *r, int64_t now, uint8_t id[MARKET_IDLEN], err_msg_t *e)
{
	int rc = positive(r->budget, "reserve", e);
	if (rc)
		return rc;
	if (r->expiry <= now)
		return err_set(e, ERR_RANGE, "ledger: reserve: expiry %lld is not after now (%lld)",
			(long long)r->expiry, (long long)now);
	if (sodium_memcmp(r->buyer, r->provider, WALLET_PUBLEN) == 0)
		return err_set(e, ERR_INVAL, "ledger: reserve: buyer and provider are the same address");
	uint8_t cid[MARKET_IDLEN];
	voucher_channel_id(r->buyer, r->provider, r->nonce, cid);
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_reserve(l, r, now, cid, e), e);
	});
	if (rc == 0)
		memcpy(id, cid, MARKET_IDLEN);
	return rc;
}

/* The last second a voucher of c may be redeemed (exclusive). */
static int64_t redeem_deadline(const ledger_t *l, const settle_channel_t *c)
{
	int64_t end = c->expiry > INT64_MAX - l->o.window ? INT64_MAX : c->expiry + l->o.window;
	if (c->state == SETTLE_CLOSING && c->close_at < end)
		end = c->close_at;
	return end;
}

static int do_redeem(ledger_t *l, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e)
{
	settle_channel_t c;
	int rc = chan_get(l, v->channel, &c, e);
	if (rc)
		return rc;
	/* Seen before (the signature was checked by the caller): idempotent,
	 * whatever the channel's state now. */
	sqlite3_stmt *s = stmt(l, S_RED_GET);
	bind_key(s, 1, v->channel);
	sqlite3_bind_int64(s, 2, (int64_t)v->seq);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc != SQLITE_DONE)
		return db_err(l, rc, e, "reading redemptions");
	if (c.state == SETTLE_CLOSED)
		return err_set(e, VOUCHER_E_CLOSED, "ledger: voucher %llu: the channel is closed",
			(unsigned long long)v->seq);
	if (c.state == SETTLE_CLOSING && now >= c.close_at)
		return err_set(e, VOUCHER_E_CLOSED, "ledger: voucher %llu: the channel's close window ended at %lld",
			(unsigned long long)v->seq, (long long)c.close_at);
	if (now >= redeem_deadline(l, &c))
		return err_set(e, VOUCHER_E_EXPIRED, "ledger: voucher %llu: the channel expired (redeem deadline %lld, now %lld)",
			(unsigned long long)v->seq, (long long)redeem_deadline(l, &c), (long long)now);
	if (v->amount > c.budget)
		return err_set(e, VOUCHER_E_OVER_BUDGET, "ledger: voucher %llu carries %lld, the budget is %lld",
			(unsigned long long)v->seq, (long long)v->amount, (long long)c.budget);
	amount_t delta = v->amount > c.redeemed ? v->amount - c.redeemed : 0;
	s = stmt(l, S_RED_INS);
	bind_key(s, 1, v->channel);
	sqlite3_bind_int64(s, 2, (int64_t)v->seq);
	sqlite3_bind_int64(s, 3, v->amount);
	sqlite3_bind_int64(s, 4, delta);
	sqlite3_bind_int64(s, 5, now);
	rc = step_done(l, s, e, "recording a redemption");
	if (rc || delta == 0)
		return rc;
	rc = acct_credit(l, c.provider, delta, e);
	if (rc)
		return rc;
	c.redeemed = v->amount;
	c.last_seq = v->seq;
	rc = chan_set(l, &c, e);
	if (rc == 0)
		*paid = delta;
	return rc;
}

int ledger_redeem(ledger_t *l, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e)
{
	*paid = 0;
	if (v->seq == 0 || v->amount < 0)
		return err_set(e, ERR_RANGE, "ledger: voucher sequence 0 or negative amount");
	/* The signature is checked outside the write lock, so connections verify
	 * in parallel; a channel's buyer never changes, so the check stays true. */
	settle_channel_t c;
	int rc;
	LOCKED(l, rc = chan_get(l, v->channel, &c, e));
	if (rc)
		return rc;
	if (voucher_verify(v, c.buyer) != 0)
		return err_set(e, VOUCHER_E_FORGED, "ledger: voucher %llu is not signed by the channel's buyer",
			(unsigned long long)v->seq);
	amount_t p = 0;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_redeem(l, v, now, &p, e), e);
	});
	if (rc == 0)
		*paid = p;
	return rc;
}

static int do_close(ledger_t *l, const uint8_t *id, int party, int64_t now, settle_channel_t *c, err_msg_t *e)
{
	int rc = chan_get(l, id, c, e);
	if (rc || c->state == SETTLE_CLOSED)
		return rc;
	int64_t hard_end = c->expiry > INT64_MAX - l->o.window ? INT64_MAX : c->expiry + l->o.window;
	int finalize = party == SETTLE_BY_PROVIDER || now >= hard_end ||
		(c->state == SETTLE_CLOSING && now >= c->close_at);
	if (!finalize) {
		if (c->state == SETTLE_CLOSING)
			return 0;              /* the window is still running */
		c->state = SETTLE_CLOSING;
		c->close_at = now > INT64_MAX - l->o.window ? INT64_MAX : now + l->o.window;
		return chan_set(l, c, e);
	}
	amount_t refund = c->budget - c->redeemed;
	if (refund > 0) {
		rc = acct_credit(l, c->buyer, refund, e);
		if (rc)
			return rc;
	}
	c->refunded = refund;
	c->state = SETTLE_CLOSED;
	return chan_set(l, c, e);
}

int ledger_close(ledger_t *l, const uint8_t id[MARKET_IDLEN], int party, int64_t now,
	settle_channel_t *out, err_msg_t *e)
{
	if (party != SETTLE_BY_BUYER && party != SETTLE_BY_PROVIDER)
		return err_set(e, ERR_INVAL, "ledger: close: unknown party %d", party);
	settle_channel_t c;
	int rc;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_close(l, id, party, now, &c, e), e);
	});
	if (rc == 0 && out)
		*out = c;
	return rc;
}

static int do_slash(ledger_t *l, const uint8_t *provider, amount_t amount, const uint8_t *beneficiary,
	const uint8_t *evidence, int64_t now, amount_t *slashed, err_msg_t *e)
{
	sqlite3_stmt *s = stmt(l, S_SLASH_GET);
	bind_key(s, 1, evidence);
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;                   /* this evidence was already acted on */
	if (rc != SQLITE_DONE)
		return db_err(l, rc, e, "reading slashes");
	acct_t a;
	rc = acct_get(l, provider, &a, e);
	if (rc)
		return rc;
	amount_t take = amount < a.stake ? amount : a.stake;
	a.stake -= take;
	rc = acct_put(l, provider, &a, e);
	if (rc == 0 && take > 0)
		rc = acct_credit(l, beneficiary, take, e);
	if (rc)
		return rc;
	s = stmt(l, S_SLASH_INS);
	bind_key(s, 1, evidence);
	bind_key(s, 2, provider);
	bind_key(s, 3, beneficiary);
	sqlite3_bind_int64(s, 4, take);
	sqlite3_bind_int64(s, 5, now);
	rc = step_done(l, s, e, "recording a slash");
	if (rc == 0)
		*slashed = take;
	return rc;
}

int ledger_slash(ledger_t *l, const uint8_t provider[WALLET_PUBLEN], amount_t amount,
	const uint8_t beneficiary[WALLET_PUBLEN], const uint8_t evidence[MARKET_IDLEN], int64_t now,
	amount_t *slashed, err_msg_t *e)
{
	*slashed = 0;
	int rc = positive(amount, "slash", e);
	if (rc)
		return rc;
	amount_t t = 0;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_slash(l, provider, amount, beneficiary, evidence, now, &t, e), e);
	});
	if (rc == 0)
		*slashed = t;
	return rc;
}

/* Reads run in a transaction too, so the parts agree with each other. */
static int do_account(ledger_t *l, const uint8_t *addr, settle_account_t *out, err_msg_t *e)
{
	acct_t a;
	int rc = acct_get(l, addr, &a, e);
	if (rc)
		return rc;
	sqlite3_stmt *s = stmt(l, S_CH_RESERVED);
	bind_key(s, 1, addr);
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return db_err(l, rc, e, "summing reserved budgets");
	}
	out->balance = a.balance;
	out->stake = a.stake;
	out->reserved = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return 0;
}

int ledger_account(ledger_t *l, const uint8_t addr[WALLET_PUBLEN], settle_account_t *out, err_msg_t *e)
{
	int rc;
	memset(out, 0, sizeof(*out));
	LOCKED(l, {
		rc = exec_sql(l, "BEGIN", e);
		if (rc == 0) {
			rc = do_account(l, addr, out, e);
			err_msg_t ignore;
			(void)exec_sql(l, "COMMIT", &ignore);
		}
	});
	return rc;
}

int ledger_channel(ledger_t *l, const uint8_t id[MARKET_IDLEN], settle_channel_t *out, err_msg_t *e)
{
	int rc;
	LOCKED(l, rc = chan_get(l, id, out, e));
	return rc;
}

/* ---- replay guard of the ledger service ---- */

static int do_nonce(ledger_t *l, const uint8_t *wallet, int64_t nonce, err_msg_t *e)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;
	if (sqlite3_prepare_v2(l->db, "SELECT last FROM nonces WHERE wallet = ?1", -1, &s, NULL) != SQLITE_OK)
		return db_err(l, SQLITE_ERROR, e, "nonce lookup");
	bind_key(s, 1, wallet);
	int st = sqlite3_step(s);
	if (st == SQLITE_ROW && sqlite3_column_int64(s, 0) >= nonce)
		rc = err_set(e, ERR_INVAL, "replayed or stale request: nonce %lld is not above the last accepted (%lld)",
			(long long)nonce, (long long)sqlite3_column_int64(s, 0));
	else if (st != SQLITE_ROW && st != SQLITE_DONE)
		rc = db_err(l, st, e, "nonce lookup");
	sqlite3_finalize(s);
	if (rc)
		return rc;
	if (sqlite3_prepare_v2(l->db, "INSERT INTO nonces(wallet, last) VALUES (?1, ?2) "
			"ON CONFLICT(wallet) DO UPDATE SET last = ?2", -1, &s, NULL) != SQLITE_OK)
		return db_err(l, SQLITE_ERROR, e, "nonce update");
	bind_key(s, 1, wallet);
	sqlite3_bind_int64(s, 2, nonce);
	st = sqlite3_step(s);
	if (st != SQLITE_DONE)
		rc = db_err(l, st, e, "nonce update");
	sqlite3_finalize(s);
	return rc;
}

static int nonce_check(ledger_t *l, const uint8_t *wallet, uint64_t nonce, err_msg_t *e)
{
	if (nonce == 0 || nonce > (uint64_t)INT64_MAX)
		return err_set(e, ERR_RANGE, "request nonce %llu is outside 1..2^63-1", (unsigned long long)nonce);
	int rc = 0;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(l->db, "SELECT last FROM nonces WHERE wallet = ?1", -1, &s, NULL) != SQLITE_OK)
		return db_err(l, SQLITE_ERROR, e, "nonce lookup");
	bind_key(s, 1, wallet);
	int st = sqlite3_step(s);
	if (st == SQLITE_ROW && sqlite3_column_int64(s, 0) >= (int64_t)nonce)
		rc = err_set(e, ERR_INVAL, "replayed or stale request: nonce %llu is not above the last accepted (%lld)",
			(unsigned long long)nonce, (long long)sqlite3_column_int64(s, 0));
	else if (st != SQLITE_ROW && st != SQLITE_DONE)
		rc = db_err(l, st, e, "nonce lookup");
	sqlite3_finalize(s);
	return rc;
}

int ledger_nonce_take(ledger_t *l, const uint8_t wallet[WALLET_PUBLEN], uint64_t nonce, err_msg_t *e)
{
	if (nonce == 0 || nonce > (uint64_t)INT64_MAX)
		return err_set(e, ERR_RANGE, "request nonce %llu is outside 1..2^63-1", (unsigned long long)nonce);
	int rc;
	LOCKED(l, {
		rc = tx_begin(l, e);
		if (rc == 0)
			rc = tx_end(l, do_nonce(l, wallet, (int64_t)nonce, e), e);
	});
	return rc;
}

int ledger_guarded(ledger_t *l, const uint8_t wallet[WALLET_PUBLEN], uint64_t nonce,
	int (*op)(void *arg, err_msg_t *e), void *arg, err_msg_t *e)
{
	int rc;
	pthread_mutex_lock(&l->mu);
	assert(!l->g_wallet);   /* not nested */
	rc = nonce_check(l, wallet, nonce, e);
	if (rc == 0) {
		l->g_wallet = wallet;
		l->g_nonce = (int64_t)nonce;
		l->g_taken = 0;
		rc = op(arg, e);
		int taken = l->g_taken;
		l->g_wallet = NULL;
		l->g_taken = 0;
		/* A read, or an operation refused or rolled back, did not take
		 * the nonce: take it now, so the request cannot be replayed. */
		if (!taken) {
			err_msg_t e2 = { "" };
			int r2 = ledger_nonce_take(l, wallet, nonce, &e2);
			if (r2 && rc == 0) {
				rc = r2;
				*e = e2;
			}
		}
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* ---- audit ---- */

static int q_int(ledger_t *l, const char *sql, int64_t *v, err_msg_t *e)
{
	return pragma_int(l, sql, v, e);
}

static int do_audit(ledger_t *l, ledger_totals_t *t, err_msg_t *e)
{
	memset(t, 0, sizeof(*t));
	int rc = totals_get(l, &t->deposits, &t->withdrawals, e);
	struct { const char *sql; int64_t *v; } q[] = {
		{ "SELECT coalesce(sum(balance), 0) FROM accounts", &t->balances },
		{ "SELECT coalesce(sum(stake), 0) FROM accounts", &t->stakes },
		{ "SELECT coalesce(sum(budget - redeemed - refunded), 0) FROM channels", &t->reserved },
		{ "SELECT coalesce(sum(redeemed), 0) FROM channels", &t->redeemed },
		{ "SELECT coalesce(sum(refunded), 0) FROM channels", &t->refunded },
		{ "SELECT coalesce(sum(amount), 0) FROM slashes", &t->slashed },
		{ "SELECT count(*) FROM accounts", &t->accounts },
		{ "SELECT count(*) FROM channels", &t->channels },
		{ "SELECT count(*) FROM redemptions", &t->redemptions },
	};
	for (size_t i = 0; rc == 0 && i < sizeof(q) / sizeof(q[0]); i++)
		rc = q_int(l, q[i].sql, q[i].v, e);
	if (rc)
		return rc;
	int64_t bad = 0;
	rc = q_int(l, "SELECT count(*) FROM accounts WHERE balance < 0 OR stake < 0", &bad, e);
	if (rc == 0 && bad)
		return err_set(e, ERR_FORMAT, "audit: %lld accounts hold a negative amount", (long long)bad);
	/* Each term is <= deposits <= AMOUNT_MAX, so the sum fits in 128 bits trivially. */
	__int128 held = (__int128)t->balances + t->stakes + t->reserved;
	if (held != (__int128)t->deposits - t->withdrawals)
		return err_set(e, ERR_FORMAT, "audit: balances %lld + stakes %lld + reserved %lld != deposits %lld - "
			"withdrawals %lld", (long long)t->balances, (long long)t->stakes, (long long)t->reserved,
			(long long)t->deposits, (long long)t->withdrawals);
	/* A channel's payments add up to what it says it redeemed, which is its
	 * highest redeemed voucher: a voucher paid twice would break the sum. */
	rc = q_int(l, "SELECT count(*) FROM channels c WHERE c.redeemed != "
		"(SELECT coalesce(sum(paid), 0) FROM redemptions r WHERE r.channel = c.id) OR c.redeemed != "
		"(SELECT coalesce(max(amount), 0) FROM redemptions r WHERE r.channel = c.id AND r.amount <= c.budget)",
		&bad, e);
	if (rc == 0 && bad)
		return err_set(e, ERR_FORMAT, "audit: %lld channels whose payments do not add up to their highest voucher",
			(long long)bad);
	rc = q_int(l, "SELECT count(*) FROM channels WHERE redeemed > budget OR refunded < 0 OR "
		"(state = 2 AND redeemed + refunded != budget) OR (state != 2 AND refunded != 0)", &bad, e);
	if (rc == 0 && bad)
		return err_set(e, ERR_FORMAT, "audit: %lld channels with inconsistent redeemed/refunded/budget",
			(long long)bad);
	rc = q_int(l, "SELECT count(*) FROM redemptions r WHERE NOT EXISTS "
		"(SELECT 1 FROM channels c WHERE c.id = r.channel)", &bad, e);
	if (rc == 0 && bad)
		return err_set(e, ERR_FORMAT, "audit: %lld redemptions of unknown channels", (long long)bad);
	return rc;
}

int ledger_audit(ledger_t *l, ledger_totals_t *t, err_msg_t *e)
{
	ledger_totals_t tmp;
	int rc;
	LOCKED(l, {
		rc = exec_sql(l, "BEGIN", e);
		if (rc == 0) {
			rc = do_audit(l, t ? t : &tmp, e);
			err_msg_t ignore;
			(void)exec_sql(l, "COMMIT", &ignore);
		}
	});
	return rc;
}

/* ---- settle.h ---- */

static int s_deposit(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return ledger_deposit(i, a, x, e); }
static int s_withdraw(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return ledger_withdraw(i, a, x, e); }
static int s_stake(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return ledger_stake(i, a, x, e); }
static int s_unstake(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return ledger_unstake(i, a, x, e); }
static int s_reserve(void *i, const settle_reserve_t *r, int64_t now, uint8_t *id, err_msg_t *e)
{ return ledger_reserve(i, r, now, id, e); }
static int s_redeem(void *i, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e)
{ return ledger_redeem(i, v, now, paid, e); }
static int s_close(void *i, const uint8_t *id, int party, int64_t now, settle_channel_t *out, err_msg_t *e)
{ return ledger_close(i, id, party, now, out, e); }
static int s_slash(void *i, const uint8_t *p, amount_t x, const uint8_t *b, const uint8_t *ev, int64_t now,
	amount_t *slashed, err_msg_t *e)
{ return ledger_slash(i, p, x, b, ev, now, slashed, e); }
static int s_account(void *i, const uint8_t *a, settle_account_t *out, err_msg_t *e)
{ return ledger_account(i, a, out, e); }
static int s_channel(void *i, const uint8_t *id, settle_channel_t *out, err_msg_t *e)
{ return ledger_channel(i, id, out, e); }

static const settle_ops_t ledger_ops = {
	.deposit = s_deposit, .withdraw = s_withdraw, .stake = s_stake, .unstake = s_unstake,
	.reserve = s_reserve, .redeem = s_redeem, .close = s_close, .slash = s_slash,
	.account = s_account, .channel = s_channel,
};

settle_t ledger_settle(ledger_t *l)
{
	settle_t s = { &ledger_ops, l };
	return s;
}
