/* fuzz_tokenizer.c - arbitrary bytes through both tokenizers (parse_special
 * off and on) and back through both decoders, checking what must hold:
 *   - tokenize never fails with enough room; with too little it says
 *     ERR_FULL, the same count, and the same leading tokens;
 *   - every id is in range;
 *   - byte-level BPE gives back exactly the input bytes;
 *   - SentencePiece does too for valid UTF-8 without U+2581 (parse_special
 *     off; the leading space it adds is stripped);
 *   - the streaming decoder's output is valid UTF-8, and equals the plain
 *     decoding whenever that is valid UTF-8.
 * The vocabularies are the fixture GGUFs, loaded once (COLONY_FIXTURES or
 * ../shared/fixtures); without them every input is a no-op. */
#define _GNU_SOURCE   /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/unicode.h"
#include "model/vocab.h"

#define MAX_INPUT (1 << 16)

static vocab_t *vocabs[3];
static int loaded;

static void load_all(void)
{
	static const char *const names[3] = {
		"ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-bpe.gguf", "stories260K.gguf"
	};
	const char *dir = getenv("COLONY_FIXTURES");
	if (!dir || !*dir)
		dir = "../shared/fixtures";
	for (int i = 0; i < 3; i++) {
		char p[1024];
		snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
		gguf_t *g = NULL;
		err_msg_t e;
		if (gguf_open(p, &g, &e))
			continue;
		if (vocab_new_from_gguf(g, &vocabs[i], &e))
			vocabs[i] = NULL;
		gguf_free(g);
	}
	loaded = 1;
}

#define MUST(c) do { if (!(c)) { fprintf(stderr, "fuzz_tokenizer: %s:%d: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static int valid_utf8(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		int k = unicode_valid_prefix(s + i, n - i);
		if (k <= 0)
			return 0;
		i += (size_t)k;
	}
	return 1;
}

static void check(const vocab_t *v, const uint8_t *data, size_t size, int special)
{
	/* At most one token per byte, plus a space marker per plain fragment
	 * (special tokens are at least one byte each), plus BOS and EOS. */
	size_t cap = 2 * size + 8, n, m;
	int32_t *ids = malloc(cap * sizeof(int32_t));
	MUST(ids);
	MUST(vocab_tokenize(v, (const char *)data, size, special, special, ids, cap, &n) == 0);
	MUST(n <= cap);
	int32_t nt = vocab_n_tokens(v);
	for (size_t i = 0; i < n; i++)
		MUST(ids[i] >= 0 && ids[i] < nt);
	if (n > 1) {
		size_t half = n / 2;
		int32_t *part = malloc(half * sizeof(int32_t));
		MUST(part);
		MUST(vocab_tokenize(v, (const char *)data, size, special, special, part, half, &m) == ERR_FULL);
		MUST(m == n && memcmp(part, ids, half * sizeof(int32_t)) == 0);
		free(part);
	}

	/* Plain decoding, without the BOS that add_special put in front. */
	size_t skip = special && vocab_adds_bos(v) ? 1 : 0;
	MUST(n >= skip);
	int flags = VOCAB_DECODE_SPECIAL | VOCAB_DECODE_STRIP_SPACE;
	size_t need;
	int rc = vocab_detokenize(v, ids + skip, n - skip, flags, NULL, 0, &need);
	MUST(rc == 0 || rc == ERR_FULL);
	char *text = malloc(need + 1);
	MUST(text);
	MUST(vocab_detokenize(v, ids + skip, n - skip, flags, text, need, &m) == 0 && m == need);
	/* (an EOS added at the end would show as its text) */
	if (vocab_get_type(v) == VOCAB_BPE && !(special && vocab_adds_eos(v)))
		MUST(need == size && memcmp(text, data, size) == 0);
	if (vocab_get_type(v) == VOCAB_SPM && !special && valid_utf8(data, size) &&
	    !memmem(data, size, "\xE2\x96\x81", 3))
		MUST(need == size && memcmp(text, data, size) == 0);

	/* Streaming: token by token into one buffer. */
	size_t per = VOCAB_DECODER_OUT_MAX(vocab_max_piece_len(v));
	size_t scap = 3 * need + 16 + per;
	char *stream = malloc(scap);
	MUST(stream);
	vocab_decoder_t d;
	vocab_decoder_init(&d, v, flags);
	size_t at = 0, k;
	for (size_t i = skip; i < n; i++) {
		MUST(at + per <= scap);
		MUST(vocab_decoder_push(&d, ids[i], stream + at, per, &k) == 0);
		at += k;
	}
	MUST(vocab_decoder_flush(&d, stream + at, scap - at, &k) == 0);
	at += k;
	MUST(valid_utf8((const uint8_t *)stream, at));
	if (valid_utf8((const uint8_t *)text, need))
		MUST(at == need && memcmp(stream, text, need) == 0);

	free(stream);
	free(text);
	free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!loaded)
		load_all();
	if (size > MAX_INPUT)
		return 0;
	for (int i = 0; i < 3; i++) {
		if (!vocabs[i])
			continue;
		check(vocabs[i], data, size, 0);
		check(vocabs[i], data, size, 1);
	}
	return 0;
}
