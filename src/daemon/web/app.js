// capstan's status page: reads the daemon's API, follows /v1/events for live updates, and
// calls the API's actions with the token kept for this tab only. No library; every text from
// the API goes in with textContent, never as HTML.
'use strict';

const KEY = 'capstan-token';
let token = sessionStorage.getItem(KEY) || '';
let canRead = false;
let status = null;
let commits = [];
let plan = null;
// Step statuses from events since the plan was last read: a read that started before an event
// must not take a step back.
let live = {};
let streamAbort = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h['Authorization'] = 'Bearer ' + token;
  return h;
}

async function api(path, opts) {
  const o = Object.assign({}, opts || {});
  o.headers = headers(o.headers);
  const r = await fetch(path, o);
  if (r.status === 401) {
    canRead = false;
    showMode();
    throw new Error('401: a token is required');
  }
  return r;
}

function short(sha) { return sha ? sha.slice(0, 10) : '–'; }

function ago(iso) {
  if (!iso) return '–';
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return Math.floor(s) + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return Math.floor(s / 86400) + ' d ago';
}

function word(w) {
  const text = String(w || 'unknown');
  return el('span', { class: 'st ' + text.replace(/[^A-Za-z_]/g, '') }, text);
}

function time(iso) {
  return iso ? el('time', { datetime: iso, title: iso, 'data-ago': iso }, ago(iso)) : '–';
}

function showMode() {
  const mode = $('mode');
  let text;
  if (!canRead && !token) {
    text = 'Read-only: no token. This daemon needs its API token to show its state and to act; enter it above.';
  } else if (!canRead) {
    text = 'Read-only: the daemon refused this token (401). Enter the right one above.';
  } else if (token) {
    text = 'Token in use for this tab: the buttons act on the daemon.';
  } else {
    text = 'This daemon asks for no token: the buttons act on it.';
  }
  mode.textContent = text;
  if (!canRead && !status) {
    $('target-rows').replaceChildren(el('tr', {}, el('td', { colspan: '5' }, 'Not shown without the token.')));
  }
  mode.className = canRead ? '' : 'readonly';
  for (const b of document.querySelectorAll('button.act')) {
    b.disabled = !canRead;
    if (!canRead) b.title = 'Read-only without a token'; else b.removeAttribute('title');
  }
}

function renderStatus() {
  if (!status) return;
  const repo = status.repository || {};
  $('where').textContent = `${repo.location || ''} (${repo.ref || 'default branch'}) → ${status.destination || ''} · phase: ${status.phase}${status.interrupted ? ' · interrupted' : ''}`;
  const l = status.live || {};
  const c = commits.find((x) => x.sha === l.sha);
  const drift = (status.drifted || []).length ? (status.drifted.length + ' drifted: ' + status.drifted.join(', ')) : 'none';
  const state = status.interrupted ? 'interrupted' : (status.phase === 'applying' ? 'applying' : (l.status || 'pending'));
  const row = el('tr', {},
    el('td', { 'data-label': 'Target' }, `${status.destination || ''} (${status.platform || ''})`),
    el('td', { 'data-label': 'Commit' }, el('code', { class: 'sha', title: l.sha || '' }, short(l.sha)), l.why ? el('div', { class: 'muted' }, l.why) : null),
    el('td', { 'data-label': 'Status' }, word(state)),
    el('td', { 'data-label': 'Drift' }, drift === 'none' ? 'none' : word('drift'), drift === 'none' ? null : ' ' + drift),
    el('td', { 'data-label': 'Since' }, time(c ? (c.applied_at || c.seen_at) : status.last_reconcile)));
  $('target-rows').replaceChildren(row);
}

function stepStatus(s) {
  const rank = (x) => ({ COMPLETE: 2, ERROR: 2, IN_PROGRESS: 1 })[x] || 0;
  const ev = live[s.id];
  return ev && rank(ev) > rank(s.status) ? ev : s.status;
}

function renderPlan() {
  const box = $('phases');
  if (!plan) {
    $('plan-summary').textContent = 'No plan has run yet.';
    box.replaceChildren();
    return;
  }
  $('plan-summary').replaceChildren('Commit ', el('code', { class: 'sha', title: plan.commit }, short(plan.commit)), ': ', word(plan.status));
  const phases = (plan.phases || []).map((p) => el('div', { class: 'phase', role: 'group', 'aria-label': 'Phase ' + p.name },
    el('h3', {}, p.name, ' ', word(p.status)),
    el('ol', { class: 'steps' }, (p.steps || []).map(stepItem))));
  box.replaceChildren(...phases);
}

function stepItem(s) {
  const st = stepStatus(s);
  const diffId = 'diff-' + s.id;
  const diff = el('pre', { id: diffId, hidden: true, 'aria-label': 'Diff of ' + s.name });
  const btn = el('button', { type: 'button', 'aria-expanded': 'false', 'aria-controls': diffId, onclick: () => toggleDiff(s.id, btn, diff) }, 'Show diff');
  const sub = substepList(s.name, s.substeps);
  return el('li', { id: 'step-' + s.id, 'data-step': s.id, 'data-status': st },
    el('div', { class: 'step-head' },
      el('span', { class: 'step-name' }, s.name),
      el('span', { class: 'step-status', role: 'status', 'aria-label': s.name + ': ' + st }, word(st)),
      btn),
    s.message ? el('div', { class: 'muted step-message' }, s.message) : null,
    sub, diff);
}

// A step's sub-steps: the platform's own plan it follows (phase / step, status, message).
function substepList(name, subs) {
  if (!Array.isArray(subs) || !subs.length) return null;
  return el('ol', { class: 'substeps', 'aria-label': 'Sub-steps of ' + name }, subs.map((x) => {
    const label = (x.phase ? x.phase + ' / ' : '') + (x.step || x.name || '');
    return el('li', { 'data-substep': label, 'data-status': x.status || '' }, label, ' ', word(x.status),
      x.message ? el('span', { class: 'muted' }, ' ' + x.message) : null);
  }));
}

function setSubsteps(id, subs) {
  const li = document.getElementById('step-' + id);
  if (!li) return false;
  const list = substepList(li.querySelector('.step-name').textContent, subs);
  const old = li.querySelector('ol.substeps');
  if (old) old.remove();
  if (list) li.querySelector('pre').before(list);
  return true;
}

async function toggleDiff(id, btn, pre) {
  if (btn.getAttribute('aria-expanded') === 'true') {
    btn.setAttribute('aria-expanded', 'false');
    btn.textContent = 'Show diff';
    pre.hidden = true;
    return;
  }
  try {
    const r = await api('/v1/plans/deploy/steps/' + encodeURIComponent(id) + '/diff');
    pre.textContent = await r.text();
  } catch (e) {
    pre.textContent = String(e.message || e);
  }
  pre.hidden = false;
  btn.setAttribute('aria-expanded', 'true');
  btn.textContent = 'Hide diff';
}

function setStep(id, st, message) {
  live[id] = st;
  const li = document.getElementById('step-' + id);
  if (!li) return false;
  li.dataset.status = st;
  const s = li.querySelector('.step-status');
  s.setAttribute('aria-label', li.querySelector('.step-name').textContent + ': ' + st);
  s.replaceChildren(word(st));
  if (message) {
    let m = li.querySelector('.step-message');
    if (!m) { m = el('div', { class: 'muted step-message' }); li.querySelector('.step-head').after(m); }
    m.textContent = message;
  }
  return true;
}

function errorList(errors) {
  if (!errors || !errors.length) return '';
  return el('ul', { class: 'errors' }, errors.map((e) => {
    const loc = e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ` : (e.step ? e.step + ': ' : '');
    return el('li', {}, e.text || (loc + (e.message || JSON.stringify(e))));
  }));
}

function renderCommits() {
  const rows = commits.map((c) => el('tr', { 'data-sha': c.sha },
    el('td', { 'data-label': 'Commit' }, el('code', { class: 'sha', title: c.sha }, short(c.sha))),
    el('td', { 'data-label': 'Author' }, c.author || '–'),
    el('td', { 'data-label': 'Message' }, c.message || ''),
    el('td', { 'data-label': 'Status' }, word(c.status)),
    el('td', { 'data-label': 'Errors' }, errorList(c.errors)),
    el('td', { 'data-label': 'Seen' }, time(c.seen_at)),
    el('td', {}, c.status === 'applied'
      ? el('button', { type: 'button', class: 'act rollback', 'data-sha': c.sha, 'aria-label': 'Roll back to ' + short(c.sha), onclick: () => rollback(c.sha) }, 'Roll back')
      : '')));
  $('history-rows').replaceChildren(...rows);
  showMode();
}

// Reads run one at a time per kind; a read asked for while one runs runs again after it.
const loading = {};
function refresh(kind) {
  const load = { status: loadStatus, commits: loadCommits, plan: loadPlan }[kind];
  if (loading[kind]) { loading[kind] = 'again'; return; }
  loading[kind] = true;
  load().catch(() => {}).finally(() => {
    const again = loading[kind] === 'again';
    loading[kind] = false;
    if (again) refresh(kind);
  });
}

async function loadStatus() {
  const r = await api('/v1/status');
  if (!r.ok) return;
  status = await r.json();
  canRead = true;
  showMode();
  renderStatus();
}

async function loadCommits() {
  const r = await api('/v1/commits?limit=50');
  if (!r.ok) return;
  commits = await r.json();
  renderCommits();
  renderStatus();
}

async function loadPlan() {
  const r = await api('/v1/plans/deploy');
  if (r.status === 404) { plan = null; renderPlan(); return; }
  if (!r.ok) return;
  plan = await r.json();
  renderPlan();
}

function loadAll() { refresh('status'); refresh('commits'); refresh('plan'); }

function onEvent(e) {
  switch (e.type) {
    case 'step_started':
      if (!setStep(e.step, 'IN_PROGRESS')) refresh('plan');
      break;
    case 'step_finished':
      if (!setStep(e.step, 'COMPLETE')) refresh('plan');
      break;
    case 'step_failed':
      if (!setStep(e.step, 'ERROR', e.message)) refresh('plan');
      break;
    case 'step_progress':
      if (!setSubsteps(e.step, e.substeps)) refresh('plan');
      break;
    case 'plan_started': case 'plan_replanned': case 'plan_continued':
      live = {};
      loadAll();
      break;
    default:
      loadAll();
  }
}

// EventSource cannot send an Authorization header, so the stream is read with fetch; it
// reconnects with Last-Event-ID (backing off), so nothing published meanwhile is missed.
async function follow() {
  if (streamAbort) streamAbort.abort();
  const abort = new AbortController();
  streamAbort = abort;
  let last = null;
  let delay = 1000;
  while (!abort.signal.aborted) {
    try {
      const h = {};
      if (last !== null) h['Last-Event-ID'] = last;
      const r = await fetch('/v1/events', { headers: headers(h), signal: abort.signal });
      if (r.status === 401) { $('stream').textContent = 'Live updates: need the token.'; return; }
      if (!r.ok) throw new Error('HTTP ' + r.status);
      $('stream').textContent = 'Live updates: connected.';
      delay = 1000;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('id:')) last = line.slice(3).trim();
            else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
          }
          if (data) { try { onEvent(JSON.parse(data)); } catch (_) { /* not ours */ } }
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    $('stream').textContent = 'Live updates: reconnecting…';
    await new Promise((res) => setTimeout(res, delay));
    delay = Math.min(delay * 2, 30000);
    // What changed while disconnected beyond the replayed events.
    loadAll();
  }
}

async function act(path, body) {
  const out = $('action-result');
  try {
    const opts = { method: 'POST' };
    if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers = { 'Content-Type': 'application/json' };
    }
    const r = await api(path, opts);
    const j = await r.json().catch(() => ({}));
    out.textContent = `${r.status}: ${j.message || ''}`;
  } catch (e) {
    out.textContent = String(e.message || e);
  }
  loadAll();
}

function rollback(sha) {
  if (!window.confirm('Roll back to ' + short(sha) + '? The daemon keeps to it until the next commit.')) return;
  act('/v1/rollback', { to: sha });
}

function start() {
  $('token').value = '';
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    $('token').value = '';
    if (token) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY);
    canRead = false;
    loadAll();
    follow();
  });
  $('token-forget').addEventListener('click', () => {
    token = '';
    sessionStorage.removeItem(KEY);
    canRead = false;
    showMode();
    loadAll();
    follow();
  });
  $('sync').addEventListener('click', () => act('/v1/sync'));
  $('interrupt').addEventListener('click', () => act('/v1/plans/deploy/interrupt'));
  $('continue').addEventListener('click', () => act('/v1/plans/deploy/continue'));
  showMode();
  follow();
  loadAll();
  // Only the "3 min ago" texts change with time; nothing is fetched for them.
  setInterval(() => {
    for (const t of document.querySelectorAll('time[data-ago]')) t.textContent = ago(t.dataset.ago);
  }, 15000);
}

document.addEventListener('DOMContentLoaded', start);
