/* chat.c - chat templates and stop strings (see chat.h). */
#include "infer/chat.h"

#include <stdlib.h>
#include <string.h>

/* ---- detection */

static const char *find(const char *h, size_t hn, const char *needle)
{
	size_t nn = strlen(needle);
	if (!h || nn > hn)
		return NULL;
	for (size_t i = 0; i + nn <= hn; i++)
		if (h[i] == needle[0] && !memcmp(h + i, needle, nn))
			return h + i;
	return NULL;
}

/* Qwen's templates open with a literal default system turn:
 *   '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'
 * (\n written as the two characters of a Jinja escape). Take its text when
 * it is a plain literal (no expression or quote inside). */
static void default_system(chat_tmpl_t *t, const char *tmpl, size_t len)
{
	static const char open[] = "<|im_start|>system\\n";
	const char *p = find(tmpl, len, open);
	if (!p)
		return;
	p += sizeof(open) - 1;
	const char *end = find(p, len - (size_t)(p - tmpl), "<|im_end|>");
	if (!end || end == p)
		return;
	size_t o = 0;
	for (const char *q = p; q < end; q++) {
		if (*q == '\'' || *q == '"' || *q == '{' || *q == '}' || o + 2 >= sizeof(t->default_system)) {
			t->default_system[0] = 0;
			return;
		}
		if (*q == '\\' && q + 1 < end) {
			q++;
			t->default_system[o++] = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
		} else {
			t->default_system[o++] = *q;
		}
	}
	t->default_system[o] = 0;
}

void chat_tmpl_detect(chat_tmpl_t *t, const char *tmpl, size_t len)
{
	memset(t, 0, sizeof(*t));
	t->family = CHAT_PLAIN;
	if (!tmpl || !len)
		return;
	if (find(tmpl, len, "<|start_header_id|>"))
		t->family = CHAT_LLAMA3;
	else if (find(tmpl, len, "<|im_start|>")) {
		t->family = CHAT_CHATML;
		default_system(t, tmpl, len);
	} else if (find(tmpl, len, "[INST]"))
		t->family = find(tmpl, len, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
	else if (find(tmpl, len, "<|user|>"))
		t->family = CHAT_ZEPHYR;
}

void chat_tmpl_from_gguf(chat_tmpl_t *t, const gguf_t *g)
{
	gguf_str_t s = { 0 };
	if (g && gguf_get_str(g, "tokenizer.chat_template", &s) == 0 && s.n < (1u << 24))
		chat_tmpl_detect(t, s.p, (size_t)s.n);
	else
		chat_tmpl_detect(t, NULL, 0);
}

const char *chat_family_name(enum chat_family f)
{
	switch (f) {
	case CHAT_LLAMA2: return "llama2";
	case CHAT_LLAMA3: return "llama3";
	case CHAT_CHATML: return "chatml";
	case CHAT_ZEPHYR: return "zephyr";
	case CHAT_MISTRAL: return "mistral";
	default: return "plain";
	}
}

int chat_role_parse(const char *s, size_t len, enum chat_role *r)
{
	if (len == 6 && !memcmp(s, "system", 6)) *r = CHAT_SYSTEM;
	else if (len == 9 && !memcmp(s, "developer", 9)) *r = CHAT_SYSTEM;
	else if (len == 4 && !memcmp(s, "user", 4)) *r = CHAT_USER;
	else if (len == 9 && !memcmp(s, "assistant", 9)) *r = CHAT_ASSISTANT;
	else return ERR_INVAL;
	return 0;
}

static const char *role_name(enum chat_role r)
{
	return r == CHAT_SYSTEM ? "system" : r == CHAT_USER ? "user" : "assistant";
}

/* ---- rendering into a growable buffer */

struct sb {
	char *p;
	size_t n, cap;
	int oom;
};

static void sb_put(struct sb *b, const char *s, size_t n)
{
	if (b->oom || !n)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_str(struct sb *b, const char *s) { if (s) sb_put(b, s, strlen(s)); }

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* Python's str.strip() / Jinja's trim over ASCII white space. */
static void sb_trimmed(struct sb *b, const char *s, size_t n)
{
	while (n && is_space(*s)) {
		s++;
		n--;
	}
	while (n && is_space(s[n - 1]))
		n--;
	sb_put(b, s, n);
}

static void render_llama3(struct sb *b, const chat_msg_t *m, int n, int add_gen, const char *bos)
{
	sb_str(b, bos);
	for (int i = 0; i < n; i++) {
		sb_str(b, "<|start_header_id|>");
		sb_str(b, role_name(m[i].role));
		sb_str(b, "<|end_header_id|>\n\n");
		sb_trimmed(b, m[i].text, m[i].len);
		sb_str(b, "<|eot_id|>");
	}
	if (add_gen)
		sb_str(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void render_chatml(struct sb *b, const chat_tmpl_t *t, const chat_msg_t *m, int n, int add_gen)
{
	if (t->default_system[0] && m[0].role != CHAT_SYSTEM) {
		sb_str(b, "<|im_start|>system\n");
		sb_str(b, t->default_system);
		sb_str(b, "<|im_end|>\n");
	}
	for (int i = 0; i < n; i++) {
		sb_str(b, "<|im_start|>");
		sb_str(b, role_name(m[i].role));
		sb_str(b, "\n");
		sb_put(b, m[i].text, m[i].len);
		sb_str(b, "<|im_end|>\n");
	}
	if (add_gen)
		sb_str(b, "<|im_start|>assistant\n");
}

static void render_zephyr(struct sb *b, const chat_msg_t *m, int n, int add_gen, const char *eos)
{
	for (int i = 0; i < n; i++) {
		sb_str(b, "<|");
		sb_str(b, role_name(m[i].role));
		sb_str(b, "|>\n");
		sb_put(b, m[i].text, m[i].len);
		sb_str(b, eos);
		sb_str(b, "\n");
	}
	if (add_gen)
		sb_str(b, "<|assistant|>\n");
}

/* Llama 2: the system text joins the first turn after it inside <<SYS>>
 * (whatever that turn's role, as the reference template does); a system
 * text with no turn after it is rendered as a user turn of its own. */
static void llama2_turn(struct sb *b, enum chat_role role, const chat_msg_t *sys, const char *text, size_t len,
			const char *bos, const char *eos)
{
	struct sb c = { 0 };
	if (sys) {
		sb_str(&c, "<<SYS>>\n");
		sb_put(&c, sys->text, sys->len);
		sb_str(&c, "\n<</SYS>>\n\n");
	}
	sb_put(&c, text, len);
	if (c.oom)
		b->oom = 1;
	if (role == CHAT_ASSISTANT) {
		sb_str(b, " ");
		sb_trimmed(b, c.p, c.n);
		sb_str(b, " ");
		sb_str(b, eos);
	} else {
		/* a later system turn is shown as a user turn (the reference refuses it) */
		sb_str(b, bos);
		sb_str(b, "[INST] ");
		sb_trimmed(b, c.p, c.n);
		sb_str(b, " [/INST]");
	}
	free(c.p);
}

static void render_llama2(struct sb *b, const chat_msg_t *m, int n, const char *bos, const char *eos)
{
	int i = 0;
	const chat_msg_t *sys = NULL;
	if (m[0].role == CHAT_SYSTEM) {
		sys = &m[0];
		i = 1;
	}
	if (sys && i == n)
		llama2_turn(b, CHAT_USER, sys, "", 0, bos, eos);
	for (int first = 1; i < n; i++, first = 0)
		llama2_turn(b, m[i].role, first ? sys : NULL, m[i].text, m[i].len, bos, eos);
}

/* Mistral (v0.1/v0.2 Instruct): no system role; a system text is put before
 * the first user text. */
static void render_mistral(struct sb *b, const chat_msg_t *m, int n, const char *bos, const char *eos)
{
	sb_str(b, bos);
	int i = 0;
	const chat_msg_t *sys = NULL;
	if (m[0].role == CHAT_SYSTEM) {
		sys = &m[0];
		i = 1;
	}
	int first_user = 1;
	for (; i < n; i++) {
		if (m[i].role == CHAT_ASSISTANT) {
			sb_put(b, m[i].text, m[i].len);
			sb_str(b, eos);
			continue;
		}
		sb_str(b, "[INST] ");
		if (first_user && sys) {
			sb_put(b, sys->text, sys->len);
			sb_str(b, "\n\n");
		}
		first_user = 0;
		sb_put(b, m[i].text, m[i].len);
		sb_str(b, " [/INST]");
	}
	if (sys && first_user) {
		/* nothing took the system text: a turn of its own */
		sb_str(b, "[INST] ");
		sb_put(b, sys->text, sys->len);
		sb_str(b, " [/INST]");
	}
}

static void render_plain(struct sb *b, const chat_msg_t *m, int n, int add_gen)
{
	for (int i = 0; i < n; i++) {
		if (m[i].role == CHAT_SYSTEM) {
			sb_put(b, m[i].text, m[i].len);
			sb_str(b, "\n\n");
		} else {
			sb_str(b, m[i].role == CHAT_USER ? "User: " : "Assistant: ");
			sb_put(b, m[i].text, m[i].len);
			sb_str(b, "\n");
		}
	}
	if (add_gen)
		sb_str(b, "Assistant:");
}

int chat_render(const chat_tmpl_t *t, const chat_msg_t *msgs, int n, int add_gen, const char *bos, const char *eos,
		char **out, size_t *out_len, err_msg_t *e)
{
	*out = NULL;
	*out_len = 0;
	if (!msgs || n < 1)
		return err_set(e, ERR_INVAL, "a chat needs at least one message");
	if (n > CHAT_MAX_MSGS)
		return err_set(e, ERR_INVAL, "%d messages, at most %d are accepted", n, CHAT_MAX_MSGS);
	for (int i = 0; i < n; i++)
		if (msgs[i].role < CHAT_SYSTEM || msgs[i].role > CHAT_ASSISTANT || (!msgs[i].text && msgs[i].len))
			return err_set(e, ERR_INVAL, "message %d: bad role or text", i);
	if (!bos)
		bos = "";
	if (!eos)
		eos = "";
	struct sb b = { 0 };
	switch (t->family) {
	case CHAT_LLAMA3: render_llama3(&b, msgs, n, add_gen, bos); break;
	case CHAT_CHATML: render_chatml(&b, t, msgs, n, add_gen); break;
	case CHAT_ZEPHYR: render_zephyr(&b, msgs, n, add_gen, eos); break;
	case CHAT_LLAMA2: render_llama2(&b, msgs, n, bos, eos); break;
	case CHAT_MISTRAL: render_mistral(&b, msgs, n, bos, eos); break;
	default: render_plain(&b, msgs, n, add_gen); break;
	}
	sb_put(&b, "", 0);
	if (!b.oom && !b.p) {
		b.p = calloc(1, 1);
		b.oom = !b.p;
	}
	if (b.oom) {
		free(b.p);
		return err_set(e, ERR_NOMEM, "out of memory rendering the chat");
	}
	*out = b.p;
	*out_len = b.n;
	return 0;
}

/* The text of a special token, NUL terminated into buf ("" when absent). */
static const char *tok_text(const vocab_t *v, int32_t id, char *buf, size_t cap)
{
	size_t n = 0;
	const char *s = id >= 0 ? vocab_token_text(v, id, &n) : NULL;
	if (!s || n >= cap)
		n = 0;
	if (n)
		memcpy(buf, s, n);
	buf[n] = 0;
	return buf;
}

int chat_tokenize(const chat_tmpl_t *t, const vocab_t *v, const chat_msg_t *msgs, int n, int32_t **toks,
		  size_t *n_toks, err_msg_t *e)
{
	*toks = NULL;
	*n_toks = 0;
	char bos[128], eos[128];
	tok_text(v, vocab_bos(v), bos, sizeof(bos));
	tok_text(v, vocab_eos(v), eos, sizeof(eos));
	char *text;
	size_t len;
	int r = chat_render(t, msgs, n, 1, bos, eos, &text, &len, e);
	if (r)
		return r;
	/* The tokenizer adds BOS itself: do not give it a second one. */
	const char *p = text;
	size_t bl = strlen(bos);
	if (vocab_adds_bos(v) && bl && len >= bl && !memcmp(p, bos, bl)) {
		p += bl;
		len -= bl;
	}
	size_t cap = len + 16, got = 0;
	int32_t *out = malloc(sizeof(int32_t) * cap);
	if (!out) {
		free(text);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	r = vocab_tokenize(v, p, len, 1, 1, out, cap, &got);
	if (r == ERR_FULL) {
		int32_t *bigger = realloc(out, sizeof(int32_t) * got);
		if (!bigger) {
			r = ERR_NOMEM;
		} else {
			out = bigger;
			cap = got;
			r = vocab_tokenize(v, p, len, 1, 1, out, cap, &got);
		}
	}
	free(text);
	if (r) {
		free(out);
		return err_set(e, r, "tokenizing the chat failed (%s)", err_str(r));
	}
	*toks = out;
	*n_toks = got;
	return 0;
}

int chat_stop_texts(const chat_tmpl_t *t, const char **out)
{
	switch (t->family) {
	case CHAT_LLAMA3: out[0] = "<|eot_id|>"; return 1;
	case CHAT_CHATML: out[0] = "<|im_end|>"; return 1;
	case CHAT_PLAIN: out[0] = "\nUser:"; return 1;
	default: return 0;   /* EOS: a control token, stopped on as a token */
	}
}

/* ---- stop strings */

void chat_stop_init(chat_stop_t *s)
{
	s->n = 0;
	s->n_held = 0;
	s->hit = 0;
}

int chat_stop_add(chat_stop_t *s, const char *text, size_t len)
{
	if (len < 1 || len >= CHAT_STOP_MAX_LEN)
		return ERR_RANGE;
	for (int i = 0; i < s->n; i++)
		if (s->lens[i] == len && !memcmp(s->stops[i], text, len))
			return 0;
	if (s->n >= CHAT_STOP_MAX)
		return ERR_FULL;
	memcpy(s->stops[s->n], text, len);
	s->lens[s->n++] = len;
	return 0;
}

/* Length of the longest suffix of buf[0..n) that is a proper prefix of some
 * stop string (what must be held back). */
static size_t held_suffix(const chat_stop_t *s, const char *buf, size_t n)
{
	size_t best = 0;
	for (int i = 0; i < s->n; i++) {
		size_t maxk = s->lens[i] - 1 < n ? s->lens[i] - 1 : n;
		for (size_t k = maxk; k > best; k--)
			if (!memcmp(buf + n - k, s->stops[i], k)) {
				best = k;
				break;
			}
	}
	return best;
}

size_t chat_stop_push(chat_stop_t *s, const char *text, size_t len, char *out)
{
	if (s->hit)
		return 0;
	/* out is the work area: held text, then the new text. */
	size_t n = s->n_held;
	memcpy(out, s->held, n);
	memcpy(out + n, text, len);
	n += len;
	if (s->n == 0) {
		s->n_held = 0;
		return n;
	}
	/* the earliest stop string wins */
	size_t first = n;
	for (int i = 0; i < s->n; i++) {
		size_t L = s->lens[i];
		for (size_t p = 0; p + L <= n && p < first; p++)
			if (out[p] == s->stops[i][0] && !memcmp(out + p, s->stops[i], L)) {
				first = p;
				break;
			}
	}
	if (first < n) {
		s->hit = 1;
		s->n_held = 0;
		return first;
	}
	size_t k = held_suffix(s, out, n);
	memcpy(s->held, out + n - k, k);
	s->n_held = k;
	return n - k;
}

size_t chat_stop_flush(chat_stop_t *s, char *out)
{
	if (s->hit)
		return 0;
	size_t n = s->n_held;
	memcpy(out, s->held, n);
	s->n_held = 0;
	return n;
}
