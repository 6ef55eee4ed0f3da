/* chat.h - chat templates: a list of messages into one prompt, and the text
 * that ends an assistant turn.
 *
 * GGUF files carry their chat format as a Jinja template
 * (tokenizer.chat_template). We do not run Jinja: the common families are
 * recognised by their characteristic markers and rendered by hand, exactly
 * as their reference templates render (with trim_blocks, as Hugging Face
 * does):
 *
 *   family   recognised by                        one turn
 *   llama3   <|start_header_id|>                  <|start_header_id|>ROLE<|end_header_id|>\n\nTEXT<|eot_id|>
 *                                                 (BOS first; TEXT trimmed)
 *   chatml   <|im_start|>                         <|im_start|>ROLE\nTEXT<|im_end|>\n
 *                                                 (Qwen: a default system turn when the
 *                                                 template holds one and none is given)
 *   llama2   [INST] and <<SYS>>                   BOS[INST] TEXT [/INST] for a user turn,
 *                                                 " TEXT EOS" for an assistant turn; the
 *                                                 system text goes into the first user turn
 *                                                 as <<SYS>>\nSYS\n<</SYS>>\n\n
 *   mistral  [INST] without <<SYS>>               BOS once, then [INST] TEXT [/INST] and
 *                                                 TEXT EOS; a system text is put before the
 *                                                 first user text, separated by \n\n
 *   zephyr   <|user|>                             <|ROLE|>\nTEXT EOS\n
 *   plain    anything else, or no template        the documented fallback:
 *                                                 "SYSTEM\n\n" once, then "User: TEXT\n" and
 *                                                 "Assistant: TEXT\n"; generation prompt
 *                                                 "Assistant:"; stop text "\nUser:"
 *
 * The generation prompt (what opens the assistant's turn) is added for
 * llama3 (<|start_header_id|>assistant<|end_header_id|>\n\n), chatml
 * (<|im_start|>assistant\n), zephyr (<|assistant|>\n) and plain; llama2 and
 * mistral have none (the turn opens after [/INST]).
 *
 * BOS and EOS are the texts of the vocabulary's tokens, placed where the
 * reference template places bos_token and eos_token; chat_tokenize drops a
 * leading BOS text when the tokenizer adds BOS itself, and parses special
 * tokens, so a BOS is never doubled. Generation stops on the vocabulary's
 * end-of-generation tokens (vocab_is_eog: EOS, <|eot_id|>, <|im_end|>, ...)
 * and, as text, on chat_stop_texts.
 *
 * Pure: no I/O, no globals; every function may be called from many threads.
 */
#ifndef COLONY_INFER_CHAT_H
#define COLONY_INFER_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/vocab.h"

enum chat_family {
	CHAT_PLAIN = 0,    /* fallback */
	CHAT_LLAMA2,
	CHAT_LLAMA3,
	CHAT_CHATML,
	CHAT_ZEPHYR,
	CHAT_MISTRAL,
};

enum chat_role { CHAT_SYSTEM = 0, CHAT_USER = 1, CHAT_ASSISTANT = 2 };

#define CHAT_MAX_DEFAULT_SYSTEM 512
#define CHAT_MAX_MSGS 4096
#define CHAT_MAX_STOP_TEXTS 4

typedef struct chat_msg {
	enum chat_role role;
	const char *text;          /* borrowed; any bytes */
	size_t len;
} chat_msg_t;

typedef struct chat_tmpl {
	enum chat_family family;
	char default_system[CHAT_MAX_DEFAULT_SYSTEM];   /* chatml: used when no system turn is given; "" none */
} chat_tmpl_t;

/* Recognises the family of a Jinja template (tmpl may be NULL: plain). */
void chat_tmpl_detect(chat_tmpl_t *t, const char *tmpl, size_t len);
/* From a GGUF's tokenizer.chat_template (plain when absent or not a string). */
void chat_tmpl_from_gguf(chat_tmpl_t *t, const gguf_t *g);
const char *chat_family_name(enum chat_family f);
/* "system", "user", "assistant" (and "developer" as system) into *r; ERR_INVAL otherwise. */
int chat_role_parse(const char *s, size_t len, enum chat_role *r) WUR;

/* Renders msgs[0..n) (n >= 1, at most CHAT_MAX_MSGS) with the generation
 * prompt when add_gen. bos/eos: the texts standing for bos_token and
 * eos_token ("" or NULL when the vocabulary has none). *out is malloc'd, NUL
 * terminated (the caller frees it); *out_len its length. ERR_INVAL (no
 * messages, too many), ERR_NOMEM. */
int chat_render(const chat_tmpl_t *t, const chat_msg_t *msgs, int n, int add_gen, const char *bos,
		const char *eos, char **out, size_t *out_len, err_msg_t *e) WUR;

/* Renders with v's BOS and EOS texts and tokenizes (BOS added as the
 * vocabulary says, special tokens parsed): the one path from messages to
 * prompt tokens, shared by `colony run --chat` and the HTTP gateway.
 * *toks is malloc'd (the caller frees it). */
int chat_tokenize(const chat_tmpl_t *t, const vocab_t *v, const chat_msg_t *msgs, int n, int32_t **toks,
		  size_t *n_toks, err_msg_t *e) WUR;

/* Texts that end the assistant's turn, to stop on when the model writes them
 * as plain text rather than as their special token. Returns their count
 * (at most CHAT_MAX_STOP_TEXTS); out[i] are static strings. */
int chat_stop_texts(const chat_tmpl_t *t, const char **out);

/* ---- stop strings over streamed text ----------------------------------- */

#define CHAT_STOP_MAX 8          /* stop strings per generation */
#define CHAT_STOP_MAX_LEN 1024   /* bytes of one stop string */

/* Holds back text that may be the start of a stop string, so a stop that
 * spans token boundaries is never partly shown. Caller memory. */
typedef struct chat_stop {
	char stops[CHAT_STOP_MAX][CHAT_STOP_MAX_LEN];
	size_t lens[CHAT_STOP_MAX];
	int n;
	char held[CHAT_STOP_MAX_LEN];   /* text not shown yet: a prefix of some stop string */
	size_t n_held;
	int hit;                        /* a stop string was found: nothing more is shown */
} chat_stop_t;

void chat_stop_init(chat_stop_t *s);
/* Adds a stop string (1..CHAT_STOP_MAX_LEN-1 bytes). ERR_FULL past
 * CHAT_STOP_MAX, ERR_RANGE for a bad length; the same string twice is kept once. */
int chat_stop_add(chat_stop_t *s, const char *text, size_t len) WUR;
/* Feeds text; writes what can be shown now to out (which must hold
 * len + CHAT_STOP_MAX_LEN bytes) and returns its length. A stop string is
 * found when its last byte arrives (generation ends there); the text before
 * the earliest-starting stop string complete at that point is shown, s->hit
 * is set, and every later push shows nothing. */
size_t chat_stop_push(chat_stop_t *s, const char *text, size_t len, char *out);
/* The end: what is held back is shown (it was not a stop after all). out
 * must hold CHAT_STOP_MAX_LEN bytes. */
size_t chat_stop_flush(chat_stop_t *s, char *out);

#endif
