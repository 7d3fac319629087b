"""Per-unit state of the results fold, kept in the recompute leader's memory. Pure (numpy).

SPEC section 4: a unit belongs to the variant of its first exposure; its value for a metric is
the sum of its events' values. The per-arm sufficient statistics (units, events, Σ total,
Σ total²) change by deltas that need each touched unit's previous total and arm, so the fold
keeps, per experiment:

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

# Names for what each array holds; typed loosely (numpy's integer results widen under mypy).
I64 = npt.NDArray[Any]  # int64
I16 = npt.NDArray[Any]  # int16
F64 = npt.NDArray[Any]  # float64

SLOT_US = 10_000_000  # the 10-second timeline slots (exposure_timeline)
HOUR_US = 3_600_000_000  # the hourly ones (exposure_timeline_hourly)
NO_ARM = -1


@dataclass(slots=True)
class Deltas:
    """What a fold adds to the per-arm tables, keyed by variant position (-1: unattributed)."""

    # variant -> [units, events]
    exposures: dict[int, list[int]] = field(default_factory=dict)
    # (variant, metric) -> [units, events, sum, sum_sq]
    metrics: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    # (slot start in µs, variant) -> units whose first exposure is in that 10-second slot
    timeline: dict[tuple[int, int], int] = field(default_factory=dict)

    def add_exposures(self, arms: I64, units: int, events: int) -> None:
        """Add `units` and `events` to each listed arm (repeats add up)."""
        for arm, n in _counts(arms):
            cur = self.exposures.setdefault(arm, [0, 0])
            cur[0] += units * n
            cur[1] += events * n

    def add_metric(self, metric: str, arms: I16, units: I64 | int,
                   events: I64, sums: F64, sum_sq: F64) -> None:
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
        present = np.bincount(idx, minlength=width) > 0
        for i in np.flatnonzero(present):
            cur = self.metrics.setdefault((int(i) - 1, metric), [0, 0, 0.0, 0.0])
            cur[0] += round(float(u[i]))
            cur[1] += round(float(e[i]))
            cur[2] += float(s[i])
            cur[3] += float(q[i])

    def add_timeline(self, ts: I64, arms: I16, sign: int) -> None:
        """Count units into their first exposure's 10-second slot (sign -1: take them out)."""
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


@dataclass(slots=True)
class MetricUnits:
    """One metric's per-unit totals, sorted by unit key."""

    key: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    total: F64 = field(default_factory=lambda: np.empty(0, np.float64))
    events: I64 = field(default_factory=lambda: np.empty(0, np.int64))
    arm: I16 = field(default_factory=lambda: np.empty(0, np.int16))


class ExperimentUnits:
    """The per-unit state of one experiment; `fold_*` mutate it and report arm deltas."""

    __slots__ = ("arm", "key", "metrics", "tie", "ts")

    def __init__(self) -> None:
        self.key: I64 = np.empty(0, np.int64)
        self.ts: I64 = np.empty(0, np.int64)
        self.tie: I64 = np.empty(0, np.int64)
        self.arm: I16 = np.empty(0, np.int16)
        self.metrics: dict[str, MetricUnits] = {}

    @property
    def units(self) -> int:
        """Exposed units."""
        return len(self.key)

    def fold_exposures(self, key: I64, variant: I64, ts: I64,
                       tie: I64, deltas: Deltas | None) -> None:
        """Fold exposure events: a unit's arm is its earliest exposure's (time, then `tie`).

        A unit already stored keeps its arm unless the batch holds an exposure strictly
        earlier than its stored first one (a late, earlier exposure): then it moves, and its
        metric totals move with it."""
        if len(key) == 0:
            return
        variant = variant.astype(np.int16)
        if deltas is not None:
            deltas.add_exposures(variant, 0, 1)
        o = np.lexsort((tie, ts, key))
        k, v, t, b = key[o], variant[o], ts[o], tie[o]
        first = np.ones(len(k), np.bool_)
        first[1:] = k[1:] != k[:-1]
        k, v, t, b = k[first], v[first], t[first], b[first]
        pos, found = _lookup(self.key, k)
        # Stored units with an earlier exposure in this batch.
        fpos = pos[found]
        ft, fb = t[found], b[found]
        st, sb = self.ts[fpos], self.tie[fpos]
        earlier = (ft < st) | ((ft == st) & (fb < sb))
        mpos = fpos[earlier]
        old_arm, old_ts = self.arm[mpos], self.ts[mpos]
        new_arm, new_ts = v[found][earlier], ft[earlier]
        self.arm[mpos] = new_arm
        self.ts[mpos] = new_ts
        self.tie[mpos] = fb[earlier]
        # Units seen for the first time.
        nk, nv, nt, npos = k[~found], v[~found], t[~found], pos[~found]
        self.key = np.insert(self.key, npos, nk)
        self.ts = np.insert(self.ts, npos, nt)
        self.tie = np.insert(self.tie, npos, b[~found])
        self.arm = np.insert(self.arm, npos, nv)
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

    def _move_metrics(self, key: I64, arm: I16, deltas: Deltas | None) -> None:
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
                deltas.add_metric(metric, old, -1, -ev, -tot, -tot * tot)
                deltas.add_metric(metric, new, 1, ev, tot, tot * tot)
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
        m.total[p] = new
        m.events[p] += c[found]
        if deltas is not None:
            deltas.add_metric(metric, m.arm[p], 0, c[found], s[found], new * new - old * old)
        nk, ns, nc, npos = uk[~found], s[~found], c[~found], pos[~found]
        upos, ufound = _lookup(self.key, nk)
        narm = np.full(len(nk), NO_ARM, np.int16)
        narm[ufound] = self.arm[upos[ufound]]
        if deltas is not None:
            deltas.add_metric(metric, narm, 1, nc, ns, ns * ns)
        m.key = np.insert(m.key, npos, nk)
        m.total = np.insert(m.total, npos, ns)
        m.events = np.insert(m.events, npos, nc)
        m.arm = np.insert(m.arm, npos, narm)

    def arm_totals(self) -> Deltas:
        """The per-arm tables this state implies, computed from scratch (for checks)."""
        out = Deltas()
        out.add_exposures(self.arm, 1, 0)
        out.add_timeline(self.ts, self.arm, 1)
        for metric, m in self.metrics.items():
            out.add_metric(metric, m.arm, 1, m.events, m.total, m.total * m.total)
        return out

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        """Every array by name, for a checkpoint ("units/<field>", "metric/<name>/<field>")."""
        out: dict[str, npt.NDArray[np.generic]] = {
            "units/key": self.key, "units/ts": self.ts, "units/tie": self.tie,
            "units/arm": self.arm}
        for metric, m in self.metrics.items():
            for name in ("key", "total", "events", "arm"):
                out[f"metric/{metric}/{name}"] = getattr(m, name)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[np.generic]]) -> ExperimentUnits:
        """Rebuild a state from `arrays()` output."""
        st = cls()
        st.key = arrays["units/key"].astype(np.int64)
        st.ts = arrays["units/ts"].astype(np.int64)
        st.tie = arrays["units/tie"].astype(np.int64)
        st.arm = arrays["units/arm"].astype(np.int16)
        for name, arr in arrays.items():
            if not name.startswith("metric/"):
                continue
            metric, fld = name[len("metric/"):].rsplit("/", 1)
            setattr(st.metrics.setdefault(metric, MetricUnits()), fld, arr)
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
