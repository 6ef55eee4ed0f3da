/* client_pay.h - internal to the swarm client (client.c): the buyer side of
 * paid sessions (docs/PROTOCOL.md "Paid sessions"). Per server, the cached
 * PAY_TERMS; per job, one channel per paid hop session, reserved at the
 * ledger on a libuv worker, then vouchers as rows arrive.
 *
 * Everything here runs on the client's loop thread except the ledger call
 * itself (cfg->pay_settle, on a worker). Not a public interface. */
#ifndef COLONY_SWARM_CLIENT_PAY_H
#define COLONY_SWARM_CLIENT_PAY_H

#include <stdint.h>
#include <uv.h>

#include "market/channel.h"
#include "net/wire.h"
#include "swarm/client.h"
#include "swarm/sess.h"

/* A server's PAY_TERMS, valid for one connection. */
enum { CPAY_TERMS_UNASKED = 0, CPAY_TERMS_ASKED, CPAY_TERMS_KNOWN };
typedef struct cpay_terms {
	int state;                 /* CPAY_TERMS_* */
	wire_pay_t terms;
} cpay_terms_t;

/* A paid session of a job: one channel for one hop's session. */
enum { CPAY_CH_TERMS = 0, CPAY_CH_RESERVING, CPAY_CH_OPEN, CPAY_CH_DONE };
typedef struct cpay_chan {
	uint64_t server, sid;
	int state;                 /* CPAY_CH_* */
	chan_buyer_t b;
	/* The provider's receipts: RECEIPT comes just before the FORWARD_RESULT
	 * that completes its chunk and is checked when that result is counted. */
	int n_rcpt;                /* received, not yet checked (more than 1: refused) */
	uint8_t rcpt[WIRE_RECEIPT_LEN];
	uint32_t receipts;         /* checked and answered */
	uint64_t work_ns;          /* time spent in cpay_count (on the token path) */
	int refused;               /* a receipt was refused: no more vouchers */
} cpay_chan_t;

/* What the payment code asks of the client. */
typedef struct cpay_ops {
	/* The terms cache of a server (1-based), NULL for no such server. */
	cpay_terms_t *(*terms)(void *user, uint64_t server);
	/* Sends PAY_TERMS_REQ to the server if it is connected and not asked yet. */
	void (*ask)(void *user, uint64_t server);
	/* The job's session while a reserve may still be delivered to it, else NULL. */
	sess_t *(*live_sess)(void *user);
	/* A reserve ended (busy dropped): the job may be released now. */
	void (*reserved)(void *user);
} cpay_ops_t;

/* The payment state of one job; embedded in the job, which must outlive
 * the reserves it started (busy > 0). */
typedef struct cpay_job {
	uv_loop_t *loop;
	swarm_client_cfg_t *cfg;           /* pay_wallet, pay_settle, pay_budget, pay_expiry_s */
	const cpay_ops_t *ops;
	void *user;                        /* passed to ops */
	int n_prompt;                      /* rows below it are input tokens */
	cpay_chan_t *chans;
	int n_chans, cap_chans;
	int busy;                          /* reserves on workers: the job is not released before they end */
} cpay_job_t;

void cpay_job_init(cpay_job_t *p, uv_loop_t *loop, swarm_client_cfg_t *cfg, const cpay_ops_t *ops,
		   void *user, int n_prompt);
void cpay_job_close(cpay_job_t *p);

/* 1 if the terms ask for nothing (a free server). */
int cpay_terms_free(const wire_pay_t *t);

/* sess pay_open hook: 0 for an unpaid hop, SESS_PAY_WAIT when the hop
 * waits for a channel (answered later by sess_pay_ready/_failed). */
int cpay_open(cpay_job_t *p, uint64_t server, uint64_t sid);

/* Starts what waited for the terms: on a tick, never inside a sess call. */
void cpay_kick(cpay_job_t *p, sess_t *sess);

/* A RECEIPT from server: 1 if it names a paid session of this job (kept
 * for the next cpay_count of that session), else 0. */
int cpay_receipt(cpay_job_t *p, uint64_t server, const wire_pay_t *m);

/* sess pay_count hook: 1 with a VOUCHER in *out when a chunk is due (or at
 * the end), else 0. When a receipt is held, the voucher answers it
 * (chan_buyer_answer: the counts are the buyer's own, the prices the agreed
 * ones); a receipt that differs is refused: -1 with a WIRE_ERROR
 * (WIRE_E_PAYMENT, why) in *out, and the channel signs nothing more. With
 * no receipt (a provider that sends none) the voucher is for the buyer's
 * own count. */
int cpay_count(cpay_job_t *p, uint64_t server, uint64_t sid, int start, int n, int final, wire_msg_t *out);

/* The open channels of the job as result lines (res->pay, res->n_pay). */
void cpay_lines(const cpay_job_t *p, swarm_result_t *res);

#endif
