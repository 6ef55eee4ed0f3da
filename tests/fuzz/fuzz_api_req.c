/* fuzz_api_req.c - libFuzzer target for the HTTP API's request parser
 * (src/api/oai.h) and what a parsed request drives: chat template rendering
 * and the stop-string filter (src/infer/chat.h).
 *
 * The first byte picks the endpoint (chat or completions) and the template
 * family; the rest is the request body. Any input is either refused with a
 * 400 and an error that serialises to JSON in OpenAI's shape, or parses into
 * a request whose fields lie within the documented bounds; a chat request
 * then renders under the chosen template (every message's text appears in
 * the rendering, trimmed for the families that trim), and the filter, fed
 * the rendering byte by byte with the request's stop strings, shows exactly
 * the prefix before the first stop string (or everything). Responses built
 * from the parsed text serialise to valid JSON.
 * Under the replay driver, ctest runs tests/fuzz/corpus/api_req/. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/oai.h"
#include "infer/chat.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_api_req: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

static const char *TEMPLATES[] = {
	NULL,
	"{{ bos_token }}<|start_header_id|>",
	"<|im_start|>system\\nYou are a helpful assistant.<|im_end|>",
	"[INST] <<SYS>>",
	"[INST]",
	"<|user|>",
};

static int valid_json(const char *s)
{
	if (!s)
		return 0;
	json_error_t je;
	json_t *j = json_loads(s, 0, &je);
	json_decref(j);
	return j != NULL;
}

/* Does hay[0..n) contain needle[0..k)? */
static const char *mem_find(const char *hay, size_t n, const char *needle, size_t k)
{
	if (k == 0)
		return hay;
	for (size_t i = 0; i + k <= n; i++)
		if (!memcmp(hay + i, needle, k))
			return hay + i;
	return NULL;
}

static void check_stop(const oai_req_t *r, const char *text, size_t len)
{
	static chat_stop_t st;
	chat_stop_init(&st);
	for (int i = 0; i < r->n_stop; i++)
		FUZZ_ASSERT(chat_stop_add(&st, r->stop[i], r->stop_len[i]) == 0);
	char *shown = malloc(len + CHAT_STOP_MAX_LEN + 1), *out = malloc(CHAT_STOP_MAX_LEN + 2);
	FUZZ_ASSERT(shown && out);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		size_t k = chat_stop_push(&st, text + i, 1, out);
		FUZZ_ASSERT(k <= CHAT_STOP_MAX_LEN + 1);
		memcpy(shown + n, out, k);
		n += k;
	}
	size_t k = chat_stop_flush(&st, out);
	memcpy(shown + n, out, k);
	n += k;
	/* the expected cut: generation ends when a stop string first completes
	 * (fed byte by byte: the smallest end of any occurrence); the text
	 * stops before the earliest-starting occurrence ending there */
	size_t end = SIZE_MAX, cut = len;
	for (int i = 0; i < r->n_stop; i++) {
		const char *p = mem_find(text, len, r->stop[i], r->stop_len[i]);
		if (!p)
			continue;
		size_t at = (size_t)(p - text), en = at + r->stop_len[i];
		if (en < end || (en == end && at < cut)) {
			end = en;
			cut = at;
		}
	}
	FUZZ_ASSERT(n == cut);
	FUZZ_ASSERT(!memcmp(shown, text, n));
	FUZZ_ASSERT(st.hit == (cut < len));
	free(shown);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	enum oai_kind kind = data[0] & 1 ? OAI_CHAT : OAI_COMPLETION;
	const char *tmpl = TEMPLATES[(data[0] >> 1) % (sizeof(TEMPLATES) / sizeof(TEMPLATES[0]))];
	oai_req_t r;
	oai_err_t err;
	int st = oai_req_parse((const char *)data + 1, size - 1, kind, &r, &err);
	if (st) {
		FUZZ_ASSERT(st == 400 && err.status == 400);
		FUZZ_ASSERT(err.message[0] != 0);
		char *j = oai_error_json(&err);
		FUZZ_ASSERT(valid_json(j));
		free(j);
		FUZZ_ASSERT(r.msgs == NULL && r.prompt == NULL && r.prompt_toks == NULL && r.n_stop == 0);
		return 0;
	}
	FUZZ_ASSERT(r.kind == kind);
	FUZZ_ASSERT(r.max_tokens == -1 || (r.max_tokens >= 1 && r.max_tokens <= OAI_MAX_TOKENS));
	FUZZ_ASSERT(r.temperature >= 0 && r.temperature <= 2 && r.top_p >= 0 && r.top_p <= 1);
	FUZZ_ASSERT(r.frequency_penalty >= -2 && r.frequency_penalty <= 2);
	FUZZ_ASSERT(r.n_stop >= 0 && r.n_stop <= OAI_MAX_STOP);
	for (int i = 0; i < r.n_stop; i++)
		FUZZ_ASSERT(r.stop_len[i] >= 1 && r.stop_len[i] < CHAT_STOP_MAX_LEN);
	FUZZ_ASSERT(strlen(r.model) < sizeof(r.model));
	const char *text = NULL;
	size_t len = 0;
	char *rendered = NULL;
	if (kind == OAI_CHAT) {
		FUZZ_ASSERT(r.n_msgs >= 1 && r.n_msgs <= CHAT_MAX_MSGS && r.msgs);
		chat_tmpl_t t;
		chat_tmpl_detect(&t, tmpl, tmpl ? strlen(tmpl) : 0);
		err_msg_t e;
		FUZZ_ASSERT(chat_render(&t, r.msgs, r.n_msgs, 1, "<s>", "</s>", &rendered, &len, &e) == 0);
		FUZZ_ASSERT(rendered && rendered[len] == 0);
		int trims = t.family == CHAT_LLAMA3 || t.family == CHAT_LLAMA2;
		for (int i = 0; i < r.n_msgs && !trims; i++)
			FUZZ_ASSERT(mem_find(rendered, len, r.msgs[i].text, r.msgs[i].len) != NULL);
		text = rendered;
	} else if (r.prompt) {
		text = r.prompt;
		len = r.prompt_len;
	} else {
		FUZZ_ASSERT(r.prompt_toks && r.n_prompt_toks >= 1);
		for (int i = 0; i < r.n_prompt_toks; i++)
			FUZZ_ASSERT(r.prompt_toks[i] >= 0);
	}
	if (text) {
		check_stop(&r, text, len < 4096 ? len : 4096);
		oai_usage_t u = { 1, 2 };
		char *j = oai_response_json(kind, "id-1", 1, r.model, text, len, "stop", &u);
		FUZZ_ASSERT(valid_json(j));
		free(j);
		j = oai_chunk_json(kind, "id-1", 1, r.model, text, len, 1, NULL, r.include_usage, NULL);
		FUZZ_ASSERT(valid_json(j));
		free(j);
	}
	free(rendered);
	oai_req_free(&r);
	return 0;
}
