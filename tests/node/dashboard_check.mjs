// dashboard_check.mjs - the colony dashboard in headless Chromium (Debian's
// chromium, driven by playwright-core).
// Usage: node dashboard_check.mjs CONFIG.json
// CONFIG: { url: "http://127.0.0.1:PORT", chromium, out (folder for screenshots),
//           mode: "swarm" | "key",
//           swarm: nodes: [{ id, layers: [a, b], pid }], kill (index into nodes),
//                  layers (the model's), stale_ms (the swarm's staleness bound)
//           key:   key (the gateway's API key) }
// Prints "ok   - ..." / "FAIL - ..." lines; exits 1 on any failure.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let fails = 0;
const ok = (c, msg) => {
  console.log((c ? 'ok   - ' : 'FAIL - ') + msg);
  if (!c) fails++;
  return c;
};

// Polls fn (in the page) until it returns true or ms pass; returns the time taken or -1.
async function until(page, ms, fn, arg) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 100 });
    return Date.now() - t0;
  } catch (e) {
    return -1;
  }
}

const browser = await chromium.launch({ executablePath: cfg.chromium || '/usr/bin/chromium', args: ['--no-sandbox', '--headless=new'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
const expected = [];   // console errors the test causes on purpose (key mode)
page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));

try {
  const resp = await page.goto(cfg.url + '/', { waitUntil: 'load' });
  ok(resp.status() === 200, `GET / answers 200 (${resp.status()})`);
  const csp = resp.headers()['content-security-policy'] || '';
  ok(/default-src 'none'/.test(csp) && /script-src 'self'/.test(csp) && !/unsafe-inline/.test(csp),
    `a strict Content-Security-Policy: ${csp}`);

  if (cfg.mode === 'key') {
    // the gateway wants a key: the page says so and asks for it
    const asked = await until(page, 10000, () => !document.getElementById('keybox').hidden && document.getElementById('main').hidden);
    ok(asked >= 0, 'without a key the page asks for one (and hides the empty dashboard)');
    ok((await page.textContent('#conn')) === 'API key required', 'the status badge says the key is required');
    // that first 401 is logged by Chromium as a failed resource: expected
    expected.push(...errors.splice(0).filter((e) => /401/.test(e)));
    await page.fill('#key', 'sk-wrong');
    await page.click('#keyform button');
    const wrong = await until(page, 10000, () => /refused/.test(document.getElementById('keyerr').textContent));
    ok(wrong >= 0, 'a wrong key is refused, and the page says so');
    expected.push(...errors.splice(0).filter((e) => /401/.test(e)));
    await page.fill('#key', cfg.key);
    await page.click('#keyform button');
    const live = await until(page, 10000, () => document.querySelectorAll('#peers tbody tr[data-peer]').length > 0);
    ok(live >= 0, 'with the right key (sent as a bearer header) the dashboard fills in');
    ok((await page.textContent('#conn')) === 'live', 'the badge says live');
    await page.screenshot({ path: path.join(cfg.out, 'dashboard-key.png'), fullPage: true });
  } else {
    const nodes = cfg.nodes;
    // every node, its span and state, in the table and in the coverage picture
    const all = await until(page, 15000, (ids) => ids.every((id) =>
      document.querySelector(`#peers tr[data-peer="${id}"][data-state="connected"]`) &&
      document.querySelector(`#coverage g[data-peer="${id}"][data-state="connected"]`)), nodes.map((n) => n.id));
    ok(all >= 0, `the page shows all ${nodes.length} nodes connected (${all} ms)`);
    for (const n of nodes) {
      const row = await page.$(`#peers tr[data-peer="${n.id}"]`);
      const layers = row ? await row.$eval('td.layers', (td) => td.textContent) : null;
      ok(layers === `[${n.layers[0]}, ${n.layers[1]})`, `node ${n.id.slice(0, 8)}: its span ${layers} in the table`);
      const seg = await page.$(`#coverage g[data-peer="${n.id}"]`);
      const sl = seg ? await seg.getAttribute('data-layers') : null;
      ok(sl === `${n.layers[0]}-${n.layers[1]}`, `node ${n.id.slice(0, 8)}: drawn over layers ${sl} in the coverage bar`);
    }
    // the market columns: the route's servers are scored, the others not yet
    const scores = await page.$$eval('#peers tbody tr[data-peer] td.score', (tds) => tds.map((td) => td.textContent));
    ok(scores.length === nodes.length && scores.filter((t) => /^(0\.\d\d|1\.00)$/.test(t)).length === 2,
      `score column: ${scores.join(' ')} (the 2 servers of the route scored)`);
    const cells = await page.$$eval('#coverage rect[data-layer]', (rs) => rs.map((r) => Number(r.getAttribute('data-replicas'))));
    ok(cells.length === cfg.layers && cells.every((r) => r === 2), `coverage strip: ${cells.length} layers, replicas ${cells.join(',')}`);
    ok(await page.$('#coverage .missing') === null, 'no layer marked missing');
    ok((await page.textContent('#c-earnings')) === '\u2014' && (await page.textContent('#c-spend')) === '0',
      'earnings unknown outside a node; the unpaid gateway spent 0');
    // a generation shows up in the figures
    const r = await fetch(cfg.url + '/v1/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: cfg.model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 }) });
    ok(r.status === 200, `a completion through the gateway (${r.status})`);
    const shown = await until(page, 5000, () => document.querySelectorAll('#recent tbody tr').length > 0 && !document.querySelector('#recent td.empty') &&
      document.getElementById('c-ttft').textContent !== '\u2014');
    ok(shown >= 0, 'the finished generation appears with its first-token latency');
    await page.screenshot({ path: path.join(cfg.out, 'dashboard-before.png'), fullPage: true });

    // SIGKILL one node: its connection drops at once, its record goes stale later
    const victim = nodes[cfg.kill];
    process.kill(victim.pid, 'SIGKILL');
    const t0 = Date.now();
    const down = await until(page, 10000, (id) => {
      const tr = document.querySelector(`#peers tr[data-peer="${id}"]`);
      return tr && tr.dataset.state !== 'connected';
    }, victim.id);
    ok(down >= 0, `the killed node (pid ${victim.pid}) is shown down after ${down} ms`);
    const one = await until(page, 5000, (span) => {
      const rs = [...document.querySelectorAll('#coverage rect[data-layer]')];
      return rs.length && rs.every((r) => {
        const l = Number(r.dataset.layer), want = l >= span[0] && l < span[1] ? 1 : 2;
        return Number(r.dataset.replicas) === want;
      });
    }, victim.layers);
    ok(one >= 0, `its layers [${victim.layers[0]}, ${victim.layers[1]}) drop to one replica in the coverage strip`);
    const others = await page.$$eval('#peers tr[data-state="connected"]', (rs) => rs.length);
    ok(others === nodes.length - 1, `the other ${others} nodes stay connected`);
    // within the staleness bound (plus a refresh and the 1 s poll), the record expires
    const bound = cfg.stale_ms + 5000;
    const gone = await until(page, bound, (id) => {
      const tr = document.querySelector(`#peers tr[data-peer="${id}"]`);
      return tr && tr.dataset.state === 'gone';
    }, victim.id);
    ok(gone >= 0, `its record expires from the view within the staleness bound (${Date.now() - t0} ms after the kill, bound ${bound} ms)`);
    await page.screenshot({ path: path.join(cfg.out, 'dashboard-after-kill.png'), fullPage: true });
    const updates = Number(await page.getAttribute('body', 'data-updates'));
    ok(updates >= 3, `the page kept polling (${updates} updates)`);
  }
} catch (e) {
  ok(false, `exception: ${e && e.stack ? e.stack : e}`);
} finally {
  if (!ok(errors.length === 0, `no console errors${errors.length ? ': ' + errors.join(' | ') : ''}`)) {
    // keep going: the other checks already printed
  }
  if (expected.length) console.log(`# expected console errors (401 before the key): ${expected.length}`);
  await browser.close();
}
process.exit(fails ? 1 : 0);
