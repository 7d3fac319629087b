"""Real `litmus serve` processes for tests that need them (multi-process, signals, clients)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ADMIN_SECRET, CLIENT_SECRET


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`python -m litmus serve` on a free port against a given database."""

    def __init__(self, database_url: str, data_dir: Path, *, workers: int = 1,
                 env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "LITMUS_DATA_DIR": str(data_dir),
            "ADMIN_API_TOKENS": f"admin:{ADMIN_SECRET}",
            "CLIENT_API_TOKENS": f"router:{CLIENT_SECRET}",
            "LITMUS_PORT": str(self.port),
            "LITMUS_WORKERS": str(workers),
            "LITMUS_RECOMPUTE_INTERVAL_S": "0.5",
            # No fast lane unless a test asks (its default, the port + 1, may be another's).
            "LITMUS_ASSIGN_PORT": "0",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        """Start and wait until /readyz answers 200."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "litmus", "serve"], env=self.env, stdout=log, stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready: {self.log()}")

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Send a signal to the whole process group (workers included)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        """Wait for exit; returns the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.signal(signal.SIGTERM)
            self.proc.wait(20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
            self.proc.wait(5)
