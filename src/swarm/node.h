/* node.h - the node daemon: identity, encrypted transport, DHT discovery and
 * a local control socket, on one libuv loop.
 *
 * A node started with a model and a layer span announces a signed record for
 * it (refreshed, tombstoned on a clean stop), keeps a view of every other
 * node announcing the same model, connects to them over Noise XX and keeps
 * their RTT and throughput as moving averages (for routing). The control
 * socket (<home>/control.sock, mode 0600) answers one-line commands:
 *   "peers"  -> one JSON object per line for each known peer, then "."
 *   "status" -> one JSON object, then "." (with "earned": the micro-units
 *               redeemed at the ledger for paid sessions since start, and
 *               "spent": what its gateway paid providers, cfg.spent)
 * so `colony peers` and tests can read what the node knows.
 */
#ifndef COLONY_SWARM_NODE_H
#define COLONY_SWARM_NODE_H

#include <stdint.h>

#include "base/err.h"
#include "dht/dht.h"
#include "model/gguf.h"

#define NODE_MAX_BOOTSTRAP 16
#define NODE_CONTROL_SOCK "control.sock"

typedef struct node_cfg {
	const char *home;              /* identity and control socket */
	const char *network;           /* network id (default "colony") */
	const char *listen_host;       /* transport address (default 127.0.0.1) */
	int port;                      /* transport TCP port, 0 = ephemeral */
	const char *announce_host;     /* address put in records (default listen_host) */
	int announce_port;             /* port put in records, 0 = the transport's own (set it
	                                  when peers reach this node through a relay or NAT) */
	int dht_port;                  /* DHT UDP port, 0 = ephemeral */
	const char *bootstrap[NODE_MAX_BOOTSTRAP];
	int n_bootstrap;
	const char *model_path;        /* GGUF to serve, or NULL */
	int layer_a, layer_b;          /* span [a, b) served; b = 0: all layers */
	uint64_t price;                /* micro-units per 1M tokens */
	uint64_t kv_mem;               /* KV-cache budget of the sessions served (0 = 512 MiB) */
	const char *watch_model;       /* hex model id to follow without serving it, or NULL */
	uint64_t refresh_ms;           /* DHT re-announce period (0 = default) */
	uint64_t stale_ms;             /* record staleness bound (0 = 3 x refresh) */
	const char *ledger_db;         /* serve the ledger service on this SQLite file, or NULL */
	const char *ledger_operator;   /* hex wallet address allowed to deposit/withdraw/slash */
	int64_t ledger_window;         /* the ledger's challenge window, seconds (0: 3600) */
	/* Paid sessions (shard.h "Payments"): on when a price is set or payment
	 * is required. The wallet is <wallet_home or home>/wallet.key; vouchers
	 * are redeemed at ledger_peer ("host:port") when each paid session ends. */
	int64_t price_in, price_out;   /* micro-units per 1M input / output tokens */
	uint32_t pay_chunk;            /* tokens per voucher (0: 64) */
	int require_payment;           /* refuse sessions without a channel */
	const char *wallet_home;       /* NULL: home */
	const char *ledger_peer;       /* NULL: vouchers are kept, not redeemed */
	/* Each accepted voucher is stored in <wallet home>/vouchers.db before its
	 * credit is served; those the ledger has not confirmed are redeemed at
	 * start, every minute, and sooner after a failure (market/vstore.h). */
	/* Something run beside the node (the CLI's HTTP gateway): on_started is
	 * called once the node is up, with its DHT node and its model file (NULL
	 * without a model) and id, which stay valid until on_stopped; that is
	 * called after the node's loop has ended, before they are freed. A
	 * nonzero return from on_started stops the node with that error. */
	int (*on_started)(void *ud, dht_node_t *dht, const gguf_t *model, const uint8_t *model_id, err_msg_t *e);
	/* If set, *earned_ref is pointed, before on_started, at the node's
	 * counter of micro-units redeemed (read it atomically); valid until
	 * on_stopped returns. */
	const int64_t **earned_ref;
	/* If set, "status" reports spent(hook_ud): micro-units paid by what
	 * runs beside the node (its gateway's swarm client). Called on the
	 * node's loop thread between on_started and on_stopped. */
	int64_t (*spent)(void *ud);
	void (*on_stopped)(void *ud);
	void *hook_ud;
} node_cfg_t;

void node_cfg_default(node_cfg_t *c);

/* Runs the node until SIGINT or SIGTERM, then shuts down cleanly (tombstones,
 * connections closed). Logs to stderr. Returns 0 after a clean stop, or a
 * negative code with *e saying why it could not start or run. */
int node_run(const node_cfg_t *cfg, err_msg_t *e) WUR;

#endif
