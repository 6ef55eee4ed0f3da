/* ann.h - signed DHT records (announcements, tombstones) and the filter that
 * turns the values found under a key into a trustworthy view.
 *
 * Two parts, both pure (no I/O, no clock, no threads):
 *
 * 1. The codec. A record is explicit little-endian bytes, versioned, every
 *    length bounded, ending with an ed25519 signature by the node id over a
 *    domain prefix that names the network, then every byte before the
 *    signature. docs/PROTOCOL.md ("DHT records") has the layout byte by byte.
 *    ann_decode() parses, checks every field and verifies the signature: a
 *    record it accepts is well-formed and was signed by rec->node_id for this
 *    network. ann_encode() refuses to sign anything ann_decode would refuse.
 *
 * 2. The store (ann_store_t): the records seen under one key (one model of one
 *    network), reduced to at most one record per node id (its highest
 *    sequence number), with tombstones, freshness and size caps. Lookups read
 *    it through ann_store_collect(). Not thread-safe: its owner locks.
 *
 * Freshness rules (the store applies them; all times in ms since the epoch):
 *  - stale:  timestamp + stale_ms < now         -> refused / no longer listed
 *  - future: timestamp > now + skew_ms          -> refused
 *  - replay: sequence <= the node's kept sequence -> ignored (equal sequence
 *            with other bytes is equivocation: the first one kept wins)
 *  - a tombstone hides every record of its node with a lower sequence; it is
 *    kept (and listed by nothing) until it is stale itself.
 */
#ifndef COLONY_DHT_ANN_H
#define COLONY_DHT_ANN_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define ANN_MAGIC "CLNY"
#define ANN_VERSION 1
#define ANN_IDLEN 32             /* ed25519 public key = node id */
#define ANN_SKLEN 64             /* libsodium ed25519 secret key (seed || pub) */
#define ANN_SIGLEN 64
#define ANN_MODELLEN 32          /* model id (BLAKE2b-256 of the manifest) */
#define ANN_MAX_ADDRS 8          /* reachable addresses per record */
#define ANN_MAX_SWVER 32         /* software version string, bytes */
#define ANN_MAX_LAYER 65536      /* layer_b bound: more layers than any model has */

#define ANN_MAX_SKILL_NAME 32     /* skill name bytes: [a-z0-9._-], starting with [a-z0-9] */
#define ANN_MAX_SKILL_DESC 200    /* skill description bytes: UTF-8, no control characters */
#define ANN_MAX_SKILLS 8          /* names in one skill index record */

/* Sizes: the common head (88 bytes), then per kind a body, then the signature. */
#define ANN_HEAD_SIZE 88
#define ANN_MIN_SIZE (ANN_HEAD_SIZE + ANN_SIGLEN)                  /* a tombstone: 152 */
#define ANN_MAX_SHARD_SIZE (ANN_HEAD_SIZE + 33 + ANN_MAX_ADDRS * 19 + 1 + ANN_MAX_SWVER + ANN_SIGLEN)  /* 370 */
#define ANN_MAX_SKILL_SIZE (ANN_HEAD_SIZE + 32 + 16 + 32 + 1 + ANN_MAX_ADDRS * 19 + 1 + ANN_MAX_SKILL_NAME + \
	1 + ANN_MAX_SKILL_DESC + ANN_SIGLEN)                                                      /* 619 */
#define ANN_MAX_INDEX_SIZE (ANN_HEAD_SIZE + 1 + ANN_MAX_SKILLS * (1 + ANN_MAX_SKILL_NAME) + ANN_SIGLEN) /* 417 */
#define ANN_REP_MAX_CHANNELS 4   /* channel ids a digest cites as evidence of its payment */
#define ANN_MIN_REP_SIZE (ANN_HEAD_SIZE + 3 * 32 + 8 + 8 + 4 * 4 + 32 + 1 + ANN_SIGLEN)            /* 313 */
#define ANN_MAX_REP_SIZE (ANN_MIN_REP_SIZE + ANN_REP_MAX_CHANNELS * 32)                           /* 441 */
#define ANN_MAX_SIZE ANN_MAX_SKILL_SIZE                            /* the largest kind: 619 */

/* Scope ids of the skill records (the head's model_id field of kinds 3 and 4,
 * and so the DHT key they live under, see dht.h):
 *   a skill:      BLAKE2b-256("colony-skill:" NAME)
 *   the index:    BLAKE2b-256("colony-skill-index")
 * A decoder recomputes them, so a skill record cannot be copied under another
 * skill's key, nor an index record anywhere but the index key. */
#define ANN_SKILL_PREFIX "colony-skill:"
#define ANN_SKILL_INDEX_STR "colony-skill-index"

/* Scope id of the receipt digests about one provider (kind 5): BLAKE2b-256(
 * ANN_REP_PREFIX || the provider's 32-byte node id). Every buyer's digest
 * about P lives under P's key, one per buyer (its node id), so a client
 * reads everything said about P with one lookup. */
#define ANN_REP_PREFIX "colony-rep:"
#define ANN_WALLETLEN 32         /* a wallet address (ed25519 public key), as in market/wallet.h */

/* The signature covers ANN_SIG_DOMAIN (16 bytes, no NUL), the network id as
 * u32 little-endian, then the record up to the signature. */
#define ANN_SIG_DOMAIN "colony-record-v1"

enum ann_kind {
	ANN_SHARD = 1,      /* "I serve layers [a,b) of this model" */
	ANN_TOMBSTONE = 2,  /* "forget my earlier records for this model" */
	ANN_SKILL = 3,      /* "I offer skill NAME on model M at this price, through this gateway" */
	ANN_SKILL_INDEX = 4,/* "I offer these skills" (under the well-known index key) */
	ANN_REP = 5,        /* "as a buyer, this is what I paid and saw of provider P" (under P's rep key) */
};

/* A reachable transport address (TCP). */
typedef struct ann_addr {
	uint8_t family;     /* 4 or 6 */
	uint16_t port;      /* 1..65535 */
	uint8_t ip[16];     /* network byte order; IPv4 uses ip[0..3], the rest zero */
} ann_addr_t;

/* A decoded record. For a tombstone only the head fields (kind, node_id,
 * timestamp_ms, seq, model_id) are meaningful; the rest is zero. For the
 * skill kinds the head's model_id is the scope id (above), and the model the
 * skill runs on is skill_model. */
typedef struct ann {
	uint8_t kind;                    /* enum ann_kind */
	uint8_t node_id[ANN_IDLEN];
	uint64_t timestamp_ms;           /* signer's wall clock, ms since the epoch; > 0 */
	uint64_t seq;                    /* strictly increasing per node; > 0 */
	uint8_t model_id[ANN_MODELLEN];
	/* ANN_SHARD only: */
	uint32_t layer_a, layer_b;       /* half-open span [a, b), a < b <= ANN_MAX_LAYER */
	uint64_t price;                  /* micro-units per 1M tokens */
	uint32_t throughput_milli;       /* measured tokens/s x 1000 */
	uint32_t free_sessions;          /* sessions it can still admit */
	uint64_t free_kv_bytes;          /* KV-cache bytes it can still give out */
	uint8_t n_addrs;                 /* 1..ANN_MAX_ADDRS */
	ann_addr_t addrs[ANN_MAX_ADDRS];
	char sw_version[ANN_MAX_SWVER + 1];  /* printable ASCII, NUL-terminated */
	/* ANN_SKILL only (n_addrs/addrs: the offering gateway's HTTP address): */
	uint8_t skill_model[ANN_MODELLEN];   /* model id the skill runs on */
	int64_t fee_call;                    /* micro-units per call, >= 0 */
	int64_t price_out;                   /* micro-units per 1M output tokens, >= 0 */
	uint8_t skill_wallet[ANN_WALLETLEN]; /* where the skill is paid (vouchers' provider); zero:
	                                        the gateway collects nothing (served free) */
	char skill_name[ANN_MAX_SKILL_NAME + 1];
	char skill_desc[ANN_MAX_SKILL_DESC + 1];
	/* ANN_SKILL_INDEX only: */
	uint8_t n_skills;                    /* 1..ANN_MAX_SKILLS, distinct valid names */
	char skills[ANN_MAX_SKILLS][ANN_MAX_SKILL_NAME + 1];
	/* ANN_REP only: the signer's totals about one provider since it started
	 * counting (cumulative: a newer digest replaces the older one). */
	uint8_t rep_provider[ANN_IDLEN];       /* its node id; never the signer's own */
	uint8_t rep_provider_wallet[ANN_WALLETLEN]; /* the wallet it was paid at; zero when unpaid */
	uint8_t rep_wallet[ANN_WALLETLEN];     /* the signer's paying wallet; zero when unpaid */
	int64_t rep_paid;                      /* micro-units paid (last vouchers), >= 0; > 0 needs both wallets */
	uint64_t rep_tokens;                   /* tokens it served the signer */
	uint32_t rep_sessions;                 /* hop sessions opened with it */
	uint32_t rep_failures, rep_timeouts;   /* of them, failed / timed out (sum <= sessions) */
	uint32_t rep_latency_us;               /* mean measured latency; 0: unknown */
	uint8_t rep_receipts[32];              /* BLAKE2b-256 chain over the receipts summed (docs/PROTOCOL.md) */
	uint8_t rep_n_channels;                /* 1..ANN_REP_MAX_CHANNELS when paid, else 0 */
	uint8_t rep_channels[ANN_REP_MAX_CHANNELS][32]; /* its largest channels to the provider, distinct:
	                                          a reader asks the ledger what they redeemed */
} ann_t;

/* Produces sig = ed25519 signature of msg[0..len) by the record's node id.
 * Called synchronously; must be safe to call from any thread that encodes. */
typedef void (*ann_sign_cb)(void *ud, const void *msg, size_t len, uint8_t sig[ANN_SIGLEN]);

/* Checks every field of *a the way the decoder does (no signature, no clock).
 * ERR_FORMAT / ERR_RANGE / ERR_UNSUPPORTED with a message saying which. */
int ann_check(const ann_t *a, err_msg_t *e) WUR;

/* Encodes and signs *a for `network` into out[0..cap); *len = bytes written.
 * The signer must hold a->node_id's key (ann_encode checks that by verifying
 * the result). ERR_INVAL if cap < the record size or the signature does not
 * verify under a->node_id; the ann_check errors otherwise. */
int ann_encode_with(const ann_t *a, uint32_t network, ann_sign_cb sign, void *sign_ud,
	uint8_t *out, size_t cap, size_t *len, err_msg_t *e) WUR;

/* Same with a libsodium secret key (64 bytes: seed || public key). ERR_INVAL
 * if sk's public half is not a->node_id. sk is only read during the call. */
int ann_encode(const ann_t *a, uint32_t network, const uint8_t sk[ANN_SKLEN],
	uint8_t *out, size_t cap, size_t *len, err_msg_t *e) WUR;

/* Parses buf[0..len) into *out and checks every field, WITHOUT verifying the
 * signature: for cheap pre-filtering (and fuzzing) only; never trust the
 * result. On error *out is zeroed. Errors: ERR_TRUNCATED (ends early),
 * ERR_FORMAT (bad magic, reserved bits, trailing bytes, bad field),
 * ERR_UNSUPPORTED (newer version, reserved kind), ERR_RANGE (field bounds). */
int ann_parse_unverified(const uint8_t *buf, size_t len, ann_t *out, err_msg_t *e) WUR;

/* ann_parse_unverified + the signature check for `network` (ERR_FORMAT
 * "bad signature"). On error *out is zeroed. */
int ann_decode(const uint8_t *buf, size_t len, uint32_t network, ann_t *out, err_msg_t *e) WUR;

/* The freshness rules above for one record at time now_ms: ERR_RANGE with a
 * message when stale or from the future. */
int ann_check_time(const ann_t *a, uint64_t now_ms, uint64_t stale_ms, uint64_t skew_ms,
	err_msg_t *e) WUR;

/* A skill name's rules (1..ANN_MAX_SKILL_NAME bytes of [a-z0-9._-], the first
 * one [a-z0-9]): ERR_FORMAT or ERR_RANGE with a message. */
int ann_skill_name_check(const char *name, err_msg_t *e) WUR;
/* The scope ids above (name must pass ann_skill_name_check). */
void ann_skill_id(const char *name, uint8_t id[ANN_MODELLEN]);
void ann_skill_index_id(uint8_t id[ANN_MODELLEN]);
/* The scope id of the digests about provider (above). */
void ann_rep_id(const uint8_t provider[ANN_IDLEN], uint8_t id[ANN_MODELLEN]);

/* Fills addr from a sockaddr-style (family 4/6, ip, port) triple. */
void ann_addr_set(ann_addr_t *addr, int family, const void *ip, uint16_t port);
/* "1.2.3.4:5" or "[::1]:5" into out (at least 48 bytes). Returns out. */
char *ann_addr_str(const ann_addr_t *addr, char *out, size_t cap);

/* ---- the store ---------------------------------------------------------- */

typedef struct ann_store_cfg {
	uint32_t network;                 /* records must be signed for this network */
	uint8_t model_id[ANN_MODELLEN];   /* and name this model (the key's model) */
	uint64_t stale_ms;                /* > 0 */
	uint64_t skew_ms;
	uint32_t max_nodes;               /* per-key cap: node ids kept, >= 1 */
} ann_store_cfg_t;

typedef struct ann_store ann_store_t;

/* Statistics of what ann_store_add has seen (for logs and tests). */
typedef struct ann_store_stats {
	uint64_t accepted, malformed, bad_sig, wrong_scope, stale, future, replay, full, evicted;
} ann_store_stats_t;

/* Memory: one ann_t-sized slot per node id kept (see ann_store_bytes), grown
 * on demand up to cfg->max_nodes. ERR_INVAL on a bad cfg, ERR_NOMEM. */
int ann_store_new(const ann_store_cfg_t *cfg, ann_store_t **out) WUR;
void ann_store_free(ann_store_t *s);

/* Offers one value found under the key at time now_ms. 0 when it was taken
 * (new node, or a higher sequence for a known node; a tombstone replaces the
 * node's record). Otherwise a negative code and a message; nothing changed:
 *   malformed or bad signature    the ann_decode errors
 *   other network/model           ERR_RANGE
 *   stale or from the future      ERR_RANGE
 *   replay (sequence not higher)  ERR_RANGE  (checked before the signature,
 *                                 so old copies cost no verification)
 *   full                          ERR_FULL   (max_nodes kept and every kept
 *                                 record is newer than this one)
 * When full, stale entries are dropped first, then the entry with the oldest
 * timestamp is evicted if the new record is newer than it. */
int ann_store_add(ann_store_t *s, const uint8_t *buf, size_t len, uint64_t now_ms,
	err_msg_t *e) WUR;

/* The fresh records at now_ms (tombstoned and stale nodes left out; shard
 * records under a model's key, skill records under a skill's key: the
 * decoder's scope checks keep the kinds apart),
 * ordered by node id (bytewise), written to out[0..min(cap, count)).
 * Returns count, which may exceed cap. out may be NULL when cap is 0. */
size_t ann_store_collect(const ann_store_t *s, uint64_t now_ms, ann_t *out, size_t cap);

/* Forgets entries (records and tombstones) that are stale at now_ms. */
void ann_store_prune(ann_store_t *s, uint64_t now_ms);

/* Entries kept (records + tombstones, fresh or not yet pruned). */
size_t ann_store_count(const ann_store_t *s);
/* Heap bytes the store holds now. */
size_t ann_store_bytes(const ann_store_t *s);
const ann_store_stats_t *ann_store_stats(const ann_store_t *s);
const ann_store_cfg_t *ann_store_config(const ann_store_t *s);

#endif
