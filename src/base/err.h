/* err.h - the project-wide error codes.
 *
 * Fallible functions return 0 on success or one of the negative codes below.
 * Parsers of untrusted input also fill an err_msg_t with a sentence saying
 * what is wrong and where ("tensor 'blk.0.attn_q.weight': data at offset
 * 4096 + 65536 bytes is past the end of the file (60000 bytes)").
 */
#ifndef COLONY_BASE_ERR_H
#define COLONY_BASE_ERR_H

#include <stddef.h>

#define WUR __attribute__((warn_unused_result))

enum err_code {
	ERR_OK          =  0,
	ERR_NOMEM       = -1,  /* allocation failed */
	ERR_IO          = -2,  /* read/write/open/mmap failed */
	ERR_FORMAT      = -3,  /* malformed input (file, message, record) */
	ERR_UNSUPPORTED = -4,  /* well-formed but not supported (type, arch, version) */
	ERR_RANGE       = -5,  /* a value out of its allowed range */
	ERR_INVAL       = -6,  /* bad argument from the caller */
	ERR_NOTFOUND    = -7,  /* a key, tensor or file that is not there */
	ERR_FULL        = -8,  /* a capacity (context, cache, queue) is exhausted */
	ERR_TRUNCATED   = -9,  /* input ends before it should */
	ERR_CODE_MIN    = -9,
};

/* Static English name of a code; never NULL. */
const char *err_str(int code);

/* A detail message for the caller to show. Fixed size: filling it never fails. */
typedef struct err_msg {
	char msg[320];
} err_msg_t;

/* Formats into *e (if e is not NULL) and returns code, so a parser can write
 * `return err_set(e, ERR_FORMAT, "bad magic %08x", m);`. */
int err_set(err_msg_t *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the message already in *e. Returns code. */
int err_prefix(err_msg_t *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
