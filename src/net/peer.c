/* peer.c - encrypted connections on libuv (see peer.h). */
#include "net/peer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "net/frame.h"
#include "net/noise_xx.h"

#define PEER_READ_BUF (64u << 10)
#define PEER_TICK_MS 250
#define PEER_EWMA 0.25            /* weight of a new sample in the moving averages */

struct peer_conn {
	uv_tcp_t tcp;                  /* first: handle->data is the conn */
	peer_net_t *net;
	struct peer_conn *prev, *next;
	enum peer_state st;
	int inbound, closing, hello_sent, hello_got;
	char addr[64];
	char ip[48];
	noise_xx_t *hs;
	frame_chan_t fr;
	int have_frames;
	uint8_t id[IDENT_PUBLEN];
	wire_hello_t hello;
	uint64_t t_connect, t_last_rx, t_last_ping;
	/* token buckets */
	double tok_msgs, tok_bytes;
	uint64_t t_bucket;
	/* send queue */
	size_t outq;
	/* stats */
	double rtt_ms, thr_mbs;
	uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
	uint64_t ping_nonce;
	uint64_t probe_id, probe_t0;
	uint64_t hs_t0;            /* initiator: when message 1 went out (ns) */
	int rtt_rough;             /* rtt_ms is the handshake's estimate: the first PONG replaces it */
	uint32_t probe_n;
	void *user;
	const char *close_why;
	char why_buf[128];
};

struct peer_net {
	uv_loop_t *loop;
	peer_cfg_t cfg;
	uv_tcp_t listener;
	int listening;
	uv_timer_t timer;
	peer_conn_t *head;
	int n_conns;
	double accept_tokens;
	uint64_t t_accept;
	int closing, open_handles;
	void (*done)(void *);
	void *done_arg;
	uint8_t rbuf[PEER_READ_BUF];
	int rbuf_busy;
};

struct peer_write {
	uv_write_t req;
	peer_conn_t *c;
	size_t len;
	uint8_t data[];
};

void peer_cfg_default(peer_cfg_t *c)
{
	memset(c, 0, sizeof(*c));
	c->network = "colony";
	c->software = "colony";
	c->max_conns = 512;
	c->max_per_addr = 16;
	c->accept_per_sec = 200;
	c->handshake_ms = 5000;
	c->idle_ms = 30000;
	c->ping_ms = 5000;
	c->max_outq = 32u << 20;
	c->msgs_per_sec = 2000;
	c->bytes_per_sec = 256.0 * (1 << 20);
}

static uint64_t now_ms(peer_net_t *n) { return uv_now(n->loop); }

static void conn_close_cb(uv_handle_t *h);
static void net_maybe_done(peer_net_t *n);

static void conn_unlink(peer_conn_t *c)
{
	peer_net_t *n = c->net;
	if (c->prev)
		c->prev->next = c->next;
	else if (n->head == c)
		n->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

void peer_close(peer_conn_t *c, const char *why)
{
	if (c->closing)
		return;
	c->closing = 1;
	snprintf(c->why_buf, sizeof(c->why_buf), "%.127s", why ? why : "closed");
	c->close_why = c->why_buf;
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

static void conn_free(peer_conn_t *c)
{
	noise_xx_free(c->hs);
	if (c->have_frames)
		frame_close(&c->fr);
	free(c);
}

static void conn_close_cb(uv_handle_t *h)
{
	peer_conn_t *c = h->data;
	peer_net_t *n = c->net;
	conn_unlink(c);
	n->n_conns--;
	char sid[IDENT_SHORT_STRLEN] = "-";
	if (c->st == PEER_READY)
		ident_id_short(c->id, sid);
	log_debug("peer", "%s %s closed: %s", c->addr, sid, c->close_why);
	enum peer_state was = c->st;
	c->st = PEER_CLOSED;
	if (n->cfg.on_state && (was == PEER_READY || !c->inbound))
		n->cfg.on_state(c, PEER_CLOSED, c->close_why, n->cfg.user);
	conn_free(c);
	net_maybe_done(n);
}

static void write_cb(uv_write_t *req, int status)
{
	struct peer_write *w = (struct peer_write *)req;
	peer_conn_t *c = w->c;
	c->outq -= w->len;
	c->bytes_out += w->len;
	free(w);
	if (status < 0 && status != UV_ECANCELED)
		peer_close(c, "write failed");
}

static int conn_write(peer_conn_t *c, const uint8_t *data, size_t len)
{
	struct peer_write *w = malloc(sizeof(*w) + len);
	if (!w)
		return ERR_NOMEM;
	memcpy(w->data, data, len);
	w->c = c;
	w->len = len;
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
		free(w);
		return ERR_IO;
	}
	c->outq += len;
	return 0;
}

/* Encodes a message into one frame and queues it. force: ignore max_outq
 * (handshake-level replies; the caller checks the queue itself). */
static int conn_send(peer_conn_t *c, const wire_msg_t *m, int force, err_msg_t *e)
{
	if (c->closing || !c->have_frames)
		return err_set(e, ERR_INVAL, "connection is not established");
	if (!force && c->outq > c->net->cfg.max_outq)
		return err_set(e, ERR_FULL, "send queue full (%zu bytes)", c->outq);
	size_t plen = wire_encoded_size(m);
	if (plen == 0) {
		uint8_t dummy[1];
		size_t dl;
		int r = wire_encode(m, dummy, 0, &dl, e);
		return r ? r : err_set(e, ERR_INVAL, "message cannot be encoded");
	}
	size_t wlen = frame_wire_size(plen);
	struct peer_write *w = malloc(sizeof(*w) + wlen);
	if (!w)
		return err_set(e, ERR_NOMEM, "out of memory");
	size_t got, fl;
	int r = wire_encode(m, w->data + FRAME_HDR, plen, &got, e);
	if (!r)
		r = frame_encode(&c->fr, w->data + FRAME_HDR, got, w->data, wlen, &fl, e);
	if (r) {
		free(w);
		return r;
	}
	w->c = c;
	w->len = fl;
	uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)fl);
	if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
		free(w);
		peer_close(c, "write failed");
		return err_set(e, ERR_IO, "write failed");
	}
	c->outq += fl;
	c->msgs_out++;
	return 0;
}

int peer_send(peer_conn_t *c, const wire_msg_t *m, err_msg_t *e)
{
	if (c->st != PEER_READY)
		return err_set(e, ERR_INVAL, "connection is not ready");
	return conn_send(c, m, 0, e);
}

/* Internal replies (HELLO, PONG, probe data). peer_send stops at max_outq,
 * so only these can take the queue past it: at twice the limit the peer has
 * stopped reading our replies, and is cut off. */
static void conn_reply(peer_conn_t *c, const wire_msg_t *m)
{
	err_msg_t e;
	if (c->outq > 2 * c->net->cfg.max_outq) {
		peer_close(c, "peer does not read (send queue full)");
		return;
	}
	if (conn_send(c, m, 1, &e) != 0)
		peer_close(c, e.msg);
}

static void send_hello(peer_conn_t *c)
{
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_HELLO;
	m.u.hello.version = WIRE_VERSION_MAX;
	m.u.hello.min_version = WIRE_VERSION_MIN;
	m.u.hello.max_version = WIRE_VERSION_MAX;
	m.u.hello.caps = c->net->cfg.caps;
	snprintf(m.u.hello.software, sizeof(m.u.hello.software), "%s", c->net->cfg.software);
	snprintf(m.u.hello.network, sizeof(m.u.hello.network), "%s", c->net->cfg.network);
	conn_reply(c, &m);
	c->hello_sent = 1;
}

static void send_ping(peer_conn_t *c)
{
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_PING;
	m.u.ping.nonce = ++c->ping_nonce;
	m.u.ping.timestamp_us = uv_hrtime(); /* nanoseconds, echoed back to us */
	c->t_last_ping = now_ms(c->net);
	conn_reply(c, &m);
}

static void ewma(double *v, double x)
{
	*v = *v < 0 ? x : (1 - PEER_EWMA) * *v + PEER_EWMA * x;
}

static void handle_msg(peer_conn_t *c, const wire_msg_t *m)
{
	peer_net_t *n = c->net;
	wire_msg_t r;
	memset(&r, 0, sizeof(r));
	err_msg_t e;
	switch (m->type) {
	case WIRE_HELLO: {
		if (c->hello_got) {
			peer_close(c, "second HELLO");
			return;
		}
		uint16_t ver;
		wire_hello_t mine;
		memset(&mine, 0, sizeof(mine));
		mine.min_version = WIRE_VERSION_MIN;
		mine.max_version = WIRE_VERSION_MAX;
		if (strcmp(m->u.hello.network, n->cfg.network) != 0) {
			peer_close(c, "peer is on another network");
			return;
		}
		if (wire_version_pick(&mine, &m->u.hello, &ver, &e) != 0) {
			peer_close(c, "no common protocol version");
			return;
		}
		c->hello = m->u.hello;
		c->hello_got = 1;
		c->st = PEER_READY;
		char sid[IDENT_SHORT_STRLEN];
		log_debug("peer", "%s %s ready (%s)", c->addr, ident_id_short(c->id, sid), c->hello.software);
		send_ping(c);   /* an RTT right away, not after the first keepalive period */
		if (n->cfg.on_state && !c->closing)
			n->cfg.on_state(c, PEER_READY, "ready", n->cfg.user);
		return;
	}
	case WIRE_PING:
		r.type = WIRE_PONG;
		r.u.ping = m->u.ping;
		conn_reply(c, &r);
		return;
	case WIRE_PONG:
		if (m->u.ping.nonce == c->ping_nonce) {
			double x = (double)(uv_hrtime() - m->u.ping.timestamp_us) / 1e6;
			if (c->rtt_rough)
				c->rtt_ms = x, c->rtt_rough = 0;
			else
				ewma(&c->rtt_ms, x);
		}
		return;
	case WIRE_PROBE_REQ: {
		uint32_t nb = m->u.probe.n_bytes;
		if (nb > WIRE_MAX_PROBE)
			nb = WIRE_MAX_PROBE;
		uint8_t *buf = calloc(1, nb ? nb : 1);
		if (!buf) {
			peer_close(c, "out of memory");
			return;
		}
		r.type = WIRE_PROBE_DATA;
		r.u.probe.probe_id = m->u.probe.probe_id;
		r.u.probe.n_bytes = nb;
		r.u.probe.flags = WIRE_PROBE_ACK_WANTED;
		r.u.probe.data = buf;
		conn_reply(c, &r);
		free(buf);
		return;
	}
	case WIRE_PROBE_DATA:
		if (m->u.probe.probe_id == c->probe_id && c->probe_t0) {
			double sec = (double)(uv_hrtime() - c->probe_t0) / 1e9;
			if (sec > 0)
				ewma(&c->thr_mbs, (double)m->u.probe.n_bytes / sec / 1e6);
			c->probe_t0 = 0;
		}
		if (m->u.probe.flags & WIRE_PROBE_ACK_WANTED) {
			r.type = WIRE_PROBE_ACK;
			r.u.probe.probe_id = m->u.probe.probe_id;
			r.u.probe.n_bytes = m->u.probe.n_bytes;
			conn_reply(c, &r);
		}
		return;
	case WIRE_PROBE_ACK:
		return;
	case WIRE_ERROR:
		snprintf(c->why_buf, sizeof(c->why_buf), "peer error %u: %.80s", m->u.error.code, m->u.error.msg);
		log_info("peer", "%s: %s", c->addr, c->why_buf);
		break;
	default:
		break;
	}
	if (n->cfg.on_msg)
		n->cfg.on_msg(c, m, n->cfg.user);
}

/* Refills and charges the token buckets; 0 if the message may pass. */
static int bucket_take(peer_conn_t *c, size_t bytes)
{
	peer_net_t *n = c->net;
	uint64_t t = now_ms(n);
	double dt = (double)(t - c->t_bucket) / 1000.0;
	c->t_bucket = t;
	double cap_m = 2 * n->cfg.msgs_per_sec, cap_b = 2 * n->cfg.bytes_per_sec + 2.0 * WIRE_MAX_MSG;
	c->tok_msgs += dt * n->cfg.msgs_per_sec;
	c->tok_bytes += dt * n->cfg.bytes_per_sec;
	if (c->tok_msgs > cap_m)
		c->tok_msgs = cap_m;
	if (c->tok_bytes > cap_b)
		c->tok_bytes = cap_b;
	c->tok_msgs -= 1;
	c->tok_bytes -= (double)bytes;
	return c->tok_msgs < 0 || c->tok_bytes < 0 ? -1 : 0;
}

static void handle_bytes(peer_conn_t *c, const uint8_t *in, size_t n)
{
	err_msg_t e = { { 0 } };
	while (n > 0 && !c->closing) {
		if (!c->have_frames) {
			uint8_t out[NOISE_XX_OUT_MAX];
			size_t used = 0, olen = 0;
			if (noise_xx_step(c->hs, in, n, &used, out, sizeof(out), &olen, &e) != 0) {
				char why[160];
				snprintf(why, sizeof(why), "handshake failed: %.120s", e.msg);
				peer_close(c, why);
				return;
			}
			in += used;
			n -= used;
			if (olen && conn_write(c, out, olen) != 0) {
				peer_close(c, "write failed");
				return;
			}
			if (noise_xx_done(c->hs)) {
				noise_cipher_t tx, rx;
				if (noise_xx_split(c->hs, &tx, &rx) != 0) {
					peer_close(c, "handshake split failed");
					return;
				}
				memcpy(c->id, noise_xx_peer_id(c->hs), IDENT_PUBLEN);
				/* The initiator's first RTT estimate: message 1 out to message
				 * 2 in (plus the handshake's crypto, well under a millisecond),
				 * so routing has a figure before the first PONG. */
				if (c->hs_t0 && c->rtt_ms < 0) {
					c->rtt_ms = (double)(uv_hrtime() - c->hs_t0) / 1e6;
					c->rtt_rough = 1;
				}
				frame_init(&c->fr, &tx, &rx);
				if (frame_set_max(&c->fr, WIRE_MAX_MSG) != 0) {
					peer_close(c, "frame setup failed");
					return;
				}
				c->have_frames = 1;
				noise_xx_free(c->hs);
				c->hs = NULL;
				send_hello(c);
			} else if (used == 0) {
				return;   /* needs more bytes */
			}
			continue;
		}
		size_t used = 0, plen = 0;
		const uint8_t *plain = NULL;
		if (frame_feed(&c->fr, in, n, &used, &plain, &plen, &e) != 0) {
			char why[160];
			snprintf(why, sizeof(why), "bad frame: %.120s", e.msg);
			peer_close(c, why);
			return;
		}
		in += used;
		n -= used;
		if (!plain)
			continue;
		c->msgs_in++;
		if (bucket_take(c, plen) != 0) {
			peer_close(c, "rate limit exceeded (flooding)");
			return;
		}
		wire_msg_t m;
		if (wire_decode(plain, plen, &m, &e) != 0) {
			char why[160];
			snprintf(why, sizeof(why), "bad message: %.120s", e.msg);
			peer_close(c, why);
			return;
		}
		if (!c->hello_got && m.type != WIRE_HELLO) {
			peer_close(c, "message before HELLO");
			return;
		}
		handle_msg(c, &m);
	}
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	peer_conn_t *c = h->data;
	peer_net_t *n = c->net;
	/* One buffer for the whole loop: every read is consumed in read_cb. */
	if (n->rbuf_busy) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	n->rbuf_busy = 1;
	*buf = uv_buf_init((char *)n->rbuf, sizeof(n->rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	peer_conn_t *c = s->data;
	peer_net_t *n = c->net;
	if (buf->base == (char *)n->rbuf)
		n->rbuf_busy = 0;
	if (nread < 0) {
		peer_close(c, nread == UV_EOF ? "peer closed the connection" : uv_strerror((int)nread));
		return;
	}
	if (nread == 0)
		return;
	c->bytes_in += (uint64_t)nread;
	c->t_last_rx = now_ms(n);
	handle_bytes(c, (const uint8_t *)buf->base, (size_t)nread);
}

static peer_conn_t *conn_new(peer_net_t *n, int inbound)
{
	peer_conn_t *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->net = n;
	c->inbound = inbound;
	c->rtt_ms = -1;
	c->thr_mbs = -1;
	c->t_connect = c->t_last_rx = c->t_bucket = now_ms(n);
	c->tok_msgs = 2 * n->cfg.msgs_per_sec;
	c->tok_bytes = 2 * n->cfg.bytes_per_sec + 2.0 * WIRE_MAX_MSG;
	uv_tcp_init(n->loop, &c->tcp);
	c->tcp.data = c;
	c->next = n->head;
	if (n->head)
		n->head->prev = c;
	n->head = c;
	n->n_conns++;
	snprintf(c->addr, sizeof(c->addr), "?");
	return c;
}

static void fill_addr(peer_conn_t *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
		return;
	int port = 0;
	if (ss.ss_family == AF_INET) {
		uv_ip4_name((struct sockaddr_in *)&ss, c->ip, sizeof(c->ip));
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	} else if (ss.ss_family == AF_INET6) {
		uv_ip6_name((struct sockaddr_in6 *)&ss, c->ip, sizeof(c->ip));
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	snprintf(c->addr, sizeof(c->addr), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", c->ip, port);
}

static int start_handshake(peer_conn_t *c, int initiator, const uint8_t *expect)
{
	err_msg_t e;
	if (noise_xx_new(c->net->cfg.id, c->net->cfg.network, initiator, &c->hs, &e) != 0)
		return -1;
	if (expect)
		noise_xx_expect_peer(c->hs, expect);
	if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
		return -1;
	if (initiator) {
		uint8_t out[NOISE_XX_OUT_MAX];
		size_t used, olen = 0;
		if (noise_xx_step(c->hs, NULL, 0, &used, out, sizeof(out), &olen, &e) != 0 ||
		    conn_write(c, out, olen) != 0)
			return -1;
		c->hs_t0 = uv_hrtime();
	}
	return 0;
}

static int count_addr(peer_net_t *n, const char *ip)
{
	int k = 0;
	for (peer_conn_t *c = n->head; c; c = c->next)
		if (c->inbound && !c->closing && !strcmp(c->ip, ip))
			k++;
	return k;
}

static void on_connection(uv_stream_t *srv, int status)
{
	peer_net_t *n = srv->data;
	if (status < 0 || n->closing)
		return;
	peer_conn_t *c = conn_new(n, 1);
	if (!c)
		return;
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
		peer_close(c, "accept failed");
		return;
	}
	fill_addr(c);
	uint64_t t = now_ms(n);
	n->accept_tokens += (double)(t - n->t_accept) / 1000.0 * n->cfg.accept_per_sec;
	n->t_accept = t;
	if (n->accept_tokens > 2.0 * n->cfg.accept_per_sec)
		n->accept_tokens = 2.0 * n->cfg.accept_per_sec;
	if (n->accept_tokens < 1) {
		peer_close(c, "accept rate exceeded");
		return;
	}
	n->accept_tokens -= 1;
	if ((uint32_t)n->n_conns > n->cfg.max_conns) {
		peer_close(c, "too many connections");
		return;
	}
	if ((uint32_t)count_addr(n, c->ip) > n->cfg.max_per_addr) {
		peer_close(c, "too many connections from this address");
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (start_handshake(c, 0, NULL) != 0)
		peer_close(c, "cannot start the handshake");
}

struct connect_req {
	uv_connect_t req;
	peer_conn_t *c;
	uint8_t expect[IDENT_PUBLEN];
	int has_expect;
};

static void on_connect(uv_connect_t *req, int status)
{
	struct connect_req *cr = (struct connect_req *)req;
	peer_conn_t *c = cr->c;
	if (status < 0) {
		peer_close(c, uv_strerror(status));
	} else if (!c->closing) {
		fill_addr(c);
		uv_tcp_nodelay(&c->tcp, 1);
		if (start_handshake(c, 1, cr->has_expect ? cr->expect : NULL) != 0)
			peer_close(c, "cannot start the handshake");
	}
	free(cr);
}

int peer_net_connect(peer_net_t *n, const char *host, int port, const uint8_t *expect_id, peer_conn_t **out,
		     err_msg_t *e)
{
	struct sockaddr_storage ss;
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
		return err_set(e, ERR_INVAL, "'%s' is not an IP address", host);
	if (n->closing)
		return err_set(e, ERR_INVAL, "shutting down");
	if ((uint32_t)n->n_conns >= n->cfg.max_conns)
		return err_set(e, ERR_FULL, "too many connections");
	peer_conn_t *c = conn_new(n, 0);
	struct connect_req *cr = calloc(1, sizeof(*cr));
	if (!c || !cr) {
		free(cr);
		if (c)
			peer_close(c, "out of memory");
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	snprintf(c->addr, sizeof(c->addr), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
	snprintf(c->ip, sizeof(c->ip), "%s", host);
	cr->c = c;
	if (expect_id) {
		memcpy(cr->expect, expect_id, IDENT_PUBLEN);
		cr->has_expect = 1;
	}
	int r = uv_tcp_connect(&cr->req, &c->tcp, (const struct sockaddr *)&ss, on_connect);
	if (r != 0) {
		free(cr);
		peer_close(c, uv_strerror(r));
		return err_set(e, ERR_IO, "connect %s:%d: %s", host, port, uv_strerror(r));
	}
	if (out)
		*out = c;
	return 0;
}

static void on_tick(uv_timer_t *t)
{
	peer_net_t *n = t->data;
	uint64_t now = now_ms(n);
	for (peer_conn_t *c = n->head, *next; c; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		if (c->st == PEER_HANDSHAKE && now - c->t_connect > n->cfg.handshake_ms)
			peer_close(c, "handshake timed out");
		else if (now - c->t_last_rx > n->cfg.idle_ms)
			peer_close(c, "idle timeout (nothing received)");
		else if (c->st == PEER_READY && now - c->t_last_ping >= n->cfg.ping_ms)
			send_ping(c);
	}
}

int peer_net_new(uv_loop_t *loop, const peer_cfg_t *cfg, peer_net_t **out, err_msg_t *e)
{
	*out = NULL;
	if (!cfg->id || !cfg->network || !*cfg->network || strlen(cfg->network) > WIRE_MAX_NETWORK)
		return err_set(e, ERR_INVAL, "an identity and a network id of 1..%d bytes are required", WIRE_MAX_NETWORK);
	peer_net_t *n = calloc(1, sizeof(*n));
	if (!n)
		return err_set(e, ERR_NOMEM, "out of memory");
	n->loop = loop;
	n->cfg = *cfg;
	n->t_accept = uv_now(loop);
	n->accept_tokens = 2.0 * cfg->accept_per_sec;
	uv_timer_init(loop, &n->timer);
	n->timer.data = n;
	n->open_handles = 1;
	uv_timer_start(&n->timer, on_tick, PEER_TICK_MS, PEER_TICK_MS);
	*out = n;
	return 0;
}

int peer_net_listen(peer_net_t *n, const char *host, int port, int *bound, err_msg_t *e)
{
	struct sockaddr_storage ss;
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
		return err_set(e, ERR_INVAL, "'%s' is not an IP address", host);
	if (n->listening)
		return err_set(e, ERR_INVAL, "already listening");
	uv_tcp_init(n->loop, &n->listener);
	n->listener.data = n;
	n->listening = 1;
	n->open_handles++;
	int r = uv_tcp_bind(&n->listener, (const struct sockaddr *)&ss, 0);
	if (!r)
		r = uv_listen((uv_stream_t *)&n->listener, 128, on_connection);
	if (r)
		return err_set(e, ERR_IO, "listen on %s:%d: %s", host, port, uv_strerror(r));
	struct sockaddr_storage got;
	int len = sizeof(got);
	uv_tcp_getsockname(&n->listener, (struct sockaddr *)&got, &len);
	if (bound)
		*bound = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
							 : ((struct sockaddr_in *)&got)->sin_port);
	return 0;
}

static void net_handle_closed(uv_handle_t *h)
{
	peer_net_t *n = h->data;
	n->open_handles--;
	net_maybe_done(n);
}

static void net_maybe_done(peer_net_t *n)
{
	if (!n->closing || n->open_handles > 0 || n->head)
		return;
	void (*done)(void *) = n->done;
	void *arg = n->done_arg;
	free(n);
	if (done)
		done(arg);
}

void peer_net_close(peer_net_t *n, void (*done)(void *arg), void *arg)
{
	if (n->closing)
		return;
	n->closing = 1;
	n->done = done;
	n->done_arg = arg;
	for (peer_conn_t *c = n->head; c; c = c->next)
		peer_close(c, "shutting down");
	uv_close((uv_handle_t *)&n->timer, net_handle_closed);
	if (n->listening)
		uv_close((uv_handle_t *)&n->listener, net_handle_closed);
}

int peer_net_count(const peer_net_t *n) { return n->n_conns; }

void peer_net_foreach(peer_net_t *n, void (*fn)(peer_conn_t *c, void *arg), void *arg)
{
	for (peer_conn_t *c = n->head, *next; c; c = next) {
		next = c->next;
		fn(c, arg);
	}
}

int peer_probe(peer_conn_t *c, uint32_t n_bytes)
{
	if (c->st != PEER_READY)
		return ERR_INVAL;
	if (n_bytes < 1024 || n_bytes > WIRE_MAX_PROBE)
		return ERR_RANGE;
	wire_msg_t m;
	memset(&m, 0, sizeof(m));
	m.type = WIRE_PROBE_REQ;
	m.u.probe.probe_id = ++c->probe_id;
	m.u.probe.n_bytes = n_bytes;
	c->probe_t0 = uv_hrtime();
	c->probe_n = n_bytes;
	err_msg_t e;
	return conn_send(c, &m, 0, &e);
}

enum peer_state peer_conn_state(const peer_conn_t *c) { return c->st; }
const uint8_t *peer_conn_id(const peer_conn_t *c) { return c->st == PEER_READY ? c->id : NULL; }
const wire_hello_t *peer_conn_hello(const peer_conn_t *c) { return c->hello_got ? &c->hello : NULL; }
void *peer_conn_user(const peer_conn_t *c) { return c->user; }
void peer_conn_set_user(peer_conn_t *c, void *u) { c->user = u; }

void peer_conn_stats(const peer_conn_t *c, peer_stats_t *s)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->addr, sizeof(s->addr), "%s", c->addr);
	s->inbound = c->inbound;
	s->rtt_ms = c->rtt_ms;
	s->throughput_mbs = c->thr_mbs;
	s->bytes_in = c->bytes_in;
	s->bytes_out = c->bytes_out;
	s->msgs_in = c->msgs_in;
	s->msgs_out = c->msgs_out;
	s->outq = c->outq;
	s->connected_ms = c->t_connect;
}
