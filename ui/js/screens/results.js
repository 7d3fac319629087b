// /experiments/{id}/results — polls the results snapshot every 2 s (every 15 s while the tab
// is hidden): exposure bars that move as events arrive, the SRM warning, metric summaries, the
// lift table with a forest plot, and for bandits P(best) and weights over time.

import { ApiError, experiments, getToken } from '../api.js';
import { colorFor, createBarChart, intervalDomain, intervalLegend, intervalPlot, renderLineChart } from '../charts.js';
import { alertBox, h, mount, setTitle, statusBadge } from '../dom.js';
import { ago, int, interval, num, pText, pValue, pct, signed, signedPct, time } from '../format.js';

export const POLL_VISIBLE_MS = 2000;
export const POLL_HIDDEN_MS = 15000;

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

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
    pollError,
    content);

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

  // ---------- panels ----------
  let panels = null; // built on the first snapshot
  let lastJson = '';
  let lastComputed = null;

  function buildPanels() {
    const srm = h('div', { class: 'srm-slot', 'data-testid': 'srm-slot' });
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
    lift.append(liftBody);
    mount(content, srm, exposureCard, bandit, lift, metrics);
    const bars = createBarChart(barsBox, { ariaLabel: 'Exposed units per variant', testid: 'exposure-chart' });
    return { srm, totals, bars, expTable, timeline, bandit, metricsBody, liftBody };
  }

  function showSnapshot(snap) {
    const text = JSON.stringify(snap);
    lastComputed = snap.computed_at;
    updateComputedAt();
    if (text === lastJson && panels) return;
    lastJson = text;
    if (!panels) panels = buildPanels();
    if (snap.status && snap.status !== exp.status) {
      exp = { ...exp, status: snap.status };
      badge.replaceChildren(statusBadge(exp.status));
    }
    drawSrm(snap);
    drawExposures(snap);
    drawBandit(snap);
    drawLift(snap);
    drawMetrics(snap);
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
        ` (P(best) ${pct(isNum(pBest[b.converged_variant || top]) ? pBest[b.converged_variant || top] : topP)}`,
        b.converged_at ? `, since ${time(b.converged_at)}` : '', '). ',
        exp.status === 'stopped' ? 'The experiment is stopped.' : h('span', null, 'Converging does not stop the experiment: ',
          h('a', { href: `/experiments/${exp.id}` }, 'stop it on the experiment page'), ' when you are satisfied.'))
      : h('div', { class: 'alert alert-info', role: 'status', 'data-testid': 'bandit-status' },
        h('strong', null, 'Not converged yet. '),
        top ? `Top variant so far: ${top}${topP !== null ? ` (P(best) ${pct(topP)})` : ''}; converges at P(best) ≥ ${pct(threshold, 0)}.` : 'Waiting for rewards.');
    const table = h('div', { class: 'table-wrap' }, h('table', { class: 'table compact', 'data-testid': 'bandit-table' },
      h('thead', null, h('tr', null, ['Variant', 'P(best)', 'Weight now'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', null, order.map((k) => h('tr', { class: k === top ? 'is-top' : null, 'data-key': k },
        h('th', { scope: 'row' }, h('span', { class: 'swatch', style: { background: color(k) } }), h('code', null, k), k === top ? h('span', { class: 'tag tag-winner' }, 'top') : null),
        h('td', { class: 'num', 'data-testid': `pbest-${k}` }, pct(pBest[k])),
        h('td', { class: 'num', 'data-testid': `weight-${k}` }, pct(weights[k])))))));
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

  function drawMetrics(snap) {
    const m = snap.metrics || {};
    const names = Object.keys(m);
    if (!names.length) {
      mount(panels.metricsBody, h('p', { class: 'muted' }, 'No metric events yet. Metrics appear once /events/metric or conversion events arrive.'));
      return;
    }
    mount(panels.metricsBody, names.map((name) => {
      const per = m[name] || {};
      const order = [...keys, ...Object.keys(per).filter((k) => !keys.includes(k))];
      return h('div', { class: 'metric-block', 'data-testid': `metric-summary-${name}`, 'data-metric': name },
        h('h3', null, h('code', null, name), name === snap.primary_metric ? h('span', { class: 'tag' }, 'primary') : null),
        h('div', { class: 'table-wrap' }, h('table', { class: 'table compact' },
          h('thead', null, h('tr', null,
            h('th', { scope: 'col' }, 'Variant'),
            h('th', { scope: 'col', class: 'num' }, 'count'),
            h('th', { scope: 'col', class: 'num' }, 'mean'),
            h('th', { scope: 'col', class: 'num', title: 'Sum of values per exposed unit (units without events count as 0)' }, 'per-unit mean'),
            h('th', { scope: 'col', class: 'num' }, 'units with events'),
            h('th', { scope: 'col', class: 'num' }, 'sum'),
            h('th', { scope: 'col', class: 'num' }, 'unit variance'))),
          h('tbody', null, order.map((k) => {
            const s = per[k] || {};
            return h('tr', { 'data-key': k },
              h('th', { scope: 'row' }, h('code', null, k)),
              h('td', { class: 'num', 'data-testid': 'count' }, int(s.count ?? 0)),
              h('td', { class: 'num', 'data-testid': 'mean' }, num(s.mean)),
              h('td', { class: 'num', 'data-testid': 'unit-mean' }, num(s.unit_mean)),
              h('td', { class: 'num' }, int(s.units)),
              h('td', { class: 'num' }, num(s.sum)),
              h('td', { class: 'num' }, num(s.unit_variance)));
          })))));
    }));
  }

  function drawLift(snap) {
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
    const mode = snap.analysis_mode || exp.analysis_mode || 'sequential';
    mount(panels.liftBody,
      h('p', { class: 'hint' }, mode === 'fixed'
        ? 'Significant: Holm-adjusted Welch p-value < 0.05 (fixed-horizon analysis: read it once, at the planned sample size).'
        : 'Significant: Holm-adjusted anytime-valid p-value < 0.05 — safe to watch live, however often you look.'),
      intervalLegend(),
      [...byMetric].map(([metric, list]) => {
        const domain = intervalDomain(list);
        return h('div', { class: 'table-wrap lift-block', 'data-testid': `lift-${metric}` },
          h('table', { class: 'table lift-table', 'data-testid': 'lift-table', 'data-metric': metric },
            h('caption', null, h('code', null, metric), metric === snap.primary_metric ? ' (primary)' : '', list[0] && list[0].goal === 'minimize' ? ' · lower is better' : ''),
            h('thead', null, h('tr', null,
              h('th', { scope: 'col' }, 'Treatment', h('br'), h('span', { class: 'th-sub' }, 'vs control')),
              h('th', { scope: 'col', class: 'num' }, 'Control', h('br'), h('span', { class: 'th-sub' }, 'mean')),
              h('th', { scope: 'col', class: 'num' }, 'Treatment', h('br'), h('span', { class: 'th-sub' }, 'mean')),
              h('th', { scope: 'col', class: 'num' }, 'Abs lift', h('br'), h('span', { class: 'th-sub' }, '95% CI')),
              h('th', { scope: 'col', class: 'plot-head' }, 'Interval'),
              h('th', { scope: 'col', class: 'num' }, 'Rel lift', h('br'), h('span', { class: 'th-sub' }, '95% CI')),
              h('th', { scope: 'col', class: 'num' }, 'p-value', h('br'), h('span', { class: 'th-sub' }, 'Holm')),
              h('th', { scope: 'col', class: 'num' }, 'Anytime CI', h('br'), h('span', { class: 'th-sub' }, 'anytime p')),
              h('th', { scope: 'col', class: 'num' }, 'Chance', h('br'), h('span', { class: 'th-sub' }, 'to beat')),
              h('th', { scope: 'col' }, 'Significant'))),
            h('tbody', null, list.map((r) => {
              const good = r.goal === 'minimize' ? (r.abs_lift < 0) : (r.abs_lift > 0);
              const tone = r.significant ? (good ? 'good' : 'bad') : 'neutral';
              return h('tr', { class: `lift-row tone-${tone}`, 'data-testid': 'lift-row', 'data-treatment': r.treatment, 'data-significant': r.significant ? 'true' : 'false' },
                h('th', { scope: 'row' }, h('code', null, r.treatment),
                  h('div', { class: 'muted small' }, 'vs ', h('code', null, r.control)),
                  isNum(r.treatment_units) ? h('div', { class: 'muted small' }, `${int(r.treatment_units)} / ${int(r.control_units)} units`) : null),
                h('td', { class: 'num', 'data-testid': 'control-mean' }, num(r.control_mean)),
                h('td', { class: 'num', 'data-testid': 'treatment-mean' }, num(r.treatment_mean)),
                h('td', { class: 'num' }, h('div', null, signed(r.abs_lift)), h('div', { class: 'muted small' }, interval(r.abs_ci, (v) => num(v, 3)))),
                h('td', { class: 'plot-cell' }, intervalPlot(r, domain, { tone, width: 130 })),
                h('td', { class: 'num' }, h('div', null, signedPct(r.rel_lift)), h('div', { class: 'muted small' }, interval(r.rel_ci, (v) => signedPct(v, 0)))),
                h('td', { class: 'num' }, h('div', null, pValue(r.p_value)), h('div', { class: 'muted small' }, pValue(r.p_value_holm))),
                h('td', { class: 'num' }, h('div', { class: 'small' }, interval(r.anytime_abs_ci, (v) => num(v, 3))), h('div', { class: 'muted small' }, pValue(r.anytime_p_value))),
                h('td', { class: 'num', 'data-testid': 'chance-to-beat' }, pct(r.chance_to_beat)),
                h('td', { class: 'sig-cell' }, r.significant
                  ? h('span', { class: `sig sig-${tone}`, 'data-testid': 'significant' }, good ? '✓ Yes, better' : '✓ Yes, worse')
                  : [h('span', { class: 'muted', 'data-testid': 'not-significant' }, 'Not yet'),
                    r.reason ? h('div', { class: 'muted small reason' }, r.reason) : null]));
            }))));
      }));
  }

  function showNoResults() {
    panels = null;
    lastJson = '';
    const tips = [];
    if (exp.status === 'draft') tips.push(h('li', null, 'This experiment is a draft: ', h('a', { href: `/experiments/${exp.id}` }, 'launch it'), ' so units get assigned.'));
    tips.push(h('li', null, 'No exposure movement? Confirm the model router calls ', h('code', null, 'POST /api/v1/assign'), ' and logs ', h('code', null, 'POST /api/v1/events/exposure'), ' (or assigns with ', h('code', null, 'log_exposure: true'), ').'));
    tips.push(h('li', null, 'No metric movement? Confirm ', h('code', null, '/api/v1/events/metric'), ' or conversion events reach ', h('code', null, '/api/v1/events'), '.'));
    mount(content, h('section', { class: 'card empty no-results', 'data-testid': 'no-results' },
      h('h2', null, 'No results yet'),
      h('p', null, 'Results appear a few seconds after the first exposures are logged: the server recomputes them every few seconds. This page checks again every 2 seconds.'),
      h('ul', null, tips)));
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
    try {
      const snap = await experiments.results(exp.id, { signal: controller.signal });
      if (stopped) return;
      pollError.replaceChildren();
      showSnapshot(snap);
    } catch (e) {
      if (stopped || (e && e.name === 'AbortError')) return;
      if (e instanceof ApiError && e.status === 404) {
        pollError.replaceChildren();
        if (!content.querySelector('[data-testid=no-results]')) showNoResults();
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
    if (controller) controller.abort();
    document.removeEventListener('visibilitychange', onVisibility);
  };
}
