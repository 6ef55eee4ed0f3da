/* metrics.h - the gateway's counters and histograms, and their Prometheus
 * text exposition (format version 0.0.4) for GET /metrics.
 *
 * A metrics_t collects what only the gateway sees (requests by endpoint and
 * status, request durations, times to the first token, tokens in and out);
 * what the swarm client counts (sessions, peers, failovers, bytes on the
 * wire) is passed in at render time as metrics_gauges_t. Every function may
 * be called from any thread at once (one mutex; an observation is a few
 * additions, far below the cost of the HTTP request it describes).
 *
 * Families rendered, in this order, each with its # HELP and # TYPE line:
 *   colony_requests_total{endpoint,status}        counter
 *   colony_tokens_total{direction="in"|"out"}     counter
 *   colony_request_seconds                        histogram (METRICS_REQ_BUCKETS)
 *   colony_time_to_first_token_seconds            histogram (METRICS_TTFT_BUCKETS)
 *   colony_sessions_active                        gauge
 *   colony_peers                                  gauge (connected servers)
 *   colony_failovers_total                        counter
 *   colony_wire_bytes_total{direction="in"|"out"} counter
 * Histograms are cumulative (_bucket{le="..."} ascending, then le="+Inf",
 * then _sum and _count), as the format requires.
 */
#ifndef COLONY_API_METRICS_H
#define COLONY_API_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_SERIES 64      /* (endpoint, status) pairs kept; more are counted as endpoint="other" */
#define METRICS_LABEL_MAX 32       /* bytes of an endpoint label, NUL included */

/* Upper bounds in seconds, ascending (the +Inf bucket is implicit). */
#define METRICS_REQ_BUCKETS 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
#define METRICS_TTFT_BUCKETS 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10

typedef struct metrics metrics_t;

/* Values owned by others, read at render time. */
typedef struct metrics_gauges {
	uint64_t sessions_active;
	uint64_t peers;
	uint64_t failovers_total;
	uint64_t wire_bytes_in, wire_bytes_out;
} metrics_gauges_t;

/* NULL when out of memory. */
metrics_t *metrics_new(void);
void metrics_free(metrics_t *m);   /* NULL is fine */

/* One request answered: its endpoint label (copied; characters outside
 * [A-Za-z0-9/_.-] become '_'), its HTTP status (0: no response was sent, the
 * client went away; rendered as status="none") and how long it took. */
void metrics_request(metrics_t *m, const char *endpoint, int status, double seconds);
void metrics_first_token(metrics_t *m, double seconds);
void metrics_tokens(metrics_t *m, uint64_t in, uint64_t out);

/* The exposition text, malloc'd and NUL-terminated (NULL when out of memory). */
char *metrics_render(metrics_t *m, const metrics_gauges_t *g);

#endif
