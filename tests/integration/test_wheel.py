"""A built wheel carries sql/ and ui/, and `litmus serve` from it works outside the checkout."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from litmus.resources import SQL_PACKAGE, UI_PACKAGE, data_dir
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

# The wheel's server runs on its own embedded PostgreSQL whatever LITMUS_TEST_DATABASE_URL
# says, so the suite's second CI run (against a server) would only repeat the first.
once_per_ci = pytest.mark.skipif(
    bool(os.environ.get("LITMUS_TEST_DATABASE_URL")),
    reason="the wheel check uses no test database; the embedded run of the suite covers it",
)


def test_editable_install_reads_the_checkout() -> None:
    # The dev venv is an editable install: a new migration under sql/ counts without reinstalling.
    assert data_dir(SQL_PACKAGE) == ROOT / "sql"
    assert data_dir(UI_PACKAGE) == ROOT / "ui"


def test_a_zipped_package_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("litmus_zipped_data/__init__.py", "")
        z.writestr("litmus_zipped_data/a.sql", "SELECT 1")
    sys.path.insert(0, str(archive))
    try:
        with pytest.raises(RuntimeError, match="not a folder on disk"):
            data_dir("litmus_zipped_data")
    finally:
        sys.path.remove(str(archive))
        sys.modules.pop("litmus_zipped_data", None)


def test_a_stale_editable_install_says_to_reinstall() -> None:
    with pytest.raises(RuntimeError, match="reinstall Litmus"):
        data_dir("litmus._not_mapped")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that points a child at the checkout or its settings."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith("LITMUS_") and not k.endswith("_API_TOKENS")}
    return {**env, **extra}


def _run(cmd: list[str], *, timeout: float, cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A temporary folder outside the checkout, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="litmus-wheel-")).resolve()
    assert not folder.is_relative_to(ROOT)
    # mkdtemp makes the folder owner-only, like a checkout in /root: as root, the embedded
    # server's own user cannot reach the venv's PostgreSQL binaries there, and Litmus must run
    # them anyway without opening the folder (docs/OPERATIONS.md, "One host").
    assert folder.stat().st_mode & 0o077 == 0
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(scratch: Path) -> Path:
    """The wheel `pip wheel` builds from a copy of the checkout's sources."""
    # A copy, because setuptools leaves build/ and *.egg-info next to pyproject.toml, and a
    # stale build/lib in the checkout could ship a file that no longer exists.
    src = scratch / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("litmus", "sql", "ui"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = scratch / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
         timeout=300, cwd=scratch)
    (built,) = out.glob("litmus-*.whl")
    return built


@once_per_ci
@pytest.mark.slow
def test_the_wheel_carries_every_module_query_and_screen(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "litmus").rglob("*.py")}
    expected |= {"litmus/_sql/" + p.relative_to(ROOT / "sql").as_posix()
                 for p in (ROOT / "sql").rglob("*") if p.is_file() and p.suffix in {".sql", ".py"}}
    expected |= {"litmus/_ui/" + p.relative_to(ROOT / "ui").as_posix()
                 for p in (ROOT / "ui").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert "litmus/_sql/migrations/0001_init.sql" in expected  # the globs above found files
    assert "litmus/_ui/index.html" in expected
    assert sorted(expected - names) == []


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def _stop_embedded(pgdata: Path) -> None:
    """Stop a PostgreSQL the server left running in pgdata (only after a failure)."""
    pidfile = pgdata / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGQUIT)  # immediate shutdown


@once_per_ci
@pytest.mark.slow
@pytest.mark.timeout(1200)  # installing numpy, scipy and PostgreSQL's binaries takes minutes
def test_litmus_serve_from_the_wheel_in_a_fresh_venv(wheel: Path, scratch: Path) -> None:
    venv, run, data = scratch / "venv", scratch / "run", scratch / "data"
    run.mkdir()
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120, cwd=run)
    py = venv / "bin" / "python"
    # Dependencies come from the package index (or pip's cache), as for anyone installing it.
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)], timeout=600, cwd=run)
    where = _run([str(py), "-c", "import litmus, litmus.resources as r;"
                  " print(litmus.__file__); print(r.data_dir(r.SQL_PACKAGE));"
                  " print(r.data_dir(r.UI_PACKAGE))"], timeout=60, cwd=run).split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    port = free_port()
    log_path = scratch / "serve.log"
    env = _clean_env(LITMUS_DATA_DIR=str(data), LITMUS_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(venv / "bin" / "litmus"), "serve"], cwd=run, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        ready = False
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                ready = _get(base + "/readyz")[0] == 200
            time.sleep(0.2)
        assert ready, f"never ready (exit {proc.poll()}):\n{log_path.read_text(errors='replace')}"

        status, ctype, body = _get(base + "/experiments")
        assert status == 200 and ctype.startswith("text/html")
        page = body.decode()
        scripts = re.findall(r'<script[^>]+src="(/ui/[^"]+\.js)"', page)
        styles = re.findall(r'<link[^>]+href="(/ui/[^"]+\.css)"', page)
        assert scripts and styles, page[:500]
        status, ctype, js = _get(base + scripts[0])
        assert status == 200 and "javascript" in ctype and b"import" in js
        status, ctype, _ = _get(base + styles[0])
        assert status == 200 and ctype.startswith("text/css")

        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text(errors="replace")
        # The server stops the embedded PostgreSQL it started when it exits.
        deadline = time.monotonic() + 30
        while (data / "pg" / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (data / "pg" / "postmaster.pid").exists(), "embedded PostgreSQL left running"
        assert scratch.stat().st_mode & 0o777 == 0o700, "a folder outside LITMUS_DATA_DIR was opened"
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _stop_embedded(data / "pg")
