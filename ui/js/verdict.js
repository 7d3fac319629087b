// The verdict: what the results say, in words, per primary metric. Pure reading of the results
// snapshot and the experiment (computeVerdict), and its card (verdictCard). The order of what it
// says is the order of trust: a sample ratio mismatch first (nothing below can be trusted), then a
// tripped guardrail, the stop and its winner, a bandit's state, and one sentence per treatment.

import { h } from './dom.js';
import { dateTime, duration, int, pText, prob, raw, relPct } from './format.js';

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

/** "No difference": the deciding interval lies inside ± this relative lift. */
export const NO_DIFF_TOLERANCE = 0.01;
/** Beyond this many times the units so far, the estimate says "far more" rather than a number. */
const MAX_SCALE = 1000;
/** The normal-mixture tuning the server uses (litmus/core/stats.py CS_TUNING_N). */
const CS_TUNING_N = 5000;

/** A metric whose per-unit value is 0 or 1 (a conversion): every unit with events sums to 1. */
export function isRateMetric(perVariant) {
  const arms = Object.values(perVariant || {});
  if (!arms.length) return false;
  let seen = false;
  for (const s of arms) {
    if (!s) continue;
    const units = s.units || 0;
    if (units === 0 && !(s.sum > 0)) continue;
    if (!isNum(s.sum) || s.sum !== units) return false;
    seen = true;
  }
  return seen;
}

/** Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9). */
export function normInv(p) {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p <= 0 || p >= 1) return p <= 0 ? -Infinity : Infinity;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - lo) return -normInv(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/**
 * Units per arm still needed for the deciding interval to exclude 0 if the effect stays what it
 * is now: the standard error shrinks as 1/√n. Fixed mode: z·se/√k < |lift|. Sequential mode: the
 * normal-mixture half-width se/√k·√((1+kr)/(kr)·ln((1+kr)/α²)), r = n·ρ² (litmus/core/stats.py).
 * α is split over the treatments (Bonferroni, as the planner does). Returns
 * {more, scale} (more units per arm, k = n needed / n now), {far: true} or null.
 */
export function moreUnitsPerArm(row, { mode = 'sequential', alpha = 0.05, comparisons = 1 } = {}) {
  const d = Math.abs(row.abs_lift);
  const se = row.se;
  const n = (row.control_units || 0) + (row.treatment_units || 0);
  if (!isNum(d) || !isNum(se) || se <= 0 || n <= 0) return null;
  if (d === 0) return { far: true, scale: Infinity };
  const a = alpha / Math.max(1, comparisons);
  let half;
  if (mode === 'fixed') {
    const z = normInv(1 - a / 2);
    half = (k) => (z * se) / Math.sqrt(k);
  } else {
    const la = Math.log(a);
    const rho2 = (-2 * la + Math.log(1 - 2 * la)) / CS_TUNING_N;
    const r = n * rho2;
    half = (k) => (se / Math.sqrt(k)) * Math.sqrt(((1 + k * r) / (k * r)) * Math.log((1 + k * r) / (a * a)));
  }
  if (half(1) < d) return { more: 0, scale: 1 };
  let hi = 2;
  while (half(hi) >= d) {
    hi *= 2;
    if (hi > MAX_SCALE) return { far: true, scale: Infinity };
  }
  let lo = hi / 2;
  for (let i = 0; i < 50; i += 1) {
    const mid = (lo + hi) / 2;
    if (half(mid) < d) hi = mid; else lo = mid;
  }
  return { more: ((hi - 1) * n) / 2, scale: hi };
}

/** Round a count for a sentence: two significant figures ("about 4,800"). */
export function roughly(n) {
  if (!isNum(n)) return '—';
  if (n < 100) return int(Math.ceil(n));
  const mag = 10 ** (Math.floor(Math.log10(n)) - 1);
  return int(Math.ceil(n / mag) * mag);
}

function toMs(t) {
  if (!t) return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

/**
 * The interval that decides a row's significance, relative to the control's mean: the running
 * anytime-valid interval in sequential mode (divided by the control mean), Welch's relative
 * interval (delta method) in fixed mode. {ci: [lo, hi], kind: 'anytime'|'welch'} or null.
 */
export function decidingInterval(row, mode) {
  const cm = row.control_mean;
  const any = row.anytime_abs_ci_running || row.anytime_abs_ci;
  if (mode !== 'fixed' && Array.isArray(any) && isNum(any[0]) && isNum(any[1]) && isNum(cm) && cm !== 0) {
    const a = any[0] / Math.abs(cm);
    const b = any[1] / Math.abs(cm);
    return { ci: [Math.min(a, b), Math.max(a, b)], kind: 'anytime' };
  }
  const rel = row.rel_ci;
  if (Array.isArray(rel) && isNum(rel[0]) && isNum(rel[1])) return { ci: rel, kind: 'welch' };
  return null;
}

/** Better for this row's goal? */
export function isBetter(row) {
  return row.goal === 'minimize' ? row.abs_lift < 0 : row.abs_lift > 0;
}

/** One treatment against control: its state and the numbers behind the sentence. */
export function judgeRow(row, { mode, alpha, comparisons, tolerance = NO_DIFF_TOLERANCE }) {
  const dec = decidingInterval(row, mode);
  const base = { treatment: row.treatment, control: row.control, metric: row.metric, row, interval: dec, rel: row.rel_lift };
  if (!isNum(row.abs_lift)) return { ...base, state: 'not-yet', why: row.reason || 'no comparison yet: both arms need units' };
  if (row.significant) return { ...base, state: isBetter(row) ? 'winner' : 'loser' };
  if (dec && dec.ci[0] >= -tolerance && dec.ci[1] <= tolerance) return { ...base, state: 'no-difference', tolerance };
  const need = moreUnitsPerArm(row, { mode, alpha, comparisons });
  return { ...base, state: 'not-yet', why: row.reason || null, need };
}

/**
 * Everything the verdict card says, from a snapshot and the experiment as the server has it now.
 * state: the card's headline state (waiting, srm, guardrail, stopped, bandit-converged, bandit,
 * winner, loser, no-difference, not-yet, none).
 */
export function computeVerdict(snap, exp, now = Date.now()) {
  const mode = snap.analysis_mode || exp.analysis_mode || 'sequential';
  const alpha = isNum(snap.alpha) ? snap.alpha : 0.05;
  const primary = snap.primary_metric;
  const ex = snap.exposures || {};
  const total = isNum(ex.total_units) ? ex.total_units : 0;
  const started = toMs(exp.launched_at);
  const ended = exp.status === 'stopped' ? toMs(exp.stopped_at) : null;
  const runningMs = started === null ? null : Math.max(0, (ended ?? now) - started);
  const rows = (Array.isArray(snap.lift) ? snap.lift : []).filter((r) => r.metric === primary);
  const judged = rows.map((r) => judgeRow(r, { mode, alpha, comparisons: rows.length }));
  const srm = snap.srm && snap.srm.flagged ? snap.srm : null;
  const tripped = (snap.guardrails || []).filter((g) => g.status === 'tripped');
  const b = snap.bandit || null;
  const stopped = exp.status === 'stopped' ? { winner: exp.winner || null, at: exp.stopped_at || null } : null;
  let bandit = null;
  if (b && exp.allocation === 'bandit') {
    const top = b.converged ? (b.converged_variant || b.top_variant) : b.top_variant;
    const threshold = exp.bandit && isNum(exp.bandit.convergence_threshold) ? exp.bandit.convergence_threshold : 0.95;
    const weights = b.weights || {};
    const traffic = Object.keys(weights).sort((x, y) => (weights[y] || 0) - (weights[x] || 0)).map((k) => ({ key: k, weight: weights[k] }));
    bandit = { converged: !!b.converged, top, pBest: top && b.p_best ? b.p_best[top] : null, threshold, traffic, at: b.converged_at || null };
  }
  let state;
  if (total === 0) state = 'waiting';
  else if (srm) state = 'srm';
  else if (tripped.length) state = 'guardrail';
  else if (stopped) state = 'stopped';
  else if (bandit) state = bandit.converged ? 'bandit-converged' : 'bandit';
  else if (judged.some((j) => j.state === 'winner')) state = 'winner';
  else if (judged.length && judged.every((j) => j.state === 'loser')) state = 'loser';
  else if (judged.length && judged.every((j) => j.state === 'no-difference')) state = 'no-difference';
  else if (judged.some((j) => j.state === 'loser')) state = 'loser';
  else state = judged.length ? 'not-yet' : 'none';
  const correction = (snap.correction && snap.correction.method) || 'holm';
  return { state, mode, correction, alpha, primary, total, runningMs, rows: judged, srm, tripped, stopped, bandit, computedAt: snap.computed_at };
}

// ---------------------------------------------------------------- the card

const TONE = { winner: 'good', loser: 'bad', 'no-difference': 'neutral', 'not-yet': 'neutral' };

function num(value, text, testid) {
  return h('span', { class: 'v-num', title: raw(value), 'data-testid': testid, 'data-value': raw(value) }, text);
}

function ciText(ci) {
  return `[${relPct(ci[0])}, ${relPct(ci[1])}]`;
}

/** The sentence for one treatment, as DOM (numbers carry their raw values in title). */
function rowSentence(j, { mode, correction }) {
  const r = j.row;
  const who = h('code', null, j.treatment);
  const ctrl = h('code', null, j.control);
  const metric = h('code', null, j.metric);
  const est = () => [num(j.rel, relPct(j.rel), 'verdict-rel'), ' ',
    j.interval ? h('span', { class: 'v-ci', 'data-testid': 'verdict-ci', 'data-lo': raw(j.interval.ci[0]), 'data-hi': raw(j.interval.ci[1]), 'data-kind': j.interval.kind, title: `${j.interval.kind === 'anytime' ? 'Anytime-valid 95% interval (running), over the control mean' : 'Welch 95% interval of the relative lift'}: ${j.interval.ci[0]} to ${j.interval.ci[1]}` }, ciText(j.interval.ci)) : null];
  const how = mode === 'fixed' ? `significant (fixed horizon, ${correction === 'bh' ? 'Benjamini-Hochberg' : 'Holm'}-adjusted)` : 'significant (anytime)';
  if (j.state === 'winner') return [who, ` beats `, ctrl, ' on ', metric, ': ', ...est(), `, ${how}`];
  if (j.state === 'loser') return [who, ` is worse than `, ctrl, ' on ', metric, ': ', ...est(), `, ${how}`];
  if (j.state === 'no-difference') {
    return [who, ': no difference from ', ctrl, ' on ', metric, ': ', ...est(), `, inside \u00b1${Number((j.tolerance * 100).toFixed(2))}% (the interval excludes any larger effect)`];
  }
  // not yet: why, and what remains
  const why = [];
  if (j.why) why.push(j.why);
  const need = j.need;
  let remains = null;
  if (need && need.far) {
    remains = isNum(r.abs_lift) && r.abs_lift === 0
      ? 'no effect so far, so no sample size would show one'
      : 'the effect so far is too small to show with fewer than 1,000 times the units so far';
  } else if (need && isNum(need.more)) {
    remains = need.more <= 0
      ? 'the interval already excludes 0 at this effect: the next recomputes decide'
      : h('span', { 'data-testid': 'verdict-more-units', 'data-value': String(Math.ceil(need.more)), title: `${Math.ceil(need.more)} more units per arm (${need.scale.toFixed(2)}× the units so far)` },
        `needs about ${roughly(need.more)} more units per arm at this effect`);
  }
  const parts = [who, ' vs ', ctrl, ' on ', metric, ': ', h('strong', null, 'not yet'), isNum(j.rel) ? [' \u2014 ', ...est()] : null];
  if (why.length) parts.push(` \u2014 ${why.join('; ')}`);
  if (remains) parts.push(' \u2014 ', remains);
  return parts;
}

/** The verdict card: headline lines first, then one sentence per treatment, then the counts. */
export function verdictCard(v, exp) {
  const lines = [];
  if (v.srm) {
    lines.push(h('p', { class: 'verdict-line v-srm', 'data-testid': 'verdict-srm', 'data-state': 'srm', role: 'alert' },
      h('strong', null, 'Results untrustworthy: sample ratio mismatch. '),
      `The exposed units do not match the weights (${pText(v.srm.p_value)}); fix assignment or exposure logging before reading anything below.`));
  }
  for (const g of v.tripped) {
    lines.push(h('p', { class: 'verdict-line v-guardrail', 'data-testid': 'verdict-guardrail', 'data-state': 'guardrail' },
      h('strong', null, 'Guardrail tripped: '), g.message || `${g.metric} of ${g.treatment}`, ' (see the banner above).'));
  }
  if (v.stopped) {
    const when = v.stopped.at ? ` on ${dateTime(v.stopped.at)}` : '';
    lines.push(h('p', { class: 'verdict-line v-stopped', 'data-testid': 'verdict-stopped', 'data-state': 'stopped', 'data-winner': v.stopped.winner || '' },
      v.stopped.winner
        ? [h('strong', null, `Stopped${when}: `), h('code', null, v.stopped.winner), ' was chosen as the winner; every eligible unit now gets it.']
        : [h('strong', null, `Stopped${when} without a winner. `), 'No variant is served.']));
  }
  if (v.bandit) {
    const bd = v.bandit;
    const traffic = bd.traffic.slice(0, 4).map((t, i) => [i ? ', ' : '', h('code', null, t.key), ` ${prob(t.weight)}`]);
    lines.push(h('p', { class: 'verdict-line v-bandit', 'data-testid': 'verdict-bandit', 'data-state': bd.converged ? 'bandit-converged' : 'bandit', 'data-top': bd.top || '' },
      bd.converged
        ? [h('strong', null, 'Converged: '), h('code', null, bd.top), ' is the best model, P(best) ', num(bd.pBest, prob(bd.pBest), 'verdict-pbest')]
        : bd.top ? [h('strong', null, 'Not converged yet: '), h('code', null, bd.top), ' leads, P(best) ', num(bd.pBest, prob(bd.pBest), 'verdict-pbest'), ` (converges at ${prob(bd.threshold, 0)})`]
          : [h('strong', null, 'Not converged yet: '), 'waiting for rewards'],
      bd.traffic.length ? [' \u00b7 traffic now: ', ...traffic, bd.traffic.length > 4 ? ', …' : ''] : null, '.'));
  }
  for (const j of v.rows) {
    lines.push(h('p', { class: `verdict-line v-row tone-${TONE[j.state]}`, 'data-testid': 'verdict-line', 'data-state': j.state, 'data-treatment': j.treatment },
      h('span', { class: `v-mark v-mark-${j.state}`, 'aria-hidden': 'true' }, j.state === 'winner' ? '▲' : j.state === 'loser' ? '▼' : j.state === 'no-difference' ? '=' : '…'),
      ...rowSentence(j, v)));
  }
  if (!v.rows.length && v.total > 0) {
    lines.push(h('p', { class: 'verdict-line muted', 'data-testid': 'verdict-line', 'data-state': 'none' },
      'No comparison on ', h('code', null, v.primary), ' yet: the control and a treatment both need exposed units.'));
  }
  const meta = h('p', { class: 'verdict-meta muted', 'data-testid': 'verdict-meta' },
    num(v.total, `${int(v.total)} units`, 'verdict-units'),
    v.runningMs !== null ? [' \u00b7 ', h('span', { 'data-testid': 'verdict-running', title: exp.launched_at ? `launched ${dateTime(exp.launched_at)}` : '' }, `${duration(v.runningMs)} ${exp.status === 'stopped' ? 'run' : 'running'}`)] : null,
    ' \u00b7 ', v.mode === 'fixed' ? 'fixed-horizon analysis: read at the planned sample size' : 'sequential analysis: safe to read at any time',
    ' \u00b7 primary metric ', h('code', null, v.primary));
  return h('section', { class: `card verdict verdict-${v.state}`, 'aria-labelledby': 'sec-verdict', 'data-testid': 'verdict', 'data-state': v.state },
    h('h2', { id: 'sec-verdict' }, 'Verdict'),
    lines,
    meta);
}

/** A launched experiment with no exposure yet: what to expect, not a grid of dashes. */
export function waitingCard(exp, snap) {
  const since = exp.launched_at ? duration(Date.now() - Date.parse(exp.launched_at)) : null;
  return h('section', { class: 'card empty waiting', 'aria-labelledby': 'sec-waiting', 'data-testid': 'waiting-for-data' },
    h('h2', { id: 'sec-waiting' }, 'Waiting for data'),
    h('p', { class: 'big-number' }, h('strong', { 'data-testid': 'total-units', 'data-value': '0' }, '0'), ' exposed units so far'),
    h('p', null, exp.status === 'running'
      ? `Running${since ? ` for ${since}` : ''}, with no exposed unit yet. The verdict, the exposures and the lift appear here once the model router logs exposures.`
      : `No exposed unit (the experiment is ${String(exp.status).toUpperCase()}).`),
    h('ul', null,
      h('li', null, 'Assign with ', h('code', null, 'POST /api/v1/assign'), ' and ', h('code', null, 'log_exposure: true'), ', or log ', h('code', null, 'POST /api/v1/events/exposure'), '.'),
      h('li', null, 'Metric events go to ', h('code', null, 'POST /api/v1/events'), ' (a conversion is the metric ', h('code', null, 'conversion'), ').')),
    snap && snap.computed_at ? h('p', { class: 'muted small' }, 'Checked with every recompute; this page looks again every 2 seconds.') : null);
}
