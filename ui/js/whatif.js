// "What if": what another traffic policy would have scored on the traffic already served
// (POST /experiments/{id}/counterfactual; docs/COUNTERFACTUAL.md). A card on the results page:
// the metric, the policies to compare (each variant alone, an equal split, today's weights,
// custom weights), and an Estimate button. The answer is fetched when a person asks, never on
// the page's 2 s poll, and says which results it was computed from. Per policy: IPS, SNIPS and
// DR with their 95% and anytime intervals on one axis, the logged value as a vertical line, a
// sentence, and warnings when the effective sample size is small or support is missing; the
// same numbers as a table beneath.

import { api, ApiError } from './api.js';
import { legendItem, niceTicks } from './charts.js';
import { alertBox, h, nextId, s } from './dom.js';
import { int, interval, num, pct, time } from './format.js';

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);
const ESTIMATORS = [['ips', 'IPS'], ['snips', 'SNIPS'], ['dr', 'DR']];
/** ESS below this, or below ESS_SHARE of the units, is flagged (docs/COUNTERFACTUAL.md: "a tenth or less"). */
export const ESS_MIN = 100;
export const ESS_SHARE = 0.1;
const SUM_TOLERANCE = 1e-6; // the server's (litmus/api/results.py WEIGHT_SUM_TOLERANCE)

/** 0.3333 -> "33.3%", 0.25 -> "25%". */
const share = (w) => `${Number((w * 100).toFixed(1))}%`;

/** Significant digits used in sentences and the table (the test reads them back). */
const fmt = (v) => num(v, 4);

/** Is this ESS small enough to warn about? */
export function smallEss(ess, units) {
  if (!isNum(ess)) return false;
  return ess < ESS_MIN || (isNum(units) && units > 0 && ess < ESS_SHARE * units);
}

/** The metrics with propensity data, primary first. */
function propensityMetrics(snap) {
  const m = Object.keys((snap && snap.propensity && snap.propensity.metrics) || {});
  const primary = snap && snap.primary_metric;
  return m.includes(primary) ? [primary, ...m.filter((x) => x !== primary).sort()] : m.sort();
}

/**
 * createWhatIf({getExp, keys}) -> {el, update(snap)}: a card hidden until a snapshot has
 * propensity data; update() refreshes its choices (metrics, today's weights), never the estimates.
 */
export function createWhatIf({ getExp, keys }) {
  let snap = null;
  let answer = null; // {request, body, at}
  let busy = false;

  // ---- controls ----
  const metricId = nextId('wi');
  const metricSel = h('select', { id: metricId, 'data-testid': 'whatif-metric', 'aria-describedby': `${metricId}-error` });
  const metricErr = h('p', { class: 'field-error', id: `${metricId}-error`, hidden: true, 'data-error-for': 'metric' });

  const checks = new Map(); // policy name -> checkbox
  const checkbox = (name, label, testid) => {
    const id = nextId('wi');
    const c = h('input', { type: 'checkbox', id, value: name, 'data-testid': testid || `whatif-policy-${name}` });
    checks.set(name, c);
    c.addEventListener('change', () => { customBox.hidden = !checks.get('custom').checked; clearErrors(); });
    return h('div', { class: 'whatif-check' }, c, h('label', { for: id }, label));
  };
  const onlyChecks = keys.map((k) => checkbox(`only_${k}`, h('span', null, 'Only ', h('code', null, k))));
  const equalCheck = checkbox('equal', `Equal split (${share(1 / keys.length)} each)`);
  const todayLabel = h('span');
  const todayCheck = checkbox('today', todayLabel);
  const customCheck = checkbox('custom', 'Custom weights');
  const otherErr = h('p', { class: 'field-error', hidden: true, 'data-error-for': 'policies', 'data-testid': 'whatif-policies-error' });

  // Custom weights: one number per variant, checked here to sum to 1 before anything is sent.
  const weightInputs = new Map();
  const weightErrs = new Map();
  const customRows = keys.map((k) => {
    const id = nextId('wi');
    const input = h('input', {
      type: 'number', id, min: '0', max: '1', step: 'any', inputmode: 'decimal', value: '',
      'data-testid': `whatif-weight-${k}`, 'aria-describedby': `${id}-error whatif-custom-error`,
    });
    const err = h('p', { class: 'field-error', id: `${id}-error`, hidden: true, 'data-error-for': `policies.custom.${k}` });
    input.addEventListener('input', () => { clearErrors(); showCustomSum(); });
    weightInputs.set(k, input);
    weightErrs.set(k, err);
    return h('div', { class: 'field whatif-weight' }, h('label', { for: id }, 'Weight of ', h('code', null, k)), input, err);
  });
  const customSum = h('p', { class: 'hint', 'data-testid': 'whatif-custom-sum', 'aria-live': 'polite' });
  const customErr = h('p', { class: 'field-error', id: 'whatif-custom-error', hidden: true, 'data-error-for': 'policies.custom', 'data-testid': 'whatif-custom-error' });
  const customBox = h('fieldset', { class: 'whatif-custom', hidden: true, 'data-testid': 'whatif-custom' },
    h('legend', null, 'Custom weights (0 to 1, summing to 1)'),
    h('div', { class: 'whatif-weights' }, customRows), customSum, customErr);

  const runBtn = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'whatif-run' }, 'Estimate');
  const status = h('p', { class: 'whatif-status muted', 'data-testid': 'whatif-status', role: 'status', 'aria-live': 'polite' }, 'Not estimated yet: pick policies and press Estimate.');
  const formErr = h('div', { 'data-testid': 'whatif-error' });
  const notes = h('div', { class: 'whatif-notes', 'data-testid': 'whatif-notes' });
  const out = h('div', { class: 'whatif-out', 'data-testid': 'whatif-results' });

  const form = h('form', { class: 'whatif-form', novalidate: true, 'aria-label': 'What if: policies to estimate' },
    h('div', { class: 'field inline whatif-metric-field' }, h('label', { for: metricId }, 'Metric'), metricSel, metricErr),
    h('fieldset', { class: 'whatif-policies' },
      h('legend', null, 'Policies to compare'),
      h('div', { class: 'whatif-checks' }, onlyChecks, equalCheck, todayCheck, customCheck),
      otherErr),
    customBox,
    h('div', { class: 'actions' }, runBtn, status));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); run(); });
  metricSel.addEventListener('change', () => clearErrors());

  const el = h('section', { class: 'card whatif', 'aria-labelledby': 'sec-whatif', 'data-testid': 'whatif', hidden: true },
    h('h2', { id: 'sec-whatif' }, 'What if'),
    h('p', { class: 'hint' }, 'What another policy would have scored on the traffic already served, from the probability logged with each exposure: IPS (inverse propensity scoring, unbiased, noisy when probabilities are small), SNIPS (self-normalised, less variance, a small bias) and DR (doubly robust, usually the tightest: the one to read). ',
      `A policy is flagged when its effective sample size (ESS) is below ${ESS_MIN} or below ${pct(ESS_SHARE, 0)} of the units: then a few units with small probabilities carry the estimate, so read its interval, not its value.`),
    form, formErr, notes, out);

  // ---- helpers ----
  function todayWeights() {
    const live = snap && snap.bandit && snap.bandit.weights && typeof snap.bandit.weights === 'object' ? snap.bandit.weights : null;
    const src = live || Object.fromEntries(getExp().variants.map((v) => [v.key, v.weight]));
    const w = Object.fromEntries(keys.map((k) => [k, isNum(src[k]) ? Math.max(0, src[k]) : 0]));
    const total = Object.values(w).reduce((a, b) => a + b, 0);
    if (!(total > 0)) return null;
    for (const k of keys) w[k] /= total; // the bandit's weights sum to 1 up to rounding
    return { weights: w, live: !!live };
  }

  function readCustom() {
    const w = {};
    const problems = [];
    for (const k of keys) {
      const t = weightInputs.get(k).value.trim();
      const v = t === '' ? 0 : Number(t);
      if (!Number.isFinite(v) || v < 0 || v > 1) problems.push([k, 'A weight is a number from 0 to 1']);
      else w[k] = v;
    }
    const total = Object.values(w).reduce((a, b) => a + b, 0);
    return { w, problems, total };
  }

  function showCustomSum() {
    const { problems, total } = readCustom();
    customSum.textContent = problems.length ? '' : `Sum: ${Number(total.toFixed(6))}${Math.abs(total - 1) <= SUM_TOLERANCE ? ' ✓' : ' (must be 1)'}`;
  }

  function setErr(p, control, msg) {
    p.textContent = msg || '';
    p.hidden = !msg;
    if (control) { if (msg) control.setAttribute('aria-invalid', 'true'); else control.removeAttribute('aria-invalid'); }
  }

  function clearErrors() {
    setErr(metricErr, metricSel, '');
    setErr(otherErr, null, '');
    setErr(customErr, null, '');
    for (const k of keys) setErr(weightErrs.get(k), weightInputs.get(k), '');
    formErr.replaceChildren();
  }

  function describePolicy(name, weights) {
    if (name.startsWith('only_')) return { title: `Only ${name.slice(5)}`, subject: `Serving ${name.slice(5)} to everyone` };
    if (name === 'equal') return { title: 'Equal split', subject: `An equal split (${share(1 / keys.length)} to each variant)` };
    const split = keys.filter((k) => weights[k] > 0).map((k) => `${k} ${share(weights[k])}`).join(', ');
    if (name === 'today') return { title: todayTitle(), subject: `${todayTitle()} (${split})` };
    return { title: 'Custom weights', subject: `Your weights (${split})` };
  }
  function todayTitle() {
    const t = todayWeights();
    return t && t.live ? 'The bandit\u2019s current weights' : 'Today\u2019s configured weights';
  }

  /** The request from the checked boxes, or null after showing what is wrong. */
  function buildRequest() {
    clearErrors();
    const policies = {};
    for (const k of keys) if (checks.get(`only_${k}`).checked) policies[`only_${k}`] = { [k]: 1 };
    if (checks.get('equal').checked) policies.equal = Object.fromEntries(keys.map((k) => [k, 1 / keys.length]));
    if (checks.get('today').checked) {
      const t = todayWeights();
      if (t) policies.today = t.weights;
    }
    let firstBad = null;
    if (checks.get('custom').checked) {
      const { w, problems, total } = readCustom();
      for (const [k, msg] of problems) { setErr(weightErrs.get(k), weightInputs.get(k), msg); firstBad = firstBad || weightInputs.get(k); }
      if (!problems.length && Math.abs(total - 1) > SUM_TOLERANCE) {
        setErr(customErr, null, `The custom weights must sum to 1; they sum to ${Number(total.toFixed(6))}`);
        for (const k of keys) weightInputs.get(k).setAttribute('aria-invalid', 'true');
        firstBad = weightInputs.get(keys[0]);
      }
      if (!firstBad) policies.custom = w;
    }
    if (firstBad) { firstBad.focus(); return null; }
    if (!Object.keys(policies).length) {
      setErr(otherErr, null, 'Pick at least one policy to estimate');
      (checks.get(`only_${keys[0]}`) || runBtn).focus();
      return null;
    }
    return { metric: metricSel.value, policies };
  }

  /** A 422's fields, each next to the control it names; the rest above the results. */
  function placeServerErrors(e) {
    const fields = (e && e.fields) || {};
    let focus = null;
    const rest = [];
    for (const [path, msg] of Object.entries(fields)) {
      let m;
      if (path === 'metric') { setErr(metricErr, metricSel, msg); focus = focus || metricSel; }
      else if ((m = /^policies\.custom\.(.+)$/.exec(path)) && weightInputs.has(m[1])) {
        setErr(weightErrs.get(m[1]), weightInputs.get(m[1]), msg); focus = focus || weightInputs.get(m[1]);
      } else if (path === 'policies.custom') { setErr(customErr, null, msg); focus = focus || weightInputs.get(keys[0]); }
      else rest.push(`${path}: ${msg}`);
    }
    if (rest.length || !Object.keys(fields).length) {
      formErr.replaceChildren(alertBox('error', h('p', null, `Could not estimate: ${rest.length ? rest.join('; ') : e.message}`)));
    }
    if (focus) focus.focus();
  }

  async function run() {
    if (busy) return;
    const req = buildRequest();
    if (!req) return;
    busy = true;
    runBtn.disabled = true;
    status.textContent = 'Estimating…';
    try {
      const body = await api('POST', `/experiments/${encodeURIComponent(getExp().id)}/counterfactual`, { body: req });
      answer = { request: req, body, at: new Date().toISOString() };
      draw();
    } catch (e) {
      status.textContent = answer ? stampText() : 'Not estimated yet.';
      if (e instanceof ApiError && e.status === 422) placeServerErrors(e);
      else formErr.replaceChildren(alertBox('error', h('p', null, `Could not estimate: ${e.message}`)));
    } finally {
      busy = false;
      runBtn.disabled = false;
    }
  }

  /** Units and logged mean of a metric in the current snapshot, to tell when new data arrived. */
  function current(metric) {
    const per = (snap && snap.propensity && snap.propensity.metrics && snap.propensity.metrics[metric]) || {};
    let n = 0;
    let r = 0;
    for (const v of Object.values(per)) { n += (v.sums && v.sums.n) || 0; r += (v.sums && v.sums.r) || 0; }
    return { n, mean: n ? r / n : null };
  }

  function stampText() {
    if (!answer) return '';
    const b = answer.body;
    // The snapshot is recomputed every few seconds; only new data makes the estimates old.
    const now = current(b.metric);
    const moved = now.n !== b.units || (isNum(now.mean) && isNum(b.logged_value) && Math.abs(now.mean - b.logged_value) > 1e-9 * Math.max(1, Math.abs(b.logged_value)));
    const newer = snap && snap.computed_at && b.computed_at && snap.computed_at >= b.computed_at;
    return `Estimated at ${time(answer.at)} from the results computed at ${time(b.computed_at)} (${int(b.units)} units).${now.n && moved && newer ? ` New data has arrived since (${int(now.n)} units now): press Estimate again for the latest.` : ''}`;
  }

  // ---- drawing the answer ----
  function draw() {
    const { request, body } = answer;
    status.replaceChildren(stampText());
    status.dataset.computedAt = body.computed_at || '';
    const units = body.units;
    const note = [];
    if (body.forced_units > 0) {
      note.push(h('p', { 'data-testid': 'whatif-forced-note' }, `${int(body.forced_units)} unit${body.forced_units === 1 ? ' was' : 's were'} served with probability 1 while other variants had weight (an override or a stopped experiment\u2019s winner). They were not drawn at random, so they say nothing about other policies and are left out.`));
    }
    if (body.server_filled_units > 0) {
      note.push(h('p', { 'data-testid': 'whatif-filled-note' }, `${int(body.server_filled_units)} exposure${body.server_filled_units === 1 ? '' : 's'} arrived without a probability; the server filled in the served variant\u2019s configured weight at arrival. For a bandit, whose weights move, that can differ from the probability actually used: send the assign answer\u2019s probability with each exposure.`));
    }
    notes.replaceChildren(...(note.length ? [alertBox('info', ...note)] : []));

    const names = Object.keys(request.policies);
    const res = body.policies || {};
    const vals = [body.logged_value];
    for (const n of names) for (const [k] of ESTIMATORS) {
      const e = (res[n] || {})[k] || {};
      vals.push(e.value, ...(e.ci || []), ...(e.anytime_ci || []));
    }
    const domain = domainOf(vals);
    const metric = body.metric;

    const rows = names.map((n) => {
      const p = res[n] || {};
      const d = describePolicy(n, request.policies[n]);
      const dr = p.dr || {};
      const warn = [];
      if (p.support === false) {
        warn.push(h('p', { 'data-testid': 'whatif-support-warning' }, 'No estimate: this policy puts weight on a variant no unit was served (in this metric\u2019s logged traffic), so the data cannot say what it would have done.'));
      } else if (smallEss(p.ess, units)) {
        warn.push(h('p', { 'data-testid': 'whatif-ess-warning' }, `Small effective sample: ESS ${num(p.ess, 3)} of ${int(units)} units (flagged below ${ESS_MIN} or ${pct(ESS_SHARE, 0)} of the units). A few units with small probabilities carry this estimate: read its interval, not its value, and prefer DR or SNIPS.`));
      }
      const sentence = p.support === false || !isNum(dr.value)
        ? h('p', { class: 'whatif-sentence', 'data-testid': 'whatif-sentence' }, `${d.subject}: no estimate.`)
        : h('p', { class: 'whatif-sentence', 'data-testid': 'whatif-sentence', 'data-value': String(dr.value), 'data-lo': String(dr.ci ? dr.ci[0] : ''), 'data-hi': String(dr.ci ? dr.ci[1] : ''), 'data-logged': String(body.logged_value) },
          `${d.subject} would have given `, h('strong', null, fmt(dr.value)), ` ${metric} ${interval(dr.ci, fmt)} (DR), against ${fmt(body.logged_value)} logged.`);
      const plotBox = h('div', { class: 'whatif-plot' });
      const row = h('div', { class: 'whatif-row', 'data-testid': 'whatif-policy', 'data-policy': n, 'data-ess': isNum(p.ess) ? String(p.ess) : '' },
        h('h3', null, d.title, isNum(p.ess) ? h('span', { class: 'muted small whatif-ess' }, ` · ESS ${num(p.ess, 3)}`) : null),
        sentence,
        warn.length ? alertBox('warning', ...warn) : null,
        plotBox);
      return { row, plotBox, p, d, n };
    });
    out.replaceChildren(
      legend(),
      ...rows.map((r) => r.row),
      h('h3', { id: 'whatif-table-title' }, 'The same as a table'),
      h('div', { class: 'table-wrap' }, table(names, res, body, rows)));
    // Plots after the rows are in the page, at their box's width.
    for (const r of rows) r.plotBox.appendChild(plot(r.p, domain, body.logged_value, r.plotBox.clientWidth, metric, r.d.title));
  }

  function legend() {
    const item = (mark, text) => legendItem(mark, text, { chart: 'whatif-chart' });
    return h('ul', { class: 'legend interval-legend' }, item('point', 'estimate'), item('ci', '95% interval'), item('anytime', 'anytime-valid interval'), item('logged', 'logged value (what ran)'));
  }

  function table(names, res, body, rows) {
    return h('table', { class: 'table compact whatif-table', 'data-testid': 'whatif-table', 'aria-labelledby': 'whatif-table-title' },
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, 'Policy'),
        h('th', { scope: 'col' }, 'Estimator'),
        h('th', { scope: 'col', class: 'num' }, 'Value'),
        h('th', { scope: 'col', class: 'num' }, '95% interval'),
        h('th', { scope: 'col', class: 'num' }, 'Anytime interval'),
        h('th', { scope: 'col', class: 'num' }, 'se'),
        h('th', { scope: 'col', class: 'num' }, 'ESS'))),
      h('tbody', null, names.flatMap((n, i) => {
        const p = res[n] || {};
        return ESTIMATORS.map(([k, label], j) => {
          const e = p[k] || {};
          return h('tr', { 'data-policy': n, 'data-estimator': k, 'data-testid': 'whatif-table-row' },
            j === 0 ? h('th', { scope: 'row', rowspan: ESTIMATORS.length }, rows[i].d.title) : null,
            h('td', null, label),
            h('td', { class: 'num', 'data-testid': 'whatif-value' }, fmt(e.value)),
            h('td', { class: 'num' }, interval(e.ci, fmt)),
            h('td', { class: 'num' }, interval(e.anytime_ci, fmt)),
            h('td', { class: 'num' }, fmt(e.se)),
            j === 0 ? h('td', { class: 'num', rowspan: ESTIMATORS.length }, isNum(p.ess) ? num(p.ess, 4) : '—') : null);
        });
      }),
      h('tr', { class: 'whatif-logged-row' },
        h('th', { scope: 'row' }, 'Logged (what ran)'),
        h('td', null, 'mean'),
        h('td', { class: 'num', 'data-testid': 'whatif-logged' }, fmt(body.logged_value)),
        h('td', { class: 'num', colspan: 4 }, `${int(body.units)} units`))));
  }

  // One policy: the three estimators stacked on one horizontal axis, the logged value a line.
  function plot(p, domain, logged, boxWidth, metric, title) {
    const width = Math.max(240, Math.min(900, Math.floor(boxWidth || 560)));
    const left = 52;
    const right = 12;
    const rowH = 22;
    const top = 16;
    const height = top + ESTIMATORS.length * rowH + 22;
    const [lo, hi] = domain;
    const x = (v) => left + ((v - lo) / (hi - lo)) * (width - left - right);
    const clamp = (v) => Math.max(left, Math.min(width - right, x(v)));
    const describe = ESTIMATORS.map(([k, label]) => {
      const e = p[k] || {};
      return isNum(e.value) ? `${label} ${fmt(e.value)} ${interval(e.ci, fmt)}` : `${label} no estimate`;
    }).join('; ');
    const svg = s('svg', {
      class: 'chart whatif-chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'data-testid': 'whatif-plot',
      'aria-label': `${title}: ${metric} estimates, ${describe}; logged ${fmt(logged)}. The table below has the same numbers.`,
    });
    const axisY = top + ESTIMATORS.length * rowH + 2;
    for (const t of niceTicks(lo, hi, width < 400 ? 4 : 6)) {
      if (t < lo || t > hi) continue;
      svg.append(
        s('line', { class: 'grid', x1: x(t), x2: x(t), y1: top - 4, y2: axisY }),
        s('text', { class: 'tick', x: x(t), y: axisY + 13, 'text-anchor': 'middle' }, fmt(t)));
    }
    svg.appendChild(s('line', { class: 'axis', x1: left, x2: width - right, y1: axisY, y2: axisY }));
    ESTIMATORS.forEach(([k, label], i) => {
      const e = p[k] || {};
      const mid = top + i * rowH + rowH / 2;
      const g = s('g', { class: `est est-${k}`, 'data-testid': `whatif-mark-${k}` });
      g.appendChild(s('text', { class: 'est-label', x: left - 8, y: mid + 4, 'text-anchor': 'end' }, label));
      const any = e.anytime_ci;
      if (Array.isArray(any) && isNum(any[0]) && isNum(any[1])) {
        const a = clamp(any[0]);
        g.appendChild(s('rect', { class: 'anytime', x: a, y: mid - 7, width: Math.max(1, clamp(any[1]) - a), height: 14, rx: 3 }));
      }
      const ci = e.ci;
      if (Array.isArray(ci) && isNum(ci[0]) && isNum(ci[1])) {
        g.append(
          s('line', { class: 'ci', x1: clamp(ci[0]), x2: clamp(ci[1]), y1: mid, y2: mid }),
          s('line', { class: 'ci', x1: clamp(ci[0]), x2: clamp(ci[0]), y1: mid - 4, y2: mid + 4 }),
          s('line', { class: 'ci', x1: clamp(ci[1]), x2: clamp(ci[1]), y1: mid - 4, y2: mid + 4 }));
      }
      if (isNum(e.value)) g.appendChild(s('circle', { class: 'point', cx: x(e.value), cy: mid, r: 4.5 }));
      else g.appendChild(s('text', { class: 'tick', x: left + 6, y: mid + 4 }, 'no estimate'));
      g.appendChild(s('title', null, isNum(e.value) ? `${label}: ${fmt(e.value)}, 95% ${interval(e.ci, fmt)}, anytime ${interval(e.anytime_ci, fmt)}` : `${label}: no estimate`));
      svg.appendChild(g);
    });
    if (isNum(logged)) {
      const lx = x(logged);
      svg.append(
        s('line', { class: 'logged', x1: lx, x2: lx, y1: 2, y2: axisY, 'data-testid': 'whatif-logged-line', 'data-value': String(logged) }),
        s('text', { class: 'logged-label', x: Math.min(Math.max(lx, left + 40), width - right - 40), y: 10, 'text-anchor': 'middle' }, `logged ${fmt(logged)}`));
    }
    return svg;
  }

  function domainOf(values) {
    const v = values.filter(isNum);
    if (!v.length) return [0, 1];
    let lo = Math.min(...v);
    let hi = Math.max(...v);
    if (hi - lo < 1e-12) { const d = Math.abs(lo) > 1e-12 ? Math.abs(lo) * 0.1 : 1; lo -= d; hi += d; }
    const pad = (hi - lo) * 0.06;
    return [lo - pad, hi + pad];
  }

  // ---- snapshot updates: choices only ----
  function update(next) {
    snap = next;
    const metrics = propensityMetrics(snap);
    el.hidden = !metrics.length;
    if (!metrics.length) return;
    const have = [...metricSel.options].map((o) => o.value);
    if (have.join('\u0000') !== metrics.join('\u0000')) {
      const keep = metricSel.value;
      metricSel.replaceChildren(...metrics.map((m) => h('option', { value: m }, m === snap.primary_metric ? `${m} (primary)` : m)));
      if (metrics.includes(keep)) metricSel.value = keep;
    }
    const t = todayWeights();
    todayLabel.textContent = t
      ? `${t.live ? 'The bandit\u2019s current weights' : 'Today\u2019s configured weights'} (${keys.map((k) => `${k} ${share(t.weights[k])}`).join(', ')})`
      : 'Today\u2019s weights (none yet)';
    checks.get('today').disabled = !t;
    // Which variants no unit with a known probability was served, for this metric.
    const per = (snap.propensity.metrics || {})[metricSel.value] || {};
    for (const k of keys) {
      const c = checks.get(`only_${k}`);
      const n = per[k] && per[k].units;
      c.parentElement.title = isNum(n) ? `${int(n)} units served ${k} with a known probability` : '';
    }
    if (answer) status.replaceChildren(stampText());
    if (!have.length) {
      // First time: the top variants preselected so Estimate does something at once.
      for (const k of keys) checks.get(`only_${k}`).checked = true;
      checks.get('today').checked = !!t;
    }
  }

  return { el, update };
}
