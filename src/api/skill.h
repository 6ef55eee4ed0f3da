/* skill.h - skills: named system prompts a gateway offers on top of its model,
 * announced in the DHT, listed by GET /v1/skills and called as
 * model "skill:NAME" through the OpenAI endpoints (docs/PROTOCOL.md, "Skills").
 *
 * Three parts:
 *  - definitions: a skill's name, description, price and prompt, loaded from
 *    the command line's NAME=PROMPT_FILE (the file size-limited and checked
 *    to be UTF-8);
 *  - discovery: the signed records (ann.h kinds ANN_SKILL and
 *    ANN_SKILL_INDEX) built from definitions, and the offers found in the
 *    DHT for a name or for every name in the index;
 *  - forwarding: a small blocking HTTP/1.1 client that sends a request to the
 *    offering gateway and hands back its answer as it arrives (chunked or
 *    not), so a gateway that does not offer a skill relays it.
 *
 * Records carry the price (fee per call and per 1M output tokens); paid calls
 * (a channel to the provider's wallet, vouchers as the answer streams back)
 * are skill_pay.h's.
 */
#ifndef COLONY_API_SKILL_H
#define COLONY_API_SKILL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/err.h"
#include "dht/ann.h"
#include "dht/dht.h"

#define SKILL_MAX_LOCAL ANN_MAX_SKILLS      /* skills one gateway offers */
#define SKILL_MAX_PROMPT (64u << 10)        /* bytes of a skill's system prompt */
#define SKILL_MAX_LISTED 64                 /* offers in one GET /v1/skills */
#define SKILL_MAX_WATCHED 16                /* skill keys a gateway keeps watching */
#define SKILL_PREFIX "skill:"               /* model names that call a skill */
#define SKILL_FWD_HEADER "X-Colony-Skill-Forwarded"   /* set on relayed calls: never relayed again */

typedef struct skill_def {
	char name[ANN_MAX_SKILL_NAME + 1];
	char desc[ANN_MAX_SKILL_DESC + 1];
	char *prompt;                   /* owned, NUL-terminated, valid UTF-8 */
	size_t prompt_len;
	int64_t fee_call;               /* micro-units per call */
	int64_t price_out;              /* micro-units per 1M output tokens */
} skill_def_t;

/* Parses "NAME=PROMPT_FILE" and reads the file (at most SKILL_MAX_PROMPT
 * bytes, non-empty, valid UTF-8 without NUL) into *d, with no price and no
 * description. ERR_INVAL (bad spec), the name's ERR_FORMAT/ERR_RANGE,
 * ERR_IO (unreadable), ERR_RANGE (size), ERR_FORMAT (not UTF-8).
 * Free with skill_def_close. */
int skill_def_load(skill_def_t *d, const char *spec, err_msg_t *e) WUR;
void skill_def_close(skill_def_t *d);
/* "FEE:PER_M" (or "FEE"), non-negative integers of micro-units. */
int skill_price_parse(const char *s, int64_t *fee, int64_t *per_m, err_msg_t *e) WUR;
/* A description: at most ANN_MAX_SKILL_DESC bytes of UTF-8, no control characters. */
int skill_desc_set(skill_def_t *d, const char *desc, err_msg_t *e) WUR;

/* The records a gateway announces for its skills (node id, timestamp and
 * sequence are filled by dht_node_announce). */
/* A skill with a fee or a price per output token. */
static inline int skill_priced(const skill_def_t *d) { return d->fee_call > 0 || d->price_out > 0; }

/* wallet: where the skill is paid (the gateway's, when it collects for a
 * priced skill), or NULL (free, or served free). */
void skill_record(ann_t *a, const skill_def_t *d, const uint8_t model_id[ANN_MODELLEN], const ann_addr_t *gateway,
	const uint8_t *wallet);
void skill_index_record(ann_t *a, const skill_def_t *defs, int n);

/* Announces defs[0..n) through dht (one offer each, refreshed by the DHT
 * node until it shuts down) and the index record naming them all. The
 * offers' address: host if given (an IP address, else ERR_INVAL), else the
 * listening address ss (127.0.0.1 when that is the wildcard), with port.
 * wallet (or NULL): where the priced skills are paid. */
int skill_announce_all(dht_node_t *dht, const skill_def_t *defs, int n, const uint8_t model_id[ANN_MODELLEN],
	const char *host, const struct sockaddr_storage *ss, int port, const uint8_t *wallet, err_msg_t *e) WUR;

/* The fresh offers of skill `name` (ANN_SKILL records, one per node, ordered
 * by node id), from the node's view, or looked up (waiting up to timeout_ms)
 * and then watched when it has none. Returns the count (may exceed cap). */
size_t skill_offers(dht_node_t *dht, const char *name, int timeout_ms, ann_t *out, size_t cap);

/* GET /v1/skills: every offer of every name in the index view (the caller
 * watches the index key), OpenAI-list-shaped JSON, malloc'd (NULL: out of
 * memory). */
char *skill_list_json(dht_node_t *dht, int timeout_ms);

/* ---- forwarding -------------------------------------------------------- */

typedef struct skill_fwd skill_fwd_t;

/* Connects to addr (within connect_ms) and sends "POST path" with the JSON
 * body and the SKILL_FWD_HEADER. ERR_IO when unreachable. */
int skill_fwd_open(const ann_addr_t *addr, const char *path, const char *body, size_t len, int connect_ms,
	skill_fwd_t **out, err_msg_t *e) WUR;
/* The same with extra header lines (each "Name: value\r\n", at most 1 KiB
 * in all; NULL: none), e.g. the payment headers of skill_pay.h. */
int skill_fwd_open_hdr(const ann_addr_t *addr, const char *path, const char *extra, const char *body, size_t len,
	int connect_ms, skill_fwd_t **out, err_msg_t *e) WUR;
/* Waits up to wait_ms for the response head; *ready = 1 once parsed (status
 * and content type then known). ERR_IO (closed, reset), ERR_FORMAT (not
 * HTTP/1.x or a head over 16 KiB). */
int skill_fwd_head(skill_fwd_t *f, int wait_ms, int *ready, err_msg_t *e) WUR;
int skill_fwd_status(const skill_fwd_t *f);
const char *skill_fwd_content_type(const skill_fwd_t *f);
/* Reads up to max body bytes (chunked encoding removed), waiting up to
 * wait_ms: *n may be 0 when nothing came. skill_fwd_done says the body
 * ended. ERR_IO / ERR_FORMAT when the answer breaks off or is malformed. */
int skill_fwd_read(skill_fwd_t *f, char *buf, size_t max, int wait_ms, size_t *n, err_msg_t *e) WUR;
int skill_fwd_done(const skill_fwd_t *f);
void skill_fwd_free(skill_fwd_t *f);   /* NULL is fine */
/* A relay reading an answer from an already connected descriptor (owned from
 * then on): for tests and the fuzz target of the response parser. */
int skill_fwd_from_fd(int fd, skill_fwd_t **out, err_msg_t *e) WUR;

#endif
