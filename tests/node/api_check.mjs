// api_check.mjs - drives colony's HTTP API with the official `openai` client.
// Usage: node api_check.mjs CONFIG.json
// CONFIG: { url, key, model, prompt, chat_prompt, n, concurrent,
//           want_completion, want_completion_tokens, want_prompt_tokens, want_completion_finish,
//           want_chat, want_chat_tokens, want_chat_prompt_tokens, want_chat_finish }
// Prints "ok   - ..." / "FAIL - ..." lines; exits 1 on any failure.
import fs from 'node:fs';
import OpenAI from 'openai';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let fails = 0;
const ok = (c, msg) => {
  console.log((c ? 'ok   - ' : 'FAIL - ') + msg);
  if (!c) fails++;
};
const show = (s) => JSON.stringify(s.length > 50 ? s.slice(0, 50) + '...' : s);
const client = new OpenAI({ baseURL: cfg.url, apiKey: cfg.key, maxRetries: 0, timeout: 120000 });

const comp = { model: cfg.model, prompt: cfg.prompt, max_tokens: cfg.n, temperature: 0, seed: 42 };
const chat = {
  model: cfg.model,
  messages: [{ role: 'user', content: cfg.chat_prompt }],
  max_tokens: cfg.n,
  temperature: 0,
  seed: 42,
};

async function streamed(kind, params) {
  const s = kind === 'chat'
    ? await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } })
    : await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0, role = null;
  for await (const ch of s) {
    chunks++;
    if (ch.choices && ch.choices.length) {
      const c = ch.choices[0];
      if (kind === 'chat') {
        if (c.delta.role) role = c.delta.role;
        text += c.delta.content ?? '';
      } else {
        text += c.text ?? '';
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (ch.usage) usage = ch.usage;
  }
  return { text, finish, usage, chunks, role };
}

try {
  // models
  const models = await client.models.list();
  const m = models.data.find((x) => x.id === cfg.model);
  ok(m && m.available === true && m.layers_covered === m.layers, `models: '${cfg.model}' listed and available (${m ? m.layers_covered + '/' + m.layers + ' layers, ' + m.replicas + ' replicas' : 'missing'})`);

  // completions, whole
  const { data: r, response } = await client.completions.create(comp).withResponse();
  const t = r.choices[0].text;
  ok(t === cfg.want_completion, `completions: text equals colony run's ${show(t)}`);
  ok(r.usage.completion_tokens === cfg.want_completion_tokens && r.usage.prompt_tokens === cfg.want_prompt_tokens &&
     r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens,
     `completions: usage ${JSON.stringify(r.usage)} agrees with colony run (${cfg.want_prompt_tokens} + ${cfg.want_completion_tokens})`);
  ok(r.choices[0].finish_reason === cfg.want_completion_finish, `completions: finish_reason ${r.choices[0].finish_reason}`);
  ok(/^cmpl-/.test(r.id) && r.object === 'text_completion' && Math.abs(r.created - Date.now() / 1000) < 600, `completions: id ${r.id}, object, created`);
  const route = response.headers.get('x-colony-route') || '';
  ok(/^\[0,\d+\) [0-9a-f]{8} /.test(route), `completions: X-Colony-Route names the peers (${route})`);
  ok(Number(response.headers.get('x-colony-tokens-per-second')) > 0, `completions: X-Colony-Tokens-Per-Second ${response.headers.get('x-colony-tokens-per-second')}`);

  // completions, streamed
  const s1 = await streamed('completion', comp);
  ok(s1.text === cfg.want_completion && s1.chunks > 2, `completions streamed: same text in ${s1.chunks} chunks`);
  ok(s1.usage && s1.usage.completion_tokens === cfg.want_completion_tokens && s1.usage.prompt_tokens === cfg.want_prompt_tokens,
     `completions streamed: usage chunk ${JSON.stringify(s1.usage)}`);
  ok(s1.finish === cfg.want_completion_finish, `completions streamed: finish_reason ${s1.finish}`);

  // chat, whole and streamed
  const c = await client.chat.completions.create(chat);
  const ct = c.choices[0].message.content;
  ok(ct === cfg.want_chat, `chat: text equals colony run --chat's ${show(ct)}`);
  ok(c.usage.completion_tokens === cfg.want_chat_tokens && c.usage.prompt_tokens === cfg.want_chat_prompt_tokens,
     `chat: usage ${JSON.stringify(c.usage)} agrees with colony run --chat (${cfg.want_chat_prompt_tokens} + ${cfg.want_chat_tokens})`);
  ok(c.choices[0].finish_reason === cfg.want_chat_finish && c.choices[0].message.role === 'assistant' && /^chatcmpl-/.test(c.id),
     `chat: finish_reason ${c.choices[0].finish_reason}, role, id`);
  const s2 = await streamed('chat', chat);
  ok(s2.text === cfg.want_chat && s2.role === 'assistant', `chat streamed: same text, role in the first delta (${s2.chunks} chunks)`);
  ok(s2.usage && s2.usage.completion_tokens === cfg.want_chat_tokens && s2.finish === cfg.want_chat_finish,
     `chat streamed: usage ${JSON.stringify(s2.usage)}, finish_reason ${s2.finish}`);

  // stop strings: one inside a token run, one spanning several tokens; the
  // text stops before the first, streamed or not
  const full = cfg.want_completion;
  for (const stop of [cfg.stop_a, cfg.stop_b]) {
    const want = full.slice(0, full.indexOf(stop));
    const w = await client.completions.create({ ...comp, stop: [stop, 'zzzz-never'] });
    ok(w.choices[0].text === want && w.choices[0].finish_reason === 'stop', `stop ${JSON.stringify(stop)}: text cut before it, finish_reason stop`);
    const ws = await streamed('completion', { ...comp, stop });
    ok(ws.text === want && ws.finish === 'stop' && ws.usage.completion_tokens < cfg.want_completion_tokens,
       `stop ${JSON.stringify(stop)} streamed: same cut (${ws.usage.completion_tokens} tokens)`);
  }

  // many streams at once: every one gets the single-stream text
  const N = cfg.concurrent;
  const t0 = Date.now();
  const all = await Promise.all(Array.from({ length: N }, (_, i) =>
    (i % 2 ? streamed('chat', chat) : streamed('completion', comp)).catch((e) => ({ error: String(e) }))));
  const good = all.filter((x, i) => !x.error && x.text === (i % 2 ? cfg.want_chat : cfg.want_completion) &&
    x.usage && x.usage.completion_tokens === (i % 2 ? cfg.want_chat_tokens : cfg.want_completion_tokens)).length;
  const errs = all.filter((x) => x.error).map((x) => x.error);
  ok(good === N, `${N} concurrent streams: ${good} complete with the single-stream text in ${((Date.now() - t0) / 1000).toFixed(1)} s${errs.length ? ' (' + errs[0] + ')' : ''}`);
} catch (e) {
  ok(false, `unexpected error: ${e && e.stack ? e.stack : e}`);
}
process.exit(fails ? 1 : 0);
