"""Targeting rules: every operator matching, not matching and missing; validation; no raising."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import re2

from litmus.core.models import TARGETING_OPS, Rule
from litmus.core.targeting import (
    RuleError,
    TargetingError,
    compile_rules,
    evaluate,
    validate_rules,
)

# op, value, an attribute value that matches, one that does not
CASES: list[tuple[str, Any, Any, Any]] = [
    ("eq", "US", "US", "CA"),
    ("eq", 3, 3.0, 4),
    ("eq", True, True, False),
    ("neq", "US", "CA", "US"),
    ("in", ["US", "CA"], "CA", "MX"),
    ("in", [1, 2, 3], 2, 5),
    ("not_in", ["US", "CA"], "MX", "US"),
    ("gt", 18, 19, 18),
    ("gte", 18, 18, 17.5),
    ("lt", 2.5, 2, 2.5),
    ("lte", 2.5, 2.5, 3),
    ("gt", "2.0", "2.1", "1.9"),
    ("contains", "beta", "ios-beta-17", "ios-17"),
    ("contains", "gpu", ["cpu", "gpu"], ["cpu"]),
    ("regex", r"^ios-\d+$", "ios-17", "android-17"),
    ("exists", True, "anything", None),
    ("exists", False, None, "anything"),
]

# A missing attribute fails every op except not_in, neq and exists: false (docs/DEVELOPING.md, "Assignment, step by step").
MISSING_PASSES = {"not_in", "neq"}


@pytest.mark.parametrize(("op", "value", "yes", "no"), CASES)
def test_operator_matching_value(op: str, value: Any, yes: Any, no: Any) -> None:
    attrs = {} if yes is None else {"a": yes}
    assert evaluate([Rule("a", op, value)], attrs) is True


@pytest.mark.parametrize(("op", "value", "yes", "no"), CASES)
def test_operator_non_matching_value(op: str, value: Any, yes: Any, no: Any) -> None:
    attrs = {} if no is None else {"a": no}
    assert evaluate([Rule("a", op, value)], attrs) is False


@pytest.mark.parametrize(("op", "value", "yes", "no"), CASES)
def test_operator_missing_attribute(op: str, value: Any, yes: Any, no: Any) -> None:
    expected = op in MISSING_PASSES or (op == "exists" and value is False)
    rule = Rule("a", op, value)
    assert evaluate([rule], {"other": 1}) is expected
    assert evaluate([rule], None) is expected
    # JSON null counts as missing too.
    assert evaluate([rule], {"a": None}) is expected


def test_every_operator_is_covered() -> None:
    assert {op for op, *_ in CASES} == set(TARGETING_OPS)


@pytest.mark.parametrize(
    ("rule", "attribute"),
    [
        (Rule("a", "gt", 18), "19"),  # str vs number
        (Rule("a", "lt", "m"), 3),  # number vs str
        (Rule("a", "gte", 1), True),  # bool is not a number
        (Rule("a", "gt", 1), [5]),
        (Rule("a", "lte", 1), {"x": 1}),
        (Rule("a", "eq", 1), True),  # True == 1 in Python, not in JSON
        (Rule("a", "eq", True), 1),
        (Rule("a", "eq", "1"), 1),
        (Rule("a", "in", [1, 2]), True),
        (Rule("a", "in", [True]), 1),
        (Rule("a", "in", ["1"]), 1),
        (Rule("a", "in", [1]), [1]),
        (Rule("a", "contains", "x"), 123),
        (Rule("a", "contains", 1), "123"),
        (Rule("a", "contains", 1), [True]),
        (Rule("a", "regex", "1"), 1),
        (Rule("a", "regex", "x"), ["x"]),
    ],
)
def test_type_mismatch_is_false_and_never_raises(rule: Rule, attribute: Any) -> None:
    assert evaluate([rule], {"a": attribute}) is False


def test_type_mismatch_makes_negations_true() -> None:
    assert evaluate([Rule("a", "neq", 1)], {"a": True}) is True
    assert evaluate([Rule("a", "not_in", ["1", True])], {"a": 1}) is True


def test_numbers_compare_across_int_and_float() -> None:
    assert evaluate([Rule("a", "eq", 2)], {"a": 2.0})
    assert evaluate([Rule("a", "in", [2.0])], {"a": 2})
    assert evaluate([Rule("a", "gt", 1.5)], {"a": 2})


def test_containers_compare_structurally() -> None:
    assert evaluate([Rule("a", "eq", [1, "x"])], {"a": [1, "x"]})
    assert not evaluate([Rule("a", "eq", [1, "x"])], {"a": [True, "x"]})
    assert evaluate([Rule("a", "in", [{"k": 1}, "s"])], {"a": {"k": 1}})


def test_regex_searches_rather_than_full_matches() -> None:
    assert evaluate([Rule("ua", "regex", "beta")], {"ua": "ios-beta-17"})
    assert not evaluate([Rule("ua", "regex", "^beta")], {"ua": "ios-beta-17"})


def test_all_rules_must_hold() -> None:
    rules = [Rule("country", "in", ["US", "CA"]), Rule("age", "gte", 18)]
    pred = compile_rules(rules)
    assert pred({"country": "US", "age": 30})
    assert not pred({"country": "US", "age": 12})
    assert not pred({"country": "FR", "age": 30})
    assert not pred({"country": "US"})


def test_no_rules_always_hold() -> None:
    assert compile_rules([])({}) is True


def test_regex_is_compiled_at_compile_time_not_per_evaluation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pred = compile_rules([Rule("ua", "regex", r"^ios-\d+$")])

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a regex compiled while evaluating")

    monkeypatch.setattr(re2, "compile", boom)
    monkeypatch.setattr(re, "compile", boom)
    monkeypatch.setattr(re, "_compile", boom)
    assert pred({"ua": "ios-17"})
    assert not pred({"ua": "ios-x"})


def test_catastrophic_backtracking_pattern_runs_in_linear_time() -> None:
    # `(a+)+$` on "aaa…!" takes seconds with a backtracking engine at 25 characters and doubles
    # per character; RE2 answers at once.
    pred = compile_rules([Rule("ua", "regex", "(a+)+$")])
    started = time.perf_counter()
    assert not pred({"ua": "a" * 40 + "!"})
    assert time.perf_counter() - started < 0.05
    assert pred({"ua": "a" * 40})


@pytest.mark.parametrize("pattern", [r"(a)\1", r"foo(?=bar)", r"(?<!x)y"])
def test_patterns_re2_cannot_run_are_refused(pattern: str) -> None:
    (error,) = validate_rules([Rule("ua", "regex", pattern)])
    assert error.field == "value"
    assert "RE2" in error.message and "b'" not in error.message


@pytest.mark.parametrize(
    ("rule", "field", "fragment"),
    [
        (Rule("a", "like", "x"), "op", "unknown op"),
        (Rule("a", "in", "US"), "value", "list"),
        (Rule("a", "not_in", {"US": 1}), "value", "list"),
        (Rule("a", "regex", "("), "value", "not a regular expression"),
        (Rule("a", "regex", 5), "value", "string pattern"),
        (Rule("a", "regex", "a" * 1001), "value", "longer than"),
        (Rule("a", "exists", "yes"), "value", "true or false"),
        (Rule("a", "exists", None), "value", "true or false"),
        (Rule("a", "gt", [1]), "value", "number or a string"),
        (Rule("a", "lte", True), "value", "number or a string"),
        (Rule("a", "gte", float("nan")), "value", "finite"),
        (Rule("a", "eq", None), "value", "needs a value"),
        (Rule("a", "contains", [1]), "value", "contains takes"),
        (Rule("", "eq", 1), "attribute", "non-empty"),
    ],
)
def test_validate_rules_reports_field_and_reason(rule: Rule, field: str, fragment: str) -> None:
    errors = validate_rules([Rule("ok", "eq", 1), rule])
    assert len(errors) == 1
    assert errors[0].index == 1
    assert errors[0].field == field
    assert fragment in errors[0].message


def test_validate_rules_accepts_every_operator_with_a_good_value() -> None:
    assert validate_rules([Rule("a", op, value) for op, value, _, _ in CASES]) == []


def test_validate_rules_accepts_plain_mappings_and_reports_every_problem() -> None:
    errors = validate_rules(
        [
            {"attribute": "a", "op": "in", "value": ["x"]},
            {"attribute": "a", "op": "nope"},
            {"attribute": 3, "op": "exists", "value": 1},
            "not a rule",  # type: ignore[list-item]  # deliberately malformed
        ]
    )
    assert [(e.index, e.field) for e in errors] == [
        (1, "op"),
        (2, "attribute"),
        (2, "value"),
        (3, "rule"),
    ]


def test_compile_rules_rejects_invalid_rules_with_all_errors() -> None:
    with pytest.raises(TargetingError) as info:
        compile_rules([Rule("a", "regex", "("), Rule("b", "in", 3)])
    assert isinstance(info.value, ValueError)
    assert [e.index for e in info.value.errors] == [0, 1]
    assert isinstance(info.value.errors[0], RuleError)
    assert "targeting[0].value" in str(info.value)
