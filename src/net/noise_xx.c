/* noise_xx.c - Noise XX with node identities (see noise_xx.h). */
#include "net/noise_xx.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

enum { XX_RUN = 0, XX_DONE, XX_FAILED };

struct noise_xx {
	noise_hs_t *hs;              /* NULL once failed */
	const ident_t *id;
	uint8_t initiator;
	uint8_t state;
	uint8_t started;             /* initiator: message 1 sent */
	uint8_t has_expect;
	uint8_t split;
	uint8_t expect[IDENT_PUBLEN];
	uint8_t peer[IDENT_PUBLEN];
	uint8_t hash[NOISE_HASHLEN];
	/* the message being received: u16 length, then the body */
	uint8_t buf[2 + NOISE_XX_MSG2];
	size_t have, need;
};

static const size_t msg_len[3] = { NOISE_XX_MSG1, NOISE_XX_MSG2, NOISE_XX_MSG3 };

size_t noise_xx_prologue(const char *network, uint8_t out[NOISE_XX_PROLOGUE_MAX])
{
	size_t n = network ? strnlen(network, NOISE_XX_NETWORK_MAX + 1) : 0;
	if (n == 0 || n > NOISE_XX_NETWORK_MAX)
		return 0;
	size_t t = sizeof(NOISE_XX_PROLOGUE_TAG) - 1;
	memcpy(out, NOISE_XX_PROLOGUE_TAG, t);
	out[t] = (uint8_t)n;
	memcpy(out + t + 1, network, n);
	return t + 1 + n;
}

#define SIGMSG_LEN (sizeof(NOISE_XX_SIG_CONTEXT) - 1 + 1 + NOISE_DHLEN + NOISE_HASHLEN)

static void sig_msg(int role, const uint8_t static_pub[NOISE_DHLEN], const uint8_t h[NOISE_HASHLEN],
	uint8_t m[SIGMSG_LEN])
{
	size_t c = sizeof(NOISE_XX_SIG_CONTEXT) - 1;
	memcpy(m, NOISE_XX_SIG_CONTEXT, c);
	m[c] = (uint8_t)role;
	memcpy(m + c + 1, static_pub, NOISE_DHLEN);
	memcpy(m + c + 1 + NOISE_DHLEN, h, NOISE_HASHLEN);
}

void noise_xx_id_payload(const ident_t *id, int role, const uint8_t static_pub[NOISE_DHLEN],
	const uint8_t h[NOISE_HASHLEN], uint8_t out[NOISE_XX_ID_PAYLOAD])
{
	uint8_t m[SIGMSG_LEN];
	sig_msg(role, static_pub, h, m);
	out[0] = NOISE_XX_ID_VERSION;
	memcpy(out + 1, ident_pub(id), IDENT_PUBLEN);
	ident_sign(id, m, sizeof(m), out + 1 + IDENT_PUBLEN);
}

int noise_xx_id_verify(const uint8_t *payload, size_t len, int role,
	const uint8_t static_pub[NOISE_DHLEN], const uint8_t h[NOISE_HASHLEN],
	uint8_t node_id[IDENT_PUBLEN], err_msg_t *e)
{
	const char *who = role == NOISE_XX_ROLE_INITIATOR ? "initiator" : "responder";
	if (len != NOISE_XX_ID_PAYLOAD)
		return err_set(e, ERR_FORMAT, "the %s's identity proof is %zu bytes, expected %d",
			who, len, NOISE_XX_ID_PAYLOAD);
	if (payload[0] != NOISE_XX_ID_VERSION)
		return err_set(e, ERR_FORMAT, "the %s's identity proof has version %u, expected %d",
			who, payload[0], NOISE_XX_ID_VERSION);
	uint8_t m[SIGMSG_LEN];
	sig_msg(role, static_pub, h, m);
	if (ident_verify(payload + 1, m, sizeof(m), payload + 1 + IDENT_PUBLEN) != 0) {
		char s[IDENT_SHORT_STRLEN];
		return err_set(e, ERR_FORMAT, "the %s's identity signature does not verify: node %s did not "
			"certify this handshake's Noise key (forged, replayed or misbound proof)",
			who, ident_id_short(payload + 1, s));
	}
	memcpy(node_id, payload + 1, IDENT_PUBLEN);
	return 0;
}

int noise_xx_new(const ident_t *id, const char *network, int initiator, noise_xx_t **out,
	err_msg_t *e)
{
	*out = NULL;
	uint8_t pro[NOISE_XX_PROLOGUE_MAX];
	size_t plen = noise_xx_prologue(network, pro);
	if (plen == 0)
		return err_set(e, ERR_INVAL, "network id must be 1 to %d bytes", NOISE_XX_NETWORK_MAX);
	noise_xx_t *x = calloc(1, sizeof(*x));
	if (!x)
		return err_set(e, ERR_NOMEM, "out of memory");
	noise_hs_cfg_t c = {
		.protocol = NOISE_XX_PROTOCOL,
		.initiator = initiator,
		.prologue = pro,
		.prologue_len = plen,
		.s_priv = ident_dh_priv(id),
	};
	int rc = noise_hs_new(&c, &x->hs, e);
	if (rc) {
		free(x);
		return rc;
	}
	x->id = id;
	x->initiator = initiator ? 1 : 0;
	x->need = 2;
	*out = x;
	return 0;
}

void noise_xx_free(noise_xx_t *x)
{
	if (!x)
		return;
	noise_hs_free(x->hs);
	sodium_memzero(x, sizeof(*x));
	free(x);
}

void noise_xx_expect_peer(noise_xx_t *x, const uint8_t peer_id[IDENT_PUBLEN])
{
	memcpy(x->expect, peer_id, IDENT_PUBLEN);
	x->has_expect = 1;
}

static int xx_fail(noise_xx_t *x, int rc)
{
	x->state = XX_FAILED;
	noise_hs_free(x->hs);
	x->hs = NULL;
	sodium_memzero(x->buf, sizeof(x->buf));
	return rc;
}

/* Writes our next message (with its identity proof unless it is message 1)
 * as u16 length || body into out. */
static int xx_write(noise_xx_t *x, uint8_t *out, size_t *out_len, err_msg_t *e)
{
	int idx = noise_hs_msg_index(x->hs);
	size_t a = 0, b = 0;
	int rc = noise_hs_write_tokens(x->hs, out + 2, NOISE_XX_MSG2, &a, e);
	if (rc)
		return rc;
	if (idx == 0) {
		rc = noise_hs_write_payload(x->hs, NULL, 0, out + 2 + a, NOISE_XX_MSG2 - a, &b, e);
	} else {
		uint8_t pl[NOISE_XX_ID_PAYLOAD];
		noise_xx_id_payload(x->id, x->initiator ? NOISE_XX_ROLE_INITIATOR : NOISE_XX_ROLE_RESPONDER,
			noise_hs_local_static(x->hs), noise_hs_hash(x->hs), pl);
		rc = noise_hs_write_payload(x->hs, pl, sizeof(pl), out + 2 + a, NOISE_XX_MSG2 - a, &b, e);
	}
	if (rc)
		return rc;
	if (a + b != msg_len[idx])   /* the sizes are fixed by the pattern */
		return err_set(e, ERR_INVAL, "internal: message %d is %zu bytes", idx + 1, a + b);
	out[0] = (uint8_t)(a + b);
	out[1] = (uint8_t)((a + b) >> 8);
	*out_len = 2 + a + b;
	return 0;
}

/* Processes the complete message in x->buf. */
static int xx_read(noise_xx_t *x, err_msg_t *e)
{
	int idx = noise_hs_msg_index(x->hs);
	const uint8_t *body = x->buf + 2;
	size_t len = x->need - 2, used = 0, plen = 0;
	uint8_t pl[NOISE_XX_MSG2];
	int rc = noise_hs_read_tokens(x->hs, body, len, &used, e);
	if (rc)
		return rc;
	uint8_t h[NOISE_HASHLEN];
	memcpy(h, noise_hs_hash(x->hs), NOISE_HASHLEN);
	rc = noise_hs_read_payload(x->hs, body + used, len - used, pl, sizeof(pl), &plen, e);
	if (rc)
		return rc;
	if (idx == 0) {
		if (plen != 0)
			return err_set(e, ERR_FORMAT, "handshake message 1 carries a %zu-byte payload (must be empty)", plen);
		return 0;
	}
	int role = idx == 1 ? NOISE_XX_ROLE_RESPONDER : NOISE_XX_ROLE_INITIATOR;
	rc = noise_xx_id_verify(pl, plen, role, noise_hs_remote_static(x->hs), h, x->peer, e);
	if (rc)
		return rc;
	if (x->has_expect && sodium_memcmp(x->peer, x->expect, IDENT_PUBLEN) != 0) {
		char a[IDENT_SHORT_STRLEN], b[IDENT_SHORT_STRLEN];
		return err_set(e, ERR_INVAL, "the peer is node %s, not the expected node %s",
			ident_id_short(x->peer, a), ident_id_short(x->expect, b));
	}
	return 0;
}

int noise_xx_step(noise_xx_t *x, const uint8_t *in, size_t n, size_t *consumed,
	uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e)
{
	*consumed = 0;
	*out_len = 0;
	if (x->state == XX_FAILED)
		return err_set(e, ERR_INVAL, "the handshake already failed");
	if (x->state == XX_DONE)
		return 0;
	if (cap < NOISE_XX_OUT_MAX)
		return err_set(e, ERR_FULL, "output buffer of %zu bytes, need %d", cap, NOISE_XX_OUT_MAX);
	int rc;
	if (x->initiator && !x->started) {
		rc = xx_write(x, out, out_len, e);
		if (rc)
			return xx_fail(x, rc);
		x->started = 1;
		return 0;
	}
	size_t pos = 0;
	while (pos < n) {
		size_t take = x->need - x->have;
		if (take > n - pos)
			take = n - pos;
		memcpy(x->buf + x->have, in + pos, take);
		x->have += take;
		pos += take;
		if (x->have < x->need)
			break;
		if (x->need == 2) {
			/* The length is checked before anything is buffered. */
			int idx = noise_hs_msg_index(x->hs);
			size_t len = (size_t)x->buf[0] | (size_t)x->buf[1] << 8;
			if (noise_hs_action(x->hs) != NOISE_ACTION_READ) {
				*consumed = pos;
				return xx_fail(x, err_set(e, ERR_FORMAT, "the peer sent data out of turn"));
			}
			if (len != msg_len[idx]) {
				*consumed = pos;
				return xx_fail(x, err_set(e, ERR_FORMAT, "handshake message %d announces %zu bytes, "
					"expected %zu", idx + 1, len, msg_len[idx]));
			}
			x->need = 2 + len;
			continue;
		}
		rc = xx_read(x, e);
		x->have = 0;
		x->need = 2;
		if (rc) {
			*consumed = pos;
			return xx_fail(x, rc);
		}
		if (noise_hs_action(x->hs) == NOISE_ACTION_WRITE) {
			rc = xx_write(x, out, out_len, e);
			if (rc) {
				*consumed = pos;
				return xx_fail(x, rc);
			}
		}
		if (noise_hs_action(x->hs) == NOISE_ACTION_SPLIT) {
			memcpy(x->hash, noise_hs_hash(x->hs), NOISE_HASHLEN);
			x->state = XX_DONE;
		}
		break;   /* one message per step: at most one comes out */
	}
	*consumed = pos;
	return 0;
}

int noise_xx_done(const noise_xx_t *x) { return x->state == XX_DONE; }
int noise_xx_failed(const noise_xx_t *x) { return x->state == XX_FAILED; }
const uint8_t *noise_xx_peer_id(const noise_xx_t *x) { return x->state == XX_DONE ? x->peer : NULL; }
const uint8_t *noise_xx_hash(const noise_xx_t *x) { return x->state == XX_DONE ? x->hash : NULL; }

int noise_xx_split(noise_xx_t *x, noise_cipher_t *tx, noise_cipher_t *rx)
{
	if (x->state != XX_DONE || x->split || !x->hs)
		return ERR_INVAL;
	int rc = noise_hs_split(x->hs, tx, rx);
	if (rc == 0) {
		x->split = 1;
		noise_hs_free(x->hs);   /* nothing of it is needed any more */
		x->hs = NULL;
	}
	return rc;
}
