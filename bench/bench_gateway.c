/* bench_gateway.c - what the HTTP gateway adds to a generation: time to the
 * first token and time per token of the same streamed, greedy generation,
 * (a) through the swarm client library directly (swarm_client_submit, as the
 * gateway itself calls it) and (b) through the gateway's
 * POST /v1/completions with stream: true, read as raw SSE from a socket.
 * Both reach the same shard servers; runs alternate between (a) and (b) so
 * drift in the machine's load hits both alike.
 *
 * Usage: bench_gateway MODEL BOOTSTRAP HOST:PORT [reps (20)] [tokens (64)] [network]
 *   MODEL      the GGUF the swarm serves (the client's embedding and head)
 *   BOOTSTRAP  a DHT address of the swarm ("127.0.0.1:PORT")
 *   HOST:PORT  the gateway
 * Prints medians and p90 of both, and their difference. bench/gateway.sh
 * sets up the swarm and runs this. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/oai.h"
#include "base/clock.h"
#include "infer/chat.h"
#include "model/manifest.h"
#include "model/model.h"
#include "model/vocab.h"
#include "swarm/client.h"

#define PROMPT "Once upon a time, there was a little girl"
#define MAXREP 256

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double q(const double *v, int n, double p)
{
	double *s = malloc(sizeof(double) * (size_t)n);
	memcpy(s, v, sizeof(double) * (size_t)n);
	qsort(s, (size_t)n, sizeof(double), cmp_dbl);
	int k = (int)(p * n + 0.999999);
	if (k < 1)
		k = 1;
	double r = s[(k > n ? n : k) - 1];
	free(s);
	return r;
}

/* One generation through the library: ttft (submit to first token) and the
 * mean time per token after the first. */
static int run_direct(swarm_client_t *c, const int32_t *toks, int nt, int n_predict, const int32_t *eog, int n_eog,
		      double *ttft, double *per_tok, int *n_out)
{
	swarm_req_t r;
	memset(&r, 0, sizeof(r));
	r.prompt = toks;
	r.n_prompt = nt;
	r.n_predict = n_predict;
	r.sp = smp_params_default();
	r.sp.temp = 0;
	r.stop_tokens = eog;
	r.n_stop_tokens = n_eog;
	err_msg_t e = { { 0 } };
	swarm_job_t *j;
	double t0 = clock_sec();
	if (swarm_client_submit(c, &r, &j, &e)) {
		fprintf(stderr, "submit: %s\n", e.msg);
		return -1;
	}
	enum swarm_job_state st = SWARM_JOB_WAITING;
	int32_t buf[256];
	double t_first = 0, t_last = 0;
	int n = 0;
	while (st != SWARM_JOB_DONE) {
		int k = swarm_job_poll(j, 1000, buf, 256, &st);
		if (k > 0) {
			double t = clock_sec();
			if (!n)
				t_first = t;
			t_last = t;
			n += k;
		}
	}
	swarm_result_t res;
	int rc = swarm_job_result(j, &res, &e);
	swarm_job_free(j);
	if (rc || n < 2) {
		fprintf(stderr, "direct: %s (%d tokens)\n", rc ? e.msg : "too few tokens", n);
		return -1;
	}
	*ttft = t_first - t0;
	*per_tok = (t_last - t_first) / (n - 1);
	*n_out = n;
	return 0;
}

/* One streamed completion through the gateway (HTTP/1.0: no chunking, the
 * server closes at the end). ttft: request sent to the first text chunk;
 * per token: first to last text chunk over the chunks between. */
static int run_http(const struct sockaddr_in *sa, const char *model, int n_predict, double *ttft, double *per_tok,
		    int *n_out)
{
	char body[512], req[1024];
	int bl = snprintf(body, sizeof(body),
			  "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0,\"stream\":true}", model,
			  PROMPT, n_predict);
	int rl = snprintf(req, sizeof(req),
			  "POST /v1/completions HTTP/1.0\r\nHost: bench\r\nContent-Type: application/json\r\n"
			  "Content-Length: %d\r\n\r\n%s",
			  bl, body);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) {
		perror("connect");
		close(fd);
		return -1;
	}
	double t0 = clock_sec();
	if (write(fd, req, (size_t)rl) != rl) {
		close(fd);
		return -1;
	}
	/* count "data: {" events carrying text as they arrive */
	static char acc[1 << 20];
	size_t na = 0, scan = 0;
	int n = 0;
	double t_first = 0, t_last = 0;
	for (;;) {
		ssize_t k = read(fd, acc + na, sizeof(acc) - 1 - na);
		if (k <= 0)
			break;
		double t = clock_sec();
		na += (size_t)k;
		acc[na] = 0;
		char *p;
		while ((p = strstr(acc + scan, "\n\n")) != NULL) {
			char *ev = strstr(acc + scan, "data: {");
			if (ev && ev < p && strstr(ev, "\"text\":\"") && strstr(ev, "\"text\":\"") < p &&
			    !strstr(ev, "\"text\":\"\"")) {
				if (!n)
					t_first = t;
				t_last = t;
				n++;
			}
			scan = (size_t)(p - acc) + 2;
		}
		if (na > sizeof(acc) - 4096)
			break;
	}
	close(fd);
	if (n < 2 || !strstr(acc, "data: [DONE]")) {
		fprintf(stderr, "http: %d text chunks; response starts: %.200s\n", n, acc);
		return -1;
	}
	*ttft = t_first - t0;
	*per_tok = (t_last - t_first) / (n - 1);
	*n_out = n;
	return 0;
}

/* The gateway's own work per streamed token, without the network: decode
 * the token, pass it through the stop filter, build the SSE chunk's JSON
 * and append it to the output buffer (what http.c does between a token's
 * arrival and the socket write). Mean over many tokens, in microseconds. */
static double gateway_cpu_per_token(const vocab_t *voc, const int32_t *toks, int n)
{
	vocab_decoder_t dec;
	vocab_decoder_init(&dec, voc, 0);
	chat_stop_t st;
	chat_stop_init(&st);
	size_t pcap = VOCAB_DECODER_OUT_MAX(vocab_max_piece_len(voc));
	char *piece = malloc(pcap), *shown = malloc(pcap + CHAT_STOP_MAX_LEN), *out = malloc(1 << 16);
	size_t no = 0, total = 0;
	int iters = 200000;
	double t0 = clock_sec();
	for (int i = 0; i < iters; i++) {
		size_t k = 0;
		if (vocab_decoder_push(&dec, toks[i % n], piece, pcap, &k) != 0)
			k = 0;
		size_t m = chat_stop_push(&st, piece, k, shown);
		char *j = oai_chunk_json(OAI_COMPLETION, "cmpl-0123456789abcdef01234567", 1700000000, "model", shown, m, 0,
					 NULL, 0, NULL);
		size_t jl = j ? strlen(j) : 0;
		if (no + jl + 8 > (1 << 16))
			no = 0;
		memcpy(out + no, "data: ", 6);
		memcpy(out + no + 6, j, jl);
		no += jl + 6;
		total += jl;
		free(j);
	}
	double dt = clock_sec() - t0;
	free(piece);
	free(shown);
	free(out);
	return total ? dt / iters * 1e6 : -1;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: bench_gateway MODEL BOOTSTRAP HOST:PORT [reps] [tokens] [network]\n");
		return 2;
	}
	int reps = argc > 4 ? atoi(argv[4]) : 20, n_predict = argc > 5 ? atoi(argv[5]) : 64;
	if (reps < 1 || reps > MAXREP || n_predict < 2)
		return 2;
	err_msg_t e = { { 0 } };
	gguf_t *g;
	model_t *m;
	vocab_t *voc;
	uint8_t id[32];
	if (gguf_open(argv[1], &g, &e) || model_load_range(g, 0, 0, 1, &m, &e) || vocab_new_from_gguf(g, &voc, &e) ||
	    manifest_model_id(g, NULL, id, &e)) {
		fprintf(stderr, "%s: %s\n", argv[1], e.msg);
		return 1;
	}
	const char *base = strrchr(argv[1], '/');
	char model_name[256];
	snprintf(model_name, sizeof(model_name), "%s", base ? base + 1 : argv[1]);
	char *dot = strstr(model_name, ".gguf");
	if (dot)
		*dot = 0;
	int32_t toks[256];
	size_t nt = 0;
	if (vocab_tokenize(voc, PROMPT, strlen(PROMPT), 1, 0, toks, 256, &nt)) {
		fprintf(stderr, "tokenize failed\n");
		return 1;
	}
	int32_t eog[64];
	int n_eog = 0;
	for (int32_t t = 0; t < vocab_n_tokens(voc) && n_eog < 64; t++)
		if (vocab_is_eog(voc, t))
			eog[n_eog++] = t;
	pool_t *pool = pool_new(2);
	swarm_client_cfg_t cc;
	swarm_client_cfg_default(&cc);
	cc.network = argc > 6 ? argv[6] : "colony";
	cc.bootstrap[0] = argv[2];
	cc.n_bootstrap = 1;
	cc.model = m;
	cc.model_id = id;
	cc.pool = pool;
	swarm_client_t *c;
	if (swarm_client_new(&cc, &c, &e)) {
		fprintf(stderr, "client: %s\n", e.msg);
		return 1;
	}
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(argv[3], ':');
	snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - argv[3]) : 0, argv[3]);
	sa.sin_port = htons((uint16_t)atoi(colon ? colon + 1 : "0"));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "bad gateway address %s\n", argv[3]);
		return 2;
	}
	/* both paths warmed up once (connections, routes, caches) */
	double tt, pt;
	int n;
	for (int w = 0; w < 2; w++) {
		if (run_direct(c, toks, (int)nt, n_predict, eog, n_eog, &tt, &pt, &n) ||
		    run_http(&sa, model_name, n_predict, &tt, &pt, &n))
			return 1;
	}
	static double d_tt[MAXREP], d_pt[MAXREP], h_tt[MAXREP], h_pt[MAXREP], x_tt[MAXREP], x_pt[MAXREP];
	int d_n = 0, h_n = 0;
	for (int r = 0; r < reps; r++) {
		if (run_direct(c, toks, (int)nt, n_predict, eog, n_eog, &d_tt[r], &d_pt[r], &d_n) ||
		    run_http(&sa, model_name, n_predict, &h_tt[r], &h_pt[r], &h_n))
			return 1;
		x_tt[r] = h_tt[r] - d_tt[r];   /* paired: the two runs of one round */
		x_pt[r] = h_pt[r] - d_pt[r];
	}
	printf("model %s, prompt %zu tokens, %d generated (direct) / %d text chunks (gateway), %d runs each\n", model_name,
	       nt, d_n, h_n, reps);
	printf("%-22s %12s %12s %12s %12s\n", "", "TTFT p50 ms", "TTFT p90 ms", "tok p50 us", "tok p90 us");
	printf("%-22s %12.3f %12.3f %12.1f %12.1f\n", "client library", q(d_tt, reps, .5) * 1e3, q(d_tt, reps, .9) * 1e3,
	       q(d_pt, reps, .5) * 1e6, q(d_pt, reps, .9) * 1e6);
	printf("%-22s %12.3f %12.3f %12.1f %12.1f\n", "gateway (HTTP, SSE)", q(h_tt, reps, .5) * 1e3,
	       q(h_tt, reps, .9) * 1e3, q(h_pt, reps, .5) * 1e6, q(h_pt, reps, .9) * 1e6);
	printf("%-22s %12.3f %12.3f %12.1f %12.1f\n", "added by the gateway", (q(h_tt, reps, .5) - q(d_tt, reps, .5)) * 1e3,
	       (q(h_tt, reps, .9) - q(d_tt, reps, .9)) * 1e3, (q(h_pt, reps, .5) - q(d_pt, reps, .5)) * 1e6,
	       (q(h_pt, reps, .9) - q(d_pt, reps, .9)) * 1e6);
	printf("%-22s %12.3f %12.3f %12.1f %12.1f\n", "paired difference", q(x_tt, reps, .5) * 1e3, q(x_tt, reps, .9) * 1e3,
	       q(x_pt, reps, .5) * 1e6, q(x_pt, reps, .9) * 1e6);
	printf("gateway CPU per token (decode, stop filter, SSE chunk JSON; no I/O): %.2f us\n",
	       gateway_cpu_per_token(voc, toks, (int)nt));
	swarm_client_free(c);
	pool_free(pool);
	vocab_free(voc);
	model_free(m);
	gguf_free(g);
	return 0;
}
