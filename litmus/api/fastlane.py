"""The fast lane: a second listener for the routes model routers call on every request.

`POST /api/v1/assign`, `POST /api/v1/assign/batch`, `GET /api/v1/config` (ETag/304) and
`GET /healthz`, served by an `asyncio.Protocol` that parses HTTP/1.1 with httptools (llhttp)
and answers from the data_received callback: no task, no request or response object, no
middleware chain per request. Everything else gets a JSON 404 naming the main port.

It is part of the same process as the main listener and shares everything with it: the
registry, the tokens, the request and assignment metrics, the exposure hook (ingestion) and
the drain. The answers' bodies and statuses come from the same functions as the main
listener's (`litmus.api.assign`, `litmus.api.middleware.authenticate`,
`litmus.api.requests`), so the two answer byte for byte alike; the checks happen in the same
order (drain, body limit, route and method, token, body).

HTTP handling: keep-alive and pipelining (the answers to everything one read brought are
written at once, in order), `Expect: 100-continue`, the body limit (413 and close), a head
that does not complete within LITMUS_IDLE_TIMEOUT_S closes the connection, a body that does not
arrive within LITMUS_BODY_TIMEOUT_S gets 408 and a close, malformed HTTP 400 and a close.

Known heads: a model router sends the same head with every request (only the body changes). A
read that is one whole request, whose head is byte for byte that of an earlier request the
parser read and answered with the usual 200 (the route's exact path, HTTP/1.1 kept alive, only
the usual headers, a Content-Length, no X-Request-Id), is answered without parsing it again: the
same bytes parse the same way, and what the head decided (route, token, body limit) is fixed
for the life of the process. Anything else, a pipelined read included, goes through the parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from email.utils import formatdate
from typing import cast

import httptools
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from litmus import metrics
from litmus.api import assign as answers
from litmus.api import observability
from litmus.api.middleware import authenticate
from litmus.api.requests import error_body, loads_body
from litmus.errors import (
    BadRequest,
    BodyTooLarge,
    LitmusError,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    ShuttingDown,
)
from litmus.keys import AUTH, DRAIN, REGISTRY, SETTINGS
from litmus.logs import REQUEST_ID

log = logging.getLogger("litmus.fastlane")

# Past these a request head is refused with 431 (aiohttp's own limits are 8190 per line).
MAX_URL_BYTES = 8190
MAX_HEAD_BYTES = 32_768
# A head still incomplete after this many bytes beyond the read it began in is refused too.
MAX_HEAD_PENDING = 65_536
BACKLOG = 1024

_perf = time.perf_counter
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Payload Too Large", 422: "Unprocessable Content",
            431: "Request Header Fields Too Large", 499: "Client Closed Request",
            500: "Internal Server Error", 503: "Service Unavailable"}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason.encode())
                 for code, reason in _REASONS.items()}
_KEEP = b"Connection: keep-alive\r\n\r\n"
_CLOSE = b"Connection: close\r\n\r\n"
_INTERNAL = b'{"error":{"code":"internal_error","message":"internal server error"}}'
_HEALTHY = b'{"status":"ok"}'
# Header names the fast lane reads, lower-cased, to a slot number.
_AUTHORIZATION, _CONTENT_LENGTH, _EXPECT, _IF_NONE_MATCH, _REQUEST_ID = range(5)
_WANTED = {b"authorization": _AUTHORIZATION, b"content-length": _CONTENT_LENGTH,
           b"expect": _EXPECT, b"if-none-match": _IF_NONE_MATCH, b"x-request-id": _REQUEST_ID}
# The usual spellings, wanted or not (-1), looked up before any lower-casing.
_USUAL = {**_WANTED, b"Authorization": _AUTHORIZATION, b"Content-Length": _CONTENT_LENGTH,
          b"Expect": _EXPECT, b"If-None-Match": _IF_NONE_MATCH, b"X-Request-Id": _REQUEST_ID,
          b"X-Request-ID": _REQUEST_ID, b"Host": -1, b"host": -1, b"Content-Type": -1,
          b"content-type": -1, b"User-Agent": -1, b"user-agent": -1, b"Accept": -1,
          b"accept": -1, b"Connection": -1, b"connection": -1, b"Accept-Encoding": -1,
          b"accept-encoding": -1}
_HEAD, _BODY = 0, 1
# The usual answer's head: 200, JSON, kept alive (Content-Length, Date, X-Request-Id to fill).
_OK_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b"
            b"X-Request-Id: %b\r\nConnection: keep-alive\r\n\r\n")
# Known heads (see _Known) a lane keeps at most, past which the table starts over, and the
# longest head kept (a router's is a few hundred bytes): a few MiB at most in all.
KNOWN_HEADS = 512
KNOWN_HEAD_BYTES = 4096
_END = b"\r\n\r\n"
# An answer body this long is written after its head rather than copied into one string.
_BIG = 16_384
_observe = metrics.REQUESTS.observe
_BOUNDS = metrics.REQUESTS.bounds
_loads = orjson.loads
CLIENT_CLOSED = observability.CLIENT_CLOSED
_SANE_ID = observability.SANE_ID_BYTES.fullmatch
_SLOW_S = observability.SLOW_S
_new_rid = observability.new_request_id_bytes


class HeadTooLarge(LitmusError):
    """A request line or header block past the fast lane's limits; the connection closes."""

    status, code = 431, "request_header_fields_too_large"
    close = True


class Malformed(BadRequest):
    """HTTP the parser refuses: nothing after it can be trusted, so the connection closes."""

    close = True


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Status\r\n" % status


class _Route:
    """One served path: its method, route name (metrics), whether it needs a token, and the
    function that answers it: (connection, method, body) -> (status, body, extra header lines)."""

    __slots__ = ("allowed", "answer", "method", "name", "ok", "token")

    def __init__(self, method: bytes, name: str, token: bool,
                 answer: Callable[[_Connection, bytes], tuple[int, bytes, bytes]]) -> None:
        self.method = method
        self.name = name
        self.token = token
        self.answer = answer
        # The latency histogram of its 200s, once the first is answered (_Connection._ok).
        self.ok: metrics.Hist | None = None
        # As aiohttp names them in a 405 (a GET route also answers HEAD).
        self.allowed = "GET, HEAD" if method == b"GET" else method.decode()


def _assign(conn: _Connection, body: bytes) -> tuple[int, bytes, bytes]:
    lane = conn.lane
    try:
        parsed = _loads(body)
    except ValueError:
        parsed = loads_body(body)  # raises what the main listener answers
    return 200, answers.assign_answer(lane.app, parsed, lane.registry), b""


def _batch(conn: _Connection, body: bytes) -> tuple[int, bytes, bytes]:
    lane = conn.lane
    return 200, answers.batch_answer(lane.app, loads_body(body), lane.registry), b""


def _config(conn: _Connection, body: bytes) -> tuple[int, bytes, bytes]:
    inm = conn.header[_IF_NONE_MATCH]
    status, out, etag = answers.config_answer(
        conn.lane.registry, None if inm is None else inm.decode("utf-8", "surrogateescape"))
    return status, out, b"ETag: %b\r\n" % etag.encode()


def _healthz(conn: _Connection, body: bytes) -> tuple[int, bytes, bytes]:
    return 200, _HEALTHY, b""


ROUTES: dict[bytes, _Route] = {
    b"/api/v1/assign": _Route(b"POST", "client.assign", True, _assign),
    b"/api/v1/assign/batch": _Route(b"POST", "client.assign.batch", True, _batch),
    b"/api/v1/config": _Route(b"GET", "client.config", True, _config),
    b"/healthz": _Route(b"GET", "ops.healthz", False, _healthz),
}


class _Known:
    """What the head of a request answered with the usual 200 decided: its route and the length
    of its body. The lane keeps these by the head's exact bytes, so that a request whose head is
    byte for byte one seen before is answered without parsing it again (see
    _Connection.take_known): the same bytes parse the same way, and the tokens, the routes and
    the body limit are fixed for the life of the process."""

    __slots__ = ("cut", "head", "header", "length", "route", "total", "url")

    def __init__(self, route: _Route, url: bytes, header: list[bytes | None],
                 length: int) -> None:
        self.route = route
        self.url = url
        self.header = header  # the head's header slots, never changed after
        self.length = length
        self.head = b""  # the head's bytes, blank line included; set when kept
        self.cut = self.total = 0  # where the body begins, and the request's length

    def keep(self, head: bytes) -> None:
        """Set the head's bytes (blank line included)."""
        self.head = head
        self.cut = len(head)
        self.total = len(head) + self.length


class FastLane:
    """The fast lane listener of one process: its server, its connections, its clock."""

    def __init__(self, app: web.Application, main_port: int) -> None:
        settings = app[SETTINGS]
        self.app = app
        self.registry = app[REGISTRY]
        self.auth = app[AUTH]
        self.drain = app[DRAIN]
        self.limit = settings.max_body_bytes
        self.idle_s = settings.idle_timeout_s
        self.body_s = settings.body_timeout_s
        self.main_port = main_port
        # Decided once at start-up, as the main listener does.
        self.log_every = observability.debug_enabled()
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        # The heads of the usual requests, by their bytes, blank line included (see _Known).
        self.heads: dict[bytes, _Known] = {}
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.date = b""
        self._tick()
        self._sweeper: asyncio.Task[None] | None = None
        self.not_served = NotFound(
            "the fast lane serves only POST /api/v1/assign, POST /api/v1/assign/batch, "
            f"GET /api/v1/config and GET /healthz; use the main port {main_port} for the rest",
            extra={"main_port": main_port},
        )

    def _tick(self) -> None:
        self.date = b"Date: %b\r\n" % formatdate(usegmt=True).encode()

    async def _sweep(self) -> None:
        """Once in a while: the Date header, and connections that made no progress (no head or
        body completed) for their timeout, give or take one sweep. No clock is read per request:
        each connection counts its steps and the sweep compares the count with the last one."""
        every = max(0.05, min(1.0, self.idle_s / 4, self.body_s / 4))
        while True:
            await asyncio.sleep(every)
            self._tick()
            late = []
            for conn in self.connections:
                if conn.steps != conn.seen_steps:
                    conn.seen_steps, conn.still = conn.steps, 0.0
                    continue
                conn.still += every
                if conn.still >= (self.body_s if conn.state == _BODY else self.idle_s):
                    late.append(conn)
            for conn in late:
                conn.timed_out()

    async def start(self, host: str, port: int, *, reuse_port: bool) -> None:
        """Listen (SO_REUSEPORT with workers, as the main port)."""
        self.server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None, backlog=BACKLOG)
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.start_clock()

    def start_clock(self) -> None:
        """The sweep (Date header, stalled connections), once; the main port's front needs it
        even with no fast-lane listener."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="fastlane-sweep")

    def stop_listening(self) -> None:
        """Accept no new connection (the drain); open ones are answered 503 and closed."""
        if self.server is not None:
            self.server.close()

    async def close(self) -> None:
        """Close every connection and stop."""
        self.stop_listening()
        for conn in list(self.connections):
            conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()


async def start_fast_lane(app: web.Application, host: str, port: int, *, main_port: int,
                          reuse_port: bool = False) -> FastLane:
    """Serve the fast lane of a started app on host:port (port 0: any free one)."""
    lane = FastLane(app, main_port)
    await lane.start(host, port, reuse_port=reuse_port)
    return lane


class _Connection(asyncio.Protocol):
    """One client connection: an httptools parser whose callbacks answer each request."""

    def __init__(self, lane: FastLane) -> None:
        self.lane = lane
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.out: list[bytes] | None = None
        self.closing = False
        self.state = _HEAD
        # Steps taken (heads and messages completed) and what the sweep saw of them.
        self.steps = 0
        self.seen_steps = 0
        self.still = 0.0
        self.url = b""
        self.header: list[bytes | None] = [None] * 5
        self.body: list[bytes] = []
        self.body_len = 0
        self.head_bytes = 0
        self.head_pending = 0
        self.head_limit = MAX_HEAD_PENDING
        self.authorized: bytes | None = None
        self.t0 = 0.0
        # The parser is at a request boundary (nothing of a next request fed to it yet).
        self.fresh = True
        # The head so far has only the usual headers (_USUAL), in their usual spelling.
        self.plain = True
        # What the last request taught about its head, for data_received to keep (_Known).
        self.learnt: _Known | None = None
        # A known head is being answered (take_known): kept alive, whatever the parser last saw.
        self.known = False
        # The known head this connection sent last (most clients send the same head each time).
        self.last: _Known | None = None

    # -- transport callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclass of asyncio.Transport, but they are one.
        self.transport = cast(asyncio.Transport, transport)
        self.lane.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == _BODY and not self.closing:
            # The client left with its request half sent: counted as the main listener does.
            _observe(self._route_name(), CLIENT_CLOSED, _perf() - self.t0)
        self.closing = True
        self.lane.connections.discard(self)

    def pause_writing(self) -> None:
        # A client that sends without reading its answers: stop reading until it catches up.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.fresh and self.take_known(data):
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Parse `data` and answer every request it completes (the parser's callbacks); learn
        the head of a usual request that came whole in this read (_Known)."""
        if self.closing:
            return
        out: list[bytes] = []
        self.out = out
        fresh, steps = self.fresh, self.steps
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request was answered as any other; what follows is no HTTP spoken here.
            self.closing = True
        except httptools.HttpParserError as exc:
            if not self.closing:
                self._refuse(Malformed(f"malformed HTTP request: {exc}"))
        if not self.closing and self.state == _HEAD:
            # A head still incomplete: count what it took beyond the read it began in.
            if self.head_pending < 0:
                self.head_pending = 0
            else:
                self.head_pending += len(data)
                if self.head_pending > self.head_limit:
                    self._refuse(HeadTooLarge("the request head is too large"))
        self.out = None
        learnt = self.learnt
        if learnt is not None:
            self.learnt = None
            # Kept only when this read was that one request, whole, from its first byte: then
            # its head is exactly what comes before the first blank line.
            if fresh and self.fresh and self.steps == steps + 2:
                end = data.find(_END)
                if 0 < end <= KNOWN_HEAD_BYTES and len(data) - end - 4 == learnt.length:
                    heads = self.lane.heads
                    if len(heads) >= KNOWN_HEADS:
                        heads.clear()
                    head = data[:end + 4]
                    learnt.keep(head)
                    heads[head] = self.last = learnt
        self._flush(out)

    def _flush(self, out: list[bytes]) -> None:
        """Write the answers one read brought, in one write (writev for several, or for a long
        answer's head and body), then close if an answer said so."""
        transport = self.transport
        if transport is not None:
            if len(out) == 1:
                transport.write(out[0])
            elif out:
                transport.writelines(out)
            if self.closing:
                transport.close()

    def take_known(self, data: bytes) -> bool:
        """Answer `data` if it is one whole request whose head is known (_Known), as the parser's
        callbacks would have; whether it did. The parser must be at a request boundary."""
        known = self.last
        if known is None or len(data) != known.total or not data.startswith(known.head):
            # Not the head this connection sent last: perhaps one another connection sent.
            end = data.find(_END)
            if not 0 < end <= KNOWN_HEAD_BYTES:
                return False
            known = self.lane.heads.get(data[:end + 4])
            if known is None or len(data) != known.total:
                return False
            self.last = known
        if self.lane.drain.active:
            return False
        self.steps += 2
        self.head_pending = 0
        self.t0 = _perf()
        # What error answers and logs read of the request (a known head is kept alive).
        self.url, self.header, self.known = known.url, known.header, True
        out: list[bytes] = []
        self.out = out
        route = known.route
        try:
            status, body, extra = route.answer(self, data[known.cut:])
        except LitmusError as err:
            self._answer_error(err, route.name, b"POST")
        except Exception:
            self._unexpected(route.name, b"POST")
        else:
            if status == 200 and not extra:
                self._ok(route, body, None)
            else:
                self._answer(status, body, extra, route.name, b"POST", False)
        self.out = None
        self.known = False
        self._flush(out)
        return True

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.fresh = False
        self.plain = True
        self.url = b""
        self.header = [None] * 5
        self.body = []
        self.body_len = 0
        self.head_bytes = 0
        self.head_pending = -1  # this read began the head: not counted

    def on_url(self, url: bytes) -> None:
        self.url = self.url + url if self.url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        slot = _USUAL.get(name)
        if slot is None:
            self.plain = False
            slot = _WANTED.get(name.lower(), -1)
        if slot >= 0 and self.header[slot] is None:
            self.header[slot] = value

    def on_headers_complete(self) -> None:
        if self.closing:
            return
        lane = self.lane
        self.state = _BODY
        self.head_pending = 0
        self.steps += 1
        self.t0 = _perf()
        early: LitmusError | None = None
        length = self.header[_CONTENT_LENGTH]
        expect = self.header[_EXPECT]
        if len(self.url) > MAX_URL_BYTES or self.head_bytes > MAX_HEAD_BYTES:
            early = HeadTooLarge("the request head is too large")
        elif lane.drain.active:
            # As the main listener: a keep-alive client learns it must go elsewhere.
            early = ShuttingDown("this server is shutting down; retry on another instance")
        elif length is not None and int(length) > lane.limit:
            early = BodyTooLarge(f"request body of {int(length)} bytes is larger than the "
                                 f"limit of {lane.limit} bytes")
        elif expect is not None and expect.lower() == b"100-continue":
            self._send(_CONTINUE)
        if early is not None:
            # Answer now, without waiting for (or reading) a body: the connection closes.
            self._answer_error(early, self._route_name(), self.parser.get_method())

    def on_body(self, data: bytes) -> None:
        if self.closing:
            return
        self.body_len += len(data)
        if self.body_len > self.lane.limit:
            self._answer_error(BodyTooLarge("request body is too large"), self._route_name(),
                               self.parser.get_method())
            return
        self.body.append(data)

    def on_message_complete(self) -> None:
        if self.closing:
            return
        self.fresh = True
        self.state = _HEAD
        self.head_pending = -1  # the next head may begin in this read: not counted
        self.steps += 1
        method = self.parser.get_method()
        route = ROUTES.get(self.url)
        if route is None and b"?" in self.url:
            route = ROUTES.get(self.url.partition(b"?")[0])
        if route is None:
            self._answer_error(self.lane.not_served, "unmatched", method)
            return
        body = self.body
        raw = (body[0] if len(body) == 1 else b"".join(body)) if body else b""
        try:
            if method != route.method and not (method == b"HEAD" and route.method == b"GET"):
                err = MethodNotAllowed(
                    f"method not allowed; this route accepts {route.allowed}")
                err.headers["Allow"] = route.allowed
                raise err
            if route.token:
                auth = self.header[_AUTHORIZATION]
                if auth is None or auth != self.authorized:
                    authenticate(self.lane.auth,
                                 None if auth is None else auth.decode("utf-8", "surrogateescape"))
                    # The same header again on this connection needs no second look: the
                    # tokens are fixed for the life of the process.
                    self.authorized = auth
            status, out, extra = route.answer(self, raw)
        except LitmusError as err:
            self._answer_error(err, route.name, method)
            return
        except Exception:
            self._unexpected(route.name, method)
            return
        parser = self.parser
        if status == 200 and not extra and method == b"POST" and parser.should_keep_alive():
            # The usual answer: 200, kept alive, a body (assign and batch).
            rid = self._given_id()
            self._ok(route, out, rid)
            length = self.header[_CONTENT_LENGTH]
            # A head worth keeping: the route's exact path, HTTP/1.1, only the usual headers
            # (so no Transfer-Encoding, Upgrade or Expect), a Content-Length that framed it, and
            # no X-Request-Id (a client that sends one sends a new one with every request).
            if (self.plain and length is not None and self.url in ROUTES
                    and self.header[_EXPECT] is None and self.header[_REQUEST_ID] is None
                    and parser.get_http_version() == "1.1" and length.isdigit()
                    and int(length) == len(raw)):
                self.learnt = _Known(route, self.url, self.header, len(raw))
            return
        self._answer(status, out, extra, route.name, method,
                     not self.parser.should_keep_alive())

    # -- answers --------------------------------------------------------------------------------

    def _ok(self, route: _Route, body: bytes, rid: bytes | None) -> None:
        """The usual answer: 200, JSON, kept alive; `rid` the request's sane X-Request-Id, or
        None for a new one."""
        if rid is None:
            rid = _new_rid()
        # Called inside data_received, which collects the answers in out.
        out = self.out
        assert out is not None
        if len(body) < _BIG:
            out.append(_OK_HEAD % (len(body), self.lane.date, rid) + body)
        else:  # a batch's answer: written as it is, not copied after its head
            out.append(_OK_HEAD % (len(body), self.lane.date, rid))
            out.append(body)
        elapsed = _perf() - self.t0
        h = route.ok
        if h is None:
            h = route.ok = metrics.REQUESTS.hist(route.name, 200)
        # As metrics.REQUESTS.observe does, without looking the histogram up.
        h.counts[bisect_left(_BOUNDS, elapsed)] += 1
        h.total += elapsed
        if elapsed >= _SLOW_S or self.lane.log_every:
            self._log(rid, route.name, 200, elapsed, b"POST")

    def _keep_alive(self) -> bool:
        """Whether the request being answered keeps the connection (a known head always does;
        the parser has not seen it)."""
        return self.known or self.parser.should_keep_alive()

    def _route_name(self) -> str:
        route = ROUTES.get(self.url.partition(b"?")[0])
        return route.name if route is not None else "unmatched"

    def _given_id(self) -> bytes | None:
        """The request's X-Request-Id if it is a sane one (observability.SANE_ID_BYTES)."""
        given = self.header[_REQUEST_ID]
        return given if given is not None and _SANE_ID(given) else None

    def _request_id(self) -> bytes:
        """The given id if sane, else a new one: what the answer and the logs carry."""
        return self._given_id() or _new_rid()

    def _answer(self, status: int, body: bytes, extra: bytes, name: str, method: bytes,
                close: bool) -> None:
        rid = self._request_id()
        end = _CLOSE if close else _KEEP
        if status == 304:
            head = b"%b%bX-Request-Id: %b\r\n%b%b" % (
                _status_line(304), self.lane.date, rid, extra, end)
            body = b""
        else:
            head = (b"%bContent-Type: application/json\r\nContent-Length: %d\r\n%b"
                    b"X-Request-Id: %b\r\n%b%b") % (
                _STATUS_LINES.get(status) or _status_line(status), len(body), self.lane.date,
                rid, extra, end)
            if method == b"HEAD":
                body = b""
        if close:
            self.closing = True
        self._send(head + body)
        elapsed = _perf() - self.t0
        _observe(name, status, elapsed)
        if status >= 500 or elapsed >= _SLOW_S or self.lane.log_every:
            self._log(rid, name, status, elapsed, method)

    @staticmethod
    def _log(rid: bytes, name: str, status: int, elapsed: float, method: bytes) -> None:
        token = REQUEST_ID.set(rid.decode())
        try:
            observability.log_answer(name, status, elapsed, method.decode())
        finally:
            REQUEST_ID.reset(token)

    def _answer_error(self, err: LitmusError, name: str, method: bytes) -> None:
        extra = b"".join(b"%b: %b\r\n" % (k.encode(), v.encode()) for k, v in err.headers.items())
        self._answer(err.status, error_body(err), extra, name, method,
                     err.close or not self._keep_alive())

    def _unexpected(self, name: str, method: bytes) -> None:
        token = REQUEST_ID.set(self._request_id().decode())
        try:
            log.exception("unhandled error on %s %s", method.decode(), self.url[:200].decode(
                "utf-8", "replace"))
        finally:
            REQUEST_ID.reset(token)
        self._answer(500, _INTERNAL, b"", name, method, not self._keep_alive())

    def _refuse(self, err: LitmusError) -> None:
        """Answer what the parser cannot go on with, and close."""
        if self.state == _HEAD:
            self.t0 = _perf()
        self._answer(err.status, error_body(err), b"", "unmatched", b"-", True)

    def _send(self, data: bytes) -> None:
        if self.out is not None:
            self.out.append(data)
        elif self.transport is not None:
            self.transport.write(data)
            if self.closing:
                self.transport.close()

    def timed_out(self) -> None:
        """No progress for too long: a body still awaited gets 408; an idle or slow head is
        closed."""
        if self.closing or self.transport is None:
            return
        if self.state == _BODY:
            self._answer_error(
                RequestTimeout(f"the request body did not arrive within {self.lane.body_s:g} s"),
                self._route_name(), self.parser.get_method())
        else:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        """Close at once (shutdown)."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()



# -- the main port's front ------------------------------------------------------------------------
#
# The main port is aiohttp's, but while a connection sends nothing but requests for the router
# routes, the fast lane's code answers them on that connection: what a model router sends on the
# main port then costs what it costs on the fast lane. The first request for anything else
# (another route, a query string, HTTP/1.0, an upgrade, HTTP the parser refuses, a request
# that grows past _FRONT_KEEP before it completes) goes to aiohttp from its first byte on, with
# everything after it: the connection is aiohttp's from then on. Requests may arrive in pieces
# and pipelined; each is answered once, in order. The answers are the fast lane's, which are the
# main listener's byte for byte (tests/api/test_fastlane.py). While the front has a connection,
# the fast lane's timeouts apply to it (a body that stalls gets 408 after LITMUS_BODY_TIMEOUT_S,
# an idle connection is closed after LITMUS_IDLE_TIMEOUT_S) and aiohttp's idle timer is off;
# a client that does not read its answers stops being read, as on the fast lane.

# What the front serves: the routes a client token may call on the fast lane (not /healthz,
# which the main port answers in full).
_FRONT = {url: route.method for url, route in ROUTES.items() if route.token}
# Bytes kept since the last request boundary: past this, requests already answered are dropped
# from it, and a single request still incomplete past it goes to aiohttp.
_FRONT_KEEP = 1 << 20


class _Scout:
    """Reads what a front connection receives with a parser of its own, ahead of the fast
    lane's code, and counts the requests begun and completed since it was last at a request
    boundary at the end of a read. `ok` turns False at the first request the front does not
    serve; `good` is then how many requests came whole before it."""

    __slots__ = ("begun", "done", "good", "ok", "parser", "url")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.begun = self.done = self.good = 0
        self.ok = True

    def on_message_begin(self) -> None:
        self.begun += 1
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url = self.url + url if self.url else url

    def on_headers_complete(self) -> None:
        parser = self.parser
        if self.ok and (_FRONT.get(self.url) != parser.get_method()
                        or parser.should_upgrade() or parser.get_http_version() != "1.1"):
            self.ok = False
            self.good = self.done

    def on_message_complete(self) -> None:
        self.done += 1

    def feed(self, data: bytes) -> bool:
        """Whether everything so far is (the start of) front requests."""
        try:
            self.parser.feed_data(data)
        except Exception:  # malformed, an upgrade: for aiohttp to answer
            if self.ok:
                self.ok = False
                self.good = self.done
        return self.ok


class _Count:
    """Counts the requests a parser completes (the hand-over's boundary search)."""

    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


def _completed(data: bytes) -> int:
    count = _Count()
    with contextlib.suppress(Exception):
        httptools.HttpRequestParser(count).feed_data(data)
    return count.done


def request_boundary(data: bytes, k: int) -> int:
    """The offset just past the k-th complete request in `data`, which begins at a request
    boundary and completes at least k (a binary search over prefixes: only at a hand-over or
    when _FRONT_KEEP is reached)."""
    lo, hi = 0, len(data)
    while lo < hi:
        mid = (lo + hi) // 2
        if _completed(data[:mid]) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


class FrontHandler(RequestHandler):
    """aiohttp's connection handler, with the router routes answered by the fast lane's code
    until the connection asks for anything else (see above)."""

    def __init__(self, lane: FastLane, manager: web.Server, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self._lane = lane
        self._scout: _Scout | None = _Scout()
        self._front: _Connection | None = None
        # What arrived since the scout was last at a request boundary at the end of a read
        # (a hand-over gives aiohttp the request that needs it from its first byte).
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._reading_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # While the front has the connection, the fast lane's sweep times it out (aiohttp's
        # idle timer would close a stalled body before its 408 was due).
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        front = _Connection(self._lane)
        # A long head may be another route's: past _FRONT_KEEP it is aiohttp's, with its limits.
        front.head_limit = 2 * _FRONT_KEEP
        front.connection_made(transport)  # among the lane's connections: timeouts, drain
        self._front = front

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._front is not None:
            self._front.connection_lost(None)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._front is not None and self.transport is not None:
            # A client that sends without reading its answers: stop reading until it catches up.
            self.transport.pause_reading()
            self._reading_paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self._resume_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        scout, front = self._scout, self._front
        if scout is None or front is None:
            super().data_received(data)
            return
        if scout.begun == 0 and front.fresh and not front.closing and front.take_known(data):
            # One whole request with a head the lane knows: a router route's, nothing for
            # aiohttp, and no parser needs to see it (both stay at the request boundary).
            return
        if not scout.feed(data):
            self._hand_over(scout, front, data, fed=False)
            return
        front.feed(data)
        if scout.begun == scout.done:
            # A request boundary: nothing before it can be needed again.
            scout.begun = scout.done = 0
            self._pending.clear()
            self._pending_len = 0
            return
        self._pending.append(data)
        self._pending_len += len(data)
        if self._pending_len > _FRONT_KEEP:
            kept = b"".join(self._pending)
            if scout.done:
                # Drop the requests already answered (their bytes are of no further use).
                kept = kept[request_boundary(kept, scout.done):]
                scout.begun -= scout.done
                scout.done = 0
            self._pending = [kept]
            self._pending_len = len(kept)
            if self._pending_len > _FRONT_KEEP:
                # One request that large, still incomplete: aiohttp's, from its first byte.
                self._hand_over(scout, front, b"", fed=True)

    def _hand_over(self, scout: _Scout, front: _Connection, data: bytes, *, fed: bool) -> None:
        """From the first request the front does not serve on, the connection is aiohttp's:
        the front answers the whole requests before it, aiohttp gets the rest. `data` has not
        been given to the front unless `fed` (then it is in _pending already)."""
        self._scout = self._front = None
        front.lane.connections.discard(front)  # the lane's sweep leaves the connection alone
        seen = b"".join(self._pending)
        self._pending = []
        self._pending_len = 0
        everything = seen + data
        cut = request_boundary(everything, scout.done if fed else scout.good)
        if cut > len(seen):
            front.data_received(everything[len(seen):cut])
        front.closing = True  # and so do the front's callbacks
        if self.transport is None or self.transport.is_closing():
            return
        # aiohttp's idle timer, as its connection_made sets it, and its own flow control.
        if self._keepalive_timeout > 0:
            close_time = self._loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_time
            self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)
        self._resume_reading()
        super().data_received(everything[cut:])


class FrontSite(web.TCPSite):
    """A TCPSite whose connections are FrontHandlers (the main port, CORS closed)."""

    def __init__(self, runner: web.AppRunner, lane: FastLane, host: str, port: int,
                 *, reuse_port: bool) -> None:
        super().__init__(runner, host, port, reuse_port=reuse_port)
        self._lane = lane

    async def start(self) -> None:
        """As TCPSite.start, with FrontHandler for aiohttp's RequestHandler."""
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        kwargs = server._kwargs  # what Server.__call__ gives each RequestHandler

        def handler() -> FrontHandler:
            return FrontHandler(self._lane, server, loop=loop, **kwargs)

        self._server = await loop.create_server(
            handler, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        self._bound_port = self._server.sockets[0].getsockname()[1]
