/* skill.c - skill definitions, their DHT records and offers, and the relay
 * client (see skill.h). */
#include "api/skill.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "base/log.h"
#include "model/unicode.h"

/* ---- definitions -------------------------------------------------------- */

static int utf8_check(const char *s, size_t n, int allow_newlines, const char *what, err_msg_t *e)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c == 0 || ((c < 0x20 || c == 0x7f) && !(allow_newlines && (c == '\n' || c == '\r' || c == '\t'))))
			return err_set(e, ERR_FORMAT, "%s: control character 0x%02x at byte %zu", what, c, i);
		int k = unicode_valid_prefix((const uint8_t *)s + i, n - i);
		if (k <= 0)
			return err_set(e, ERR_FORMAT, "%s: not valid UTF-8 at byte %zu", what, i);
		i += (size_t)k;
	}
	return 0;
}

int skill_def_load(skill_def_t *d, const char *spec, err_msg_t *e)
{
	memset(d, 0, sizeof(*d));
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec || !eq[1])
		return err_set(e, ERR_INVAL, "--skill expects NAME=PROMPT_FILE, got '%.100s'", spec);
	size_t nl = (size_t)(eq - spec);
	if (nl > ANN_MAX_SKILL_NAME)
		return err_set(e, ERR_RANGE, "skill name of %zu bytes (at most %d)", nl, ANN_MAX_SKILL_NAME);
	memcpy(d->name, spec, nl);
	int rc = ann_skill_name_check(d->name, e);
	if (rc)
		return rc;
	const char *path = eq + 1;
	FILE *f = fopen(path, "rb");
	if (!f)
		return err_set(e, ERR_IO, "skill '%s': cannot open %.200s: %s", d->name, path, strerror(errno));
	char *buf = malloc(SKILL_MAX_PROMPT + 2);
	if (!buf) {
		fclose(f);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	size_t n = fread(buf, 1, SKILL_MAX_PROMPT + 1, f);
	int bad = ferror(f);
	fclose(f);
	if (bad)
		rc = err_set(e, ERR_IO, "skill '%s': cannot read %.200s", d->name, path);
	else if (n > SKILL_MAX_PROMPT)
		rc = err_set(e, ERR_RANGE, "skill '%s': prompt file %.200s is over %u bytes", d->name, path, SKILL_MAX_PROMPT);
	else if (n == 0)
		rc = err_set(e, ERR_RANGE, "skill '%s': prompt file %.200s is empty", d->name, path);
	else
		rc = utf8_check(buf, n, 1, "skill prompt", e);
	if (rc) {
		free(buf);
		return rc;
	}
	/* one trailing newline is the file's, not the prompt's */
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	buf[n] = 0;
	d->prompt = buf;
	d->prompt_len = n;
	return 0;
}

void skill_def_close(skill_def_t *d)
{
	free(d->prompt);
	memset(d, 0, sizeof(*d));
}

static int parse_i64(const char *s, size_t n, int64_t *out)
{
	if (n == 0 || n > 18)
		return -1;
	int64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int skill_price_parse(const char *s, int64_t *fee, int64_t *per_m, err_msg_t *e)
{
	const char *c = strchr(s, ':');
	size_t fl = c ? (size_t)(c - s) : strlen(s);
	*per_m = 0;
	if (parse_i64(s, fl, fee) || (c && parse_i64(c + 1, strlen(c + 1), per_m)))
		return err_set(e, ERR_INVAL, "--skill-price expects FEE:PER_M (micro-units, integers), got '%.100s'", s);
	return 0;
}

int skill_desc_set(skill_def_t *d, const char *desc, err_msg_t *e)
{
	size_t n = strlen(desc);
	if (n > ANN_MAX_SKILL_DESC)
		return err_set(e, ERR_RANGE, "skill description of %zu bytes (at most %d)", n, ANN_MAX_SKILL_DESC);
	int rc = utf8_check(desc, n, 0, "skill description", e);
	if (rc)
		return rc;
	memcpy(d->desc, desc, n + 1);
	return 0;
}

/* ---- records and offers ------------------------------------------------- */

void skill_record(ann_t *a, const skill_def_t *d, const uint8_t model_id[ANN_MODELLEN], const ann_addr_t *gateway,
	const uint8_t *wallet)
{
	memset(a, 0, sizeof(*a));
	a->kind = ANN_SKILL;
	ann_skill_id(d->name, a->model_id);
	memcpy(a->skill_model, model_id, ANN_MODELLEN);
	a->fee_call = d->fee_call;
	a->price_out = d->price_out;
	if (wallet)
		memcpy(a->skill_wallet, wallet, ANN_WALLETLEN);
	a->n_addrs = 1;
	a->addrs[0] = *gateway;
	snprintf(a->skill_name, sizeof(a->skill_name), "%s", d->name);
	snprintf(a->skill_desc, sizeof(a->skill_desc), "%s", d->desc);
}

void skill_index_record(ann_t *a, const skill_def_t *defs, int n)
{
	memset(a, 0, sizeof(*a));
	a->kind = ANN_SKILL_INDEX;
	ann_skill_index_id(a->model_id);
	for (int i = 0; i < n && i < ANN_MAX_SKILLS; i++)
		snprintf(a->skills[a->n_skills++], sizeof(a->skills[0]), "%s", defs[i].name);
}

int skill_announce_all(dht_node_t *dht, const skill_def_t *defs, int n, const uint8_t model_id[ANN_MODELLEN],
	const char *host, const struct sockaddr_storage *ss, int port, const uint8_t *wallet, err_msg_t *e)
{
	ann_addr_t gw;
	uint8_t lo[4] = { 127, 0, 0, 1 };
	struct in6_addr a6;
	struct in_addr a4;
	if (host && inet_pton(AF_INET, host, &a4) == 1)
		ann_addr_set(&gw, 4, &a4, (uint16_t)port);
	else if (host && inet_pton(AF_INET6, host, &a6) == 1)
		ann_addr_set(&gw, 6, &a6, (uint16_t)port);
	else if (host)
		return err_set(e, ERR_INVAL, "skill address '%.100s' is not an IP address", host);
	else if (ss->ss_family == AF_INET)
		ann_addr_set(&gw, 4, &((const struct sockaddr_in *)ss)->sin_addr, (uint16_t)port);
	else
		ann_addr_set(&gw, 6, &((const struct sockaddr_in6 *)ss)->sin6_addr, (uint16_t)port);
	if ((gw.family == 4 && gw.ip[0] == 0) || (gw.family == 6 && IN6_IS_ADDR_UNSPECIFIED((struct in6_addr *)gw.ip))) {
		log_warn("http", "the API listens on every address: skills are announced at 127.0.0.1");
		ann_addr_set(&gw, 4, lo, (uint16_t)port);
	}
	ann_t a;
	for (int i = 0; i < n; i++) {
		/* A priced skill names the wallet it is paid at, so a buyer pays
		 * no one else whoever answers at the address. */
		skill_record(&a, &defs[i], model_id, &gw, wallet && skill_priced(&defs[i]) ? wallet : NULL);
		int r = dht_node_announce(dht, &a, e);
		if (r)
			return r;
		char where[64];
		log_info("http", "skill '%s' offered as model 'skill:%s' at %s", defs[i].name, defs[i].name,
			 ann_addr_str(&gw, where, sizeof(where)));
	}
	skill_index_record(&a, defs, n);
	return dht_node_announce(dht, &a, e);
}

/* Only records of the wanted kind: a view's key could hold another node's
 * record of another kind only if its scope matched, which the decoder's scope
 * checks rule out; this keeps the callers' view simple anyway. */
static size_t keep_kind(ann_t *v, size_t n, int kind)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (v[i].kind == kind)
			v[k++] = v[i];
	return k;
}

size_t skill_offers(dht_node_t *dht, const char *name, int timeout_ms, ann_t *out, size_t cap)
{
	if (!dht || ann_skill_name_check(name, NULL) != 0)
		return 0;
	uint8_t id[ANN_MODELLEN];
	ann_skill_id(name, id);
	size_t cnt = 0;
	ann_t *buf = malloc(sizeof(ann_t) * SKILL_MAX_LISTED);
	if (!buf)
		return 0;
	if (dht_node_peers(dht, id, buf, SKILL_MAX_LISTED, &cnt) != 0) {
		/* first time this name is asked for: look it up, then follow it */
		if (dht_node_lookup(dht, id, timeout_ms, buf, SKILL_MAX_LISTED, &cnt) != 0)
			cnt = 0;
		if (dht_node_watch(dht, id, NULL, NULL) != 0)
			log_debug("skill", "not following skill '%s' (too many keys followed): looked up per call", name);
	}
	if (cnt > SKILL_MAX_LISTED)
		cnt = SKILL_MAX_LISTED;
	cnt = keep_kind(buf, cnt, ANN_SKILL);
	for (size_t i = 0; i < cnt && i < cap; i++)
		out[i] = buf[i];
	free(buf);
	return cnt;
}

static json_t *offer_json(const ann_t *a)
{
	char model[2 * ANN_MODELLEN + 1], node[2 * ANN_IDLEN + 1], addr[64], url[96], id[64];
	sodium_bin2hex(model, sizeof(model), a->skill_model, ANN_MODELLEN);
	sodium_bin2hex(node, sizeof(node), a->node_id, ANN_IDLEN);
	snprintf(url, sizeof(url), "http://%s/v1", ann_addr_str(&a->addrs[0], addr, sizeof(addr)));
	snprintf(id, sizeof(id), SKILL_PREFIX "%s", a->skill_name);
	static const uint8_t zero[ANN_WALLETLEN];
	char wallet[2 * ANN_WALLETLEN + 1];
	sodium_bin2hex(wallet, sizeof(wallet), a->skill_wallet, ANN_WALLETLEN);
	json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:{s:I,s:I},s:s,s:s,s:I,s:s}", "id", id, "object", "skill", "name",
			      a->skill_name, "description", a->skill_desc, "model", model, "price", "fee_per_call",
			      (json_int_t)a->fee_call, "per_1m_output_tokens", (json_int_t)a->price_out, "provider", node,
			      "gateway_url", url, "created", (json_int_t)(a->timestamp_ms / 1000), "owned_by", node);
	/* The wallet the signed offer says it is paid at (null: it collects nothing). */
	if (o)
		json_object_set_new(o, "wallet", memcmp(a->skill_wallet, zero, ANN_WALLETLEN)
							  ? json_string(wallet) : json_null());
	return o;
}

char *skill_list_json(dht_node_t *dht, int timeout_ms)
{
	json_t *data = json_array();
	ann_t *idx = malloc(sizeof(ann_t) * SKILL_MAX_LISTED);
	ann_t *offers = malloc(sizeof(ann_t) * SKILL_MAX_LISTED);
	char (*names)[ANN_MAX_SKILL_NAME + 1] = malloc(sizeof(*names) * SKILL_MAX_LISTED);
	if (!data || !idx || !offers || !names)
		goto out;
	size_t ni = 0, nn = 0, listed = 0;
	uint8_t iid[ANN_MODELLEN];
	ann_skill_index_id(iid);
	if (dht && dht_node_peers(dht, iid, idx, SKILL_MAX_LISTED, &ni) != 0 &&
	    dht_node_lookup(dht, iid, timeout_ms, idx, SKILL_MAX_LISTED, &ni) != 0)
		ni = 0;
	if (ni > SKILL_MAX_LISTED)
		ni = SKILL_MAX_LISTED;
	ni = keep_kind(idx, ni, ANN_SKILL_INDEX);
	/* the names, once each, in the order first seen */
	for (size_t i = 0; i < ni; i++)
		for (int j = 0; j < idx[i].n_skills && nn < SKILL_MAX_LISTED; j++) {
			size_t k = 0;
			while (k < nn && strcmp(names[k], idx[i].skills[j]))
				k++;
			if (k == nn)
				memcpy(names[nn++], idx[i].skills[j], sizeof(names[0]));
		}
	for (size_t k = 0; k < nn && listed < SKILL_MAX_LISTED; k++) {
		size_t no = skill_offers(dht, names[k], timeout_ms, offers, SKILL_MAX_LISTED);
		for (size_t i = 0; i < no && i < SKILL_MAX_LISTED && listed < SKILL_MAX_LISTED; i++, listed++)
			json_array_append_new(data, offer_json(&offers[i]));
	}
out:
	free(idx);
	free(offers);
	free(names);
	if (!data)
		return NULL;
	json_t *o = json_pack("{s:s,s:o}", "object", "list", "data", data);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}

/* ---- the relay client --------------------------------------------------- */

#define FWD_BUF (16u << 10)

enum { B_LENGTH, B_CLOSE, B_CHUNK_SIZE, B_CHUNK_DATA, B_CHUNK_CRLF, B_TRAILER, B_DONE };

struct skill_fwd {
	int fd;
	int status;
	char ctype[128];
	int state;
	uint64_t left;              /* B_LENGTH: bytes of body left; B_CHUNK_DATA: of the chunk */
	int eof;                    /* the peer closed its side */
	char buf[FWD_BUF];
	size_t off, len;            /* unread bytes: buf[off .. len) */
};

void skill_fwd_free(skill_fwd_t *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	free(f);
}

int skill_fwd_from_fd(int fd, skill_fwd_t **out, err_msg_t *e)
{
	*out = calloc(1, sizeof(**out));
	if (!*out) {
		close(fd);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	(*out)->fd = fd;
	return 0;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

int skill_fwd_open(const ann_addr_t *addr, const char *path, const char *body, size_t len, int connect_ms,
	skill_fwd_t **out, err_msg_t *e)
{
	return skill_fwd_open_hdr(addr, path, NULL, body, len, connect_ms, out, e);
}

int skill_fwd_open_hdr(const ann_addr_t *addr, const char *path, const char *extra, const char *body, size_t len,
	int connect_ms, skill_fwd_t **out, err_msg_t *e)
{
	*out = NULL;
	skill_fwd_t *f = calloc(1, sizeof(*f));
	if (!f)
		return err_set(e, ERR_NOMEM, "out of memory");
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t sl;
	if (addr->family == 4) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(addr->port);
		memcpy(&a->sin_addr, addr->ip, 4);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(addr->port);
		memcpy(&a->sin6_addr, addr->ip, 16);
		sl = sizeof(*a);
	}
	char where[64];
	ann_addr_str(addr, where, sizeof(where));
	f->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->fd < 0) {
		skill_fwd_free(f);
		return err_set(e, ERR_IO, "socket: %s", strerror(errno));
	}
	/* Linux bounds a blocking connect (and sends) by the send timeout */
	struct timeval tv = { .tv_sec = connect_ms / 1000, .tv_usec = (connect_ms % 1000) * 1000 };
	setsockopt(f->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(f->fd, (struct sockaddr *)&ss, sl) != 0) {
		int r = err_set(e, ERR_IO, "cannot reach the skill's gateway at %s: %s", where, strerror(errno));
		skill_fwd_free(f);
		return r;
	}
	char head[1536];
	int hl = snprintf(head, sizeof(head),
			  "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: */*\r\n"
			  "%s: 1\r\n%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
			  path, where, SKILL_FWD_HEADER, extra ? extra : "", len);
	if (hl < 0 || (size_t)hl >= sizeof(head) || send_all(f->fd, head, (size_t)hl) || send_all(f->fd, body, len)) {
		int r = err_set(e, ERR_IO, "sending the request to %s failed: %s", where, strerror(errno));
		skill_fwd_free(f);
		return r;
	}
	*out = f;
	return 0;
}

/* Reads what is there (waiting up to wait_ms for something): 1 if bytes came,
 * 0 if none in time, -1 on error; sets f->eof when the peer closed. */
static int fill(skill_fwd_t *f, int wait_ms)
{
	if (f->eof)
		return 0;
	if (f->off > 0) {
		memmove(f->buf, f->buf + f->off, f->len - f->off);
		f->len -= f->off;
		f->off = 0;
	}
	if (f->len == FWD_BUF)
		return -1;   /* a line longer than the buffer */
	struct pollfd p = { .fd = f->fd, .events = POLLIN };
	int r = poll(&p, 1, wait_ms);
	if (r < 0)
		return errno == EINTR ? 0 : -1;
	if (r == 0)
		return 0;
	ssize_t k = recv(f->fd, f->buf + f->len, FWD_BUF - f->len, 0);
	if (k < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (k == 0) {
		f->eof = 1;
		return 0;
	}
	f->len += (size_t)k;
	return 1;
}

/* The line at buf[off..] ending with CRLF: its length (without CRLF), or -1
 * when it has not all arrived. */
static long line_len(const skill_fwd_t *f)
{
	for (size_t i = f->off; i + 1 < f->len; i++)
		if (f->buf[i] == '\r' && f->buf[i + 1] == '\n')
			return (long)(i - f->off);
	return -1;
}

int skill_fwd_head(skill_fwd_t *f, int wait_ms, int *ready, err_msg_t *e)
{
	*ready = 0;
	for (;;) {
		/* the head ends at the first empty line */
		char *end = NULL;
		for (size_t i = f->off; i + 3 < f->len; i++)
			if (!memcmp(f->buf + i, "\r\n\r\n", 4)) {
				end = f->buf + i;
				break;
			}
		if (end) {
			*end = 0;
			char *h = f->buf + f->off;
			int maj, min, st;
			if (sscanf(h, "HTTP/%d.%d %d", &maj, &min, &st) != 3 || maj != 1 || st < 100 || st > 599)
				return err_set(e, ERR_FORMAT, "the skill's gateway did not answer HTTP/1.x");
			f->status = st;
			f->state = B_CLOSE;
			snprintf(f->ctype, sizeof(f->ctype), "application/json");
			for (char *l = strstr(h, "\r\n"); l; l = strstr(l, "\r\n")) {
				l += 2;
				char *v = strchr(l, ':');
				char *nl = strstr(l, "\r\n");
				if (!v || (nl && v > nl))
					continue;
				size_t kl = (size_t)(v - l);
				v++;
				while (*v == ' ' || *v == '\t')
					v++;
				size_t vl = nl ? (size_t)(nl - v) : strlen(v);
				if (kl == 17 && !strncasecmp(l, "Transfer-Encoding", 17) && vl >= 7 && !strncasecmp(v, "chunked", 7))
					f->state = B_CHUNK_SIZE;
				else if (kl == 14 && !strncasecmp(l, "Content-Length", 14) && f->state != B_CHUNK_SIZE) {
					char *x;
					unsigned long long n = strtoull(v, &x, 10);
					if (x == v)
						return err_set(e, ERR_FORMAT, "bad Content-Length from the skill's gateway");
					f->state = B_LENGTH;
					f->left = n;
				} else if (kl == 12 && !strncasecmp(l, "Content-Type", 12) && vl < sizeof(f->ctype))
					snprintf(f->ctype, sizeof(f->ctype), "%.*s", (int)vl, v);
			}
			f->off = (size_t)(end - f->buf) + 4;
			if (f->state == B_LENGTH && f->left == 0)
				f->state = B_DONE;
			*ready = 1;
			return 0;
		}
		if (f->eof)
			return err_set(e, ERR_IO, "the skill's gateway closed the connection before answering");
		int r = fill(f, wait_ms);
		if (r < 0)
			return err_set(e, ERR_FORMAT, "no answer head from the skill's gateway (broken or over %u bytes)", FWD_BUF);
		if (r == 0 && !f->eof)
			return 0;
	}
}

int skill_fwd_status(const skill_fwd_t *f) { return f->status; }
const char *skill_fwd_content_type(const skill_fwd_t *f) { return f->ctype; }
int skill_fwd_done(const skill_fwd_t *f) { return f->state == B_DONE; }

int skill_fwd_read(skill_fwd_t *f, char *buf, size_t max, int wait_ms, size_t *n, err_msg_t *e)
{
	*n = 0;
	for (int waited = 0;;) {
		size_t avail = f->len - f->off;
		long ll;
		switch (f->state) {
		case B_DONE:
			return 0;
		case B_LENGTH:
		case B_CLOSE:
		case B_CHUNK_DATA: {
			size_t k = avail < max ? avail : max;
			if (f->state != B_CLOSE && k > f->left)
				k = (size_t)f->left;
			if (k) {
				memcpy(buf, f->buf + f->off, k);
				f->off += k;
				*n = k;
				if (f->state != B_CLOSE && (f->left -= k) == 0)
					f->state = f->state == B_LENGTH ? B_DONE : B_CHUNK_CRLF;
				return 0;
			}
			if (f->eof) {
				if (f->state == B_CLOSE) {
					f->state = B_DONE;
					return 0;
				}
				return err_set(e, ERR_IO, "the skill's gateway closed the connection mid-answer");
			}
			break;
		}
		case B_CHUNK_SIZE:
			if ((ll = line_len(f)) >= 0) {
				char *x;
				errno = 0;
				unsigned long long cs = strtoull(f->buf + f->off, &x, 16);
				if (x == f->buf + f->off || errno)
					return err_set(e, ERR_FORMAT, "bad chunk size from the skill's gateway");
				f->off += (size_t)ll + 2;
				f->left = cs;
				f->state = cs ? B_CHUNK_DATA : B_TRAILER;
				continue;
			}
			break;
		case B_CHUNK_CRLF:
			if (avail >= 2) {
				if (f->buf[f->off] != '\r' || f->buf[f->off + 1] != '\n')
					return err_set(e, ERR_FORMAT, "chunk not followed by CRLF");
				f->off += 2;
				f->state = B_CHUNK_SIZE;
				continue;
			}
			break;
		case B_TRAILER:
			if ((ll = line_len(f)) >= 0) {
				f->off += (size_t)ll + 2;
				if (ll == 0)
					f->state = B_DONE;
				continue;
			}
			break;
		}
		if (f->eof)
			return err_set(e, ERR_IO, "the skill's gateway closed the connection mid-answer");
		if (waited)
			return 0;
		int r = fill(f, wait_ms);
		if (r < 0)
			return err_set(e, ERR_IO, "reading the skill's answer failed");
		if (r == 0)
			waited = 1;
	}
}
