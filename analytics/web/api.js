// The analytics API client: every call carries the signed-in tenant key as a header.

const KEY = 'loom.key';

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (k) => sessionStorage.setItem(KEY, k),
  clear: () => sessionStorage.removeItem(KEY),
};

// AuthError: the key was refused (401/403); the app signs out.
export class AuthError extends Error {}

// request GETs path (under /v1/) with params (empty values left out) and returns the
// Response, throwing on an error status with the API's error message.
export async function request(path, params = {}, signal) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== '' && v !== null && v !== undefined) url.searchParams.set(k, v);
  }
  const resp = await fetch(url, {
    headers: { Authorization: 'Bearer ' + (session.key() || '') },
    cache: 'no-store',
    signal,
  });
  if (resp.ok) return resp;
  let msg = resp.status + ' ' + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) msg = body.error.message;
  } catch { /* not JSON: keep the status */ }
  if (resp.status === 401 || resp.status === 403) throw new AuthError(msg);
  throw new Error(msg);
}

// get is request for a JSON answer.
export async function get(path, params, signal) {
  return (await request(path, params, signal)).json();
}
