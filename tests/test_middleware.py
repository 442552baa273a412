"""The WSGI and ASGI middleware in real servers (wsgiref, uvicorn) on loopback: 503 with
Retry-After while the maint file exists, the admin bypass by secret cookie."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
import uvicorn

from tests.conftest import WAIT, eventually
from watcher.integrations import MaintenanceASGI, MaintenanceWSGI

SECRET = "let-me-in-7f3a"


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The application behind the middleware."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from the app"]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same application, ASGI."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello from the app"})


class Quiet(WSGIRequestHandler):
    """wsgiref's handler without the access log on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wsgi_server(maint_file: Path) -> Iterator[str]:
    """The WSGI middleware in wsgiref's server, in a thread on a free loopback port."""
    app = MaintenanceWSGI(wsgi_app, maint_file, secret=SECRET, retry_after=600)
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


@contextmanager
def asgi_server(maint_file: Path) -> Iterator[str]:
    """The ASGI middleware in uvicorn, in a thread on a pre-bound free loopback socket."""
    app = MaintenanceASGI(asgi_app, maint_file, secret=SECRET, retry_after=600)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        eventually(lambda: server.started)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


SERVERS = {"wsgi": wsgi_server, "asgi": asgi_server}


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_503_while_the_maint_file_exists(kind: str, tmp_path: Path) -> None:
    """No maint file: the app answers; maint file: 503 + Retry-After; removed: the app again."""
    maint_file = tmp_path / "maint"
    with SERVERS[kind](maint_file) as base, httpx.Client(base_url=base, timeout=WAIT) as client:
        assert client.get("/").text == "hello from the app"
        maint_file.write_text("upgrade\n")
        down = client.get("/anything?x=1")
        assert down.status_code == 503
        assert down.headers["retry-after"] == "600"
        assert down.headers["cache-control"] == "no-store"
        assert "maintenance" in down.text.lower()
        maint_file.unlink()
        assert client.get("/").status_code == 200


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_admin_bypass_by_secret_cookie(kind: str, tmp_path: Path) -> None:
    """``?watcher_bypass=SECRET`` lets the admin through and sets the cookie; the cookie alone
    then passes; a wrong secret does not."""
    maint_file = tmp_path / "maint"
    maint_file.write_text("upgrade\n")
    with SERVERS[kind](maint_file) as base:
        with httpx.Client(base_url=base, timeout=WAIT) as admin:
            first = admin.get(f"/?watcher_bypass={SECRET}")
            assert first.status_code == 200 and first.text == "hello from the app"
            cookie = first.headers["set-cookie"]
            assert cookie.startswith(f"watcher_bypass={SECRET};") and "HttpOnly" in cookie
            assert admin.get("/other").status_code == 200  # the cookie jar sends it back
        with httpx.Client(base_url=base, timeout=WAIT) as guest:
            assert guest.get("/?watcher_bypass=guess").status_code == 503
            guest.cookies.set("watcher_bypass", "guess")
            assert guest.get("/").status_code == 503
