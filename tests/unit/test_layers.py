"""The layer rule of docs/DEVELOPING.md, checked on the source: asyncpg and SQL text only in
litmus/db, and litmus/core importing only the standard library, numpy, scipy, mmh3 and re2."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import litmus

PACKAGE = Path(litmus.__file__).parent
# A statement's shape in a string literal: a keyword that starts SQL and one that continues it.
SQL = re.compile(r"\b(SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|CREATE|ALTER|DROP|COPY|LISTEN|"
                 r"NOTIFY|pg_advisory\w*|hashtextextended)\b.*(\b(FROM|INTO|SET|TABLE|WHERE|TO|AS)\b|\()"
                 r"|^\s*SELECT\s+(\d|\$\d|true|false|NULL)", re.S)
CORE_ALLOWED = {"numpy", "scipy", "mmh3", "re2", "litmus", "__future__"}


def _modules() -> list[tuple[Path, ast.Module]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "services" / "fold.py" in paths and PACKAGE / "db" / "fold.py" in paths
    return [(p, ast.parse(p.read_text("utf-8"))) for p in paths]


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _outside_db(path: Path) -> bool:
    return not path.is_relative_to(PACKAGE / "db")


def test_only_the_db_layer_imports_asyncpg() -> None:
    offenders = [str(p.relative_to(PACKAGE)) for p, tree in _modules()
                 if _outside_db(p) and any(n.split(".")[0] == "asyncpg" for n in _imports(tree))]
    assert offenders == []


def test_only_the_db_layer_holds_sql_text() -> None:
    offenders = []
    for path, tree in _modules():
        if not _outside_db(path):
            continue
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef
                                    | ast.AsyncFunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings and SQL.search(node.value)):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_the_sql_detector_finds_sql() -> None:
    # Guard against a vacuous pass: the statements the db layer does hold are recognised.
    assert SQL.search("SELECT pg_try_advisory_lock($1)")
    assert SQL.search("SELECT m, hashtextextended(m, 0) AS h FROM unnest($1::text[]) m")
    assert SQL.search("INSERT INTO experiments (id) VALUES ($1)")
    assert SQL.search("SELECT 1")
    assert not SQL.search("Select the variant for this unit from the registry")


def test_core_imports_only_the_standard_library_and_its_numeric_kin() -> None:
    offenders = []
    for path, tree in _modules():
        if not path.is_relative_to(PACKAGE / "core"):
            continue
        for name in _imports(tree):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names:
                continue
            if top not in CORE_ALLOWED or (top == "litmus" and not name.startswith("litmus.core")):
                offenders.append(f"{path.name}: {name}")
    assert offenders == []
