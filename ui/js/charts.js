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

/** Call draw(width) now and whenever the container's width changes. */
function responsive(container, draw) {
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

function niceTicks(lo, hi, count = 5) {
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
    const axis = s('g', { class: 'axis' });
    for (const v of niceTicks(y0, y1, 5)) {
      axis.append(
        s('line', { x1: m.left, x2: m.left + iw, y1: y(v), y2: y(v), class: 'gridline' }),
        s('text', { x: m.left - 6, y: y(v), 'text-anchor': 'end', 'dominant-baseline': 'middle' }, yFormat(v)),
      );
    }
    const nx = Math.max(2, Math.min(5, Math.floor(iw / 110)));
    for (let i = 0; i < nx; i += 1) {
      const t = t0 + ((t1 - t0) * i) / (nx - 1);
      axis.appendChild(s('text', {
        x: x(t), y: m.top + ih + 18, 'text-anchor': i === 0 ? 'start' : i === nx - 1 ? 'end' : 'middle',
      }, timeLabel(t)));
    }
    axis.appendChild(s('line', { x1: m.left, x2: m.left + iw, y1: m.top + ih, y2: m.top + ih, class: 'axis-line' }));
    svg.appendChild(axis);
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
  const mk = (cls, text) => {
    const svg = s('svg', { width: 26, height: 14, viewBox: '0 0 26 14', 'aria-hidden': 'true', class: 'chart interval-plot' });
    if (cls === 'anytime') svg.appendChild(s('rect', { class: 'anytime', x: 1, y: 1, width: 24, height: 12, rx: 3 }));
    if (cls === 'ci') svg.append(s('line', { class: 'ci', x1: 2, x2: 24, y1: 7, y2: 7 }), s('line', { class: 'ci', x1: 2, x2: 2, y1: 3, y2: 11 }), s('line', { class: 'ci', x1: 24, x2: 24, y1: 3, y2: 11 }));
    if (cls === 'point') svg.appendChild(s('circle', { class: 'point', cx: 13, cy: 7, r: 4 }));
    if (cls === 'zero') svg.appendChild(s('line', { class: 'zero', x1: 13, x2: 13, y1: 0, y2: 14 }));
    return h('li', null, svg, text);
  };
  return h('ul', { class: 'legend interval-legend' },
    mk('point', 'absolute lift'), mk('ci', '95% interval (Welch)'), mk('anytime', 'anytime-valid interval'), mk('zero', 'no change'));
}
