/* colony node / colony peers: the daemon and a look at what it knows. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/log.h"
#include "cli/cmd.h"
#include "cli/opts.h"
#include "cli/progress.h"
#include "market/amount.h"
#include "swarm/node.h"

static void node_usage(FILE *f)
{
	fprintf(f,
		"usage: colony node [--home DIR] [--port P] [--dht-port Q] [--bootstrap HOST:PORT]...\n"
		"                   [--model M --layers A:B --price X] [options]\n"
		"\n"
		"Runs a node: an ed25519 identity (created in DIR on first start), an encrypted\n"
		"transport (Noise XX over TCP), and DHT discovery. With --model it announces the\n"
		"layers it serves; it finds, connects to and measures (RTT, throughput) every other\n"
		"node of the same model. SIGINT or SIGTERM stop it cleanly (its records are\n"
		"withdrawn with signed tombstones). Logs go to stderr.\n"
		"\n"
		"  --home DIR           identity and control socket (default ~/.colony)\n"
		"  --port P             TCP port of the encrypted transport (default 0: any free port)\n"
		"  --listen HOST        address to listen on (default 127.0.0.1)\n"
		"  --announce HOST[:PORT]  address (and port) to put in records (default: the\n"
		"                       listen address and port); a port is for peers that reach\n"
		"                       this node through a relay or a forwarded port ([V6]:PORT)\n"
		"  --dht-port Q         UDP port of the DHT (default 0: any free port)\n"
		"  --bootstrap HOST:PORT  DHT port of a known node (repeatable); none: this node\n"
		"                       is a bootstrap node\n"
		"  --network NAME       network id (default colony); nodes of other networks\n"
		"                       never see or talk to this one\n"
		"  --model M            GGUF model to serve\n"
		"  --layers A:B         serve layers A..B-1 (default: all)\n"
		"  --price X            micro-units per 1M tokens (default 0)\n"
		"  --price-in P, --price-out Q  paid sessions: micro-units per 1M input (prompt\n"
		"                       positions processed) and output (generated positions) tokens;\n"
		"                       without --price, the larger is announced for routing\n"
		"  --pay-chunk N        tokens served per voucher (default 64); a buyer more than one\n"
		"                       chunk behind is closed with 'payment required'\n"
		"  --require-payment    refuse sessions that open no payment channel\n"
		"  --wallet-home DIR    the wallet paid into (default: --home's wallet.key)\n"
		"  --ledger-peer HOST:PORT  ledger node where vouchers are redeemed when a paid\n"
		"                       session ends\n"
		"  --kv-mem SIZE        KV-cache memory for the sessions served, e.g. 512M, 2G\n"
		"                       (default 512M); sessions that do not fit are refused\n"
		"  --watch MODEL_ID     follow the nodes of a model without serving it\n"
		"  --refresh-ms N       re-announce period (default 60000); records go stale after\n"
		"                       3x this (or --stale-ms)\n"
		"  --stale-ms N         staleness bound of records\n"
		"  --log-level L        debug, info, warn, error (default info)\n"
		"  --log-json           log as JSON lines (and no progress line)\n"
		"  -q, --quiet          no progress line while the model loads\n"
		"  --api HOST:PORT      also serve the OpenAI-compatible HTTP API there (needs\n"
		"                       --model: the file gives the tokenizer, embedding and head;\n"
		"                       generations run through the swarm this node is in). Port 0\n"
		"                       picks a free one; the URL is printed. Keep it on loopback\n"
		"                       unless a key is set\n"
		"  --api-key KEY        require 'Authorization: Bearer KEY' on every API request\n"
		"  --skill NAME=FILE    offer a skill through the API (needs --api; repeatable, up to\n"
		"                       8): FILE's text is the system prompt put before the caller's\n"
		"                       messages when a chat completion names model 'skill:NAME';\n"
		"                       announced in the DHT, listed by GET /v1/skills everywhere\n"
		"  --skill-price FEE:PER_M  the last --skill's price in micro-units: a fee per call and\n"
		"                       a price per 1M output tokens; with --ledger-peer, calls are paid\n"
		"  --skill-desc TEXT    the last --skill's description (up to 200 bytes of UTF-8)\n"
		"  --skill-budget MICRO with --ledger-peer and --api: the budget of each channel reserved\n"
		"                       to pay for priced skills relayed to other gateways (default 1000000)\n"
		"  --pay                with --api and --ledger-peer: the gateway pays the shard\n"
		"                       servers that take payments from this wallet (as colony run\n"
		"                       --pay does), closes a generation's channels when it ends and\n"
		"                       again after the challenge window; its /api/status \"spend\" and\n"
		"                       the node's \"spent\" count what it paid\n"
		"  --budget AMOUNT      with --pay: budget of each channel, in units (default 1)\n"
		"  --ledger DB          run the ledger service on this SQLite file: peers send it\n"
		"                       wallet-signed settlement requests (colony wallet --ledger-peer)\n"
		"  --ledger-operator ADDR  wallet address allowed to deposit, withdraw and slash (a\n"
		"                       stand-in for an external authority; without it, none can)\n"
		"  --ledger-window S    challenge window after a buyer's close, seconds (default 3600)\n"
		"\nexit codes: 0 clean stop, 1 runtime error, 2 usage, 3 bad model file\n");
}

static int parse_layers(const char *s, int *a, int *b)
{
	char *end;
	long x = strtol(s, &end, 10);
	if (end == s || *end != ':')
		return -1;
	const char *p = end + 1;
	long y = strtol(p, &end, 10);
	if (end == p || *end || x < 0 || y <= x || y > 65536)
		return -1;
	*a = (int)x;
	*b = (int)y;
	return 0;
}

/* --announce: "HOST", "A.B.C.D:PORT", "[V6]:PORT" or a bare IPv6 address (no
 * port). The host is copied into buf when a port follows it. */
static int parse_announce(const char *s, char *buf, size_t cap, const char **host, int *port)
{
	const char *colon = strrchr(s, ':'), *ps;
	size_t hl;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || (rb[1] && rb[1] != ':'))
			return -1;
		hl = (size_t)(rb - s - 1);
		s++;
		ps = rb[1] ? rb + 2 : NULL;
	} else if (!colon || strchr(s, ':') != colon) {
		*host = s;   /* no port: a host name or address, or a bare IPv6 address */
		*port = 0;
		return 0;
	} else {
		hl = (size_t)(colon - s);
		ps = colon + 1;
	}
	if (hl == 0 || hl >= cap)
		return -1;
	memcpy(buf, s, hl);
	buf[hl] = 0;
	*host = buf;
	*port = 0;
	if (ps) {
		char *end;
		long p = strtol(ps, &end, 10);
		if (end == ps || *end || p < 1 || p > 65535)
			return -1;
		*port = (int)p;
	}
	return 0;
}

/* "512M", "2G", "65536": bytes with an optional K/M/G/T suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (*s < '0' || *s > '9')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	int shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v == 0 || v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int log_opts(const char *a, const char *v)
{
	if (!strcmp(v, "debug")) log_setup(LOG_DEBUG, 0);
	else if (!strcmp(v, "info")) log_setup(LOG_INFO, 0);
	else if (!strcmp(v, "warn")) log_setup(LOG_WARN, 0);
	else if (!strcmp(v, "error")) log_setup(LOG_ERROR, 0);
	else {
		fprintf(stderr, "colony: %s expects debug, info, warn or error\n", a);
		return -1;
	}
	return 0;
}

static const char *default_home(char *buf, size_t cap)
{
	const char *h = getenv("HOME");
	snprintf(buf, cap, "%s/.colony", h && *h ? h : ".");
	return buf;
}

/* Once the node is up: the end of the loading progress, then with --api
 * the gateway, which stops after the node. */
struct api_hook {
	cmd_api_opts_t o;
	skill_def_t skills[SKILL_MAX_LOCAL];
	http_gw_t *gw;
	prog_t prog;
	int prog_on;
};

static int api_started(void *ud, dht_node_t *dht, const gguf_t *g, const uint8_t *model_id, err_msg_t *e)
{
	struct api_hook *a = ud;
	if (a->prog_on) {
		a->prog_on = 0;
		prog_done(&a->prog, "up");
	}
	if (!a->o.listen)
		return 0;
	return cmd_api_start(&a->o, g, model_id, dht, &a->gw, e);
}

/* What the gateway's swarm client paid providers (node "status": "spent"). */
static int64_t api_spent(void *ud)
{
	struct api_hook *a = ud;
	if (!a->gw)
		return 0;
	swarm_view_t v;
	swarm_client_view(http_gw_client(a->gw), &v);
	http_stats_t st;
	http_gw_stats(a->gw, &st);   /* and the skills it paid for (skill_pay.h) */
	return v.spent_total + (int64_t)st.skill_spent;
}

static void api_stopped(void *ud)
{
	struct api_hook *a = ud;
	http_gw_free(a->gw);
	a->gw = NULL;
}

static void skills_close(struct api_hook *a)
{
	for (int i = 0; i < a->o.n_skills; i++)
		skill_def_close(&a->skills[i]);
	a->o.n_skills = 0;
}

/* --skill NAME=FILE, and --skill-price / --skill-desc for the last one. */
static int skill_opt(struct api_hook *a, const char *opt, const char *v)
{
	err_msg_t e = { { 0 } };
	int r;
	if (!strcmp(opt, "--skill")) {
		if (a->o.n_skills >= SKILL_MAX_LOCAL) {
			fprintf(stderr, "colony: at most %d --skill\n", SKILL_MAX_LOCAL);
			return -1;
		}
		skill_def_t *d = &a->skills[a->o.n_skills];
		if ((r = skill_def_load(d, v, &e)) == 0) {
			for (int i = 0; i < a->o.n_skills; i++)
				if (!strcmp(a->skills[i].name, d->name))
					r = err_set(&e, ERR_INVAL, "skill '%s' given twice", d->name);
			if (r)
				skill_def_close(d);
			else
				a->o.n_skills++;
		}
	} else if (a->o.n_skills == 0) {
		r = err_set(&e, ERR_INVAL, "%s applies to the --skill before it", opt);
	} else if (!strcmp(opt, "--skill-price")) {
		skill_def_t *d = &a->skills[a->o.n_skills - 1];
		r = skill_price_parse(v, &d->fee_call, &d->price_out, &e);
	} else {
		r = skill_desc_set(&a->skills[a->o.n_skills - 1], v, &e);
	}
	if (r) {
		fprintf(stderr, "colony: %s\n", e.msg);
		skills_close(a);
	}
	return r ? -1 : 0;
}

int cmd_node(int argc, char **argv)
{
	struct api_hook api;
	memset(&api, 0, sizeof(api));
	node_cfg_t c;
	node_cfg_default(&c);
	char homebuf[1024], annbuf[64];
	int json = 0, quiet = 0, price_set = 0;
	enum log_level lvl = LOG_INFO;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		long n;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			node_usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--log-json")) {
			json = 1;
			continue;
		}
		if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			quiet = 1;
			continue;
		}
		if (!strcmp(a, "--require-payment")) {
			c.require_payment = 1;
			continue;
		}
		if (!strcmp(a, "--pay")) {
			api.o.pay_shards = 1;
			continue;
		}
		if (!(v = opt_arg(argc, argv, &i)))
			return CMD_EXIT_USAGE;
		if (!strcmp(a, "--home")) c.home = v;
		else if (!strcmp(a, "--listen")) c.listen_host = v;
		else if (!strcmp(a, "--announce")) {
			if (parse_announce(v, annbuf, sizeof(annbuf), &c.announce_host, &c.announce_port)) {
				fprintf(stderr, "colony: --announce expects HOST, HOST:PORT or [V6]:PORT, got '%s'\n", v);
				return CMD_EXIT_USAGE;
			}
		} else if (!strcmp(a, "--network")) c.network = v;
		else if (!strcmp(a, "--model") || !strcmp(a, "-m")) c.model_path = v;
		else if (!strcmp(a, "--watch")) c.watch_model = v;
		else if (!strcmp(a, "--api")) api.o.listen = v;
		else if (!strcmp(a, "--api-key")) api.o.key = v;
		else if (!strcmp(a, "--skill") || !strcmp(a, "--skill-price") || !strcmp(a, "--skill-desc")) {
			if (skill_opt(&api, a, v))
				return CMD_EXIT_USAGE;
		}
		else if (!strcmp(a, "--port")) {
			if (opt_int(a, v, 0, 65535, &n)) return CMD_EXIT_USAGE;
			c.port = (int)n;
		} else if (!strcmp(a, "--dht-port")) {
			if (opt_int(a, v, 0, 65535, &n)) return CMD_EXIT_USAGE;
			c.dht_port = (int)n;
		} else if (!strcmp(a, "--bootstrap")) {
			if (c.n_bootstrap >= NODE_MAX_BOOTSTRAP) {
				fprintf(stderr, "colony: at most %d --bootstrap\n", NODE_MAX_BOOTSTRAP);
				return CMD_EXIT_USAGE;
			}
			c.bootstrap[c.n_bootstrap++] = v;
		} else if (!strcmp(a, "--layers")) {
			if (parse_layers(v, &c.layer_a, &c.layer_b)) {
				fprintf(stderr, "colony: --layers expects A:B with 0 <= A < B, got '%s'\n", v);
				return CMD_EXIT_USAGE;
			}
		} else if (!strcmp(a, "--price")) {
			if (opt_u64(a, v, &c.price)) return CMD_EXIT_USAGE;
			price_set = 1;
		} else if (!strcmp(a, "--price-in") || !strcmp(a, "--price-out")) {
			uint64_t p;
			if (opt_u64(a, v, &p)) return CMD_EXIT_USAGE;
			if (p > (uint64_t)AMOUNT_MAX) {
				fprintf(stderr, "colony: %s: at most %lld\n", a, (long long)AMOUNT_MAX);
				return CMD_EXIT_USAGE;
			}
			*(a[8] == 'i' ? &c.price_in : &c.price_out) = (int64_t)p;
		} else if (!strcmp(a, "--pay-chunk")) {
			if (opt_int(a, v, 1, 1 << 20, &n)) return CMD_EXIT_USAGE;
			c.pay_chunk = (uint32_t)n;
		} else if (!strcmp(a, "--skill-budget")) {
			uint64_t b;
			if (opt_u64(a, v, &b) || b == 0 || b > (uint64_t)AMOUNT_MAX) {
				fprintf(stderr, "colony: --skill-budget expects micro-units, 1..%lld\n", (long long)AMOUNT_MAX);
				return CMD_EXIT_USAGE;
			}
			api.o.skill_budget = (int64_t)b;
		} else if (!strcmp(a, "--budget")) {
			err_msg_t be = { { 0 } };
			if (amount_parse(v, &api.o.shard_budget, &be) != 0 || api.o.shard_budget <= 0) {
				fprintf(stderr, "colony: --budget expects a positive amount: %s\n", be.msg[0] ? be.msg : v);
				return CMD_EXIT_USAGE;
			}
		} else if (!strcmp(a, "--wallet-home")) {
			c.wallet_home = v;
		} else if (!strcmp(a, "--ledger-peer")) {
			c.ledger_peer = v;
		} else if (!strcmp(a, "--kv-mem")) {
			if (parse_size(v, &c.kv_mem)) {
				fprintf(stderr, "colony: --kv-mem expects a size such as 512M or 2G, got '%s'\n", v);
				return CMD_EXIT_USAGE;
			}
		} else if (!strcmp(a, "--refresh-ms")) {
			if (opt_u64(a, v, &c.refresh_ms) || c.refresh_ms < 100) {
				fprintf(stderr, "colony: --refresh-ms must be at least 100\n");
				return CMD_EXIT_USAGE;
			}
		} else if (!strcmp(a, "--stale-ms")) {
			if (opt_u64(a, v, &c.stale_ms)) return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "--ledger")) {
			c.ledger_db = v;
		} else if (!strcmp(a, "--ledger-operator")) {
			c.ledger_operator = v;
		} else if (!strcmp(a, "--ledger-window")) {
			if (opt_int(a, v, 1, 1L << 30, &n)) return CMD_EXIT_USAGE;
			c.ledger_window = n;
		} else if (!strcmp(a, "--log-level")) {
			if (log_opts(a, v)) return CMD_EXIT_USAGE;
			lvl = log_level_get();
		} else {
			fprintf(stderr, "colony: node: unknown option '%s'\n", a);
			node_usage(stderr);
			return CMD_EXIT_USAGE;
		}
	}
	log_setup(lvl, json);
	if (!c.home)
		c.home = default_home(homebuf, sizeof(homebuf));
	if (!c.model_path && c.layer_b) {
		fprintf(stderr, "colony: --layers needs --model\n");
		return CMD_EXIT_USAGE;
	}
	err_msg_t e = { { 0 } };
	api.o.skills = api.skills;
	if (api.o.n_skills && !api.o.listen) {
		fprintf(stderr, "colony: --skill needs --api (skills are served through the gateway)\n");
		skills_close(&api);
		return CMD_EXIT_USAGE;
	}
	if (api.o.pay_shards && (!api.o.listen || !c.ledger_peer)) {
		fprintf(stderr, "colony: --pay (the gateway pays shard servers) needs --api and --ledger-peer\n");
		skills_close(&api);
		return CMD_EXIT_USAGE;
	}
	if (api.o.listen) {
		if (!c.model_path) {
			fprintf(stderr, "colony: --api needs --model (the tokenizer, embedding and head)\n");
			return CMD_EXIT_USAGE;
		}
		api.o.model_path = c.model_path;
		api.o.network = c.network;
		api.o.stale_ms = c.stale_ms;
		/* priced skills are paid (both ways) through the node's wallet and ledger */
		api.o.pay_ledger = c.ledger_peer;
		api.o.pay_wallet_home = c.wallet_home ? c.wallet_home : c.home;
		api.o.skill_chunk = c.pay_chunk;
	}
	c.on_started = api_started;
	c.on_stopped = api_stopped;
	c.hook_ud = &api;
	c.earned_ref = &api.o.earned;
	c.spent = api_spent;
	if (c.model_path && !json) {
		/* JSON logs stay JSON: no progress line among them */
		char what[300];
		const char *base = strrchr(c.model_path, '/');
		snprintf(what, sizeof(what), "node: loading %s", base ? base + 1 : c.model_path);
		prog_init(&api.prog, what, quiet);
		api.prog_on = 1;
		prog_watch_start(&api.prog);
	}
	if (!price_set && (c.price_in || c.price_out))
		c.price = (uint64_t)(c.price_in > c.price_out ? c.price_in : c.price_out);
	int r = node_run(&c, &e);
	if (api.prog_on) {
		api.prog_on = 0;
		prog_done(&api.prog, "failed");
	}
	skills_close(&api);
	if (r) {
		fprintf(stderr, "colony: node: %s\n", e.msg[0] ? e.msg : err_str(r));
		return r == ERR_FORMAT || r == ERR_UNSUPPORTED || r == ERR_TRUNCATED ? CMD_EXIT_BADFILE
		     : r == ERR_RANGE || r == ERR_INVAL ? CMD_EXIT_USAGE : CMD_EXIT_ERROR;
	}
	return 0;
}

static void peers_usage(FILE *f)
{
	fprintf(f,
		"usage: colony peers [--home DIR] [--json] [--status]\n"
		"\n"
		"Asks the node running with this home directory (through DIR/control.sock) which\n"
		"peers it knows: id, address, model and layers served, price, RTT, throughput and\n"
		"the age of their record. --json prints one JSON object per peer; --status prints\n"
		"the node's own status as JSON (with \"earned\": micro-units redeemed for sessions\n"
		"it served, and \"spent\": what its --api gateway paid providers), then a line\n"
		"\"earned X units, spent Y units\".\n"
		"\nexit codes: 0 ok, 1 no node is running there, 2 usage\n");
}

/* Sends one command line to the control socket, returns the reply (malloc'd). */
static char *ctl_query(const char *home, const char *cmd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", home, NODE_CONTROL_SOCK) >= sizeof(sa.sun_path))
		return NULL;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	size_t cl = strlen(cmd);
	if (write(fd, cmd, cl) != (ssize_t)cl) {
		close(fd);
		return NULL;
	}
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			break;
		if (n + 1 >= cap) {
			char *nb = cap < (64u << 20) ? realloc(buf, cap *= 2) : NULL;
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
		}
		ssize_t k = read(fd, buf + n, cap - 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	if (buf)
		buf[n] = 0;
	return buf;
}

static const char *jfield(const char *line, const char *key, char *out, size_t cap)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(line, pat);
	out[0] = 0;
	if (!p)
		return out;
	p += strlen(pat);
	size_t i = 0;
	if (*p == '"') {
		p++;
		while (*p && *p != '"' && i + 1 < cap)
			out[i++] = *p++;
	} else if (*p == '[') {
		while (*p && *p != ']' && i + 2 < cap)
			out[i++] = *p++;
		out[i++] = ']';
	} else {
		while (*p && *p != ',' && *p != '}' && i + 1 < cap)
			out[i++] = *p++;
	}
	out[i] = 0;
	return out;
}

int cmd_peers(int argc, char **argv)
{
	const char *home = NULL;
	char homebuf[1024];
	int json = 0, status = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			peers_usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--status")) {
			status = 1;
		} else if (!strcmp(argv[i], "--home")) {
			if (!(home = opt_arg(argc, argv, &i)))
				return CMD_EXIT_USAGE;
		} else {
			fprintf(stderr, "colony: peers: unknown option '%s'\n", argv[i]);
			peers_usage(stderr);
			return CMD_EXIT_USAGE;
		}
	}
	if (!home)
		home = default_home(homebuf, sizeof(homebuf));
	char *r = ctl_query(home, status ? "status\n" : "peers\n");
	if (!r) {
		fprintf(stderr, "colony: peers: no node is running with home %s\n", home);
		return CMD_EXIT_ERROR;
	}
	char *end = strstr(r, "\n.\n");
	if (!end && strncmp(r, ".\n", 2) == 0)
		end = r - 1;
	if (end)
		end[1] = 0;
	if (json || status) {
		fputs(r, stdout);
		if (status && !json) {
			/* the market in a line (amounts in units, as the wallet prints them) */
			char v[40], ea[AMOUNT_STRLEN], sa[AMOUNT_STRLEN];
			long long earned = atoll(jfield(r, "earned", v, sizeof(v))), spent = atoll(jfield(r, "spent", v, sizeof(v)));
			printf("earned %s units, spent %s units\n", amount_format(earned, ea), amount_format(spent, sa));
		}
		free(r);
		return 0;
	}
	printf("%-16s  %-21s  %-12s  %-9s  %10s  %9s  %11s  %8s  %s\n", "id", "address", "model", "layers", "price",
	       "rtt ms", "MB/s", "age s", "seq");
	int count = 0;
	for (char *line = strtok(r, "\n"); line; line = strtok(NULL, "\n")) {
		if (line[0] != '{')
			continue;
		char id[80], addr[80], model[80], layers[40], price[40], rtt[40], thr[40], age[40], seq[40];
		jfield(line, "short", id, sizeof(id));
		jfield(line, "addr", addr, sizeof(addr));
		jfield(line, "model", model, sizeof(model));
		model[12] = 0;
		jfield(line, "layers", layers, sizeof(layers));
		jfield(line, "price", price, sizeof(price));
		jfield(line, "rtt_ms", rtt, sizeof(rtt));
		jfield(line, "throughput_mbs", thr, sizeof(thr));
		jfield(line, "age_ms", age, sizeof(age));
		jfield(line, "seq", seq, sizeof(seq));
		printf("%-16s  %-21s  %-12s  %-9s  %10s  %9s  %11s  %8.1f  %s\n", id, addr, model, layers, price,
		       atof(rtt) < 0 ? "-" : rtt, atof(thr) < 0 ? "-" : thr, atof(age) / 1000.0, seq);
		count++;
	}
	printf("%d peer%s\n", count, count == 1 ? "" : "s");
	free(r);
	return 0;
}
