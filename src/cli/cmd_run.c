/* colony run: generate text with a local model. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/pool.h"
#include "cli/cmd.h"
#include "cli/opts.h"
#include "cli/progress.h"
#include "infer/chat.h"
#include "infer/gen.h"
#include "infer/sampler.h"
#include "market/chrec.h"
#include "market/chstore.h"
#include "market/settle_remote.h"
#include "market/wallet.h"
#include "model/manifest.h"
#include "model/synth.h"
#include "swarm/client.h"
#include "model/vocab.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: colony run [-m MODEL] [-p PROMPT] [options]\n"
		"\n"
		"Generates text from PROMPT with a local GGUF model and streams it to stdout (the\n"
		"prompt first, then the continuation). A last line on stderr gives prompt and\n"
		"generation tokens/s and why generation stopped (eos, length, context).\n"
		"With no -m, a small synthetic model (random weights, built-in vocabulary) is\n"
		"made in a temporary file, so this works with nothing outside the repository;\n"
		"its text is gibberish.\n"
		"\n"
		"  -m, --model FILE       GGUF model\n"
		"  -p, --prompt TEXT      prompt (default \"Once upon a time\")\n"
		"  -f, --file FILE        read the prompt from FILE\n"
		"  --chat                 the prompt is one user message, rendered through the model's\n"
		"                         chat template (tokenizer.chat_template; the families and the\n"
		"                         fallback are in the README); only the reply is printed, and it\n"
		"                         ends at the end of the assistant's turn (as the HTTP API does)\n"
		"  -n, --n-predict N      tokens to generate (default 64; stops earlier at EOS)\n"
		"  --temp T               temperature (default 0.8; 0 = greedy)\n"
		"  --top-k K              keep the K most likely (default 40; 0 = off)\n"
		"  --top-p P              nucleus sampling (default 0.95; 1 = off)\n"
		"  --min-p P              drop tokens below P x the best one's probability (default 0.05)\n"
		"  --repeat-penalty R     penalise the last --repeat-last-n tokens (default 1 = off)\n"
		"  --repeat-last-n N      window of the repeat penalty (default 64)\n"
		"  --seed S               sampling seed (default 0); the same seed gives the same text\n"
		"  -t, --threads N        threads (default 2)\n"
		"  --ctx N                context length (default: the model's, at most 4096)\n"
		"  --kv f32|f16           KV cache type (default f32)\n"
		"  --logits-out FILE      write the float32 logits of the last prompt position\n"
		"  --ignore-eos           keep generating past end-of-generation tokens\n"
		"  --mmap                 map the model file instead of loading it into huge pages\n"
		"  -q, --quiet            no progress while the model loads\n"
		"  --isa ref|avx2|avx512  force one kernel set (default: the best available)\n"
		"  --ranges N             run the layers as N separate ranges (as a pipeline would)\n"
		"  --swarm HOST:PORT      generate through the swarm reachable from this DHT address\n"
		"                         (repeatable): the local file gives the tokenizer, embedding\n"
		"                         and head, and its model id selects the swarm's shard servers\n"
		"  --network NAME         the swarm's network id (default colony)\n"
		"  --wire f32|f16|q8      hidden states on the wire (default f32: bit-exact)\n"
		"  --timeout-ms N         a server that does not answer within N ms is replaced (10000)\n"
		"  --price-weight W       route cost of price: W ms per micro-unit per 1M tokens (default\n"
		"                         0: routes on measured RTT and compute time only)\n"
		"  --prefer price|speed|reputation  route policy: choose among the servers of each\n"
		"                         layer span by announced price, measured speed, or the\n"
		"                         reputation from receipt digests in the DHT (default: the\n"
		"                         RTT + compute cost above)\n"
		"  --prefer-weights P:S:R  mix the three (e.g. 1:1:2); alone, or with --prefer\n"
		"  --pay                  (with --swarm) pay the shard servers that take payments: a\n"
		"                         channel per session reserved at --ledger-peer, a signed\n"
		"                         cumulative voucher after each chunk of tokens; prints what\n"
		"                         each provider was paid. Each channel is recorded in the\n"
		"                         wallet home's channels.db before it is reserved and closed\n"
		"                         after the run: the unspent budget comes back after the\n"
		"                         ledger's challenge window (colony wallet reclaim)\n"
		"  --no-digest            with --pay, do not publish the receipt digests (by default\n"
		"                         each provider paid gets one in the DHT, signed and naming\n"
		"                         the paying wallet: public, and what reputation is made of)\n"
		"  --ledger-peer HOST:PORT  the ledger node (colony node --ledger) of --pay\n"
		"  --wallet-home DIR      where the paying wallet.key lives (default ~/.colony)\n"
		"  --budget AMOUNT        budget of each channel, in units (default 1; \"0.5\" works)\n"
		"  --chaos-pid P --chaos-at K [--chaos-sig S]  (tests, demos) send signal S (default\n"
		"                         9, SIGKILL) to process P when token K is out\n"
		"\nexit codes: 0 ok, 1 error, 2 usage, 3 bad model file\n");
}

struct run_opts {
	const char *model, *prompt, *prompt_file, *logits_out;
	long n_predict, threads, ctx, ranges;
	int kv, ignore_eos, use_mmap, chat, quiet;
	const char *swarm[SWARM_MAX_BOOTSTRAP];
	int n_swarm;
	const char *network;
	int wire_enc;
	long chaos_pid, chaos_at;   /* test and demo: SIGKILL this pid at this token */
	long timeout_ms;            /* a hop that does not answer within this fails over */
	long chaos_sig;             /* the signal of --chaos-pid (default SIGKILL) */
	double price_weight;        /* route cost per unit of price */
	route_cost_t prefer;        /* --prefer, --prefer-weights (policy and weights only) */
	const char *prefer_name, *prefer_weights;
	int no_digest;              /* --no-digest: with --pay, publish no receipt digest */
	smp_params_t sp;
	int pay;                    /* --pay: paid sessions */
	const char *ledger_peer, *wallet_home;
	int64_t budget;             /* micro-units per channel */
};

static int parse(int argc, char **argv, struct run_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->prompt = "Once upon a time";
	o->n_predict = 64;
	o->threads = 2;
	o->ranges = 1;
	o->sp = smp_params_default();
	o->sp.repeat_penalty = 1.0f;
	o->sp.repeat_last_n = 64;
	o->network = "colony";
	o->budget = AMOUNT_UNIT;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v;
		double d;
		long n;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--ignore-eos")) {
			o->ignore_eos = 1;
			continue;
		}
		if (!strcmp(a, "--mmap")) {
			o->use_mmap = 1;
			continue;
		}
		if (!strcmp(a, "--chat")) {
			o->chat = 1;
			continue;
		}
		if (!strcmp(a, "--pay")) {
			o->pay = 1;
			continue;
		}
		if (!strcmp(a, "--no-digest")) {
			o->no_digest = 1;
			continue;
		}
		if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			o->quiet = 1;
			continue;
		}
		if (!(v = opt_arg(argc, argv, &i)))
			return -1;
		if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
		else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
		else if (!strcmp(a, "-f") || !strcmp(a, "--file")) o->prompt_file = v;
		else if (!strcmp(a, "--logits-out")) o->logits_out = v;
		else if (!strcmp(a, "--network")) o->network = v;
		else if (!strcmp(a, "--prefer")) o->prefer_name = v;
		else if (!strcmp(a, "--prefer-weights")) o->prefer_weights = v;
		else if (!strcmp(a, "--ledger-peer")) o->ledger_peer = v;
		else if (!strcmp(a, "--wallet-home")) o->wallet_home = v;
		else if (!strcmp(a, "--budget")) {
			err_msg_t e = { { 0 } };
			if (amount_parse(v, &o->budget, &e) != 0 || o->budget <= 0) {
				fprintf(stderr, "colony: --budget expects a positive amount: %s\n", e.msg[0] ? e.msg : v);
				return -1;
			}
		}
		else if (!strcmp(a, "--price-weight")) {
			if (opt_float(a, v, 0, 1e6, &o->price_weight)) return -1;
		} else if (!strcmp(a, "--chaos-sig")) {
			if (opt_int(a, v, 1, 64, &o->chaos_sig)) return -1;
		} else if (!strcmp(a, "--timeout-ms")) {
			if (opt_int(a, v, 100, 600000, &o->timeout_ms)) return -1;
		} else if (!strcmp(a, "--chaos-pid")) {
			if (opt_int(a, v, 1, 1L << 30, &o->chaos_pid)) return -1;
		} else if (!strcmp(a, "--chaos-at")) {
			if (opt_int(a, v, 0, 1 << 24, &o->chaos_at)) return -1;
		}
		else if (!strcmp(a, "--swarm")) {
			if (o->n_swarm >= SWARM_MAX_BOOTSTRAP) {
				fprintf(stderr, "colony: at most %d --swarm addresses\n", SWARM_MAX_BOOTSTRAP);
				return -1;
			}
			o->swarm[o->n_swarm++] = v;
		} else if (!strcmp(a, "--wire")) {
			if (!strcmp(v, "f32")) o->wire_enc = WIRE_ENC_F32;
			else if (!strcmp(v, "f16")) o->wire_enc = WIRE_ENC_F16;
			else if (!strcmp(v, "q8")) o->wire_enc = WIRE_ENC_Q8;
			else { fprintf(stderr, "colony: --wire expects f32, f16 or q8\n"); return -1; }
		}
		else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
			if (opt_int(a, v, 0, 1 << 24, &o->n_predict)) return -1;
		} else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
			if (opt_int(a, v, 1, 256, &o->threads)) return -1;
		} else if (!strcmp(a, "--ctx")) {
			if (opt_int(a, v, 1, 1 << 24, &o->ctx)) return -1;
		} else if (!strcmp(a, "--ranges")) {
			if (opt_int(a, v, 1, GEN_MAX_RANGES, &o->ranges)) return -1;
		} else if (!strcmp(a, "--temp")) {
			if (opt_float(a, v, 0, 1e6, &d)) return -1;
			o->sp.temp = (float)d;
		} else if (!strcmp(a, "--top-k")) {
			if (opt_int(a, v, 0, 1 << 30, &n)) return -1;
			o->sp.top_k = (int32_t)n;
		} else if (!strcmp(a, "--top-p")) {
			if (opt_float(a, v, 0, 1, &d)) return -1;
			o->sp.top_p = (float)d;
		} else if (!strcmp(a, "--min-p")) {
			if (opt_float(a, v, 0, 1, &d)) return -1;
			o->sp.min_p = (float)d;
		} else if (!strcmp(a, "--repeat-penalty")) {
			if (opt_float(a, v, 0.01, 100, &d)) return -1;
			o->sp.repeat_penalty = (float)d;
		} else if (!strcmp(a, "--repeat-last-n")) {
			if (opt_int(a, v, 0, SMP_LAST_N_MAX, &n)) return -1;
			o->sp.repeat_last_n = (int32_t)n;
		} else if (!strcmp(a, "--seed")) {
			if (opt_u64(a, v, &o->sp.seed)) return -1;
		} else if (!strcmp(a, "--kv")) {
			if (!strcmp(v, "f32")) o->kv = FWD_KV_F32;
			else if (!strcmp(v, "f16")) o->kv = FWD_KV_F16;
			else { fprintf(stderr, "colony: --kv expects f32 or f16\n"); return -1; }
		} else if (!strcmp(a, "--isa")) {
			if (opt_isa(v)) return -1;
		} else {
			fprintf(stderr, "colony: run: unknown option '%s'\n", a);
			usage(stderr);
			return -1;
		}
	}
	err_msg_t pe = { { 0 } };
	if (route_prefer_parse(&o->prefer, o->prefer_name, o->prefer_weights, &pe) != 0) {
		fprintf(stderr, "colony: %s\n", pe.msg);
		return -1;
	}
	return 0;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	size_t got;
	while (b && (got = fread(b + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *nb = cap < (64u << 20) ? realloc(b, cap *= 2) : NULL;
			if (!nb) {
				free(b);
				b = NULL;
			}
			b = nb;
		}
	}
	fclose(f);
	*len = n;
	return b;
}

static int make_synthetic(char *path, size_t cap)
{
	synth_params_t p;
	err_msg_t e = { { 0 } };
	if (synth_preset("small", &p) != 0)
		return -1;
	const char *tmp = getenv("TMPDIR");
	snprintf(path, cap, "%s/colony-synthetic-%d.gguf", tmp && *tmp ? tmp : "/tmp", (int)getpid());
	fprintf(stderr, "colony: no model given (-m): making a small synthetic model with random weights and "
		"a built-in vocabulary (dim %d, %d layers, vocab %d, %s) in %s; its output is gibberish.\n",
		p.dim, p.n_layer, p.n_vocab, kern_type_name(p.type), path);
	int r = synth_write(&p, path, &e);
	if (r)
		fprintf(stderr, "colony: run: cannot write the synthetic model: %s\n", e.msg);
	return r;
}

static int write_logits(const char *path, const float *lg, int n)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(lg, sizeof(float), (size_t)n, f) != (size_t)n || fclose(f) != 0) {
		fprintf(stderr, "colony: --logits-out %s: cannot write\n", path);
		if (f)
			fclose(f);
		return -1;
	}
	return 0;
}

/* Text out: the streaming decoder, then the stop strings of the chat
 * template (held back while they may still be forming), then stdout. */
struct text_out {
	const vocab_t *voc;
	vocab_decoder_t dec;
	chat_stop_t stop;
	char *buf, *shown;
	size_t cap;
};

static int text_out_init(struct text_out *t, const vocab_t *voc, const chat_tmpl_t *tmpl)
{
	t->voc = voc;
	t->buf = t->shown = NULL;
	vocab_decoder_init(&t->dec, voc, 0);
	chat_stop_init(&t->stop);
	if (tmpl) {
		const char *st[CHAT_MAX_STOP_TEXTS];
		int n = chat_stop_texts(tmpl, st);
		for (int i = 0; i < n; i++)
			if (chat_stop_add(&t->stop, st[i], strlen(st[i])) != 0)
				return -1;
	}
	t->cap = VOCAB_DECODER_OUT_MAX(vocab_max_piece_len(voc));
	t->buf = malloc(t->cap);
	t->shown = malloc(t->cap + CHAT_STOP_MAX_LEN);
	return t->buf && t->shown ? 0 : -1;
}

static void text_out_free(struct text_out *t)
{
	free(t->buf);
	free(t->shown);
}

/* Shows a token's text; 1 when a stop string has been reached. */
static int text_out_token(struct text_out *t, int32_t tok)
{
	size_t n;
	if (vocab_decoder_push(&t->dec, tok, t->buf, t->cap, &n) == 0 && n) {
		size_t k = chat_stop_push(&t->stop, t->buf, n, t->shown);
		if (k) {
			fwrite(t->shown, 1, k, stdout);
			fflush(stdout);
		}
	}
	return t->stop.hit;
}

static void text_out_end(struct text_out *t)
{
	size_t n, k;
	if (!t->stop.hit && vocab_decoder_flush(&t->dec, t->buf, t->cap, &n) == 0 && n &&
	    (k = chat_stop_push(&t->stop, t->buf, n, t->shown)))
		fwrite(t->shown, 1, k, stdout);
	if ((k = chat_stop_flush(&t->stop, t->shown)))
		fwrite(t->shown, 1, k, stdout);
}

struct swarm_out {
	long chaos_pid, chaos_at, n, chaos_sig;
	const char *logits_out;
	int logits_failed;
	const vocab_t *voc;
	struct text_out *text;
	int ignore_eos;
	int eos, stopped;
};

static int swarm_token(void *user, int32_t token, const float *logits, int n_vocab)
{
	struct swarm_out *so = user;
	/* the logits that chose the first token: those of the last prompt position */
	long idx = so->n++;
	if (idx == 0 && so->logits_out && write_logits(so->logits_out, logits, n_vocab))
		so->logits_failed = 1;
	if (so->chaos_pid > 0 && idx == so->chaos_at) {
		int sig = so->chaos_sig ? (int)so->chaos_sig : SIGKILL;
		fprintf(stderr, "\ncolony: chaos: signal %d to pid %ld at token %ld\n", sig, so->chaos_pid, so->chaos_at);
		kill((pid_t)so->chaos_pid, sig);
	}
	if (!so->ignore_eos && vocab_is_eog(so->voc, token)) {
		so->eos = 1;
		return 1;
	}
	if (text_out_token(so->text, token)) {
		so->stopped = 1;
		return 1;
	}
	return 0;
}

/* --pay, crash safety: the ledger client wrapped in a chrec_t (market/chrec.h)
 * records every channel in <wallet home>/channels.db BEFORE its reserve
 * leaves, so a buyer killed at any point can find and close it (colony
 * wallet reclaim); after the run this run's channels are closed as buyer, so
 * the unspent budgets come back after the ledger's challenge window.
 * Reserves run on the swarm client's worker threads. */
struct pay_rec {
	chstore_t *cs;
	chrec_t *rec;
};

/* What each close did, one line per channel. A failure is not the run's:
 * the channel stays recorded and `colony wallet reclaim` closes it. */
static void pay_closed(void *ud, const chrec_closed_t *c)
{
	(void)ud;
	char hex[2 * MARKET_IDLEN + 1], left[AMOUNT_STRLEN];
	for (int k = 0; k < MARKET_IDLEN; k++)
		snprintf(hex + 2 * k, 3, "%02x", c->id[k]);
	if (c->rc)
		fprintf(stderr, "colony: channel %.16s not closed (%s); colony wallet reclaim closes it\n", hex,
			c->e.msg);
	else if (c->state == CHSTORE_CLOSING)
		fprintf(stderr, "colony: channel %.16s closing: %s unspent comes back after %lld "
			"(colony wallet reclaim)\n", hex, amount_format(c->ch.budget - c->ch.redeemed, left),
			(long long)c->ch.close_at);
	else
		fprintf(stderr, "colony: channel %.16s %s\n", hex, c->state == CHSTORE_CLOSED ? "closed" : "open");
}

/* --pay: the wallet that signs, and the ledger node where channels are
 * reserved (connected now, so a wrong address fails before generating). */
static int pay_setup(const struct run_opts *o, wallet_t **w, settle_remote_t **sr, struct pay_rec *rec)
{
	err_msg_t e = { { 0 } };
	if (!o->ledger_peer) {
		fprintf(stderr, "colony: run: --pay needs --ledger-peer HOST:PORT\n");
		return CMD_EXIT_USAGE;
	}
	char host[256];
	const char *colon = strrchr(o->ledger_peer, ':');
	long port = 0;
	if (!colon || colon == o->ledger_peer || (size_t)(colon - o->ledger_peer) >= sizeof(host) ||
	    opt_int("--ledger-peer", colon + 1, 1, 65535, &port) != 0) {
		fprintf(stderr, "colony: run: --ledger-peer expects HOST:PORT, got '%s'\n", o->ledger_peer);
		return CMD_EXIT_USAGE;
	}
	memcpy(host, o->ledger_peer, (size_t)(colon - o->ledger_peer));
	host[colon - o->ledger_peer] = 0;
	char homebuf[1024];
	const char *home = o->wallet_home;
	if (!home) {
		const char *h = getenv("HOME");
		snprintf(homebuf, sizeof(homebuf), "%s/.colony", h && *h ? h : ".");
		home = homebuf;
	}
	int created = 0;
	if (wallet_load_or_create(home, w, &created, &e) != 0) {
		fprintf(stderr, "colony: run: wallet: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	if (created)
		fprintf(stderr, "colony: created a new wallet in %s (it has no money yet)\n", home);
	settle_remote_cfg_t rc;
	settle_remote_cfg_default(&rc);
	rc.host = host;
	rc.port = (int)port;
	rc.network = o->network;
	rc.wallet = *w;
	if (settle_remote_new(&rc, sr, &e) != 0) {
		fprintf(stderr, "colony: run: ledger: %s\n", e.msg);
		wallet_free(*w);
		*w = NULL;
		return CMD_EXIT_ERROR;
	}
	if (chstore_open(home, &rec->cs, &e) != 0) {
		fprintf(stderr, "colony: run: %s\n", e.msg);
		settle_remote_free(*sr);
		wallet_free(*w);
		*sr = NULL;
		*w = NULL;
		return CMD_EXIT_ERROR;
	}
	chrec_cfg_t cc = { settle_remote_settle(*sr), rec->cs, settle_remote_ledger_id(*sr), o->ledger_peer };
	if (chrec_new(&cc, &rec->rec, &e) != 0) {
		fprintf(stderr, "colony: run: %s\n", e.msg);
		chstore_free(rec->cs);
		settle_remote_free(*sr);
		wallet_free(*w);
		rec->cs = NULL;
		*sr = NULL;
		*w = NULL;
		return CMD_EXIT_ERROR;
	}
	return 0;
}

/* Generation through a swarm: the text streams as tokens arrive. */
static int run_swarm(const struct run_opts *o, const model_t *m, const gguf_t *g, const vocab_t *voc, pool_t *pool,
		     smp_chain_t *ch, const int32_t *toks, int nt, struct text_out *text)
{
	err_msg_t e = { { 0 } };
	uint8_t mid[MANIFEST_ID_LEN];
	if (manifest_model_id(g, pool, mid, &e)) {
		fprintf(stderr, "\ncolony: run: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	/* hashing read the whole file; what this client uses was copied */
	if (m->pinned)
		gguf_drop_range(g, gguf_base(g), (size_t)gguf_file_size(g));
	struct swarm_out so = { o->chaos_pid, o->chaos_at, 0, o->chaos_sig, o->logits_out, 0, voc, text, o->ignore_eos, 0, 0 };
	swarm_cfg_t sc;
	swarm_cfg_default(&sc);
	sc.network = o->network;
	for (int i = 0; i < o->n_swarm; i++)
		sc.bootstrap[i] = o->swarm[i];
	sc.n_bootstrap = o->n_swarm;
	sc.model = m;
	sc.model_id = mid;
	sc.pool = pool;
	sc.smp = ch;
	sc.enc = (uint8_t)o->wire_enc;
	sc.kv_type = o->kv == FWD_KV_F16 ? WIRE_KV_F16 : WIRE_KV_F32;
	sc.on_token = swarm_token;
	if (o->timeout_ms)
		sc.timeout_ms = (uint32_t)o->timeout_ms;
	sc.price_weight = o->price_weight;
	sc.prefer = o->prefer.prefer;
	sc.w_price = o->prefer.w_price;
	sc.w_speed = o->prefer.w_speed;
	sc.w_rep = o->prefer.w_rep;
	sc.rep_publish = !o->no_digest;
	sc.user = &so;
	wallet_t *w = NULL;
	settle_remote_t *sr = NULL;
	struct pay_rec rec = { NULL, NULL };
	if (o->pay) {
		/* A ledger that dies between two calls leaves a dead socket: the
		 * next write must fail with EPIPE (and be retried or reported), not
		 * kill the buyer before it can close its channels. */
		signal(SIGPIPE, SIG_IGN);
		int pr = pay_setup(o, &w, &sr, &rec);
		if (pr)
			return pr;
		sc.pay_wallet = w;
		sc.pay_settle = chrec_settle(rec.rec);
		sc.pay_budget = o->budget;
	}
	swarm_result_t res;
	int r = swarm_generate(&sc, toks, nt, (int)o->n_predict, &res, &e);
	if (o->pay)
		chrec_close_all(rec.rec, pay_closed, NULL);
	chrec_free(rec.rec);
	chstore_free(rec.cs);
	settle_remote_free(sr);
	wallet_free(w);
	text_out_end(text);
	printf("\n");
	fflush(stdout);
	if (r) {
		fprintf(stderr, "colony: run: swarm generation failed: %s\n", e.msg);
		return CMD_EXIT_ERROR;
	}
	if (so.logits_failed)
		return CMD_EXIT_ERROR;
	fprintf(stderr, "colony: route %s\n", res.route);
	fprintf(stderr, "colony: prompt %d tokens, first token after %.3f s; generation %d tokens, %.2f tokens/s; "
		"failovers %d (%llu rows replayed); stopped: %s\n",
		nt, res.seconds_prompt, res.n_tokens,
		res.seconds_gen > 0 && res.n_tokens > 1 ? (res.n_tokens - 1) / res.seconds_gen : 0.0,
		res.stats.failovers, (unsigned long long)res.stats.rows_replayed,
		so.eos ? "eos" : so.stopped ? "stop text" : "length");
	for (int i = 0; i < res.n_pay; i++) {
		const swarm_pay_line_t *l = &res.pay[i];
		char addr[2 * WALLET_PUBLEN + 1], paid[AMOUNT_STRLEN];
		for (int k = 0; k < WALLET_PUBLEN; k++)
			snprintf(addr + 2 * k, 3, "%02x", l->provider[k]);
		fprintf(stderr, "colony: paid provider %s: %llu tokens in, %llu out, %s (%lld micro-units; prices %lld/%lld per 1M)\n",
			addr, (unsigned long long)l->in_tokens, (unsigned long long)l->out_tokens, amount_format(l->paid, paid),
			(long long)l->paid, (long long)l->price_in, (long long)l->price_out);
	}
	return 0;
}

int cmd_run(int argc, char **argv)
{
	struct run_opts o;
	int pr = parse(argc, argv, &o);
	if (pr)
		return pr > 0 ? 0 : CMD_EXIT_USAGE;
	if (o.pay && !o.n_swarm) {
		fprintf(stderr, "colony: run: --pay pays shard servers: it needs --swarm\n");
		return CMD_EXIT_USAGE;
	}

	char synth_path[512] = "";
	const char *model_path = o.model;
	if (!model_path) {
		if (make_synthetic(synth_path, sizeof(synth_path)))
			return CMD_EXIT_ERROR;
		model_path = synth_path;
	}
	gguf_t *g = NULL;
	model_t *m = NULL;
	vocab_t *voc = NULL;
	pool_t *pool = NULL;
	gen_t *gen = NULL;
	smp_chain_t *ch = NULL;
	int32_t *toks = NULL;
	char *prompt_buf = NULL;
	struct text_out tout;
	int have_tout = 0;
	err_msg_t e = { { 0 } };
	/* Through a swarm only the embedding and head are used: map the file
	 * rather than copy every layer. */
	prog_t pg;
	char what[300];
	const char *base = strrchr(model_path, '/');
	snprintf(what, sizeof(what), "loading %s", base ? base + 1 : model_path);
	prog_init(&pg, what, o.quiet);
	prog_watch_start(&pg);
	int rc = opt_open_model(model_path, o.use_mmap ? 1 : o.n_swarm > 0 ? 3 : 0, &g, &m);
	prog_done(&pg, rc ? "failed" : "ready");
	if (synth_path[0])
		unlink(synth_path);   /* the mapping stays valid */
	if (rc)
		return rc;
	rc = CMD_EXIT_ERROR;
	if (vocab_new_from_gguf(g, &voc, &e)) {
		fprintf(stderr, "colony: %s: %s\n", model_path, e.msg);
		rc = CMD_EXIT_BADFILE;
		goto done;
	}
	const char *text = o.prompt;
	size_t text_len = strlen(text);
	if (o.prompt_file) {
		if (!(prompt_buf = read_file(o.prompt_file, &text_len))) {
			fprintf(stderr, "colony: %s: cannot read the prompt\n", o.prompt_file);
			goto done;
		}
		text = prompt_buf;
	}
	size_t cap = text_len + 16, nt = 0;
	chat_tmpl_t tmpl;
	chat_tmpl_from_gguf(&tmpl, g);
	if (o.chat) {
		/* the same path as the HTTP API's chat completions */
		chat_msg_t msg = { CHAT_USER, text, text_len };
		if (chat_tokenize(&tmpl, voc, &msg, 1, &toks, &nt, &e) != 0) {
			fprintf(stderr, "colony: run: %s\n", e.msg);
			goto done;
		}
	} else {
		toks = malloc(sizeof(int32_t) * cap);
		if (!toks || vocab_tokenize(voc, text, text_len, 1, 0, toks, cap, &nt) != 0) {
			fprintf(stderr, "colony: run: tokenizing the prompt failed\n");
			goto done;
		}
	}
	if (nt == 0) {
		fprintf(stderr, "colony: run: the prompt is empty and the model adds no BOS token\n");
		rc = CMD_EXIT_USAGE;
		goto done;
	}
	pool = pool_new((int)o.threads);
	gen_opts_t go = { .n_ctx = (int)o.ctx, .kv = o.kv, .n_ranges = (int)o.ranges };
	/* Through a swarm the layers run elsewhere: no local KV cache. */
	if (!pool || (!o.n_swarm && gen_new(m, pool, &go, &gen, &e))) {
		fprintf(stderr, "colony: run: %s\n", pool ? e.msg : "cannot start threads");
		goto done;
	}
	if (gen && (int)nt >= gen_ctx(gen)) {
		fprintf(stderr, "colony: run: the prompt has %zu tokens, the context holds %d\n", nt, gen_ctx(gen));
		rc = CMD_EXIT_USAGE;
		goto done;
	}
	ch = smp_chain_new_default(&o.sp);
	if (!ch)
		goto done;
	have_tout = 1;
	if (text_out_init(&tout, voc, o.chat ? &tmpl : NULL))
		goto done;
	if (!o.chat) {
		fwrite(text, 1, text_len, stdout);   /* the reply alone in chat mode */
		fflush(stdout);
	}
	for (size_t i = 0; i < nt; i++)
		smp_accept(ch, toks[i]);

	if (o.n_swarm) {
		rc = run_swarm(&o, m, g, voc, pool, ch, toks, (int)nt, &tout);
		goto done;
	}
	const float *lg;
	double t0 = clock_sec();
	if (gen_eval(gen, toks, (int)nt, &lg, NULL, &e)) {
		fprintf(stderr, "\ncolony: run: %s\n", e.msg);
		goto done;
	}
	double t_prompt = clock_sec() - t0;
	if (o.logits_out && write_logits(o.logits_out, lg, m->hp.n_vocab))
		goto done;

	const char *why = "length";
	long ngen = 0;
	t0 = clock_sec();
	while (ngen < o.n_predict) {
		int32_t t = smp_sample(ch, lg, m->hp.n_vocab);
		if (t < 0) {
			fprintf(stderr, "\ncolony: run: sampling failed: %s\n", err_str(t));
			goto done;
		}
		smp_accept(ch, t);
		if (!o.ignore_eos && vocab_is_eog(voc, t)) {
			why = "eos";
			break;
		}
		ngen++;
		if (text_out_token(&tout, t)) {
			why = "stop text";
			break;
		}
		if (ngen == o.n_predict)
			break;
		if (gen_pos(gen) >= gen_ctx(gen)) {
			why = "context";
			break;
		}
		if (gen_eval(gen, &t, 1, &lg, NULL, &e)) {
			fprintf(stderr, "\ncolony: run: %s\n", e.msg);
			goto done;
		}
	}
	double t_gen = clock_sec() - t0;
	text_out_end(&tout);
	printf("\n");
	fflush(stdout);
	fprintf(stderr, "colony: prompt %zu tokens, %.2f tokens/s; generation %ld tokens, %.2f tokens/s; stopped: %s%s\n",
		nt, t_prompt > 0 ? (double)nt / t_prompt : 0.0, ngen, t_gen > 0 ? (double)ngen / t_gen : 0.0, why,
		!strcmp(why, "context") ? " (the context is full)" : "");
	rc = 0;
done:
	if (have_tout)
		text_out_free(&tout);
	free(toks);
	free(prompt_buf);
	smp_chain_free(ch);
	gen_free(gen);
	pool_free(pool);
	vocab_free(voc);
	model_free(m);
	gguf_free(g);
	return rc;
}
