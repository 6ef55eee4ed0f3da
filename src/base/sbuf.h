/* sbuf.h - a growable NUL-terminated byte string (response bodies, SSE
 * streams): *p (heap, the caller's, free()), *n bytes used, *cap allocated.
 * Start from NULL, 0, 0. */
#ifndef COLONY_BASE_SBUF_H
#define COLONY_BASE_SBUF_H

#include <stddef.h>

#include "base/err.h"

/* Appends s[0..len) and keeps a NUL after the end; ERR_NOMEM leaves the
 * string as it was. */
int sbuf_append(char **p, size_t *n, size_t *cap, const char *s, size_t len) WUR;

#endif
