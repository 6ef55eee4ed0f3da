/* cmd_api.c - the HTTP gateway beside `colony node` and `colony swarm`
 * (--api HOST:PORT, --api-key KEY): shared option handling and start-up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/http.h"
#include "cli/cmd.h"

/* The model's id in /v1/models: the file name without its folder and .gguf. */
static void model_name(const char *path, char *out, size_t cap)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	size_t n = strlen(b);
	if (n > 5 && !strcmp(b + n - 5, ".gguf"))
		n -= 5;
	snprintf(out, cap, "%.*s", (int)n, b);
}

int cmd_api_start(const cmd_api_opts_t *o, const gguf_t *g, const uint8_t *model_id, dht_node_t *dht,
		  http_gw_t **out, err_msg_t *e)
{
	char name[256];
	model_name(o->model_path, name, sizeof(name));
	http_cfg_t hc;
	http_cfg_default(&hc);
	hc.listen = o->listen;
	hc.api_key = o->key;
	hc.gguf = g;
	hc.model_name = name;
	hc.model_id = model_id;
	hc.client.network = o->network ? o->network : "colony";
	hc.client.dht = dht;
	for (int i = 0; i < o->n_bootstrap && i < SWARM_MAX_BOOTSTRAP; i++)
		hc.client.bootstrap[i] = o->bootstrap[i];
	hc.client.n_bootstrap = o->n_bootstrap;
	hc.client.stale_ms = o->stale_ms;
	hc.skills = o->skills;
	hc.n_skills = o->n_skills;
	hc.pay_ledger = o->pay_ledger;
	hc.pay_wallet_home = o->pay_wallet_home;
	hc.skill_budget = o->skill_budget;
	hc.skill_chunk = o->skill_chunk;
	hc.earned = o->earned;
	/* the dashboard shows every provider's reputation score */
	hc.client.rep_view = 1;
	hc.client.prefer = o->prefer;
	hc.client.w_price = o->w_price;
	hc.client.w_speed = o->w_speed;
	hc.client.w_rep = o->w_rep;
	int r = http_gw_new(&hc, out, e);
	if (r)
		return r;
	/* on stdout too, so scripts can read where it listens */
	printf("colony: API at %s\n", http_gw_url(*out));
	fflush(stdout);
	return 0;
}
