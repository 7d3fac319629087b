"""The baselines for the assign benchmarks: a bare aiohttp + uvloop handler that parses the same
JSON body and answers a same-sized JSON document, with nothing of Litmus in between; and, with
`raw` as the second argument, a uvloop asyncio.Protocol that answers every read with a fixed
response of that size (no HTTP parsing at all: the floor of Python networking)."""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import orjson
import uvloop
from aiohttp import web

ANSWER = {"experiment": "bench", "unit_id": "", "variant": "model_a", "config": {"model": "m"},
          "reason": "assigned", "probability": 0.5, "version": 2}


async def handle(request: web.Request) -> web.Response:
    """Parse, copy the unit id into a fixed answer, serialise."""
    body = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps({**ANSWER, "unit_id": body["unit_id"]}),
                        content_type="application/json")


async def drop_events(request: web.Request) -> web.Response:
    """Parse an event body and drop it (the ingestion baseline)."""
    orjson.loads(await request.read())
    return web.Response(status=202, body=b'{"accepted":true}', content_type="application/json")


FIXED = orjson.dumps({**ANSWER, "unit_id": "user-12345"})
RAW_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
              % (len(FIXED), FIXED))


class Raw(asyncio.Protocol):
    """One fixed answer per read: wrk sends its next request on a connection only after the
    answer to the last, so each read holds one request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        # uvloop's transports are no subclass of asyncio.Transport, but they are one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Answer."""
        self.transport.write(RAW_ANSWER)


async def serve_raw(port: int) -> None:
    """The raw server until killed."""
    server = await asyncio.get_running_loop().create_server(Raw, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Serve on the port given as the first argument (`raw` second: the raw protocol)."""
    if sys.argv[2:] == ["raw"]:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_raw(int(sys.argv[1])))
        return
    app = web.Application()
    app.router.add_post("/assign", handle)
    app.router.add_post("/events", drop_events)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
