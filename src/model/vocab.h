/* vocab.h - the tokenizers of Llama-family models, built from GGUF metadata.
 *
 * Two tokenizer models, both reproducing llama.cpp's results token for token:
 *   VOCAB_SPM  tokenizer.ggml.model "llama": SentencePiece-style BPE. Spaces
 *              become U+2581, a leading space marker is added, characters are
 *              merged pairwise by the score of the merged token, and whatever
 *              is left that is not a token falls back to <0xNN> byte tokens.
 *   VOCAB_BPE  tokenizer.ggml.model "gpt2": byte-level BPE. A pre-tokenizer
 *              chosen by tokenizer.ggml.pre splits the text into words (see
 *              vocab_pretok.c for the supported names), every byte is shown as
 *              a printable codepoint, and words are merged by merge rank.
 *
 * Special tokens: CONTROL and UNKNOWN tokens are recognised in the text only
 * when parse_special is set; USER_DEFINED tokens always (as llama.cpp and
 * Hugging Face do: they are "added tokens", not control). Longer tokens take
 * precedence; among equal lengths the lower id.
 *
 * Metadata is untrusted: loading checks every array length, id, type and
 * merge, and refuses what is wrong with ERR_FORMAT / ERR_RANGE /
 * ERR_UNSUPPORTED and a message; it never crashes. Token texts must be unique
 * (llama.cpp aborts on duplicates); empty texts are allowed but never match.
 *
 * A vocab_t is immutable after loading: every function taking a const
 * vocab_t * may be called from many threads at once. It owns copies of all
 * the strings it needs, so it outlives the gguf_t it was loaded from.
 */
#ifndef COLONY_MODEL_VOCAB_H
#define COLONY_MODEL_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/gguf.h"

typedef struct vocab vocab_t;

#define VOCAB_NONE (-1)                 /* "no such token" as an id */
#define VOCAB_ID_DEFAULT INT64_MIN      /* in vocab_desc_t: the model type's default */

enum vocab_type {
	VOCAB_SPM = 1,   /* "llama" */
	VOCAB_BPE = 2,   /* "gpt2" */
};

/* tokenizer.ggml.token_type values (the numbering llama.cpp writes). */
enum vocab_ttype {
	VOCAB_TT_UNDEFINED = 0,
	VOCAB_TT_NORMAL = 1,
	VOCAB_TT_UNKNOWN = 2,
	VOCAB_TT_CONTROL = 3,
	VOCAB_TT_USER_DEFINED = 4,
	VOCAB_TT_UNUSED = 5,
	VOCAB_TT_BYTE = 6,
};

/* A vocabulary as plain arrays (what the GGUF loader builds, and what tests
 * use directly). Everything is borrowed for the duration of the call only.
 * Start from vocab_desc_init(), which sets every optional field to "absent". */
typedef struct vocab_desc {
	enum vocab_type type;
	const char *pre;             /* BPE pre-tokenizer name; NULL means "default" */
	size_t n_tokens;
	const char *const *tokens;   /* token texts (any bytes) */
	const size_t *token_lens;    /* their lengths, or NULL: NUL-terminated */
	const float *scores;         /* or NULL: all 0 */
	const int32_t *types;        /* enum vocab_ttype, or NULL: all NORMAL */
	size_t n_merges;             /* BPE only: "left right" pairs, rank = index */
	const char *const *merges;
	const size_t *merge_lens;    /* or NULL: NUL-terminated */
	/* Ids: an id in [0, n_tokens), -1 for none, or VOCAB_ID_DEFAULT (SPM:
	 * bos 1, eos 2, unk 0 where they exist; otherwise none). */
	int64_t bos, eos, unk, pad, eot, eom;
	/* Flags: 0, 1, or -1 for the default (SPM: add BOS, space prefix;
	 * BPE: add BOS only with the llama-3 pre-tokenizers; never EOS). */
	int add_bos, add_eos, add_space_prefix;
} vocab_desc_t;

void vocab_desc_init(vocab_desc_t *d, enum vocab_type type);

/* Builds a vocabulary. On error returns a negative code, sets *out to NULL
 * and says why in *e. The result is freed with vocab_free(). */
int vocab_new_from_arrays(const vocab_desc_t *d, vocab_t **out, err_msg_t *e) WUR;

/* Builds a vocabulary from a GGUF file's tokenizer.ggml.* metadata
 * (model, pre, tokens, scores, token_type, merges, bos/eos/unknown/padding/
 * eot/eom _token_id, add_bos_token, add_eos_token, add_space_prefix).
 * Special ids stored as -1 or 0xFFFFFFFF mean "none". ERR_NOTFOUND if the
 * file has no tokenizer, ERR_UNSUPPORTED for other tokenizer models or
 * unknown pre-tokenizers. The vocab_t does not borrow from g. */
int vocab_new_from_gguf(const gguf_t *g, vocab_t **out, err_msg_t *e) WUR;

void vocab_free(vocab_t *v);   /* NULL is fine */

enum vocab_type vocab_get_type(const vocab_t *v);
const char *vocab_pre_name(const vocab_t *v);   /* canonical pre-tokenizer name; "" for SPM */
int32_t vocab_n_tokens(const vocab_t *v);
int32_t vocab_bos(const vocab_t *v);   /* VOCAB_NONE when absent */
int32_t vocab_eos(const vocab_t *v);
int32_t vocab_eot(const vocab_t *v);
int32_t vocab_unk(const vocab_t *v);
int32_t vocab_pad(const vocab_t *v);
int vocab_adds_bos(const vocab_t *v);
int vocab_adds_eos(const vocab_t *v);
/* End of generation: EOS, EOT, EOM, and control tokens whose text is one of
 * the usual end markers (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>,
 * <|endoftext|>, <|eom_id|>, <EOT>). */
int vocab_is_eog(const vocab_t *v, int32_t id);
/* Raw text of a token (borrowed, lives as long as v; not NUL-terminated),
 * or NULL for an id out of range. */
const char *vocab_token_text(const vocab_t *v, int32_t id, size_t *len);
float vocab_token_score(const vocab_t *v, int32_t id);           /* 0 if out of range */
enum vocab_ttype vocab_token_type(const vocab_t *v, int32_t id); /* UNDEFINED if out of range */
/* The token whose text is exactly s[0..n), or VOCAB_NONE. */
int32_t vocab_find(const vocab_t *v, const char *s, size_t n);

/* Tokenizes text[0..len) (any bytes) into out[0..cap).
 * add_special: prepend BOS / append EOS as the metadata says.
 * parse_special: also recognise CONTROL and UNKNOWN tokens' texts (see top).
 * On success *n_out is the count. If cap is too small, out holds the first
 * cap tokens, *n_out the count needed, and it returns ERR_FULL. Other errors:
 * ERR_NOMEM, ERR_INVAL (NULL pointers; out may be NULL when cap is 0).
 * Work memory is allocated per call, proportional to len. */
int vocab_tokenize(const vocab_t *v, const char *text, size_t len,
		   int add_special, int parse_special,
		   int32_t *out, size_t cap, size_t *n_out) WUR;

/* Decoding flags. */
#define VOCAB_DECODE_SPECIAL     1   /* CONTROL/UNKNOWN tokens show their text (else nothing) */
#define VOCAB_DECODE_STRIP_SPACE 2   /* drop the leading space of the first token that is not
                                        CONTROL/UNKNOWN, when the vocab adds a space prefix
                                        (undoes what tokenize added; no-op for other vocabs) */

/* The bytes a token stands for: SPM byte tokens <0xNN> give the byte, U+2581
 * gives a space; BPE tokens map back from GPT-2's byte codepoints (a
 * codepoint that stands for no byte is copied as UTF-8); USER_DEFINED tokens
 * give their text; CONTROL/UNKNOWN give their text with
 * VOCAB_DECODE_SPECIAL, else nothing; UNUSED/UNDEFINED give nothing. A piece
 * may be an incomplete UTF-8 sequence. No clean-up of spaces is done.
 * Copies min(piece, cap) bytes to buf and sets *n to the piece length;
 * ERR_FULL if cap < piece length, ERR_RANGE for an id out of range. */
int vocab_token_to_piece(const vocab_t *v, int32_t id, int flags,
			 char *buf, size_t cap, size_t *n) WUR;
/* Borrowed view of the same piece (without flags: CONTROL/UNKNOWN pieces are
 * their text). NULL for an id out of range. */
const char *vocab_piece(const vocab_t *v, int32_t id, size_t *len);
/* The longest piece in bytes (sizes buffers for the decoder below). */
size_t vocab_max_piece_len(const vocab_t *v);

/* Concatenated pieces of ids[0..n), flags as above (VOCAB_DECODE_STRIP_SPACE
 * applies to the first eligible token). Raw bytes: the result may be invalid
 * UTF-8 where the tokens are. Same buffer contract as vocab_token_to_piece
 * (ERR_FULL with *n_out = bytes needed); ERR_RANGE for a bad id. */
int vocab_detokenize(const vocab_t *v, const int32_t *ids, size_t n, int flags,
		     char *buf, size_t cap, size_t *n_out) WUR;

/* Streaming decoder, for showing text while tokens are generated. It emits
 * only complete UTF-8 characters: a sequence split across tokens is held
 * back (at most 3 bytes) until its end arrives. Its output is always valid
 * UTF-8: bytes that cannot form a valid character (RFC 3629: overlongs,
 * surrogates and stray bytes included) are replaced by U+FFFD, one per
 * maximal invalid subsequence, and vocab_decoder_flush() turns a held-back
 * incomplete sequence into one U+FFFD. Caller memory; no allocation. */
typedef struct vocab_decoder {
	const vocab_t *v;
	int flags;
	int strip_pending;       /* VOCAB_DECODE_STRIP_SPACE not yet applied */
	uint8_t held[4];
	uint8_t n_held;
} vocab_decoder_t;

/* Bytes of output one push can need: 3 per input byte (U+FFFD) at worst. */
#define VOCAB_DECODER_OUT_MAX(piece_len) (3 * ((size_t)(piece_len) + 4))

void vocab_decoder_init(vocab_decoder_t *d, const vocab_t *v, int flags);
/* Feeds one token and writes the complete characters now available to
 * out[0..cap), setting *n_out. If cap is too small, nothing is consumed, *n_out
 * is the size needed and it returns ERR_FULL; VOCAB_DECODER_OUT_MAX(
 * vocab_max_piece_len(v)) is always enough. ERR_RANGE for a bad id (state
 * unchanged). */
int vocab_decoder_push(vocab_decoder_t *d, int32_t id, char *out, size_t cap, size_t *n_out) WUR;
/* Emits what is held back (as U+FFFD: it is incomplete) and resets; at most
 * 3 bytes. Same ERR_FULL contract. */
int vocab_decoder_flush(vocab_decoder_t *d, char *out, size_t cap, size_t *n_out) WUR;

#endif
