/* client.h - one generation through a swarm found in the DHT.
 *
 * swarm_generate() runs its own libuv loop: an ephemeral identity, a DHT node
 * bootstrapped from the given addresses that watches the model's key, a
 * Noise connection to every shard server announcing the model, and a client
 * session (sess.h) that routes over the connected servers, streams hidden
 * states through the chain, samples locally and fails over to other servers
 * when one is lost. It returns when the generation ends.
 */
#ifndef COLONY_SWARM_CLIENT_H
#define COLONY_SWARM_CLIENT_H

#include <stdint.h>

#include "base/err.h"
#include "base/pool.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "swarm/sess.h"

#define SWARM_MAX_BOOTSTRAP 16

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
	sess_token_cb on_token;            /* each token; nonzero stops */
	void *user;
} swarm_cfg_t;

typedef struct swarm_result {
	int n_tokens;
	double seconds_prompt, seconds_gen;  /* time to the first token; then the rest */
	sess_stats_t stats;
	char route[512];                   /* "[0,3) a1b2c3d4... -> [3,5) ..." of the final route */
} swarm_result_t;

void swarm_cfg_default(swarm_cfg_t *c);
int swarm_generate(const swarm_cfg_t *cfg, const int32_t *prompt, int n_prompt, int n_predict,
		   swarm_result_t *res, err_msg_t *e) WUR;

#endif
