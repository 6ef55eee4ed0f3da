// skills_check.mjs - calls a skill through a gateway that does not offer it,
// with the official `openai` client, whole and streamed.
// Usage: node skills_check.mjs CONFIG.json
// CONFIG: { url (the relaying gateway), skill, user, n, want (text of a direct call) }
// Prints "ok   - ..." / "FAIL - ..." lines; exits 1 on any failure.
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
  seed: 42,
};

try {
  const r = await client.chat.completions.create(params);
  const text = r.choices[0].message.content;
  ok(text === cfg.want, `openai client: ${cfg.skill} through the other gateway equals the direct call (${JSON.stringify(text.slice(0, 40))}...)`);
  ok(r.model === cfg.skill, `the response names the model ${cfg.skill}`);

  const s = await client.chat.completions.create({ ...params, stream: true });
  let st = '';
  let chunks = 0;
  for await (const c of s) {
    chunks++;
    if (c.choices.length && c.choices[0].delta.content) st += c.choices[0].delta.content;
  }
  ok(st === cfg.want && chunks > 2, `openai client, streamed through the relay: ${chunks} chunks, same text`);

  let status = 0;
  let code = '';
  try {
    await client.chat.completions.create({ ...params, model: 'skill:no-such-skill' });
  } catch (e) {
    status = e.status;
    code = e.code;
  }
  ok(status === 404 && code === 'model_not_found', `unknown skill: ${status} ${code}`);
} catch (e) {
  ok(false, `openai client: ${e}`);
}
process.exit(fails ? 1 : 0);
