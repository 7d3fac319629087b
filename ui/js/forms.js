// Form pieces shared by the new-experiment and settings screens: metadata, metrics, bandit
// settings, and the registry that puts server-side field errors next to the named field.

import { field, h, lockIcon, setFieldError } from './dom.js';
import { createGuardrailsEditor } from './guardrails.js';
import { createDefinitionsEditor, createObjectiveEditor } from './metricdefs.js';

/** Maps API field paths (name, bandit.floor, metrics.primary, ...) to field wrappers. */
export class FieldErrors {
  constructor(summaryEl) {
    this.summary = summaryEl;
    this.fields = new Map();
    this.handlers = [];
    this.clearers = [];
  }

  add(path, wrap) { this.fields.set(path, wrap); return wrap; }

  /** handler(path, message) -> element to focus, or null when it does not own the path. */
  addHandler(fn) { this.handlers.push(fn); }

  /** fn() clears the errors an editor placed itself (row editors with their own error slots). */
  addClearer(fn) { this.clearers.push(fn); }

  clear() {
    for (const wrap of this.fields.values()) setFieldError(wrap, '');
    for (const fn of this.clearers) fn();
    if (this.summary) { this.summary.hidden = true; this.summary.replaceChildren(); }
  }

  /** Show one message at the top of the form (role=alert). */
  showSummary(...content) {
    if (!this.summary) return;
    this.summary.replaceChildren(...content.filter((c) => c !== null && c !== undefined && c !== false));
    this.summary.hidden = false;
  }

  /** Show an ApiError: every field path next to its field; the rest in the summary. */
  showApiError(err, { title = 'Could not save' } = {}) {
    this.clear();
    const fields = (err && err.fields) || {};
    const unplaced = [];
    let focus = null;
    for (const [path, msg] of Object.entries(fields)) {
      const wrap = this.fields.get(path);
      if (wrap && wrap.querySelector(':scope > .field-error')) {
        setFieldError(wrap, msg);
        focus = focus || wrap.querySelector('input, select, textarea');
        continue;
      }
      let handled = null;
      for (const fn of this.handlers) {
        handled = fn(path, msg, fields);
        if (handled !== null && handled !== undefined) break;
      }
      if (handled !== null && handled !== undefined) {
        if (handled instanceof Element) focus = focus || handled;
      } else {
        unplaced.push([path, msg]);
      }
    }
    const status = err && err.status ? ` (HTTP ${err.status})` : '';
    this.showSummary(
      h('p', null, h('strong', null, `${title}${status}: `), err && err.message ? err.message : String(err)),
      unplaced.length ? h('ul', null, unplaced.map(([p, m]) => h('li', null, h('code', null, p), ': ', m))) : null,
      Object.keys(fields).length > unplaced.length ? h('p', { class: 'muted' }, 'The fields with problems are marked below.') : null,
    );
    if (focus) focus.focus();
    else if (this.summary) this.summary.focus();
    return focus;
  }
}

const text = (attrs) => h('input', { type: 'text', autocomplete: 'off', ...attrs });

/** Name, key, description, owner team, hypothesis. */
export function metadataSection(exp, errors, { keyLocked = false, keyReason = '', readOnly = false } = {}) {
  const name = text({ id: 'exp-name', name: 'name', value: exp.name || '', required: true, maxlength: 500, 'data-testid': 'exp-name', readOnly });
  const key = text({
    id: 'exp-key', name: 'key', value: exp.key || '', class: 'mono', maxlength: 64, spellcheck: 'false',
    placeholder: 'made from the name', 'data-testid': 'exp-key', readOnly: readOnly || keyLocked,
  });
  const description = h('textarea', { id: 'exp-description', name: 'description', rows: 3, required: true, 'data-testid': 'exp-description', readOnly });
  description.value = exp.description || '';
  const team = text({ id: 'exp-owner-team', name: 'owner_team', value: exp.owner_team || '', required: true, maxlength: 500, 'data-testid': 'exp-owner-team', readOnly });
  const hypothesis = h('textarea', {
    id: 'exp-hypothesis', name: 'hypothesis', rows: 2, 'data-testid': 'exp-hypothesis', readOnly,
    placeholder: 'e.g. model_b lifts conversion by 2% because it ranks fresher items higher',
  });
  hypothesis.value = exp.hypothesis || '';

  const wraps = {
    name: errors.add('name', field({ label: 'Name', control: name, required: true, path: 'name' })),
    key: errors.add('key', field({
      label: 'Key', control: key, path: 'key',
      hint: keyLocked ? h('span', { class: 'lock-hint' }, lockIcon(), ' ', keyReason) : 'Model routers ask for the experiment by this key. Lower-case letters, digits, _ and -; left empty, it is made from the name.',
    })),
    description: errors.add('description', field({ label: 'Description', control: description, required: true, path: 'description' })),
    owner_team: errors.add('owner_team', field({ label: 'Owner team', control: team, required: true, path: 'owner_team' })),
    hypothesis: errors.add('hypothesis', field({ label: 'Hypothesis', control: hypothesis, path: 'hypothesis', hint: 'Optional: what you expect to happen, and why.' })),
  };
  const required = [['name', name, 'Enter a name'], ['description', description, 'Enter a description'], ['owner_team', team, 'Enter the owner team']];
  for (const [path, control, msg] of required) {
    const check = () => setFieldError(wraps[path], control.value.trim() ? '' : msg);
    control.addEventListener('blur', check);
    control.addEventListener('input', () => { if (wraps[path].classList.contains('has-error')) check(); });
  }
  const el = h('div', { class: 'grid-2' }, wraps.name, wraps.key, wraps.owner_team, h('div'), h('div', { class: 'span-2' }, wraps.description), h('div', { class: 'span-2' }, wraps.hypothesis));
  return {
    el,
    /** Client-side required-field check; shows the errors, returns the first bad control. */
    validate() {
      let first = null;
      for (const [path, control, msg] of required) {
        const bad = !control.value.trim();
        setFieldError(wraps[path], bad ? msg : '');
        if (bad && !first) first = control;
      }
      const k = key.value.trim();
      if (k && !/^[a-z0-9][a-z0-9_-]{0,63}$/.test(k) && !keyLocked) {
        setFieldError(wraps.key, 'Lower-case letters, digits, _ and - only (at most 64), starting with a letter or digit');
        first = first || key;
      }
      return first;
    },
    value() {
      const out = {
        name: name.value.trim(),
        description: description.value.trim(),
        owner_team: team.value.trim(),
        hypothesis: hypothesis.value.trim() || null,
      };
      if (key.value.trim()) out.key = key.value.trim();
      return out;
    },
  };
}

/** A guardrail's metric: guardrails are {metric, margin, action}, or a bare name in older data. */
export function guardrailName(g) { return typeof g === 'string' ? g : (g && g.metric) || ''; }

/** A guardrail in words: "errors (pause, margin 10%)"; a bare alert without margin is its name. */
export function guardrailText(g) {
  if (typeof g === 'string') return g;
  const extra = [g.action && g.action !== 'alert' ? g.action : null, g.margin ? `margin ${Math.round(g.margin * 1000) / 10}%` : null].filter(Boolean);
  return extra.length ? `${g.metric} (${extra.join(', ')})` : g.metric;
}

/**
 * Primary metric, guardrails (one row each: metric, tolerated harm, action), analysis mode and
 * the metric definitions (direction, statistic, cap per metric). The older `minimize` list is
 * read as direction "decrease" and saved as definitions (with an empty `minimize`); bare
 * guardrail names are read as {margin 0, action alert} and saved in the object form.
 * `guardrailNote`: a sentence on whether the guardrails can change now (settings).
 */
export function metricsSection(exp, errors, { readOnly = false, onChange = () => {}, guardrailNote = '' } = {}) {
  const m = exp.metrics || {};
  const primary = text({ id: 'exp-primary-metric', value: m.primary || 'conversion', class: 'mono', 'data-testid': 'exp-primary-metric', readOnly });
  const mode = h('select', { id: 'exp-analysis-mode', 'data-testid': 'exp-analysis-mode', disabled: readOnly },
    h('option', { value: 'sequential', selected: (exp.analysis_mode || 'sequential') === 'sequential' }, 'Sequential (anytime-valid: safe to watch live)'),
    h('option', { value: 'fixed', selected: exp.analysis_mode === 'fixed' }, 'Fixed horizon (read once at the planned sample size)'));
  let guards = null;
  const known = () => [primary.value.trim() || 'conversion', ...defs.names()];
  // Which way is bad for a guardrail's metric comes from its definition: the rows say when
  // their metric has none, and suggest the metrics the form already names.
  const defs = createDefinitionsEditor({
    metrics: m, readOnly,
    onChange: () => { if (guards) { guards.refresh(); guards.setKnownMetrics(known()); } onChange(); },
  });
  guards = createGuardrailsEditor({
    metrics: m, readOnly, onChange,
    knownMetrics: known(),
    definitions: () => Object.fromEntries(Object.entries(defs.value()).map(([k, d]) => [k, { direction: d.direction || 'increase' }])),
  });
  primary.addEventListener('input', () => { guards.setKnownMetrics(known()); onChange(); });
  const el = h('div', null,
    h('div', { class: 'grid-2' },
      errors.add('metrics.primary', field({ label: 'Primary metric', control: primary, path: 'metrics.primary', hint: 'Conversions count towards "conversion" unless named.' })),
      errors.add('analysis_mode', field({ label: 'Analysis', control: mode, path: 'analysis_mode' }))),
    h('section', { class: 'sub-section', 'aria-labelledby': 'sec-guardrails-editor', 'data-testid': 'guardrails-section' },
      h('h3', { id: 'sec-guardrails-editor', class: 'sub-head' }, 'Guardrails'),
      h('p', { class: 'muted' }, 'A guardrail watches a metric for harm: the treatment\u2019s relative change against control in the metric\u2019s bad direction (from its definition below). It trips when that harm is surely above the tolerated harm, and then acts.'),
      guardrailNote ? h('p', { class: 'hint lock-hint', 'data-testid': 'guardrails-note' }, readOnly ? lockIcon() : null, readOnly ? ' ' : null, guardrailNote) : null,
      guards.el),
    h('section', { class: 'sub-section', 'aria-labelledby': 'sec-metric-definitions', 'data-testid': 'metric-definitions' },
      h('h3', { id: 'sec-metric-definitions', class: 'sub-head' }, 'Metric definitions'),
      h('p', { class: 'muted' }, 'Which way is good for a metric, the statistic compared (a mean per unit, or a percentile of the event values such as p95 latency) and an optional cap per unit. Colours, chance to beat, the bandit and its constraints all follow these. They can change while the experiment runs.'),
      defs.el));
  errors.add('metrics', el);
  errors.addHandler((path, msg) => guards.setServerError(path, msg));
  errors.addHandler((path, msg) => defs.setServerError(path, msg));
  errors.addClearer(() => guards.clearErrors());
  errors.addClearer(() => defs.clearErrors());
  return {
    el,
    /** Every metric this section names: primary, guardrails, defined metrics. */
    names() { return [primary.value.trim() || 'conversion', ...guards.names(), ...defs.names()]; },
    primary() { return primary.value.trim() || 'conversion'; },
    /** Client-side checks of the guardrail and definition rows: the controls to fix. */
    problems() { return [...guards.problems(), ...defs.problems()]; },
    value() {
      return {
        metrics: {
          primary: primary.value.trim() || 'conversion',
          guardrails: guards.value(),
          minimize: [],
          definitions: defs.value(),
        },
        analysis_mode: mode.value,
      };
    },
  };
}

export const BANDIT_DEFAULTS = {
  reward_metric: null, reward_type: 'binary', goal: 'maximize', update_interval_s: 10, floor: 0.01,
  burn_in_units: 100, convergence_threshold: 0.95, min_units: 200, auto_stop: false,
};

/** Allocation choice (fixed or bandit) and the bandit's settings. */
export function allocationSection(exp, errors, { locked = false, lockReason = '', readOnly = false, knownMetrics = [], onChange = () => {} } = {}) {
  const b = { ...BANDIT_DEFAULTS, ...(exp.bandit || {}) };
  const current = exp.allocation || 'fixed';
  const radio = (value, label, hint) => {
    const input = h('input', { type: 'radio', name: 'allocation', id: `alloc-${value}`, value, checked: current === value, disabled: locked || readOnly, 'data-testid': `allocation-${value}` });
    return h('div', { class: 'radio-card' }, input, h('label', { for: `alloc-${value}` }, h('strong', null, label), h('span', { class: 'muted' }, hint)));
  };
  const fixed = radio('fixed', 'Fixed split (A/B/n)', 'Traffic follows the weights above for the whole experiment.');
  const bandit = radio('bandit', 'Bandit (Thompson sampling)', 'Weights adapt towards the best variant as rewards arrive.');
  const num = (id, value, attrs = {}) => h('input', { type: 'number', id, value: value == null ? '' : String(value), step: 'any', readOnly, 'data-testid': id, ...attrs });
  // After launch the server refuses a new reward metric, type or goal (the posteriors were built
  // on them), so those three are locked with the allocation; the rest stay editable.
  const rewardLocked = readOnly || locked;
  const f = {
    reward_metric: text({ id: 'bandit-reward-metric', value: b.reward_metric || '', class: 'mono', placeholder: 'the primary metric', 'data-testid': 'bandit-reward-metric', readOnly: rewardLocked }),
    reward_type: h('select', { id: 'bandit-reward-type', 'data-testid': 'bandit-reward-type', disabled: rewardLocked },
      h('option', { value: 'binary', selected: b.reward_type === 'binary' }, 'Binary (converted or not)'),
      h('option', { value: 'continuous', selected: b.reward_type === 'continuous' }, 'Continuous (a value per unit)')),
    goal: h('select', { id: 'bandit-goal', 'data-testid': 'bandit-goal', disabled: rewardLocked },
      h('option', { value: 'maximize', selected: b.goal === 'maximize' }, 'Maximise'),
      h('option', { value: 'minimize', selected: b.goal === 'minimize' }, 'Minimise')),
    update_interval_s: num('bandit-update-interval', b.update_interval_s, { min: 0.5 }),
    floor: num('bandit-floor', b.floor, { min: 0, max: 0.2 }),
    burn_in_units: num('bandit-burn-in', b.burn_in_units, { min: 0, step: 1 }),
    convergence_threshold: num('bandit-threshold', b.convergence_threshold, { min: 0.5, max: 1 }),
    min_units: num('bandit-min-units', b.min_units, { min: 0, step: 1 }),
    auto_stop: h('input', { type: 'checkbox', id: 'bandit-auto-stop', checked: !!b.auto_stop, disabled: readOnly, 'data-testid': 'bandit-auto-stop' }),
  };
  const w = (path, label, hint) => errors.add(`bandit.${path}`, field({ label, control: f[path], path: `bandit.${path}`, hint }));
  // The objective's metric is the reward metric: locked with it after launch. Its constraints'
  // bounds stay editable while running.
  const objective = createObjectiveEditor({
    objective: b.objective, knownMetrics, readOnly, metricLocked: rewardLocked && !readOnly && !!(b.objective && b.objective.metric),
    lockReason: 'The objective\u2019s metric is the reward metric: it cannot change after launch. The constraints can.',
  });
  errors.addHandler((path, msg) => objective.setServerError(path, msg));
  errors.addClearer(() => objective.clearErrors());
  const settings = h('fieldset', { class: 'bandit-settings', 'data-testid': 'bandit-settings' },
    h('legend', null, 'Bandit settings'),
    h('div', { class: 'grid-3' },
      w('reward_metric', 'Reward metric', 'Defaults to the primary metric; an objective\u2019s metric sets it.'),
      w('reward_type', 'Reward type'),
      w('goal', 'Goal', 'A metric definition of the reward metric with \u201clower is better\u201d makes it Minimise.'),
      w('update_interval_s', 'Update interval (seconds)', 'How often weights are recomputed.'),
      w('floor', 'Weight floor per variant', 'Every variant keeps at least this share (0–0.2).'),
      w('burn_in_units', 'Burn-in (units per variant)', 'Equal weights until each variant has this many units.'),
      w('convergence_threshold', 'Convergence threshold (P(best))', 'Converged when one variant reaches this.'),
      w('min_units', 'Minimum units before convergence'),
      h('div', { class: 'field checkbox-field', 'data-field': 'bandit.auto_stop' }, f.auto_stop,
        h('label', { for: 'bandit-auto-stop' }, 'Stop automatically when converged'))),
    objective.el);
  errors.add('bandit', settings);
  const banditInput = bandit.querySelector('input');
  const sync = () => {
    settings.hidden = !banditInput.checked;
    onChange(banditInput.checked);
  };
  for (const input of [fixed, bandit].map((d) => d.querySelector('input'))) input.addEventListener('change', sync);
  const el = h('div', { class: 'allocation' },
    locked ? h('p', { class: 'hint lock-hint', 'data-testid': 'allocation-locked-reason' }, lockIcon(), ' ', lockReason) : null,
    h('div', { class: 'radio-cards', role: 'radiogroup', 'aria-label': 'Allocation' }, fixed, bandit),
    settings);
  settings.hidden = current !== 'bandit';
  errors.add('allocation', el);
  const numberOr = (input, fallback) => {
    const t = input.value.trim();
    if (t === '') return fallback;
    const v = Number(t);
    return Number.isFinite(v) ? v : t;
  };
  return {
    el,
    isBandit: () => bandit.querySelector('input').checked,
    setKnownMetrics: (names) => objective.setKnownMetrics(names),
    /** Client-side checks of the objective's rows (only when the bandit is chosen). */
    problems: () => (banditInput.checked ? objective.problems() : []),
    /** primary: the metric the objective falls back to when neither it nor the reward metric is named. */
    value({ primary = null } = {}) {
      const isBandit = bandit.querySelector('input').checked;
      if (!isBandit) return { allocation: 'fixed' };
      const reward = f.reward_metric.value.trim() || null;
      const obj = objective.value(reward || primary || 'conversion');
      const extra = obj !== null || (exp.bandit && 'objective' in exp.bandit) ? { objective: obj } : {};
      return {
        allocation: 'bandit',
        bandit: {
          ...(exp.bandit || {}),
          ...extra,
          // The objective's metric is the reward metric.
          reward_metric: obj ? obj.metric : reward,
          reward_type: f.reward_type.value,
          goal: f.goal.value,
          update_interval_s: numberOr(f.update_interval_s, BANDIT_DEFAULTS.update_interval_s),
          floor: numberOr(f.floor, BANDIT_DEFAULTS.floor),
          burn_in_units: numberOr(f.burn_in_units, BANDIT_DEFAULTS.burn_in_units),
          convergence_threshold: numberOr(f.convergence_threshold, BANDIT_DEFAULTS.convergence_threshold),
          min_units: numberOr(f.min_units, BANDIT_DEFAULTS.min_units),
          auto_stop: f.auto_stop.checked,
        },
      };
    },
  };
}

/** A form section: heading, optional description, content. */
export function section(title, description, ...content) {
  return h('section', { class: 'form-section card', 'aria-labelledby': slugId(title) },
    h('h2', { id: slugId(title) }, title),
    description ? h('p', { class: 'muted' }, description) : null,
    ...content);
}

function slugId(t) { return `sec-${t.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`; }
