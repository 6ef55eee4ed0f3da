/* dht.h - discovery: our interface over the DHT engine (OpenDHT today).
 *
 * A dht_node_t is one DHT node (UDP) in a private network, plus what colony
 * keeps on top of it: the signed records it announces (ann.h) and, per model,
 * a view of the records it has found (an ann_store_t). Nothing of OpenDHT
 * appears here, so the engine can be swapped (e.g. for the BitTorrent
 * mainline DHT with BEP 44 records) without touching callers.
 *
 * Keys. A model's records live under
 *     BLAKE2b-256("colony/<network as 8 lowercase hex>/model/<model id as 64 lowercase hex>")
 * truncated to its first DHT_KEY_LEN (20) bytes, OpenDHT's InfoHash size
 * (dht_model_key). Skill records (ann.h) use the same derivation with their
 * scope id in place of the model id (BLAKE2b-256("colony-skill:" NAME), or
 * the index's), so everything below that takes a model id works for them.
 *
 * Refresh. A record lives 10 minutes in OpenDHT and cannot be edited or
 * deleted, so a node re-signs each announcement every refresh_ms with a new
 * timestamp and a higher sequence, on a timer thread the node owns, and
 * readers keep only the highest sequence per node. Sequence numbers are
 * max(previous + 1, wall-clock ms): a restarted node with the same key is
 * above its earlier records without having to remember them (as long as its
 * clock does not step back by more than the time it was down). A new
 * announcement is also re-published 1, 4, 14 and 44 s after it is made: a
 * value put while the routing table is still filling can land away from the
 * key's closest nodes, where lookups do not look.
 *
 * Lookups and watches. A lookup is one OpenDHT get; OpenDHT answers repeated
 * gets on a key partly from its own recent replies, so a lookup can miss a
 * record published a moment ago (measured on 30 loopback nodes: a new node
 * shows up in back-to-back lookups after about 2 s, at worst 8 s). A watch
 * (OpenDHT listen) is pushed new records as they are stored (a few ms on
 * loopback): use one for a model you keep routing to.
 *
 * Freshness (defaults; all configurable, tests use short ones):
 *     refresh_ms = 60 s, stale_ms = 3 x refresh_ms = 180 s, skew_ms = 30 s.
 * A node that disappears without a tombstone (crash, SIGKILL) drops out of
 * every lookup at most stale_ms after its last refresh (plus the skew of its
 * clock behind the reader's). A clean dht_node_shutdown publishes a signed
 * tombstone (same node, higher sequence) that hides it at once.
 *
 * Threads. Every function may be called from any thread. OpenDHT delivers
 * values on its own thread; the node copies and filters them there under its
 * lock and never calls back into caller code while holding it. Change
 * notifications (dht_change_cb) run on OpenDHT's thread with no lock held;
 * after dht_node_unwatch or dht_node_free return, none is running or will run.
 * A notification must not call dht_node_unwatch or dht_node_free (it would
 * wait for itself); it should copy what it needs or wake the caller's loop
 * (uv_async_send) and return.
 *
 * Network. The node binds its UDP port on every address (an OpenDHT
 * property), never announces itself by multicast (LAN peer discovery is
 * off), and talks only to the bootstrap nodes it is given and the nodes they
 * tell it about. A node started without bootstrap nodes is a bootstrap node.
 */
#ifndef COLONY_DHT_DHT_H
#define COLONY_DHT_DHT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "dht/ann.h"

#define DHT_KEY_LEN 20
#define DHT_NETWORK_DEFAULT 0x436f6c79u     /* "Coly"; 0 is OpenDHT's public network */
#define DHT_REFRESH_MS_DEFAULT 60000u
#define DHT_STALE_FACTOR 3                  /* stale_ms default = factor x refresh_ms */
#define DHT_SKEW_MS_DEFAULT 30000u
#define DHT_MAX_RECORDS_DEFAULT 1024u       /* per key (model): node ids kept */
#define DHT_MAX_ANNOUNCE 16                 /* models one node announces at once */
#define DHT_MAX_VIEWS 32                    /* models one node keeps a view of */
#define DHT_MAX_VALUES_PER_GET 8192         /* values examined per lookup, then the rest are dropped */

typedef struct dht_node dht_node_t;

/* "The view of model_id changed" (a record was added or replaced). Runs on the
 * DHT's thread; see the threading note above. */
typedef void (*dht_change_cb)(void *ud, const uint8_t model_id[ANN_MODELLEN]);

typedef struct dht_node_cfg {
	uint32_t network;          /* private network id, != 0 (DHT_NETWORK_DEFAULT) */
	uint16_t port;             /* UDP port; 0 = ephemeral (see dht_node_port) */
	/* The signing identity, one of:
	 *  - sk: a libsodium ed25519 secret key (64 bytes), copied into locked
	 *    memory during dht_node_new and wiped by dht_node_free; or
	 *  - node_id (32 bytes, copied) with sign/sign_ud, which must stay
	 *    valid until dht_node_free returns (e.g. ident_sign over an ident_t). */
	const uint8_t *sk;
	const uint8_t *node_id;
	ann_sign_cb sign;
	void *sign_ud;
	uint64_t refresh_ms;       /* re-announce period, >= 100 */
	uint64_t stale_ms;         /* 0 = DHT_STALE_FACTOR x refresh_ms */
	uint64_t skew_ms;          /* clock-skew tolerance for records from the future */
	uint32_t max_records;      /* per-key cap on node ids kept */
} dht_node_cfg_t;

/* Fills the defaults above (network DHT_NETWORK_DEFAULT, port 0, no identity). */
void dht_node_cfg_default(dht_node_cfg_t *cfg);

/* Starts a node: binds the UDP port, starts OpenDHT's thread and the refresh
 * timer. The node is the caller's, to free with dht_node_free. Errors:
 * ERR_INVAL (bad cfg), ERR_IO (cannot bind), ERR_NOMEM. */
int dht_node_new(const dht_node_cfg_t *cfg, dht_node_t **out, err_msg_t *e) WUR;

/* Stops everything without publishing tombstones (to the network this looks
 * like a crash: the records go stale). Waits for OpenDHT's thread to end;
 * no callback runs afterwards. NULL is fine. */
void dht_node_free(dht_node_t *n);

/* Bound UDP port (IPv4; OpenDHT binds IPv6 to the same number when it can). */
uint16_t dht_node_port(const dht_node_t *n);
/* This node's id (its ed25519 public key), valid while n lives. */
const uint8_t *dht_node_id(const dht_node_t *n);

/* Adds a bootstrap node "HOST:PORT" or "[IPv6]:PORT" (the UDP port of any
 * node of the network). May be called several times. The host is resolved
 * by OpenDHT. ERR_INVAL on a malformed string. */
int dht_node_bootstrap(dht_node_t *n, const char *host_port, err_msg_t *e) WUR;

/* The key of a model's records (see above). */
void dht_model_key(uint32_t network, const uint8_t model_id[ANN_MODELLEN], uint8_t key[DHT_KEY_LEN]);

/* Announces *rec (kind ANN_SHARD, or ANN_SKILL / ANN_SKILL_INDEX / ANN_REP keyed by
 * their scope id in model_id; for a shard its model_id, span, price, throughput,
 * capacity, addresses and version; node_id, timestamp and seq are set here)
 * under its model's key now, and again every refresh_ms until withdrawn or
 * shut down. Announcing a model already announced replaces its fields (e.g.
 * new capacity) and re-publishes at once. Errors: the ann_check errors,
 * ERR_FULL (DHT_MAX_ANNOUNCE models), ERR_INVAL after shutdown. */
int dht_node_announce(dht_node_t *n, const ann_t *rec, err_msg_t *e) WUR;

/* Stops announcing model_id and publishes a tombstone for it, waiting up to
 * timeout_ms for the DHT to store it. ERR_NOTFOUND if not announced, ERR_IO
 * if the tombstone was not confirmed in time (it may still land). */
int dht_node_withdraw(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], int timeout_ms,
	err_msg_t *e) WUR;

/* Clean shutdown: withdraws every announcement (tombstones published in
 * parallel, waiting up to timeout_ms in all) and stops refreshing; lookups
 * keep working until dht_node_free. ERR_IO if some tombstone was not
 * confirmed in time. */
int dht_node_shutdown(dht_node_t *n, int timeout_ms, err_msg_t *e) WUR;

/* Queries the DHT for model_id's records, waiting up to timeout_ms for the
 * search to finish, merges what it finds into the node's view of that model
 * and returns the view: verified, fresh, one per node (highest sequence),
 * tombstoned nodes left out, ordered by node id. Writes min(cap, *count)
 * records to out (may be NULL when cap is 0); *count may exceed cap. A
 * timeout is not an error: the view holds whatever arrived (and what earlier
 * lookups and watches found that is still fresh). Errors: ERR_FULL
 * (DHT_MAX_VIEWS models in use, none evictable), ERR_NOMEM. */
int dht_node_lookup(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], int timeout_ms,
	ann_t *out, size_t cap, size_t *count) WUR;

/* Keeps the view of model_id current: subscribes to the key (OpenDHT listen)
 * so new records arrive as they are published, and calls cb (may be NULL)
 * after each change. Read the view with dht_node_peers. ERR_INVAL if
 * already watched, ERR_FULL, ERR_NOMEM. */
int dht_node_watch(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], dht_change_cb cb, void *ud) WUR;

/* Ends a watch; on return cb is not running and will not run again.
 * ERR_NOTFOUND if not watched. */
int dht_node_unwatch(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN]) WUR;

/* The current view of model_id without querying the network (same rules and
 * output as dht_node_lookup). ERR_NOTFOUND if the node has no view of it. */
int dht_node_peers(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], ann_t *out, size_t cap,
	size_t *count) WUR;

/* Counters of the view of model_id (what was accepted and refused, why).
 * ERR_NOTFOUND if the node has no view of it. */
int dht_node_view_stats(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], ann_store_stats_t *out,
	size_t *bytes) WUR;

/* Puts arbitrary bytes under model_id's key (no checks, no refresh). For
 * tests and tools: readers filter whatever is there. Waits up to
 * timeout_ms for the DHT to confirm; ERR_IO if it did not. */
int dht_node_put_raw(dht_node_t *n, const uint8_t model_id[ANN_MODELLEN], const uint8_t *buf, size_t len,
	int timeout_ms) WUR;

/* The DHT network id of a network name (FNV-1a of its bytes, never 0, which
 * is OpenDHT's public network): every node and client of a named network
 * must derive it the same way, so it lives here. */
uint32_t dht_network_id(const char *name);

/* Wall-clock milliseconds since the epoch, the time base of records. */
uint64_t dht_now_ms(void);

#endif
