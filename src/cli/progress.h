/* progress.h - progress of long CLI operations on stderr (loading a model,
 * writing one, starting a swarm).
 *
 * On a terminal, one line rewritten in place ("\r", cleared to its end);
 * otherwise (a log file, a pipe) plain lines, at most one a second, so logs
 * stay readable; nothing at all when quiet. A prog_t belongs to the thread
 * that made it, except for the watcher (prog_watch_start), whose thread
 * updates the line until prog_done.
 */
#ifndef COLONY_CLI_PROGRESS_H
#define COLONY_CLI_PROGRESS_H

#include <pthread.h>

typedef struct prog {
	char what[128];            /* "loading stories260K.gguf" */
	int quiet, tty;
	double t0, t_last;
	char last[256];            /* the last text shown (plain mode: not repeated) */
	int shown;                 /* a TTY line is on screen */
	int always;                /* print the final line even after a short step */
	/* the watcher */
	pthread_t th;
	pthread_mutex_t mu;
	int watching, stop;
} prog_t;

/* what: the operation, shown first. quiet: nothing is printed. */
void prog_init(prog_t *p, const char *what, int quiet);
/* The state now ("3/4 nodes up", "45%"): rate-limited to 10 lines a second
 * on a TTY, one a second otherwise; force = 1 prints it anyway. */
void prog_update(prog_t *p, int force, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A thread that shows the elapsed time and the resident memory every 200 ms
 * (for steps that report nothing themselves, such as copying weights). */
void prog_watch_start(prog_t *p);
/* The final line, with the elapsed time appended; stops the watcher. Not
 * printed when quiet, nor in plain mode for a step that took under 0.5 s
 * and showed nothing before. The prog_t is finished afterwards. */
void prog_done(prog_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
