/* cmd.h - subcommands of the colony binary. Only src/cli/ may exit(). */
#ifndef COLONY_CLI_CMD_H
#define COLONY_CLI_CMD_H

#define COLONY_VERSION "0.1.0"

/* Exit codes, documented in README.md. */
enum {
	CMD_EXIT_OK = 0,
	CMD_EXIT_ERROR = 1,    /* a runtime failure */
	CMD_EXIT_USAGE = 2,    /* bad command line */
	CMD_EXIT_BADFILE = 3,  /* an input file is malformed or unsupported */
};

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_node(int argc, char **argv);
int cmd_peers(int argc, char **argv);
int cmd_swarm(int argc, char **argv);

#endif
