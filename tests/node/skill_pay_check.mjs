// skill_pay_check.mjs - calls a paid skill through a gateway that pays for it
// (the provider is another gateway), with the official `openai` client, whole
// and streamed, and reports the output tokens the client saw (usage).
// Usage: node skill_pay_check.mjs CONFIG.json
// CONFIG: { url (the paying gateway), skill, user, n }
// Prints "ok   - ..." / "FAIL - ..." lines, then "usage CALLS TOKENS"; exits 1
// on any failure.
import fs from 'node:fs';
import OpenAI from 'openai';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let fails = 0;
const ok = (c, msg) => {
  console.log((c ? 'ok   - ' : 'FAIL - ') + msg);
  if (!c) fails++;
};
const client = new OpenAI({ baseURL: cfg.url, apiKey: 'unused', maxRetries: 0, timeout: 60000 });
const params = {
  model: cfg.skill,
  messages: [{ role: 'user', content: cfg.user }],
  max_tokens: cfg.n,
  temperature: 0,
  seed: 7,
};
let calls = 0;
let tokens = 0;

try {
  const r = await client.chat.completions.create(params);
  calls++;
  tokens += r.usage.completion_tokens;
  const text = r.choices[0].message.content;
  ok(text.length > 0 && r.usage.completion_tokens > 0 && r.usage.completion_tokens <= cfg.n &&
     ['stop', 'length'].includes(r.choices[0].finish_reason),
     `openai client, paid whole answer: ${r.usage.completion_tokens} tokens, ${r.choices[0].finish_reason}`);

  const s = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  calls++;
  let st = '';
  let chunks = 0;
  let usage = null;
  for await (const c of s) {
    chunks++;
    if (c.choices.length && c.choices[0].delta.content) st += c.choices[0].delta.content;
    if (c.usage) usage = c.usage;
  }
  ok(usage !== null && st === text && chunks > 2,
     `openai client, paid stream: ${chunks} chunks, same text as the whole answer, usage ${usage && usage.completion_tokens}`);
  if (usage) tokens += usage.completion_tokens;
} catch (e) {
  ok(false, `openai client: ${e}`);
}
console.log(`usage ${calls} ${tokens}`);
process.exit(fails ? 1 : 0);
