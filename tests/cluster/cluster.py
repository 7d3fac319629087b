"""Driving scripts/cluster.sh from Python: build, fail over, and run code in its client namespace.

Network namespaces belong to threads in Linux: `in_client_namespace` runs a coroutine on an
event loop in a thread that joined the cluster's client namespace (ltc-cli), so the sockets it
opens reach the cluster's private addresses while the rest of the test process stays outside."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
NET = "10.77.0"
LB_URL = f"http://{NET}.2:8080"
CLIENT_NS = "ltc-cli"
CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def node_url(i: int) -> str:
    """Litmus node i (1-based), as the client namespace reaches it."""
    return f"http://{NET}.2{i}:8000"


def dsn() -> str:
    """The multi-host DSN the nodes use."""
    return (f"postgresql://postgres@{NET}.11:5432,{NET}.12:5432/litmus"
            "?target_session_attrs=read-write")


def unavailable_reason() -> str | None:
    """Why a cluster cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth pairs and a bridge (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if shutil.which("haproxy") is None:
        return "needs HAProxy (apt-get install -y haproxy)"
    if not (PG_BIN / "postgres").exists() or not (PG_BIN / "pg_basebackup").exists():
        return f"needs PostgreSQL server binaries in {PG_BIN} (set PG_BIN)"
    probe = "ltc-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces are not available here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if any(line.split()[0] == "ltc-sw" for line in listed.splitlines() if line.strip()):
        return "a cluster is already up on this machine (scripts/cluster.sh down removes it)"
    return None


def run(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> str:
    """scripts/cluster.sh with these arguments; raises with its output when it fails."""
    out = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"cluster.sh {' '.join(args)} failed ({out.returncode}):\n"
                           f"{out.stdout}\n{out.stderr}")
    return out.stdout


def in_client_namespace(make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 300.0) -> T:
    """Run `make()` to completion on a new event loop in a thread inside the client namespace."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{CLIENT_NS}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {CLIENT_NS}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = asyncio.run(make())
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="cluster-client", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the client-namespace scenario did not end within {timeout} s")
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


def log_tail(cluster_dir: Path, name: str, lines: int = 40) -> str:
    """The end of one cluster process's log (for failure messages)."""
    path = cluster_dir / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
