/* sqlstore.c - opening the market's local SQLite files (see sqlstore.h). */
#include "market/sqlstore.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

int sqlstore_exec(sqlite3 *db, const char *what, const char *sql, err_msg_t *e)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	if (e)
		err_set(e, ERR_IO, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
	sqlite3_free(msg);
	return ERR_IO;
}

static int schema_version(sqlite3 *db, int64_t *ver)
{
	sqlite3_stmt *st = NULL;
	int ok = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
		 sqlite3_step(st) == SQLITE_ROW;
	if (ok)
		*ver = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return ok;
}

int sqlstore_open(const char *dir, const sqlstore_spec_t *spec, sqlite3 **out, err_msg_t *e)
{
	*out = NULL;
	const char *what = spec->what;
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, spec->file_name) >= sizeof(path))
		return err_set(e, ERR_RANGE, "%s: the path under %.200s is too long", what, dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return err_set(e, ERR_IO, "%s: cannot open %.200s", what, path);
	close(fd);
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		err_set(e, ERR_IO, "%s: cannot open %.200s: %s", what, path, db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		return ERR_IO;
	}
	sqlite3_busy_timeout(db, 10000);
	int rc = sqlstore_exec(db, what, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", e);
	int64_t ver = -1;
	if (rc == 0 && !schema_version(db, &ver))
		rc = err_set(e, ERR_FORMAT, "%s: %.200s is not an SQLite database", what, path);
	if (rc == 0 && ver != 0 && ver != spec->version)
		rc = err_set(e, ERR_FORMAT, "%s: %.200s has version %lld, this build knows %d", what, path,
			     (long long)ver, spec->version);
	if (rc == 0 && ver == 0) {
		rc = sqlstore_exec(db, what, "BEGIN IMMEDIATE", e);
		if (rc == 0) {
			rc = sqlstore_exec(db, what, spec->schema_sql, e);
			if (sqlstore_exec(db, what, rc == 0 ? "COMMIT" : "ROLLBACK", rc == 0 ? e : NULL) != 0 && rc == 0)
				rc = ERR_IO;
		}
	}
	/* A file of another kind with the same user_version has no such table. */
	sqlite3_stmt *st = NULL;
	if (rc == 0 && sqlite3_prepare_v2(db, spec->probe_sql, -1, &st, NULL) != SQLITE_OK)
		rc = err_set(e, ERR_FORMAT, "%s: %.200s is not a %s: %s", what, path, what, sqlite3_errmsg(db));
	sqlite3_finalize(st);
	if (rc) {
		sqlite3_close(db);
		return rc;
	}
	*out = db;
	return 0;
}
