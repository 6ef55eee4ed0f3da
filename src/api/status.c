/* status.c - the /api/status document (see status.h, docs/PROTOCOL.md). */
#include "api/status.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static json_t *opt_real(double v, int valid)
{
	return valid ? json_real(v) : json_null();
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank quantile of v[0..n) (sorted here). */
static double quantile(double *v, int n, double q)
{
	qsort(v, (size_t)n, sizeof(double), cmp_dbl);
	int k = (int)(q * n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

static void hex_id(const uint8_t id[ANN_IDLEN], char out[2 * ANN_IDLEN + 1])
{
	sodium_bin2hex(out, 2 * ANN_IDLEN + 1, id, ANN_IDLEN);
}

/* set a key, stealing the value (a NULL value, from an allocation that
 * failed, marks the whole document as failed) */
static int put(json_t *o, const char *k, json_t *v)
{
	if (!v)
		return -1;
	return json_object_set_new(o, k, v);
}

static json_t *span(int a, int b)
{
	return json_pack("[i,i]", a, b);
}

static json_t *gateway_obj(const http_status_in_t *in, uint64_t live_failovers, int *bad)
{
	const http_stats_t *s = &in->stats;
	json_t *o = json_object();
	if (!o) {
		*bad = 1;
		return NULL;
	}
	json_t *errs = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "4xx", (json_int_t)s->status_4xx, "5xx",
				 (json_int_t)s->status_5xx, "400", (json_int_t)s->status_400, "401",
				 (json_int_t)s->status_401, "404", (json_int_t)s->status_404, "413",
				 (json_int_t)s->status_413, "429", (json_int_t)s->status_429, "503",
				 (json_int_t)s->status_503, "cancelled", (json_int_t)s->cancelled);
	int r = 0;
	r |= put(o, "url", json_string(in->url ? in->url : ""));
	r |= put(o, "model", json_string(in->model_name ? in->model_name : ""));
	r |= put(o, "model_id", json_string(in->model_hex ? in->model_hex : ""));
	r |= put(o, "key_required", json_boolean(in->key_required));
	r |= put(o, "context_length", json_integer(in->n_ctx));
	r |= put(o, "requests", json_integer((json_int_t)s->requests));
	r |= put(o, "generations", json_integer((json_int_t)s->generations));
	r |= put(o, "active", json_integer((json_int_t)s->active));
	r |= put(o, "tokens_in", json_integer((json_int_t)s->tokens_in));
	r |= put(o, "tokens_out", json_integer((json_int_t)s->tokens_out));
	r |= put(o, "failovers", json_integer((json_int_t)(in->view.failovers_total + live_failovers)));
	r |= put(o, "wire_bytes_in", json_integer((json_int_t)in->view.wire_bytes_in));
	r |= put(o, "wire_bytes_out", json_integer((json_int_t)in->view.wire_bytes_out));
	r |= put(o, "errors", errs);
	/* earnings: the node's redeemed vouchers, when the gateway runs in a
	 * node (else unknown: null); spend: what the gateway's client paid */
	r |= put(o, "earnings", in->has_earned ? json_integer((json_int_t)in->earned) : json_null());
	r |= put(o, "spend", json_integer((json_int_t)in->view.spent_total));
	r |= put(o, "digests_published", json_integer(in->view.digests_published));
	if (r)
		*bad = 1;
	return o;
}

static json_t *latency_obj(const http_status_in_t *in, int *bad)
{
	int n = in->n_recent;
	double *tt = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
	double *tp = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
	json_t *o = json_object();
	if (!tt || !tp || !o) {
		free(tt);
		free(tp);
		json_decref(o);
		*bad = 1;
		return NULL;
	}
	int nt = 0, np = 0;
	for (int i = 0; i < n; i++) {
		if (in->recent[i].ttft_s >= 0)
			tt[nt++] = in->recent[i].ttft_s * 1e3;
		if (in->recent[i].tokens_per_second > 0)
			tp[np++] = in->recent[i].tokens_per_second;
	}
	int r = 0;
	r |= put(o, "samples", json_integer(n));
	r |= put(o, "ttft_ms_p50", opt_real(nt ? quantile(tt, nt, 0.5) : 0, nt > 0));
	r |= put(o, "ttft_ms_p90", opt_real(nt ? quantile(tt, nt, 0.9) : 0, nt > 0));
	double tps50 = np ? quantile(tp, np, 0.5) : 0;
	/* per-token latency p90 is the slow end: the 10th percentile of speed */
	double tps10 = np ? quantile(tp, np, 0.1) : 0;
	r |= put(o, "tokens_per_second_p50", opt_real(tps50, np > 0));
	r |= put(o, "token_ms_p50", opt_real(np ? 1e3 / tps50 : 0, np > 0));
	r |= put(o, "token_ms_p90", opt_real(np ? 1e3 / tps10 : 0, np > 0));
	free(tt);
	free(tp);
	if (r)
		*bad = 1;
	return o;
}

static json_t *peers_arr(const http_status_in_t *in, int *bad)
{
	json_t *a = json_array();
	if (!a) {
		*bad = 1;
		return NULL;
	}
	for (int i = 0; i < in->n_servers; i++) {
		const swarm_server_info_t *s = &in->servers[i];
		char id[2 * ANN_IDLEN + 1];
		hex_id(s->node_id, id);
		int64_t age = (int64_t)in->now_ms - (int64_t)s->timestamp_ms;
		json_t *p = json_pack("{s:s,s:s%,s:s,s:s,s:o,s:I,s:f,s:i,s:o,s:b,s:b,s:I,s:I}", "id", id, "short", id,
				      (size_t)16, "address", s->addr, "model_id", in->model_hex ? in->model_hex : "",
				      "layers", span((int)s->layer_a, (int)s->layer_b), "price", (json_int_t)s->price,
				      "throughput_tps", s->throughput_milli / 1000.0, "free_sessions",
				      (int)(s->free_sessions > 1000000 ? 1000000 : s->free_sessions), "rtt_ms",
				      opt_real(s->rtt_ms, s->connected && s->rtt_ms >= 0), "connected", s->connected,
				      "listed", s->listed, "last_seen_ms", (json_int_t)s->timestamp_ms, "age_ms",
				      (json_int_t)age);
		/* the market's view of it: reputation and what we paid it */
		if (p && (put(p, "score", opt_real(s->rep, s->rep >= 0)) || put(p, "digests", json_integer(s->digests)) ||
			  put(p, "sessions", json_integer(s->sessions)) || put(p, "failures", json_integer(s->failures)) ||
			  put(p, "paid", json_integer((json_int_t)s->paid))))
			*bad = 1;
		if (!p || json_array_append_new(a, p))
			*bad = 1;
	}
	return a;
}

static json_t *int_arr(const int *v, int n)
{
	json_t *a = json_array();
	for (int i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_integer(v[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static json_t *models_arr(const http_status_in_t *in, int *bad)
{
	int L = in->view.n_layer > 0 ? in->view.n_layer : 0;
	int *rep = calloc((size_t)(L ? L : 1), sizeof(int)), *ann = calloc((size_t)(L ? L : 1), sizeof(int));
	json_t *missing = json_array(), *m = NULL;
	if (!rep || !ann || !missing) {
		*bad = 1;
		goto out;
	}
	for (int i = 0; i < in->n_servers; i++) {
		const swarm_server_info_t *s = &in->servers[i];
		for (uint32_t l = s->layer_a; l < s->layer_b && l < (uint32_t)L; l++) {
			rep[l] += s->connected;
			ann[l] += s->listed;
		}
	}
	int covered = 0, minr = L ? rep[0] : 0;
	for (int l = 0; l < L; l++) {
		covered += rep[l] > 0;
		if (rep[l] < minr)
			minr = rep[l];
		if (rep[l] == 0 && (l == 0 || rep[l - 1] > 0)) {
			int b = l;
			while (b < L && rep[b] == 0)
				b++;
			if (json_array_append_new(missing, span(l, b)))
				*bad = 1;
		}
	}
	m = json_pack("{s:s,s:s,s:i,s:i,s:i,s:b,s:o,s:o,s:O}", "id", in->model_name ? in->model_name : "", "model_id",
		      in->model_hex ? in->model_hex : "", "layers", L, "layers_covered", covered, "min_replicas", minr,
		      "available", L > 0 && covered == L, "replicas", int_arr(rep, L), "announced", int_arr(ann, L),
		      "missing", missing);
	if (!m)
		*bad = 1;
out:
	json_decref(missing);
	free(rep);
	free(ann);
	json_t *a = json_array();
	if (!a || (m && json_array_append_new(a, m)))
		*bad = 1;
	return a;
}

static const char *state_name(enum swarm_job_state s)
{
	return s == SWARM_JOB_WAITING ? "waiting" : s == SWARM_JOB_RUNNING ? "running" : "done";
}

static json_t *sessions_arr(const http_status_in_t *in, int *bad)
{
	json_t *a = json_array();
	if (!a) {
		*bad = 1;
		return NULL;
	}
	for (int i = 0; i < in->n_sess; i++) {
		const http_sess_info_t *x = &in->sess[i];
		json_t *route = json_array();
		for (int k = 0; route && k < x->job.n_hops && k < SWARM_INFO_MAX_HOPS; k++) {
			const swarm_hop_t *h = &x->job.hops[k];
			char id[2 * ANN_IDLEN + 1];
			hex_id(h->node_id, id);
			json_t *hop = json_pack("{s:s,s:s%,s:s,s:o}", "id", id, "short", id, (size_t)16, "address", h->addr,
						"layers", span(h->layer_a, h->layer_b));
			if (!hop || json_array_append_new(route, hop))
				*bad = 1;
		}
		json_t *o = json_pack("{s:s,s:s,s:b,s:s,s:f,s:i,s:i,s:o,s:o,s:i,s:o}", "id", x->id, "kind",
				      x->chat ? "chat" : "completion", "stream", x->stream, "state", state_name(x->job.state),
				      "age_s", x->age_s, "prompt_tokens", x->prompt_tokens, "completion_tokens",
				      x->job.n_tokens, "ttft_ms", opt_real(x->ttft_s * 1e3, x->ttft_s >= 0),
				      "tokens_per_second", opt_real(x->tokens_per_second, x->tokens_per_second >= 0),
				      "failovers", x->job.failovers, "route", route);
		if (!o || json_array_append_new(a, o))
			*bad = 1;
	}
	return a;
}

static json_t *recent_arr(const http_status_in_t *in, int *bad)
{
	json_t *a = json_array();
	if (!a) {
		*bad = 1;
		return NULL;
	}
	for (int i = 0; i < in->n_recent; i++) {
		const http_recent_t *x = &in->recent[i];
		json_t *o = json_pack("{s:s,s:s,s:i,s:i,s:o,s:o,s:f,s:i,s:I}", "id", x->id, "outcome",
				      x->outcome ? x->outcome : "ok", "prompt_tokens", x->prompt_tokens,
				      "completion_tokens", x->completion_tokens, "ttft_ms",
				      opt_real(x->ttft_s * 1e3, x->ttft_s >= 0), "tokens_per_second",
				      opt_real(x->tokens_per_second, x->tokens_per_second >= 0), "seconds", x->seconds,
				      "failovers", x->failovers, "end_ms", (json_int_t)x->end_ms);
		if (!o || json_array_append_new(a, o))
			*bad = 1;
	}
	return a;
}

char *http_status_json(const http_status_in_t *in)
{
	int bad = 0;
	uint64_t live_failovers = 0;
	for (int i = 0; i < in->n_sess; i++)
		live_failovers += (uint64_t)(in->sess[i].job.failovers > 0 ? in->sess[i].job.failovers : 0);
	json_t *root = json_object();
	if (!root)
		return NULL;
	int r = 0;
	r |= put(root, "object", json_string("colony.status"));
	r |= put(root, "version", json_string(in->version ? in->version : ""));
	r |= put(root, "time_ms", json_integer((json_int_t)in->now_ms));
	r |= put(root, "uptime_s", json_real((double)(in->now_ms - in->started_ms) / 1e3));
	r |= put(root, "gateway", gateway_obj(in, live_failovers, &bad));
	r |= put(root, "latency", latency_obj(in, &bad));
	r |= put(root, "peers", peers_arr(in, &bad));
	r |= put(root, "models", models_arr(in, &bad));
	r |= put(root, "sessions", sessions_arr(in, &bad));
	r |= put(root, "recent", recent_arr(in, &bad));
	char *s = r || bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
	json_decref(root);
	return s;
}
