/* cmd.h - subcommands of the colony binary. Only src/cli/ may exit(). */
#ifndef COLONY_CLI_CMD_H
#define COLONY_CLI_CMD_H

#include "api/http.h"

#define COLONY_VERSION "0.1.0"

/* Exit codes, documented in README.md. */
enum {
	CMD_EXIT_OK = 0,
	CMD_EXIT_ERROR = 1,    /* a runtime failure */
	CMD_EXIT_USAGE = 2,    /* bad command line */
	CMD_EXIT_BADFILE = 3,  /* an input file is malformed or unsupported */
};

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_node(int argc, char **argv);
int cmd_peers(int argc, char **argv);
int cmd_swarm(int argc, char **argv);
int cmd_wallet(int argc, char **argv);
int cmd_api(int argc, char **argv);

/* The HTTP gateway beside a node or a local swarm (cmd_api.c). */
typedef struct cmd_api_opts {
	const char *listen;            /* --api HOST:PORT, NULL: no gateway */
	const char *key;               /* --api-key */
	const char *model_path;        /* the model file it was opened from (its name is the API's model id) */
	const char *network;
	const char *bootstrap[SWARM_MAX_BOOTSTRAP];   /* used when dht is NULL */
	int n_bootstrap;
	uint64_t stale_ms;             /* the gateway's own DHT node: record staleness bound (0: default) */
	const skill_def_t *skills;     /* --skill: offered through the gateway (borrowed) */
	int n_skills;
	const char *pay_ledger;        /* --ledger-peer: skill calls paid (http_cfg_t pay_*) */
	const char *pay_wallet_home;
	int64_t skill_budget;          /* --skill-budget */
	uint32_t skill_chunk;          /* --pay-chunk */
	const int64_t *earned;         /* the node's redeemed micro-units (atomic), when run in a node */
	int pay_shards;                /* --pay: the gateway pays shard sessions (http_cfg_t pay_shards) */
	int64_t shard_budget;          /* --budget: micro-units per channel (0: 1 unit) */
	int prefer;                    /* the gateway's route policy (route.h, --prefer) */
	double w_price, w_speed, w_rep;
} cmd_api_opts_t;
/* Starts the gateway over the model file g (model_id may be NULL: computed),
 * reading the given DHT node or its own bootstrapped one; prints its URL. */
int cmd_api_start(const cmd_api_opts_t *o, const gguf_t *g, const uint8_t *model_id, dht_node_t *dht,
		  http_gw_t **out, err_msg_t *e);

#endif
