/* metrics.c - counters, histograms and their Prometheus text (see metrics.h). */
#include "api/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double REQ_BOUNDS[] = { METRICS_REQ_BUCKETS };
static const double TTFT_BOUNDS[] = { METRICS_TTFT_BUCKETS };
#define N_REQ (sizeof(REQ_BOUNDS) / sizeof(REQ_BOUNDS[0]))
#define N_TTFT (sizeof(TTFT_BOUNDS) / sizeof(TTFT_BOUNDS[0]))
#define MAX_BOUNDS 16

struct hist {
	const double *bounds;
	size_t n;
	uint64_t counts[MAX_BOUNDS + 1];   /* per bucket, not cumulative; the last is (bound[n-1], +Inf) */
	double sum;
	uint64_t count;
};

struct series {
	char endpoint[METRICS_LABEL_MAX];
	int status;
	uint64_t n;
};

struct metrics {
	pthread_mutex_t mu;
	struct series series[METRICS_MAX_SERIES];
	int n_series;
	uint64_t tokens_in, tokens_out;
	struct hist req, ttft;
};

_Static_assert(N_REQ <= MAX_BOUNDS && N_TTFT <= MAX_BOUNDS, "too many buckets");

metrics_t *metrics_new(void)
{
	metrics_t *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	pthread_mutex_init(&m->mu, NULL);
	m->req.bounds = REQ_BOUNDS;
	m->req.n = N_REQ;
	m->ttft.bounds = TTFT_BOUNDS;
	m->ttft.n = N_TTFT;
	return m;
}

void metrics_free(metrics_t *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->mu);
	free(m);
}

/* A value lands in the first bucket whose bound is >= it (le: less or equal). */
static void hist_add(struct hist *h, double v)
{
	if (!(v >= 0))
		v = 0;   /* NaN or a clock step back: count it, as zero */
	size_t i = 0;
	while (i < h->n && v > h->bounds[i])
		i++;
	h->counts[i]++;
	h->sum += v;
	h->count++;
}

static void label_copy(char *dst, const char *src)
{
	size_t i = 0;
	for (; src && src[i] && i + 1 < METRICS_LABEL_MAX; i++) {
		char ch = src[i];
		int okc = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '/' ||
			  ch == '_' || ch == '.' || ch == '-';
		dst[i] = okc ? ch : '_';
	}
	dst[i] = 0;
}

void metrics_request(metrics_t *m, const char *endpoint, int status, double seconds)
{
	char ep[METRICS_LABEL_MAX];
	label_copy(ep, endpoint ? endpoint : "other");
	pthread_mutex_lock(&m->mu);
	struct series *s = NULL;
	for (int i = 0; i < m->n_series && !s; i++)
		if (m->series[i].status == status && !strcmp(m->series[i].endpoint, ep))
			s = &m->series[i];
	if (!s && m->n_series < METRICS_MAX_SERIES - 1) {
		s = &m->series[m->n_series++];
		memcpy(s->endpoint, ep, sizeof(ep));
		s->status = status;
	}
	if (!s) {
		/* the last slot is kept for the overflow, so a count is never lost */
		s = &m->series[METRICS_MAX_SERIES - 1];
		if (m->n_series < METRICS_MAX_SERIES) {
			m->n_series = METRICS_MAX_SERIES;
			snprintf(s->endpoint, sizeof(s->endpoint), "other");
			s->status = 0;
		}
	}
	s->n++;
	hist_add(&m->req, seconds);
	pthread_mutex_unlock(&m->mu);
}

void metrics_first_token(metrics_t *m, double seconds)
{
	pthread_mutex_lock(&m->mu);
	hist_add(&m->ttft, seconds);
	pthread_mutex_unlock(&m->mu);
}

void metrics_tokens(metrics_t *m, uint64_t in, uint64_t out)
{
	pthread_mutex_lock(&m->mu);
	m->tokens_in += in;
	m->tokens_out += out;
	pthread_mutex_unlock(&m->mu);
}

/* ---- rendering */

struct out {
	char *p;
	size_t n, cap;
	int oom;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	if (o->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
		va_end(ap);
		if (k < 0) {
			o->oom = 1;
			return;
		}
		if ((size_t)k < o->cap - o->n) {
			o->n += (size_t)k;
			return;
		}
		size_t nc = o->cap * 2 + (size_t)k;
		char *np = realloc(o->p, nc);
		if (!np) {
			o->oom = 1;
			return;
		}
		o->p = np;
		o->cap = nc;
	}
}

/* Numbers as the format wants them: shortest round-trip text, no locale. */
static void fmt_num(char *b, size_t cap, double v)
{
	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(b, cap, "%.0f", v);   /* 120, not 1.2e+02 */
		return;
	}
	snprintf(b, cap, "%.17g", v);
	/* prefer the short form when it reads back the same */
	for (int prec = 1; prec < 17; prec++) {
		char t[40];
		snprintf(t, sizeof(t), "%.*g", prec, v);
		if (strtod(t, NULL) == v) {
			snprintf(b, cap, "%s", t);
			return;
		}
	}
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_put(struct out *o, const char *name, const char *help, const struct hist *h)
{
	family(o, name, "histogram", help);
	uint64_t cum = 0;
	char b[40];
	for (size_t i = 0; i < h->n; i++) {
		cum += h->counts[i];
		fmt_num(b, sizeof(b), h->bounds[i]);
		put(o, "%s_bucket{le=\"%s\"} %llu\n", name, b, (unsigned long long)cum);
	}
	cum += h->counts[h->n];
	put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
	fmt_num(b, sizeof(b), h->sum);
	put(o, "%s_sum %s\n", name, b);
	put(o, "%s_count %llu\n", name, (unsigned long long)h->count);
}

char *metrics_render(metrics_t *m, const metrics_gauges_t *g)
{
	struct out o = { malloc(4096), 0, 4096, 0 };
	if (!o.p)
		return NULL;
	o.p[0] = 0;
	pthread_mutex_lock(&m->mu);
	family(&o, "colony_requests_total", "counter", "HTTP requests answered, by endpoint and status.");
	for (int i = 0; i < m->n_series; i++) {
		const struct series *s = &m->series[i];
		if (s->status > 0)
			put(&o, "colony_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n", s->endpoint, s->status,
			    (unsigned long long)s->n);
		else
			put(&o, "colony_requests_total{endpoint=\"%s\",status=\"none\"} %llu\n", s->endpoint,
			    (unsigned long long)s->n);
	}
	family(&o, "colony_tokens_total", "counter", "Tokens of prompts (in) and generated (out).");
	put(&o, "colony_tokens_total{direction=\"in\"} %llu\n", (unsigned long long)m->tokens_in);
	put(&o, "colony_tokens_total{direction=\"out\"} %llu\n", (unsigned long long)m->tokens_out);
	hist_put(&o, "colony_request_seconds", "Time from a request's arrival to the end of its response (a stream's last byte).",
		 &m->req);
	hist_put(&o, "colony_time_to_first_token_seconds", "Time from a generation's submission to its first token.",
		 &m->ttft);
	pthread_mutex_unlock(&m->mu);
	family(&o, "colony_sessions_active", "gauge", "Generations running or waiting for a route.");
	put(&o, "colony_sessions_active %llu\n", (unsigned long long)g->sessions_active);
	family(&o, "colony_peers", "gauge", "Shard servers of the model with a live connection.");
	put(&o, "colony_peers %llu\n", (unsigned long long)g->peers);
	family(&o, "colony_failovers_total", "counter", "Route hops replaced after a server failed.");
	put(&o, "colony_failovers_total %llu\n", (unsigned long long)g->failovers_total);
	family(&o, "colony_wire_bytes_total", "counter", "Encrypted bytes exchanged with shard servers.");
	put(&o, "colony_wire_bytes_total{direction=\"in\"} %llu\n", (unsigned long long)g->wire_bytes_in);
	put(&o, "colony_wire_bytes_total{direction=\"out\"} %llu\n", (unsigned long long)g->wire_bytes_out);
	if (o.oom) {
		free(o.p);
		return NULL;
	}
	return o.p;
}
