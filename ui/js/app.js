// The router: maps the deep links the server serves (/experiments, /experiments/new,
// /experiments/{id}, /experiments/{id}/results, /experiments/{id}/settings) to one screen
// module each, and keeps navigation inside the page (history API) once loaded.

import { ApiError, signIn } from './api.js';
import { initAuth } from './auth.js';
import { alertBox, h, mount, setTitle } from './dom.js';

const ROUTES = [
  { name: 'list', re: /^\/experiments\/?$/, load: () => import('./screens/list.js') },
  { name: 'new', re: /^\/experiments\/new\/?$/, load: () => import('./screens/new.js') },
  { name: 'results', re: /^\/experiments\/([^/]+)\/results\/?$/, load: () => import('./screens/results.js') },
  { name: 'settings', re: /^\/experiments\/([^/]+)\/settings\/?$/, load: () => import('./screens/settings.js') },
  { name: 'detail', re: /^\/experiments\/([^/]+)\/?$/, load: () => import('./screens/detail.js') },
];

const root = document.getElementById('app');
let cleanup = null;
let renderSeq = 0;

export function navigate(path, { replace = false } = {}) {
  if (replace) {
    history.replaceState(null, '', path);
    render();
    return;
  }
  history.pushState(null, '', path);
  window.scrollTo(0, 0);
  // Keyboard and screen-reader users land on the new screen's heading (unless the screen
  // focused a field itself).
  render().then(() => {
    if (!root.contains(document.activeElement)) {
      const h1 = root.querySelector('h1');
      if (h1) h1.focus({ preventScroll: true });
    }
  });
}

function markNav(name) {
  for (const a of document.querySelectorAll('.topnav a')) {
    if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/** What a screen shows when loading failed: sign-in needed, not found, or the message. */
export function errorView(err, what = 'this page') {
  if (err instanceof ApiError && err.status === 401) {
    return alertBox('warning', h('p', null, 'Sign-in needed: ', what, ' needs an admin API token.'),
      h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'retry-sign-in', onclick: async () => { if (await signIn()) render(); } }, 'Sign in'));
  }
  if (err instanceof ApiError && err.status === 403) {
    return alertBox('error', h('p', null, 'This token may not manage experiments (it is a client token). Sign out and sign in with an admin token.'));
  }
  if (err instanceof ApiError && err.status === 404) {
    return alertBox('error', h('p', null, 'Not found: ', err.message, ' '), h('a', { href: '/experiments' }, 'Back to experiments'));
  }
  return alertBox('error', h('p', null, `Could not load ${what}: ${err && err.message ? err.message : err}`),
    h('button', { type: 'button', class: 'btn', onclick: () => render() }, 'Try again'));
}

async function render() {
  const seq = ++renderSeq;
  if (cleanup) {
    try { cleanup(); } catch (e) { console.warn(e); }
    cleanup = null;
  }
  const path = location.pathname;
  const route = ROUTES.find((r) => r.re.test(path));
  if (!route) {
    markNav(null);
    setTitle('Not found');
    mount(root, h('h1', { tabindex: '-1' }, 'Page not found'), h('p', null, h('a', { href: '/experiments' }, 'Go to the experiments list')));
    return;
  }
  const params = path.match(route.re).slice(1).map(decodeURIComponent);
  markNav(route.name);
  const mod = await route.load();
  if (seq !== renderSeq) return;
  const ctx = {
    navigate,
    errorView,
    query: new URLSearchParams(location.search),
    isCurrent: () => seq === renderSeq,
  };
  root.replaceChildren();
  let result;
  try {
    result = await mod.render(root, params, ctx);
  } catch (e) {
    if (seq !== renderSeq) return;
    console.warn('screen failed to load', e);
    mount(root, errorView(e));
    return;
  }
  if (seq !== renderSeq) { if (typeof result === 'function') result(); return; }
  cleanup = typeof result === 'function' ? result : null;
}

function signedOutView() {
  if (cleanup) { try { cleanup(); } catch { /* ignore */ } cleanup = null; }
  renderSeq += 1;
  markNav(null);
  setTitle('Signed out');
  mount(root,
    h('section', { class: 'card narrow', 'data-testid': 'signed-out' },
      h('h1', { tabindex: '-1' }, 'Signed out'),
      h('p', null, 'The API token was removed from this browser.'),
      h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'sign-in-again', onclick: async () => { if (await signIn()) render(); } }, 'Sign in again')));
  root.querySelector('h1').focus();
}

// Links inside the app navigate without a page load; modified clicks keep browser behaviour.
document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith('/experiments')) return;
  ev.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
  else render();
});

window.addEventListener('popstate', () => render());

initAuth({ onSignOut: signedOutView, onSignIn: () => render() });
render();
