"""The fast lane answers as the main listener does, byte for byte (litmus/api/fastlane.py).

Many random assign and batch requests (random ids and attributes, experiments in every state,
overrides, targeting, bad bodies, bad tokens) are sent to both listeners of one app, pipelined
on raw connections; every answer's status, body and meaningful headers must be identical.
The helpers here (raw HTTP/1.1 over sockets) serve tests/api/test_fastlane_http.py too.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import AsyncIterator
from typing import Any

import httptools
import orjson
import pytest
from aiohttp.test_utils import TestClient

from litmus.api.fastlane import FastLane, start_fast_lane
from tests.conftest import ADMIN, ADMIN_SECRET, CLIENT, CLIENT_SECRET, launched, wait_registry


class Answer:
    """One parsed HTTP answer."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""


class _Collector:
    """httptools callbacks collecting every answer on a connection."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.current = Answer()
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode().lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_headers_complete(self) -> None:
        self.current.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        self.answers.append(self.current)
        self.current = Answer()


def request(method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + (body or b"")


async def pipelined(port: int, requests: list[bytes], timeout_s: float = 60.0) -> list[Answer]:
    """Send every request on one connection at once and read their answers, in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    collector = _Collector()

    async def read() -> None:
        while len(collector.answers) < len(requests):
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            collector.parser.feed_data(chunk)

    try:
        task = asyncio.create_task(read())
        writer.write(b"".join(requests))
        await writer.drain()
        await asyncio.wait_for(task, timeout_s)
    finally:
        writer.transport.abort()
    return collector.answers


async def raw(port: int, data: bytes, *, wait_s: float = 3.0, then: list[tuple[float, bytes]]
              | None = None) -> tuple[bytes, bool]:
    """Send raw bytes (then more, each after a pause); read until the server closes or wait_s
    passes after the last send. Returns (what came back, whether the server closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        try:
            writer.write(data)
            await writer.drain()
            for pause, more in then or ():
                await asyncio.sleep(pause)
                writer.write(more)
                await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed while we were still sending: read what it answered
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 16), left)
            except TimeoutError:
                return got, False
            except (ConnectionResetError, BrokenPipeError):
                return got, True
            if not chunk:
                return got, True
            got += chunk
        return got, False
    finally:
        writer.transport.abort()


async def stops_reading(port: int, data: bytes, writes: int = 250) -> bool:
    """Whether a server stops reading a client that writes `data` over and over and never reads
    its answers (a write that cannot drain within 0.5 s) before `writes` writes."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(writes):
            writer.write(data)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                return True  # what it has not answered stays unread
        return False
    finally:
        writer.transport.abort()


class Conn:
    """One keep-alive connection that sends a request and waits for its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.collector = _Collector()

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes, answers: int = 1) -> list[Answer]:
        start = len(self.collector.answers)
        self.writer.write(data)
        await self.writer.drain()
        while len(self.collector.answers) < start + answers:
            chunk = await asyncio.wait_for(self.reader.read(1 << 16), 10)
            assert chunk, "the server closed the connection"
            self.collector.parser.feed_data(chunk)
        return self.collector.answers[start:]

    def close(self) -> None:
        self.writer.transport.abort()


async def one_at_a_time(port: int, requests: list[bytes], connections: int = 8) -> list[Answer]:
    """Each request in a write of its own, the next only after its answer, over a few
    connections: the way a model router talks."""
    out: list[Answer | None] = [None] * len(requests)

    async def worker(k: int) -> None:
        conn = await Conn.open(port)
        try:
            for i in range(k, len(requests), connections):
                [out[i]] = await conn.send(requests[i])
                if out[i].headers.get("connection") == "close":  # type: ignore[union-attr]
                    conn.close()
                    conn = await Conn.open(port)
        finally:
            conn.close()

    await asyncio.gather(*(worker(k) for k in range(connections)))
    assert all(a is not None for a in out)
    return out  # type: ignore[return-value]


def parse_all(data: bytes) -> list[Answer]:
    """Every complete answer in a byte string."""
    c = _Collector()
    c.parser.feed_data(data)
    return c.answers


def headers_of(answer: Answer, names: tuple[str, ...]) -> dict[str, Any]:
    """The named headers of an answer (lower-case names), None where absent."""
    return {n: answer.headers.get(n) for n in names}


@pytest.fixture
async def lane(client: TestClient) -> AsyncIterator[FastLane]:
    """The fast lane of the test client's app, on a free port."""
    assert client.server.port is not None
    fast = await start_fast_lane(client.app, "127.0.0.1", 0, main_port=client.server.port)
    yield fast
    await fast.close()


# -- the random requests ------------------------------------------------------------------------

EXPERIMENTS = ("plain", "targeted", "paused", "stopped", "winner", "draft")
ALPHABET = string.ascii_letters + string.digits + "-_:.@ \"é中\\/"


async def every_state(client: TestClient) -> None:
    """One experiment in each state, with overrides and targeting where they matter."""
    await launched(client, "plain")
    await launched(client, "targeted", ramp=0.6, overrides={"vip": "model_c", "u1": "model_a"},
                   targeting=[{"attribute": "country", "op": "in", "value": ["DE", "FR"]},
                              {"attribute": "age", "op": "gte", "value": 18}])
    for key, action, body in (("paused", "pause", None), ("stopped", "stop", None),
                              ("winner", "stop", {"winner": "model_b"})):
        exp = await launched(client, key)
        resp = await client.post(f"/api/v1/experiments/{exp['id']}/{action}", json=body,
                                 headers=ADMIN)
        assert resp.status == 200, await resp.text()
        await wait_registry(client, key, "paused" if action == "pause" else "stopped")
    resp = await client.post("/api/v1/experiments", headers=ADMIN, json={
        "key": "draft", "name": "d", "description": "d", "owner_team": "t",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}]})
    assert resp.status == 201, await resp.text()
    await wait_registry(client, "draft", "draft")


def _unit(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.75:
        return "".join(rng.choices(ALPHABET, k=rng.randint(1, 24)))
    if r < 0.8:
        return rng.choice(["vip", "u1"])
    return rng.choice(["", "x" * 257, "a\x00b", 42, None, ["u"], {"u": 1}, "x" * 256, True])


def _attributes(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.5:
        return {"country": rng.choice(["DE", "FR", "US", "de", ""]), "age": rng.choice([10, 18, 40, "40"])}
    if r < 0.7:
        return {"country": rng.choice(["DE", "US"])}
    if r < 0.8:
        return None
    return rng.choice([[1], "x", {f"a{i}": i for i in range(65)}, {"ua": "x" * 1025},
                       {"tags": ["ok", "y" * 1025]}, {}])


def _assign_body(rng: random.Random) -> Any:
    body: dict[str, Any] = {"experiment": rng.choice([*EXPERIMENTS, "nope", ""]),
                            "unit_id": _unit(rng)}
    if rng.random() < 0.6:
        attrs = _attributes(rng)
        if attrs is not None or rng.random() < 0.5:
            body["attributes"] = attrs
    if rng.random() < 0.1:
        body["log_exposure"] = rng.choice([True, False, "yes", 1])
    if rng.random() < 0.05:
        body["extra"] = 1
    if rng.random() < 0.05:
        del body["unit_id"]
    if rng.random() < 0.03:
        del body["experiment"]
    return body


def _batch_body(rng: random.Random) -> Any:
    n = rng.choice([0, 1, 2, 5, 20, 100, 1001]) if rng.random() < 0.2 else rng.randint(1, 12)
    if rng.random() < 0.5:
        body: dict[str, Any] = {"experiment": rng.choice([*EXPERIMENTS, "nope"]),
                                "unit_ids": [_unit(rng) if rng.random() < 0.1 else
                                             f"user-{rng.randint(0, 10**6)}" for _ in range(n)]}
        if rng.random() < 0.4:
            body["attributes"] = _attributes(rng)
        if rng.random() < 0.1:
            body["log_exposure"] = rng.choice([True, "no"])
        if rng.random() < 0.05:
            body["unit_ids"] = "u"
        if rng.random() < 0.05:
            body["other"] = 1
        return body
    return {"requests": [_assign_body(rng) for _ in range(n)]} if rng.random() < 0.95 else \
        {"requests": "no", "x": 1}


def _raw_body(rng: random.Random) -> bytes:
    return rng.choice([b"", b"{", b"[]", b"null", b"42", b'"s"', b"{\"experiment\": NaN}",
                       b"\xff\xfe", b"{}" + b" " * 10, b'{"experiment":"plain","unit_id":"u"} x'])


def random_requests(rng: random.Random, n: int) -> list[bytes]:
    """n random requests to the assign routes, with good, bad and missing tokens."""
    out = []
    for _ in range(n):
        r = rng.random()
        path = "/api/v1/assign" if r < 0.6 else "/api/v1/assign/batch"
        if rng.random() < 0.05:
            body = _raw_body(rng)
        else:
            body = orjson.dumps(_assign_body(rng) if path.endswith("assign") else _batch_body(rng))
        t = rng.random()
        headers = (CLIENT if t < 0.85 else ADMIN if t < 0.9 else {} if t < 0.95 else
                   {"Authorization": rng.choice(["Bearer nope", "Basic x", "Bearer ",
                                                 f"bearer {CLIENT_SECRET}",
                                                 f"Bearer admin:{ADMIN_SECRET}"])})
        if rng.random() < 0.02:
            path += "?debug=1"
        out.append(request("POST", path, body, headers))
    return out


COMPARED = ("content-type", "etag", "allow", "www-authenticate", "retry-after")


async def both_agree(client: TestClient, lane: FastLane, requests: list[bytes],
                     chunk: int = 250) -> int:
    """Send the requests to both listeners, `chunk` at a time per connection; assert every
    answer matches. Returns how many were compared."""
    assert client.server.port is not None
    compared = 0
    for start in range(0, len(requests), chunk):
        part = requests[start:start + chunk]
        main, fast = await asyncio.gather(pipelined(client.server.port, part),
                                          pipelined(lane.port, part))
        assert len(main) == len(fast) == len(part)
        for req, a, b in zip(part, main, fast, strict=True):
            assert (a.status, a.body) == (b.status, b.body), req[:600]
            assert headers_of(a, COMPARED) == headers_of(b, COMPARED), req[:600]
            compared += 1
    return compared


async def test_random_requests_get_the_same_answers_from_both_listeners(
    client: TestClient, lane: FastLane
) -> None:
    await every_state(client)
    rng = random.Random(21)
    done = 0
    for _ in range(4):
        done += await both_agree(client, lane, random_requests(rng, 5000))
    assert done == 20_000


@pytest.mark.slow
async def test_a_hundred_thousand_random_requests_agree(client: TestClient, lane: FastLane) -> None:
    await every_state(client)
    rng = random.Random(2021)
    done = 0
    for _ in range(20):
        done += await both_agree(client, lane, random_requests(rng, 5000))
    assert done == 100_000


async def test_requests_one_at_a_time_get_the_same_answers_from_known_heads(
    client: TestClient, lane: FastLane, known_answers: list[int]
) -> None:
    """The way a router talks: one request per write, the same head again and again. Heads the
    lane learnt answer every body (good, bad, other experiments) as the parser's path does."""
    await every_state(client)
    requests = random_requests(random.Random(5), 3000)
    assert client.server.port is not None
    main, fast = await asyncio.gather(one_at_a_time(client.server.port, requests),
                                      one_at_a_time(lane.port, requests))
    for req, a, b in zip(requests, main, fast, strict=True):
        assert (a.status, a.body) == (b.status, b.body), req[:600]
        assert headers_of(a, COMPARED) == headers_of(b, COMPARED), req[:600]
    assert lane.heads
    assert known_answers[0] >= 500, known_answers
    assert {a.status for a in fast} >= {200, 400, 401, 404, 422}


async def test_config_healthz_and_errors_agree(client: TestClient, lane: FastLane) -> None:
    await every_state(client)
    etag_resp = await client.get("/api/v1/config", headers=CLIENT)
    etag = etag_resp.headers["ETag"]
    requests = [
        request("GET", "/api/v1/config", None, CLIENT),
        request("GET", "/api/v1/config", None, {**CLIENT, "If-None-Match": etag}),
        request("GET", "/api/v1/config", None, {**CLIENT, "If-None-Match": f'"x", {etag}'}),
        request("GET", "/api/v1/config", None, {**CLIENT, "If-None-Match": '"stale"'}),
        request("GET", "/api/v1/config", None, {}),
        request("GET", "/healthz"),
        request("GET", "/api/v1/assign", None, CLIENT),
        request("DELETE", "/api/v1/assign/batch", None, CLIENT),
        request("POST", "/api/v1/config", b"{}", CLIENT),
    ]
    main, fast = await asyncio.gather(pipelined(client.server.port or 0, requests),
                                      pipelined(lane.port, requests))
    for req, a, b in zip(requests, main, fast, strict=True):
        assert (a.status, a.body) == (b.status, b.body), req
        assert headers_of(a, COMPARED) == headers_of(b, COMPARED), req
    assert [a.status for a in fast] == [200, 304, 304, 200, 401, 200, 405, 405, 405]
    # HEAD: the GET answer's head, no body (a response parser cannot tell, so read it raw).
    head = request("HEAD", "/api/v1/config", None, {**CLIENT, "Connection": "close"})
    main_raw, _ = await raw(client.server.port or 0, head)
    fast_raw, _ = await raw(lane.port, head)
    assert main_raw.startswith(b"HTTP/1.1 200 OK\r\n") and fast_raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert main_raw.endswith(b"\r\n\r\n") and fast_raw.endswith(b"\r\n\r\n")


async def test_request_ids_metrics_and_exposures_are_shared(client: TestClient, lane: FastLane,
                                                            db: Any) -> None:
    await launched(client, "plain")
    body = orjson.dumps({"experiment": "plain", "unit_id": "someone", "log_exposure": True})
    given = {**CLIENT, "X-Request-Id": "router-abc.1"}
    [a, b] = await pipelined(lane.port, [request("POST", "/api/v1/assign", body, given),
                                         request("POST", "/api/v1/assign", body, CLIENT)])
    assert a.headers["x-request-id"] == "router-abc.1"
    assert b.headers["x-request-id"] != a.headers["x-request-id"]
    text = await (await client.get("/metrics")).text()
    assert 'route="client.assign",status="200"' in text.replace(" ", "")
    # The exposures went to the same ingestion as the main listener's.
    for _ in range(100):
        n = await db.fetchval("SELECT count(*) FROM exposures WHERE unit_id = 'someone'")
        if n == 2:
            break
        await asyncio.sleep(0.05)
    assert n == 2


def test_the_fast_lane_port_setting() -> None:
    from litmus.settings import Settings, SettingsError

    assert Settings.from_env({}).fast_lane_port == 8001
    assert Settings.from_env({"LITMUS_PORT": "9000"}).fast_lane_port == 9001
    assert Settings.from_env({"LITMUS_ASSIGN_PORT": "7000"}).fast_lane_port == 7000
    assert Settings.from_env({"LITMUS_ASSIGN_PORT": "0"}).fast_lane_port is None
    assert Settings.from_env({"LITMUS_PORT": "0"}).fast_lane_port is None
    with pytest.raises(SettingsError, match="LITMUS_ASSIGN_PORT"):
        Settings.from_env({"LITMUS_ASSIGN_PORT": "fast"})
