/* colony swarm: a local swarm on 127.0.0.1, then a generation through it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "cli/cmd.h"
#include "cli/opts.h"
#include "cli/progress.h"
#include "base/log.h"
#include "model/synth.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: colony swarm [-m MODEL] [-p PROMPT] [--nodes N] [--replicas R] [options]\n"
		"\n"
		"Starts, on 127.0.0.1, a bootstrap node and N shard nodes that split the model's\n"
		"layers evenly into N/R spans, each span served by R nodes; then generates from the\n"
		"prompt through the swarm (as `colony run --swarm`) and shows the route and the\n"
		"tokens/s. With no -m, the synthetic model of `colony run`. The nodes are stopped\n"
		"at the end unless --keep-running.\n"
		"\n"
		"  -m, --model FILE     GGUF model (default: a small synthetic one)\n"
		"  --nodes N            shard nodes (default 6)\n"
		"  --replicas R         nodes serving each span (default 2; N must be a multiple)\n"
		"  --chaos              kill (SIGKILL) a random shard node mid-generation\n"
		"  --keep-running       keep the swarm up after the generation until interrupted\n"
		"  --api HOST:PORT      instead of one generation, serve the OpenAI-compatible HTTP\n"
		"                       API there through the swarm until interrupted (port 0: a\n"
		"                       free one; the URL is printed on stdout)\n"
		"  --api-key KEY        require 'Authorization: Bearer KEY' on API requests\n"
		"  --home DIR           where the nodes keep their identities and logs\n"
		"                       (default: a new folder under $TMPDIR)\n"
		"  --refresh-ms N       the nodes re-announce every N ms (default 60000)\n"
		"  --stale-ms N         records older than N ms drop out of the nodes' and the\n"
		"                       gateway's views (default 3 x refresh): how soon a killed\n"
		"                       node disappears from /api/status and the dashboard\n"
		"  --log-level L        the nodes' log level (debug, info, warn, error)\n"
		"  --log-json           the nodes (and the gateway) log JSON lines\n"
		"  -q, --quiet          no progress line while the swarm starts\n"
		"  --prefer price|speed|reputation, --prefer-weights P:S:R  route policy of the\n"
		"                       generation and of the --api gateway (see colony run)\n"
		"The PID of every node is printed (\"colony: node I serves layers [A, B) (pid P)\").\n"
		"  every option of `colony run` (-p, -n, --temp, --seed, --wire, ...) applies\n"
		"\nexit codes: 0 ok, 1 error, 2 usage, 3 bad model file\n");
}

static pid_t spawn(char *const argv[], const char *log)
{
	pid_t p = fork();
	if (p == 0) {
		FILE *f = freopen(log, "a", stderr);
		(void)f;
		if (!freopen("/dev/null", "w", stdout))
			_exit(127);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	return p;
}

static int read_port(const char *log, const char *key, int wait_ms)
{
	for (int t = 0; t < wait_ms / 50; t++) {
		FILE *f = fopen(log, "r");
		char line[512];
		while (f && fgets(line, sizeof(line), f)) {
			char *p = strstr(line, key);
			if (p) {
				fclose(f);
				return atoi(p + strlen(key));
			}
		}
		if (f)
			fclose(f);
		usleep(50000);
	}
	return -1;
}

static volatile sig_atomic_t g_stop;
static void on_sig(int s) { g_stop = 1; }

int cmd_swarm(int argc, char **argv)
{
	long nodes = 6, replicas = 2;
	int chaos = 0, keep = 0, log_json = 0, quiet = 0;
	const char *refresh_ms = NULL, *stale_ms = NULL, *log_level = NULL;
	const char *model = NULL, *home = NULL, *api = NULL, *api_key = NULL, *network = "colony";
	/* Our options; everything else is passed on to `colony run`. */
	char **run_argv = calloc((size_t)argc + 16, sizeof(char *));
	int ra = 0;
	if (!run_argv)
		return CMD_EXIT_ERROR;
	run_argv[ra++] = "run";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			free(run_argv);
			return 0;
		} else if (!strcmp(a, "--chaos")) {
			chaos = 1;
		} else if (!strcmp(a, "--keep-running")) {
			keep = 1;
		} else if (!strcmp(a, "--log-json")) {
			log_json = 1;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			quiet = 1;
		} else if (!strcmp(a, "--refresh-ms") || !strcmp(a, "--stale-ms") || !strcmp(a, "--log-level")) {
			long n;
			if (!(v = opt_arg(argc, argv, &i)) ||
			    (strcmp(a, "--log-level") && opt_int(a, v, strcmp(a, "--refresh-ms") ? 1 : 100, 1L << 40, &n))) {
				free(run_argv);
				return CMD_EXIT_USAGE;
			}
			if (!strcmp(a, "--refresh-ms"))
				refresh_ms = v;
			else if (!strcmp(a, "--stale-ms"))
				stale_ms = v;
			else
				log_level = v;
		} else if (!strcmp(a, "--api") || !strcmp(a, "--api-key")) {
			if (!(v = opt_arg(argc, argv, &i))) {
				free(run_argv);
				return CMD_EXIT_USAGE;
			}
			if (!strcmp(a, "--api"))
				api = v;
			else
				api_key = v;
		} else if (!strcmp(a, "--nodes") || !strcmp(a, "--replicas") || !strcmp(a, "--home") ||
			   !strcmp(a, "-m") || !strcmp(a, "--model")) {
			if (!(v = opt_arg(argc, argv, &i))) {
				free(run_argv);
				return CMD_EXIT_USAGE;
			}
			if (!strcmp(a, "--nodes") && opt_int(a, v, 1, 64, &nodes)) { free(run_argv); return CMD_EXIT_USAGE; }
			if (!strcmp(a, "--replicas") && opt_int(a, v, 1, 64, &replicas)) { free(run_argv); return CMD_EXIT_USAGE; }
			if (!strcmp(a, "--home")) home = v;
			if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
		} else {
			run_argv[ra++] = argv[i];
		}
	}
	/* --prefer / --prefer-weights (passed on to `run`) steer the gateway too */
	const char *pn = NULL, *pw = NULL;
	for (int i = 1; i + 1 < ra; i++) {
		if (!strcmp(run_argv[i], "--prefer"))
			pn = run_argv[i + 1];
		else if (!strcmp(run_argv[i], "--prefer-weights"))
			pw = run_argv[i + 1];
	}
	route_cost_t pc;
	route_cost_default(&pc);
	err_msg_t pe = { { 0 } };
	if (route_prefer_parse(&pc, pn, pw, &pe) != 0) {
		fprintf(stderr, "colony: swarm: %s\n", pe.msg);
		free(run_argv);
		return CMD_EXIT_USAGE;
	}
	if (nodes % replicas) {
		fprintf(stderr, "colony: swarm: --nodes %ld is not a multiple of --replicas %ld\n", nodes, replicas);
		free(run_argv);
		return CMD_EXIT_USAGE;
	}
	char dir[512], synth[700];
	if (home) {
		snprintf(dir, sizeof(dir), "%s", home);
		mkdir(dir, 0700);
	} else {
		const char *t = getenv("TMPDIR");
		snprintf(dir, sizeof(dir), "%s/colony-swarm-XXXXXX", t && *t ? t : "/tmp");
		if (!mkdtemp(dir)) {
			fprintf(stderr, "colony: swarm: cannot create a folder in %s\n", t && *t ? t : "/tmp");
			free(run_argv);
			return CMD_EXIT_ERROR;
		}
	}
	if (!model) {
		synth_params_t p;
		err_msg_t e = { { 0 } };
		if (synth_preset("small", &p) != 0)
			return CMD_EXIT_ERROR;
		snprintf(synth, sizeof(synth), "%s/synthetic.gguf", dir);
		fprintf(stderr, "colony: no model given (-m): making a small synthetic model with random weights and a "
			"built-in vocabulary in %s; its output is gibberish.\n", synth);
		if (synth_write(&p, synth, &e)) {
			fprintf(stderr, "colony: swarm: %s\n", e.msg);
			free(run_argv);
			return CMD_EXIT_ERROR;
		}
		model = synth;
	}
	gguf_t *g;
	model_t *m;
	int rc = opt_open_model(model, 1, &g, &m);
	if (rc) {
		free(run_argv);
		return rc;
	}
	int L = m->hp.n_layer;
	model_free(m);
	gguf_free(g);
	long spans = nodes / replicas;
	if (spans > L) {
		fprintf(stderr, "colony: swarm: %ld spans for a model of %d layers\n", spans, L);
		free(run_argv);
		return CMD_EXIT_USAGE;
	}

	pid_t pids[65] = { 0 };
	int n_pids = 0;
	/* options every node gets */
	char *common[12];
	int nc = 0;
	if (refresh_ms) {
		common[nc++] = "--refresh-ms";
		common[nc++] = (char *)refresh_ms;
	}
	if (stale_ms) {
		common[nc++] = "--stale-ms";
		common[nc++] = (char *)stale_ms;
	}
	if (log_level) {
		common[nc++] = "--log-level";
		common[nc++] = (char *)log_level;
	}
	if (log_json) {
		common[nc++] = "--log-json";
		log_setup(log_level_get(), 1);   /* the gateway in this process too */
	}
	common[nc] = NULL;
	prog_t pg;
	prog_init(&pg, "swarm", quiet || log_json);
	/* the bootstrap node serves nothing */
	char boot_home[800], boot_log[800];
	snprintf(boot_home, sizeof(boot_home), "%s/boot", dir);
	snprintf(boot_log, sizeof(boot_log), "%s/boot.log", dir);
	char *bargv[24] = { "colony", "node", "--home", boot_home };
	for (int k = 0; k <= nc; k++)
		bargv[4 + k] = common[k];
	prog_update(&pg, 1, "starting the bootstrap node");
	pids[n_pids++] = spawn(bargv, boot_log);
	int dht = read_port(boot_log, "DHT port ", 10000);
	if (dht <= 0) {
		prog_done(&pg, "failed");
		fprintf(stderr, "colony: swarm: the bootstrap node did not start (see %s)\n", boot_log);
		rc = CMD_EXIT_ERROR;
		goto stop;
	}
	char bs[64];
	snprintf(bs, sizeof(bs), "127.0.0.1:%d", dht);
	fprintf(stderr, "colony: swarm in %s: bootstrap DHT %s, %ld shard nodes, %ld spans x %ld replicas\n", dir, bs,
		nodes, spans, replicas);
	for (long i = 0; i < nodes; i++) {
		long sp = i % spans;
		int a = (int)(L * sp / spans), b = (int)(L * (sp + 1) / spans);
		char h[800], lg[800], layers[32];
		snprintf(h, sizeof(h), "%s/n%ld", dir, i);
		snprintf(lg, sizeof(lg), "%s/n%ld.log", dir, i);
		snprintf(layers, sizeof(layers), "%d:%d", a, b);
		char *nargv[32] = { "colony", "node", "--home", h, "--model", (char *)model, "--layers", layers,
				    "--bootstrap", bs };
		for (int k = 0; k <= nc; k++)
			nargv[10 + k] = common[k];
		prog_update(&pg, 1, "%ld/%ld nodes up, starting node %ld (layers [%d, %d))", i, nodes, i, a, b);
		pids[n_pids++] = spawn(nargv, lg);
		if (read_port(lg, "DHT port ", 20000) <= 0) {
			prog_done(&pg, "failed");
			fprintf(stderr, "colony: swarm: node %ld did not start (see %s)\n", i, lg);
			rc = CMD_EXIT_ERROR;
			goto stop;
		}
		/* the PID, for tests and demos that kill one node (on stderr, which
		 * the progress line does not hide) */
		if (pg.tty && !pg.quiet)
			fprintf(stderr, "\r\033[K");
		fprintf(stderr, "colony: node %ld serves layers [%d, %d) (pid %d)\n", i, a, b, (int)pids[n_pids - 1]);
	}
	prog_update(&pg, 1, "%ld/%ld nodes up, letting the announcements spread", nodes, nodes);
	usleep(500000);   /* let the announcements spread */

	if (api) {
		/* the gateway, in this process, until SIGINT or SIGTERM */
		gguf_t *ag = NULL;
		http_gw_t *gw = NULL;
		err_msg_t e = { { 0 } };
		cmd_api_opts_t ao;
		memset(&ao, 0, sizeof(ao));
		ao.listen = api;
		ao.key = api_key;
		ao.model_path = model;
		ao.network = network;
		ao.bootstrap[0] = bs;
		ao.n_bootstrap = 1;
		if (stale_ms)
			ao.stale_ms = strtoull(stale_ms, NULL, 10);
		ao.prefer = pc.prefer;
		ao.w_price = pc.w_price;
		ao.w_speed = pc.w_speed;
		ao.w_rep = pc.w_rep;
		signal(SIGINT, on_sig);
		signal(SIGTERM, on_sig);
		prog_update(&pg, 1, "starting the gateway");
		if (gguf_open(model, &ag, &e) || cmd_api_start(&ao, ag, NULL, NULL, &gw, &e)) {
			prog_done(&pg, "failed");
			fprintf(stderr, "colony: swarm: --api: %s\n", e.msg);
			rc = CMD_EXIT_ERROR;
		} else {
			/* coverage: every layer served by the replicas asked for, as
			 * the gateway's own client sees it (at most 30 s) */
			swarm_view_t v;
			double t0 = clock_sec();
			for (;;) {
				swarm_client_view(http_gw_client(gw), &v);
				if ((v.n_layer > 0 && v.layers_covered == v.n_layer && v.min_replicas >= replicas) ||
				    clock_sec() - t0 > 30 || g_stop)
					break;
				prog_update(&pg, 0, "%ld nodes up; coverage %d/%d layers, %d replica%s, %d/%d servers connected",
					    nodes, v.layers_covered, v.n_layer, v.min_replicas, v.min_replicas == 1 ? "" : "s",
					    v.servers_ready, v.servers_known);
				usleep(50000);
			}
			prog_done(&pg, "%ld nodes up; coverage %s: %d/%d layers, %d replica%s", nodes,
				  v.layers_covered == v.n_layer && v.min_replicas >= replicas ? "reached" : "NOT reached",
				  v.layers_covered, v.n_layer, v.min_replicas, v.min_replicas == 1 ? "" : "s");
			fprintf(stderr, "colony: the swarm serves the API at %s (bootstrap %s); Ctrl-C stops it\n",
				http_gw_url(gw), bs);
			/* the signal may land on any of the gateway's threads: poll the flag */
			while (!g_stop)
				usleep(100000);
			rc = 0;
		}
		http_gw_free(gw);
		gguf_free(ag);
		goto stop;
	}

	prog_done(&pg, "%ld nodes up", nodes);
	/* The generation, by this same binary as `colony run --swarm`, so a
	 * --chaos kill can be timed from outside it. */
	char chaos_pid[32], chaos_at[32];
	if (chaos) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		srand((unsigned)ts.tv_nsec);
		int victim = 1 + rand() % (int)nodes;
		snprintf(chaos_pid, sizeof(chaos_pid), "%d", (int)pids[victim]);
		snprintf(chaos_at, sizeof(chaos_at), "%d", 1 + rand() % 8);
		fprintf(stderr, "colony: chaos: node %d (pid %s) will be killed after token %s\n", victim - 1, chaos_pid, chaos_at);
		run_argv[ra++] = "--chaos-pid";
		run_argv[ra++] = chaos_pid;
		run_argv[ra++] = "--chaos-at";
		run_argv[ra++] = chaos_at;
	}
	run_argv[ra++] = "-m";
	run_argv[ra++] = (char *)model;
	run_argv[ra++] = "--swarm";
	run_argv[ra++] = bs;
	run_argv[ra] = NULL;
	char **full = calloc((size_t)ra + 2, sizeof(char *));
	full[0] = "colony";
	for (int i = 0; i < ra; i++)
		full[i + 1] = run_argv[i];
	pid_t gen = fork();
	if (gen == 0) {
		execv("/proc/self/exe", full);
		_exit(127);
	}
	free(full);
	int st = 0;
	waitpid(gen, &st, 0);
	rc = WIFEXITED(st) ? WEXITSTATUS(st) : CMD_EXIT_ERROR;
	if (keep && rc == 0) {
		fprintf(stderr, "colony: the swarm keeps running (bootstrap %s); Ctrl-C stops it\n", bs);
		signal(SIGINT, on_sig);
		signal(SIGTERM, on_sig);
		while (!g_stop)
			pause();
	}
stop:
	for (int i = n_pids - 1; i >= 0; i--)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	for (int i = 0; i < n_pids; i++)
		if (pids[i] > 0)
			waitpid(pids[i], NULL, 0);
	free(run_argv);
	return rc;
}
