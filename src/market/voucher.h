/* voucher.h - the market's signed records: cumulative vouchers (buyer ->
 * provider) and chunk receipts (provider -> buyer). Pure codec and
 * signatures, no state; docs/PROTOCOL.md "Market records" gives every byte.
 *
 * A voucher says "on channel C, I owe you `amount` in total for `in_tokens`
 * input and `out_tokens` output tokens so far"; it is cumulative, so a later
 * voucher supersedes every earlier one and a lost one costs nothing. The
 * buyer signs it with its wallet key under the domain "colony-voucher-v1".
 * A receipt is the provider's signed statement of a chunk's cumulative
 * counts, prices and charge ("colony-receipt-v1"); the buyer answers it
 * with a voucher for the same counts, and the pair is a two-party receipt.
 *
 * Encodings are fixed-size and strict: every field is checked (version,
 * sequence > 0, amounts <= AMOUNT_MAX), so a record that decodes
 * re-encodes to the same bytes.
 *
 * Refusals of vouchers use the distinct codes below (negative, outside the
 * range of err.h's codes); voucher_err_str names them and err.h's too.
 */
#ifndef COLONY_MARKET_VOUCHER_H
#define COLONY_MARKET_VOUCHER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "market/amount.h"
#include "market/wallet.h"

#define VOUCHER_VERSION 1
#define MARKET_IDLEN 32               /* channel ids, commitments */
#define VOUCHER_BODY_SIZE 97
#define VOUCHER_SIZE (VOUCHER_BODY_SIZE + WALLET_SIGLEN)     /* 161 */
#define RECEIPT_BODY_SIZE 113
#define RECEIPT_SIZE (RECEIPT_BODY_SIZE + WALLET_SIGLEN)     /* 177 */
#define VOUCHER_DOMAIN "colony-voucher-v1"
#define RECEIPT_DOMAIN "colony-receipt-v1"
#define CHANNEL_DOMAIN "colony-channel-v1"

/* Why a voucher (or a receipt, or a redeem) was refused. */
enum voucher_err {
	VOUCHER_E_FORGED = -100,      /* signature does not verify with the buyer's key */
	VOUCHER_E_REPLAYED = -101,    /* the sequence already accepted (same voucher again) */
	VOUCHER_E_REORDERED = -102,   /* a sequence below the last accepted one */
	VOUCHER_E_DECREASING = -103,  /* a newer voucher with a lower amount or count */
	VOUCHER_E_OVER_BUDGET = -104, /* amount above the channel's budget */
	VOUCHER_E_EXPIRED = -105,     /* channel past its expiry */
	VOUCHER_E_CLOSED = -106,      /* channel closed (or closing past its window) */
	VOUCHER_E_MISPRICED = -107,   /* amount != charge(counts, agreed prices) */
	VOUCHER_E_CHANNEL = -108,     /* another channel's voucher */
	VOUCHER_E_COUNTS = -109,      /* receipt counts differ from the buyer's own */
	VOUCHER_E_MIN = -109,
};

/* Names every code of enum voucher_err and of err.h. */
const char *voucher_err_str(int code);

typedef struct voucher {
	uint8_t channel[MARKET_IDLEN];
	uint64_t seq;                 /* >= 1; one per chunk */
	amount_t amount;              /* cumulative, micro-units, 0..AMOUNT_MAX */
	uint64_t in_tokens;           /* cumulative input tokens */
	uint64_t out_tokens;          /* cumulative output tokens */
	uint8_t commit[MARKET_IDLEN]; /* hash of the chunk commitments; zero until verification exists */
	uint8_t sig[WALLET_SIGLEN];   /* the buyer's */
} voucher_t;

typedef struct receipt {
	uint8_t channel[MARKET_IDLEN];
	uint64_t seq;                 /* the chunk's sequence (the voucher answering it has the same) */
	uint64_t in_tokens, out_tokens;   /* cumulative counts delivered */
	amount_t price_in, price_out; /* micro-units per 1M tokens, as agreed */
	amount_t amount;              /* cumulative charge = amount_charge2(counts, prices) */
	uint8_t commit[MARKET_IDLEN];
	uint8_t sig[WALLET_SIGLEN];   /* the provider's */
} receipt_t;

/* Encodes *v (its fields must be in range: ERR_RANGE otherwise) into
 * out[VOUCHER_SIZE], signature included. */
int voucher_encode(const voucher_t *v, uint8_t out[VOUCHER_SIZE]) WUR;
/* Decodes exactly VOUCHER_SIZE bytes. ERR_TRUNCATED / ERR_FORMAT (length,
 * sequence 0) / ERR_UNSUPPORTED (version) / ERR_RANGE (amount), e says
 * which field. Does not check the signature. */
int voucher_decode(const uint8_t *buf, size_t len, voucher_t *v, err_msg_t *e) WUR;
/* The signed message: domain || body (VOUCHER_BODY_SIZE bytes). */
int voucher_sign(voucher_t *v, const wallet_t *buyer) WUR;
/* 0 or VOUCHER_E_FORGED. */
int voucher_verify(const voucher_t *v, const uint8_t buyer[WALLET_PUBLEN]) WUR;

int receipt_encode(const receipt_t *r, uint8_t out[RECEIPT_SIZE]) WUR;
int receipt_decode(const uint8_t *buf, size_t len, receipt_t *r, err_msg_t *e) WUR;
int receipt_sign(receipt_t *r, const wallet_t *provider) WUR;
int receipt_verify(const receipt_t *r, const uint8_t provider[WALLET_PUBLEN]) WUR;

/* Channel id = BLAKE2b-256(CHANNEL_DOMAIN || buyer || provider || nonce):
 * the buyer picks the nonce, so a retried reserve names the same channel. */
void voucher_channel_id(const uint8_t buyer[WALLET_PUBLEN], const uint8_t provider[WALLET_PUBLEN],
	const uint8_t nonce[MARKET_IDLEN], uint8_t id[MARKET_IDLEN]);

#endif
