/* test_ident.c - the node identity: key file creation, reload, refusal of
 * unsafe modes, corrupted and truncated files, concurrent first starts,
 * signatures and the textual forms of a node id. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/ident.h"
#include "test.h"

static const char *tmpdir(void)
{
	return test_tmp_root();
}

/* A fresh home path (not created) under the temp root. */
static void home_path(char *out, size_t n, const char *name)
{
	const char *t = tmpdir();
	REQUIRE(t != NULL);
	snprintf(out, n, "%s/%s", t, name);
}

static int read_file(const char *path, uint8_t *buf, size_t cap, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	*n = fread(buf, 1, cap, f);
	fclose(f);
	return 0;
}

static int write_file(const char *path, const uint8_t *buf, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -1;
	int ok = write(fd, buf, n) == (ssize_t)n;
	close(fd);
	return ok ? 0 : -1;
}

static void test_create_and_reload(void)
{
	char home[600], key[700];
	home_path(home, sizeof(home), "a/nested/home");
	snprintf(key, sizeof(key), "%s/node.key", home);
	ident_t *id = NULL;
	err_msg_t e = { "" };
	int created = -1;
	mode_t old = umask(0);   /* the file must be 0600 whatever the umask */
	int rc = ident_load_or_create(home, &id, &created, &e);
	umask(old);
	REQUIRE(rc == 0);
	CHECK_EQ_INT(created, 1);
	struct stat st;
	REQUIRE(stat(key, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 07777, 0600);
	CHECK_EQ_INT(st.st_size, IDENT_FILE_SIZE);
	REQUIRE(stat(home, &st) == 0);
	CHECK_EQ_INT(st.st_mode & 0777, 0700);
	uint8_t pub[IDENT_PUBLEN];
	memcpy(pub, ident_pub(id), IDENT_PUBLEN);
	/* the file holds the public key at offset 44 */
	uint8_t b[256];
	size_t n = 0;
	REQUIRE(read_file(key, b, sizeof(b), &n) == 0);
	CHECK_EQ_INT(n, IDENT_FILE_SIZE);
	CHECK(memcmp(b, "COLONYID", 8) == 0);
	CHECK(memcmp(b + 44, pub, IDENT_PUBLEN) == 0);
	ident_free(id);

	id = NULL;
	REQUIRE(ident_load_or_create(home, &id, &created, &e) == 0);
	CHECK_EQ_INT(created, 0);
	CHECK(memcmp(ident_pub(id), pub, IDENT_PUBLEN) == 0);
	/* the Noise key is fresh for every load, never stored */
	uint8_t dh1[IDENT_DHLEN];
	memcpy(dh1, ident_dh_pub(id), IDENT_DHLEN);
	ident_free(id);
	REQUIRE(ident_load_file(key, &id, &e) == 0);
	CHECK(memcmp(ident_pub(id), pub, IDENT_PUBLEN) == 0);
	CHECK(memcmp(ident_dh_pub(id), dh1, IDENT_DHLEN) != 0);
	ident_free(id);
	ident_free(NULL);
}

static void test_sign_verify(void)
{
	ident_t *a = NULL, *b = NULL;
	uint8_t seed[32] = { 1, 2, 3 };
	REQUIRE(ident_new(seed, &a) == 0);
	REQUIRE(ident_new(NULL, &b) == 0);
	const char msg[] = "colony test message";
	uint8_t sig[IDENT_SIGLEN];
	ident_sign(a, msg, sizeof(msg), sig);
	CHECK_OK(ident_verify(ident_pub(a), msg, sizeof(msg), sig));
	CHECK_EQ_INT(ident_verify(ident_pub(b), msg, sizeof(msg), sig), ERR_FORMAT);
	CHECK_EQ_INT(ident_verify(ident_pub(a), msg, sizeof(msg) - 1, sig), ERR_FORMAT);
	for (int i = 0; i < IDENT_SIGLEN; i += 9) {
		sig[i] ^= 4;
		CHECK_EQ_INT(ident_verify(ident_pub(a), msg, sizeof(msg), sig), ERR_FORMAT);
		sig[i] ^= 4;
	}
	/* the same seed gives the same node id */
	ident_t *a2 = NULL;
	REQUIRE(ident_new(seed, &a2) == 0);
	CHECK(memcmp(ident_pub(a), ident_pub(a2), IDENT_PUBLEN) == 0);
	ident_free(a);
	ident_free(a2);
	ident_free(b);
}

static void test_mode_refused(void)
{
	char home[600], key[700];
	home_path(home, sizeof(home), "modes");
	snprintf(key, sizeof(key), "%s/node.key", home);
	ident_t *id = NULL;
	err_msg_t e = { "" };
	REQUIRE(ident_load_or_create(home, &id, NULL, &e) == 0);
	ident_free(id);
	uint8_t before[256], after[256];
	size_t nb = 0, na = 0;
	REQUIRE(read_file(key, before, sizeof(before), &nb) == 0);
	const mode_t bad[] = { 0644, 0640, 0604, 0660, 0606, 0620, 0602, 0610, 0601, 0 };
	for (int i = 0; bad[i]; i++) {
		REQUIRE(chmod(key, bad[i]) == 0);
		id = NULL;
		e.msg[0] = 0;
		int rc = ident_load_or_create(home, &id, NULL, &e);
		CHECK_EQ_INT(rc, ERR_INVAL);
		CHECK(id == NULL);
		CHECK(strstr(e.msg, "group or others") != NULL);
		if (bad[i] == 0644)
			CHECK(strstr(e.msg, "0644") != NULL);
		/* refused, never rewritten */
		REQUIRE(read_file(key, after, sizeof(after), &na) == 0);
		CHECK(na == nb && memcmp(before, after, nb) == 0);
	}
	const mode_t good[] = { 0600, 0400, 0 };
	for (int i = 0; good[i]; i++) {
		REQUIRE(chmod(key, good[i]) == 0);
		id = NULL;
		CHECK_OK(ident_load_file(key, &id, &e));
		ident_free(id);
	}
	chmod(key, 0600);
}

static void test_corrupted_refused(void)
{
	char home[600], key[700];
	home_path(home, sizeof(home), "corrupt");
	snprintf(key, sizeof(key), "%s/node.key", home);
	ident_t *id = NULL;
	err_msg_t e = { "" };
	REQUIRE(ident_load_or_create(home, &id, NULL, &e) == 0);
	ident_free(id);
	uint8_t good[IDENT_FILE_SIZE + 8], b[IDENT_FILE_SIZE + 8];
	size_t n = 0;
	REQUIRE(read_file(key, good, sizeof(good), &n) == 0);
	REQUIRE(n == IDENT_FILE_SIZE);
	/* every byte matters: magic, version, seed, public key, checksum */
	for (size_t i = 0; i < IDENT_FILE_SIZE; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			memcpy(b, good, n);
			b[i] ^= (uint8_t)(1 << bit);
			REQUIRE(write_file(key, b, n) == 0);
			id = NULL;
			e.msg[0] = 0;
			int rc = ident_load_or_create(home, &id, NULL, &e);
			CHECK_EQ_INT(rc, ERR_FORMAT);
			CHECK(id == NULL && e.msg[0] != 0);
		}
	}
	/* every truncation, and one byte too many */
	for (size_t len = 0; len <= IDENT_FILE_SIZE + 1; len++) {
		if (len == IDENT_FILE_SIZE)
			continue;
		memcpy(b, good, IDENT_FILE_SIZE);
		b[IDENT_FILE_SIZE] = 0;
		REQUIRE(write_file(key, b, len) == 0);
		id = NULL;
		int rc = ident_load_file(key, &id, &e);
		CHECK_EQ_INT(rc, ERR_FORMAT);
		CHECK(id == NULL);
	}
	/* a consistent file of another version is refused too */
	memcpy(b, good, n);
	b[8] = 2;
	REQUIRE(write_file(key, b, n) == 0);
	CHECK_EQ_INT(ident_load_file(key, &id, &e), ERR_FORMAT);
	CHECK(strstr(e.msg, "version") != NULL);
	/* the original loads again */
	REQUIRE(write_file(key, good, n) == 0);
	CHECK_OK(ident_load_file(key, &id, &e));
	ident_free(id);
}

static void test_symlink_and_missing(void)
{
	char home[600], key[700], target[700];
	home_path(home, sizeof(home), "links");
	snprintf(key, sizeof(key), "%s/node.key", home);
	snprintf(target, sizeof(target), "%s/real.key", home);
	ident_t *id = NULL;
	err_msg_t e = { "" };
	CHECK_EQ_INT(ident_load_file(key, &id, &e), ERR_NOTFOUND);
	REQUIRE(ident_load_or_create(home, &id, NULL, &e) == 0);
	ident_free(id);
	REQUIRE(rename(key, target) == 0);
	REQUIRE(symlink(target, key) == 0);
	id = NULL;
	CHECK(ident_load_or_create(home, &id, NULL, &e) != 0);
	CHECK(id == NULL);
	/* a home that is a file */
	CHECK(ident_load_or_create(target, &id, NULL, &e) != 0);
}

static void test_concurrent_first_start(void)
{
	char home[600];
	home_path(home, sizeof(home), "race");
	enum { N = 6 };
	int fds[N][2];
	pid_t pids[N];
	for (int i = 0; i < N; i++) {
		REQUIRE(pipe(fds[i]) == 0);
		pids[i] = fork();
		REQUIRE(pids[i] >= 0);
		if (pids[i] == 0) {
			ident_t *id = NULL;
			err_msg_t e = { "" };
			uint8_t out[IDENT_PUBLEN + 1] = { 0 };
			if (ident_load_or_create(home, &id, NULL, &e) == 0) {
				memcpy(out, ident_pub(id), IDENT_PUBLEN);
				out[IDENT_PUBLEN] = 1;
			}
			ssize_t w = write(fds[i][1], out, sizeof(out));
			_exit(w == (ssize_t)sizeof(out) ? 0 : 1);
		}
		close(fds[i][1]);
	}
	uint8_t first[IDENT_PUBLEN + 1];
	for (int i = 0; i < N; i++) {
		uint8_t got[IDENT_PUBLEN + 1] = { 0 };
		ssize_t r = read(fds[i][0], got, sizeof(got));
		close(fds[i][0]);
		int st = 0;
		waitpid(pids[i], &st, 0);
		CHECK(r == (ssize_t)sizeof(got) && got[IDENT_PUBLEN] == 1);
		if (i == 0)
			memcpy(first, got, sizeof(got));
		else
			CHECK(memcmp(first, got, sizeof(got)) == 0);   /* all found the same key */
	}
}

static void test_id_forms(void)
{
	uint8_t pub[IDENT_PUBLEN];
	for (int i = 0; i < IDENT_PUBLEN; i++)
		pub[i] = (uint8_t)(i * 37 + 5);
	char s[IDENT_SHORT_STRLEN], f[IDENT_FULL_STRLEN];
	CHECK(strcmp(ident_id_short(pub, s), "052a4f7499bee308") == 0);
	ident_id_full(pub, f);
	CHECK_EQ_INT(strlen(f), 64);
	CHECK(strncmp(f, s, 16) == 0);
	uint8_t back[IDENT_PUBLEN];
	err_msg_t e;
	CHECK_OK(ident_id_parse(f, back, &e));
	CHECK(memcmp(back, pub, IDENT_PUBLEN) == 0);
	f[10] = 'A';   /* upper case is accepted */
	f[11] = 'f';
	CHECK_OK(ident_id_parse(f, back, &e));
	CHECK_EQ_INT(back[5], 0xaf);
	f[3] = 'g';
	CHECK_EQ_INT(ident_id_parse(f, back, &e), ERR_FORMAT);
	CHECK_EQ_INT(ident_id_parse("abcd", back, &e), ERR_FORMAT);
	char longer[80];
	memset(longer, 'a', 65);
	longer[65] = 0;
	CHECK_EQ_INT(ident_id_parse(longer, back, &e), ERR_FORMAT);
}

TEST_MAIN(test_create_and_reload, test_sign_verify, test_mode_refused, test_corrupted_refused,
	test_symlink_and_missing, test_concurrent_first_start, test_id_forms)
