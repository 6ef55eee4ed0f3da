/* ann.c - the DHT record codec (see ann.h; layout in docs/PROTOCOL.md). */
#include "dht/ann.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "model/unicode.h"

#define DOMAIN_LEN 16  /* strlen(ANN_SIG_DOMAIN) */
_Static_assert(sizeof(ANN_SIG_DOMAIN) - 1 == DOMAIN_LEN, "domain length");
_Static_assert(ANN_MAX_SHARD_SIZE == 370 && ANN_MAX_SKILL_SIZE == 619 && ANN_MAX_INDEX_SIZE == 417 &&
	ANN_MAX_REP_SIZE == 441 && ANN_MAX_SIZE >= ANN_MAX_INDEX_SIZE && ANN_MAX_SIZE >= ANN_MAX_REP_SIZE,
	"documented maximum sizes");
_Static_assert(ANN_SIGLEN == crypto_sign_BYTES && ANN_IDLEN == crypto_sign_PUBLICKEYBYTES &&
	ANN_SKLEN == crypto_sign_SECRETKEYBYTES, "libsodium ed25519 sizes");

/* ---- little-endian writer and bounded reader ---------------------------- */

typedef struct wr {
	uint8_t *p;
	size_t n;
} wr_t;

static void put_bytes(wr_t *w, const void *src, size_t n) { memcpy(w->p + w->n, src, n); w->n += n; }
static void put_u8(wr_t *w, uint8_t v) { w->p[w->n++] = v; }
static void put_u16(wr_t *w, uint16_t v) { put_u8(w, (uint8_t)v); put_u8(w, (uint8_t)(v >> 8)); }
static void put_u32(wr_t *w, uint32_t v) { for (int i = 0; i < 4; i++) put_u8(w, (uint8_t)(v >> (8 * i))); }
static void put_u64(wr_t *w, uint64_t v) { for (int i = 0; i < 8; i++) put_u8(w, (uint8_t)(v >> (8 * i))); }

typedef struct rd {
	const uint8_t *p;
	size_t len, off;
	err_msg_t *e;
	int rc;          /* first error, sticky */
} rd_t;

/* Takes n bytes or records ERR_TRUNCATED naming the field and its offset. */
static const uint8_t *take(rd_t *r, size_t n, const char *field)
{
	if (r->rc)
		return NULL;
	if (n > r->len - r->off) {
		r->rc = err_set(r->e, ERR_TRUNCATED, "record ends at byte %zu, inside %s (offset %zu, %zu bytes)",
			r->len, field, r->off, n);
		return NULL;
	}
	const uint8_t *q = r->p + r->off;
	r->off += n;
	return q;
}
static uint8_t get_u8(rd_t *r, const char *f) { const uint8_t *q = take(r, 1, f); return q ? q[0] : 0; }
static uint16_t get_u16(rd_t *r, const char *f)
{
	const uint8_t *q = take(r, 2, f);
	return q ? (uint16_t)(q[0] | q[1] << 8) : 0;
}
static uint32_t get_u32(rd_t *r, const char *f)
{
	const uint8_t *q = take(r, 4, f);
	uint32_t v = 0;
	for (int i = 3; q && i >= 0; i--)
		v = v << 8 | q[i];
	return v;
}
static uint64_t get_u64(rd_t *r, const char *f)
{
	const uint8_t *q = take(r, 8, f);
	uint64_t v = 0;
	for (int i = 7; q && i >= 0; i--)
		v = v << 8 | q[i];
	return v;
}
static void get_bytes(rd_t *r, void *dst, size_t n, const char *f)
{
	const uint8_t *q = take(r, n, f);
	if (q)
		memcpy(dst, q, n);
}

/* ---- field checks (shared by encoder and decoder) ----------------------- */

static int addr_check(const ann_addr_t *a, int i, err_msg_t *e)
{
	static const uint8_t zero[16];
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	if (a->port == 0)
		return err_set(e, ERR_RANGE, "address %d: port 0", i);
	if (a->family == 4) {
		const uint8_t *ip = a->ip;
		if (memcmp(ip + 4, zero, 12) != 0)
			return err_set(e, ERR_FORMAT, "address %d: IPv4 with non-zero padding", i);
		if (ip[0] == 0)
			return err_set(e, ERR_RANGE, "address %d: %u.%u.%u.%u is unspecified (0.0.0.0/8)", i, ip[0], ip[1], ip[2], ip[3]);
		if (ip[0] >= 224)   /* 224/4 multicast, 240/4 reserved, 255.255.255.255 broadcast */
			return err_set(e, ERR_RANGE, "address %d: %u.%u.%u.%u is multicast, reserved or broadcast", i, ip[0], ip[1], ip[2], ip[3]);
		return 0;
	}
	if (a->family == 6) {
		if (memcmp(a->ip, zero, 16) == 0)
			return err_set(e, ERR_RANGE, "address %d: :: is unspecified", i);
		if (a->ip[0] == 0xff)
			return err_set(e, ERR_RANGE, "address %d: IPv6 multicast (ff00::/8)", i);
		if (a->ip[0] == 0xfe && (a->ip[1] & 0xc0) == 0x80)
			return err_set(e, ERR_RANGE, "address %d: IPv6 link-local (fe80::/10) needs a scope", i);
		if (memcmp(a->ip, v4mapped, 12) == 0)
			return err_set(e, ERR_FORMAT, "address %d: IPv4-mapped IPv6 (use family 4)", i);
		return 0;
	}
	return err_set(e, ERR_FORMAT, "address %d: family %u (want 4 or 6)", i, a->family);
}

int ann_skill_name_check(const char *name, err_msg_t *e)
{
	size_t n = strnlen(name, ANN_MAX_SKILL_NAME + 1);
	if (n == 0 || n > ANN_MAX_SKILL_NAME)
		return err_set(e, ERR_RANGE, "skill name of %zu bytes (want 1..%d)", n, ANN_MAX_SKILL_NAME);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return err_set(e, ERR_FORMAT, "skill name byte %zu is 0x%02x (want [a-z0-9._-], first [a-z0-9])", i, c);
	}
	return 0;
}

static void scope_hash(const char *prefix, const char *name, uint8_t id[ANN_MODELLEN])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, ANN_MODELLEN);
	crypto_generichash_update(&st, (const uint8_t *)prefix, strlen(prefix));
	if (name)
		crypto_generichash_update(&st, (const uint8_t *)name, strlen(name));
	crypto_generichash_final(&st, id, ANN_MODELLEN);
}

void ann_skill_id(const char *name, uint8_t id[ANN_MODELLEN]) { scope_hash(ANN_SKILL_PREFIX, name, id); }
void ann_skill_index_id(uint8_t id[ANN_MODELLEN]) { scope_hash(ANN_SKILL_INDEX_STR, NULL, id); }

void ann_rep_id(const uint8_t provider[ANN_IDLEN], uint8_t id[ANN_MODELLEN])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, ANN_MODELLEN);
	crypto_generichash_update(&st, (const uint8_t *)ANN_REP_PREFIX, strlen(ANN_REP_PREFIX));
	crypto_generichash_update(&st, provider, ANN_IDLEN);
	crypto_generichash_final(&st, id, ANN_MODELLEN);
}

static int all_zero(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	for (size_t i = 0; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

static int rep_check(const ann_t *a, err_msg_t *e)
{
	uint8_t id[ANN_MODELLEN];
	ann_rep_id(a->rep_provider, id);
	if (memcmp(id, a->model_id, ANN_MODELLEN) != 0)
		return err_set(e, ERR_FORMAT, "scope id is not BLAKE2b-256(\"" ANN_REP_PREFIX "\" || provider)");
	if (memcmp(a->rep_provider, a->node_id, ANN_IDLEN) == 0)
		return err_set(e, ERR_FORMAT, "a digest about its own signer");
	if (a->rep_paid < 0)
		return err_set(e, ERR_RANGE, "negative amount paid %lld", (long long)a->rep_paid);
	if (a->rep_paid > 0 && (all_zero(a->rep_wallet, ANN_WALLETLEN) || all_zero(a->rep_provider_wallet, ANN_WALLETLEN)))
		return err_set(e, ERR_FORMAT, "a payment of %lld without both wallets", (long long)a->rep_paid);
	if ((uint64_t)a->rep_failures + a->rep_timeouts > a->rep_sessions)
		return err_set(e, ERR_RANGE, "%u failures + %u timeouts exceed %u sessions", a->rep_failures,
			a->rep_timeouts, a->rep_sessions);
	if (a->rep_n_channels > ANN_REP_MAX_CHANNELS)
		return err_set(e, ERR_RANGE, "%u channels cited (at most %d)", a->rep_n_channels, ANN_REP_MAX_CHANNELS);
	if ((a->rep_paid > 0) != (a->rep_n_channels > 0))
		return err_set(e, ERR_FORMAT, "%u channels cited for a payment of %lld (a payment cites 1..%d, none else)",
			a->rep_n_channels, (long long)a->rep_paid, ANN_REP_MAX_CHANNELS);
	for (int i = 0; i < a->rep_n_channels; i++) {
		if (all_zero(a->rep_channels[i], 32))
			return err_set(e, ERR_FORMAT, "channel %d is all zero", i);
		for (int j = 0; j < i; j++)
			if (!memcmp(a->rep_channels[i], a->rep_channels[j], 32))
				return err_set(e, ERR_FORMAT, "channel %d repeats channel %d", i, j);
	}
	return 0;
}

/* Strict UTF-8 without control characters (C0, DEL; tab and newline neither:
 * a description is one line). */
static int text_check(const char *s, size_t n, const char *what, err_msg_t *e)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return err_set(e, ERR_FORMAT, "%s byte %zu is control character 0x%02x", what, i, c);
		int k = unicode_valid_prefix((const uint8_t *)s + i, n - i);
		if (k <= 0)
			return err_set(e, ERR_FORMAT, "%s is not valid UTF-8 at byte %zu", what, i);
		i += (size_t)k;
	}
	return 0;
}

static int skill_check(const ann_t *a, err_msg_t *e)
{
	int rc = ann_skill_name_check(a->skill_name, e);
	if (rc)
		return rc;
	uint8_t id[ANN_MODELLEN];
	ann_skill_id(a->skill_name, id);
	if (memcmp(id, a->model_id, ANN_MODELLEN) != 0)
		return err_set(e, ERR_FORMAT, "scope id is not BLAKE2b-256(\"" ANN_SKILL_PREFIX "%s\")", a->skill_name);
	if (a->fee_call < 0 || a->price_out < 0)
		return err_set(e, ERR_RANGE, "negative skill price (fee %lld, per 1M output %lld)",
			(long long)a->fee_call, (long long)a->price_out);
	size_t n = strnlen(a->skill_desc, sizeof(a->skill_desc));
	if (n > ANN_MAX_SKILL_DESC)
		return err_set(e, ERR_RANGE, "skill description longer than %d bytes", ANN_MAX_SKILL_DESC);
	return text_check(a->skill_desc, n, "skill description", e);
}

static int index_check(const ann_t *a, err_msg_t *e)
{
	uint8_t id[ANN_MODELLEN];
	ann_skill_index_id(id);
	if (memcmp(id, a->model_id, ANN_MODELLEN) != 0)
		return err_set(e, ERR_FORMAT, "skill index record outside the index scope");
	if (a->n_skills == 0 || a->n_skills > ANN_MAX_SKILLS)
		return err_set(e, ERR_RANGE, "%u skill names (want 1..%d)", a->n_skills, ANN_MAX_SKILLS);
	for (int i = 0; i < a->n_skills; i++) {
		int rc = ann_skill_name_check(a->skills[i], e);
		if (rc)
			return rc;
		for (int j = 0; j < i; j++)
			if (!strcmp(a->skills[i], a->skills[j]))
				return err_set(e, ERR_FORMAT, "skill name %d repeats name %d", i, j);
	}
	return 0;
}

int ann_check(const ann_t *a, err_msg_t *e)
{
	if (a->timestamp_ms == 0)
		return err_set(e, ERR_RANGE, "timestamp 0");
	if (a->seq == 0)
		return err_set(e, ERR_RANGE, "sequence 0");
	if (a->kind == ANN_TOMBSTONE)
		return 0;
	if (a->kind == ANN_SKILL_INDEX)
		return index_check(a, e);
	if (a->kind == ANN_REP)
		return rep_check(a, e);
	if (a->kind != ANN_SHARD && a->kind != ANN_SKILL)
		return err_set(e, ERR_UNSUPPORTED, "unknown record kind %u", a->kind);
	if (a->kind == ANN_SHARD && a->layer_a >= a->layer_b)
		return err_set(e, ERR_RANGE, "layer span [%u,%u) is empty", a->layer_a, a->layer_b);
	if (a->kind == ANN_SHARD && a->layer_b > ANN_MAX_LAYER)
		return err_set(e, ERR_RANGE, "layer %u beyond %u", a->layer_b, ANN_MAX_LAYER);
	if (a->n_addrs == 0 || a->n_addrs > ANN_MAX_ADDRS)
		return err_set(e, ERR_RANGE, "%u addresses (want 1..%d)", a->n_addrs, ANN_MAX_ADDRS);
	for (int i = 0; i < a->n_addrs; i++) {
		int rc = addr_check(&a->addrs[i], i, e);
		if (rc)
			return rc;
		for (int j = 0; j < i; j++)
			if (a->addrs[j].family == a->addrs[i].family && a->addrs[j].port == a->addrs[i].port &&
			    memcmp(a->addrs[j].ip, a->addrs[i].ip, 16) == 0)
				return err_set(e, ERR_FORMAT, "address %d repeats address %d", i, j);
	}
	if (a->kind == ANN_SKILL)
		return skill_check(a, e);
	size_t n = strnlen(a->sw_version, sizeof(a->sw_version));
	if (n > ANN_MAX_SWVER)
		return err_set(e, ERR_RANGE, "software version longer than %d bytes", ANN_MAX_SWVER);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a->sw_version[i];
		if (c < 0x20 || c > 0x7e)
			return err_set(e, ERR_FORMAT, "software version byte %zu is 0x%02x (want printable ASCII)", i, c);
	}
	return 0;
}

/* ---- encode ------------------------------------------------------------- */

static size_t addrs_size(const ann_t *a)
{
	size_t n = 1;
	for (int i = 0; i < a->n_addrs; i++)
		n += a->addrs[i].family == 4 ? 7 : 19;
	return n;
}

static size_t body_size(const ann_t *a)
{
	if (a->kind == ANN_SHARD)
		return 32 + addrs_size(a) + 1 + strlen(a->sw_version);
	if (a->kind == ANN_SKILL)
		return 32 + 16 + ANN_WALLETLEN + addrs_size(a) + 1 + strlen(a->skill_name) + 1 + strlen(a->skill_desc);
	if (a->kind == ANN_SKILL_INDEX) {
		size_t n = 1;
		for (int i = 0; i < a->n_skills; i++)
			n += 1 + strlen(a->skills[i]);
		return n;
	}
	if (a->kind == ANN_REP)
		return ANN_MIN_REP_SIZE - ANN_HEAD_SIZE - ANN_SIGLEN + (size_t)a->rep_n_channels * 32;
	return 0;
}

static void put_addrs(wr_t *w, const ann_t *a)
{
	put_u8(w, a->n_addrs);
	for (int i = 0; i < a->n_addrs; i++) {
		put_u8(w, a->addrs[i].family);
		put_bytes(w, a->addrs[i].ip, a->addrs[i].family == 4 ? 4 : 16);
		put_u16(w, a->addrs[i].port);
	}
}

static void put_str8(wr_t *w, const char *s)
{
	size_t l = strlen(s);
	put_u8(w, (uint8_t)l);
	put_bytes(w, s, l);
}

/* The signed message: domain || network || record[0..n). */
static int sig_verify(const uint8_t *rec, size_t n, uint32_t network, const uint8_t *sig,
	const uint8_t *pub)
{
	uint8_t msg[DOMAIN_LEN + 4 + ANN_MAX_SIZE];
	if (n > ANN_MAX_SIZE)
		return -1;
	memcpy(msg, ANN_SIG_DOMAIN, DOMAIN_LEN);
	wr_t w = { msg + DOMAIN_LEN, 0 };
	put_u32(&w, network);
	memcpy(msg + DOMAIN_LEN + 4, rec, n);
	return crypto_sign_verify_detached(sig, msg, DOMAIN_LEN + 4 + n, pub);
}

int ann_encode_with(const ann_t *a, uint32_t network, ann_sign_cb sign, void *sign_ud,
	uint8_t *out, size_t cap, size_t *len, err_msg_t *e)
{
	*len = 0;
	if (sodium_init() < 0)
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	int rc = ann_check(a, e);
	if (rc)
		return rc;
	size_t total = ANN_HEAD_SIZE + body_size(a) + ANN_SIGLEN;
	if (cap < total)
		return err_set(e, ERR_INVAL, "record needs %zu bytes, buffer has %zu", total, cap);
	/* Sign into a staging buffer that starts with the domain, so the record
	 * bytes are written once and signed in place. */
	uint8_t msg[DOMAIN_LEN + 4 + ANN_MAX_SIZE];
	memcpy(msg, ANN_SIG_DOMAIN, DOMAIN_LEN);
	wr_t w = { msg + DOMAIN_LEN, 0 };
	put_u32(&w, network);
	put_bytes(&w, ANN_MAGIC, 4);
	put_u8(&w, ANN_VERSION);
	put_u8(&w, a->kind);
	put_u16(&w, 0);
	put_bytes(&w, a->node_id, ANN_IDLEN);
	put_u64(&w, a->timestamp_ms);
	put_u64(&w, a->seq);
	put_bytes(&w, a->model_id, ANN_MODELLEN);
	if (a->kind == ANN_SHARD) {
		put_u32(&w, a->layer_a);
		put_u32(&w, a->layer_b);
		put_u64(&w, a->price);
		put_u32(&w, a->throughput_milli);
		put_u32(&w, a->free_sessions);
		put_u64(&w, a->free_kv_bytes);
		put_addrs(&w, a);
		put_str8(&w, a->sw_version);
	} else if (a->kind == ANN_SKILL) {
		put_bytes(&w, a->skill_model, ANN_MODELLEN);
		put_u64(&w, (uint64_t)a->fee_call);
		put_u64(&w, (uint64_t)a->price_out);
		put_bytes(&w, a->skill_wallet, ANN_WALLETLEN);
		put_addrs(&w, a);
		put_str8(&w, a->skill_name);
		put_str8(&w, a->skill_desc);
	} else if (a->kind == ANN_SKILL_INDEX) {
		put_u8(&w, a->n_skills);
		for (int i = 0; i < a->n_skills; i++)
			put_str8(&w, a->skills[i]);
	} else if (a->kind == ANN_REP) {
		put_bytes(&w, a->rep_provider, ANN_IDLEN);
		put_bytes(&w, a->rep_provider_wallet, ANN_WALLETLEN);
		put_bytes(&w, a->rep_wallet, ANN_WALLETLEN);
		put_u64(&w, (uint64_t)a->rep_paid);
		put_u64(&w, a->rep_tokens);
		put_u32(&w, a->rep_sessions);
		put_u32(&w, a->rep_failures);
		put_u32(&w, a->rep_timeouts);
		put_u32(&w, a->rep_latency_us);
		put_bytes(&w, a->rep_receipts, 32);
		put_u8(&w, a->rep_n_channels);
		for (int i = 0; i < a->rep_n_channels; i++)
			put_bytes(&w, a->rep_channels[i], 32);
	}
	size_t signed_len = w.n - 4;   /* record bytes, without the network prefix */
	uint8_t sig[ANN_SIGLEN];
	sign(sign_ud, msg, DOMAIN_LEN + w.n, sig);
	const uint8_t *rec = msg + DOMAIN_LEN + 4;
	if (signed_len + ANN_SIGLEN != total)
		return err_set(e, ERR_INVAL, "internal size mismatch %zu != %zu", signed_len + ANN_SIGLEN, total);
	if (crypto_sign_verify_detached(sig, msg, DOMAIN_LEN + w.n, a->node_id) != 0)
		return err_set(e, ERR_INVAL, "the signer does not hold the record's node id key");
	memcpy(out, rec, signed_len);
	memcpy(out + signed_len, sig, ANN_SIGLEN);
	*len = total;
	return 0;
}

static void sk_sign(void *ud, const void *msg, size_t len, uint8_t sig[ANN_SIGLEN])
{
	crypto_sign_detached(sig, NULL, msg, len, ud);
}

int ann_encode(const ann_t *a, uint32_t network, const uint8_t sk[ANN_SKLEN],
	uint8_t *out, size_t cap, size_t *len, err_msg_t *e)
{
	*len = 0;
	if (memcmp(sk + 32, a->node_id, ANN_IDLEN) != 0)
		return err_set(e, ERR_INVAL, "secret key does not belong to the record's node id");
	return ann_encode_with(a, network, sk_sign, (void *)sk, out, cap, len, e);
}

/* ---- decode ------------------------------------------------------------- */

/* The address list (count, then each address); an error code (the reader's
 * sticky one is left to the caller) or 0. */
static int get_addrs(rd_t *r, ann_t *out)
{
	out->n_addrs = get_u8(r, "address count");
	if (!r->rc && (out->n_addrs == 0 || out->n_addrs > ANN_MAX_ADDRS))
		return err_set(r->e, ERR_RANGE, "%d addresses at offset %zu (want 1..%d)", out->n_addrs, r->off - 1,
			ANN_MAX_ADDRS);
	for (int i = 0; !r->rc && i < out->n_addrs; i++) {
		ann_addr_t *a = &out->addrs[i];
		a->family = get_u8(r, "address family");
		if (!r->rc && a->family != 4 && a->family != 6)
			return err_set(r->e, ERR_FORMAT, "address %d: family %u at offset %zu (want 4 or 6)", i, a->family,
				r->off - 1);
		get_bytes(r, a->ip, a->family == 4 ? 4 : 16, "address");
		a->port = get_u16(r, "port");
	}
	return 0;
}

/* A u8 length then that many bytes (at most max, no NUL) into dst[max + 1]. */
static int get_str8(rd_t *r, char *dst, size_t max, const char *what)
{
	uint8_t sl = get_u8(r, what);
	if (!r->rc && sl > max)
		return err_set(r->e, ERR_RANGE, "%s of %u bytes at offset %zu (at most %zu)", what, sl, r->off - 1, max);
	get_bytes(r, dst, sl, what);
	if (!r->rc && memchr(dst, 0, sl))
		return err_set(r->e, ERR_FORMAT, "NUL byte inside the %s", what);
	return 0;
}

int ann_parse_unverified(const uint8_t *buf, size_t len, ann_t *out, err_msg_t *e)
{
	memset(out, 0, sizeof(*out));
	if (len > ANN_MAX_SIZE)
		return err_set(e, ERR_FORMAT, "record of %zu bytes (at most %d)", len, ANN_MAX_SIZE);
	rd_t r = { buf, len, 0, e, 0 };
	const uint8_t *magic = take(&r, 4, "magic");
	if (magic && memcmp(magic, ANN_MAGIC, 4) != 0)
		return err_set(e, ERR_FORMAT, "bad magic %02x%02x%02x%02x", magic[0], magic[1], magic[2], magic[3]);
	uint8_t ver = get_u8(&r, "version");
	if (!r.rc && ver != ANN_VERSION)
		return err_set(e, ver > ANN_VERSION ? ERR_UNSUPPORTED : ERR_FORMAT, "record version %u (this build reads %d)", ver, ANN_VERSION);
	out->kind = get_u8(&r, "kind");
	if (!r.rc && out->kind != ANN_SHARD && out->kind != ANN_TOMBSTONE && out->kind != ANN_SKILL &&
	    out->kind != ANN_SKILL_INDEX && out->kind != ANN_REP) {
		int rc = err_set(e, ERR_UNSUPPORTED, "record kind %u not supported", out->kind);
		memset(out, 0, sizeof(*out));
		return rc;
	}
	uint16_t flags = get_u16(&r, "flags");
	if (!r.rc && flags != 0) {
		memset(out, 0, sizeof(*out));
		return err_set(e, ERR_FORMAT, "reserved flags 0x%04x set (offset 6)", flags);
	}
	get_bytes(&r, out->node_id, ANN_IDLEN, "node id");
	out->timestamp_ms = get_u64(&r, "timestamp");
	out->seq = get_u64(&r, "sequence");
	get_bytes(&r, out->model_id, ANN_MODELLEN, "model id");
	int rc = 0;
	if (out->kind == ANN_SHARD) {
		out->layer_a = get_u32(&r, "layer a");
		out->layer_b = get_u32(&r, "layer b");
		out->price = get_u64(&r, "price");
		out->throughput_milli = get_u32(&r, "throughput");
		out->free_sessions = get_u32(&r, "free sessions");
		out->free_kv_bytes = get_u64(&r, "free KV bytes");
		rc = get_addrs(&r, out);
		if (!rc)
			rc = get_str8(&r, out->sw_version, ANN_MAX_SWVER, "software version");
	} else if (out->kind == ANN_SKILL) {
		get_bytes(&r, out->skill_model, ANN_MODELLEN, "skill model id");
		out->fee_call = (int64_t)get_u64(&r, "fee per call");
		out->price_out = (int64_t)get_u64(&r, "price per 1M output tokens");
		get_bytes(&r, out->skill_wallet, ANN_WALLETLEN, "skill wallet");
		rc = get_addrs(&r, out);
		if (!rc)
			rc = get_str8(&r, out->skill_name, ANN_MAX_SKILL_NAME, "skill name");
		if (!rc)
			rc = get_str8(&r, out->skill_desc, ANN_MAX_SKILL_DESC, "skill description");
	} else if (out->kind == ANN_SKILL_INDEX) {
		out->n_skills = get_u8(&r, "skill count");
		if (!r.rc && (out->n_skills == 0 || out->n_skills > ANN_MAX_SKILLS))
			rc = err_set(e, ERR_RANGE, "%u skill names at offset %zu (want 1..%d)", out->n_skills, r.off - 1,
				ANN_MAX_SKILLS);
		for (int i = 0; !rc && !r.rc && i < out->n_skills; i++)
			rc = get_str8(&r, out->skills[i], ANN_MAX_SKILL_NAME, "skill name");
	} else if (out->kind == ANN_REP) {
		get_bytes(&r, out->rep_provider, ANN_IDLEN, "provider node id");
		get_bytes(&r, out->rep_provider_wallet, ANN_WALLETLEN, "provider wallet");
		get_bytes(&r, out->rep_wallet, ANN_WALLETLEN, "reporter wallet");
		uint64_t paid = get_u64(&r, "amount paid");
		if (!r.rc && paid > (uint64_t)INT64_MAX)
			rc = err_set(e, ERR_RANGE, "amount paid %llu at offset %zu beyond the largest amount",
				(unsigned long long)paid, r.off - 8);
		out->rep_paid = (int64_t)(paid & (uint64_t)INT64_MAX);
		out->rep_tokens = get_u64(&r, "tokens");
		out->rep_sessions = get_u32(&r, "sessions");
		out->rep_failures = get_u32(&r, "failures");
		out->rep_timeouts = get_u32(&r, "timeouts");
		out->rep_latency_us = get_u32(&r, "latency");
		get_bytes(&r, out->rep_receipts, 32, "receipts hash");
		out->rep_n_channels = get_u8(&r, "channel count");
		if (!rc && !r.rc && out->rep_n_channels > ANN_REP_MAX_CHANNELS)
			rc = err_set(e, ERR_RANGE, "%u channels at offset %zu (at most %d)", out->rep_n_channels, r.off - 1,
				ANN_REP_MAX_CHANNELS);
		for (int i = 0; !rc && !r.rc && i < out->rep_n_channels; i++)
			get_bytes(&r, out->rep_channels[i], 32, "channel id");
	}
	if (rc) {
		memset(out, 0, sizeof(*out));
		return rc;
	}
	take(&r, ANN_SIGLEN, "signature");
	if (r.rc) {
		memset(out, 0, sizeof(*out));
		return r.rc;
	}
	if (r.off != len) {
		memset(out, 0, sizeof(*out));
		return err_set(e, ERR_FORMAT, "%zu trailing bytes after the signature (offset %zu)", len - r.off, r.off);
	}
	rc = ann_check(out, e);
	if (rc)
		memset(out, 0, sizeof(*out));
	return rc;
}

int ann_decode(const uint8_t *buf, size_t len, uint32_t network, ann_t *out, err_msg_t *e)
{
	int rc = ann_parse_unverified(buf, len, out, e);
	if (rc)
		return rc;
	if (sodium_init() < 0) {
		memset(out, 0, sizeof(*out));
		return err_set(e, ERR_UNSUPPORTED, "libsodium failed to initialise");
	}
	if (sig_verify(buf, len - ANN_SIGLEN, network, buf + len - ANN_SIGLEN, out->node_id) != 0) {
		memset(out, 0, sizeof(*out));
		return err_set(e, ERR_FORMAT, "bad signature (or another network, or another node's key)");
	}
	return 0;
}

int ann_check_time(const ann_t *a, uint64_t now_ms, uint64_t stale_ms, uint64_t skew_ms, err_msg_t *e)
{
	/* Written without sums that could wrap: timestamps are untrusted u64s. */
	if (a->timestamp_ms > now_ms && a->timestamp_ms - now_ms > skew_ms)
		return err_set(e, ERR_RANGE, "timestamp %llu ms is %llu ms in the future (tolerance %llu ms)",
			(unsigned long long)a->timestamp_ms, (unsigned long long)(a->timestamp_ms - now_ms),
			(unsigned long long)skew_ms);
	if (a->timestamp_ms < now_ms && now_ms - a->timestamp_ms > stale_ms)
		return err_set(e, ERR_RANGE, "record is stale: %llu ms old (bound %llu ms)",
			(unsigned long long)(now_ms - a->timestamp_ms), (unsigned long long)stale_ms);
	return 0;
}

void ann_addr_set(ann_addr_t *addr, int family, const void *ip, uint16_t port)
{
	memset(addr, 0, sizeof(*addr));
	addr->family = (uint8_t)family;
	addr->port = port;
	memcpy(addr->ip, ip, family == 4 ? 4 : 16);
}

char *ann_addr_str(const ann_addr_t *addr, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (addr->family == 4) {
		inet_ntop(AF_INET, addr->ip, ip, sizeof(ip));
		snprintf(out, cap, "%s:%u", ip, addr->port);
	} else {
		inet_ntop(AF_INET6, addr->ip, ip, sizeof(ip));
		snprintf(out, cap, "[%s]:%u", ip, addr->port);
	}
	return out;
}
