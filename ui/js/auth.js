// Token sign-in: the dialog the API module opens on the first 401, and the header's
// signed-in state with its sign-in and sign-out buttons.

import { clearToken, getToken, onTokenChange, probeToken, setToken, setTokenPrompt, signIn } from './api.js';

export function initAuth({ onSignOut, onSignIn } = {}) {
  const dialog = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const error = document.getElementById('token-error');
  const cancel = document.getElementById('token-cancel');
  const submit = form.querySelector('[type=submit]');
  const state = document.getElementById('session-state');
  const outBtn = document.getElementById('sign-out');
  const inBtn = document.getElementById('sign-in');

  function showError(message) {
    error.textContent = message || '';
    error.hidden = !message;
  }

  // Resolves true once a token the server accepts is stored, false if the person cancels.
  function prompt(reason) {
    return new Promise((resolve) => {
      showError(reason || '');
      input.value = '';
      let done = false;
      const finish = (ok) => {
        if (done) return;
        done = true;
        form.removeEventListener('submit', onSubmit);
        cancel.removeEventListener('click', onCancel);
        dialog.removeEventListener('cancel', onEscape);
        if (dialog.open) dialog.close();
        resolve(ok);
      };
      const onSubmit = async (ev) => {
        ev.preventDefault();
        const token = input.value.trim();
        if (!token) { showError('Enter a token.'); input.focus(); return; }
        submit.disabled = true;
        showError('');
        const status = await probeToken(token);
        submit.disabled = false;
        if (status === 401) { showError('That token was refused. Check it and try again.'); input.select(); return; }
        if (status === 403) { showError('That is a client token: it may only assign and send events. Use an admin token.'); input.select(); return; }
        if (status === 0) { showError('Cannot reach the Litmus server. Is it running?'); return; }
        setToken(token);
        finish(true);
      };
      const onCancel = () => finish(false);
      const onEscape = (ev) => { ev.preventDefault(); finish(false); };
      form.addEventListener('submit', onSubmit);
      cancel.addEventListener('click', onCancel);
      dialog.addEventListener('cancel', onEscape);
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
  }

  setTokenPrompt(prompt);

  function render() {
    const signedIn = !!getToken();
    state.textContent = signedIn ? 'Signed in' : 'Not signed in';
    state.dataset.signedIn = signedIn ? 'true' : 'false';
    outBtn.hidden = !signedIn;
    inBtn.hidden = signedIn;
  }
  onTokenChange(render);
  render();

  outBtn.addEventListener('click', () => {
    clearToken();
    if (onSignOut) onSignOut();
  });
  inBtn.addEventListener('click', async () => {
    const ok = await signIn();
    if (ok && onSignIn) onSignIn();
  });
}
