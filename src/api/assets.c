/* assets.c - looking up the embedded dashboard files (see assets.h). */
#include "api/assets.h"

#include <string.h>

const http_asset_t *http_asset_find(const char *path)
{
	for (int i = 0; i < http_n_assets; i++)
		if (!strcmp(http_assets[i].path, path))
			return &http_assets[i];
	return NULL;
}
