/* test_chat.c - chat templates: the real templates of each family are
 * recognised and render as their Jinja would; chat_tokenize gives one BOS
 * and parses the special tokens (Llama-3 vocabulary); the stop-string filter
 * never shows a stop, even split across pushes. */
#include "test.h"
#include "infer/chat.h"
#include "model/gguf.h"
#include "model/vocab.h"

/* Templates as published with the models (tokenizer_config.json), JSON
 * decoded: a "\\n" here is the two characters of a Jinja escape. */
static const char T_LLAMA3[] =
	"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
	"message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
	"%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
	"'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
static const char T_QWEN2[] =
	"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou "
	"are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
	"message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
	"}}{% endif %}";
static const char T_CHATML[] =
	"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
	"'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
static const char T_LLAMA2[] =
	"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
	"messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
	"%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
	"raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
	"loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
	"'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
	"message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
	"== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
static const char T_ZEPHYR[] =
	"{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
	"eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n{% "
	"elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif "
	"%}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
static const char T_MISTRAL[] =
	"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
	"raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
	"message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
	"'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
	"are supported!') }}{% endif %}{% endfor %}";

#define MSG(r, s) { r, s, sizeof(s) - 1 }

static const chat_msg_t CONV[] = {
	MSG(CHAT_SYSTEM, "You are terse."),
	MSG(CHAT_USER, "Hi there "),
	MSG(CHAT_ASSISTANT, "Hello."),
	MSG(CHAT_USER, "Name a color."),
};

static char *render(const char *tmpl, const chat_msg_t *m, int n, int add_gen, const char *bos, const char *eos)
{
	chat_tmpl_t t;
	chat_tmpl_detect(&t, tmpl, tmpl ? strlen(tmpl) : 0);
	char *out = NULL;
	size_t len = 0;
	err_msg_t e;
	if (chat_render(&t, m, n, add_gen, bos, eos, &out, &len, &e) != 0)
		return NULL;
	if (strlen(out) != len) {
		free(out);
		return NULL;
	}
	return out;
}

static void check_render(const char *tmpl, const chat_msg_t *m, int n, int add_gen, const char *bos, const char *eos,
			 const char *want)
{
	char *got = render(tmpl, m, n, add_gen, bos, eos);
	CHECK(got != NULL);
	if (got && strcmp(got, want)) {
		fprintf(stderr, "  got  [%s]\n  want [%s]\n", got, want);
		CHECK(!"rendered text differs");
	}
	free(got);
}

static void test_detect(void)
{
	struct { const char *t; enum chat_family f; } cases[] = {
		{ T_LLAMA3, CHAT_LLAMA3 }, { T_QWEN2, CHAT_CHATML }, { T_CHATML, CHAT_CHATML },
		{ T_LLAMA2, CHAT_LLAMA2 }, { T_ZEPHYR, CHAT_ZEPHYR }, { T_MISTRAL, CHAT_MISTRAL },
		{ "{{ messages }}", CHAT_PLAIN }, { "", CHAT_PLAIN }, { NULL, CHAT_PLAIN },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		chat_tmpl_t t;
		chat_tmpl_detect(&t, cases[i].t, cases[i].t ? strlen(cases[i].t) : 0);
		CHECK_EQ_INT(t.family, cases[i].f);
	}
	chat_tmpl_t t;
	chat_tmpl_detect(&t, T_QWEN2, strlen(T_QWEN2));
	CHECK(!strcmp(t.default_system, "You are a helpful assistant."));
	chat_tmpl_detect(&t, T_CHATML, strlen(T_CHATML));
	CHECK(t.default_system[0] == 0);
	CHECK(!strcmp(chat_family_name(CHAT_ZEPHYR), "zephyr"));
	enum chat_role r;
	CHECK(chat_role_parse("developer", 9, &r) == 0 && r == CHAT_SYSTEM);
	CHECK(chat_role_parse("tool", 4, &r) == ERR_INVAL);
	CHECK(chat_role_parse("users", 4, &r) == 0 && r == CHAT_USER);   /* length given */
}

static void test_render_families(void)
{
	check_render(T_LLAMA3, CONV, 4, 1, "<|begin_of_text|>", "<|end_of_text|>",
		     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
		     "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
		     "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
		     "<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>"
		     "<|start_header_id|>assistant<|end_header_id|>\n\n");
	check_render(T_QWEN2, CONV + 1, 1, 1, "", "<|endoftext|>",
		     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
		     "<|im_start|>user\nHi there <|im_end|>\n<|im_start|>assistant\n");
	check_render(T_QWEN2, CONV, 2, 0, "", "",
		     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n");
	check_render(T_CHATML, CONV + 1, 1, 1, "", "",
		     "<|im_start|>user\nHi there <|im_end|>\n<|im_start|>assistant\n");
	/* Llama 2: the system text inside the first [INST], content stripped,
	 * BOS before each user turn, " text EOS" for the assistant's */
	check_render(T_LLAMA2, CONV, 4, 1, "<s>", "</s>",
		     "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello. </s>"
		     "<s>[INST] Name a color. [/INST]");
	check_render(T_LLAMA2, CONV + 1, 1, 1, "<s>", "</s>", "<s>[INST] Hi there [/INST]");
	check_render(T_ZEPHYR, CONV, 4, 1, "<s>", "</s>",
		     "<|system|>\nYou are terse.</s>\n<|user|>\nHi there </s>\n<|assistant|>\nHello.</s>\n"
		     "<|user|>\nName a color.</s>\n<|assistant|>\n");
	check_render(T_MISTRAL, CONV + 1, 3, 1, "<s>", "</s>",
		     "<s>[INST] Hi there  [/INST]Hello.</s>[INST] Name a color. [/INST]");
	check_render(T_MISTRAL, CONV, 2, 1, "<s>", "</s>", "<s>[INST] You are terse.\n\nHi there  [/INST]");
	/* a system turn alone is not dropped (found by fuzzing) */
	check_render(T_MISTRAL, CONV, 1, 1, "<s>", "</s>", "<s>[INST] You are terse. [/INST]");
	check_render(T_LLAMA2, CONV, 1, 1, "<s>", "</s>", "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>> [/INST]");
	/* Llama 2 puts the system text into the first turn whatever its role */
	check_render(T_LLAMA2, (chat_msg_t[]){ MSG(CHAT_SYSTEM, "S"), MSG(CHAT_ASSISTANT, "A") }, 2, 1, "<s>", "</s>",
		     " <<SYS>>\nS\n<</SYS>>\n\nA </s>");
	check_render(NULL, CONV, 4, 1, "<s>", "</s>",
		     "You are terse.\n\nUser: Hi there \nAssistant: Hello.\nUser: Name a color.\nAssistant:");
	check_render(NULL, CONV + 1, 1, 0, "", "", "User: Hi there \n");
	/* bad calls */
	chat_tmpl_t t;
	chat_tmpl_detect(&t, NULL, 0);
	char *out;
	size_t len;
	err_msg_t e;
	CHECK(chat_render(&t, CONV, 0, 1, "", "", &out, &len, &e) == ERR_INVAL && out == NULL);
	chat_msg_t bad = { 7, "x", 1 };
	CHECK(chat_render(&t, &bad, 1, 1, "", "", &out, &len, &e) == ERR_INVAL);
	/* embedded NUL bytes are carried as they are */
	chat_msg_t nul = { CHAT_USER, "a\0b", 3 };
	REQUIRE(chat_render(&t, &nul, 1, 0, "", "", &out, &len, &e) == 0);
	CHECK(len == 10 && !memcmp(out, "User: a\0b\n", 10));
	free(out);
}

static void test_stop_texts(void)
{
	chat_tmpl_t t;
	const char *s[CHAT_MAX_STOP_TEXTS];
	chat_tmpl_detect(&t, T_LLAMA3, strlen(T_LLAMA3));
	CHECK(chat_stop_texts(&t, s) == 1 && !strcmp(s[0], "<|eot_id|>"));
	chat_tmpl_detect(&t, T_QWEN2, strlen(T_QWEN2));
	CHECK(chat_stop_texts(&t, s) == 1 && !strcmp(s[0], "<|im_end|>"));
	chat_tmpl_detect(&t, T_LLAMA2, strlen(T_LLAMA2));
	CHECK(chat_stop_texts(&t, s) == 0);
	chat_tmpl_detect(&t, NULL, 0);
	CHECK(chat_stop_texts(&t, s) == 1 && !strcmp(s[0], "\nUser:"));
}

/* The Llama-3 vocabulary carries the Llama-3 template: one BOS, and the
 * header and end-of-turn markers as their special tokens. */
static void test_tokenize_llama3(void)
{
	gguf_t *g = NULL;
	vocab_t *v = NULL;
	err_msg_t e;
	REQUIRE(gguf_open(fixture_path("ggml-vocab-llama-bpe.gguf"), &g, &e) == 0);
	REQUIRE(vocab_new_from_gguf(g, &v, &e) == 0);
	chat_tmpl_t t;
	chat_tmpl_from_gguf(&t, g);
	CHECK_EQ_INT(t.family, CHAT_LLAMA3);
	int32_t *toks = NULL;
	size_t n = 0;
	REQUIRE(chat_tokenize(&t, v, CONV + 1, 1, &toks, &n, &e) == 0);
	int32_t bos = vocab_find(v, "<|begin_of_text|>", 17), sh = vocab_find(v, "<|start_header_id|>", 19);
	int32_t eh = vocab_find(v, "<|end_header_id|>", 17), eot = vocab_find(v, "<|eot_id|>", 10);
	REQUIRE(n > 8 && bos >= 0 && sh >= 0 && eh >= 0 && eot >= 0);
	CHECK_EQ_INT(toks[0], bos);
	CHECK(toks[1] != bos);
	CHECK_EQ_INT(toks[1], sh);
	CHECK_EQ_INT(toks[3], eh);
	CHECK_EQ_INT(toks[n - 4], sh);   /* ... <|eot_id|> <|start_header_id|> assistant <|end_header_id|> \n\n */
	CHECK_EQ_INT(toks[n - 5], eot);
	CHECK_EQ_INT(toks[n - 2], eh);
	int count_bos = 0;
	for (size_t i = 0; i < n; i++)
		count_bos += toks[i] == bos;
	CHECK_EQ_INT(count_bos, 1);
	CHECK(vocab_is_eog(v, eot));
	free(toks);
	vocab_free(v);
	gguf_free(g);
}

/* The SentencePiece model (no template): the plain fallback, BOS once. */
static void test_tokenize_plain(void)
{
	gguf_t *g = NULL;
	vocab_t *v = NULL;
	err_msg_t e;
	REQUIRE(gguf_open(fixture_path("stories260K.gguf"), &g, &e) == 0);
	REQUIRE(vocab_new_from_gguf(g, &v, &e) == 0);
	chat_tmpl_t t;
	chat_tmpl_from_gguf(&t, g);
	CHECK_EQ_INT(t.family, CHAT_PLAIN);
	int32_t *toks = NULL;
	size_t n = 0;
	REQUIRE(chat_tokenize(&t, v, CONV + 1, 1, &toks, &n, &e) == 0);
	/* the same tokens as the rendered text through the ordinary path */
	int32_t want[256];
	size_t nw = 0;
	const char *txt = "User: Hi there \nAssistant:";
	REQUIRE(vocab_tokenize(v, txt, strlen(txt), 1, 1, want, 256, &nw) == 0);
	CHECK_EQ_INT(n, nw);
	CHECK(n == nw && !memcmp(toks, want, n * sizeof(int32_t)));
	CHECK_EQ_INT(toks[0], vocab_bos(v));
	free(toks);
	vocab_free(v);
	gguf_free(g);
}

/* Pushes pieces through the filter; returns what was shown. */
static size_t run_stop(chat_stop_t *s, const char *const *pieces, int n, char *shown)
{
	char out[CHAT_STOP_MAX_LEN + 256];
	size_t total = 0;
	for (int i = 0; i < n; i++) {
		size_t k = chat_stop_push(s, pieces[i], strlen(pieces[i]), out);
		memcpy(shown + total, out, k);
		total += k;
	}
	size_t k = chat_stop_flush(s, out);
	memcpy(shown + total, out, k);
	total += k;
	shown[total] = 0;
	return total;
}

static void test_stop_filter(void)
{
	chat_stop_t *s = malloc(sizeof(*s));
	REQUIRE(s);
	char shown[1024];
	/* a stop split over three pieces, text before it shown, nothing after */
	chat_stop_init(s);
	REQUIRE(chat_stop_add(s, "The End", 7) == 0);
	const char *p1[] = { "Once upon", " a time. The", " E", "nd of it", " more" };
	run_stop(s, p1, 5, shown);
	CHECK(!strcmp(shown, "Once upon a time. "));
	CHECK(s->hit);
	/* a prefix that does not complete is shown later, in order */
	chat_stop_init(s);
	REQUIRE(chat_stop_add(s, "The End", 7) == 0);
	const char *p2[] = { "The", " Enemy", " The E" };
	char out[CHAT_STOP_MAX_LEN + 64];
	CHECK_EQ_INT(chat_stop_push(s, p2[0], 3, out), 0);   /* "The" is held */
	size_t k = chat_stop_push(s, p2[1], 6, out);
	CHECK(k == 9 && !memcmp(out, "The Enemy", 9));
	k = chat_stop_push(s, p2[2], 6, out);
	CHECK(k == 1 && out[0] == ' ');
	CHECK_EQ_INT(chat_stop_flush(s, out), 5);   /* "The E" at the end: not a stop */
	CHECK(!s->hit);
	/* the earliest of several stops wins; duplicates kept once; limits */
	chat_stop_init(s);
	REQUIRE(chat_stop_add(s, "cat", 3) == 0);
	REQUIRE(chat_stop_add(s, "a c", 3) == 0);
	REQUIRE(chat_stop_add(s, "cat", 3) == 0);
	CHECK_EQ_INT(s->n, 2);
	const char *p3[] = { "a dog and a cat" };
	run_stop(s, p3, 1, shown);
	CHECK(!strcmp(shown, "a dog and "));   /* "a c" comes before "cat" */
	CHECK(chat_stop_add(s, "", 0) == ERR_RANGE);
	char big[CHAT_STOP_MAX_LEN];
	memset(big, 'x', sizeof(big));
	CHECK(chat_stop_add(s, big, sizeof(big)) == ERR_RANGE);
	for (int i = 0; i < CHAT_STOP_MAX; i++) {
		char w[8];
		snprintf(w, sizeof(w), "w%d", i);
		int r = chat_stop_add(s, w, strlen(w));
		CHECK(i < CHAT_STOP_MAX - 2 ? r == 0 : r == ERR_FULL);
	}
	/* no stops: everything passes at once */
	chat_stop_init(s);
	CHECK_EQ_INT(chat_stop_push(s, "abc", 3, out), 3);
	/* a whole piece that is the stop, and multi-byte text before it */
	chat_stop_init(s);
	REQUIRE(chat_stop_add(s, "\nUser:", 6) == 0);
	const char *p4[] = { "caf\xc3\xa9", "\n", "User", ":", " hi" };
	run_stop(s, p4, 5, shown);
	CHECK(!strcmp(shown, "caf\xc3\xa9"));
	free(s);
}

TEST_MAIN(test_detect, test_render_families, test_stop_texts, test_tokenize_llama3, test_tokenize_plain,
	  test_stop_filter)
