/* http.h - the OpenAI-compatible HTTP gateway (libmicrohttpd).
 *
 * An http_gw_t serves one model through a swarm: it holds the model file's
 * tokenizer, chat template, embedding and head, and a persistent
 * swarm_client_t (client.h) that runs every generation through the shard
 * servers announcing the model. Endpoints (docs/PROTOCOL.md has the fields):
 *   GET  /v1/models            the model: id, owned_by, layers covered, replicas
 *   GET  /v1/models/{id}
 *   POST /v1/chat/completions  messages through the chat template (chat.h)
 *   POST /v1/completions       a prompt as it is (BOS added as the vocabulary says)
 *   GET  /v1/skills            skills offered in the network (skill.h); a chat completion
 *                              with model "skill:NAME" runs a skill offered here (its
 *                              system prompt first), or is relayed to a gateway offering it
 *                              (priced skills are paid: skill_pay.h, HTTP 402 without payment)
 *   POST /v1/pay/voucher       a voucher for a paid skill call running here (skill_pay.h)
 *   GET  /api/status           the gateway, its peers, coverage, sessions and routes (status.h)
 *   GET  /metrics              Prometheus text (metrics.h)
 *   GET  /, /dashboard.js, ... the dashboard (assets.h; no key asked: it holds no data,
 *                              asks for the key and sends it to /api/status)
 * both with SSE streaming (stream: true, "data: {...}\n\n" chunks, then
 * "data: [DONE]"). Errors are OpenAI's shape with 400 (bad JSON: where),
 * 401 (bearer key), 402 (a priced skill not paid: skill_pay.h), 404 (model
 * or URL), 405, 409 (a payment channel busy), 413 (body over max_body),
 * 429 (max_generations running), 503 (no route through the swarm or no
 * capacity at the servers). Responses name the route in X-Colony-Route
 * ("[0,3) a1b2c3d4 127.0.0.1:4000 -> ...") and, when not streamed, the
 * measured generation speed in X-Colony-Tokens-Per-Second (streams carry it
 * as an HTTP trailer).
 *
 * Threads: one per connection (MHD_USE_THREAD_PER_CONNECTION), so a handler
 * blocks while it waits for tokens. Every 50 ms of waiting it also polls the
 * client's socket: a client that went away (closed, reset) cancels its
 * generation, and the servers free the session's KV caches.
 */
#ifndef COLONY_API_HTTP_H
#define COLONY_API_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "api/skill.h"
#include "model/gguf.h"
#include "swarm/client.h"

#define HTTP_DEFAULT_MAX_BODY (1u << 20)
#define HTTP_DEFAULT_MAX_GENERATIONS 256
#define HTTP_MAX_CONNECTIONS 1024

typedef struct http_gw http_gw_t;

typedef struct http_cfg {
	const char *listen;            /* "HOST:PORT" (IPv4 or [IPv6]); port 0: any free port */
	const char *api_key;           /* NULL or "": no key asked */
	const int64_t *earned;         /* borrowed: the node's redeemed micro-units (atomic) when the
	                                  gateway runs in a node; NULL: /api/status says null */
	const gguf_t *gguf;            /* borrowed, outlives the gateway: tokenizer, template, embedding, head */
	const char *model_name;        /* id in /v1/models (also accepted: the 64-hex model id) */
	const uint8_t *model_id;       /* 32 bytes, or NULL: computed from the file */
	swarm_client_cfg_t client;     /* network, bootstrap or dht, wire settings (model fields filled here) */
	size_t max_body;               /* bytes; 0: HTTP_DEFAULT_MAX_BODY */
	int max_generations;           /* at once; 0: HTTP_DEFAULT_MAX_GENERATIONS */
	int threads;                   /* for the output head; 0: 2 */
	const skill_def_t *skills;     /* borrowed, outlive the gateway: offered here and announced */
	int n_skills;                  /* 0..SKILL_MAX_LOCAL */
	const char *skill_host;        /* address put in skill records (default: the listen address) */
	/* Paid skill calls (skill_pay.h), on when pay_ledger is set: the wallet
	 * in pay_wallet_home (loaded or created) is paid for the priced skills
	 * offered here and pays for priced skills relayed from here. */
	const char *pay_wallet_home;
	const char *pay_ledger;        /* "HOST:PORT" of the ledger node, or NULL: skills are not paid */
	int64_t skill_budget;          /* micro-units per channel reserved to pay a provider (0: 1000000) */
	uint32_t skill_chunk;          /* output tokens per receipt of a paid call served here (0: 16) */
	/* Paid shard sessions (gwpay.h), with pay_ledger: the swarm client pays
	 * the shard servers that take payments from the same wallet, a channel
	 * per session; a finished generation's channels are closed as buyer. */
	int pay_shards;
	int64_t shard_budget;          /* micro-units per channel (0: 1 unit) */
} http_cfg_t;

/* Counters the gateway keeps (for a status page or /metrics). */
typedef struct http_stats {
	uint64_t requests;             /* every request answered */
	uint64_t status_2xx, status_4xx, status_5xx;
	uint64_t status_400, status_401, status_404, status_413, status_429, status_503;
	uint64_t generations;          /* started */
	uint64_t active;               /* generations running now */
	uint64_t cancelled;            /* ended because the client went away */
	uint64_t tokens_in, tokens_out;
	uint64_t first_token_us;       /* sum over generations of the time to the first token */
	uint64_t gen_us;               /* sum of the time from the first token to the last */
	uint64_t skill_paid_calls;     /* paid skill calls served here */
	uint64_t skill_earned;         /* micro-units redeemed for them (skill_pay.h) */
	uint64_t skill_spent;          /* micro-units paid in vouchers for skills relayed from here */
} http_stats_t;

void http_cfg_default(http_cfg_t *c);
/* Loads what it needs from the file, starts the swarm client and listens.
 * ERR_INVAL (bad listen address), ERR_IO (cannot listen), the model's and
 * client's errors. */
int http_gw_new(const http_cfg_t *cfg, http_gw_t **out, err_msg_t *e) WUR;
/* Stops listening, ends running generations, frees everything. NULL is fine. */
void http_gw_free(http_gw_t *g);
/* "http://127.0.0.1:PORT/v1" (borrowed). */
const char *http_gw_url(const http_gw_t *g);
int http_gw_port(const http_gw_t *g);
void http_gw_stats(const http_gw_t *g, http_stats_t *s);
swarm_client_t *http_gw_client(const http_gw_t *g);

#endif
