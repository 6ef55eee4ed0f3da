/* chstore.c - the buyer's channel store (see chstore.h). */
#include "market/chstore.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "market/sqlstore.h"

#define CHSTORE_SCHEMA_VERSION 1

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS channels("
	" id BLOB PRIMARY KEY CHECK (length(id) = 32),"
	" provider BLOB NOT NULL CHECK (length(provider) = 32),"
	" budget INTEGER NOT NULL CHECK (budget > 0),"
	" expiry INTEGER NOT NULL,"
	" ledger_id BLOB NOT NULL CHECK (length(ledger_id) = 32),"
	" ledger TEXT NOT NULL CHECK (length(ledger) < 128),"
	" state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),"
	" close_at INTEGER NOT NULL DEFAULT 0,"
	" redeemed INTEGER NOT NULL DEFAULT 0 CHECK (redeemed >= 0 AND redeemed <= budget),"
	" refunded INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= budget),"
	" created INTEGER NOT NULL,"
	" updated INTEGER NOT NULL) WITHOUT ROWID;"
	"PRAGMA user_version=1;";

struct chstore {
	sqlite3 *db;
	pthread_mutex_t mu;
};

const char *chstore_state_str(int state)
{
	static const char *const n[] = { "reserving", "open", "closing", "closed", "gone" };
	return state >= 0 && state <= CHSTORE_GONE ? n[state] : "?";
}

static int db_err(chstore_t *s, err_msg_t *e, const char *what)
{
	return err_set(e, ERR_IO, "channel store: %s: %s", what, sqlite3_errmsg(s->db));
}


static const sqlstore_spec_t spec = {
	.what = "channel store",
	.file_name = CHSTORE_FILE_NAME,
	.schema_sql = schema_sql,
	.version = CHSTORE_SCHEMA_VERSION,
	.probe_sql = "SELECT id, provider, budget, expiry, ledger_id, ledger, state, "
					  "close_at, redeemed, refunded, created, updated FROM channels LIMIT 0",
};

int chstore_open(const char *dir, chstore_t **out, err_msg_t *e)
{
	*out = NULL;
	chstore_t *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ERR_NOMEM, "channel store: out of memory");
	pthread_mutex_init(&s->mu, NULL);
	int rc = sqlstore_open(dir, &spec, &s->db, e);
	if (rc) {
		chstore_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void chstore_free(chstore_t *s)
{
	if (!s)
		return;
	sqlite3_close(s->db);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

int chstore_add(chstore_t *s, const chstore_chan_t *c, int64_t now, err_msg_t *e)
{
	if (c->budget <= 0 || memchr(c->ledger, 0, sizeof(c->ledger)) == NULL)
		return err_set(e, ERR_INVAL, "channel store: a record needs a budget > 0 and a ledger address");
	sqlite3_stmt *st = NULL;
	int rc;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db,
			       "INSERT OR IGNORE INTO channels(id, provider, budget, expiry, ledger_id, ledger, state, "
			       "created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7)", -1, &st, NULL) != SQLITE_OK)
		rc = db_err(s, e, "recording a channel");
	else {
		sqlite3_bind_blob(st, 1, c->id, MARKET_IDLEN, SQLITE_STATIC);
		sqlite3_bind_blob(st, 2, c->provider, WALLET_PUBLEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, c->budget);
		sqlite3_bind_int64(st, 4, c->expiry);
		sqlite3_bind_blob(st, 5, c->ledger_id, WALLET_PUBLEN, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, c->ledger, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 7, now);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, e, "recording a channel");
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int chstore_set(chstore_t *s, const uint8_t id[MARKET_IDLEN], int state, int64_t close_at, amount_t redeemed,
	amount_t refunded, int64_t now, err_msg_t *e)
{
	if (state < CHSTORE_RESERVING || state > CHSTORE_GONE)
		return err_set(e, ERR_INVAL, "channel store: unknown state %d", state);
	sqlite3_stmt *st = NULL;
	int rc;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db, "UPDATE channels SET state = ?2, close_at = ?3, redeemed = ?4, refunded = ?5, "
				      "updated = ?6 WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
		rc = db_err(s, e, "updating a channel");
	else {
		sqlite3_bind_blob(st, 1, id, MARKET_IDLEN, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, state);
		sqlite3_bind_int64(st, 3, close_at);
		sqlite3_bind_int64(st, 4, redeemed);
		sqlite3_bind_int64(st, 5, refunded);
		sqlite3_bind_int64(st, 6, now);
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, e, "updating a channel");
		if (rc == 0 && sqlite3_changes(s->db) == 0)
			rc = err_set(e, ERR_NOTFOUND, "channel store: no such channel");
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static int blob_copy(sqlite3_stmt *st, int col, uint8_t *out, int n)
{
	const void *b = sqlite3_column_blob(st, col);
	if (!b || sqlite3_column_bytes(st, col) != n)
		return -1;
	memcpy(out, b, (size_t)n);
	return 0;
}

static int row_read(sqlite3_stmt *st, chstore_chan_t *c)
{
	memset(c, 0, sizeof(*c));
	if (blob_copy(st, 0, c->id, MARKET_IDLEN) || blob_copy(st, 1, c->provider, WALLET_PUBLEN) ||
	    blob_copy(st, 4, c->ledger_id, WALLET_PUBLEN))
		return -1;
	c->budget = sqlite3_column_int64(st, 2);
	c->expiry = sqlite3_column_int64(st, 3);
	const unsigned char *l = sqlite3_column_text(st, 5);
	if (!l || sqlite3_column_bytes(st, 5) >= CHSTORE_LEDGER_LEN)
		return -1;
	memcpy(c->ledger, l, (size_t)sqlite3_column_bytes(st, 5));
	int64_t state = sqlite3_column_int64(st, 6);
	c->close_at = sqlite3_column_int64(st, 7);
	c->redeemed = sqlite3_column_int64(st, 8);
	c->refunded = sqlite3_column_int64(st, 9);
	c->created = sqlite3_column_int64(st, 10);
	c->updated = sqlite3_column_int64(st, 11);
	if (state < CHSTORE_RESERVING || state > CHSTORE_GONE || c->budget <= 0 || c->budget > AMOUNT_MAX ||
	    c->redeemed < 0 || c->redeemed > c->budget || c->refunded < 0 || c->refunded > c->budget)
		return -1;
	c->state = (int)state;
	return 0;
}

int chstore_foreach(chstore_t *s, chstore_each_cb cb, void *ud, size_t *n_bad, err_msg_t *e)
{
	size_t bad = 0;
	sqlite3_stmt *st = NULL;
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db, "SELECT id, provider, budget, expiry, ledger_id, ledger, state, close_at, "
				      "redeemed, refunded, created, updated FROM channels ORDER BY created, id", -1, &st,
			       NULL) != SQLITE_OK) {
		rc = db_err(s, e, "reading channels");
	} else {
		int sr;
		while ((sr = sqlite3_step(st)) == SQLITE_ROW) {
			chstore_chan_t c;
			if (row_read(st, &c) != 0) {
				bad++;
				continue;
			}
			if ((rc = cb(ud, &c)) != 0)
				break;
		}
		if (rc == 0 && sr != SQLITE_DONE)
			rc = db_err(s, e, "reading channels");
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->mu);
	if (n_bad)
		*n_bad = bad;
	return rc;
}
