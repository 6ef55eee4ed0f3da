/* sqlstore.h - the small local SQLite files of the market (the provider's
 * voucher store, the buyer's channel store): one way to open them.
 *
 * The file is created owner-only (0600; SQLite gives its -wal and -shm
 * files the same mode), never through a symlink, in WAL mode with
 * synchronous=FULL (a row is on disk when its write returns: these rows
 * are money). A new file gets the schema and user_version in one
 * transaction; an existing one must carry the expected user_version and
 * answer the probe query, so a file of another kind is refused instead of
 * written into. */
#ifndef COLONY_MARKET_SQLSTORE_H
#define COLONY_MARKET_SQLSTORE_H

#include <sqlite3.h>

#include "base/err.h"

typedef struct sqlstore_spec {
	const char *what;        /* "voucher store": names the file in messages */
	const char *file_name;   /* under the directory */
	const char *schema_sql;  /* creates the tables and sets PRAGMA user_version */
	int version;             /* the user_version schema_sql sets, >= 1 */
	const char *probe_sql;   /* must prepare on a file of this kind (e.g. SELECT cols ... LIMIT 0) */
} sqlstore_spec_t;

/* Opens (or creates) dir/spec->file_name; *db is the caller's
 * (sqlite3_close). ERR_RANGE (path too long), ERR_IO, ERR_FORMAT (not a
 * database, another version, another kind of file). */
int sqlstore_open(const char *dir, const sqlstore_spec_t *spec, sqlite3 **db, err_msg_t *e) WUR;

/* sqlite3_exec with the message in e (prefixed with what); 0 or ERR_IO. */
int sqlstore_exec(sqlite3 *db, const char *what, const char *sql, err_msg_t *e) WUR;

#endif
