/* peer.h - encrypted peer connections on a libuv loop.
 *
 * A peer_net_t owns a listening socket and every connection, inbound and
 * outbound. Each connection runs the Noise XX handshake (noise_xx.h), then
 * exchanges wire messages (wire.h) one per encrypted frame (frame.h). The
 * first message each side sends is HELLO; a connection is READY once both
 * HELLOs agree on a version and the network id.
 *
 * Defences (all limits in peer_cfg_t; defaults in peer_cfg_default):
 *   - total and per-remote-address connection limits, and an accept rate;
 *   - a handshake deadline and an idle deadline (no bytes received);
 *   - a token bucket per connection on received messages and bytes;
 *   - a cap on bytes queued for sending: peer_send refuses past it, and a
 *     peer that does not read its keepalive replies is cut off, so a slow
 *     peer never grows our memory without bound;
 *   - any malformed handshake, bad MAC, oversized frame or undecodable
 *     message closes that connection only (logged with the reason).
 * Keepalive: a PING every ping_ms; PONGs give the RTT. Probes: PROBE_REQ /
 * PROBE_DATA / PROBE_ACK measure throughput. Both are kept as moving
 * averages per connection (peer_stats).
 *
 * Threads: everything runs on the loop's thread. Memory of a connection is
 * freed in its close callback; a peer_conn_t pointer is valid until the
 * state callback reports PEER_CLOSED for it (and not after).
 */
#ifndef COLONY_NET_PEER_H
#define COLONY_NET_PEER_H

#include <stdint.h>
#include <uv.h>

#include "base/err.h"
#include "net/ident.h"
#include "net/wire.h"

typedef struct peer_net peer_net_t;
typedef struct peer_conn peer_conn_t;

enum peer_state { PEER_HANDSHAKE = 0, PEER_READY = 1, PEER_CLOSED = 2 };

/* A READY connection received a message that is not handled here (every
 * type but HELLO, PING, PONG, PROBE_*). m's views live during the call. */
typedef void (*peer_msg_cb)(peer_conn_t *c, const wire_msg_t *m, void *user);
/* A connection became READY or CLOSED (why: a short reason, for logs). */
typedef void (*peer_state_cb)(peer_conn_t *c, enum peer_state st, const char *why, void *user);

typedef struct peer_cfg {
	const ident_t *id;         /* borrowed */
	const char *network;       /* network id, 1..64 printable bytes */
	const char *software;      /* HELLO software string */
	uint64_t caps;             /* HELLO capabilities */
	uint32_t max_conns;        /* all connections */
	uint32_t max_per_addr;     /* per remote IP address */
	uint32_t accept_per_sec;   /* new inbound connections per second (burst = 2x) */
	uint32_t handshake_ms;     /* handshake and HELLO deadline */
	uint32_t idle_ms;          /* close after this long without receiving a byte */
	uint32_t ping_ms;          /* keepalive interval */
	size_t max_outq;           /* bytes queued for sending per connection */
	double msgs_per_sec;       /* received messages, sustained (burst = 2 s worth) */
	double bytes_per_sec;      /* received bytes, sustained (burst = 2 s worth) */
	peer_msg_cb on_msg;
	peer_state_cb on_state;
	void *user;
} peer_cfg_t;

void peer_cfg_default(peer_cfg_t *c);

typedef struct peer_stats {
	char addr[64];             /* "ip:port" of the remote end */
	int inbound;
	double rtt_ms;             /* moving average; < 0 until measured */
	double throughput_mbs;     /* moving average of probe transfers, MB/s; < 0 until measured */
	uint64_t bytes_in, bytes_out, msgs_in, msgs_out;
	size_t outq;               /* bytes queued now */
	uint64_t connected_ms;     /* loop time it connected */
} peer_stats_t;

int peer_net_new(uv_loop_t *loop, const peer_cfg_t *cfg, peer_net_t **out, err_msg_t *e) WUR;
/* Listens on host:port (port 0 = ephemeral; *bound gets the port). */
int peer_net_listen(peer_net_t *n, const char *host, int port, int *bound, err_msg_t *e) WUR;
/* Dials host:port; expect_id (may be NULL) refuses any other node. The
 * connection reports READY or CLOSED through on_state. */
int peer_net_connect(peer_net_t *n, const char *host, int port, const uint8_t *expect_id,
		     peer_conn_t **out, err_msg_t *e) WUR;
/* Closes every connection and the listener; done(arg) runs when all handles
 * are closed and the peer_net_t has been freed. */
void peer_net_close(peer_net_t *n, void (*done)(void *arg), void *arg);
int peer_net_count(const peer_net_t *n);
/* Calls fn for each connection (READY or not). */
void peer_net_foreach(peer_net_t *n, void (*fn)(peer_conn_t *c, void *arg), void *arg);

/* Sends one message. ERR_FULL when the send queue is over max_outq (nothing
 * queued), ERR_INVAL when the connection is not READY, or the codec's error. */
int peer_send(peer_conn_t *c, const wire_msg_t *m, err_msg_t *e) WUR;
/* Closes one connection (on_state reports CLOSED with why). */
void peer_close(peer_conn_t *c, const char *why);
/* Starts a throughput probe: asks the peer for n bytes (1 KiB..WIRE_MAX_PROBE). */
int peer_probe(peer_conn_t *c, uint32_t n_bytes) WUR;

enum peer_state peer_conn_state(const peer_conn_t *c);
const uint8_t *peer_conn_id(const peer_conn_t *c);     /* node id once READY, else NULL */
const wire_hello_t *peer_conn_hello(const peer_conn_t *c);   /* the peer's HELLO once READY */
void peer_conn_stats(const peer_conn_t *c, peer_stats_t *s);
void *peer_conn_user(const peer_conn_t *c);
void peer_conn_set_user(peer_conn_t *c, void *u);

#endif
