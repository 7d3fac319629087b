"""The main port's front (litmus/api/fastlane.py, "the main port's front"): a read holding only
whole requests for the router routes is answered by the fast lane's code; anything else goes to
aiohttp, which keeps the connection from then on. Either way the answers are aiohttp's own,
byte for byte, and nothing is answered twice or lost when the two hand over.

Answers of the front carry `Connection: keep-alive` (aiohttp's HTTP/1.1 answers do not say it),
which lets these tests tell who answered."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from litmus.api.fastlane import FastLane, FrontHandler, FrontSite
from litmus.app import create_app
from litmus.keys import DRAIN
from tests.api.test_fastlane import (
    COMPARED,
    Answer,
    Conn,
    every_state,
    headers_of,
    one_at_a_time,
    pipelined,
    random_requests,
    request,
    stops_reading,
)
from tests.conftest import ADMIN, ADMIN_SECRET, CLIENT, launched, make_settings
from tests.servers import ServerProcess

# The usual assign request of these tests (experiment "plain", which each test launches).
ASSIGN_U1 = request("POST", "/api/v1/assign",
                    orjson.dumps({"experiment": "plain", "unit_id": "u1"}), CLIENT)


@contextlib.asynccontextmanager
async def front_of(client: TestClient) -> AsyncIterator[int]:
    """A front on a test client's own app and aiohttp server, on a free port."""
    runner = client.server.runner
    assert isinstance(runner, web.AppRunner) and client.server.port is not None
    lane = FastLane(client.app, client.server.port)
    lane.start_clock()
    site = FrontSite(runner, lane, "127.0.0.1", 0, reuse_port=False)
    await site.start()
    assert site._server is not None
    try:
        yield int(site._server.sockets[0].getsockname()[1])
    finally:
        await site.stop()
        await lane.close()


@pytest.fixture
async def front(client: TestClient) -> AsyncIterator[int]:
    """The test client's front."""
    async with front_of(client) as port:
        yield port


def by_front(answer: Answer) -> bool:
    return answer.headers.get("connection") == "keep-alive"


async def test_router_requests_get_aiohttps_answers_from_the_front(
    client: TestClient, front: int, known_answers: list[int]
) -> None:
    await every_state(client)
    # Without the few with a query string: the front serves exact paths, so one of those would
    # hand its connection to aiohttp for good (test_another_route_... shows that).
    requests = [r for r in random_requests(random.Random(7), 3000) if b"?" not in r[:40]]
    assert client.server.port is not None
    main, fronted = await asyncio.gather(one_at_a_time(client.server.port, requests),
                                         one_at_a_time(front, requests))
    for req, a, b in zip(requests, main, fronted, strict=True):
        assert (a.status, a.body) == (b.status, b.body), req[:600]
        assert headers_of(a, COMPARED) == headers_of(b, COMPARED), req[:600]
    served = sum(map(by_front, fronted))
    # Every request came in a read of its own, so the front answered (nearly) all of them;
    # the plain aiohttp server none.
    assert served >= 0.95 * len(requests), (served, len(requests))
    assert not any(map(by_front, main))
    # Many of them had a head the lane knew: the front took those without a parser.
    assert known_answers[0] >= 500, known_answers


async def test_pipelined_random_requests_agree_across_hand_overs(client: TestClient,
                                                                 front: int) -> None:
    """250 requests per write, read back in whatever pieces the socket makes of them: requests
    straddle reads, and a query string hands a connection over in the middle of a read."""
    await every_state(client)
    requests = random_requests(random.Random(11), 3000)
    assert client.server.port is not None
    handed_over = 0
    for start in range(0, len(requests), 250):
        part = requests[start:start + 250]
        main, fronted = await asyncio.gather(pipelined(client.server.port, part),
                                             pipelined(front, part))
        assert len(main) == len(fronted) == len(part)
        for req, a, b in zip(part, main, fronted, strict=True):
            assert (a.status, a.body) == (b.status, b.body), req[:600]
            assert headers_of(a, COMPARED) == headers_of(b, COMPARED), req[:600]
        # The front answered the start of the connection, aiohttp the rest after a hand-over.
        if by_front(fronted[0]) and not by_front(fronted[-1]):
            handed_over += 1
    assert handed_over >= 3, handed_over


async def test_another_route_hands_the_connection_to_aiohttp(client: TestClient, front: int,
                                                            known_answers: list[int]) -> None:
    await launched(client, "plain")
    listing = request("GET", "/api/v1/experiments", None, ADMIN)
    conn = await Conn.open(front)
    try:
        answers = [(await conn.send(ASSIGN_U1))[0] for _ in range(3)]
        # The first taught the lane its head; the next two were known, without a parser.
        assert known_answers == [2]
        [listed] = await conn.send(listing)
        [after] = await conn.send(ASSIGN_U1)
    finally:
        conn.close()
    assert [a.status for a in (*answers, listed, after)] == [200] * 5
    assert orjson.loads(listed.body)["experiments"][0]["key"] == "plain"
    assert after.body == answers[0].body
    # The front answered until the listing; aiohttp from then on, without known heads.
    assert [by_front(a) for a in (*answers, listed, after)] == [True, True, True, False, False]
    assert known_answers == [2]


async def test_a_known_head_on_the_front_drains(client: TestClient, front: int,
                                                known_answers: list[int]) -> None:
    await launched(client, "plain")
    conn = await Conn.open(front)
    try:
        [a] = await conn.send(ASSIGN_U1)
        client.app[DRAIN].begin()
        [b] = await conn.send(ASSIGN_U1)
    finally:
        conn.close()
    assert a.status == 200 and b.status == 503 and b.headers["connection"] == "close"
    assert known_answers == [0]


async def test_pipelined_mixed_requests_are_each_answered_once_in_order(
    client: TestClient, front: int, db: object
) -> None:
    await launched(client, "plain")
    logged = request("POST", "/api/v1/assign", orjson.dumps(
        {"experiment": "plain", "unit_id": "once", "log_exposure": True}), CLIENT)
    listing = request("GET", "/api/v1/experiments", None, ADMIN)
    conn = await Conn.open(front)
    try:
        answers = await conn.send(logged + listing + logged, answers=3)
    finally:
        conn.close()
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[0].body == answers[2].body
    assert orjson.loads(answers[0].body)["unit_id"] == "once"
    assert "experiments" in orjson.loads(answers[1].body)
    # The front answered the first; the listing and all after it were aiohttp's.
    assert [by_front(a) for a in answers] == [True, False, False]
    # Each assign was answered once: two exposures logged, not three or four.
    n = 0
    for _ in range(100):
        n = await db.fetchval("SELECT count(*) FROM exposures WHERE unit_id = 'once'")
        if n >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert await db.fetchval("SELECT count(*) FROM exposures WHERE unit_id = 'once'") == 2


async def test_a_hand_over_inside_a_read_cuts_at_the_request_boundary(
    client: TestClient, front: int
) -> None:
    """Requests pipelined in pieces that straddle reads: a hand-over in the middle of one
    still gives aiohttp the other route's request from its first byte."""
    await launched(client, "plain")
    assigns = [request("POST", "/api/v1/assign",
                       orjson.dumps({"experiment": "plain", "unit_id": f"u{i}"}), CLIENT)
               for i in range(5)]
    listing = request("GET", "/api/v1/experiments?limit=1", None, ADMIN)
    stream = b"".join(assigns[:3]) + listing + b"".join(assigns[3:])
    cuts = [len(assigns[0]) // 2, len(assigns[0]) + len(assigns[1]) + 7,
            sum(map(len, assigns[:3])) + 5, len(stream) - 3]
    conn = await Conn.open(front)
    try:
        last = 0
        for cut in cuts:
            conn.writer.write(stream[last:cut])
            await conn.writer.drain()
            await asyncio.sleep(0.05)
            last = cut
        answers = await conn.send(stream[last:], answers=6)
    finally:
        conn.close()
    assert [a.status for a in answers] == [200] * 6
    units = [orjson.loads(a.body).get("unit_id") for a in answers]
    assert units == ["u0", "u1", "u2", None, "u3", "u4"]
    assert [by_front(a) for a in answers] == [True, True, True, False, False, False]


async def test_a_stalled_body_on_the_front_gets_408(database_url: str, tmp_path: Path,
                                                   aiohttp_client: Any) -> None:
    """The front shares the fast lane's timeouts: a body that stops arriving is answered 408."""
    small: TestClient = await aiohttp_client(create_app(make_settings(
        database_url, tmp_path, idle_timeout_s=0.5, body_timeout_s=0.5)))
    await launched(small, "plain")
    whole = request("POST", "/api/v1/assign",
                    orjson.dumps({"experiment": "plain", "unit_id": "u1"}), CLIENT)
    async with front_of(small) as port:
        conn = await Conn.open(port)
        try:
            [first] = await conn.send(whole)
            started = time.monotonic()
            [late] = await conn.send(whole[:-5])
            waited = time.monotonic() - started
        finally:
            conn.close()
    assert first.status == 200 and late.status == 408, late.body
    assert waited < 5, waited


async def test_a_request_split_across_reads_stays_on_the_front(client: TestClient,
                                                               front: int) -> None:
    await launched(client, "plain")
    whole = request("POST", "/api/v1/assign",
                    orjson.dumps({"experiment": "plain", "unit_id": "u1"}), CLIENT)
    conn = await Conn.open(front)
    try:
        [fronted] = await conn.send(whole)
        conn.writer.write(whole[:40])
        await conn.writer.drain()
        await asyncio.sleep(0.05)
        [split] = await conn.send(whole[40:])
        [after] = await conn.send(whole)
    finally:
        conn.close()
    assert (fronted.status, split.status, after.status) == (200, 200, 200)
    assert fronted.body == split.body == after.body
    assert [by_front(a) for a in (fronted, split, after)] == [True, True, True]


async def test_a_malformed_request_is_aiohttps_to_answer(client: TestClient, front: int) -> None:
    conn = await Conn.open(front)
    try:
        [bad] = await conn.send(b"POST /api/v1/assign HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    finally:
        conn.close()
    assert bad.status == 400 and not by_front(bad)


def test_an_idle_connection_after_front_answers_is_closed(database_url: str,
                                                          tmp_path: Path) -> None:
    """aiohttp's idle timer counts the front's answers as activity and still closes an idle
    connection once LITMUS_IDLE_TIMEOUT_S has passed without one."""
    server = ServerProcess(database_url, tmp_path / "srv",
                           env={"LITMUS_IDLE_TIMEOUT_S": "1"}).start()
    body = orjson.dumps({"experiment": "nothing", "unit_id": "u"})
    assign = request("POST", "/api/v1/assign", body, {"Authorization": f"Bearer {ADMIN_SECRET}"})

    async def exchange() -> tuple[list[bool], float]:
        conn = await Conn.open(server.port)
        fronted = []
        try:
            # Busy for longer than the timeout: answers keep the connection open.
            for _ in range(8):
                [a] = await conn.send(assign)
                assert a.status == 404
                fronted.append(by_front(a))
                await asyncio.sleep(0.25)
            started = time.monotonic()
            closed = await asyncio.wait_for(conn.reader.read(1), 10)
            assert closed == b""
            return fronted, time.monotonic() - started
        finally:
            conn.close()

    try:
        fronted, idle_after = asyncio.run(exchange())
    finally:
        server.stop()
    assert all(fronted)
    assert 0.5 <= idle_after <= 4.0, idle_after


def test_a_stalled_body_gets_408_when_due_not_the_idle_close(database_url: str,
                                                              tmp_path: Path) -> None:
    """While the front has a connection, aiohttp's idle timer is off: a body that stops
    arriving is answered 408 after LITMUS_BODY_TIMEOUT_S, as on plain aiohttp, rather than cut
    off after the (shorter) LITMUS_IDLE_TIMEOUT_S."""
    server = ServerProcess(database_url, tmp_path / "srv", env={
        "LITMUS_IDLE_TIMEOUT_S": "1", "LITMUS_BODY_TIMEOUT_S": "3"}).start()
    body = orjson.dumps({"experiment": "nothing", "unit_id": "u"})
    assign = request("POST", "/api/v1/assign", body, {"Authorization": f"Bearer {ADMIN_SECRET}"})

    async def stall() -> tuple[list[Answer], float]:
        conn = await Conn.open(server.port)
        try:
            [first] = await conn.send(assign)
            assert by_front(first)
            started = time.monotonic()
            [late] = await conn.send(assign[:-5])
            return [first, late], time.monotonic() - started
        finally:
            conn.close()

    try:
        (first, late), waited = asyncio.run(stall())
    finally:
        server.stop()
    assert (first.status, late.status) == (404, 408), late.body
    assert 2.5 <= waited <= 5.0, waited


async def test_a_client_that_does_not_read_is_no_longer_read(client: TestClient,
                                                             front: int) -> None:
    await launched(client, "plain")
    many = request("POST", "/api/v1/assign",
                   orjson.dumps({"experiment": "plain", "unit_id": "flood"}), CLIENT) * 2000
    assert await stops_reading(front, many), "the front kept reading a client that never read"


async def test_an_endless_request_goes_to_aiohttp_and_the_front_keeps_little(
    client: TestClient, front: int
) -> None:
    """A request that never completes (an endless chunk extension) is aiohttp's once it passes
    the front's 1 MiB, so the front holds no more than that of it."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", front)
    try:
        writer.write(b"POST /api/v1/assign HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n1;")
        for _ in range(3):
            writer.write(b"a" * (1 << 20))
            await writer.drain()
        await asyncio.sleep(0.2)
        server = client.server.runner.server
        assert server is not None
        handlers = [h for h in server.connections if isinstance(h, FrontHandler)]
        assert handlers, "no front connection"
        assert all(h._scout is None and h._pending_len == 0 for h in handlers)
    finally:
        writer.transport.abort()


async def test_a_long_head_for_another_route_is_aiohttps(client: TestClient, front: int) -> None:
    """98 KB of headers in pieces: the front does not apply its own head limit to a request
    it has not yet seen whole; aiohttp answers it."""
    pads = {f"X-Pad-{i}": "p" * 7000 for i in range(14)}
    data = request("GET", "/api/v1/experiments?limit=1", None, {**ADMIN, **pads})
    conn = await Conn.open(front)
    try:
        for start in range(0, len(data) - 7100, 7100):
            conn.writer.write(data[start:start + 7100])
            await conn.writer.drain()
            await asyncio.sleep(0.01)
        [answer] = await conn.send(data[start + 7100:])
    finally:
        conn.close()
    assert answer.status == 200 and not by_front(answer)


async def test_upgrades_and_http_10_are_aiohttps(client: TestClient, front: int) -> None:
    await launched(client, "plain")
    body = orjson.dumps({"experiment": "plain", "unit_id": "u1"})
    h2c = request("POST", "/api/v1/assign", body, {**CLIENT, "Connection": "Upgrade, HTTP2-Settings",
                                                   "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__"})
    conn = await Conn.open(front)
    try:
        [upgraded] = await conn.send(h2c)
    finally:
        conn.close()
    assert upgraded.status == 200 and not by_front(upgraded)
    old = request("POST", "/api/v1/assign", body, CLIENT).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", front)
    try:
        writer.write(old)
        got = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.transport.abort()
    assert got.startswith(b"HTTP/1.0 200 OK\r\n"), got[:100]
