// The planning panel of the new-experiment and settings screens: POST /api/v1/plan with a
// baseline (a rate, or a mean and sd), the number of variants, power and traffic per day, and
// either the effect to detect (answer: units and days) or the days available (answer: the
// smallest detectable effect), for the fixed and the sequential analysis side by side. The
// server's 422 names a field: its message goes next to that field.
//
// The panel sits inside the experiment's form but is not part of it: its controls have no
// name, Enter in them plans rather than saving the experiment.

import { api } from './api.js';
import { field, h, setFieldError } from './dom.js';
import { int, sig } from './format.js';

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

function pctOf(v, digits = 2) {
  return isNum(v) ? `${Number((v * 100).toPrecision(3)).toLocaleString('en-US', { maximumFractionDigits: digits + 2 })}%` : '—';
}

/**
 * createPlanner({variants: () => number, mode: () => 'sequential'|'fixed'}) -> {el}
 */
export function createPlanner({ variants = () => 2, mode = () => 'sequential' } = {}) {
  const input = (id, attrs = {}) => h('input', { id, type: 'text', inputmode: 'decimal', autocomplete: 'off', 'data-testid': id, ...attrs });
  const metric = h('select', { id: 'plan-metric', 'data-testid': 'plan-metric' },
    h('option', { value: 'rate' }, 'A rate (0 or 1 per unit)'),
    h('option', { value: 'mean' }, 'A mean (a value per unit)'));
  const direction = h('select', { id: 'plan-direction', 'data-testid': 'plan-direction' },
    h('option', { value: 'units' }, 'Units and days for an effect'),
    h('option', { value: 'mde' }, 'Smallest effect in so many days'));
  const rate = input('plan-rate', { value: '10' });
  const mean = input('plan-mean');
  const sd = input('plan-sd');
  const nVariants = input('plan-variants', { inputmode: 'numeric', value: String(variants()) });
  const mde = input('plan-mde', { value: '5' });
  const days = input('plan-days', { value: '14' });
  const traffic = input('plan-traffic', { inputmode: 'numeric', value: '10000' });
  const power = input('plan-power', { value: '80' });

  // API field -> its field wrapper (for the server's errors) and how to read the control.
  const wraps = {
    metric: field({ label: 'Metric', control: metric, path: 'plan.metric' }),
    direction: field({ label: 'Question', control: direction, path: 'plan.direction' }),
    rate: field({ label: 'Baseline rate (%)', control: rate, hint: 'The control\u2019s rate now, e.g. 10 for 10%.', path: 'plan.rate' }),
    mean: field({ label: 'Baseline mean', control: mean, hint: 'The control\u2019s mean per unit.', path: 'plan.mean' }),
    sd: field({ label: 'Standard deviation', control: sd, hint: 'Of the per-unit values.', path: 'plan.sd' }),
    variants: field({ label: 'Variants', control: nVariants, hint: 'Control included; equal split.', path: 'plan.variants' }),
    mde: field({ label: 'Effect to detect (relative %)', control: mde, hint: 'The minimum detectable effect: 5 is a +5% lift.', path: 'plan.mde' }),
    days: field({ label: 'Days of traffic', control: days, path: 'plan.days' }),
    traffic_per_day: field({ label: 'Traffic per day (units, all variants)', control: traffic, path: 'plan.traffic_per_day' }),
    power: field({ label: 'Power (%)', control: power, hint: 'The chance to detect the effect if it is there.', path: 'plan.power' }),
  };
  const summary = h('div', { class: 'alert alert-error', role: 'alert', hidden: true, 'data-testid': 'plan-errors' });
  const out = h('div', { class: 'plan-out', 'data-testid': 'plan-result', 'aria-live': 'polite' });
  const run = h('button', { type: 'button', class: 'btn', 'data-testid': 'plan-run' }, 'Plan');

  function sync() {
    const isRate = metric.value === 'rate';
    wraps.rate.hidden = !isRate;
    wraps.mean.hidden = isRate;
    wraps.sd.hidden = isRate;
    const units = direction.value === 'units';
    wraps.mde.hidden = !units;
    wraps.days.hidden = units;
    traffic.setAttribute('aria-required', units ? 'false' : 'true');
  }
  metric.addEventListener('change', sync);
  direction.addEventListener('change', () => { sync(); mount(out); });
  sync();

  function clearErrors() {
    for (const w of Object.values(wraps)) setFieldError(w, '');
    summary.hidden = true;
    summary.replaceChildren();
  }

  const numberOf = (el) => {
    const t = el.value.trim().replace(/,/g, '');
    return t === '' ? null : Number(t);
  };

  /** The request body, or null after marking the fields a person must fix. */
  function body() {
    const problems = [];
    const need = (name, el, { min = null, max = null, pct = false, integer = false, required = true } = {}) => {
      const v = numberOf(el);
      if (v === null) { if (required) problems.push([name, 'Enter a number']); return undefined; }
      if (!Number.isFinite(v)) { problems.push([name, 'Not a number']); return undefined; }
      if (integer && !Number.isInteger(v)) { problems.push([name, 'A whole number']); return undefined; }
      if (min !== null && !(v > min)) { problems.push([name, `Must be above ${min}${pct ? '%' : ''}`]); return undefined; }
      if (max !== null && !(v < max)) { problems.push([name, `Must be below ${max}${pct ? '%' : ''}`]); return undefined; }
      return pct ? v / 100 : v;
    };
    const b = { metric: metric.value, analysis: 'both' };
    if (metric.value === 'rate') b.rate = need('rate', rate, { min: 0, max: 100, pct: true });
    else { b.mean = need('mean', mean); b.sd = need('sd', sd, { min: 0 }); }
    b.variants = need('variants', nVariants, { integer: true });
    b.power = need('power', power, { min: 0, max: 100, pct: true });
    const units = direction.value === 'units';
    b.traffic_per_day = need('traffic_per_day', traffic, { min: 0, required: !units });
    if (units) { b.mde = need('mde', mde, { pct: true }); b.mde_type = 'relative'; } else b.days = need('days', days, { min: 0 });
    for (const k of Object.keys(b)) if (b[k] === undefined || b[k] === null) delete b[k];
    if (problems.length) {
      for (const [name, msg] of problems) setFieldError(wraps[name], msg);
      wraps[problems[0][0]].querySelector('input, select').focus();
      return null;
    }
    return b;
  }

  let seq = 0;
  async function plan() {
    clearErrors();
    const b = body();
    if (!b) { mount(out); return; }
    const mine = ++seq;
    run.disabled = true;
    out.dataset.state = 'loading';
    try {
      const answer = await api('POST', '/plan', { body: b });
      if (mine !== seq) return;
      show(answer, b);
    } catch (e) {
      if (mine !== seq) return;
      mount(out);
      out.dataset.state = 'error';
      const fields = (e && e.fields) || {};
      const unplaced = [];
      let focus = null;
      for (const [path, msg] of Object.entries(fields)) {
        const w = wraps[path];
        if (w && !w.hidden) {
          setFieldError(w, path === 'rate' || path === 'power' || path === 'mde' ? `${msg} (as a fraction; this form takes %)` : msg);
          focus = focus || w.querySelector('input, select');
        } else unplaced.push([path, msg]);
      }
      if (unplaced.length || !focus) {
        summary.replaceChildren(h('p', null, h('strong', null, 'Could not plan: '), e && e.message ? e.message : String(e)),
          unplaced.length ? h('ul', null, unplaced.map(([p, m]) => h('li', null, h('code', null, p), ': ', m))) : null);
        summary.hidden = false;
      }
      if (focus) focus.focus();
    } finally {
      if (mine === seq) run.disabled = false;
    }
  }

  function show(a, b) {
    out.dataset.state = 'ready';
    out.dataset.direction = a.direction;
    const modes = ['fixed', 'sequential'].filter((m) => a[m]);
    const chosen = mode();
    const rows = modes.map((m) => {
      const r = a[m];
      return h('tr', { 'data-testid': `plan-${m}`, 'data-mode': m, class: m === chosen ? 'is-chosen' : null },
        h('th', { scope: 'row' }, m === 'fixed' ? 'Fixed horizon' : 'Sequential (anytime)', m === chosen ? h('span', { class: 'tag' }, 'this experiment') : null),
        a.direction === 'units'
          ? [h('td', { class: 'num', 'data-testid': 'plan-units-per-arm', 'data-value': String(r.units_per_arm) }, int(r.units_per_arm)),
            h('td', { class: 'num', 'data-testid': 'plan-total' }, int(r.total_units)),
            h('td', { class: 'num', 'data-testid': 'plan-days', 'data-value': r.days === null ? '' : String(r.days) }, r.days === null ? '—' : `${sig(r.days, 3)} d`)]
          : [h('td', { class: 'num', 'data-testid': 'plan-mde-relative', 'data-value': String(r.mde.relative), title: String(r.mde.relative) }, `\u00b1${pctOf(r.mde.relative)}`),
            h('td', { class: 'num', 'data-testid': 'plan-mde-absolute', title: String(r.mde.absolute) }, b.metric === 'rate' ? `${sig(r.mde.absolute * 100, 3)} pp` : sig(r.mde.absolute, 3)),
            h('td', { class: 'num', 'data-testid': 'plan-units-per-arm', 'data-value': String(r.units_per_arm) }, int(r.units_per_arm))]);
    });
    const seqA = a.sequential;
    const fixA = a.fixed;
    const sentence = a.direction === 'units'
      ? `To detect ${pctOf(b.mde)} on a baseline of ${b.metric === 'rate' ? pctOf(b.rate) : sig(b.mean, 4)} with ${pctOf(b.power, 0)} power: ${int(fixA.units_per_arm)} units per arm for one look at the end, ${int(seqA.units_per_arm)} per arm to watch any time${isNum(seqA.ratio_to_fixed) ? ` (${sig(seqA.ratio_to_fixed, 3)}× as many)` : ''}.`
      : `In ${sig(b.days, 3)} days at ${int(b.traffic_per_day)} units a day (${int(fixA.units_per_arm)} per arm): the smallest effect detectable with ${pctOf(b.power, 0)} power is ${pctOf(fixA.mde.relative)} read once at the end, ${pctOf(seqA.mde.relative)} watched any time.`;
    mount(out,
      h('p', { 'data-testid': 'plan-sentence' }, sentence),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table compact plan-table', 'data-testid': 'plan-table' },
        h('caption', { class: 'sr-only' }, 'The plan per analysis'),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Analysis'),
          a.direction === 'units'
            ? ['Units per arm', 'All units', 'Days'].map((c) => h('th', { scope: 'col', class: 'num' }, c))
            : ['Detectable lift', 'Absolute', 'Units per arm'].map((c) => h('th', { scope: 'col', class: 'num' }, c)))),
        h('tbody', null, rows))),
      a.correction && a.correction !== 'none' ? h('p', { class: 'hint' }, `${a.comparisons} comparisons with the control: α split (${a.correction}) to ${sig(a.alpha_per_comparison, 3)} each.`) : null,
      Array.isArray(a.notes) && a.notes.length ? h('ul', { class: 'hint plan-notes' }, a.notes.map((n) => h('li', null, n))) : null);
  }

  run.addEventListener('click', plan);
  const el = h('div', { class: 'planner', 'data-testid': 'planner', role: 'group', 'aria-labelledby': 'plan-title' },
    h('p', { class: 'muted', id: 'plan-title' }, 'How many units, and how long: for the fixed-horizon and the sequential analysis. Nothing here is saved with the experiment.'),
    summary,
    h('div', { class: 'grid-3 plan-grid' }, wraps.metric, wraps.direction, wraps.variants, wraps.rate, wraps.mean, wraps.sd, wraps.mde, wraps.days, wraps.traffic_per_day, wraps.power),
    h('div', { class: 'actions' }, run),
    out);
  // Enter in a planner field plans (it would otherwise submit the experiment's form).
  el.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && ev.target instanceof HTMLInputElement) { ev.preventDefault(); plan(); }
  });
  return { el, plan, setVariants: (n) => { nVariants.value = String(n); } };
}

function mount(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat()) if (c) el.appendChild(c);
}
