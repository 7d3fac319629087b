// Small hand-written SVG charts: horizontal bars (updated in place so they move), line charts
// over time, and a forest-plot interval. No library.

import { h, s } from './dom.js';

export const PALETTE = ['#4f46e5', '#0d9488', '#d97706', '#db2777', '#2563eb', '#65a30d', '#9333ea', '#dc2626', '#0891b2', '#78716c'];

/** A stable colour per variant: its position in the experiment's variant list. */
export function colorFor(keys, key) {
  const i = keys.indexOf(key);
  return PALETTE[(i < 0 ? keys.length : i) % PALETTE.length];
}

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

/** Call draw(width) now and whenever the container's width changes; {redraw()} draws again. */
export function responsive(container, draw) {
  let last = -1;
  const run = () => {
    const w = Math.max(240, Math.floor(container.clientWidth || 600));
    if (w !== last) { last = w; draw(w); }
  };
  run();
  if (typeof ResizeObserver !== 'undefined') {
    const ro = new ResizeObserver(() => run());
    ro.observe(container);
  }
  return { redraw: () => { last = -1; run(); } };
}

/**
 * Horizontal bars. createBarChart(container, {ariaLabel}) -> {update(items)} where items are
 * [{key, label, value, text, color, marker}] (marker: an expected value drawn as a tick).
 * Bars are kept between updates and their width is animated, so they visibly move.
 */
export function createBarChart(container, { ariaLabel = 'Bar chart', testid } = {}) {
  const rowH = 34;
  const svg = s('svg', { class: 'chart bar-chart', role: 'img', 'aria-label': ariaLabel, 'data-testid': testid });
  container.appendChild(svg);
  const rows = new Map();
  let items = [];
  let width = 600;

  function layout() {
    const labelW = Math.min(150, Math.round(width * 0.26));
    const textW = Math.min(190, Math.round(width * 0.34));
    const barW = Math.max(40, width - labelW - textW - 16);
    return { labelW, textW, barW };
  }

  function draw() {
    const { labelW, barW } = layout();
    const height = Math.max(1, items.length) * rowH + 6;
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('width', String(width));
    svg.setAttribute('height', String(height));
    const max = Math.max(1e-12, ...items.map((d) => (isNum(d.value) ? d.value : 0)), ...items.map((d) => (isNum(d.marker) ? d.marker : 0)));
    const seen = new Set();
    items.forEach((d, i) => {
      seen.add(d.key);
      let r = rows.get(d.key);
      if (!r) {
        const g = s('g', { class: 'bar-row', 'data-testid': `bar-${d.key}` });
        const label = s('text', { class: 'bar-label', 'dominant-baseline': 'middle' });
        const track = s('rect', { class: 'bar-track', rx: 4 });
        const bar = s('rect', { class: 'bar', rx: 4, 'data-testid': `exposure-bar-${d.key}` });
        const marker = s('line', { class: 'bar-marker' });
        const text = s('text', { class: 'bar-value', 'dominant-baseline': 'middle' });
        const title = s('title');
        g.append(title, label, track, bar, marker, text);
        svg.appendChild(g);
        r = { g, label, track, bar, marker, text, title };
        rows.set(d.key, r);
        bar.style.width = '0px';
      }
      const y = 4 + i * rowH;
      const v = isNum(d.value) ? Math.max(0, d.value) : 0;
      const w = Math.max(v > 0 ? 2 : 0, (v / max) * barW);
      r.g.setAttribute('transform', `translate(0 ${y})`);
      r.label.setAttribute('x', '0');
      r.label.setAttribute('y', String(rowH / 2 - 2));
      r.label.textContent = truncate(d.label ?? d.key, Math.max(6, Math.floor(labelW / 7.5)));
      r.track.setAttribute('x', String(labelW));
      r.track.setAttribute('y', '6');
      r.track.setAttribute('height', String(rowH - 16));
      r.track.setAttribute('width', String(barW));
      r.bar.setAttribute('x', String(labelW));
      r.bar.setAttribute('y', '6');
      r.bar.setAttribute('height', String(rowH - 16));
      r.bar.style.width = `${w.toFixed(1)}px`;
      r.bar.style.fill = d.color || PALETTE[i % PALETTE.length];
      r.bar.setAttribute('data-value', String(v));
      if (isNum(d.marker)) {
        const mx = labelW + (d.marker / max) * barW;
        r.marker.setAttribute('x1', String(mx));
        r.marker.setAttribute('x2', String(mx));
        r.marker.setAttribute('y1', '2');
        r.marker.setAttribute('y2', String(rowH - 6));
        r.marker.style.display = '';
      } else {
        r.marker.style.display = 'none';
      }
      r.text.setAttribute('x', String(labelW + barW + 8));
      r.text.setAttribute('y', String(rowH / 2 - 2));
      r.text.textContent = d.text ?? String(v);
      r.title.textContent = `${d.label ?? d.key}: ${d.text ?? v}`;
    });
    for (const [key, r] of rows) {
      if (!seen.has(key)) { r.g.remove(); rows.delete(key); }
    }
  }

  responsive(container, (w) => { width = w; draw(); });
  return {
    update(next) { items = next || []; draw(); },
  };
}

function truncate(text, n) {
  const t = String(text);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) { hi = lo + 1; }
  const span = hi - lo;
  const step0 = span / Math.max(1, count - 1);
  const mag = 10 ** Math.floor(Math.log10(step0));
  const err = step0 / mag;
  const step = (err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1) * mag;
  const start = Math.ceil(lo / step - 1e-9) * step;
  const out = [];
  for (let v = start; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function timeLabel(ms) {
  return new Date(ms).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/**
 * A line chart over time, drawn into container (replacing what was there).
 * series: [{key, label, color, points: [{t: ms, y}]}]; yMin/yMax fix the y domain;
 * threshold draws a dashed horizontal line.
 */
/**
 * The axes of a chart over time: a gridline and label per y tick, up to `maxTicks` time labels
 * (one per `tickWidth` px, the first and last flush with the plot's edges) and the base line.
 */
export function timeAxes({ m, iw, ih, x, y, yTicks, yFormat, t0, t1, maxTicks, tickWidth, tFormat }) {
  const axis = s('g', { class: 'axis' });
  for (const v of yTicks) {
    axis.append(
      s('line', { x1: m.left, x2: m.left + iw, y1: y(v), y2: y(v), class: 'gridline' }),
      s('text', { x: m.left - 6, y: y(v), 'text-anchor': 'end', 'dominant-baseline': 'middle' }, yFormat(v)),
    );
  }
  const nx = Math.max(2, Math.min(maxTicks, Math.floor(iw / tickWidth)));
  for (let i = 0; i < nx; i += 1) {
    const t = t0 + ((t1 - t0) * i) / (nx - 1);
    axis.appendChild(s('text', {
      x: x(t), y: m.top + ih + 18, 'text-anchor': i === 0 ? 'start' : i === nx - 1 ? 'end' : 'middle',
    }, tFormat(t)));
  }
  axis.appendChild(s('line', { x1: m.left, x2: m.left + iw, y1: m.top + ih, y2: m.top + ih, class: 'axis-line' }));
  return axis;
}

export function renderLineChart(container, {
  series, yMin = null, yMax = null, yFormat = (v) => String(v), ariaLabel = 'Line chart',
  threshold = null, thresholdLabel = '', height = 220, testid,
}) {
  container.replaceChildren();
  const figure = h('figure', { class: 'line-chart', 'data-testid': testid });
  const plot = h('div', { class: 'line-chart-plot' });
  const legend = h('ul', { class: 'legend', 'aria-label': 'Legend' },
    series.map((sr) => h('li', null, h('span', { class: 'swatch', style: { background: sr.color } }), sr.label ?? sr.key)));
  figure.append(plot, legend);
  container.appendChild(figure);

  const all = series.flatMap((sr) => sr.points).filter((p) => isNum(p.t) && isNum(p.y));
  responsive(plot, (width) => {
    plot.replaceChildren();
    const m = { top: 10, right: 14, bottom: 26, left: 46 };
    const svg = s('svg', {
      class: 'chart', role: 'img', 'aria-label': ariaLabel, width, height, viewBox: `0 0 ${width} ${height}`,
    });
    plot.appendChild(svg);
    const iw = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    if (!all.length) {
      svg.appendChild(s('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No data yet'));
      return;
    }
    let t0 = Math.min(...all.map((p) => p.t));
    let t1 = Math.max(...all.map((p) => p.t));
    if (t1 <= t0) { t0 -= 1000; t1 += 1000; }
    let y0 = yMin ?? Math.min(...all.map((p) => p.y));
    let y1 = yMax ?? Math.max(...all.map((p) => p.y));
    if (y1 <= y0) { y1 = y0 + 1; }
    const x = (t) => m.left + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => m.top + ih - ((v - y0) / (y1 - y0)) * ih;
    svg.appendChild(timeAxes({
      m, iw, ih, x, y, yTicks: niceTicks(y0, y1, 5), yFormat, t0, t1, maxTicks: 5, tickWidth: 110, tFormat: timeLabel,
    }));
    if (isNum(threshold) && threshold >= y0 && threshold <= y1) {
      svg.append(
        s('line', { x1: m.left, x2: m.left + iw, y1: y(threshold), y2: y(threshold), class: 'threshold' }),
        s('text', { x: m.left + iw - 4, y: y(threshold) + 12, 'text-anchor': 'end', class: 'threshold-label' }, thresholdLabel),
      );
    }
    for (const sr of series) {
      const pts = sr.points.filter((p) => isNum(p.t) && isNum(p.y));
      if (!pts.length) continue;
      const d = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join('');
      const last = pts[pts.length - 1];
      svg.append(
        s('path', { d, class: 'series', stroke: sr.color, 'data-series': sr.key }, s('title', null, sr.label ?? sr.key)),
        s('circle', { cx: x(last.t), cy: y(last.y), r: 3, fill: sr.color }),
      );
    }
  });
  return figure;
}

/** The common x domain for a set of lift rows' intervals (always includes zero). */
export function intervalDomain(rows) {
  const vals = [0];
  for (const r of rows) {
    for (const ci of [r.abs_ci, r.anytime_abs_ci]) {
      if (Array.isArray(ci)) for (const v of ci) if (isNum(v)) vals.push(v);
    }
    if (isNum(r.abs_lift)) vals.push(r.abs_lift);
  }
  let lo = Math.min(...vals);
  let hi = Math.max(...vals);
  if (hi - lo < 1e-12) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.08;
  return [lo - pad, hi + pad];
}

/**
 * One forest-plot row: zero line, anytime-valid interval (wide pale band), 95% interval
 * (whisker) and the point estimate. domain: [lo, hi] shared by rows of the same metric.
 */
export function intervalPlot(row, domain, { width = 180, height = 30, tone = 'neutral' } = {}) {
  const [lo, hi] = domain;
  const x = (v) => 6 + ((v - lo) / (hi - lo)) * (width - 12);
  const mid = height / 2;
  const svg = s('svg', {
    class: `chart interval-plot tone-${tone}`, width, height, viewBox: `0 0 ${width} ${height}`,
    role: 'img', 'data-testid': 'interval-plot',
    'aria-label': `Absolute lift ${fmt(row.abs_lift)}, 95% interval ${fmtCi(row.abs_ci)}, anytime-valid interval ${fmtCi(row.anytime_abs_ci)}`,
  });
  svg.appendChild(s('line', { class: 'zero', x1: x(0), x2: x(0), y1: 2, y2: height - 2 }));
  const any = row.anytime_abs_ci;
  if (Array.isArray(any) && isNum(any[0]) && isNum(any[1])) {
    const a = Math.max(x(lo), x(any[0]));
    const b = Math.min(x(hi), x(any[1]));
    svg.appendChild(s('rect', { class: 'anytime', x: a, y: mid - 6, width: Math.max(1, b - a), height: 12, rx: 3 }));
  }
  const ci = row.abs_ci;
  if (Array.isArray(ci) && isNum(ci[0]) && isNum(ci[1])) {
    svg.append(
      s('line', { class: 'ci', x1: x(ci[0]), x2: x(ci[1]), y1: mid, y2: mid }),
      s('line', { class: 'ci', x1: x(ci[0]), x2: x(ci[0]), y1: mid - 4, y2: mid + 4 }),
      s('line', { class: 'ci', x1: x(ci[1]), x2: x(ci[1]), y1: mid - 4, y2: mid + 4 }),
    );
  }
  if (isNum(row.abs_lift)) svg.appendChild(s('circle', { class: 'point', cx: x(row.abs_lift), cy: mid, r: 4 }));
  svg.appendChild(s('title', null, svg.getAttribute('aria-label')));
  return svg;
}

function fmt(v) { return isNum(v) ? Number(v.toPrecision(3)).toString() : 'n/a'; }
function fmtCi(ci) { return Array.isArray(ci) && ci.length === 2 ? `${fmt(ci[0])} to ${fmt(ci[1])}` : 'n/a'; }

/** A legend explaining the forest plot marks. */
export function intervalLegend() {
  return h('ul', { class: 'legend interval-legend' },
    legendItem('point', 'absolute lift'), legendItem('ci', '95% interval (Welch)'), legendItem('anytime', 'anytime-valid interval'), legendItem('zero', 'no change'));
}

/**
 * One legend entry: a small drawing of a chart's mark (hidden from screen readers; the text
 * says what it means) and its text. mark: 'point', 'ci' (a whisker), 'anytime' (a pale band),
 * 'zero' or 'logged' (a dashed vertical line), 'zero-h' (a dashed horizontal one), 'band' (a
 * line in `color` over its shaded interval). chart: the class that styles the marks as in the
 * chart they explain.
 * attrs: extra attributes of the <li>.
 */
export function legendItem(mark, text, { chart = 'interval-plot', color = null, attrs = null } = {}) {
  const svg = s('svg', { width: 26, height: 14, viewBox: '0 0 26 14', 'aria-hidden': 'true', focusable: 'false', class: `chart ${chart}` });
  if (mark === 'anytime') svg.appendChild(s('rect', { class: 'anytime', x: 1, y: 1, width: 24, height: 12, rx: 3 }));
  if (mark === 'ci') svg.append(s('line', { class: 'ci', x1: 2, x2: 24, y1: 7, y2: 7 }), s('line', { class: 'ci', x1: 2, x2: 2, y1: 3, y2: 11 }), s('line', { class: 'ci', x1: 24, x2: 24, y1: 3, y2: 11 }));
  if (mark === 'point') svg.appendChild(s('circle', { class: 'point', cx: 13, cy: 7, r: 4 }));
  if (mark === 'zero' || mark === 'logged') svg.appendChild(s('line', { class: mark, x1: 13, x2: 13, y1: 0, y2: 14 }));
  if (mark === 'zero-h') svg.appendChild(s('line', { class: 'zero', x1: 1, x2: 25, y1: 7, y2: 7 }));
  if (mark === 'band') {
    svg.append(s('rect', { class: 'band', x: 1, y: 2, width: 24, height: 10, rx: 2, fill: color }),
      s('line', { class: 'band-line', x1: 1, x2: 25, y1: 7, y2: 7, stroke: color }));
  }
  return h('li', attrs, svg, text);
}

/** A padded [lo, hi] over finite values (at least a small span around a single value). */
function paddedDomain(values) {
  const vals = values.filter(isNum);
  if (!vals.length) return [0, 1];
  let lo = Math.min(...vals);
  let hi = Math.max(...vals);
  if (hi - lo < 1e-12) {
    const d = Math.abs(lo) > 1e-12 ? Math.abs(lo) * 0.1 : 1;
    lo -= d; hi += d;
  }
  const pad = (hi - lo) * 0.08;
  return [lo - pad, hi + pad];
}

/**
 * A trade-off scatter: one point per variant at (x, y) with 95% intervals both ways, constraint
 * bounds as dashed lines with labels (the side that breaks the bound lightly shaded), and
 * infeasible variants greyed. Drawn into container, replacing what was there.
 * points: [{key, label, color, x, y, xci: [lo, hi]|null, yci, feasible: true|false|null, title}]
 * bounds: [{axis: 'x'|'y', value, kind: 'max'|'min', metric, label}]
 */
export function renderTradeoffChart(container, {
  points, bounds = [], xTitle = '', yTitle = '', xFormat = (v) => String(v), yFormat = (v) => String(v),
  ariaLabel = 'Trade-off chart', height = 340, testid,
}) {
  container.replaceChildren();
  const plot = h('div', { class: 'tradeoff-plot' });
  container.appendChild(plot);
  const ciVals = (p, axis) => {
    const ci = p[`${axis}ci`];
    return Array.isArray(ci) ? ci.filter(isNum) : [];
  };
  const xs = [...points.flatMap((p) => [p.x, ...ciVals(p, 'x')]), ...bounds.filter((b) => b.axis === 'x').map((b) => b.value)];
  const ys = [...points.flatMap((p) => [p.y, ...ciVals(p, 'y')]), ...bounds.filter((b) => b.axis === 'y').map((b) => b.value)];
  responsive(plot, (width) => {
    plot.replaceChildren();
    const m = { top: 14, right: 18, bottom: 44, left: 64 };
    const svg = s('svg', {
      class: 'chart tradeoff', role: 'img', 'aria-label': ariaLabel, width, height, viewBox: `0 0 ${width} ${height}`, 'data-testid': testid,
    });
    plot.appendChild(svg);
    const iw = width - m.left - m.right;
    const ih = height - m.top - m.bottom;
    if (!points.length) {
      svg.appendChild(s('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No estimates yet'));
      return;
    }
    const [x0, x1] = paddedDomain(xs);
    const [y0, y1] = paddedDomain(ys);
    const x = (v) => m.left + ((v - x0) / (x1 - x0)) * iw;
    const y = (v) => m.top + ih - ((v - y0) / (y1 - y0)) * ih;
    const clampX = (v) => Math.max(m.left, Math.min(m.left + iw, v));
    const clampY = (v) => Math.max(m.top, Math.min(m.top + ih, v));
    const axis = s('g', { class: 'axis' });
    for (const v of niceTicks(y0, y1, 5)) {
      axis.append(
        s('line', { x1: m.left, x2: m.left + iw, y1: y(v), y2: y(v), class: 'gridline' }),
        s('text', { x: m.left - 6, y: y(v), 'text-anchor': 'end', 'dominant-baseline': 'middle' }, yFormat(v)),
      );
    }
    for (const v of niceTicks(x0, x1, Math.max(3, Math.min(7, Math.floor(iw / 90))))) {
      axis.append(
        s('line', { x1: x(v), x2: x(v), y1: m.top, y2: m.top + ih, class: 'gridline' }),
        s('text', { x: x(v), y: m.top + ih + 16, 'text-anchor': 'middle' }, xFormat(v)),
      );
    }
    axis.append(
      s('line', { x1: m.left, x2: m.left + iw, y1: m.top + ih, y2: m.top + ih, class: 'axis-line' }),
      s('line', { x1: m.left, x2: m.left, y1: m.top, y2: m.top + ih, class: 'axis-line' }),
      // Long titles are shortened to the plot's size; the full text is their tooltip.
      s('text', { x: m.left + iw / 2, y: height - 6, 'text-anchor': 'middle', class: 'axis-title', 'data-testid': 'tradeoff-x-title' },
        truncate(xTitle, Math.max(12, Math.floor(iw / 6.4))), s('title', null, xTitle)),
      s('text', { x: 12, y: m.top + ih / 2, 'text-anchor': 'middle', class: 'axis-title', transform: `rotate(-90 12 ${m.top + ih / 2})`, 'data-testid': 'tradeoff-y-title' },
        truncate(yTitle, Math.max(12, Math.floor(ih / 6.4))), s('title', null, yTitle)),
    );
    svg.appendChild(axis);
    // Constraint bounds: the side that breaks the bound is shaded.
    for (const b of bounds) {
      if (!isNum(b.value)) continue;
      const g = s('g', { class: 'bound-group', 'data-testid': 'tradeoff-bound', 'data-metric': b.metric, 'data-kind': b.kind, 'data-value': String(b.value) });
      if (b.axis === 'x') {
        const bx = clampX(x(b.value));
        const zx = b.kind === 'max' ? bx : m.left;
        const zw = b.kind === 'max' ? m.left + iw - bx : bx - m.left;
        g.append(
          s('rect', { class: 'infeasible-zone', x: zx, y: m.top, width: Math.max(0, zw), height: ih }),
          s('line', { class: 'bound', x1: bx, x2: bx, y1: m.top, y2: m.top + ih }),
          s('text', { class: 'bound-label', x: b.kind === 'max' ? bx - 4 : bx + 4, y: m.top + 12, 'text-anchor': b.kind === 'max' ? 'end' : 'start' }, b.label),
        );
      } else {
        const by = clampY(y(b.value));
        const zy = b.kind === 'max' ? m.top : by;
        const zh = b.kind === 'max' ? by - m.top : m.top + ih - by;
        g.append(
          s('rect', { class: 'infeasible-zone', x: m.left, y: zy, width: iw, height: Math.max(0, zh) }),
          s('line', { class: 'bound', x1: m.left, x2: m.left + iw, y1: by, y2: by }),
          s('text', { class: 'bound-label', x: m.left + iw - 4, y: b.kind === 'max' ? by - 5 : by + 13, 'text-anchor': 'end' }, b.label),
        );
      }
      g.appendChild(s('title', null, b.label));
      svg.appendChild(g);
    }
    // Feasible variants are drawn last, on top.
    const ordered = [...points].sort((a, b) => (a.feasible === false) - (b.feasible === false)).reverse();
    for (const p of ordered) {
      const px = x(p.x);
      const py = y(p.y);
      const color = p.feasible === false ? '#a3a9b5' : p.color;
      const g = s('g', {
        class: `vp${p.feasible === false ? ' infeasible' : ''}`, 'data-testid': 'tradeoff-point', 'data-key': p.key,
        'data-feasible': p.feasible === null || p.feasible === undefined ? 'unknown' : String(p.feasible),
      });
      g.appendChild(s('title', null, p.title || p.label || p.key));
      const cap = 4;
      if (Array.isArray(p.xci) && isNum(p.xci[0]) && isNum(p.xci[1])) {
        const a = clampX(x(p.xci[0]));
        const b = clampX(x(p.xci[1]));
        g.append(
          s('line', { class: 'whisker', x1: a, x2: b, y1: py, y2: py, stroke: color }),
          s('line', { class: 'whisker', x1: a, x2: a, y1: py - cap, y2: py + cap, stroke: color }),
          s('line', { class: 'whisker', x1: b, x2: b, y1: py - cap, y2: py + cap, stroke: color }),
        );
      }
      if (Array.isArray(p.yci) && isNum(p.yci[0]) && isNum(p.yci[1])) {
        const a = clampY(y(p.yci[0]));
        const b = clampY(y(p.yci[1]));
        g.append(
          s('line', { class: 'whisker', x1: px, x2: px, y1: a, y2: b, stroke: color }),
          s('line', { class: 'whisker', x1: px - cap, x2: px + cap, y1: a, y2: a, stroke: color }),
          s('line', { class: 'whisker', x1: px - cap, x2: px + cap, y1: b, y2: b, stroke: color }),
        );
      }
      const right = px < m.left + iw - 90;
      g.append(
        s('circle', { cx: px, cy: py, r: 6, fill: color, stroke: '#fff', 'stroke-width': 1.5 }),
        s('text', { x: right ? px + 9 : px - 9, y: py - 8, 'text-anchor': right ? 'start' : 'end' }, truncate(p.label ?? p.key, 18)),
      );
      svg.appendChild(g);
    }
  });
}

/**
 * One wide plot per metric: every treatment on a shared relative-lift axis with zero marked.
 * lanes: [{key, label, color, tone, rel, welch: [lo, hi]|null, anytime: [lo, hi]|null, title}]
 * (relative lifts: 0.05 is +5%). Welch's interval is a whisker, the anytime-valid one a pale
 * band behind it, the estimate a dot. Drawn into container, replacing what was there.
 */
export function renderLiftAxis(container, { lanes, ariaLabel = 'Relative lift per treatment', format = (v) => `${v > 0 ? '+' : ''}${Math.round(v * 1000) / 10}%`, testid }) {
  container.replaceChildren();
  const figure = h('figure', { class: 'lift-axis', 'data-testid': testid });
  const plot = h('div', { class: 'lift-axis-plot' });
  figure.appendChild(plot);
  container.appendChild(figure);
  const vals = [0];
  for (const l of lanes) {
    for (const ci of [l.welch, l.anytime]) if (Array.isArray(ci)) for (const v of ci) if (isNum(v)) vals.push(v);
    if (isNum(l.rel)) vals.push(l.rel);
  }
  let lo = Math.min(...vals);
  let hi = Math.max(...vals);
  if (hi - lo < 1e-9) { lo -= 0.01; hi += 0.01; }
  const pad = (hi - lo) * 0.06;
  lo -= pad; hi += pad;
  responsive(plot, (width) => {
    plot.replaceChildren();
    const laneH = 30;
    const labelW = Math.min(140, Math.round(width * 0.28));
    const m = { top: 6, right: 16, bottom: 24, left: labelW };
    const height = m.top + m.bottom + Math.max(1, lanes.length) * laneH;
    const iw = Math.max(40, width - m.left - m.right);
    const x = (v) => m.left + ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * iw;
    const svg = s('svg', { class: 'chart lift-axis-svg', role: 'img', 'aria-label': ariaLabel, width, height, viewBox: `0 0 ${width} ${height}` });
    plot.appendChild(svg);
    const axis = s('g', { class: 'axis' });
    for (const v of niceTicks(lo, hi, Math.max(3, Math.min(7, Math.floor(iw / 80))))) {
      axis.append(
        s('line', { x1: x(v), x2: x(v), y1: m.top, y2: height - m.bottom, class: 'gridline' }),
        s('text', { x: x(v), y: height - m.bottom + 16, 'text-anchor': 'middle' }, format(v)),
      );
    }
    svg.appendChild(axis);
    svg.appendChild(s('line', { class: 'zero', x1: x(0), x2: x(0), y1: m.top - 2, y2: height - m.bottom + 2, 'data-testid': 'lift-axis-zero' }));
    lanes.forEach((l, i) => {
      const y = m.top + i * laneH + laneH / 2;
      const g = s('g', { class: `lane tone-${l.tone || 'neutral'}`, 'data-testid': 'lift-axis-lane', 'data-key': l.key });
      g.appendChild(s('text', { x: 0, y, 'dominant-baseline': 'middle', class: 'lane-label' }, truncate(l.label ?? l.key, Math.max(6, Math.floor(labelW / 7.5)))));
      if (Array.isArray(l.anytime) && isNum(l.anytime[0]) && isNum(l.anytime[1])) {
        const a = x(l.anytime[0]);
        const b = x(l.anytime[1]);
        g.appendChild(s('rect', { class: 'anytime', x: a, y: y - 8, width: Math.max(1, b - a), height: 16, rx: 3, 'data-testid': 'lift-axis-anytime' }));
      }
      if (Array.isArray(l.welch) && isNum(l.welch[0]) && isNum(l.welch[1])) {
        g.append(
          s('line', { class: 'ci', x1: x(l.welch[0]), x2: x(l.welch[1]), y1: y, y2: y, 'data-testid': 'lift-axis-welch' }),
          s('line', { class: 'ci', x1: x(l.welch[0]), x2: x(l.welch[0]), y1: y - 5, y2: y + 5 }),
          s('line', { class: 'ci', x1: x(l.welch[1]), x2: x(l.welch[1]), y1: y - 5, y2: y + 5 }),
        );
      }
      if (isNum(l.rel)) g.appendChild(s('circle', { class: 'point', cx: x(l.rel), cy: y, r: 4.5 }));
      g.appendChild(s('title', null, l.title || l.label || l.key));
      svg.appendChild(g);
    });
  });
  figure.appendChild(h('ul', { class: 'legend interval-legend' },
    legendItem('point', 'relative lift'), legendItem('ci', 'Welch 95% interval'),
    legendItem('anytime', 'anytime-valid 95% interval (running)'), legendItem('zero', 'no change (0)')));
  return figure;
}

/** A tiny inline sparkline of values (no axes): an SVG polyline, aria-hidden unless labelled. */
export function sparkline(values, { width = 90, height = 22, label = null, testid } = {}) {
  const vs = values.filter(isNum);
  const svg = s('svg', {
    class: 'sparkline', width, height, viewBox: `0 0 ${width} ${height}`, 'data-testid': testid,
    ...(label ? { role: 'img', 'aria-label': label } : { 'aria-hidden': 'true' }),
  });
  if (vs.length < 2) return svg;
  const max = Math.max(...vs, 1e-12);
  const min = Math.min(0, ...vs);
  const x = (i) => 1 + (i / (vs.length - 1)) * (width - 2);
  const y = (v) => height - 2 - ((v - min) / (max - min || 1)) * (height - 4);
  const d = vs.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('');
  svg.append(s('path', { d: `${d}L${x(vs.length - 1).toFixed(1)},${height}L1,${height}Z`, class: 'spark-fill' }), s('path', { d, class: 'spark-line' }));
  if (label) svg.appendChild(s('title', null, label));
  return svg;
}
