/* gwpay.h - the gateway pays for its shard sessions (http_cfg_t pay_shards).
 *
 * What `colony run --swarm --pay` does for one generation, for a gateway
 * that lives on: a wallet (loaded or created in the wallet home), a client
 * of the ledger node (settle_remote.h), and a chrec_t (market/chrec.h) that
 * records each channel in the wallet home's channels.db before it is
 * reserved. The gateway's swarm client is given the wallet and the chrec's
 * settle_t, so every session on a shard server that takes payments gets a
 * channel, vouchers and receipts (client.h); with a wallet, the client also
 * publishes reputation digests about the providers it paid.
 *
 * A finished generation's job is handed here (gwpay_job_done) instead of
 * being freed: a thread of gwpay's own waits for the job's end, closes its
 * channels as buyer (ledger round trips: never on the client's loop thread
 * nor in a libmicrohttpd callback), frees the job, and once each channel's
 * challenge window has passed closes it again, which brings the unspent
 * budget back to the wallet's balance.
 *
 * Threads: gwpay_job_done from any thread. Order at the end: stop handing
 * jobs over, gwpay_drain (every job handed over is freed: they lock their
 * client, so this must happen before swarm_client_free), swarm_client_free,
 * then gwpay_free (the thread stops; channels still open are closed once;
 * those still in their window stay in channels.db for colony wallet
 * reclaim).
 */
#ifndef COLONY_API_GWPAY_H
#define COLONY_API_GWPAY_H

#include <stdint.h>

#include "base/err.h"
#include "swarm/client.h"

typedef struct gwpay gwpay_t;

typedef struct gwpay_cfg {
	const char *wallet_home;       /* where wallet.key and channels.db live */
	const char *ledger_peer;       /* "HOST:PORT" of the ledger node */
	const char *network;           /* default "colony" */
	int64_t budget;                /* micro-units per channel (0: 1 unit) */
} gwpay_cfg_t;

/* Loads (or creates) the wallet, connects to the ledger, opens the channel
 * store and starts the closing thread. ERR_INVAL (a bad address), ERR_IO,
 * the wallet's and the store's errors. */
int gwpay_new(const gwpay_cfg_t *cfg, gwpay_t **out, err_msg_t *e) WUR;
/* See the order above. NULL is fine. */
void gwpay_free(gwpay_t *p);

/* Sets cc's pay_wallet, pay_settle and pay_budget (borrowed from p: p
 * outlives the client). */
void gwpay_client_cfg(gwpay_t *p, swarm_client_cfg_t *cc);
const wallet_t *gwpay_wallet(const gwpay_t *p);

/* Takes j (the caller must not use it again): cancels it if it still runs;
 * on gwpay's thread, waits for its end, closes its paid channels and frees
 * it. */
void gwpay_job_done(gwpay_t *p, swarm_job_t *j);
/* Waits until every job handed over is freed. */
void gwpay_drain(gwpay_t *p);

#endif
