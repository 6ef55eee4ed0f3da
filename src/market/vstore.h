/* vstore.h - the provider's voucher store: per channel, the best voucher it
 * accepted and what the ledger has already paid for it, in a small SQLite
 * database (<wallet home>/vouchers.db, WAL, mode 0600).
 *
 * Why: a provider is paid only for vouchers it redeems. Held in memory, a
 * voucher dies with the process; stored here before the credit it unlocks is
 * served (shard.h, on_voucher), it survives SIGKILL and is redeemed on the
 * next start. A crash loses at most the credit the provider extended beyond
 * its last stored voucher: one chunk.
 *
 * Durability: synchronous=FULL, so a voucher is on disk (the WAL fsynced)
 * when vstore_put returns, power loss included. The cost is one fsync per
 * chunk of tokens (64 by default) per paid session, on the caller's thread;
 * NORMAL would survive a process crash too but could lose the last vouchers
 * to a power cut, and those are money.
 *
 * Redeem protocol: the owner redeems each pending voucher (vstore_pending)
 * at the ledger, then records the result: vstore_redeemed once the ledger
 * confirmed (it pays a (channel, sequence) at most once, so a redeem repeated
 * after a crash between the two steps pays nothing more), vstore_refused when
 * the ledger refuses it for good (closed, expired, forged, unknown channel),
 * so it is not retried.
 *
 * The file is local and owner-only, still rows are read defensively: a row
 * whose voucher does not decode or does not match its key columns is skipped
 * and counted, never trusted. A vstore_t serializes its own use (a mutex), so
 * it may be shared by threads.
 */
#ifndef COLONY_MARKET_VSTORE_H
#define COLONY_MARKET_VSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "market/amount.h"
#include "market/voucher.h"

#define VSTORE_FILE_NAME "vouchers.db"

typedef struct vstore vstore_t;

typedef struct vstore_entry {
	voucher_t best;               /* the best (highest sequence) accepted voucher */
	uint64_t redeemed_seq;        /* the sequence the ledger confirmed last (0: none) */
	amount_t redeemed;            /* that voucher's amount: what the channel paid us */
	int refused;                  /* 0, or the ledger's refusal code for `best` */
	char why[128];                /* the refusal's message */
	int64_t updated;              /* Unix seconds of the last change */
} vstore_entry_t;

/* 1 if e's best voucher still waits for a redeem (not confirmed, not refused). */
static inline int vstore_entry_pending(const vstore_entry_t *e)
{ return e->best.seq > e->redeemed_seq && e->refused == 0; }

/* Opens (creating, mode 0600) <dir>/vouchers.db. The store is the caller's
 * (vstore_free). ERR_IO with SQLite's message; ERR_FORMAT if the file is not
 * a voucher store of this version. */
int vstore_open(const char *dir, vstore_t **out, err_msg_t *e) WUR;
void vstore_free(vstore_t *s);

/* Stores v as its channel's best voucher if its sequence is above the stored
 * one (else changes nothing and returns 0); a newer voucher clears a refusal.
 * Durable when it returns 0. */
int vstore_put(vstore_t *s, const voucher_t *v, int64_t now, err_msg_t *e) WUR;

/* The ledger confirmed v (paid, or had paid it before): records its sequence
 * and amount as redeemed unless a later one is recorded already. */
int vstore_redeemed(vstore_t *s, const voucher_t *v, int64_t now, err_msg_t *e) WUR;

/* The ledger refused v for good (code, why): v is not retried; a newer
 * voucher on the channel would be. Nothing happens if v is no longer the
 * channel's best. */
int vstore_refused(vstore_t *s, const voucher_t *v, int code, const char *why, int64_t now, err_msg_t *e) WUR;

/* Calls cb for every channel, in channel-id order; a nonzero return from cb
 * stops the walk (and is returned). *n_bad (may be NULL) gets the number of
 * malformed rows skipped. The entry lives during the call. The store must not
 * be written from inside cb. */
typedef int (*vstore_each_cb)(void *ud, const vstore_entry_t *en);
int vstore_foreach(vstore_t *s, vstore_each_cb cb, void *ud, size_t *n_bad, err_msg_t *e) WUR;

#endif
