/* oai.h - the OpenAI-compatible request and response bodies, without HTTP.
 *
 * oai_req_parse turns a request body (untrusted bytes) into an oai_req_t or
 * an oai_err_t in OpenAI's error shape with the HTTP status to send: 400
 * for malformed JSON (saying at which line, column and byte), for invalid
 * UTF-8, wrong types, values out of range, or features refused (n != 1,
 * best_of != 1, logprobs, echo, non-text content, roles other than
 * system/developer/user/assistant). Unknown fields are ignored, as OpenAI
 * does. It never asserts on its input and never crashes (fuzzed:
 * tests/fuzz/fuzz_api_req.c).
 *
 * Fields read (everything else is ignored):
 *   both         model (string, required), max_tokens / max_completion_tokens
 *                (integer 1..OAI_MAX_TOKENS; the latter wins), temperature
 *                (0..2, default 1), top_p (0..1, default 1), seed (integer),
 *                frequency_penalty and presence_penalty (-2..2), n (1),
 *                stream (bool), stream_options.include_usage (bool), stop
 *                (string or list of up to 4 non-empty strings)
 *   chat         messages: list of {role, content}; content is a string,
 *                null (assistant), or a list of {"type": "text", "text": ...}
 *                parts, concatenated
 *   completions  prompt: a string, a list of one string, a list of token
 *                ids, or a list of one list of token ids; best_of (1),
 *                echo (false), logprobs (null)
 * null counts as absent everywhere.
 *
 * The builders return malloc'd NUL-terminated JSON (NULL when out of
 * memory); reals are written with JSON_REAL_PRECISION.
 */
#ifndef COLONY_API_OAI_H
#define COLONY_API_OAI_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "infer/chat.h"

#define OAI_MAX_TOKENS (1 << 24)
#define OAI_MAX_STOP 4
#define OAI_MAX_PROMPT_TOKENS (1 << 20)

enum oai_kind { OAI_CHAT = 1, OAI_COMPLETION = 2 };

typedef struct oai_err {
	int status;                /* HTTP status */
	char type[40];             /* "invalid_request_error", ... */
	char param[64];            /* "" for null */
	char code[48];             /* "" for null */
	char message[400];
} oai_err_t;

typedef struct oai_req {
	enum oai_kind kind;
	char model[256];
	/* chat: messages; each text is malloc'd and owned by the request */
	chat_msg_t *msgs;
	int n_msgs;
	/* completions: text, or token ids (prompt_toks != NULL) */
	char *prompt;              /* owned, NUL terminated (may hold NULs: use prompt_len) */
	size_t prompt_len;
	int32_t *prompt_toks;      /* owned */
	int n_prompt_toks;
	int64_t max_tokens;        /* -1: not given */
	double temperature, top_p;
	double frequency_penalty, presence_penalty;
	int has_seed;
	uint64_t seed;
	int stream, include_usage;
	char *stop[OAI_MAX_STOP];  /* owned */
	size_t stop_len[OAI_MAX_STOP];
	int n_stop;
} oai_req_t;

/* Fills *err (status and OpenAI fields) and returns status, for the
 * callers' convenience. */
int oai_err_set(oai_err_t *err, int status, const char *type, const char *param, const char *code, const char *fmt,
		...) __attribute__((format(printf, 6, 7)));

/* Parses and validates a body. 0 and *r filled (free with oai_req_free),
 * or the HTTP status (400) with *err; *r is then empty. */
int oai_req_parse(const char *body, size_t len, enum oai_kind kind, oai_req_t *r, oai_err_t *err);
void oai_req_free(oai_req_t *r);

/* {"error": {"message", "type", "param", "code"}} */
char *oai_error_json(const oai_err_t *err);

typedef struct oai_usage {
	int prompt_tokens, completion_tokens;
} oai_usage_t;

/* A whole response: chat.completion or text_completion. finish: "stop" or "length". */
char *oai_response_json(enum oai_kind kind, const char *id, int64_t created, const char *model, const char *text,
			size_t len, const char *finish, const oai_usage_t *usage);

/* One streamed chunk (chat.completion.chunk or text_completion). Chat: the
 * first chunk carries the role (role_first), text may be NULL (no content
 * in the delta); finish NULL until the last. With include_usage every chunk
 * carries "usage": null except the usage chunk (usage != NULL: no choices). */
char *oai_chunk_json(enum oai_kind kind, const char *id, int64_t created, const char *model, const char *text,
		     size_t len, int role_first, const char *finish, int include_usage, const oai_usage_t *usage);

#endif
