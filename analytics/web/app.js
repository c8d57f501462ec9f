// The Loom dashboard: sign-in, the global time range and the filters (all kept in the
// URL, so a view survives a reload and can be shared), and which view is shown.

import { session, AuthError, get } from './api.js';
import { renderOverview, clearOverview } from './overview.js';
import { TraceList } from './traces.js';
import { renderDetail } from './detail.js';
import { clear } from './dom.js';

const PRESETS = { '1h': 3600, '24h': 86400, '7d': 7 * 86400, '30d': 30 * 86400 };
const BUCKETS = [60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 7 * 86400];
const MAX_POINTS = 120;

// FILTERS are the trace list's filters, by URL parameter.
const FILTERS = ['model', 'provider', 'status', 'key', 'stream'];

const $ = (id) => document.getElementById(id);

// view reads the URL: the range, the filters and the trace shown, if any.
function view() {
  const q = new URLSearchParams(location.search);
  const filters = {};
  for (const f of FILTERS) filters[f] = q.get(f) || '';
  return { range: readRange(q), filters, trace: q.get('trace') || '' };
}

// readRange turns the URL's range into from/to (ISO, second precision) and a bucket.
function readRange(q) {
  let name = q.get('range') || '24h';
  let from, to;
  if (name === 'custom') {
    from = new Date(q.get('from') || '');
    to = new Date(q.get('to') || '');
    if (isNaN(from) || isNaN(to) || to <= from) name = '24h';
  }
  if (name !== 'custom') {
    if (!PRESETS[name]) name = '24h';
    to = new Date(Math.ceil(Date.now() / 1000) * 1000);
    from = new Date(to - PRESETS[name] * 1000);
  }
  const span = (to - from) / 1000;
  const bucket = BUCKETS.find((b) => span / b <= MAX_POINTS) || BUCKETS[BUCKETS.length - 1];
  const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
  return { name, from: iso(from), to: iso(to), bucket: bucket + 's', key: name === 'custom' ? iso(from) + iso(to) : name };
}

// navigate changes URL parameters (empty values removed) and renders the new view.
function navigate(changes) {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v) q.set(k, v);
    else q.delete(k);
  }
  const url = q.size ? '?' + q : location.pathname;
  say('');
  history.pushState(null, '', url);
  render();
}

// traceHref is the URL of a trace's detail view in the current view.
export function traceHref(id) {
  const q = new URLSearchParams(location.search);
  q.set('trace', id);
  return '?' + q;
}

// say shows a status message (an error when isError).
export function say(msg, isError = false) {
  const s = $('status');
  s.textContent = msg;
  s.classList.toggle('error', isError);
}

// fail reports an error; a refused key signs out.
export function fail(err) {
  if (err && err.name === 'AbortError') return;
  if (err instanceof AuthError) {
    signOut('The key was refused: ' + err.message);
    return;
  }
  say(String(err && err.message ? err.message : err), true);
}

const list = new TraceList({ onError: fail });
let shown = { rangeKey: null, filters: null };

function render() {
  const signedIn = !!session.key();
  $('signin').hidden = signedIn;
  $('range').hidden = !signedIn;
  $('signout').hidden = !signedIn;
  if (!signedIn) {
    $('overview').hidden = true;
    $('detail').hidden = true;
    $('key').focus();
    return;
  }
  const v = view();
  for (const b of document.querySelectorAll('#range [data-range]')) {
    b.setAttribute('aria-pressed', String(b.dataset.range === v.range.name));
  }
  $('custom').hidden = v.range.name !== 'custom';
  if (v.range.name === 'custom') {
    $('custom-from').value = toLocalInput(v.range.from);
    $('custom-to').value = toLocalInput(v.range.to);
  }
  if (v.trace) {
    $('overview').hidden = true;
    $('detail').hidden = false;
    renderDetail($('detail'), v.trace).catch(fail);
    return;
  }
  $('detail').hidden = true;
  clear($('detail'));
  $('overview').hidden = false;
  const filtersKey = JSON.stringify(v.filters);
  if (shown.rangeKey !== v.range.key) {
    renderOverview(v.range).catch(fail);
  }
  if (shown.rangeKey !== v.range.key || shown.filters !== filtersKey) {
    list.load(v.range, v.filters);
  }
  shown = { rangeKey: v.range.key, filters: filtersKey };
}

function toLocalInput(iso) {
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function signOut(msg) {
  session.clear();
  shown = { rangeKey: null, filters: null };
  list.reset();
  clearOverview();
  clear($('detail'));
  $('key').value = '';
  $('signin-error').textContent = msg || '';
  say(msg ? '' : 'Signed out.');
  render();
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const key = $('key').value.trim();
  if (!key) return;
  session.set(key);
  $('signin-error').textContent = '';
  try {
    await get('/v1/analytics/summary', { window: '1h' });
  } catch (err) {
    session.clear();
    $('signin-error').textContent = err instanceof AuthError ? 'That key was refused: ' + err.message : String(err.message || err);
    return;
  }
  $('key').value = '';
  say('');
  render();
});

$('signout').addEventListener('click', () => signOut());

$('range').addEventListener('click', (e) => {
  const b = e.target.closest('[data-range]');
  if (!b) return;
  if (b.dataset.range === 'custom') {
    const r = view().range;
    navigate({ range: 'custom', from: r.from, to: r.to });
  } else {
    navigate({ range: b.dataset.range, from: '', to: '' });
  }
});

$('custom').addEventListener('submit', (e) => {
  e.preventDefault();
  const from = new Date($('custom-from').value);
  const to = new Date($('custom-to').value);
  if (isNaN(from) || isNaN(to) || to <= from) {
    say('The custom range needs a start before its end.', true);
    return;
  }
  navigate({ range: 'custom', from: from.toISOString(), to: to.toISOString() });
});

$('filters').addEventListener('change', (e) => {
  if (e.target.name) navigate({ [e.target.name]: e.target.value, trace: '' });
});

$('filters').addEventListener('click', (e) => {
  const b = e.target.closest('[data-export]');
  if (b) list.export(b.dataset.export).catch(fail);
});

// Links inside the app (trace ids, back) change the view without a page load.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  history.pushState(null, '', a.getAttribute('href'));
  say('');
  render();
});

window.addEventListener('popstate', render);
render();
