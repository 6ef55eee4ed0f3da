/* noise.c - Noise (rev 34) for 25519_ChaChaPoly_BLAKE2b (see noise.h). The
 * names follow the specification's: sections 5.1 (CipherState), 5.2
 * (SymmetricState), 5.3 (HandshakeState), 7 (patterns), 9 (psk). */
#include "net/noise.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

/* ---- CipherState (5.1) ---- */

static void nonce_bytes(uint8_t nb[12], uint64_t n)
{
	/* ChaChaPoly: 32 bits of zeros, then n little-endian (spec 12.3). */
	memset(nb, 0, 4);
	for (int i = 0; i < 8; i++)
		nb[4 + i] = (uint8_t)(n >> (8 * i));
}

void noise_cipher_init(noise_cipher_t *c, const uint8_t *k)
{
	memset(c, 0, sizeof(*c));
	if (k) {
		memcpy(c->k, k, NOISE_KEYLEN);
		c->has_key = 1;
	}
}

void noise_cipher_close(noise_cipher_t *c)
{
	sodium_memzero(c, sizeof(*c));
}

int noise_cipher_has_key(const noise_cipher_t *c) { return c->has_key; }

int noise_cipher_encrypt(noise_cipher_t *c, const uint8_t *ad, size_t adlen,
	const uint8_t *pt, size_t len, uint8_t *out)
{
	if (c->dead)
		return ERR_INVAL;
	if (!c->has_key) {
		if (out != pt && len)
			memmove(out, pt, len);
		return 0;
	}
	if (c->n == NOISE_NONCE_MAX) {
		c->dead = 1;
		return ERR_RANGE;
	}
	uint8_t nb[12];
	nonce_bytes(nb, c->n);
	unsigned long long clen = 0;
	crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, pt, len, ad, adlen, NULL, nb, c->k);
	c->n++;
	return 0;
}

int noise_cipher_decrypt(noise_cipher_t *c, const uint8_t *ad, size_t adlen,
	const uint8_t *ct, size_t len, uint8_t *out)
{
	if (c->dead)
		return ERR_INVAL;
	if (!c->has_key) {
		if (out != ct && len)
			memmove(out, ct, len);
		return 0;
	}
	if (len < NOISE_TAGLEN)
		return ERR_TRUNCATED;
	if (c->n == NOISE_NONCE_MAX) {
		c->dead = 1;
		return ERR_RANGE;
	}
	uint8_t nb[12], dummy[1];
	nonce_bytes(nb, c->n);
	unsigned long long mlen = 0;
	if (!out)
		out = dummy;   /* an empty plaintext: libsodium still wants a pointer */
	if (crypto_aead_chacha20poly1305_ietf_decrypt(out, &mlen, NULL, ct, len, ad, adlen, nb, c->k) != 0) {
		if (len > NOISE_TAGLEN)
			sodium_memzero(out, len - NOISE_TAGLEN);
		c->dead = 1;
		return ERR_FORMAT;
	}
	c->n++;
	return 0;
}

void noise_cipher_rekey(noise_cipher_t *c)
{
	if (!c->has_key)
		return;
	uint8_t zeros[NOISE_KEYLEN] = { 0 }, out[NOISE_KEYLEN + NOISE_TAGLEN], nb[12];
	nonce_bytes(nb, NOISE_NONCE_MAX);
	unsigned long long clen = 0;
	crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, zeros, sizeof(zeros), NULL, 0, NULL, nb, c->k);
	memcpy(c->k, out, NOISE_KEYLEN);
	sodium_memzero(out, sizeof(out));
}

void noise_cipher_set_nonce(noise_cipher_t *c, uint64_t n) { c->n = n; }

/* ---- HASH, HMAC, HKDF (4.3) ---- */

#define BLOCKLEN 128

/* HMAC-BLAKE2b(key, d1 || d2); key is at most HASHLEN bytes here. */
static void hmac2(const uint8_t *key, size_t klen, const uint8_t *d1, size_t n1,
	const uint8_t *d2, size_t n2, uint8_t out[NOISE_HASHLEN])
{
	uint8_t pad[BLOCKLEN], inner[NOISE_HASHLEN];
	crypto_generichash_state st;
	memset(pad, 0, sizeof(pad));
	memcpy(pad, key, klen);
	for (int i = 0; i < BLOCKLEN; i++)
		pad[i] ^= 0x36;
	crypto_generichash_init(&st, NULL, 0, NOISE_HASHLEN);
	crypto_generichash_update(&st, pad, BLOCKLEN);
	if (n1)
		crypto_generichash_update(&st, d1, n1);
	if (n2)
		crypto_generichash_update(&st, d2, n2);
	crypto_generichash_final(&st, inner, NOISE_HASHLEN);
	for (int i = 0; i < BLOCKLEN; i++)
		pad[i] ^= 0x36 ^ 0x5c;
	crypto_generichash_init(&st, NULL, 0, NOISE_HASHLEN);
	crypto_generichash_update(&st, pad, BLOCKLEN);
	crypto_generichash_update(&st, inner, NOISE_HASHLEN);
	crypto_generichash_final(&st, out, NOISE_HASHLEN);
	sodium_memzero(pad, sizeof(pad));
	sodium_memzero(inner, sizeof(inner));
	sodium_memzero(&st, sizeof(st));
}

/* HKDF(ck, ikm, 2 or 3): o3 NULL for two outputs. */
static void hkdf(const uint8_t ck[NOISE_HASHLEN], const uint8_t *ikm, size_t ikm_len,
	uint8_t o1[NOISE_HASHLEN], uint8_t o2[NOISE_HASHLEN], uint8_t *o3)
{
	uint8_t tk[NOISE_HASHLEN];
	static const uint8_t b1 = 1, b2 = 2, b3 = 3;
	hmac2(ck, NOISE_HASHLEN, ikm, ikm_len, NULL, 0, tk);
	hmac2(tk, NOISE_HASHLEN, &b1, 1, NULL, 0, o1);
	hmac2(tk, NOISE_HASHLEN, o1, NOISE_HASHLEN, &b2, 1, o2);
	if (o3)
		hmac2(tk, NOISE_HASHLEN, o2, NOISE_HASHLEN, &b3, 1, o3);
	sodium_memzero(tk, sizeof(tk));
}

/* ---- patterns (7) ---- */

enum { T_E = 1, T_S, T_EE, T_ES, T_SE, T_SS, T_PSK };
#define MAX_MSGS 8
#define MAX_TOKS 8
#define PRE_E 1
#define PRE_S 2

typedef struct pattern {
	uint8_t pre[2];                  /* initiator's, responder's: PRE_E | PRE_S */
	uint8_t n_msgs;
	uint8_t n_toks[MAX_MSGS];
	uint8_t toks[MAX_MSGS][MAX_TOKS];
	uint8_t n_psk;
} pattern_t;

/* The spec's patterns, messages alternating from the initiator, tokens
 * separated by spaces, messages by '/'. A read-only table. */
static const struct {
	const char *name;
	uint8_t ipre, rpre;
	const char *msgs;
} pattern_table[] = {
	/* one-way (7.4) */
	{ "N",    0, PRE_S, "e es" },
	{ "K",    PRE_S, PRE_S, "e es ss" },
	{ "X",    0, PRE_S, "e es s ss" },
	/* interactive (7.5) */
	{ "NN",   0, 0, "e/e ee" },
	{ "NK",   0, PRE_S, "e es/e ee" },
	{ "NX",   0, 0, "e/e ee s es" },
	{ "KN",   PRE_S, 0, "e/e ee se" },
	{ "KK",   PRE_S, PRE_S, "e es ss/e ee se" },
	{ "KX",   PRE_S, 0, "e/e ee se s es" },
	{ "XN",   0, 0, "e/e ee/s se" },
	{ "XK",   0, PRE_S, "e es/e ee/s se" },
	{ "XX",   0, 0, "e/e ee s es/s se" },
	{ "IN",   0, 0, "e s/e ee se" },
	{ "IK",   0, PRE_S, "e es s ss/e ee se" },
	{ "IX",   0, 0, "e s/e ee se s es" },
	/* deferred (7.6) */
	{ "NK1",  0, PRE_S, "e/e ee es" },
	{ "NX1",  0, 0, "e/e ee s/es" },
	{ "X1N",  0, 0, "e/e ee/s/se" },
	{ "X1K",  0, PRE_S, "e es/e ee/s/se" },
	{ "XK1",  0, PRE_S, "e/e ee es/s se" },
	{ "X1K1", 0, PRE_S, "e/e ee es/s/se" },
	{ "X1X",  0, 0, "e/e ee s es/s/se" },
	{ "XX1",  0, 0, "e/e ee s/es s se" },
	{ "X1X1", 0, 0, "e/e ee s/es s/se" },
	{ "K1N",  PRE_S, 0, "e/e ee/se" },
	{ "K1K",  PRE_S, PRE_S, "e es/e ee/se" },
	{ "KK1",  PRE_S, PRE_S, "e/e ee se es" },
	{ "K1K1", PRE_S, PRE_S, "e/e ee es/se" },
	{ "K1X",  PRE_S, 0, "e/e ee s es/se" },
	{ "KX1",  PRE_S, 0, "e/e ee se s/es" },
	{ "K1X1", PRE_S, 0, "e/e ee s/se es" },
	{ "I1N",  0, 0, "e s/e ee/se" },
	{ "I1K",  0, PRE_S, "e es s/e ee/se" },
	{ "IK1",  0, PRE_S, "e s/e ee se es" },
	{ "I1K1", 0, PRE_S, "e s/e ee es/se" },
	{ "I1X",  0, 0, "e s/e ee s es/se" },
	{ "IX1",  0, 0, "e s/e ee se s/es" },
	{ "I1X1", 0, 0, "e s/e ee s/se es" },
};

static int tok_parse(const char *s, size_t n)
{
	static const char *names[] = { NULL, "e", "s", "ee", "es", "se", "ss", "psk" };
	for (int t = T_E; t <= T_PSK; t++)
		if (strlen(names[t]) == n && memcmp(names[t], s, n) == 0)
			return t;
	return 0;
}

static void pattern_from_table(int i, pattern_t *p)
{
	memset(p, 0, sizeof(*p));
	p->pre[0] = pattern_table[i].ipre;
	p->pre[1] = pattern_table[i].rpre;
	const char *s = pattern_table[i].msgs;
	int m = 0;
	while (*s) {
		const char *t = s;
		while (*s && *s != ' ' && *s != '/')
			s++;
		p->toks[m][p->n_toks[m]++] = (uint8_t)tok_parse(t, (size_t)(s - t));
		if (*s == '/')
			m++;
		if (*s)
			s++;
	}
	p->n_msgs = (uint8_t)(m + 1);
}

/* "XXpsk3", "NNpsk0+psk2" ... into *p. */
static int pattern_parse(const char *name, size_t len, pattern_t *p, err_msg_t *e)
{
	size_t base = 0;
	while (base < len && ((name[base] >= 'A' && name[base] <= 'Z') || (name[base] >= '0' && name[base] <= '9')))
		base++;
	int found = -1;
	for (size_t i = 0; i < sizeof(pattern_table) / sizeof(pattern_table[0]); i++)
		if (strlen(pattern_table[i].name) == base && memcmp(pattern_table[i].name, name, base) == 0)
			found = (int)i;
	if (found < 0)
		return err_set(e, ERR_UNSUPPORTED, "unknown handshake pattern '%.*s'", (int)base, name);
	pattern_from_table(found, p);
	size_t i = base;
	while (i < len) {
		size_t j = i;
		while (j < len && name[j] != '+')
			j++;
		/* one modifier name[i..j) */
		if (j - i == 4 && memcmp(name + i, "psk", 3) == 0 && name[i + 3] >= '0' && name[i + 3] <= '9') {
			int k = name[i + 3] - '0';
			if (k > p->n_msgs)
				return err_set(e, ERR_UNSUPPORTED, "modifier psk%d: the pattern has %d messages", k, p->n_msgs);
			int m = k == 0 ? 0 : k - 1;
			if (p->n_toks[m] >= MAX_TOKS || p->n_psk >= NOISE_MAX_PSKS)
				return err_set(e, ERR_UNSUPPORTED, "too many psk modifiers");
			if (k == 0) {
				/* psk0: at the beginning of the first message */
				memmove(p->toks[0] + 1, p->toks[0], p->n_toks[0]);
				p->toks[0][0] = T_PSK;
			} else {
				/* pskN: at the end of the N-th message */
				p->toks[m][p->n_toks[m]] = T_PSK;
			}
			p->n_toks[m]++;
			p->n_psk++;
		} else {
			return err_set(e, ERR_UNSUPPORTED, "unsupported pattern modifier '%.*s'", (int)(j - i), name + i);
		}
		i = j + (j < len);
		if (j < len && i == len)
			return err_set(e, ERR_UNSUPPORTED, "empty pattern modifier");
	}
	return 0;
}

/* ---- HandshakeState (5.2, 5.3) ---- */

enum { HS_ACTIVE = 0, HS_COMPLETE, HS_SPLIT, HS_FAILED };

struct noise_hs {
	/* SymmetricState */
	noise_cipher_t cs;
	uint8_t ck[NOISE_HASHLEN];
	uint8_t h[NOISE_HASHLEN];
	/* keys */
	uint8_t s_priv[NOISE_DHLEN], s_pub[NOISE_DHLEN];
	uint8_t e_priv[NOISE_DHLEN], e_pub[NOISE_DHLEN];
	uint8_t rs[NOISE_DHLEN], re[NOISE_DHLEN];
	uint8_t has_s, has_e, e_fixed, has_rs, has_re;
	uint8_t psks[NOISE_MAX_PSKS][NOISE_PSKLEN];
	uint8_t n_psks, psk_used;
	uint8_t initiator;
	uint8_t state;
	uint8_t msg;          /* index of the next message */
	uint8_t mid;          /* tokens of message `msg` done, payload pending */
	size_t mid_len;       /* bytes of those tokens */
	pattern_t pat;
};

static void mix_hash(noise_hs_t *hs, const uint8_t *data, size_t len)
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, NOISE_HASHLEN);
	crypto_generichash_update(&st, hs->h, NOISE_HASHLEN);
	if (len)
		crypto_generichash_update(&st, data, len);
	crypto_generichash_final(&st, hs->h, NOISE_HASHLEN);
}

static void mix_key(noise_hs_t *hs, const uint8_t *ikm, size_t len)
{
	uint8_t tk[NOISE_HASHLEN];
	hkdf(hs->ck, ikm, len, hs->ck, tk, NULL);
	noise_cipher_init(&hs->cs, tk);   /* truncated to 32 bytes (HASHLEN 64) */
	sodium_memzero(tk, sizeof(tk));
}

static void mix_key_and_hash(noise_hs_t *hs, const uint8_t *ikm, size_t len)
{
	uint8_t th[NOISE_HASHLEN], tk[NOISE_HASHLEN];
	hkdf(hs->ck, ikm, len, hs->ck, th, tk);
	mix_hash(hs, th, NOISE_HASHLEN);
	noise_cipher_init(&hs->cs, tk);
	sodium_memzero(th, sizeof(th));
	sodium_memzero(tk, sizeof(tk));
}

/* EncryptAndHash: out holds len (+ tag) bytes. */
static int encrypt_and_hash(noise_hs_t *hs, const uint8_t *pt, size_t len, uint8_t *out, size_t *olen)
{
	int rc = noise_cipher_encrypt(&hs->cs, hs->h, NOISE_HASHLEN, pt, len, out);
	if (rc)
		return rc;
	*olen = len + (hs->cs.has_key ? NOISE_TAGLEN : 0);
	mix_hash(hs, out, *olen);
	return 0;
}

/* DecryptAndHash. The next h is computed before decrypting, so out may
 * overlap ct (the ciphertext is gone once it is decrypted in place). */
static int decrypt_and_hash(noise_hs_t *hs, const uint8_t *ct, size_t len, uint8_t *out, size_t *olen)
{
	uint8_t next_h[NOISE_HASHLEN];
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, NOISE_HASHLEN);
	crypto_generichash_update(&st, hs->h, NOISE_HASHLEN);
	if (len)
		crypto_generichash_update(&st, ct, len);
	crypto_generichash_final(&st, next_h, NOISE_HASHLEN);
	int rc = noise_cipher_decrypt(&hs->cs, hs->h, NOISE_HASHLEN, ct, len, out);
	if (rc)
		return rc;
	*olen = len - (hs->cs.has_key ? NOISE_TAGLEN : 0);
	memcpy(hs->h, next_h, NOISE_HASHLEN);
	return 0;
}

static int dh(const uint8_t priv[NOISE_DHLEN], const uint8_t pub[NOISE_DHLEN], uint8_t out[NOISE_DHLEN])
{
	/* libsodium refuses (returns -1) an all-zero result: a small-order point. */
	return crypto_scalarmult(out, priv, pub) == 0 ? 0 : ERR_FORMAT;
}

/* Which pre-message/message keys each side must hold. */
static void pattern_needs(const pattern_t *p, int initiator, int *need_s, int *need_rs)
{
	int me = initiator ? 0 : 1;
	*need_s = (p->pre[me] & PRE_S) != 0;
	*need_rs = (p->pre[1 - me] & PRE_S) != 0;
	for (int m = 0; m < p->n_msgs; m++) {
		int mine = (m % 2 == 0) == (initiator != 0);
		for (int t = 0; t < p->n_toks[m]; t++) {
			int k = p->toks[m][t];
			if (k == T_S && mine)
				*need_s = 1;
			/* a DH with our static key: es as responder, se as initiator, ss */
			if (k == T_SS || (k == T_ES && !initiator) || (k == T_SE && initiator))
				*need_s = 1;
		}
	}
}

static int suite_split(const char *name, size_t *plen, err_msg_t *e)
{
	static const char pre[] = "Noise_", suf[] = "_25519_ChaChaPoly_BLAKE2b";
	size_t n = strlen(name), np = sizeof(pre) - 1, ns = sizeof(suf) - 1;
	if (n <= np + ns || memcmp(name, pre, np) != 0)
		return err_set(e, ERR_UNSUPPORTED, "'%s' is not a Noise protocol name", name);
	if (memcmp(name + n - ns, suf, ns) != 0)
		return err_set(e, ERR_UNSUPPORTED, "'%s': only the suite 25519_ChaChaPoly_BLAKE2b is implemented", name);
	*plen = n - np - ns;
	return 0;
}

int noise_hs_new(const noise_hs_cfg_t *cfg, noise_hs_t **out, err_msg_t *e)
{
	*out = NULL;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	if (!cfg->protocol)
		return err_set(e, ERR_INVAL, "no protocol name");
	size_t plen = 0;
	int rc = suite_split(cfg->protocol, &plen, e);
	if (rc)
		return rc;
	pattern_t pat;
	rc = pattern_parse(cfg->protocol + 6, plen, &pat, e);
	if (rc)
		return rc;
	int need_s, need_rs;
	pattern_needs(&pat, cfg->initiator, &need_s, &need_rs);
	if (need_s && !cfg->s_priv)
		return err_set(e, ERR_INVAL, "%s: the %s needs a static key", cfg->protocol,
			cfg->initiator ? "initiator" : "responder");
	if (need_rs && !cfg->rs)
		return err_set(e, ERR_INVAL, "%s: the %s needs the peer's static public key in advance",
			cfg->protocol, cfg->initiator ? "initiator" : "responder");
	int me = cfg->initiator ? 0 : 1;
	if ((pat.pre[me] & PRE_E) && !cfg->e_priv)
		return err_set(e, ERR_INVAL, "%s: a pre-message ephemeral needs e_priv", cfg->protocol);
	if ((pat.pre[1 - me] & PRE_E) && !cfg->re)
		return err_set(e, ERR_INVAL, "%s: a pre-message ephemeral needs re", cfg->protocol);
	if (cfg->n_psks != pat.n_psk)
		return err_set(e, ERR_INVAL, "%s: the pattern takes %d psk(s), %zu given", cfg->protocol,
			pat.n_psk, cfg->n_psks);
	if (cfg->prologue_len && !cfg->prologue)
		return err_set(e, ERR_INVAL, "prologue length without a prologue");

	noise_hs_t *hs = sodium_malloc(sizeof(*hs));
	if (!hs)
		return err_set(e, ERR_NOMEM, "cannot allocate secure memory for a handshake");
	memset(hs, 0, sizeof(*hs));
	hs->pat = pat;
	hs->initiator = cfg->initiator ? 1 : 0;
	if (cfg->s_priv) {
		memcpy(hs->s_priv, cfg->s_priv, NOISE_DHLEN);
		crypto_scalarmult_base(hs->s_pub, hs->s_priv);
		hs->has_s = 1;
	}
	if (cfg->e_priv) {
		memcpy(hs->e_priv, cfg->e_priv, NOISE_DHLEN);
		crypto_scalarmult_base(hs->e_pub, hs->e_priv);
		hs->e_fixed = 1;
	}
	if (cfg->rs) {
		memcpy(hs->rs, cfg->rs, NOISE_DHLEN);
		hs->has_rs = 1;
	}
	if (cfg->re) {
		memcpy(hs->re, cfg->re, NOISE_DHLEN);
		hs->has_re = 1;
	}
	for (size_t i = 0; i < cfg->n_psks; i++)
		memcpy(hs->psks[i], cfg->psks[i], NOISE_PSKLEN);
	hs->n_psks = (uint8_t)cfg->n_psks;

	/* InitializeSymmetric(protocol_name) */
	size_t nlen = strlen(cfg->protocol);
	if (nlen <= NOISE_HASHLEN)
		memcpy(hs->h, cfg->protocol, nlen);   /* zero-padded by the memset */
	else
		crypto_generichash(hs->h, NOISE_HASHLEN, (const uint8_t *)cfg->protocol, nlen, NULL, 0);
	memcpy(hs->ck, hs->h, NOISE_HASHLEN);
	noise_cipher_init(&hs->cs, NULL);
	mix_hash(hs, cfg->prologue, cfg->prologue_len);
	/* Pre-messages: the initiator's keys, then the responder's; e before s.
	 * In psk handshakes a pre-message e is also mixed into the key (9.2). */
	for (int side = 0; side < 2; side++) {
		int local = side == me;
		if (pat.pre[side] & PRE_E) {
			const uint8_t *k = local ? hs->e_pub : hs->re;
			mix_hash(hs, k, NOISE_DHLEN);
			if (pat.n_psk)
				mix_key(hs, k, NOISE_DHLEN);
			if (local)
				hs->has_e = 1;
		}
		if (pat.pre[side] & PRE_S)
			mix_hash(hs, local ? hs->s_pub : hs->rs, NOISE_DHLEN);
	}
	*out = hs;
	return 0;
}

void noise_hs_free(noise_hs_t *hs)
{
	if (hs)
		sodium_free(hs);
}

enum noise_action noise_hs_action(const noise_hs_t *hs)
{
	switch (hs->state) {
	case HS_COMPLETE: return NOISE_ACTION_SPLIT;
	case HS_SPLIT: return NOISE_ACTION_DONE;
	case HS_FAILED: return NOISE_ACTION_FAILED;
	default: break;
	}
	return ((hs->msg % 2 == 0) == (hs->initiator != 0)) ? NOISE_ACTION_WRITE : NOISE_ACTION_READ;
}

/* Size of message m with a payload of plen bytes, tracking when a key
 * appears; *keyed (may be NULL) tells whether the payload is encrypted. */
static size_t msg_size(const noise_hs_t *hs, int m, size_t plen, int *keyed)
{
	int has_key = hs->cs.has_key;
	size_t n = 0;
	for (int t = 0; t < hs->pat.n_toks[m]; t++) {
		switch (hs->pat.toks[m][t]) {
		case T_E:
			n += NOISE_DHLEN;
			if (hs->pat.n_psk)
				has_key = 1;
			break;
		case T_S:
			n += NOISE_DHLEN + (has_key ? NOISE_TAGLEN : 0);
			break;
		default:
			has_key = 1;   /* every DH token and psk runs MixKey */
			break;
		}
	}
	if (keyed)
		*keyed = has_key;
	return n + plen + (has_key ? NOISE_TAGLEN : 0);
}

size_t noise_hs_write_size(const noise_hs_t *hs, size_t plen)
{
	if (noise_hs_action(hs) != NOISE_ACTION_WRITE)
		return 0;
	return msg_size(hs, hs->msg, plen, NULL);
}

static const char *tok_name(int t)
{
	static const char *names[] = { "?", "e", "s", "ee", "es", "se", "ss", "psk" };
	return t >= 0 && t <= T_PSK ? names[t] : "?";
}

/* The DH of a token: ee, es, se, ss, from this side's point of view. */
static int token_dh(noise_hs_t *hs, int tok, err_msg_t *e)
{
	const uint8_t *priv = NULL, *pub = NULL;
	int ok_l = 0, ok_r = 0;
	switch (tok) {
	case T_EE: priv = hs->e_priv; pub = hs->re; ok_l = hs->has_e; ok_r = hs->has_re; break;
	case T_SS: priv = hs->s_priv; pub = hs->rs; ok_l = hs->has_s; ok_r = hs->has_rs; break;
	case T_ES:
		if (hs->initiator) { priv = hs->e_priv; pub = hs->rs; ok_l = hs->has_e; ok_r = hs->has_rs; }
		else { priv = hs->s_priv; pub = hs->re; ok_l = hs->has_s; ok_r = hs->has_re; }
		break;
	case T_SE:
		if (hs->initiator) { priv = hs->s_priv; pub = hs->re; ok_l = hs->has_s; ok_r = hs->has_re; }
		else { priv = hs->e_priv; pub = hs->rs; ok_l = hs->has_e; ok_r = hs->has_rs; }
		break;
	default:
		return err_set(e, ERR_INVAL, "not a DH token");
	}
	if (!ok_l || !ok_r)
		return err_set(e, ERR_INVAL, "token %s: a key is missing", tok_name(tok));
	uint8_t out[NOISE_DHLEN];
	if (dh(priv, pub, out) != 0)
		return err_set(e, ERR_FORMAT, "token %s: the peer's public key has small order (DH result is zero)",
			tok_name(tok));
	mix_key(hs, out, NOISE_DHLEN);
	sodium_memzero(out, sizeof(out));
	return 0;
}

static int token_psk(noise_hs_t *hs, err_msg_t *e)
{
	if (hs->psk_used >= hs->n_psks)
		return err_set(e, ERR_INVAL, "no psk left for a psk token");
	mix_key_and_hash(hs, hs->psks[hs->psk_used], NOISE_PSKLEN);
	sodium_memzero(hs->psks[hs->psk_used], NOISE_PSKLEN);
	hs->psk_used++;
	return 0;
}

static void hs_fail(noise_hs_t *hs)
{
	hs->state = HS_FAILED;
	/* Nothing of a failed handshake may be used again. */
	sodium_memzero(&hs->cs, sizeof(hs->cs));
	sodium_memzero(hs->ck, sizeof(hs->ck));
	sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
	sodium_memzero(hs->s_priv, sizeof(hs->s_priv));
	sodium_memzero(hs->psks, sizeof(hs->psks));
}

static void msg_done(noise_hs_t *hs)
{
	hs->msg++;
	if (hs->msg == hs->pat.n_msgs)
		hs->state = HS_COMPLETE;
}

int noise_hs_write_tokens(noise_hs_t *hs, uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e)
{
	*out_len = 0;
	if (noise_hs_action(hs) != NOISE_ACTION_WRITE || hs->mid)
		return err_set(e, ERR_INVAL, "handshake: not our turn to write (message %d)", hs->msg + 1);
	int keyed;
	size_t need = msg_size(hs, hs->msg, 0, &keyed);
	need -= keyed ? NOISE_TAGLEN : 0;   /* the tokens alone */
	if (need > cap)
		return err_set(e, ERR_FULL, "handshake message %d needs %zu bytes for its keys, buffer holds %zu",
			hs->msg + 1, need, cap);
	int m = hs->msg, rc = 0;
	size_t pos = 0, n = 0;
	for (int t = 0; t < hs->pat.n_toks[m] && rc == 0; t++) {
		int tok = hs->pat.toks[m][t];
		switch (tok) {
		case T_E:
			if (!hs->e_fixed) {
				randombytes_buf(hs->e_priv, NOISE_DHLEN);
				crypto_scalarmult_base(hs->e_pub, hs->e_priv);
			}
			hs->has_e = 1;
			memcpy(out + pos, hs->e_pub, NOISE_DHLEN);
			pos += NOISE_DHLEN;
			mix_hash(hs, hs->e_pub, NOISE_DHLEN);
			if (hs->pat.n_psk)
				mix_key(hs, hs->e_pub, NOISE_DHLEN);
			break;
		case T_S:
			rc = encrypt_and_hash(hs, hs->s_pub, NOISE_DHLEN, out + pos, &n);
			if (rc)
				err_set(e, rc, "token s: encryption failed");
			pos += n;
			break;
		case T_PSK:
			rc = token_psk(hs, e);
			break;
		default:
			rc = token_dh(hs, tok, e);
			break;
		}
	}
	if (rc) {
		sodium_memzero(out, cap);
		hs_fail(hs);
		return rc;
	}
	*out_len = pos;
	hs->mid = 1;
	hs->mid_len = pos;
	return 0;
}

int noise_hs_write_payload(noise_hs_t *hs, const uint8_t *payload, size_t plen,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e)
{
	*out_len = 0;
	if (noise_hs_action(hs) != NOISE_ACTION_WRITE || !hs->mid)
		return err_set(e, ERR_INVAL, "handshake: no message in progress to add a payload to");
	size_t need = plen + (hs->cs.has_key ? NOISE_TAGLEN : 0);
	if (hs->mid_len + need > NOISE_MAX_MSG)
		return err_set(e, ERR_RANGE, "handshake message %d would take %zu bytes (max %d)",
			hs->msg + 1, hs->mid_len + need, NOISE_MAX_MSG);
	if (need > cap)
		return err_set(e, ERR_FULL, "handshake message %d: payload needs %zu bytes, buffer holds %zu",
			hs->msg + 1, need, cap);
	size_t n = 0;
	int rc = encrypt_and_hash(hs, payload, plen, out, &n);
	if (rc) {
		sodium_memzero(out, cap);
		hs_fail(hs);
		return err_set(e, rc, "payload encryption failed");
	}
	*out_len = n;
	hs->mid = 0;
	msg_done(hs);
	return 0;
}

int noise_hs_write(noise_hs_t *hs, const uint8_t *payload, size_t plen,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e)
{
	*out_len = 0;
	if (noise_hs_action(hs) != NOISE_ACTION_WRITE || hs->mid)
		return err_set(e, ERR_INVAL, "handshake: not our turn to write (message %d)", hs->msg + 1);
	size_t need = msg_size(hs, hs->msg, plen, NULL);
	if (need > NOISE_MAX_MSG)
		return err_set(e, ERR_RANGE, "handshake message %d would take %zu bytes (max %d)",
			hs->msg + 1, need, NOISE_MAX_MSG);
	if (need > cap)
		return err_set(e, ERR_FULL, "handshake message %d needs %zu bytes, buffer holds %zu",
			hs->msg + 1, need, cap);
	size_t a = 0, b = 0;
	int rc = noise_hs_write_tokens(hs, out, cap, &a, e);
	if (rc == 0)
		rc = noise_hs_write_payload(hs, payload, plen, out + a, cap - a, &b, e);
	if (rc)
		return rc;
	*out_len = a + b;
	return 0;
}

int noise_hs_read_tokens(noise_hs_t *hs, const uint8_t *msg, size_t len, size_t *used, err_msg_t *e)
{
	*used = 0;
	if (noise_hs_action(hs) != NOISE_ACTION_READ || hs->mid) {
		if (hs->state == HS_FAILED)
			return err_set(e, ERR_INVAL, "handshake already failed");
		return err_set(e, ERR_INVAL, "handshake: not our turn to read (message %d)", hs->msg + 1);
	}
	int m = hs->msg, rc = 0;
	size_t pos = 0, n;
	if (len > NOISE_MAX_MSG) {
		rc = err_set(e, ERR_RANGE, "handshake message %d: %zu bytes (max %d)", m + 1, len, NOISE_MAX_MSG);
		goto fail;
	}
	for (int t = 0; t < hs->pat.n_toks[m]; t++) {
		int tok = hs->pat.toks[m][t];
		switch (tok) {
		case T_E:
			if (len - pos < NOISE_DHLEN) {
				rc = err_set(e, ERR_TRUNCATED, "handshake message %d: %zu bytes, too short for the ephemeral key",
					m + 1, len);
				goto fail;
			}
			memcpy(hs->re, msg + pos, NOISE_DHLEN);
			hs->has_re = 1;
			pos += NOISE_DHLEN;
			mix_hash(hs, hs->re, NOISE_DHLEN);
			if (hs->pat.n_psk)
				mix_key(hs, hs->re, NOISE_DHLEN);
			break;
		case T_S: {
			size_t sl = NOISE_DHLEN + (hs->cs.has_key ? NOISE_TAGLEN : 0);
			if (len - pos < sl) {
				rc = err_set(e, ERR_TRUNCATED, "handshake message %d: %zu bytes, too short for the static key",
					m + 1, len);
				goto fail;
			}
			uint8_t tmp[NOISE_DHLEN];
			rc = decrypt_and_hash(hs, msg + pos, sl, tmp, &n);
			if (rc) {
				err_set(e, rc, "handshake message %d: the peer's static key does not decrypt "
					"(different prologue/network, psk or keys, or a tampered message)", m + 1);
				goto fail;
			}
			memcpy(hs->rs, tmp, NOISE_DHLEN);
			hs->has_rs = 1;
			pos += sl;
			break;
		}
		case T_PSK:
			rc = token_psk(hs, e);
			if (rc)
				goto fail;
			break;
		default:
			rc = token_dh(hs, tok, e);
			if (rc) {
				err_prefix(e, rc, "handshake message %d", m + 1);
				goto fail;
			}
			break;
		}
	}
	*used = pos;
	hs->mid = 1;
	hs->mid_len = pos;
	return 0;
fail:
	hs_fail(hs);
	return rc;
}

int noise_hs_read_payload(noise_hs_t *hs, const uint8_t *ct, size_t len,
	uint8_t *payload, size_t cap, size_t *plen, err_msg_t *e)
{
	*plen = 0;
	int m = hs->msg, rc;
	if (noise_hs_action(hs) != NOISE_ACTION_READ || !hs->mid) {
		rc = err_set(e, ERR_INVAL, "handshake: no message in progress to read a payload from");
		goto fail;
	}
	size_t tag = hs->cs.has_key ? NOISE_TAGLEN : 0;
	if (hs->mid_len + len > NOISE_MAX_MSG) {
		rc = err_set(e, ERR_RANGE, "handshake message %d: %zu bytes (max %d)", m + 1, hs->mid_len + len,
			NOISE_MAX_MSG);
		goto fail;
	}
	if (len < tag) {
		rc = err_set(e, ERR_TRUNCATED, "handshake message %d: %zu bytes, too short for the payload tag",
			m + 1, hs->mid_len + len);
		goto fail;
	}
	if (len - tag > cap) {
		rc = err_set(e, ERR_FULL, "handshake message %d: payload of %zu bytes, buffer holds %zu",
			m + 1, len - tag, cap);
		goto fail;
	}
	size_t n = 0;
	rc = decrypt_and_hash(hs, ct, len, payload, &n);
	if (rc) {
		err_set(e, rc, "handshake message %d: the payload does not decrypt "
			"(different prologue/network, psk or keys, or a tampered message)", m + 1);
		goto fail;
	}
	*plen = n;
	hs->mid = 0;
	msg_done(hs);
	return 0;
fail:
	if (cap)
		sodium_memzero(payload, cap);
	hs_fail(hs);
	return rc;
}

int noise_hs_read(noise_hs_t *hs, const uint8_t *msg, size_t len,
	uint8_t *payload, size_t cap, size_t *plen, err_msg_t *e)
{
	*plen = 0;
	size_t used = 0;
	int rc = noise_hs_read_tokens(hs, msg, len, &used, e);
	if (rc == 0)
		rc = noise_hs_read_payload(hs, msg + used, len - used, payload, cap, plen, e);
	else if (cap && noise_hs_action(hs) == NOISE_ACTION_FAILED)
		sodium_memzero(payload, cap);
	return rc;
}

int noise_hs_split(noise_hs_t *hs, noise_cipher_t *tx, noise_cipher_t *rx)
{
	if (hs->state != HS_COMPLETE)
		return ERR_INVAL;
	uint8_t k1[NOISE_HASHLEN], k2[NOISE_HASHLEN];
	hkdf(hs->ck, NULL, 0, k1, k2, NULL);
	noise_cipher_init(tx, hs->initiator ? k1 : k2);
	noise_cipher_init(rx, hs->initiator ? k2 : k1);
	sodium_memzero(k1, sizeof(k1));
	sodium_memzero(k2, sizeof(k2));
	sodium_memzero(hs->ck, sizeof(hs->ck));
	sodium_memzero(&hs->cs, sizeof(hs->cs));
	sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
	hs->state = HS_SPLIT;
	return 0;
}

const uint8_t *noise_hs_hash(const noise_hs_t *hs) { return hs->h; }
const uint8_t *noise_hs_remote_static(const noise_hs_t *hs) { return hs->has_rs ? hs->rs : NULL; }
const uint8_t *noise_hs_local_static(const noise_hs_t *hs) { return hs->has_s ? hs->s_pub : NULL; }
int noise_hs_is_initiator(const noise_hs_t *hs) { return hs->initiator; }
int noise_hs_msg_count(const noise_hs_t *hs) { return hs->pat.n_msgs; }
int noise_hs_msg_index(const noise_hs_t *hs) { return hs->msg; }
