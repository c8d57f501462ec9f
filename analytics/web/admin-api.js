// The admin API client. The sign-in token is kept in this tab's sessionStorage and sent
// as an Authorization header: no cookie, so another site cannot make the browser send it.

const TOKEN = 'loom.admin.token';
const USER = 'loom.admin.user';

export const adminSession = {
  token: () => sessionStorage.getItem(TOKEN),
  user: () => sessionStorage.getItem(USER) || '',
  set: (token, user) => {
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(USER, user);
  },
  clear: () => {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(USER);
  },
};

// APIError is an error answer: its status and the API's message and code.
export class APIError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || '';
  }
}

// call sends method to path (under /admin/) with body as JSON, if given, and returns the
// JSON answer (null for 204). An error status throws an APIError; 401 means signed out.
export async function call(method, path, body, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== '' && v !== null && v !== undefined) url.searchParams.set(k, v);
  }
  const headers = { Accept: 'application/json' };
  const token = adminSession.token();
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(url, {
    method, headers, cache: 'no-store', credentials: 'omit',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch { /* not JSON */ }
  if (resp.ok) return data;
  const err = data && data.error ? data.error : {};
  throw new APIError(resp.status, err.message || resp.status + ' ' + resp.statusText, err.code);
}

// tenantPath is the API path of a tenant (and what follows it).
export function tenantPath(id, ...rest) {
  return ['/admin/tenants', id, ...rest].map((p, i) => (i === 0 ? p : encodeURIComponent(p))).join('/');
}
