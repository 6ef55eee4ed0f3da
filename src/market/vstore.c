/* vstore.c - the provider's voucher store (see vstore.h). */
#include "market/vstore.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "market/sqlstore.h"

#define VSTORE_SCHEMA_VERSION 1

/* One row per channel. The voucher's own bytes are kept (they carry the
 * buyer's signature: what the ledger needs); seq and amount repeat two of its
 * fields so the "newer only" rule is one SQL condition. */
static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS vouchers("
	" channel BLOB PRIMARY KEY CHECK (length(channel) = 32),"
	" seq INTEGER NOT NULL CHECK (seq > 0),"
	" amount INTEGER NOT NULL CHECK (amount >= 0),"
	" voucher BLOB NOT NULL CHECK (length(voucher) = 161),"
	" redeemed_seq INTEGER NOT NULL DEFAULT 0 CHECK (redeemed_seq >= 0 AND redeemed_seq <= seq),"
	" redeemed INTEGER NOT NULL DEFAULT 0 CHECK (redeemed >= 0 AND redeemed <= amount),"
	" refused INTEGER NOT NULL DEFAULT 0,"
	" why TEXT NOT NULL DEFAULT '',"
	" updated INTEGER NOT NULL) WITHOUT ROWID;"
	"PRAGMA user_version=1;";

struct vstore {
	sqlite3 *db;
	pthread_mutex_t mu;
};

static int db_err(vstore_t *s, err_msg_t *e, const char *what)
{
	return err_set(e, ERR_IO, "voucher store: %s: %s", what, sqlite3_errmsg(s->db));
}


static const sqlstore_spec_t spec = {
	.what = "voucher store",
	.file_name = VSTORE_FILE_NAME,
	.schema_sql = schema_sql,
	.version = VSTORE_SCHEMA_VERSION,
	.probe_sql = "SELECT channel, seq, amount, voucher, redeemed_seq, redeemed, "
					  "refused, why, updated FROM vouchers LIMIT 0",
};

int vstore_open(const char *dir, vstore_t **out, err_msg_t *e)
{
	*out = NULL;
	vstore_t *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ERR_NOMEM, "voucher store: out of memory");
	pthread_mutex_init(&s->mu, NULL);
	int rc = sqlstore_open(dir, &spec, &s->db, e);
	if (rc) {
		vstore_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void vstore_free(vstore_t *s)
{
	if (!s)
		return;
	sqlite3_close(s->db);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* Runs one prepared write with the given binds; 0 or ERR_IO. */
static int write1(vstore_t *s, sqlite3_stmt *st, err_msg_t *e, const char *what)
{
	int rc = sqlite3_step(st);
	int r = rc == SQLITE_DONE ? 0 : db_err(s, e, what);
	sqlite3_finalize(st);
	return r;
}

int vstore_put(vstore_t *s, const voucher_t *v, int64_t now, err_msg_t *e)
{
	uint8_t buf[VOUCHER_SIZE];
	int rc = voucher_encode(v, buf);
	if (rc)
		return err_set(e, rc, "voucher store: voucher %llu is out of range", (unsigned long long)v->seq);
	sqlite3_stmt *st = NULL;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db,
			       "INSERT INTO vouchers(channel, seq, amount, voucher, updated) VALUES (?1, ?2, ?3, ?4, ?5) "
			       "ON CONFLICT(channel) DO UPDATE SET seq = excluded.seq, amount = excluded.amount, "
			       "voucher = excluded.voucher, refused = 0, why = '', updated = excluded.updated "
			       "WHERE excluded.seq > vouchers.seq", -1, &st, NULL) != SQLITE_OK)
		rc = db_err(s, e, "storing a voucher");
	else {
		sqlite3_bind_blob(st, 1, v->channel, MARKET_IDLEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (int64_t)v->seq);
		sqlite3_bind_int64(st, 3, v->amount);
		sqlite3_bind_blob(st, 4, buf, VOUCHER_SIZE, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, now);
		rc = write1(s, st, e, "storing a voucher");
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int vstore_redeemed(vstore_t *s, const voucher_t *v, int64_t now, err_msg_t *e)
{
	sqlite3_stmt *st = NULL;
	int rc;
	pthread_mutex_lock(&s->mu);
	/* The CHECKs keep redeemed_seq <= seq: a voucher confirmed that is not
	 * (yet) the stored best cannot be recorded above it; the stored one
	 * stays pending and its redeem pays the rest. */
	if (sqlite3_prepare_v2(s->db,
			       "UPDATE vouchers SET redeemed_seq = ?2, redeemed = ?3, updated = ?4 "
			       "WHERE channel = ?1 AND redeemed_seq < ?2 AND seq >= ?2 AND amount >= ?3", -1, &st,
			       NULL) != SQLITE_OK)
		rc = db_err(s, e, "recording a redeem");
	else {
		sqlite3_bind_blob(st, 1, v->channel, MARKET_IDLEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (int64_t)v->seq);
		sqlite3_bind_int64(st, 3, v->amount);
		sqlite3_bind_int64(st, 4, now);
		rc = write1(s, st, e, "recording a redeem");
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int vstore_refused(vstore_t *s, const voucher_t *v, int code, const char *why, int64_t now, err_msg_t *e)
{
	sqlite3_stmt *st = NULL;
	int rc;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db, "UPDATE vouchers SET refused = ?3, why = substr(?4, 1, 127), updated = ?5 "
				      "WHERE channel = ?1 AND seq = ?2", -1, &st, NULL) != SQLITE_OK)
		rc = db_err(s, e, "recording a refusal");
	else {
		sqlite3_bind_blob(st, 1, v->channel, MARKET_IDLEN, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (int64_t)v->seq);
		sqlite3_bind_int(st, 3, code ? code : ERR_INVAL);
		sqlite3_bind_text(st, 4, why ? why : "", -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 5, now);
		rc = write1(s, st, e, "recording a refusal");
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* One row into *en; 0, or -1 for a malformed row (skipped by the caller). */
static int row_read(sqlite3_stmt *st, vstore_entry_t *en)
{
	memset(en, 0, sizeof(*en));
	const void *ch = sqlite3_column_blob(st, 0);
	int chn = sqlite3_column_bytes(st, 0);
	const void *vb = sqlite3_column_blob(st, 3);
	int vn = sqlite3_column_bytes(st, 3);
	err_msg_t ign;
	if (!ch || chn != MARKET_IDLEN || !vb || vn != VOUCHER_SIZE || voucher_decode(vb, (size_t)vn, &en->best, &ign))
		return -1;
	if (memcmp(en->best.channel, ch, MARKET_IDLEN) != 0 || (int64_t)en->best.seq != sqlite3_column_int64(st, 1) ||
	    en->best.amount != sqlite3_column_int64(st, 2))
		return -1;
	int64_t rs = sqlite3_column_int64(st, 4);
	en->redeemed = sqlite3_column_int64(st, 5);
	if (rs < 0 || (uint64_t)rs > en->best.seq || en->redeemed < 0 || en->redeemed > en->best.amount)
		return -1;
	en->redeemed_seq = (uint64_t)rs;
	int64_t rf = sqlite3_column_int64(st, 6);
	en->refused = rf < -100000 || rf > 0 ? ERR_INVAL : (int)rf;
	const unsigned char *why = sqlite3_column_text(st, 7);
	if (why)
		snprintf(en->why, sizeof(en->why), "%s", (const char *)why);
	en->updated = sqlite3_column_int64(st, 8);
	return 0;
}

int vstore_foreach(vstore_t *s, vstore_each_cb cb, void *ud, size_t *n_bad, err_msg_t *e)
{
	size_t bad = 0;
	sqlite3_stmt *st = NULL;
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db, "SELECT channel, seq, amount, voucher, redeemed_seq, redeemed, refused, why, "
				      "updated FROM vouchers ORDER BY channel", -1, &st, NULL) != SQLITE_OK) {
		rc = db_err(s, e, "reading vouchers");
	} else {
		int sr;
		while ((sr = sqlite3_step(st)) == SQLITE_ROW) {
			vstore_entry_t en;
			if (row_read(st, &en) != 0) {
				bad++;
				continue;
			}
			if ((rc = cb(ud, &en)) != 0)
				break;
		}
		if (rc == 0 && sr != SQLITE_DONE)
			rc = db_err(s, e, "reading vouchers");
		sqlite3_finalize(st);
	}
	pthread_mutex_unlock(&s->mu);
	if (n_bad)
		*n_bad = bad;
	return rc;
}
