// /experiments — every experiment with its status badge; filters by status and owner team.

import { experiments } from '../api.js';
import { h, mount, nextId, setTitle, statusBadge } from '../dom.js';
import { sparkline } from '../charts.js';
import { date, dateTime, duration, int, pct, prob, raw, relPct } from '../format.js';
import { isBetter } from '../verdict.js';

const STATUSES = ['draft', 'running', 'paused', 'stopped'];
/** Rows whose results the browser fetches, one request each: fine for a list of this size. */
export const SUMMARY_LIMIT = 50;
const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

function runningMs(e) {
  const start = Date.parse(e.launched_at || '');
  if (Number.isNaN(start)) return null;
  const end = e.status === 'stopped' ? Date.parse(e.stopped_at || '') : Date.now();
  return Math.max(0, (Number.isNaN(end) ? Date.now() : end) - start);
}

/** What the list shows of one results snapshot. */
export function summarize(snap, e) {
  const ex = snap.exposures || {};
  const units = isNum(ex.total_units) ? ex.total_units : 0;
  const tl = Array.isArray(ex.timeline) ? ex.timeline : [];
  const spark = tl.map((p) => Object.entries(p).reduce((a, [k, v]) => (k !== 't' && isNum(v) ? a + v : a), 0));
  const primary = snap.primary_metric;
  let leader = null;
  const b = snap.bandit;
  if (b && e.allocation === 'bandit' && b.top_variant) {
    const top = b.converged ? (b.converged_variant || b.top_variant) : b.top_variant;
    leader = { key: top, rel: (b.p_best || {})[top], bandit: true, significant: !!b.converged, better: true,
      text: b.converged ? 'converged' : 'not converged yet' };
  } else {
    const rows = (snap.lift || []).filter((r) => r.metric === primary && isNum(r.rel_lift));
    // The best treatment for the metric's goal; significant ones first.
    const score = (r) => (r.goal === 'minimize' ? -r.rel_lift : r.rel_lift);
    rows.sort((x, y) => (Number(!!y.significant && isBetter(y)) - Number(!!x.significant && isBetter(x))) || score(y) - score(x));
    const r = rows[0];
    if (r) {
      const better = isBetter(r);
      leader = { key: r.treatment, rel: r.rel_lift, significant: !!r.significant, better,
        text: r.significant ? `significant, ${better ? 'better' : 'worse'} on ${primary}` : `not yet significant on ${primary}` };
    }
  }
  return { units, spark, primary, leader };
}

export async function render(root, _params, ctx) {
  setTitle('Experiments');
  const status = (ctx.query.get('status') || '').toLowerCase();
  const team = ctx.query.get('team') || '';

  const statusSelect = h('select', { id: 'filter-status', name: 'status', 'data-testid': 'filter-status' },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map((st) => h('option', { value: st, selected: st === status }, st.toUpperCase())));
  const teamListId = nextId('teams');
  const teamInput = h('input', {
    id: 'filter-team', name: 'team', type: 'search', value: team, list: teamListId,
    placeholder: 'Any team', autocomplete: 'off', 'data-testid': 'filter-team',
  });
  const teamList = h('datalist', { id: teamListId });

  const apply = () => {
    const qs = new URLSearchParams();
    if (statusSelect.value) qs.set('status', statusSelect.value);
    if (teamInput.value.trim()) qs.set('team', teamInput.value.trim());
    const s = qs.toString();
    ctx.navigate(`/experiments${s ? `?${s}` : ''}`, { replace: true });
  };
  statusSelect.addEventListener('change', apply);
  const filters = h('form', {
    class: 'filters', role: 'search', 'aria-label': 'Filter experiments',
    onsubmit: (ev) => { ev.preventDefault(); apply(); },
  },
  h('div', { class: 'field inline' }, h('label', { for: 'filter-status' }, 'Status'), statusSelect),
  h('div', { class: 'field inline' }, h('label', { for: 'filter-team' }, 'Owner team'), teamInput, teamList),
  h('button', { type: 'submit', class: 'btn' }, 'Filter'),
  (status || team) ? h('a', { href: '/experiments', class: 'btn btn-ghost', 'data-testid': 'clear-filters' }, 'Clear filters') : null);
  teamInput.addEventListener('change', apply);

  const body = h('div', { class: 'list-body' }, h('p', { class: 'muted' }, 'Loading experiments…'));
  mount(root,
    h('div', { class: 'page-head' },
      h('h1', { tabindex: '-1' }, 'Experiments'),
      h('a', { href: '/experiments/new', class: 'btn btn-primary', 'data-testid': 'new-experiment-link' }, '+ New experiment')),
    filters,
    body);

  let data;
  try {
    data = await experiments.list({ status, owner_team: team });
  } catch (e) {
    if (ctx.isCurrent()) mount(body, ctx.errorView(e, 'the experiments list'));
    return undefined;
  }
  if (!ctx.isCurrent()) return undefined;
  const items = data.experiments || [];

  // Team suggestions: from this answer, plus every team when the list is unfiltered.
  const teams = new Set(items.map((e) => e.owner_team));
  if (status || team) {
    experiments.list({}, { prompt: false }).then((all) => {
      for (const e of all.experiments || []) teams.add(e.owner_team);
      mount(teamList, [...teams].sort().map((t) => h('option', { value: t })));
    }).catch(() => {});
  }
  mount(teamList, [...teams].sort().map((t) => h('option', { value: t })));

  if (!items.length) {
    // "Create the first experiment" only when there is none at all: with filters on, an empty
    // answer says nothing about the others, so ask once without them.
    let none = !(status || team);
    if (!none) {
      try {
        const all = await experiments.list({ limit: 1 }, { prompt: false });
        none = !(all.experiments || []).length;
      } catch { /* unknown: say only what is certain, that the filters match nothing */ }
      if (!ctx.isCurrent()) return undefined;
    }
    const clear = (status || team)
      ? h('a', { href: '/experiments', class: 'btn', 'data-testid': 'empty-clear-filters' }, 'Clear filters')
      : null;
    mount(body, h('div', { class: 'empty card', 'data-testid': 'empty-list' },
      h('p', { 'data-testid': 'empty-message' }, status || team
        ? `No experiments match these filters${none ? ', and none exist yet' : ''}.`
        : 'No experiments yet.'),
      h('div', { class: 'actions' },
        clear,
        none ? h('a', { href: '/experiments/new', class: 'btn btn-primary', 'data-testid': 'create-first' }, 'Create the first experiment') : null)));
    return undefined;
  }

  // Per experiment, what its latest results snapshot says: units, the leader on the primary
  // metric, significance, time running and an exposures sparkline. Each row's snapshot is
  // fetched by the browser (GET .../results), four at a time, for the first SUMMARY_LIMIT rows.
  const rows = items.map((e) => ({ e, sum: null, state: 'loading', tr: null }));
  let sortKey = ctx.query.get('sort') || 'created';
  let sortDir = ctx.query.get('dir') || (sortKey === 'name' || sortKey === 'team' ? 'asc' : 'desc');
  const tbody = h('tbody');
  const headCells = new Map();
  const COLS = [
    ['name', 'Name'], ['team', 'Owner team'], ['status', 'Status'], ['units', 'Units'],
    ['leader', 'Leader on primary'], ['running', 'Running'], [null, 'Exposures'], ['ramp', 'Ramp'], [null, 'Allocation'], ['created', 'Created'],
  ];
  const thead = h('thead', null, h('tr', null, COLS.map(([key, label]) => {
    if (!key) return h('th', { scope: 'col' }, label);
    const btn = h('button', { type: 'button', class: 'sort-btn', 'data-testid': `sort-${key}`, onclick: () => sortBy(key) }, label, h('span', { class: 'sort-mark', 'aria-hidden': 'true' }));
    const th = h('th', { scope: 'col', 'data-sort-key': key, class: ['units', 'leader', 'running', 'ramp'].includes(key) ? 'num' : null }, btn);
    headCells.set(key, th);
    return th;
  })));
  const table = h('table', { class: 'table stack list-table', 'data-testid': 'experiments-table' },
    h('caption', { class: 'sr-only', 'data-testid': 'table-caption' }, 'Experiments'),
    thead, tbody);
  const statusRank = { running: 0, paused: 1, draft: 2, stopped: 3 };
  const value = (r, key) => {
    const e = r.e;
    const s = r.sum;
    switch (key) {
      case 'name': return e.name.toLowerCase();
      case 'team': return (e.owner_team || '').toLowerCase();
      case 'status': return statusRank[e.status] ?? 9;
      case 'units': return s ? s.units : null;
      case 'leader': return s && s.leader && !s.leader.bandit && isNum(s.leader.rel) ? s.leader.rel : null;
      case 'running': return runningMs(e);
      case 'ramp': return e.ramp;
      default: return Date.parse(e.created_at) || 0;
    }
  };
  function sortBy(key) {
    if (key === sortKey) sortDir = sortDir === 'asc' ? 'desc' : 'asc';
    else { sortKey = key; sortDir = key === 'name' || key === 'team' || key === 'status' ? 'asc' : 'desc'; }
    draw();
    const btn = headCells.get(key).querySelector('button');
    if (btn) btn.focus();
  }
  function draw() {
    const sign = sortDir === 'asc' ? 1 : -1;
    const sorted = [...rows].sort((a, b) => {
      const x = value(a, sortKey);
      const y = value(b, sortKey);
      if (x === null && y === null) return 0;
      if (x === null) return 1; // unknown values last, either way
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * sign;
    });
    for (const [key, th] of headCells) {
      th.setAttribute('aria-sort', key === sortKey ? (sortDir === 'asc' ? 'ascending' : 'descending') : 'none');
      th.querySelector('.sort-mark').textContent = key === sortKey ? (sortDir === 'asc' ? ' ▲' : ' ▼') : '';
    }
    const label = COLS.find(([k]) => k === sortKey);
    table.querySelector('caption').textContent = `Experiments, sorted by ${label ? label[1].toLowerCase() : sortKey} (${sortDir === 'asc' ? 'ascending' : 'descending'})`;
    tbody.replaceChildren(...sorted.map((r) => { if (!r.tr) r.tr = rowEl(r); return r.tr; }));
  }
  function rowEl(r) {
    const e = r.e;
    const s = r.sum;
    const pending = r.state === 'loading';
    const none = (why) => h('span', { class: 'muted', title: why }, '—');
    const loading = h('span', { class: 'muted', 'aria-label': 'loading' }, '…');
    const leader = s && s.leader;
    const tone = leader ? (leader.significant ? (leader.better ? 'better' : 'worse') : 'unclear') : 'unclear';
    return h('tr', { 'data-testid': 'experiment-row', 'data-id': e.id, 'data-key': e.key, 'data-summary': r.state },
      h('td', { 'data-label': 'Name' }, h('a', { href: `/experiments/${e.id}`, class: 'row-link' }, e.name), h('div', { class: 'muted small' }, h('code', null, e.key))),
      h('td', { 'data-label': 'Owner team' }, e.owner_team),
      h('td', { 'data-label': 'Status' }, statusBadge(e.status)),
      h('td', { 'data-label': 'Units', class: 'num', 'data-testid': 'summary-units', 'data-value': s ? String(s.units) : '' },
        pending ? loading : s ? int(s.units) : none(r.why)),
      h('td', { 'data-label': 'Leader on primary', class: `num dir-${tone}`, 'data-testid': 'summary-leader', 'data-leader': leader ? leader.key : '', 'data-significant': leader ? String(!!leader.significant) : '' },
        pending ? loading : leader ? [
          h('div', null, h('code', null, leader.key), ' ', h('strong', { title: raw(leader.rel) }, leader.bandit ? `P(best) ${prob(leader.rel)}` : relPct(leader.rel))),
          h('div', { class: 'small', 'data-testid': 'summary-significance' }, leader.text),
        ] : none(s ? `no comparison on ${s.primary} yet` : r.why)),
      h('td', { 'data-label': 'Running', class: 'num', 'data-testid': 'summary-running' }, runningMs(e) === null ? none('not launched') : duration(runningMs(e))),
      h('td', { 'data-label': 'Exposures', class: 'spark-cell' }, pending ? loading : s && s.spark.length >= 2
        ? sparkline(s.spark, { label: `Exposed units per interval over time (${s.spark.length} points)`, testid: 'summary-sparkline' })
        : none('no exposures over time yet')),
      h('td', { 'data-label': 'Ramp', class: 'num' }, e.status === 'draft' ? h('span', { class: 'muted', title: 'The ramp applies from launch' }, pct(e.ramp, 0)) : pct(e.ramp, 0)),
      h('td', { 'data-label': 'Allocation' }, e.allocation === 'bandit' ? h('span', { class: 'tag tag-bandit' }, 'bandit') : h('span', { class: 'tag' }, 'fixed')),
      h('td', { 'data-label': 'Created' }, h('time', { datetime: e.created_at, title: dateTime(e.created_at) }, date(e.created_at))));
  }
  const capped = items.length > SUMMARY_LIMIT;
  mount(body,
    h('p', { class: 'muted count', 'data-testid': 'experiment-count' }, `${items.length} experiment${items.length === 1 ? '' : 's'}`,
      capped ? ` · results summaries for the first ${SUMMARY_LIMIT} (sort or filter to see others)` : ''),
    h('div', { class: 'table-wrap' }, table));
  // Fetch the summaries, a few at a time; each row redraws when its snapshot arrives.
  const queue = rows.filter((r) => r.e.status !== 'draft').slice(0, SUMMARY_LIMIT);
  for (const r of rows) if (r.e.status === 'draft' || !queue.includes(r)) { r.state = 'none'; r.why = r.e.status === 'draft' ? 'a draft has no results' : 'not fetched'; }
  draw();
  const worker = async () => {
    while (queue.length && ctx.isCurrent()) {
      const r = queue.shift();
      try {
        const snap = await experiments.results(r.e.id, { prompt: false });
        r.sum = summarize(snap, r.e);
        r.state = 'ready';
      } catch (err) {
        r.state = 'none';
        r.why = err && err.status === 404 ? 'no results yet' : `could not load the results (${err && err.message})`;
      }
      if (!ctx.isCurrent()) return;
      r.tr = null;
      draw();
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  if (ctx.isCurrent()) table.dataset.summaries = 'done';
  return undefined;
}
