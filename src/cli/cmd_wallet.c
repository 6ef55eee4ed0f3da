/* cmd_wallet.c - `colony wallet`: the wallet's address, backups, and, with a
 * local ledger database, balance, deposit and withdraw. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli/cmd.h"
#include "cli/opts.h"
#include "market/ledger.h"
#include "market/wallet.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: colony wallet [--home DIR] COMMAND\n"
		"  address                  print the wallet address (creates the wallet on first use)\n"
		"  export FILE [--encrypt]  write a backup (never over an existing file; mode 0600)\n"
		"  import FILE              install a backup as this home's wallet (refused if it has one)\n"
		"  balance --ledger DB      balance, stake and reserved budgets in a local ledger\n"
		"  deposit AMOUNT --ledger DB / withdraw AMOUNT --ledger DB\n"
		"options:\n"
		"  --home DIR               where wallet.key lives (default ~/.colony)\n"
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

static int ledger_cmd(const char *cmd, const char *amount_s, const char *db, const wallet_t *w)
{
	err_msg_t e = { "" };
	amount_t amount = 0;
	if (strcmp(cmd, "balance") && amount_parse(amount_s, &amount, &e) != 0) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return CMD_EXIT_USAGE;
	}
	ledger_t *l = NULL;
	if (ledger_open(db, NULL, &l, &e) != 0) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	int rc = 0;
	if (!strcmp(cmd, "deposit"))
		rc = ledger_deposit(l, wallet_pub(w), amount, &e);
	else if (!strcmp(cmd, "withdraw"))
		rc = ledger_withdraw(l, wallet_pub(w), amount, &e);
	settle_account_t a;
	if (rc == 0)
		rc = ledger_account(l, wallet_pub(w), &a, &e);
	ledger_free(l);
	if (rc) {
		fprintf(stderr, "colony: wallet: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	char b1[AMOUNT_STRLEN], b2[AMOUNT_STRLEN], b3[AMOUNT_STRLEN];
	printf("balance %s  stake %s  reserved %s\n", amount_format(a.balance, b1), amount_format(a.stake, b2),
		amount_format(a.reserved, b3));
	return 0;
}

int cmd_wallet(int argc, char **argv)
{
	const char *home = NULL, *pass_file = NULL, *db = NULL, *cmd = NULL, *arg = NULL;
	int encrypt = 0, fast = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--home")) {
			if (!(home = opt_arg(argc, argv, &i)))
				return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "--passphrase-file")) {
			if (!(pass_file = opt_arg(argc, argv, &i)))
				return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "--ledger")) {
			if (!(db = opt_arg(argc, argv, &i)))
				return CMD_EXIT_USAGE;
		} else if (!strcmp(a, "--encrypt")) {
			encrypt = 1;
		} else if (!strcmp(a, "--fast-kdf")) {
			fast = 1;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "colony: wallet: unknown option %s\n", a);
			usage(stderr);
			return CMD_EXIT_USAGE;
		} else if (!cmd) {
			cmd = a;
		} else if (!arg) {
			arg = a;
		} else {
			fprintf(stderr, "colony: wallet: unexpected argument %s\n", a);
			return CMD_EXIT_USAGE;
		}
	}
	int needs_arg = cmd && (!strcmp(cmd, "export") || !strcmp(cmd, "import") || !strcmp(cmd, "deposit") ||
		!strcmp(cmd, "withdraw"));
	int known = cmd && (needs_arg || !strcmp(cmd, "address") || !strcmp(cmd, "balance"));
	if (!known || (needs_arg && !arg) || (!needs_arg && arg)) {
		usage(stderr);
		return CMD_EXIT_USAGE;
	}
	int ledger_op = !strcmp(cmd, "balance") || !strcmp(cmd, "deposit") || !strcmp(cmd, "withdraw");
	if (ledger_op && !db) {
		fprintf(stderr, "colony: wallet %s needs --ledger DB (the ledger service is not reachable yet)\n", cmd);
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
	} else {
		rc = ledger_cmd(cmd, arg, db, w);
	}
	wallet_free(w);
	return rc;
}
