// /experiments/{id}/results — polls the results snapshot every 2 s (every 15 s while the tab
// is hidden): exposure bars that move as events arrive, the SRM warning, metric summaries, the
// lift table with a forest plot and each metric's lift over time (fetched again with every new
// snapshot), the lift per segment of an exposure attribute (read when a person picks one), and
// for bandits P(best) and weights over time. The status badge and the outcome
// (a stopped experiment's winner) come from the experiment itself, fetched on every poll: a
// snapshot's status is only what it was when that snapshot was computed.

import { ApiError, experiments, getToken } from '../api.js';
import { colorFor, createBarChart, intervalDomain, intervalLegend, intervalPlot, renderLiftAxis, renderLineChart, renderTradeoffChart } from '../charts.js';
import { alertBox, h, mount, setTitle, statusBadge } from '../dom.js';
import { ago, dateTime, int, interval, num, pText, pValue, pct, prob, raw, relPct, riskPct, sig, signed, signedPp, time } from '../format.js';
import { describeDefinition, readDefinitions } from '../metricdefs.js';
import { guardrailBanner, guardrailCard } from '../guardrails.js';
import { computeVerdict, decidingInterval, isBetter, isRateMetric, verdictCard, waitingCard } from '../verdict.js';
import { createLiftHistory } from '../lifthistory.js';
import { createSegments } from '../segments.js';
import { createWhatIf } from '../whatif.js';

export const POLL_VISIBLE_MS = 2000;
export const POLL_HIDDEN_MS = 15000;

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
const isCi = (ci) => Array.isArray(ci) && ci.length === 2 && isNum(ci[0]) && isNum(ci[1]);

/** The multiple-comparison correction of a snapshot's p-values, named for reading. */
export function correctionOf(snap, rows = []) {
  const method = (snap.correction && snap.correction.method) || ((rows.find((r) => r.correction) || {}).correction) || 'holm';
  const known = { holm: { short: 'Holm', name: 'Holm' }, bh: { short: 'BH', name: 'Benjamini\u2013Hochberg' } };
  const { short, name } = known[method] || { short: method, name: method };
  return { method, short, name, across: !!(snap.correction && snap.correction.across_metrics) };
}

/** The anytime-valid interval a row's significance follows: the running one (the intersection
 * of every recompute's), else this recompute's. */
export function runningInterval(row) {
  return isCi(row.anytime_abs_ci_running) ? row.anytime_abs_ci_running : isCi(row.anytime_abs_ci) ? row.anytime_abs_ci : null;
}

function toMs(t) {
  if (isNum(t)) return t < 1e12 ? t * 1000 : t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

export async function render(root, [id], ctx) {
  setTitle('Results');
  mount(root, h('p', { class: 'muted' }, 'Loading…'));
  let exp;
  try {
    exp = await experiments.get(id);
  } catch (e) {
    if (ctx.isCurrent()) mount(root, ctx.errorView(e, 'this experiment'));
    return undefined;
  }
  if (!ctx.isCurrent()) return undefined;
  setTitle(`Results · ${exp.name}`);
  const keys = exp.variants.map((v) => v.key);
  const color = (k) => colorFor(keys, k);

  const badge = h('span', { class: 'head-badge' }, statusBadge(exp.status));
  const computedAt = h('span', { class: 'computed-at', 'data-testid': 'computed-at' }, 'Not computed yet');
  const pollState = h('span', { class: 'poll-state', 'data-testid': 'poll-state' });
  const pollError = h('div', { class: 'poll-error', 'data-testid': 'poll-error', role: 'status' });
  // A tripped guardrail is the first thing on the page, above the outcome and any poll error.
  const guardSlot = h('div', { class: 'guardrail-slot', 'data-testid': 'guardrail-slot' });
  const outcome = h('div', { class: 'results-outcome', 'data-testid': 'results-outcome', role: 'status', 'aria-live': 'polite' });
  const content = h('div', { class: 'results-content', 'data-testid': 'results-content' });

  mount(root,
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
      h('a', { href: '/experiments' }, 'Experiments'), ' / ', h('a', { href: `/experiments/${exp.id}` }, exp.name), ' / Results'),
    h('div', { class: 'page-head' },
      h('div', null,
        h('h1', { tabindex: '-1' }, 'Results ', h('span', { class: 'muted-title' }, exp.name), ' ', badge),
        h('p', { class: 'subtitle' }, computedAt, ' · ', pollState)),
      h('div', { class: 'head-links' },
        h('a', { href: `/experiments/${exp.id}`, class: 'btn', 'data-testid': 'detail-link' }, 'Experiment'),
        h('a', { href: `/api/v1/experiments/${exp.id}/results.csv`, class: 'btn', 'data-testid': 'csv-link', onclick: downloadCsv }, 'Lift table CSV'),
        h('a', { href: `/experiments/${exp.id}/settings`, class: 'btn', 'data-testid': 'settings-link' }, 'Settings'))),
    guardSlot,
    outcome,
    pollError,
    content);
  drawOutcome();

  // The CSV needs the bearer token, so fetch it rather than following the link.
  async function downloadCsv(ev) {
    ev.preventDefault();
    try {
      const resp = await fetch(`/api/v1/experiments/${exp.id}/results.csv`, { headers: { Authorization: `Bearer ${getToken() || ''}` } });
      if (!resp.ok) throw new Error(resp.status === 404 ? 'no results yet' : `HTTP ${resp.status}`);
      const blob = await resp.blob();
      const a = h('a', { href: URL.createObjectURL(blob), download: `${exp.key}-lift.csv` });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    } catch (e) {
      pollError.replaceChildren(alertBox('warning', `Could not download the CSV: ${e.message}`));
    }
  }

  // ---------- the experiment's own status and outcome ----------
  function drawOutcome() {
    if (exp.status !== 'stopped') { mount(outcome); outcome.hidden = true; return; }
    outcome.hidden = false;
    const since = exp.stopped_at ? ` on ${dateTime(exp.stopped_at)}` : '';
    mount(outcome, exp.winner
      ? alertBox('success', h('strong', { 'data-testid': 'results-winner', 'data-winner': exp.winner }, `Stopped${since}. Winner: ${exp.winner}.`),
        ` Every unit that passes targeting now gets ${exp.winner}; the results below are final.`)
      : alertBox('info', h('strong', { 'data-testid': 'results-no-winner' }, `Stopped${since} without a winner.`),
        ' Assignment answers "stopped" and serves no variant; the results below are final.'));
  }

  /** Take the experiment as the server has it now: the badge, the outcome, the bandit banner. */
  function applyExperiment(fresh) {
    if (!fresh || (fresh.status === exp.status && fresh.winner === exp.winner && fresh.version === exp.version)) return;
    exp = fresh;
    badge.replaceChildren(statusBadge(exp.status));
    drawOutcome();
    // The objective's bounds and the definitions may change while running.
    if (panels && lastSnap) { drawVerdict(lastSnap); drawBandit(lastSnap); drawTradeoff(lastSnap); }
  }

  // ---------- panels ----------
  let panels = null; // built on the first snapshot
  let lastJson = '';
  let lastComputed = null;
  let lastSnap = null;
  let tradeoffChoice = null; // the x metric a person picked on the trade-off chart
  const moreOpen = new Set(); // the metrics whose "More numbers" a person opened

  function buildPanels() {
    const verdict = h('div', { class: 'verdict-slot', 'data-testid': 'verdict-slot' });
    const srm = h('div', { class: 'srm-slot', 'data-testid': 'srm-slot' });
    const guardrails = h('div', { class: 'guardrails-slot' });
    const totals = h('p', { class: 'big-number' });
    const barsBox = h('div', { class: 'bars-box' });
    const expTable = h('div', { class: 'table-wrap' });
    const timeline = h('div', { class: 'timeline-box' });
    const exposureCard = h('section', { class: 'card', 'aria-labelledby': 'sec-exposures', 'data-testid': 'exposures' },
      h('h2', { id: 'sec-exposures' }, 'Exposures'),
      totals,
      barsBox,
      h('p', { class: 'hint' }, 'Bars: exposed units per variant (a unit counts once, in the variant of its first exposure). Tick: the share the weights call for.'),
      h('details', null, h('summary', null, 'Show as a table'), expTable),
      timeline);
    const bandit = h('div', { class: 'bandit-slot' });
    const metrics = h('section', { class: 'card', 'aria-labelledby': 'sec-metrics', 'data-testid': 'metrics' },
      h('h2', { id: 'sec-metrics' }, 'Metric summaries'));
    const metricsBody = h('div');
    metrics.appendChild(metricsBody);
    const lift = h('section', { class: 'card', 'aria-labelledby': 'sec-lift', 'data-testid': 'lift' },
      h('h2', { id: 'sec-lift' }, 'Lift: each treatment against control'));
    const liftBody = h('div');
    // The lift per segment: its own card under this one; a one-line hint here while no
    // exposure carries attributes.
    const segments = createSegments({
      getExp: () => exp,
      metricOrder: () => (lastSnap ? metricNames(lastSnap) : []),
      isRate: (m) => (lastSnap ? rateMetric(lastSnap, m) : false),
      valueText,
    });
    lift.append(liftBody, segments.hint);
    // The trade-off card keeps its controls between snapshots (a chosen x metric, focus).
    const tradeoffX = h('select', { id: 'tradeoff-x', 'data-testid': 'tradeoff-x' });
    tradeoffX.addEventListener('change', () => { tradeoffChoice = tradeoffX.value; if (lastSnap) drawTradeoff(lastSnap); });
    const tradeoffIntro = h('p', { class: 'hint', 'data-testid': 'tradeoff-intro' });
    const tradeoffPlot = h('div', { class: 'chart-box' });
    // Focusable: at phone width the table scrolls inside its box, and keyboard users must reach it.
    const tradeoffTable = h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-labelledby': 'tradeoff-table-title' });
    const tradeoff = h('section', { class: 'card', 'aria-labelledby': 'sec-tradeoff', 'data-testid': 'tradeoff', hidden: true },
      h('h2', { id: 'sec-tradeoff' }, 'Trade-off'),
      tradeoffIntro,
      h('div', { class: 'tradeoff-controls' },
        h('div', { class: 'field inline' }, h('label', { for: 'tradeoff-x' }, 'Across (x axis)'), tradeoffX)),
      tradeoffPlot,
      h('h3', { id: 'tradeoff-table-title' }, 'The same as a table'),
      tradeoffTable);
    // The what-if card keeps its choices and its last answer between snapshots.
    const whatif = createWhatIf({ getExp: () => exp, keys });
    // Lift over time keeps one chart per metric between snapshots; drawLift() places them.
    const liftHistory = createLiftHistory({ getExp: () => exp, keys });
    mount(content, verdict, srm, guardrails, exposureCard, bandit, tradeoff, whatif.el, lift, segments.el, metrics);
    const bars = createBarChart(barsBox, { ariaLabel: 'Exposed units per variant', testid: 'exposure-chart' });
    return { verdict, srm, guardrails, whatif, liftHistory, segments, totals, bars, expTable, timeline, bandit, metricsBody, liftBody, tradeoff, tradeoffX, tradeoffIntro, tradeoffPlot, tradeoffTable };
  }

  function showSnapshot(snap) {
    const text = JSON.stringify(snap);
    lastComputed = snap.computed_at;
    updateComputedAt();
    if (text === lastJson && panels) return;
    lastJson = text;
    lastSnap = snap;
    const total = snap.exposures && isNum(snap.exposures.total_units) ? snap.exposures.total_units : 0;
    if (total === 0) {
      // Launched, no exposure yet: one card that says so, not a grid of dashes.
      dropPanels();
      mount(guardSlot, guardrailBanner(snap));
      mount(content, waitingCard(exp, snap));
      return;
    }
    if (!panels) panels = buildPanels();
    drawVerdict(snap);
    // snap.status is deliberately not shown: an older snapshot would put a stopped experiment
    // back to RUNNING until the next recompute. applyExperiment() owns the badge.
    mount(guardSlot, guardrailBanner(snap));
    drawSrm(snap);
    mount(panels.guardrails, guardrailCard(snap));
    drawExposures(snap);
    drawBandit(snap);
    drawTradeoff(snap);
    panels.whatif.update(snap);
    drawLift(snap);
    panels.liftHistory.update(snap);
    panels.segments.update(snap);
    drawMetrics(snap);
  }

  /** Forget the panels (and stop their lift-history and segment fetches): the next snapshot
   * builds them anew. */
  function dropPanels() {
    if (panels) { panels.liftHistory.stop(); panels.segments.stop(); }
    panels = null;
  }

  function drawVerdict(snap) {
    mount(panels.verdict, verdictCard(computeVerdict(snap, exp), exp));
  }

  /** The metrics of a snapshot, primary first, then in the lift table's order, then by name
   * (the stored JSON does not keep its keys' order). */
  function metricNames(snap) {
    const names = Object.keys(snap.metrics || {});
    const lifted = [...new Set((snap.lift || []).map((r) => r.metric))];
    const rank = (m) => (m === snap.primary_metric ? -1 : lifted.includes(m) ? lifted.indexOf(m) : lifted.length);
    return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }

  /** The definition of a metric: the snapshot's, else the experiment's own. */
  function definitionOf(snap, metric) {
    const d = (snap.definitions || {})[metric] || readDefinitions(exp.metrics)[metric];
    return d || { direction: 'increase', stat: 'mean', cap: null };
  }

  function statLabel(stat) { return !stat || stat === 'mean' ? 'mean per unit' : stat; }

  // ---------- trade-off: the objective against a cost or latency statistic ----------
  function drawTradeoff(snap) {
    const t = panels.tradeoff;
    const est = snap.estimates || {};
    const objective = exp.bandit && exp.bandit.objective ? exp.bandit.objective : null;
    const constraints = objective && Array.isArray(objective.constraints) ? objective.constraints : [];
    const yMetric = (objective && objective.metric) || snap.primary_metric;
    const withEstimates = Object.keys(est).filter((m) => Object.values(est[m] || {}).some((e) => e && isNum(e.value)));
    const options = [...new Set([...constraints.map((c) => c.metric), ...Object.keys(est)])].filter((m) => m !== yMetric);
    if (!options.length || !(constraints.length || withEstimates.length >= 2)) { t.hidden = true; return; }
    t.hidden = false;
    const xMetric = options.includes(tradeoffChoice) ? tradeoffChoice : (constraints[0] ? constraints[0].metric : options[0]);
    const sel = panels.tradeoffX;
    const have = [...sel.options].map((o) => o.value);
    if (have.join('\u0000') !== options.join('\u0000')) {
      sel.replaceChildren(...options.map((m) => h('option', { value: m }, `${m} (${statLabel(definitionOf(snap, m).stat)})`)));
    }
    sel.value = xMetric;

    const dx = definitionOf(snap, xMetric);
    const dy = definitionOf(snap, yMetric);
    const order = [...keys, ...Object.keys(est[yMetric] || {}).filter((k) => !keys.includes(k))];
    const pFeasible = (snap.bandit && snap.bandit.p_feasible) || {};
    const boundText = (c) => `${c.metric} ${isNum(c.max) ? '≤' : '≥'} ${num(isNum(c.max) ? c.max : c.min)}`;
    const rows = order.map((k) => {
      const ey = (est[yMetric] || {})[k] || {};
      const ex = (est[xMetric] || {})[k] || {};
      const checks = constraints.map((c) => {
        const e = (est[c.metric] || {})[k];
        const v = e && isNum(e.value) ? e.value : null;
        const ok = v === null ? null : (isNum(c.max) ? v <= c.max : v >= c.min);
        const p = pFeasible[k] && isNum(pFeasible[k][c.metric]) ? pFeasible[k][c.metric] : null;
        return { c, v, ci: e ? e.ci : null, ok, p };
      });
      const broken = checks.filter((ch) => ch.ok === false);
      const feasible = !constraints.length ? null : broken.length ? false : checks.every((ch) => ch.ok === true) ? true : null;
      return { k, ey, ex, checks, broken, feasible };
    });
    const points = rows.filter((r) => isNum(r.ex.value) && isNum(r.ey.value)).map((r) => ({
      key: r.k, label: r.k, color: color(r.k), x: r.ex.value, y: r.ey.value, xci: r.ex.ci, yci: r.ey.ci, feasible: r.feasible,
      title: [
        `${r.k}: ${yMetric} ${statLabel(r.ey.stat || dy.stat)} ${num(r.ey.value)} ${interval(r.ey.ci)}; ${xMetric} ${statLabel(r.ex.stat || dx.stat)} ${num(r.ex.value)} ${interval(r.ex.ci)}`,
        r.feasible === false ? `Infeasible: ${r.broken.map((ch) => `${ch.c.metric} ${num(ch.v)} breaks ${boundText(ch.c)}`).join('; ')}` : r.feasible ? 'Meets every constraint' : null,
        ...r.checks.filter((ch) => ch.p !== null).map((ch) => `P(${boundText(ch.c)}) ${prob(ch.p)}`),
      ].filter(Boolean).join('\n'),
    }));
    const bounds = constraints.filter((c) => c.metric === xMetric).map((c) => ({
      axis: 'x', metric: c.metric, kind: isNum(c.max) ? 'max' : 'min', value: isNum(c.max) ? c.max : c.min, label: `${isNum(c.max) ? 'max' : 'min'} ${num(isNum(c.max) ? c.max : c.min)}`,
    }));
    const others = constraints.filter((c) => c.metric !== xMetric);
    const infeasible = rows.filter((r) => r.feasible === false).map((r) => r.k);
    mount(panels.tradeoffIntro,
      'Each point is a variant: up is a higher ', h('code', null, yMetric),
      ` (${objective ? 'the bandit\u2019s objective' : 'the primary metric'}; ${describeDefinition({ ...dy, cap: null })}), right a higher `,
      h('code', null, xMetric), ` (${describeDefinition(dx)}). Whiskers: 95% intervals both ways. `,
      constraints.length ? `Dashed lines: the bounds on this axis. A variant whose estimate breaks any bound (${constraints.map(boundText).join(', ')}) is greyed.` : '',
      others.length ? ` Pick ${others.map((c) => c.metric).join(' or ')} across to see ${others.length > 1 ? 'their bounds' : 'its bound'}.` : '');
    const yTitle = `${yMetric} · ${statLabel(dy.stat)} · ${dy.direction === 'decrease' ? 'lower is better' : 'higher is better'}`;
    const xTitle = `${xMetric} · ${statLabel(dx.stat)} · ${dx.direction === 'decrease' ? 'lower is better' : 'higher is better'}${isNum(dx.cap) ? ` · capped at ${num(dx.cap)}` : ''}`;
    renderTradeoffChart(panels.tradeoffPlot, {
      points, bounds, xTitle, yTitle, xFormat: (v) => num(v, 3), yFormat: (v) => num(v, 3), testid: 'tradeoff-chart',
      ariaLabel: `Trade-off: ${yMetric} against ${xMetric} per variant, with 95% intervals${bounds.length ? ` and the bound ${bounds.map((b) => b.label).join(', ')}` : ''}.${infeasible.length ? ` Breaking a constraint: ${infeasible.join(', ')}.` : ''} The table below has the same numbers.`,
    });

    // The same numbers as a table, plus P(feasible) per constraint when the bandit has them.
    const conCols = constraints;
    const valueCell = (e) => [h('div', null, num(e.value)), h('div', { class: 'muted small' }, interval(e.ci, (v) => num(v, 3)))];
    mount(panels.tradeoffTable, h('table', { class: 'table compact tradeoff-table', 'data-testid': 'tradeoff-table', 'aria-labelledby': 'tradeoff-table-title' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, 'Variant'),
        h('th', { scope: 'col', class: 'num' }, yMetric, h('br'), h('span', { class: 'th-sub' }, `${statLabel(dy.stat)}, 95% CI`)),
        conCols.some((c) => c.metric === xMetric) ? null : h('th', { scope: 'col', class: 'num' }, xMetric, h('br'), h('span', { class: 'th-sub' }, `${statLabel(dx.stat)}, 95% CI`)),
        conCols.map((c) => h('th', { scope: 'col', class: 'num' }, c.metric, h('br'), h('span', { class: 'th-sub' }, `${statLabel(definitionOf(snap, c.metric).stat)}, ${isNum(c.max) ? '≤' : '≥'} ${num(isNum(c.max) ? c.max : c.min)}`))),
        constraints.length ? h('th', { scope: 'col' }, 'Meets the constraints') : null)),
      h('tbody', null, rows.map((r) => h('tr', { 'data-key': r.k, 'data-testid': 'tradeoff-row', 'data-feasible': r.feasible === null ? 'unknown' : String(r.feasible), class: r.feasible === false ? 'infeasible' : null },
        h('th', { scope: 'row' }, h('span', { class: 'swatch', style: { background: r.feasible === false ? '#a3a9b5' : color(r.k) } }), h('code', null, r.k)),
        h('td', { class: 'num' }, valueCell(r.ey)),
        conCols.some((c) => c.metric === xMetric) ? null : h('td', { class: 'num' }, valueCell(r.ex)),
        r.checks.map((ch) => h('td', { class: 'num', 'data-metric': ch.c.metric, 'data-testid': 'tradeoff-constraint' },
          h('div', { class: ch.ok === false ? 'feasible-no' : null }, ch.v === null ? '—' : num(ch.v), ch.ok === false ? ' ✗' : ch.ok ? ' ✓' : ''),
          h('div', { class: 'muted small' }, interval(ch.ci, (v) => num(v, 3))),
          ch.p !== null ? h('div', { class: 'muted small', 'data-testid': 'p-feasible' }, `P(meets) ${prob(ch.p)}`) : null)),
        constraints.length ? h('td', { 'data-testid': 'tradeoff-feasible' }, r.feasible === false
          ? h('span', { class: 'feasible-no' }, `No: ${r.broken.map((ch) => boundText(ch.c)).join(', ')} broken`)
          : r.feasible ? h('span', { class: 'feasible-yes' }, 'Yes') : h('span', { class: 'muted' }, 'Not known yet')) : null)))));
  }

  function drawSrm(snap) {
    const srm = snap.srm || {};
    if (srm.flagged) {
      mount(panels.srm, h('div', { class: 'alert alert-warning srm-warning', role: 'alert', 'data-testid': 'srm-warning' },
        h('strong', null, '⚠ Sample ratio mismatch. '),
        `Exposed units do not match the configured weights (chi-square ${pText(srm.p_value)}). `,
        'Something is dropping or duplicating exposures for some variants: check assignment and exposure logging before trusting these results.'));
    } else if (isNum(srm.p_value)) {
      mount(panels.srm, h('p', { class: 'srm-ok muted', 'data-testid': 'srm-ok' }, `✓ No sample ratio mismatch (${pText(srm.p_value)}).`));
    } else {
      mount(panels.srm, srm.reason ? h('p', { class: 'muted', 'data-testid': 'srm-ok' }, `SRM check: ${srm.reason}.`) : null);
    }
  }

  function drawExposures(snap) {
    const ex = snap.exposures || {};
    const per = ex.variants || {};
    const order = [...keys, ...Object.keys(per).filter((k) => !keys.includes(k))];
    const total = isNum(ex.total_units) ? ex.total_units : order.reduce((a, k) => a + ((per[k] && per[k].units) || 0), 0);
    mount(panels.totals, h('strong', { 'data-testid': 'total-units', 'data-value': String(total) }, int(total)), ` exposed unit${total === 1 ? '' : 's'}`);
    panels.bars.update(order.map((k) => {
      const v = per[k] || {};
      const units = isNum(v.units) ? v.units : 0;
      const share = isNum(v.share) ? v.share : (total ? units / total : null);
      return {
        key: k,
        label: k,
        value: units,
        color: color(k),
        marker: isNum(v.weight) && total ? v.weight * total : null,
        text: `${int(units)} · ${share === null ? '—' : pct(share)}${isNum(v.weight) ? ` (w ${pct(v.weight, 0)})` : ''}`,
      };
    }));
    mount(panels.expTable, h('table', { class: 'table compact', 'data-testid': 'exposure-table' },
      h('thead', null, h('tr', null, ['Variant', 'Units', 'Events', 'Share', 'Weight'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, order.map((k) => {
        const v = per[k] || {};
        return h('tr', { 'data-key': k },
          h('th', { scope: 'row' }, h('code', null, k)),
          h('td', { class: 'num', 'data-testid': `units-${k}` }, int(v.units ?? 0)),
          h('td', { class: 'num' }, int(v.events ?? 0)),
          h('td', { class: 'num' }, pct(v.share)),
          h('td', { class: 'num' }, pct(v.weight)));
      }))));
    const tl = Array.isArray(ex.timeline) ? ex.timeline : [];
    if (tl.length >= 2) {
      panels.timeline.hidden = false;
      // The timeline holds new exposed units per interval; the chart shows running totals.
      const series = order.map((k) => {
        let run = 0;
        return {
          key: k, label: k, color: color(k),
          points: tl.map((p) => { run += isNum(p[k]) ? p[k] : 0; return { t: toMs(p.t), y: run }; }),
        };
      });
      mount(panels.timeline, h('h3', null, 'Exposed units over time (cumulative)'));
      const box = h('div');
      panels.timeline.appendChild(box);
      renderLineChart(box, { series, yMin: 0, yFormat: (v) => num(v, 3), ariaLabel: 'Exposures over time per variant', height: 180, testid: 'exposure-timeline' });
    } else {
      panels.timeline.hidden = true;
    }
  }

  function drawBandit(snap) {
    const b = snap.bandit;
    if (!b) { mount(panels.bandit); return; }
    const pBest = b.p_best || {};
    const weights = b.weights || {};
    const order = [...keys, ...Object.keys(pBest).filter((k) => !keys.includes(k))];
    const threshold = exp.bandit && isNum(exp.bandit.convergence_threshold) ? exp.bandit.convergence_threshold : 0.95;
    const top = b.top_variant;
    const topP = top && isNum(pBest[top]) ? pBest[top] : null;
    const banner = b.converged
      ? h('div', { class: 'alert alert-success converged', role: 'status', 'data-testid': 'bandit-converged' },
        h('strong', null, `Converged: ${b.converged_variant || top} is the best variant`),
        ` (P(best) ${prob(isNum(pBest[b.converged_variant || top]) ? pBest[b.converged_variant || top] : topP)}`,
        b.converged_at ? `, since ${time(b.converged_at)}` : '', '). ',
        exp.status === 'stopped' ? (exp.winner ? `The experiment is stopped; its winner is ${exp.winner}.` : 'The experiment is stopped without a winner.') : h('span', null, 'Converging does not stop the experiment: ',
          h('a', { href: `/experiments/${exp.id}` }, 'stop it on the experiment page'), ' when you are satisfied.'))
      : h('div', { class: 'alert alert-info', role: 'status', 'data-testid': 'bandit-status' },
        h('strong', null, 'Not converged yet. '),
        top ? `Top variant so far: ${top}${topP !== null ? ` (P(best) ${prob(topP)})` : ''}; converges at P(best) ≥ ${pct(threshold, 0)}.` : 'Waiting for rewards.');
    // The primary metric's plain mean beside its inverse-propensity-weighted mean, when the
    // snapshot has them (exposures with known probabilities): a bandit's plain per-arm means
    // are biased, since each arm's traffic came at other times and weights.
    const primary = snap.primary_metric;
    const prop = snap.propensity && snap.propensity.metrics ? snap.propensity.metrics[primary] : null;
    const meanCell = (v, testid) => h('td', { class: 'num', 'data-testid': testid }, num(v));
    const table = h('div', { class: 'table-wrap' }, h('table', { class: 'table compact', 'data-testid': 'bandit-table' },
      h('thead', null, h('tr', null,
        ['Variant', 'P(best)', 'Weight now'].map((c) => h('th', { scope: 'col', class: c === 'Variant' ? null : 'num' }, c)),
        prop ? [
          h('th', { scope: 'col', class: 'num', title: 'Mean per unit over the units with a known probability' }, h('code', null, primary), h('br'), h('span', { class: 'th-sub' }, 'plain mean')),
          h('th', { scope: 'col', class: 'num', title: 'Inverse-propensity-weighted mean, with its standard error' }, h('code', null, primary), h('br'), h('span', { class: 'th-sub' }, 'weighted mean ± se')),
        ] : null)),
      h('tbody', null, order.map((k) => {
        const pm = prop ? prop[k] || {} : null;
        return h('tr', { class: k === top ? 'is-top' : null, 'data-key': k },
          h('th', { scope: 'row' }, h('span', { class: 'swatch', style: { background: color(k) } }), h('code', null, k), k === top ? h('span', { class: 'tag tag-winner' }, 'top') : null),
          h('td', { class: 'num', 'data-testid': `pbest-${k}`, title: raw(pBest[k]) }, prob(pBest[k])),
          h('td', { class: 'num', 'data-testid': `weight-${k}` }, pct(weights[k])),
          pm ? [meanCell(pm.mean, `plain-mean-${k}`),
            h('td', { class: 'num', 'data-testid': `weighted-mean-${k}` }, num(pm.weighted_mean), isNum(pm.weighted_se) ? h('span', { class: 'muted small' }, ` ± ${num(pm.weighted_se, 2)}`) : null)] : null);
      }))));
    const meansNote = prop ? h('p', { class: 'hint', 'data-testid': 'bandit-means-note' },
      'Plain mean: the mean per unit of ', h('code', null, primary), ' over the units served with a known probability. Weighted mean: each unit weighted by 1/(the probability it was served with). ',
      'A bandit serves each arm at different times and weights, so the plain means can be biased; the weighted ones are not. ',
      'The lift table and the metric summaries use the plain per-unit means (over every exposed unit), not the weighted ones.') : null;
    const hist = Array.isArray(b.history) ? b.history : [];
    const seriesOf = (field) => order.map((k) => ({
      key: k, label: k, color: color(k),
      points: hist.map((p) => ({ t: toMs(p.t), y: p[field] && isNum(p[field][k]) ? p[field][k] : null })),
    }));
    const pChart = h('div', { class: 'chart-box' });
    const wChart = h('div', { class: 'chart-box' });
    mount(panels.bandit, h('section', { class: 'card', 'aria-labelledby': 'sec-bandit', 'data-testid': 'bandit' },
      h('h2', { id: 'sec-bandit' }, 'Bandit'),
      banner,
      table,
      meansNote,
      h('div', { class: 'grid-2 charts' },
        h('div', null, h('h3', null, 'P(best) over time'), pChart),
        h('div', null, h('h3', null, 'Weights over time'), wChart))));
    renderLineChart(pChart, {
      series: seriesOf('p_best'), yMin: 0, yMax: 1, yFormat: (v) => pct(v, 0), ariaLabel: 'Probability of being best over time, per variant',
      threshold, thresholdLabel: `converged at ${pct(threshold, 0)}`, testid: 'pbest-chart',
    });
    renderLineChart(wChart, {
      series: seriesOf('weights'), yMin: 0, yMax: 1, yFormat: (v) => pct(v, 0), ariaLabel: 'Traffic weights over time, per variant', testid: 'weights-chart',
    });
  }

  /** Is this metric a rate (0/1 per unit) in this snapshot? */
  function rateMetric(snap, metric) {
    const def = definitionOf(snap, metric);
    return (!def.stat || def.stat === 'mean') && !isNum(def.cap) && isRateMetric((snap.metrics || {})[metric]);
  }

  /** A value of a metric for reading: a rate as a percentage, a mean with 4 significant figures. */
  function valueText(v, rate) { return rate ? pct(v, Math.abs(v) < 0.1 ? 2 : 1) : sig(v, 4); }

  function drawMetrics(snap) {
    const m = snap.metrics || {};
    const names = metricNames(snap);
    if (!names.length) {
      mount(panels.metricsBody, h('p', { class: 'muted' }, 'No metric events yet. Metrics appear once /events/metric or conversion events arrive.'));
      return;
    }
    mount(panels.metricsBody, names.map((name) => {
      const per = m[name] || {};
      const order = [...keys, ...Object.keys(per).filter((k) => !keys.includes(k))];
      const def = definitionOf(snap, name);
      const rate = rateMetric(snap, name);
      // A quantile metric shows the event-value percentiles; a capped one its cap. A rate's
      // event mean is always 1 (every event is a conversion): it is left out.
      const quantiles = order.some((k) => per[k] && per[k].quantiles);
      const cap = order.map((k) => per[k] && per[k].cap).find(isNum) ?? (isNum(def.cap) ? def.cap : null);
      const th = (text, title, extra = {}) => h('th', { scope: 'col', class: 'num', title, ...extra }, text);
      return h('div', { class: 'metric-block', 'data-testid': `metric-summary-${name}`, 'data-metric': name, 'data-rate': rate ? 'true' : 'false' },
        h('h3', null, h('code', null, name), name === snap.primary_metric ? h('span', { class: 'tag' }, 'primary') : null,
          h('span', { class: 'tag tag-def', 'data-testid': 'metric-definition' }, describeDefinition({ ...def, cap: null })),
          rate ? h('span', { class: 'tag', 'data-testid': 'metric-rate', title: 'Every unit with an event has a total of 1: read as the share of exposed units' }, 'rate') : null,
          cap !== null ? h('span', { class: 'tag tag-cap', 'data-testid': 'metric-cap', title: 'A unit\u2019s total above the cap counts as the cap' }, `cap ${num(cap)} per unit`) : null),
        h('div', { class: 'table-wrap' }, h('table', { class: 'table compact stack metric-table' },
          h('thead', null, h('tr', null,
            h('th', { scope: 'col' }, 'Variant'),
            rate
              ? th('rate', 'Units with an event / exposed units')
              : th(cap !== null ? 'per-unit mean (capped)' : 'per-unit mean', `Sum of values per exposed unit (units without events count as 0)${cap !== null ? `; each unit capped at ${num(cap)}` : ''}`),
            th('events', 'Metric events received'),
            rate ? null : th('event mean', 'Mean value of one event'),
            quantiles ? ['p50', 'p95', 'p99'].map((q) => th(q, `${q} of the event values`)) : null,
            th('units with events', 'Exposed units with at least one event'),
            rate ? null : th('sum', 'Sum of event values'),
            rate ? null : th('unit sd', 'Standard deviation of the per-unit totals'))),
          h('tbody', null, order.map((k) => {
            const s = per[k] || {};
            const q = s.quantiles || {};
            const cell = (label, testid, v, text) => h('td', { class: 'num', 'data-label': label, 'data-testid': testid, title: raw(v) }, text);
            const sd = isNum(s.unit_variance) ? Math.sqrt(s.unit_variance) : null;
            return h('tr', { 'data-key': k },
              h('th', { scope: 'row' }, h('code', null, k), name === snap.primary_metric && k === snap.control ? h('span', { class: 'muted small' }, ' control') : null),
              rate
                ? h('td', { class: 'num', 'data-label': 'rate', 'data-testid': 'unit-mean', title: raw(s.unit_mean) },
                  h('div', null, valueText(s.unit_mean, true)),
                  h('div', { class: 'muted small', 'data-testid': 'rate-counts' }, `${int(s.sum)} / ${int(s.exposed_units)}`))
                : cell('per-unit mean', 'unit-mean', s.unit_mean, sig(s.unit_mean, 4)),
              cell('events', 'count', s.count, int(s.count ?? 0)),
              rate ? null : cell('event mean', 'mean', s.mean, sig(s.mean, 4)),
              quantiles ? ['p50', 'p95', 'p99'].map((n) => h('td', { class: 'num quantile-cell', 'data-label': n, 'data-testid': n, title: raw(q[n]) }, num(q[n]))) : null,
              cell('units with events', 'units', s.units, int(s.units)),
              rate ? null : cell('sum', 'sum', s.sum, sig(s.sum, 6)),
              rate ? null : cell('unit sd', 'unit-sd', sd, sig(sd, 3)));
          })))));
    }));
  }

  /** The CUPED line of a lift row whose metric names a covariate, else null. */
  function cupedLine(r, abs) {
    const c = r.cuped;
    if (!c || typeof c !== 'object') return null;
    const cov = c.covariate || 'the covariate';
    const attrs = { class: 'cuped-line', 'data-testid': 'cuped-line', 'data-treatment': r.treatment, 'data-covariate': cov };
    const head = [h('span', { class: 'tag tag-cuped' }, 'CUPED'), ' ', h('code', null, r.treatment), ' adjusted for ', h('code', null, cov), ': '];
    if (!isNum(c.abs_lift)) return h('p', attrs, head, `not computed \u2014 ${c.reason || 'no estimate yet'}.`);
    const vr = c.variance_reduction;
    return h('p', attrs, head,
      h('span', { class: 'strong', 'data-testid': 'cuped-rel', 'data-value': raw(c.rel_lift), title: raw(c.rel_lift) }, relPct(c.rel_lift)), ' ',
      h('span', { 'data-testid': 'cuped-ci', 'data-lo': raw(c.rel_ci && c.rel_ci[0]), 'data-hi': raw(c.rel_ci && c.rel_ci[1]), title: `Welch 95% interval of the adjusted relative lift: ${raw(c.rel_ci && c.rel_ci[0])} to ${raw(c.rel_ci && c.rel_ci[1])}` }, interval(c.rel_ci, relPct)),
      h('span', { class: 'muted' }, ' (absolute ', h('span', { 'data-testid': 'cuped-abs', title: `${raw(c.abs_lift)} [${raw(c.abs_ci && c.abs_ci[0])}, ${raw(c.abs_ci && c.abs_ci[1])}]` }, `${abs(c.abs_lift)} ${interval(c.abs_ci, abs)}`), ')'),
      isNum(vr) ? [' \u2014 ', h('span', { 'data-testid': 'cuped-reduction', 'data-value': raw(vr), title: `1 \u2212 se\u00b2(adjusted) / se\u00b2(plain) = ${raw(vr)}` },
        vr >= 0 ? `variance reduced by ${pct(vr, 0)} using ${cov}` : `variance ${pct(-vr, 0)} higher using ${cov}: read the plain lift`)] : null,
      c.reason ? ` (${c.reason})` : null, '.');
  }

  /** Per metric, behind an expander: each treatment's risks, both anytime intervals and how
   * significance follows them, the p-values before and after the correction, CUPED's details. */
  function moreNumbers(metric, list, { abs, corr, mode, alpha }) {
    const withCuped = list.some((r) => r.cuped && isNum(r.cuped.abs_lift));
    const details = h('details', { class: 'lift-more', 'data-testid': 'lift-more', open: moreOpen.has(metric) });
    details.addEventListener('toggle', () => { if (details.open) moreOpen.add(metric); else moreOpen.delete(metric); });
    return mount(details,
      h('summary', { 'data-testid': 'lift-more-toggle' }, `More numbers: risk, anytime intervals, p-values${withCuped ? ', CUPED' : ''}`),
      list.map((r) => {
        const running = runningInterval(r);
        const rel = decidingInterval({ ...r, rel_ci: null }, 'sequential');
        const adjP = r.p_value_adjusted ?? r.p_value_holm;
        const adjAny = r.anytime_p_value_adjusted ?? r.anytime_p_value_holm;
        const excludes = running ? running[0] > 0 || running[1] < 0 : false;
        const why = mode === 'fixed'
          ? `Fixed-horizon analysis: significance follows the ${corr.name}-adjusted Welch p (${r.significant ? 'significant' : 'not significant'}).`
          : r.significant ? 'It excludes 0: significant.'
            : excludes ? `It excludes 0, but the ${corr.name}-adjusted anytime p (${pValue(adjAny)}) is not below ${alpha} yet: not significant yet.`
              : 'It includes 0: not significant yet.';
        const c = r.cuped && isNum(r.cuped.abs_lift) ? r.cuped : null;
        return h('div', { class: 'lift-more-row', 'data-testid': 'lift-more-row', 'data-treatment': r.treatment },
          h('h4', null, h('code', null, r.treatment), ' vs ', h('code', null, r.control)),
          h('ul', { class: 'lift-more-list' },
            h('li', { 'data-testid': 'risk-line' },
              h('span', { 'data-testid': 'risk-ship' }, `Risk if you ship ${r.treatment}: ${riskPct(r.risk_treatment)}`), ' \u00b7 ',
              h('span', { 'data-testid': 'risk-keep' }, `risk if you keep ${r.control}: ${riskPct(r.risk_control)}`),
              h('span', { class: 'muted' }, ` (the expected loss of that choice, as a share of the control mean; chance to beat ${prob(r.chance_to_beat)})`)),
            h('li', { 'data-testid': 'running-line', 'data-significant': r.significant ? 'true' : 'false' },
              'Running anytime-valid interval ', h('span', { 'data-testid': 'running-abs' }, interval(running, abs)),
              rel ? [' (relative ', h('span', { 'data-testid': 'running-rel', 'data-lo': raw(rel.ci[0]), 'data-hi': raw(rel.ci[1]) }, interval(rel.ci, relPct)), ')'] : null,
              `, the intersection of every recompute\u2019s; this recompute\u2019s alone ${interval(r.anytime_abs_ci, abs)}. `, why),
            h('li', { 'data-testid': 'p-line' },
              `Welch p ${pValue(r.p_value)}, ${corr.name}-adjusted ${pValue(adjP)}; anytime p ${pValue(r.anytime_p_value)}, ${corr.name}-adjusted ${pValue(adjAny)}.`),
            c ? h('li', { 'data-testid': 'cuped-details' },
              `CUPED with ${c.covariate}: \u03b8 = ${sig(c.theta, 4)}; adjusted means ${sig(c.control_mean, 4)} and ${sig(c.treatment_mean, 4)} (\u0233 \u2212 \u03b8\u00b7x\u0304: only their difference reads); `,
              `Welch p ${pValue(c.p_value)}; anytime-valid interval ${interval(c.anytime_abs_ci, abs)} (anytime p ${pValue(c.anytime_p_value)}); `,
              `standard error ${sig(c.se, 3)} against ${sig(r.se, 3)} plain. Not corrected for multiple comparisons: the significance above is the plain comparison\u2019s.`) : null));
      }));
  }

  function drawLift(snap) {
    // Drawn again only when what it shows changed (not on every recompute): hover, focus and
    // scroll positions stay put while the numbers do.
    const key = JSON.stringify([snap.lift, snap.primary_metric, snap.analysis_mode, exp.analysis_mode, snap.correction,
      snap.alpha, snap.metrics, snap.definitions, exp.metrics]);
    if (panels.liftKey === key) return;
    panels.liftKey = key;
    const rows = Array.isArray(snap.lift) ? snap.lift : [];
    if (!rows.length) {
      mount(panels.liftBody, h('p', { class: 'muted' }, 'No comparisons yet: the lift table needs exposed units in the control and a treatment.'));
      return;
    }
    const byMetric = new Map();
    for (const r of rows) {
      if (!byMetric.has(r.metric)) byMetric.set(r.metric, []);
      byMetric.get(r.metric).push(r);
    }
    const ordered = [...byMetric].sort(([a], [b]) => (a === snap.primary_metric ? -1 : b === snap.primary_metric ? 1 : 0));
    const mode = snap.analysis_mode || exp.analysis_mode || 'sequential';
    const corr = correctionOf(snap, rows);
    const alpha = isNum(snap.alpha) ? snap.alpha : 0.05;
    mount(panels.liftBody,
      h('p', { class: 'hint', 'data-testid': 'lift-rule', 'data-mode': mode }, mode === 'fixed'
        ? `Significant: ${corr.name}-adjusted Welch p-value < ${alpha} (fixed-horizon analysis: read it once, at the planned sample size).`
        : `Significant: the running anytime-valid interval excludes 0 and the ${corr.name}-adjusted anytime p-value < ${alpha} \u2014 safe to watch live, however often you look; once significant, a comparison stays so.`,
        ' ', h('span', { 'data-testid': 'lift-correction', 'data-method': corr.method, 'data-across': String(corr.across) },
          `p-values adjusted with ${corr.name} ${corr.across ? 'over every metric\u2019s comparisons together' : 'over each metric\u2019s treatments'}.`),
        ' Green: better, red: worse (significant); grey: not clear yet. Hover a number for its exact value; \u201cMore numbers\u201d under a table has the risks, both anytime intervals and the p-values.'),
      ordered.map(([metric, list]) => {
        // The forest plot draws the running anytime interval: the one significance follows.
        const plotted = list.map((r) => ({ ...r, anytime_abs_ci: runningInterval(r) }));
        const domain = intervalDomain(plotted);
        const stat = (list[0] && list[0].stat) || definitionOf(snap, metric).stat || 'mean';
        const rate = stat === 'mean' && rateMetric(snap, metric);
        const vt = (v) => valueText(v, rate);
        const abs = (v) => (rate ? signedPp(v) : signed(v, 3));
        const toneOf = (r) => (r.significant ? (isBetter(r) ? 'good' : 'bad') : 'neutral');
        const axisBox = h('div', { class: 'chart-box lift-axis-box' });
        const block = h('div', { class: 'lift-block', 'data-testid': `lift-${metric}` },
          h('h3', { class: 'lift-title' }, h('code', null, metric), metric === snap.primary_metric ? h('span', { class: 'tag' }, 'primary') : null,
            h('span', { class: 'muted small' }, list[0] && list[0].goal === 'minimize' ? ' lower is better' : ' higher is better')),
          axisBox,
          // Focusable: where the window is too narrow for every column the table scrolls in its box.
          h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': `Lift of ${metric}: each treatment against control` },
            h('table', { class: 'table lift-table stack', 'data-testid': 'lift-table', 'data-metric': metric },
              h('caption', null, h('code', null, metric), metric === snap.primary_metric ? ' (primary)' : '',
                stat !== 'mean' ? ` · ${stat} of event values` : rate ? ' · rate' : '',
                h('span', { 'data-testid': 'lift-direction' }, list[0] && list[0].goal === 'minimize' ? ' · lower is better' : ' · higher is better')),
              h('thead', null, h('tr', null,
                h('th', { scope: 'col' }, 'Treatment', h('br'), h('span', { class: 'th-sub' }, 'vs control')),
                h('th', { scope: 'col', class: 'num' }, 'Control', h('br'), h('span', { class: 'th-sub' }, stat === 'mean' ? (rate ? 'rate' : 'mean') : stat)),
                h('th', { scope: 'col', class: 'num' }, 'Treatment', h('br'), h('span', { class: 'th-sub' }, stat === 'mean' ? (rate ? 'rate' : 'mean') : stat)),
                h('th', { scope: 'col', class: 'num' }, 'Rel lift', h('br'), h('span', { class: 'th-sub' }, '95% CI')),
                h('th', { scope: 'col', class: 'num' }, 'Abs lift', h('br'), h('span', { class: 'th-sub' }, '95% CI')),
                h('th', { scope: 'col', class: 'plot-head' }, 'Interval'),
                h('th', { scope: 'col', class: 'num' }, 'p-value', h('br'), h('span', { class: 'th-sub', 'data-testid': 'p-correction', 'data-method': corr.method },
                  corr.short !== corr.name ? h('abbr', { title: corr.name }, corr.short) : corr.short, '-adjusted')),
                h('th', { scope: 'col', class: 'num' }, 'Anytime CI', h('br'), h('span', { class: 'th-sub' }, 'running \u00b7 adj. p')),
                h('th', { scope: 'col', class: 'num', title: 'The chance the treatment beats control; beneath, the risk if you ship it: the expected loss of that choice, as a share of the control mean' },
                  'Chance', h('br'), h('span', { class: 'th-sub' }, 'to beat \u00b7 risk')),
                h('th', { scope: 'col' }, 'Significant'))),
              h('tbody', null, list.map((r, i) => {
                const good = isBetter(r);
                const running = runningInterval(r);
                const adjP = r.p_value_adjusted ?? r.p_value_holm;
                const adjAny = r.anytime_p_value_adjusted ?? r.anytime_p_value_holm;
                const tone = toneOf(r);
                const dir = r.significant ? (good ? 'better' : 'worse') : 'unclear';
                const units = (r.metric === snap.primary_metric && rate) ? (snap.metrics[metric] || {}) : null;
                const sub = (k) => (units && units[k] ? h('div', { class: 'muted small', 'data-testid': 'rate-counts' }, `${int(units[k].sum)} / ${int(units[k].exposed_units)}`) : null);
                return h('tr', { class: `lift-row tone-${tone}`, 'data-testid': 'lift-row', 'data-treatment': r.treatment, 'data-significant': r.significant ? 'true' : 'false' },
                  h('th', { scope: 'row' }, h('code', null, r.treatment),
                    h('div', { class: 'muted small' }, 'vs ', h('code', null, r.control)),
                    isNum(r.treatment_units) ? h('div', { class: 'muted small' }, `${int(r.treatment_units)} / ${int(r.control_units)} ${stat === 'mean' ? 'units' : 'events'}`) : null),
                  h('td', { class: 'num', 'data-label': 'Control', 'data-testid': 'control-mean', title: raw(r.control_mean) }, h('div', null, vt(r.control_mean)), sub(r.control)),
                  h('td', { class: 'num', 'data-label': 'Treatment', 'data-testid': 'treatment-mean', title: raw(r.treatment_mean) }, h('div', null, vt(r.treatment_mean)), sub(r.treatment)),
                  h('td', { class: `num dir-${dir}`, 'data-label': 'Rel lift (95% CI)', 'data-testid': 'rel-lift', title: `${raw(r.rel_lift)} [${raw(r.rel_ci && r.rel_ci[0])}, ${raw(r.rel_ci && r.rel_ci[1])}]` },
                    h('div', { class: 'strong' }, relPct(r.rel_lift)), h('div', { class: 'small' }, interval(r.rel_ci, relPct))),
                  h('td', { class: 'num', 'data-label': 'Abs lift (95% CI)', title: `${raw(r.abs_lift)} [${raw(r.abs_ci && r.abs_ci[0])}, ${raw(r.abs_ci && r.abs_ci[1])}]` },
                    h('div', null, abs(r.abs_lift)), h('div', { class: 'muted small' }, interval(r.abs_ci, abs))),
                  h('td', { class: 'plot-cell', 'data-label': 'Interval' }, intervalPlot(plotted[i], domain, { tone, width: 100 })),
                  h('td', { class: 'num', 'data-label': `p-value (${corr.short}-adjusted)`, title: `p ${raw(r.p_value)}, ${corr.name}-adjusted ${raw(adjP)}` },
                    // One box per cell: stacked on a phone, the two lines stay one column.
                    h('div', null, h('div', { 'data-testid': 'p-value' }, pValue(r.p_value)), h('div', { class: 'muted small', 'data-testid': 'p-adjusted' }, pValue(adjP)))),
                  h('td', {
                    class: 'num', 'data-label': 'Anytime CI, running (adj. p)',
                    title: `running anytime-valid 95% interval ${raw(running && running[0])} to ${raw(running && running[1])} (this recompute's alone: ${raw(r.anytime_abs_ci && r.anytime_abs_ci[0])} to ${raw(r.anytime_abs_ci && r.anytime_abs_ci[1])}); anytime p ${raw(r.anytime_p_value)}, ${corr.name}-adjusted ${raw(adjAny)}`,
                  },
                  h('div', null,
                    h('div', { class: 'small', 'data-testid': 'anytime-running', 'data-lo': raw(running && running[0]), 'data-hi': raw(running && running[1]) }, interval(running, abs)),
                    h('div', { class: 'muted small', 'data-testid': 'anytime-p-adjusted' }, pValue(adjAny)))),
                  h('td', {
                    class: 'num', 'data-label': 'Chance to beat (risk)',
                    title: `chance to beat ${raw(r.chance_to_beat)}; risk if you ship ${r.treatment} ${raw(r.risk_treatment)}, if you keep ${r.control} ${raw(r.risk_control)} (expected loss, as a share of the control mean)`,
                  },
                  h('div', null,
                    h('div', { 'data-testid': 'chance-to-beat', 'data-value': raw(r.chance_to_beat) }, prob(r.chance_to_beat)),
                    h('div', { class: 'muted small', 'data-testid': 'risk-treatment', 'data-value': raw(r.risk_treatment) }, `risk ${riskPct(r.risk_treatment)}`))),
                  h('td', { class: 'sig-cell', 'data-label': 'Significant' }, r.significant
                    ? h('span', { class: `sig sig-${tone}`, 'data-testid': 'significant' }, good ? '✓ Yes, better' : '✓ Yes, worse')
                    : [h('span', { class: 'muted', 'data-testid': 'not-significant' }, 'Not yet'),
                      r.reason ? h('div', { class: 'muted small reason' }, r.reason) : null]));
              })))),
          // CUPED: the regression-adjusted lift beside the plain one, a line per treatment.
          list.map((r) => cupedLine(r, abs)),
          moreNumbers(metric, list, { abs, corr, mode, alpha }),
          // The same treatments over time, from the stored history (kept between snapshots).
          panels.liftHistory.slot(metric));
        // One wide plot: every treatment on the relative-lift axis, zero marked.
        const lanes = list.map((r) => {
          const dec = decidingInterval({ ...r, rel_ci: null }, 'sequential');
          return {
            key: r.treatment, label: r.treatment, tone: toneOf(r), rel: r.rel_lift, welch: r.rel_ci,
            anytime: dec && dec.kind === 'anytime' ? dec.ci : null,
            title: `${r.treatment} vs ${r.control}: ${relPct(r.rel_lift)}, Welch 95% ${interval(r.rel_ci, relPct)}, anytime-valid ${dec ? interval(dec.ci, relPct) : '—'}`,
          };
        });
        queueMicrotask(() => renderLiftAxis(axisBox, {
          lanes, format: relPct, testid: `lift-axis-${metric}`,
          ariaLabel: `Relative lift of ${metric} per treatment against ${list[0].control}, with Welch and anytime-valid 95% intervals; the table below has the numbers.`,
        }));
        return block;
      }),
      intervalLegend());
  }

  function showNoResults(err) {
    dropPanels();
    lastJson = '';
    guardSlot.replaceChildren();
    const tips = [];
    if (exp.status === 'draft') tips.push(h('li', null, 'This experiment is a draft: ', h('a', { href: `/experiments/${exp.id}` }, 'launch it'), ' so units get assigned.'));
    tips.push(h('li', null, 'No exposure movement? Confirm the model router calls ', h('code', null, 'POST /api/v1/assign'), ' and logs ', h('code', null, 'POST /api/v1/events/exposure'), ' (or assigns with ', h('code', null, 'log_exposure: true'), ').'));
    tips.push(h('li', null, 'No metric movement? Confirm ', h('code', null, '/api/v1/events/metric'), ' or conversion events reach ', h('code', null, '/api/v1/events'), '.'));
    mount(content, h('section', { class: 'card empty no-results', 'data-testid': 'no-results' },
      h('h2', null, 'No results yet'),
      exp.status === 'draft' ? null : h('p', { class: 'eta', 'data-testid': 'first-results-eta' }, h('strong', null, `First results in about ${firstResultsEta(err)} s.`),
        ' The server computes a snapshot on its next recompute, even before the first exposure.'),
      h('p', null, 'Results appear a few seconds after the first exposures are logged: the server recomputes them every few seconds. This page checks again every 2 seconds.'),
      h('ul', null, tips)));
  }

  /** Seconds until the first snapshot: the server's recompute interval (its 404 names it) plus
   * this page's 2 s poll, at least 5. */
  function firstResultsEta(err) {
    const m = err && err.message ? /every ([\d.]+) s/.exec(err.message) : null;
    const every = m ? Number(m[1]) : 3;
    return Math.max(5, Math.ceil(every + POLL_VISIBLE_MS / 1000));
  }

  function updateComputedAt() {
    if (!lastComputed) { computedAt.textContent = 'Not computed yet'; return; }
    computedAt.replaceChildren('Computed at ', h('time', { datetime: lastComputed }, time(lastComputed)), ` (${ago(lastComputed)})`);
  }

  // ---------- polling ----------
  let stopped = false;
  let timer = null;
  let inflight = false;
  let controller = null;

  function interval_() { return document.hidden ? POLL_HIDDEN_MS : POLL_VISIBLE_MS; }
  function setPollState() {
    pollState.textContent = document.hidden ? `Tab hidden: checking every ${POLL_HIDDEN_MS / 1000} s` : `Live: checking every ${POLL_VISIBLE_MS / 1000} s`;
    pollState.dataset.interval = String(interval_());
  }
  function schedule() {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(tick, interval_());
  }
  async function tick() {
    if (stopped || inflight) return;
    inflight = true;
    controller = new AbortController();
    // The experiment alongside the snapshot: its status and winner change without a recompute.
    const expTask = experiments.get(exp.id, { signal: controller.signal, prompt: false })
      .then((fresh) => { if (!stopped) applyExperiment(fresh); })
      .catch(() => { /* the snapshot's own error handling below says what went wrong */ });
    try {
      const snap = await experiments.results(exp.id, { signal: controller.signal });
      if (stopped) return;
      pollError.replaceChildren();
      showSnapshot(snap);
    } catch (e) {
      if (stopped || (e && e.name === 'AbortError')) return;
      if (e instanceof ApiError && e.status === 404) {
        pollError.replaceChildren();
        if (!content.querySelector('[data-testid=no-results]')) showNoResults(e);
        lastComputed = null;
        updateComputedAt();
      } else if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        stopped = true;
        mount(content, ctx.errorView(e, 'the results page'));
        pollState.textContent = 'Stopped checking';
        return;
      } else {
        pollError.replaceChildren(alertBox('warning', `Could not refresh the results: ${e.message}. Retrying…`));
      }
    } finally {
      await expTask;
      inflight = false;
      controller = null;
      if (!stopped) { setPollState(); schedule(); }
    }
  }
  function onVisibility() {
    setPollState();
    if (!document.hidden) { clearTimeout(timer); tick(); } else schedule();
  }
  document.addEventListener('visibilitychange', onVisibility);
  setPollState();
  await tick();

  return () => {
    stopped = true;
    clearTimeout(timer);
    dropPanels();
    if (controller) controller.abort();
    document.removeEventListener('visibilitychange', onVisibility);
  };
}
