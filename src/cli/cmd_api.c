/* cmd_api.c - the HTTP gateway beside `colony node` and `colony swarm`
 * (--api HOST:PORT, --api-key KEY): shared option handling and start-up;
 * and `colony api`, the gateway alone, a client of a swarm it bootstraps
 * into. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/http.h"
#include "base/log.h"
#include "cli/cmd.h"
#include "cli/opts.h"
#include "market/amount.h"
#include "swarm/route.h"

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
	hc.pay_shards = o->pay_shards;
	hc.shard_budget = o->shard_budget;
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

/* ---- colony api */

static void api_usage(FILE *f)
{
	fprintf(f,
		"usage: colony api -m MODEL --bootstrap HOST:PORT [--listen HOST:PORT] [options]\n"
		"\n"
		"Serves the OpenAI-compatible HTTP API (see README) for the swarm reachable from\n"
		"the DHT address(es) given, without serving any layer itself: the model file gives\n"
		"the tokenizer, chat template, embedding and head, and its model id selects the\n"
		"shard servers. Prints its URL on stdout; SIGINT or SIGTERM stop it. Logs go to\n"
		"stderr.\n"
		"\n"
		"  -m, --model FILE       GGUF model\n"
		"  --bootstrap HOST:PORT  DHT port of a node of the swarm (repeatable, at least one)\n"
		"  --listen HOST:PORT     where to listen (default 127.0.0.1:0: a free port)\n"
		"  --api-key KEY          require 'Authorization: Bearer KEY' on every request\n"
		"  --network NAME         the swarm's network id (default colony)\n"
		"  --stale-ms N           staleness bound of DHT records\n"
		"  --prefer price|speed|reputation, --prefer-weights P:S:R  route policy (colony run)\n"
		"  --pay                  pay the shard servers that take payments, as colony run\n"
		"                         --pay does: a channel per session reserved at --ledger-peer\n"
		"                         (recorded in the wallet home's channels.db first), vouchers\n"
		"                         as tokens arrive; a generation's channels are closed when it\n"
		"                         ends and closed again after the ledger's challenge window,\n"
		"                         which brings the unspent budget back. /api/status \"spend\"\n"
		"                         counts what was paid; reputation digests are published\n"
		"  --ledger-peer HOST:PORT  the ledger node (also: priced skill calls are paid)\n"
		"  --wallet-home DIR      where the paying wallet.key lives (default ~/.colony)\n"
		"  --budget AMOUNT        budget of each channel, in units (default 1)\n"
		"  --log-level L          debug, info, warn, error (default info)\n"
		"\nexit codes: 0 clean stop, 1 runtime error, 2 usage, 3 bad model file\n");
}

static volatile sig_atomic_t g_api_stop;
static void api_on_sig(int s) { (void)s; g_api_stop = 1; }

int cmd_api(int argc, char **argv)
{
	cmd_api_opts_t o;
	memset(&o, 0, sizeof(o));
	o.listen = "127.0.0.1:0";
	o.network = "colony";
	const char *prefer = NULL, *weights = NULL, *wallet_home = NULL;
	enum log_level lvl = LOG_INFO;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			api_usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--pay")) {
			o.pay_shards = 1;
			continue;
		}
		if (!(v = opt_arg(argc, argv, &i)))
			return CMD_EXIT_USAGE;
		if (!strcmp(a, "-m") || !strcmp(a, "--model")) o.model_path = v;
		else if (!strcmp(a, "--listen") || !strcmp(a, "--api")) o.listen = v;
		else if (!strcmp(a, "--api-key")) o.key = v;
		else if (!strcmp(a, "--network")) o.network = v;
		else if (!strcmp(a, "--prefer")) prefer = v;
		else if (!strcmp(a, "--prefer-weights")) weights = v;
		else if (!strcmp(a, "--ledger-peer")) o.pay_ledger = v;
		else if (!strcmp(a, "--wallet-home")) wallet_home = v;
		else if (!strcmp(a, "--bootstrap")) {
			if (o.n_bootstrap >= SWARM_MAX_BOOTSTRAP) {
				fprintf(stderr, "colony: at most %d --bootstrap\n", SWARM_MAX_BOOTSTRAP);
				return CMD_EXIT_USAGE;
			}
			o.bootstrap[o.n_bootstrap++] = v;
		} else if (!strcmp(a, "--stale-ms")) {
			if (opt_u64(a, v, &o.stale_ms)) return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "--budget")) {
			err_msg_t e = { { 0 } };
			if (amount_parse(v, &o.shard_budget, &e) != 0 || o.shard_budget <= 0) {
				fprintf(stderr, "colony: --budget expects a positive amount: %s\n", e.msg[0] ? e.msg : v);
				return CMD_EXIT_USAGE;
			}
		} else if (!strcmp(a, "--log-level")) {
			if (!strcmp(v, "debug")) lvl = LOG_DEBUG;
			else if (!strcmp(v, "info")) lvl = LOG_INFO;
			else if (!strcmp(v, "warn")) lvl = LOG_WARN;
			else if (!strcmp(v, "error")) lvl = LOG_ERROR;
			else {
				fprintf(stderr, "colony: --log-level expects debug, info, warn or error\n");
				return CMD_EXIT_USAGE;
			}
		} else {
			fprintf(stderr, "colony: api: unknown option '%s'\n", a);
			api_usage(stderr);
			return CMD_EXIT_USAGE;
		}
	}
	if (!o.model_path || !o.n_bootstrap) {
		fprintf(stderr, "colony: api: needs -m MODEL and --bootstrap HOST:PORT\n");
		return CMD_EXIT_USAGE;
	}
	if (o.pay_shards && !o.pay_ledger) {
		fprintf(stderr, "colony: api: --pay needs --ledger-peer HOST:PORT\n");
		return CMD_EXIT_USAGE;
	}
	route_cost_t rc;
	err_msg_t e = { { 0 } };
	if (route_prefer_parse(&rc, prefer, weights, &e) != 0) {
		fprintf(stderr, "colony: %s\n", e.msg);
		return CMD_EXIT_USAGE;
	}
	o.prefer = rc.prefer;
	o.w_price = rc.w_price;
	o.w_speed = rc.w_speed;
	o.w_rep = rc.w_rep;
	char homebuf[1024];
	if (!wallet_home) {
		const char *h = getenv("HOME");
		snprintf(homebuf, sizeof(homebuf), "%s/.colony", h && *h ? h : ".");
		wallet_home = homebuf;
	}
	o.pay_wallet_home = wallet_home;
	log_setup(lvl, 0);
	/* a ledger that dies leaves a dead socket: the next write must fail
	 * with EPIPE, not kill the gateway */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, api_on_sig);
	signal(SIGTERM, api_on_sig);
	gguf_t *g = NULL;
	http_gw_t *gw = NULL;
	int r = gguf_open(o.model_path, &g, &e);
	if (r) {
		fprintf(stderr, "colony: api: %s: %s\n", o.model_path, e.msg);
		return r == ERR_IO ? CMD_EXIT_ERROR : CMD_EXIT_BADFILE;
	}
	if ((r = cmd_api_start(&o, g, NULL, NULL, &gw, &e)) != 0) {
		fprintf(stderr, "colony: api: %s\n", e.msg);
		gguf_free(g);
		return CMD_EXIT_ERROR;
	}
	/* the signal may land on any of the gateway's threads: poll the flag */
	while (!g_api_stop)
		usleep(100000);
	http_gw_free(gw);
	gguf_free(g);
	return 0;
}
