/* secfile.c - small files holding secrets (key files, backups): read with
 * the checks a secret deserves, written once and never replaced. */
#include "base/secfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

int secfile_read(const char *path, const char *what, uint8_t *buf, size_t cap, size_t *got, err_msg_t *e)
{
	*got = 0;
	/* O_NOFOLLOW: a symlink planted in place of the key is refused, not followed. */
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return err_set(e, ERR_NOTFOUND, "%s: no such file", path);
		return err_set(e, ERR_IO, "%s: cannot open: %s", path, strerror(errno));
	}
	struct stat st;
	int rc = 0;
	if (fstat(fd, &st) != 0) {
		rc = err_set(e, ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		rc = err_set(e, ERR_INVAL, "%s: not a regular file", path);
	} else if (st.st_mode & 077) {
		rc = err_set(e, ERR_INVAL, "%s: mode %04o lets group or others access %s; "
			"refusing it (run: chmod 600 %s)", path, (unsigned)(st.st_mode & 07777), what, path);
	} else if (st.st_uid != geteuid()) {
		rc = err_set(e, ERR_INVAL, "%s: owned by uid %u, not by this user (uid %u); refusing it",
			path, (unsigned)st.st_uid, (unsigned)geteuid());
	}
	uint8_t extra;   /* one byte past cap tells "too long" */
	while (rc == 0) {
		uint8_t *dst = *got < cap ? buf + *got : &extra;
		ssize_t r = read(fd, dst, *got < cap ? cap - *got : 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = err_set(e, ERR_IO, "%s: read failed: %s", path, strerror(errno));
			break;
		}
		if (r == 0)
			break;
		if (*got >= cap) {
			*got = cap + 1;
			break;
		}
		*got += (size_t)r;
	}
	close(fd);
	return rc;
}

static int write_all(int fd, const uint8_t *b, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static void dir_of(const char *path, char *dir, size_t cap)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		snprintf(dir, cap, ".");
	} else if (slash == path) {
		snprintf(dir, cap, "/");
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= cap)
			n = cap - 1;
		memcpy(dir, path, n);
		dir[n] = 0;
	}
}

int secfile_create(const char *path, const uint8_t *b, size_t n, int *exists, err_msg_t *e)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 64];
	*exists = 0;
	dir_of(path, dir, sizeof(dir));
	if (snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid()) >= (int)sizeof(tmp))
		return err_set(e, ERR_INVAL, "path too long: %s", path);
	(void)unlink(tmp);   /* a leftover of a crashed process with our pid */
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(e, ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
	/* The umask can only remove bits; fchmod makes the mode exactly 0600. */
	if (fchmod(fd, 0600) != 0 || write_all(fd, b, n) != 0 || fsync(fd) != 0) {
		int err = errno;
		close(fd);
		unlink(tmp);
		return err_set(e, ERR_IO, "cannot write %s: %s", tmp, strerror(err));
	}
	close(fd);
	int rc = 0;
	/* link() never replaces an existing file. */
	if (link(tmp, path) != 0) {
		int err = errno;
		if (err == EEXIST) {
			*exists = 1;
			rc = err_set(e, ERR_IO, "%s already exists; refusing to overwrite it", path);
		} else if ((err == EPERM || err == ENOTSUP || err == EOPNOTSUPP) && access(path, F_OK) != 0) {
			/* File systems without hard links: rename (a tiny window remains). */
			if (rename(tmp, path) != 0)
				rc = err_set(e, ERR_IO, "cannot move %s to %s: %s", tmp, path, strerror(errno));
		} else {
			rc = err_set(e, ERR_IO, "cannot link %s to %s: %s", tmp, path, strerror(err));
		}
	}
	unlink(tmp);
	if (rc == 0) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			(void)fsync(dfd);   /* make the new name durable */
			close(dfd);
		}
	}
	return rc;
}

int secfile_mkdir_p(const char *dir, err_msg_t *e)
{
	char p[PATH_MAX];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof(p))
		return err_set(e, ERR_INVAL, "home directory path is empty or too long");
	memcpy(p, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != 0)
			continue;
		char c = p[i];
		p[i] = 0;
		if (mkdir(p, 0700) != 0 && errno != EEXIST)
			return err_set(e, ERR_IO, "cannot create directory %s: %s", p, strerror(errno));
		p[i] = c;
	}
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return err_set(e, ERR_IO, "%s is not a directory", dir);
	return 0;
}


/* ---- the key file layout */

#define KEY_VERSION 1u
#define KEY_OFF_VERSION 8
#define KEY_OFF_SEED 12
#define KEY_OFF_PUB 44
#define KEY_OFF_SUM 76
_Static_assert(KEY_OFF_SUM + 32 == SECFILE_KEY_SIZE, "key file layout");

void secfile_key_build(const char magic[8], const uint8_t seed[SECFILE_SEEDLEN], uint8_t b[SECFILE_KEY_SIZE])
{
	uint8_t sk[crypto_sign_SECRETKEYBYTES];
	memcpy(b, magic, 8);
	b[KEY_OFF_VERSION] = KEY_VERSION;
	b[KEY_OFF_VERSION + 1] = b[KEY_OFF_VERSION + 2] = b[KEY_OFF_VERSION + 3] = 0;
	memcpy(b + KEY_OFF_SEED, seed, SECFILE_SEEDLEN);
	crypto_sign_seed_keypair(b + KEY_OFF_PUB, sk, seed);
	crypto_generichash(b + KEY_OFF_SUM, 32, b, KEY_OFF_SUM, NULL, 0);
	sodium_memzero(sk, sizeof(sk));
}

int secfile_key_parse(const uint8_t b[SECFILE_KEY_SIZE], const char magic[8], const char *kind, const char *path,
	uint8_t seed[SECFILE_SEEDLEN], err_msg_t *e)
{
	if (memcmp(b, magic, 8) != 0)
		return err_set(e, ERR_FORMAT, "%s: not a colony %s (bad magic)", path, kind);
	uint32_t ver = (uint32_t)b[KEY_OFF_VERSION] | (uint32_t)b[KEY_OFF_VERSION + 1] << 8 |
		       (uint32_t)b[KEY_OFF_VERSION + 2] << 16 | (uint32_t)b[KEY_OFF_VERSION + 3] << 24;
	if (ver != KEY_VERSION)
		return err_set(e, ERR_FORMAT, "%s: %s version %u is not supported (expected %u)", path, kind, ver,
			KEY_VERSION);
	uint8_t sum[32], pub[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
	crypto_generichash(sum, sizeof(sum), b, KEY_OFF_SUM, NULL, 0);
	if (sodium_memcmp(sum, b + KEY_OFF_SUM, sizeof(sum)) != 0)
		return err_set(e, ERR_FORMAT, "%s: checksum mismatch (the file is corrupted)", path);
	crypto_sign_seed_keypair(pub, sk, b + KEY_OFF_SEED);
	sodium_memzero(sk, sizeof(sk));
	if (sodium_memcmp(pub, b + KEY_OFF_PUB, sizeof(pub)) != 0)
		return err_set(e, ERR_FORMAT, "%s: the public key does not match the secret key (corrupted file)", path);
	memcpy(seed, b + KEY_OFF_SEED, SECFILE_SEEDLEN);
	return 0;
}
