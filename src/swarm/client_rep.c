/* client_rep.c - tallies, digests and scores (see client_rep.h). */
#include "swarm/client_rep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "base/log.h"
#include "market/rep.h"

void crep_tally_init(crep_tally_t *t, const uint8_t node_id[ANN_IDLEN])
{
	memset(t, 0, sizeof(*t));
	memcpy(t->node_id, node_id, ANN_IDLEN);
}

static int all_zero32(const uint8_t *p)
{
	uint8_t acc = 0;
	for (int i = 0; i < 32; i++)
		acc |= p[i];
	return acc == 0;
}

static uint32_t add32(uint32_t a, uint32_t b) { return a > UINT32_MAX - b ? UINT32_MAX : a + b; }

void crep_tally_session(crep_tally_t *t, int ok, uint32_t failures, uint32_t timeouts, uint64_t tokens,
	double latency_ms)
{
	/* Each failure or timeout was a session of its own (opened, then lost). */
	t->sessions = add32(t->sessions, add32(add32(failures, timeouts), ok ? 1 : 0));
	t->failures = add32(t->failures, failures);
	t->timeouts = add32(t->timeouts, timeouts);
	if (t->failures > t->sessions)
		t->failures = t->sessions;
	if (t->timeouts > t->sessions - t->failures)
		t->timeouts = t->sessions - t->failures;
	t->tokens = t->tokens > UINT64_MAX - tokens ? UINT64_MAX : t->tokens + tokens;
	if (latency_ms >= 0 && latency_ms < 3.6e6) {
		t->latency_sum_ms += latency_ms;
		t->latency_n++;
	}
	t->version++;
}

void crep_tally_paid(crep_tally_t *t, const uint8_t wallet[ANN_WALLETLEN], const uint8_t channel[32], int64_t paid)
{
	if (paid <= 0)
		return;
	memcpy(t->wallet, wallet, ANN_WALLETLEN);
	t->paid = t->paid > INT64_MAX - paid ? INT64_MAX : t->paid + paid;
	uint8_t le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)((uint64_t)paid >> (8 * i));
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, t->receipts, 32);
	crypto_generichash_update(&st, channel, 32);
	crypto_generichash_update(&st, le, 8);
	crypto_generichash_final(&st, t->receipts, 32);
	/* Keep the largest channels as evidence. */
	int slot = -1;
	for (int i = 0; i < t->n_channels && slot < 0; i++)
		if (!memcmp(t->channels[i], channel, 32))
			slot = i;
	if (slot >= 0) {
		t->ch_paid[slot] = t->ch_paid[slot] > INT64_MAX - paid ? INT64_MAX : t->ch_paid[slot] + paid;
	} else if (t->n_channels < ANN_REP_MAX_CHANNELS) {
		slot = t->n_channels++;
		memcpy(t->channels[slot], channel, 32);
		t->ch_paid[slot] = paid;
	} else {
		int low = 0;
		for (int i = 1; i < t->n_channels; i++)
			if (t->ch_paid[i] < t->ch_paid[low])
				low = i;
		if (paid > t->ch_paid[low]) {
			memcpy(t->channels[low], channel, 32);
			t->ch_paid[low] = paid;
		}
	}
	t->version++;
}

int crep_digest(const crep_tally_t *t, const uint8_t signer[ANN_IDLEN], const uint8_t *reporter_wallet, ann_t *out,
		err_msg_t *e)
{
	memset(out, 0, sizeof(*out));
	if (memcmp(signer, t->node_id, ANN_IDLEN) == 0)
		return err_set(e, ERR_INVAL, "a digest about its own signer");
	out->kind = ANN_REP;
	memcpy(out->node_id, signer, ANN_IDLEN);
	out->timestamp_ms = 1;
	out->seq = 1;
	memcpy(out->rep_provider, t->node_id, ANN_IDLEN);
	ann_rep_id(t->node_id, out->model_id);
	static const uint8_t zero[ANN_WALLETLEN];
	if (t->paid > 0 && reporter_wallet && memcmp(reporter_wallet, zero, ANN_WALLETLEN) &&
	    memcmp(t->wallet, zero, ANN_WALLETLEN)) {
		memcpy(out->rep_wallet, reporter_wallet, ANN_WALLETLEN);
		memcpy(out->rep_provider_wallet, t->wallet, ANN_WALLETLEN);
		out->rep_paid = t->paid;
		memcpy(out->rep_receipts, t->receipts, 32);
		for (int i = 0; i < t->n_channels; i++)
			if (!all_zero32(t->channels[i]))
				memcpy(out->rep_channels[out->rep_n_channels++], t->channels[i], 32);
		if (out->rep_n_channels == 0) {   /* nothing to cite: an unpaid digest */
			memset(out->rep_wallet, 0, ANN_WALLETLEN);
			memset(out->rep_provider_wallet, 0, ANN_WALLETLEN);
			out->rep_paid = 0;
		}
	}
	out->rep_tokens = t->tokens;
	out->rep_sessions = t->sessions;
	out->rep_failures = t->failures;
	out->rep_timeouts = t->timeouts;
	if (out->rep_failures + (uint64_t)out->rep_timeouts > out->rep_sessions)
		out->rep_timeouts = out->rep_sessions - out->rep_failures;
	if (t->latency_n) {
		double us = t->latency_sum_ms / t->latency_n * 1000.0;
		out->rep_latency_us = us >= 4e9 ? 4000000000u : (uint32_t)(us + 0.5);
	}
	return ann_check(out, e);
}

/* Index of id in the node table ids[0..*n), appended when new (room for cap). */
static int node_index(uint8_t (*ids)[ANN_IDLEN], uint32_t *n, uint32_t cap, const uint8_t *id)
{
	for (uint32_t i = 0; i < *n; i++)
		if (!memcmp(ids[i], id, ANN_IDLEN))
			return (int)i;
	if (*n >= cap)
		return -1;
	memcpy(ids[*n], id, ANN_IDLEN);
	return (int)(*n)++;
}

static rep_obs_t obs_of_digest(const ann_t *d)
{
	rep_obs_t o;
	memset(&o, 0, sizeof(o));
	o.sessions = d->rep_sessions;
	o.failures = d->rep_failures;
	o.timeouts = d->rep_timeouts;
	o.tokens_served = d->rep_tokens;
	o.paid = d->rep_paid;
	o.latency_ms = d->rep_latency_us / 1000.0;
	return o;
}

int64_t crep_verify(const ann_t *d, const crep_channel_t *ch)
{
	int64_t sum = 0;
	for (int i = 0; i < d->rep_n_channels && i < ANN_REP_MAX_CHANNELS; i++) {
		int dup = 0;
		for (int j = 0; j < i; j++)
			dup |= !memcmp(d->rep_channels[i], d->rep_channels[j], 32);
		if (dup || !ch[i].found || ch[i].redeemed <= 0 || memcmp(ch[i].buyer, d->rep_wallet, ANN_WALLETLEN) ||
		    memcmp(ch[i].provider, d->rep_provider_wallet, ANN_WALLETLEN))
			continue;
		sum = sum > INT64_MAX - ch[i].redeemed ? INT64_MAX : sum + ch[i].redeemed;
	}
	return sum < d->rep_paid ? sum : d->rep_paid;
}

void crep_dedupe(const ann_t *dig, size_t n, int64_t *paid)
{
	for (size_t k = 0; k < n; k++) {
		if (paid[k] <= 0)
			continue;
		for (size_t j = 0; j < k && paid[k] > 0; j++) {
			if (paid[j] <= 0)
				continue;
			for (int a = 0; a < dig[k].rep_n_channels && paid[k] > 0; a++)
				for (int b = 0; b < dig[j].rep_n_channels; b++)
					if (!memcmp(dig[k].rep_channels[a], dig[j].rep_channels[b], 32)) {
						paid[k] = 0;
						break;
					}
		}
	}
}

int crep_scores(const uint8_t self_id[ANN_IDLEN], const crep_tally_t *own, int n_own, const ann_t *dig, size_t n_dig,
		const int64_t *paid, const uint8_t (*prov)[ANN_IDLEN], int n_prov, double *score, err_msg_t *e)
{
	uint32_t cap = 1 + (uint32_t)n_prov + (uint32_t)n_own + 2 * (uint32_t)n_dig;
	uint8_t (*ids)[ANN_IDLEN] = malloc(cap * sizeof(*ids));
	rep_report_t *r = malloc(((size_t)n_own + n_dig + 1) * sizeof(*r));
	double *sc = malloc(cap * sizeof(double));
	int rc = 0;
	if (!ids || !r || !sc) {
		rc = err_set(e, ERR_NOMEM, "rep: out of memory");
		goto out;
	}
	uint32_t n = 0;
	size_t nr = 0;
	(void)node_index(ids, &n, cap, self_id);
	for (int i = 0; i < n_prov; i++)
		(void)node_index(ids, &n, cap, prov[i]);
	for (int i = 0; i < n_own; i++) {
		if (own[i].sessions == 0 && own[i].paid == 0)
			continue;
		rep_report_t *x = &r[nr++];
		memset(x, 0, sizeof(*x));
		x->reporter = 0;
		x->provider = (uint32_t)node_index(ids, &n, cap, own[i].node_id);
		x->obs.sessions = own[i].sessions;
		x->obs.failures = own[i].failures;
		x->obs.timeouts = own[i].timeouts;
		x->obs.tokens_served = own[i].tokens;
		x->obs.paid = own[i].paid;
		x->obs.latency_ms = own[i].latency_n ? own[i].latency_sum_ms / own[i].latency_n : 0;
	}
	for (size_t k = 0; k < n_dig; k++) {
		const ann_t *d = &dig[k];
		if (d->kind != ANN_REP || !memcmp(d->node_id, self_id, ANN_IDLEN) ||
		    !memcmp(d->node_id, d->rep_provider, ANN_IDLEN))
			continue;
		rep_report_t *x = &r[nr++];
		x->reporter = (uint32_t)node_index(ids, &n, cap, d->node_id);
		x->provider = (uint32_t)node_index(ids, &n, cap, d->rep_provider);
		x->obs = obs_of_digest(d);
		if (paid)
			x->obs.paid = paid[k] > 0 ? paid[k] : 0;
	}
	rc = rep_scores(n, r, nr, NULL, sc, e);
	for (int i = 0; rc == 0 && i < n_prov; i++)
		score[i] = sc[node_index(ids, &n, cap, prov[i])];
out:
	free(ids);
	free(r);
	free(sc);
	return rc;
}

/* ---- on the client's loop */

void crep_peer_init(crep_peer_t *p, const uint8_t node_id[ANN_IDLEN])
{
	memset(p, 0, sizeof(*p));
	crep_tally_init(&p->tally, node_id);
	p->rep = -1;
}

void crep_state_init(crep_state_t *st, uv_loop_t *loop, dht_node_t *dht, int borrowed, settle_t settle, int want)
{
	memset(st, 0, sizeof(*st));
	st->loop = loop;
	st->dht = dht;
	st->borrowed = borrowed;
	st->settle = settle;
	st->want = want;
}

/* A batch of digests checked at the ledger on a worker. The client's loop
 * runs until every work request has ended, so st outlives the job. */
struct vjob {
	uv_work_t w;
	crep_state_t *st;            /* touched on the loop thread only (verify_done) */
	settle_t settle;
	int n;
	ann_t d[CREP_VBATCH];
	int64_t paid[CREP_VBATCH];
};

static void verify_work(uv_work_t *w)
{
	struct vjob *v = w->data;
	for (int i = 0; i < v->n; i++) {
		crep_channel_t ch[ANN_REP_MAX_CHANNELS];
		memset(ch, 0, sizeof(ch));
		for (int k = 0; k < v->d[i].rep_n_channels && k < ANN_REP_MAX_CHANNELS; k++) {
			settle_channel_t sc;
			err_msg_t e;
			if (settle_channel(&v->settle, v->d[i].rep_channels[k], &sc, &e) != 0)
				continue;   /* unknown to our ledger (or it failed): not confirmed */
			ch[k].found = 1;
			memcpy(ch[k].buyer, sc.buyer, ANN_WALLETLEN);
			memcpy(ch[k].provider, sc.provider, ANN_WALLETLEN);
			ch[k].redeemed = sc.redeemed;
		}
		v->paid[i] = crep_verify(&v->d[i], ch);
	}
}

static crep_vc_t *vc_find(crep_state_t *st, const ann_t *d)
{
	for (int i = 0; i < st->n_vc; i++)
		if (!memcmp(st->vc[i].signer, d->node_id, ANN_IDLEN) && !memcmp(st->vc[i].provider, d->rep_provider, ANN_IDLEN))
			return &st->vc[i];
	return NULL;
}

static void verify_done(uv_work_t *w, int status)
{
	struct vjob *v = w->data;
	crep_state_t *st = v->st;
	st->vc_busy = 0;
	for (int i = 0; i < v->n && status == 0; i++) {
		crep_vc_t *x = vc_find(st, &v->d[i]);
		if (x && x->seq == v->d[i].seq)
			x->paid = v->paid[i];
	}
	free(v);
}

/* A lookup of newly watched digest keys (a watch only brings what is
 * published after it starts), on a worker. */
struct ljob {
	uv_work_t w;
	crep_state_t *st;            /* touched on the loop thread only */
	dht_node_t *dht;
	int n;
	uint8_t ids[CREP_MAX_WATCH][ANN_MODELLEN];
};

static void lookup_work(uv_work_t *w)
{
	struct ljob *l = w->data;
	for (int i = 0; i < l->n; i++) {
		size_t cnt = 0;
		if (dht_node_lookup(l->dht, l->ids[i], CREP_LOOKUP_MS, NULL, 0, &cnt) != 0)
			log_debug("client", "digest lookup failed");
	}
}

static void lookup_done(uv_work_t *w, int status)
{
	struct ljob *l = w->data;
	(void)status;
	l->st->lookup_state = 2;
	free(l);
}

/* What digest d weighs: the payment the ledger confirmed (0 until it has;
 * a new sequence is checked again). Queues unchecked digests into *job. */
static int64_t weight(crep_state_t *st, const ann_t *d, struct vjob **job)
{
	if (d->rep_paid <= 0)
		return 0;
	crep_vc_t *x = vc_find(st, d);
	if (x && x->seq == d->seq)
		return x->paid > 0 ? x->paid : 0;
	if (st->vc_busy || (*job && (*job)->n >= CREP_VBATCH))
		return 0;
	if (!*job && !(*job = calloc(1, sizeof(**job))))
		return 0;
	if (!x) {
		x = &st->vc[st->n_vc < CREP_VCACHE ? st->n_vc++ : st->vc_next++ % CREP_VCACHE];
		memcpy(x->signer, d->node_id, ANN_IDLEN);
		memcpy(x->provider, d->rep_provider, ANN_IDLEN);
	}
	x->seq = d->seq;
	x->paid = -1;
	(*job)->d[(*job)->n++] = *d;
	return 0;
}

void crep_refresh(crep_state_t *st, crep_peer_t **peers, int n)
{
	if (n <= 0)
		return;
	size_t cap = st->want ? (size_t)CREP_MAX_WATCH * CREP_DIGESTS : 0, nd = 0;
	crep_tally_t *own = malloc(sizeof(*own) * (size_t)n);
	uint8_t (*prov)[ANN_IDLEN] = malloc(sizeof(*prov) * (size_t)n);
	double *sc = malloc(sizeof(double) * (size_t)n);
	ann_t *dig = cap ? malloc(sizeof(ann_t) * cap) : NULL;
	int64_t *paid = NULL;
	if (!own || !prov || !sc || (cap && !dig))
		goto out;
	int watched = 0;
	for (int i = 0; i < n; i++)
		watched += peers[i]->watch == 1;
	/* Each watched key is looked up once, whenever its peer was found:
	 * a peer discovered after the first round is not left to its watch. */
	struct ljob *lj = cap && st->lookup_state != 1 ? calloc(1, sizeof(*lj)) : NULL;
	int unlooked = 0;
	const uint8_t *me = dht_node_id(st->dht);
	for (int i = 0; i < n; i++) {
		crep_peer_t *p = peers[i];
		own[i] = p->tally;
		memcpy(prov[i], p->tally.node_id, ANN_IDLEN);
		if (!dig)
			continue;
		uint8_t id[ANN_MODELLEN];
		ann_rep_id(p->tally.node_id, id);
		if (!p->watch && p->listed && watched < CREP_MAX_WATCH) {
			int r = dht_node_watch(st->dht, id, NULL, NULL);
			if (r == 0)
				watched++;
			p->watch = r == 0 ? 1 : r == ERR_INVAL ? 2 : 0;
		}
		if (p->watch && !p->looked) {
			if (lj && lj->n < CREP_MAX_WATCH) {
				memcpy(lj->ids[lj->n++], id, ANN_MODELLEN);
				p->looked = 1;
			} else {
				unlooked++;
			}
		}
		size_t cnt = 0, room = cap - nd < CREP_DIGESTS ? cap - nd : CREP_DIGESTS;
		p->n_digests = 0;
		if (p->watch && room && dht_node_peers(st->dht, id, dig + nd, room, &cnt) == 0) {
			cnt = cnt < room ? cnt : room;
			for (size_t k = 0; k < cnt; k++)
				p->n_digests += memcmp(dig[nd + k].node_id, me, ANN_IDLEN) != 0;
			nd += cnt;
		}
	}
	/* The weights: payments our ledger confirmed (without one, the claims). */
	int queued = 0;
	if (nd && !(paid = malloc(sizeof(int64_t) * nd)))
		goto out;   /* keep the last scores */
	for (size_t k = 0; k < nd && !st->settle.ops; k++)
		paid[k] = dig[k].rep_paid;
	if (nd && st->settle.ops) {
		struct vjob *job = NULL;
		for (size_t k = 0; k < nd; k++)
			paid[k] = memcmp(dig[k].node_id, me, ANN_IDLEN) ? weight(st, &dig[k], &job) : 0;
		if (job) {
			job->st = st;
			job->settle = st->settle;
			job->w.data = job;
			if (uv_queue_work(st->loop, &job->w, verify_work, verify_done) == 0) {
				st->vc_busy = queued = 1;
			} else {
				for (int i = 0; i < job->n; i++) {   /* forget them: checked at the next round */
					crep_vc_t *x = vc_find(st, &job->d[i]);
					if (x)
						x->seq = 0;
				}
				free(job);
			}
		}
	}
	if (nd)
		crep_dedupe(dig, nd, paid);
	if (lj && lj->n) {
		lj->st = st;
		lj->dht = st->dht;
		lj->w.data = lj;
		if (uv_queue_work(st->loop, &lj->w, lookup_work, lookup_done) == 0) {
			st->lookup_state = 1;
			lj = NULL;
		}
	}
	free(lj);
	if (!st->settled && !queued && !st->vc_busy && nd == st->last_nd && !unlooked &&
	    (!cap || st->lookup_state == 2))
		st->settled = 1;
	st->last_nd = nd;
	err_msg_t e;
	if (crep_scores(me, own, n, dig, nd, paid, (const uint8_t (*)[ANN_IDLEN])prov, n, sc, &e) == 0) {
		for (int i = 0; i < n; i++) {
			if (peers[i]->rep < 0 && sc[i] >= 0) {
				char hex[17];
				for (int k = 0; k < 8; k++)
					snprintf(hex + 2 * k, 3, "%02x", peers[i]->tally.node_id[k]);
				log_info("client", "provider %s: reputation %.2f (%u digests from others, %s; %u sessions of ours)",
					 hex, sc[i], peers[i]->n_digests,
					 st->settle.ops ? "payments checked at the ledger" : "payments as claimed",
					 peers[i]->tally.sessions);
			}
			peers[i]->rep = sc[i];
		}
	} else {
		log_debug("client", "reputation: %s", e.msg);
	}
out:
	free(paid);
	free(own);
	free(prov);
	free(sc);
	free(dig);
}

int crep_publish(crep_state_t *st, crep_peer_t **peers, int n, const uint8_t wallet[ANN_WALLETLEN])
{
	const uint8_t *me = dht_node_id(st->dht);
	int any = 0;
	for (int i = 0; i < n; i++) {
		crep_peer_t *p = peers[i];
		if (p->tally.paid <= 0 || p->tally.version == p->pub_version || (!p->pub && st->n_pub >= CREP_MAX_PUBLISH))
			continue;
		ann_t d;
		err_msg_t e;
		if (crep_digest(&p->tally, me, wallet, &d, &e) != 0 || dht_node_announce(st->dht, &d, &e) != 0) {
			log_debug("client", "digest not announced: %s", e.msg);
			continue;
		}
		if (!p->pub)
			st->n_pub++;
		p->pub = 1;
		p->pub_version = p->tally.version;
		any = 1;
	}
	return any;
}

void crep_close(crep_state_t *st, crep_peer_t **peers, int n)
{
	for (int i = 0; i < n; i++) {
		crep_peer_t *p = peers[i];
		uint8_t id[ANN_MODELLEN];
		ann_rep_id(p->tally.node_id, id);
		if (p->watch == 1 && dht_node_unwatch(st->dht, id) != 0)
			log_debug("client", "digest unwatch failed");
		p->watch = 0;
		err_msg_t e;
		if (p->pub && st->borrowed && dht_node_withdraw(st->dht, id, 0, &e) != 0)
			log_debug("client", "digest withdraw: %s", e.msg);
		p->pub = 0;
	}
	st->n_pub = 0;
}
