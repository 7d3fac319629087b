// The variants editor shared by the new-experiment and settings screens: rows of key, name,
// weight, config (validated JSON) and which is the control; a live sum of the weights; an
// "Equal weights" helper. Keys and the row count can be locked (after launch) with the reason,
// and the weights too (a launched fixed-split experiment): the server refuses those changes, so
// the inputs must not invite them.

import { h, lockIcon, nextId } from './dom.js';

const SLUG = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const WEIGHT_TOLERANCE = 1e-6;

function suggestKey(existing) {
  for (let i = 0; i < 26; i += 1) {
    const k = `model_${String.fromCharCode(97 + i)}`;
    if (!existing.includes(k)) return k;
  }
  return `model_${existing.length + 1}`;
}

function parseWeight(raw) {
  const t = String(raw ?? '').trim();
  if (t === '') return null;
  const v = Number(t);
  return Number.isFinite(v) ? v : NaN;
}

function roundSum(x) {
  return Number(x.toFixed(6));
}

/**
 * createVariantsEditor({variants, locked, weightsLocked, lockReason, weightLabel, readOnly, onChange})
 * -> {el, value(), errors(), sumOk(), sum(), setServerErrors(fields), clearServerErrors()}
 */
export function createVariantsEditor({
  variants, locked = false, weightsLocked = false, lockReason = '', weightLabel = 'Weight', readOnly = false, onChange = () => {},
}) {
  const group = nextId('control');
  const rows = [];
  const list = h('div', { class: 'variant-rows', 'data-testid': 'variant-rows' });
  const sumEl = h('p', { class: 'weight-sum', 'data-testid': 'weight-sum', id: nextId('weight-sum'), 'aria-live': 'polite' });
  const sectionError = h('p', { class: 'field-error', 'data-error-for': 'variants', hidden: true });
  const addBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'add-variant' }, '+ Add variant');
  const equalBtn = h('button', { type: 'button', class: 'btn', 'data-testid': 'equal-weights' }, 'Equal weights');

  function makeRow(v) {
    const row = { touched: new Set() };
    const idx = () => rows.indexOf(row);
    const key = h('input', {
      type: 'text', value: v.key ?? '', class: 'mono', autocomplete: 'off', spellcheck: 'false',
      name: 'variant-key', 'data-testid': 'variant-key', readOnly: locked || readOnly, required: true,
      pattern: '[a-z0-9][a-z0-9_\\-]{0,63}',
    });
    const name = h('input', { type: 'text', value: v.name ?? '', name: 'variant-name', 'data-testid': 'variant-name', readOnly, placeholder: 'optional' });
    const weight = h('input', {
      type: 'number', step: 'any', min: '0', max: '1', inputmode: 'decimal',
      value: v.weight == null ? '' : String(v.weight), name: 'variant-weight', 'data-testid': 'variant-weight', readOnly: readOnly || weightsLocked, required: true,
    });
    const config = h('textarea', {
      rows: 2, class: 'mono', spellcheck: 'false', name: 'variant-config', 'data-testid': 'variant-config', readOnly,
      placeholder: '{"model": "ranker-v2"}',
    });
    config.value = v.config === undefined || v.config === null ? '' : JSON.stringify(v.config, null, 2);
    config.rows = Math.min(8, Math.max(2, config.value.split('\n').length));
    const control = h('input', { type: 'radio', name: group, checked: !!v.is_control, disabled: locked || readOnly, 'data-testid': 'variant-control' });
    const remove = h('button', {
      type: 'button', class: 'btn btn-ghost btn-small btn-danger', 'data-testid': 'remove-variant', hidden: locked || readOnly,
    }, 'Remove');
    const errs = {};
    const cell = (label, control_, path, cls) => {
      const id = nextId('v');
      control_.id = id;
      const err = h('p', { class: 'field-error', id: `${id}-error`, hidden: true });
      control_.setAttribute('aria-describedby', `${id}-error`);
      errs[path] = { err, control: control_ };
      return h('div', { class: `vcell vcell-${path}${cls ? ` ${cls}` : ''}` }, h('label', { for: id }, label), control_, err);
    };
    const controlId = nextId('v');
    control.id = controlId;
    const el = h('div', { class: 'variant-row', 'data-testid': 'variant-row', role: 'group' },
      h('div', { class: 'vcell vcell-control' }, control, h('label', { for: controlId }, 'Control')),
      cell('Key', key, 'key'),
      cell('Name', name, 'name'),
      cell(weightLabel, weight, 'weight'),
      cell('Config (JSON)', config, 'config', 'vcell-wide'),
      h('div', { class: 'vcell vcell-remove' }, remove));
    Object.assign(row, { el, key, name, weight, config, control, remove, errs, server: {} });
    // A server error on a field clears as soon as the person edits that field.
    const touch = (path, edited = true) => () => {
      row.touched.add(path);
      if (edited) delete row.server[path];
      refresh();
    };
    key.addEventListener('input', touch('key'));
    key.addEventListener('blur', touch('key', false));
    name.addEventListener('input', () => { delete row.server.name; refresh(); });
    weight.addEventListener('input', touch('weight'));
    weight.addEventListener('blur', touch('weight', false));
    config.addEventListener('input', touch('config'));
    control.addEventListener('change', () => refresh());
    remove.addEventListener('click', () => {
      const i = idx();
      const wasControl = control.checked;
      rows.splice(i, 1);
      el.remove();
      if (wasControl && rows.length) rows[0].control.checked = true;
      refresh();
      const next = rows[Math.min(i, rows.length - 1)];
      if (next) next.key.focus(); else addBtn.focus();
    });
    return row;
  }

  function addRow(v) {
    const row = makeRow(v);
    rows.push(row);
    list.appendChild(row.el);
    return row;
  }

  for (const v of variants) addRow(v);
  if (rows.length && !rows.some((r) => r.control.checked)) rows[0].control.checked = true;

  addBtn.addEventListener('click', () => {
    const row = addRow({ key: suggestKey(rows.map((r) => r.key.value.trim())), weight: null, config: null });
    refresh();
    row.weight.focus();
  });
  equalBtn.addEventListener('click', () => {
    const n = rows.length;
    if (!n) return;
    const each = Math.floor(10000 / n) / 10000;
    rows.forEach((r, i) => {
      const w = i === n - 1 ? roundSum(1 - each * (n - 1)) : each;
      r.weight.value = String(w);
      r.touched.add('weight');
    });
    refresh();
  });

  function rowProblems(r, keyCounts) {
    const p = {};
    const k = r.key.value.trim();
    if (!k) p.key = 'Enter a key, e.g. model_a';
    else if (!SLUG.test(k)) p.key = 'Lower-case letters, digits, _ and - only; start with a letter or digit';
    else if (keyCounts.get(k) > 1) p.key = `Duplicate key "${k}"`;
    const w = parseWeight(r.weight.value);
    if (w === null) p.weight = 'Enter a weight greater than 0';
    else if (Number.isNaN(w)) p.weight = 'Not a number';
    else if (w <= 0 || w > 1) p.weight = 'Weight must be greater than 0 and at most 1';
    const c = r.config.value.trim();
    if (c) {
      try { JSON.parse(c); } catch (e) { p.config = `Not valid JSON: ${e.message}`; }
    }
    return p;
  }

  function currentSum() {
    return rows.reduce((acc, r) => {
      const w = parseWeight(r.weight.value);
      return acc + (Number.isFinite(w) ? w : 0);
    }, 0);
  }

  let showAll = false;
  function refresh() {
    const counts = new Map();
    for (const r of rows) { const k = r.key.value.trim(); counts.set(k, (counts.get(k) || 0) + 1); }
    rows.forEach((r, i) => {
      // Every row has the same visible labels; the accessible names say which variant.
      const n = `Variant ${i + 1}`;
      r.el.setAttribute('aria-label', n);
      r.key.setAttribute('aria-label', `${n} key`);
      r.name.setAttribute('aria-label', `${n} name`);
      r.weight.setAttribute('aria-label', `${n} ${weightLabel.toLowerCase()}`);
      r.config.setAttribute('aria-label', `${n} config (JSON)`);
      r.control.setAttribute('aria-label', `${n} is the control`);
      r.remove.setAttribute('aria-label', `Remove variant ${i + 1}`);
    });
    for (const r of rows) {
      const p = rowProblems(r, counts);
      for (const path of ['key', 'name', 'weight', 'config']) {
        const local = (showAll || r.touched.has(path)) ? p[path] : null;
        const msg = local || r.server[path] || null;
        const { err, control } = r.errs[path];
        err.textContent = msg || '';
        err.hidden = !msg;
        if (msg) control.setAttribute('aria-invalid', 'true'); else control.removeAttribute('aria-invalid');
        control.closest('.vcell').classList.toggle('has-error', !!msg);
      }
    }
    const sum = currentSum();
    const ok = Math.abs(sum - 1) <= WEIGHT_TOLERANCE;
    sumEl.dataset.state = ok ? 'ok' : 'error';
    sumEl.dataset.sum = String(roundSum(sum));
    sumEl.replaceChildren(
      h('span', { class: 'sum-label' }, 'Sum of weights: '),
      h('strong', { 'data-testid': 'weight-sum-value' }, String(roundSum(sum))),
      ok ? h('span', { class: 'sum-ok' }, ' ✓ sums to 1.0')
        : h('span', { class: 'sum-bad', 'data-testid': 'weight-sum-error' }, ` — weights must sum to 1.0 (off by ${roundSum(sum - 1) > 0 ? '+' : ''}${roundSum(sum - 1)})`));
    const tooFew = rows.length < 2;
    addBtn.disabled = locked || readOnly || rows.length >= 20;
    equalBtn.disabled = weightsLocked || readOnly;
    for (const r of rows) r.remove.disabled = rows.length <= 2;
    const sectionMsg = tooFew ? 'An experiment needs at least 2 variants' : (api.serverSection || '');
    sectionError.textContent = sectionMsg;
    sectionError.hidden = !sectionMsg;
    onChange();
  }

  const api = {
    el: null,
    serverSection: '',
    sum: () => roundSum(currentSum()),
    sumOk: () => Math.abs(currentSum() - 1) <= WEIGHT_TOLERANCE,
    sumElement: sumEl,
    /** Client-side problems: [{row, path, message, control}] (shows them all from now on). */
    problems({ reveal = false } = {}) {
      if (reveal) { showAll = true; refresh(); }
      const counts = new Map();
      for (const r of rows) { const k = r.key.value.trim(); counts.set(k, (counts.get(k) || 0) + 1); }
      const out = [];
      rows.forEach((r, i) => {
        const p = rowProblems(r, counts);
        for (const [path, message] of Object.entries(p)) out.push({ row: i, path, message, control: r.errs[path].control });
      });
      if (rows.length < 2) out.push({ row: -1, path: 'variants', message: 'An experiment needs at least 2 variants', control: addBtn });
      return out;
    },
    value() {
      return rows.map((r) => {
        const c = r.config.value.trim();
        let config = null;
        if (c) { try { config = JSON.parse(c); } catch { config = c; } }
        const out = { key: r.key.value.trim(), weight: parseWeight(r.weight.value), config, is_control: r.control.checked };
        const nm = r.name.value.trim();
        if (nm) out.name = nm;
        return out;
      });
    },
    /** Show server errors: paths like variants[1].weight (and 'variants' for the section). */
    setServerErrors(fields) {
      api.serverSection = '';
      for (const r of rows) r.server = {};
      let first = null;
      for (const [path, msg] of Object.entries(fields || {})) {
        if (path === 'variants') { api.serverSection = msg; first = first || addBtn; continue; }
        const m = /^variants\[(\d+)\]\.?(\w+)?/.exec(path);
        if (!m) continue;
        const r = rows[Number(m[1])];
        if (!r) { api.serverSection = `${path}: ${msg}`; continue; }
        const p = m[2] && r.errs[m[2]] ? m[2] : (m[2] === 'is_control' ? null : 'key');
        if (p) { r.server[p] = msg; first = first || r.errs[p].control; } else { api.serverSection = `Variant ${Number(m[1]) + 1}: ${msg}`; }
      }
      refresh();
      return first;
    },
    clearServerErrors() {
      api.serverSection = '';
      for (const r of rows) r.server = {};
      refresh();
    },
  };

  const toolbar = h('div', { class: 'variant-toolbar' }, addBtn, equalBtn, sumEl);
  api.el = h('div', { class: 'variants-editor', 'data-testid': 'variants-editor' },
    locked ? h('p', { class: 'alert alert-info lock-reason', 'data-testid': 'variants-locked-reason' }, lockIcon(), ' ', lockReason) : null,
    list,
    readOnly ? sumEl : toolbar,
    sectionError);
  if (readOnly || weightsLocked) equalBtn.hidden = true;
  refresh();
  return api;
}
