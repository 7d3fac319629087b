"""Named SQL queries loaded once from sql/queries.sql (`-- name: x` blocks)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.M)


@cache
def load(path: Path = SQL_DIR / "queries.sql") -> dict[str, str]:
    """Parse a file of `-- name: x` blocks into {name: sql}."""
    text = path.read_text(encoding="utf-8")
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for i in range(1, len(parts), 2):
        out[parts[i]] = parts[i + 1].strip().rstrip(";")
    return out


def q(name: str) -> str:
    """The SQL of one named query."""
    return load()[name]
