"""The in-memory per-unit fold against a brute-force recount of the raw events."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from litmus.core.unitfold import SLOT_US, Deltas, ExperimentUnits, _insert_rows


def brute(exposures: list[tuple[int, int, int, int]],
          metrics: list[tuple[int, str, float]]) -> Deltas:
    """Per-arm tables straight from the definitions (first exposure by time, then order)."""
    first: dict[int, tuple[int, int, int]] = {}
    out = Deltas()
    for key, arm, ts, order in exposures:
        if key not in first or (ts, order) < first[key][:2]:
            first[key] = (ts, order, arm)
        cur = out.exposures.setdefault(arm, [0, 0])
        cur[1] += 1
    for _, (ts, _, arm) in first.items():
        out.exposures.setdefault(arm, [0, 0])[0] += 1
        slot = (ts // SLOT_US) * SLOT_US
        out.timeline[(slot, arm)] = out.timeline.get((slot, arm), 0) + 1
    totals: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for key, metric, value in metrics:
        totals[(key, metric)][0] += value
        totals[(key, metric)][1] += 1
    for (key, metric), (total, events) in totals.items():
        arm = first[key][2] if key in first else -1
        cur = out.metrics.setdefault((arm, metric), [0, 0, 0.0, 0.0, 0])
        cur[0] += 1
        cur[1] += int(events)
        cur[2] += total
        cur[3] += total * total
        cur[4] += total > 0
    return out


def merge(into: Deltas, d: Deltas) -> None:
    """Add the deltas of one fold to the running per-arm tables, as the database does."""
    for arm, (u, e) in d.exposures.items():
        cur = into.exposures.setdefault(arm, [0, 0])
        cur[0] += u
        cur[1] += e
    for k, vals in d.metrics.items():
        cur = into.metrics.setdefault(k, [0, 0, 0.0, 0.0, 0])
        for i, v in enumerate(vals):
            cur[i] += v
    for k, n in d.timeline.items():
        into.timeline[k] = into.timeline.get(k, 0) + n


def assert_same(got: Deltas, want: Deltas) -> None:
    """Equal tables, ignoring rows that added up to zero; float sums to rounding."""
    def clean(d: Deltas) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
        return ({k: v for k, v in d.exposures.items() if any(v)},
                {k: v for k, v in d.metrics.items() if v[0] or v[1]},
                {k: v for k, v in d.timeline.items() if v})
    ge, gm, gt = clean(got)
    we, wm, wt = clean(want)
    assert ge == we
    assert gt == wt
    assert gm.keys() == wm.keys()
    for k, (u, e, s, q, p) in wm.items():
        assert gm[k][:2] == [u, e], k
        assert gm[k][4] == p, k
        assert gm[k][2] == pytest.approx(s, rel=1e-9, abs=1e-9), k
        assert gm[k][3] == pytest.approx(q, rel=1e-9, abs=1e-9), k


def test_batches_of_events_add_up_to_the_definitions() -> None:
    """Ten batches with repeat units, late earlier exposures (units change arm and carry their
    totals), metric events before the unit's exposure (unattributed, then attributed), and
    ties at the same time broken by the tie-break, whichever fold holds them: after every fold the deltas summed so far equal a recount from
    scratch, and so does the state's own recount at the end."""
    rng = np.random.default_rng(5)
    st = ExperimentUnits()
    running = Deltas()
    all_exp: list[tuple[int, int, int, int]] = []
    all_met: list[tuple[int, str, float]] = []
    # One pool of unit keys for every batch, so later batches meet units folded before; the
    # last 20 get metric events but never an exposure.
    pool = rng.integers(-2**63, 2**63 - 1, 520, dtype=np.int64)
    for _ in range(10):
        n = int(rng.integers(50, 400))
        keys = pool[rng.integers(0, 500, n)]
        arms = rng.integers(0, 3, n).astype(np.int16)
        ts = rng.integers(0, 5, n).astype(np.int64) * SLOT_US * 3 + rng.integers(0, 2, n)
        # Tie-breaks in no relation to the fold order: a later fold can hold the winner.
        orders = rng.integers(-2**62, 2**62, n, dtype=np.int64)
        all_exp += list(zip(keys.tolist(), arms.tolist(), ts.tolist(), orders.tolist(), strict=True))
        d = Deltas()
        st.fold_exposures(keys, arms, ts, orders, d)
        for metric in ("revenue", "conversion"):
            m = int(rng.integers(0, 300))
            mk = pool[rng.integers(0, 520, m)]
            # Conversions of -1, 0 and 1: a unit's total crosses 0 both ways between folds.
            vals = (rng.gamma(2.0, 3.0, m) if metric == "revenue"
                    else rng.integers(-1, 2, m).astype(np.float64))
            all_met += list(zip(mk.tolist(), [metric] * m, vals.tolist(), strict=True))
            st.fold_metrics(metric, mk, vals, d)
        merge(running, d)
        assert_same(running, brute(all_exp, all_met))
    want = brute(all_exp, all_met)
    want.exposures = {arm: [units, 0] for arm, (units, _) in want.exposures.items()}
    assert_same(st.arm_totals(), want)  # the state keeps no per-unit exposure counts
    assert np.all(st.key[1:] > st.key[:-1])  # sorted, no repeats


def test_metric_events_before_any_exposure_are_unattributed_then_move() -> None:
    """A unit's metric total waits on arm -1 until its first exposure arrives, then moves."""
    st = ExperimentUnits()
    d = Deltas()
    st.fold_metrics("revenue", np.array([7, 7, 8], np.int64), np.array([1.0, 2.0, 5.0]), d)
    assert d.metrics == {(-1, "revenue"): [2, 3, 8.0, 9.0 + 25.0, 2]}
    d = Deltas()
    st.fold_exposures(np.array([7], np.int64), np.array([2]), np.array([100], np.int64),
                      np.array([0], np.int64), d)
    assert d.exposures == {2: [1, 1]}
    assert d.metrics == {(-1, "revenue"): [-1, -2, -3.0, -9.0, -1],
                         (2, "revenue"): [1, 2, 3.0, 9.0, 1]}
    # A later exposure of another arm changes nothing; an earlier one moves the unit.
    d = Deltas()
    st.fold_exposures(np.array([7], np.int64), np.array([1]), np.array([200], np.int64),
                      np.array([1], np.int64), d)
    assert d.exposures == {1: [0, 1]} and d.metrics == {} and d.timeline == {}
    d = Deltas()
    st.fold_exposures(np.array([7], np.int64), np.array([0]), np.array([50], np.int64),
                      np.array([2], np.int64), d)
    assert d.exposures == {0: [1, 1], 2: [-1, 0]}
    assert d.metrics == {(2, "revenue"): [-1, -2, -3.0, -9.0, -1],
                         (0, "revenue"): [1, 2, 3.0, 9.0, 1]}
    assert d.timeline == {(0, 0): 1, (0, 2): -1}


def test_units_above_zero_follow_each_units_total() -> None:
    """The count of units whose total is above 0 changes only when a total crosses 0: a 0 adds
    none, a 1 after it adds one, a second 1 none, a -2 takes it away; a unit that moves arm
    takes its success with it."""
    st = ExperimentUnits()
    st.fold_exposures(np.array([1, 2], np.int64), np.array([0, 0]), np.array([100, 100], np.int64),
                      np.array([0, 1], np.int64), None)
    steps = [([1, 2], [0.0, 0.0], 0), ([1], [1.0], 1), ([1, 1], [1.0, 0.0], 0), ([2], [0.5], 1),
             ([1], [-2.0], -1), ([1, 2], [-1.0, 1.0], 0)]
    for keys, values, want in steps:
        d = Deltas()
        st.fold_metrics("conversion", np.array(keys, np.int64), np.array(values), d)
        assert d.metrics[(0, "conversion")][4] == want, (keys, values)
    assert st.arm_totals().metrics[(0, "conversion")][4] == 1
    d = Deltas()
    st.fold_exposures(np.array([2], np.int64), np.array([1]), np.array([50], np.int64),
                      np.array([0], np.int64), d)
    assert d.metrics[(0, "conversion")][4] == -1 and d.metrics[(1, "conversion")][4] == 1


def test_arrays_round_trip_and_rows_rebuild_the_same_state() -> None:
    """A checkpoint's arrays give back the same state, and so do per-unit rows (the format of
    the tables an older Litmus kept), with repeated keys merged."""
    rng = np.random.default_rng(9)
    st = ExperimentUnits()
    keys = rng.integers(0, 1000, 2000).astype(np.int64)
    st.fold_exposures(keys, rng.integers(0, 2, 2000), rng.integers(0, 10**9, 2000).astype(np.int64),
                      np.arange(2000, dtype=np.int64), None)
    st.fold_metrics("m/with/slashes", rng.integers(0, 1200, 3000).astype(np.int64),
                    rng.normal(size=3000), None)
    back = ExperimentUnits.from_arrays({k: v.copy() for k, v in st.arrays().items()})
    assert_same(back.arm_totals(), st.arm_totals())
    m = st.metrics["m/with/slashes"]
    half = len(m.key) // 2
    rows = ExperimentUnits.from_units(
        st.key, st.ts, st.tie, st.arm,
        {"m/with/slashes": (np.concatenate([m.key, m.key[:half]]),
                            np.concatenate([m.total, np.zeros(half)]),
                            np.concatenate([m.events, np.zeros(half, np.int64)]))})
    assert_same(rows.arm_totals(), st.arm_totals())


async def test_binary_copy_rows_are_parsed_across_chunks_and_bad_streams_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The fold's binary COPY reader: rows split anywhere between chunks come out whole and in
    order; a stream with header flags, one cut off before its trailer, or only a header is
    an error, never a silent short read."""
    from litmus.db import fold as db_fold

    monkeypatch.setattr(db_fold, "CHUNK_BYTES", 50)
    dtype = db_fold.METRIC_ROW
    rows = np.zeros(7, dtype)
    rows["nfields"] = 4
    for name, size in (("exp", 16), ("unit", 8), ("metric", 8), ("value", 8)):
        rows[f"{name}_len"] = size
    rows["unit"] = np.arange(7) * 11
    rows["value"] = np.arange(7) / 2
    header = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    body = header + rows.tobytes() + b"\xff\xff"

    async def run(stream: bytes, step: int) -> list[float]:
        got: list[float] = []

        async def keep(r: object) -> None:
            got.extend(np.asarray(r)["value"].tolist())  # type: ignore[index]

        reader = db_fold._RowReader(dtype, keep)
        for i in range(0, len(stream), step):
            await reader.feed(stream[i:i + step])
        await reader.finish()
        return got

    for step in (1, 7, 13, 1000):
        assert await run(body, step) == (np.arange(7) / 2).tolist()
    for bad in (body[:-2], header[:11] + b"\x00\x01\x00\x00" + bytes(4) + body[19:], header,
                body[:-30]):
        with pytest.raises(ValueError):
            await run(bad, 9)


@pytest.mark.parametrize(("n", "width", "k"), [(0, 0, 0), (0, 2, 3), (5, 0, 2), (10, 1, 0),
                                               (10, 3, 4), (1000, 5, 100), (7, 2, 7)])
def test_insert_rows_equals_numpys_axis_0_insert(n: int, width: int, k: int) -> None:
    """The per-unit covariates grow through a 1-D view of row records; the result is exactly
    numpy's insert along axis 0 (NaNs, repeated and end positions included)."""
    rng = np.random.default_rng(n + width + k)
    a = rng.normal(size=(n, width))
    a[a > 1.5] = np.nan
    pos = np.sort(rng.integers(0, n + 1, k)).astype(np.int64)
    rows = rng.normal(size=(k, width))
    want = np.insert(a, pos, rows, axis=0)
    got = _insert_rows(a, pos, rows)
    assert got.shape == want.shape and got.dtype == np.float64
    assert np.array_equal(got, want, equal_nan=True)
