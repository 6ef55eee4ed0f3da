/* vocab_pretok.c - the BPE pre-tokenizers: split text into the words that
 * byte-level BPE then merges separately.
 *
 * Hugging Face describes each pre-tokenizer as a regular expression (or a
 * sequence of them, each splitting the pieces the previous one left). Rather
 * than carrying a regex engine, each expression is written out here as a
 * small scanner over codepoint classes, following the expression's
 * alternatives in order, the way a backtracking engine would try them. The
 * results equal llama.cpp's (its own hand-written scanners for the llama-3
 * and GPT-2 expressions, std::regex over "collapsed" category bytes for the
 * others). A piece that no alternative matches between two matches is kept
 * as a word of its own, as llama.cpp does.
 *
 * Classes: \p{L}, \p{N}, \p{P} are Unicode general categories; \s is the
 * White_Space property (unicode_table.c). The contractions of the llama-3
 * and Qwen2 expressions are case-insensitive; only ASCII letters lowercase to
 * the letters involved (U+212A KELVIN SIGN lowercases to 'k', not used).
 */
#include "model/vocab_impl.h"

/* Class of a position past the end of the piece being split. */
#define CLS_END 7
#define CP_END 0xFFFFFFFFu

typedef struct scan {
	const uint32_t *c;   /* packed codepoints (VOCAB_CP) */
	size_t end;          /* the piece is c[.. end) */
	uint32_t *out;       /* word ends */
	size_t n_out;
} scan_t;

static inline uint32_t cls_at(const scan_t *s, size_t i)
{
	return i < s->end ? VOCAB_CP_CLS(s->c[i]) : CLS_END;
}

static inline uint32_t cp_at(const scan_t *s, size_t i)
{
	return i < s->end ? VOCAB_CP_VAL(s->c[i]) : CP_END;
}

static inline void word_end(scan_t *s, size_t e)
{
	s->out[s->n_out++] = (uint32_t)e;
}

static inline uint32_t ascii_lower(uint32_t c)
{
	return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* 's 't 're 've 'm 'll 'd at pos (an apostrophe): returns the length matched,
 * 0 if none. */
static size_t contraction(const scan_t *s, size_t pos, int any_case)
{
	if (pos + 1 >= s->end)
		return 0;
	uint32_t c1 = cp_at(s, pos + 1);
	if (any_case)
		c1 = ascii_lower(c1);
	if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
		return 2;
	if (pos + 2 >= s->end)
		return 0;
	uint32_t c2 = cp_at(s, pos + 2);
	if (any_case)
		c2 = ascii_lower(c2);
	if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
		return 3;
	return 0;
}

/* Neither \s, \p{L} nor \p{N} (and inside the piece). */
static inline int is_rest(uint32_t cls)
{
	return cls == UNICODE_OTHER || cls == UNICODE_PUNCT;
}

/* llama-3 (max_digits 3) and Qwen2 (max_digits 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+              */
static void split_llama3(scan_t *s, size_t a, size_t max_digits)
{
	size_t pos = a;
	while (pos < s->end) {
		uint32_t cp = cp_at(s, pos), cl = cls_at(s, pos);
		if (cp == '\'') {
			size_t k = contraction(s, pos, 1);
			if (k) {
				pos += k;
				word_end(s, pos);
				continue;
			}
		}
		if (!(cp == '\r' || cp == '\n' || cl == UNICODE_NUMBER) &&
		    (cl == UNICODE_LETTER || cls_at(s, pos + 1) == UNICODE_LETTER)) {
			pos++;   /* the letter, or the one-character prefix */
			while (cls_at(s, pos) == UNICODE_LETTER)
				pos++;
			word_end(s, pos);
			continue;
		}
		if (cl == UNICODE_NUMBER) {
			size_t start = pos;
			while (cls_at(s, pos) == UNICODE_NUMBER && pos - start < max_digits)
				pos++;
			word_end(s, pos);
			continue;
		}
		uint32_t cl2 = cp == ' ' ? cls_at(s, pos + 1) : cl;
		if (is_rest(cl2)) {
			pos += cp == ' ';
			while (is_rest(cls_at(s, pos)))
				pos++;
			while (cp_at(s, pos) == '\r' || cp_at(s, pos) == '\n')
				pos++;
			word_end(s, pos);
			continue;
		}
		size_t nws = 0, last_rn = 0;
		while (cls_at(s, pos + nws) == UNICODE_SPACE) {
			uint32_t c = cp_at(s, pos + nws);
			if (c == '\r' || c == '\n')
				last_rn = pos + nws + 1;
			nws++;
		}
		if (last_rn) {                       /* \s*[\r\n]+ */
			pos = last_rn;
		} else if (nws > 1 && pos + nws < s->end) {
			pos += nws - 1;              /* \s+(?!\S): leave one for the next word */
		} else if (nws > 0) {
			pos += nws;                  /* \s+ */
		} else {
			pos++;                       /* nothing matches: one codepoint */
		}
		word_end(s, pos);
	}
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (llama.cpp lists it without the final \s+; the whitespace it would match
 * is then kept as an unmatched piece, which splits the same way). */
static void split_gpt2(scan_t *s, size_t a)
{
	size_t pos = a;
	while (pos < s->end) {
		uint32_t cp = cp_at(s, pos), cl = cls_at(s, pos);
		if (cp == '\'') {
			size_t k = contraction(s, pos, 0);
			if (k) {
				pos += k;
				word_end(s, pos);
				continue;
			}
		}
		uint32_t cl2 = cp == ' ' ? cls_at(s, pos + 1) : cl;
		if (cl2 == UNICODE_LETTER || cl2 == UNICODE_NUMBER) {
			pos += cp == ' ';
			while (cls_at(s, pos) == cl2)
				pos++;
			word_end(s, pos);
			continue;
		}
		if (is_rest(cl2)) {
			pos += cp == ' ';
			while (is_rest(cls_at(s, pos)))
				pos++;
			word_end(s, pos);
			continue;
		}
		size_t nws = 0;
		while (cls_at(s, pos + nws) == UNICODE_SPACE)
			nws++;
		if (nws > 1 && pos + nws < s->end)
			pos += nws - 1;
		else if (nws > 0)
			pos += nws;
		else
			pos++;
		word_end(s, pos);
	}
}

enum run_pred {
	RUN_NUMBER,          /* \p{N} */
	RUN_ASCII_DIGIT,     /* [0-9] */
	RUN_PUNCT_DEFAULT,   /* [\p{P}\$\+<=>\^~\|] */
	RUN_PUNCT_FALCON,    /* [\p{P}\$\+<=>\^~\|`] */
};

static int run_match(enum run_pred p, uint32_t x)
{
	uint32_t cp = VOCAB_CP_VAL(x), cl = VOCAB_CP_CLS(x);
	switch (p) {
	case RUN_NUMBER:
		return cl == UNICODE_NUMBER;
	case RUN_ASCII_DIGIT:
		return cp >= '0' && cp <= '9';
	case RUN_PUNCT_FALCON:
		if (cp == '`')
			return 1;
		/* fall through */
	case RUN_PUNCT_DEFAULT:
		return cl == UNICODE_PUNCT || cp == '$' || cp == '+' || cp == '<' || cp == '=' ||
		       cp == '>' || cp == '^' || cp == '~' || cp == '|';
	}
	return 0;
}

/* A single-class expression X{min,max} (max 0 = unbounded): every match is a
 * word, and so is every stretch between matches. */
static void split_runs(scan_t *s, size_t a, enum run_pred p, size_t min, size_t max)
{
	size_t pos = a, gap = a;
	while (pos < s->end) {
		size_t e = pos;
		while (e < s->end && (max == 0 || e - pos < max) && run_match(p, s->c[e]))
			e++;
		if (e > pos && e - pos >= min) {
			if (gap < pos)
				word_end(s, pos);
			word_end(s, e);
			pos = gap = e;
		} else {
			pos++;
		}
	}
	if (gap < s->end)
		word_end(s, s->end);
}

enum pass {
	PASS_LLAMA3, PASS_QWEN2, PASS_GPT2,
	PASS_NUMBER_EACH,    /* \p{N} */
	PASS_NUMBER_RUNS,    /* \p{N}+ */
	PASS_DIGIT3,         /* [0-9][0-9][0-9] */
	PASS_PUNCT_DEFAULT,  /* [\p{P}\$\+<=>\^~\|]+ */
	PASS_PUNCT_FALCON,   /* [\p{P}\$\+<=>\^~\|`]+ */
	PASS_END,
};

static const enum pass *passes_of(enum vocab__pre pre)
{
	static const enum pass llama3[] = { PASS_LLAMA3, PASS_END };
	static const enum pass qwen2[] = { PASS_QWEN2, PASS_END };
	static const enum pass gpt2[] = { PASS_GPT2, PASS_END };
	static const enum pass smollm[] = { PASS_NUMBER_EACH, PASS_GPT2, PASS_END };
	static const enum pass falcon[] = { PASS_PUNCT_FALCON, PASS_GPT2, PASS_DIGIT3, PASS_END };
	static const enum pass deflt[] = { PASS_PUNCT_DEFAULT, PASS_GPT2, PASS_NUMBER_RUNS, PASS_DIGIT3, PASS_END };
	switch (pre) {
	case VOCAB_PRE_LLAMA3: return llama3;
	case VOCAB_PRE_QWEN2: return qwen2;
	case VOCAB_PRE_GPT2: return gpt2;
	case VOCAB_PRE_SMOLLM: return smollm;
	case VOCAB_PRE_FALCON: return falcon;
	case VOCAB_PRE_DEFAULT:
	case VOCAB_PRE_NONE:
		break;
	}
	return deflt;
}

static void run_pass(scan_t *s, enum pass p, size_t a)
{
	switch (p) {
	case PASS_LLAMA3: split_llama3(s, a, 3); break;
	case PASS_QWEN2: split_llama3(s, a, 1); break;
	case PASS_GPT2: split_gpt2(s, a); break;
	case PASS_NUMBER_EACH: split_runs(s, a, RUN_NUMBER, 1, 1); break;
	case PASS_NUMBER_RUNS: split_runs(s, a, RUN_NUMBER, 1, 0); break;
	case PASS_DIGIT3: split_runs(s, a, RUN_ASCII_DIGIT, 3, 3); break;
	case PASS_PUNCT_DEFAULT: split_runs(s, a, RUN_PUNCT_DEFAULT, 1, 0); break;
	case PASS_PUNCT_FALCON: split_runs(s, a, RUN_PUNCT_FALCON, 1, 0); break;
	case PASS_END: break;
	}
}

size_t vocab__pretokenize(enum vocab__pre pre, const uint32_t *cps, size_t n, uint32_t *ends, uint32_t *tmp)
{
	if (n == 0)
		return 0;
	const enum pass *ps = passes_of(pre);
	size_t n_pass = 0;
	while (ps[n_pass] != PASS_END)
		n_pass++;
	/* Alternate between the two buffers so that the last pass writes ends. */
	uint32_t *cur = (n_pass % 2) ? tmp : ends, *nxt = (n_pass % 2) ? ends : tmp;
	cur[0] = (uint32_t)n;
	size_t n_cur = 1;
	for (size_t k = 0; k < n_pass; k++) {
		scan_t s = { .c = cps, .out = nxt, .n_out = 0 };
		size_t a = 0;
		for (size_t i = 0; i < n_cur; i++) {
			s.end = cur[i];
			run_pass(&s, ps[k], a);
			a = cur[i];
		}
		n_cur = s.n_out;
		uint32_t *t = cur;
		cur = nxt;
		nxt = t;
	}
	return n_cur;
}

int vocab__pre_lookup(const char *name, size_t len, enum vocab__pre *pre, const char **canon,
		      int *ignore_merges, int *add_bos)
{
	static const struct {
		const char *name;
		enum vocab__pre pre;
		int ignore_merges, add_bos;
	} tab[] = {
		{ "default", VOCAB_PRE_DEFAULT, 0, -1 },
		{ "llama3", VOCAB_PRE_LLAMA3, 1, 1 },
		{ "llama-v3", VOCAB_PRE_LLAMA3, 1, 1 },
		{ "llama-bpe", VOCAB_PRE_LLAMA3, 1, 1 },
		{ "falcon3", VOCAB_PRE_LLAMA3, 1, 1 },
		{ "dbrx", VOCAB_PRE_LLAMA3, 0, -1 },
		{ "smaug-bpe", VOCAB_PRE_LLAMA3, 0, -1 },
		{ "qwen2", VOCAB_PRE_QWEN2, 0, -1 },
		{ "stablelm2", VOCAB_PRE_QWEN2, 0, -1 },
		{ "megrez", VOCAB_PRE_QWEN2, 0, -1 },
		{ "gpt-2", VOCAB_PRE_GPT2, 0, -1 },
		{ "gpt2", VOCAB_PRE_GPT2, 0, -1 },
		{ "phi-2", VOCAB_PRE_GPT2, 0, -1 },
		{ "roberta-bpe", VOCAB_PRE_GPT2, 0, -1 },
		{ "mpt", VOCAB_PRE_GPT2, 0, -1 },
		{ "olmo", VOCAB_PRE_GPT2, 0, -1 },
		{ "jais", VOCAB_PRE_GPT2, 0, -1 },
		{ "smollm", VOCAB_PRE_SMOLLM, 0, -1 },
		{ "starcoder", VOCAB_PRE_SMOLLM, 0, -1 },
		{ "refact", VOCAB_PRE_SMOLLM, 0, -1 },
		{ "command-r", VOCAB_PRE_SMOLLM, 0, -1 },
		{ "codeshell", VOCAB_PRE_SMOLLM, 0, -1 },
		{ "exaone", VOCAB_PRE_SMOLLM, 0, -1 },
		{ "minerva-7b", VOCAB_PRE_SMOLLM, 0, -1 },
		{ "falcon", VOCAB_PRE_FALCON, 0, -1 },
	};
	static const char *const canon_name[] = {
		[VOCAB_PRE_NONE] = "", [VOCAB_PRE_DEFAULT] = "default", [VOCAB_PRE_LLAMA3] = "llama3",
		[VOCAB_PRE_QWEN2] = "qwen2", [VOCAB_PRE_GPT2] = "gpt2", [VOCAB_PRE_SMOLLM] = "smollm",
		[VOCAB_PRE_FALCON] = "falcon",
	};
	if (!name || len == 0) {
		name = "default";
		len = 7;
	}
	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		if (strlen(tab[i].name) == len && memcmp(tab[i].name, name, len) == 0) {
			*pre = tab[i].pre;
			*canon = canon_name[tab[i].pre];
			*ignore_merges = tab[i].ignore_merges;
			*add_bos = tab[i].add_bos;
			return 0;
		}
	}
	return ERR_UNSUPPORTED;
}
