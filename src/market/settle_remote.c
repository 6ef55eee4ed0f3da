/* settle_remote.c - settle.h over a ledger node (see settle_remote.h). */
#include "market/settle_remote.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "market/ledger_svc.h"
#include "net/ident.h"
#include "net/peer.h"

struct settle_remote {
	settle_remote_cfg_t cfg;
	char host[256], network[WIRE_MAX_NETWORK + 1];
	pthread_mutex_t mu;
	uv_loop_t loop;
	int loop_ok;
	uv_timer_t timer;
	int timer_ok, timed_out;
	ident_t *id;
	peer_net_t *net;
	int net_done;
	peer_conn_t *conn;          /* dialing or READY, NULL when none */
	int ready, lost;
	char why[128];              /* why the last connection closed */
	uint8_t ledger_id[WALLET_PUBLEN];
	uint64_t next_req, last_nonce;
	wire_ledger_req_t last;     /* the last request sent (resend_last) */
	int have_last;
	uint64_t want;              /* req_id awaited */
	wire_ledger_resp_t resp;
	int got;
};

void settle_remote_cfg_default(settle_remote_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->network = "colony";
	c->timeout_ms = 10000;
}

static void on_state(peer_conn_t *c, enum peer_state st, const char *why, void *user)
{
	settle_remote_t *r = user;
	if (c != r->conn)
		return;
	if (st == PEER_READY) {
		r->ready = 1;
	} else if (st == PEER_CLOSED) {
		r->conn = NULL;
		r->ready = 0;
		r->lost = 1;
		snprintf(r->why, sizeof(r->why), "%s", why ? why : "closed");
	}
}

static void on_msg(peer_conn_t *c, const wire_msg_t *m, void *user)
{
	settle_remote_t *r = user;
	if (m->type == WIRE_LEDGER_RESP && m->u.lresp.req_id == r->want && !r->got) {
		r->resp = m->u.lresp;
		r->got = 1;
	}
}

static void on_timer(uv_timer_t *t)
{
	settle_remote_t *r = t->data;
	r->timed_out = 1;
}

/* Runs the loop until *flag, the connection is lost or the call's deadline. */
static void run_until(settle_remote_t *r, const int *flag)
{
	while (!*flag && !r->lost && !r->timed_out)
		uv_run(&r->loop, UV_RUN_ONCE);
}

static int ensure_conn(settle_remote_t *r, err_msg_t *e)
{
	/* Between calls nobody runs this loop: take in what happened meanwhile
	 * (a ledger that restarted closed our connection), so the request goes
	 * on a new connection rather than fail on the dead one. */
	for (int i = 0; i < 2 && r->conn; i++)
		uv_run(&r->loop, UV_RUN_NOWAIT);
	if (r->conn && r->ready)
		return 0;
	if (!r->conn) {
		int rc = peer_net_connect(r->net, r->host, r->cfg.port, r->cfg.ledger_id, &r->conn, e);
		if (rc)
			return err_prefix(e, ERR_IO, "ledger %s:%d", r->host, r->cfg.port);
		r->ready = 0;
	}
	r->lost = 0;
	run_until(r, &r->ready);
	if (!r->ready) {
		if (r->timed_out)
			return err_set(e, ERR_IO, "ledger %s:%d: no encrypted connection within %d ms", r->host,
				r->cfg.port, r->cfg.timeout_ms);
		return err_set(e, ERR_IO, "ledger %s:%d: connection failed: %s", r->host, r->cfg.port, r->why);
	}
	memcpy(r->ledger_id, peer_conn_id(r->conn), WALLET_PUBLEN);
	return 0;
}

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Sends q (signed already unless resend) and waits for its answer. */
static int exchange(settle_remote_t *r, const wire_ledger_req_t *q, wire_ledger_resp_t *out, err_msg_t *e)
{
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_LEDGER_REQ;
	m.u.lreq = *q;
	r->want = q->req_id;
	r->got = 0;
	int rc = peer_send(r->conn, &m, e);
	if (rc)
		return err_prefix(e, ERR_IO, "ledger request not sent");
	run_until(r, &r->got);
	if (!r->got) {
		if (r->timed_out)
			return err_set(e, ERR_IO, "ledger %s:%d: no answer within %d ms (the operation may or may not "
				"have happened)", r->host, r->cfg.port, r->cfg.timeout_ms);
		return err_set(e, ERR_IO, "ledger %s:%d: connection lost before the answer (%s); the operation may "
			"or may not have happened", r->host, r->cfg.port, r->why);
	}
	*out = r->resp;
	if (out->status)
		/* The ledger's own messages already say "ledger: ". */
		return err_set(e, -(int)out->status, "%s%s", strncmp(out->msg, "ledger: ", 8) ? "ledger: " : "", out->msg);
	return 0;
}

static void call_begin(settle_remote_t *r)
{
	pthread_mutex_lock(&r->mu);
	r->timed_out = 0;
	uv_update_time(&r->loop);
	uv_timer_start(&r->timer, on_timer, (uint64_t)r->cfg.timeout_ms, 0);
}

static void call_end(settle_remote_t *r)
{
	uv_timer_stop(&r->timer);
	pthread_mutex_unlock(&r->mu);
}

static int call(settle_remote_t *r, wire_ledger_req_t *q, wire_ledger_resp_t *out, err_msg_t *e)
{
	memset(out, 0, sizeof(*out));
	call_begin(r);
	int rc = ensure_conn(r, e);
	if (rc == 0) {
		q->req_id = ++r->next_req;
		/* Microseconds of wall time: increasing across processes that share
		 * the wallet, and strictly within this one. */
		uint64_t n = now_us();
		q->nonce = r->last_nonce = n > r->last_nonce ? n : r->last_nonce + 1;
		rc = ledger_req_sign(q, r->ledger_id, r->cfg.wallet, e);
	}
	if (rc == 0) {
		r->last = *q;
		r->have_last = 1;
		rc = exchange(r, q, out, e);
	}
	call_end(r);
	return rc;
}

int settle_remote_resend_last(settle_remote_t *r, err_msg_t *e)
{
	if (!r->have_last)
		return err_set(e, ERR_INVAL, "no request sent yet");
	wire_ledger_resp_t out;
	call_begin(r);
	int rc = ensure_conn(r, e);
	if (rc == 0)
		rc = exchange(r, &r->last, &out, e);
	call_end(r);
	return rc;
}

/* ---- settle_ops_t ---- */

static int op_amount(void *impl, int op, const uint8_t *addr, amount_t amount, err_msg_t *e)
{
	if (amount <= 0)
		return err_set(e, ERR_RANGE, "amounts must be positive (%lld)", (long long)amount);
	wire_ledger_req_t q;
	wire_ledger_resp_t p;
	memset(&q, 0, sizeof(q));
	q.op = (uint8_t)op;
	memcpy(q.addr, addr, WALLET_PUBLEN);
	q.amount = amount;
	return call(impl, &q, &p, e);
}

static int r_deposit(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return op_amount(i, WIRE_LOP_DEPOSIT, a, x, e); }
static int r_withdraw(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return op_amount(i, WIRE_LOP_WITHDRAW, a, x, e); }
static int r_stake(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return op_amount(i, WIRE_LOP_STAKE, a, x, e); }
static int r_unstake(void *i, const uint8_t *a, amount_t x, err_msg_t *e) { return op_amount(i, WIRE_LOP_UNSTAKE, a, x, e); }

static int r_reserve(void *impl, const settle_reserve_t *rs, int64_t now, uint8_t *id, err_msg_t *e)
{
	settle_remote_t *r = impl;
	if (memcmp(rs->buyer, wallet_pub(r->cfg.wallet), WALLET_PUBLEN) != 0)
		return err_set(e, ERR_INVAL, "reserve: the buyer must be this client's wallet (it signs the request)");
	if (rs->budget <= 0 || rs->expiry < 0)
		return err_set(e, ERR_RANGE, "reserve: budget must be positive and expiry not negative");
	wire_ledger_req_t q;
	wire_ledger_resp_t p;
	memset(&q, 0, sizeof(q));
	q.op = WIRE_LOP_RESERVE;
	memcpy(q.addr, rs->provider, WALLET_PUBLEN);
	q.amount = rs->budget;
	q.expiry = rs->expiry;
	memcpy(q.key2, rs->nonce, MARKET_IDLEN);
	int rc = call(r, &q, &p, e);
	if (rc == 0)
		memcpy(id, p.ch.id, MARKET_IDLEN);
	return rc;
}

static int r_redeem(void *impl, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e)
{
	wire_ledger_req_t q;
	wire_ledger_resp_t p;
	memset(&q, 0, sizeof(q));
	q.op = WIRE_LOP_REDEEM;
	*paid = 0;
	int rc = voucher_encode(v, q.voucher);
	if (rc)
		return err_set(e, rc, "redeem: the voucher does not encode");
	rc = call(impl, &q, &p, e);
	if (rc == 0)
		*paid = p.amount;
	return rc;
}

static void chan_in(const wire_ledger_chan_t *c, settle_channel_t *o)
{
	memcpy(o->id, c->id, MARKET_IDLEN);
	memcpy(o->buyer, c->buyer, WALLET_PUBLEN);
	memcpy(o->provider, c->provider, WALLET_PUBLEN);
	o->budget = c->budget;
	o->redeemed = c->redeemed;
	o->refunded = c->refunded;
	o->expiry = c->expiry;
	o->close_at = c->close_at;
	o->last_seq = c->last_seq;
	o->state = c->state;
}

static int r_close(void *impl, const uint8_t *id, int party, int64_t now, settle_channel_t *out, err_msg_t *e)
{
	if (party != SETTLE_BY_BUYER && party != SETTLE_BY_PROVIDER)
		return err_set(e, ERR_INVAL, "close: party %d is neither buyer nor provider", party);
	wire_ledger_req_t q;
	wire_ledger_resp_t p;
	memset(&q, 0, sizeof(q));
	q.op = WIRE_LOP_CLOSE;
	memcpy(q.addr, id, MARKET_IDLEN);
	q.party = (uint8_t)party;
	int rc = call(impl, &q, &p, e);
	if (rc == 0 && out)
		chan_in(&p.ch, out);
	return rc;
}

static int r_slash(void *impl, const uint8_t *provider, amount_t amount, const uint8_t *beneficiary,
	const uint8_t *evidence, int64_t now, amount_t *slashed, err_msg_t *e)
{
	wire_ledger_req_t q;
	wire_ledger_resp_t p;
	memset(&q, 0, sizeof(q));
	q.op = WIRE_LOP_SLASH;
	memcpy(q.addr, provider, WALLET_PUBLEN);
	q.amount = amount < 0 ? 0 : amount;
	memcpy(q.key2, evidence, MARKET_IDLEN);
	memcpy(q.key3, beneficiary, WALLET_PUBLEN);
	*slashed = 0;
	int rc = call(impl, &q, &p, e);
	if (rc == 0)
		*slashed = p.amount;
	return rc;
}

static int r_account(void *impl, const uint8_t *addr, settle_account_t *out, err_msg_t *e)
{
	wire_ledger_req_t q;
	wire_ledger_resp_t p;
	memset(&q, 0, sizeof(q));
	memset(out, 0, sizeof(*out));
	q.op = WIRE_LOP_ACCOUNT;
	memcpy(q.addr, addr, WALLET_PUBLEN);
	int rc = call(impl, &q, &p, e);
	if (rc == 0) {
		out->balance = p.balance;
		out->stake = p.stake;
		out->reserved = p.reserved;
	}
	return rc;
}

static int r_channel(void *impl, const uint8_t *id, settle_channel_t *out, err_msg_t *e)
{
	wire_ledger_req_t q;
	wire_ledger_resp_t p;
	memset(&q, 0, sizeof(q));
	q.op = WIRE_LOP_CHANNEL;
	memcpy(q.addr, id, MARKET_IDLEN);
	int rc = call(impl, &q, &p, e);
	if (rc == 0)
		chan_in(&p.ch, out);
	return rc;
}

static const settle_ops_t remote_ops = {
	r_deposit, r_withdraw, r_stake, r_unstake, r_reserve, r_redeem, r_close, r_slash, r_account, r_channel,
};

settle_t settle_remote_settle(settle_remote_t *r)
{
	settle_t s = { &remote_ops, r };
	return s;
}

const uint8_t *settle_remote_ledger_id(const settle_remote_t *r) { return r->ledger_id; }

/* ---- life ---- */

int settle_remote_new(const settle_remote_cfg_t *cfg, settle_remote_t **out, err_msg_t *e)
{
	*out = NULL;
	if (!cfg->host || !cfg->wallet || cfg->port <= 0 || cfg->port > 65535)
		return err_set(e, ERR_INVAL, "ledger client: host, port (1..65535) and wallet are required");
	settle_remote_t *r = calloc(1, sizeof(*r));
	if (!r)
		return err_set(e, ERR_NOMEM, "ledger client: out of memory");
	r->cfg = *cfg;
	snprintf(r->host, sizeof(r->host), "%s", cfg->host);
	snprintf(r->network, sizeof(r->network), "%s", cfg->network ? cfg->network : "colony");
	r->cfg.host = r->host;
	r->cfg.network = r->network;
	if (r->cfg.timeout_ms <= 0)
		r->cfg.timeout_ms = 10000;
	if (cfg->ledger_id) {
		memcpy(r->ledger_id, cfg->ledger_id, WALLET_PUBLEN);
		r->cfg.ledger_id = r->ledger_id;
	}
	pthread_mutex_init(&r->mu, NULL);
	int rc = 0;
	if (uv_loop_init(&r->loop) != 0) {
		free(r);
		return err_set(e, ERR_NOMEM, "ledger client: cannot start an event loop");
	}
	r->loop_ok = 1;
	uv_timer_init(&r->loop, &r->timer);
	r->timer.data = r;
	r->timer_ok = 1;
	/* The ledger authenticates wallets, not nodes: a throwaway node identity. */
	if (ident_new(NULL, &r->id) != 0)
		rc = err_set(e, ERR_NOMEM, "ledger client: cannot make a node identity");
	if (rc == 0) {
		peer_cfg_t pc;
		peer_cfg_default(&pc);
		pc.id = r->id;
		pc.network = r->network;
		pc.software = "colony-ledger-client";
		pc.caps = WIRE_CAP_CLIENT;
		pc.on_msg = on_msg;
		pc.on_state = on_state;
		pc.user = r;
		rc = peer_net_new(&r->loop, &pc, &r->net, e);
	}
	if (rc == 0) {
		call_begin(r);
		rc = ensure_conn(r, e);
		call_end(r);
	}
	if (rc) {
		settle_remote_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

static void net_done(void *arg)
{
	settle_remote_t *r = arg;
	r->net_done = 1;
}

void settle_remote_free(settle_remote_t *r)
{
	if (!r)
		return;
	if (r->net) {
		peer_net_close(r->net, net_done, r);
		while (!r->net_done && uv_run(&r->loop, UV_RUN_ONCE))
			;
	}
	if (r->timer_ok)
		uv_close((uv_handle_t *)&r->timer, NULL);
	if (r->loop_ok) {
		uv_run(&r->loop, UV_RUN_DEFAULT);
		(void)uv_loop_close(&r->loop);
	}
	ident_free(r->id);
	pthread_mutex_destroy(&r->mu);
	free(r);
}
