// Small editors for the settings page: targeting rules (attribute, op, value) and overrides
// (unit id -> variant key).

import { h, nextId } from './dom.js';

export const OPS = [
  ['eq', 'equals'], ['neq', 'does not equal'], ['in', 'is one of'], ['not_in', 'is none of'],
  ['gt', '>'], ['gte', '≥'], ['lt', '<'], ['lte', '≤'], ['contains', 'contains'], ['regex', 'matches regex'], ['exists', 'exists'],
];
const LIST_OPS = new Set(['in', 'not_in']);

function parseScalar(t) {
  const s = t.trim();
  if (/^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(s)) return Number(s);
  if (s === 'true') return true;
  if (s === 'false') return false;
  if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) {
    try { return JSON.parse(s); } catch { return s; }
  }
  return s;
}

function showScalar(v) {
  if (typeof v === 'string') {
    const looksTyped = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(v.trim()) || v === 'true' || v === 'false' || v !== v.trim() || v.includes(',');
    return looksTyped ? JSON.stringify(v) : v;
  }
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** The rule's value as the API wants it, from the text the person typed. */
export function parseRuleValue(op, text) {
  const t = String(text ?? '').trim();
  if (op === 'exists') return t !== 'false';
  if (op === 'regex') return String(text ?? '');
  if (LIST_OPS.has(op)) {
    if (t.startsWith('[')) {
      try { return JSON.parse(t); } catch { /* fall through to comma splitting */ }
    }
    return t === '' ? [] : t.split(',').map((x) => parseScalar(x)).filter((x) => x !== '');
  }
  if (t === '') return null;
  if (t.startsWith('[') || t.startsWith('{')) {
    try { return JSON.parse(t); } catch { /* keep as text */ }
  }
  return parseScalar(t);
}

export function showRuleValue(op, value) {
  if (op === 'exists') return value === false ? 'false' : 'true';
  if (op === 'regex') return typeof value === 'string' ? value : showScalar(value);
  if (LIST_OPS.has(op) && Array.isArray(value)) {
    return value.every((x) => typeof x !== 'object' || x === null) ? value.map(showScalar).join(', ') : JSON.stringify(value);
  }
  return showScalar(value);
}

function hintFor(op) {
  if (LIST_OPS.has(op)) return 'Comma-separated values, e.g. US, CA, 42 (or a JSON list).';
  if (op === 'exists') return 'true: the attribute must be present; false: it must be absent.';
  if (op === 'regex') return 'A regular expression (searched in the attribute).';
  if (['gt', 'gte', 'lt', 'lte'].includes(op)) return 'A number (or a string compared as text).';
  return 'Text or a number; quote numbers to compare as text, e.g. "42".';
}

/** createRulesEditor({rules, readOnly, onChange}) -> {el, value(), setServerErrors(fields)} */
export function createRulesEditor({ rules, readOnly = false, onChange = () => {} }) {
  const rows = [];
  const list = h('div', { class: 'rule-rows', 'data-testid': 'rule-rows' });
  const empty = h('p', { class: 'muted', 'data-testid': 'no-rules' }, 'No rules: every unit is eligible.');
  const addBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'add-rule', hidden: readOnly }, '+ Add rule');

  function makeRow(rule) {
    const ids = { a: nextId('rule'), o: nextId('rule'), v: nextId('rule') };
    const attribute = h('input', { type: 'text', id: ids.a, value: rule.attribute || '', class: 'mono', placeholder: 'country', autocomplete: 'off', readOnly, 'data-testid': 'rule-attribute' });
    const op = h('select', { id: ids.o, disabled: readOnly, 'data-testid': 'rule-op' },
      OPS.map(([v, label]) => h('option', { value: v, selected: (rule.op || 'eq') === v }, `${v} (${label})`)));
    const valueText = h('input', { type: 'text', id: ids.v, class: 'mono', autocomplete: 'off', readOnly, 'data-testid': 'rule-value' });
    const valueBool = h('select', { id: `${ids.v}-b`, disabled: readOnly, 'data-testid': 'rule-value-exists' },
      h('option', { value: 'true' }, 'true (present)'), h('option', { value: 'false' }, 'false (absent)'));
    const hint = h('p', { class: 'hint', id: `${ids.v}-hint` });
    const err = h('p', { class: 'field-error', id: `${ids.v}-error`, hidden: true });
    valueText.setAttribute('aria-describedby', `${ids.v}-hint ${ids.v}-error`);
    valueBool.setAttribute('aria-describedby', `${ids.v}-hint ${ids.v}-error`);
    const valueLabel = h('label', { for: ids.v }, 'Value');
    const remove = h('button', { type: 'button', class: 'btn btn-ghost btn-small btn-danger', hidden: readOnly, 'data-testid': 'remove-rule' }, 'Remove');
    const el = h('div', { class: 'rule-row', 'data-testid': 'rule-row', role: 'group', 'aria-label': 'Targeting rule' },
      h('div', { class: 'vcell' }, h('label', { for: ids.a }, 'Attribute'), attribute),
      h('div', { class: 'vcell' }, h('label', { for: ids.o }, 'Operator'), op),
      h('div', { class: 'vcell vcell-wide' }, valueLabel, valueText, valueBool, hint, err),
      h('div', { class: 'vcell vcell-remove' }, remove));
    const row = { el, attribute, op, valueText, valueBool, err, hint };
    const syncOp = () => {
      const isExists = op.value === 'exists';
      valueText.hidden = isExists;
      valueBool.hidden = !isExists;
      valueLabel.htmlFor = isExists ? valueBool.id : valueText.id;
      hint.textContent = hintFor(op.value);
    };
    if (rule.op === 'exists') valueBool.value = rule.value === false ? 'false' : 'true';
    else valueText.value = showRuleValue(rule.op || 'eq', rule.value);
    op.addEventListener('change', () => {
      // Carry the typed value across list and scalar ops where it makes sense.
      syncOp();
      setError(row, '');
      onChange();
    });
    for (const c of [attribute, valueText, valueBool]) c.addEventListener('input', () => { setError(row, ''); onChange(); });
    remove.addEventListener('click', () => {
      const i = rows.indexOf(row);
      rows.splice(i, 1);
      el.remove();
      empty.hidden = rows.length > 0;
      onChange();
      (rows[Math.min(i, rows.length - 1)]?.attribute || addBtn).focus();
    });
    syncOp();
    return row;
  }

  function setError(row, msg) {
    row.err.textContent = msg || '';
    row.err.hidden = !msg;
    row.el.classList.toggle('has-error', !!msg);
  }

  function add(rule) {
    const row = makeRow(rule);
    rows.push(row);
    list.appendChild(row.el);
    empty.hidden = true;
    return row;
  }
  for (const r of rules || []) add(r);
  empty.hidden = rows.length > 0;
  addBtn.addEventListener('click', () => { add({ attribute: '', op: 'eq', value: '' }).attribute.focus(); onChange(); });

  return {
    el: h('div', { class: 'rules-editor', 'data-testid': 'rules-editor' }, empty, list, h('div', { class: 'variant-toolbar' }, addBtn)),
    problems() {
      const out = [];
      for (const r of rows) {
        if (!r.attribute.value.trim()) { setError(r, 'Enter the attribute this rule checks'); out.push(r.attribute); }
      }
      return out;
    },
    value() {
      return rows.map((r) => ({
        attribute: r.attribute.value.trim(),
        op: r.op.value,
        value: parseRuleValue(r.op.value, r.op.value === 'exists' ? r.valueBool.value : r.valueText.value),
      }));
    },
    /** targeting[i].field -> message next to that rule. Returns the control to focus. */
    setServerError(path, msg) {
      const m = /^targeting\[(\d+)\](?:\.(\w+))?/.exec(path);
      if (!m) return null;
      const r = rows[Number(m[1])];
      if (!r) return null;
      setError(r, m[2] && m[2] !== 'value' ? `${m[2]}: ${msg}` : msg);
      return m[2] === 'attribute' ? r.attribute : m[2] === 'op' ? r.op : (r.op.value === 'exists' ? r.valueBool : r.valueText);
    },
  };
}

/** createOverridesEditor({overrides, variantKeys, readOnly, onChange}) */
export function createOverridesEditor({ overrides, variantKeys, readOnly = false, onChange = () => {} }) {
  const rows = [];
  let keys = [...variantKeys];
  const list = h('div', { class: 'override-rows', 'data-testid': 'override-rows' });
  const empty = h('p', { class: 'muted' }, 'No overrides: every unit is assigned by hashing.');
  const addBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'add-override', hidden: readOnly }, '+ Add override');

  function options(select, selected) {
    select.replaceChildren(...keys.map((k) => h('option', { value: k, selected: k === selected }, k)));
    if (selected && !keys.includes(selected)) select.appendChild(h('option', { value: selected, selected: true }, `${selected} (not a variant)`));
  }

  function makeRow(unit, variant) {
    const ids = { u: nextId('ovr'), v: nextId('ovr') };
    const unitInput = h('input', { type: 'text', id: ids.u, value: unit, class: 'mono', autocomplete: 'off', placeholder: 'user-123', readOnly, 'data-testid': 'override-unit' });
    const select = h('select', { id: ids.v, disabled: readOnly, 'data-testid': 'override-variant' });
    options(select, variant);
    const err = h('p', { class: 'field-error', hidden: true });
    const remove = h('button', { type: 'button', class: 'btn btn-ghost btn-small btn-danger', hidden: readOnly, 'data-testid': 'remove-override' }, 'Remove');
    const el = h('div', { class: 'override-row', 'data-testid': 'override-row', role: 'group', 'aria-label': 'Override' },
      h('div', { class: 'vcell' }, h('label', { for: ids.u }, 'Unit id'), unitInput),
      h('div', { class: 'vcell' }, h('label', { for: ids.v }, 'Always gets variant'), select),
      h('div', { class: 'vcell vcell-remove' }, remove),
      err);
    const row = { el, unitInput, select, err };
    for (const c of [unitInput, select]) c.addEventListener('input', () => { setError(row, ''); onChange(); });
    remove.addEventListener('click', () => {
      const i = rows.indexOf(row);
      rows.splice(i, 1);
      el.remove();
      empty.hidden = rows.length > 0;
      onChange();
      (rows[Math.min(i, rows.length - 1)]?.unitInput || addBtn).focus();
    });
    return row;
  }
  function setError(row, msg) {
    row.err.textContent = msg || '';
    row.err.hidden = !msg;
    row.el.classList.toggle('has-error', !!msg);
  }
  function add(unit, variant) {
    const row = makeRow(unit, variant);
    rows.push(row);
    list.appendChild(row.el);
    empty.hidden = true;
    return row;
  }
  for (const [u, v] of Object.entries(overrides || {})) add(u, v);
  empty.hidden = rows.length > 0;
  addBtn.addEventListener('click', () => { add('', keys[0]).unitInput.focus(); onChange(); });

  return {
    el: h('div', { class: 'overrides-editor', 'data-testid': 'overrides-editor' }, empty, list, h('div', { class: 'variant-toolbar' }, addBtn)),
    setVariantKeys(next) {
      keys = [...next];
      for (const r of rows) options(r.select, r.select.value);
    },
    problems() {
      const out = [];
      const seen = new Set();
      for (const r of rows) {
        const u = r.unitInput.value.trim();
        if (!u) { setError(r, 'Enter a unit id'); out.push(r.unitInput); } else if (seen.has(u)) { setError(r, `Unit "${u}" is listed twice`); out.push(r.unitInput); }
        seen.add(u);
      }
      return out;
    },
    value() {
      const out = {};
      for (const r of rows) out[r.unitInput.value.trim()] = r.select.value;
      return out;
    },
    setServerError(path, msg) {
      if (!path.startsWith('overrides.')) return null;
      const unit = path.slice('overrides.'.length);
      const r = rows.find((x) => x.unitInput.value.trim() === unit);
      if (!r) return null;
      setError(r, msg);
      return r.select;
    },
  };
}
