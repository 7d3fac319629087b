// /experiments/{id}/settings — edit metadata, targeting rules, overrides, variants (keys locked
// after launch, with the reason), allocation and metrics. Saves the changed fields with PATCH and
// `If-Match: <version>`; a 412 means someone else saved first.

import { ApiError, experiments } from '../api.js';
import { alertBox, h, mount, setTitle, statusBadge } from '../dom.js';
import { FieldErrors, allocationSection, metadataSection, metricsSection, section } from '../forms.js';
import { dateTime } from '../format.js';
import { compactDefinitions, readDefinitions } from '../metricdefs.js';
import { createOverridesEditor, createRulesEditor } from '../rules.js';
import { createPlanner } from '../planner.js';
import { createVariantsEditor } from '../variants.js';

function normVariants(vs) {
  return (vs || []).map((v) => ({ key: v.key, name: v.name || null, weight: v.weight, config: v.config ?? null, is_control: !!v.is_control }));
}
function normMetrics(m) {
  // The older `minimize` list reads as direction "decrease": compare in definitions form.
  // A bare guardrail name is the default {margin 0, action alert}.
  const guard = (g) => (typeof g === 'string' ? [g, 0, 'alert'] : [g.metric, g.margin || 0, g.action || 'alert']);
  return { primary: (m && m.primary) || 'conversion', guardrails: ((m && m.guardrails) || []).map(guard), definitions: compactDefinitions(readDefinitions(m)) };
}
function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

export async function render(root, [id], ctx) {
  setTitle('Settings');
  mount(root, h('p', { class: 'muted' }, 'Loading settings…'));
  let exp;
  try {
    exp = await experiments.get(id);
  } catch (e) {
    if (ctx.isCurrent()) mount(root, ctx.errorView(e, 'this experiment'));
    return undefined;
  }
  if (!ctx.isCurrent()) return undefined;
  draw(exp, null);
  return undefined;

  function draw(current, flash) {
    setTitle(`Settings · ${current.name}`);
    const status = current.status;
    const stopped = status === 'stopped';
    const launched = status !== 'draft';
    const readOnly = stopped;
    const upper = status.toUpperCase();

    const summary = h('div', { class: 'alert alert-error', role: 'alert', tabindex: '-1', hidden: true, 'data-testid': 'form-errors' });
    const notice = h('div', { class: 'save-notice', 'data-testid': 'settings-message', role: 'status', 'aria-live': 'polite', tabindex: '-1' });
    if (flash) notice.appendChild(flash);
    const errors = new FieldErrors(summary);

    const saveBtn = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'save-settings', disabled: readOnly }, 'Save changes');
    const blockReason = h('p', { class: 'block-reason', id: 'settings-block-reason', 'aria-live': 'polite' });
    saveBtn.setAttribute('aria-describedby', 'settings-block-reason');

    const meta = metadataSection(current, errors, {
      readOnly,
      keyLocked: launched,
      keyReason: `The key cannot change after launch (it is ${upper}): model routers ask for the experiment by it.`,
    });
    let editor = null;
    let overridesEd = null;
    // Lock exactly what the server refuses for a launched experiment (litmus/core/lifecycle.py,
    // check_editable): keys, count and control always; weights only for a fixed split, where
    // moving them would move units between variants and fail the split check. A bandit's
    // weights here are only its starting weights: it sets the live ones itself.
    const bandit = current.allocation === 'bandit';
    const lockedNow = launched && !stopped;
    const variantLock = bandit
      ? `Variant keys, the number of variants and the control are locked because the experiment has launched (it is ${upper}): every unit already assigned is counted under its variant's key. A variant's name, config and starting weight can still change; the bandit sets the live weights itself (see the results page).`
      : `Variant keys, the number of variants, the control and the weights are locked because the experiment has launched (it is ${upper}): changing the keys would corrupt the analysis, and changing the weights would move units between variants and fail the split check (SRM). A variant's name and config can still change. To try other weights, stop this experiment and start a new one.`;
    editor = createVariantsEditor({
      variants: current.variants,
      locked: lockedNow,
      weightsLocked: lockedNow && !bandit,
      weightLabel: bandit ? 'Starting weight' : 'Weight',
      lockReason: variantLock,
      readOnly,
      onChange: () => {
        if (!editor) return;
        const ok = editor.sumOk();
        saveBtn.disabled = readOnly || !ok;
        blockReason.textContent = ok || readOnly ? '' : `Saving is blocked until the weights sum to 1.0 (now ${editor.sum()}).`;
        if (overridesEd) overridesEd.setVariantKeys(editor.value().map((v) => v.key).filter(Boolean));
      },
    });
    saveBtn.disabled = readOnly || !editor.sumOk();
    const rulesEd = createRulesEditor({ rules: current.targeting, readOnly });
    overridesEd = createOverridesEditor({ overrides: current.overrides, variantKeys: current.variants.map((v) => v.key), readOnly });
    let metrics = null;
    const alloc = allocationSection(current, errors, {
      readOnly,
      locked: lockedNow,
      lockReason: bandit
        ? `The allocation (fixed or bandit), and the bandit's reward metric, reward type and goal, cannot change after launch (it is ${upper}): the posteriors so far were built on them.`
        : `The allocation (fixed or bandit) cannot change after launch (it is ${upper}).`,
    });
    // The API takes new guardrails (metrics) until the experiment is stopped; the recompute
    // arms a changed or removed one again (litmus/services/guardrails.py).
    const guardrailNote = stopped
      ? 'Guardrails are locked: the experiment is stopped, so they no longer run and its settings cannot change.'
      : (launched ? `Guardrails can change while the experiment is ${upper}: changing a guardrail\u2019s tolerated harm or action, or removing it, forgets any trip it had and arms it again at the next recompute.` : '');
    metrics = metricsSection(current, errors, { readOnly, guardrailNote, onChange: () => { if (metrics) alloc.setKnownMetrics(metrics.names()); } });
    alloc.setKnownMetrics(metrics.names());

    errors.addHandler((path) => {
      if (path === 'variants' || path.startsWith('variants[')) return true;
      return null;
    });
    errors.addHandler((path, msg) => rulesEd.setServerError(path, msg));
    errors.addHandler((path, msg) => overridesEd.setServerError(path, msg));

    function changes() {
      const m = meta.value();
      const body = {};
      for (const k of ['name', 'description', 'owner_team']) if (m[k] !== current[k]) body[k] = m[k];
      if ((m.hypothesis || null) !== (current.hypothesis || null)) body.hypothesis = m.hypothesis;
      if (!launched && (m.key || current.key) !== current.key) body.key = m.key;
      const vs = editor.value();
      if (!same(normVariants(vs), normVariants(current.variants))) body.variants = vs;
      const t = rulesEd.value();
      if (!same(t, current.targeting || [])) body.targeting = t;
      const o = overridesEd.value();
      if (!same(o, current.overrides || {})) body.overrides = o;
      const mv = metrics.value();
      if (!same(normMetrics(mv.metrics), normMetrics(current.metrics))) body.metrics = mv.metrics;
      if (mv.analysis_mode !== (current.analysis_mode || 'sequential')) body.analysis_mode = mv.analysis_mode;
      const a = alloc.value({ primary: metrics.primary() });
      if (a.allocation !== current.allocation) body.allocation = a.allocation;
      if (a.allocation === 'bandit' && !same(sorted(a.bandit), sorted(current.bandit || {}))) body.bandit = a.bandit;
      return body;
    }

    const planner = createPlanner({
      variants: () => (editor ? editor.value().length : current.variants.length),
      mode: () => (metrics ? metrics.value().analysis_mode : current.analysis_mode || 'sequential'),
    });

    let saving = false;
    const form = h('form', { class: 'experiment-form', novalidate: true, 'data-testid': 'settings-form', 'aria-labelledby': 'settings-title' },
      summary,
      stopped ? alertBox('info', `This experiment is stopped (since ${dateTime(current.stopped_at)}): its settings can no longer change.`) : null,
      section('About', null, meta.el),
      section('Targeting', 'Only units whose attributes meet every rule are eligible. A missing attribute fails every rule except "neq", "not_in" and "exists: false".', rulesEd.el),
      section('Overrides', 'Pin specific units (QA accounts, demo users) to a variant, whatever the hash, ramp or targeting says.', overridesEd.el),
      section('Variants', null, editor.el),
      section('Metrics and analysis', null, metrics.el),
      section('Plan the sample size', null, planner.el),
      section('Allocation', null, alloc.el),
      h('div', { class: 'form-actions sticky-actions' },
        saveBtn,
        h('a', { href: `/experiments/${current.id}`, class: 'btn btn-ghost' }, 'Back to experiment'),
        h('span', { class: 'muted version', 'data-testid': 'settings-version' }, `Editing version ${current.version}`),
        blockReason));

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (saving || readOnly) return;
      errors.clear();
      editor.clearServerErrors();
      notice.replaceChildren();
      const bad = meta.validate() || editor.problems({ reveal: true }).map((p) => p.control)[0] || rulesEd.problems()[0] || overridesEd.problems()[0]
        || metrics.problems()[0] || alloc.problems()[0];
      if (!editor.sumOk()) {
        errors.showSummary(h('p', null, `Weights must sum to 1.0; they sum to ${editor.sum()}.`));
        return;
      }
      if (bad) {
        errors.showSummary(h('p', null, h('strong', null, 'Fix the marked fields before saving.')));
        bad.focus();
        return;
      }
      const body = changes();
      if (!Object.keys(body).length) {
        notice.replaceChildren(alertBox('info', 'Nothing to save: no field has changed.'));
        notice.focus();
        return;
      }
      saving = true;
      saveBtn.disabled = true;
      saveBtn.textContent = 'Saving…';
      try {
        const updated = await experiments.patch(current.id, body, current.version);
        if (!ctx.isCurrent()) return;
        exp = updated;
        draw(updated, alertBox('success', `Saved: ${Object.keys(body).join(', ')}. Now at version ${updated.version}.`));
        const n = root.querySelector('[data-testid=settings-message]');
        if (n) n.focus();
        return;
      } catch (e) {
        if (!ctx.isCurrent()) return;
        if (e instanceof ApiError && e.status === 412) {
          await showConflict(current);
        } else if (e instanceof ApiError && e.status === 409) {
          errors.showSummary(h('p', null, h('strong', null, 'Not saved: '), e.message));
          summary.focus();
        } else {
          const vf = Object.fromEntries(Object.entries(e.fields || {}).filter(([p]) => p === 'variants' || p.startsWith('variants[')));
          const focus = editor.setServerErrors(vf);
          const placed = errors.showApiError(e, { title: 'Not saved' });
          if (!placed && focus) focus.focus();
        }
      } finally {
        saving = false;
        if (ctx.isCurrent() && saveBtn.isConnected) {
          saveBtn.textContent = 'Save changes';
          saveBtn.disabled = readOnly || !editor.sumOk();
        }
      }
    });

    async function showConflict(mine) {
      let latest = null;
      let last = null;
      try {
        [latest, last] = await Promise.all([
          experiments.get(mine.id),
          experiments.history(mine.id).then((r) => (r.history || [])[0]).catch(() => null),
        ]);
      } catch { /* the explanation stands without the details */ }
      const who = last ? h('p', null, 'Last change: ', h('strong', null, last.action), ' by ', h('strong', null, last.actor), ' at ', dateTime(last.at),
        last.changes && Object.keys(last.changes).length ? ` (${Object.keys(last.changes).join(', ')})` : '', '.') : null;
      summary.className = 'alert alert-warning';
      summary.dataset.testid = 'conflict';
      summary.replaceChildren(
        h('p', null, h('strong', null, 'Not saved: someone else changed this experiment while you were editing. ')),
        h('p', null, `You started from version ${mine.version}${latest ? `; it is now at version ${latest.version}` : ''}. `,
          'Saving now would overwrite their change, so Litmus refused it (HTTP 412). Reload to see the current settings, then make your edits again.'),
        who,
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'reload-settings', onclick: () => { if (latest) { exp = latest; draw(latest, alertBox('info', `Reloaded version ${latest.version}. Your unsaved edits were discarded.`)); } else ctx.navigate(location.pathname, { replace: true }); } }, 'Reload the latest version')));
      summary.hidden = false;
      summary.focus();
    }

    mount(root,
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
        h('a', { href: '/experiments' }, 'Experiments'), ' / ', h('a', { href: `/experiments/${current.id}` }, current.name), ' / Settings'),
      h('div', { class: 'page-head' },
        h('div', null,
          h('h1', { id: 'settings-title', tabindex: '-1' }, 'Settings ', h('span', { class: 'muted-title' }, current.name), ' ', statusBadge(status)),
          h('p', { class: 'subtitle' }, h('code', null, current.key), ` · version ${current.version} · updated ${dateTime(current.updated_at)}`)),
        h('div', { class: 'head-links' },
          h('a', { href: `/experiments/${current.id}`, class: 'btn', 'data-testid': 'detail-link' }, 'Experiment'),
          h('a', { href: `/experiments/${current.id}/results`, class: 'btn', 'data-testid': 'results-link' }, 'Results'))),
      notice,
      form);
  }
}

function sorted(o) {
  return Object.fromEntries(Object.entries(o || {}).sort(([a], [b]) => a.localeCompare(b)));
}
