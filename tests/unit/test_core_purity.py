"""litmus.core stays pure (docs/DEVELOPING.md, "The layers"): no web, no database, no outer layers."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import litmus.core

ROOT = Path(__file__).resolve().parents[2]
CORE_DIR = Path(litmus.core.__file__).parent

# Run in a fresh interpreter: in this one pytest plugins or other tests may already have
# imported aiohttp, which would hide (or fake) a leak.
PROBE = """
import importlib, json, pkgutil, sys
import litmus.core
names = [m.name for m in pkgutil.walk_packages(litmus.core.__path__, "litmus.core.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def probe() -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def test_importing_all_of_core_imports_neither_aiohttp_nor_asyncpg() -> None:
    result = probe()
    # Guard against a vacuous pass: the probe really imported the assignment core.
    assert {"litmus.core.hashing", "litmus.core.targeting", "litmus.core.assignment"} <= set(
        result["imported"]
    )
    top = {m.split(".")[0] for m in result["modules"]}
    assert "aiohttp" not in top
    assert "asyncpg" not in top


def test_core_imports_no_outer_litmus_layer() -> None:
    outer = [m for m in probe()["modules"]
             if m.startswith("litmus.") and not m.startswith("litmus.core")]
    assert outer == []


# Stdlib modules that mean I/O, concurrency, the clock or global randomness (a core function
# that needs randomness takes a numpy Generator instead).
IMPURE = {"asyncio", "socket", "ssl", "selectors", "subprocess", "threading", "multiprocessing",
          "concurrent", "urllib", "http", "sqlite3", "os", "time", "random", "secrets"}


def test_core_source_imports_nothing_impure() -> None:
    offenders = []
    paths = sorted(CORE_DIR.rglob("*.py"))
    assert CORE_DIR / "assignment.py" in paths
    for path in paths:
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                outer = top == "litmus" and not name.startswith("litmus.core")
                if top in IMPURE or top in {"aiohttp", "asyncpg"} or outer:
                    offenders.append(f"{path.name}: import {name}")
    assert offenders == []
