/* settle_remote.h - the settlement interface (settle.h) over the network: a
 * client of a ledger node's service (ledger_svc.h).
 *
 * Every operation becomes one LEDGER_REQ signed by the client's wallet,
 * sent over an encrypted connection (Noise XX, an ephemeral node identity),
 * and waits for its LEDGER_RESP: synchronous, with a deadline per call. The
 * client runs its own libuv loop inside each call, on the caller's thread; a
 * mutex makes one call at a time, so a settle_remote_t may be shared.
 *
 * Differences from the local ledger, all from the service's rules:
 *   - the signer is the client's wallet: deposit/withdraw/slash work only
 *     for the ledger's operator wallet; reserve's buyer must be the wallet;
 *     close's party must be the wallet's role in the channel;
 *   - the `now` arguments are ignored: the ledger node's clock decides;
 *   - a call that times out or loses its connection returns ERR_IO and the
 *     operation may or may not have run (the ledger executes a request at
 *     most once: its nonce is spent). reserve, redeem and close are safe to
 *     repeat; repeat a deposit, withdraw or stake only after reading the
 *     account.
 * A lost connection is re-dialled on the next call.
 */
#ifndef COLONY_MARKET_SETTLE_REMOTE_H
#define COLONY_MARKET_SETTLE_REMOTE_H

#include <stdint.h>

#include "base/err.h"
#include "market/settle.h"
#include "market/wallet.h"

typedef struct settle_remote settle_remote_t;

typedef struct settle_remote_cfg {
	const char *host;                 /* the ledger node's transport address */
	int port;
	const uint8_t *ledger_id;         /* its node id (32 bytes), or NULL: whichever node answers */
	const char *network;              /* network id (default "colony") */
	const wallet_t *wallet;           /* borrowed, signs every request */
	int timeout_ms;                   /* per call, connecting included (default 10000) */
} settle_remote_cfg_t;

void settle_remote_cfg_default(settle_remote_cfg_t *c);

/* Connects (within timeout_ms). The client is the caller's
 * (settle_remote_free). ERR_IO: cannot reach or handshake. */
int settle_remote_new(const settle_remote_cfg_t *cfg, settle_remote_t **out, err_msg_t *e) WUR;
void settle_remote_free(settle_remote_t *r);

/* The settle.h view (valid while r lives). */
settle_t settle_remote_settle(settle_remote_t *r);

/* The ledger node's id (known once connected). */
const uint8_t *settle_remote_ledger_id(const settle_remote_t *r);

/* Tests of the replay guard: sends the last request again, byte for byte,
 * and returns the ledger's answer (a refusal, if the guard works). */
int settle_remote_resend_last(settle_remote_t *r, err_msg_t *e) WUR;

#endif
