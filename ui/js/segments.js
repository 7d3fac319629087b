// Lift by segment on the results page (README, "Segments"): when the experiment's exposures
// carry attributes (GET /experiments/{id}/results/segments lists them), a "Break down by" select
// under the lift card. Picking an attribute reads GET …/results?segment=ATTR — a scan of the
// raw events, so never on the page's 2 s poll: when a person picks one, presses Refresh, or,
// while one is picked, when new data has arrived, at most every REFRESH_MS. The answer shows the
// server's exploratory warning first, then per metric and treatment a compact table (segment,
// units, control and treatment means as the rest of the page writes them, the relative lift
// with its interval coloured as in the lift table) and the heterogeneity test (Cochran's Q).
// Without attributes: a one-line hint on how to send them, nothing else.
//
// createSegments({getExp, metricOrder, isRate, valueText}) -> {el, hint, update(snap), stop()}.

import { ApiError, experiments } from './api.js';
import { h, mount, nextId } from './dom.js';
import { int, interval, pct, pText, raw, relPct, sig, time } from './format.js';
import { isBetter } from './verdict.js';

const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

/** The breakdown (and, while none is seen, the attribute list) is read again at most this often. */
export const REFRESH_MS = 60000;

/** A segment's name for reading: its value, "Other (values past the first 50)" or "Not set". */
export function segmentLabel(seg, tracked = 50) {
  if (seg.kind === 'other') return `Other (values past the first ${tracked})`;
  if (seg.kind === 'unset') return 'Not set';
  return seg.value === '' ? '(empty)' : String(seg.value);
}

/** The heterogeneity result of one metric and treatment in words: {differs, text}. */
export function heterogeneityText(het, alpha = 0.05) {
  if (!het) return { differs: null, text: 'Not tested whether the effect differs across segments.' };
  if (het.reason || !isNum(het.p_value)) {
    return { differs: null, text: `Not tested whether the effect differs across segments: ${het.reason || 'no p-value'}.` };
  }
  if (het.p_value < alpha) {
    return { differs: true, text: `Effect differs across segments: Q = ${sig(het.q, 3)}, ${pText(het.p_value)}, I\u00b2 = ${pct(het.i2, 0)}` };
  }
  return { differs: false, text: `No evidence the effect differs (${pText(het.p_value)})` };
}

/** What the snapshot counts (units, events, sums): a change means new data, not a recompute. */
function dataSignature(snap) {
  if (!snap) return '';
  const ex = (snap.exposures && snap.exposures.variants) || {};
  const m = snap.metrics || {};
  const arms = Object.keys(ex).sort().map((k) => [k, ex[k] && ex[k].units, ex[k] && ex[k].events]);
  const metrics = Object.keys(m).sort().map((name) => [name, Object.keys(m[name] || {}).sort()
    .map((k) => [k, m[name][k] && m[name][k].count, m[name][k] && m[name][k].sum])]);
  return JSON.stringify([snap.exposures && snap.exposures.total_units, arms, metrics]);
}

/** createSegments(): see the top of this file. */
export function createSegments({ getExp, metricOrder = () => [], isRate = () => false, valueText = (v) => sig(v, 4) }) {
  let snap = null;
  let segKeys = null; // the attributes seen, once read
  let keysTried = false;
  let keysBusy = false;
  let chosen = '';
  let answer = null; // {key, body (the `segments` object), at (ms), sig}
  let busy = false;
  let controller = null;
  let timer = null;
  let stopped = false;
  let seq = 0;

  const selId = nextId('seg');
  const select = h('select', { id: selId, 'data-testid': 'segment-select', 'aria-describedby': `${selId}-hint` },
    h('option', { value: '' }, 'None'));
  const refreshBtn = h('button', { type: 'button', class: 'btn btn-small', 'data-testid': 'segments-refresh', hidden: true }, 'Refresh');
  const status = h('p', { class: 'hint segments-status', 'data-testid': 'segments-status', role: 'status', 'aria-live': 'polite' });
  const out = h('div', { class: 'segments-out', 'data-testid': 'segments-out' });
  const el = h('section', { class: 'card segments', 'aria-labelledby': 'sec-segments', 'data-testid': 'segments', hidden: true },
    h('h2', { id: 'sec-segments' }, 'Lift by segment'),
    h('p', { class: 'hint', id: `${selId}-hint` },
      'Each segment\u2019s lift computed on its units alone, from the attributes of each unit\u2019s first exposure. ',
      `Read from the raw events when you pick an attribute, and again when new data arrives (at most every ${REFRESH_MS / 1000} s).`),
    h('div', { class: 'segments-controls' },
      h('div', { class: 'field inline' }, h('label', { for: selId }, 'Break down by'), select),
      refreshBtn),
    status,
    out);
  const hint = h('p', { class: 'hint segments-hint', 'data-testid': 'segments-hint', hidden: true },
    'Lift by segment: send up to 5 string attributes with each exposure (',
    h('code', null, '"attributes": {"country": "DE"}'), ') to break these results down by country, device and the like; reload this page once they arrive.');

  select.addEventListener('change', () => {
    chosen = select.value;
    clearTimeout(timer);
    timer = null;
    if (!chosen) {
      seq += 1; // an answer still on its way is not shown
      if (controller) controller.abort();
      answer = null;
      out.replaceChildren();
      refreshBtn.hidden = true;
      setStatus('No breakdown: pick an attribute to see the lift per segment.');
      return;
    }
    refreshBtn.hidden = false;
    fetchBreakdown();
  });
  refreshBtn.addEventListener('click', () => { loadKeys(); if (chosen) fetchBreakdown(); });

  function setStatus(text) { if (status.textContent !== text) status.textContent = text; }

  // ---- the attributes seen ----
  async function loadKeys() {
    if (keysBusy || stopped) return;
    keysBusy = true;
    try {
      const body = await experiments.segmentKeys(getExp().id, { prompt: false });
      if (!stopped) setKeys(Array.isArray(body && body.keys) ? body.keys.map(String) : []);
    } catch {
      // Refresh reads the list again; until then no breakdown is offered.
    } finally {
      keysBusy = false;
    }
  }

  function setKeys(list) {
    segKeys = list;
    const want = ['', ...list, ...(chosen && !list.includes(chosen) ? [chosen] : [])];
    const have = [...select.options].map((o) => o.value);
    if (have.join('\u0000') !== want.join('\u0000')) {
      select.replaceChildren(...want.map((k) => h('option', { value: k }, k === '' ? 'None' : k)));
      select.value = chosen;
    }
    el.hidden = !want.some(Boolean);
    hint.hidden = want.some(Boolean);
    el.dataset.keys = String(list.length);
  }

  // ---- the breakdown ----
  async function fetchBreakdown() {
    const key = chosen;
    if (!key || stopped) return;
    if (controller) controller.abort();
    clearTimeout(timer);
    timer = null;
    seq += 1;
    const mine = seq;
    controller = new AbortController();
    busy = true;
    refreshBtn.disabled = true;
    out.setAttribute('aria-busy', 'true');
    setStatus(`Computing the lift per ${key} from the raw events…`);
    const at = dataSignature(snap);
    try {
      const body = await experiments.resultsBySegment(getExp().id, key, { signal: controller.signal, prompt: false });
      if (stopped || mine !== seq) return;
      answer = { key, body: (body && body.segments) || null, at: Date.now(), sig: at };
      draw();
    } catch (e) {
      if (stopped || mine !== seq || (e && e.name === 'AbortError')) return;
      const why = e instanceof ApiError || e instanceof Error ? e.message : String(e);
      if (answer && answer.key === key) {
        setStatus(`Could not refresh the breakdown by ${key}: ${why}. Showing the one computed at ${time(new Date(answer.at).toISOString())}.`);
      } else {
        answer = null;
        out.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert', 'data-testid': 'segments-error' },
          `Could not break the results down by ${key}: ${why}`));
        setStatus('');
      }
    } finally {
      if (mine === seq) {
        busy = false;
        controller = null;
        refreshBtn.disabled = false;
        out.removeAttribute('aria-busy');
        schedule();
      }
    }
  }

  /** New data since the answer: read it again, REFRESH_MS after the last read at the earliest. */
  function schedule() {
    if (stopped || !chosen || !answer || answer.key !== chosen || busy || timer) return;
    if (dataSignature(snap) === answer.sig) return;
    const wait = Math.max(0, answer.at + REFRESH_MS - Date.now());
    timer = setTimeout(() => {
      timer = null;
      if (stopped || !chosen || !answer) return;
      if (document.hidden) return; // the next snapshot after the tab shows again asks anew
      if (dataSignature(snap) !== answer.sig) fetchBreakdown();
    }, wait);
  }

  function statusText() {
    const b = answer.body;
    const segs = b && Array.isArray(b.segments) ? b.segments : [];
    const units = segs.reduce((a, sg) => a + (isNum(sg.units) ? sg.units : 0), 0);
    const when = b && b.computed_at ? time(b.computed_at) : time(new Date(answer.at).toISOString());
    const newer = dataSignature(snap) !== answer.sig;
    return `Broken down by ${answer.key} at ${when}: ${int(units)} units in ${int(segs.length)} segment${segs.length === 1 ? '' : 's'}.`
      + (newer ? ` New data has arrived since: the breakdown follows within ${REFRESH_MS / 1000} s, or press Refresh.` : '');
  }

  function draw() {
    const b = answer.body;
    if (!b) {
      out.replaceChildren(h('p', { class: 'muted' }, 'The server answered without a breakdown.'));
      setStatus('');
      return;
    }
    const segs = Array.isArray(b.segments) ? b.segments : [];
    const alpha = snap && isNum(snap.alpha) ? snap.alpha : 0.05;
    const tracked = isNum(b.tracked_values) ? b.tracked_values : 50;
    const notSeg = b.not_segmented || {};
    const rows = segs.flatMap((sg) => (Array.isArray(sg.lift) ? sg.lift : []));
    const withRows = [...new Set(rows.map((r) => r.metric))];
    const order = metricOrder();
    const metrics = [...new Set([...order, ...withRows, ...Object.keys(notSeg).sort()])]
      .filter((m) => withRows.includes(m) || notSeg[m]);
    const variantKeys = getExp().variants.map((v) => v.key);
    const control = (snap && snap.control) || (rows[0] && rows[0].control) || variantKeys[0];
    const seen = new Set(rows.map((r) => r.treatment));
    const treatments = [...variantKeys.filter((k) => seen.has(k)), ...[...seen].filter((k) => !variantKeys.includes(k))];
    mount(out,
      h('div', { class: 'alert alert-warning segments-warning', role: 'note', 'data-testid': 'segments-warning' },
        h('strong', null, 'Exploratory. '), b.warning || 'Segment results are exploratory: each segment is tested on its own, with no correction across segments.'),
      segs.length ? null : h('p', { class: 'muted', 'data-testid': 'segments-empty' }, `No unit to break down by ${answer.key} yet.`),
      metrics.map((m) => metricBlock(m, { segs, notSeg, treatments, control, alpha, tracked, het: b.heterogeneity || [], key: answer.key })));
    out.dataset.segment = answer.key;
    setStatus(statusText());
  }

  function metricBlock(metric, { segs, notSeg, treatments, control, alpha, tracked, het, key }) {
    const primary = snap && snap.primary_metric === metric;
    const head = h('h3', { class: 'segments-metric-title' }, h('code', null, metric), primary ? h('span', { class: 'tag' }, 'primary') : null);
    if (notSeg[metric]) {
      return h('section', { class: 'segments-metric', 'data-testid': `segments-${metric}`, 'data-metric': metric },
        head, h('p', { class: 'muted small', 'data-testid': 'segments-not-segmented' }, `Not broken down: ${notSeg[metric]}.`));
    }
    const rate = isRate(metric);
    const vt = (v) => valueText(v, rate);
    const kind = rate ? 'rate' : 'mean';
    const anyRow = segs.flatMap((sg) => sg.lift || []).find((r) => r.metric === metric);
    const goal = anyRow && anyRow.goal === 'minimize' ? 'lower is better' : 'higher is better';
    head.appendChild(h('span', { class: 'muted small' }, ` ${goal}`));
    return h('section', { class: 'segments-metric', 'data-testid': `segments-${metric}`, 'data-metric': metric },
      head,
      treatments.map((t) => {
        const hz = heterogeneityText(het.find((x) => x.metric === metric && x.treatment === t), alpha);
        const hRow = het.find((x) => x.metric === metric && x.treatment === t) || {};
        const caption = `${metric}: ${t} against ${control}, per ${key}`;
        return h('div', { class: 'segments-comparison', 'data-testid': 'segments-comparison', 'data-treatment': t },
          h('div', { class: 'table-wrap segments-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
            h('table', { class: 'table compact segments-table', 'data-testid': 'segments-table', 'data-metric': metric, 'data-treatment': t },
              h('caption', null, h('code', null, t), ' vs ', h('code', null, control), ` per ${key}`),
              h('thead', null, h('tr', null,
                h('th', { scope: 'col' }, 'Segment', h('br'), h('span', { class: 'th-sub' }, 'units')),
                h('th', { scope: 'col', class: 'num' }, h('code', { class: 'th-key' }, control), h('br'), h('span', { class: 'th-sub' }, kind)),
                h('th', { scope: 'col', class: 'num' }, h('code', { class: 'th-key' }, t), h('br'), h('span', { class: 'th-sub' }, kind)),
                h('th', { scope: 'col', class: 'num' }, 'Rel lift', h('br'), h('span', { class: 'th-sub' }, '95% CI')))),
              h('tbody', null, segs.map((sg) => segmentRow(sg, metric, t, control, { vt, rate, tracked }))))),
          h('p', {
            class: `segments-het${hz.differs ? ' het-differs' : ''}`, 'data-testid': 'segments-heterogeneity', 'data-treatment': t,
            'data-differs': hz.differs === null ? 'unknown' : String(hz.differs), 'data-p': raw(hRow.p_value), 'data-q': raw(hRow.q), 'data-i2': raw(hRow.i2),
            title: isNum(hRow.q) ? `Cochran's Q ${hRow.q} on ${hRow.df} df over ${hRow.segments} segments, p ${hRow.p_value}, I² ${hRow.i2}; pooled absolute lift ${hRow.pooled_abs_lift}` : null,
          }, hz.differs ? h('span', { 'aria-hidden': 'true' }, '\u25b2 ') : null, hz.text,
          isNum(hRow.segments) && hz.differs !== null ? h('span', { class: 'muted' }, ` \u00b7 ${int(hRow.segments)} segments with an estimate`) : null));
      }));
  }

  function segmentRow(sg, metric, t, control, { vt, rate, tracked }) {
    const r = (sg.lift || []).find((x) => x.metric === metric && x.treatment === t) || null;
    const per = (sg.metrics || {})[metric] || null;
    const ex = (sg.exposures && sg.exposures.variants) || {};
    const armUnits = (k) => (ex[k] && isNum(ex[k].units) ? ex[k].units : 0);
    const sub = (k) => {
      const s = per && per[k];
      if (rate && s) return `${int(s.sum)} / ${int(s.exposed_units)}`;
      return `${int(armUnits(k))} units`;
    };
    const mean = (k, v, testid) => h('td', { class: 'num', 'data-testid': testid, title: raw(v) },
      h('div', null, r ? vt(v) : '—'), h('div', { class: 'muted small' }, sub(k)));
    const dir = r && r.significant ? (isBetter(r) ? 'better' : 'worse') : 'unclear';
    const label = segmentLabel(sg, tracked);
    return h('tr', { 'data-testid': 'segment-row', 'data-kind': sg.kind, 'data-value': sg.value ?? '' },
      h('th', { scope: 'row', class: sg.kind === 'value' ? 'segment-value' : 'segment-value segment-rest' },
        h('div', { 'data-testid': 'segment-label' }, label),
        h('div', { class: 'muted small', 'data-testid': 'segment-units', title: `${control}: ${armUnits(control)} units, ${t}: ${armUnits(t)} units` }, `${int(sg.units)} units`)),
      mean(control, r && r.control_mean, 'segment-control-mean'),
      mean(t, r && r.treatment_mean, 'segment-treatment-mean'),
      h('td', {
        class: `num dir-${dir}`, 'data-testid': 'segment-rel-lift', 'data-significant': r && r.significant ? 'true' : 'false',
        'data-value': raw(r && r.rel_lift), 'data-lo': raw(r && r.rel_ci && r.rel_ci[0]), 'data-hi': raw(r && r.rel_ci && r.rel_ci[1]),
        title: r && isNum(r.rel_lift) ? `${r.rel_lift} [${raw(r.rel_ci && r.rel_ci[0])}, ${raw(r.rel_ci && r.rel_ci[1])}]${r.significant ? '; significant in this segment alone (no correction across segments)' : ''}` : null,
      },
      h('div', { class: 'strong' }, r ? relPct(r.rel_lift) : '—'),
      h('div', { class: 'small seg-ci' }, r && isNum(r.rel_lift) ? interval(r.rel_ci, relPct) : (r && r.reason) || (per ? '' : 'no events'))));
  }

  // ---- the page's snapshots ----
  function update(next) {
    snap = next;
    if (stopped) return;
    // The attributes are read once per page (the read scans raw events); Refresh reads them again.
    if (segKeys === null && !keysTried) { keysTried = true; loadKeys(); }
    if (answer && answer.key === chosen) setStatus(statusText());
    schedule();
  }

  function stop() {
    stopped = true;
    clearTimeout(timer);
    if (controller) controller.abort();
  }

  return { el, hint, update, stop };
}
