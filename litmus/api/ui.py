"""The static web UI: every screen's deep link serves index.html; assets under /ui/."""

from __future__ import annotations

from aiohttp import web

from litmus.resources import UI_PACKAGE, data_dir

UI_DIR = data_dir(UI_PACKAGE)
routes = web.RouteTableDef()


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@routes.get("/", name="ui.root")
async def root(request: web.Request) -> web.Response:
    """Send people to the experiments list."""
    raise web.HTTPFound("/experiments")


for path in (
    "/experiments",
    "/experiments/new",
    "/experiments/{id}",
    "/experiments/{id}/results",
    "/experiments/{id}/settings",
):
    routes.get(path, name="ui." + (path.strip("/").replace("/", ".").replace("{id}", "id")))(_index)

routes.static("/ui", UI_DIR, name="ui.static", append_version=False)
