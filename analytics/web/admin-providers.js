// A tenant's provider configurations: the list (the upstream API key only by its last
// four characters) and the form that puts one. The key is typed into a password field,
// sent once and cleared; the API never returns it.

import { call, tenantPath } from './admin-api.js';
import { el, clear, fmt } from './dom.js';
import { fail, say } from './admin.js';
import { unsupported } from './admin-tenant.js';

const KINDS = ['openai', 'azure', 'anthropic', 'mock'];

// providersSection is the provider part of tenant t's page.
export function providersSection(t, configs) {
  const list = el('div', { class: 'table-wrap' });
  const reload = async () => {
    const fresh = await call('GET', tenantPath(t.id, 'providers'));
    clear(list).append(table(t, fresh.data, edit, reload));
  };
  const { form, edit } = providerForm(t, reload);
  list.append(table(t, configs, edit, reload));
  return el('section', { id: 'providers' },
    el('h2', null, 'Provider configurations'),
    el('p', { class: 'hint' }, 'A request for "name/model" goes to the configuration of that name.'),
    list, form);
}

function providerForm(t, reload) {
  const f = {
    name: el('input', { name: 'name', required: true, maxlength: 64, pattern: '[A-Za-z0-9][A-Za-z0-9._:\\-]*', autocomplete: 'off' }),
    kind: el('input', { name: 'kind', required: true, list: 'provider-kinds', maxlength: 64, autocomplete: 'off' }),
    base_url: el('input', { name: 'base_url', type: 'url', placeholder: 'https://api.openai.com/v1', autocomplete: 'off' }),
    api_version: el('input', { name: 'api_version', placeholder: 'Azure only', autocomplete: 'off' }),
    models: el('textarea', { name: 'models', rows: 3, placeholder: 'one model per line; empty: any' }),
    api_key: el('input', { name: 'api_key', type: 'password', autocomplete: 'new-password', spellcheck: 'false' }),
  };
  const field = (label, input, hint) => el('label', null, label, input, hint ? el('span', { class: 'hint' }, hint) : null);
  const form = el('form', { id: 'provider-form', class: 'provider-form' },
    el('h3', null, 'Add or replace a configuration'),
    field('Name', f.name), field('Kind', f.kind),
    el('datalist', { id: 'provider-kinds' }, KINDS.map((k) => el('option', { value: k }))),
    field('Base URL', f.base_url), field('API version', f.api_version), field('Models', f.models),
    field('Upstream API key', f.api_key, 'Sealed on the server and never shown again, only its last four characters. Saving without a key stores the configuration without one.'),
    el('div', null, el('button', { type: 'submit', class: 'primary' }, 'Save configuration')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = f.name.value.trim();
    const body = {
      kind: f.kind.value.trim(), base_url: f.base_url.value.trim(), api_version: f.api_version.value.trim(),
      models: f.models.value.split(/[\n,]/).map((m) => m.trim()).filter(Boolean), api_key: f.api_key.value,
    };
    f.api_key.value = ''; // the key leaves the page with this request and is not kept
    try {
      const c = await call('PUT', tenantPath(t.id, 'providers', name), body);
      say(`Provider configuration "${c.name}" saved ` + (c.has_api_key ? `with the API key ${keyShown(c)}.` : 'without an API key.'));
      form.reset();
      await reload();
    } catch (err) {
      fail(err);
    }
  });
  const edit = (c) => { // fills the form from c; the key must be typed again
    f.name.value = c.name;
    f.kind.value = c.kind;
    f.base_url.value = c.base_url;
    f.api_version.value = c.api_version;
    f.models.value = c.models.join('\n');
    f.api_key.value = '';
    f.api_key.focus();
    say(`Editing "${c.name}": type its upstream API key again to keep one.`);
  };
  return { form, edit };
}

function table(t, configs, edit, reload) {
  if (configs.length === 0) return el('p', { class: 'muted pad' }, 'No provider configurations: the tenant uses the gateway\'s routes.');
  const head = el('tr', null, ['Name', 'Kind', 'Base URL', 'API version', 'Models', 'API key', 'Updated', ''].map((h) => el('th', { scope: 'col' }, h)));
  const rows = configs.map((c) => {
    const change = el('button', { type: 'button' }, 'Edit');
    change.addEventListener('click', () => edit(c));
    const del = el('button', { type: 'button', class: 'danger' }, 'Delete');
    del.addEventListener('click', async () => {
      try {
        await call('DELETE', tenantPath(t.id, 'providers', c.name));
        say(`Provider configuration "${c.name}" deleted.`);
        await reload();
      } catch (err) {
        fail(unsupported(err, 'Deleting a provider configuration'));
      }
    });
    return el('tr', { 'data-name': c.name },
      el('td', { class: 'mono' }, c.name), el('td', null, c.kind),
      el('td', { class: 'mono' }, c.base_url || '—'), el('td', null, c.api_version || '—'),
      el('td', { class: 'models' }, c.models.length ? c.models.map((m) => el('span', { class: 'chip mono' }, m)) : 'any'),
      el('td', { class: 'mono key-last4' }, keyShown(c)),
      el('td', null, fmt.time(c.updated_at)),
      el('td', null, el('span', { class: 'row-actions' }, change, del)));
  });
  return el('table', { class: 'admin-table providers' }, el('thead', null, head), el('tbody', null, rows));
}

// keyShown is how a configuration's upstream key is shown: by its last four characters
// when the gateway records them, never in full.
function keyShown(c) {
  if (!c.has_api_key) return 'none';
  return c.api_key_last4 ? '••••' + c.api_key_last4 : 'set';
}
