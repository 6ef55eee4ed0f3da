/* test.h - a small test runner for ctest.
 *
 * Each test file defines `static void test_x(void)` functions and lists them:
 *     TEST_MAIN(test_a, test_b)
 * CHECK() records a failure and goes on; REQUIRE() ends the current test.
 * fixture_path() finds ../shared/fixtures (or $COLONY_FIXTURES); a missing
 * fixture fails under CI (CI=true) and skips the test elsewhere (exit 77 if
 * every test skipped). test_tmp_root()/test_tmp_dir() give a temporary
 * folder, removed with everything in it when the test program exits.
 */
#ifndef COLONY_TEST_H
#define COLONY_TEST_H

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int t_fail, t_cur_fail, t_skipped, t_ran;
static const char *t_name;
static jmp_buf t_jmp;

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); t_cur_fail = 1; } } while (0)
#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "  FAIL %s:%d: %s (fatal)\n", __FILE__, __LINE__, #c); t_cur_fail = 1; longjmp(t_jmp, 1); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); if (_a != _b) { fprintf(stderr, "  FAIL %s:%d: %s == %s (%lld != %lld)\n", __FILE__, __LINE__, #a, #b, _a, _b); t_cur_fail = 1; } } while (0)
#define CHECK_NEAR(a, b, tol) do { double _a = (a), _b = (b); if (!(fabs(_a - _b) <= (tol))) { fprintf(stderr, "  FAIL %s:%d: |%s - %s| = |%g - %g| > %g\n", __FILE__, __LINE__, #a, #b, _a, _b, (double)(tol)); t_cur_fail = 1; } } while (0)
#define CHECK_OK(e) do { int _r = (e); if (_r != 0) { fprintf(stderr, "  FAIL %s:%d: %s returned %d\n", __FILE__, __LINE__, #e, _r); t_cur_fail = 1; } } while (0)
#define SKIP(...) do { fprintf(stderr, "  SKIP %s: ", t_name); fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); t_skipped++; longjmp(t_jmp, 2); } while (0)

/* Path of a fixture file, or SKIP (outside CI) / FAIL (under CI) when missing. */
static inline const char *fixture_path(const char *name)
{
	static char buf[8][1024];
	static int slot;
	const char *dir = getenv("COLONY_FIXTURES");
	if (!dir || !*dir)
		dir = "../shared/fixtures";
	char *p = buf[slot++ & 7];
	snprintf(p, 1024, "%s/%s", dir, name);
	struct stat st;
	if (stat(p, &st) != 0) {
		const char *ci = getenv("CI");
		if (ci && strcmp(ci, "true") == 0) {
			fprintf(stderr, "  FAIL %s: fixture %s is missing (CI=true)\n", t_name, p);
			t_cur_fail = 1;
			longjmp(t_jmp, 1);
		}
		SKIP("fixture %s not found (set COLONY_FIXTURES)", p);
	}
	return p;
}

/* Removes path and, for a folder, everything under it (links are removed,
 * never followed). */
static inline void t_rm_rf(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0)
		return;
	if (!S_ISDIR(st.st_mode)) {
		unlink(path);
		return;
	}
	DIR *d = opendir(path);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			char p[4096];
			if (snprintf(p, sizeof(p), "%s/%s", path, de->d_name) < (int)sizeof(p))
				t_rm_rf(p);
		}
		closedir(d);
	}
	rmdir(path);
}

static char t_tmp_root[512];
static inline void t_tmp_cleanup(void)
{
	if (t_tmp_root[0])
		t_rm_rf(t_tmp_root);
}

/* This test program's temporary folder (under $TMPDIR, else /tmp), made on
 * first use and removed, with its contents, at exit. */
static inline const char *test_tmp_root(void)
{
	if (!t_tmp_root[0]) {
		const char *t = getenv("TMPDIR");
		snprintf(t_tmp_root, sizeof(t_tmp_root), "%s/colony-test.XXXXXX", t && *t ? t : "/tmp");
		if (!mkdtemp(t_tmp_root)) {
			t_tmp_root[0] = 0;
			REQUIRE(!"cannot make a temporary folder");
		}
		atexit(t_tmp_cleanup);
	}
	return t_tmp_root;
}

/* out = a new folder (mode 0700) called name in test_tmp_root(). */
static inline void test_tmp_dir(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", test_tmp_root(), name);
	REQUIRE(mkdir(out, 0700) == 0);
}

typedef void (*t_fn)(void);
static inline int t_run_all(const char *file, t_fn *fns, const char **names, int n)
{
	volatile int skipped_tests = 0;
	for (volatile int i = 0; i < n; i++) {
		t_name = names[i];
		t_cur_fail = 0;
		int sk = t_skipped;
		fprintf(stderr, "[ RUN  ] %s\n", names[i]);
		if (setjmp(t_jmp) == 0)
			fns[i]();
		t_ran++;
		if (t_skipped > sk) {
			skipped_tests++;
			fprintf(stderr, "[ SKIP ] %s\n", names[i]);
		} else if (t_cur_fail) {
			t_fail++;
			fprintf(stderr, "[ FAIL ] %s\n", names[i]);
		} else {
			fprintf(stderr, "[  OK  ] %s\n", names[i]);
		}
	}
	fprintf(stderr, "%s: %d passed, %d failed, %d skipped\n", file,
		n - t_fail - skipped_tests, t_fail, skipped_tests);
	if (t_fail)
		return 1;
	return skipped_tests == n ? 77 : 0;
}

#define T_STR_(...) #__VA_ARGS__
#define TEST_MAIN(...)                                                          \
	int main(void)                                                          \
	{                                                                       \
		t_fn fns[] = { __VA_ARGS__ };                                   \
		static char names_buf[] = T_STR_(__VA_ARGS__);                  \
		const char *names[sizeof(fns) / sizeof(fns[0])];                \
		int k = 0;                                                      \
		for (char *s = strtok(names_buf, ", "); s && k < (int)(sizeof(fns) / sizeof(fns[0])); s = strtok(NULL, ", ")) \
			names[k++] = s;                                         \
		return t_run_all(__FILE__, fns, names, k);                      \
	}

#endif
