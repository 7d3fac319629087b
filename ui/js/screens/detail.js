// /experiments/{id} — status, ramp control with `Launch / Update Ramp` (lowering the ramp of a
// launched experiment asks first), `Pause`, `Stop` (confirmation, optional winner: a converged
// bandit's winner preselected), variants and their configs (a bandit's live weights beside its
// starting ones), the audit history, and links to the results and settings pages.

import { ApiError, experiments } from '../api.js';
import { alertBox, h, mount, setTitle, statusBadge } from '../dom.js';
import { compactJson, dateTime, json, pct, time, weight } from '../format.js';
import { guardrailText } from '../forms.js';
import { guardrailBanner, readGuardrails } from '../guardrails.js';
import { describeDefinition, readDefinitions } from '../metricdefs.js';

// How often a running bandit's live weights are fetched again while this page is open.
export const LIVE_WEIGHTS_MS = 5000;

const STATUS_TEXT = {
  draft: 'Draft: saved, not serving. Launch it to start assigning units.',
  running: 'Running: units are being assigned.',
  paused: 'Paused: assignment answers "paused"; launch again to resume.',
  stopped: 'Stopped: final. No more assignment',
};

export async function render(root, [id], ctx) {
  setTitle('Experiment');
  mount(root, h('p', { class: 'muted' }, 'Loading experiment…'));
  let exp;
  let hist = [];
  try {
    [exp, hist] = await Promise.all([
      experiments.get(id),
      experiments.history(id).then((r) => r.history || []).catch(() => null),
    ]);
  } catch (e) {
    if (ctx.isCurrent()) mount(root, ctx.errorView(e, 'this experiment'));
    return undefined;
  }
  if (!ctx.isCurrent()) return undefined;

  // A bandit's live weights and convergence live in its results snapshot, not in the
  // experiment: the variants' weights are only where it started. So does a tripped guardrail.
  let snap = null;
  const hasGuardrails = () => readGuardrails(exp.metrics).length > 0;
  const needsSnapshot = () => exp.allocation === 'bandit' || hasGuardrails();
  async function loadSnapshot() {
    if (!needsSnapshot()) { snap = null; return; }
    try {
      snap = await experiments.results(exp.id, { prompt: false });
    } catch (e) {
      // 404: no snapshot yet (nothing to show); anything else keeps the last one.
      if (e instanceof ApiError && e.status === 404) snap = null;
    }
  }
  await loadSnapshot();
  if (!ctx.isCurrent()) return undefined;

  const message = h('div', { class: 'action-message', 'data-testid': 'action-message', role: 'status', 'aria-live': 'polite', tabindex: '-1' });
  let busy = false;

  async function reload(note) {
    try {
      const [e2, h2] = await Promise.all([experiments.get(exp.id), experiments.history(exp.id).then((r) => r.history || []).catch(() => null)]);
      if (!ctx.isCurrent()) return;
      exp = e2;
      hist = h2;
      await loadSnapshot();
      if (!ctx.isCurrent()) return;
      draw();
      if (note) showMessage('success', note);
    } catch (e) {
      if (ctx.isCurrent()) showMessage('error', `Could not reload: ${e.message}`);
    }
  }

  function showMessage(kind, text) {
    message.replaceChildren(alertBox(kind, text));
    message.focus();
  }

  async function act(label, fn, note) {
    if (busy) return;
    busy = true;
    for (const b of root.querySelectorAll('.lifecycle button')) b.disabled = true;
    try {
      await fn();
      await reload(note);
    } catch (e) {
      if (!ctx.isCurrent()) return;
      draw();
      showMessage('error', `${label} failed: ${e.message}`);
    } finally {
      busy = false;
    }
  }

  // ---- stop confirmation ----
  let stopOpening = false;
  async function openStopDialog() {
    if (stopOpening) return;
    stopOpening = true;
    try {
      await loadSnapshot(); // the freshest convergence, so the preselected winner is current
    } finally {
      stopOpening = false;
    }
    if (!ctx.isCurrent()) return;
    if (exp.allocation === 'bandit') drawVariants();
    const b = snap && snap.bandit;
    const converged = b && b.converged ? (b.converged_variant || b.top_variant) : null;
    const suggested = converged && exp.variants.some((v) => v.key === converged) ? converged : null;
    const winner = h('select', { id: 'stop-winner', 'data-testid': 'stop-winner' },
      h('option', { value: '' }, 'No winner: serve no variant after stopping'),
      exp.variants.map((v) => h('option', { value: v.key, selected: v.key === suggested },
        `${v.key}${v.is_control ? ' (control)' : ''}${v.key === suggested ? ' (the bandit converged on it)' : ''}`)));
    const pBest = suggested && b.p_best && typeof b.p_best[suggested] === 'number' ? ` (P(best) ${pct(b.p_best[suggested])})` : '';
    const note = suggested
      ? h('p', { class: 'hint', 'data-testid': 'stop-winner-note' },
        `The bandit converged on ${suggested}${pBest}, so it is preselected as the winner. Choose "No winner" to serve no variant instead.`)
      : null;
    const confirm = h('button', { type: 'submit', class: 'btn btn-danger-solid', 'data-testid': 'stop-confirm' }, 'Stop experiment');
    const cancel = h('button', { type: 'button', class: 'btn', 'data-testid': 'stop-cancel' }, 'Cancel');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'stop-title', 'data-testid': 'stop-dialog' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'stop-title' }, `Stop "${exp.name}"?`),
        h('p', null, 'Stopping is final: the experiment cannot be launched again. Without a winner, assignment answers "stopped" and serves no variant. With a winner, every unit that passes targeting gets that variant from now on (the ramp no longer applies).'),
        h('div', { class: 'field' }, h('label', { for: 'stop-winner' }, 'Winner (optional)'), winner, note),
        h('div', { class: 'actions' }, confirm, cancel)));
    document.body.appendChild(dialog);
    const close = () => { if (dialog.open) dialog.close(); dialog.remove(); };
    cancel.addEventListener('click', () => { close(); stopBtnFocus(); });
    dialog.addEventListener('cancel', () => { setTimeout(() => { dialog.remove(); stopBtnFocus(); }, 0); });
    dialog.querySelector('form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const w = winner.value || null;
      close();
      act('Stop', () => experiments.stop(exp.id, w), w ? `Stopped. Winner: ${w}.` : 'Stopped.');
    });
    dialog.showModal();
    cancel.focus();
  }
  function stopBtnFocus() { const b = root.querySelector('[data-testid=stop-button]'); if (b) b.focus(); }

  function confirmDelete() {
    const yes = h('button', { type: 'submit', class: 'btn btn-danger-solid', 'data-testid': 'delete-confirm' }, 'Delete draft');
    const no = h('button', { type: 'button', class: 'btn' }, 'Cancel');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'delete-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'delete-title' }, `Delete the draft "${exp.name}"?`),
        h('p', null, 'The draft and its variants are removed. This cannot be undone.'),
        h('div', { class: 'actions' }, yes, no)));
    document.body.appendChild(dialog);
    const close = () => { if (dialog.open) dialog.close(); dialog.remove(); };
    no.addEventListener('click', close);
    dialog.addEventListener('cancel', () => setTimeout(() => dialog.remove(), 0));
    dialog.querySelector('form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      close();
      try {
        await experiments.remove(exp.id);
        ctx.navigate('/experiments');
      } catch (e) {
        showMessage('error', `Delete failed: ${e.message}`);
      }
    });
    dialog.showModal();
    no.focus();
  }

  // Lowering the ramp takes units out of a launched experiment, so it asks first; raising only
  // adds units (README: "units only ever join" when the ramp goes up) and does not ask.
  function confirmLowerRamp(from, to, onConfirm) {
    const share = from > 0 ? (from - to) / from : 0;
    const yes = h('button', { type: 'submit', class: 'btn btn-danger-solid', 'data-testid': 'ramp-confirm' }, `Lower the ramp to ${rampText(to)}`);
    const no = h('button', { type: 'button', class: 'btn', 'data-testid': 'ramp-cancel' }, 'Cancel');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'ramp-title', 'aria-describedby': 'ramp-text', 'data-testid': 'ramp-dialog' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'ramp-title' }, 'Lower the ramp?'),
        h('p', { id: 'ramp-text', 'data-testid': 'ramp-dialog-text' },
          `Lowering the ramp from ${rampText(from)} to ${rampText(to)} removes units from the experiment: about ${pct(share, 0)} of the units now in it stop getting a variant (assignment answers them with no variant, reason "ramp") and see the default experience instead. The units that stay keep their variant.`),
        h('div', { class: 'actions' }, yes, no)));
    document.body.appendChild(dialog);
    const back = () => { const i = root.querySelector('[data-testid=ramp-input]'); if (i) i.focus(); };
    const close = () => { if (dialog.open) dialog.close(); dialog.remove(); };
    no.addEventListener('click', () => { close(); back(); });
    dialog.addEventListener('cancel', () => { setTimeout(() => { dialog.remove(); back(); }, 0); });
    dialog.querySelector('form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      close();
      onConfirm();
    });
    dialog.showModal();
    no.focus(); // the safe choice has focus
  }

  function rampText(r) { return pct(r, Math.round(r * 1000) % 10 ? 1 : 0); }

  function lifecycle() {
    const st = exp.status;
    const rampPct = Math.round((exp.ramp || 0) * 1000) / 10 || 100;
    const rampInput = h('input', {
      type: 'number', id: 'ramp-input', min: '0.1', max: '100', step: 'any', value: String(rampPct),
      inputmode: 'decimal', 'data-testid': 'ramp-input', disabled: st === 'stopped', 'aria-describedby': 'ramp-hint',
    });
    const rampRange = h('input', {
      type: 'range', id: 'ramp-range', min: '1', max: '100', step: '1', value: String(Math.round(rampPct)),
      'aria-label': 'Ramp slider (% of traffic)', 'data-testid': 'ramp-range', disabled: st === 'stopped',
    });
    rampRange.addEventListener('input', () => { rampInput.value = rampRange.value; });
    rampInput.addEventListener('input', () => { const v = Number(rampInput.value); if (Number.isFinite(v)) rampRange.value = String(Math.round(v)); });

    const launchBtn = h('button', {
      type: 'submit', class: 'btn btn-primary', 'data-testid': 'launch-button', id: 'launch-button', disabled: st === 'stopped',
      title: st === 'stopped' ? 'A stopped experiment cannot be launched again' : null,
    }, 'Launch / Update Ramp');
    const pauseBtn = h('button', {
      type: 'button', class: 'btn', 'data-testid': 'pause-button', id: 'pause-button', disabled: st !== 'running',
      title: st !== 'running' ? 'Only a running experiment can be paused' : null,
      onclick: () => act('Pause', () => experiments.pause(exp.id), 'Paused: assignment now answers "paused".'),
    }, 'Pause');
    const stopBtn = h('button', {
      type: 'button', class: 'btn btn-danger', 'data-testid': 'stop-button', id: 'stop-button', disabled: st === 'stopped',
      title: st === 'stopped' ? 'Already stopped' : null, onclick: openStopDialog,
    }, 'Stop');
    const rampError = h('p', { class: 'field-error', id: 'ramp-error', hidden: true, 'data-error-for': 'ramp' });
    const form = h('form', { class: 'lifecycle', novalidate: true, 'aria-label': 'Lifecycle' },
      h('div', { class: 'field ramp-field', 'data-field': 'ramp', hidden: st === 'stopped' },
        h('label', { for: 'ramp-input' }, 'Ramp (% of traffic)'),
        h('div', { class: 'ramp-controls' }, rampRange, h('span', { class: 'ramp-number' }, rampInput, h('span', { 'aria-hidden': 'true' }, '%'))),
        h('p', { class: 'hint', id: 'ramp-hint' }, st === 'running'
          ? 'Raising the ramp only adds units; nobody already assigned moves. Lowering it removes units (you will be asked first).'
          : 'The share of eligible units that enter the experiment when it launches.'),
        rampError),
      h('div', { class: 'actions' }, launchBtn, pauseBtn, stopBtn,
        st === 'draft' ? h('button', { type: 'button', class: 'btn btn-ghost btn-danger', 'data-testid': 'delete-button', onclick: confirmDelete }, 'Delete draft') : null));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = Number(rampInput.value);
      if (!Number.isFinite(v) || v <= 0 || v > 100) {
        rampError.textContent = 'Enter a ramp greater than 0 and at most 100%';
        rampError.hidden = false;
        rampInput.setAttribute('aria-invalid', 'true');
        rampInput.focus();
        return;
      }
      const ramp = Math.round(v * 10) / 1000;
      const verb = st === 'running' ? `Ramp updated to ${rampText(ramp)}.` : `Launched on ${rampText(ramp)} of traffic.`;
      const go = () => act('Launch', () => experiments.launch(exp.id, ramp), verb);
      // A paused experiment resumed on a lower ramp loses units too.
      const launchedBefore = st === 'running' || st === 'paused';
      if (launchedBefore && typeof exp.ramp === 'number' && ramp < exp.ramp - 1e-9) confirmLowerRamp(exp.ramp, ramp, go);
      else go();
    });
    return form;
  }

  function statusLine() {
    const st = exp.status;
    if (st === 'running') return `Running on ${pct(exp.ramp, 0)} of traffic since ${dateTime(exp.launched_at)}.`;
    if (st === 'stopped') return `${STATUS_TEXT.stopped}${exp.winner ? `; every unit that passes targeting gets ${exp.winner}` : ''} (since ${dateTime(exp.stopped_at)}).`;
    return STATUS_TEXT[st] || st;
  }

  function variantsTable() {
    const bandit = exp.allocation === 'bandit';
    const b = bandit && snap ? snap.bandit : null;
    const live = b && b.weights && typeof b.weights === 'object' ? b.weights : null;
    const liveLabel = exp.status === 'stopped' ? 'Last live weight' : 'Live weight';
    const cols = bandit ? ['Key', 'Name', 'Starting weight', liveLabel, 'Config'] : ['Key', 'Name', 'Weight', 'Config'];
    const numeric = new Set(['Weight', 'Starting weight', liveLabel]);
    const note = !bandit ? null : h('p', { class: 'hint', 'data-testid': 'live-weights-note' }, live
      ? `Live weights: the bandit's current traffic split, computed at ${time(snap.computed_at)}${exp.status === 'running' ? ' (refreshed every few seconds)' : ''}. Starting weights applied until its first computation.`
      : 'Live weights appear here once the bandit has computed them (a few seconds after launch); until then traffic follows the starting weights.');
    return h('div', null, note, h('div', { class: 'table-wrap' }, h('table', { class: 'table stack', 'data-testid': 'variants-table' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', class: numeric.has(c) ? 'num' : null }, c)))),
      h('tbody', null, exp.variants.map((v) => h('tr', { 'data-testid': 'variant', 'data-key': v.key },
        h('td', { 'data-label': 'Key' }, h('span', null, h('code', null, v.key), v.is_control ? h('span', { class: 'tag tag-control' }, 'control') : null,
          exp.winner === v.key ? h('span', { class: 'tag tag-winner' }, 'winner') : null)),
        h('td', { 'data-label': 'Name' }, v.name || h('span', { class: 'muted' }, '—')),
        h('td', { 'data-label': bandit ? 'Starting weight' : 'Weight', class: 'num', 'data-testid': 'variant-weight-cell', title: String(v.weight) }, weight(v.weight)),
        bandit ? h('td', { 'data-label': liveLabel, class: 'num', 'data-testid': `live-weight-${v.key}` },
          live && typeof live[v.key] === 'number' ? pct(live[v.key]) : h('span', { class: 'muted' }, '—')) : null,
        h('td', { 'data-label': 'Config', class: 'config-cell' }, v.config === null || v.config === undefined
          ? h('span', { class: 'muted' }, 'none') : h('pre', { class: 'config' }, json(v.config)))))))));
  }

  let variantsBox = null;
  function drawVariants() {
    if (variantsBox && variantsBox.isConnected) mount(variantsBox, variantsTable());
  }

  // A tripped guardrail (from the latest results snapshot) sits at the top of the page.
  const guardSlot = h('div', { class: 'guardrail-slot', 'data-testid': 'guardrail-slot' });
  const tripKey = (sn) => ((sn && sn.guardrails) || []).filter((g) => g.status === 'tripped').map((g) => `${g.metric}/${g.treatment}/${g.tripped_at}`).join(' ');
  function drawGuardrails() {
    mount(guardSlot, hasGuardrails() ? guardrailBanner(snap) : null);
  }

  function historyList() {
    if (hist === null) return h('p', { class: 'muted' }, 'The history could not be loaded.');
    if (!hist.length) return h('p', { class: 'muted' }, 'No changes recorded yet.');
    return h('ol', { class: 'history', 'data-testid': 'history-list' }, hist.map((e) => {
      const changes = e.changes && typeof e.changes === 'object' ? Object.entries(e.changes) : [];
      return h('li', { class: 'history-entry', 'data-testid': 'history-entry', 'data-action': e.action },
        h('div', { class: 'history-head' },
          h('span', { class: `tag tag-action tag-${e.action}` }, e.action),
          ' by ', h('strong', null, e.actor || 'unknown'),
          ' · ', h('time', { datetime: e.at }, dateTime(e.at))),
        changes.length && e.action !== 'create'
          ? h('ul', { class: 'changes' }, changes.map(([k, c]) => {
            // An update records {before, after} per field; a guardrail trip records plain values.
            const diff = c !== null && typeof c === 'object' && !Array.isArray(c) && ('before' in c || 'after' in c);
            return h('li', null, h('code', null, k), ': ', diff
              ? [h('span', { class: 'before' }, compactJson(c.before)), ' → ', h('span', { class: 'after' }, compactJson(c.after))]
              : h('span', { class: 'after' }, compactJson(c)));
          }))
          : null);
    }));
  }

  function kv(label, value) { return [h('dt', null, label), h('dd', null, value)]; }

  function draw() {
    setTitle(exp.name);
    variantsBox = h('div', { class: 'variants-box' }, variantsTable());
    const b = exp.bandit;
    drawGuardrails();
    mount(root,
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/experiments' }, 'Experiments'), ' / ', exp.name),
      h('div', { class: 'page-head' },
        h('div', null,
          h('h1', { tabindex: '-1' }, exp.name, ' ', statusBadge(exp.status)),
          h('p', { class: 'subtitle' }, h('code', null, exp.key), ' · ', exp.owner_team, ' · ',
            h('span', { class: `tag${exp.allocation === 'bandit' ? ' tag-bandit' : ''}` }, exp.allocation), ' · version ', String(exp.version))),
        h('div', { class: 'head-links' },
          h('a', { href: `/experiments/${exp.id}/results`, class: 'btn', 'data-testid': 'results-link' }, 'Results'),
          h('a', { href: `/experiments/${exp.id}/settings`, class: 'btn', 'data-testid': 'settings-link' }, 'Settings'))),
      guardSlot,
      message,
      h('div', { class: 'detail-grid' },
        h('section', { class: 'card', 'aria-labelledby': 'sec-status' },
          h('h2', { id: 'sec-status' }, 'Status'),
          h('p', { class: 'status-line', 'data-testid': 'status-line' }, statusBadge(exp.status), ' ', statusLine()),
          lifecycle()),
        h('section', { class: 'card', 'aria-labelledby': 'sec-about' },
          h('h2', { id: 'sec-about' }, 'About'),
          h('dl', { class: 'kv' },
            kv('Description', exp.description),
            kv('Hypothesis', exp.hypothesis || h('span', { class: 'muted' }, 'none')),
            kv('Primary metric', h('code', null, (exp.metrics && exp.metrics.primary) || 'conversion')),
            exp.metrics && exp.metrics.guardrails && exp.metrics.guardrails.length ? kv('Guardrails', exp.metrics.guardrails.map(guardrailText).join(', ')) : null,
            Object.keys(readDefinitions(exp.metrics)).length ? kv('Metric definitions', h('ul', { class: 'plain', 'data-testid': 'detail-definitions' },
              Object.entries(readDefinitions(exp.metrics)).map(([name, d]) => h('li', { 'data-metric': name }, h('code', null, name), ': ', describeDefinition(d))))) : null,
            kv('Analysis', exp.analysis_mode === 'fixed' ? 'fixed horizon' : 'sequential (anytime-valid)'),
            kv('Created', dateTime(exp.created_at)),
            exp.launched_at ? kv('Launched', dateTime(exp.launched_at)) : null,
            exp.stopped_at ? kv('Stopped', dateTime(exp.stopped_at)) : null,
            b ? kv('Bandit', `Thompson sampling on ${b.reward_metric} (${b.reward_type}, ${b.goal}); floor ${b.floor}, burn-in ${b.burn_in_units} units, converges at P(best) ≥ ${b.convergence_threshold}${b.auto_stop ? ', stops automatically' : ''}`) : null,
            b && b.objective && (b.objective.constraints || []).length ? kv('Objective', h('span', { 'data-testid': 'detail-objective' },
              'best ', h('code', null, b.objective.metric), ' among the variants with ',
              b.objective.constraints.map((c) => `${c.metric} ${typeof c.max === 'number' ? '≤' : '≥'} ${typeof c.max === 'number' ? c.max : c.min}`).join(' and '))) : null,
            kv('Targeting', exp.targeting && exp.targeting.length
              ? h('ul', { class: 'plain' }, exp.targeting.map((r) => h('li', null, h('code', null, `${r.attribute} ${r.op} ${compactJson(r.value)}`))))
              : h('span', { class: 'muted' }, 'everyone')),
            kv('Overrides', Object.keys(exp.overrides || {}).length
              ? `${Object.keys(exp.overrides).length} unit${Object.keys(exp.overrides).length > 1 ? 's' : ''} pinned`
              : h('span', { class: 'muted' }, 'none'))))),
      h('section', { class: 'card', 'aria-labelledby': 'sec-variants' },
        h('h2', { id: 'sec-variants' }, `Variants (${exp.variants.length})`),
        variantsBox),
      h('section', { class: 'card', 'aria-labelledby': 'sec-history' },
        h('h2', { id: 'sec-history' }, 'History'),
        historyList()));
  }

  draw();

  // A running bandit moves its weights as rewards arrive: keep the live column current. A
  // running experiment with guardrails may trip one (and be paused by it): show it, and reload
  // the experiment when a new trip appears so the status and buttons follow.
  let timer = null;
  let done = false;
  async function refreshLive() {
    if (done) return;
    if (needsSnapshot() && exp.status === 'running' && !document.hidden && !busy) {
      const before = tripKey(snap);
      await loadSnapshot();
      if (!done && ctx.isCurrent()) {
        if (tripKey(snap) !== before) await reload();
        else { drawVariants(); drawGuardrails(); }
      }
    }
    if (!done) timer = setTimeout(refreshLive, LIVE_WEIGHTS_MS);
  }
  timer = setTimeout(refreshLive, LIVE_WEIGHTS_MS);
  return () => { done = true; clearTimeout(timer); };
}
