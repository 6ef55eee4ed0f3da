/* test_metrics.c - the gateway's /metrics text (src/api/metrics.h), read
 * back by a strict parser of the Prometheus text exposition format 0.0.4:
 * every line is a # HELP, a # TYPE or a sample; metric and label names are
 * valid; each family has exactly one HELP and one TYPE line, before its
 * samples and with all its samples together; label values are properly
 * quoted and escaped; values are numbers; counters end in _total; histograms
 * have _bucket samples with le labels strictly ascending and ending in +Inf,
 * cumulative counts, then _sum and _count with _count equal to the +Inf
 * bucket. Then the counts themselves: observations land in the right buckets
 * (le is "less or equal"), 8 threads adding at once lose nothing, and the
 * series table overflows into endpoint="other" without losing a count. */
#include "test.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>

#include "api/metrics.h"

/* ---- a strict parser */

#define P_MAX_SAMPLES 512
#define P_MAX_FAMILIES 32
#define P_MAX_LABELS 4

struct sample {
	char name[96];
	int n_labels;
	char lname[P_MAX_LABELS][32];
	char lval[P_MAX_LABELS][64];
	double v;
	char family[96];
};

struct family {
	char name[96];
	char type[16];
	int has_help, has_type, n_samples, closed;
};

struct parsed {
	struct sample s[P_MAX_SAMPLES];
	int n;
	struct family f[P_MAX_FAMILIES];
	int nf;
	char err[200];
};

static int name_ok(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
			return 0;
	return 1;
}

static int label_name_ok(const char *s, size_t n)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return 0;
	return n < 2 || strncmp(s, "__", 2) != 0;
}

static struct family *fam_find(struct parsed *p, const char *name)
{
	for (int i = 0; i < p->nf; i++)
		if (!strcmp(p->f[i].name, name))
			return &p->f[i];
	return NULL;
}

/* The family a sample name belongs to: itself, or for histograms the name
 * without _bucket/_sum/_count. */
static struct family *fam_of(struct parsed *p, const char *name)
{
	struct family *f = fam_find(p, name);
	if (f)
		return f;
	static const char *suf[] = { "_bucket", "_sum", "_count" };
	for (int k = 0; k < 3; k++) {
		size_t n = strlen(name), sl = strlen(suf[k]);
		if (n > sl && !strcmp(name + n - sl, suf[k])) {
			char b[96];
			snprintf(b, sizeof(b), "%.*s", (int)(n - sl), name);
			f = fam_find(p, b);
			if (f && !strcmp(f->type, "histogram"))
				return f;
		}
	}
	return NULL;
}

static int perr(struct parsed *p, int line, const char *why)
{
	snprintf(p->err, sizeof(p->err), "line %d: %s", line, why);
	return -1;
}

static int parse_value(const char *s, double *v)
{
	if (!strcmp(s, "+Inf")) { *v = INFINITY; return 0; }
	if (!strcmp(s, "-Inf")) { *v = -INFINITY; return 0; }
	if (!strcmp(s, "NaN")) { *v = NAN; return 0; }
	char *end;
	errno = 0;
	*v = strtod(s, &end);
	return (end == s || *end || errno) ? -1 : 0;
}

static int parse(const char *text, struct parsed *p)
{
	memset(p, 0, sizeof(*p));
	struct family *cur = NULL;
	int line = 0;
	const char *q = text;
	if (!*q)
		return perr(p, 0, "empty");
	while (*q) {
		line++;
		const char *nl = strchr(q, '\n');
		if (!nl)
			return perr(p, line, "last line lacks its newline");
		char l[512];
		size_t len = (size_t)(nl - q);
		if (len >= sizeof(l))
			return perr(p, line, "line too long");
		memcpy(l, q, len);
		l[len] = 0;
		q = nl + 1;
		if (len == 0)
			return perr(p, line, "empty line");
		if (l[0] == '#') {
			char kw[8], name[96];
			int off = 0;
			if (sscanf(l, "# %7s %95s %n", kw, name, &off) < 2 || off == 0)
				return perr(p, line, "malformed comment");
			if (!name_ok(name, strlen(name)))
				return perr(p, line, "bad metric name in comment");
			struct family *f = fam_find(p, name);
			if (!f) {
				if (p->nf == P_MAX_FAMILIES)
					return perr(p, line, "too many families");
				if (cur)
					cur->closed = 1;
				f = &p->f[p->nf++];
				snprintf(f->name, sizeof(f->name), "%s", name);
			}
			if (f->n_samples)
				return perr(p, line, "HELP/TYPE after the family's samples");
			if (f->closed)
				return perr(p, line, "family split");
			cur = f;
			if (!strcmp(kw, "HELP")) {
				if (f->has_help++)
					return perr(p, line, "second HELP");
				if (!l[off])
					return perr(p, line, "empty HELP");
			} else if (!strcmp(kw, "TYPE")) {
				if (f->has_type++)
					return perr(p, line, "second TYPE");
				const char *t = l + off;
				if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram") && strcmp(t, "summary") &&
				    strcmp(t, "untyped"))
					return perr(p, line, "unknown TYPE");
				snprintf(f->type, sizeof(f->type), "%s", t);
			} else {
				return perr(p, line, "comment neither HELP nor TYPE");
			}
			continue;
		}
		if (p->n == P_MAX_SAMPLES)
			return perr(p, line, "too many samples");
		struct sample *s = &p->s[p->n++];
		const char *c = l;
		size_t nn = strcspn(c, "{ ");
		if (nn >= sizeof(s->name) || !name_ok(c, nn))
			return perr(p, line, "bad sample name");
		memcpy(s->name, c, nn);
		s->name[nn] = 0;
		c += nn;
		if (*c == '{') {
			c++;
			while (*c != '}') {
				if (s->n_labels == P_MAX_LABELS)
					return perr(p, line, "too many labels");
				size_t ln = strcspn(c, "=");
				if (!label_name_ok(c, ln) || ln >= 32)
					return perr(p, line, "bad label name");
				memcpy(s->lname[s->n_labels], c, ln);
				s->lname[s->n_labels][ln] = 0;
				for (int k = 0; k < s->n_labels; k++)
					if (!strcmp(s->lname[k], s->lname[s->n_labels]))
						return perr(p, line, "repeated label");
				c += ln;
				if (c[0] != '=' || c[1] != '"')
					return perr(p, line, "label value not quoted");
				c += 2;
				size_t vi = 0;
				while (*c != '"') {
					if (!*c)
						return perr(p, line, "unterminated label value");
					char ch = *c++;
					if (ch == '\\') {
						ch = *c++;
						if (ch == 'n')
							ch = '\n';
						else if (ch != '\\' && ch != '"')
							return perr(p, line, "bad escape in label value");
					}
					if (vi + 1 >= 64)
						return perr(p, line, "label value too long");
					s->lval[s->n_labels][vi++] = ch;
				}
				s->lval[s->n_labels][vi] = 0;
				s->n_labels++;
				c++;
				if (*c == ',')
					c++;
				else if (*c != '}')
					return perr(p, line, "expected , or } after a label");
			}
			c++;
		}
		if (*c != ' ')
			return perr(p, line, "expected one space before the value");
		c++;
		char vb[64];
		size_t vl = strcspn(c, " ");
		if (vl == 0 || vl >= sizeof(vb))
			return perr(p, line, "missing value");
		memcpy(vb, c, vl);
		vb[vl] = 0;
		if (parse_value(vb, &s->v))
			return perr(p, line, "value is not a number");
		if (c[vl] == ' ') {   /* an optional timestamp: an integer */
			const char *ts = c + vl + 1;
			if (!*ts || strspn(ts, "-0123456789") != strlen(ts))
				return perr(p, line, "bad timestamp");
		}
		struct family *f = fam_of(p, s->name);
		if (!f || f != cur)
			return perr(p, line, "sample outside its family's block (or no HELP/TYPE before it)");
		if (!f->has_help || !f->has_type)
			return perr(p, line, "family lacks HELP or TYPE");
		snprintf(s->family, sizeof(s->family), "%s", f->name);
		f->n_samples++;
	}
	return 0;
}

static const char *label(const struct sample *s, const char *name)
{
	for (int i = 0; i < s->n_labels; i++)
		if (!strcmp(s->lname[i], name))
			return s->lval[i];
	return NULL;
}

/* Histogram rules for family name; *count gets _count. */
static int check_hist(struct parsed *p, const char *name, double *count, double *sum, char *why, size_t wcap)
{
	char bn[110], sn[110], cn[110];
	snprintf(bn, sizeof(bn), "%s_bucket", name);
	snprintf(sn, sizeof(sn), "%s_sum", name);
	snprintf(cn, sizeof(cn), "%s_count", name);
	double last_le = -INFINITY, last_c = 0, inf_c = -1;
	int n_b = 0, seen_sum = 0, seen_count = 0;
	for (int i = 0; i < p->n; i++) {
		const struct sample *s = &p->s[i];
		if (strcmp(s->family, name))
			continue;
		if (!strcmp(s->name, bn)) {
			const char *le = label(s, "le");
			double v;
			if (!le || s->n_labels != 1 || parse_value(le, &v)) {
				snprintf(why, wcap, "%s: bucket without a numeric le", name);
				return -1;
			}
			if (seen_sum || seen_count || inf_c >= 0) {
				snprintf(why, wcap, "%s: bucket after _sum/_count/+Inf", name);
				return -1;
			}
			if (!(v > last_le)) {
				snprintf(why, wcap, "%s: le %s not ascending", name, le);
				return -1;
			}
			if (s->v < last_c || s->v != floor(s->v)) {
				snprintf(why, wcap, "%s: bucket counts not cumulative integers", name);
				return -1;
			}
			last_le = v;
			last_c = s->v;
			n_b++;
			if (isinf(v)) {
				if (strcmp(le, "+Inf")) {
					snprintf(why, wcap, "%s: infinite le spelt '%s'", name, le);
					return -1;
				}
				inf_c = s->v;
			}
		} else if (!strcmp(s->name, sn)) {
			seen_sum++;
			*sum = s->v;
		} else if (!strcmp(s->name, cn)) {
			seen_count++;
			*count = s->v;
		} else {
			snprintf(why, wcap, "%s: stray sample %s", name, s->name);
			return -1;
		}
	}
	if (inf_c < 0 || n_b < 2 || seen_sum != 1 || seen_count != 1) {
		snprintf(why, wcap, "%s: needs buckets ending in +Inf, one _sum, one _count", name);
		return -1;
	}
	if (*count != inf_c) {
		snprintf(why, wcap, "%s: _count %g != +Inf bucket %g", name, *count, inf_c);
		return -1;
	}
	return 0;
}

static double bucket(struct parsed *p, const char *name, const char *le)
{
	char bn[110];
	snprintf(bn, sizeof(bn), "%s_bucket", name);
	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->s[i].name, bn) && label(&p->s[i], "le") && !strcmp(label(&p->s[i], "le"), le))
			return p->s[i].v;
	return -1;
}

static double sample_v(struct parsed *p, const char *name, const char *lk, const char *lv, const char *lk2,
		       const char *lv2)
{
	for (int i = 0; i < p->n; i++) {
		const struct sample *s = &p->s[i];
		if (strcmp(s->name, name))
			continue;
		if (lk && (!label(s, lk) || strcmp(label(s, lk), lv)))
			continue;
		if (lk2 && (!label(s, lk2) || strcmp(label(s, lk2), lv2)))
			continue;
		return s->v;
	}
	return -1;
}

/* Everything the format and our schema require. */
static void check_all(struct parsed *p)
{
	static const char *fams[][2] = {
		{ "colony_requests_total", "counter" },  { "colony_tokens_total", "counter" },
		{ "colony_request_seconds", "histogram" }, { "colony_time_to_first_token_seconds", "histogram" },
		{ "colony_sessions_active", "gauge" },    { "colony_peers", "gauge" },
		{ "colony_failovers_total", "counter" },  { "colony_wire_bytes_total", "counter" },
	};
	CHECK_EQ_INT(p->nf, 8);
	for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
		struct family *f = fam_find(p, fams[i][0]);
		CHECK(f != NULL);
		if (!f)
			continue;
		CHECK(!strcmp(f->type, fams[i][1]));
		CHECK(f->has_help == 1 && f->has_type == 1);
		if (!strcmp(f->type, "counter")) {
			size_t n = strlen(f->name);
			CHECK(n > 6 && !strcmp(f->name + n - 6, "_total"));
		}
	}
	for (int i = 0; i < p->n; i++)
		CHECK(p->s[i].v >= 0 && !isnan(p->s[i].v));
	char why[200] = "";
	double c, s;
	if (check_hist(p, "colony_request_seconds", &c, &s, why, sizeof(why)) ||
	    check_hist(p, "colony_time_to_first_token_seconds", &c, &s, why, sizeof(why))) {
		fprintf(stderr, "  %s\n", why);
		CHECK(0);
	}
}

/* ---- tests */

static void test_empty_parses(void)
{
	metrics_t *m = metrics_new();
	REQUIRE(m);
	metrics_gauges_t g = { 0 };
	char *t = metrics_render(m, &g);
	REQUIRE(t);
	static struct parsed p;
	int r = parse(t, &p);
	if (r)
		fprintf(stderr, "  %s\n%s", p.err, t);
	REQUIRE(r == 0);
	check_all(&p);
	CHECK(sample_v(&p, "colony_request_seconds_count", NULL, NULL, NULL, NULL) == 0);
	CHECK(sample_v(&p, "colony_tokens_total", "direction", "in", NULL, NULL) == 0);
	free(t);
	metrics_free(m);
}

static void test_counts_and_buckets(void)
{
	metrics_t *m = metrics_new();
	REQUIRE(m);
	metrics_request(m, "/v1/completions", 200, 0.004);
	metrics_request(m, "/v1/completions", 200, 0.005);   /* on the bound: le="0.005" */
	metrics_request(m, "/v1/completions", 200, 0.0051);
	metrics_request(m, "/v1/completions", 400, 0.001);
	metrics_request(m, "/v1/chat/completions", 200, 500);   /* past every bound: +Inf only */
	metrics_request(m, "/weird\"label\n", 404, 0.02);        /* sanitised, still valid */
	metrics_request(m, "/v1/chat/completions", 0, 1.0);      /* client gone: status="none" */
	metrics_first_token(m, 0.0009);
	metrics_first_token(m, 0.3);
	metrics_tokens(m, 10, 3);
	metrics_tokens(m, 5, 7);
	metrics_gauges_t g = { .sessions_active = 3, .peers = 4, .failovers_total = 2, .wire_bytes_in = 1234,
			       .wire_bytes_out = 99 };
	char *t = metrics_render(m, &g);
	REQUIRE(t);
	static struct parsed p;
	int r = parse(t, &p);
	if (r)
		fprintf(stderr, "  %s\n%s", p.err, t);
	REQUIRE(r == 0);
	check_all(&p);
	const char *rt = "colony_requests_total";
	CHECK(sample_v(&p, rt, "endpoint", "/v1/completions", "status", "200") == 3);
	CHECK(sample_v(&p, rt, "endpoint", "/v1/completions", "status", "400") == 1);
	CHECK(sample_v(&p, rt, "endpoint", "/v1/chat/completions", "status", "200") == 1);
	CHECK(sample_v(&p, rt, "endpoint", "/v1/chat/completions", "status", "none") == 1);
	CHECK(sample_v(&p, rt, "endpoint", "/weird_label_", "status", "404") == 1);
	const char *rs = "colony_request_seconds";
	CHECK(bucket(&p, rs, "0.005") == 3);   /* 0.001, 0.004, 0.005 */
	CHECK(bucket(&p, rs, "0.01") == 4);
	CHECK(bucket(&p, rs, "0.025") == 5);
	CHECK(bucket(&p, rs, "1") == 6);
	CHECK(bucket(&p, rs, "120") == 6);
	CHECK(bucket(&p, rs, "+Inf") == 7);
	CHECK_NEAR(sample_v(&p, "colony_request_seconds_sum", NULL, NULL, NULL, NULL), 501.0351, 1e-9);
	const char *tf = "colony_time_to_first_token_seconds";
	CHECK(bucket(&p, tf, "0.001") == 1);
	CHECK(bucket(&p, tf, "0.25") == 1);
	CHECK(bucket(&p, tf, "0.5") == 2);
	CHECK(sample_v(&p, "colony_tokens_total", "direction", "in", NULL, NULL) == 15);
	CHECK(sample_v(&p, "colony_tokens_total", "direction", "out", NULL, NULL) == 10);
	CHECK(sample_v(&p, "colony_sessions_active", NULL, NULL, NULL, NULL) == 3);
	CHECK(sample_v(&p, "colony_peers", NULL, NULL, NULL, NULL) == 4);
	CHECK(sample_v(&p, "colony_failovers_total", NULL, NULL, NULL, NULL) == 2);
	CHECK(sample_v(&p, "colony_wire_bytes_total", "direction", "in", NULL, NULL) == 1234);
	CHECK(sample_v(&p, "colony_wire_bytes_total", "direction", "out", NULL, NULL) == 99);
	free(t);
	metrics_free(m);
}

/* The parser itself refuses what the format forbids (so the checks above
 * can fail). */
static void test_parser_refuses(void)
{
	static struct parsed p;
	static const char *bad[] = {
		"x_total 1\n",                                                        /* no HELP/TYPE */
		"# HELP x_total h\n# TYPE x_total counter\nx_total 1",                 /* no final newline */
		"# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"1} 1\n",        /* unterminated */
		"# HELP x_total h\n# TYPE x_total counter\nx_total{a=1} 1\n",          /* unquoted */
		"# HELP x_total h\n# TYPE x_total counter\nx_total one\n",             /* not a number */
		"# HELP 1x h\n# TYPE 1x counter\n1x 1\n",                              /* bad name */
		"# HELP x_total h\n# TYPE x_total counter\n# TYPE x_total counter\nx_total 1\n",
		"# HELP x_total h\n# TYPE x_total countr\nx_total 1\n",
		"# HELP x_total h\n# TYPE x_total counter\nx_total{a=\"\\q\"} 1\n",   /* bad escape */
		"# HELP a h\n# TYPE a gauge\na 1\n# HELP b h\n# TYPE b gauge\nb 1\na 2\n",  /* split family */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = parse(bad[i], &p);
		if (r == 0)
			fprintf(stderr, "  accepted bad input %zu\n", i);
		CHECK(r != 0);
	}
	/* and histogram rules */
	static const char *hb[] = {
		"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 2\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
		"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
		"# HELP h h\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
	};
	for (size_t i = 0; i < sizeof(hb) / sizeof(hb[0]); i++) {
		double c, s;
		char why[200];
		int r = parse(hb[i], &p);
		CHECK(r == 0);
		CHECK(check_hist(&p, "h", &c, &s, why, sizeof(why)) != 0);
	}
}

struct hammer {
	metrics_t *m;
	int id;
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	for (int i = 0; i < 20000; i++) {
		metrics_request(h->m, (i & 1) ? "/v1/completions" : "/v1/models", 200, (i % 7) * 0.01);
		metrics_first_token(h->m, 0.002);
		metrics_tokens(h->m, 1, 2);
		if (i % 1000 == 0) {
			metrics_gauges_t g = { 0 };
			free(metrics_render(h->m, &g));   /* renders race with writers */
		}
	}
	return NULL;
}

static void test_threads(void)
{
	metrics_t *m = metrics_new();
	REQUIRE(m);
	pthread_t th[8];
	struct hammer h[8];
	for (int i = 0; i < 8; i++) {
		h[i] = (struct hammer){ m, i };
		REQUIRE(pthread_create(&th[i], NULL, hammer_main, &h[i]) == 0);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	metrics_gauges_t g = { 0 };
	char *t = metrics_render(m, &g);
	REQUIRE(t);
	static struct parsed p;
	REQUIRE(parse(t, &p) == 0);
	check_all(&p);
	CHECK(sample_v(&p, "colony_requests_total", "endpoint", "/v1/completions", "status", "200") == 80000);
	CHECK(sample_v(&p, "colony_requests_total", "endpoint", "/v1/models", "status", "200") == 80000);
	CHECK(sample_v(&p, "colony_request_seconds_count", NULL, NULL, NULL, NULL) == 160000);
	CHECK(bucket(&p, "colony_time_to_first_token_seconds", "0.0025") == 160000);
	CHECK(sample_v(&p, "colony_tokens_total", "direction", "out", NULL, NULL) == 320000);
	free(t);
	metrics_free(m);
}

static void test_series_overflow(void)
{
	metrics_t *m = metrics_new();
	REQUIRE(m);
	for (int i = 0; i < 200; i++)
		metrics_request(m, "/x", 100 + i, 0.1);
	metrics_gauges_t g = { 0 };
	char *t = metrics_render(m, &g);
	REQUIRE(t);
	static struct parsed p;
	REQUIRE(parse(t, &p) == 0);
	check_all(&p);
	double total = 0;
	int n = 0;
	for (int i = 0; i < p.n; i++)
		if (!strcmp(p.s[i].name, "colony_requests_total")) {
			total += p.s[i].v;
			n++;
		}
	CHECK(total == 200);
	CHECK_EQ_INT(n, METRICS_MAX_SERIES);
	CHECK(sample_v(&p, "colony_requests_total", "endpoint", "other", "status", "none") == 200 - (METRICS_MAX_SERIES - 1));
	free(t);
	metrics_free(m);
}

TEST_MAIN(test_empty_parses, test_counts_and_buckets, test_parser_refuses, test_threads, test_series_overflow)
