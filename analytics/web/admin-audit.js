// The admin audit log, newest first, a page at a time: who did what to which target,
// when and from where.

import { call } from './admin-api.js';
import { el, clear, fmt } from './dom.js';
import { fail } from './admin.js';

const PAGE = 50;

// renderAudit loads the first page of the audit log into box.
export async function renderAudit(box, alive) {
  const body = el('tbody');
  const more = el('button', { type: 'button', id: 'audit-more', hidden: true }, 'Load older records');
  const end = el('p', { class: 'list-end' }, 'Loading…');
  let before = null;
  const next = async () => {
    more.disabled = true;
    const page = await call('GET', '/admin/audit', undefined, { limit: PAGE, before });
    if (!alive()) return;
    body.append(...page.data.map(row));
    before = page.next_before;
    more.hidden = !page.has_more;
    more.disabled = false;
    end.textContent = body.rows.length === 0 ? 'No records yet.' : page.has_more ? `${fmt.int(body.rows.length)} records shown; older ones below.` : `${fmt.int(body.rows.length)} records, all shown.`;
  };
  more.addEventListener('click', () => next().catch((err) => {
    more.disabled = false;
    fail(err);
  }));
  const head = el('tr', null, ['When', 'Who', 'Action', 'Target', 'From', 'Detail'].map((h) => el('th', { scope: 'col' }, h)));
  clear(box).append(
    el('h1', null, 'Admin audit log'),
    el('p', { class: 'hint' }, 'Every admin action and sign-in, appended and never changed. Secrets are never recorded.'),
    el('div', { class: 'table-wrap' }, el('table', { id: 'audit', class: 'admin-table' }, el('thead', null, head), body)),
    end, more);
  await next();
}

function row(e) {
  return el('tr', { 'data-id': e.id, 'data-action': e.action },
    el('td', { class: 'nowrap' }, fmt.time(e.at)), el('td', null, e.actor || '—'), el('td', { class: 'mono nowrap' }, e.action),
    el('td', { class: 'mono' }, e.target || '—'), el('td', { class: 'mono nowrap' }, e.client_addr || '—'), el('td', null, e.detail || ''));
}
