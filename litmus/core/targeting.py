"""Targeting rules (docs/DEVELOPING.md, "Assignment, step by step"): validate once, compile once, evaluate on the hot path.

A rule is `{attribute, op, value}`; every rule of an experiment must hold. Attributes are the
JSON object a router sends with an assignment request. An attribute that is absent, or whose
value is JSON `null`, is *missing*: it fails every op except `not_in`, `neq` and
`exists: false`. Values of different JSON types never compare equal or ordered (`"1"` is not
`1`, `true` is not `1`), and a type mismatch makes the rule false instead of raising.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from litmus.core.models import TARGETING_OPS, Rule

Attributes = Mapping[str, Any]
Predicate = Callable[[Attributes], bool]
Check = Callable[[Attributes], bool]

# Regexes run on RE2, whose matching time is linear in the input: a pattern such as `(a+)+$`
# that makes a backtracking engine take seconds per request cannot stall the event loop.
# Patterns RE2 does not support (backreferences, lookaround) are refused when the rule is saved.
MAX_REGEX_LENGTH = 1000
# Longest string attribute value an assignment request may send (README, "The API at a glance"):
# it bounds the work one targeting check can cost.
MAX_ATTRIBUTE_LENGTH = 1024
# Most attributes one assignment request may send.
MAX_ATTRIBUTES = 64

_ORDER_OPS = frozenset({"gt", "gte", "lt", "lte"})


@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem with one rule: its index in the list, the offending field and why."""

    index: int
    field: str
    message: str


class TargetingError(ValueError):
    """Rules that cannot be compiled; `errors` lists every problem found."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = tuple(errors)
        first = self.errors[0]
        super().__init__(f"targeting[{first.index}].{first.field}: {first.message}")


def _is_number(x: object) -> bool:
    # bool is an int subclass in Python, but JSON true is not a number.
    return isinstance(x, int | float) and not isinstance(x, bool)


def _json_eq(a: object, b: object) -> bool:
    """Equality with JSON types: a bool never equals a number, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a):
        return _is_number(b) and a == b
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_json_eq(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Mapping):
        return (
            isinstance(b, Mapping)
            and a.keys() == b.keys()
            and all(_json_eq(a[k], b[k]) for k in a)
        )
    return a == b


def _scalar_key(x: object) -> tuple[str, object] | None:
    """A hashable key that keeps JSON types apart (True vs 1), or None for containers."""
    if isinstance(x, bool):
        return ("b", x)
    if _is_number(x):
        # 1 and 1.0 hash and compare equal, as JSON numbers should.
        return ("n", x)
    if isinstance(x, str):
        return ("s", x)
    return None


def _get(rule: Rule | Mapping[str, Any], name: str) -> Any:
    if isinstance(rule, Rule):
        return getattr(rule, name)
    return rule.get(name)


def validate_rules(rules: Iterable[Rule | Mapping[str, Any]]) -> list[RuleError]:
    """Every problem with a list of rules, as (index, field, message); empty when valid."""
    errors: list[RuleError] = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Rule | Mapping):
            errors.append(RuleError(i, "rule", "must be an object {attribute, op, value}"))
            continue
        attribute = _get(rule, "attribute")
        op = _get(rule, "op")
        value = _get(rule, "value")
        if not isinstance(attribute, str) or not attribute.strip():
            errors.append(RuleError(i, "attribute", "must be a non-empty string"))
        if op not in TARGETING_OPS:
            errors.append(
                RuleError(i, "op", f"unknown op {op!r}; expected one of {', '.join(TARGETING_OPS)}")
            )
            continue
        message = _value_problem(op, value)
        if message is not None:
            errors.append(RuleError(i, "value", message))
    return errors


def _value_problem(op: str, value: Any) -> str | None:
    """Why `value` is unusable with `op`, or None when it is fine."""
    if op == "exists":
        return None if isinstance(value, bool) else "exists takes true or false"
    if value is None:
        return f"{op} needs a value (use exists to test whether an attribute is present)"
    if op in ("in", "not_in"):
        return None if isinstance(value, list | tuple) else f"{op} takes a list of values"
    if op in _ORDER_OPS:
        if isinstance(value, str):
            return None
        if _is_number(value):
            return None if math.isfinite(value) else f"{op} takes a finite number"
        return f"{op} takes a number or a string"
    if op == "contains":
        if isinstance(value, list | tuple | Mapping):
            return "contains takes a string, number or boolean"
        return None
    if op == "regex":
        if not isinstance(value, str):
            return "regex takes a string pattern"
        if len(value) > MAX_REGEX_LENGTH:
            return f"regex pattern is longer than {MAX_REGEX_LENGTH} characters"
        try:
            _re2_compile(value)
        except re2.error as exc:
            why = exc.args[0] if exc.args else ""
            why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
            return f"not a regular expression RE2 accepts (no backreferences or lookaround): {why}"
        return None
    return None  # eq, neq: any non-null JSON value


def _re2_compile(pattern: str) -> Any:
    """The pattern compiled by RE2, quietly: RE2 otherwise prints its errors on stderr."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def _compile_rule(rule: Rule) -> Check:
    """One rule as a closure over its pre-processed value."""
    attr, op, value = rule.attribute, rule.op, rule.value

    if op == "exists":
        if value:
            return lambda a: a.get(attr) is not None
        return lambda a: a.get(attr) is None

    if op in ("eq", "neq"):
        eq: Check
        if isinstance(value, str):
            # Nothing but a str equals a str, and None != value covers a missing attribute.
            def eq(a: Attributes) -> bool:
                return bool(a.get(attr) == value)
        elif isinstance(value, bool):
            # True == 1 in Python, so compare identity: JSON true is only ever True.
            def eq(a: Attributes) -> bool:
                return a.get(attr) is value
        elif _is_number(value):
            def eq(a: Attributes) -> bool:
                v = a.get(attr)
                return bool(v == value) and not isinstance(v, bool)
        else:
            def eq(a: Attributes) -> bool:
                v = a.get(attr)
                return v is not None and _json_eq(v, value)
        if op == "eq":
            return eq
        return lambda a: not eq(a)

    if op in ("in", "not_in"):
        # One set per JSON type, so a membership test is a single hash lookup with no
        # allocation, and True never matches 1.
        strs = frozenset(x for x in value if isinstance(x, str))
        bools = frozenset(x for x in value if isinstance(x, bool))
        nums = frozenset(x for x in value if _is_number(x))
        others = tuple(x for x in value if isinstance(x, list | tuple | Mapping))

        def member(a: Attributes) -> bool:
            v = a.get(attr)
            t = type(v)
            if t is str:
                return v in strs
            if t is int or t is float:
                return v in nums
            if t is bool:
                return v in bools
            if v is None:
                return False
            # Rare: str/int subclasses or container values.
            k = _scalar_key(v)
            if k is not None:
                return v in (strs if k[0] == "s" else bools if k[0] == "b" else nums)
            return any(_json_eq(v, o) for o in others)

        if op == "in":
            return member
        return lambda a: not member(a)

    if op in _ORDER_OPS:
        compare: Callable[[Any, Any], Any] = {
            "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
        }[op]
        # Different JSON types are not ordered: a str is never > 3, and true is no number.
        # Exact type checks are the cheapest test and exclude bool (type(True) is bool).
        if isinstance(value, str):
            def ordered(a: Attributes) -> bool:
                v = a.get(attr)
                return type(v) is str and bool(compare(v, value))
        else:
            def ordered(a: Attributes) -> bool:
                v = a.get(attr)
                t = type(v)
                return (t is int or t is float) and bool(compare(v, value))

        return ordered

    if op == "contains":
        def contains(a: Attributes) -> bool:
            v = a.get(attr)
            if isinstance(v, str):
                return isinstance(value, str) and value in v
            if isinstance(v, list | tuple):
                return any(_json_eq(x, value) for x in v)
            return False

        return contains

    if op == "regex":
        pattern = _re2_compile(value)

        def matches(a: Attributes) -> bool:
            v = a.get(attr)
            # search, not match: `"^ios"` anchors explicitly, `"beta"` finds a substring.
            return isinstance(v, str) and pattern.search(v) is not None

        return matches

    raise TargetingError([RuleError(0, "op", f"unknown op {op!r}")])  # pragma: no cover


def _always(_: Attributes) -> bool:
    return True


def compile_rules(rules: Sequence[Rule]) -> Predicate:
    """Compile rules into one predicate over attributes; raise TargetingError if any is invalid."""
    errors = validate_rules(rules)
    if errors:
        raise TargetingError(errors)
    checks = tuple(_compile_rule(r) for r in rules)
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]

    def all_hold(a: Attributes) -> bool:
        # A plain loop: all() over a generator allocates on every request.
        for check in checks:  # noqa: SIM110
            if not check(a):
                return False
        return True

    return all_hold


def evaluate(rules: Sequence[Rule], attributes: Attributes | None) -> bool:
    """Whether `attributes` satisfy every rule (compiles each call: use compile_rules in loops)."""
    return compile_rules(rules)(attributes if attributes is not None else {})
