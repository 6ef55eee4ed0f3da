/* client.h - generations through a swarm found in the DHT.
 *
 * A swarm_client_t is long-lived: a thread of its own runs a libuv loop with
 * an ephemeral identity, a view of the model's shard servers from the DHT
 * (its own DHT node that watches the model's key, or a borrowed one that a
 * node already runs, whose view it reads every 500 ms), and a Noise
 * connection kept to every server announcing the model. Servers found are
 * dialed as they appear; a server whose connection drops is dialed again
 * after SWARM_REDIAL_MS if it is still announced.
 *
 * Generations (jobs) are submitted from any thread, any number at once (up
 * to cfg.max_jobs): each is handed to the loop thread through a uv_async and
 * becomes one client session (sess.h) with its own route and sampler,
 * multiplexed with the others over the shared connections. Replies are
 * routed to a session by (server, session id). A job waits for a route up to
 * its discover_ms (servers found in the client's first SWARM_SETTLE_MS are
 * given that long to connect before the first route is planned, so the best
 * chain is not missed for one that answered first); then it streams: its
 * tokens are queued for the submitting thread (swarm_job_poll) and, if
 * given, passed to req.on_token on the loop thread.
 *
 * Pacing. A server closes a connection that sends it more than its message
 * rate limit (peer.h; 2000 messages/s by default); since every FORWARD of
 * every session on a connection counts, the client sends at most
 * cfg.max_msgs_per_sec messages a second per server (default 1500), queueing
 * the rest in order.
 *
 * An ERROR message carries no session id: a shard follows it with
 * CLOSE_SESSION for the session concerned (shard.h), which is what fails
 * that session's hop, so ERROR alone is only logged. Any other message a
 * server never sends to a client fails every session's hop on that server.
 *
 * Threads and lifetimes: swarm_client_new/free from one owner thread; submit,
 * poll, cancel, result and free of jobs from any thread (each job from one
 * thread at a time). A job stays valid until swarm_job_free (which cancels
 * it if it is still running). swarm_client_free cancels every job still
 * running (they end with ERR_INVAL "client closed"); jobs not yet freed must
 * still be freed by their owners, after it returns as well.
 *
 * swarm_generate() is the one-shot form: a client, one job, its result.
 */
#ifndef COLONY_SWARM_CLIENT_H
#define COLONY_SWARM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "dht/dht.h"
#include "infer/sampler.h"
#include "market/settle.h"
#include "market/wallet.h"
#include "model/model.h"
#include "swarm/sess.h"

#define SWARM_MAX_BOOTSTRAP 16
#define SWARM_SETTLE_MS 2000          /* found servers get this long to connect before routing */
#define SWARM_REDIAL_MS 5000          /* a server whose connection dropped is dialed again after this */
#define SWARM_DEFAULT_MAX_JOBS 256
#define SWARM_DEFAULT_MSGS_PER_SEC 1500.0
/* Defaults shared by swarm_client_cfg_t and swarm_cfg_t. */
#define SWARM_DEFAULT_NETWORK "colony"
#define SWARM_DEFAULT_DISCOVER_MS 15000
#define SWARM_DEFAULT_TIMEOUT_MS 10000
#define SWARM_REP_MAX_WATCH 12        /* providers whose digests a client watches */
#define SWARM_REP_MAX_PUBLISH 4       /* digests a client keeps announced */
#define SWARM_REP_PUBLISH_MS 60000u
#define SWARM_DIGEST_LINGER_MS 1000

typedef struct swarm_client swarm_client_t;
typedef struct swarm_job swarm_job_t;

typedef struct swarm_client_cfg {
	const char *network;               /* default "colony" */
	const char *bootstrap[SWARM_MAX_BOOTSTRAP];
	int n_bootstrap;
	dht_node_t *dht;                   /* borrowed DHT node to read (outlives the client); NULL: own node */
	const model_t *model;              /* borrowed: embedding, norm, head */
	const uint8_t *model_id;           /* 32 bytes, copied */
	pool_t *pool;                      /* borrowed, may be NULL; used by the client's thread only */
	uint8_t enc;                       /* enum wire_enc (default F32) */
	uint8_t kv_type;                   /* enum wire_kv */
	uint32_t discover_ms;              /* default wait of a job for a route (15 s) */
	uint32_t timeout_ms;               /* a hop that does not answer in time fails over */
	double price_weight;               /* route cost: ms per unit of announced price (0: price ignored) */
	int max_jobs;                      /* jobs at once; more are refused (ERR_FULL) */
	double max_msgs_per_sec;           /* per server connection (pacing, above) */
	uint64_t stale_ms;                 /* own DHT node: records older than this drop out (0: the DHT's default) */
	/* Payments (docs/PROTOCOL.md "Paid sessions"); pay_wallet NULL: none,
	 * sessions are opened unpaid exactly as before. With a wallet, the client
	 * asks every server its terms (PAY_TERMS_REQ when the connection is
	 * ready); a server that takes payments gets, for each session opened on
	 * it, a channel of pay_budget reserved at pay_settle (a blocking call,
	 * made on a libuv worker: the loop never waits; the OPEN_SESSION waits
	 * for it), a PAY_OPEN, and a cumulative voucher after every chunk of
	 * tokens it delivers and before the session is closed (a server paid
	 * into pay_wallet itself, a node's own layers, is opened unpaid). Both
	 * borrowed, outliving the client; pay_settle is called from several
	 * worker threads at once, so it must be thread-safe (settle_remote
	 * serialises its calls; market/chrec.h's wrapper guards its own state). */
	const wallet_t *pay_wallet;
	settle_t pay_settle;
	int64_t pay_budget;                /* micro-units per channel (> 0 with a wallet) */
	uint32_t pay_expiry_s;             /* channel lifetime (default 3600 s) */
	/* Route policy (route.h; route_prefer_parse fills a route_cost_t whose
	 * prefer and weights are copied here). ROUTE_PREFER_NONE: the ms cost. */
	int prefer;
	double w_price, w_speed, w_rep;
	/* Reputation (docs/ARCHITECTURE.md "Reputation"). The client tallies
	 * every provider's sessions, failures, latency and what it paid it. With
	 * w_rep > 0 or rep_view set it watches the receipt digests published
	 * about each provider (up to SWARM_REP_MAX_WATCH) and scores them
	 * (swarm_server_info_t.rep). With a wallet it publishes, every
	 * rep_publish_ms (0: SWARM_REP_PUBLISH_MS), a signed digest about each
	 * provider it paid (at most SWARM_REP_MAX_PUBLISH) through its DHT node
	 * (UINT32_MAX: never; swarm_generate, which lives for one generation).
	 * A client routing on reputation (w_rep > 0) gives its first routes up to
	 * 5 s (CREP_GRACE_MS) for the digests to arrive and be checked. */
	int rep_view;
	uint32_t rep_publish_ms;
} swarm_client_cfg_t;

/* One generation. Everything is copied at submit. */
typedef struct swarm_req {
	const int32_t *prompt;
	int n_prompt;
	int n_predict;
	smp_params_t sp;                   /* the job's own sampler chain is built from these... */
	smp_chain_t *smp;                  /* ...unless this is set (borrowed until the job is done) */
	const int32_t *stop_tokens;        /* the generation ends after one of these (it is delivered) */
	int n_stop_tokens;
	uint32_t discover_ms;              /* 0: the client's */
	sess_token_cb on_token;            /* may be NULL; on the client's thread, logits borrowed */
	void *user;
} swarm_req_t;

/* What a job paid one provider on one channel (a session of a hop). */
typedef struct swarm_pay_line {
	uint8_t provider[WALLET_PUBLEN];   /* its wallet */
	uint8_t channel[32];
	uint64_t in_tokens, out_tokens;    /* counted by the client */
	int64_t paid;                      /* the last voucher's cumulative amount */
	int64_t price_in, price_out;       /* agreed, per 1M tokens */
} swarm_pay_line_t;

#define SWARM_PAY_MAX_LINES 16

typedef struct swarm_result {
	int n_tokens;
	double seconds_prompt, seconds_gen;  /* submit to the first token; then the rest */
	int stopped_by_token;              /* ended on one of req.stop_tokens */
	int cancelled;                     /* ended by swarm_job_cancel (or on_token asking to stop) */
	sess_stats_t stats;
	char route[512];                   /* "[0,3) a1b2c3d4 127.0.0.1:4000 -> [3,5) ..." of the final route */
	int n_pay;                         /* paid channels of the job (at most SWARM_PAY_MAX_LINES kept) */
	swarm_pay_line_t pay[SWARM_PAY_MAX_LINES];
} swarm_result_t;

enum swarm_job_state {
	SWARM_JOB_WAITING = 0,             /* for a route */
	SWARM_JOB_RUNNING = 1,             /* sessions opened, tokens coming */
	SWARM_JOB_DONE = 2,
};

/* What the client knows of the model's servers (for /v1/models and status). */
typedef struct swarm_view {
	int n_layer;
	int servers_known, servers_ready;
	int layers_covered;                /* layers served by at least one connected server */
	int min_replicas;                  /* fewest connected servers over any layer (0: a gap) */
	int jobs;                          /* running or waiting */
	uint64_t jobs_total, tokens_total, failovers_total;
	uint64_t wire_bytes_in, wire_bytes_out;  /* over every server connection so far (monotonic) */
	int64_t spent_total;               /* micro-units paid to providers so far (final vouchers) */
	int digests_published;             /* receipt digests announced now */
} swarm_view_t;

/* One server of the model as the client knows it (for a status page). */
typedef struct swarm_server_info {
	uint8_t node_id[ANN_IDLEN];
	char addr[64];                     /* the record's first address, "ip:port" */
	uint32_t layer_a, layer_b;         /* span [a, b) */
	uint64_t price;                    /* micro-units per 1M tokens */
	uint32_t throughput_milli;         /* announced tokens/s x 1000 */
	uint32_t free_sessions;
	uint64_t timestamp_ms;             /* of its newest record (signer's clock) */
	int listed;                        /* in the DHT view now (fresh, not tombstoned) */
	int connected;                     /* a ready connection */
	double rtt_ms;                     /* measured while connected; < 0 otherwise */
	double rep;                        /* reputation score in [0, 1]; < 0: unknown */
	uint32_t digests;                  /* others' receipt digests about it in the view */
	uint32_t sessions, failures;       /* this client's hop sessions with it, of them failed */
	int64_t paid;                      /* what this client paid it */
} swarm_server_info_t;

/* A hop of a job's route, for display. */
typedef struct swarm_hop {
	uint8_t node_id[ANN_IDLEN];
	char addr[64];
	int layer_a, layer_b;
} swarm_hop_t;

#define SWARM_INFO_MAX_HOPS 16

/* A job as it runs (refreshed by the client's thread every 500 ms and when
 * its route changes). */
typedef struct swarm_job_info {
	enum swarm_job_state state;
	int n_hops;                        /* of the current route (at most SWARM_INFO_MAX_HOPS kept) */
	swarm_hop_t hops[SWARM_INFO_MAX_HOPS];
	int failovers;
	int n_tokens;                      /* generated so far */
} swarm_job_info_t;

void swarm_client_cfg_default(swarm_client_cfg_t *c);
/* Starts the client (with its own DHT node, a first lookup of up to 1.5 s).
 * ERR_INVAL for a bad cfg, or the DHT's and transport's errors. */
int swarm_client_new(const swarm_client_cfg_t *cfg, swarm_client_t **out, err_msg_t *e) WUR;
/* Stops the thread, closes every connection; see the lifetimes above. NULL is fine. */
void swarm_client_free(swarm_client_t *c);
void swarm_client_view(swarm_client_t *c, swarm_view_t *v);
/* The DHT node the client reads (the borrowed one, or its own): valid while c lives. */
dht_node_t *swarm_client_dht(swarm_client_t *c);
/* The model's servers known (at most cap written; returns how many there
 * are), as of the client's last view (refreshed every 500 ms). Any thread. */
int swarm_client_servers(swarm_client_t *c, swarm_server_info_t *out, int cap);

/* Asks the client's loop to announce its receipt digests now (a client
 * about to close: see swarm_cfg_t.rep_publish) and waits up to timeout_ms
 * for it. Returns the digests announced now (0 without a wallet or
 * payments), or -1 if the loop did not answer in time. Any thread. */
int swarm_client_publish_digests(swarm_client_t *c, int timeout_ms);

/* Submits a generation. ERR_INVAL (no prompt, n_predict < 1, a token outside
 * the vocabulary), ERR_FULL (max_jobs running), ERR_NOMEM. */
int swarm_client_submit(swarm_client_t *c, const swarm_req_t *r, swarm_job_t **out, err_msg_t *e) WUR;
/* Waits up to timeout_ms (0: no wait) for tokens not taken yet or for the
 * job's end; moves up to cap of them to toks and returns how many. *st (may
 * be NULL) gets the state; DONE is reported only once every token was taken. */
int swarm_job_poll(swarm_job_t *j, int timeout_ms, int32_t *toks, int cap, enum swarm_job_state *st);
/* Ends the job soon (its sessions are closed at the servers). Any thread. */
void swarm_job_cancel(swarm_job_t *j);
/* After DONE: the outcome (0, or the session's error with *e) and figures. */
int swarm_job_result(swarm_job_t *j, swarm_result_t *res, err_msg_t *e) WUR;
/* The route now, as in swarm_result_t.route ("" before it is planned). */
void swarm_job_route(swarm_job_t *j, char *buf, size_t cap);
/* State, route hops, failovers and tokens of the job now. Any thread. */
void swarm_job_info(swarm_job_t *j, swarm_job_info_t *out);
void swarm_job_free(swarm_job_t *j);   /* NULL is fine */

/* ---- one-shot */

typedef struct swarm_cfg {
	const char *network;               /* default "colony" */
	const char *bootstrap[SWARM_MAX_BOOTSTRAP];
	int n_bootstrap;
	const model_t *model;              /* the client's copy: embedding, norm, head */
	const uint8_t *model_id;           /* 32 bytes */
	pool_t *pool;
	smp_chain_t *smp;
	uint8_t enc;                       /* enum wire_enc (default F32) */
	uint8_t kv_type;                   /* enum wire_kv */
	uint32_t discover_ms;              /* wait this long at most for a full route (default 15 s) */
	uint32_t timeout_ms;               /* a hop that does not answer in time fails over */
	double price_weight;               /* route cost: ms per unit of announced price (0: price ignored) */
	sess_token_cb on_token;            /* each token (on the client's thread); nonzero stops */
	void *user;
	const wallet_t *pay_wallet;        /* payments, as in swarm_client_cfg_t (NULL: none) */
	settle_t pay_settle;
	int64_t pay_budget;
	uint32_t pay_expiry_s;
	int prefer;                        /* route policy, as in swarm_client_cfg_t */
	double w_price, w_speed, w_rep;
	/* With a wallet: announce a receipt digest about each provider paid when
	 * the generation ends, then linger SWARM_DIGEST_LINGER_MS so the DHT
	 * puts leave before the client's DHT node closes. Nobody refreshes them
	 * afterwards: readers drop them once stale (3 x the DHT refresh, 3 min
	 * by default). They are signed by the run's throwaway identity and name
	 * its wallet, which is what they weigh by. */
	int rep_publish;
} swarm_cfg_t;

void swarm_cfg_default(swarm_cfg_t *c);
/* A client, one generation of n_predict tokens, the client closed. */
int swarm_generate(const swarm_cfg_t *cfg, const int32_t *prompt, int n_prompt, int n_predict,
		   swarm_result_t *res, err_msg_t *e) WUR;

#endif
