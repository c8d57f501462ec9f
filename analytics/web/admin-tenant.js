// One tenant: its facts, deactivate/reactivate and rename, its API keys, its provider
// configurations, its spend, and the hard delete behind a typed confirmation.

import { call, tenantPath, APIError } from './admin-api.js';
import { el, clear, fmt } from './dom.js';
import { go, href, fail, say, render } from './admin.js';
import { statusBadge } from './admin-tenants.js';
import { keysSection } from './admin-keys.js';
import { providersSection } from './admin-providers.js';
import { spendSection } from './admin-spend.js';

// renderTenant loads tenant id into box.
export async function renderTenant(box, id, alive) {
  clear(box).append(
    el('p', null, el('a', { href: href(), 'data-nav': true, class: 'back' }, '← All tenants')),
    el('p', { class: 'muted' }, 'Loading tenant…'));
  const [t, keys, providers] = await Promise.all([
    call('GET', tenantPath(id)),
    call('GET', tenantPath(id, 'keys')),
    call('GET', tenantPath(id, 'providers')),
  ]);
  if (!alive()) return;
  box.lastChild.remove();
  box.append(
    el('h1', { class: 'detail-title', tabindex: -1 }, el('span', { id: 'tenant-name' }, t.name), ' ', statusBadge(t.status)),
    facts(t),
    actions(t),
    keysSection(t, keys.data),
    providersSection(t, providers.data),
    spendSection(t, keys.data, alive),
    danger(t));
  box.querySelector('h1').focus();
}

function facts(t) {
  const rows = [
    ['Id', el('span', { class: 'mono' }, t.id)], ['Created', fmt.time(t.created_at)],
    ['Last activity', t.last_used_at ? fmt.time(t.last_used_at) : 'never'],
  ];
  return el('dl', { class: 'facts' }, rows.map(([k, v]) => el('div', null, el('dt', null, k), el('dd', null, v))));
}

// actions are deactivate/reactivate and rename.
function actions(t) {
  const active = t.status === 'active';
  const toggle = el('button', { type: 'button', id: 'toggle-status', class: active ? 'danger' : 'primary' },
    active ? 'Deactivate tenant' : 'Reactivate tenant');
  toggle.addEventListener('click', async () => {
    toggle.disabled = true;
    try {
      await call('PATCH', tenantPath(t.id), { status: active ? 'inactive' : 'active' });
      render();
      say(active ? `Tenant "${t.name}" deactivated: its keys are refused from now on.` : `Tenant "${t.name}" reactivated.`);
    } catch (err) {
      toggle.disabled = false;
      fail(err);
    }
  });
  const name = el('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off', 'aria-label': 'New name' });
  name.value = t.name;
  const rename = el('form', { class: 'inline-form', id: 'rename' }, name, el('button', { type: 'submit' }, 'Rename'));
  rename.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await call('PATCH', tenantPath(t.id), { name: name.value });
      render();
      say('Tenant renamed.');
    } catch (err) {
      fail(unsupported(err, 'Renaming'));
    }
  });
  return el('div', { class: 'actions' }, toggle, rename,
    el('p', { class: 'hint' }, active ? 'Deactivating refuses every key of the tenant at once; reactivating lets its active keys in again.'
      : 'The tenant is inactive: every one of its keys is refused.'));
}

// danger is the hard delete: its button works only once the tenant's name or id is typed.
function danger(t) {
  const input = el('input', { id: 'delete-confirm', autocomplete: 'off', spellcheck: 'false' });
  const button = el('button', { type: 'submit', class: 'danger', disabled: true }, 'Delete this tenant for good');
  input.addEventListener('input', () => {
    button.disabled = input.value !== t.name && input.value !== t.id;
  });
  const form = el('form', { id: 'delete-form' },
    el('label', { for: 'delete-confirm' }, 'Type the tenant\'s name or id to confirm'), input, button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (input.value !== t.name && input.value !== t.id) return;
    button.disabled = true;
    try {
      await call('DELETE', tenantPath(t.id), undefined, { confirm: t.id });
      go(href(), `Tenant "${t.name}" was deleted with its keys, provider configurations and traces.`);
    } catch (err) {
      button.disabled = false;
      fail(unsupported(err, 'Hard delete'));
    }
  });
  return el('section', { class: 'danger-zone' },
    el('h2', null, 'Hard delete'),
    el('p', null, 'Destroys the tenant\'s data key, so its stored traces can no longer be read, then removes its keys, provider configurations and traces. This cannot be undone.'),
    form);
}

// unsupported words a 501 (the gateway lacks the feature) so that it reads as such.
export function unsupported(err, what) {
  if (err instanceof APIError && err.status === 501) return new Error(`${what} is not available on this gateway (${err.message})`);
  return err;
}
