/* wire.h - colony's wire messages: a versioned binary codec, pure (bytes
 * in, struct out; struct in, bytes out), no I/O. docs/PROTOCOL.md describes
 * every message byte by byte.
 *
 * One message per frame: u8 type, then the type's fields, little-endian,
 * nothing after them. Every length is bounded by the WIRE_MAX_* below, a
 * message never exceeds WIRE_MAX_MSG, and decoding is strict: a field out
 * of range, a reserved bit set, a truncated or over-long message is refused
 * with a message naming the field and its offset. So any message that
 * decodes re-encodes to the same bytes.
 *
 * Decoding allocates nothing: short strings are copied into the struct's
 * fixed arrays, bulk bytes (hidden states, probe payloads) are views into
 * the caller's buffer, valid as long as it is.
 *
 * Hidden states (FORWARD, FORWARD_RESULT) travel as n rows of dim values in
 * one of three encodings, chosen per session: F32, F16 (IEEE half) or Q8
 * (blocks of 32: an f16 scale then 32 int8, Q8_0's layout). The
 * wire_hidden_* functions convert them to and from f32.
 */
#ifndef COLONY_NET_WIRE_H
#define COLONY_NET_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Protocol versions this code speaks. */
#define WIRE_VERSION 1
#define WIRE_VERSION_MIN 1
#define WIRE_VERSION_MAX 1

/* Limits (overridable at build time; peers must agree). */
#ifndef WIRE_MAX_MSG
#define WIRE_MAX_MSG (1u << 20)          /* a whole message: one frame */
#endif
#define WIRE_MAX_SOFTWARE 64             /* HELLO software version string */
#define WIRE_MAX_NETWORK 64              /* HELLO network id */
#define WIRE_MAX_ERRMSG 512              /* ERROR / OPEN_ERR text */
#define WIRE_MAX_LAYER 65536             /* layer indices: 0 <= a < b <= this */
#define WIRE_MAX_CTX (1u << 24)          /* positions: max_len, start + n */
#define WIRE_MAX_TOKENS 4096             /* rows of one FORWARD */
#define WIRE_MAX_DIM 65536               /* hidden size */
#define WIRE_MAX_PROBE (WIRE_MAX_MSG - 64)  /* THROUGHPUT payload bytes */
#define WIRE_MODEL_ID_LEN 32
#define WIRE_Q8_BLOCK 32                 /* values per Q8 block */
#define WIRE_Q8_BLOCK_BYTES 34           /* f16 scale + 32 int8 */

enum wire_type {
	WIRE_HELLO = 0x01,
	WIRE_PING = 0x02,
	WIRE_PONG = 0x03,
	WIRE_ERROR = 0x04,
	WIRE_OPEN_SESSION = 0x10,
	WIRE_OPEN_OK = 0x11,
	WIRE_OPEN_ERR = 0x12,
	WIRE_FORWARD = 0x13,
	WIRE_FORWARD_RESULT = 0x14,
	WIRE_CLOSE_SESSION = 0x15,
	WIRE_PROBE_REQ = 0x20,       /* "send me N bytes" */
	WIRE_PROBE_DATA = 0x21,      /* N bytes of payload */
	WIRE_PROBE_ACK = 0x22,       /* "I received your N bytes" */
	WIRE_LEDGER_REQ = 0x30,      /* a signed settlement operation for a ledger node */
	WIRE_LEDGER_RESP = 0x31,     /* its outcome */
	WIRE_PAY_TERMS_REQ = 0x40,   /* client -> shard: "what do you charge, whom do I pay?" */
	WIRE_PAY_TERMS = 0x41,       /* shard -> client: its wallet, prices, chunk size */
	WIRE_PAY_OPEN = 0x42,        /* client -> shard, just before OPEN_SESSION: the session is paid */
	WIRE_VOUCHER = 0x43,         /* client -> shard: a cumulative voucher for a paid session */
	WIRE_RECEIPT = 0x44,         /* shard -> client: its signed receipt of a chunk's cumulative counts */
};

/* HELLO capability bits; unknown bits are carried and ignored. */
#define WIRE_CAP_SHARD      (1ull << 0)   /* serves layers (OPEN_SESSION) */
#define WIRE_CAP_CLIENT     (1ull << 1)   /* runs client sessions */
#define WIRE_CAP_HIDDEN_F16 (1ull << 2)   /* accepts F16 hidden states */
#define WIRE_CAP_HIDDEN_Q8  (1ull << 3)   /* accepts Q8 hidden states */
#define WIRE_CAP_PROBE      (1ull << 4)   /* answers throughput probes */
#define WIRE_CAP_LEDGER     (1ull << 5)   /* runs the ledger service (LEDGER_REQ) */

/* ERROR / OPEN_ERR codes. Any u16 decodes; unknown ones mean "failed". */
enum wire_err {
	WIRE_E_PROTOCOL = 1,      /* malformed or unexpected message */
	WIRE_E_VERSION = 2,       /* no common protocol version */
	WIRE_E_NETWORK = 3,       /* different network id */
	WIRE_E_BUSY = 4,          /* at capacity, try later or elsewhere */
	WIRE_E_NO_SESSION = 5,    /* unknown session id */
	WIRE_E_BAD_REQUEST = 6,   /* well-formed but not acceptable (span, position) */
	WIRE_E_UNSUPPORTED = 7,   /* model, encoding or KV type not served */
	WIRE_E_INTERNAL = 8,      /* the server failed */
	WIRE_E_RATE_LIMIT = 9,    /* too many requests */
	WIRE_E_PAYMENT = 10,      /* payment required: no channel, or vouchers too late */
};

/* Hidden-state encodings. */
enum wire_enc { WIRE_ENC_F32 = 0, WIRE_ENC_F16 = 1, WIRE_ENC_Q8 = 2 };
/* KV cache types a session may ask for (GGML type ids). */
enum wire_kv { WIRE_KV_F32 = 0, WIRE_KV_F16 = 1, WIRE_KV_Q8_0 = 8 };

typedef struct wire_hello {
	uint16_t version;        /* the version the sender prefers (its max) */
	uint16_t min_version, max_version;
	uint64_t caps;
	char software[WIRE_MAX_SOFTWARE + 1];   /* printable ASCII, may be empty */
	char network[WIRE_MAX_NETWORK + 1];     /* 1..64 printable ASCII, no space */
} wire_hello_t;

typedef struct wire_ping {        /* PING and PONG (which echoes both) */
	uint64_t nonce;
	uint64_t timestamp_us;   /* the pinger's clock */
} wire_ping_t;

typedef struct wire_error {       /* ERROR and OPEN_ERR */
	uint64_t session_id;     /* OPEN_ERR only (0 in ERROR) */
	uint16_t code;           /* enum wire_err */
	char msg[WIRE_MAX_ERRMSG + 1];   /* no NUL inside; UTF-8 not checked */
} wire_error_t;

typedef struct wire_open {
	uint64_t session_id;     /* chosen by the client, random */
	uint8_t model_id[WIRE_MODEL_ID_LEN];
	uint32_t layer_a, layer_b;   /* the span [a, b) */
	uint32_t max_len;        /* positions the session may reach, 1..WIRE_MAX_CTX */
	uint8_t enc;             /* enum wire_enc of both directions */
	uint8_t kv_type;         /* enum wire_kv */
} wire_open_t;

typedef struct wire_open_ok {
	uint64_t session_id;
	uint32_t max_len;        /* granted, <= requested */
} wire_open_ok_t;

typedef struct wire_forward {     /* FORWARD and FORWARD_RESULT */
	uint64_t session_id;
	uint32_t start_pos;      /* position of the first row */
	uint32_t n_tokens;       /* rows, 1..WIRE_MAX_TOKENS */
	uint32_t dim;            /* values per row, 1..WIRE_MAX_DIM (Q8: multiple of 32) */
	uint8_t enc;             /* enum wire_enc */
	const uint8_t *data;     /* wire_hidden_size(enc, n_tokens, dim) bytes (a view) */
	size_t data_len;
} wire_forward_t;

typedef struct wire_close {
	uint64_t session_id;
	uint16_t reason;         /* 0 = done, else an enum wire_err */
} wire_close_t;

typedef struct wire_probe {       /* PROBE_REQ, PROBE_DATA, PROBE_ACK */
	uint64_t probe_id;
	uint32_t n_bytes;        /* REQ: wanted; DATA: carried; ACK: received */
	uint8_t flags;           /* DATA only: WIRE_PROBE_ACK_WANTED */
	const uint8_t *data;     /* DATA only: n_bytes (a view) */
} wire_probe_t;
#define WIRE_PROBE_ACK_WANTED 1

/* ---- the ledger service (docs/PROTOCOL.md "Ledger service") ----
 * The codec knows only the layout; the meaning of the fields (amounts,
 * vouchers, signatures) is checked by src/market/ledger_svc.c. */
enum wire_ledger_op {
	WIRE_LOP_DEPOSIT = 1, WIRE_LOP_WITHDRAW = 2, WIRE_LOP_STAKE = 3, WIRE_LOP_UNSTAKE = 4,
	WIRE_LOP_RESERVE = 5, WIRE_LOP_REDEEM = 6, WIRE_LOP_CLOSE = 7, WIRE_LOP_SLASH = 8,
	WIRE_LOP_ACCOUNT = 9, WIRE_LOP_CHANNEL = 10,
};
#define WIRE_LOP_MAX 10
#define WIRE_KEYLEN 32                   /* wallet keys, channel ids, nonces, evidence */
#define WIRE_SIGLEN 64
#define WIRE_VOUCHER_LEN 161             /* an encoded voucher (market/voucher.h) */
#define WIRE_RECEIPT_LEN 177             /* an encoded receipt (market/voucher.h) */
#define WIRE_AMOUNT_MAX INT64_MAX        /* amounts are signed 64-bit on both ends */

/* Which fields an op carries (the rest are zero after decoding and ignored
 * by the encoder):
 *   DEPOSIT, WITHDRAW, STAKE, UNSTAKE: addr, amount
 *   RESERVE: addr = provider, amount = budget, expiry, key2 = the buyer's nonce
 *   REDEEM:  voucher
 *   CLOSE:   addr = channel id, party (0 buyer, 1 provider)
 *   SLASH:   addr = provider, amount, key2 = evidence, key3 = beneficiary
 *   ACCOUNT: addr
 *   CHANNEL: addr = channel id */
typedef struct wire_ledger_req {
	uint64_t req_id;         /* echoed in the response */
	uint8_t op;              /* enum wire_ledger_op */
	uint64_t nonce;          /* > the last nonce the ledger accepted from this wallet */
	uint8_t wallet[WIRE_KEYLEN];   /* the signer */
	uint8_t addr[WIRE_KEYLEN], key2[WIRE_KEYLEN], key3[WIRE_KEYLEN];
	int64_t amount;          /* 0..WIRE_AMOUNT_MAX */
	int64_t expiry;          /* Unix seconds, >= 0 */
	uint8_t party;           /* 0 or 1 */
	uint8_t voucher[WIRE_VOUCHER_LEN];
	uint8_t sig[WIRE_SIGLEN];      /* wallet's, over ledger_svc's signing message */
} wire_ledger_req_t;

/* Result fields when status is 0 (all zero otherwise):
 *   DEPOSIT..UNSTAKE, ACCOUNT: balance, stake, reserved (the account after)
 *   RESERVE: ch.id;  REDEEM, SLASH: amount (paid, slashed)
 *   CLOSE, CHANNEL: ch (the channel after) */
typedef struct wire_ledger_chan {
	uint8_t id[WIRE_KEYLEN], buyer[WIRE_KEYLEN], provider[WIRE_KEYLEN];
	int64_t budget, redeemed, refunded, expiry, close_at;
	uint64_t last_seq;
	uint8_t state;           /* 0 open, 1 closing, 2 closed */
} wire_ledger_chan_t;

typedef struct wire_ledger_resp {
	uint64_t req_id;
	uint8_t op;
	uint16_t status;         /* 0 = done; else minus the error code (err.h, voucher.h) */
	char msg[WIRE_MAX_ERRMSG + 1];   /* why, when status != 0 */
	int64_t balance, stake, reserved, amount;
	wire_ledger_chan_t ch;
} wire_ledger_resp_t;

/* ---- payments inside sessions (docs/PROTOCOL.md "Paid sessions") ----
 * One struct for the five PAY messages; which fields each carries:
 *   PAY_TERMS_REQ: id (a request id, echoed)
 *   PAY_TERMS:     id, wallet (the provider's), price_in, price_out, chunk, flags
 *   PAY_OPEN:      id (session id), channel, wallet (the buyer's), budget, expiry,
 *                  price_in, price_out, chunk, n_prompt
 *   VOUCHER:       id (session id), voucher (an encoded voucher, market/voucher.h)
 *   RECEIPT:       id (session id), receipt (an encoded receipt, market/voucher.h)
 * Amounts are micro-units (prices per 1M tokens), 0..WIRE_AMOUNT_MAX. */
#define WIRE_PAY_REQUIRED 1              /* PAY_TERMS flag: unpaid sessions are refused */
typedef struct wire_pay {
	uint64_t id;
	uint8_t wallet[WIRE_KEYLEN];
	uint8_t channel[WIRE_KEYLEN];
	int64_t budget, expiry;
	int64_t price_in, price_out;
	uint32_t chunk;          /* tokens per voucher, >= 1 */
	uint32_t n_prompt;       /* positions below it are input tokens, the rest output */
	uint8_t flags;           /* PAY_TERMS: WIRE_PAY_REQUIRED; other bits reserved (0) */
	uint8_t voucher[WIRE_VOUCHER_LEN];
	uint8_t receipt[WIRE_RECEIPT_LEN];
} wire_pay_t;

typedef struct wire_msg {
	uint8_t type;            /* enum wire_type */
	union {
		wire_hello_t hello;
		wire_ping_t ping;
		wire_error_t error;
		wire_open_t open;
		wire_open_ok_t open_ok;
		wire_forward_t forward;
		wire_close_t close;
		wire_probe_t probe;
		wire_ledger_req_t lreq;
		wire_ledger_resp_t lresp;
		wire_pay_t pay;
	} u;
} wire_msg_t;

/* Decodes buf[0..len) into *m (views point into buf). ERR_TRUNCATED (ends
 * early), ERR_FORMAT (bad field, trailing bytes), ERR_RANGE (a bound),
 * ERR_UNSUPPORTED (unknown type or enumeration value); e says which field
 * at which offset. */
int wire_decode(const uint8_t *buf, size_t len, wire_msg_t *m, err_msg_t *e) WUR;

/* Bytes *m encodes to; 0 if *m is not valid (wire_encode says why). */
size_t wire_encoded_size(const wire_msg_t *m);

/* Encodes *m into out[cap]. Refuses (ERR_RANGE/ERR_FORMAT/ERR_UNSUPPORTED)
 * exactly what wire_decode would refuse, and ERR_FULL if cap is short. */
int wire_encode(const wire_msg_t *m, uint8_t *out, size_t cap, size_t *out_len, err_msg_t *e) WUR;

/* Bytes of an encoded LEDGER_REQ before its signature (the signed part of
 * the message, docs/PROTOCOL.md); 0 if the op is unknown. */
size_t wire_ledger_req_body_size(int op);

/* Name of a message type ("FORWARD"), or "unknown". */
const char *wire_type_name(int type);

/* The version two HELLOs agree on: the highest both support. ERR_UNSUPPORTED
 * if their ranges do not meet. */
int wire_version_pick(const wire_hello_t *a, const wire_hello_t *b, uint16_t *version, err_msg_t *e) WUR;

/* ---- hidden states ---- */

/* Bytes of one row / of n rows in an encoding; 0 if enc is unknown, dim is
 * 0 or above WIRE_MAX_DIM, or (Q8) dim is not a multiple of 32. */
size_t wire_hidden_row_size(int enc, uint32_t dim);
size_t wire_hidden_size(int enc, uint32_t n, uint32_t dim);

/* x[n][dim] (f32) into out[cap] (wire_hidden_size bytes). ERR_RANGE if a
 * value is not finite or does not fit the encoding (F16: |x| > 65504; Q8:
 * a block's scale above the f16 range), ERR_FULL if cap is short. */
int wire_hidden_encode(int enc, const float *x, uint32_t n, uint32_t dim,
	uint8_t *out, size_t cap, err_msg_t *e) WUR;

/* data[len] back into y[n][dim]. ERR_FORMAT if len is not the size the
 * shape implies or a value (or Q8 scale) is not finite. */
int wire_hidden_decode(int enc, const uint8_t *data, size_t len, uint32_t n, uint32_t dim,
	float *y, err_msg_t *e) WUR;

#endif
