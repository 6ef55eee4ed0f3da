/* client_rep.h - reputation in the swarm client (internal to client.c):
 * per-provider tallies of what this client saw and paid, the receipt
 * digests (ann.h ANN_REP) built from them, and the routing scores computed
 * from the digests others published together with our own tallies
 * (market/rep.h).
 *
 * Two parts. The first is pure (no I/O, no clock, no threads) and tested
 * on its own. The second (crep_state_t) runs on the client's loop thread:
 * it watches each provider's digest key through the client's DHT node,
 * checks the channels a digest cites at the ledger (on a libuv worker,
 * when the client has one), re-scores the providers, and announces our own
 * digests.
 */
#ifndef COLONY_SWARM_CLIENT_REP_H
#define COLONY_SWARM_CLIENT_REP_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "base/err.h"
#include "dht/ann.h"
#include "dht/dht.h"
#include "market/settle.h"
#include "swarm/client.h"

/* What this client observed of one provider, since the client started. */
typedef struct crep_tally {
	uint8_t node_id[ANN_IDLEN];
	uint8_t wallet[ANN_WALLETLEN];   /* the wallet it was paid at (zero: never paid) */
	int64_t paid;                    /* sum of the final vouchers of its channels */
	uint64_t tokens;                 /* positions it computed for us */
	uint32_t sessions, failures, timeouts;
	double latency_sum_ms;           /* sum of the latencies measured at each session's end */
	uint32_t latency_n;
	uint8_t receipts[32];            /* BLAKE2b-256 chain over (channel, paid) pairs */
	uint8_t channels[ANN_REP_MAX_CHANNELS][32];  /* the largest channels paid (the digest's evidence) */
	int64_t ch_paid[ANN_REP_MAX_CHANNELS];
	int n_channels;
	uint64_t version;                /* bumped by every change (publish when it moved) */
} crep_tally_t;

void crep_tally_init(crep_tally_t *t, const uint8_t node_id[ANN_IDLEN]);
/* One hop session with the provider ended: ok or not (failures and
 * timeouts count the times it failed in that job, an error or a lost
 * connection, or no answer within the client's timeout: each was a session
 * lost), the positions it computed, the latency measured (< 0: unknown). */
void crep_tally_session(crep_tally_t *t, int ok, uint32_t failures, uint32_t timeouts, uint64_t tokens,
	double latency_ms);
/* A channel to the provider's wallet closed with `paid` (its last voucher):
 * adds it, extends the receipts chain r' = BLAKE2b-256(r || channel || paid
 * as i64 LE), and keeps the channel among the ANN_REP_MAX_CHANNELS largest.
 * Amounts <= 0 are ignored. */
void crep_tally_paid(crep_tally_t *t, const uint8_t wallet[ANN_WALLETLEN], const uint8_t channel[32], int64_t paid);

/* The digest of t signed later by `signer` (not the provider): kind ANN_REP,
 * scope, totals; payment fields only when something was paid and the
 * reporter has a wallet (reporter_wallet may be NULL: an unpaid digest).
 * timestamp and seq are left for the DHT node to set (1). ERR_INVAL when
 * the signer is the provider. */
int crep_digest(const crep_tally_t *t, const uint8_t signer[ANN_IDLEN], const uint8_t *reporter_wallet,
	ann_t *out, err_msg_t *e) WUR;

/* Routing scores of the providers prov[0..n_prov) (node ids), from our own
 * tallies own[0..n_own) and the digests dig[0..n_dig) found in the DHT
 * (verified records of kind ANN_REP; others, and those signed by self_id,
 * whose word is our own tallies, are skipped). Each digest weighs by its
 * payment (rep_scores): paid[k] when paid is given (what the ledger
 * confirmed of digest k's cited channels, crep_verify; < 0 or 0 counts
 * nothing), else the amount the digest declares (taken on trust).
 * score[i] in [0, 1], or -1 when nothing is known of prov[i]. ERR_NOMEM. */
int crep_scores(const uint8_t self_id[ANN_IDLEN], const crep_tally_t *own, int n_own, const ann_t *dig,
	size_t n_dig, const int64_t *paid, const uint8_t (*prov)[ANN_IDLEN], int n_prov, double *score,
	err_msg_t *e) WUR;

/* One cited channel as the ledger knows it. */
typedef struct crep_channel {
	int found;                       /* the ledger has it */
	uint8_t buyer[ANN_WALLETLEN], provider[ANN_WALLETLEN];
	int64_t redeemed;
} crep_channel_t;

/* What the ledger confirms of digest d's payment, given its answers for
 * d's cited channels ch[0..d->rep_n_channels): the sum redeemed on the
 * distinct channels from d's reporter wallet to d's provider wallet, capped
 * at what d declares. A buyer that paid nothing has nothing to cite. */
int64_t crep_verify(const ann_t *d, const crep_channel_t *ch);

/* One channel backs one opinion: a digest that cites a channel an earlier
 * digest of dig[0..n) with a confirmed payment already cited weighs
 * nothing (paid[k] = 0), so copies of one buyer's digest under other
 * identities add no weight. */
void crep_dedupe(const ann_t *dig, size_t n, int64_t *paid);

/* ---- on the client's loop */

#define CREP_DIGESTS 32          /* digests read per provider */
#define CREP_LOOKUP_MS 1500      /* the first lookup of each watched key waits this at most */
#define CREP_GRACE_MS 5000       /* the longest a first route waits for reputation */
#define CREP_VCACHE 256          /* digests checked at the ledger, remembered */
#define CREP_VBATCH 8            /* digests checked per round (one worker at a time) */
#define CREP_MAX_WATCH SWARM_REP_MAX_WATCH
#define CREP_MAX_PUBLISH SWARM_REP_MAX_PUBLISH

/* One server's reputation state (embedded in the client's server entry). */
typedef struct crep_peer {
	crep_tally_t tally;          /* tally.node_id: the server's node id */
	int listed;                  /* in the DHT view now (the client keeps it current) */
	int watch;                   /* its digest key: 1 watched by us, 2 by someone else (read only) */
	int looked;                  /* its digest key was looked up once (or is being) */
	int pub;                     /* a digest of ours about it is announced */
	uint64_t pub_version;        /* the tally version announced */
	double rep;                  /* score; < 0: unknown */
	uint32_t n_digests;          /* others' digests about it in view */
} crep_peer_t;

/* A digest whose cited channels were checked at the ledger (or are being). */
typedef struct crep_vc {
	uint8_t signer[ANN_IDLEN], provider[ANN_IDLEN];
	uint64_t seq;
	int64_t paid;                /* confirmed; < 0 while being checked */
} crep_vc_t;

typedef struct crep_state {
	uv_loop_t *loop;
	dht_node_t *dht;             /* the client's (own or borrowed) */
	int borrowed;                /* the DHT node outlives the client: withdraw our digests at close */
	settle_t settle;             /* ops NULL: no ledger, claims are taken on trust */
	int want;                    /* watch and read others' digests */
	crep_vc_t vc[CREP_VCACHE];
	int n_vc, vc_next, vc_busy;
	int n_pub;                   /* digests announced now */
	size_t last_nd;              /* digests in view at the last round */
	int lookup_state;            /* lookups of newly watched keys: 0 none yet, 1 running, 2 idle */
	int settled;                 /* a round found every listed peer watched a while, nothing left to check */
	int64_t spent_total;         /* what the client paid providers (kept by client.c) */
} crep_state_t;

void crep_peer_init(crep_peer_t *p, const uint8_t node_id[ANN_IDLEN]);
void crep_state_init(crep_state_t *st, uv_loop_t *loop, dht_node_t *dht, int borrowed, settle_t settle, int want);
/* Watches the digests about each listed peer (up to CREP_MAX_WATCH) when
 * wanted, weighs each digest by the payment the ledger confirmed of it
 * (queueing unchecked ones for a worker), and sets every peer's rep
 * (logging, once, each provider's first score). A watch only brings what
 * is published after it starts (and what the DHT pushes meanwhile), so the
 * first watched keys are also looked up once, on a worker. Sets
 * st->settled once that lookup is done, a round saw as many digests as the
 * round before and no check is pending: a client routing on reputation
 * waits for that (up to CREP_GRACE_MS after it started). */
void crep_refresh(crep_state_t *st, crep_peer_t **peers, int n);
/* Announces a digest about every peer we paid whose tally moved (at most
 * CREP_MAX_PUBLISH peers), signed by the DHT node's key and naming wallet.
 * 1 if something was announced. */
int crep_publish(crep_state_t *st, crep_peer_t **peers, int n, const uint8_t wallet[ANN_WALLETLEN]);
/* Ends our watches and, on a borrowed DHT node, withdraws our digests. A
 * ledger check still running ends on the loop as usual (the loop runs
 * until every work request has ended). */
void crep_close(crep_state_t *st, crep_peer_t **peers, int n);

#endif
