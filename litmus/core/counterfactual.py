"""Counterfactual (off-policy) estimates of a target policy's value from logged propensities. Pure.

Each exposed unit i was served variant a_i with probability p_i (its first exposure's) and has
value r_i for a metric (the sum of its events, 0 without any). For a target policy π (weights
over variants summing to 1), with t_i = π(a_i)·r_i/p_i, u_i = π(a_i)/p_i, q_a the plain mean of
r over variant a's units, c = Σ_a π(a)·q_a and d_i = c + π(a_i)·(r_i − q_{a_i})/p_i:

- IPS (inverse propensity scoring, Horvitz–Thompson): mean(t), se = sqrt(var(t)/N);
- SNIPS (self-normalised IPS): Σt/Σu, se = sqrt(var(t − snips·u)/N) / mean(u);
- DR (doubly robust, with the per-variant means as the outcome model): mean(d),
  se = sqrt(var(d)/N);

sample variances with N − 1; each with a 95% interval and the anytime-valid interval of the
results (the normal-mixture confidence sequence with n = N); ESS = (Σu)²/Σu².

Every sum these need expands into per-variant sums over the variant's units — n, Σr, Σr²,
Σ1/p, Σ1/p², Σr/p, Σr²/p², Σr/p² — which the results fold keeps incrementally, so an estimate
costs a few multiplications per variant whatever the number of units (docs/COUNTERFACTUAL.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from litmus.core.quantiles import Z95
from litmus.core.stats import mixture_cs_arrays


@dataclass(frozen=True, slots=True)
class PropensitySums:
    """Per-variant sums over its (non-forced) units: n, Σr, Σr², Σ1/p, Σ1/p², Σr/p, Σr²/p², Σr/p²."""

    n: int = 0
    r: float = 0.0
    r2: float = 0.0
    inv_p: float = 0.0
    inv_p2: float = 0.0
    r_p: float = 0.0
    r2_p2: float = 0.0
    r_p2: float = 0.0

    def __add__(self, o: PropensitySums) -> PropensitySums:
        return PropensitySums(self.n + o.n, self.r + o.r, self.r2 + o.r2, self.inv_p + o.inv_p,
                              self.inv_p2 + o.inv_p2, self.r_p + o.r_p, self.r2_p2 + o.r2_p2,
                              self.r_p2 + o.r_p2)

    @classmethod
    def of(cls, r: ArrayLike, p: ArrayLike) -> PropensitySums:
        """The sums over raw per-unit values and propensities (for checks and simulations)."""
        r = np.asarray(r, dtype=np.float64)
        w = 1.0 / np.asarray(p, dtype=np.float64)
        return cls(len(r), float(r.sum()), float((r * r).sum()), float(w.sum()),
                   float((w * w).sum()), float((r * w).sum()), float((r * r * w * w).sum()),
                   float((r * w * w).sum()))


@dataclass(frozen=True, slots=True)
class Estimate:
    """One estimator's value with its se, 95% interval and anytime-valid interval."""

    value: float | None
    se: float | None
    ci: tuple[float, float] | None
    anytime_ci: tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class PolicyValue:
    """A target policy's IPS, SNIPS and DR estimates, effective sample size and support."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    ess: float | None
    support: bool


NONE = Estimate(None, None, None, None)


def _estimate(value: float, var: float, n: int) -> Estimate:
    """value with se = sqrt(var/n), its 95% interval and the anytime interval (n = N)."""
    se = math.sqrt(max(var, 0.0) / n)
    half, _ = mixture_cs_arrays(value, se, n)
    h = float(half)
    return Estimate(value, se, (value - Z95 * se, value + Z95 * se),
                    (value - h, value + h) if math.isfinite(h) else None)


def logged_value(sums: Mapping[str, PropensitySums]) -> float | None:
    """The plain mean of r over every unit the estimates use: what actually ran."""
    n = sum(s.n for s in sums.values())
    return sum(s.r for s in sums.values()) / n if n else None


def policy_value(sums: Mapping[str, PropensitySums], policy: Mapping[str, float]) -> PolicyValue:
    """IPS, SNIPS and DR of `policy` (variant -> weight, summing to 1) from per-variant sums."""
    n = sum(s.n for s in sums.values())
    if any(w > 0 and sums.get(a, PropensitySums()).n == 0 for a, w in policy.items()):
        return PolicyValue(NONE, NONE, NONE, None, False)  # weight on a variant never served
    if n < 2:
        return PolicyValue(NONE, NONE, NONE, None, True)
    # Sums over all units of t, t², u, u², t·u; and of d, d² for DR.
    st = st2 = su = su2 = stu = 0.0
    c = sum(w * sums[a].r / sums[a].n for a, w in policy.items() if w > 0)
    sd = n * c
    sd2 = n * c * c
    for a, w in policy.items():
        if w <= 0:
            continue
        s = sums[a]
        q = s.r / s.n
        st += w * s.r_p
        st2 += w * w * s.r2_p2
        su += w * s.inv_p
        su2 += w * w * s.inv_p2
        stu += w * w * s.r_p2
        # Σ over a's units of e = π(a)(r − q)/p, and of e²; d = c + e.
        se_a = w * (s.r_p - q * s.inv_p)
        se2_a = w * w * (s.r2_p2 - 2.0 * q * s.r_p2 + q * q * s.inv_p2)
        sd += se_a
        sd2 += 2.0 * c * se_a + se2_a

    def var(total: float, total_sq: float) -> float:
        return (total_sq - total * total / n) / (n - 1)

    ips = st / n
    snips = st / su if su > 0 else math.nan
    # var(t − snips·u), with Σ(t − s·u) = Σt − s·Σu and Σ(t − s·u)² = Σt² − 2sΣtu + s²Σu².
    g, g2 = st - snips * su, st2 - 2.0 * snips * stu + snips * snips * su2
    snips_se_var = var(g, g2) / (su / n) ** 2 if su > 0 else math.nan
    return PolicyValue(
        ips=_estimate(ips, var(st, st2), n),
        snips=_estimate(snips, snips_se_var, n) if su > 0 else NONE,
        dr=_estimate(sd / n, var(sd, sd2), n),
        ess=su * su / su2 if su2 > 0 else None,
        support=True,
    )


def weighted_means(sums: Mapping[str, PropensitySums]) -> dict[str, tuple[float | None, float | None]]:
    """Per variant the inverse-propensity-weighted mean Σ(r/p)/Σ(1/p) and its delta-method se
    sqrt(Σ (r − m)²/p²) / Σ(1/p) (the ratio estimator's linearisation)."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for a, s in sums.items():
        if s.n == 0 or s.inv_p <= 0:
            out[a] = (None, None)
            continue
        m = s.r_p / s.inv_p
        # Σ (r − m)²/p² = Σr²/p² − 2mΣr/p² + m²Σ1/p²
        v = max(s.r2_p2 - 2.0 * m * s.r_p2 + m * m * s.inv_p2, 0.0)
        out[a] = (m, math.sqrt(v) / s.inv_p if s.n >= 2 else None)
    return out
