/* ann_store.c - the per-key record filter (see ann.h).
 *
 * One sorted array of ann_t, one slot per node id (its highest sequence, or
 * its tombstone). Sorted by node id so a lookup is a binary search and
 * ann_store_collect's order is deterministic without a sort. The array grows
 * by doubling up to cfg.max_nodes and never beyond, so a flood of validly
 * signed records from fresh keys costs at most max_nodes * sizeof(ann_t).
 */
#include "dht/ann.h"

#include <stdlib.h>
#include <string.h>

struct ann_store {
	ann_store_cfg_t cfg;
	ann_t *e;            /* [n], sorted by node_id */
	size_t n, cap;
	ann_store_stats_t st;
};

int ann_store_new(const ann_store_cfg_t *cfg, ann_store_t **out)
{
	*out = NULL;
	if (!cfg || cfg->stale_ms == 0 || cfg->max_nodes == 0)
		return ERR_INVAL;
	ann_store_t *s = calloc(1, sizeof(*s));
	if (!s)
		return ERR_NOMEM;
	s->cfg = *cfg;
	*out = s;
	return 0;
}

void ann_store_free(ann_store_t *s)
{
	if (!s)
		return;
	free(s->e);
	free(s);
}

/* Index of node id, or -(insertion point) - 1. */
static long find(const ann_store_t *s, const uint8_t id[ANN_IDLEN])
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(s->e[mid].node_id, id, ANN_IDLEN);
		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

static void remove_at(ann_store_t *s, size_t i)
{
	memmove(&s->e[i], &s->e[i + 1], (s->n - i - 1) * sizeof(ann_t));
	s->n--;
}

static int is_stale(const ann_store_t *s, const ann_t *a, uint64_t now_ms)
{
	return a->timestamp_ms < now_ms && now_ms - a->timestamp_ms > s->cfg.stale_ms;
}

void ann_store_prune(ann_store_t *s, uint64_t now_ms)
{
	size_t j = 0;
	for (size_t i = 0; i < s->n; i++)
		if (!is_stale(s, &s->e[i], now_ms))
			s->e[j++] = s->e[i];
	s->n = j;
}

/* Makes room for one more entry, or says ERR_FULL. May evict (and then
 * *idx, an insertion point, is recomputed by the caller). */
static int make_room(ann_store_t *s, const ann_t *rec, uint64_t now_ms, err_msg_t *e)
{
	if (s->n >= s->cfg.max_nodes) {
		ann_store_prune(s, now_ms);
		if (s->n >= s->cfg.max_nodes) {
			size_t old = 0;
			for (size_t i = 1; i < s->n; i++)
				if (s->e[i].timestamp_ms < s->e[old].timestamp_ms)
					old = i;
			if (s->e[old].timestamp_ms >= rec->timestamp_ms) {
				s->st.full++;
				return err_set(e, ERR_FULL, "store full (%u nodes) of records newer than this one",
					s->cfg.max_nodes);
			}
			remove_at(s, old);
			s->st.evicted++;
		}
	}
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 8;
		if (nc > s->cfg.max_nodes)
			nc = s->cfg.max_nodes;
		ann_t *ne = realloc(s->e, nc * sizeof(ann_t));
		if (!ne)
			return err_set(e, ERR_NOMEM, "store: out of memory");
		s->e = ne;
		s->cap = nc;
	}
	return 0;
}

int ann_store_add(ann_store_t *s, const uint8_t *buf, size_t len, uint64_t now_ms, err_msg_t *e)
{
	ann_t rec;
	int rc = ann_parse_unverified(buf, len, &rec, e);
	if (rc) {
		s->st.malformed++;
		return rc;
	}
	if (memcmp(rec.model_id, s->cfg.model_id, ANN_MODELLEN) != 0) {
		s->st.wrong_scope++;
		return err_set(e, ERR_RANGE, "record names another model than its key");
	}
	if (rec.timestamp_ms > now_ms && rec.timestamp_ms - now_ms > s->cfg.skew_ms) {
		s->st.future++;
		return ann_check_time(&rec, now_ms, s->cfg.stale_ms, s->cfg.skew_ms, e);
	}
	if (is_stale(s, &rec, now_ms)) {
		s->st.stale++;
		return ann_check_time(&rec, now_ms, s->cfg.stale_ms, s->cfg.skew_ms, e);
	}
	long i = find(s, rec.node_id);
	if (i >= 0 && rec.seq <= s->e[i].seq) {
		s->st.replay++;
		return err_set(e, ERR_RANGE, "sequence %llu not above the %llu already kept for this node",
			(unsigned long long)rec.seq, (unsigned long long)s->e[i].seq);
	}
	/* Only now pay for the signature: everything above was free to check. */
	rc = ann_decode(buf, len, s->cfg.network, &rec, e);
	if (rc) {
		s->st.bad_sig++;
		return rc;
	}
	if (i >= 0) {
		s->e[i] = rec;
		s->st.accepted++;
		return 0;
	}
	rc = make_room(s, &rec, now_ms, e);
	if (rc)
		return rc;
	i = find(s, rec.node_id);   /* make_room may have removed entries */
	size_t at = (size_t)(-i - 1);
	memmove(&s->e[at + 1], &s->e[at], (s->n - at) * sizeof(ann_t));
	s->e[at] = rec;
	s->n++;
	s->st.accepted++;
	return 0;
}

size_t ann_store_collect(const ann_store_t *s, uint64_t now_ms, ann_t *out, size_t cap)
{
	size_t k = 0;
	for (size_t i = 0; i < s->n; i++) {
		const ann_t *a = &s->e[i];
		if (a->kind == ANN_TOMBSTONE)
			continue;
		if (ann_check_time(a, now_ms, s->cfg.stale_ms, s->cfg.skew_ms, NULL) != 0)
			continue;
		if (k < cap)
			out[k] = *a;
		k++;
	}
	return k;
}

size_t ann_store_count(const ann_store_t *s) { return s->n; }
size_t ann_store_bytes(const ann_store_t *s) { return sizeof(*s) + s->cap * sizeof(ann_t); }
const ann_store_stats_t *ann_store_stats(const ann_store_t *s) { return &s->st; }
const ann_store_cfg_t *ann_store_config(const ann_store_t *s) { return &s->cfg; }
