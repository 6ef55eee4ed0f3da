/* oai.c - OpenAI request parsing and response bodies (see oai.h). */
#include "api/oai.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(9))

int oai_err_set(oai_err_t *err, int status, const char *type, const char *param, const char *code, const char *fmt,
		...)
{
	memset(err, 0, sizeof(*err));
	err->status = status;
	snprintf(err->type, sizeof(err->type), "%s", type ? type : "invalid_request_error");
	snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
	snprintf(err->code, sizeof(err->code), "%s", code ? code : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return status;
}

#define BAD(param, ...) oai_err_set(err, 400, "invalid_request_error", param, NULL, __VA_ARGS__)

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number with a fraction";
	case JSON_TRUE: case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

/* A field that is absent or null. */
static json_t *field(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return v && !json_is_null(v) ? v : NULL;
}

static int get_number(json_t *o, const char *k, double lo, double hi, double *out, oai_err_t *err)
{
	json_t *v = field(o, k);
	if (!v)
		return 0;
	if (!json_is_number(v))
		return BAD(k, "'%s' must be a number, got %s", k, type_name(v));
	double d = json_number_value(v);
	if (!isfinite(d) || d < lo || d > hi)
		return BAD(k, "'%s' must be between %g and %g, got %g", k, lo, hi, d);
	*out = d;
	return 0;
}

static int get_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out, int *present, oai_err_t *err)
{
	json_t *v = field(o, k);
	if (present)
		*present = v != NULL;
	if (!v)
		return 0;
	if (!json_is_integer(v))
		return BAD(k, "'%s' must be an integer, got %s", k, type_name(v));
	json_int_t x = json_integer_value(v);
	if (x < lo || x > hi)
		return BAD(k, "'%s' must be between %lld and %lld, got %lld", k, (long long)lo, (long long)hi,
			   (long long)x);
	*out = x;
	return 0;
}

static int get_bool(json_t *o, const char *k, int *out, oai_err_t *err)
{
	json_t *v = field(o, k);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return BAD(k, "'%s' must be a boolean, got %s", k, type_name(v));
	*out = json_is_true(v);
	return 0;
}

static char *dup_bytes(const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

#define OOM() oai_err_set(err, 503, "server_error", NULL, NULL, "out of memory")

/* content: a string, null, or text parts; into a malloc'd string. */
static int content_text(json_t *c, int i, char **out, size_t *len, oai_err_t *err)
{
	char param[64];
	snprintf(param, sizeof(param), "messages[%d].content", i);
	if (!c) {
		*out = dup_bytes("", 0);
		*len = 0;
		return *out ? 0 : OOM();
	}
	if (json_is_string(c)) {
		*len = json_string_length(c);
		*out = dup_bytes(json_string_value(c), *len);
		return *out ? 0 : OOM();
	}
	if (!json_is_array(c))
		return BAD(param, "'%s' must be a string or a list of text parts, got %s", param, type_name(c));
	size_t total = 0, k;
	json_t *p;
	json_array_foreach(c, k, p) {
		json_t *t = json_is_object(p) ? json_object_get(p, "type") : NULL;
		json_t *x = json_is_object(p) ? json_object_get(p, "text") : NULL;
		if (!t || !json_is_string(t) || strcmp(json_string_value(t), "text") || !x || !json_is_string(x))
			return BAD(param, "%s[%zu]: only {\"type\": \"text\", \"text\": \"...\"} parts are supported", param, k);
		total += json_string_length(x);
	}
	char *s = malloc(total + 1), *w = s;
	if (!s)
		return OOM();
	json_array_foreach(c, k, p) {
		json_t *x = json_object_get(p, "text");
		memcpy(w, json_string_value(x), json_string_length(x));
		w += json_string_length(x);
	}
	*w = 0;
	*out = s;
	*len = total;
	return 0;
}

static int parse_messages(json_t *root, oai_req_t *r, oai_err_t *err)
{
	json_t *m = field(root, "messages");
	if (!m)
		return BAD("messages", "'messages' is required");
	if (!json_is_array(m))
		return BAD("messages", "'messages' must be a list, got %s", type_name(m));
	size_t n = json_array_size(m);
	if (n == 0)
		return BAD("messages", "'messages' is empty");
	if (n > CHAT_MAX_MSGS)
		return BAD("messages", "%zu messages, at most %d are accepted", n, CHAT_MAX_MSGS);
	r->msgs = calloc(n, sizeof(*r->msgs));
	if (!r->msgs)
		return OOM();
	size_t i;
	json_t *msg;
	json_array_foreach(m, i, msg) {
		char param[64];
		snprintf(param, sizeof(param), "messages[%zu]", i);
		if (!json_is_object(msg))
			return BAD(param, "'%s' must be an object, got %s", param, type_name(msg));
		json_t *role = json_object_get(msg, "role");
		snprintf(param, sizeof(param), "messages[%zu].role", i);
		if (!role || !json_is_string(role))
			return BAD(param, "'%s' must be a string", param);
		enum chat_role cr;
		if (chat_role_parse(json_string_value(role), json_string_length(role), &cr) != 0)
			return BAD(param, "role '%.40s' is not supported (system, developer, user, assistant)",
				   json_string_value(role));
		json_t *c = field(msg, "content");
		if (!c && cr != CHAT_ASSISTANT) {
			snprintf(param, sizeof(param), "messages[%zu].content", i);
			return BAD(param, "'%s' is required", param);
		}
		char *text = NULL;
		size_t len = 0;
		int st = content_text(c, (int)i, &text, &len, err);
		if (st)
			return st;
		r->msgs[i].role = cr;
		r->msgs[i].text = text;
		r->msgs[i].len = len;
		r->n_msgs = (int)i + 1;
	}
	return 0;
}

static int token_list(json_t *a, const char *param, oai_req_t *r, oai_err_t *err)
{
	size_t n = json_array_size(a);
	if (n == 0)
		return BAD(param, "'%s' is an empty list of tokens", param);
	if (n > OAI_MAX_PROMPT_TOKENS)
		return BAD(param, "'%s' has %zu tokens, at most %d are accepted", param, n, OAI_MAX_PROMPT_TOKENS);
	r->prompt_toks = malloc(sizeof(int32_t) * n);
	if (!r->prompt_toks)
		return OOM();
	size_t i;
	json_t *t;
	json_array_foreach(a, i, t) {
		if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
			return BAD(param, "'%s'[%zu] must be a token id (a non-negative integer)", param, i);
		r->prompt_toks[i] = (int32_t)json_integer_value(t);
	}
	r->n_prompt_toks = (int)n;
	return 0;
}

static int parse_prompt(json_t *root, oai_req_t *r, oai_err_t *err)
{
	json_t *p = field(root, "prompt");
	if (!p)
		return BAD("prompt", "'prompt' is required");
	if (json_is_array(p) && json_array_size(p) >= 1) {
		json_t *first = json_array_get(p, 0);
		if (json_is_integer(first))
			return token_list(p, "prompt", r, err);
		if (json_array_size(p) > 1)
			return BAD("prompt", "one prompt per request is supported, got %zu", json_array_size(p));
		if (json_is_array(first))
			return token_list(first, "prompt[0]", r, err);
		p = first;
	}
	if (!json_is_string(p))
		return BAD("prompt", "'prompt' must be a string or a list of token ids, got %s", type_name(p));
	r->prompt_len = json_string_length(p);
	r->prompt = dup_bytes(json_string_value(p), r->prompt_len);
	return r->prompt ? 0 : OOM();
}

static int parse_stop(json_t *root, oai_req_t *r, oai_err_t *err)
{
	json_t *s = field(root, "stop");
	if (!s)
		return 0;
	json_t *one[1] = { s };
	json_t **items = one;
	size_t n = 1;
	json_t *arr[OAI_MAX_STOP];
	if (json_is_array(s)) {
		n = json_array_size(s);
		if (n > OAI_MAX_STOP)
			return BAD("stop", "'stop' holds %zu strings, at most %d are accepted", n, OAI_MAX_STOP);
		for (size_t i = 0; i < n; i++)
			arr[i] = json_array_get(s, i);
		items = arr;
	}
	for (size_t i = 0; i < n; i++) {
		if (!json_is_string(items[i]))
			return BAD("stop", "'stop' must be a string or a list of strings, got %s", type_name(items[i]));
		size_t len = json_string_length(items[i]);
		if (len < 1 || len >= CHAT_STOP_MAX_LEN)
			return BAD("stop", "a stop string must be 1 to %d bytes long, got %zu", CHAT_STOP_MAX_LEN - 1, len);
		r->stop[r->n_stop] = dup_bytes(json_string_value(items[i]), len);
		if (!r->stop[r->n_stop])
			return OOM();
		r->stop_len[r->n_stop++] = len;
	}
	return 0;
}

static int parse_fields(json_t *root, enum oai_kind kind, oai_req_t *r, oai_err_t *err)
{
	int st;
	if (!json_is_object(root))
		return BAD(NULL, "the request body must be a JSON object, got %s", type_name(root));
	json_t *model = field(root, "model");
	if (!model)
		return BAD("model", "'model' is required");
	if (!json_is_string(model))
		return BAD("model", "'model' must be a string, got %s", type_name(model));
	if (json_string_length(model) >= sizeof(r->model) || strlen(json_string_value(model)) != json_string_length(model))
		return BAD("model", "'model' is too long or holds a NUL");
	memcpy(r->model, json_string_value(model), json_string_length(model) + 1);
	if ((st = kind == OAI_CHAT ? parse_messages(root, r, err) : parse_prompt(root, r, err)))
		return st;
	int64_t mt = -1, mct = -1, n = 1, seed = 0;
	int has_mct = 0;
	if ((st = get_int(root, "max_tokens", 1, OAI_MAX_TOKENS, &mt, NULL, err)) ||
	    (st = get_int(root, "max_completion_tokens", 1, OAI_MAX_TOKENS, &mct, &has_mct, err)))
		return st;
	r->max_tokens = has_mct ? mct : mt;
	if ((st = get_int(root, "n", INT64_MIN, INT64_MAX, &n, NULL, err)))
		return st;
	if (n != 1)
		return BAD("n", "only n = 1 is supported, got %lld", (long long)n);
	if (kind == OAI_COMPLETION) {
		int64_t best_of = 1;
		int echo = 0;
		if ((st = get_int(root, "best_of", INT64_MIN, INT64_MAX, &best_of, NULL, err)))
			return st;
		if (best_of != 1)
			return BAD("best_of", "only best_of = 1 is supported, got %lld", (long long)best_of);
		if ((st = get_bool(root, "echo", &echo, err)))
			return st;
		if (echo)
			return BAD("echo", "echo is not supported");
		if (field(root, "logprobs"))
			return BAD("logprobs", "logprobs are not supported");
	} else {
		int lp = 0;
		if ((st = get_bool(root, "logprobs", &lp, err)))
			return st;
		if (lp)
			return BAD("logprobs", "logprobs are not supported");
	}
	r->temperature = 1.0;
	r->top_p = 1.0;
	if ((st = get_number(root, "temperature", 0, 2, &r->temperature, err)) ||
	    (st = get_number(root, "top_p", 0, 1, &r->top_p, err)) ||
	    (st = get_number(root, "frequency_penalty", -2, 2, &r->frequency_penalty, err)) ||
	    (st = get_number(root, "presence_penalty", -2, 2, &r->presence_penalty, err)))
		return st;
	if ((st = get_int(root, "seed", INT64_MIN, INT64_MAX, &seed, &r->has_seed, err)))
		return st;
	r->seed = (uint64_t)seed;
	if ((st = get_bool(root, "stream", &r->stream, err)))
		return st;
	json_t *so = field(root, "stream_options");
	if (so) {
		if (!json_is_object(so))
			return BAD("stream_options", "'stream_options' must be an object, got %s", type_name(so));
		if ((st = get_bool(so, "include_usage", &r->include_usage, err)))
			return st;
	}
	return parse_stop(root, r, err);
}

int oai_req_parse(const char *body, size_t len, enum oai_kind kind, oai_req_t *r, oai_err_t *err)
{
	memset(r, 0, sizeof(*r));
	r->kind = kind;
	r->max_tokens = -1;
	memset(err, 0, sizeof(*err));
	if (!body || len == 0)
		return BAD(NULL, "the request has no body (a JSON object is expected)");
	json_error_t je;
	json_t *root = json_loadb(body, len, 0, &je);
	if (!root) {
		int code = json_error_code(&je);
		return BAD(NULL, "%s at line %d, column %d (byte %d): %s",
			   code == json_error_invalid_utf8 ? "invalid UTF-8" : "malformed JSON", je.line, je.column,
			   je.position, je.text);
	}
	int st = parse_fields(root, kind, r, err);
	json_decref(root);
	if (st)
		oai_req_free(r);
	return st;
}

void oai_req_free(oai_req_t *r)
{
	for (int i = 0; i < r->n_msgs; i++)
		free((void *)r->msgs[i].text);
	free(r->msgs);
	free(r->prompt);
	free(r->prompt_toks);
	for (int i = 0; i < r->n_stop; i++)
		free(r->stop[i]);
	enum oai_kind k = r->kind;
	memset(r, 0, sizeof(*r));
	r->kind = k;
	r->max_tokens = -1;
}

/* ---- responses */

static char *dump(json_t *o)
{
	char *s = o ? json_dumps(o, DUMP_FLAGS) : NULL;
	json_decref(o);
	return s;
}

static json_t *str_or_null(const char *s)
{
	return s && *s ? json_string(s) : json_null();
}

char *oai_error_json(const oai_err_t *err)
{
	json_t *e = json_object();
	json_object_set_new(e, "message", json_stringn(err->message, strnlen(err->message, sizeof(err->message))));
	if (!json_object_get(e, "message"))   /* not UTF-8 (quoted input): keep the shape */
		json_object_set_new(e, "message", json_string("the request is invalid"));
	json_object_set_new(e, "type", json_string(err->type));
	json_object_set_new(e, "param", str_or_null(err->param));
	json_object_set_new(e, "code", str_or_null(err->code));
	json_t *o = json_object();
	json_object_set_new(o, "error", e);
	return dump(o);
}

static json_t *usage_json(const oai_usage_t *u)
{
	return json_pack("{s:i,s:i,s:i}", "prompt_tokens", u->prompt_tokens, "completion_tokens", u->completion_tokens,
			 "total_tokens", u->prompt_tokens + u->completion_tokens);
}

/* Text as a JSON string; generated text is valid UTF-8 (the decoder sees to
 * it), but never fail the whole response on a bad byte. */
static json_t *text_json(const char *text, size_t len)
{
	json_t *s = json_stringn(text ? text : "", text ? len : 0);
	return s ? s : json_string("\xef\xbf\xbd");
}

static json_t *head(enum oai_kind kind, const char *id, int64_t created, const char *model, int chunk)
{
	const char *obj = kind == OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
	return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", id, "object", obj, "created", (json_int_t)created, "model",
			 model, "system_fingerprint", "colony");
}

char *oai_response_json(enum oai_kind kind, const char *id, int64_t created, const char *model, const char *text,
			size_t len, const char *finish, const oai_usage_t *usage)
{
	json_t *o = head(kind, id, created, model, 0);
	json_t *ch = json_object();
	json_object_set_new(ch, "index", json_integer(0));
	if (kind == OAI_CHAT) {
		json_t *m = json_object();
		json_object_set_new(m, "role", json_string("assistant"));
		json_object_set_new(m, "content", text_json(text, len));
		json_object_set_new(m, "refusal", json_null());
		json_object_set_new(ch, "message", m);
	} else {
		json_object_set_new(ch, "text", text_json(text, len));
	}
	json_object_set_new(ch, "logprobs", json_null());
	json_object_set_new(ch, "finish_reason", json_string(finish));
	json_t *arr = json_array();
	json_array_append_new(arr, ch);
	json_object_set_new(o, "choices", arr);
	json_object_set_new(o, "usage", usage_json(usage));
	return dump(o);
}

char *oai_chunk_json(enum oai_kind kind, const char *id, int64_t created, const char *model, const char *text,
		     size_t len, int role_first, const char *finish, int include_usage, const oai_usage_t *usage)
{
	json_t *o = head(kind, id, created, model, 1);
	json_t *arr = json_array();
	if (!usage) {
		json_t *ch = json_object();
		json_object_set_new(ch, "index", json_integer(0));
		if (kind == OAI_CHAT) {
			json_t *d = json_object();
			if (role_first)
				json_object_set_new(d, "role", json_string("assistant"));
			if (text)
				json_object_set_new(d, "content", text_json(text, len));
			json_object_set_new(ch, "delta", d);
		} else {
			json_object_set_new(ch, "text", text_json(text, len));
		}
		json_object_set_new(ch, "logprobs", json_null());
		json_object_set_new(ch, "finish_reason", finish ? json_string(finish) : json_null());
		json_array_append_new(arr, ch);
	}
	json_object_set_new(o, "choices", arr);
	if (usage)
		json_object_set_new(o, "usage", usage_json(usage));
	else if (include_usage)
		json_object_set_new(o, "usage", json_null());
	return dump(o);
}
