/* gwpay.c - the gateway's paid shard sessions (see gwpay.h). */
#include "api/gwpay.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "market/chrec.h"
#include "market/chstore.h"
#include "market/settle_remote.h"
#include "market/wallet.h"

#define GWPAY_TICK_MS 1000        /* how often windows that ended are looked for */
#define GWPAY_JOB_WAIT_MS 60000   /* a handed-over job that does not end by then is freed as it is */

struct gw_job {
	swarm_job_t *job;
	struct gw_job *next;
};

struct gwpay {
	wallet_t *wallet;
	settle_remote_t *sr;
	chstore_t *cs;
	chrec_t *rec;
	int64_t budget;
	pthread_t thread;
	int thread_started;
	pthread_mutex_t mu;        /* guards the queue, busy and stop */
	pthread_cond_t cond;       /* the thread: work or stop; drain: the queue emptied */
	struct gw_job *head, *tail;
	int busy;                  /* a job taken off the queue and not freed yet */
	int stop;
};

static void closed_cb(void *ud, const chrec_closed_t *c)
{
	(void)ud;
	char hex[2 * MARKET_IDLEN + 1], left[AMOUNT_STRLEN];
	for (int k = 0; k < MARKET_IDLEN; k++)
		snprintf(hex + 2 * k, 3, "%02x", c->id[k]);
	if (c->rc)
		log_warn("gwpay", "channel %.16s not closed (%s): tried again later", hex, c->e.msg);
	else if (c->state == CHSTORE_CLOSING)
		log_info("gwpay", "channel %.16s closing: %s unspent comes back after %lld", hex,
			 amount_format(c->ch.budget - c->ch.redeemed, left), (long long)c->ch.close_at);
	else if (c->state == CHSTORE_CLOSED)
		log_info("gwpay", "channel %.16s closed: %s refunded", hex, amount_format(c->ch.refunded, left));
}

/* A job handed over: its end, its channels closed as buyer, freed. */
static void job_finish(gwpay_t *p, swarm_job_t *j)
{
	int32_t toks[256];
	enum swarm_job_state st = SWARM_JOB_RUNNING;
	swarm_job_cancel(j);
	for (int waited = 0; waited < GWPAY_JOB_WAIT_MS; waited += 200) {
		/* the tokens nobody reads any more are taken: DONE comes after them */
		while (swarm_job_poll(j, 0, toks, 256, &st) > 0)
			;
		if (st == SWARM_JOB_DONE)
			break;
		(void)swarm_job_poll(j, 200, toks, 256, &st);
	}
	if (st == SWARM_JOB_DONE) {
		swarm_result_t res;
		err_msg_t e = { { 0 } };
		memset(&res, 0, sizeof(res));
		if (swarm_job_result(j, &res, &e) != 0)
			log_debug("gwpay", "closing the channels of a failed generation (%s)", e.msg);
		uint8_t ids[SWARM_PAY_MAX_LINES][MARKET_IDLEN];
		int n = 0;
		for (int i = 0; i < res.n_pay && i < SWARM_PAY_MAX_LINES; i++)
			memcpy(ids[n++], res.pay[i].channel, MARKET_IDLEN);
		if (n)
			chrec_close(p->rec, (const uint8_t(*)[MARKET_IDLEN])ids, n, closed_cb, p);
	} else {
		log_warn("gwpay", "a generation did not end in %d s: its channels are closed when the gateway stops",
			 GWPAY_JOB_WAIT_MS / 1000);
	}
	swarm_job_free(j);
}

static void *closer_main(void *arg)
{
	gwpay_t *p = arg;
	time_t last = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (p->head) {
			struct gw_job *q = p->head;
			p->head = q->next;
			if (!p->head)
				p->tail = NULL;
			p->busy = 1;
			pthread_mutex_unlock(&p->mu);
			job_finish(p, q->job);
			free(q);
			pthread_mutex_lock(&p->mu);
			p->busy = 0;
			if (!p->head)
				pthread_cond_broadcast(&p->cond);
			continue;
		}
		if (p->stop)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += GWPAY_TICK_MS / 1000;
		(void)pthread_cond_timedwait(&p->cond, &p->mu, &ts);
		time_t now = time(NULL);
		if (!p->head && !p->stop && now != last) {
			last = now;
			pthread_mutex_unlock(&p->mu);
			(void)chrec_finish(p->rec, (int64_t)now, closed_cb, p);
			pthread_mutex_lock(&p->mu);
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int gwpay_new(const gwpay_cfg_t *cfg, gwpay_t **out, err_msg_t *e)
{
	*out = NULL;
	const char *lp = cfg->ledger_peer ? cfg->ledger_peer : "";
	const char *colon = strrchr(lp, ':');
	char host[256];
	char *end = NULL;
	long port = colon ? strtol(colon + 1, &end, 10) : 0;
	if (!colon || colon == lp || (size_t)(colon - lp) >= sizeof(host) || !end || *end || port < 1 || port > 65535)
		return err_set(e, ERR_INVAL, "ledger peer '%.100s': expected HOST:PORT", lp);
	memcpy(host, lp, (size_t)(colon - lp));
	host[colon - lp] = 0;
	if (!cfg->wallet_home)
		return err_set(e, ERR_INVAL, "paying shards needs a wallet home");
	gwpay_t *p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(e, ERR_NOMEM, "out of memory");
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->budget = cfg->budget > 0 ? cfg->budget : AMOUNT_UNIT;
	int r = wallet_load_or_create(cfg->wallet_home, &p->wallet, NULL, e);
	if (r) {
		r = err_prefix(e, r, "wallet in %s", cfg->wallet_home);
		goto fail;
	}
	settle_remote_cfg_t rc;
	settle_remote_cfg_default(&rc);
	rc.host = host;
	rc.port = (int)port;
	rc.network = cfg->network ? cfg->network : "colony";
	rc.wallet = p->wallet;
	if ((r = settle_remote_new(&rc, &p->sr, e)))
		goto fail;
	if ((r = chstore_open(cfg->wallet_home, &p->cs, e)))
		goto fail;
	chrec_cfg_t cc = { settle_remote_settle(p->sr), p->cs, settle_remote_ledger_id(p->sr), lp };
	if ((r = chrec_new(&cc, &p->rec, e)))
		goto fail;
	if (pthread_create(&p->thread, NULL, closer_main, p) != 0) {
		r = err_set(e, ERR_NOMEM, "cannot start the channel closing thread");
		goto fail;
	}
	p->thread_started = 1;
	char addr[WALLET_ADDR_STRLEN], b[AMOUNT_STRLEN];
	log_info("gwpay", "shard sessions are paid: wallet %s, ledger %s, budget %s per channel",
		 wallet_addr_str(wallet_pub(p->wallet), addr), lp, amount_format(p->budget, b));
	*out = p;
	return 0;
fail:
	gwpay_free(p);
	return r;
}

void gwpay_drain(gwpay_t *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	while (p->thread_started && (p->head || p->busy))
		pthread_cond_wait(&p->cond, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void gwpay_free(gwpay_t *p)
{
	if (!p)
		return;
	if (p->thread_started) {
		pthread_mutex_lock(&p->mu);
		p->stop = 1;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->thread, NULL);
	}
	/* jobs the thread never took (none once drained) */
	while (p->head) {
		struct gw_job *q = p->head;
		p->head = q->next;
		swarm_job_free(q->job);
		free(q);
	}
	if (p->rec) {
		/* what is still open: closed once; channels in their window stay
		 * recorded in channels.db (colony wallet reclaim) */
		chrec_close_all(p->rec, closed_cb, p);
		(void)chrec_finish(p->rec, (int64_t)time(NULL), closed_cb, p);
	}
	chrec_free(p->rec);
	chstore_free(p->cs);
	settle_remote_free(p->sr);
	wallet_free(p->wallet);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void gwpay_client_cfg(gwpay_t *p, swarm_client_cfg_t *cc)
{
	cc->pay_wallet = p->wallet;
	cc->pay_settle = chrec_settle(p->rec);
	cc->pay_budget = p->budget;
}

const wallet_t *gwpay_wallet(const gwpay_t *p) { return p->wallet; }

void gwpay_job_done(gwpay_t *p, swarm_job_t *j)
{
	if (!j)
		return;
	struct gw_job *q = malloc(sizeof(*q));
	if (!q) {
		/* its channels are closed when the gateway stops */
		swarm_job_free(j);
		return;
	}
	swarm_job_cancel(j);
	q->job = j;
	q->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = q;
	else
		p->head = q;
	p->tail = q;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->mu);
}
