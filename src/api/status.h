/* status.h - the JSON of GET /api/status (the dashboard's data), built from
 * a snapshot the gateway takes under its locks. Pure: no I/O, no clock, no
 * locks, so a test can feed it any snapshot. docs/PROTOCOL.md ("GET
 * /api/status") describes every field.
 */
#ifndef COLONY_API_STATUS_H
#define COLONY_API_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "api/http.h"
#include "swarm/client.h"

#define HTTP_RECENT_MAX 64          /* finished generations kept for latency figures */

/* A generation running now. */
typedef struct http_sess_info {
	char id[48];                    /* chatcmpl-... / cmpl-... */
	int chat, stream;
	double age_s;                   /* since the request arrived */
	int prompt_tokens;
	double ttft_s;                  /* < 0: no token yet */
	double tokens_per_second;       /* since the first token; < 0 before two tokens */
	swarm_job_info_t job;           /* state, route, failovers, tokens so far */
} http_sess_info_t;

/* A generation that ended. */
typedef struct http_recent {
	char id[48];
	const char *outcome;            /* static: "ok", "failed", "cancelled" */
	int prompt_tokens, completion_tokens;
	double ttft_s;                  /* < 0: none */
	double tokens_per_second;       /* < 0: too few tokens to tell */
	double seconds;                 /* submit to end */
	int failovers;
	int64_t end_ms;                 /* wall clock */
} http_recent_t;

typedef struct http_status_in {
	const char *version;
	const char *url;                /* "http://HOST:PORT/v1" */
	const char *model_name, *model_hex;
	int key_required;
	int64_t now_ms, started_ms;     /* wall clock, ms since the epoch */
	int n_ctx;
	http_stats_t stats;
	swarm_view_t view;              /* spent_total: the gateway's own client's payments */
	int64_t earned;                 /* the node's redeemed micro-units, when has_earned */
	int has_earned;                 /* the gateway runs inside a node */
	const swarm_server_info_t *servers;
	int n_servers;
	const http_sess_info_t *sess;
	int n_sess;
	const http_recent_t *recent;    /* oldest first */
	int n_recent;
} http_status_in_t;

/* The status document, malloc'd, NUL-terminated; NULL when out of memory. */
char *http_status_json(const http_status_in_t *in);

#endif
