/* cmd_wallet.c - `colony wallet`: the wallet's address, backups, and the
 * settlement operations against a local ledger database (--ledger) or a
 * ledger node (--ledger-peer), through the same settle.h interface. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cli/cmd.h"
#include "cli/opts.h"
#include "market/chstore.h"
#include "market/ledger.h"
#include "market/settle_remote.h"
#include "market/voucher.h"
#include "market/vstore.h"
#include "market/wallet.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: colony wallet [--home DIR] COMMAND [ARGS] [options]\n"
		"  address                  print the wallet address (creates the wallet on first use)\n"
		"  export FILE [--encrypt]  write a backup (never over an existing file; mode 0600)\n"
		"  import FILE              install a backup as this home's wallet (refused if it has one)\n"
		"ledger commands (with --ledger DB or --ledger-peer HOST:PORT; signed by this wallet):\n"
		"  balance [ADDR]           balance, stake and reserved budgets (default: this wallet)\n"
		"  deposit AMOUNT / withdraw AMOUNT [--to ADDR]   a ledger node takes these only from\n"
		"                           its operator wallet\n"
		"  stake AMOUNT / unstake AMOUNT\n"
		"  reserve PROVIDER BUDGET [--expiry SECS]   open a channel; prints its id\n"
		"  redeem VOUCHERS          redeem hex vouchers (a file, one a line, or one hex string)\n"
		"  close CHANNEL [--as buyer|provider]   / channel CHANNEL\n"
		"  audit --ledger DB        check every invariant of a ledger file\n"
		"  reclaim                  close (as buyer) every channel in this home's channels.db\n"
		"                           that is not closed yet: the first close starts the challenge\n"
		"                           window, one after it refunds the unspent budget\n"
		"local stores (no ledger needed):\n"
		"  channels                 the channels this wallet reserved as buyer (channels.db)\n"
		"  vouchers                 the best voucher per channel this wallet was paid with as a\n"
		"                           provider, and what the ledger confirmed (vouchers.db)\n"
		"  voucher CHANNEL AMOUNT [--seq N] [--count K] [--in I --out O]   print K vouchers\n"
		"                           signed by this wallet: sequences N.., cumulative amounts\n"
		"                           AMOUNT x 1..K, counts I and O x 1..K (default in 0, out =\n"
		"                           the sequence); offline\n"
		"options:\n"
		"  --home DIR               where wallet.key lives (default ~/.colony)\n"
		"  --ledger DB              a local ledger file\n"
		"  --ledger-peer HOST:PORT  a ledger node (colony node --ledger), over the encrypted\n"
		"                           transport; --ledger-id HEX pins its node id, --network NAME\n"
		"                           its network (default colony), --timeout-ms N per request\n"
		"  --resend                 send the last request again (tests the replay guard: exit 4\n"
		"                           when the ledger refuses it)\n"
		"  --passphrase-file F      the passphrase, first line of F (else $COLONY_PASSPHRASE);\n"
		"                           --encrypt needs one, import of an encrypted backup too\n"
		"  --fast-kdf               Argon2id 'interactive' cost instead of 'moderate' (tests)\n"
		"amounts are in units with up to 6 decimals (1.5 = 1,500,000 micro-units)\n");
}

/* The passphrase from a file's first line or the environment; NULL if neither. */
static char *passphrase_get(const char *file)
{
	if (file) {
		FILE *f = fopen(file, "r");
		if (!f) {
			fprintf(stderr, "colony: wallet: cannot read %s\n", file);
			return NULL;
		}
		char *p = sodium_malloc(1024);
		if (p && !fgets(p, 1024, f))
			p[0] = 0;
		fclose(f);
		if (p)
			p[strcspn(p, "\r\n")] = 0;
		return p;
	}
	const char *env = getenv("COLONY_PASSPHRASE");
	if (!env)
		return NULL;
	char *p = sodium_malloc(strlen(env) + 1);
	if (p)
		memcpy(p, env, strlen(env) + 1);
	return p;
}

/* ---- the ledger commands: a local file (--ledger) or a ledger node
 * (--ledger-peer), both through settle.h ---- */

typedef struct lopts {
	const char *db, *peer, *peer_id, *network, *to, *as;
	int64_t expiry_s;
	uint64_t seq, count;
	uint64_t in_tokens, out_tokens;   /* voucher: counts of the first one (--in/--out) */
	int counts_set;
	int timeout_ms, resend;
} lopts_t;

static int hex_arg(const char *what, const char *s, uint8_t *out, size_t n)
{
	size_t got = 0;
	if (strlen(s) != 2 * n || sodium_hex2bin(out, n, s, strlen(s), NULL, &got, NULL) != 0 || got != n) {
		fprintf(stderr, "colony: wallet: %s must be %zu hex digits, got '%s'\n", what, 2 * n, s);
		return CMD_EXIT_USAGE;
	}
	return 0;
}

static void print_account(const settle_account_t *a)
{
	char b1[AMOUNT_STRLEN], b2[AMOUNT_STRLEN], b3[AMOUNT_STRLEN];
	printf("balance %s  stake %s  reserved %s\n", amount_format(a->balance, b1), amount_format(a->stake, b2),
		amount_format(a->reserved, b3));
}

static void print_channel(const settle_channel_t *c)
{
	static const char *const st[] = { "open", "closing", "closed" };
	char h[2 * MARKET_IDLEN + 1], b1[AMOUNT_STRLEN], b2[AMOUNT_STRLEN], b3[AMOUNT_STRLEN];
	printf("channel %s  %s  budget %s  redeemed %s  refunded %s  last_seq %llu  expiry %lld  close_at %lld\n",
		sodium_bin2hex(h, sizeof(h), c->id, MARKET_IDLEN), c->state >= 0 && c->state <= 2 ? st[c->state] : "?",
		amount_format(c->budget, b1), amount_format(c->redeemed, b2), amount_format(c->refunded, b3),
		(unsigned long long)c->last_seq, (long long)c->expiry, (long long)c->close_at);
}

/* `voucher CHANNEL AMOUNT`: count vouchers signed by this wallet, sequences
 * seq.., cumulative amounts AMOUNT x 1, 2, ... (one hex line each). Offline. */
static int voucher_cmd(const char *chan, const char *amount_s, const lopts_t *o, const wallet_t *w)
{
	voucher_t v;
	memset(&v, 0, sizeof(v));
	err_msg_t e = { "" };
	amount_t step = 0;
	if (!amount_s || hex_arg("CHANNEL", chan, v.channel, MARKET_IDLEN) || amount_parse(amount_s, &step, &e)) {
		if (e.msg[0])
			fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return CMD_EXIT_USAGE;
	}
	for (uint64_t i = 1; i <= o->count; i++) {
		uint8_t buf[VOUCHER_SIZE];
		char hex[2 * VOUCHER_SIZE + 1];
		v.seq = o->seq + i - 1;
		v.in_tokens = o->counts_set ? o->in_tokens * i : 0;
		v.out_tokens = o->counts_set ? o->out_tokens * i : v.seq;
		if (amount_mul(step, i, &v.amount) || voucher_sign(&v, w) || voucher_encode(&v, buf)) {
			fprintf(stderr, "colony: wallet: voucher %llu is out of range\n", (unsigned long long)i);
			return CMD_EXIT_USAGE;
		}
		printf("%s\n", sodium_bin2hex(hex, sizeof(hex), buf, sizeof(buf)));
	}
	return 0;
}

/* `redeem VOUCHERS`: a file of hex vouchers, one a line (or one hex
 * voucher), redeemed in order; one line "seq S paid X" each. */
static int redeem_cmd(settle_t *s, const char *arg)
{
	FILE *f = fopen(arg, "r");
	char line[2 * VOUCHER_SIZE + 8];
	int rc = 0;
	for (;;) {
		const char *hex = arg;
		if (f) {
			if (!fgets(line, sizeof(line), f))
				break;
			line[strcspn(line, "\r\n")] = 0;
			if (!line[0])
				continue;
			hex = line;
		}
		uint8_t buf[VOUCHER_SIZE];
		voucher_t v;
		err_msg_t e = { "" };
		amount_t paid = 0;
		if (hex_arg("a voucher", hex, buf, sizeof(buf)) || voucher_decode(buf, sizeof(buf), &v, &e)) {
			if (e.msg[0])
				fprintf(stderr, "colony: wallet: %s\n", e.msg);
			rc = CMD_EXIT_BADFILE;
			break;
		}
		if (settle_redeem(s, &v, (int64_t)time(NULL), &paid, &e)) {
			fprintf(stderr, "colony: wallet: redeem of seq %llu: %s\n", (unsigned long long)v.seq, e.msg);
			rc = CMD_EXIT_ERROR;
			break;
		}
		char b[AMOUNT_STRLEN];
		printf("seq %llu paid %s\n", (unsigned long long)v.seq, amount_format(paid, b));
		fflush(stdout);
		if (!f)
			break;
	}
	if (f)
		fclose(f);
	return rc;
}

static int audit_cmd(const lopts_t *o)
{
	if (!o->db) {
		fprintf(stderr, "colony: wallet audit needs --ledger DB (the database file itself)\n");
		return CMD_EXIT_USAGE;
	}
	err_msg_t e = { "" };
	ledger_t *l = NULL;
	ledger_totals_t t;
	if (ledger_open(o->db, NULL, &l, &e) != 0) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	int rc = ledger_audit(l, &t, &e);
	ledger_free(l);
	if (rc) {
		fprintf(stderr, "colony: wallet: audit failed: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	char d[AMOUNT_STRLEN], wd[AMOUNT_STRLEN], b[AMOUNT_STRLEN], st[AMOUNT_STRLEN], rs[AMOUNT_STRLEN],
		rd[AMOUNT_STRLEN], rf[AMOUNT_STRLEN];
	printf("audit ok: deposits %s withdrawals %s balances %s stakes %s reserved %s redeemed %s refunded %s "
		"accounts %lld channels %lld redemptions %lld\n", amount_format(t.deposits, d),
		amount_format(t.withdrawals, wd), amount_format(t.balances, b), amount_format(t.stakes, st),
		amount_format(t.reserved, rs), amount_format(t.redeemed, rd), amount_format(t.refunded, rf),
		(long long)t.accounts, (long long)t.channels, (long long)t.redemptions);
	return 0;
}

/* ---- the local stores: channels.db (buyer) and vouchers.db (provider) ---- */

static char *hex_str(const uint8_t *b, size_t n, char *out)
{
	return sodium_bin2hex(out, 2 * n + 1, b, n);
}

static int print_chan_rec(void *ud, const chstore_chan_t *c)
{
	(void)ud;
	char id[2 * MARKET_IDLEN + 1], pr[2 * WALLET_PUBLEN + 1], b[AMOUNT_STRLEN], rd[AMOUNT_STRLEN],
		rf[AMOUNT_STRLEN];
	printf("channel %s  %s  provider %s  budget %s  redeemed %s  refunded %s  expiry %lld  close_at %lld  "
		"ledger %s\n", hex_str(c->id, MARKET_IDLEN, id), chstore_state_str(c->state),
		hex_str(c->provider, WALLET_PUBLEN, pr), amount_format(c->budget, b), amount_format(c->redeemed, rd),
		amount_format(c->refunded, rf), (long long)c->expiry, (long long)c->close_at, c->ledger);
	return 0;
}

static int print_voucher_rec(void *ud, const vstore_entry_t *en)
{
	(void)ud;
	char id[2 * MARKET_IDLEN + 1], a[AMOUNT_STRLEN], r[AMOUNT_STRLEN], hex[2 * VOUCHER_SIZE + 1];
	uint8_t buf[VOUCHER_SIZE];
	if (voucher_encode(&en->best, buf) != 0)
		return 0;
	printf("channel %s  seq %llu  amount %s  redeemed_seq %llu  redeemed %s  %s%s%s  voucher %s\n",
		hex_str(en->best.channel, MARKET_IDLEN, id), (unsigned long long)en->best.seq,
		amount_format(en->best.amount, a), (unsigned long long)en->redeemed_seq, amount_format(en->redeemed, r),
		vstore_entry_pending(en) ? "pending" : en->refused ? "refused" : "redeemed", en->refused ? ": " : "",
		en->refused ? en->why : "", hex_str(buf, VOUCHER_SIZE, hex));
	return 0;
}

static int store_cmd(const char *cmd, const char *home)
{
	err_msg_t e = { "" };
	size_t bad = 0;
	int rc;
	if (!strcmp(cmd, "channels")) {
		chstore_t *cs = NULL;
		if ((rc = chstore_open(home, &cs, &e)) == 0)
			rc = chstore_foreach(cs, print_chan_rec, NULL, &bad, &e);
		chstore_free(cs);
	} else {
		vstore_t *vs = NULL;
		if ((rc = vstore_open(home, &vs, &e)) == 0)
			rc = vstore_foreach(vs, print_voucher_rec, NULL, &bad, &e);
		vstore_free(vs);
	}
	if (bad)
		fprintf(stderr, "colony: wallet: %zu malformed rows skipped\n", bad);
	if (rc) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return rc == ERR_FORMAT ? CMD_EXIT_BADFILE : CMD_EXIT_ERROR;
	}
	return bad ? CMD_EXIT_BADFILE : 0;
}

struct chan_list {
	chstore_chan_t *v;
	int n, cap;
};

static int collect_chan(void *ud, const chstore_chan_t *c)
{
	struct chan_list *l = ud;
	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 16;
		chstore_chan_t *nv = realloc(l->v, sizeof(*nv) * (size_t)cap);
		if (!nv)
			return ERR_NOMEM;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = *c;
	return 0;
}

/* `reclaim`: closes as buyer every recorded channel not closed yet, at this
 * ledger (records naming another ledger node are left alone). A first close
 * starts the challenge window (the provider may still redeem); a close after
 * it refunds the rest; closing a closing channel early changes nothing. */
static int reclaim_cmd(settle_t *s, const uint8_t *ledger_id, const char *home)
{
	err_msg_t e = { "" };
	chstore_t *cs = NULL;
	struct chan_list l = { NULL, 0, 0 };
	size_t bad = 0;
	int rc = chstore_open(home, &cs, &e);
	if (rc == 0)
		rc = chstore_foreach(cs, collect_chan, &l, &bad, &e);
	if (rc) {
		fprintf(stderr, "colony: wallet: %s\n", rc == ERR_NOMEM ? "out of memory" : e.msg);
		chstore_free(cs);
		free(l.v);
		return CMD_EXIT_ERROR;
	}
	static const uint8_t zero[WALLET_PUBLEN];
	int n_closed = 0, n_closing = 0, n_gone = 0, n_failed = 0, n_other = 0;
	amount_t refunded = 0;
	for (int i = 0; i < l.n; i++) {
		const chstore_chan_t *c = &l.v[i];
		char id[2 * MARKET_IDLEN + 1];
		hex_str(c->id, MARKET_IDLEN, id);
		if (c->state == CHSTORE_CLOSED || c->state == CHSTORE_GONE)
			continue;
		if (ledger_id && memcmp(c->ledger_id, zero, WALLET_PUBLEN) && memcmp(c->ledger_id, ledger_id, WALLET_PUBLEN)) {
			n_other++;
			continue;
		}
		int64_t now = (int64_t)time(NULL);
		settle_channel_t ch;
		err_msg_t ce = { "" };
		int r = settle_close(s, c->id, SETTLE_BY_BUYER, now, &ch, &ce);
		int st = -1;
		if (r == 0) {
			st = ch.state == SETTLE_CLOSED ? CHSTORE_CLOSED : ch.state == SETTLE_CLOSING ? CHSTORE_CLOSING
												 : CHSTORE_OPEN;
			print_channel(&ch);
			if (st == CHSTORE_CLOSED) {
				n_closed++;
				refunded += ch.refunded;
			} else
				n_closing++;
		} else if (r == ERR_NOTFOUND && now >= c->expiry) {
			/* Past its expiry a reserve is refused: the channel can never exist. */
			st = CHSTORE_GONE;
			memset(&ch, 0, sizeof(ch));
			printf("channel %s  gone (never reserved)\n", id);
			n_gone++;
		} else if (r == ERR_NOTFOUND) {
			printf("channel %s  not at the ledger (a lost reserve; kept until its expiry %lld)\n", id,
				(long long)c->expiry);
		} else {
			fprintf(stderr, "colony: wallet: close of %.16s: %s\n", id, ce.msg);
			n_failed++;
		}
		if (st >= 0 && chstore_set(cs, c->id, st, ch.close_at, ch.redeemed, ch.refunded, (int64_t)time(NULL), &e))
			fprintf(stderr, "colony: wallet: %s\n", e.msg);
	}
	char rf[AMOUNT_STRLEN];
	printf("reclaim: %d closed (refunded %s), %d closing, %d gone, %d failed%s\n", n_closed,
		amount_format(refunded, rf), n_closing, n_gone, n_failed, n_other ? " (others at other ledgers)" : "");
	if (bad)
		fprintf(stderr, "colony: wallet: %zu malformed rows skipped\n", bad);
	chstore_free(cs);
	free(l.v);
	return n_failed ? CMD_EXIT_ERROR : 0;
}

/* "HOST:PORT" (the last colon splits, so "[::1]:7000" and "::1:7000" work). */
static int split_hostport(const char *s, char *host, size_t cap, int *port)
{
	const char *c = strrchr(s, ':');
	if (!c || c == s || (size_t)(c - s) >= cap)
		return -1;
	char *end = NULL;
	long p = strtol(c + 1, &end, 10);
	if (!end || *end || p < 1 || p > 65535)
		return -1;
	size_t n = (size_t)(c - s);
	if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
		memcpy(host, s + 1, n - 2);
		host[n - 2] = 0;
	} else {
		memcpy(host, s, n);
		host[n] = 0;
	}
	*port = (int)p;
	return 0;
}

static int ledger_cmd(const char *cmd, const char *arg, const char *arg2, const lopts_t *o, const wallet_t *w,
		      const char *home)
{
	if (!strcmp(cmd, "audit"))
		return audit_cmd(o);
	err_msg_t e = { "" };
	amount_t amount = 0;
	uint8_t key[32], to[WALLET_PUBLEN];
	memcpy(to, wallet_pub(w), WALLET_PUBLEN);
	if (o->to && wallet_addr_parse(o->to, to, &e) != 0) {
		fprintf(stderr, "colony: wallet: --to: %s\n", e.msg);
		return CMD_EXIT_USAGE;
	}
	int is_amount = !strcmp(cmd, "deposit") || !strcmp(cmd, "withdraw") || !strcmp(cmd, "stake") ||
		!strcmp(cmd, "unstake");
	const char *amount_s = is_amount ? arg : !strcmp(cmd, "reserve") ? arg2 : NULL;
	if (amount_s && amount_parse(amount_s, &amount, &e) != 0) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return CMD_EXIT_USAGE;
	}
	if ((!strcmp(cmd, "reserve") && wallet_addr_parse(arg, key, &e) != 0) ||
	    ((!strcmp(cmd, "close") || !strcmp(cmd, "channel")) && hex_arg("CHANNEL", arg, key, 32))) {
		if (e.msg[0])
			fprintf(stderr, "colony: wallet: PROVIDER: %s\n", e.msg);
		return CMD_EXIT_USAGE;
	}
	if (!strcmp(cmd, "balance") && arg && wallet_addr_parse(arg, to, &e) != 0) {
		fprintf(stderr, "colony: wallet: ADDR: %s\n", e.msg);
		return CMD_EXIT_USAGE;
	}

	ledger_t *l = NULL;
	settle_remote_t *sr = NULL;
	settle_t s;
	if (o->db) {
		if (ledger_open(o->db, NULL, &l, &e) != 0) {
			fprintf(stderr, "colony: wallet: %s\n", e.msg);
			return CMD_EXIT_ERROR;
		}
		s = ledger_settle(l);
	} else {
		settle_remote_cfg_t rc;
		settle_remote_cfg_default(&rc);
		char host[256];
		uint8_t lid[WALLET_PUBLEN];
		if (split_hostport(o->peer, host, sizeof(host), &rc.port) != 0) {
			fprintf(stderr, "colony: wallet: --ledger-peer expects HOST:PORT, got '%s'\n", o->peer);
			return CMD_EXIT_USAGE;
		}
		if (o->peer_id) {
			if (hex_arg("--ledger-id", o->peer_id, lid, sizeof(lid)))
				return CMD_EXIT_USAGE;
			rc.ledger_id = lid;
		}
		rc.host = host;
		if (o->network)
			rc.network = o->network;
		rc.wallet = w;
		if (o->timeout_ms)
			rc.timeout_ms = o->timeout_ms;
		signal(SIGPIPE, SIG_IGN);   /* a ledger gone mid-call is an error to report, not our death */
		if (settle_remote_new(&rc, &sr, &e) != 0) {
			fprintf(stderr, "colony: wallet: %s\n", e.msg);
			return CMD_EXIT_ERROR;
		}
		s = settle_remote_settle(sr);
	}

	int64_t now = (int64_t)time(NULL);
	int rc = 0;
	settle_account_t a;
	settle_channel_t ch;
	if (!strcmp(cmd, "redeem")) {
		rc = redeem_cmd(&s, arg);
	} else if (!strcmp(cmd, "reclaim")) {
		rc = reclaim_cmd(&s, sr ? settle_remote_ledger_id(sr) : NULL, home);
	} else if (!strcmp(cmd, "reserve")) {
		settle_reserve_t r;
		uint8_t id[MARKET_IDLEN];
		char hex[2 * MARKET_IDLEN + 1];
		memcpy(r.buyer, wallet_pub(w), WALLET_PUBLEN);
		memcpy(r.provider, key, WALLET_PUBLEN);
		r.budget = amount;
		r.expiry = now + o->expiry_s;
		randombytes_buf(r.nonce, sizeof(r.nonce));
		rc = settle_reserve(&s, &r, now, id, &e);
		if (rc == 0)
			printf("%s\n", sodium_bin2hex(hex, sizeof(hex), id, sizeof(id)));
	} else if (!strcmp(cmd, "close") || !strcmp(cmd, "channel")) {
		if (!strcmp(cmd, "close"))
			rc = settle_close(&s, key, o->as && !strcmp(o->as, "provider") ? SETTLE_BY_PROVIDER : SETTLE_BY_BUYER,
				now, &ch, &e);
		else
			rc = settle_channel(&s, key, &ch, &e);
		if (rc == 0)
			print_channel(&ch);
	} else {
		if (!strcmp(cmd, "deposit"))
			rc = settle_deposit(&s, to, amount, &e);
		else if (!strcmp(cmd, "withdraw"))
			rc = settle_withdraw(&s, to, amount, &e);
		else if (!strcmp(cmd, "stake"))
			rc = settle_stake(&s, to, amount, &e);
		else if (!strcmp(cmd, "unstake"))
			rc = settle_unstake(&s, to, amount, &e);
		if (rc == 0)
			rc = settle_account(&s, to, &a, &e);
		if (rc == 0)
			print_account(&a);
	}
	if (rc && rc != CMD_EXIT_ERROR && rc != CMD_EXIT_BADFILE) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		rc = CMD_EXIT_ERROR;
	}
	if (rc == 0 && o->resend) {
		if (!sr) {
			fprintf(stderr, "colony: wallet: --resend needs --ledger-peer\n");
			rc = CMD_EXIT_USAGE;
		} else if (settle_remote_resend_last(sr, &e) == 0) {
			fprintf(stderr, "colony: wallet: the resent request was accepted\n");
			rc = CMD_EXIT_ERROR;
		} else {
			printf("resend refused: %s\n", e.msg);
			rc = 4;   /* distinct, so a test tells "refused" from other failures */
		}
	}
	settle_remote_free(sr);
	ledger_free(l);
	return rc;
}

/* Positional arguments of each command: min, max. -1: unknown command. */
static int cmd_args(const char *cmd, int *max)
{
	static const struct { const char *name; int min, max; } t[] = {
		{ "address", 0, 0 }, { "export", 1, 1 }, { "import", 1, 1 }, { "balance", 0, 1 },
		{ "deposit", 1, 1 }, { "withdraw", 1, 1 }, { "stake", 1, 1 }, { "unstake", 1, 1 },
		{ "reserve", 2, 2 }, { "redeem", 1, 1 }, { "close", 1, 1 }, { "channel", 1, 1 },
		{ "voucher", 2, 2 }, { "audit", 0, 0 }, { "reclaim", 0, 0 }, { "channels", 0, 0 },
		{ "vouchers", 0, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (!strcmp(cmd, t[i].name)) {
			*max = t[i].max;
			return t[i].min;
		}
	return -1;
}

int cmd_wallet(int argc, char **argv)
{
	const char *home = NULL, *pass_file = NULL, *cmd = NULL, *arg = NULL, *arg2 = NULL;
	int encrypt = 0, fast = 0, npos = 0;
	lopts_t lo;
	memset(&lo, 0, sizeof(lo));
	lo.expiry_s = 86400;
	lo.seq = 1;
	lo.count = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		uint64_t u = 0;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--encrypt")) {
			encrypt = 1;
		} else if (!strcmp(a, "--fast-kdf")) {
			fast = 1;
		} else if (!strcmp(a, "--resend")) {
			lo.resend = 1;
		} else if (a[0] == '-' && a[1]) {
			if (!(v = opt_arg(argc, argv, &i)))
				return CMD_EXIT_USAGE;
			if (!strcmp(a, "--home")) home = v;
			else if (!strcmp(a, "--passphrase-file")) pass_file = v;
			else if (!strcmp(a, "--ledger")) lo.db = v;
			else if (!strcmp(a, "--ledger-peer")) lo.peer = v;
			else if (!strcmp(a, "--ledger-id")) lo.peer_id = v;
			else if (!strcmp(a, "--network")) lo.network = v;
			else if (!strcmp(a, "--to")) lo.to = v;
			else if (!strcmp(a, "--as")) {
				if (strcmp(v, "buyer") && strcmp(v, "provider")) {
					fprintf(stderr, "colony: wallet: --as expects buyer or provider\n");
					return CMD_EXIT_USAGE;
				}
				lo.as = v;
			} else if (!strcmp(a, "--expiry") || !strcmp(a, "--seq") || !strcmp(a, "--count") ||
				   !strcmp(a, "--timeout-ms") || !strcmp(a, "--in") || !strcmp(a, "--out")) {
				if (opt_u64(a, v, &u))
					return CMD_EXIT_USAGE;
				if (!strcmp(a, "--expiry") && u >= 1 && u <= (1u << 30)) lo.expiry_s = (int64_t)u;
				else if (!strcmp(a, "--seq") && u >= 1 && u < (1ull << 62)) lo.seq = u;
				else if (!strcmp(a, "--count") && u >= 1 && u <= 1000000) lo.count = u;
				else if (!strcmp(a, "--in") && u < (1ull << 40)) lo.in_tokens = u, lo.counts_set = 1;
				else if (!strcmp(a, "--out") && u < (1ull << 40)) lo.out_tokens = u, lo.counts_set = 1;
				else if (!strcmp(a, "--timeout-ms") && u >= 1 && u <= 3600000) lo.timeout_ms = (int)u;
				else {
					fprintf(stderr, "colony: wallet: %s %s is out of range\n", a, v);
					return CMD_EXIT_USAGE;
				}
			} else {
				fprintf(stderr, "colony: wallet: unknown option %s\n", a);
				usage(stderr);
				return CMD_EXIT_USAGE;
			}
		} else if (!cmd) {
			cmd = a;
		} else if (npos == 0) {
			arg = a;
			npos++;
		} else if (npos == 1) {
			arg2 = a;
			npos++;
		} else {
			fprintf(stderr, "colony: wallet: unexpected argument %s\n", a);
			return CMD_EXIT_USAGE;
		}
	}
	int maxargs = 0, minargs = cmd ? cmd_args(cmd, &maxargs) : -1;
	if (minargs < 0 || npos < minargs || npos > maxargs) {
		usage(stderr);
		return CMD_EXIT_USAGE;
	}
	int local = !strcmp(cmd, "address") || !strcmp(cmd, "export") || !strcmp(cmd, "import") ||
		!strcmp(cmd, "voucher") || !strcmp(cmd, "channels") || !strcmp(cmd, "vouchers");
	if (!local && !lo.db && !lo.peer) {
		fprintf(stderr, "colony: wallet %s needs --ledger DB (a local file) or --ledger-peer HOST:PORT "
			"(a ledger node)\n", cmd);
		return CMD_EXIT_USAGE;
	}
	if (lo.db && lo.peer) {
		fprintf(stderr, "colony: wallet: --ledger and --ledger-peer exclude each other\n");
		return CMD_EXIT_USAGE;
	}
	if (sodium_init() < 0) {   /* sodium_malloc below needs it */
		fprintf(stderr, "colony: wallet: libsodium failed to initialise\n");
		return CMD_EXIT_ERROR;
	}
	char homebuf[1024];
	if (!home) {
		const char *h = getenv("HOME");
		snprintf(homebuf, sizeof(homebuf), "%s/.colony", h && *h ? h : ".");
		home = homebuf;
	}
	err_msg_t e = { "" };
	wallet_t *w = NULL;
	char addr[WALLET_ADDR_STRLEN];
	int rc = CMD_EXIT_OK;
	if (!strcmp(cmd, "import")) {
		char *pass = passphrase_get(pass_file);
		int r = wallet_import(home, arg, pass, &w, &e);
		sodium_free(pass);
		if (r) {
			fprintf(stderr, "colony: wallet: %s\n", e.msg);
			return r == ERR_FORMAT ? CMD_EXIT_BADFILE : CMD_EXIT_ERROR;
		}
		printf("%s\n", wallet_addr_str(wallet_pub(w), addr));
		wallet_free(w);
		return 0;
	}
	int created = 0;
	if (wallet_load_or_create(home, &w, &created, &e) != 0) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	if (created)
		fprintf(stderr, "colony: created a new wallet in %s/%s\n", home, WALLET_FILE_NAME);
	if (!strcmp(cmd, "address")) {
		printf("%s\n", wallet_addr_str(wallet_pub(w), addr));
	} else if (!strcmp(cmd, "export")) {
		char *pass = NULL;
		if (encrypt && !(pass = passphrase_get(pass_file))) {
			fprintf(stderr, "colony: wallet: --encrypt needs --passphrase-file or $COLONY_PASSPHRASE\n");
			rc = CMD_EXIT_USAGE;
		} else {
			wallet_kdf_t k;
			if (fast)
				wallet_kdf_interactive(&k);
			else
				wallet_kdf_moderate(&k);
			if (wallet_export(w, arg, pass, &k, &e) != 0) {
				fprintf(stderr, "colony: wallet: %s\n", e.msg);
				rc = CMD_EXIT_ERROR;
			}
		}
		sodium_free(pass);
	} else if (!strcmp(cmd, "voucher")) {
		rc = voucher_cmd(arg, arg2, &lo, w);
	} else if (!strcmp(cmd, "channels") || !strcmp(cmd, "vouchers")) {
		rc = store_cmd(cmd, home);
	} else {
		rc = ledger_cmd(cmd, arg, arg2, &lo, w, home);
	}
	wallet_free(w);
	return rc;
}
