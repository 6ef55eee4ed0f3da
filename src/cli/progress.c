/* progress.c - progress lines on stderr (see progress.h). */
#include "cli/progress.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"

void prog_init(prog_t *p, const char *what, int quiet)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->what, sizeof(p->what), "%s", what);
	p->quiet = quiet;
	p->tty = isatty(STDERR_FILENO);
	p->t0 = clock_sec();
	p->t_last = -1e9;
	pthread_mutex_init(&p->mu, NULL);
}

/* Under p->mu. */
static void show(prog_t *p, int force, const char *text)
{
	if (p->quiet)
		return;
	double now = clock_sec();
	if (p->tty) {
		if (!force && now - p->t_last < 0.1)
			return;
		/* the cursor goes back to the start: a log line written meanwhile
		 * by someone else replaces the progress instead of running on
		 * after it */
		fprintf(stderr, "\r\033[Kcolony: %s: %s\r", p->what, text);
		p->shown = 1;
	} else {
		if (!strcmp(text, p->last) || (!force && now - p->t_last < 1.0))
			return;
		fprintf(stderr, "colony: %s: %s\n", p->what, text);
	}
	fflush(stderr);
	p->t_last = now;
	snprintf(p->last, sizeof(p->last), "%s", text);
}

void prog_update(prog_t *p, int force, const char *fmt, ...)
{
	char b[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&p->mu);
	show(p, force, b);
	pthread_mutex_unlock(&p->mu);
}

static long rss_mib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

static void *watch_main(void *arg)
{
	prog_t *p = arg;
	for (;;) {
		struct timespec ts = { 0, 200 * 1000000L };
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&p->mu);
		if (p->stop) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		char b[96];
		snprintf(b, sizeof(b), "%.1f s, %ld MiB resident", clock_sec() - p->t0, rss_mib());
		show(p, 0, b);
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

void prog_watch_start(prog_t *p)
{
	if (p->quiet || p->watching)
		return;
	p->stop = 0;
	if (pthread_create(&p->th, NULL, watch_main, p) == 0)
		p->watching = 1;
}

void prog_done(prog_t *p, const char *fmt, ...)
{
	if (p->watching) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->th, NULL);
		p->watching = 0;
	}
	char b[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	double el = clock_sec() - p->t0;
	/* plain mode: a step over in a moment is not worth a line */
	if (!p->quiet && (p->tty || p->always || p->last[0] || el >= 0.5)) {
		if (p->tty)
			fprintf(stderr, "\r\033[K");
		fprintf(stderr, "colony: %s: %s (%.1f s)\n", p->what, b, el);
		fflush(stderr);
	}
	p->shown = 0;
	pthread_mutex_destroy(&p->mu);
}
