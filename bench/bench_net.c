/* bench_net.c - the encrypted channel's CPU cost, no sockets:
 *   - frames: encrypt + decrypt (one frame_encode, then frame_feed of the
 *     bytes) of frames of several sizes, MB/s of plaintext;
 *   - handshake: a complete Noise XX with identities (both sides in this
 *     process, 3 messages, 2 signatures, 2 verifications), microseconds.
 * Single-threaded; best of `reps` runs.
 *
 * usage: bench_net [seconds per measurement (0.5)] [reps (3)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "net/frame.h"
#include "net/noise_xx.h"

static int handshake(const ident_t *a, const ident_t *b)
{
	noise_xx_t *xi = NULL, *xr = NULL;
	err_msg_t e;
	uint8_t m1[NOISE_XX_OUT_MAX], m2[NOISE_XX_OUT_MAX], m3[NOISE_XX_OUT_MAX], o[NOISE_XX_OUT_MAX];
	size_t n1, n2, n3, no, used;
	int rc = noise_xx_new(a, "bench", 1, &xi, &e) || noise_xx_new(b, "bench", 0, &xr, &e) ||
		noise_xx_step(xi, NULL, 0, &used, m1, sizeof(m1), &n1, &e) ||
		noise_xx_step(xr, m1, n1, &used, m2, sizeof(m2), &n2, &e) ||
		noise_xx_step(xi, m2, n2, &used, m3, sizeof(m3), &n3, &e) ||
		noise_xx_step(xr, m3, n3, &used, o, sizeof(o), &no, &e);
	noise_cipher_t t1, r1, t2, r2;
	if (!rc)
		rc = noise_xx_split(xi, &t1, &r1) || noise_xx_split(xr, &t2, &r2);
	if (!rc && !(noise_xx_done(xi) && noise_xx_done(xr)))
		rc = 1;
	if (rc)
		fprintf(stderr, "handshake failed: %s\n", e.msg);
	noise_xx_free(xi);
	noise_xx_free(xr);
	return rc;
}

static double bench_handshake(const ident_t *a, const ident_t *b, double secs)
{
	int n = 0;
	double t0 = clock_sec(), t;
	do {
		if (handshake(a, b))
			exit(1);
		n++;
		t = clock_sec();
	} while (t - t0 < secs);
	return (t - t0) / n * 1e6;
}

static double bench_frames(size_t len, double secs)
{
	uint8_t k1[32], k2[32];
	memset(k1, 1, 32);
	memset(k2, 2, 32);
	noise_cipher_t a, b, c, d;
	noise_cipher_init(&a, k1);
	noise_cipher_init(&b, k2);
	noise_cipher_init(&c, k2);
	noise_cipher_init(&d, k1);
	frame_chan_t tx, rx;
	frame_init(&tx, &a, &b);
	frame_init(&rx, &c, &d);
	uint8_t *pt = malloc(len ? len : 1), *w = malloc(frame_wire_size(len));
	if (!pt || !w)
		exit(1);
	memset(pt, 0x5a, len);
	err_msg_t e;
	long n = 0;
	double t0 = clock_sec(), t;
	do {
		for (int i = 0; i < 16; i++) {
			size_t wn, used, pl;
			const uint8_t *p;
			if (frame_encode(&tx, pt, len, w, frame_wire_size(len), &wn, &e) ||
				frame_feed(&rx, w, wn, &used, &p, &pl, &e) || !p || pl != len) {
				fprintf(stderr, "frame failed: %s\n", e.msg);
				exit(1);
			}
		}
		n += 16;
		t = clock_sec();
	} while (t - t0 < secs);
	free(pt);
	free(w);
	frame_close(&tx);
	frame_close(&rx);
	return (double)n * (double)len / (t - t0) / 1e6;
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 0.5;
	int reps = argc > 2 ? atoi(argv[2]) : 3;
	if (secs <= 0)
		secs = 0.5;
	if (reps < 1)
		reps = 1;
	ident_t *a = NULL, *b = NULL;
	if (ident_new(NULL, &a) || ident_new(NULL, &b))
		return 1;
	const size_t sizes[] = { 64, 1024, 16384, 65536, 1u << 20 };
	printf("frame encrypt+decrypt (MB/s of plaintext, best of %d):\n", reps);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		double best = 0;
		for (int r = 0; r < reps; r++) {
			double v = bench_frames(sizes[i], secs);
			if (v > best)
				best = v;
		}
		printf("  %8zu bytes/frame  %8.1f MB/s\n", sizes[i], best);
	}
	double best = 1e30;
	for (int r = 0; r < reps; r++) {
		double v = bench_handshake(a, b, secs);
		if (v < best)
			best = v;
	}
	printf("Noise XX handshake with identities (both sides): %.1f us\n", best);
	ident_free(a);
	ident_free(b);
	return 0;
}
