/* chrec.c - a recording settle_t for buyers (see chrec.h). */
#include "market/chrec.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"

/* A channel's life as this buyer sees it. */
enum rec_state {
	REC_RESERVED = 0,          /* the ledger has it, or may have it (a lost reply) */
	REC_CLOSING,               /* closed once: waiting for the end of the window */
	REC_RETRY,                 /* a close failed: tried again by chrec_finish */
	REC_DONE,                  /* closed, or never reserved */
};

struct rec_chan {
	uint8_t id[MARKET_IDLEN];
	int state;                 /* enum rec_state */
	int64_t close_at;          /* REC_CLOSING: the window's end; REC_RETRY: the next try */
};

struct chrec {
	settle_t inner;
	chstore_t *cs;
	uint8_t ledger_id[WALLET_PUBLEN];
	char ledger[CHSTORE_LEDGER_LEN];
	pthread_mutex_t mu;        /* guards chans (reserves run on several threads) */
	struct rec_chan *chans;
	int n_chans, cap_chans;
};

#define RETRY_S 5              /* a failed close is tried again this much later */

static int chan_find(const chrec_t *r, const uint8_t id[MARKET_IDLEN])
{
	for (int i = 0; i < r->n_chans; i++)
		if (!memcmp(r->chans[i].id, id, MARKET_IDLEN))
			return i;
	return -1;
}

static void store_set(chrec_t *r, const uint8_t id[MARKET_IDLEN], int st, int64_t close_at, amount_t redeemed,
		      amount_t refunded)
{
	err_msg_t e = { { 0 } };
	if (chstore_set(r->cs, id, st, close_at, redeemed, refunded, (int64_t)time(NULL), &e) != 0)
		log_warn("chrec", "channel store: %s", e.msg);
}

static int rec_reserve(void *impl, const settle_reserve_t *rs, int64_t now, uint8_t id[MARKET_IDLEN], err_msg_t *e)
{
	chrec_t *r = impl;
	chstore_chan_t c;
	memset(&c, 0, sizeof(c));
	voucher_channel_id(rs->buyer, rs->provider, rs->nonce, c.id);
	memcpy(c.provider, rs->provider, WALLET_PUBLEN);
	c.budget = rs->budget;
	c.expiry = rs->expiry;
	memcpy(c.ledger_id, r->ledger_id, WALLET_PUBLEN);
	memcpy(c.ledger, r->ledger, sizeof(c.ledger));
	int rc = chstore_add(r->cs, &c, (int64_t)time(NULL), e);
	if (rc)
		return err_prefix(e, rc, "channel not reserved: it could not be recorded first");
	/* Remembered before the reserve leaves: a close-all that runs while the
	 * reply is on its way still sees it. An index, not a pointer: another
	 * reserve may grow the array meanwhile. */
	pthread_mutex_lock(&r->mu);
	int k = chan_find(r, c.id);
	if (k < 0 && r->n_chans == r->cap_chans) {
		int cap = r->cap_chans ? 2 * r->cap_chans : 8;
		struct rec_chan *nc = realloc(r->chans, sizeof(*nc) * (size_t)cap);
		if (nc) {
			r->chans = nc;
			r->cap_chans = cap;
		}
	}
	if (k < 0 && r->n_chans < r->cap_chans) {
		k = r->n_chans++;
		memcpy(r->chans[k].id, c.id, MARKET_IDLEN);
		r->chans[k].close_at = 0;
	}
	if (k >= 0)
		r->chans[k].state = REC_RESERVED;
	pthread_mutex_unlock(&r->mu);
	if (k < 0) {
		store_set(r, c.id, CHSTORE_GONE, 0, 0, 0);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	rc = settle_reserve(&r->inner, rs, now, id, e);
	/* ERR_IO: it may have run (the reply was lost); the record stays
	 * "reserving" and a close (or colony wallet reclaim) finds out. Any
	 * other refusal is the ledger's answer: nothing was reserved. */
	if (rc == 0)
		store_set(r, c.id, CHSTORE_OPEN, 0, 0, 0);
	if (rc && rc != ERR_IO) {
		store_set(r, c.id, CHSTORE_GONE, 0, 0, 0);
		pthread_mutex_lock(&r->mu);
		r->chans[k].state = REC_DONE;
		pthread_mutex_unlock(&r->mu);
	}
	return rc;
}

/* The other operations go straight to the ledger client. */
static int rec_deposit(void *impl, const uint8_t a[WALLET_PUBLEN], amount_t x, err_msg_t *e)
{ return settle_deposit(&((chrec_t *)impl)->inner, a, x, e); }
static int rec_withdraw(void *impl, const uint8_t a[WALLET_PUBLEN], amount_t x, err_msg_t *e)
{ return settle_withdraw(&((chrec_t *)impl)->inner, a, x, e); }
static int rec_stake(void *impl, const uint8_t a[WALLET_PUBLEN], amount_t x, err_msg_t *e)
{ return settle_stake(&((chrec_t *)impl)->inner, a, x, e); }
static int rec_unstake(void *impl, const uint8_t a[WALLET_PUBLEN], amount_t x, err_msg_t *e)
{ return settle_unstake(&((chrec_t *)impl)->inner, a, x, e); }
static int rec_redeem(void *impl, const voucher_t *v, int64_t now, amount_t *paid, err_msg_t *e)
{ return settle_redeem(&((chrec_t *)impl)->inner, v, now, paid, e); }
static int rec_close(void *impl, const uint8_t id[MARKET_IDLEN], int party, int64_t now, settle_channel_t *out,
		     err_msg_t *e)
{ return settle_close(&((chrec_t *)impl)->inner, id, party, now, out, e); }
static int rec_slash(void *impl, const uint8_t pr[WALLET_PUBLEN], amount_t x, const uint8_t b[WALLET_PUBLEN],
		     const uint8_t ev[MARKET_IDLEN], int64_t now, amount_t *slashed, err_msg_t *e)
{ return settle_slash(&((chrec_t *)impl)->inner, pr, x, b, ev, now, slashed, e); }
static int rec_account(void *impl, const uint8_t a[WALLET_PUBLEN], settle_account_t *out, err_msg_t *e)
{ return settle_account(&((chrec_t *)impl)->inner, a, out, e); }
static int rec_channel(void *impl, const uint8_t id[MARKET_IDLEN], settle_channel_t *out, err_msg_t *e)
{ return settle_channel(&((chrec_t *)impl)->inner, id, out, e); }

static const settle_ops_t rec_ops = {
	rec_deposit, rec_withdraw, rec_stake, rec_unstake, rec_reserve, rec_redeem, rec_close, rec_slash,
	rec_account, rec_channel,
};

int chrec_new(const chrec_cfg_t *cfg, chrec_t **out, err_msg_t *e)
{
	*out = NULL;
	chrec_t *r = calloc(1, sizeof(*r));
	if (!r)
		return err_set(e, ERR_NOMEM, "out of memory");
	r->inner = cfg->inner;
	r->cs = cfg->cs;
	if (cfg->ledger_id)
		memcpy(r->ledger_id, cfg->ledger_id, WALLET_PUBLEN);
	snprintf(r->ledger, sizeof(r->ledger), "%s", cfg->ledger ? cfg->ledger : "");
	pthread_mutex_init(&r->mu, NULL);
	*out = r;
	return 0;
}

void chrec_free(chrec_t *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r->chans);
	free(r);
}

settle_t chrec_settle(chrec_t *r)
{
	settle_t s = { &rec_ops, r };
	return s;
}

int chrec_count(chrec_t *r)
{
	pthread_mutex_lock(&r->mu);
	int n = r->n_chans;
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* One close as buyer, outside the lock (a ledger round trip); the record
 * and the channel's state follow the ledger's answer. */
static void close_one(chrec_t *r, const uint8_t id[MARKET_IDLEN], chrec_closed_cb cb, void *ud)
{
	chrec_closed_t c;
	memset(&c, 0, sizeof(c));
	memcpy(c.id, id, MARKET_IDLEN);
	int64_t now = (int64_t)time(NULL);
	c.rc = settle_close(&r->inner, id, SETTLE_BY_BUYER, now, &c.ch, &c.e);
	int st = REC_RETRY;
	int64_t at = now + RETRY_S;
	if (c.rc == ERR_NOTFOUND) {
		/* the ledger does not have it (a reserve whose reply was lost and
		 * that did not run): nothing to close now. The record stays as it
		 * is; colony wallet reclaim marks it gone once a reserve can no
		 * longer create it (after its expiry). */
		st = REC_DONE;
	} else if (c.rc == 0) {
		c.state = c.ch.state == SETTLE_CLOSED ? CHSTORE_CLOSED
			: c.ch.state == SETTLE_CLOSING ? CHSTORE_CLOSING : CHSTORE_OPEN;
		store_set(r, id, c.state, c.ch.close_at, c.ch.redeemed, c.ch.refunded);
		st = c.state == CHSTORE_CLOSED ? REC_DONE : REC_CLOSING;
		at = c.state == CHSTORE_CLOSING ? c.ch.close_at : now + RETRY_S;
	}
	pthread_mutex_lock(&r->mu);
	int k = chan_find(r, id);
	if (k >= 0) {
		r->chans[k].state = st;
		r->chans[k].close_at = at;
	}
	pthread_mutex_unlock(&r->mu);
	if (cb)
		cb(ud, &c);
}

/* Takes a copy of the ids to close under the lock; closes them without it. */
static int close_pick(chrec_t *r, const uint8_t (*ids)[MARKET_IDLEN], int n, int all, int64_t now, chrec_closed_cb cb,
		      void *ud, int *waiting)
{
	pthread_mutex_lock(&r->mu);
	uint8_t(*pick)[MARKET_IDLEN] = r->n_chans ? malloc(sizeof(*pick) * (size_t)r->n_chans) : NULL;
	int np = 0, left = 0;
	for (int i = 0; pick && i < r->n_chans; i++) {
		struct rec_chan *ch = &r->chans[i];
		int want;
		if (now)   /* chrec_finish: closing ones whose window passed, failed closes */
			want = (ch->state == REC_CLOSING || ch->state == REC_RETRY) && now >= ch->close_at;
		else
			want = ch->state == REC_RESERVED || (all && ch->state == REC_RETRY);
		if (want && !all && !now) {
			want = 0;
			for (int j = 0; j < n && !want; j++)
				want = !memcmp(ids[j], ch->id, MARKET_IDLEN);
		}
		if (want)
			memcpy(pick[np++], ch->id, MARKET_IDLEN);
		else if (ch->state == REC_CLOSING || ch->state == REC_RETRY)
			left++;
	}
	pthread_mutex_unlock(&r->mu);
	for (int i = 0; i < np; i++)
		close_one(r, pick[i], cb, ud);
	free(pick);
	if (waiting) {
		pthread_mutex_lock(&r->mu);
		left = 0;
		for (int i = 0; i < r->n_chans; i++)
			left += r->chans[i].state == REC_CLOSING || r->chans[i].state == REC_RETRY;
		pthread_mutex_unlock(&r->mu);
		*waiting = left;
	}
	return np;
}

int chrec_close(chrec_t *r, const uint8_t (*ids)[MARKET_IDLEN], int n, chrec_closed_cb cb, void *ud)
{
	return n > 0 ? close_pick(r, ids, n, 0, 0, cb, ud, NULL) : 0;
}

int chrec_close_all(chrec_t *r, chrec_closed_cb cb, void *ud)
{
	return close_pick(r, NULL, 0, 1, 0, cb, ud, NULL);
}

int chrec_finish(chrec_t *r, int64_t now, chrec_closed_cb cb, void *ud)
{
	int left = 0;
	close_pick(r, NULL, 0, 0, now > 0 ? now : 1, cb, ud, &left);
	return left;
}
