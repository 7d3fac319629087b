// The one way the UI talks to the server: bearer token, JSON, errors as ApiError.
// The first call that gets 401 asks for a token (one prompt shared by every waiting call),
// keeps it in localStorage and retries.

const TOKEN_KEY = 'litmus.token';
export const API = '/api/v1';

export class ApiError extends Error {
  constructor(status, message, { code = null, fields = null, body = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.fields = fields || {};
    this.body = body;
  }
}

export function getToken() {
  try { return localStorage.getItem(TOKEN_KEY); } catch { return null; }
}

export function setToken(token) {
  try { localStorage.setItem(TOKEN_KEY, token); } catch { /* private mode: memory only */ }
  memoryToken = token;
  notify();
}

export function clearToken() {
  try { localStorage.removeItem(TOKEN_KEY); } catch { /* ignore */ }
  memoryToken = null;
  notify();
}

let memoryToken = null;
function currentToken() { return getToken() || memoryToken; }

const listeners = new Set();
/** Call fn() whenever the token changes (sign-in, sign-out, refused). */
export function onTokenChange(fn) { listeners.add(fn); return () => listeners.delete(fn); }
function notify() { for (const fn of listeners) fn(currentToken()); }

// Set by auth.js: shows the token dialog, resolves to true (got a token) or false (cancelled).
let promptImpl = async () => false;
export function setTokenPrompt(fn) { promptImpl = fn; }

let pendingPrompt = null;
function askForToken(reason) {
  if (!pendingPrompt) {
    pendingPrompt = Promise.resolve(promptImpl(reason)).finally(() => { pendingPrompt = null; });
  }
  return pendingPrompt;
}

/** Show the token prompt now (the header's "Sign in" button). */
export function signIn() { return askForToken(null); }

async function readBody(resp) {
  const text = await resp.text();
  if (!text) return null;
  const type = resp.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try { return JSON.parse(text); } catch { return text; }
  }
  return text;
}

function errorFrom(status, body) {
  const err = body && typeof body === 'object' && body.error ? body.error : null;
  const message = err && err.message ? err.message
    : typeof body === 'string' && body ? body.slice(0, 300)
    : `request failed with HTTP ${status}`;
  return new ApiError(status, message, {
    code: err ? err.code : null, fields: err ? err.fields : null, body,
  });
}

/**
 * api('GET', '/experiments') -> parsed JSON body.
 * Options: body (sent as JSON), headers, signal, prompt (default true: ask for a token on 401).
 */
export async function api(method, path, { body, headers = {}, signal, prompt = true } = {}) {
  const url = path.startsWith('/api/') ? path : API + path;
  for (;;) {
    const token = currentToken();
    const h = { Accept: 'application/json', ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    let resp;
    try {
      resp = await fetch(url, {
        method, headers: h, signal, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new ApiError(0, 'Cannot reach the Litmus server. Is it running?', { code: 'network' });
    }
    if (resp.status === 401 && prompt) {
      await readBody(resp);
      const now = currentToken();
      if (now && now !== token) continue; // someone signed in while this call was in flight
      if (token) clearToken(); // the kept token was refused: forget it
      const ok = await askForToken(token ? 'The saved token was refused. Enter a valid admin token.' : null);
      if (!ok) throw new ApiError(401, 'Sign-in needed: this page needs an admin API token.', { code: 'unauthorized' });
      continue;
    }
    const data = await readBody(resp);
    if (!resp.ok) throw errorFrom(resp.status, data);
    return data;
  }
}

/** Check a token without keeping it: resolves to the HTTP status of a cheap admin call. */
export async function probeToken(token) {
  try {
    const resp = await fetch(`${API}/experiments?limit=1`, {
      headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' }, cache: 'no-store',
    });
    await resp.text();
    return resp.status;
  } catch {
    return 0;
  }
}

export const experiments = {
  list: (query = {}, opts) => {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v) qs.set(k, v);
    const s = qs.toString();
    return api('GET', `/experiments${s ? `?${s}` : ''}`, opts);
  },
  get: (id, opts) => api('GET', `/experiments/${encodeURIComponent(id)}`, opts),
  create: (body) => api('POST', '/experiments', { body }),
  patch: (id, body, version) => api('PATCH', `/experiments/${encodeURIComponent(id)}`, {
    body, headers: version != null ? { 'If-Match': String(version) } : {},
  }),
  launch: (id, ramp) => api('POST', `/experiments/${encodeURIComponent(id)}/launch`, { body: ramp == null ? {} : { ramp } }),
  pause: (id) => api('POST', `/experiments/${encodeURIComponent(id)}/pause`, { body: {} }),
  stop: (id, winner) => api('POST', `/experiments/${encodeURIComponent(id)}/stop`, { body: winner ? { winner } : {} }),
  remove: (id) => api('DELETE', `/experiments/${encodeURIComponent(id)}`),
  history: (id, opts) => api('GET', `/experiments/${encodeURIComponent(id)}/history`, opts),
  results: (id, opts) => api('GET', `/experiments/${encodeURIComponent(id)}/results`, opts),
  resultsHistory: (id, opts) => api('GET', `/experiments/${encodeURIComponent(id)}/results/history`, opts),
  /** The exposure attributes seen (GET …/results/segments): a scan, read on request. */
  segmentKeys: (id, opts) => api('GET', `/experiments/${encodeURIComponent(id)}/results/segments`, opts),
  /** The snapshot plus each segment of one attribute (GET …/results?segment=): a scan, read on request. */
  resultsBySegment: (id, key, opts) => api('GET', `/experiments/${encodeURIComponent(id)}/results?segment=${encodeURIComponent(key)}`, opts),
};
