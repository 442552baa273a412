"""The HTTP listener: ``/metrics``, the status page, its live updates (SSE) and JSON.

aiohttp's ``AppRunner`` + ``TCPSite`` run inside the service's task group on the same
event loop and, unlike uvicorn's ``Server.main_loop`` (a 0.1 s tick), wake only when a
request arrives — the idle CPU budget (≤ 0.1 % of a core) allows nothing periodic.
Read-only unless ``release`` is given (then ``POST /release`` with the token and the page's
CSRF value releases manual maintenance).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Protocol

import anyio
import orjson
from aiohttp import web
from anyio.abc import TaskStatus

from watcher.web import render
from watcher.web.broker import Broker

SSE_QUEUE = 256
KEEPALIVE = 300.0  # seconds between SSE comments on a quiet stream (not a service tick)


class StatusSource(Protocol):
    """What the service lends the web app."""

    async def status(self) -> dict[str, Any]: ...

    def metrics(self) -> bytes: ...


def _static(name: str) -> bytes:
    return resources.files("watcher.web").joinpath("static", name).read_bytes()


def build_app(
    source: StatusSource,
    broker: Broker,
    *,
    release: Callable[[], Awaitable[str]] | None = None,
    token: str | None = None,
) -> web.Application:
    csrf = secrets.token_urlsafe(24)
    assets = {
        "style.css": (_static("style.css"), "text/css"),
        "live.js": (_static("live.js"), "text/javascript"),
    }

    async def status(with_csrf: bool) -> dict[str, Any]:
        data = await source.status()
        data["release_enabled"] = release is not None
        if with_csrf:
            data["csrf"] = csrf
        return data

    async def index(_request: web.Request) -> web.Response:
        html = render.page(await status(True))
        return web.Response(text=html, content_type="text/html", headers=_NO_STORE)

    async def fragment(_request: web.Request) -> web.Response:
        html = render.body(await status(True))
        return web.Response(text=html, content_type="text/html", headers=_NO_STORE)

    async def api(_request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(await status(False)), content_type="application/json")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=source.metrics(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def static(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], content_type=found[1])

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        stream: asyncio.Queue[bytes] = asyncio.Queue(SSE_QUEUE)
        broker._opened(stream)  # before the first byte: a reader that saw it misses nothing
        await response.write(b": watcher\n\n")
        try:
            while True:
                try:
                    data = await asyncio.wait_for(stream.get(), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                await response.write(b"data: " + data + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            broker.streams.discard(stream)
        return response

    async def do_release(request: web.Request) -> web.Response:
        if release is None or token is None:
            raise web.HTTPNotFound()
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")), csrf):
            raise web.HTTPForbidden(text="bad or missing CSRF value: reload the page")
        if not hmac.compare_digest(str(form.get("token", "")), token):
            raise web.HTTPForbidden(text="wrong token")
        message = await release()
        return web.Response(text=message + "\n")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/fragment", fragment)
    app.router.add_get("/api/status", api)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/events", events)
    app.router.add_post("/release", do_release)
    return app


_NO_STORE = {"Cache-Control": "no-store"}


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen until cancelled; ``task_status.started`` gets the bound port (0: any free)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server: Any = site._server  # aiohttp keeps the asyncio.Server here
        sockets = list(server.sockets) if server is not None else []
        task_status.started(sockets[0].getsockname()[1] if sockets else port)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
