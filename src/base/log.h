/* log.h - leveled logging to stderr, plain text or JSON lines.
 * The level and format are process settings chosen once by the CLI at start;
 * everything else only calls log_*(). Thread-safe (one write(2) per line). */
#ifndef COLONY_BASE_LOG_H
#define COLONY_BASE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

void log_setup(enum log_level min_level, int json);
enum log_level log_level_get(void);
void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(mod, ...) log_msg(LOG_DEBUG, mod, __VA_ARGS__)
#define log_info(mod, ...)  log_msg(LOG_INFO, mod, __VA_ARGS__)
#define log_warn(mod, ...)  log_msg(LOG_WARN, mod, __VA_ARGS__)
#define log_error(mod, ...) log_msg(LOG_ERROR, mod, __VA_ARGS__)

#endif
