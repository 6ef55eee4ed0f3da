/* assets.h - the dashboard's files (src/api/web/), compiled into the binary.
 *
 * cmake/embed.cmake turns every file under src/api/web/ into a byte array of
 * a generated C file at build time (no npm, no CDN, nothing read from disk
 * at run time); http.c serves them at GET / (index.html) and GET /<name>.
 */
#ifndef COLONY_API_ASSETS_H
#define COLONY_API_ASSETS_H

#include <stddef.h>

typedef struct http_asset {
	const char *path;                  /* "/index.html", "/dashboard.js", ... */
	const char *mime;                  /* Content-Type */
	const unsigned char *data;         /* static, NUL-terminated past len */
	size_t len;
} http_asset_t;

/* Defined by the generated file: a read-only table. */
extern const http_asset_t http_assets[];
extern const int http_n_assets;

/* The asset at an URL path, or NULL. */
const http_asset_t *http_asset_find(const char *path);

#endif
