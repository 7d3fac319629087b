// Editors for how metrics are read and what a bandit optimises: metric definitions (direction,
// statistic, cap per metric) and a bandit's objective with up to five constraints. Both place
// the server's field errors (metrics.definitions.<metric>.<key>,
// bandit.objective.constraints[<i>].<key>) next to the control they name.

import { h, nextId } from './dom.js';
import { labelledCell, rowList, showCellError } from './roweditor.js';

export const STATS = [
  ['mean', 'mean per unit'],
  ['p50', 'p50 (median) of event values'],
  ['p90', 'p90 of event values'],
  ['p95', 'p95 of event values'],
  ['p99', 'p99 of event values'],
];
export const MAX_CONSTRAINTS = 5;

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

/** A number from an input's text; '' -> null; text that is no number stays text (the server says why). */
function numberFrom(input) {
  const t = input.value.trim();
  if (t === '') return null;
  const v = Number(t);
  return Number.isFinite(v) ? v : t;
}

/**
 * Every metric's definition as the UI reads it: stored definitions, plus the older
 * `metrics.minimize` list read as direction "decrease". -> {metric: {direction, stat, cap}}
 */
export function readDefinitions(metrics) {
  const m = metrics || {};
  const out = {};
  for (const name of m.minimize || []) out[name] = { direction: 'decrease', stat: 'mean', cap: null };
  for (const [name, d] of Object.entries(m.definitions || {})) {
    out[name] = {
      direction: (d && d.direction) || (out[name] ? out[name].direction : 'increase'),
      stat: (d && d.stat) || 'mean',
      cap: d && isNum(d.cap) ? d.cap : null,
    };
  }
  return out;
}

/** Only the keys that differ from the defaults, as the server stores them. */
export function compactDefinitions(defs) {
  const out = {};
  for (const name of Object.keys(defs || {}).sort()) {
    const d = defs[name] || {};
    const c = {};
    if (d.direction && d.direction !== 'increase') c.direction = d.direction;
    if (d.stat && d.stat !== 'mean') c.stat = d.stat;
    if (d.cap !== null && d.cap !== undefined && d.cap !== '') c.cap = d.cap;
    out[name] = c;
  }
  return out;
}

/** "p95 · lower is better · capped at 500" for a definition (null -> the defaults). */
export function describeDefinition(d) {
  const def = d || {};
  const parts = [];
  if (def.stat && def.stat !== 'mean') parts.push(def.stat);
  parts.push(def.direction === 'decrease' ? 'lower is better' : 'higher is better');
  if (isNum(def.cap)) parts.push(`capped at ${def.cap} per unit`);
  return parts.join(' · ');
}

/**
 * createDefinitionsEditor({metrics, readOnly, onChange}) ->
 * {el, value(), problems(), clearErrors(), setServerError(path, msg), names()}
 */
export function createDefinitionsEditor({ metrics, readOnly = false, onChange = () => {} }) {
  const list = h('div', { class: 'def-rows', 'data-testid': 'definition-rows' });
  const empty = h('p', { class: 'muted', 'data-testid': 'no-definitions' },
    'No definitions: every metric is a mean per unit, and higher is better.');
  const addBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'add-definition', hidden: readOnly }, '+ Add metric definition');
  const editorErr = h('p', { class: 'field-error', 'data-error-for': 'metrics.definitions', hidden: true });
  const { rows, add: addRow, wire, clearRow, setCell } = rowList({ list, renumber, onChange, fallbackFocus: () => addBtn });

  function renumber() {
    rows.forEach((r, i) => {
      r.el.setAttribute('aria-label', `Metric definition ${i + 1}`);
      r.remove.setAttribute('aria-label', `Remove metric definition ${i + 1}`);
    });
    empty.hidden = rows.length > 0;
  }

  function makeRow(name, d) {
    const ids = { m: nextId('def'), d: nextId('def'), s: nextId('def'), c: nextId('def') };
    const metric = h('input', { type: 'text', id: ids.m, value: name || '', class: 'mono', placeholder: 'latency_ms', autocomplete: 'off', spellcheck: 'false', readOnly, 'data-testid': 'def-metric' });
    const direction = h('select', { id: ids.d, disabled: readOnly, 'data-testid': 'def-direction' },
      h('option', { value: 'increase', selected: d.direction !== 'decrease' }, 'Higher is better'),
      h('option', { value: 'decrease', selected: d.direction === 'decrease' }, 'Lower is better'));
    const stat = h('select', { id: ids.s, disabled: readOnly, 'data-testid': 'def-stat' },
      STATS.map(([v, label]) => h('option', { value: v, selected: (d.stat || 'mean') === v }, label)));
    const cap = h('input', { type: 'number', id: ids.c, step: 'any', min: 0, value: isNum(d.cap) ? String(d.cap) : '', placeholder: 'none', readOnly, 'data-testid': 'def-cap' });
    const remove = h('button', { type: 'button', class: 'btn btn-ghost btn-small btn-danger', hidden: readOnly, 'data-testid': 'remove-definition' }, 'Remove');
    const cell = (id, label, control, key, hint = null) =>
      labelledCell(id, label, control, key, { hint, errAttrs: { 'data-error-for': key } });
    const cells = {
      metric: cell(ids.m, 'Metric', metric, 'metric'),
      direction: cell(ids.d, 'Direction', direction, 'direction'),
      stat: cell(ids.s, 'Statistic', stat, 'stat'),
      cap: cell(ids.c, 'Cap per unit', cap, 'cap', 'Optional: a unit\u2019s total above it counts as the cap.'),
    };
    const rowErr = h('p', { class: 'field-error row-error', hidden: true });
    const el = h('div', { class: 'def-row', role: 'group', 'data-testid': 'definition-row' },
      cells.metric.el, cells.direction.el, cells.stat.el, cells.cap.el,
      h('div', { class: 'vcell vcell-remove' }, remove), rowErr);
    const row = { el, metric, direction, stat, cap, cells, rowErr, remove };
    wire(row, [metric, direction, stat, cap]);
    return row;
  }

  const add = (name, d) => addRow(makeRow(name, d));
  // Sorted by name: the server does not keep the order they were typed in.
  for (const [name, d] of Object.entries(readDefinitions(metrics)).sort(([a], [b]) => a.localeCompare(b))) add(name, d);
  renumber();
  addBtn.addEventListener('click', () => { add('', { direction: 'increase', stat: 'mean', cap: null }).metric.focus(); onChange(); });

  return {
    el: h('div', { class: 'definitions-editor', 'data-testid': 'definitions-editor' }, empty, list, editorErr, h('div', { class: 'variant-toolbar' }, addBtn)),
    names() { return rows.map((r) => r.metric.value.trim()).filter(Boolean); },
    clearErrors() {
      for (const r of rows) clearRow(r);
      editorErr.hidden = true;
    },
    /** Client-side checks: a name on every row, no name twice. Returns the controls to fix. */
    problems() {
      const out = [];
      const seen = new Set();
      for (const r of rows) {
        const n = r.metric.value.trim();
        if (!n) out.push(setCell(r, 'metric', 'Enter the metric this row defines (or remove the row)'));
        else if (seen.has(n)) out.push(setCell(r, 'metric', `"${n}" is defined twice`));
        seen.add(n);
      }
      return out;
    },
    value() {
      const out = {};
      for (const r of rows) {
        const n = r.metric.value.trim();
        if (!n) continue;
        const d = {};
        if (r.direction.value !== 'increase') d.direction = r.direction.value;
        if (r.stat.value !== 'mean') d.stat = r.stat.value;
        const c = numberFrom(r.cap);
        if (c !== null) d.cap = c;
        out[n] = d;
      }
      return out;
    },
    /** metrics.definitions[.<metric>[.<key>]] -> the message next to that control. */
    setServerError(path, msg) {
      if (path === 'metrics.definitions') {
        editorErr.textContent = msg;
        editorErr.hidden = false;
        return rows[0] ? rows[0].metric : addBtn;
      }
      if (!path.startsWith('metrics.definitions.')) return null;
      const rest = path.slice('metrics.definitions.'.length);
      // Metric names are slugs (no dots): the first dot separates the key.
      const dot = rest.indexOf('.');
      const name = dot < 0 ? rest : rest.slice(0, dot);
      const key = dot < 0 ? 'metric' : rest.slice(dot + 1);
      const r = rows.find((x) => x.metric.value.trim() === name);
      if (!r) return null;
      return setCell(r, key, msg);
    },
  };
}

/**
 * createObjectiveEditor({objective, knownMetrics, metricLocked, lockReason, readOnly, onChange}) ->
 * {el, value(fallbackMetric), problems(), clearErrors(), setServerError(path, msg), setKnownMetrics(names)}
 * The objective's metric is the bandit's reward metric; each constraint is one bound (max or min).
 */
export function createObjectiveEditor({ objective, knownMetrics = [], metricLocked = false, lockReason = '', readOnly = false, onChange = () => {} }) {
  const obj = objective || null;
  const listId = nextId('known-metrics');
  const datalist = h('datalist', { id: listId });
  const setKnown = (names) => datalist.replaceChildren(...[...new Set(names)].filter(Boolean).map((n) => h('option', { value: n })));
  setKnown(knownMetrics);
  const metricId = nextId('obj');
  const metric = h('input', {
    type: 'text', id: metricId, value: obj ? obj.metric || '' : '', class: 'mono', placeholder: 'the reward metric',
    autocomplete: 'off', spellcheck: 'false', list: listId, readOnly: readOnly || metricLocked, 'data-testid': 'objective-metric',
  });
  const metricErr = h('p', { class: 'field-error', id: `${metricId}-error`, 'data-error-for': 'bandit.objective.metric', hidden: true });
  metric.setAttribute('aria-describedby', `${metricId}-hint ${metricId}-error`);
  const metricCell = h('div', { class: 'field', 'data-field': 'bandit.objective.metric' },
    h('label', { for: metricId }, 'Objective metric'),
    metric,
    h('p', { class: 'hint', id: `${metricId}-hint` }, metricLocked ? lockReason : 'The metric to make best; it becomes the reward metric. Defaults to the reward metric.'),
    metricErr);
  const objMetric = { el: metricCell, control: metric, err: metricErr };
  const list = h('div', { class: 'constraint-rows', 'data-testid': 'constraint-rows' });
  const empty = h('p', { class: 'muted', 'data-testid': 'no-constraints' }, 'No constraints: the bandit looks at the objective alone.');
  const addBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'add-constraint', hidden: readOnly }, '+ Add constraint');
  const limitNote = h('p', { class: 'hint', 'data-testid': 'constraint-limit', hidden: true }, `At most ${MAX_CONSTRAINTS} constraints.`);
  const editorErr = h('p', { class: 'field-error', 'data-error-for': 'bandit.objective.constraints', hidden: true });
  const objErr = h('p', { class: 'field-error', 'data-error-for': 'bandit.objective', hidden: true });
  const { rows, add: addRow, wire, clearRow, setCell } = rowList({
    list, renumber: sync, onChange, fallbackFocus: () => (addBtn.disabled ? metric : addBtn) });

  function sync() {
    rows.forEach((r, i) => {
      r.el.setAttribute('aria-label', `Constraint ${i + 1}`);
      r.remove.setAttribute('aria-label', `Remove constraint ${i + 1}`);
    });
    empty.hidden = rows.length > 0;
    const full = rows.length >= MAX_CONSTRAINTS;
    addBtn.disabled = full;
    limitNote.hidden = !full || readOnly;
  }

  function makeRow(c) {
    const ids = { m: nextId('con'), k: nextId('con'), b: nextId('con') };
    const kind = isNum(c.min) && !isNum(c.max) ? 'min' : 'max';
    const cm = h('input', { type: 'text', id: ids.m, value: c.metric || '', class: 'mono', placeholder: 'cost_usd', autocomplete: 'off', spellcheck: 'false', list: listId, readOnly, 'data-testid': 'constraint-metric' });
    const ck = h('select', { id: ids.k, disabled: readOnly, 'data-testid': 'constraint-kind' },
      h('option', { value: 'max', selected: kind === 'max' }, 'at most (max)'),
      h('option', { value: 'min', selected: kind === 'min' }, 'at least (min)'));
    const bound = isNum(c[kind]) ? c[kind] : null;
    const cb = h('input', { type: 'number', id: ids.b, step: 'any', value: bound === null ? '' : String(bound), readOnly, 'data-testid': 'constraint-bound' });
    const remove = h('button', { type: 'button', class: 'btn btn-ghost btn-small btn-danger', hidden: readOnly, 'data-testid': 'remove-constraint' }, 'Remove');
    const cell = (id, label, control, key) =>
      labelledCell(id, label, control, key, { errAttrs: { 'data-error-for': key } });
    const cells = { metric: cell(ids.m, 'Constrained metric', cm, 'metric'), kind: cell(ids.k, 'Bound', ck, 'kind'), bound: cell(ids.b, 'Value', cb, 'bound') };
    const rowErr = h('p', { class: 'field-error row-error', hidden: true });
    const el = h('div', { class: 'constraint-row', role: 'group', 'data-testid': 'constraint-row' },
      cells.metric.el, cells.kind.el, cells.bound.el, h('div', { class: 'vcell vcell-remove' }, remove), rowErr);
    const row = { el, metric: cm, kind: ck, bound: cb, cells, rowErr, remove };
    wire(row, [cm, ck, cb]);
    return row;
  }

  function rowError(r, msg) {
    r.rowErr.textContent = msg;
    r.rowErr.hidden = false;
    r.el.classList.add('has-error');
    return r.bound;
  }
  const add = (c) => addRow(makeRow(c));
  for (const c of (obj && obj.constraints) || []) add(c);
  sync();
  addBtn.addEventListener('click', () => {
    if (rows.length >= MAX_CONSTRAINTS) return;
    add({ metric: '' }).metric.focus();
    onChange();
  });
  metric.addEventListener('input', () => { showCellError(objMetric, ''); onChange(); });

  return {
    el: h('fieldset', { class: 'objective-editor', 'data-testid': 'objective-editor' },
      h('legend', null, 'Objective'),
      h('p', { class: 'muted' }, 'Pick the best variant on one metric among those that meet every constraint, e.g. the best quality at a cost of at most 1.5 and a p95 latency of at most 1500 ms. A constraint reads its metric\u2019s statistic (see the metric definitions).'),
      objErr,
      metricCell,
      h('h3', { class: 'sub-head' }, 'Constraints'),
      empty, list, editorErr,
      h('div', { class: 'variant-toolbar' }, addBtn, limitNote),
      datalist),
    setKnownMetrics: setKnown,
    clearErrors() {
      showCellError(objMetric, '');
      for (const r of rows) clearRow(r);
      editorErr.hidden = true;
      objErr.hidden = true;
    },
    problems() {
      const out = [];
      for (const r of rows) {
        if (!r.metric.value.trim()) out.push(setCell(r, 'metric', 'Enter the metric this constraint bounds (or remove it)'));
        if (r.bound.value.trim() === '') out.push(setCell(r, 'bound', 'Enter the bound'));
      }
      return out;
    },
    /** The objective to send, or null when neither a metric nor a constraint is given. */
    value(fallbackMetric) {
      const m = metric.value.trim();
      if (!m && !rows.length) return null;
      return {
        metric: m || fallbackMetric,
        constraints: rows.map((r) => ({ metric: r.metric.value.trim(), [r.kind.value]: numberFrom(r.bound) })),
      };
    },
    setServerError(path, msg) {
      if (path === 'bandit.objective') { objErr.textContent = msg; objErr.hidden = false; return metric; }
      if (path === 'bandit.objective.metric') { showCellError(objMetric, msg); return metric; }
      if (path === 'bandit.objective.constraints') { editorErr.textContent = msg; editorErr.hidden = false; return rows[0] ? rows[0].metric : addBtn; }
      const m = /^bandit\.objective\.constraints\[(\d+)\](?:\.(\w+))?$/.exec(path);
      if (!m) return null;
      const r = rows[Number(m[1])];
      if (!r) return null;
      const key = m[2];
      if (!key) return rowError(r, msg);
      if (key === 'metric') return setCell(r, 'metric', msg);
      if (key === 'max' || key === 'min') return setCell(r, 'bound', msg);
      return rowError(r, `${key}: ${msg}`);
    },
  };
}
