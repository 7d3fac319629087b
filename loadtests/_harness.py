"""Shared pieces of the benchmarks: start servers, run wrk, print ratios."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token-0123456789"


def free_port() -> int:
    """A TCP port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need_wrk() -> str:
    """The wrk binary, installed from Debian when missing (root only)."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0:
        print("installing wrk (Debian package) for the benchmark...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = shutil.which("wrk")
        if not path:
            subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                           stdout=subprocess.DEVNULL)
            path = shutil.which("wrk")
    if not path:
        sys.exit("wrk is needed for this benchmark: apt-get install -y wrk")
    return path


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    """Poll until GET url answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def wait_post(port: int, path: str) -> None:
    """Poll until a bare server on `port` answers a POST to `path`."""
    for _ in range(100):
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}{path}", data=b'{"unit_id":"x"}', method="POST"), timeout=1)
            return
        except OSError:
            time.sleep(0.1)


def launch_bench_experiment(base: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create and launch the experiment "bench" (model_a with `config`, model_b; 50/50)."""
    model_a: dict[str, Any] = {"key": "model_a", "weight": 0.5}
    if config is not None:
        model_a["config"] = config
    exp: dict[str, Any] = api(base, "POST", "/api/v1/experiments", {
        "key": "bench", "name": "bench", "description": "benchmark", "owner_team": "perf",
        "variants": [model_a, {"key": "model_b", "weight": 0.5}]})
    api(base, "POST", f"/api/v1/experiments/{exp['id']}/launch", {"ramp": 1})
    return exp


def api(base: str, method: str, path: str, body: Any = None) -> Any:
    """Call the Litmus API as admin."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


class Proc:
    """A background process pinned to one core, killed on exit."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, core: int = 0) -> None:
        cmd = (["taskset", "-c", str(core)] if shutil.which("taskset") else []) + args
        self.log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
        self.p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """SIGTERM the group, then wait."""
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)


def litmus_server(data_dir: Path, extra_env: dict[str, str] | None = None) -> tuple[Proc, str]:
    """`litmus serve` with the embedded PostgreSQL in data_dir, on core 0."""
    port = free_port()
    env = {"LITMUS_DATA_DIR": str(data_dir), "ADMIN_API_TOKENS": f"bench:{TOKEN}",
           "LITMUS_PORT": str(port), "LITMUS_LOG_LEVEL": "WARNING", **(extra_env or {})}
    env.pop("DATABASE_URL", None)
    proc = Proc([sys.executable, "-m", "litmus", "serve"], env=env, core=0)
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/readyz", 90)
    return proc, base


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_DONE = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", re.M)
_TICK = os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: str, seconds: float, connections: int) -> dict[str, float]:
    """Run wrk on core 1 (one thread) with the Lua `script` against url.

    Returns "n" (requests completed), "elapsed_s" (the run's length as wrk printed it), "rps"
    (wrk's own Requests/sec), "p50_ms" and "p99_ms", and "non_2xx" (answers other than 2xx/3xx).
    """
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cmd = (["taskset", "-c", "1"] if shutil.which("taskset") else []) + [
        need_wrk(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", f.name, url]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    rate, done = _RPS.search(out), _DONE.search(out)
    if not rate or not done:
        raise RuntimeError(f"wrk printed no rate or count:\n{out}")
    elapsed = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    lat = {p: float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u] for p, v, u in _LAT.findall(out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"n": float(done.group(1)), "elapsed_s": elapsed, "rps": float(rate.group(1)),
            "p50_ms": lat.get("50", 0.0), "p99_ms": lat.get("99", 0.0),
            "non_2xx": float(errors.group(1)) if errors else 0.0}


def wrk(url: str, body: bytes, seconds: float = 8, connections: int = 64,
        headers: dict[str, str] | None = None) -> dict[str, float]:
    """POST `body` to url with wrk on core 1; the figures of `run_wrk` (req/s, p50/p99 in ms...)."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    lua_body = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    script = 'wrk.method = "POST"\n' + f'wrk.body = "{lua_body}"\n' + "".join(
        f'wrk.headers["{k}"] = "{v}"\n' for k, v in hdrs.items())
    return run_wrk(url, script, seconds, connections)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (utime + stime) a process used so far. A process that is gone is an error (a
    benchmark must not print a figure for a server that died under it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        raise RuntimeError(f"process {pid} is gone: the server died during the benchmark") from None
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_s(pids: list[int]) -> float:
    """CPU seconds the processes' threads ran so far (/proc/PID/task/TID/schedstat, ns)."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster of the embedded server and every process it started."""
    try:
        master = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def postgres_cpu_s(data_dir: Path) -> float:
    """CPU seconds the embedded PostgreSQL used so far: its live processes' threads
    (/proc/PID/task/TID/schedstat) plus what its exited processes used (the postmaster's
    cutime and cstime: it reaps every backend and autovacuum worker it started). Without the
    second part a process that exits during a measured run takes its CPU with it, and a round
    can even come out negative."""
    pids = postgres_pids(data_dir)
    if not pids:
        return 0.0
    try:
        with open(f"/proc/{pids[0]}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        reaped = (int(fields[13]) + int(fields[14])) / _TICK
    except (OSError, ValueError, IndexError):
        reaped = 0.0
    return cpu_s(pids) + reaped
