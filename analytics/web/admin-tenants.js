// The tenants page: every tenant with its status, key counts and last activity, and the
// form that creates one.

import { call } from './admin-api.js';
import { el, clear, fmt } from './dom.js';
import { go, href, fail } from './admin.js';

// renderTenants loads the tenants into box.
export async function renderTenants(box, alive) {
  clear(box).append(
    el('h1', null, 'Tenants'),
    createForm(),
    el('p', { class: 'muted' }, 'Loading tenants…'));
  const list = await call('GET', '/admin/tenants');
  if (!alive()) return;
  box.lastChild.replaceWith(list.data.length === 0
    ? el('p', { class: 'muted' }, 'No tenants yet: create the first one above.')
    : table(list.data));
}

function createForm() {
  const input = el('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off', placeholder: 'acme-prod' });
  const form = el('form', { class: 'inline-form', id: 'create-tenant' },
    el('label', null, 'New tenant ', input),
    el('button', { type: 'submit', class: 'primary' }, 'Create tenant'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const t = await call('POST', '/admin/tenants', { name: input.value });
      go(href({ view: 'tenant', id: t.id }), `Tenant "${t.name}" created.`);
    } catch (err) {
      fail(err);
    }
  });
  return form;
}

function table(tenants) {
  const head = el('tr', null, ['Name', 'Status', 'Keys (active / all)', 'Last activity', 'Created', 'Id'].map((h) => el('th', { scope: 'col' }, h)));
  const rows = tenants.map((t) => el('tr', { 'data-id': t.id },
    el('td', { class: 'name' }, el('a', { href: href({ view: 'tenant', id: t.id }), 'data-nav': true }, t.name)),
    el('td', null, statusBadge(t.status)),
    el('td', { class: 'num' }, fmt.int(t.active_keys) + ' / ' + fmt.int(t.keys)),
    el('td', null, t.last_used_at ? fmt.time(t.last_used_at) : 'never'),
    el('td', null, fmt.time(t.created_at)),
    el('td', { class: 'mono muted' }, t.id)));
  return el('div', { class: 'table-wrap' }, el('table', { id: 'tenants', class: 'admin-table' }, el('thead', null, head), el('tbody', null, rows)));
}

// statusBadge shows a tenant's or a key's status.
export function statusBadge(status) {
  return el('span', { class: 'badge status-' + status }, status);
}
