// What the forms' row editors share (metric definitions, a bandit's constraints, guardrails):
// a labelled cell with an error line of its own, and a list of rows, each with a Remove button,
// whose field errors go next to the control they name.

import { h } from './dom.js';

/**
 * A labelled control with its hint and its error line -> {el, control, err}. `describedBy` are
 * more ids the control is described by; `errAttrs` more attributes of the error line.
 */
export function labelledCell(id, label, control, key, { hint = null, describedBy = [], errAttrs = {} } = {}) {
  const err = h('p', { class: 'field-error', id: `${id}-error`, hidden: true, ...errAttrs });
  control.setAttribute('aria-describedby',
    [...describedBy, hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(' '));
  const el = h('div', { class: 'vcell', 'data-key': key }, h('label', { for: id }, label), control,
    hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null, err);
  return { el, control, err };
}

/** Show a cell's error (msg) or clear it (''). A cell is {el, control, err}. */
export function showCellError(cell, msg) {
  cell.err.textContent = msg || '';
  cell.err.hidden = !msg;
  cell.el.classList.toggle('has-error', !!msg);
  if (msg) cell.control.setAttribute('aria-invalid', 'true'); else cell.control.removeAttribute('aria-invalid');
}

/**
 * The rows of one editor. A row is {el, remove, cells, rowErr, metric, ...}: `cells` by key,
 * `rowErr` the line for an error no cell names, `metric` the control that takes the focus.
 * `renumber()` relabels the rows after a change; `fallbackFocus()` is what takes the focus
 * when the last row goes.
 * -> {rows, add(row), wire(row, controls, onEdit), clearRow(row), setCell(row, key, msg)}
 */
export function rowList({ list, renumber, onChange, fallbackFocus }) {
  const rows = [];

  function clearRow(r) {
    for (const c of Object.values(r.cells)) showCellError(c, '');
    r.rowErr.hidden = true;
    r.rowErr.textContent = '';
    r.el.classList.remove('has-error');
  }

  /** The message next to the cell `key` names (or on the row's own line); -> the control to focus. */
  function setCell(r, key, msg) {
    const c = r.cells[key];
    if (c) showCellError(c, msg);
    else { r.rowErr.textContent = `${key}: ${msg}`; r.rowErr.hidden = false; }
    r.el.classList.add('has-error');
    return c ? c.control : r.metric;
  }

  /** Editing a control clears the row's errors (then onEdit(row)); Remove takes the row out. */
  function wire(row, controls, onEdit = () => {}) {
    for (const c of controls) {
      c.addEventListener(c.tagName === 'SELECT' ? 'change' : 'input', () => { clearRow(row); onEdit(row); onChange(); });
    }
    row.remove.addEventListener('click', () => {
      const i = rows.indexOf(row);
      rows.splice(i, 1);
      row.el.remove();
      renumber();
      onChange();
      (rows[Math.min(i, rows.length - 1)]?.metric || fallbackFocus()).focus();
    });
  }

  function add(row) {
    rows.push(row);
    list.appendChild(row.el);
    renumber();
    return row;
  }

  return { rows, add, wire, clearRow, setCell };
}
