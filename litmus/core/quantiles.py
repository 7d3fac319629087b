"""Quantiles of event values: a mergeable log-bucket sketch and the order-statistic error. Pure.

The sketch is DDSketch's (Masson, Rim and Lee, VLDB 2019): a value x > 0 falls in bucket
k = ceil(log_γ x) with γ = (1 + α)/(1 − α), so the values of one bucket differ by at most a
factor γ ≈ 1 + 2α. Negative values use the same buckets on |x|; values too small to tell from 0
are counted as 0. A rank inside a bucket is read by spreading its values evenly in log scale
over the bucket, so a reported order statistic is within 2α of the true one (0.5%), and much
closer on smooth data. Two sketches merge by adding counts, so the results fold keeps one per
variant and metric and adds each batch's events to it.

Why not the `ddsketch` package itself: it adds one value per Python call (about a microsecond
each), and the fold adds millions of events per batch; here a batch is one vectorised
`log`/`bincount`. The guarantee is the same, and tests check both this sketch and its
quantiles against numpy's exact ones on the raw values.

Memory is bounded: at most MAX_BUCKETS counts per sign. With α = 0.25% that spans values over
a ratio of e^40 (for latencies: a nanosecond to years); past it the lowest buckets are merged
into one (DDSketch's "collapsing lowest" store), which costs accuracy only at the far low end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: Half the relative width of a bucket: worst case 2α = 0.5%, half the 1% that results promise,
#: because the two common quantile conventions (nearest rank and linear interpolation) already
#: differ by a fraction of 1% at p99 for tens of thousands of events.
ALPHA = 0.0025
GAMMA = (1.0 + ALPHA) / (1.0 - ALPHA)
LN_GAMMA = math.log(GAMMA)
MAX_BUCKETS = 8192
MIN_VALUE = 1e-9  # |x| at or below this counts as 0
Z95 = 1.959963984540054

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[Any]  # float64 (numpy widens float results under mypy)


@dataclass(slots=True)
class _Store:
    """Counts of consecutive bucket keys starting at `offset`."""

    offset: int = 0
    counts: I64 = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add_keys(self, keys: I64) -> None:
        if len(keys) == 0:
            return
        lo, hi = int(keys.min()), int(keys.max())
        self._cover(lo, hi)
        idx = keys - self.offset
        idx = np.maximum(idx, 0)  # keys below a collapsed range count in its lowest bucket
        self.counts += np.bincount(idx, minlength=len(self.counts)).astype(np.int64)

    def add_counts(self, offset: int, counts: I64) -> None:
        if len(counts) == 0:
            return
        self._cover(offset, offset + len(counts) - 1)
        start = offset - self.offset
        if start >= 0:
            self.counts[start:start + len(counts)] += counts
        else:  # part of `counts` lies below the collapsed range
            self.counts[0] += int(counts[:-start].sum())
            self.counts[:len(counts) + start] += counts[-start:]

    def _cover(self, lo: int, hi: int) -> None:
        """Make room for keys lo..hi, collapsing the lowest ones past MAX_BUCKETS."""
        if len(self.counts) == 0:
            self.offset, self.counts = lo, np.zeros(hi - lo + 1, np.int64)
        else:
            cur_lo, cur_hi = self.offset, self.offset + len(self.counts) - 1
            new_lo, new_hi = min(lo, cur_lo), max(hi, cur_hi)
            if (new_lo, new_hi) != (cur_lo, cur_hi):
                grown = np.zeros(new_hi - new_lo + 1, np.int64)
                grown[cur_lo - new_lo:cur_lo - new_lo + len(self.counts)] = self.counts
                self.offset, self.counts = new_lo, grown
        if len(self.counts) > MAX_BUCKETS:
            cut = len(self.counts) - MAX_BUCKETS
            low = int(self.counts[:cut + 1].sum())
            self.counts = self.counts[cut:].copy()
            self.counts[0] = low
            self.offset += cut


@dataclass(slots=True)
class Sketch:
    """A mergeable relative-error sketch of a stream of values (see the module docstring)."""

    pos: _Store = field(default_factory=_Store)
    neg: _Store = field(default_factory=_Store)
    zero: int = 0

    @property
    def count(self) -> int:
        """Values added."""
        return self.pos.total + self.neg.total + self.zero

    def add(self, values: npt.ArrayLike) -> None:
        """Add values (non-finite ones are ignored: the API refuses them before)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if len(v) == 0:
            return
        big = np.abs(v) > MIN_VALUE
        self.zero += int(len(v) - big.sum())
        v = v[big]
        keys = np.ceil(np.log(np.abs(v)) / LN_GAMMA).astype(np.int64)
        self.pos.add_keys(keys[v > 0])
        self.neg.add_keys(keys[v < 0])

    def merge(self, other: Sketch) -> None:
        """Add another sketch's counts to this one."""
        self.pos.add_counts(other.pos.offset, other.pos.counts)
        self.neg.add_counts(other.neg.offset, other.neg.counts)
        self.zero += other.zero

    def _ordered(self) -> tuple[F64, F64, I64]:
        """Every bucket in increasing order of value: the log of |x| at its low and high end
        (in that order of value; both 0 for the zero bucket), and its count."""
        parts: list[tuple[F64, F64, I64]] = []
        if len(self.neg.counts):
            keys = (self.neg.offset + np.arange(len(self.neg.counts)))[::-1]
            # -γᵏ ... -γᵏ⁻¹: the larger magnitude comes first.
            parts.append((keys * LN_GAMMA, (keys - 1) * LN_GAMMA, self.neg.counts[::-1]))
        if self.zero:
            parts.append((np.array([-np.inf]), np.array([-np.inf]),
                          np.array([self.zero], np.int64)))
        if len(self.pos.counts):
            keys = self.pos.offset + np.arange(len(self.pos.counts))
            parts.append(((keys - 1) * LN_GAMMA, keys * LN_GAMMA, self.pos.counts))
        if not parts:
            return np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]))

    def order_stats(self, ranks: npt.ArrayLike) -> F64:
        """The k-th smallest values (0-based ranks, clipped into range).

        Within a bucket the values are taken as spread evenly in log scale over the bucket's
        range: any point of the range is within 2α of a value in it, and the interpolation
        keeps neighbouring ranks apart, which the order-statistic error needs when many events
        share a bucket."""
        lo, hi, counts = self._ordered()
        r = np.asarray(ranks, dtype=np.float64)
        total = int(counts.sum())
        if total == 0:
            return np.full(r.shape, np.nan)
        cum = np.cumsum(counts)
        k = np.clip(r, 0.0, total - 1.0)
        b = np.searchsorted(cum, np.floor(k), side="right")
        start = cum[b] - counts[b]
        frac = np.clip((k - start + 0.5) / counts[b], 0.0, 1.0)
        zero = np.isinf(lo[b])
        lo_b, hi_b = np.where(zero, 0.0, lo[b]), np.where(zero, 0.0, hi[b])
        mag = np.where(zero, 0.0, np.exp(lo_b + frac * (hi_b - lo_b)))
        neg = b < (len(self.neg.counts))
        return np.asarray(np.where(neg, -mag, mag), dtype=np.float64)

    def quantile(self, q: float) -> float | None:
        """The q-quantile by linear interpolation between order statistics (numpy's default
        convention), each taken from the sketch; None when empty."""
        n = self.count
        if n == 0:
            return None
        h = (n - 1) * q
        lo, hi = self.order_stats([math.floor(h), math.ceil(h)])
        return float(lo + (h - math.floor(h)) * (hi - lo))

    def estimate(self, q: float) -> QuantileEstimate:
        """The q-quantile with its order-statistic standard error (order_statistic_se)."""
        n = self.count
        value = self.quantile(q)
        if value is None:
            return QuantileEstimate(None, None, 0)
        l_rank, u_rank = order_statistic_ranks(n, q)
        x_l, x_u = self.order_stats([l_rank, u_rank])
        return QuantileEstimate(value, float(x_u - x_l) / (2.0 * Z95), n)

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The sketch as arrays (for a checkpoint)."""
        return {"pos": self.pos.counts, "neg": self.neg.counts,
                "meta": np.array([self.pos.offset, self.neg.offset, self.zero], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]]) -> Sketch:
        """A sketch from `to_arrays()` output."""
        meta = arrays["meta"].astype(np.int64)
        return cls(_Store(int(meta[0]), arrays["pos"].astype(np.int64)),
                   _Store(int(meta[1]), arrays["neg"].astype(np.int64)), int(meta[2]))

    @property
    def nbytes(self) -> int:
        """Memory held by the counts."""
        return int(self.pos.counts.nbytes + self.neg.counts.nbytes)


@dataclass(frozen=True, slots=True)
class QuantileEstimate:
    """A quantile of n events, with its order-statistic standard error."""

    value: float | None
    se: float | None
    n: int


def order_statistic_ranks(n: int, q: float) -> tuple[float, float]:
    """Ranks l, u = n·q ∓ 1.96·√(n·q·(1−q)) (0-based, clipped into 0..n−1): the order
    statistics bracketing a 95% distribution-free interval of the q-quantile."""
    half = Z95 * math.sqrt(n * q * (1.0 - q))
    return max(n * q - half, 0.0), min(n * q + half, n - 1.0)


def order_statistic_se(sorted_values: npt.ArrayLike, q: float) -> float:
    """The q-quantile's standard error (x₍u₎ − x₍l₎) / (2·1.96) from exact sorted values."""
    v = np.asarray(sorted_values, dtype=np.float64)
    n = len(v)
    if n == 0:
        return math.nan
    lo, hi = order_statistic_ranks(n, q)
    return float(v[int(hi)] - v[int(lo)]) / (2.0 * Z95)
