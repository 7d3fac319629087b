// Lift over time on the results page (GET /experiments/{id}/results/history): for each metric
// with a lift plot, each treatment's relative lift against control at every stored point, a
// line per treatment over its shaded Welch 95% interval, zero marked, so a novelty effect (a
// lift that fades) or drift shows. The server keeps one point per timeline bucket (the
// bucket's latest recompute), oldest first.
//
// createLiftHistory() -> {slot(metric), update(snap), stop()}. The lift card is rebuilt on
// every new snapshot; each metric's chart lives in a slot element kept here, which the card
// takes in again rather than drawing it anew. update() fetches the history again when a
// snapshot is new (one fetch at a time: a snapshot arriving meanwhile asks for one more).
// Every chart has a title, a legend that names the treatments with their latest lift, an
// aria-label that says what it shows, hover titles per point, and the latest points as a table.

import { ApiError, experiments } from './api.js';
import { colorFor, legendItem, niceTicks, responsive, timeAxes } from './charts.js';
import { h, nextId, s } from './dom.js';
import { dateTime, int, interval, relPct } from './format.js';

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
const isCi = (ci) => Array.isArray(ci) && ci.length === 2 && isNum(ci[0]) && isNum(ci[1]);

/** Points a chart needs before it is drawn (one point is not a line). */
export const MIN_POINTS = 2;
/** The table under a chart shows this many of the latest points. */
export const TABLE_ROWS = 20;
/** Each point gets a dot up to this many points; beyond, only the lines and the last dots. */
const MAX_DOTS = 60;
export const EMPTY_TEXT = 'Lift over time appears after the second recompute with data.';

function toMs(t) {
  if (isNum(t)) return t < 1e12 ? t * 1000 : t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

/** An x-axis label: seconds for a few minutes of history, dates for more than a day and a half. */
function timeTick(ms, span) {
  const d = new Date(ms);
  if (span <= 10 * 60e3) return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const hm = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (span <= 36 * 3600e3) return hm;
  const day = d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  return span <= 7 * 86400e3 ? `${day} ${hm}` : day;
}

/** "+4.2% [−1.0%, +9.5%]": a relative lift with its interval, as the lift table writes them. */
function liftText(p) {
  if (!p || !isNum(p.y)) return '—';
  return isCi(p.ci) ? `${relPct(p.y)} ${interval(p.ci, relPct)}` : relPct(p.y);
}

/**
 * One metric's history from the API's points: {control, times: [{t, iso}], series: [{key,
 * color, points: [{t, iso, y, ci}]}]} with a time only where some treatment has a lift.
 */
export function metricHistory(points, metric, keys) {
  let control = null;
  const seen = new Set();
  const times = [];
  for (const p of points || []) {
    const t = toMs(p.t);
    const rows = (p.rows || []).filter((r) => r && r.metric === metric);
    if (t === null || !rows.some((r) => isNum(r.rel_lift))) continue;
    for (const r of rows) { seen.add(r.treatment); control = control || r.control; }
    times.push({ t, iso: p.t, rows });
  }
  const rank = (k) => (keys.includes(k) ? keys.indexOf(k) : keys.length);
  const order = [...seen].sort((a, b) => rank(a) - rank(b) || String(a).localeCompare(String(b)));
  const series = order.map((k) => ({
    key: k,
    color: colorFor(keys, k),
    points: times.map(({ t, iso, rows }) => {
      const r = rows.find((x) => x.treatment === k);
      return { t, iso, y: r && isNum(r.rel_lift) ? r.rel_lift : null, ci: r && isCi(r.rel_ci) ? r.rel_ci : null };
    }),
  }));
  return { control, times: times.map(({ t, iso }) => ({ t, iso })), series };
}

/** The latest point of a series with a lift. */
function latest(sr) {
  for (let i = sr.points.length - 1; i >= 0; i -= 1) if (isNum(sr.points[i].y)) return sr.points[i];
  return null;
}

/**
 * The y domain: every lift, zero and the latest intervals always; the older intervals too
 * unless they would squash the lines (early intervals are wide), in which case they are cut
 * at the plot's edge. Returns [lo, hi, cut].
 */
function yDomain(series) {
  const core = [0];
  const all = [0];
  for (const sr of series) {
    for (const p of sr.points) {
      if (isNum(p.y)) { core.push(p.y); all.push(p.y); }
      if (p.ci) all.push(p.ci[0], p.ci[1]);
    }
    const last = latest(sr);
    if (last && last.ci) core.push(last.ci[0], last.ci[1]);
  }
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  const clo = Math.min(...core);
  const chi = Math.max(...core);
  let cut = false;
  if (hi - lo > 4 * (chi - clo) && chi - clo > 1e-9) {
    const grow = (chi - clo) * 0.75;
    lo = Math.max(lo, clo - grow);
    hi = Math.min(hi, chi + grow);
    cut = true;
  }
  if (hi - lo < 1e-9) { lo -= 0.01; hi += 0.01; }
  const pad = (hi - lo) * 0.06;
  return [lo - pad, hi + pad, cut];
}

/** Runs of consecutive points that pass ok(p): a missing point breaks a line or a band. */
function runs(points, ok) {
  const out = [];
  let cur = [];
  for (const p of points) {
    if (ok(p)) cur.push(p);
    else if (cur.length) { out.push(cur); cur = []; }
  }
  if (cur.length) out.push(cur);
  return out;
}

/** Draw one metric's chart into plot (an SVG of the given width, replacing what was there). */
function drawChart(plot, width, data, { metric, ariaLabel }) {
  plot.replaceChildren();
  const { series, times } = data;
  const height = width < 480 ? 190 : 230;
  const m = { top: 10, right: 12, bottom: 26, left: 56 };
  const iw = Math.max(40, width - m.left - m.right);
  const ih = height - m.top - m.bottom;
  let t0 = times[0].t;
  let t1 = times[times.length - 1].t;
  if (t1 <= t0) { t0 -= 1000; t1 += 1000; }
  const [lo, hi] = yDomain(series);
  const x = (t) => m.left + ((t - t0) / (t1 - t0)) * iw;
  const y = (v) => m.top + ih - ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * ih;
  const svg = s('svg', {
    class: 'chart lift-history-chart', role: 'img', 'aria-label': ariaLabel, width, height,
    viewBox: `0 0 ${width} ${height}`, 'data-testid': 'lift-history-chart', 'data-metric': metric,
  });
  plot.appendChild(svg);
  const clipId = nextId('lh-clip');
  svg.appendChild(s('defs', null, s('clipPath', { id: clipId }, s('rect', { x: m.left, y: m.top, width: iw, height: ih }))));

  svg.appendChild(timeAxes({
    m, iw, ih, x, y, yTicks: niceTicks(lo, hi, ih < 170 ? 4 : 5), yFormat: relPct, t0, t1,
    maxTicks: 6, tickWidth: 105, tFormat: (t) => timeTick(t, t1 - t0),
  }));

  // Bands first, then zero, then the lines, the dots and the hover strips on top.
  const bands = s('g', { 'clip-path': `url(#${clipId})` });
  for (const sr of series) {
    for (const run of runs(sr.points, (p) => !!p.ci)) {
      const up = run.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.ci[1]).toFixed(1)}`).join('');
      const down = [...run].reverse().map((p) => `L${x(p.t).toFixed(1)},${y(p.ci[0]).toFixed(1)}`).join('');
      // A single point's interval: a thin bar, not an invisible zero-width polygon.
      const d = run.length > 1 ? `${up}${down}Z` : `M${(x(run[0].t) - 1.5).toFixed(1)},${y(run[0].ci[1]).toFixed(1)}h3V${y(run[0].ci[0]).toFixed(1)}h-3Z`;
      bands.appendChild(s('path', { d, class: 'band', fill: sr.color, 'data-testid': 'lift-history-band', 'data-treatment': sr.key }));
    }
  }
  svg.appendChild(bands);
  svg.appendChild(s('line', { class: 'zero', x1: m.left, x2: m.left + iw, y1: y(0), y2: y(0), 'data-testid': 'lift-history-zero' }));

  const dots = times.length <= MAX_DOTS;
  for (const sr of series) {
    const g = s('g', { class: 'lift-history-series', 'data-treatment': sr.key });
    const d = runs(sr.points, (p) => isNum(p.y))
      .map((run) => run.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join('')).join('');
    const n = sr.points.filter((p) => isNum(p.y)).length;
    g.appendChild(s('path', { d, class: 'series', stroke: sr.color, 'data-testid': 'lift-history-line', 'data-treatment': sr.key, 'data-points': String(n) }));
    if (dots) {
      for (const p of sr.points) if (isNum(p.y)) g.appendChild(s('circle', { class: 'dot', cx: x(p.t), cy: y(p.y), r: 2.4, fill: sr.color }));
    }
    const last = latest(sr);
    if (last) {
      g.appendChild(s('circle', {
        class: 'last', cx: x(last.t), cy: y(last.y), r: 4, fill: sr.color,
        'data-testid': 'lift-history-last', 'data-treatment': sr.key, 'data-value': String(last.y),
      }));
    }
    svg.appendChild(g);
  }

  // Hover: one strip per point, from halfway to the previous point to halfway to the next;
  // its title has every treatment's lift and interval at that time.
  const hits = s('g', { class: 'lift-history-hits' });
  times.forEach((tp, i) => {
    const cx = x(tp.t);
    const a = i === 0 ? m.left : (cx + x(times[i - 1].t)) / 2;
    const b = i === times.length - 1 ? m.left + iw : (cx + x(times[i + 1].t)) / 2;
    const lines = series.map((sr) => `${sr.key}: ${liftText(sr.points[i])}`);
    hits.appendChild(s('rect', {
      class: 'lh-hit', x: a, y: m.top, width: Math.max(1, b - a), height: ih, 'data-testid': 'lift-history-hit', 'data-t': tp.iso,
    }, s('title', null, [dateTime(tp.iso), ...lines].join('\n'))));
  });
  svg.appendChild(hits);
}

/** createLiftHistory({getExp, keys}): see the top of this file. */
export function createLiftHistory({ getExp, keys }) {
  const slots = new Map(); // metric -> slot
  let points = null; // the API's points, once fetched
  let pointsText = '';
  let error = null;
  let lastComputed = null;
  let busy = false;
  let again = false;
  let stopped = false;
  let controller = null;

  function makeSlot(metric) {
    const titleId = nextId('lh-title');
    const status = h('p', { class: 'hint lift-history-status', 'data-testid': 'lift-history-status' }, 'Loading the lift over time…');
    const intro = h('p', { class: 'hint lift-history-intro' });
    const plot = h('div', { class: 'lift-history-plot' });
    const legend = h('ul', { class: 'legend lift-history-legend', 'aria-label': `Legend of the lift of ${metric} over time`, 'data-testid': 'lift-history-legend' });
    const figure = h('figure', { class: 'lift-history-figure', hidden: true }, plot, legend);
    const tableBox = h('div');
    const details = h('details', { class: 'lift-history-details', hidden: true }, h('summary', { 'data-testid': 'lift-history-table-toggle' }, 'Show as a table'), tableBox);
    const el = h('section', { class: 'lift-history', 'data-testid': `lift-history-${metric}`, 'data-metric': metric, 'aria-labelledby': titleId },
      h('h4', { id: titleId, class: 'lift-history-title' }, 'Lift over time'),
      status, intro, figure, details);
    const slot = { metric, el, status, intro, plot, legend, figure, details, tableBox, data: null, ariaLabel: '' };
    slot.chart = responsive(plot, (width) => {
      if (slot.data && !slot.figure.hidden) drawChart(plot, width, slot.data, { metric, ariaLabel: slot.ariaLabel });
    });
    return slot;
  }

  /** The element holding a metric's chart: the same one on every call, drawn as data comes. */
  function slot(metric) {
    if (!slots.has(metric)) {
      const sl = makeSlot(metric);
      slots.set(metric, sl);
      if (points || error) fill(sl);
    }
    return slots.get(metric).el;
  }

  function fill(sl) {
    const { metric } = sl;
    if (!points) {
      sl.status.hidden = false;
      sl.status.textContent = error ? `Could not load the lift over time: ${error.message}.` : 'Loading the lift over time…';
      return;
    }
    const data = metricHistory(points, metric, keys);
    const n = data.times.length;
    sl.el.dataset.points = String(n);
    if (n < MIN_POINTS || !data.series.length) {
      sl.data = null;
      sl.status.hidden = false;
      sl.status.dataset.testid = 'lift-history-empty';
      sl.status.textContent = EMPTY_TEXT;
      sl.intro.hidden = true;
      sl.figure.hidden = true;
      sl.details.hidden = true;
      return;
    }
    sl.status.dataset.testid = 'lift-history-status';
    sl.status.hidden = !error;
    if (error) sl.status.textContent = `Could not refresh the lift over time: ${error.message}. Showing the last history read.`;
    const control = data.control || 'control';
    const first = data.times[0].iso;
    const last = data.times[n - 1].iso;
    const [, , cut] = yDomain(data.series);
    sl.intro.hidden = false;
    sl.intro.replaceChildren(
      'Relative lift of each treatment against ', h('code', null, control), ` at ${int(n)} points, ${dateTime(first)} to ${dateTime(last)} (the latest recompute of each timeline bucket). `,
      'Shaded: its Welch 95% interval', cut ? ', cut at the edge where wider than the plot' : '', '. Hover the chart, or open the table, for the values at a time.');
    sl.ariaLabel = `Lift over time of ${metric}: the relative lift of ${data.series.map((sr) => sr.key).join(', ')} against ${control} at ${n} points from ${dateTime(first)} to ${dateTime(last)}, each with its 95% interval shaded; a dashed line marks no change. Latest: ${data.series.map((sr) => `${sr.key} ${liftText(latest(sr))}`).join('; ')}. The table under "Show as a table" has the numbers.`;
    sl.data = data;
    sl.legend.replaceChildren(
      ...data.series.map((sr) => {
        const p = latest(sr);
        return legendItem('band', [h('code', null, sr.key), ' ', h('span', {
          class: 'lift-history-latest', 'data-testid': 'lift-history-latest',
          'data-value': p ? String(p.y) : '', 'data-lo': p && p.ci ? String(p.ci[0]) : '', 'data-hi': p && p.ci ? String(p.ci[1]) : '', 'data-t': p ? p.iso : '',
        }, `latest ${liftText(p)}`)], { chart: 'lift-history-chart', color: sr.color, attrs: { 'data-testid': 'lift-history-legend-item', 'data-treatment': sr.key } });
      }),
      legendItem('zero-h', 'no change (0%)', { chart: 'lift-history-chart' }));
    sl.tableBox.replaceChildren(table(metric, control, data));
    sl.figure.hidden = false;
    sl.details.hidden = false;
    sl.chart.redraw();
  }

  function table(metric, control, data) {
    const rows = data.times.map((tp, i) => ({ tp, i })).slice(-TABLE_ROWS).reverse();
    const n = data.times.length;
    return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': `Lift of ${metric} over time as a table` },
      h('table', { class: 'table compact lift-history-table', 'data-testid': 'lift-history-table', 'data-metric': metric },
        h('caption', null, `Relative lift of ${metric} against ${control} (95% interval), newest first`, n > TABLE_ROWS ? `: the latest ${TABLE_ROWS} of ${int(n)} points` : ''),
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Time'), data.series.map((sr) => h('th', { scope: 'col', class: 'num' }, h('code', null, sr.key))))),
        h('tbody', null, rows.map(({ tp, i }) => h('tr', { 'data-testid': 'lift-history-row', 'data-t': tp.iso },
          h('th', { scope: 'row' }, h('time', { datetime: tp.iso }, dateTime(tp.iso))),
          data.series.map((sr) => {
            const p = sr.points[i];
            return h('td', { class: 'num', 'data-testid': 'lift-history-cell', 'data-treatment': sr.key, 'data-value': isNum(p.y) ? String(p.y) : '' },
              h('div', null, relPct(p.y)), h('div', { class: 'muted small' }, interval(p.ci, relPct)));
          }))))));
  }

  function fillAll() { for (const sl of slots.values()) fill(sl); }

  async function load() {
    if (busy) { again = true; return; }
    busy = true;
    controller = new AbortController();
    try {
      const body = await experiments.resultsHistory(getExp().id, { signal: controller.signal, prompt: false });
      if (stopped) return;
      const next = Array.isArray(body && body.points) ? body.points : [];
      const text = JSON.stringify(next);
      const changed = text !== pointsText || !points || error;
      error = null;
      if (changed) { points = next; pointsText = text; fillAll(); }
    } catch (e) {
      if (stopped || (e && e.name === 'AbortError')) return;
      error = e instanceof ApiError || e instanceof Error ? e : new Error(String(e));
      fillAll();
    } finally {
      busy = false;
      controller = null;
      if (again && !stopped) { again = false; load(); }
    }
  }

  /** A snapshot was shown: fetch the history again if it is a new one. */
  function update(snap) {
    const at = snap ? snap.computed_at : null;
    if (stopped || (at && at === lastComputed)) return;
    lastComputed = at;
    load();
  }

  function stop() {
    stopped = true;
    if (controller) controller.abort();
  }

  return { slot, update, stop };
}
