// The trace list: every field a column, pages fetched by cursor as the end of the list
// scrolls into view, filters fed by /v1/analytics/values, export of the filtered set.

import { get, request } from './api.js';
import { el, clear, fmt } from './dom.js';
import { traceHref, say } from './app.js';

const $ = (id) => document.getElementById(id);
const PAGE = 50;
const yes = (b) => (b ? 'yes' : 'no');

// COLUMNS: every field of a trace row, in reading order.
const COLUMNS = [
  ['created_at', 'Time', (t) => fmt.time(t.created_at)],
  ['id', 'Trace', null], // a link to the detail
  ['model', 'Model', (t) => t.model],
  ['served_model', 'Served model', (t) => t.served_model],
  ['provider', 'Provider', (t) => t.provider],
  ['status', 'Status', (t) => String(t.status)],
  ['error_type', 'Error', (t) => t.error_type],
  ['finish_reasons', 'Finish', (t) => (t.finish_reasons || []).join(', ')],
  ['stream', 'Stream', (t) => yes(t.stream)],
  ['client_aborted', 'Aborted', (t) => yes(t.client_aborted)],
  ['prompt_tokens', 'In', (t) => fmt.int(t.prompt_tokens)],
  ['completion_tokens', 'Out', (t) => fmt.int(t.completion_tokens)],
  ['cached_tokens', 'Cached', (t) => fmt.int(t.cached_tokens)],
  ['reasoning_tokens', 'Reasoning', (t) => fmt.int(t.reasoning_tokens)],
  ['usage_source', 'Usage', (t) => t.usage_source],
  ['usage_method', 'Usage method', (t) => t.usage_method],
  ['cache_write_5m_tokens', 'Cache write 5m', (t) => fmt.int(t.cache_write_5m_tokens)],
  ['cache_write_1h_tokens', 'Cache write 1h', (t) => fmt.int(t.cache_write_1h_tokens)],
  ['audio_prompt_tokens', 'Audio in', (t) => fmt.int(t.audio_prompt_tokens)],
  ['audio_completion_tokens', 'Audio out', (t) => fmt.int(t.audio_completion_tokens)],
  ['accepted_prediction_tokens', 'Prediction accepted', (t) => fmt.int(t.accepted_prediction_tokens)],
  ['rejected_prediction_tokens', 'Prediction rejected', (t) => fmt.int(t.rejected_prediction_tokens)],
  ['service_tier', 'Tier', (t) => t.service_tier],
  ['cost_micro_usd', 'Cost', (t) => fmt.usd(t.cost_micro_usd)],
  ['price_version', 'Prices', (t) => t.price_version],
  ['latency_us', 'Latency', (t) => fmt.ms(t.latency_us)],
  ['ttfb_us', 'TTFB', (t) => (t.ttfb_us ? fmt.ms(t.ttfb_us) : '—')],
  ['overhead_us', 'Overhead', (t) => fmt.ms(t.overhead_us)],
  ['response_truncated', 'Truncated', (t) => yes(t.response_truncated)],
  ['fields_cut', 'Fields cut', (t) => yes(t.fields_cut)],
  ['upstream_retries', 'Retries', (t) => String(t.upstream_retries)],
  ['request_id', 'Request id', (t) => t.request_id],
  ['api_key_id', 'Key', (t) => t.api_key_id],
  ['tenant_id', 'Tenant', (t) => t.tenant_id],
  ['key_version', 'Key version', (t) => String(t.key_version)],
];

const NUMERIC = new Set(['prompt_tokens', 'completion_tokens', 'cached_tokens', 'reasoning_tokens',
  'cache_write_5m_tokens', 'cache_write_1h_tokens', 'audio_prompt_tokens', 'audio_completion_tokens',
  'accepted_prediction_tokens', 'rejected_prediction_tokens', 'cost_micro_usd', 'latency_us', 'ttfb_us',
  'overhead_us', 'status', 'upstream_retries', 'key_version']);

// FILTER_VALUES: the select fed by each values field.
const FILTER_VALUES = { model: 'model', provider: 'provider', key: 'api_key_id', status: 'status' };

export class TraceList {
  constructor({ onError }) {
    this.onError = onError;
    this.gen = 0;
    this.cursor = null;
    this.loading = false;
    this.query = null;
    $('more').addEventListener('click', () => this.next());
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.next();
    }, { rootMargin: '200px' });
    this.observer.observe($('list-end'));
    const head = el('tr', null, COLUMNS.map(([k, label]) => el('th', { scope: 'col', 'data-field': k, class: NUMERIC.has(k) ? 'num' : null }, label)));
    $('traces').tHead.append(head);
  }

  // load shows the first page of the traces of range matching filters.
  load(range, filters) {
    this.gen++;
    this.query = {
      from: range.from, to: range.to, model: filters.model, provider: filters.provider,
      status: filters.status, api_key_id: filters.key, stream: filters.stream,
    };
    this.cursor = null;
    this.done = false;
    this.loading = false;
    clear($('traces').tBodies[0]);
    this.fillFilters(range, filters).catch(this.onError);
    this.next();
  }

  // reset forgets everything shown (on sign-out).
  reset() {
    this.gen++;
    this.query = null;
    clear($('traces').tBodies[0]);
    for (const s of $('filters').querySelectorAll('select')) if (s.name !== 'stream') clear(s);
    $('list-end').textContent = '';
    $('more').hidden = true;
  }

  // next fetches the page after the last one shown.
  async next() {
    if (!this.query || this.loading || this.done) return;
    const gen = this.gen;
    let ok = false;
    this.loading = true;
    $('list-end').textContent = 'Loading…';
    try {
      const page = await get('/v1/traces', { ...this.query, limit: PAGE, cursor: this.cursor });
      if (gen !== this.gen) return;
      const body = $('traces').tBodies[0];
      for (const t of page.data) body.append(row(t));
      this.cursor = page.next_cursor;
      this.done = !page.has_more;
      const n = body.rows.length;
      $('list-end').textContent = n === 0 ? 'No traces in this range.' : this.done ? `${fmt.int(n)} traces, all shown.` : `${fmt.int(n)} traces shown; more below.`;
      $('more').hidden = this.done;
      ok = true;
    } catch (err) {
      if (gen === this.gen) {
        $('list-end').textContent = '';
        this.onError(err);
      }
    } finally {
      if (gen === this.gen) this.loading = false;
    }
    // A short page may leave the end in view: the observer fires only on a change.
    if (ok && gen === this.gen && !this.done && inView($('list-end'))) this.next();
  }

  // fillFilters puts the values a filter can take in its select, keeping the chosen one.
  async fillFilters(range, filters) {
    const gen = this.gen;
    const lists = await Promise.all(Object.values(FILTER_VALUES).map((field) =>
      get('/v1/analytics/values', { field, from: range.from, to: range.to })));
    if (gen !== this.gen) return;
    Object.keys(FILTER_VALUES).forEach((name, i) => {
      const select = $('filters').elements[name];
      const values = lists[i].data.map((v) => v.value);
      const options = name === 'status' ? ['ok', 'error', ...values] : values;
      if (filters[name] && !options.includes(filters[name])) options.push(filters[name]);
      clear(select).append(el('option', { value: '' }, 'any'),
        ...options.map((v) => el('option', { value: v }, v === 'ok' && name === 'status' ? 'ok (< 400)' : v === 'error' && name === 'status' ? 'error (≥ 400)' : v)));
      select.value = filters[name];
    });
    $('filters').elements.stream.value = filters.stream;
  }

  // export downloads the filtered set: fetched with the key (a header, so no plain
  // link), then saved from a blob.
  async export(format) {
    if (!this.query) return;
    const { from, to, model, provider, status, api_key_id, stream } = this.query;
    say('Exporting…');
    const resp = await request('/v1/traces/export', { format, from, to, model, provider, status, api_key_id, stream });
    const blob = await resp.blob();
    const name = `loom-traces-${from.slice(0, 10)}.${format}`;
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say(`Exported ${name} (${fmt.int(blob.size)} bytes).`);
  }
}

function row(t) {
  return el('tr', { class: t.status >= 400 ? 'err' : null, 'data-id': t.id },
    COLUMNS.map(([k, , cell]) => {
      if (k === 'id') {
        return el('td', { class: 'mono' }, el('a', { href: traceHref(t.id), 'data-nav': true, title: t.id }, t.id.slice(0, 8) + '…'));
      }
      return el('td', { class: NUMERIC.has(k) ? 'num' : null }, cell(t));
    }));
}

function inView(node) {
  const r = node.getBoundingClientRect();
  return r.top < window.innerHeight + 200 && r.bottom > -200;
}
