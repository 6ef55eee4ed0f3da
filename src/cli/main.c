/* main.c - the colony command: dispatches to subcommands (cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "cli/cmd.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} cmds[] = {
	{ "run", cmd_run, "generate text with a local model" },
	{ "bench", cmd_bench, "measure prompt and generation speed" },
	{ "mkmodel", cmd_mkmodel, "write a synthetic random-weight Llama GGUF" },
	{ "inspect", cmd_inspect, "validate a GGUF file and list its metadata and tensors" },
	{ "node", cmd_node, "run a node: identity, encrypted transport, DHT discovery" },
	{ "peers", cmd_peers, "list the peers a running node knows" },
	{ "swarm", cmd_swarm, "start a local swarm and generate through it" },
	{ "api", cmd_api, "serve the OpenAI-compatible HTTP API for a swarm (a client, no layers)" },
	{ "wallet", cmd_wallet, "the wallet: address, backups, balance in a local ledger" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: colony <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
	fprintf(f, "\n'colony <command> --help' describes a command.\n"
		"exit codes: 0 ok, 1 runtime error, 2 usage error, 3 bad input file\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CMD_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("colony %s\n", COLONY_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "colony: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return CMD_EXIT_USAGE;
}
