/* http.c - the OpenAI-compatible gateway over libmicrohttpd (see http.h). */
#define _GNU_SOURCE
#include "api/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <sodium.h>

#include "api/assets.h"
#include "api/gwpay.h"
#include "api/metrics.h"
#include "api/oai.h"
#include "api/skill_pay.h"
#include "api/status.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/sbuf.h"
#include "infer/chat.h"
#include "model/manifest.h"
#include "model/model.h"
#include "model/vocab.h"

#define WAIT_SLICE_MS 50        /* between checks of the client's socket */
#define SSE_BLOCK 4096

struct http_gw {
	http_cfg_t cfg;
	struct MHD_Daemon *mhd;
	char url[192];
	int port;
	char model_name[256];
	char model_hex[65];
	uint8_t model_id[32];
	vocab_t *voc;
	model_t *model;
	pool_t *pool;
	chat_tmpl_t tmpl;
	int32_t *eog;               /* end-of-generation token ids */
	int n_eog;
	int n_ctx;
	int64_t created;
	swarm_client_t *client;
	dht_node_t *dht;            /* the client's: skill records and offers */
	spay_t *pay;                /* paid skill calls, or NULL (skill_pay.h) */
	gwpay_t *gwpay;             /* paid shard sessions, or NULL (gwpay.h) */
	int stopping;               /* atomic */
	http_stats_t st;            /* atomics */
	metrics_t *metrics;
	int64_t started_ms;
	/* for /api/status, under mu: the generations running, the last ones ended */
	pthread_mutex_t mu;
	int mu_init;
	struct gen *gens;
	http_recent_t recent[HTTP_RECENT_MAX];
	int n_recent, recent_next;
};

#define STAT_ADD(g, f, v) __atomic_add_fetch(&(g)->st.f, (uint64_t)(v), __ATOMIC_RELAXED)
#define STAT_SUB(g, f, v) __atomic_sub_fetch(&(g)->st.f, (uint64_t)(v), __ATOMIC_RELAXED)

enum endpoint { EP_NONE = 0, EP_CHAT, EP_COMPLETION, EP_MODELS, EP_STATUS, EP_METRICS, EP_ASSET, EP_SKILLS, EP_PAY };

/* Per request (con_cls): the body as it arrives, and what /metrics counts. */
struct hreq {
	enum endpoint ep;
	const char *label;          /* static: the endpoint label in /metrics */
	double t0;                  /* arrival */
	int status;                 /* sent, 0 until then */
	char *body;
	size_t n, cap;
	int too_big;
};

/* One generation, from the job to the text the client sees. */
struct gen {
	http_gw_t *gw;
	int fd;                     /* the client's socket, polled for hangups */
	enum oai_kind kind;
	int stream, include_usage;
	char model[256];
	char id[48];
	int64_t created;
	swarm_job_t *job;
	int n_prompt, max_tokens;
	int completion_tokens;
	const char *finish;         /* "stop" / "length" once known */
	int ended;                  /* the job is done and every token was read */
	int failed;                 /* the job failed: err holds why */
	oai_err_t err;
	vocab_decoder_t dec;
	chat_stop_t stop;
	char *piece;                /* decoder output */
	size_t piece_cap;
	char *shown;                /* stop filter output */
	/* the text so far (whole responses) */
	char *text;
	size_t text_len, text_cap;
	/* SSE bytes waiting to be handed to MHD */
	char *out;
	size_t out_len, out_off, out_cap;
	int sent_role, sent_done, counted_end;
	double t_start;
	struct MHD_Response *resp;  /* streams: for the trailer */
	struct gen *prev, *next;    /* the gateway's list of running generations (under gw->mu) */
	int listed;
	uint64_t first_us;          /* request to first token; atomic (read by /api/status) */
	spay_call_t *pay;           /* a paid skill call: credit, receipts, redeem at the end */
	int pay_waited;             /* ms waited for a voucher since the last one */
	int pay_final;              /* the last receipt is out: [DONE] once it is paid */
};

void http_cfg_default(http_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->listen = "127.0.0.1:0";
	swarm_client_cfg_default(&c->client);
}

/* ---- small helpers */

static void count_status(http_gw_t *g, unsigned status)
{
	STAT_ADD(g, requests, 1);
	if (status < 300)
		STAT_ADD(g, status_2xx, 1);
	else if (status < 500)
		STAT_ADD(g, status_4xx, 1);
	else
		STAT_ADD(g, status_5xx, 1);
	switch (status) {
	case 400: STAT_ADD(g, status_400, 1); break;
	case 401: STAT_ADD(g, status_401, 1); break;
	case 404: STAT_ADD(g, status_404, 1); break;
	case 413: STAT_ADD(g, status_413, 1); break;
	case 429: STAT_ADD(g, status_429, 1); break;
	case 503: STAT_ADD(g, status_503, 1); break;
	default: break;
	}
}

static enum MHD_Result send_body(http_gw_t *g, struct MHD_Connection *c, struct hreq *h, unsigned status, char *json,
				 const char *route, double tps)
{
	if (!json) {
		static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
		json = strdup(oom);
		status = 503;
		if (!json)
			return MHD_NO;
	}
	size_t len = strlen(json);
	json[len] = '\n';   /* replaces the NUL: a newline-terminated body, as curl users like */
	struct MHD_Response *r = MHD_create_response_from_buffer(len + 1, json, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(json);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", "application/json");
	if (status == 401)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
	if (route && route[0])
		MHD_add_response_header(r, "X-Colony-Route", route);
	if (tps >= 0) {
		char b[32];
		snprintf(b, sizeof(b), "%.2f", tps);
		MHD_add_response_header(r, "X-Colony-Tokens-Per-Second", b);
	}
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	count_status(g, status);
	if (h)
		h->status = (int)status;
	return ret;
}

static enum MHD_Result send_error(http_gw_t *g, struct MHD_Connection *c, struct hreq *h, const oai_err_t *err)
{
	return send_body(g, c, h, (unsigned)err->status, oai_error_json(err), NULL, -1);
}

static enum MHD_Result error_reply(http_gw_t *g, struct MHD_Connection *c, struct hreq *h, int status, const char *type,
				   const char *param, const char *code, const char *msg)
{
	oai_err_t err;
	oai_err_set(&err, status, type, param, code, "%s", msg);
	return send_error(g, c, h, &err);
}

static int client_gone(int fd)
{
	if (fd < 0)
		return 0;
	struct pollfd p = { .fd = fd, .events = POLLRDHUP };
	if (poll(&p, 1, 0) <= 0)
		return 0;
	return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static int authorized(http_gw_t *g, struct MHD_Connection *c)
{
	const char *key = g->cfg.api_key;
	if (!key || !*key)
		return 1;
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!h || strncasecmp(h, "Bearer ", 7))
		return 0;
	h += 7;
	while (*h == ' ')
		h++;
	size_t a = strlen(h), b = strlen(key);
	return a == b && sodium_memcmp(h, key, a) == 0;
}

/* ---- /v1/models */

static json_t *model_obj(http_gw_t *g);

static char *models_json(http_gw_t *g, int one)
{
	json_t *m = model_obj(g);
	if (one) {
		char *s = m ? json_dumps(m, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
		json_decref(m);
		return s;
	}
	json_t *o = json_pack("{s:s,s:[o]}", "object", "list", "data", m);
	char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
	json_decref(o);
	return s;
}

static json_t *model_obj(http_gw_t *g)
{
	swarm_view_t v;
	swarm_client_view(g->client, &v);
	int avail = v.n_layer > 0 && v.layers_covered == v.n_layer;
	return json_pack("{s:s,s:s,s:I,s:s,s:b,s:s,s:i,s:i,s:i,s:i,s:i,s:s}", "id", g->model_name, "object", "model",
			 "created", (json_int_t)g->created, "owned_by", "colony", "available", avail, "status",
			 avail ? "available" : "unavailable", "layers", v.n_layer, "layers_covered", v.layers_covered,
			 "replicas", v.min_replicas, "servers", v.servers_ready, "context_length", g->n_ctx,
			 "colony_model_id", g->model_hex);
}

/* ---- generation */

static void gen_list(struct gen *x)
{
	http_gw_t *g = x->gw;
	pthread_mutex_lock(&g->mu);
	x->prev = NULL;
	x->next = g->gens;
	if (g->gens)
		g->gens->prev = x;
	g->gens = x;
	x->listed = 1;
	pthread_mutex_unlock(&g->mu);
}

/* A generation ended: its figures join the recent ones (for latencies). */
static void gen_record(struct gen *x, const char *outcome, const swarm_result_t *res)
{
	http_gw_t *g = x->gw;
	http_recent_t r;
	memset(&r, 0, sizeof(r));
	snprintf(r.id, sizeof(r.id), "%s", x->id);
	r.outcome = outcome;
	r.prompt_tokens = x->n_prompt;
	r.completion_tokens = x->completion_tokens;
	r.seconds = clock_sec() - x->t_start;
	if (res) {
		r.ttft_s = res->n_tokens > 0 ? res->seconds_prompt : -1;
		r.tokens_per_second = res->seconds_gen > 0 && res->n_tokens > 1 ? (res->n_tokens - 1) / res->seconds_gen : -1;
	} else {
		/* ended early (client gone): what the gateway itself saw */
		uint64_t fu = __atomic_load_n(&x->first_us, __ATOMIC_RELAXED);
		r.ttft_s = fu ? (double)(fu - 1) / 1e6 : -1;
		double since = r.seconds - r.ttft_s;
		r.tokens_per_second = fu && x->completion_tokens > 1 && since > 0 ? (x->completion_tokens - 1) / since : -1;
	}
	r.failovers = res ? res->stats.failovers : 0;
	r.end_ms = (int64_t)dht_now_ms();
	pthread_mutex_lock(&g->mu);
	g->recent[g->recent_next] = r;
	g->recent_next = (g->recent_next + 1) % HTTP_RECENT_MAX;
	if (g->n_recent < HTTP_RECENT_MAX)
		g->n_recent++;
	pthread_mutex_unlock(&g->mu);
	if (res && res->n_tokens > 0)
		metrics_first_token(g->metrics, res->seconds_prompt);
}

static void gen_free(struct gen *x)
{
	if (!x)
		return;
	if (x->listed) {
		http_gw_t *g = x->gw;
		pthread_mutex_lock(&g->mu);
		if (x->prev)
			x->prev->next = x->next;
		else
			g->gens = x->next;
		if (x->next)
			x->next->prev = x->prev;
		x->listed = 0;
		pthread_mutex_unlock(&g->mu);
	}
	if (x->job) {
		enum swarm_job_state st = SWARM_JOB_DONE;
		(void)swarm_job_poll(x->job, 0, NULL, 0, &st);
		if (st != SWARM_JOB_DONE)
			STAT_ADD(x->gw, cancelled, 1);
		if (!x->counted_end) {
			/* tokens a client received before it left count as generated */
			STAT_ADD(x->gw, tokens_out, (uint64_t)x->completion_tokens);
			metrics_tokens(x->gw->metrics, 0, (uint64_t)x->completion_tokens);
			gen_record(x, x->failed ? "failed" : "cancelled", NULL);
		}
		if (x->gw->gwpay)   /* its end and its channels' closes on gwpay's thread */
			gwpay_job_done(x->gw->gwpay, x->job);
		else
			swarm_job_free(x->job);   /* cancels a running job: its sessions are closed */
	}
	if (!x->counted_end && x->job)
		STAT_SUB(x->gw, active, 1);
	spay_call_close(x->pay);   /* redeems the channel's best voucher */
	free(x->piece);
	free(x->shown);
	free(x->text);
	free(x->out);
	free(x);
}

/* Visible text: whole responses collect it, streams send it as a chunk. */
static int emit(struct gen *x, const char *s, size_t n)
{
	if (!n)
		return 0;
	if (!x->stream)
		return sbuf_append(&x->text, &x->text_len, &x->text_cap, s, n);
	char *j = oai_chunk_json(x->kind, x->id, x->created, x->model, s, n, !x->sent_role, NULL, x->include_usage, NULL);
	x->sent_role = 1;
	if (!j)
		return ERR_NOMEM;
	int r = sbuf_append(&x->out, &x->out_len, &x->out_cap, "data: ", 6);
	if (!r)
		r = sbuf_append(&x->out, &x->out_len, &x->out_cap, j, strlen(j));
	if (!r)
		r = sbuf_append(&x->out, &x->out_len, &x->out_cap, "\n\n", 2);
	free(j);
	return r;
}

static int emit_filtered(struct gen *x, const char *s, size_t n)
{
	size_t k = chat_stop_push(&x->stop, s, n, x->shown);
	int r = emit(x, x->shown, k);
	if (x->stop.hit && !x->finish) {
		x->finish = "stop";
		swarm_job_cancel(x->job);
	}
	return r;
}

/* A paid call: the receipt of the tokens delivered, when one is due. */
static int pay_receipt(struct gen *x, int final)
{
	if (!x->pay || !spay_call_receipt_due(x->pay, (uint64_t)x->completion_tokens, final))
		return 0;
	char line[400];
	size_t k = spay_call_receipt(x->pay, (uint64_t)x->completion_tokens, line, sizeof(line));
	return k ? sbuf_append(&x->out, &x->out_len, &x->out_cap, line, k) : 0;
}

static int is_eog(const http_gw_t *g, int32_t t)
{
	for (int i = 0; i < g->n_eog; i++)
		if (g->eog[i] == t)
			return 1;
	return 0;
}

static void map_failure(struct gen *x, int rc, const char *msg)
{
	x->failed = 1;
	if (rc == ERR_NOTFOUND)
		oai_err_set(&x->err, 503, "server_error", NULL, "no_route", "no route through the swarm: %s", msg);
	else if (rc == ERR_FULL)
		oai_err_set(&x->err, 503, "server_error", NULL, "no_capacity", "the swarm has no capacity: %s", msg);
	else if (rc == ERR_RANGE || rc == ERR_INVAL)
		oai_err_set(&x->err, 400, "invalid_request_error", NULL, NULL, "%s", msg);
	else
		oai_err_set(&x->err, 503, "server_error", NULL, "swarm_error", "the generation failed: %s", msg);
}

/* One round: waits up to wait_ms for tokens, turns them into text. Sets
 * x->ended when the job is done and read. 0, or ERR_NOMEM. */
static int gen_step(struct gen *x, int wait_ms)
{
	http_gw_t *g = x->gw;
	int32_t toks[64];
	enum swarm_job_state st;
	int cap = 64;
	if (x->pay && !x->finish) {
		/* bounded credit: no token beyond a chunk past the last voucher */
		int broke = 0;
		uint64_t cr = spay_call_credit(x->pay, (uint64_t)x->completion_tokens, &broke);
		if (cr > 0) {
			x->pay_waited = 0;
			cap = cr < 64 ? (int)cr : 64;
		} else {
			if (pay_receipt(x, 1))   /* what asks for the voucher */
				return ERR_NOMEM;
			if (!broke && spay_call_wait(x->pay, wait_ms)) {
				x->pay_waited = 0;
				return 0;
			}
			x->pay_waited += wait_ms;
			if (!broke && x->pay_waited < SPAY_WAIT_MS)
				return 0;
			x->finish = "payment_required";
			swarm_job_cancel(x->job);
		}
	}
	int n = swarm_job_poll(x->job, wait_ms, toks, cap, &st);
	if (n > 0 && !__atomic_load_n(&x->first_us, __ATOMIC_RELAXED))
		__atomic_store_n(&x->first_us, (uint64_t)((clock_sec() - x->t_start) * 1e6) + 1, __ATOMIC_RELAXED);
	for (int i = 0; i < n; i++) {
		if (x->finish)
			break;   /* a stop was hit: the rest is discarded */
		if (is_eog(g, toks[i])) {
			x->finish = "stop";
			break;
		}
		x->completion_tokens++;
		size_t k = 0;
		if (vocab_decoder_push(&x->dec, toks[i], x->piece, x->piece_cap, &k) == 0 && k) {
			if (emit_filtered(x, x->piece, k))
				return ERR_NOMEM;
		}
	}
	if (pay_receipt(x, 0))
		return ERR_NOMEM;
	if (st != SWARM_JOB_DONE)
		return 0;
	x->ended = 1;
	swarm_result_t res;
	err_msg_t e = { { 0 } };
	int rc = swarm_job_result(x->job, &res, &e);
	if (!x->counted_end) {
		x->counted_end = 1;
		STAT_SUB(g, active, 1);
		STAT_ADD(g, tokens_out, (uint64_t)x->completion_tokens);
		STAT_ADD(g, first_token_us, (uint64_t)(res.seconds_prompt * 1e6));
		STAT_ADD(g, gen_us, (uint64_t)(res.seconds_gen * 1e6));
		metrics_tokens(g->metrics, 0, (uint64_t)x->completion_tokens);
		gen_record(x, rc && !x->finish ? "failed" : "ok", &res);
	}
	if (rc && !x->finish) {
		map_failure(x, rc, e.msg);
		return 0;
	}
	if (!x->finish) {
		/* the end of the text: what the decoder and the filter held back */
		size_t k = 0;
		if (vocab_decoder_flush(&x->dec, x->piece, x->piece_cap, &k) == 0 && k && emit_filtered(x, x->piece, k))
			return ERR_NOMEM;
	}
	if (!x->stop.hit) {
		size_t k = chat_stop_flush(&x->stop, x->shown);
		if (emit(x, x->shown, k))
			return ERR_NOMEM;
	}
	if (!x->finish)
		x->finish = x->completion_tokens >= x->max_tokens ? "length" : "stop";
	return 0;
}

static double job_tps(struct gen *x, char *route, size_t cap)
{
	swarm_result_t res;
	err_msg_t e;
	route[0] = 0;
	if (swarm_job_result(x->job, &res, &e) != 0 && !res.n_tokens)
		return -1;
	snprintf(route, cap, "%s", res.route);
	return res.seconds_gen > 0 && res.n_tokens > 1 ? (res.n_tokens - 1) / res.seconds_gen : 0;
}

/* ---- streaming */

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct gen *x = cls;
	http_gw_t *g = x->gw;
	for (;;) {
		if (x->out_off < x->out_len) {
			size_t k = x->out_len - x->out_off;
			if (k > max)
				k = max;
			memcpy(buf, x->out + x->out_off, k);
			x->out_off += k;
			return (ssize_t)k;
		}
		x->out_off = x->out_len = 0;
		if (x->sent_done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (__atomic_load_n(&g->stopping, __ATOMIC_RELAXED))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (client_gone(x->fd))
			return MHD_CONTENT_READER_END_WITH_ERROR;   /* gen_free cancels the job */
		if (!x->ended && gen_step(x, WAIT_SLICE_MS))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (!x->ended)
			continue;
		if (x->pay_final) {
			/* a paid call's last receipt is out: [DONE] once it is paid (or not, in time) */
			if (!spay_call_covered(x->pay, (uint64_t)x->completion_tokens) && x->pay_waited < SPAY_WAIT_MS) {
				if (!spay_call_wait(x->pay, WAIT_SLICE_MS))
					x->pay_waited += WAIT_SLICE_MS;
				continue;
			}
			if (sbuf_append(&x->out, &x->out_len, &x->out_cap, "data: [DONE]\n\n", 14))
				return MHD_CONTENT_READER_END_WITH_ERROR;
			x->sent_done = 1;
			continue;
		}
		/* the end: an error event, or the last chunk, the usage, [DONE] */
		char *j;
		if (x->failed) {
			j = oai_error_json(&x->err);
		} else {
			j = oai_chunk_json(x->kind, x->id, x->created, x->model, x->kind == OAI_CHAT ? NULL : "", 0,
					   !x->sent_role, x->finish, x->include_usage, NULL);
		}
		int r = j ? 0 : ERR_NOMEM;
		if (!r)
			r = sbuf_append(&x->out, &x->out_len, &x->out_cap, "data: ", 6);
		if (!r)
			r = sbuf_append(&x->out, &x->out_len, &x->out_cap, j, strlen(j));
		if (!r)
			r = sbuf_append(&x->out, &x->out_len, &x->out_cap, "\n\n", 2);
		free(j);
		if (!r && x->include_usage && !x->failed) {
			oai_usage_t u = { x->n_prompt, x->completion_tokens };
			j = oai_chunk_json(x->kind, x->id, x->created, x->model, NULL, 0, 0, NULL, 1, &u);
			r = j ? sbuf_append(&x->out, &x->out_len, &x->out_cap, "data: ", 6) : ERR_NOMEM;
			if (!r)
				r = sbuf_append(&x->out, &x->out_len, &x->out_cap, j, strlen(j));
			if (!r)
				r = sbuf_append(&x->out, &x->out_len, &x->out_cap, "\n\n", 2);
			free(j);
		}
		if (!r && x->pay) {
			r = pay_receipt(x, 1);
			x->pay_final = 1;
			/* a buyer that stopped paying is not waited for again */
			x->pay_waited = x->finish && !strcmp(x->finish, "payment_required") ? SPAY_WAIT_MS : 0;
		} else if (!r) {
			r = sbuf_append(&x->out, &x->out_len, &x->out_cap, "data: [DONE]\n\n", 14);
		}
		if (r)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		char route[512], tps[32];
		double t = job_tps(x, route, sizeof(route));
		if (t >= 0) {
			snprintf(tps, sizeof(tps), "%.2f", t);
			MHD_add_response_footer(x->resp, "X-Colony-Tokens-Per-Second", tps);
		}
		x->sent_done = !x->pay;
	}
}

static void sse_free(void *cls) { gen_free(cls); }

/* ---- skills */

/* The skill's system prompt, then the caller's messages (a system message of
 * the caller's own goes after the skill's, in the same turn). */
static int skill_tokenize(http_gw_t *g, const skill_def_t *sk, const oai_req_t *rq, int32_t **toks, size_t *nt,
			  err_msg_t *e)
{
	chat_msg_t *m = malloc(sizeof(*m) * (size_t)(rq->n_msgs + 1));
	char *joined = NULL;
	if (!m)
		return err_set(e, ERR_NOMEM, "out of memory");
	int n = 0, first = 0;
	m[n++] = (chat_msg_t){ CHAT_SYSTEM, sk->prompt, sk->prompt_len };
	if (rq->n_msgs > 0 && rq->msgs[0].role == CHAT_SYSTEM) {
		size_t l = sk->prompt_len + 2 + rq->msgs[0].len;
		if (!(joined = malloc(l + 1))) {
			free(m);
			return err_set(e, ERR_NOMEM, "out of memory");
		}
		memcpy(joined, sk->prompt, sk->prompt_len);
		memcpy(joined + sk->prompt_len, "\n\n", 2);
		memcpy(joined + sk->prompt_len + 2, rq->msgs[0].text, rq->msgs[0].len);
		m[0].text = joined;
		m[0].len = l;
		first = 1;
	}
	for (int i = first; i < rq->n_msgs; i++)
		m[n++] = rq->msgs[i];
	int rc = chat_tokenize(&g->tmpl, g->voc, m, n, toks, nt, e);
	free(joined);
	free(m);
	return rc;
}

struct relay {
	http_gw_t *gw;
	skill_fwd_t *f;
	int fd;                     /* our client's socket, polled for hangups */
};

static ssize_t relay_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct relay *r = cls;
	(void)pos;
	for (;;) {
		if (skill_fwd_done(r->f))
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (__atomic_load_n(&r->gw->stopping, __ATOMIC_RELAXED) || client_gone(r->fd))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		size_t n = 0;
		err_msg_t e;
		if (skill_fwd_read(r->f, buf, max, WAIT_SLICE_MS, &n, &e)) {
			log_warn("http", "skill relay: %s", e.msg);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (n)
			return (ssize_t)n;
	}
}

static void relay_free(void *cls)
{
	struct relay *r = cls;
	skill_fwd_free(r->f);
	free(r);
}

static int paid_gone(void *ud) { return client_gone(*(const int *)ud); }

/* A priced skill relayed from here, paid through skill_pay.h: 1 when
 * answered (*ret), 0 when the provider was unreachable (*e: try another). */
static int skill_relay_paid(http_gw_t *g, struct MHD_Connection *c, struct hreq *h, const oai_req_t *rq,
			    const ann_t *offer, int fd, enum MHD_Result *ret, err_msg_t *e)
{
	oai_err_t err;
	spay_relay_t *r = NULL;
	struct MHD_Response *resp;
	if (spay_relay_open(g->pay, offer, "/v1/chat/completions", h->body ? h->body : "", h->n, rq->stream,
			    rq->include_usage, rq->max_tokens, paid_gone, &fd, &r, &err)) {
		if (!strcmp(err.code, "skill_unreachable"))
			return err_set(e, ERR_IO, "%s", err.message), 0;
	} else if (!rq->stream || spay_relay_status(r) != 200) {
		/* whole: read to the end, then answer */
		int st = 0, rc;
		char *body = NULL;
		rc = spay_relay_whole(r, &st, &body, &err);
		spay_relay_free(r);
		if (!rc)
			return *ret = send_body(g, c, h, (unsigned)st, body, NULL, -1), 1;
	} else if (!(resp = spay_relay_response(r, fd, &g->stopping, SSE_BLOCK, offer->node_id))) {
		oai_err_set(&err, 503, "server_error", NULL, NULL, "out of memory");
	} else {
		*ret = MHD_queue_response(c, 200, resp);
		MHD_destroy_response(resp);
		count_status(g, 200);
		h->status = 200;
		return 1;
	}
	*ret = err.status == 499 ? MHD_NO : send_error(g, c, h, &err);
	return 1;
}

/* A skill this gateway does not offer: the call goes as it is to a gateway
 * that does, and its answer (whole or streamed) comes back as it arrives. */
static enum MHD_Result skill_relay(http_gw_t *g, struct MHD_Connection *c, struct hreq *h, const char *name,
				  const oai_req_t *rq)
{
	oai_err_t err;
	/* a relayed call is never relayed again: no loops between gateways */
	if (MHD_lookup_connection_value(c, MHD_HEADER_KIND, SKILL_FWD_HEADER)) {
		oai_err_set(&err, 404, "invalid_request_error", "model", "model_not_found",
			    "The skill '%.100s' is not offered by this gateway", name);
		return send_error(g, c, h, &err);
	}
	ann_t offers[8];
	size_t n = skill_offers(g->dht, name, 1500, offers, 8);
	if (n > 8)
		n = 8;
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	int fd = ci ? ci->connect_fd : -1;
	skill_fwd_t *f = NULL;
	err_msg_t e = { { 0 } };
	const ann_t *used = NULL;
	for (size_t i = 0; i < n && !f; i++) {
		/* our own record (from an earlier run of this node) would point back here */
		if (g->dht && !memcmp(offers[i].node_id, dht_node_id(g->dht), ANN_IDLEN))
			continue;
		/* a priced skill is paid from a gateway with a wallet (skill_pay.h) */
		enum MHD_Result ret;
		if (g->pay && (offers[i].fee_call > 0 || offers[i].price_out > 0) && h->ep == EP_CHAT) {
			if (skill_relay_paid(g, c, h, rq, &offers[i], fd, &ret, &e))
				return ret;
			log_info("http", "skill '%s': %s", name, e.msg);
			continue;
		}
		if (skill_fwd_open(&offers[i].addrs[0], h->ep == EP_CHAT ? "/v1/chat/completions" : "/v1/completions",
				   h->body ? h->body : "", h->n, 3000, &f, &e) == 0)
			used = &offers[i];
		else
			log_info("http", "skill '%s': %s", name, e.msg);
	}
	if (!used) {
		if (n == 0) {
			oai_err_set(&err, 404, "invalid_request_error", "model", "model_not_found",
				    "No node in the network offers the skill '%.100s' (GET /v1/skills lists them)", name);
			return send_error(g, c, h, &err);
		}
		return error_reply(g, c, h, 503, "server_error", NULL, "skill_unreachable", e.msg);
	}
	for (int ready = 0; !ready;) {
		if (skill_fwd_head(f, WAIT_SLICE_MS, &ready, &e)) {
			skill_fwd_free(f);
			return error_reply(g, c, h, 503, "server_error", NULL, "skill_unreachable", e.msg);
		}
		if (!ready && (client_gone(fd) || __atomic_load_n(&g->stopping, __ATOMIC_RELAXED))) {
			skill_fwd_free(f);
			return MHD_NO;
		}
	}
	struct relay *r = calloc(1, sizeof(*r));
	struct MHD_Response *resp = r ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, relay_reader, r,
									  relay_free) : NULL;
	if (!resp) {
		free(r);
		skill_fwd_free(f);
		return error_reply(g, c, h, 503, "server_error", NULL, NULL, "out of memory");
	}
	r->gw = g;
	r->f = f;
	r->fd = fd;
	char provider[2 * ANN_IDLEN + 1];
	sodium_bin2hex(provider, sizeof(provider), used->node_id, ANN_IDLEN);
	MHD_add_response_header(resp, "Content-Type", skill_fwd_content_type(f));
	MHD_add_response_header(resp, "X-Colony-Skill-Provider", provider);
	unsigned status = (unsigned)skill_fwd_status(f);
	enum MHD_Result ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	count_status(g, status);
	h->status = (int)status;
	return ret;
}

/* ---- the generation endpoints */

static void make_id(char *out, size_t cap, const char *prefix)
{
	uint8_t r[12];
	randombytes_buf(r, sizeof(r));
	char hex[25];
	sodium_bin2hex(hex, sizeof(hex), r, sizeof(r));
	snprintf(out, cap, "%s%s", prefix, hex);
}

static enum MHD_Result generate(http_gw_t *g, struct MHD_Connection *c, struct hreq *h)
{
	enum oai_kind kind = h->ep == EP_CHAT ? OAI_CHAT : OAI_COMPLETION;
	oai_req_t rq;
	oai_err_t err;
	if (oai_req_parse(h->body, h->n, kind, &rq, &err))
		return send_error(g, c, h, &err);
	enum MHD_Result ret;
	int32_t *toks = NULL;
	size_t nt = 0;
	err_msg_t e = { { 0 } };
	struct gen *x = NULL;
	const skill_def_t *sk = NULL;
	const char *pay_ch = NULL, *pay_b = NULL, *pay_v = NULL;
	int paid = 0;
	if (!strncmp(rq.model, SKILL_PREFIX, strlen(SKILL_PREFIX))) {
		const char *name = rq.model + strlen(SKILL_PREFIX);
		for (int i = 0; i < g->cfg.n_skills && !sk; i++)
			if (!strcmp(g->cfg.skills[i].name, name))
				sk = &g->cfg.skills[i];
		if (!sk) {
			ret = skill_relay(g, c, h, name, &rq);
			goto out;
		}
		if (kind != OAI_CHAT) {
			ret = error_reply(g, c, h, 400, "invalid_request_error", "model", NULL,
					  "skills are called through /v1/chat/completions");
			goto out;
		}
		if (g->pay && spay_priced(sk)) {
			pay_ch = MHD_lookup_connection_value(c, MHD_HEADER_KIND, SPAY_HDR_CHANNEL);
			pay_b = MHD_lookup_connection_value(c, MHD_HEADER_KIND, SPAY_HDR_BUYER);
			pay_v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, SPAY_HDR_VOUCHER);
			paid = 1;
			if (!pay_ch && !pay_b && !pay_v) {
				char m[200];
				snprintf(m, sizeof(m), "the skill '%s' is paid: reserve a channel to the wallet below at the "
					 "ledger and send %s, %s and %s", sk->name, SPAY_HDR_CHANNEL, SPAY_HDR_BUYER,
					 SPAY_HDR_VOUCHER);
				ret = send_body(g, c, h, 402, spay_terms_json(g->pay, sk, m), NULL, -1);
				goto out;
			}
		}
	} else if (strcmp(rq.model, g->model_name) && strcmp(rq.model, g->model_hex)) {
		oai_err_set(&err, 404, "invalid_request_error", "model", "model_not_found",
			    "The model '%.200s' does not exist here (this gateway serves '%s')", rq.model, g->model_name);
		ret = send_error(g, c, h, &err);
		goto out;
	}
	/* prompt tokens: the chat template, or the prompt as `colony run` tokenizes it */
	if (kind == OAI_CHAT) {
		int rc = sk ? skill_tokenize(g, sk, &rq, &toks, &nt, &e)
			    : chat_tokenize(&g->tmpl, g->voc, rq.msgs, rq.n_msgs, &toks, &nt, &e);
		if (rc) {
			ret = error_reply(g, c, h, 400, "invalid_request_error", "messages", NULL, e.msg);
			goto out;
		}
	} else if (rq.prompt_toks) {
		int nv = vocab_n_tokens(g->voc);
		for (int i = 0; i < rq.n_prompt_toks; i++)
			if (rq.prompt_toks[i] >= nv) {
				oai_err_set(&err, 400, "invalid_request_error", "prompt", NULL,
					    "prompt token %d at %d is outside the vocabulary (%d tokens)", rq.prompt_toks[i], i, nv);
				ret = send_error(g, c, h, &err);
				goto out;
			}
		toks = rq.prompt_toks;
		nt = (size_t)rq.n_prompt_toks;
		rq.prompt_toks = NULL;
	} else {
		size_t cap = rq.prompt_len + 16;
		toks = malloc(sizeof(int32_t) * cap);
		if (!toks || vocab_tokenize(g->voc, rq.prompt, rq.prompt_len, 1, 0, toks, cap, &nt) != 0) {
			ret = error_reply(g, c, h, 503, "server_error", NULL, NULL, "tokenizing the prompt failed");
			goto out;
		}
	}
	if (nt == 0) {
		ret = error_reply(g, c, h, 400, "invalid_request_error", kind == OAI_CHAT ? "messages" : "prompt", NULL,
				  "the prompt is empty and the model adds no BOS token");
		goto out;
	}
	if ((int64_t)nt >= g->n_ctx) {
		oai_err_set(&err, 400, "invalid_request_error", kind == OAI_CHAT ? "messages" : "prompt",
			    "context_length_exceeded", "the prompt has %zu tokens; this model's context is %d", nt, g->n_ctx);
		ret = send_error(g, c, h, &err);
		goto out;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		ret = error_reply(g, c, h, 503, "server_error", NULL, NULL, "out of memory");
		goto out;
	}
	x->gw = g;
	x->kind = kind;
	x->stream = rq.stream;
	x->include_usage = rq.include_usage;
	x->n_prompt = (int)nt;
	int room = g->n_ctx - (int)nt;
	x->max_tokens = rq.max_tokens > 0 && rq.max_tokens < room ? (int)rq.max_tokens : room;
	x->created = (int64_t)time(NULL);
	x->t_start = clock_sec();
	snprintf(x->model, sizeof(x->model), "%s", sk ? rq.model : g->model_name);
	make_id(x->id, sizeof(x->id), kind == OAI_CHAT ? "chatcmpl-" : "cmpl-");
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	x->fd = ci ? ci->connect_fd : -1;
	vocab_decoder_init(&x->dec, g->voc, 0);
	x->piece_cap = VOCAB_DECODER_OUT_MAX(vocab_max_piece_len(g->voc));
	x->piece = malloc(x->piece_cap);
	x->shown = malloc(x->piece_cap + CHAT_STOP_MAX_LEN);
	chat_stop_init(&x->stop);
	for (int i = 0; i < rq.n_stop; i++)
		if (chat_stop_add(&x->stop, rq.stop[i], rq.stop_len[i]) != 0)
			log_debug("http", "stop string not kept");
	if (kind == OAI_CHAT) {
		const char *st[CHAT_MAX_STOP_TEXTS];
		int ns = chat_stop_texts(&g->tmpl, st);
		for (int i = 0; i < ns; i++)
			if (chat_stop_add(&x->stop, st[i], strlen(st[i])) != 0)
				log_debug("http", "template stop not kept");
	}
	if (!x->piece || !x->shown) {
		ret = error_reply(g, c, h, 503, "server_error", NULL, NULL, "out of memory");
		goto out;
	}
	swarm_req_t sr;
	memset(&sr, 0, sizeof(sr));
	sr.prompt = toks;
	sr.n_prompt = (int)nt;
	sr.n_predict = x->max_tokens;
	sr.sp = smp_params_default();
	sr.sp.temp = (float)rq.temperature;
	sr.sp.top_k = 0;
	sr.sp.top_p = (float)rq.top_p;
	sr.sp.min_p = 0;
	sr.sp.repeat_penalty = 1.0f;
	sr.sp.freq_penalty = (float)rq.frequency_penalty;
	sr.sp.presence_penalty = (float)rq.presence_penalty;
	sr.sp.repeat_last_n = rq.frequency_penalty != 0 || rq.presence_penalty != 0 ? 64 : 0;
	if (rq.has_seed)
		sr.sp.seed = rq.seed;
	else
		randombytes_buf(&sr.sp.seed, sizeof(sr.sp.seed));
	sr.stop_tokens = g->eog;
	sr.n_stop_tokens = g->n_eog;
	if (paid) {
		/* checked and paid for last, once the request is known to be good */
		if (spay_call_open(g->pay, sk, pay_ch, pay_b, pay_v, &x->pay, &err)) {
			ret = err.status == 402 ? send_body(g, c, h, 402, spay_terms_json(g->pay, sk, err.message), NULL, -1)
						: send_error(g, c, h, &err);
			goto out;
		}
		x->stream = x->include_usage = 1;   /* receipts ride in the stream */
		STAT_ADD(g, skill_paid_calls, 1);
	}
	int r = swarm_client_submit(g->client, &sr, &x->job, &e);
	if (r) {
		if (r == ERR_FULL)
			ret = error_reply(g, c, h, 429, "rate_limit_exceeded", NULL, "too_many_generations", e.msg);
		else
			ret = error_reply(g, c, h, 400, "invalid_request_error", NULL, NULL, e.msg);
		goto out;
	}
	STAT_ADD(g, generations, 1);
	STAT_ADD(g, active, 1);
	STAT_ADD(g, tokens_in, nt);
	metrics_tokens(g->metrics, nt, 0);
	gen_list(x);
	/* Wait for the route (the answer's status and headers depend on it). */
	enum swarm_job_state st = SWARM_JOB_WAITING;
	while (st == SWARM_JOB_WAITING) {
		(void)swarm_job_poll(x->job, WAIT_SLICE_MS, NULL, 0, &st);
		if (client_gone(x->fd) || __atomic_load_n(&g->stopping, __ATOMIC_RELAXED)) {
			ret = MHD_NO;   /* nobody to answer; gen_free cancels */
			goto out;
		}
	}
	char route[512];
	swarm_job_route(x->job, route, sizeof(route));
	if (x->stream) {
		/* a job that failed before its first token still gets a proper status */
		if (st == SWARM_JOB_DONE) {
			swarm_result_t res;
			int rc = swarm_job_result(x->job, &res, &e);
			if (rc) {
				map_failure(x, rc, e.msg);
				ret = send_error(g, c, h, &x->err);
				goto out;
			}
		}
		struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_reader, x,
									       sse_free);
		if (!resp) {
			ret = MHD_NO;
			goto out;
		}
		x->resp = resp;
		MHD_add_response_header(resp, "Content-Type", "text/event-stream");
		MHD_add_response_header(resp, "Cache-Control", "no-cache");
		if (route[0])
			MHD_add_response_header(resp, "X-Colony-Route", route);
		MHD_add_response_header(resp, "Trailer", "X-Colony-Tokens-Per-Second");
		x = NULL;   /* the response owns it now */
		ret = MHD_queue_response(c, 200, resp);
		MHD_destroy_response(resp);
		count_status(g, 200);
		h->status = 200;
		goto out;
	}
	/* whole response: read to the end, watching the client */
	while (!x->ended) {
		if (gen_step(x, WAIT_SLICE_MS)) {
			ret = error_reply(g, c, h, 503, "server_error", NULL, NULL, "out of memory");
			goto out;
		}
		if (!x->ended && (client_gone(x->fd) || __atomic_load_n(&g->stopping, __ATOMIC_RELAXED))) {
			ret = MHD_NO;
			goto out;
		}
	}
	if (x->failed) {
		ret = send_error(g, c, h, &x->err);
		goto out;
	}
	oai_usage_t u = { x->n_prompt, x->completion_tokens };
	double tps = job_tps(x, route, sizeof(route));
	ret = send_body(g, c, h, 200, oai_response_json(kind, x->id, x->created, x->model, x->text, x->text_len, x->finish, &u),
			route, tps);
out:
	if (x && x->pay && h->status != 200) {
		spay_call_abort(x->pay);   /* refused after its voucher (no route, busy): not charged */
		x->pay = NULL;
	}
	gen_free(x);
	if (toks != rq.prompt_toks)
		free(toks);
	oai_req_free(&rq);
	return ret;
}

/* ---- status, metrics, dashboard */

static char *status_json(http_gw_t *g)
{
	http_status_in_t in;
	memset(&in, 0, sizeof(in));
	in.version = "0.1.0";
	/* written under mu once the daemon (whose threads call this) runs */
	char url[sizeof(g->url)];
	pthread_mutex_lock(&g->mu);
	memcpy(url, g->url, sizeof(url));
	pthread_mutex_unlock(&g->mu);
	in.url = url;
	in.model_name = g->model_name;
	in.model_hex = g->model_hex;
	in.key_required = g->cfg.api_key && *g->cfg.api_key;
	in.now_ms = (int64_t)dht_now_ms();
	in.started_ms = g->started_ms;
	in.n_ctx = g->n_ctx;
	http_gw_stats(g, &in.stats);
	swarm_client_view(g->client, &in.view);
	in.has_earned = g->cfg.earned != NULL;
	in.earned = in.has_earned ? __atomic_load_n(g->cfg.earned, __ATOMIC_RELAXED) : 0;
	if (g->pay) {
		/* and what paid skill calls redeemed here, or paid from here */
		in.has_earned = 1;
		in.earned += spay_earned(g->pay);
		in.view.spent_total += spay_spent(g->pay);
	}
	/* the count can only grow between the two calls: take what fitted */
	swarm_server_info_t *srv = NULL;
	int ns = swarm_client_servers(g->client, NULL, 0);
	if (ns > 0 && (srv = calloc((size_t)ns, sizeof(*srv)))) {
		int n2 = swarm_client_servers(g->client, srv, ns);
		if (n2 < ns)
			ns = n2;
	}
	in.servers = srv;
	in.n_servers = srv ? ns : 0;
	http_recent_t *recent = malloc(sizeof(http_recent_t) * HTTP_RECENT_MAX);
	http_sess_info_t *sess = NULL;
	double now = clock_sec();
	pthread_mutex_lock(&g->mu);
	int nsess = 0;
	for (struct gen *x = g->gens; x; x = x->next)
		nsess++;
	sess = calloc((size_t)(nsess ? nsess : 1), sizeof(*sess));
	int k = 0;
	for (struct gen *x = g->gens; x && sess; x = x->next, k++) {
		http_sess_info_t *si = &sess[k];
		snprintf(si->id, sizeof(si->id), "%s", x->id);
		si->chat = x->kind == OAI_CHAT;
		si->stream = x->stream;
		si->age_s = now - x->t_start;
		si->prompt_tokens = x->n_prompt;
		swarm_job_info(x->job, &si->job);
		uint64_t fu = __atomic_load_n(&x->first_us, __ATOMIC_RELAXED);
		si->ttft_s = fu ? (double)(fu - 1) / 1e6 : -1;
		double since = fu ? si->age_s - si->ttft_s : 0;
		si->tokens_per_second = fu && si->job.n_tokens > 1 && since > 0 ? (si->job.n_tokens - 1) / since : -1;
	}
	in.sess = sess;
	in.n_sess = sess ? nsess : 0;
	if (recent) {
		/* oldest first */
		int first = g->n_recent < HTTP_RECENT_MAX ? 0 : g->recent_next;
		for (int i = 0; i < g->n_recent; i++)
			recent[i] = g->recent[(first + i) % HTTP_RECENT_MAX];
		in.recent = recent;
		in.n_recent = g->n_recent;
	}
	pthread_mutex_unlock(&g->mu);
	char *j = http_status_json(&in);
	free(srv);
	free(sess);
	free(recent);
	return j;
}

static char *metrics_text(http_gw_t *g)
{
	http_stats_t st;
	swarm_view_t v;
	http_gw_stats(g, &st);
	swarm_client_view(g->client, &v);
	metrics_gauges_t mg = { .sessions_active = st.active, .peers = (uint64_t)v.servers_ready,
				.failovers_total = v.failovers_total, .wire_bytes_in = v.wire_bytes_in,
				.wire_bytes_out = v.wire_bytes_out };
	return metrics_render(g->metrics, &mg);
}

/* The dashboard's page allows nothing but its own files and its own API:
 * no inline script or style, no other origin, no framing. */
#define DASH_CSP "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " \
		 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static enum MHD_Result send_text(http_gw_t *g, struct MHD_Connection *c, struct hreq *h, unsigned status,
				 const void *data, size_t len, enum MHD_ResponseMemoryMode mode, const char *mime)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, mode);
	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *)data);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", mime);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	if (h->ep == EP_ASSET) {
		MHD_add_response_header(r, "Content-Security-Policy", DASH_CSP);
		MHD_add_response_header(r, "X-Frame-Options", "DENY");
		MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	}
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	count_status(g, status);
	h->status = (int)status;
	return ret;
}

static enum MHD_Result get_reply(http_gw_t *g, struct MHD_Connection *c, struct hreq *h, const char *url)
{
	if (h->ep == EP_ASSET) {
		const http_asset_t *a = http_asset_find(!strcmp(url, "/") ? "/index.html" : url);
		if (!a)
			return error_reply(g, c, h, 404, "invalid_request_error", NULL, "unknown_url", "no such file");
		return send_text(g, c, h, 200, a->data, a->len, MHD_RESPMEM_PERSISTENT, a->mime);
	}
	char *body = h->ep == EP_STATUS ? status_json(g) : h->ep == EP_SKILLS ? skill_list_json(g->dht, 1500) : metrics_text(g);
	if (!body)
		return error_reply(g, c, h, 503, "server_error", NULL, NULL, "out of memory");
	if (h->ep == EP_STATUS || h->ep == EP_SKILLS)
		return send_body(g, c, h, 200, body, NULL, -1);
	return send_text(g, c, h, 200, body, strlen(body), MHD_RESPMEM_MUST_FREE, "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- the access handler */

static enum endpoint classify(const char *url, const char **label)
{
	if (!strcmp(url, "/v1/chat/completions")) {
		*label = "/v1/chat/completions";
		return EP_CHAT;
	}
	if (!strcmp(url, "/v1/completions")) {
		*label = "/v1/completions";
		return EP_COMPLETION;
	}
	if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11)) {
		*label = "/v1/models";
		return EP_MODELS;
	}
	if (!strcmp(url, "/v1/skills")) {
		*label = "/v1/skills";
		return EP_SKILLS;
	}
	if (!strcmp(url, SPAY_VOUCHER_PATH)) {
		*label = SPAY_VOUCHER_PATH;
		return EP_PAY;
	}
	if (!strcmp(url, "/api/status")) {
		*label = "/api/status";
		return EP_STATUS;
	}
	if (!strcmp(url, "/metrics")) {
		*label = "/metrics";
		return EP_METRICS;
	}
	if (!strcmp(url, "/") || http_asset_find(url)) {
		*label = "/";
		return EP_ASSET;
	}
	*label = "other";
	return EP_NONE;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	http_gw_t *g = cls;
	struct hreq *h = *con_cls;
	if (!h) {
		/* headers are in: decide now what needs no body */
		h = calloc(1, sizeof(*h));
		if (!h)
			return MHD_NO;
		h->t0 = clock_sec();
		h->ep = classify(url, &h->label);
		*con_cls = h;
		int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), is_post = !strcmp(method, "POST");
		enum endpoint ep = h->ep;
		if (ep == EP_NONE) {
			char msg[300];
			snprintf(msg, sizeof(msg), "Unknown request URL: %.8s %.200s", method, url);
			return error_reply(g, c, h, 404, "invalid_request_error", NULL, "unknown_url", msg);
		}
		int gets = ep == EP_MODELS || ep == EP_STATUS || ep == EP_METRICS || ep == EP_ASSET || ep == EP_SKILLS;
		if ((gets && !is_get) || (!gets && !is_post)) {
			char msg[300];
			snprintf(msg, sizeof(msg), "%.8s is not allowed on %.200s", method, url);
			return error_reply(g, c, h, 405, "invalid_request_error", NULL, "method_not_allowed", msg);
		}
		/* the dashboard's files hold no data: they load, then ask for the key */
		if (ep == EP_ASSET)
			return get_reply(g, c, h, url);
		if (!authorized(g, c))
			return error_reply(g, c, h, 401, "invalid_request_error", NULL, "invalid_api_key",
					   "Missing or incorrect API key: send 'Authorization: Bearer KEY'");
		if (ep == EP_STATUS || ep == EP_METRICS || ep == EP_SKILLS)
			return get_reply(g, c, h, url);
		if (ep == EP_MODELS) {
			if (url[10] == '/' && strcmp(url + 11, g->model_name) && strcmp(url + 11, g->model_hex))
				return error_reply(g, c, h, 404, "invalid_request_error", "model", "model_not_found",
						   "no such model here");
			return send_body(g, c, h, 200, models_json(g, url[10] == '/'), NULL, -1);
		}
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(cl, &end, 10);
			if (errno || end == cl || n > g->cfg.max_body) {
				char msg[200];
				snprintf(msg, sizeof(msg), "the request body is over the limit of %zu bytes", g->cfg.max_body);
				return error_reply(g, c, h, 413, "invalid_request_error", NULL, "request_too_large", msg);
			}
		}
		return MHD_YES;
	}
	if (h->status)
		return MHD_YES;   /* answered already (e.g. 413 before the body): the rest is dropped */
	if (*upload_size) {
		/* a chunked body past the limit: drop it, answer 413 at its end */
		if (!h->too_big && h->n + *upload_size > g->cfg.max_body)
			h->too_big = 1;
		if (!h->too_big && sbuf_append(&h->body, &h->n, &h->cap, upload, *upload_size))
			h->too_big = 1;
		*upload_size = 0;
		return MHD_YES;
	}
	if (h->too_big) {
		char msg[200];
		snprintf(msg, sizeof(msg), "the request body is over the limit of %zu bytes", g->cfg.max_body);
		return error_reply(g, c, h, 413, "invalid_request_error", NULL, "request_too_large", msg);
	}
	if (h->ep == EP_PAY) {
		oai_err_t err;
		if (!g->pay)
			return error_reply(g, c, h, 404, "invalid_request_error", NULL, "unknown_url",
					   "this gateway takes no payments");
		if (spay_voucher_post(g->pay, h->body, h->n, &err))
			return send_error(g, c, h, &err);
		return send_body(g, c, h, 200, strdup("{\"accepted\":true}"), NULL, -1);
	}
	return generate(g, c, h);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	http_gw_t *g = cls;
	struct hreq *h = *con_cls;
	if (h) {
		metrics_request(g->metrics, h->label, h->status, clock_sec() - h->t0);
		free(h->body);
		free(h);
		*con_cls = NULL;
	}
}

/* ---- life cycle */

static int parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len, err_msg_t *e)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return err_set(e, ERR_INVAL, "--api expects HOST:PORT, got '%.100s'", s);
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = 0;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535)
		return err_set(e, ERR_INVAL, "bad port in '%.100s'", s);
	memset(ss, 0, sizeof(*ss));
	char *h = host;
	if (h[0] == '[' && h[strlen(h) - 1] == ']') {
		h[strlen(h) - 1] = 0;
		h++;
	}
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (!*h || !strcmp(h, "localhost"))
		h = "127.0.0.1";
	if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*len = sizeof(*a4);
	} else if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
	} else {
		return err_set(e, ERR_INVAL, "'%.100s' is not an IP address", h);
	}
	return 0;
}

void http_gw_free(http_gw_t *g)
{
	if (!g)
		return;
	__atomic_store_n(&g->stopping, 1, __ATOMIC_RELAXED);
	if (g->mhd)
		MHD_stop_daemon(g->mhd);   /* joins the connection threads (they see stopping) */
	gwpay_drain(g->gwpay);         /* handed-over jobs lock their client: freed first */
	swarm_client_free(g->client);
	gwpay_free(g->gwpay);
	spay_free(g->pay);
	metrics_free(g->metrics);
	if (g->mu_init)
		pthread_mutex_destroy(&g->mu);
	pool_free(g->pool);
	model_free(g->model);
	vocab_free(g->voc);
	free(g->eog);
	free(g);
}

int http_gw_new(const http_cfg_t *cfg, http_gw_t **out, err_msg_t *e)
{
	*out = NULL;
	if (!cfg->gguf)
		return err_set(e, ERR_INVAL, "the gateway needs the model file");
	if (sodium_init() < 0)
		return err_set(e, ERR_INVAL, "libsodium failed to start");
	http_gw_t *g = calloc(1, sizeof(*g));
	if (!g)
		return err_set(e, ERR_NOMEM, "out of memory");
	g->cfg = *cfg;
	if (!g->cfg.max_body)
		g->cfg.max_body = HTTP_DEFAULT_MAX_BODY;
	if (g->cfg.max_generations <= 0)
		g->cfg.max_generations = HTTP_DEFAULT_MAX_GENERATIONS;
	if (!g->cfg.listen)
		g->cfg.listen = "127.0.0.1:0";
	snprintf(g->model_name, sizeof(g->model_name), "%s", cfg->model_name && *cfg->model_name ? cfg->model_name : "model");
	g->created = (int64_t)time(NULL);
	g->started_ms = (int64_t)dht_now_ms();
	pthread_mutex_init(&g->mu, NULL);
	g->mu_init = 1;
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	int r;
	if (!(g->metrics = metrics_new())) {
		r = err_set(e, ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((r = parse_listen(g->cfg.listen, &ss, &sl, e)))
		goto fail;
	if ((r = vocab_new_from_gguf(cfg->gguf, &g->voc, e)))
		goto fail;
	chat_tmpl_from_gguf(&g->tmpl, cfg->gguf);
	if ((r = model_load_range(cfg->gguf, 0, 0, 1, &g->model, e)))
		goto fail;
	g->pool = pool_new(cfg->threads > 0 ? cfg->threads : 2);
	if (!g->pool) {
		r = err_set(e, ERR_NOMEM, "cannot start threads");
		goto fail;
	}
	if (cfg->model_id)
		memcpy(g->model_id, cfg->model_id, 32);
	else if ((r = manifest_model_id(cfg->gguf, g->pool, g->model_id, e)))
		goto fail;
	/* the head is read for every token: huge pages, repacked (the file's
	 * pages read for hashing are dropped as the copy is made) */
	if (model_pin(g->model, e) != 0)
		log_warn("api", "embedding and head stay mapped from the file: %s", e->msg);
	else
		gguf_drop_range(cfg->gguf, gguf_base(cfg->gguf), (size_t)gguf_file_size(cfg->gguf));
	manifest_id_hex(g->model_id, g->model_hex);
	int nv = vocab_n_tokens(g->voc);
	g->eog = malloc(sizeof(int32_t) * 64);
	for (int32_t t = 0; g->eog && t < nv && g->n_eog < 64; t++)
		if (vocab_is_eog(g->voc, t))
			g->eog[g->n_eog++] = t;
	g->n_ctx = g->model->hp.n_ctx_train > 0 ? g->model->hp.n_ctx_train : 4096;
	if (g->n_ctx > (int)WIRE_MAX_CTX)
		g->n_ctx = (int)WIRE_MAX_CTX;
	swarm_client_cfg_t cc = cfg->client;
	cc.model = g->model;
	cc.model_id = g->model_id;
	cc.pool = g->pool;
	cc.max_jobs = g->cfg.max_generations;
	if (cfg->pay_shards) {
		if (!cfg->pay_ledger) {
			r = err_set(e, ERR_INVAL, "paying shard servers needs a ledger peer");
			goto fail;
		}
		gwpay_cfg_t pc = { cfg->pay_wallet_home, cfg->pay_ledger, cfg->client.network, cfg->shard_budget };
		if ((r = gwpay_new(&pc, &g->gwpay, e)))
			goto fail;
		gwpay_client_cfg(g->gwpay, &cc);
	}
	if ((r = swarm_client_new(&cc, &g->client, e)))
		goto fail;
	/* before the daemon: its threads read g->pay */
	if (cfg->pay_ledger) {
		spay_cfg_t pc = { .wallet_home = cfg->pay_wallet_home, .ledger_peer = cfg->pay_ledger,
				  .network = cfg->client.network, .budget = cfg->skill_budget, .chunk = cfg->skill_chunk };
		if ((r = spay_new(&pc, &g->pay, e)))
			goto fail;
		char w[WALLET_ADDR_STRLEN];
		log_info("http", "skill calls are paid through ledger %s (wallet %s)", cfg->pay_ledger,
			 wallet_addr_str(spay_wallet(g->pay), w));
	}
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	g->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, g,
				  MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
				  MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)0,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
				  MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256u << 10),
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, g,
				  MHD_OPTION_END);
	if (!g->mhd) {
		r = err_set(e, ERR_IO, "cannot listen on %s (%s)", g->cfg.listen, strerror(errno));
		goto fail;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->mhd, MHD_DAEMON_INFO_BIND_PORT);
	g->port = di ? di->port : 0;
	for (int i = 0; i < g->cfg.n_skills && !g->pay; i++)
		if (spay_priced(&g->cfg.skills[i]))
			log_warn("http", "skill '%s' has a price but no ledger peer: its calls are free", g->cfg.skills[i].name);
	/* skills: follow the index of the network's skills, announce ours */
	g->dht = swarm_client_dht(g->client);
	uint8_t iid[ANN_MODELLEN];
	ann_skill_index_id(iid);
	if (g->dht && dht_node_watch(g->dht, iid, NULL, NULL) != 0)
		log_warn("http", "cannot follow the skill index: GET /v1/skills looks it up on each call");
	if (g->cfg.n_skills > SKILL_MAX_LOCAL) {
		r = err_set(e, ERR_RANGE, "%d skills (at most %d)", g->cfg.n_skills, SKILL_MAX_LOCAL);
		goto fail;
	}
	if (g->cfg.n_skills && (r = skill_announce_all(g->dht, g->cfg.skills, g->cfg.n_skills, g->model_id,
						       g->cfg.skill_host, &ss, g->port,
						       g->pay ? spay_wallet(g->pay) : NULL, e)))
		goto fail;
	char host[128];
	const char *colon = strrchr(g->cfg.listen, ':');
	snprintf(host, sizeof(host), "%.*s", (int)(colon - g->cfg.listen), g->cfg.listen);
	pthread_mutex_lock(&g->mu);
	snprintf(g->url, sizeof(g->url), "http://%s:%d/v1", host[0] ? host : "127.0.0.1", g->port);
	pthread_mutex_unlock(&g->mu);
	log_info("http", "OpenAI-compatible API at %s (model '%s', template %s%s)", g->url, g->model_name,
		 chat_family_name(g->tmpl.family), cfg->api_key && *cfg->api_key ? ", key required" : "");
	*out = g;
	return 0;
fail:
	http_gw_free(g);
	return r;
}

const char *http_gw_url(const http_gw_t *g) { return g->url; }
int http_gw_port(const http_gw_t *g) { return g->port; }
swarm_client_t *http_gw_client(const http_gw_t *g) { return g->client; }

void http_gw_stats(const http_gw_t *g, http_stats_t *s)
{
	const uint64_t *src = (const uint64_t *)&g->st;
	uint64_t *dst = (uint64_t *)s;
	for (size_t i = 0; i < sizeof(*s) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
	s->skill_earned = g->pay ? (uint64_t)spay_earned(g->pay) : 0;
	s->skill_spent = g->pay ? (uint64_t)spay_spent(g->pay) : 0;
}
