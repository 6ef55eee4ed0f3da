/* fuzz_record.c - libFuzzer target for the DHT record parser, verifier and
 * store (src/dht/ann.h). Any input is either refused with a message and a
 * zeroed output, or parses into a record that
 *   - passes ann_check and lies within the documented sizes,
 *   - is canonical: re-encoding it (signed by a fixed test key) gives back
 *     the same bytes apart from the node id and the signature, and that
 *     re-signed record decodes to the same fields,
 *   - for a receipt digest (kind 5), keeps its scope and count rules,
 *   - and drives the store (shard records and digests): variants of it (older/newer sequence, tombstone,
 *     shifted timestamps) keep the store's invariants (one entry per node,
 *     within the cap, listed records fresh and ordered).
 * Under the replay driver, ctest runs the committed corpus in
 * tests/fuzz/corpus/record/ through it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dht/ann.h"

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz_record: %s failed (line %d)\n", #c, __LINE__); abort(); } } while (0)

#define NET 0x436f6c79u

static uint8_t g_pk[2][32], g_sk[2][64];

static void keys_once(void)
{
	static int done;
	if (done)
		return;
	FUZZ_ASSERT(sodium_init() >= 0);
	for (int i = 0; i < 2; i++) {
		uint8_t seed[32];
		memset(seed, 0x41 + i, sizeof(seed));
		crypto_sign_seed_keypair(g_pk[i], g_sk[i], seed);
	}
	done = 1;
}

static int is_zero(const void *p, size_t n)
{
	const uint8_t *q = p;
	for (size_t i = 0; i < n; i++)
		if (q[i])
			return 0;
	return 1;
}

static void store_invariants(ann_store_t *s, uint64_t now, uint32_t max_nodes, uint8_t kind)
{
	ann_t out[8];
	FUZZ_ASSERT(ann_store_count(s) <= max_nodes);
	size_t n = ann_store_collect(s, now, out, 8);
	FUZZ_ASSERT(n <= ann_store_count(s));
	for (size_t i = 0; i < n && i < 8; i++) {
		FUZZ_ASSERT(out[i].kind == kind);
		FUZZ_ASSERT(ann_check(&out[i], NULL) == 0);
		FUZZ_ASSERT(ann_check_time(&out[i], now, ann_store_config(s)->stale_ms, ann_store_config(s)->skew_ms, NULL) == 0);
		if (i)
			FUZZ_ASSERT(memcmp(out[i - 1].node_id, out[i].node_id, 32) < 0);
	}
}

static void drive_store(const ann_t *base)
{
	ann_store_cfg_t c = { .network = NET, .stale_ms = 5000, .skew_ms = 1000, .max_nodes = 2 };
	memcpy(c.model_id, base->model_id, 32);
	ann_store_t *s = NULL;
	FUZZ_ASSERT(ann_store_new(&c, &s) == 0);
	/* now is chosen so the base record is fresh (or, when it is too close to
	 * 0 or UINT64_MAX, whatever it is: the rules must hold anyway). */
	uint64_t now = base->timestamp_ms;
	static const int64_t dseq[] = { 0, 1, -1, 2, 0, 3 };
	static const int64_t dts[] = { 0, 10, -10, 6000, -2000, 1 };
	for (int step = 0; step < 6; step++) {
		ann_t v = *base;
		int who = step & 1;
		memcpy(v.node_id, g_pk[who], 32);
		v.seq = base->seq + (uint64_t)dseq[step];
		v.timestamp_ms = base->timestamp_ms + (uint64_t)dts[step];
		if (step == 3) {
			/* A tombstone: the head only. */
			ann_t t;
			memset(&t, 0, sizeof(t));
			t.kind = ANN_TOMBSTONE;
			memcpy(t.node_id, v.node_id, 32);
			memcpy(t.model_id, v.model_id, 32);
			t.timestamp_ms = v.timestamp_ms;
			t.seq = v.seq;
			v = t;
		}
		uint8_t buf[ANN_MAX_SIZE];
		size_t len;
		if (ann_encode(&v, NET, g_sk[who], buf, sizeof(buf), &len, NULL) != 0)
			continue;   /* e.g. seq wrapped to 0 */
		err_msg_t e = { "" };
		size_t before = ann_store_count(s);
		int rc = ann_store_add(s, buf, len, now, &e);
		FUZZ_ASSERT(rc <= 0 && rc >= ERR_CODE_MIN);
		if (rc)
			FUZZ_ASSERT(e.msg[0] != 0 && ann_store_count(s) <= before);
		store_invariants(s, now, c.max_nodes, base->kind);
		store_invariants(s, now + 3000, c.max_nodes, base->kind);
	}
	ann_store_prune(s, now + 10000);
	store_invariants(s, now + 10000, c.max_nodes, base->kind);
	ann_store_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	keys_once();
	ann_t a, b;
	err_msg_t e = { "" };
	int rc = ann_parse_unverified(data, size, &a, &e);
	if (rc != 0) {
		FUZZ_ASSERT(rc < 0 && rc >= ERR_CODE_MIN);
		FUZZ_ASSERT(e.msg[0] != 0);
		FUZZ_ASSERT(is_zero(&a, sizeof(a)));
		FUZZ_ASSERT(ann_decode(data, size, NET, &b, NULL) == rc);
		FUZZ_ASSERT(is_zero(&b, sizeof(b)));
		return 0;
	}
	FUZZ_ASSERT(ann_check(&a, NULL) == 0);
	FUZZ_ASSERT(size >= ANN_MIN_SIZE && size <= ANN_MAX_SIZE);
	FUZZ_ASSERT(strlen(a.sw_version) <= ANN_MAX_SWVER);

	/* With its own signature: only a real signature passes, and then it is
	 * the same record. */
	rc = ann_decode(data, size, NET, &b, &e);
	FUZZ_ASSERT(rc == 0 || rc == ERR_FORMAT);
	if (rc == 0)
		FUZZ_ASSERT(memcmp(&a, &b, sizeof(a)) == 0);

	/* Canonical form: re-sign with a test key; only node id and signature change.
	 * (A digest may not be about its signer: take the other key then.) */
	int key = a.kind == ANN_REP && memcmp(a.rep_provider, g_pk[0], 32) == 0;
	ann_t r = a;
	memcpy(r.node_id, g_pk[key], 32);
	uint8_t buf[ANN_MAX_SIZE];
	size_t len = 0;
	rc = ann_encode(&r, NET, g_sk[key], buf, sizeof(buf), &len, &e);
	FUZZ_ASSERT(rc == 0);
	FUZZ_ASSERT(len == size);
	FUZZ_ASSERT(memcmp(buf, data, 8) == 0);
	FUZZ_ASSERT(memcmp(buf + 40, data + 40, size - 40 - ANN_SIGLEN) == 0);
	FUZZ_ASSERT(ann_decode(buf, len, NET, &b, &e) == 0);
	FUZZ_ASSERT(memcmp(&r, &b, sizeof(r)) == 0);
	/* Signed for one network, refused by another. */
	FUZZ_ASSERT(ann_decode(buf, len, NET ^ 1, &b, NULL) == ERR_FORMAT);

	if (a.kind == ANN_REP) {
		/* The digest's invariants: a valid scope, no payment without wallets. */
		uint8_t id[32];
		ann_rep_id(a.rep_provider, id);
		FUZZ_ASSERT(memcmp(id, a.model_id, 32) == 0);
		FUZZ_ASSERT(a.rep_paid >= 0);
		FUZZ_ASSERT((uint64_t)a.rep_failures + a.rep_timeouts <= a.rep_sessions);
		FUZZ_ASSERT(size == ANN_MIN_REP_SIZE + 32u * a.rep_n_channels);
		FUZZ_ASSERT((a.rep_paid > 0) == (a.rep_n_channels > 0) && a.rep_n_channels <= ANN_REP_MAX_CHANNELS);
	}
	if (a.kind == ANN_SHARD || a.kind == ANN_REP)
		drive_store(&a);
	return 0;
}
