"""Covariates an exposure carries (README, "Variance reduction with covariates"): the checks
the events and the assign routes share, and the row the writer stores by declared position."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from litmus.core.unitfold import MAX_COVARIATES
from litmus.db.events import Cov, covariate_columns

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # a metric name's form (schemas.SLUG)
NAME_ERROR = ("must be a covariate name: lower-case letters, digits, '_' or '-', starting with a "
              "letter or digit, at most 64 characters")


def declared_covariates(metrics: Mapping[str, Any]) -> list[str]:
    """An experiment's declared covariates, in their stored positions."""
    return [str(c) for c in metrics.get("covariates") or ()]


def _number(v: Any) -> bool:
    if not (type(v) is float or type(v) is int):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def covariates_problem(raw: Any) -> str | None:
    """Why a `covariates` value is malformed, whatever the experiment declares (None: fine)."""
    if raw is None:
        return None
    if type(raw) is not dict:
        return "must be an object of covariate names and numbers"
    if len(raw) > MAX_COVARIATES:
        return f"at most {MAX_COVARIATES} covariates (got {len(raw)})"
    for name, v in raw.items():
        if not _NAME.fullmatch(name):  # fullmatch: "$" also matches before a final newline
            return f"{name!r} {NAME_ERROR}"
        if not _number(v):
            return f"{name}: must be a finite number"
    return None


Cells = Sequence[Cov]
"""An exposure row's five covariate columns, by declared position."""


def declared_positions(metrics: Mapping[str, Any]) -> dict[str, int]:
    """An experiment's declared covariates -> their stored positions (the first five, each
    name at its first position, as _checked_row places them; the API refuses more or repeated
    names anyway)."""
    positions: dict[str, int] = {}
    for i, name in enumerate(declared_covariates(metrics)[:MAX_COVARIATES]):
        positions.setdefault(name, i)
    return positions


def covariate_cells(raw: Any, positions: Mapping[str, int]) -> tuple[Cells | None, str | None]:
    """A `covariates` object -> an exposure row's five covariate columns by the declared
    `positions` (all None for an empty object), or why it is refused; for the event routes
    and assign's `log_exposure`."""
    if type(raw) is dict and 0 < len(raw) <= MAX_COVARIATES:
        # The common case first, without the name pattern: every name declared (so well
        # formed) and every value a finite float or an int; anything else takes the full
        # checks, which say what is wrong. This runs for every exposure sent with covariates,
        # so it does the least Python can: one pass, no tuple (the row is built by index).
        cells: list[Cov] = [None, None, None, None, None]  # MAX_COVARIATES
        try:
            for name, v in raw.items():
                if type(v) is float:
                    if v - v:  # NaN (inf - inf is NaN too); a finite float less itself is 0.0
                        break
                elif type(v) is int:
                    v = float(v)  # OverflowError beyond a float's range
                else:
                    break
                cells[positions[name]] = v  # KeyError: undeclared
            else:
                return cells, None
        except (KeyError, OverflowError):
            pass
    row, why = _checked_row(raw, list(positions))
    return (None if why is not None else covariate_columns(row)), why


def _checked_row(raw: Any, declared: Sequence[str],
                 ) -> tuple[list[float | None] | None, str | None]:
    problem = covariates_problem(raw)
    if problem is not None or not raw:
        return None, problem
    row: list[float | None] = [None] * len(declared)
    last = -1
    for name, v in raw.items():
        if name not in declared:
            return None, (f"unknown covariate {name!r}: declare it in the experiment's "
                          "metrics.covariates (declared: "
                          f"{', '.join(declared) if declared else 'none'})")
        i = declared.index(name)
        row[i] = float(v)
        last = max(last, i)
    return row[:last + 1], None
