"""Named SQL queries, loaded once per file of sql/ (`-- name: x` blocks): the one loader
every module of litmus/db reads its SQL through."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from litmus.resources import SQL_PACKAGE, data_dir

SQL_DIR = data_dir(SQL_PACKAGE)
_NAME = re.compile(r"^--\s*name:\s*([a-z0-9_]+)\s*$", re.M)


@cache
def load(path: Path) -> dict[str, str]:
    """Parse a file of `-- name: x` blocks into {name: sql}."""
    text = path.read_text(encoding="utf-8")
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for i in range(1, len(parts), 2):
        out[parts[i]] = parts[i + 1].strip().rstrip(";")
    return out


def query(file: str, name: str) -> str:
    """The SQL of one named query of sql/<file>.sql; a module binds its file once,
    `q = partial(query, "ops")`, and calls `q("snapshot_age")`."""
    return load(SQL_DIR / f"{file}.sql")[name]
