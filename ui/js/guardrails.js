// Guardrails in the UI: the banner of a tripped guardrail (results and detail pages), the card
// with each guardrail's state and interval, a short label for the detail page, and the editor
// of the new-experiment and settings screens (metric, tolerated harm, action per row; server
// errors at metrics.guardrails[<i>].<key> next to the control they name).

import { alertBox, h, nextId } from './dom.js';
import { int, interval, signedPct, time } from './format.js';
import { labelledCell, rowList } from './roweditor.js';

export const ACTIONS = [
  ['alert', 'Alert only'],
  ['pause', 'Pause the experiment'],
  ['rollback', 'Roll back to control (stop)'],
];
const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

/** A stored guardrail in its object form (an older experiment may hold a bare metric name). */
export function readGuardrail(g) {
  if (typeof g === 'string') return { metric: g, margin: 0, action: 'alert' };
  return { metric: g.metric, margin: isNum(g.margin) ? g.margin : 0, action: g.action || 'alert' };
}

/** Every guardrail of an experiment's `metrics`, as objects. */
export function readGuardrails(metrics) {
  return ((metrics && metrics.guardrails) || []).map(readGuardrail);
}

/** "errors (pause)", "latency_ms (rollback above +20%)", "cost_usd (alert)". */
export function guardrailLabel(g) {
  const r = readGuardrail(g);
  return r.margin ? `${r.metric} (${r.action} above ${signedPct(r.margin, 0)})` : `${r.metric} (${r.action})`;
}

/** The alert to show at the top of a page when a guardrail tripped, else null. */
export function guardrailBanner(snap) {
  const tripped = ((snap && snap.guardrails) || []).filter((g) => g.status === 'tripped');
  if (!tripped.length) return null;
  const acted = tripped.some((g) => g.action !== 'alert');
  return h('div', { 'data-testid': 'guardrail-banner' },
    alertBox(acted ? 'error' : 'warning',
      ...tripped.map((g) => h('p', { 'data-testid': 'guardrail-tripped', 'data-metric': g.metric, 'data-treatment': g.treatment },
        h('strong', null, g.message || `Guardrail ${g.metric} of ${g.treatment} tripped`))),
      acted ? h('p', null, 'Fix or drop the model, then resume with Launch (a rolled-back experiment is stopped for good). The trip stays recorded; changing or removing the guardrail arms it again.') : null));
}

/** A card with every guardrail's state per treatment: harm now, its anytime interval, units. */
export function guardrailCard(snap) {
  const rows = (snap && snap.guardrails) || [];
  if (!rows.length) return null;
  const word = (g) => (g.direction === 'decrease' ? 'rise' : 'fall');
  const body = rows.map((g) => h('tr', { 'data-testid': 'guardrail-row', 'data-metric': g.metric, 'data-treatment': g.treatment, 'data-status': g.status },
    h('th', { scope: 'row', class: 'mono' }, g.metric, g.stat && g.stat !== 'mean' ? ` (${g.stat})` : ''),
    h('td', null, g.treatment),
    h('td', null, g.action, g.margin ? ` above ${signedPct(g.margin, 0)}` : ''),
    h('td', { class: 'num' }, g.harm === null || g.harm === undefined ? '—' : `${signedPct(g.harm)} ${word(g)}`),
    h('td', { class: 'num' }, interval(g.interval, (x) => signedPct(x))),
    h('td', { class: 'num' }, `${int(g.n && g.n.control)} / ${int(g.n && g.n.treatment)}`),
    h('td', null, g.status === 'tripped'
      ? h('strong', null, `tripped at ${time(g.tripped_at)}`)
      : (g.ready ? 'ok' : `ok (waiting for ${int(g.min_units)} per arm)`))));
  return h('section', { class: 'card', 'aria-labelledby': 'sec-guardrails', 'data-testid': 'guardrails' },
    h('h2', { id: 'sec-guardrails' }, 'Guardrails'),
    h('p', { class: 'hint' }, 'Harm: the treatment\u2019s relative change in the metric\u2019s bad direction against control. A guardrail trips when the low end of its anytime-valid interval is above the margin, once both arms have enough data; checking at every recompute does not add false alarms.'),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'table' },
        h('thead', null, h('tr', null, ['Metric', 'Treatment', 'Action', 'Harm now', 'Interval', 'Units (control / treatment)', 'State'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, body))));
}

/** What each action does when its guardrail trips: one line each, shown under the editor. */
export const ACTION_HELP = {
  alert: 'records the trip (results page, audit log, webhook); traffic goes on as before.',
  pause: 'also pauses the experiment: it serves no variant until someone resumes it with Launch.',
  rollback: 'also stops the experiment with the control as the winner: everyone in it gets the control, for good.',
};

/** A stored margin (a fraction: 0.2) as the editor shows it (a percentage: "20"). */
const pctText = (margin) => String(Math.round((isNum(margin) ? margin : 0) * 1e6) / 1e4);

/**
 * The guardrail editor of the new-experiment and settings screens: one row per guardrail
 * (metric, tolerated harm in %, action, remove) and "Add guardrail". The API takes the margin
 * as a fraction (0.2 = 20%); the editor shows and reads a percentage and converts. A bare
 * metric name loads as margin 0, action alert; value() always gives the object form.
 * `definitions()` (optional) returns the metric definitions currently in the form, so a row can
 * say when its metric has no direction yet; `knownMetrics` fill the metric inputs' suggestions.
 * -> {el, value(), names(), problems(), clearErrors(), setServerError(path, msg), refresh(), setKnownMetrics(names)}
 */
export function createGuardrailsEditor({ metrics, readOnly = false, onChange = () => {}, definitions = () => ({}), knownMetrics = [] }) {
  const listId = nextId('guard-metrics');
  const datalist = h('datalist', { id: listId });
  const setKnown = (names) => datalist.replaceChildren(...[...new Set(names)].filter(Boolean).sort().map((n) => h('option', { value: n })));
  setKnown(knownMetrics);
  const legendId = nextId('guard-actions');
  const legend = h('ul', { class: 'hint', id: legendId, style: { margin: '0 0 .6rem' }, 'data-testid': 'guardrail-actions-help' },
    ACTIONS.map(([v, label]) => h('li', null, h('strong', null, `${label}: `), ACTION_HELP[v])));
  const list = h('div', { class: 'def-rows', 'data-testid': 'guardrail-rows' });
  const empty = h('p', { class: 'muted', 'data-testid': 'no-guardrails' }, 'No guardrails.');
  const addBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'add-guardrail', hidden: readOnly }, '+ Add guardrail');
  const editorErr = h('p', { class: 'field-error', 'data-error-for': 'metrics.guardrails', hidden: true });
  const { rows, add: addRow, wire, clearRow, setCell } = rowList({ list, renumber, onChange, fallbackFocus: () => addBtn });

  function renumber() {
    rows.forEach((r, i) => {
      r.el.setAttribute('aria-label', `Guardrail ${i + 1}`);
      r.remove.setAttribute('aria-label', `Remove guardrail ${i + 1}`);
    });
    empty.hidden = rows.length > 0;
  }

  function hintFor(row) {
    const n = row.metric.value.trim();
    const d = n ? (definitions() || {})[n] : null;
    row.dirHint.hidden = !n || !!(d && d.direction);
    row.dirHint.textContent = n ? `${n} has no metric definition, so higher is read as better and a fall is the harm. For errors, latency or cost, define it below with "Lower is better".` : '';
  }

  function makeRow(g) {
    const ids = { m: nextId('gr'), g: nextId('gr'), a: nextId('gr') };
    const shown = pctText(g.margin);
    const metric = h('input', { type: 'text', id: ids.m, value: g.metric || '', class: 'mono', placeholder: 'errors', autocomplete: 'off', spellcheck: 'false', list: listId, readOnly, 'data-testid': 'guardrail-metric' });
    const margin = h('input', { type: 'number', id: ids.g, step: 'any', min: 0, inputmode: 'decimal', value: shown, readOnly, 'data-testid': 'guardrail-margin' });
    const action = h('select', { id: ids.a, disabled: readOnly, 'data-testid': 'guardrail-action' },
      ACTIONS.map(([v, label]) => h('option', { value: v, selected: (g.action || 'alert') === v }, label)));
    const remove = h('button', { type: 'button', class: 'btn btn-ghost btn-small btn-danger', hidden: readOnly, 'data-testid': 'remove-guardrail' }, 'Remove');
    const cell = (id, label, control, key, hint = null, describedBy = []) =>
      labelledCell(id, label, control, key, { hint, describedBy, errAttrs: { 'data-testid': `guardrail-${key}-error` } });
    const cells = {
      metric: cell(ids.m, 'Metric', metric, 'metric'),
      margin: cell(ids.g, 'Tolerated harm (%)', margin, 'margin', 'Trips only when the harm is surely above this; 0: any sure harm.'),
      action: cell(ids.a, 'When it trips', action, 'action', null, [legendId]),
    };
    const dirHint = h('p', { class: 'hint', style: { gridColumn: '1 / -1' }, 'data-testid': 'guardrail-direction-hint', hidden: true });
    const rowErr = h('p', { class: 'field-error row-error', hidden: true });
    const el = h('div', { class: 'constraint-row', role: 'group', 'data-testid': 'guardrail-row-editor' },
      cells.metric.el, cells.margin.el, cells.action.el, h('div', { class: 'vcell vcell-remove' }, remove), dirHint, rowErr);
    // An untouched margin is sent back exactly as stored (no round trip through the percentage).
    const row = { el, metric, margin, action, cells, rowErr, remove, dirHint, stored: { text: shown, margin: isNum(g.margin) ? g.margin : 0 } };
    wire(row, [metric, margin, action], hintFor);
    hintFor(row);
    return row;
  }

  /** The margin to send: the stored one when untouched, else the percentage / 100. */
  function marginOf(r) {
    const t = r.margin.value.trim();
    if (t === r.stored.text) return r.stored.margin;
    if (t === '') return 0;
    const v = Number(t);
    return Number.isFinite(v) ? Math.round(v * 1e4) / 1e6 : t;
  }

  const add = (g) => addRow(makeRow(g));
  for (const g of readGuardrails(metrics)) add(g);
  renumber();
  addBtn.addEventListener('click', () => { add({ metric: '', margin: 0, action: 'alert' }).metric.focus(); onChange(); });

  return {
    el: h('div', { class: 'guardrails-editor', 'data-testid': 'guardrails-editor' },
      legend, empty, list, editorErr, datalist, h('div', { class: 'variant-toolbar' }, addBtn)),
    names() { return rows.map((r) => r.metric.value.trim()).filter(Boolean); },
    /** Re-read the definitions (call when they change) to update the direction hints. */
    refresh() { for (const r of rows) hintFor(r); },
    /** The metrics the form names (primary, definitions): suggestions for the metric inputs. */
    setKnownMetrics(names) { setKnown(names); },
    clearErrors() {
      for (const r of rows) clearRow(r);
      editorErr.hidden = true;
    },
    /**
     * Client-side checks: a metric on every row, none twice, a margin that is a number. The
     * margin's bounds are the server's to say (it answers next to the field).
     */
    problems() {
      const out = [];
      const seen = new Set();
      for (const r of rows) {
        const n = r.metric.value.trim();
        if (!n) out.push(setCell(r, 'metric', 'Enter the metric this guardrail watches (or remove the row)'));
        else if (seen.has(n)) out.push(setCell(r, 'metric', `"${n}" has two guardrails`));
        seen.add(n);
        if (r.margin.validity && r.margin.validity.badInput) out.push(setCell(r, 'margin', 'Enter a number: the tolerated harm in percent (20 for 20%)'));
      }
      return out;
    },
    value() {
      return rows.filter((r) => r.metric.value.trim()).map((r) => ({ metric: r.metric.value.trim(), margin: marginOf(r), action: r.action.value }));
    },
    /** metrics.guardrails[<i>].<key> (or metrics.guardrails) -> the message next to that control. */
    setServerError(path, msg) {
      const m = /^metrics\.guardrails(?:\[(\d+)\](?:\.(\w+))?)?$/.exec(path);
      if (!m) return null;
      if (m[1] === undefined) { editorErr.textContent = msg; editorErr.hidden = false; return rows[0]?.metric || addBtn; }
      const named = rows.filter((r) => r.metric.value.trim());
      const r = named[Number(m[1])];
      if (!r) { editorErr.textContent = `Guardrail ${Number(m[1]) + 1}: ${msg}`; editorErr.hidden = false; return addBtn; }
      // The server speaks of the margin as a fraction and this field is a percentage: a bound
      // it names ("less than or equal to 1000") gets the conversion.
      const text = m[2] === 'margin' && /[1-9]/.test(msg) ? `${msg} (as a fraction: 0.2 = 20%)` : msg;
      return setCell(r, m[2] || 'metric', text);
    },
  };
}
