"""Sample-size planning for the tests Litmus runs (docs/PLANNING.md). Pure.

Two directions:

* `plan_units`: the effect to detect (the MDE) in, units per arm out;
* `plan_mde`: units per arm in, the smallest effect detectable with the given power out.

Two analyses, as `litmus.core.stats` runs them:

* fixed: one look at the planned n, Welch's test, planned with the two-sample z formula
  n = (z_{1-a/2} + z_{power})² (σ_c² + σ_t²) / δ², unpooled variances under the alternative;
* sequential: the normal-mixture confidence sequence (`stats.mixture_cs_arrays`, ρ² from
  `stats.mixture_rho2`) looked at after every batch of units, significance the first time the
  anytime p-value falls below a. Its n is the smallest n by which the probability that the
  boundary has been crossed reaches the power, computed numerically (`crossing_curve`).

Several treatments are compared with the control each; the planner uses Bonferroni,
a = alpha / (variants − 1), a conservative stand-in for the Holm step the server applies.
Allocation is equal across variants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import optimize, special

from litmus.core.errors import ValidationFailed
from litmus.core.stats import ALPHA as SERVER_ALPHA
from litmus.core.stats import mixture_rho2

Kind = Literal["rate", "mean"]
MdeType = Literal["relative", "absolute"]
Mode = Literal["fixed", "sequential"]
MODES: tuple[Mode, ...] = ("fixed", "sequential")

# Plans beyond this many units per arm are refused as absurd (an MDE too small to matter).
MAX_UNITS_PER_ARM = 10**12
MIN_UNITS_PER_ARM = 10
MAX_POWER = 0.999
# Discrete monitoring of a Gaussian random walk with step variance Δ crosses a boundary b about
# as often as continuous monitoring of Brownian motion crosses b + SIEGMUND·√Δ
# (Siegmund 1985, −ζ(1/2)/√(2π)).
SIEGMUND = 0.5826
# Looks of the numeric recursion; finer looks are folded in with the Siegmund shift.
STEPS = 400
# Grid points per standard deviation of one step, and the kernel's reach in standard deviations.
REFINE = 8
REACH = 8.0


@dataclass(frozen=True, slots=True)
class Metric:
    """The metric in control: a rate p (variance p(1−p)) or a mean with its unit-level sd."""

    kind: Kind
    baseline: float
    sd: float | None = None

    def variance(self, value: float) -> float:
        """Unit-level variance at this mean (rates: Bernoulli; means: sd² in every arm)."""
        if self.kind == "rate":
            return value * (1.0 - value)
        assert self.sd is not None
        return self.sd * self.sd


@dataclass(frozen=True, slots=True)
class Effect:
    """Control and treatment means, and the standardised effect θ = δ / √(σ_c² + σ_t²)."""

    control: float
    treatment: float
    theta: float

    @property
    def absolute(self) -> float:
        return self.treatment - self.control

    @property
    def relative(self) -> float | None:
        return self.absolute / self.control if self.control != 0.0 else None


@dataclass(frozen=True, slots=True)
class ModePlan:
    """One analysis' answer: units per arm and the effect they detect with the power."""

    mode: Mode
    units_per_arm: int
    effect: Effect


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer for the analyses asked for."""

    variants: int
    alpha: float
    alpha_per_comparison: float
    power: float
    look_every_per_arm: float  # 0: continuous monitoring
    modes: list[ModePlan]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# The effect
# ---------------------------------------------------------------------------------------------


def effect_of(metric: Metric, mde: float, mde_type: MdeType) -> Effect:
    """The treatment mean an MDE means, and θ; 422 naming `mde` when it is not a usable one."""
    base = metric.baseline
    if mde_type == "relative":
        if base == 0.0:
            raise ValidationFailed("a relative MDE needs a baseline other than 0",
                                   fields={"mde": "relative lift of a mean of 0 is undefined; "
                                                  "give an absolute MDE"})
        delta = mde * base
    else:
        delta = mde
    if delta == 0.0 or not math.isfinite(delta):
        raise ValidationFailed("the MDE must not be 0", fields={"mde": "must not be 0"})
    treated = base + delta
    if metric.kind == "rate" and not 0.0 <= treated <= 1.0:
        raise ValidationFailed(
            f"the MDE moves the rate from {base:g} to {treated:g}, outside [0, 1]",
            fields={"mde": f"the treated rate {treated:g} is outside [0, 1]"})
    sigma = math.sqrt(metric.variance(base) + metric.variance(treated))
    theta = abs(delta) / sigma if sigma > 0.0 else math.inf
    if not math.isfinite(theta):
        raise ValidationFailed("the sd is too small for this MDE to be a planning question",
                               fields={"sd": "too small next to the MDE"})
    return Effect(base, treated, theta)


def effect_for_theta(metric: Metric, theta: float) -> Effect | None:
    """The increase whose θ is `theta` (None when a rate cannot rise that far)."""
    base = metric.baseline
    if metric.kind == "mean":
        assert metric.sd is not None
        return Effect(base, base + theta * math.sqrt(2.0) * metric.sd, theta)
    v = metric.variance(base)

    def excess(p2: float) -> float:
        return (p2 - base) / math.sqrt(v + p2 * (1.0 - p2)) - theta

    if excess(1.0) < 0.0:
        return None
    p2 = float(optimize.brentq(excess, base, 1.0, xtol=1e-14, rtol=1e-12))
    return Effect(base, p2, theta)


# ---------------------------------------------------------------------------------------------
# Fixed horizon: the two-sample z formula
# ---------------------------------------------------------------------------------------------


def z_sum(alpha_per_comparison: float, power: float) -> float:
    """z_{1−a/2} + z_{power}."""
    return float(special.ndtri(1.0 - alpha_per_comparison / 2.0) + special.ndtri(power))


def fixed_units(theta: float, alpha_per_comparison: float, power: float) -> float:
    """n per arm = (z_{1−a/2} + z_power)² / θ², θ = δ/√(σ_c² + σ_t²) (not rounded up)."""
    # r·r rather than r ** 2: a vanishing effect gives infinity (refused by the caller as too
    # small to detect) instead of an OverflowError.
    if theta == 0.0:  # an effect that underflows: no sample detects it
        return math.inf
    r = z_sum(alpha_per_comparison, power) / theta
    return r * r


def fixed_power(n: float, theta: float, alpha_per_comparison: float) -> float:
    """Two-sided z-test power at n per arm: Φ(θ√n − z) + Φ(−θ√n − z)."""
    z = float(special.ndtri(1.0 - alpha_per_comparison / 2.0))
    s = theta * math.sqrt(n)
    return float(special.ndtr(s - z) + special.ndtr(-s - z))


# ---------------------------------------------------------------------------------------------
# Sequential: the crossing probability of the mixture boundary
# ---------------------------------------------------------------------------------------------


def boundary(n: np.ndarray, alpha_per_comparison: float,
             rho2: float | None = None) -> np.ndarray:
    """|S_n| at which the anytime p-value of `stats.mixture_cs_arrays` reaches a, in the
    standardised sum S_n = n·(m̂_t − m̂_c)/√(σ_c² + σ_t²) at n units per arm.

    The server's p = √(1+r)·exp(−r/(1+r)·z²/2) with r = ρ²·(n_c + n_t) = 2nρ² and z = S_n/√n,
    so p < a ⟺ S_n² > n·(1+r)/r·ln((1+r)/a²) = (1+r)/(2ρ²)·ln((1+r)/a²)."""
    r2 = mixture_rho2(SERVER_ALPHA) if rho2 is None else rho2
    r = 2.0 * n * r2
    return np.sqrt((1.0 + r) / (2.0 * r2) * np.log((1.0 + r) / alpha_per_comparison**2))


def crossing_curve(theta: float, n_max: float, alpha_per_comparison: float,
                   look_every: float = 0.0, steps: int = STEPS,
                   refine: int = REFINE) -> tuple[np.ndarray, np.ndarray]:
    """P(the boundary is crossed by n) for n on a grid up to `n_max` units per arm.

    S_n is a random walk with drift θ and variance 1 per unit per arm, looked at every
    `look_every` units per arm (below 1: continuously). The density of the paths not yet
    stopped is carried from look to look on a grid (a convolution with the Gaussian step, then
    the mass beyond ±b(n) is removed: it has crossed). With more than `steps` looks to n_max,
    the recursion looks every n_max/steps units against the boundary lowered by
    SIEGMUND·(√Δ_computed − √Δ_wanted), which makes its coarser looks act like finer ones;
    with fewer, it looks at the real looks (at most once a unit). Returns (n at each computed
    look, crossing probability by it)."""
    look = look_every if look_every >= 1.0 else 0.0
    if n_max / max(look, 1.0) <= steps:
        dc, shift = max(look, 1.0), 0.0
        k = max(1, math.ceil(n_max / dc - 1e-9))
    else:
        k = steps
        dc = n_max / steps
        shift = SIEGMUND * (math.sqrt(dc) - math.sqrt(look))
    ns = dc * np.arange(1, k + 1, dtype=np.float64)
    b = np.maximum(boundary(ns, alpha_per_comparison) - shift, 0.0)
    sd = math.sqrt(dc)
    h = sd / refine
    # The step's drift moves the window by whole cells (`move`); the kernel keeps the rest.
    mu = theta * dc
    move = round(mu / h)
    m = math.ceil(REACH * refine)
    offs = np.arange(-m, m + 1, dtype=np.float64) * h
    kern = h * np.exp(-0.5 * ((offs - (mu - move * h)) / sd) ** 2) / (
        sd * math.sqrt(2.0 * math.pi))
    # The array holds ±b_max and the kernel's reach; what a step carries beyond has crossed.
    half = math.ceil(float(b.max()) / h) + m + 1
    size = 2 * half + 1
    absy = np.abs(np.arange(-half, half + 1, dtype=np.float64) * h)
    f = np.zeros(size, dtype=np.float64)
    f[half] = 1.0 / h
    crossed = np.empty(k, dtype=np.float64)
    lo, hi = half, half  # the paths alive now live in f[lo:hi + 1]
    for j in range(k):
        new = np.zeros_like(f)
        out = np.convolve(f[lo:hi + 1], kern)  # covers lo − m + move .. hi + m + move
        start = lo - m + move
        a0, a1 = max(start, 0), min(start + out.size, size)
        if a1 > a0:
            new[a0:a1] = out[a0 - start:a1 - start]
        new[absy >= b[j]] = 0.0
        f = new
        w = math.floor(float(b[j]) / h)
        lo, hi = half - w, half + w
        crossed[j] = 1.0 - float(f.sum()) * h
    return ns, np.clip(crossed, 0.0, 1.0)


def sequential_units(theta: float, alpha_per_comparison: float, power: float,
                     look_every: float = 0.0) -> float:
    """Smallest n per arm by which the boundary is crossed with probability `power`."""
    n_max = 2.5 * fixed_units(theta, alpha_per_comparison, power) + 2.0 * look_every
    for _ in range(20):
        ns, p = crossing_curve(theta, n_max, alpha_per_comparison, look_every)
        hit = np.nonzero(p >= power)[0]
        if hit.size:
            j = int(hit[0])
            if look_every >= 1.0 and math.isclose(float(ns[0]), look_every):
                return float(ns[j])  # the looks are the real ones: the first that reaches it
            if j == 0:
                return float(ns[0])
            n0, n1, p0, p1 = ns[j - 1], ns[j], p[j - 1], p[j]
            return float(n0 + (power - p0) / (p1 - p0) * (n1 - n0))
        n_max *= 2.0
    raise ValidationFailed("the sequential plan did not converge",
                           fields={"power": "too close to 1 for this effect"})


def sequential_power(n: float, theta: float, alpha_per_comparison: float,
                     look_every: float = 0.0) -> float:
    """P(the boundary is crossed by n units per arm): at the last look not after n."""
    ns, p = crossing_curve(theta, n, alpha_per_comparison, look_every)
    seen = p[ns <= n * (1.0 + 1e-12)]
    return float(seen[-1]) if seen.size else 0.0


def sequential_theta(n: float, alpha_per_comparison: float, power: float,
                     look_every: float = 0.0, theta_max: float = math.inf) -> float | None:
    """The θ the sequential test detects by n units per arm with probability `power` (None
    when even `theta_max` is not detected)."""
    lo = z_sum(alpha_per_comparison, power) / math.sqrt(n)
    hi = min(2.0 * lo, theta_max)

    def gap(t: float) -> float:
        return sequential_power(n, t, alpha_per_comparison, look_every) - power

    for _ in range(60):  # a low power with many looks can be reached below the fixed θ
        if gap(lo) < 0.0:
            break
        lo /= 2.0
    else:
        return lo
    while gap(hi) < 0.0:
        if hi >= theta_max:
            return None
        lo, hi = hi, min(2.0 * hi, theta_max)
    return float(optimize.brentq(gap, lo, hi, rtol=1e-4))


# ---------------------------------------------------------------------------------------------
# The two directions
# ---------------------------------------------------------------------------------------------


def _notes(variants: int, alpha: float, a: float, look_every: float,
           modes: Sequence[Mode]) -> list[str]:
    notes = []
    if variants > 2:
        notes.append(
            f"{variants - 1} treatments are each compared with control at alpha/{variants - 1} = "
            f"{a:.4g} (Bonferroni): a conservative stand-in for the Holm (or Benjamini-Hochberg) "
            "adjustment the results apply across treatments, so the real power is at least the "
            "one asked for; correcting across metrics too (metrics.correct_across_metrics) "
            "needs more units than planned here")
    notes.append("equal allocation across variants assumed; two-sided tests")
    if "sequential" in modes:
        if look_every > 0.0:
            notes.append(f"sequential: the confidence sequence is looked at every "
                         f"{look_every:.6g} units per arm (one recompute)")
        else:
            notes.append("sequential: looked at continuously (every unit); sparse looks "
                         "need slightly more units")
        if alpha != SERVER_ALPHA:
            notes.append(f"the server's confidence sequence is tuned for alpha = "
                         f"{SERVER_ALPHA:g}; this plan keeps that tuning and stops at {a:.4g}")
    return notes


def _check_size(n: float, field_name: str) -> None:
    if not math.isfinite(n) or n > MAX_UNITS_PER_ARM:
        raise ValidationFailed(
            f"the plan needs more than {MAX_UNITS_PER_ARM:.0e} units per arm",
            fields={field_name: f"too small to detect: more than {MAX_UNITS_PER_ARM:.0e} "
                                "units per arm needed"})


def plan_units(metric: Metric, mde: float, mde_type: MdeType, *, variants: int = 2,
               power: float = 0.8, alpha: float = 0.05, modes: Sequence[Mode] = MODES,
               look_every_per_arm: float = 0.0) -> Plan:
    """Units per arm each analysis needs to detect the MDE with `power`."""
    a = alpha / (variants - 1)
    eff = effect_of(metric, mde, mde_type)
    out = []
    for mode in modes:
        # The sequential search starts at 2.5 × the fixed n: refuse absurd sizes before it.
        _check_size(fixed_units(eff.theta, a, power) * (1.0 if mode == "fixed" else 2.5), "mde")
        if mode == "fixed":
            n = fixed_units(eff.theta, a, power)
        else:
            n = sequential_units(eff.theta, a, power, look_every_per_arm)
            _check_size(n, "mde")
        out.append(ModePlan(mode, max(math.ceil(n - 1e-9), 2), eff))
    return Plan(variants, alpha, a, power, look_every_per_arm, out,
                _notes(variants, alpha, a, look_every_per_arm, modes))


def plan_mde(metric: Metric, units_per_arm: int, *, field_name: str = "units_per_arm",
             variants: int = 2, power: float = 0.8, alpha: float = 0.05,
             modes: Sequence[Mode] = MODES, look_every_per_arm: float = 0.0) -> Plan:
    """The smallest increase each analysis detects with `power` at `units_per_arm`."""
    a = alpha / (variants - 1)
    out = []
    # A rate can rise to 1 at most: the largest θ there is.
    theta_max = (math.sqrt((1.0 - metric.baseline) / metric.baseline) if metric.kind == "rate"
                 else math.inf)
    for mode in modes:
        theta: float | None
        if mode == "fixed":
            theta = z_sum(a, power) / math.sqrt(units_per_arm)
        else:
            theta = sequential_theta(units_per_arm, a, power, look_every_per_arm, theta_max)
        eff = None if theta is None else effect_for_theta(metric, theta)
        if eff is None:
            raise ValidationFailed(
                f"{units_per_arm} units per arm cannot detect even a rise to a rate of 1 "
                f"({mode} analysis)",
                fields={field_name: "too few units: no rate within [0, 1] is detectable"})
        out.append(ModePlan(mode, units_per_arm, eff))
    notes = _notes(variants, alpha, a, look_every_per_arm, modes)
    notes.append("the MDE is the smallest increase detectable; a decrease of the same size "
                 "needs as many units for means, and fewer for rates below 0.5")
    return Plan(variants, alpha, a, power, look_every_per_arm, out, notes)


# ---------------------------------------------------------------------------------------------
# One request, as POST /api/v1/plan takes it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """The planner's inputs; field names are the API's, so errors name them as sent."""

    metric: Kind
    rate: float | None = None
    mean: float | None = None
    sd: float | None = None
    variants: int = 2
    mde: float | None = None
    mde_type: MdeType = "relative"
    units_per_arm: int | None = None
    days: float | None = None
    power: float = 0.8
    alpha: float = 0.05
    traffic_per_day: float | None = None
    analysis: Literal["fixed", "sequential", "both"] = "both"
    look_every_units: int | None = None


def _metric_of(req: PlanRequest) -> Metric:
    if req.metric == "rate":
        extra = {f: "only for metric mean" for f in ("mean", "sd") if getattr(req, f) is not None}
        if extra:
            raise ValidationFailed("a rate metric takes `rate` only", fields=extra)
        if req.rate is None:
            raise ValidationFailed("metric rate needs `rate`, the control's rate in (0, 1)",
                                   fields={"rate": "field required for metric rate"})
        if not 0.0 < req.rate < 1.0:
            raise ValidationFailed("the rate must be in (0, 1)", fields={"rate": "must be in (0, 1)"})
        return Metric("rate", req.rate)
    if req.rate is not None:
        raise ValidationFailed("a mean metric takes `mean` and `sd`",
                               fields={"rate": "only for metric rate"})
    missing = {f: "field required for metric mean" for f in ("mean", "sd")
               if getattr(req, f) is None}
    if missing:
        raise ValidationFailed("metric mean needs `mean` and `sd` (unit-level)", fields=missing)
    assert req.mean is not None and req.sd is not None
    if not req.sd > 0.0:
        raise ValidationFailed("the sd must be above 0", fields={"sd": "must be greater than 0"})
    return Metric("mean", req.mean, req.sd)


def _units_given(req: PlanRequest) -> tuple[int | None, str]:
    """The units per arm a reverse plan is for (None: a forward plan) and the field naming it."""
    given = [f for f in ("mde", "units_per_arm", "days") if getattr(req, f) is not None]
    if len(given) != 1:
        msg = ("give exactly one of mde, units_per_arm, days" if given
               else "give mde (units out) or units_per_arm or days (MDE out)")
        raise ValidationFailed(msg, fields={f: msg for f in (given or ["mde"])})
    if req.days is not None:
        if req.traffic_per_day is None:
            raise ValidationFailed("days needs traffic_per_day to become units",
                                   fields={"traffic_per_day": "required with days"})
        n = math.floor(req.days * req.traffic_per_day / req.variants)
        if n < MIN_UNITS_PER_ARM or n > MAX_UNITS_PER_ARM:
            raise ValidationFailed(
                f"{req.days:g} days at {req.traffic_per_day:g} units/day is {n} units per arm",
                fields={"days": f"gives {n} units per arm; plan for {MIN_UNITS_PER_ARM} to "
                                f"{MAX_UNITS_PER_ARM:.0e}"})
        return n, "days"
    if req.units_per_arm is not None:
        if not MIN_UNITS_PER_ARM <= req.units_per_arm <= MAX_UNITS_PER_ARM:
            raise ValidationFailed("units_per_arm out of range", fields={
                "units_per_arm": f"must be {MIN_UNITS_PER_ARM} to {MAX_UNITS_PER_ARM:.0e}"})
        return req.units_per_arm, "units_per_arm"
    return None, "mde"


def look_every(req: PlanRequest, recompute_interval_s: float) -> float:
    """Units per arm between two looks: as asked, else one recompute's traffic, else 0
    (continuous). Looks after less than one unit per arm are continuous monitoring."""
    if req.look_every_units is not None:
        per_arm = req.look_every_units / req.variants
    elif req.traffic_per_day is not None:
        per_arm = req.traffic_per_day * recompute_interval_s / 86400.0 / req.variants
    else:
        per_arm = 0.0
    return per_arm if per_arm >= 1.0 else 0.0


def make_plan(req: PlanRequest, recompute_interval_s: float) -> dict[str, Any]:
    """Validate the request across fields (422 naming the field), plan, and render as JSON."""
    metric = _metric_of(req)
    if not 2 <= req.variants <= 20:
        raise ValidationFailed("variants must be 2 to 20", fields={"variants": "must be 2 to 20"})
    if not 0.0 < req.alpha < 1.0:
        raise ValidationFailed("alpha must be in (0, 1)", fields={"alpha": "must be in (0, 1)"})
    a = req.alpha / (req.variants - 1)
    if not a < req.power <= MAX_POWER:
        raise ValidationFailed(
            f"power must be above {a:.4g} and at most {MAX_POWER}",
            fields={"power": f"must be above alpha per comparison ({a:.4g}) and at most "
                             f"{MAX_POWER}"})
    n_given, field_name = _units_given(req)
    modes: tuple[Mode, ...] = MODES if req.analysis == "both" else (req.analysis,)
    look = look_every(req, recompute_interval_s)
    if n_given is not None and "sequential" in modes and look > n_given:
        name = "look_every_units" if req.look_every_units is not None else "traffic_per_day"
        raise ValidationFailed(
            f"the sequential test first looks after {look:.6g} units per arm, more than the "
            f"{n_given} given", fields={name: "the first look comes after the units given"})
    common: dict[str, Any] = {"variants": req.variants, "power": req.power, "alpha": req.alpha,
                              "modes": modes, "look_every_per_arm": look}
    if n_given is None:
        assert req.mde is not None
        plan = plan_units(metric, req.mde, req.mde_type, **common)
    else:
        plan = plan_mde(metric, n_given, field_name=field_name, **common)
    return render(req, plan)


def render(req: PlanRequest, plan: Plan) -> dict[str, Any]:
    """The JSON answer: the inputs echoed, one entry per analysis, the notes."""
    inputs = {k: getattr(req, k) for k in PlanRequest.__dataclass_fields__}
    inputs = {k: v for k, v in inputs.items() if v is not None}
    out: dict[str, Any] = {
        "direction": "units" if req.mde is not None else "mde",
        "inputs": inputs,
        "comparisons": plan.variants - 1,
        "alpha_per_comparison": plan.alpha_per_comparison,
        "correction": "bonferroni" if plan.variants > 2 else "none",
        "look_every_units": plan.look_every_per_arm * plan.variants or None,
        "notes": plan.notes,
    }
    fixed_n = next((m.units_per_arm for m in plan.modes if m.mode == "fixed"), None)
    for m in plan.modes:
        total = m.units_per_arm * plan.variants
        eff = m.effect
        entry: dict[str, Any] = {
            "units_per_arm": m.units_per_arm,
            "total_units": total,
            "days": (math.ceil(total / req.traffic_per_day * 100.0) / 100.0
                     if req.traffic_per_day else None),
            "mde": {"absolute": eff.absolute, "relative": eff.relative},
            "control": eff.control,
            "treatment": eff.treatment,
            "effect_size": eff.theta,
        }
        if m.mode == "sequential" and fixed_n is not None and out["direction"] == "units":
            entry["ratio_to_fixed"] = m.units_per_arm / fixed_n
        out[m.mode] = entry
    return out
