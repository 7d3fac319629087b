// Tiny DOM helpers: h() builds HTML elements, s() builds SVG elements. Text is always set as
// text (never parsed as HTML), so values from the server cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';
const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'readOnly', 'multiple', 'indeterminate']);

function setAttrs(el, attrs, svg) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') {
      if (svg) el.setAttribute('class', v); else el.className = v;
    } else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) if (dv != null) el.dataset[dk] = dv;
    } else if (k === 'style' && typeof v === 'object') {
      Object.assign(el.style, v);
    } else if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2).toLowerCase(), v);
    } else if (!svg && PROPS.has(k)) {
      el[k] = v;
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
}

function addChildren(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) addChildren(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** h('div', {class: 'x', onclick: fn}, 'text', child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs, false);
  addChildren(el, children);
  return el;
}

/** s('rect', {x: 0, width: 10}) — an SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs, true);
  addChildren(el, children);
  return el;
}

/** Replace everything inside el. */
export function mount(el, ...children) {
  el.replaceChildren();
  addChildren(el, children);
  return el;
}

let uid = 0;
/** A unique id for label/for pairs. */
export function nextId(prefix = 'f') { uid += 1; return `${prefix}-${uid}`; }

/** A labelled form field: label, control, hint and an inline error slot. */
export function field({ label, control, hint, error, required, path, className }) {
  const id = control.id || nextId('field');
  control.id = id;
  const errId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  const describedBy = [hintId, errId].filter(Boolean).join(' ');
  control.setAttribute('aria-describedby', describedBy);
  if (required) control.setAttribute('aria-required', 'true');
  const err = h('p', { class: 'field-error', id: errId, 'data-error-for': path || id, hidden: !error }, error || '');
  const wrap = h('div', { class: `field${className ? ` ${className}` : ''}`, 'data-field': path || id },
    h('label', { for: id, class: required ? 'required' : null }, label),
    control,
    hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
    err);
  return wrap;
}

/** Show (or clear with '') the inline error of a field wrapper made by field(). */
export function setFieldError(wrap, message) {
  if (!wrap) return;
  const err = wrap.querySelector(':scope > .field-error');
  const control = wrap.querySelector(':scope > input, :scope > select, :scope > textarea');
  if (err) {
    err.textContent = message || '';
    err.hidden = !message;
  }
  wrap.classList.toggle('has-error', !!message);
  if (control) {
    if (message) control.setAttribute('aria-invalid', 'true');
    else control.removeAttribute('aria-invalid');
  }
}

/** An alert box (role=alert for errors, status otherwise). */
export function alertBox(kind, ...children) {
  return h('div', { class: `alert alert-${kind}`, role: kind === 'error' || kind === 'warning' ? 'alert' : 'status' }, ...children);
}

export function statusBadge(status) {
  const st = String(status || '').toLowerCase();
  return h('span', { class: `badge badge-${st}`, 'data-testid': 'status-badge', 'data-status': st }, st.toUpperCase());
}

/** Set the document title and the screen heading that keyboard users land on. */
export function setTitle(text) {
  document.title = text ? `${text} · Litmus` : 'Litmus';
}

/** A small padlock icon (inline SVG: no emoji font needed). */
export function lockIcon() {
  return s('svg', { class: 'icon-lock', viewBox: '0 0 16 16', width: 14, height: 14, 'aria-hidden': 'true', focusable: 'false' },
    s('path', { d: 'M4.5 7V5a3.5 3.5 0 0 1 7 0v2', fill: 'none', stroke: 'currentColor', 'stroke-width': 1.6 }),
    s('rect', { x: 3, y: 7, width: 10, height: 7.5, rx: 1.5, fill: 'currentColor' }));
}
