// dashboard.js - the colony dashboard: polls /api/status every second and
// draws the swarm (peers, layer coverage, sessions and their routes, latency
// and error figures). No libraries, no inline code (the page's CSP forbids
// it), text only through textContent. docs/PROTOCOL.md describes the data.
'use strict';

const POLL_MS = 1000;
const KEY_SLOT = 'colony-api-key';
const SVG = 'http://www.w3.org/2000/svg';
let timer = null;
let inFlight = false;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const dash = '\u2014';
const fmt = (v, digits) => (v === null || v === undefined || Number.isNaN(v)) ? dash : Number(v).toFixed(digits);
const span = (l) => `[${l[0]}, ${l[1]})`;

function ago(ms) {
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${ms} ms ago`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s ago`;
  return `${Math.round(ms / 60000)} min ago`;
}

function peerState(p) {
  if (p.connected) return 'connected';
  return p.listed ? 'unreachable' : 'gone';
}

function setBadge(cls, text) {
  const b = $('conn');
  b.className = `badge ${cls}`;
  b.textContent = text;
}

// ---- the API key (only asked for when the gateway answers 401)

function key() {
  try { return sessionStorage.getItem(KEY_SLOT) || ''; } catch (e) { return ''; }
}

function askKey(wrong) {
  $('keybox').hidden = false;
  $('main').hidden = true;
  $('keyerr').textContent = wrong ? 'That key was refused.' : '';
  setBadge('err', 'API key required');
  $('key').focus();
}

$('keyform').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const k = $('key').value.trim();
  if (!k) return;
  try { sessionStorage.setItem(KEY_SLOT, k); } catch (e) { /* private mode: keep it for this poll only */ }
  $('key').value = '';
  $('keybox').hidden = true;
  $('main').hidden = false;
  poll(k);
});

// ---- drawing

function cards(s) {
  const g = s.gateway, lat = s.latency;
  const up = s.peers.filter((p) => p.connected).length;
  $('c-peers').textContent = `${up} / ${s.peers.length}`;
  $('c-sessions').textContent = String(s.sessions.length);
  $('c-tps').textContent = fmt(lat.tokens_per_second_p50, 1);
  $('c-ttft').textContent = lat.ttft_ms_p50 === null ? dash : `${fmt(lat.ttft_ms_p50, 1)} / ${fmt(lat.ttft_ms_p90, 1)} ms`;
  $('c-tok').textContent = lat.token_ms_p50 === null ? dash : `${fmt(lat.token_ms_p50, 2)} / ${fmt(lat.token_ms_p90, 2)} ms`;
  $('c-failovers').textContent = String(g.failovers);
  $('c-errors').textContent = `${g.errors['4xx']} / ${g.errors['5xx']}`;
  $('c-tokens').textContent = `${g.tokens_in} / ${g.tokens_out}`;
  // the market does not exist yet: null until it does
  $('c-earnings').textContent = g.earnings === null ? dash : String(g.earnings);
  $('c-spend').textContent = g.spend === null ? dash : String(g.spend);
}

// Spans stacked in lanes: each node goes to the first lane where it overlaps
// nobody, so replicas of a span sit one above the other.
function lanes(peers) {
  const order = [...peers].sort((a, b) => a.layers[0] - b.layers[0] || a.layers[1] - b.layers[1] || (a.id < b.id ? -1 : 1));
  const ends = [];
  const out = [];
  for (const p of order) {
    let lane = ends.findIndex((end) => end <= p.layers[0]);
    if (lane < 0) { lane = ends.length; ends.push(0); }
    ends[lane] = p.layers[1];
    out.push({ p, lane });
  }
  return { rows: out, n: ends.length };
}

function coverage(s) {
  const box = $('coverage');
  box.replaceChildren();
  for (const m of s.models) {
    const L = m.layers;
    const div = el('div', { class: 'model', 'data-model': m.id });
    const title = el('div', { class: 'title' });
    title.append(el('strong', {}, m.id), ' ');
    title.append(el('span', { class: 'dim' }, `${L} layers, ${m.layers_covered} covered, min replicas ${m.min_replicas} `));
    if (m.missing.length) {
      title.append(el('span', { class: 'missing', id: `missing-${m.id}` }, `missing layers ${m.missing.map(span).join(' ')}`));
    } else {
      title.append(el('span', { class: 'state-connected' }, 'every layer served'));
    }
    div.append(title);
    if (L > 0) {
      const peers = s.peers.filter((p) => p.model_id === m.model_id);
      const { rows, n } = lanes(peers);
      const W = 1000, pad = 24, laneH = 22, gap = 4, covH = 14;
      const x = (l) => pad + (W - 2 * pad) * l / L;
      const H = 8 + Math.max(n, 1) * (laneH + gap) + covH + 28;
      const yc = 8 + Math.max(n, 1) * (laneH + gap);
      const svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `layer coverage of ${m.id}` });
      // layer boundaries first, under everything
      const step = Math.max(1, Math.ceil(L / 16));
      for (let l = 0; l <= L; l += step) {
        svg.append(svgEl('line', { x1: x(l), x2: x(l), y1: 4, y2: yc + covH + 4, class: 'tick' }));
        svg.append(svgEl('text', { x: x(l) - 3, y: yc + covH + 18, class: 'axis' }, l));
      }
      if (L % step) svg.append(svgEl('text', { x: x(L) - 3, y: yc + covH + 18, class: 'axis' }, L));
      for (const { p, lane } of rows) {
        const st = peerState(p);
        const cls = st === 'connected' ? 'seg-up' : st === 'unreachable' ? 'seg-down' : 'seg-gone';
        const y = 8 + lane * (laneH + gap);
        const g = svgEl('g', { 'data-peer': p.id, 'data-state': st, 'data-layers': `${p.layers[0]}-${p.layers[1]}` });
        g.append(svgEl('rect', { x: x(p.layers[0]) + 1, y, width: Math.max(x(p.layers[1]) - x(p.layers[0]) - 2, 2), height: laneH, rx: 3, class: cls }));
        g.append(svgEl('title', {}, `${p.short} ${p.address} layers ${span(p.layers)} ${st}`));
        g.append(svgEl('text', { x: x(p.layers[0]) + 6, y: y + 15, class: 'seg-label' }, `${p.short.slice(0, 8)} ${span(p.layers)}`));
        svg.append(g);
      }
      // the coverage strip: one cell per layer, coloured by connected replicas
      for (let l = 0; l < L; l++) {
        const r = m.replicas[l];
        const c = svgEl('rect', { x: x(l), y: yc, width: Math.max(x(l + 1) - x(l) - 0.5, 0.5), height: covH,
          class: r === 0 ? 'cov-0' : r === 1 ? 'cov-1' : 'cov-2', 'data-layer': l, 'data-replicas': r });
        c.append(svgEl('title', {}, `layer ${l}: ${r} replica${r === 1 ? '' : 's'} connected, ${m.announced[l]} announced`));
        svg.append(c);
      }
      div.append(svg);
    }
    box.append(div);
  }
  if (!s.models.length) box.append(el('p', { class: 'empty' }, 'no model'));
}

function fill(tableId, rows, empty, cols) {
  const tb = $(tableId).tBodies[0];
  tb.replaceChildren();
  if (!rows.length) {
    const tr = el('tr');
    tr.append(el('td', { colspan: cols, class: 'empty' }, empty));
    tb.append(tr);
    return;
  }
  for (const r of rows) tb.append(r);
}

function peersTable(s) {
  const rows = [...s.peers]
    .sort((a, b) => a.layers[0] - b.layers[0] || (a.id < b.id ? -1 : 1))
    .map((p) => {
      const st = peerState(p);
      const tr = el('tr', { 'data-peer': p.id, 'data-state': st, class: st === 'gone' ? 'gone' : '' });
      tr.append(el('td', { class: 'mono', title: p.id }, p.short),
        el('td', { class: 'mono' }, p.address),
        el('td', { class: 'layers' }, span(p.layers)),
        el('td', { class: `state-${st}` }, st),
        el('td', {}, fmt(p.rtt_ms, 2)),
        el('td', {}, p.throughput_tps > 0 ? fmt(p.throughput_tps, 1) : dash),
        el('td', {}, p.price),
        el('td', { class: 'score', title: `${p.sessions} sessions, ${p.failures} failed, ${p.digests} digests from others` }, fmt(p.score, 2)),
        el('td', { class: 'paid' }, p.paid),
        el('td', {}, p.free_sessions),
        el('td', {}, ago(p.age_ms)));
      return tr;
    });
  fill('peers', rows, 'no peer found yet', 11);
}

function sessionsTable(s) {
  const rows = s.sessions.map((x) => {
    const tr = el('tr', { 'data-session': x.id });
    const route = el('td', { class: 'route mono' });
    route.textContent = x.route.length ? x.route.map((h) => `${span(h.layers)} ${h.short.slice(0, 8)}`).join(' \u2192 ') : dash;
    tr.append(el('td', { class: 'mono' }, x.id.slice(0, 20)), el('td', {}, x.kind + (x.stream ? ' (stream)' : '')),
      el('td', {}, x.state), route, el('td', {}, `${x.prompt_tokens} + ${x.completion_tokens}`),
      el('td', {}, fmt(x.tokens_per_second, 1)), el('td', {}, x.ttft_ms === null ? dash : `${fmt(x.ttft_ms, 1)} ms`),
      el('td', {}, x.failovers), el('td', {}, `${fmt(x.age_s, 1)} s`));
    return tr;
  });
  fill('sessions', rows, 'no session running', 9);
}

function recentTable(s) {
  const rows = [...s.recent].reverse().slice(0, 20).map((x) => {
    const tr = el('tr');
    tr.append(el('td', { class: 'mono' }, x.id.slice(0, 20)), el('td', { class: x.outcome === 'ok' ? '' : 'bad' }, x.outcome),
      el('td', {}, x.prompt_tokens), el('td', {}, x.completion_tokens),
      el('td', {}, x.ttft_ms === null ? dash : `${fmt(x.ttft_ms, 1)} ms`), el('td', {}, fmt(x.tokens_per_second, 1)),
      el('td', {}, x.failovers), el('td', {}, ago(s.time_ms - x.end_ms)));
    return tr;
  });
  fill('recent', rows, 'none yet', 8);
}

function draw(s) {
  const g = s.gateway;
  $('model').textContent = `${g.model} \u00b7 ${g.url}`;
  $('updated').textContent = `updated ${new Date(s.time_ms).toLocaleTimeString()}`;
  setBadge('ok', 'live');
  cards(s);
  coverage(s);
  peersTable(s);
  sessionsTable(s);
  recentTable(s);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

// ---- polling

async function poll(k) {
  clearTimeout(timer);
  if (inFlight) return;
  inFlight = true;
  let again = true;
  try {
    const headers = { Accept: 'application/json' };
    const useKey = k !== undefined ? k : key();
    if (useKey) headers.Authorization = `Bearer ${useKey}`;
    const r = await fetch('/api/status', { headers, cache: 'no-store' });
    if (r.status === 401) {
      askKey(Boolean(useKey));
      again = false;   // until a key is given
    } else if (!r.ok) {
      setBadge('err', `HTTP ${r.status}`);
    } else {
      draw(await r.json());
    }
  } catch (e) {
    setBadge('err', 'gateway unreachable');
  } finally {
    inFlight = false;
    if (again) timer = setTimeout(() => poll(), POLL_MS);
  }
}

poll();
