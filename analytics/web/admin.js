// The Loom admin pages: admin sign-in, and which page is shown (kept in the URL, so a page
// survives a reload): the tenants, one tenant, or the admin audit log.

import { adminSession, call, APIError } from './admin-api.js';
import { renderTenants } from './admin-tenants.js';
import { renderTenant } from './admin-tenant.js';
import { renderAudit } from './admin-audit.js';
import { clear } from './dom.js';

const $ = (id) => document.getElementById(id);
let generation = 0;

// say shows a status message (an error when isError).
export function say(msg, isError = false) {
  const s = $('status');
  s.textContent = msg;
  s.classList.toggle('error', isError);
}

// fail reports an error; a refused or expired sign-in signs out.
export function fail(err) {
  if (err instanceof APIError && err.status === 401) {
    signOut('Your admin session ended (' + err.message + '). Sign in again.', false);
    return;
  }
  say(String(err && err.message ? err.message : err), true);
}

// go shows the page at href (a URL of this page) without a page load.
export function go(href, msg = '') {
  history.pushState(null, '', href);
  render();
  say(msg);
}

// href is the URL of a page: go(href({view: 'tenant', id})).
export function href(params = {}) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
  return q.size ? 'admin.html?' + q : 'admin.html';
}

// render shows the page the URL names, or the sign-in form. A page still loading when
// another is asked for is dropped: alive() tells it so.
export function render() {
  const gen = ++generation;
  const alive = () => gen === generation;
  const signedIn = !!adminSession.token();
  $('signin').hidden = signedIn;
  $('view').hidden = !signedIn;
  $('admin-nav').hidden = !signedIn;
  $('signout').hidden = !signedIn;
  $('whoami').hidden = !signedIn;
  $('whoami').textContent = signedIn ? 'Signed in as ' + adminSession.user() : '';
  const box = clear($('view'));
  if (!signedIn) {
    $('username').focus();
    return;
  }
  const q = new URLSearchParams(location.search);
  const view = q.get('view') || 'tenants';
  for (const a of $('admin-nav').querySelectorAll('[data-view]')) {
    if ((a.dataset.view === 'tenants') === (view !== 'audit')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  let page;
  if (view === 'tenant' && q.get('id')) page = renderTenant(box, q.get('id'), alive);
  else if (view === 'audit') page = renderAudit(box, alive);
  else page = renderTenants(box, alive);
  page.catch((err) => alive() && fail(err));
}

async function signOut(msg, callAPI = true) {
  generation++;
  if (callAPI && adminSession.token()) {
    try {
      await call('POST', '/admin/logout');
    } catch { /* the token is forgotten here either way */ }
  }
  adminSession.clear();
  $('password').value = '';
  $('signin-error').textContent = msg || '';
  say(msg ? '' : 'Signed out.');
  render();
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  $('signin-error').textContent = '';
  try {
    const s = await call('POST', '/admin/login', { username, password });
    adminSession.set(s.token, s.username || username);
  } catch (err) {
    $('signin-error').textContent = err.status === 401 ? 'Wrong username or password.' : String(err.message || err);
    return;
  } finally {
    $('password').value = '';
  }
  say('');
  render();
});

$('signout').addEventListener('click', () => signOut());

// Links inside the pages change the page without a load.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  go(a.getAttribute('href'));
});

window.addEventListener('popstate', () => {
  say('');
  render();
});
render();
