/* vocab_impl.h - internals shared by the vocab_*.c files (not a public
 * interface: names here have the vocab__ prefix). */
#ifndef COLONY_MODEL_VOCAB_IMPL_H
#define COLONY_MODEL_VOCAB_IMPL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/unicode.h"
#include "model/vocab.h"

/* Longest text vocab_tokenize accepts (the SPM escape can triple it and
 * positions are 32-bit). */
#define VOCAB_MAX_TEXT (1u << 29)

/* BPE pre-tokenizers (vocab_pretok.c). */
enum vocab__pre {
	VOCAB_PRE_NONE = 0,    /* SPM: no pre-tokenizer */
	VOCAB_PRE_DEFAULT,     /* llama.cpp's fallback for "default" or no name */
	VOCAB_PRE_LLAMA3,      /* llama-3 regex, digits in groups of up to 3 */
	VOCAB_PRE_QWEN2,       /* the same with single digits */
	VOCAB_PRE_GPT2,        /* GPT-2's regex */
	VOCAB_PRE_SMOLLM,      /* single digits, then GPT-2's regex */
	VOCAB_PRE_FALCON,      /* punctuation runs, GPT-2's regex, digit triples */
};

/* ---- interned strings: the token texts, and for BPE the merge parts and
 * merge results that are not tokens. One pool, one open-addressing table. */
typedef struct vocab__str {
	uint32_t off, len;   /* into pool */
	uint32_t hash;
	int32_t tok;         /* the token with this text, or -1 */
} vocab__str_t;

typedef struct vocab__strtab {
	char *pool;
	size_t pool_len, pool_cap;
	vocab__str_t *s;
	uint32_t n, cap;
	uint64_t *slot;      /* (hash << 32) | (entry index + 1); 0 = empty */
	uint32_t mask;
} vocab__strtab_t;

uint32_t vocab__hash(const void *p, size_t n);
/* Index of the entry with text p[0..n), or -1. */
int32_t vocab__str_find(const vocab__strtab_t *t, const void *p, size_t n);
/* Makes room for n_more entries without rehashing. 0 or ERR_NOMEM. */
int vocab__str_presize(vocab__strtab_t *t, size_t n_more);
/* Adds a text known to be absent; returns its index or ERR_NOMEM/ERR_RANGE. */
int32_t vocab__str_add(vocab__strtab_t *t, const void *p, size_t n, int32_t tok);

/* One special token, in matching priority order (longer first, then id). */
typedef struct vocab__special {
	int32_t id;
	uint32_t len;
	uint32_t off;        /* text in the string pool */
	uint8_t always;      /* USER_DEFINED: matched even without parse_special */
} vocab__special_t;

/* Merge table entry: (left, right) string ids -> rank and merged string id. */
typedef struct vocab__merge {
	uint64_t key;        /* (left << 32) | right, UINT64_MAX = empty slot */
	int32_t rank;
	int32_t res;
} vocab__merge_t;

#define VOCAB_TF_EOG 1

struct vocab {
	enum vocab_type type;
	enum vocab__pre pre;
	const char *pre_name;
	int32_t n_tokens;

	vocab__strtab_t st;
	uint32_t *tok_off, *tok_len;   /* token text in st.pool */
	float *scores;
	uint8_t *types;                /* enum vocab_ttype */
	uint8_t *tflags;               /* VOCAB_TF_* */
	size_t max_token_len;

	char *piece_pool;
	uint32_t *piece_off;           /* n_tokens + 1 offsets */
	size_t max_piece;

	int32_t bos, eos, unk, pad, eot, eom;
	int add_bos, add_eos, add_space_prefix, ignore_merges;
	/* SPM: no token has U+2581 right after another character, so words
	 * (a marker run and what follows up to the next marker run) merge
	 * independently (vocab_spm.c). */
	int spm_split_words;

	/* SPM: the token a byte falls back to (<0xNN>, else the 1-byte text,
	 * else unk), or -1. */
	int32_t byte_tok[256];

	/* BPE */
	uint8_t byte_enc[256][2];      /* UTF-8 of each byte's GPT-2 codepoint */
	uint8_t byte_enc_len[256];
	int32_t byte_str[256];         /* string id of that encoding, or -1 */
	int32_t single_tok[256];       /* token whose text is the lone byte b, or -1 */
	vocab__merge_t *merges;
	uint32_t merge_mask;

	/* Special tokens and a byte trie over their texts. */
	vocab__special_t *spec;
	uint32_t n_spec;
	uint8_t spec_first[256];       /* bit 1: some special starts with this byte; bit 2: some "always" one */
	uint64_t *trie_key;            /* (node << 8) | byte, UINT64_MAX = empty */
	int32_t *trie_child;
	uint32_t trie_mask;
	int32_t *trie_term;            /* node -> index into spec, or -1 */
	uint32_t n_nodes;
};

/* Growable scratch memory for one tokenize call. */
typedef struct vocab__buf {
	void *p;
	size_t cap;          /* bytes */
} vocab__buf_t;

/* Makes b hold at least `bytes`; old contents are kept. 0 or ERR_NOMEM. */
int vocab__reserve(vocab__buf_t *b, size_t bytes) WUR;

typedef struct vocab__work {
	vocab__buf_t text;     /* SPM escaped text; BPE encoded word */
	vocab__buf_t sym;      /* symbols */
	vocab__buf_t heap;     /* merge queue */
	vocab__buf_t cps;      /* BPE: codepoint offsets */
	vocab__buf_t cls;      /* BPE: codepoint values with class */
	vocab__buf_t ends[2];  /* BPE: word boundaries, two generations */
	vocab__buf_t frag;     /* special-token fragments */
	vocab__buf_t seen;     /* special tokens present in the text */
} vocab__work_t;

void vocab__work_free(vocab__work_t *w);

/* Token output: counts past cap so the caller learns the size needed. */
typedef struct vocab__out {
	int32_t *out;
	size_t cap, n;
} vocab__out_t;

static inline void vocab__emit(vocab__out_t *o, int32_t id)
{
	if (o->n < o->cap)
		o->out[o->n] = id;
	o->n++;
}

static inline int32_t vocab__find_tok(const vocab_t *v, const void *p, size_t n)
{
	int32_t s = vocab__str_find(&v->st, p, n);
	return s < 0 ? -1 : v->st.s[s].tok;
}

/* vocab_spm.c: tokenizes escaped text (spaces already U+2581). */
int vocab__spm_tokenize(const vocab_t *v, vocab__work_t *w, const uint8_t *t, size_t n, vocab__out_t *o) WUR;
/* vocab_bpe.c: pre-tokenizes and merges one fragment of raw text. */
int vocab__bpe_tokenize(const vocab_t *v, vocab__work_t *w, const uint8_t *t, size_t n, vocab__out_t *o) WUR;

/* vocab_pretok.c */
/* Name -> pre-tokenizer; sets *ignore_merges and *add_bos (-1: no opinion).
 * Returns 0 or ERR_UNSUPPORTED. */
int vocab__pre_lookup(const char *name, size_t len, enum vocab__pre *pre, const char **canon,
		      int *ignore_merges, int *add_bos) WUR;

/* A codepoint of the text being pre-tokenized: value and class packed. */
#define VOCAB_CP(v, c) (((uint32_t)(v) << 3) | (uint32_t)(c))
#define VOCAB_CP_VAL(x) ((x) >> 3)
#define VOCAB_CP_CLS(x) ((x) & 7)

/* Splits cps[0..n) into words; writes the end index of each word (in
 * codepoints, increasing, the last = n) to ends, which must hold n entries,
 * using tmp (also n entries) as scratch. Returns the number of words. */
size_t vocab__pretokenize(enum vocab__pre pre, const uint32_t *cps, size_t n, uint32_t *ends, uint32_t *tmp);

#endif
