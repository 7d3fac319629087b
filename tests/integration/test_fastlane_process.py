"""The fast lane in a real `litmus serve`: announced at start, a pause reaches its answers within
a second, the Python client reads its config there, and SIGTERM drains it like the main port."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from litmus.client import LitmusClient
from tests.conftest import ADMIN_SECRET, CLIENT_SECRET
from tests.servers import ServerProcess, free_port


def call(url: str, body: Any = None, token: str = ADMIN_SECRET, method: str = "POST") -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose fast lane listens on a free port."""
    port = free_port()
    srv = ServerProcess(database_url, tmp_path, env={"LITMUS_ASSIGN_PORT": str(port)})
    srv.fast_port = port  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


def _assign_raw(sock: socket.socket, unit: str) -> bytes:
    body = json.dumps({"experiment": "lane", "unit_id": unit}).encode()
    sock.sendall(b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
                 + CLIENT_SECRET.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_pause_reaches_the_fast_lane_and_sigterm_drains_it(server: ServerProcess) -> None:
    fast = f"http://127.0.0.1:{server.fast_port}"  # type: ignore[attr-defined]
    assert f"Fast lane (assign, assign/batch, config, healthz): http://127.0.0.1:{server.fast_port}" \
        in server.log()  # type: ignore[attr-defined]
    exp = call(server.base_url + "/api/v1/experiments", {
        "key": "lane", "name": "lane", "description": "d", "owner_team": "t",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]})
    call(f"{server.base_url}/api/v1/experiments/{exp['id']}/launch", {"ramp": 1})
    deadline = time.monotonic() + 10
    while call(fast + "/api/v1/assign", {"experiment": "lane", "unit_id": "u"},
               CLIENT_SECRET)["reason"] != "assigned":
        assert time.monotonic() < deadline
        time.sleep(0.02)

    # The Python client reads its config from the fast lane.
    client = LitmusClient(server.base_url, CLIENT_SECRET, fast_lane_url=fast, stream=False)
    assert client.refresh() and client.assign("lane", "u").reason == "assigned"

    # A pause committed through the main port reaches the fast lane's answers within 1 s.
    call(f"{server.base_url}/api/v1/experiments/{exp['id']}/pause")
    paused_at = time.monotonic()
    while call(fast + "/api/v1/assign", {"experiment": "lane", "unit_id": "u"},
               CLIENT_SECRET)["reason"] != "paused":
        assert time.monotonic() - paused_at < 1.0, "the pause did not reach the fast lane in 1 s"
        time.sleep(0.01)

    # SIGTERM: a keep-alive connection's next request gets 503 and a close; the process exits 0.
    with socket.create_connection(("127.0.0.1", server.fast_port), timeout=5) as sock:  # type: ignore[attr-defined]
        assert _assign_raw(sock, "before").startswith(b"HTTP/1.1 200 ")
        server.signal(signal.SIGTERM)
        time.sleep(0.3)
        answer = _assign_raw(sock, "after")
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"Connection: close" in answer and b'"unavailable"' in answer
        assert sock.recv(1) == b""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.fast_port), timeout=1).close()  # type: ignore[attr-defined]
    assert server.wait(30) == 0


def test_workers_share_the_fast_lane(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    srv = ServerProcess(database_url, tmp_path, workers=2, env={"LITMUS_ASSIGN_PORT": str(port)})
    srv.start()
    try:
        deadline = time.monotonic() + 30
        answered = 0
        while answered < 40:
            try:
                # A new connection each time: the kernel spreads them over the workers.
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    assert json.loads(r.read()) == {"status": "ok"}
                    answered += 1
            except OSError:
                assert time.monotonic() < deadline, "the workers' fast lane never answered"
                time.sleep(0.1)
    finally:
        srv.stop()
    assert srv.wait(30) == 0
