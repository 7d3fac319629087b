"""Counterfactual estimates from per-variant sums equal the formulas computed on raw units."""

from __future__ import annotations

import math

import numpy as np
import pytest

from litmus.core.counterfactual import PropensitySums, logged_value, policy_value, weighted_means
from litmus.core.stats import mixture_cs_arrays

Z = 1.959963984540054
KEYS = ("a", "b", "c")


def logged(seed: int, n: int = 5000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Units logged by a policy whose weights moved over time (as a bandit's do)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)
    w = np.stack([0.5 - 0.4 * t, 0.3 + 0.1 * t, 0.2 + 0.3 * t], axis=1)
    u = rng.random(n)
    arm = (u[:, None] > np.cumsum(w, axis=1)).sum(axis=1)
    p = w[np.arange(n), arm]
    rates = np.array([0.05, 0.08, 0.11])
    r = (rng.random(n) < rates[arm]).astype(float) * rng.choice([1.0, 2.0], n, p=[0.9, 0.1])
    return arm, p, r


def raw(arm: np.ndarray, p: np.ndarray, r: np.ndarray, pi: dict[str, float]) -> dict[str, float]:
    """The formulas on raw per-unit arrays, independently of the sums."""
    n = len(r)
    pa = np.array([pi.get(k, 0.0) for k in KEYS])[arm]
    t, u = pa * r / p, pa / p
    q = np.array([r[arm == i].mean() for i in range(3)])
    c = sum(pi.get(k, 0.0) * q[i] for i, k in enumerate(KEYS))
    d = c + pa * (r - q[arm]) / p
    snips = t.sum() / u.sum()
    return {
        "ips": t.mean(), "ips_se": math.sqrt(t.var(ddof=1) / n),
        "snips": snips, "snips_se": math.sqrt((t - snips * u).var(ddof=1) / n) / u.mean(),
        "dr": d.mean(), "dr_se": math.sqrt(d.var(ddof=1) / n),
        "ess": u.sum() ** 2 / (u * u).sum(),
    }


def sums_of(arm: np.ndarray, p: np.ndarray, r: np.ndarray) -> dict[str, PropensitySums]:
    return {k: PropensitySums.of(r[arm == i], p[arm == i]) for i, k in enumerate(KEYS)}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("pi", [{"a": 1.0}, {"c": 1.0}, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
                                {"a": 0.1, "b": 0.2, "c": 0.7}])
def test_estimates_equal_the_formulas_on_raw_units(seed: int, pi: dict[str, float]) -> None:
    arm, p, r = logged(seed)
    got = policy_value(sums_of(arm, p, r), pi)
    want = raw(arm, p, r, pi)
    assert got.support
    for name in ("ips", "snips", "dr"):
        est = getattr(got, name)
        assert est.value == pytest.approx(want[name], rel=1e-9)
        assert est.se == pytest.approx(want[name + "_se"], rel=1e-7)
        assert est.ci == pytest.approx((want[name] - Z * want[name + "_se"],
                                        want[name] + Z * want[name + "_se"]), rel=1e-7)
        half, _ = mixture_cs_arrays(want[name], want[name + "_se"], len(r))
        assert est.anytime_ci == pytest.approx((want[name] - float(half),
                                                want[name] + float(half)), rel=1e-7)
    assert got.ess == pytest.approx(want["ess"], rel=1e-9)


def test_no_support_when_the_policy_weights_a_variant_never_served() -> None:
    arm, p, r = logged(4)
    sums = sums_of(arm, p, r)
    sums["d"] = PropensitySums()
    got = policy_value(sums, {"a": 0.5, "d": 0.5})
    assert got.support is False and got.dr.value is None and got.ess is None


def test_logged_value_and_weighted_means() -> None:
    arm, p, r = logged(5)
    sums = sums_of(arm, p, r)
    assert logged_value(sums) == pytest.approx(r.mean(), rel=1e-12)
    for i, k in enumerate(KEYS):
        m, se = weighted_means(sums)[k]
        ra, wa = r[arm == i], 1 / p[arm == i]
        want = (ra * wa).sum() / wa.sum()
        assert m == pytest.approx(want, rel=1e-12)
        assert se == pytest.approx(math.sqrt((((ra - want) * wa) ** 2).sum()) / wa.sum(), rel=1e-9)


def test_sums_add_up() -> None:
    _, p, r = logged(6)
    whole = PropensitySums.of(r, p)
    parts = PropensitySums.of(r[:100], p[:100]) + PropensitySums.of(r[100:], p[100:])
    for f in PropensitySums.__slots__:
        assert getattr(parts, f) == pytest.approx(getattr(whole, f), rel=1e-12)
