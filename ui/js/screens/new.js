// /experiments/new — create a draft: metadata, variants (weights must sum to 1.0), allocation,
// metrics. `Save draft` goes to the detail page; server-side errors show next to their field.

import { experiments } from '../api.js';
import { h, mount, setTitle } from '../dom.js';
import { FieldErrors, allocationSection, metadataSection, metricsSection, section } from '../forms.js';
import { createPlanner } from '../planner.js';
import { createVariantsEditor } from '../variants.js';

const START = [
  { key: 'model_a', weight: 0.5, config: { model: 'current-model' }, is_control: true },
  { key: 'model_b', weight: 0.5, config: { model: 'candidate-model' } },
];

export async function render(root, _params, ctx) {
  setTitle('New experiment');
  const summary = h('div', { class: 'alert alert-error', role: 'alert', tabindex: '-1', hidden: true, 'data-testid': 'form-errors' });
  const errors = new FieldErrors(summary);
  const draft = { variants: START, allocation: 'fixed', metrics: { primary: 'conversion', guardrails: [] } };

  const saveBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'save-draft', 'data-testid': 'save-draft' }, 'Save draft');
  const blockReason = h('p', { class: 'block-reason', id: 'save-block-reason', 'data-testid': 'save-block-reason', 'aria-live': 'polite' });
  saveBtn.setAttribute('aria-describedby', 'save-block-reason');

  let editor = null;
  editor = createVariantsEditor({
    variants: draft.variants,
    onChange: () => {
      const ok = editor ? editor.sumOk() : true;
      saveBtn.disabled = !ok;
      blockReason.textContent = ok ? '' : `Saving is blocked until the weights sum to 1.0 (now ${editor.sum()}).`;
    },
  });
  // The first onChange ran before `editor` existed; run it again now.
  saveBtn.disabled = !editor.sumOk();
  blockReason.textContent = editor.sumOk() ? '' : `Saving is blocked until the weights sum to 1.0 (now ${editor.sum()}).`;

  errors.addHandler((path) => {
    if (path === 'variants' || path.startsWith('variants[')) return true;
    return null;
  });

  const meta = metadataSection({}, errors);
  let metrics = null;
  const alloc = allocationSection(draft, errors, { knownMetrics: ['conversion'] });
  metrics = metricsSection(draft, errors, { onChange: () => { if (metrics) alloc.setKnownMetrics(metrics.names()); } });

  const planner = createPlanner({
    variants: () => (editor ? editor.value().length : START.length),
    mode: () => (metrics ? metrics.value().analysis_mode : 'sequential'),
  });

  let saving = false;
  const form = h('form', { class: 'experiment-form', novalidate: true, 'data-testid': 'new-experiment-form', 'aria-labelledby': 'new-title' },
    summary,
    section('About', 'Required: name, description and owner team.', meta.el),
    section('Variants', 'Each variant is usually one model. Weights are the share of traffic each gets and must sum to 1.0. Exactly one variant is the control the others are compared with.', editor.el),
    section('Metrics and analysis', null, metrics.el),
    section('Plan the sample size', null, planner.el),
    section('Allocation', null, alloc.el),
    h('div', { class: 'form-actions sticky-actions' },
      saveBtn,
      h('a', { href: '/experiments', class: 'btn btn-ghost' }, 'Cancel'),
      blockReason));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (saving) return;
    errors.clear();
    editor.clearServerErrors();
    const firstMeta = meta.validate();
    const problems = editor.problems({ reveal: true });
    const metricProblems = [...metrics.problems(), ...alloc.problems()];
    if (!editor.sumOk()) {
      errors.showSummary(h('p', null, `Weights must sum to 1.0; they sum to ${editor.sum()}.`));
      editor.sumElement.scrollIntoView({ block: 'center' });
      return;
    }
    if (firstMeta || problems.length || metricProblems.length) {
      errors.showSummary(h('p', null, h('strong', null, 'Fix the marked fields: '),
        [firstMeta ? 'the required fields' : null, problems.length ? `${problems.length} variant problem${problems.length > 1 ? 's' : ''}` : null,
          metricProblems.length ? 'the guardrails, metric definitions or objective' : null].filter(Boolean).join(' and '), '.'));
      (firstMeta || (problems[0] && problems[0].control) || metricProblems[0]).focus();
      return;
    }
    const body = { ...meta.value(), variants: editor.value(), ...alloc.value({ primary: metrics.primary() }), ...metrics.value() };
    saving = true;
    saveBtn.disabled = true;
    saveBtn.textContent = 'Saving…';
    try {
      const exp = await experiments.create(body);
      ctx.navigate(`/experiments/${exp.id}`);
    } catch (e) {
      if (!ctx.isCurrent()) return;
      const variantFields = Object.fromEntries(Object.entries(e.fields || {}).filter(([p]) => p === 'variants' || p.startsWith('variants[')));
      const focus = editor.setServerErrors(variantFields);
      const placed = errors.showApiError(e, { title: 'The draft was not saved' });
      if (!placed && focus) focus.focus();
    } finally {
      saving = false;
      if (ctx.isCurrent()) {
        saveBtn.textContent = 'Save draft';
        saveBtn.disabled = !editor.sumOk();
      }
    }
  });

  mount(root,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '/experiments' }, 'Experiments'), ' / ', 'New'),
    h('div', { class: 'page-head' }, h('h1', { id: 'new-title', tabindex: '-1' }, 'New experiment')),
    h('p', { class: 'lede' }, 'Create a draft with its variants. Nothing is served until you launch it from the experiment page.'),
    form);
  document.getElementById('exp-name').focus();
  return undefined;
}
