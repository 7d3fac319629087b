"""The baseline for the assign benchmark: a bare aiohttp + uvloop handler that parses the same
JSON body and answers a same-sized JSON document, with nothing of Litmus in between."""

from __future__ import annotations

import sys

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


def main() -> None:
    """Serve on the port given as the first argument."""
    app = web.Application()
    app.router.add_post("/assign", handle)
    app.router.add_post("/events", drop_events)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
