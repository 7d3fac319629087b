// /experiments — every experiment with its status badge; filters by status and owner team.

import { experiments } from '../api.js';
import { h, mount, nextId, setTitle, statusBadge } from '../dom.js';
import { date, dateTime, pct } from '../format.js';

const STATUSES = ['draft', 'running', 'paused', 'stopped'];

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
    mount(body, h('div', { class: 'empty card', 'data-testid': 'empty-list' },
      h('p', null, status || team ? 'No experiments match these filters.' : 'No experiments yet.'),
      h('a', { href: '/experiments/new', class: 'btn btn-primary' }, 'Create the first experiment')));
    return undefined;
  }

  const table = h('table', { class: 'table stack', 'data-testid': 'experiments-table' },
    h('caption', { class: 'sr-only' }, 'Experiments, newest first'),
    h('thead', null, h('tr', null,
      ['Name', 'Key', 'Owner team', 'Status', 'Ramp', 'Allocation', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', null, items.map((e) => h('tr', { 'data-testid': 'experiment-row', 'data-id': e.id, 'data-key': e.key },
      h('td', { 'data-label': 'Name' }, h('a', { href: `/experiments/${e.id}`, class: 'row-link' }, e.name)),
      h('td', { 'data-label': 'Key' }, h('code', null, e.key)),
      h('td', { 'data-label': 'Owner team' }, e.owner_team),
      h('td', { 'data-label': 'Status' }, statusBadge(e.status)),
      h('td', { 'data-label': 'Ramp', class: 'num' }, e.status === 'draft' ? h('span', { class: 'muted', title: 'The ramp applies from launch' }, pct(e.ramp, 0)) : pct(e.ramp, 0)),
      h('td', { 'data-label': 'Allocation' }, e.allocation === 'bandit' ? h('span', { class: 'tag tag-bandit' }, 'bandit') : h('span', { class: 'tag' }, 'fixed')),
      h('td', { 'data-label': 'Created' }, h('time', { datetime: e.created_at, title: dateTime(e.created_at) }, date(e.created_at)))))));
  mount(body,
    h('p', { class: 'muted count', 'data-testid': 'experiment-count' }, `${items.length} experiment${items.length === 1 ? '' : 's'}`),
    h('div', { class: 'table-wrap' }, table));
  return undefined;
}
