/* ledger_svc.c - the ledger service (see ledger_svc.h). */
#include "market/ledger_svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "market/voucher.h"

#define MSG_CAP (sizeof(LEDGER_REQ_DOMAIN) - 1 + WALLET_PUBLEN + 512)

int ledger_req_message(const wire_ledger_req_t *q, const uint8_t ledger_id[WALLET_PUBLEN],
	uint8_t *out, size_t cap, size_t *len, err_msg_t *e)
{
	size_t dl = sizeof(LEDGER_REQ_DOMAIN) - 1;
	size_t body = wire_ledger_req_body_size(q->op);
	uint8_t enc[512];
	size_t n = 0;
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_LEDGER_REQ;
	m.u.lreq = *q;
	int rc = wire_encode(&m, enc, sizeof(enc), &n, e);
	if (rc)
		return err_prefix(e, ERR_INVAL, "ledger request");
	if (body == 0 || body + WIRE_SIGLEN != n || dl + WALLET_PUBLEN + body > cap)
		return err_set(e, ERR_INVAL, "ledger request: unexpected size %zu", n);
	memcpy(out, LEDGER_REQ_DOMAIN, dl);
	memcpy(out + dl, ledger_id, WALLET_PUBLEN);
	memcpy(out + dl + WALLET_PUBLEN, enc, body);
	*len = dl + WALLET_PUBLEN + body;
	return 0;
}

int ledger_req_sign(wire_ledger_req_t *q, const uint8_t ledger_id[WALLET_PUBLEN], const wallet_t *w, err_msg_t *e)
{
	memcpy(q->wallet, wallet_pub(w), WALLET_PUBLEN);
	uint8_t msg[MSG_CAP];
	size_t n = 0;
	int rc = ledger_req_message(q, ledger_id, msg, sizeof(msg), &n, e);
	if (rc == 0)
		wallet_sign(w, msg, n, q->sig);
	return rc;
}

int ledger_req_verify(const wire_ledger_req_t *q, const uint8_t ledger_id[WALLET_PUBLEN], err_msg_t *e)
{
	uint8_t msg[MSG_CAP];
	size_t n = 0;
	int rc = ledger_req_message(q, ledger_id, msg, sizeof(msg), &n, e);
	if (rc == 0 && wallet_verify(q->wallet, msg, n, q->sig) != 0)
		rc = err_set(e, ERR_FORMAT, "the request's signature does not verify with wallet %02x%02x%02x%02x...",
			q->wallet[0], q->wallet[1], q->wallet[2], q->wallet[3]);
	return rc;
}

/* ---- execution ---- */

static int same(const uint8_t *a, const uint8_t *b) { return memcmp(a, b, WALLET_PUBLEN) == 0; }

static int is_operator(const ledger_svc_cfg_t *cfg, const uint8_t *w)
{
	return cfg->has_operator && same(cfg->operator_addr, w);
}

static int refuse(err_msg_t *e, const char *what)
{
	return err_set(e, ERR_INVAL, "not authorized: %s", what);
}

/* Who may do what (ledger_svc.h). ch: the channel, looked up for CLOSE and
 * CHANNEL. */
static int authorize(const ledger_svc_cfg_t *cfg, const wire_ledger_req_t *q, err_msg_t *e)
{
	const uint8_t *w = q->wallet;
	switch (q->op) {
	case WIRE_LOP_DEPOSIT:
	case WIRE_LOP_WITHDRAW:
	case WIRE_LOP_SLASH:
		if (!cfg->has_operator)
			return refuse(e, "this ledger has no operator wallet (--ledger-operator), so it takes no "
				"deposits, withdrawals or slashes");
		if (!is_operator(cfg, w))
			return refuse(e, "deposit, withdraw and slash need the ledger operator's signature");
		return 0;
	case WIRE_LOP_STAKE:
	case WIRE_LOP_UNSTAKE:
		return same(w, q->addr) ? 0 : refuse(e, "only the account's own wallet may stake or unstake");
	case WIRE_LOP_ACCOUNT:
		return same(w, q->addr) || is_operator(cfg, w) ? 0 : refuse(e, "only the account's own wallet may read it");
	case WIRE_LOP_RESERVE:
	case WIRE_LOP_REDEEM:
		return 0;   /* the signer is the buyer; a voucher carries its own signature */
	case WIRE_LOP_CLOSE:
	case WIRE_LOP_CHANNEL: {
		settle_channel_t ch;
		int rc = ledger_channel(cfg->ledger, q->addr, &ch, e);
		if (rc)
			return rc;
		if (q->op == WIRE_LOP_CLOSE) {
			const uint8_t *party = q->party == SETTLE_BY_PROVIDER ? ch.provider : ch.buyer;
			return same(w, party) ? 0 : refuse(e, q->party == SETTLE_BY_PROVIDER ?
				"a close as provider must be signed by the channel's provider" :
				"a close as buyer must be signed by the channel's buyer");
		}
		return same(w, ch.buyer) || same(w, ch.provider) || is_operator(cfg, w) ? 0 :
			refuse(e, "only the channel's buyer or provider may read it");
	}
	default:
		return err_set(e, ERR_UNSUPPORTED, "unknown op %u", q->op);
	}
}

static void chan_out(const settle_channel_t *c, wire_ledger_chan_t *o)
{
	memcpy(o->id, c->id, WIRE_KEYLEN);
	memcpy(o->buyer, c->buyer, WIRE_KEYLEN);
	memcpy(o->provider, c->provider, WIRE_KEYLEN);
	o->budget = c->budget;
	o->redeemed = c->redeemed;
	o->refunded = c->refunded;
	o->expiry = c->expiry;
	o->close_at = c->close_at;
	o->last_seq = c->last_seq;
	o->state = (uint8_t)c->state;
}

static int run_op(const ledger_svc_cfg_t *cfg, const wire_ledger_req_t *q, int64_t now, wire_ledger_resp_t *out,
	err_msg_t *e)
{
	ledger_t *l = cfg->ledger;
	settle_account_t a;
	settle_channel_t ch;
	int rc = 0;
	memset(&ch, 0, sizeof(ch));
	switch (q->op) {
	case WIRE_LOP_DEPOSIT: rc = ledger_deposit(l, q->addr, q->amount, e); break;
	case WIRE_LOP_WITHDRAW: rc = ledger_withdraw(l, q->addr, q->amount, e); break;
	case WIRE_LOP_STAKE: rc = ledger_stake(l, q->addr, q->amount, e); break;
	case WIRE_LOP_UNSTAKE: rc = ledger_unstake(l, q->addr, q->amount, e); break;
	case WIRE_LOP_ACCOUNT: break;
	case WIRE_LOP_RESERVE: {
		settle_reserve_t r;
		memcpy(r.buyer, q->wallet, WALLET_PUBLEN);
		memcpy(r.provider, q->addr, WALLET_PUBLEN);
		r.budget = q->amount;
		r.expiry = q->expiry;
		memcpy(r.nonce, q->key2, MARKET_IDLEN);
		return ledger_reserve(l, &r, now, out->ch.id, e);
	}
	case WIRE_LOP_REDEEM: {
		voucher_t v;
		rc = voucher_decode(q->voucher, WIRE_VOUCHER_LEN, &v, e);
		if (rc)
			return err_prefix(e, rc, "voucher");
		return ledger_redeem(l, &v, now, &out->amount, e);
	}
	case WIRE_LOP_CLOSE:
		rc = ledger_close(l, q->addr, q->party, now, &ch, e);
		if (rc == 0)
			chan_out(&ch, &out->ch);
		return rc;
	case WIRE_LOP_SLASH:
		return ledger_slash(l, q->addr, q->amount, q->key3, q->key2, now, &out->amount, e);
	case WIRE_LOP_CHANNEL:
		rc = ledger_channel(l, q->addr, &ch, e);
		if (rc == 0)
			chan_out(&ch, &out->ch);
		return rc;
	default:
		return err_set(e, ERR_UNSUPPORTED, "unknown op %u", q->op);
	}
	if (rc == 0)
		rc = ledger_account(l, q->addr, &a, e);
	if (rc == 0) {
		out->balance = a.balance;
		out->stake = a.stake;
		out->reserved = a.reserved;
	}
	return rc;
}

struct op_call {
	const ledger_svc_cfg_t *cfg;
	const wire_ledger_req_t *q;
	int64_t now;
	wire_ledger_resp_t *out;
};

static int op_call_run(void *arg, err_msg_t *e)
{
	struct op_call *c = arg;
	return run_op(c->cfg, c->q, c->now, c->out, e);
}

void ledger_svc_exec(const ledger_svc_cfg_t *cfg, const wire_ledger_req_t *q, int64_t now, wire_ledger_resp_t *out)
{
	memset(out, 0, sizeof(*out));
	out->req_id = q->req_id;
	out->op = q->op;
	err_msg_t e = { "" };
	int rc = ledger_req_verify(q, cfg->ledger_id, &e);
	if (rc == 0)
		rc = authorize(cfg, q, &e);
	if (rc == 0) {
		/* The nonce commits with the operation's own transaction: a crash
		 * cannot spend it without the operation, nor run it twice. */
		struct op_call c = { cfg, q, now, out };
		rc = ledger_guarded(cfg->ledger, q->wallet, q->nonce, op_call_run, &c, &e);
	}
	if (rc) {
		uint8_t op = out->op;
		uint64_t id = out->req_id;
		memset(out, 0, sizeof(*out));
		out->req_id = id;
		out->op = op;
		out->status = (uint16_t)-rc;
		snprintf(out->msg, sizeof(out->msg), "%s", e.msg[0] ? e.msg : voucher_err_str(rc));
	}
}

/* ---- the service on a loop ---- */

struct item {
	struct item *next;
	peer_conn_t *conn;          /* NULL once it closed */
	wire_ledger_req_t q;
	wire_ledger_resp_t r;
};

struct ledger_svc {
	uv_loop_t *loop;
	ledger_svc_cfg_t cfg;
	struct item *head, *tail;   /* waiting */
	struct item *cur;           /* running on a worker */
	size_t n_waiting;
	uv_work_t work;
	int stopped;
};

int ledger_svc_new(uv_loop_t *loop, const ledger_svc_cfg_t *cfg, ledger_svc_t **out, err_msg_t *e)
{
	*out = NULL;
	ledger_svc_t *s = calloc(1, sizeof(*s));
	if (!s)
		return err_set(e, ERR_NOMEM, "ledger service: out of memory");
	s->loop = loop;
	s->cfg = *cfg;
	*out = s;
	return 0;
}

static void svc_kick(ledger_svc_t *s);

static void work_run(uv_work_t *w)
{
	ledger_svc_t *s = w->data;
	ledger_svc_exec(&s->cfg, &s->cur->q, (int64_t)time(NULL), &s->cur->r);
}

static void send_resp(peer_conn_t *c, const wire_ledger_resp_t *r)
{
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_LEDGER_RESP;
	m.u.lresp = *r;
	err_msg_t e;
	if (peer_send(c, &m, &e) != 0)
		log_debug("ledger", "answer to request %llu not sent: %s", (unsigned long long)r->req_id, e.msg);
}

static void work_done(uv_work_t *w, int status)
{
	ledger_svc_t *s = w->data;
	struct item *it = s->cur;
	s->cur = NULL;
	if (it->r.status)
		log_debug("ledger", "request %llu (op %u) refused: %s", (unsigned long long)it->q.req_id, it->q.op,
			it->r.msg);
	if (it->conn && !s->stopped)
		send_resp(it->conn, &it->r);
	free(it);
	svc_kick(s);
}

static void svc_kick(ledger_svc_t *s)
{
	if (s->cur || !s->head || s->stopped)
		return;
	struct item *it = s->head;
	s->head = it->next;
	if (!s->head)
		s->tail = NULL;
	s->n_waiting--;
	s->cur = it;
	s->work.data = s;
	if (uv_queue_work(s->loop, &s->work, work_run, work_done) != 0) {
		s->cur = NULL;
		free(it);
	}
}

void ledger_svc_handle(ledger_svc_t *s, peer_conn_t *c, const wire_msg_t *m)
{
	if (m->type != WIRE_LEDGER_REQ || s->stopped)
		return;
	if (s->n_waiting >= LEDGER_SVC_MAX_QUEUE) {
		wire_ledger_resp_t r;
		memset(&r, 0, sizeof(r));
		r.req_id = m->u.lreq.req_id;
		r.op = m->u.lreq.op;
		r.status = (uint16_t)-ERR_FULL;
		snprintf(r.msg, sizeof(r.msg), "ledger busy: %d requests waiting, try again later", LEDGER_SVC_MAX_QUEUE);
		send_resp(c, &r);
		return;
	}
	struct item *it = calloc(1, sizeof(*it));
	if (!it)
		return;
	it->conn = c;
	it->q = m->u.lreq;
	if (s->tail)
		s->tail->next = it;
	else
		s->head = it;
	s->tail = it;
	s->n_waiting++;
	svc_kick(s);
}

void ledger_svc_conn_closed(ledger_svc_t *s, peer_conn_t *c)
{
	if (!s)
		return;
	if (s->cur && s->cur->conn == c)
		s->cur->conn = NULL;
	for (struct item *it = s->head; it; it = it->next)
		if (it->conn == c)
			it->conn = NULL;
}

void ledger_svc_stop(ledger_svc_t *s)
{
	if (!s)
		return;
	s->stopped = 1;
	/* Waiting requests are dropped unanswered: their nonces were not taken,
	 * so the clients may send them again. */
	while (s->head) {
		struct item *it = s->head;
		s->head = it->next;
		free(it);
	}
	s->tail = NULL;
	s->n_waiting = 0;
}

void ledger_svc_free(ledger_svc_t *s)
{
	if (!s)
		return;
	ledger_svc_stop(s);
	free(s->cur);
	free(s);
}
