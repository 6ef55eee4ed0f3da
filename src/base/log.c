#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Settings written once at start-up by the CLI, read-only afterwards. */
static enum log_level g_min = LOG_INFO;
static int g_json;

void log_setup(enum log_level min_level, int json)
{
	g_min = min_level;
	g_json = json;
}

enum log_level log_level_get(void) { return g_min; }

static const char *lvl_name(enum log_level l)
{
	static const char *n[] = { "debug", "info", "warn", "error" };
	return l <= LOG_ERROR ? n[l] : "?";
}

void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...)
{
	if (lvl < g_min)
		return;
	char msg[1024], line[1400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	int n;
	if (g_json) {
		char esc[2048];
		size_t j = 0;
		for (const char *p = msg; *p && j + 7 < sizeof(esc); p++) {
			unsigned char c = (unsigned char)*p;
			if (c == '"' || c == '\\') { esc[j++] = '\\'; esc[j++] = (char)c; }
			else if (c < 0x20) j += (size_t)snprintf(esc + j, 7, "\\u%04x", c);
			else esc[j++] = (char)c;
		}
		esc[j] = 0;
		n = snprintf(line, sizeof(line),
			"{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"mod\":\"%s\",\"msg\":\"%s\"}\n",
			tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			ts.tv_nsec / 1000000, lvl_name(lvl), mod, esc);
	} else {
		n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %-5s %s: %s\n",
			tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, lvl_name(lvl), mod, msg);
	}
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1, line[n - 1] = '\n';
	ssize_t w = write(2, line, (size_t)n);
	(void)w;
}
