// A tenant's spend by key and model over a chosen range, from the analytics rollups. A
// gateway without them answers 501: the section says spend is not available.

import { call, APIError } from './admin-api.js';
import { el, clear, fmt } from './dom.js';
import { fail } from './admin.js';

const RANGES = [['1', 'last 24 hours'], ['7', 'last 7 days'], ['30', 'last 30 days'], ['90', 'last 90 days']];

// spendSection is the spend part of tenant t's page; keys name the key ids.
export function spendSection(t, keys, alive) {
  const names = new Map(keys.map((k) => [k.id, k.name]));
  const out = el('div', { id: 'spend-table' }, el('p', { class: 'muted' }, 'Loading spend…'));
  const range = el('select', { name: 'range', 'aria-label': 'Spend range' }, RANGES.map(([v, label]) => el('option', { value: v }, label)));
  range.value = '30';
  const load = async () => {
    const to = new Date(Math.ceil(Date.now() / 1000) * 1000);
    const from = new Date(to - Number(range.value) * 86400 * 1000);
    const iso = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
    try {
      const s = await call('GET', '/admin/spend', undefined, { tenant: t.id, from: iso(from), to: iso(to) });
      if (alive()) clear(out).append(table(s.data, names));
    } catch (err) {
      if (!alive()) return;
      if (err instanceof APIError && err.status === 501) {
        clear(out).append(el('p', { class: 'muted pad', id: 'spend-unavailable' }, err.message || 'Spend is not available on this gateway.'));
        return;
      }
      clear(out);
      fail(err);
    }
  };
  range.addEventListener('change', load);
  load();
  return el('section', { id: 'spend' }, el('h2', null, 'Spend ', range), out);
}

function table(rows, names) {
  if (rows.length === 0) return el('p', { class: 'muted pad' }, 'No requests in this range.');
  const sum = (f) => rows.reduce((n, r) => n + r[f], 0);
  const head = el('tr', null, ['Key', 'Model', 'Requests', 'Tokens in', 'Tokens out', 'Cost', 'Unpriced'].map((h) => el('th', { scope: 'col' }, h)));
  const line = (key, model, r) => el('tr', null,
    el('td', null, key), el('td', { class: 'mono model' }, model),
    el('td', { class: 'num' }, fmt.int(r.requests)), el('td', { class: 'num' }, fmt.int(r.prompt_tokens)),
    el('td', { class: 'num' }, fmt.int(r.completion_tokens)),
    el('td', { class: 'num' }, r.unpriced_requests === r.requests ? '— (unpriced)' : fmt.usd(r.cost_micro_usd)),
    el('td', { class: 'num' }, fmt.int(r.unpriced_requests)));
  const total = {
    requests: sum('requests'), prompt_tokens: sum('prompt_tokens'), completion_tokens: sum('completion_tokens'),
    cost_micro_usd: sum('cost_micro_usd'), unpriced_requests: sum('unpriced_requests'),
  };
  return el('div', { class: 'table-wrap' }, el('table', { class: 'admin-table spend' },
    el('thead', null, head),
    el('tbody', null, rows.map((r) => line(names.get(r.api_key_id) || r.api_key_id, r.model, r))),
    el('tfoot', null, line('Total', '', total))));
}
