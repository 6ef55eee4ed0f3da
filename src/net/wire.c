/* wire.c - the message codec (see wire.h and docs/PROTOCOL.md). Each
 * message has one validator, used by both the encoder and the decoder, so
 * the two accept exactly the same set. */
#include "net/wire.h"

#include <string.h>

const char *wire_type_name(int type)
{
	switch (type) {
	case WIRE_HELLO: return "HELLO";
	case WIRE_PING: return "PING";
	case WIRE_PONG: return "PONG";
	case WIRE_ERROR: return "ERROR";
	case WIRE_OPEN_SESSION: return "OPEN_SESSION";
	case WIRE_OPEN_OK: return "OPEN_OK";
	case WIRE_OPEN_ERR: return "OPEN_ERR";
	case WIRE_FORWARD: return "FORWARD";
	case WIRE_FORWARD_RESULT: return "FORWARD_RESULT";
	case WIRE_CLOSE_SESSION: return "CLOSE_SESSION";
	case WIRE_PROBE_REQ: return "PROBE_REQ";
	case WIRE_PROBE_DATA: return "PROBE_DATA";
	case WIRE_PROBE_ACK: return "PROBE_ACK";
	case WIRE_LEDGER_REQ: return "LEDGER_REQ";
	case WIRE_LEDGER_RESP: return "LEDGER_RESP";
	case WIRE_PAY_TERMS_REQ: return "PAY_TERMS_REQ";
	case WIRE_PAY_TERMS: return "PAY_TERMS";
	case WIRE_PAY_OPEN: return "PAY_OPEN";
	case WIRE_VOUCHER: return "VOUCHER";
	case WIRE_RECEIPT: return "RECEIPT";
	default: return "unknown";
	}
}

/* ---- validators ---- */

static int str_check(const char *s, size_t n, int min, int allow_space, const char *msg,
	const char *field, err_msg_t *e)
{
	if ((int)n < min)
		return err_set(e, ERR_FORMAT, "%s: %s is empty", msg, field);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c > 0x7e || c < (allow_space ? 0x20 : 0x21))
			return err_set(e, ERR_FORMAT, "%s: %s byte %zu is 0x%02x (printable ASCII only%s)",
				msg, field, i, c, allow_space ? "" : ", no space");
	}
	return 0;
}

static int check_hello(const wire_hello_t *h, err_msg_t *e)
{
	if (h->min_version < 1 || h->min_version > h->max_version)
		return err_set(e, ERR_FORMAT, "HELLO: version range [%u, %u] is empty or starts at 0",
			h->min_version, h->max_version);
	if (h->version < h->min_version || h->version > h->max_version)
		return err_set(e, ERR_FORMAT, "HELLO: version %u is outside its own range [%u, %u]",
			h->version, h->min_version, h->max_version);
	size_t ns = strnlen(h->software, WIRE_MAX_SOFTWARE + 1);
	size_t nn = strnlen(h->network, WIRE_MAX_NETWORK + 1);
	if (ns > WIRE_MAX_SOFTWARE)
		return err_set(e, ERR_RANGE, "HELLO: software version longer than %d bytes", WIRE_MAX_SOFTWARE);
	if (nn > WIRE_MAX_NETWORK)
		return err_set(e, ERR_RANGE, "HELLO: network id longer than %d bytes", WIRE_MAX_NETWORK);
	int rc = str_check(h->software, ns, 0, 1, "HELLO", "software version", e);
	if (rc == 0)
		rc = str_check(h->network, nn, 1, 0, "HELLO", "network id", e);
	return rc;
}

static int check_error(const wire_error_t *x, int type, err_msg_t *e)
{
	size_t n = strnlen(x->msg, WIRE_MAX_ERRMSG + 1);
	if (n > WIRE_MAX_ERRMSG)
		return err_set(e, ERR_RANGE, "%s: text longer than %d bytes", wire_type_name(type), WIRE_MAX_ERRMSG);
	if (type == WIRE_ERROR && x->session_id != 0)
		return err_set(e, ERR_FORMAT, "ERROR carries no session id (must be 0)");
	return 0;
}

static int check_open(const wire_open_t *o, err_msg_t *e)
{
	if (o->layer_a >= o->layer_b || o->layer_b > WIRE_MAX_LAYER)
		return err_set(e, ERR_RANGE, "OPEN_SESSION: layer span [%u, %u) is empty or beyond %d",
			o->layer_a, o->layer_b, WIRE_MAX_LAYER);
	if (o->max_len < 1 || o->max_len > WIRE_MAX_CTX)
		return err_set(e, ERR_RANGE, "OPEN_SESSION: max_len %u is outside 1..%u", o->max_len, WIRE_MAX_CTX);
	if (o->enc > WIRE_ENC_Q8)
		return err_set(e, ERR_UNSUPPORTED, "OPEN_SESSION: unknown hidden-state encoding %u", o->enc);
	if (o->kv_type != WIRE_KV_F32 && o->kv_type != WIRE_KV_F16 && o->kv_type != WIRE_KV_Q8_0)
		return err_set(e, ERR_UNSUPPORTED, "OPEN_SESSION: unknown KV type %u", o->kv_type);
	return 0;
}

static int check_open_ok(const wire_open_ok_t *o, err_msg_t *e)
{
	if (o->max_len < 1 || o->max_len > WIRE_MAX_CTX)
		return err_set(e, ERR_RANGE, "OPEN_OK: max_len %u is outside 1..%u", o->max_len, WIRE_MAX_CTX);
	return 0;
}

#define FORWARD_HDR (1 + 8 + 4 + 4 + 4 + 1)
#define PROBE_DATA_HDR (1 + 8 + 1 + 4)

static int check_forward(const wire_forward_t *f, int type, err_msg_t *e)
{
	const char *t = wire_type_name(type);
	if (f->enc > WIRE_ENC_Q8)
		return err_set(e, ERR_UNSUPPORTED, "%s: unknown hidden-state encoding %u", t, f->enc);
	if (f->n_tokens < 1 || f->n_tokens > WIRE_MAX_TOKENS)
		return err_set(e, ERR_RANGE, "%s: n_tokens %u is outside 1..%d", t, f->n_tokens, WIRE_MAX_TOKENS);
	if (f->dim < 1 || f->dim > WIRE_MAX_DIM)
		return err_set(e, ERR_RANGE, "%s: dim %u is outside 1..%d", t, f->dim, WIRE_MAX_DIM);
	if (f->enc == WIRE_ENC_Q8 && f->dim % WIRE_Q8_BLOCK)
		return err_set(e, ERR_FORMAT, "%s: dim %u is not a multiple of %d (Q8 blocks)", t, f->dim, WIRE_Q8_BLOCK);
	if ((uint64_t)f->start_pos + f->n_tokens > WIRE_MAX_CTX)
		return err_set(e, ERR_RANGE, "%s: positions %u + %u go beyond %u", t, f->start_pos, f->n_tokens, WIRE_MAX_CTX);
	size_t need = wire_hidden_size(f->enc, f->n_tokens, f->dim);
	if (need > WIRE_MAX_MSG - FORWARD_HDR)
		return err_set(e, ERR_RANGE, "%s: %u x %u hidden values take %zu bytes, more than a message holds (%u)",
			t, f->n_tokens, f->dim, need, (unsigned)(WIRE_MAX_MSG - FORWARD_HDR));
	if (f->data_len != need)
		return err_set(e, ERR_FORMAT, "%s: %zu bytes of hidden states, the shape %u x %u (%s) needs %zu",
			t, f->data_len, f->n_tokens, f->dim, f->enc == 0 ? "f32" : f->enc == 1 ? "f16" : "q8", need);
	return 0;
}

static int check_probe(const wire_probe_t *p, int type, err_msg_t *e)
{
	const char *t = wire_type_name(type);
	if (p->n_bytes > WIRE_MAX_PROBE)
		return err_set(e, ERR_RANGE, "%s: %u bytes, the limit is %u", t, p->n_bytes, (unsigned)WIRE_MAX_PROBE);
	if (type == WIRE_PROBE_DATA) {
		if (p->flags & ~WIRE_PROBE_ACK_WANTED)
			return err_set(e, ERR_FORMAT, "PROBE_DATA: reserved flag bits 0x%02x set", p->flags);
	} else if (p->flags) {
		return err_set(e, ERR_FORMAT, "%s: flags must be 0", t);
	}
	return 0;
}

/* Bytes of each op's fields in a request and of its result in a response. */
static size_t lreq_fields(int op)
{
	switch (op) {
	case WIRE_LOP_DEPOSIT: case WIRE_LOP_WITHDRAW: case WIRE_LOP_STAKE: case WIRE_LOP_UNSTAKE:
		return WIRE_KEYLEN + 8;
	case WIRE_LOP_RESERVE: return WIRE_KEYLEN + 8 + 8 + WIRE_KEYLEN;
	case WIRE_LOP_REDEEM: return WIRE_VOUCHER_LEN;
	case WIRE_LOP_CLOSE: return WIRE_KEYLEN + 1;
	case WIRE_LOP_SLASH: return WIRE_KEYLEN + 8 + 2 * WIRE_KEYLEN;
	case WIRE_LOP_ACCOUNT: case WIRE_LOP_CHANNEL: return WIRE_KEYLEN;
	default: return 0;
	}
}

#define LCHAN_SIZE (3 * WIRE_KEYLEN + 5 * 8 + 8 + 1)
#define LREQ_HDR (1 + 8 + 1 + 8 + WIRE_KEYLEN)

static size_t lresp_fields(int op, int status)
{
	if (status)
		return 0;
	switch (op) {
	case WIRE_LOP_DEPOSIT: case WIRE_LOP_WITHDRAW: case WIRE_LOP_STAKE: case WIRE_LOP_UNSTAKE:
	case WIRE_LOP_ACCOUNT: return 24;
	case WIRE_LOP_RESERVE: return WIRE_KEYLEN;
	case WIRE_LOP_REDEEM: case WIRE_LOP_SLASH: return 8;
	default: return LCHAN_SIZE;
	}
}

size_t wire_ledger_req_body_size(int op)
{
	size_t f = lreq_fields(op);
	return f ? LREQ_HDR + f : 0;
}

static int check_lreq(const wire_ledger_req_t *q, err_msg_t *e)
{
	if (q->op < 1 || q->op > WIRE_LOP_MAX)
		return err_set(e, ERR_UNSUPPORTED, "LEDGER_REQ: unknown op %u", q->op);
	if (q->amount < 0)
		return err_set(e, ERR_RANGE, "LEDGER_REQ: amount %lld is negative", (long long)q->amount);
	if (q->expiry < 0)
		return err_set(e, ERR_RANGE, "LEDGER_REQ: expiry %lld is negative", (long long)q->expiry);
	if (q->party > 1)
		return err_set(e, ERR_FORMAT, "LEDGER_REQ: party %u is neither 0 (buyer) nor 1 (provider)", q->party);
	return 0;
}

static int check_lresp(const wire_ledger_resp_t *p, err_msg_t *e)
{
	if (p->op < 1 || p->op > WIRE_LOP_MAX)
		return err_set(e, ERR_UNSUPPORTED, "LEDGER_RESP: unknown op %u", p->op);
	size_t n = strnlen(p->msg, WIRE_MAX_ERRMSG + 1);
	if (n > WIRE_MAX_ERRMSG)
		return err_set(e, ERR_RANGE, "LEDGER_RESP: text longer than %d bytes", WIRE_MAX_ERRMSG);
	const wire_ledger_chan_t *c = &p->ch;
	if (p->balance < 0 || p->stake < 0 || p->reserved < 0 || p->amount < 0 || c->budget < 0 ||
	    c->redeemed < 0 || c->refunded < 0 || c->expiry < 0 || c->close_at < 0)
		return err_set(e, ERR_RANGE, "LEDGER_RESP: a negative amount or time");
	if (c->state > 2)
		return err_set(e, ERR_FORMAT, "LEDGER_RESP: channel state %u is not 0, 1 or 2", c->state);
	return 0;
}

static int check_pay(const wire_pay_t *p, int type, err_msg_t *e)
{
	const char *t = wire_type_name(type);
	if (type == WIRE_PAY_TERMS || type == WIRE_PAY_OPEN) {
		if (p->price_in < 0 || p->price_out < 0)
			return err_set(e, ERR_RANGE, "%s: negative price", t);
		if (p->chunk < 1)
			return err_set(e, ERR_RANGE, "%s: chunk 0 (tokens per voucher must be >= 1)", t);
	}
	if (type == WIRE_PAY_TERMS && (p->flags & ~WIRE_PAY_REQUIRED))
		return err_set(e, ERR_FORMAT, "PAY_TERMS: reserved flag bits 0x%02x set", p->flags & ~WIRE_PAY_REQUIRED);
	if (type == WIRE_PAY_OPEN && (p->budget < 1 || p->expiry < 0))
		return err_set(e, ERR_RANGE, "PAY_OPEN: budget must be > 0 and expiry >= 0");
	return 0;
}

static int check_msg(const wire_msg_t *m, err_msg_t *e)
{
	switch (m->type) {
	case WIRE_HELLO: return check_hello(&m->u.hello, e);
	case WIRE_PING:
	case WIRE_PONG: return 0;
	case WIRE_ERROR:
	case WIRE_OPEN_ERR: return check_error(&m->u.error, m->type, e);
	case WIRE_OPEN_SESSION: return check_open(&m->u.open, e);
	case WIRE_OPEN_OK: return check_open_ok(&m->u.open_ok, e);
	case WIRE_FORWARD:
	case WIRE_FORWARD_RESULT: return check_forward(&m->u.forward, m->type, e);
	case WIRE_CLOSE_SESSION: return 0;
	case WIRE_PROBE_REQ:
	case WIRE_PROBE_DATA:
	case WIRE_PROBE_ACK: return check_probe(&m->u.probe, m->type, e);
	case WIRE_LEDGER_REQ: return check_lreq(&m->u.lreq, e);
	case WIRE_LEDGER_RESP: return check_lresp(&m->u.lresp, e);
	case WIRE_PAY_TERMS_REQ:
	case WIRE_PAY_TERMS:
	case WIRE_PAY_OPEN:
	case WIRE_VOUCHER:
	case WIRE_RECEIPT: return check_pay(&m->u.pay, m->type, e);
	default:
		return err_set(e, ERR_UNSUPPORTED, "unknown message type 0x%02x", m->type);
	}
}

/* ---- encoding ---- */

static size_t size_unchecked(const wire_msg_t *m)
{
	switch (m->type) {
	case WIRE_HELLO:
		return 1 + 6 + 8 + 1 + strnlen(m->u.hello.software, WIRE_MAX_SOFTWARE) +
			1 + strnlen(m->u.hello.network, WIRE_MAX_NETWORK);
	case WIRE_PING:
	case WIRE_PONG: return 1 + 16;
	case WIRE_ERROR: return 1 + 2 + 2 + strnlen(m->u.error.msg, WIRE_MAX_ERRMSG);
	case WIRE_OPEN_ERR: return 1 + 8 + 2 + 2 + strnlen(m->u.error.msg, WIRE_MAX_ERRMSG);
	case WIRE_OPEN_SESSION: return 1 + 8 + WIRE_MODEL_ID_LEN + 12 + 2;
	case WIRE_OPEN_OK: return 1 + 8 + 4;
	case WIRE_FORWARD:
	case WIRE_FORWARD_RESULT: return FORWARD_HDR + m->u.forward.data_len;
	case WIRE_CLOSE_SESSION: return 1 + 8 + 2;
	case WIRE_PROBE_REQ:
	case WIRE_PROBE_ACK: return 1 + 8 + 4;
	case WIRE_PROBE_DATA: return PROBE_DATA_HDR + m->u.probe.n_bytes;
	case WIRE_LEDGER_REQ: return LREQ_HDR + lreq_fields(m->u.lreq.op) + WIRE_SIGLEN;
	case WIRE_PAY_TERMS_REQ: return 1 + 8;
	case WIRE_PAY_TERMS: return 1 + 8 + WIRE_KEYLEN + 16 + 4 + 1;
	case WIRE_PAY_OPEN: return 1 + 8 + 2 * WIRE_KEYLEN + 32 + 8;
	case WIRE_VOUCHER: return 1 + 8 + WIRE_VOUCHER_LEN;
	case WIRE_RECEIPT: return 1 + 8 + WIRE_RECEIPT_LEN;
	case WIRE_LEDGER_RESP:
		return 1 + 8 + 1 + 2 + 2 + strnlen(m->u.lresp.msg, WIRE_MAX_ERRMSG) +
			lresp_fields(m->u.lresp.op, m->u.lresp.status);
	default: return 0;
	}
}

size_t wire_encoded_size(const wire_msg_t *m)
{
	if (check_msg(m, NULL) != 0)
		return 0;
	return size_unchecked(m);
}

typedef struct wr {
	uint8_t *p;
	size_t off;
} wr_t;

static void w_u8(wr_t *w, uint8_t v) { w->p[w->off++] = v; }
static void w_u16(wr_t *w, uint16_t v) { w_u8(w, (uint8_t)v); w_u8(w, (uint8_t)(v >> 8)); }
static void w_u32(wr_t *w, uint32_t v) { w_u16(w, (uint16_t)v); w_u16(w, (uint16_t)(v >> 16)); }
static void w_u64(wr_t *w, uint64_t v) { w_u32(w, (uint32_t)v); w_u32(w, (uint32_t)(v >> 32)); }
static void w_bytes(wr_t *w, const void *b, size_t n)
{
	if (n)
		memcpy(w->p + w->off, b, n);
	w->off += n;
}

int wire_encode(const wire_msg_t *m, uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e)
{
	*out_len = 0;
	int rc = check_msg(m, e);
	if (rc)
		return rc;
	if (m->type == WIRE_PROBE_DATA && m->u.probe.n_bytes && !m->u.probe.data)
		return err_set(e, ERR_INVAL, "PROBE_DATA: no payload given");
	if ((m->type == WIRE_FORWARD || m->type == WIRE_FORWARD_RESULT) && !m->u.forward.data)
		return err_set(e, ERR_INVAL, "%s: no hidden states given", wire_type_name(m->type));
	size_t need = size_unchecked(m);
	if (need > WIRE_MAX_MSG)
		return err_set(e, ERR_RANGE, "%s: %zu bytes, a message holds at most %u", wire_type_name(m->type),
			need, (unsigned)WIRE_MAX_MSG);
	if (need > cap)
		return err_set(e, ERR_FULL, "%s needs %zu bytes, buffer holds %zu", wire_type_name(m->type), need, cap);
	wr_t w = { out, 0 };
	w_u8(&w, m->type);
	switch (m->type) {
	case WIRE_HELLO: {
		const wire_hello_t *h = &m->u.hello;
		size_t ns = strlen(h->software), nn = strlen(h->network);
		w_u16(&w, h->version);
		w_u16(&w, h->min_version);
		w_u16(&w, h->max_version);
		w_u64(&w, h->caps);
		w_u8(&w, (uint8_t)ns);
		w_bytes(&w, h->software, ns);
		w_u8(&w, (uint8_t)nn);
		w_bytes(&w, h->network, nn);
		break;
	}
	case WIRE_PING:
	case WIRE_PONG:
		w_u64(&w, m->u.ping.nonce);
		w_u64(&w, m->u.ping.timestamp_us);
		break;
	case WIRE_OPEN_ERR:
		w_u64(&w, m->u.error.session_id);
		/* fall through */
	case WIRE_ERROR: {
		size_t n = strlen(m->u.error.msg);
		w_u16(&w, m->u.error.code);
		w_u16(&w, (uint16_t)n);
		w_bytes(&w, m->u.error.msg, n);
		break;
	}
	case WIRE_OPEN_SESSION: {
		const wire_open_t *o = &m->u.open;
		w_u64(&w, o->session_id);
		w_bytes(&w, o->model_id, WIRE_MODEL_ID_LEN);
		w_u32(&w, o->layer_a);
		w_u32(&w, o->layer_b);
		w_u32(&w, o->max_len);
		w_u8(&w, o->enc);
		w_u8(&w, o->kv_type);
		break;
	}
	case WIRE_OPEN_OK:
		w_u64(&w, m->u.open_ok.session_id);
		w_u32(&w, m->u.open_ok.max_len);
		break;
	case WIRE_FORWARD:
	case WIRE_FORWARD_RESULT: {
		const wire_forward_t *f = &m->u.forward;
		w_u64(&w, f->session_id);
		w_u32(&w, f->start_pos);
		w_u32(&w, f->n_tokens);
		w_u32(&w, f->dim);
		w_u8(&w, f->enc);
		w_bytes(&w, f->data, f->data_len);
		break;
	}
	case WIRE_CLOSE_SESSION:
		w_u64(&w, m->u.close.session_id);
		w_u16(&w, m->u.close.reason);
		break;
	case WIRE_PROBE_REQ:
	case WIRE_PROBE_ACK:
		w_u64(&w, m->u.probe.probe_id);
		w_u32(&w, m->u.probe.n_bytes);
		break;
	case WIRE_PROBE_DATA:
		w_u64(&w, m->u.probe.probe_id);
		w_u8(&w, m->u.probe.flags);
		w_u32(&w, m->u.probe.n_bytes);
		w_bytes(&w, m->u.probe.data, m->u.probe.n_bytes);
		break;
	case WIRE_LEDGER_REQ: {
		const wire_ledger_req_t *q = &m->u.lreq;
		w_u64(&w, q->req_id);
		w_u8(&w, q->op);
		w_u64(&w, q->nonce);
		w_bytes(&w, q->wallet, WIRE_KEYLEN);
		switch (q->op) {
		case WIRE_LOP_REDEEM:
			w_bytes(&w, q->voucher, WIRE_VOUCHER_LEN);
			break;
		case WIRE_LOP_CLOSE:
			w_bytes(&w, q->addr, WIRE_KEYLEN);
			w_u8(&w, q->party);
			break;
		case WIRE_LOP_ACCOUNT:
		case WIRE_LOP_CHANNEL:
			w_bytes(&w, q->addr, WIRE_KEYLEN);
			break;
		default:   /* DEPOSIT..UNSTAKE, RESERVE, SLASH: addr, amount, ... */
			w_bytes(&w, q->addr, WIRE_KEYLEN);
			w_u64(&w, (uint64_t)q->amount);
			if (q->op == WIRE_LOP_RESERVE) {
				w_u64(&w, (uint64_t)q->expiry);
				w_bytes(&w, q->key2, WIRE_KEYLEN);
			} else if (q->op == WIRE_LOP_SLASH) {
				w_bytes(&w, q->key2, WIRE_KEYLEN);
				w_bytes(&w, q->key3, WIRE_KEYLEN);
			}
		}
		w_bytes(&w, q->sig, WIRE_SIGLEN);
		break;
	}
	case WIRE_PAY_TERMS_REQ:
	case WIRE_PAY_TERMS:
	case WIRE_PAY_OPEN:
	case WIRE_VOUCHER:
	case WIRE_RECEIPT: {
		const wire_pay_t *p = &m->u.pay;
		w_u64(&w, p->id);
		if (m->type == WIRE_PAY_TERMS) {
			w_bytes(&w, p->wallet, WIRE_KEYLEN);
			w_u64(&w, (uint64_t)p->price_in);
			w_u64(&w, (uint64_t)p->price_out);
			w_u32(&w, p->chunk);
			w_u8(&w, p->flags);
		} else if (m->type == WIRE_PAY_OPEN) {
			w_bytes(&w, p->channel, WIRE_KEYLEN);
			w_bytes(&w, p->wallet, WIRE_KEYLEN);
			w_u64(&w, (uint64_t)p->budget);
			w_u64(&w, (uint64_t)p->expiry);
			w_u64(&w, (uint64_t)p->price_in);
			w_u64(&w, (uint64_t)p->price_out);
			w_u32(&w, p->chunk);
			w_u32(&w, p->n_prompt);
		} else if (m->type == WIRE_VOUCHER) {
			w_bytes(&w, p->voucher, WIRE_VOUCHER_LEN);
		} else if (m->type == WIRE_RECEIPT) {
			w_bytes(&w, p->receipt, WIRE_RECEIPT_LEN);
		}
		break;
	}
	case WIRE_LEDGER_RESP: {
		const wire_ledger_resp_t *p = &m->u.lresp;
		size_t n = strlen(p->msg);
		w_u64(&w, p->req_id);
		w_u8(&w, p->op);
		w_u16(&w, p->status);
		w_u16(&w, (uint16_t)n);
		w_bytes(&w, p->msg, n);
		size_t f = lresp_fields(p->op, p->status);
		if (f == 24) {
			w_u64(&w, (uint64_t)p->balance);
			w_u64(&w, (uint64_t)p->stake);
			w_u64(&w, (uint64_t)p->reserved);
		} else if (f == WIRE_KEYLEN) {
			w_bytes(&w, p->ch.id, WIRE_KEYLEN);
		} else if (f == 8) {
			w_u64(&w, (uint64_t)p->amount);
		} else if (f == LCHAN_SIZE) {
			const wire_ledger_chan_t *c = &p->ch;
			w_bytes(&w, c->id, WIRE_KEYLEN);
			w_bytes(&w, c->buyer, WIRE_KEYLEN);
			w_bytes(&w, c->provider, WIRE_KEYLEN);
			w_u64(&w, (uint64_t)c->budget);
			w_u64(&w, (uint64_t)c->redeemed);
			w_u64(&w, (uint64_t)c->refunded);
			w_u64(&w, (uint64_t)c->expiry);
			w_u64(&w, (uint64_t)c->close_at);
			w_u64(&w, c->last_seq);
			w_u8(&w, c->state);
		}
		break;
	}
	}
	*out_len = w.off;
	return 0;
}

/* ---- decoding ---- */

typedef struct rd {
	const uint8_t *p;
	size_t n, off;
	const char *msg;
	err_msg_t *e;
} rd_t;

static int r_need(rd_t *r, size_t k, const char *field)
{
	if (r->n - r->off < k)
		return err_set(r->e, ERR_TRUNCATED, "%s: field %s at offset %zu needs %zu bytes, the message ends at %zu",
			r->msg, field, r->off, k, r->n);
	return 0;
}

static int r_u8(rd_t *r, const char *f, uint8_t *v)
{
	int rc = r_need(r, 1, f);
	if (rc == 0)
		*v = r->p[r->off++];
	return rc;
}

static int r_u16(rd_t *r, const char *f, uint16_t *v)
{
	int rc = r_need(r, 2, f);
	if (rc == 0) {
		*v = (uint16_t)(r->p[r->off] | r->p[r->off + 1] << 8);
		r->off += 2;
	}
	return rc;
}

static int r_u32(rd_t *r, const char *f, uint32_t *v)
{
	int rc = r_need(r, 4, f);
	if (rc == 0) {
		const uint8_t *p = r->p + r->off;
		*v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
		r->off += 4;
	}
	return rc;
}

static int r_u64(rd_t *r, const char *f, uint64_t *v)
{
	uint32_t lo = 0, hi = 0;
	int rc = r_u32(r, f, &lo);
	if (rc == 0)
		rc = r_u32(r, f, &hi);
	if (rc == 0)
		*v = (uint64_t)hi << 32 | lo;
	return rc;
}

static int r_bytes(rd_t *r, const char *f, size_t n, const uint8_t **v)
{
	int rc = r_need(r, n, f);
	if (rc == 0) {
		*v = r->p + r->off;
		r->off += n;
	}
	return rc;
}

/* A string: length (u8 or u16, by lenbytes) then bytes, at most max, no NUL,
 * copied into out[max + 1]. */
static int r_str(rd_t *r, const char *f, int lenbytes, size_t max, char *out)
{
	size_t n;
	int rc;
	size_t at = r->off;
	if (lenbytes == 1) {
		uint8_t v = 0;
		rc = r_u8(r, f, &v);
		n = v;
	} else {
		uint16_t v = 0;
		rc = r_u16(r, f, &v);
		n = v;
	}
	if (rc)
		return rc;
	if (n > max)
		return err_set(r->e, ERR_RANGE, "%s: %s at offset %zu is %zu bytes, the limit is %zu",
			r->msg, f, at, n, max);
	const uint8_t *b = NULL;
	rc = r_bytes(r, f, n, &b);
	if (rc)
		return rc;
	if (n && memchr(b, 0, n))
		return err_set(r->e, ERR_FORMAT, "%s: %s at offset %zu contains a NUL byte", r->msg, f, at);
	memcpy(out, b, n);
	out[n] = 0;
	return 0;
}

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

static int r_key(rd_t *r, const char *f, uint8_t out[WIRE_KEYLEN])
{
	const uint8_t *b = NULL;
	TRY(r_bytes(r, f, WIRE_KEYLEN, &b));
	memcpy(out, b, WIRE_KEYLEN);
	return 0;
}

/* A signed 64-bit amount or time: refused if the top bit is set. */
static int r_i64(rd_t *r, const char *f, int64_t *v)
{
	size_t at = r->off;
	uint64_t u = 0;
	TRY(r_u64(r, f, &u));
	if (u > (uint64_t)INT64_MAX)
		return err_set(r->e, ERR_RANGE, "%s: %s at offset %zu is above 2^63 - 1", r->msg, f, at);
	*v = (int64_t)u;
	return 0;
}

static int decode_lreq(rd_t *r, wire_ledger_req_t *q)
{
	const uint8_t *b = NULL;
	TRY(r_u64(r, "req_id", &q->req_id));
	TRY(r_u8(r, "op", &q->op));
	if (q->op < 1 || q->op > WIRE_LOP_MAX)
		return err_set(r->e, ERR_UNSUPPORTED, "LEDGER_REQ: unknown op %u at offset 9", q->op);
	TRY(r_u64(r, "nonce", &q->nonce));
	TRY(r_key(r, "wallet", q->wallet));
	switch (q->op) {
	case WIRE_LOP_REDEEM:
		TRY(r_bytes(r, "voucher", WIRE_VOUCHER_LEN, &b));
		memcpy(q->voucher, b, WIRE_VOUCHER_LEN);
		break;
	case WIRE_LOP_CLOSE:
		TRY(r_key(r, "channel", q->addr));
		TRY(r_u8(r, "party", &q->party));
		break;
	case WIRE_LOP_ACCOUNT:
	case WIRE_LOP_CHANNEL:
		TRY(r_key(r, "addr", q->addr));
		break;
	default:
		TRY(r_key(r, "addr", q->addr));
		TRY(r_i64(r, "amount", &q->amount));
		if (q->op == WIRE_LOP_RESERVE) {
			TRY(r_i64(r, "expiry", &q->expiry));
			TRY(r_key(r, "reserve nonce", q->key2));
		} else if (q->op == WIRE_LOP_SLASH) {
			TRY(r_key(r, "evidence", q->key2));
			TRY(r_key(r, "beneficiary", q->key3));
		}
	}
	TRY(r_bytes(r, "signature", WIRE_SIGLEN, &b));
	memcpy(q->sig, b, WIRE_SIGLEN);
	return 0;
}

static int decode_lresp(rd_t *r, wire_ledger_resp_t *p)
{
	TRY(r_u64(r, "req_id", &p->req_id));
	TRY(r_u8(r, "op", &p->op));
	if (p->op < 1 || p->op > WIRE_LOP_MAX)
		return err_set(r->e, ERR_UNSUPPORTED, "LEDGER_RESP: unknown op %u at offset 9", p->op);
	TRY(r_u16(r, "status", &p->status));
	TRY(r_str(r, "text", 2, WIRE_MAX_ERRMSG, p->msg));
	size_t f = lresp_fields(p->op, p->status);
	if (f == 24) {
		TRY(r_i64(r, "balance", &p->balance));
		TRY(r_i64(r, "stake", &p->stake));
		TRY(r_i64(r, "reserved", &p->reserved));
	} else if (f == WIRE_KEYLEN) {
		TRY(r_key(r, "channel", p->ch.id));
	} else if (f == 8) {
		TRY(r_i64(r, "amount", &p->amount));
	} else if (f == LCHAN_SIZE) {
		wire_ledger_chan_t *c = &p->ch;
		TRY(r_key(r, "channel", c->id));
		TRY(r_key(r, "buyer", c->buyer));
		TRY(r_key(r, "provider", c->provider));
		TRY(r_i64(r, "budget", &c->budget));
		TRY(r_i64(r, "redeemed", &c->redeemed));
		TRY(r_i64(r, "refunded", &c->refunded));
		TRY(r_i64(r, "expiry", &c->expiry));
		TRY(r_i64(r, "close_at", &c->close_at));
		TRY(r_u64(r, "last_seq", &c->last_seq));
		TRY(r_u8(r, "state", &c->state));
	}
	return 0;
}

static int decode_pay(rd_t *r, int type, wire_pay_t *p)
{
	uint64_t v;
	TRY(r_u64(r, type == WIRE_PAY_TERMS_REQ || type == WIRE_PAY_TERMS ? "req_id" : "session_id", &p->id));
	if (type == WIRE_PAY_TERMS) {
		TRY(r_key(r, "wallet", p->wallet));
		TRY(r_u64(r, "price_in", &v));
		p->price_in = (int64_t)v;
		TRY(r_u64(r, "price_out", &v));
		p->price_out = (int64_t)v;
		TRY(r_u32(r, "chunk", &p->chunk));
		TRY(r_u8(r, "flags", &p->flags));
	} else if (type == WIRE_PAY_OPEN) {
		TRY(r_key(r, "channel", p->channel));
		TRY(r_key(r, "buyer", p->wallet));
		TRY(r_u64(r, "budget", &v));
		p->budget = (int64_t)v;
		TRY(r_u64(r, "expiry", &v));
		p->expiry = (int64_t)v;
		TRY(r_u64(r, "price_in", &v));
		p->price_in = (int64_t)v;
		TRY(r_u64(r, "price_out", &v));
		p->price_out = (int64_t)v;
		TRY(r_u32(r, "chunk", &p->chunk));
		TRY(r_u32(r, "n_prompt", &p->n_prompt));
	} else if (type == WIRE_VOUCHER) {
		const uint8_t *b = NULL;
		TRY(r_bytes(r, "voucher", WIRE_VOUCHER_LEN, &b));
		memcpy(p->voucher, b, WIRE_VOUCHER_LEN);
	} else if (type == WIRE_RECEIPT) {
		const uint8_t *b = NULL;
		TRY(r_bytes(r, "receipt", WIRE_RECEIPT_LEN, &b));
		memcpy(p->receipt, b, WIRE_RECEIPT_LEN);
	}
	return 0;
}

static int decode_body(rd_t *r, wire_msg_t *m)
{
	switch (m->type) {
	case WIRE_HELLO: {
		wire_hello_t *h = &m->u.hello;
		TRY(r_u16(r, "version", &h->version));
		TRY(r_u16(r, "min_version", &h->min_version));
		TRY(r_u16(r, "max_version", &h->max_version));
		TRY(r_u64(r, "capabilities", &h->caps));
		TRY(r_str(r, "software version", 1, WIRE_MAX_SOFTWARE, h->software));
		TRY(r_str(r, "network id", 1, WIRE_MAX_NETWORK, h->network));
		return 0;
	}
	case WIRE_PING:
	case WIRE_PONG:
		TRY(r_u64(r, "nonce", &m->u.ping.nonce));
		TRY(r_u64(r, "timestamp", &m->u.ping.timestamp_us));
		return 0;
	case WIRE_OPEN_ERR:
		TRY(r_u64(r, "session_id", &m->u.error.session_id));
		/* fall through */
	case WIRE_ERROR:
		TRY(r_u16(r, "code", &m->u.error.code));
		TRY(r_str(r, "text", 2, WIRE_MAX_ERRMSG, m->u.error.msg));
		return 0;
	case WIRE_OPEN_SESSION: {
		wire_open_t *o = &m->u.open;
		const uint8_t *id = NULL;
		TRY(r_u64(r, "session_id", &o->session_id));
		TRY(r_bytes(r, "model_id", WIRE_MODEL_ID_LEN, &id));
		memcpy(o->model_id, id, WIRE_MODEL_ID_LEN);
		TRY(r_u32(r, "layer_a", &o->layer_a));
		TRY(r_u32(r, "layer_b", &o->layer_b));
		TRY(r_u32(r, "max_len", &o->max_len));
		TRY(r_u8(r, "encoding", &o->enc));
		TRY(r_u8(r, "kv_type", &o->kv_type));
		return 0;
	}
	case WIRE_OPEN_OK:
		TRY(r_u64(r, "session_id", &m->u.open_ok.session_id));
		TRY(r_u32(r, "max_len", &m->u.open_ok.max_len));
		return 0;
	case WIRE_FORWARD:
	case WIRE_FORWARD_RESULT: {
		wire_forward_t *f = &m->u.forward;
		TRY(r_u64(r, "session_id", &f->session_id));
		TRY(r_u32(r, "start_pos", &f->start_pos));
		TRY(r_u32(r, "n_tokens", &f->n_tokens));
		TRY(r_u32(r, "dim", &f->dim));
		TRY(r_u8(r, "encoding", &f->enc));
		/* The shape is checked before the data is taken: a bad shape is
		 * reported as such, not as a length mismatch. */
		f->data_len = r->n - r->off;
		wire_forward_t probe = *f;
		probe.data_len = wire_hidden_size(f->enc, f->n_tokens, f->dim);
		TRY(check_forward(&probe, m->type, r->e));
		TRY(r_bytes(r, "hidden states", probe.data_len, &f->data));
		f->data_len = probe.data_len;
		return 0;
	}
	case WIRE_CLOSE_SESSION:
		TRY(r_u64(r, "session_id", &m->u.close.session_id));
		TRY(r_u16(r, "reason", &m->u.close.reason));
		return 0;
	case WIRE_PROBE_REQ:
	case WIRE_PROBE_ACK:
		TRY(r_u64(r, "probe_id", &m->u.probe.probe_id));
		TRY(r_u32(r, "n_bytes", &m->u.probe.n_bytes));
		return 0;
	case WIRE_PROBE_DATA: {
		wire_probe_t *p = &m->u.probe;
		TRY(r_u64(r, "probe_id", &p->probe_id));
		TRY(r_u8(r, "flags", &p->flags));
		TRY(r_u32(r, "n_bytes", &p->n_bytes));
		TRY(check_probe(p, m->type, r->e));
		TRY(r_bytes(r, "payload", p->n_bytes, &p->data));
		return 0;
	}
	case WIRE_LEDGER_REQ: return decode_lreq(r, &m->u.lreq);
	case WIRE_LEDGER_RESP: return decode_lresp(r, &m->u.lresp);
	case WIRE_PAY_TERMS_REQ:
	case WIRE_PAY_TERMS:
	case WIRE_PAY_OPEN:
	case WIRE_VOUCHER:
	case WIRE_RECEIPT: return decode_pay(r, m->type, &m->u.pay);
	default:
		return err_set(r->e, ERR_UNSUPPORTED, "unknown message type 0x%02x", m->type);
	}
}

int wire_decode(const uint8_t *buf, size_t len, wire_msg_t *m, err_msg_t *e)
{
	memset(m, 0, sizeof(*m));
	if (len == 0)
		return err_set(e, ERR_TRUNCATED, "empty message");
	if (len > WIRE_MAX_MSG)
		return err_set(e, ERR_RANGE, "message of %zu bytes, the limit is %u", len, (unsigned)WIRE_MAX_MSG);
	rd_t r = { buf, len, 1, wire_type_name(buf[0]), e };
	m->type = buf[0];
	int rc = decode_body(&r, m);
	if (rc == 0 && r.off != len)
		rc = err_set(e, ERR_FORMAT, "%s: %zu bytes after the last field (at offset %zu)", r.msg, len - r.off, r.off);
	if (rc == 0)
		rc = check_msg(m, e);
	if (rc) {
		uint8_t t = m->type;
		memset(m, 0, sizeof(*m));
		m->type = t;
	}
	return rc;
}

int wire_version_pick(const wire_hello_t *a, const wire_hello_t *b, uint16_t *version, err_msg_t *e)
{
	uint16_t lo = a->min_version > b->min_version ? a->min_version : b->min_version;
	uint16_t hi = a->max_version < b->max_version ? a->max_version : b->max_version;
	if (lo > hi || hi < 1)
		return err_set(e, ERR_UNSUPPORTED, "no common protocol version: [%u, %u] and [%u, %u]",
			a->min_version, a->max_version, b->min_version, b->max_version);
	*version = hi;
	return 0;
}
