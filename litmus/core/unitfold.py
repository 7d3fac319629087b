"""Per-unit state of the results fold, kept in the recompute leader's memory. Pure (numpy).

A unit belongs to the variant of its first exposure; its value for a metric is the sum of its
events' values. The per-arm sufficient statistics (units, events, Σ total, Σ total², and the
units whose total is above 0: a binary bandit's successes, whether failures arrive as 0-valued
events or not at all) change by deltas that need each touched unit's previous total and arm, so
the fold keeps, per experiment:

- units: sorted 64-bit unit keys (a hash of the unit id), the first exposure's time, tie-break
  (a hash of its event id: of two exposures at the same time the lower hash is first, whatever
  order they were folded in, so a replay decides exactly as the first fold did) and arm;
- per metric: sorted unit keys, the unit's total and event count, and the unit's arm (-1 while
  the unit has no exposure: "unattributed").

Folding a batch of events costs a binary search per distinct unit of the batch plus one
vectorised insertion of the new keys: it grows with what arrived, not with what is stored (the
insertion moves memory, about a millisecond per million stored keys). Stored in PostgreSQL as
row-per-key tables this cost 15-20 µs per key in B-tree descents and heap updates
(docs/PERFORMANCE.md, "Results recompute"); here it is well under a microsecond.

Unit keys are 64-bit hashes: two unit ids of one experiment share a key with probability
about n²/2⁶⁵ (one in 1.4 million for 5 million units), and would then be counted as one unit.
Times are microseconds since 2000-01-01 UTC (PostgreSQL's binary timestamp).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from litmus.core.counterfactual import PropensitySums
from litmus.core.quantiles import Sketch

# Names for what each array holds; typed loosely (numpy's integer results widen under mypy).
I64 = npt.NDArray[Any]  # int64
I16 = npt.NDArray[Any]  # int16
F64 = npt.NDArray[Any]  # float64

# The timeline's slot widths, here only: exposure_timeline's slots, which a fold counts units
# into, and exposure_timeline_hourly's, which whole slots add up to (sql/fold.sql).
SLOT_S = 10
HOURLY_SLOT_S = 3600
SLOT_US = SLOT_S * 1_000_000
NO_ARM = -1


@dataclass(slots=True)
class Deltas:
    """What a fold adds to the per-arm tables, keyed by variant position (-1: unattributed)."""

    # variant -> [units, events]
    exposures: dict[int, list[int]] = field(default_factory=dict)
    # (variant, metric) -> [units, events, sum, sum_sq, units with a total above 0]
    metrics: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    # (slot start in µs, variant) -> units whose first exposure is in that slot (SLOT_US)
    timeline: dict[tuple[int, int], int] = field(default_factory=dict)

    def add_exposures(self, arms: I64, units: int, events: int) -> None:
        """Add `units` and `events` to each listed arm (repeats add up)."""
        for arm, n in _counts(arms):
            cur = self.exposures.setdefault(arm, [0, 0])
            cur[0] += units * n
            cur[1] += events * n

    def add_metric(self, metric: str, arms: I16, units: I64 | int,
                   events: I64, sums: F64, sum_sq: F64, positive: I64) -> None:
        """Add per-row contributions to (arm, metric), summed per arm."""
        if len(arms) == 0:
            return
        idx = arms.astype(np.int64) + 1
        width = int(idx.max()) + 1
        u = np.bincount(idx, weights=np.broadcast_to(units, idx.shape).astype(np.float64),
                        minlength=width)
        e = np.bincount(idx, weights=events.astype(np.float64), minlength=width)
        s = np.bincount(idx, weights=sums, minlength=width)
        q = np.bincount(idx, weights=sum_sq, minlength=width)
        pos = np.bincount(idx, weights=positive.astype(np.float64), minlength=width)
        present = np.bincount(idx, minlength=width) > 0
        for i in np.flatnonzero(present):
            cur = self.metrics.setdefault((int(i) - 1, metric), [0, 0, 0.0, 0.0, 0])
            cur[0] += round(float(u[i]))
            cur[1] += round(float(e[i]))
            cur[2] += float(s[i])
            cur[3] += float(q[i])
            cur[4] += round(float(pos[i]))

    def add_timeline(self, ts: I64, arms: I16, sign: int) -> None:
        """Count units into their first exposure's slot (sign -1: take them out)."""
        if len(ts) == 0:
            return
        slots = (ts // SLOT_US) * SLOT_US
        pairs = np.stack([slots, arms.astype(np.int64)], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        for (slot, arm), n in zip(uniq.tolist(), counts.tolist(), strict=True):
            key = (int(slot), int(arm))
            self.timeline[key] = self.timeline.get(key, 0) + sign * int(n)


def _counts(values: I64) -> Iterator[tuple[int, int]]:
    uniq, counts = np.unique(values, return_counts=True)
    return zip((int(v) for v in uniq), (int(c) for c in counts), strict=True)


def _lookup(sorted_keys: I64, keys: I64) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Positions of `keys` in `sorted_keys` (insertion points) and whether each is there."""
    pos = np.searchsorted(sorted_keys, keys).astype(np.int64)
    found = pos < len(sorted_keys)
    found[found] = sorted_keys[pos[found]] == keys[found]
    return pos, found


def _insert_rows(a: F64, pos: I64, rows: F64) -> F64:
    """`np.insert(a, pos, rows, axis=0)` for a 2-D float array, through a 1-D view of one
    record per row: numpy's axis-0 insert into a (2 M, 2) array took 32-50 ms for 10 k rows,
    the same insert of records about a third of that (docs/PERFORMANCE.md, "Covariates")."""
    n, width = a.shape
    if width == 0:
        return np.empty((n + len(pos), 0), np.float64)
    record = np.dtype((np.void, 8 * width))
    flat = np.ascontiguousarray(a, np.float64).view(record).reshape(n)
    new = np.ascontiguousarray(rows, np.float64).reshape(len(pos), width).view(record)
    out: F64 = np.insert(flat, pos, new.reshape(len(pos))).view(np.float64).reshape(-1, width)
    return out


MAX_COVARIATES = 5
"""Covariates an exposure may carry (positions in the experiment's declared list)."""

# Sums kept per arm, each a table of columns by arm: the propensity sums (PropensitySums'
# fields: n, Σr, Σr², Σw, Σw², Σrw, Σr²w², Σrw² with w = 1/p, over units with a known
# probability below 1) and the CUPED sums (CupedSums' fields: n, Σx, Σx², Σy, Σy², Σxy with x
# the unit's covariate, 0 when it sent none, and y its total, over every unit with an arm).
# A kept table is named by (kind, metric, cap) or (kind, metric, cap, covariate position).
Kept = tuple[Any, ...]
_COLS = {"propensity": 8, "cuped": 6}


def _columns(name: Kept, arm: I16, prob: F64, cov: F64, r: F64,
             ) -> tuple[I64, list[F64 | None]] | None:
    """The arms and per-unit columns the units add to table `name` (None: none counts)."""
    kind, cap = name[0], name[2]
    if kind == "propensity":
        p = np.abs(prob)
        use = (p > 0) & (p < 1.0) & (arm >= 0)
    else:
        use = arm >= 0
    if not use.any():
        return None
    idx = arm[use].astype(np.int64)
    y = r[use] if cap is None else np.minimum(r[use], cap)
    if kind == "propensity":
        w = 1.0 / np.abs(prob[use])
        yw = y * w
        return idx, [None, y, y * y, w, w * w, yw, yw * yw, yw * w]
    slot = name[3]
    x = cov[use, slot] if slot < cov.shape[1] else np.zeros(len(idx))
    x = np.where(np.isnan(x), 0.0, x)
    return idx, [None, x, x * x, y, y * y, x * y]


def _kept_add(name: Kept, acc: F64, arm: I16, prob: F64, cov: F64, r: F64,
              sign: float) -> F64:
    """Add (sign +1) or take away (-1) units' contributions to a kept table `acc` (shape
    (columns, arms), grown as needed)."""
    cols = _columns(name, arm, prob, cov, r)
    if cols is None:
        return acc
    idx, xs = cols
    width = max(acc.shape[1], int(idx.max()) + 1)
    if width > acc.shape[1]:
        acc = np.concatenate([acc, np.zeros((len(xs), width - acc.shape[1]))], axis=1)
    for c, x in enumerate(xs):
        acc[c] += sign * np.bincount(idx, weights=x, minlength=width)
    return acc


def _by_arm(acc: F64) -> dict[int, tuple[float, ...]]:
    """Per arm with units, its column sums (the count first, exact though kept as a float)."""
    out: dict[int, tuple[float, ...]] = {}
    for a in range(acc.shape[1]):
        if int(float(acc[0, a]) + 0.5):
            out[a] = tuple(float(acc[c, a]) for c in range(acc.shape[0]))
    return out


@dataclass(slots=True)
class MetricUnits:
    """One metric's per-unit totals, sorted by unit key."""

    key: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    total: F64 = field(default_factory=lambda: np.empty(0, np.float64))
    events: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    arm: I16 = field(default_factory=lambda: np.empty(0, np.int16))


class ExperimentUnits:
    """The per-unit state of one experiment; `fold_*` mutate it and report arm deltas.

    Beside the per-unit totals it keeps, per (arm, metric), a quantile sketch of the individual
    event values (litmus/core/quantiles.py), for metrics read by a quantile: an event is added
    to its unit's arm when it is folded, or, while its unit has no exposure yet, held in
    `pending` until one arrives. A unit that later moves to another arm (a late, earlier
    exposure) moves its totals but not the events already in a sketch: those few stay where
    they were counted (docs/DEVELOPING.md, "Quantile metrics")."""

    __slots__ = ("_kept", "_pcounts", "arm", "cov", "key", "metrics", "pending", "prob",
                 "sketches", "tie", "ts")

    def __init__(self) -> None:
        self.key: I64 = np.empty(0, np.int64)
        self.ts: I64 = np.empty(0, np.int64)
        self.tie: I64 = np.empty(0, np.int64)
        self.arm: I16 = np.empty(0, np.int16)
        # The first exposure's probability as stored (litmus/db/events.py ExposureRow: > 0
        # given, < 0 server-filled, 0 unknown), moving with the first exposure.
        self.prob: F64 = np.empty(0, np.float64)
        # The first exposure's covariates by declared position (NaN: not sent), as many
        # columns as the experiment's exposures have used so far (0 until one sends any).
        self.cov: F64 = np.empty((0, 0), np.float64)
        self.metrics: dict[str, MetricUnits] = {}
        self.sketches: dict[tuple[int, str], Sketch] = {}
        # metric -> (unit keys, values) of events whose unit has no arm yet
        self.pending: dict[str, tuple[I64, F64]] = {}
        # The per-arm sums a snapshot asked for (propensity, CUPED), kept up to date by every
        # fold from then on, so a snapshot costs what changed, not every unit; and the counts
        # by kind of probability (None when a fold changed them).
        self._kept: dict[Kept, F64] = {}
        self._pcounts: dict[str, int] | None = None

    @property
    def units(self) -> int:
        """Exposed units."""
        return len(self.key)

    def fold_exposures(self, key: I64, variant: I64, ts: I64,
                       tie: I64, deltas: Deltas | None, prob: F64 | None = None,
                       cov: F64 | None = None) -> None:
        """Fold exposure events: a unit's arm is its earliest exposure's (time, then `tie`).

        A unit already stored keeps its arm unless the batch holds an exposure strictly
        earlier than its stored first one (a late, earlier exposure): then it moves, and its
        metric totals move with it."""
        if len(key) == 0:
            return
        variant = variant.astype(np.int16)
        if deltas is not None:
            deltas.add_exposures(variant, 0, 1)
        if prob is None:
            prob = np.zeros(len(key), np.float64)
        cov = self._fit_covariates(cov, len(key))
        o = np.lexsort((tie, ts, key))
        k, v, t, b, pr, cv = key[o], variant[o], ts[o], tie[o], prob[o], cov[o]
        first = np.ones(len(k), np.bool_)
        first[1:] = k[1:] != k[:-1]
        k, v, t, b, pr, cv = k[first], v[first], t[first], b[first], pr[first], cv[first]
        pos, found = _lookup(self.key, k)
        # Stored units with an earlier exposure in this batch.
        fpos = pos[found]
        ft, fb = t[found], b[found]
        st, sb = self.ts[fpos], self.tie[fpos]
        earlier = (ft < st) | ((ft == st) & (fb < sb))
        mpos = fpos[earlier]
        old_arm, old_ts, old_prob = self.arm[mpos], self.ts[mpos], self.prob[mpos]
        old_cov = self.cov[mpos]
        new_arm, new_ts = v[found][earlier], ft[earlier]
        self.arm[mpos] = new_arm
        self.ts[mpos] = new_ts
        self.tie[mpos] = fb[earlier]
        self.prob[mpos] = pr[found][earlier]
        self.cov[mpos] = cv[found][earlier]
        # Units seen for the first time.
        nk, nv, nt, npos = k[~found], v[~found], t[~found], pos[~found]
        self.key = np.insert(self.key, npos, nk)
        self.ts = np.insert(self.ts, npos, nt)
        self.tie = np.insert(self.tie, npos, b[~found])
        self.arm = np.insert(self.arm, npos, nv)
        self.prob = np.insert(self.prob, npos, pr[~found])
        self.cov = _insert_rows(self.cov, npos, cv[~found])
        self._pcounts = None
        if self._kept:
            self._kept_moves(np.concatenate([k[found][earlier], nk]),
                             (np.concatenate([old_arm, np.full(len(nk), NO_ARM, np.int16)]),
                              np.concatenate([old_prob, np.zeros(len(nk))]),
                              np.concatenate([old_cov, cv[~found]])),
                             (np.concatenate([new_arm, nv]),
                              np.concatenate([pr[found][earlier], pr[~found]]),
                              np.concatenate([cv[found][earlier], cv[~found]])))
        if deltas is not None:
            switched = old_arm != new_arm
            deltas.add_exposures(nv, 1, 0)
            deltas.add_exposures(new_arm[switched], 1, 0)
            deltas.add_exposures(old_arm[switched], -1, 0)
            deltas.add_timeline(nt, nv, 1)
            deltas.add_timeline(new_ts, new_arm, 1)
            deltas.add_timeline(old_ts, old_arm, -1)
        # Units whose arm changed (new ones came from "unattributed") carry their totals.
        moved_key = np.concatenate([nk, k[found][earlier]])
        moved_arm = np.concatenate([nv, new_arm])
        if len(moved_key) and self.metrics:
            o = np.argsort(moved_key)
            self._move_metrics(moved_key[o], moved_arm[o], deltas)

    def _fit_covariates(self, cov: F64 | None, n: int) -> F64:
        """A batch's covariates with as many columns as the state keeps, widening the state
        (NaN: not sent) when the batch uses a later position."""
        used = 0
        if cov is not None and cov.size:
            sent = ~np.isnan(cov).all(axis=0)
            used = int(np.flatnonzero(sent)[-1]) + 1 if sent.any() else 0
        width = max(used, self.cov.shape[1])
        if width > self.cov.shape[1]:
            self.cov = np.concatenate(
                [self.cov, np.full((len(self.key), width - self.cov.shape[1]), np.nan)], axis=1)
        out = np.full((n, width), np.nan)
        if cov is not None and used:
            out[:, :used] = cov[:, :used]
        return out

    def _kept_moves(self, key: I64, old: tuple[I16, F64, F64], new: tuple[I16, F64, F64]) -> None:
        """Keep the kept sums true when units change arm, probability or covariates (a new
        unit comes from no arm): each table takes their old contribution away and adds the
        new one, with the unit's total for the table's metric."""
        for name, acc in self._kept.items():
            r = np.zeros(len(key), np.float64)
            m = self.metrics.get(name[1])
            if m is not None and len(m.key):
                pos, found = _lookup(m.key, key)
                r[found] = m.total[pos[found]]
            acc = _kept_add(name, acc, *old, r, -1.0)
            self._kept[name] = _kept_add(name, acc, *new, r, 1.0)

    def _sketch(self, metric: str, arms: I16, values: F64) -> None:
        """Add events to their arms' sketches; events without an arm wait in `pending`."""
        for a in np.unique(arms).tolist():
            if a == NO_ARM:
                continue
            sk = self.sketches.get((a, metric))
            if sk is None:
                sk = self.sketches[(a, metric)] = Sketch()
            sk.add(values[arms == a])

    def _release_pending(self, key: I64, arm: I16) -> None:
        """Sketch the waiting events of units that now have an arm (`key` sorted)."""
        for metric, (pk, pv) in list(self.pending.items()):
            pos, found = _lookup(key, pk)
            if not found.any():
                continue
            self._sketch(metric, arm[pos[found]], pv[found])
            if found.all():
                del self.pending[metric]
            else:
                self.pending[metric] = (pk[~found], pv[~found])

    def _move_metrics(self, key: I64, arm: I16, deltas: Deltas | None) -> None:
        if self.pending:
            self._release_pending(key, arm)
        for metric, m in self.metrics.items():
            pos, found = _lookup(m.key, key)
            p = pos[found]
            old, new = m.arm[p], arm[found]
            change = old != new
            p, old, new = p[change], old[change], new[change]
            if len(p) == 0:
                continue
            if deltas is not None:
                tot, ev = m.total[p], m.events[p]
                pos = (tot > 0).astype(np.int64)
                deltas.add_metric(metric, old, -1, -ev, -tot, -tot * tot, -pos)
                deltas.add_metric(metric, new, 1, ev, tot, tot * tot, pos)
            m.arm[p] = new

    def fold_metrics(self, metric: str, key: I64, value: F64, deltas: Deltas | None) -> None:
        """Fold one metric's events: each unit's total grows by its events' values, on the
        unit's arm (the first exposure's, folded before; -1 when it has none yet)."""
        if len(key) == 0:
            return
        uk, inv = np.unique(key, return_inverse=True)
        s = np.bincount(inv, weights=value, minlength=len(uk))
        c = np.bincount(inv, minlength=len(uk)).astype(np.int64)
        m = self.metrics.setdefault(metric, MetricUnits())
        pos, found = _lookup(m.key, uk)
        p = pos[found]
        old = m.total[p]
        new = old + s[found]
        kept = [name for name in self._kept if name[1] == metric]
        if kept:
            # Units with an arm whose total changes (a unit new to the metric had total 0).
            upos, ufound = _lookup(self.key, uk)
            prob = np.zeros(len(uk), np.float64)
            prob[ufound] = self.prob[upos[ufound]]
            arm = np.full(len(uk), NO_ARM, np.int16)
            arm[ufound] = self.arm[upos[ufound]]
            cov = np.full((len(uk), self.cov.shape[1]), np.nan)
            cov[ufound] = self.cov[upos[ufound]]
            before = np.zeros(len(uk), np.float64)
            before[found] = old
            for name in kept:
                acc = _kept_add(name, self._kept[name], arm, prob, cov, before, -1.0)
                self._kept[name] = _kept_add(name, acc, arm, prob, cov, before + s, 1.0)
        m.total[p] = new
        m.events[p] += c[found]
        if deltas is not None:
            deltas.add_metric(metric, m.arm[p], 0, c[found], s[found], new * new - old * old,
                              (new > 0).astype(np.int64) - (old > 0))
        nk, ns, nc, npos = uk[~found], s[~found], c[~found], pos[~found]
        upos, ufound = _lookup(self.key, nk)
        narm = np.full(len(nk), NO_ARM, np.int16)
        narm[ufound] = self.arm[upos[ufound]]
        if deltas is not None:
            deltas.add_metric(metric, narm, 1, nc, ns, ns * ns, (ns > 0).astype(np.int64))
        # Each event's arm, for the quantile sketches: its unit's.
        uarm = np.empty(len(uk), np.int16)
        uarm[found] = m.arm[p]
        uarm[~found] = narm
        ev_arm = uarm[inv]
        self._sketch(metric, ev_arm, value)
        waiting = ev_arm == NO_ARM
        if waiting.any():
            pk, pv = self.pending.get(metric, (np.empty(0, np.int64), np.empty(0, np.float64)))
            self.pending[metric] = (np.concatenate([pk, key[waiting]]),
                                    np.concatenate([pv, value[waiting]]))
        m.key = np.insert(m.key, npos, nk)
        m.total = np.insert(m.total, npos, ns)
        m.events = np.insert(m.events, npos, nc)
        m.arm = np.insert(m.arm, npos, narm)

    def rename_metric(self, old: str, new: str) -> None:
        """Give a metric folded under a placeholder its name (`new` not yet held)."""
        assert new not in self.metrics, new
        self.metrics[new] = self.metrics.pop(old)
        for arm, metric in [k for k in self.sketches if k[1] == old]:
            self.sketches[(arm, new)] = self.sketches.pop((arm, metric))
        if old in self.pending:
            self.pending[new] = self.pending.pop(old)
        for name in [n for n in self._kept if n[1] == old]:
            acc = self._kept.pop(name)
            self._kept[(name[0], new, *name[2:])] = acc

    def propensity_counts(self) -> dict[str, int]:
        """Exposed units by what is known of their first exposure's probability: `units` used
        by the estimates, `forced_units` (probability 1: an override or a winner, not drawn),
        `server_filled_units` (the server filled the probability in), `unknown_units`."""
        if self._pcounts is None:
            p = self.prob
            known = p != 0
            forced = known & (np.abs(p) >= 1.0)
            self._pcounts = {"units": int((known & ~forced).sum()),
                             "forced_units": int(forced.sum()),
                             "server_filled_units": int((p < 0).sum()),
                             "unknown_units": int((~known).sum())}
        return dict(self._pcounts)

    def propensity(self, metric: str, cap: float | None = None) -> dict[int, PropensitySums]:
        """Per arm the sums counterfactual estimates need (litmus/core/counterfactual.py) over
        the units with a known probability below 1, r being the unit's total (capped), 0
        without events.

        The first call for a metric and cap goes over every unit; from then on the folds keep
        the sums up to date (`_kept_moves`, `fold_metrics`), so a snapshot costs only what
        changed. `scratch=True` in `kept_sums` is the same over every unit, for checks."""
        return {a: PropensitySums(int(c[0] + 0.5), *c[1:])
                for a, c in self.kept_sums(("propensity", metric, cap)).items()}

    def cuped(self, metric: str, position: int, cap: float | None = None,
              ) -> dict[int, tuple[float, ...]]:
        """Per arm (n, Σx, Σx², Σy, Σy², Σxy) over its units: x the covariate at `position`
        of the unit's first exposure (0 when not sent), y the unit's total (capped). Kept
        up to date like `propensity`."""
        return self.kept_sums(("cuped", metric, cap, position))

    def kept_sums(self, name: Kept, scratch: bool = False) -> dict[int, tuple[float, ...]]:
        """A kept table by arm (computed over every unit the first time, or with `scratch`,
        which leaves what is kept alone)."""
        acc = None if scratch else self._kept.get(name)
        if acc is None:
            r = np.zeros(len(self.key), np.float64)
            m = self.metrics.get(name[1])
            if m is not None and len(m.key):
                pos, found = _lookup(self.key, m.key)
                r[pos[found]] = m.total[found]
            acc = _kept_add(name, np.zeros((_COLS[name[0]], 0)), self.arm, self.prob, self.cov,
                            r, 1.0)
            if not scratch:
                self._kept[name] = acc
        return _by_arm(acc)

    def capped(self, metric: str, cap: float) -> dict[int, tuple[int, int, float, float]]:
        """Per arm: (units with events, events, Σ min(total, cap), Σ min(total, cap)²) over
        the metric's attributed units: the unit sums with each unit's value capped."""
        m = self.metrics.get(metric)
        if m is None or len(m.key) == 0:
            return {}
        t = np.minimum(m.total, cap)
        out: dict[int, tuple[int, int, float, float]] = {}
        for a in np.unique(m.arm).tolist():
            if a == NO_ARM:
                continue
            sel = m.arm == a
            ts = t[sel]
            out[int(a)] = (int(sel.sum()), int(m.events[sel].sum()), float(ts.sum()),
                           float((ts * ts).sum()))
        return out

    def arm_totals(self) -> Deltas:
        """The per-arm tables this state implies, computed from scratch (for checks)."""
        out = Deltas()
        out.add_exposures(self.arm, 1, 0)
        out.add_timeline(self.ts, self.arm, 1)
        for metric, m in self.metrics.items():
            out.add_metric(metric, m.arm, 1, m.events, m.total, m.total * m.total,
                           (m.total > 0).astype(np.int64))
        return out

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        """Every array by name, for a checkpoint ("units/<field>", "metric/<name>/<field>")."""
        out: dict[str, npt.NDArray[np.generic]] = {
            "units/key": self.key, "units/ts": self.ts, "units/tie": self.tie,
            "units/arm": self.arm, "units/prob": self.prob}
        for i in range(self.cov.shape[1]):
            out[f"units/cov/{i}"] = np.ascontiguousarray(self.cov[:, i])
        for metric, m in self.metrics.items():
            for name in ("key", "total", "events", "arm"):
                out[f"metric/{metric}/{name}"] = getattr(m, name)
        # The metric name last: it is the only part that may hold a "/".
        for (arm, metric), sk in self.sketches.items():
            for part, arr in sk.to_arrays().items():
                out[f"sketch/{arm}/{part}/{metric}"] = arr
        for metric, (pk, pv) in self.pending.items():
            out[f"pending/key/{metric}"], out[f"pending/value/{metric}"] = pk, pv
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[np.generic]]) -> ExperimentUnits:
        """Rebuild a state from `arrays()` output."""
        st = cls()
        st.key = arrays["units/key"].astype(np.int64)
        st.ts = arrays["units/ts"].astype(np.int64)
        st.tie = arrays["units/tie"].astype(np.int64)
        st.arm = arrays["units/arm"].astype(np.int16)
        # A checkpoint from before probabilities were kept: unknown (0) for every unit.
        st.prob = (arrays["units/prob"].astype(np.float64) if "units/prob" in arrays
                   else np.zeros(len(st.key), np.float64))
        cols = sorted((int(n.rsplit("/", 1)[1]), a) for n, a in arrays.items()
                      if n.startswith("units/cov/"))
        st.cov = (np.stack([a.astype(np.float64) for _, a in cols], axis=1) if cols
                  else np.empty((len(st.key), 0), np.float64))
        sketches: dict[tuple[int, str], dict[str, npt.NDArray[Any]]] = {}
        for name, arr in arrays.items():
            if name.startswith("sketch/"):
                _, arm, part, metric = name.split("/", 3)
                sketches.setdefault((int(arm), metric), {})[part] = arr
            elif name.startswith("pending/key/"):
                metric = name[len("pending/key/"):]
                st.pending[metric] = (arr.astype(np.int64),
                                      arrays[f"pending/value/{metric}"].astype(np.float64))
            if not name.startswith("metric/"):
                continue
            metric, fld = name[len("metric/"):].rsplit("/", 1)
            setattr(st.metrics.setdefault(metric, MetricUnits()), fld, arr)
        st.sketches = {k: Sketch.from_arrays(v) for k, v in sketches.items()}
        for m in st.metrics.values():
            m.key, m.total = m.key.astype(np.int64), m.total.astype(np.float64)
            m.events, m.arm = m.events.astype(np.int64), m.arm.astype(np.int16)
        return st

    @classmethod
    def from_units(cls, key: I64, ts: I64, tie: I64,
                   arm: I64,
                   metrics: dict[str, tuple[I64, F64, I64]]) -> ExperimentUnits:
        """Build a state from per-unit rows (first exposure; per metric total and events).

        Keys may repeat (two unit ids with one hash): such rows are merged as one unit."""
        st = cls()
        st.fold_exposures(key, arm, ts, tie, None)
        for metric, (mkey, total, events) in metrics.items():
            uk, inv = np.unique(mkey, return_inverse=True)
            m = st.metrics.setdefault(metric, MetricUnits())
            m.key = uk
            m.total = np.bincount(inv, weights=total, minlength=len(uk))
            m.events = np.bincount(inv, weights=events, minlength=len(uk)).astype(np.int64)
            pos, found = _lookup(st.key, uk)
            m.arm = np.full(len(uk), NO_ARM, np.int16)
            m.arm[found] = st.arm[pos[found]]
        return st
