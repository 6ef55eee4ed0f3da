#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *err_str(int code)
{
	switch (code) {
	case ERR_OK: return "ok";
	case ERR_NOMEM: return "out of memory";
	case ERR_IO: return "input/output error";
	case ERR_FORMAT: return "malformed input";
	case ERR_UNSUPPORTED: return "unsupported";
	case ERR_RANGE: return "value out of range";
	case ERR_INVAL: return "invalid argument";
	case ERR_NOTFOUND: return "not found";
	case ERR_FULL: return "capacity exhausted";
	case ERR_TRUNCATED: return "truncated input";
	default: return "unknown error";
	}
}

int err_set(err_msg_t *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

int err_prefix(err_msg_t *e, int code, const char *fmt, ...)
{
	if (e) {
		char pre[160], old[sizeof(e->msg)];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(pre, sizeof(pre), fmt, ap);
		va_end(ap);
		memcpy(old, e->msg, sizeof(old));
		old[sizeof(old) - 1] = 0;
		/* Truncation is fine here: the message is for people and stays bounded. */
		size_t np = strlen(pre);
		if (np > sizeof(e->msg) - 3)
			np = sizeof(e->msg) - 3;
		memcpy(e->msg, pre, np);
		memcpy(e->msg + np, ": ", 2);
		size_t room = sizeof(e->msg) - np - 3, no = strlen(old);
		if (no > room)
			no = room;
		memcpy(e->msg + np + 2, old, no);
		e->msg[np + 2 + no] = 0;
	}
	return code;
}
