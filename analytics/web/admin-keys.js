// A tenant's API keys: the list, creating one (its raw key shown this once, with a copy
// button, and kept nowhere but in that box) and revoking one.

import { call, tenantPath } from './admin-api.js';
import { el, clear, fmt } from './dom.js';
import { fail, say } from './admin.js';
import { statusBadge } from './admin-tenants.js';

// keysSection is the keys part of tenant t's page.
export function keysSection(t, keys) {
  const list = el('div', { class: 'table-wrap' });
  const once = el('div', { id: 'new-key-box' });
  const reload = async () => {
    const fresh = await call('GET', tenantPath(t.id, 'keys'));
    clear(list).append(table(t, fresh.data, reload));
  };
  list.append(table(t, keys, reload));
  return el('section', { id: 'keys' },
    el('h2', null, 'API keys'), createForm(t, once, reload), once, list);
}

function createForm(t, once, reload) {
  const input = el('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off', placeholder: 'production' });
  const form = el('form', { class: 'inline-form', id: 'create-key' },
    el('label', null, 'New key named ', input), el('button', { type: 'submit', class: 'primary' }, 'Create key'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const k = await call('POST', tenantPath(t.id, 'keys'), { name: input.value });
      input.value = '';
      showOnce(once, k);
      await reload();
    } catch (err) {
      fail(err);
    }
  });
  return form;
}

// showOnce puts the raw key of a new key in box. The key lives only in this box's input:
// "Done", another page or a reload drops it, and the API never returns it again.
function showOnce(box, k) {
  const field = el('input', { id: 'new-key', class: 'mono', readonly: true, 'aria-label': 'The new API key', spellcheck: 'false' });
  field.value = k.key;
  const copy = el('button', { type: 'button', id: 'copy-key' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(field.value);
    } catch {
      field.select();
      if (!document.execCommand('copy')) {
        say('Copying was refused by the browser: select the key and copy it by hand.', true);
        return;
      }
    }
    say('The key is on the clipboard.');
  });
  const done = el('button', { type: 'button' }, 'Done');
  done.addEventListener('click', () => clear(box));
  clear(box).append(el('div', { class: 'once', role: 'alert' },
    el('p', null, el('strong', null, `Key "${k.name}" created.`), ' Copy it now: it is shown this once and cannot be shown again.'),
    el('div', { class: 'once-row' }, field, copy, done)));
  field.focus();
  field.select();
}

function table(t, keys, reload) {
  if (keys.length === 0) return el('p', { class: 'muted pad' }, 'No keys yet.');
  const head = el('tr', null, ['Name', 'Prefix', 'Status', 'Created', 'Last used', 'Revoked', ''].map((h) => el('th', { scope: 'col' }, h)));
  const rows = keys.map((k) => el('tr', { 'data-id': k.id },
    el('td', { class: 'name' }, k.name),
    el('td', { class: 'mono' }, k.prefix + '…'),
    el('td', null, statusBadge(k.status)),
    el('td', null, fmt.time(k.created_at)),
    el('td', null, k.last_used_at ? fmt.time(k.last_used_at) : 'never'),
    el('td', null, k.revoked_at ? fmt.time(k.revoked_at) : '—'),
    el('td', null, k.status === 'active' ? revokeButton(t, k, reload) : null)));
  return el('table', { class: 'admin-table keys' }, el('thead', null, head), el('tbody', null, rows));
}

// revokeButton asks twice: the first click arms it for five seconds, the second revokes.
function revokeButton(t, k, reload) {
  const b = el('button', { type: 'button', class: 'revoke' }, 'Revoke');
  let timer = 0;
  b.addEventListener('click', async () => {
    if (!b.classList.contains('armed')) {
      b.classList.add('armed', 'danger');
      b.textContent = 'Confirm revoke';
      timer = setTimeout(() => {
        b.classList.remove('armed', 'danger');
        b.textContent = 'Revoke';
      }, 5000);
      return;
    }
    clearTimeout(timer);
    b.disabled = true;
    try {
      await call('POST', tenantPath(t.id, 'keys', k.id, 'revoke'));
      say(`Key "${k.name}" revoked: it is refused from its next request.`);
      await reload();
    } catch (err) {
      b.disabled = false;
      fail(err);
    }
  });
  return b;
}
