"""HTTP edge cases against the fast lane over raw sockets: pipelining, split packets, oversized
heads, slow clients, bad chunked encoding, HTTP/1.0, Connection: close, Expect: 100-continue,
the body limit and the drain. Each must end in an answer or a close, never a hang, and the
server must go on serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from litmus.api.fastlane import FastLane, start_fast_lane
from litmus.app import create_app
from litmus.keys import DRAIN
from tests.api.test_fastlane import (
    Conn,
    parse_all,
    pipelined,
    raw,
    request,
    stops_reading,
)
from tests.conftest import CLIENT, CLIENT_SECRET, launched, make_settings

LIMIT = 4096
AUTH = f"Authorization: Bearer {CLIENT_SECRET}\r\n".encode()


@pytest.fixture
async def small(database_url: str, tmp_path: Path, aiohttp_client: Any) -> TestClient:
    """An app with short timeouts and a small body limit."""
    settings = make_settings(database_url, tmp_path, idle_timeout_s=0.5, body_timeout_s=0.5,
                             max_body_bytes=LIMIT)
    client: TestClient = await aiohttp_client(create_app(settings))
    await launched(client, "plain")
    return client


@pytest.fixture
async def lane(small: TestClient) -> AsyncIterator[FastLane]:
    """The small app's fast lane."""
    fast = await start_fast_lane(small.app, "127.0.0.1", 0, main_port=small.server.port or 0)
    yield fast
    await fast.close()


def assign_req(unit: str, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    body = orjson.dumps({"experiment": "plain", "unit_id": unit})
    return (b"POST /api/v1/assign HTTP/" + version + b"\r\nHost: t\r\n" + AUTH + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def still_serving(lane: FastLane) -> None:
    [a] = await pipelined(lane.port, [assign_req("after")])
    assert a.status == 200 and orjson.loads(a.body)["unit_id"] == "after"


async def test_pipelined_requests_are_answered_in_order(lane: FastLane) -> None:
    answers = await pipelined(lane.port, [assign_req(f"u{i}") for i in range(200)])
    assert [orjson.loads(a.body)["unit_id"] for a in answers] == [f"u{i}" for i in range(200)]
    assert all(a.status == 200 and a.headers["connection"] == "keep-alive" for a in answers)


async def test_a_request_split_into_tiny_packets_is_answered(lane: FastLane) -> None:
    data = assign_req("split")
    pieces = [(0.002, data[i:i + 3]) for i in range(3, len(data), 3)]
    got, _ = await raw(lane.port, data[:3], then=pieces, wait_s=1.0)
    [a] = parse_all(got)
    assert a.status == 200 and orjson.loads(a.body)["unit_id"] == "split"


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
    b"GET /healthz?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(4000)) + b"\r\n",
])
async def test_an_oversized_head_is_refused_and_closed(lane: FastLane, head: bytes) -> None:
    got, closed = await raw(lane.port, head)
    assert closed
    [a] = parse_all(got)
    assert a.status == 431 and b"request_header_fields_too_large" in a.body
    await still_serving(lane)


async def test_an_endless_head_is_cut_off(lane: FastLane) -> None:
    pieces = [(0.0, b"X-More: " + b"b" * 30_000 + b"\r\n") for _ in range(5)]
    got, closed = await raw(lane.port, b"GET /healthz HTTP/1.1\r\n", then=pieces)
    assert closed and parse_all(got)[0].status == 431


async def test_slowloris_heads_and_idle_connections_are_closed(lane: FastLane) -> None:
    # One byte every 0.2 s: never a complete head; the idle timeout (0.5 s) closes it.
    slow = [(0.2, b"X") for _ in range(20)]
    got, closed = await raw(lane.port, b"GET /healthz HTTP/1.1\r\nX-Slow: ", then=slow, wait_s=3)
    assert closed and got == b""
    got, closed = await raw(lane.port, b"", wait_s=3)
    assert closed and got == b""
    await still_serving(lane)


async def test_a_body_that_does_not_arrive_gets_408(lane: FastLane, small: TestClient) -> None:
    head = b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH + b"Content-Length: 100\r\n\r\n{"
    fast, fast_closed = await raw(lane.port, head, wait_s=3)
    main, main_closed = await raw(small.server.port or 0, head, wait_s=3)
    assert fast_closed and main_closed
    [a], [b] = parse_all(fast), parse_all(main)
    assert a.status == b.status == 408 and a.body == b.body


async def test_bad_chunked_encoding_is_400_and_closed(lane: FastLane) -> None:
    head = b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n"
    got, closed = await raw(lane.port, head + b"zz\r\nxx\r\n0\r\n\r\n")
    assert closed and parse_all(got)[0].status == 400
    body = orjson.dumps({"experiment": "plain", "unit_id": "chunky"})
    good = head + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    [a] = await pipelined(lane.port, [good])
    assert a.status == 200 and orjson.loads(a.body)["unit_id"] == "chunky"


async def test_malformed_request_lines_are_400_and_closed(lane: FastLane) -> None:
    for junk in (b"HELLO\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
                 b"POST /api/v1/assign HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"):
        got, closed = await raw(lane.port, junk)
        assert closed, junk
        [a] = parse_all(got)
        assert a.status == 400 and orjson.loads(a.body)["error"]["code"] == "bad_request", junk
    await still_serving(lane)


async def test_http_10_closes_unless_asked_to_keep_alive(lane: FastLane) -> None:
    got, closed = await raw(lane.port, assign_req("old", version=b"1.0"))
    assert closed and parse_all(got)[0].status == 200
    got, closed = await raw(lane.port, assign_req("kept", b"Connection: keep-alive\r\n", b"1.0"),
                            wait_s=0.3)
    assert not closed
    [a] = parse_all(got)
    assert a.status == 200 and a.headers["connection"] == "keep-alive"


async def test_connection_close_is_honoured(lane: FastLane) -> None:
    got, closed = await raw(lane.port, assign_req("bye", b"Connection: close\r\n")
                            + assign_req("never"))
    assert closed
    [a] = parse_all(got)
    assert a.headers["connection"] == "close" and orjson.loads(a.body)["unit_id"] == "bye"


async def test_expect_100_continue(lane: FastLane) -> None:
    body = orjson.dumps({"experiment": "plain", "unit_id": "patient"})
    head = (b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH + b"Expect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    got, _ = await raw(lane.port, head, then=[(0.2, body)], wait_s=0.5)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert b'"unit_id":"patient"' in got
    # Too large: refused at once, without the 100 and without reading the body.
    head = (b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH + b"Expect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % (LIMIT + 1))
    got, closed = await raw(lane.port, head)
    assert closed and got.startswith(b"HTTP/1.1 413 ")


async def test_the_body_limit(lane: FastLane, small: TestClient) -> None:
    big = b'{"experiment":"plain","unit_id":"' + b"x" * LIMIT + b'"}'
    declared = b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH + b"Content-Length: %d\r\n\r\n" % len(big)
    fast, closed = await raw(lane.port, declared)
    main, _ = await raw(small.server.port or 0, declared)
    assert closed
    [a], [b] = parse_all(fast), parse_all(main)
    assert (a.status, a.body) == (b.status, b.body) and a.status == 413
    chunked = (b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH
               + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%b\r\n0\r\n\r\n" % (len(big), big))
    got, closed = await raw(lane.port, chunked)
    assert closed and parse_all(got)[0].status == 413
    await still_serving(lane)


async def test_an_upgrade_request_is_answered_then_closed(lane: FastLane) -> None:
    got, closed = await raw(lane.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\n")
    assert closed and len(parse_all(got)) <= 1


async def test_other_routes_get_a_404_naming_the_main_port(lane: FastLane, small: TestClient) -> None:
    [a, b] = await pipelined(lane.port, [request("GET", "/api/v1/experiments", None, CLIENT),
                                         request("GET", "/metrics")])
    for ans in (a, b):
        err = orjson.loads(ans.body)["error"]
        assert ans.status == 404 and err["main_port"] == small.server.port
        assert str(small.server.port) in err["message"]


async def test_a_client_that_does_not_read_its_answers_does_not_grow_the_server(lane: FastLane) -> None:
    assert await stops_reading(lane.port, assign_req("flood") * 2000), \
        "the server kept reading a client that never read its answers"
    await still_serving(lane)


async def test_while_draining_answers_are_503_and_close(lane: FastLane, small: TestClient) -> None:
    await still_serving(lane)
    assert lane.heads  # the request below has a known head: known heads drain too
    small.app[DRAIN].begin()
    fast, fast_closed = await raw(lane.port, assign_req("late"))
    main, main_closed = await raw(small.server.port or 0, assign_req("late"))
    assert fast_closed and main_closed
    [a], [b] = parse_all(fast), parse_all(main)
    assert (a.status, a.body) == (b.status, b.body) and a.status == 503
    assert a.headers["retry-after"] == b.headers["retry-after"]


async def test_a_client_that_leaves_mid_body_is_counted_as_499(lane: FastLane,
                                                                small: TestClient) -> None:
    """As on the main listener: a request whose client left before its body came is a 499."""

    async def count() -> float:
        text = await (await small.get("/metrics")).text()
        prefix = 'litmus_http_requests_total{route="client.assign",status="499"} '
        return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(prefix))

    before = await count()
    _, writer = await asyncio.open_connection("127.0.0.1", lane.port)
    writer.write(b"POST /api/v1/assign HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ex")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()
    for _ in range(50):
        if await count() == before + 1:
            break
        await asyncio.sleep(0.05)
    assert await count() == before + 1


# -- known heads (litmus/api/fastlane.py, "Known heads") -------------------------------------------

def with_head(body: bytes, extra: bytes = b"", path: bytes = b"/api/v1/assign") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n" + AUTH + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


# Bodies of one length: the same head for each.
SAME_LENGTH = [b'{"experiment":"plain","unit_id":"aaaa"}', b'{"experiment":"plain","unit_id":"bbbb"}',
               b'{"experiment":"plain","unit_id":"aaaa"]', b'{"experiment":"plain","unit_iX":"aaaa"}',
               b'{"experiment":"plaiX","unit_id":"aaaa"}', b'{"experiment":"plain","unit_id":123456}',
               b'{"experiment":"plain","unit_id":"cccc"}']
assert len({len(b) for b in SAME_LENGTH}) == 1


async def test_a_known_head_answers_every_body_as_the_parser_would(
    lane: FastLane, small: TestClient, known_answers: list[int]
) -> None:
    teacher = await Conn.open(lane.port)
    try:
        [first] = await teacher.send(with_head(SAME_LENGTH[0]))
    finally:
        teacher.close()
    assert first.status == 200 and len(lane.heads) == 1 and known_answers == [0]
    # A new connection: its first request already has a known head, and it stays open after
    # the errors, as the main listener's does.
    fast, main = await Conn.open(lane.port), await Conn.open(small.server.port or 0)
    ids = set()
    try:
        for body in SAME_LENGTH:
            req = with_head(body)
            [a], [b] = await fast.send(req), await main.send(req)
            assert (a.status, a.body) == (b.status, b.body), body
            assert a.headers["connection"] == "keep-alive"
            ids.add(a.headers["x-request-id"])
    finally:
        fast.close()
        main.close()
    assert known_answers == [len(SAME_LENGTH)]
    # Each answer got a request id of its own, as the parser's path gives.
    assert len(ids) == len(SAME_LENGTH) and first.headers["x-request-id"] not in ids


@pytest.mark.parametrize("req", [
    with_head(SAME_LENGTH[0], b"X-Trace: 1\r\n"),
    with_head(SAME_LENGTH[0], b"User-Agent: " + b"u" * 4096 + b"\r\n"),
    with_head(SAME_LENGTH[0], b"Expect: 100-continue\r\n"),
    with_head(SAME_LENGTH[0], b"Connection: close\r\n"),
    with_head(SAME_LENGTH[0], path=b"/api/v1/assign?debug=1"),
    b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH + b"Content-length: 39\r\n\r\n"
    + SAME_LENGTH[0],
    with_head(SAME_LENGTH[0], b"X-Request-Id: router-7\r\n"),
    assign_req("aaaa", b"Connection: keep-alive\r\n", version=b"1.0"),
    b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%b\r\n0\r\n\r\n" % (len(SAME_LENGTH[0]), SAME_LENGTH[0]),
    b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\nContent-Length: 39\r\n\r\n" + SAME_LENGTH[0],
], ids=["other-header", "long-head", "expect", "close", "query", "unusual-spelling", "request-id",
        "http-1.0", "chunked", "no-token"])
async def test_only_plain_heads_of_usual_answers_are_kept(lane: FastLane, req: bytes) -> None:
    got, _ = await raw(lane.port, req, wait_s=0.5)
    assert parse_all(got), got
    assert lane.heads == {}
    await still_serving(lane)
    assert len(lane.heads) == 1


async def test_pipelined_and_split_reads_of_a_known_head_go_through_the_parser(
    lane: FastLane, known_answers: list[int]
) -> None:
    reqs = [with_head(b) for b in SAME_LENGTH]
    conn = await Conn.open(lane.port)
    try:
        [a] = await conn.send(reqs[0])
        assert a.status == 200 and len(lane.heads) == 1
        # Three in one write, then one with the start of the next, then the rest of it.
        answers = await conn.send(reqs[0] + reqs[1] + reqs[6], answers=3)
        assert [orjson.loads(x.body)["unit_id"] for x in answers] == ["aaaa", "bbbb", "cccc"]
        answers = await conn.send(reqs[1] + reqs[6][:20], answers=1)
        answers += await conn.send(reqs[6][20:], answers=1)
        assert [orjson.loads(x.body)["unit_id"] for x in answers] == ["bbbb", "cccc"]
        assert known_answers == [0]  # none of those reads was one whole request
        # After all that the parser is at a request boundary again: a known read is taken.
        before = known_answers[0]
        [a] = await conn.send(reqs[1])
        assert orjson.loads(a.body)["unit_id"] == "bbbb" and known_answers[0] == before + 1
    finally:
        conn.close()
