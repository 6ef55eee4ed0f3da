/* delay_relay - a TCP relay on 127.0.0.1 that adds a fixed one-way delay to
 * each direction of every connection it forwards.
 *
 * Tests and benchmarks want WAN-like round trips between processes on one
 * machine; netem (tc qdisc ... delay) needs a kernel module and privileges
 * that are not always there, so the delay is added in user space instead.
 *
 * Model. Every chunk read from one side is stamped with its arrival time and
 * queued for that direction; it is written to the other side at arrival + D,
 * never earlier, in order and byte-exact. The queue, not a sleep per read,
 * is what keeps bandwidth unlimited: any number of chunks can be in flight
 * during D, as on a long fat link. An end of stream (half-close) travels the
 * same queue, so the other side is shut down for writing only after the data
 * before it; a reset or read error does the same and then closes the whole
 * connection. A direction holding more than RELAY_MAX_HELD bytes stops
 * reading its source until half of that has been written (TCP's flow
 * control then slows the sender), which bounds memory.
 *
 * Limits of the model: the connection to the target is made when a client
 * connects, without delay, so connection setup costs no RTT (data still
 * does); the delay is fixed (no jitter, no loss). Timers have millisecond
 * resolution: a chunk leaves between D and about D + 1 ms after it came.
 *
 * Single-threaded, on one libuv loop. Only loopback targets are accepted: the
 * tool exists for local tests, never to forward traffic elsewhere.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define RELAY_READ_SIZE (64u << 10)     /* one read buffer */
#define RELAY_SHRINK_BELOW (16u << 10)  /* reads smaller than this are copied to a tight buffer */
#define RELAY_MAX_HELD (64u << 20)      /* per direction: stop reading above this, resume at half */
#define RELAY_MAX_DELAY_MS 600000
#define RELAY_BACKLOG 1024

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

enum chunk_kind { CHUNK_DATA, CHUNK_EOF, CHUNK_RESET };

struct dir;

/* One read, or an end marker, waiting for its delivery time. */
struct chunk {
	struct chunk *next;
	struct dir *d;
	double due_ms;        /* monotonic time at which it may be written */
	int kind;
	size_t len;           /* bytes of data */
	size_t cap;           /* bytes allocated for data (what counts against the cap) */
	uv_write_t wr;
	char data[];
};

/* One direction of a connection: src is read, dst is written. */
struct dir {
	struct conn *c;
	uv_tcp_t *src, *dst;
	uv_timer_t timer;
	struct chunk *head, *tail;
	size_t held;          /* bytes queued or being written */
	int reading;          /* src is being read */
	int src_ended;        /* EOF or an error seen on src: it is never read again */
	int reset;            /* the end was an error: close all once dst is flushed */
	int shut_done;        /* dst was shut down for writing after its data */
	uv_shutdown_t shut;
	uint64_t bytes;       /* bytes delivered */
};

struct relay;

struct conn {
	struct relay *r;
	struct conn *prev, *next;   /* the relay's open connections */
	uv_tcp_t down;              /* the accepted client */
	uv_tcp_t up;                /* to the target */
	struct dir c2s, s2c;
	uv_connect_t connect;
	int up_ready;
	int closing;
	int n_closed;               /* handles closed, of 4 */
};

struct relay {
	uv_loop_t *loop;
	uv_tcp_t listener;
	uv_signal_t sigint, sigterm;
	struct sockaddr_storage target;
	double delay_ms;
	struct conn *conns;
	uint64_t n_conns, n_failed, bytes_c2s, bytes_s2c;
};

static double now_ms(void)
{
	return (double)uv_hrtime() / 1e6;
}

static struct chunk *chunk_of(char *data)
{
	return (struct chunk *)(data - offsetof(struct chunk, data));
}

/* ---- closing */

static void free_queue(struct dir *d)
{
	while (d->head) {
		struct chunk *k = d->head;
		d->head = k->next;
		free(k);
	}
	d->tail = NULL;
}

static void on_handle_closed(uv_handle_t *h)
{
	struct conn *c = ((struct dir *)h->data)->c;
	if (++c->n_closed == 4)
		free(c);
}

/* Closes both sockets at once. Writes still in libuv's hands are cancelled
 * (their callbacks free them) before the close callbacks run. */
static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	struct relay *r = c->r;
	r->bytes_c2s += c->c2s.bytes;
	r->bytes_s2c += c->s2c.bytes;
	if (c->prev)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free_queue(&c->c2s);
	free_queue(&c->s2c);
	uv_close((uv_handle_t *)&c->down, on_handle_closed);
	uv_close((uv_handle_t *)&c->up, on_handle_closed);
	uv_close((uv_handle_t *)&c->c2s.timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->s2c.timer, on_handle_closed);
}

/* ---- delivery */

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *t);

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct chunk *k = malloc(sizeof(*k) + RELAY_READ_SIZE);
	buf->base = k ? k->data : NULL;
	buf->len = k ? RELAY_READ_SIZE : 0;
}

static void dir_resume(struct dir *d)
{
	if (d->reading || d->src_ended || d->c->closing || d->held > RELAY_MAX_HELD / 2)
		return;
	if (uv_read_start((uv_stream_t *)d->src, on_alloc, on_read) == 0)
		d->reading = 1;
	else
		conn_close(d->c);
}

static void on_write(uv_write_t *w, int status)
{
	struct chunk *k = w->data;
	struct dir *d = k->d;
	d->held -= k->cap;
	if (status == 0)
		d->bytes += k->len;
	free(k);
	if (status < 0) {
		if (status != UV_ECANCELED)
			conn_close(d->c);
		return;
	}
	dir_resume(d);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct dir *d = req->data;
	struct conn *c = d->c;
	if (status == UV_ECANCELED)
		return;
	d->shut_done = 1;
	/* A reset on one side, or both ends closed: nothing more can flow. */
	if (status < 0 || d->reset || (c->c2s.shut_done && c->s2c.shut_done))
		conn_close(c);
}

/* Writes every chunk that is due, then sleeps until the next one is. */
static void dir_pump(struct dir *d)
{
	struct conn *c = d->c;
	if (c->closing || !c->up_ready)
		return;
	double now = now_ms();
	while (d->head && d->head->due_ms <= now) {
		struct chunk *k = d->head;
		d->head = k->next;
		if (!d->head)
			d->tail = NULL;
		if (k->kind == CHUNK_DATA) {
			uv_buf_t b = uv_buf_init(k->data, (unsigned)k->len);
			k->d = d;
			k->wr.data = k;
			if (uv_write(&k->wr, (uv_stream_t *)d->dst, &b, 1, on_write) != 0) {
				d->held -= k->cap;
				free(k);
				conn_close(c);
				return;
			}
			continue;
		}
		/* The end of the stream; the queue is empty behind it. The
		 * shutdown completes after the writes before it. */
		d->reset = k->kind == CHUNK_RESET;
		free(k);
		d->shut.data = d;
		if (uv_shutdown(&d->shut, (uv_stream_t *)d->dst, on_shutdown) != 0) {
			conn_close(c);
			return;
		}
	}
	if (d->head) {
		/* libuv measures timeouts from its cached loop time, which may lag;
		 * on_timer re-checks the real time and sleeps again if early. */
		uv_update_time(c->r->loop);
		double wait = d->head->due_ms - now_ms();
		uv_timer_start(&d->timer, on_timer, wait > 0 ? (uint64_t)ceil(wait) : 0, 0);
	}
}

static void on_timer(uv_timer_t *t)
{
	dir_pump(t->data);
}

static void dir_push(struct dir *d, struct chunk *k, int kind, size_t len, size_t cap)
{
	k->next = NULL;
	k->kind = kind;
	k->len = len;
	k->cap = cap;
	k->due_ms = now_ms() + d->c->r->delay_ms;
	if (d->tail)
		d->tail->next = k;
	else
		d->head = k;
	d->tail = k;
	d->held += cap;
	if (d->head == k)
		dir_pump(d);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct dir *d = s->data;
	struct chunk *k = buf->base ? chunk_of(buf->base) : NULL;
	if (nread > 0) {
		size_t n = (size_t)nread, cap = RELAY_READ_SIZE;
		if (n < RELAY_SHRINK_BELOW) {
			/* Small reads would hold a whole read buffer each. */
			struct chunk *t = realloc(k, sizeof(*k) + n);
			if (t) {
				k = t;
				cap = n;
			}
		}
		dir_push(d, k, CHUNK_DATA, n, cap);
		if (d->held > RELAY_MAX_HELD && d->reading && !d->c->closing) {
			uv_read_stop(s);
			d->reading = 0;
		}
		return;
	}
	free(k);
	if (nread == 0)
		return;   /* nothing read (EAGAIN) */
	/* EOF, or a reset / error: stop reading this side for good and let the
	 * end follow the data already queued. */
	uv_read_stop(s);
	d->reading = 0;
	d->src_ended = 1;
	struct chunk *m = malloc(sizeof(*m));
	if (!m) {
		conn_close(d->c);
		return;
	}
	dir_push(d, m, nread == UV_EOF ? CHUNK_EOF : CHUNK_RESET, 0, 0);
}

/* ---- accepting */

static void dir_init(struct conn *c, struct dir *d, uv_tcp_t *src, uv_tcp_t *dst)
{
	d->c = c;
	d->src = src;
	d->dst = dst;
	src->data = d;
	uv_timer_init(c->r->loop, &d->timer);
	d->timer.data = d;
}

static void on_connected(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	if (status == UV_ECANCELED || c->closing)
		return;
	if (status < 0) {
		fprintf(stderr, "delay_relay: cannot connect to the target: %s\n", uv_strerror(status));
		c->r->n_failed++;
		conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->up, 1);
	c->up_ready = 1;
	dir_resume(&c->s2c);
	dir_pump(&c->c2s);
}

static void on_accept(uv_stream_t *l, int status)
{
	struct relay *r = l->data;
	if (status < 0) {
		fprintf(stderr, "delay_relay: accept: %s\n", uv_strerror(status));
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		fprintf(stderr, "delay_relay: out of memory\n");
		return;
	}
	c->r = r;
	uv_tcp_init(r->loop, &c->down);
	uv_tcp_init(r->loop, &c->up);
	dir_init(c, &c->c2s, &c->down, &c->up);
	dir_init(c, &c->s2c, &c->up, &c->down);
	c->next = r->conns;
	if (r->conns)
		r->conns->prev = c;
	r->conns = c;
	if (uv_accept(l, (uv_stream_t *)&c->down) != 0) {
		conn_close(c);
		return;
	}
	r->n_conns++;
	uv_tcp_nodelay(&c->down, 1);
	c->connect.data = c;
	int rc = uv_tcp_connect(&c->connect, &c->up, (const struct sockaddr *)&r->target, on_connected);
	if (rc) {
		fprintf(stderr, "delay_relay: cannot connect to the target: %s\n", uv_strerror(rc));
		r->n_failed++;
		conn_close(c);
		return;
	}
	/* Read the client at once: its bytes wait in the queue while the
	 * connection to the target is being made. */
	dir_resume(&c->c2s);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct relay *r = s->data;
	uv_close((uv_handle_t *)&r->listener, NULL);
	uv_close((uv_handle_t *)&r->sigint, NULL);
	uv_close((uv_handle_t *)&r->sigterm, NULL);
	while (r->conns)
		conn_close(r->conns);
}

/* ---- options */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: delay_relay --to HOST:PORT [--listen PORT] [--delay-ms D]\n"
		"\n"
		"Listens on 127.0.0.1:PORT and forwards every connection to HOST:PORT, delaying\n"
		"each direction by D ms (so the round trip grows by 2 D). Bytes arrive in order\n"
		"and unchanged; bandwidth is not limited; a half-close or a reset reaches the\n"
		"other side after the data before it. Prints \"port N\" (the bound port) on stdout\n"
		"once listening. SIGINT or SIGTERM stop it.\n"
		"\n"
		"  --to HOST:PORT   target; loopback only: 127.0.0.0/8, ::1 ([::1]:PORT), localhost\n"
		"  --listen PORT    port to listen on (default 0: any free port)\n"
		"  --delay-ms D     one-way delay in ms, 0..%d (default 0)\n"
		"\nexit codes: 0 clean stop, 1 runtime error, 2 usage\n",
		RELAY_MAX_DELAY_MS);
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (!*s || *end || errno || v < lo || v > hi) {
		fprintf(stderr, "delay_relay: %s expects an integer in %ld..%ld, got '%s'\n", opt, lo, hi, s);
		return -1;
	}
	*out = v;
	return 0;
}

/* "127.0.0.1:9000", "[::1]:9000", "localhost:9000" into a loopback address. */
static int parse_target(const char *s, struct sockaddr_storage *out)
{
	char host[64];
	const char *port;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':' || (size_t)(rb - s - 1) >= sizeof(host))
			goto bad;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = 0;
		port = rb + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon || (size_t)(colon - s) >= sizeof(host))
			goto bad;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = 0;
		port = colon + 1;
	}
	long p;
	if (parse_long("--to", port, 1, 65535, &p))
		return -1;
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *a4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
			goto remote;
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)p);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
			goto remote;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)p);
		return 0;
	}
bad:
	fprintf(stderr, "delay_relay: --to expects HOST:PORT with a numeric loopback address, [::1]:PORT or "
		"localhost:PORT, got '%s'\n", s);
	return -1;
remote:
	fprintf(stderr, "delay_relay: --to %s is not a loopback address: only 127.0.0.0/8 and ::1 are relayed\n", s);
	return -1;
}

int main(int argc, char **argv)
{
	struct relay r;
	memset(&r, 0, sizeof(r));
	long listen_port = 0, delay = 0;
	int have_target = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return EXIT_OK;
		}
		if (strcmp(a, "--listen") && strcmp(a, "--to") && strcmp(a, "--delay-ms")) {
			fprintf(stderr, "delay_relay: unknown option '%s'\n", a);
			usage(stderr);
			return EXIT_USAGE;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "delay_relay: %s needs a value\n", a);
			return EXIT_USAGE;
		}
		const char *v = argv[++i];
		if (!strcmp(a, "--listen")) {
			if (parse_long(a, v, 0, 65535, &listen_port))
				return EXIT_USAGE;
		} else if (!strcmp(a, "--delay-ms")) {
			if (parse_long(a, v, 0, RELAY_MAX_DELAY_MS, &delay))
				return EXIT_USAGE;
		} else {
			if (parse_target(v, &r.target))
				return EXIT_USAGE;
			have_target = 1;
		}
	}
	if (!have_target) {
		fprintf(stderr, "delay_relay: --to HOST:PORT is required\n");
		usage(stderr);
		return EXIT_USAGE;
	}
	r.delay_ms = (double)delay;
	signal(SIGPIPE, SIG_IGN);

	r.loop = uv_default_loop();
	struct sockaddr_in la;
	uv_ip4_addr("127.0.0.1", (int)listen_port, &la);
	uv_tcp_init(r.loop, &r.listener);
	r.listener.data = &r;
	int rc = uv_tcp_bind(&r.listener, (const struct sockaddr *)&la, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&r.listener, RELAY_BACKLOG, on_accept);
	if (rc) {
		fprintf(stderr, "delay_relay: cannot listen on 127.0.0.1:%ld: %s\n", listen_port, uv_strerror(rc));
		uv_close((uv_handle_t *)&r.listener, NULL);
		uv_run(r.loop, UV_RUN_DEFAULT);
		uv_loop_close(r.loop);
		return EXIT_RUNTIME;
	}
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	uv_tcp_getsockname(&r.listener, (struct sockaddr *)&bound, &blen);
	printf("port %d\n", ntohs(((struct sockaddr_in *)&bound)->sin_port));
	fflush(stdout);

	uv_signal_init(r.loop, &r.sigint);
	uv_signal_init(r.loop, &r.sigterm);
	r.sigint.data = r.sigterm.data = &r;
	uv_signal_start(&r.sigint, on_signal, SIGINT);
	uv_signal_start(&r.sigterm, on_signal, SIGTERM);

	uv_run(r.loop, UV_RUN_DEFAULT);
	int left = uv_loop_close(r.loop) != 0;
	fprintf(stderr, "delay_relay: stopped: %llu connections (%llu failed to reach the target), "
		"%llu bytes to the target, %llu back\n", (unsigned long long)r.n_conns,
		(unsigned long long)r.n_failed, (unsigned long long)r.bytes_c2s, (unsigned long long)r.bytes_s2c);
	return left ? EXIT_RUNTIME : EXIT_OK;
}
