/* ledger_svc.h - the ledger as a network service: settlement operations
 * (settle.h) carried by LEDGER_REQ / LEDGER_RESP messages (net/wire.h) over
 * the encrypted transport, executed on a ledger node's SQLite ledger.
 *
 * The transport authenticates nodes, not wallets: every request is signed by
 * the wallet it acts for, over
 *   LEDGER_REQ_DOMAIN || ledger node id (32 bytes) || the request's encoding
 *   up to its signature,
 * so a signature is good for one ledger only, and carries a per-wallet nonce
 * that must exceed the last one the ledger accepted from that wallet
 * (ledger_nonce_take), so a captured request cannot be replayed.
 *
 * Who may do what (ledger_svc_exec):
 *   deposit, withdraw, slash: only the operator wallet (the stand-in for an
 *     external authority: a bank transfer, a chain; a real deployment
 *     replaces this with the on-chain backend);
 *   stake, unstake, account: the account's own wallet (account: the operator too);
 *   reserve: the buyer (the signer is the buyer);
 *   redeem: anyone (the voucher carries the buyer's signature and pays only
 *     the channel's provider);
 *   close: the party it names (buyer or provider of the channel);
 *   channel: its buyer or provider (or the operator).
 * The ledger's own clock is "now" for every operation.
 *
 * Threads: ledger_svc_t lives on one libuv loop (the node's); requests are
 * queued and run one at a time on libuv's worker threads (SQLite blocks),
 * answers are sent from the loop thread.
 */
#ifndef COLONY_MARKET_LEDGER_SVC_H
#define COLONY_MARKET_LEDGER_SVC_H

#include <stdint.h>
#include <uv.h>

#include "base/err.h"
#include "market/ledger.h"
#include "market/wallet.h"
#include "net/peer.h"
#include "net/wire.h"

#define LEDGER_REQ_DOMAIN "colony-ledger-req-v1"
#define LEDGER_SVC_MAX_QUEUE 1024     /* requests waiting; beyond: ERR_FULL */

/* The signed message of q for the ledger node ledger_id into out[cap]
 * (*len bytes). ERR_INVAL if q does not encode. */
int ledger_req_message(const wire_ledger_req_t *q, const uint8_t ledger_id[WALLET_PUBLEN],
	uint8_t *out, size_t cap, size_t *len, err_msg_t *e) WUR;

/* Sets q->wallet to w's address and q->sig. */
int ledger_req_sign(wire_ledger_req_t *q, const uint8_t ledger_id[WALLET_PUBLEN], const wallet_t *w,
	err_msg_t *e) WUR;

/* 0 if q->sig is q->wallet's signature for ledger_id; ERR_FORMAT otherwise. */
int ledger_req_verify(const wire_ledger_req_t *q, const uint8_t ledger_id[WALLET_PUBLEN], err_msg_t *e) WUR;

typedef struct ledger_svc_cfg {
	ledger_t *ledger;                     /* borrowed; outlives the service */
	uint8_t ledger_id[WALLET_PUBLEN];     /* this node's id (the signature domain) */
	uint8_t operator_addr[WALLET_PUBLEN];
	int has_operator;                     /* 0: deposit/withdraw/slash refused */
} ledger_svc_cfg_t;

/* Checks and runs one request at time now (Unix seconds): signature,
 * authorization, nonce, then the operation. Fills *out (req_id and op
 * echoed; status 0 or minus the error code, with msg). Blocking (SQLite). */
void ledger_svc_exec(const ledger_svc_cfg_t *cfg, const wire_ledger_req_t *q, int64_t now,
	wire_ledger_resp_t *out);

typedef struct ledger_svc ledger_svc_t;

/* A service on loop (the caller's thread is the loop's). */
int ledger_svc_new(uv_loop_t *loop, const ledger_svc_cfg_t *cfg, ledger_svc_t **out, err_msg_t *e) WUR;

/* Takes a LEDGER_REQ received on c (loop thread): queues it, answers later. */
void ledger_svc_handle(ledger_svc_t *s, peer_conn_t *c, const wire_msg_t *m);

/* c is closing: its queued requests still run (they may have been paid
 * for), their answers are dropped. Loop thread. */
void ledger_svc_conn_closed(ledger_svc_t *s, peer_conn_t *c);

/* Stops (the node is shutting down): no more answers; waiting requests
 * are dropped unanswered (their nonces were not taken, so a client may send
 * them again); the one running finishes. */
void ledger_svc_stop(ledger_svc_t *s);

/* Frees; call after the loop has ended (no work in flight). NULL is fine. */
void ledger_svc_free(ledger_svc_t *s);

#endif
