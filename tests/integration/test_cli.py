"""The `litmus` command: token, bad configuration, a port already in use."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def litmus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "litmus", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_token_prints_a_fresh_secret() -> None:
    a, b = litmus("token"), litmus("token")
    assert a.returncode == 0 and b.returncode == 0
    assert len(a.stdout.strip()) >= 40 and a.stdout != b.stdout


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    proc = litmus("serve", env={"LITMUS_WORKERS": "many", "LITMUS_DATA_DIR": str(tmp_path)})
    assert proc.returncode == 2
    assert "LITMUS_WORKERS" in proc.stderr and "Traceback" not in proc.stderr


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = litmus("serve", "--port", str(port), env={"LITMUS_DATA_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
