/* sbuf.c - growable strings (see sbuf.h). */
#include "base/sbuf.h"

#include <stdlib.h>
#include <string.h>

int sbuf_append(char **p, size_t *n, size_t *cap, const char *s, size_t len)
{
	if (len > (size_t)-1 / 4 - *n)
		return ERR_NOMEM;
	if (*n + len + 1 > *cap) {
		size_t nc = *cap ? *cap : 1024;
		while (nc < *n + len + 1)
			nc *= 2;
		char *np = realloc(*p, nc);
		if (!np)
			return ERR_NOMEM;
		*p = np;
		*cap = nc;
	}
	memcpy(*p + *n, s, len);
	*n += len;
	(*p)[*n] = 0;
	return 0;
}
