/* client_once.c - swarm_generate: one generation through a swarm client of
 * its own (client.h), for `colony run --swarm`. Uses only the client's
 * public interface. */
#include "swarm/client.h"

#include <string.h>
#include <unistd.h>

void swarm_cfg_default(swarm_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->network = SWARM_DEFAULT_NETWORK;
	c->enc = WIRE_ENC_F32;
	c->kv_type = WIRE_KV_F32;
	c->discover_ms = SWARM_DEFAULT_DISCOVER_MS;
	c->timeout_ms = SWARM_DEFAULT_TIMEOUT_MS;
}

int swarm_generate(const swarm_cfg_t *cfg, const int32_t *prompt, int n_prompt, int n_predict, swarm_result_t *res,
		   err_msg_t *e)
{
	memset(res, 0, sizeof(*res));
	if (!cfg->smp)
		return err_set(e, ERR_INVAL, "no sampler");
	swarm_client_cfg_t cc;
	swarm_client_cfg_default(&cc);
	cc.network = cfg->network;
	for (int i = 0; i < cfg->n_bootstrap && i < SWARM_MAX_BOOTSTRAP; i++)
		cc.bootstrap[i] = cfg->bootstrap[i];
	cc.n_bootstrap = cfg->n_bootstrap;
	cc.model = cfg->model;
	cc.model_id = cfg->model_id;
	cc.pool = cfg->pool;
	cc.enc = cfg->enc;
	cc.kv_type = cfg->kv_type;
	cc.discover_ms = cfg->discover_ms;
	cc.timeout_ms = cfg->timeout_ms;
	cc.price_weight = cfg->price_weight;
	cc.pay_wallet = cfg->pay_wallet;
	cc.pay_settle = cfg->pay_settle;
	cc.pay_budget = cfg->pay_budget;
	cc.pay_expiry_s = cfg->pay_expiry_s;
	cc.prefer = cfg->prefer;
	cc.w_price = cfg->w_price;
	cc.w_speed = cfg->w_speed;
	cc.w_rep = cfg->w_rep;
	cc.rep_publish_ms = UINT32_MAX;   /* no periodic digests: once at the end (rep_publish, below) */
	swarm_client_t *c = NULL;
	int r = swarm_client_new(&cc, &c, e);
	if (r)
		return r;
	swarm_req_t rq;
	memset(&rq, 0, sizeof(rq));
	rq.prompt = prompt;
	rq.n_prompt = n_prompt;
	rq.n_predict = n_predict;
	rq.smp = cfg->smp;
	rq.on_token = cfg->on_token;
	rq.user = cfg->user;
	swarm_job_t *j = NULL;
	if ((r = swarm_client_submit(c, &rq, &j, e)) == 0) {
		enum swarm_job_state st = SWARM_JOB_WAITING;
		int32_t toks[256];
		while (st != SWARM_JOB_DONE)
			(void)swarm_job_poll(j, 1000, toks, 256, &st);
		r = swarm_job_result(j, res, e);
		swarm_job_free(j);
	}
	if (r == 0 && cfg->pay_wallet && cfg->rep_publish && swarm_client_publish_digests(c, 1000) > 0)
		usleep(SWARM_DIGEST_LINGER_MS * 1000);
	swarm_client_free(c);
	return r;
}
