"""Unit assignment (docs/DEVELOPING.md, "Assignment, step by step"): compile an experiment once, assign units many times.

`compile_experiment` does all the work that does not depend on the unit: salt prefixes, the
ramp threshold, cumulative bucket boundaries and every possible answer, built in advance. The
hot path, `assign`, is then a few attribute reads, two string concatenations, two murmur3
hashes and a bisect, and returns one of those prebuilt answers, so it allocates nothing of its
own. `to_config`/`compile_config` carry a compiled experiment to local-evaluation clients,
which then assign bit-identically to the server.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, cast

from mmh3 import hash as _murmur3_32

from litmus.core.hashing import BUCKETS, SEED
from litmus.core.models import STATUSES, Experiment, Rule, Status
from litmus.core.targeting import Attributes, Predicate, compile_rules

Reason = Literal["draft", "paused", "stopped", "override", "targeting", "winner", "ramp", "assigned"]

_EMPTY: Attributes = MappingProxyType({})


class Assignment(NamedTuple):
    """The answer for one unit: the variant (None when not in the experiment) and why."""

    variant: str | None
    config: Any
    reason: Reason
    probability: float | None
    version: int


# eq=False: field-wise equality would compare compiled predicates (never equal across
# compilations) and hashing would trip over the override mappings; identity is what is meant.
@dataclass(frozen=True, slots=True, eq=False)
class CompiledExperiment:
    """An experiment prepared for assignment; immutable, build it with compile_experiment."""

    id: str
    key: str
    status: Status
    version: int
    salt: str
    ramp: float
    ramp_prefix: str
    prefix: str
    ramp_prefix_utf8: bytes
    prefix_utf8: bytes
    ramp_threshold: float
    boundaries: tuple[int, ...]
    ramp_hash_threshold: int
    hash_boundaries: tuple[int, ...]
    variant_keys: tuple[str, ...]
    weights: tuple[float, ...]
    configs: tuple[Any, ...]
    rules: tuple[Rule, ...]
    targeting: Predicate | None
    overrides: Mapping[str, str]
    winner: str | None
    # Prebuilt answers, so the hot path never constructs one.
    early: Assignment | None
    override_answers: Mapping[str, Assignment]
    targeting_answer: Assignment
    winner_answer: Assignment | None
    ramp_answer: Assignment
    answers: tuple[Assignment, ...]

    def to_config(self) -> dict[str, Any]:
        """A JSON-safe description from which compile_config rebuilds an identical experiment."""
        return {
            "id": self.id,
            "key": self.key,
            "status": self.status,
            "version": self.version,
            "salt": self.salt,
            "ramp": self.ramp,
            "variants": [
                {"key": k, "weight": w, "config": _jsonable(c)}
                for k, w, c in zip(self.variant_keys, self.weights, self.configs, strict=True)
            ],
            "targeting": [
                {"attribute": r.attribute, "op": r.op, "value": _jsonable(r.value)}
                for r in self.rules
            ],
            "overrides": dict(self.overrides),
            "winner": self.winner,
        }


def _jsonable(x: Any) -> Any:
    """Copy a value with tuples (frozen models use them) turned into JSON lists."""
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Mapping):
        return {k: _jsonable(v) for k, v in x.items()}
    return x


def boundaries(weights: Sequence[float]) -> tuple[int, ...]:
    """Cumulative bucket boundaries round(10000 * (w1 + ... + wi)); the last is 10000."""
    out: list[int] = []
    acc = 0.0
    prev = 0
    for w in weights:
        acc += w
        # Clamping keeps boundaries monotone and inside [0, 10000] even when bandit weights
        # do not sum exactly to 1; for valid weights it changes nothing.
        b = min(BUCKETS, max(prev, round(BUCKETS * acc)))
        out.append(b)
        prev = b
    if out:
        out[-1] = BUCKETS
    return tuple(out)


_MAX_HASH = 0xFFFF_FFFF  # the largest 32-bit hash


def hash_threshold(b: int) -> int:
    """The least 32-bit hash h with floor(h * 10000 / 2**32) >= b: ceil(b * 2**32 / 10000)."""
    # floor(h * 10000 / 2**32) >= b  <=>  h * 10000 >= b * 2**32  <=>  h >= ceil(b * 2**32 / 10000)
    return -(-(b << 32) // BUCKETS)


def compile_experiment(
    exp: Experiment, weights: Mapping[str, float] | None = None
) -> CompiledExperiment:
    """Compile an experiment for assignment; `weights` (bandits) override configured weights."""
    return _build(
        id=exp.id,
        key=exp.key,
        status=exp.status,
        version=exp.version,
        salt=exp.effective_salt,
        ramp=exp.ramp,
        variants=[(v.key, v.weight, v.config) for v in exp.variants],
        weights=weights,
        rules=tuple(exp.targeting),
        overrides=exp.overrides,
        winner=exp.winner,
    )


def compile_config(d: Mapping[str, Any]) -> CompiledExperiment:
    """Rebuild a CompiledExperiment from CompiledExperiment.to_config() output (the client side)."""
    try:
        variants = [(v["key"], v["weight"], v.get("config")) for v in d["variants"]]
        rules = tuple(
            Rule(attribute=r["attribute"], op=r["op"], value=r.get("value"))
            for r in d.get("targeting") or ()
        )
        return _build(
            id=d["id"],
            key=d["key"],
            status=d["status"],
            version=d["version"],
            salt=d["salt"],
            ramp=d["ramp"],
            variants=variants,
            weights=None,
            rules=rules,
            overrides=d.get("overrides") or {},
            winner=d.get("winner"),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed experiment config: {exc!r}") from exc


def _build(
    *,
    id: str,
    key: str,
    status: str,
    version: int,
    salt: str,
    ramp: float,
    variants: Sequence[tuple[str, float, Any]],
    weights: Mapping[str, float] | None,
    rules: tuple[Rule, ...],
    overrides: Mapping[str, str],
    winner: str | None,
) -> CompiledExperiment:
    """Validate and precompute everything assign needs; raise ValueError on inconsistency."""
    name = f"experiment {key!r}"
    if status not in STATUSES:
        raise ValueError(f"{name}: unknown status {status!r}")
    if not isinstance(salt, str) or not salt:
        raise ValueError(f"{name}: salt must be a non-empty string")
    # A lone surrogate cannot be UTF-8 encoded (and crashes mmh3); fail here, not per request.
    salt_utf8 = salt.encode("utf-8")
    if isinstance(ramp, bool) or not isinstance(ramp, int | float) or not 0.0 <= ramp <= 1.0:
        raise ValueError(f"{name}: ramp must be a number in [0, 1], got {ramp!r}")
    if not variants:
        raise ValueError(f"{name}: no variants")
    keys = tuple(k for k, _, _ in variants)
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name}: duplicate variant keys {keys}")
    if weights is not None:
        unknown = set(weights) - set(keys)
        if unknown:
            raise ValueError(f"{name}: weights for unknown variants {sorted(unknown)}")
    ws = tuple(
        float(weights[k]) if weights is not None and k in weights else float(w)
        for k, w, _ in variants
    )
    for k, w in zip(keys, ws, strict=True):
        if not math.isfinite(w) or w < 0.0:
            raise ValueError(f"{name}: variant {k!r} has invalid weight {w!r}")
    configs = tuple(c for _, _, c in variants)
    index = {k: i for i, k in enumerate(keys)}
    for unit, vk in overrides.items():
        if vk not in index:
            raise ValueError(f"{name}: override for unit {unit!r} names unknown variant {vk!r}")
    if winner is not None and winner not in index:
        raise ValueError(f"{name}: winner {winner!r} is not a variant")

    def answer(reason: Reason, i: int | None = None, probability: float | None = None) -> Assignment:
        if i is None:
            return Assignment(None, None, reason, None, version)
        return Assignment(
            keys[i], configs[i], reason, ws[i] if probability is None else probability, version
        )

    early: Assignment | None = None
    if status == "draft":
        early = answer("draft")
    elif status == "paused":
        early = answer("paused")
    elif status == "stopped" and winner is None:
        early = answer("stopped")
    # A winner only matters once stopped; a running experiment keeps its split.
    winner_answer = (
        answer("winner", index[winner], 1.0) if status == "stopped" and winner is not None else None
    )
    override_map = dict(overrides)
    bounds = boundaries(ws)
    ramp_threshold = ramp * BUCKETS
    return CompiledExperiment(
        id=id,
        key=key,
        status=cast(Status, status),  # checked against STATUSES above
        version=version,
        salt=salt,
        ramp=ramp,
        ramp_prefix=salt + ":ramp:",
        prefix=salt + ":",
        ramp_prefix_utf8=salt_utf8 + b":ramp:",
        prefix_utf8=salt_utf8 + b":",
        # The float ramp * 10000, exactly as docs/DEVELOPING.md writes the comparison.
        ramp_threshold=ramp_threshold,
        boundaries=bounds,
        # bucket >= ramp * 10000 (a float) <=> bucket >= ceil(ramp * 10000), as buckets are ints.
        ramp_hash_threshold=hash_threshold(math.ceil(ramp_threshold)),
        hash_boundaries=tuple(hash_threshold(b) for b in bounds),
        variant_keys=keys,
        weights=ws,
        configs=configs,
        rules=rules,
        targeting=compile_rules(rules) if rules else None,
        overrides=MappingProxyType(override_map),
        winner=winner,
        early=early,
        # An override is not drawn: served with probability 1, like a winner.
        override_answers=MappingProxyType(
            {unit: answer("override", index[vk], 1.0) for unit, vk in override_map.items()}
        ),
        targeting_answer=answer("targeting"),
        winner_answer=winner_answer,
        ramp_answer=answer("ramp"),
        answers=tuple(answer("assigned", i) for i in range(len(keys))),
    )


def served_probability(c: CompiledExperiment, unit_id: str, index: int) -> float:
    """The probability the assign answer gave when it served variant `index` to this unit:
    1 for an override or a stopped experiment's winner, else the variant's weight."""
    if unit_id in c.override_answers or c.winner_answer is not None:
        return 1.0
    return c.weights[index]


def assign(c: CompiledExperiment, unit_id: str, attributes: Attributes | None = None) -> Assignment:
    """Assign one unit following the steps of docs/DEVELOPING.md, "Assignment, step by step", in that order."""
    # 1. draft, paused, or stopped without a winner: nobody is in the experiment.
    if c.early is not None:
        return c.early
    # 2. overrides beat targeting, the winner and the ramp.
    if c.override_answers:
        hit = c.override_answers.get(unit_id)
        if hit is not None:
            return hit
    # 3. targeting
    if c.targeting is not None and not c.targeting(attributes if attributes is not None else _EMPTY):
        return c.targeting_answer
    # 4. stopped with a winner: everyone who passes targeting, regardless of the ramp.
    if c.winner_answer is not None:
        return c.winner_answer
    # 5 and 6 compare raw 32-bit hashes with thresholds precomputed in hash space, which is
    # exactly bucket(s) >= threshold without a per-call big-int multiply and shift.
    if unit_id.isascii():  # O(1); nearly every real id
        if _murmur3_32(c.ramp_prefix + unit_id, SEED, False) >= c.ramp_hash_threshold:
            return c.ramp_answer
        h = _murmur3_32(c.prefix + unit_id, SEED, False)
    else:
        # Hash the UTF-8 bytes ourselves: mmh3 segfaults on a str holding a lone surrogate,
        # where encode raises UnicodeEncodeError, and one encode beats mmh3 encoding twice.
        u = unit_id.encode("utf-8")
        if _murmur3_32(c.ramp_prefix_utf8 + u, SEED, False) >= c.ramp_hash_threshold:
            return c.ramp_answer
        h = _murmur3_32(c.prefix_utf8 + u, SEED, False)
    return c.answers[bisect_right(c.hash_boundaries, h)]


def assign_many(c: CompiledExperiment, unit_ids: Sequence[str],
                attributes: Attributes | None = None) -> list[Assignment]:
    """[assign(c, u, attributes) for u in unit_ids], with the steps that do not depend on the
    unit (1, 3 and 4: the experiment's state, targeting on the shared attributes, a winner)
    decided once for the batch rather than once per unit."""
    if c.early is not None:
        return [c.early] * len(unit_ids)
    overrides = c.override_answers
    fixed: Assignment | None = None
    if c.targeting is not None and not c.targeting(attributes if attributes is not None else _EMPTY):
        fixed = c.targeting_answer
    elif c.winner_answer is not None:
        fixed = c.winner_answer
    if fixed is not None:
        if not overrides:
            return [fixed] * len(unit_ids)
        get = overrides.get
        return [hit if (hit := get(u)) is not None else fixed for u in unit_ids]
    ramp_prefix, prefix, threshold = c.ramp_prefix, c.prefix, c.ramp_hash_threshold
    ramp_answer, answers, boundaries = c.ramp_answer, c.answers, c.hash_boundaries
    if not overrides and threshold > _MAX_HASH:
        # The usual running experiment: no overrides, and a full ramp, whose threshold no
        # 32-bit hash reaches, lets every unit through step 5. Only step 6 is left per unit.
        prefix_utf8 = c.prefix_utf8
        return [answers[bisect_right(boundaries, _murmur3_32(prefix + u, SEED, False)
                                     if u.isascii() else
                                     _murmur3_32(prefix_utf8 + u.encode("utf-8"), SEED, False))]
                for u in unit_ids]
    out: list[Assignment] = []
    append = out.append
    for u in unit_ids:
        if overrides:
            hit = overrides.get(u)
            if hit is not None:
                append(hit)
                continue
        # 5 and 6 as in assign.
        if u.isascii():
            if _murmur3_32(ramp_prefix + u, SEED, False) >= threshold:
                append(ramp_answer)
                continue
            h = _murmur3_32(prefix + u, SEED, False)
        else:
            b = u.encode("utf-8")
            if _murmur3_32(c.ramp_prefix_utf8 + b, SEED, False) >= threshold:
                append(ramp_answer)
                continue
            h = _murmur3_32(c.prefix_utf8 + b, SEED, False)
        append(answers[bisect_right(boundaries, h)])
    return out
