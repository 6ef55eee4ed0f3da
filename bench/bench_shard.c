/* bench_shard.c - continuous batching at one shard: aggregate generation
 * tokens/s of S concurrent sessions (1, 2, 4, 8, 16) served by one shard over
 * all the layers of a model, each session decoding one token per step, all
 * of them batched into one forward pass per step. In process (no network),
 * 2 threads. Usage: bench_shard MODEL [steps (32)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "model/manifest.h"
#include "swarm/shard.h"

static int g_results;

static void reply(void *user, void *client, const wire_msg_t *m)
{
	if (m->type == WIRE_FORWARD_RESULT)
		g_results++;
	else if (m->type != WIRE_OPEN_OK)
		fprintf(stderr, "unexpected reply %s\n", wire_type_name(m->type));
}

static int forward(shard_t *s, uint64_t sid, uint32_t pos, uint32_t n, uint32_t dim, const float *x, uint8_t *buf)
{
	err_msg_t e;
	size_t len = wire_hidden_size(WIRE_ENC_F32, n, dim);
	if (wire_hidden_encode(WIRE_ENC_F32, x, n, dim, buf, len, &e))
		return -1;
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_FORWARD;
	m.u.forward.session_id = sid;
	m.u.forward.start_pos = pos;
	m.u.forward.n_tokens = n;
	m.u.forward.dim = dim;
	m.u.forward.enc = WIRE_ENC_F32;
	m.u.forward.data = buf;
	m.u.forward.data_len = len;
	return shard_handle(s, (void *)1, &m);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: bench_shard MODEL [steps [sessions...]]\n");
		return 2;
	}
	int steps = argc > 2 ? atoi(argv[2]) : 32;
	gguf_t *g;
	model_t *m;
	err_msg_t e;
	if (gguf_open(argv[1], &g, &e) || model_load(g, &m, &e)) {
		fprintf(stderr, "%s: %s\n", argv[1], e.msg);
		return 1;
	}
	/* as a node holds its layers: in huge pages, repacked (BENCH_NO_REPACK=1: as in the file) */
	if (model_pin_ex(m, getenv("BENCH_NO_REPACK") ? MODEL_PIN_NO_REPACK : 0, &e))
		fprintf(stderr, "%s: weights stay mapped: %s\n", argv[1], e.msg);
	uint8_t mid[32];
	pool_t *pool = pool_new(2);
	if (manifest_model_id(g, pool, mid, &e))
		return 1;
	int d = m->hp.n_embd, L = m->hp.n_layer;
	float *x = malloc(sizeof(float) * 16 * (size_t)d);
	uint8_t *buf = malloc(wire_hidden_size(WIRE_ENC_F32, 16, (uint32_t)d));
	for (int i = 0; i < 16 * d; i++)
		x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
	double single = 0;
	printf("model %s, %d layers, one shard over all of them, 2 threads, %d decode steps per session\n", argv[1], L,
	       steps);
	/* The bound of batching: the engine's own prompt processing, 128 rows
	 * in one pass over the same weights, measured here in the same minute
	 * (the machine's speed drifts). Mean of 3 after a warm-up. */
	double pp = 0;
	{
		fwd_ctx_t *fc = NULL;
		float *h = malloc(sizeof(float) * 128 * (size_t)d);
		if (!h || fwd_ctx_new(pool, &fc))
			return 1;
		double tsum = 0;
		for (int r = 0; r < 4; r++) {
			fwd_state_t *st;
			if (fwd_state_new(m, 0, L, 128, FWD_KV_F32, &st))
				return 1;
			for (int i = 0; i < 128 * d; i++)
				h[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
			fwd_seg_t sg = { st, 128 };
			double t0 = clock_sec();
			if (fwd_forward(fc, m, &sg, 1, h, &e)) {
				fprintf(stderr, "%s\n", e.msg);
				return 1;
			}
			if (r > 0)
				tsum += clock_sec() - t0;
			fwd_state_free(st);
		}
		pp = 3 * 128 / tsum;
		fwd_ctx_free(fc);
		free(h);
		printf("prompt processing, 128 rows in one pass: %.2f tokens/s\n", pp);
	}
	printf("%8s %12s %14s %10s %10s\n", "sessions", "steps/s", "tokens/s", "vs 1", "vs pp128");
	/* session counts: the arguments after steps, or 1 2 4 8 16 */
	int counts[16] = { 1, 2, 4, 8, 16 }, ncounts = 5;
	if (argc > 3) {
		ncounts = 0;
		for (int i = 3; i < argc && ncounts < 16; i++) {
			int c = atoi(argv[i]);
			if (c < 1 || c > 16) {
				fprintf(stderr, "sessions: 1 to 16, not '%s'\n", argv[i]);
				return 2;
			}
			counts[ncounts++] = c;
		}
	}
	for (int ci = 0; ci < ncounts; ci++) {
		int S = counts[ci];
		shard_cfg_t sc;
		shard_cfg_default(&sc);
		sc.model = m;
		sc.layer_a = 0;
		sc.layer_b = L;
		memcpy(sc.model_id, mid, 32);
		sc.kv_mem = 8ull << 30;
		sc.pool = pool;
		sc.reply = reply;
		shard_t *s;
		if (shard_new(&sc, &s, &e)) {
			fprintf(stderr, "%s\n", e.msg);
			return 1;
		}
		for (int k = 0; k < S; k++) {
			wire_msg_t o;
			memset(&o, 0, sizeof(o));
			o.type = WIRE_OPEN_SESSION;
			o.u.open.session_id = (uint64_t)k + 1;
			memcpy(o.u.open.model_id, mid, 32);
			o.u.open.layer_a = 0;
			o.u.open.layer_b = (uint32_t)L;
			o.u.open.max_len = (uint32_t)(16 + steps + 1);
			o.u.open.enc = WIRE_ENC_F32;
			o.u.open.kv_type = WIRE_KV_F32;
			if (shard_handle(s, (void *)1, &o))
				return 1;
			/* a 16-token prompt each, processed before the timing */
			if (forward(s, (uint64_t)k + 1, 0, 16, (uint32_t)d, x, buf))
				return 1;
		}
		while (shard_step(s) > 0)
			;
		g_results = 0;
		double t0 = clock_sec();
		for (int st = 0; st < steps; st++) {
			for (int k = 0; k < S; k++)
				if (forward(s, (uint64_t)k + 1, (uint32_t)(16 + st), 1, (uint32_t)d, x + (size_t)k % 16 * d, buf))
					return 1;
			while (shard_step(s) > 0)
				;
		}
		double dt = clock_sec() - t0;
		double tps = (double)S * steps / dt;
		if (S == 1)
			single = tps;
		shard_stats_t ss;
		shard_stats(s, &ss);
		printf("%8d %12.2f %14.2f %9.2fx %9.0f%%   (largest batch %llu)\n", S, steps / dt, tps, tps / single,
		       100 * tps / pp, (unsigned long long)ss.max_batch);
		shard_free(s);
	}
	free(x);
	free(buf);
	pool_free(pool);
	model_free(m);
	gguf_free(g);
	return 0;
}
