"""WSGI and ASGI middleware answering 503 + ``Retry-After`` from the maint file."""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

COOKIE = "watcher_bypass"
DEFAULT_BODY = b"<!doctype html><title>Maintenance</title><h1>Down for maintenance</h1>\n"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


class _Gate:
    """The shared decision: maintenance (one stat), bypass cookie, the 503 response."""

    def __init__(
        self, maint_file: str | os.PathLike[str], secret: str | None, retry_after: int, body: bytes
    ) -> None:
        self.maint_file = os.fspath(maint_file)
        self.secret = secret
        self.retry_after = retry_after
        self.body = body

    def active(self) -> bool:
        try:
            os.stat(self.maint_file)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: fail closed, like nginx's `if -f` would not
        return True

    def bypassed(self, cookie_header: str, query: str) -> tuple[bool, bool]:
        """(let through, set the cookie now)."""
        if not self.secret:
            return False, False
        if query:
            given = parse_qs(query).get(COOKIE, [""])[0]
            if given and hmac.compare_digest(given, self.secret):
                return True, True
        try:
            jar = SimpleCookie(cookie_header)
        except CookieError:
            return False, False
        morsel = jar.get(COOKIE)
        return bool(morsel and hmac.compare_digest(morsel.value, self.secret)), False

    def cookie(self) -> str:
        return f"{COOKIE}={self.secret}; Path=/; HttpOnly; SameSite=Lax"

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Retry-After", str(self.retry_after)),
            ("Cache-Control", "no-store"),
            ("Content-Length", str(len(self.body))),
        ]


class MaintenanceWSGI:
    """Wrap a WSGI app: 503 while ``maint_file`` exists, unless the bypass cookie is sent."""

    def __init__(
        self,
        app: WSGIApp,
        maint_file: str | os.PathLike[str],
        *,
        secret: str | None = None,
        retry_after: int = 300,
        body: bytes = DEFAULT_BODY,
    ) -> None:
        self.app = app
        self.gate = _Gate(maint_file, secret, retry_after, body)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not self.gate.active():
            return self.app(environ, start_response)
        through, set_cookie = self.gate.bypassed(
            environ.get("HTTP_COOKIE", ""), environ.get("QUERY_STRING", "")
        )
        if through:
            if not set_cookie:
                return self.app(environ, start_response)

            def with_cookie(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
                return start_response(status, [*headers, ("Set-Cookie", self.gate.cookie())], *exc)

            return self.app(environ, with_cookie)
        start_response("503 Service Unavailable", self.gate.headers())
        return [self.gate.body]


class MaintenanceASGI:
    """Wrap an ASGI app: 503 for HTTP requests while ``maint_file`` exists (bypass cookie)."""

    def __init__(
        self,
        app: ASGIApp,
        maint_file: str | os.PathLike[str],
        *,
        secret: str | None = None,
        retry_after: int = 300,
        body: bytes = DEFAULT_BODY,
    ) -> None:
        self.app = app
        self.gate = _Gate(maint_file, secret, retry_after, body)

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http" or not self.gate.active():
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        query = scope.get("query_string", b"").decode("latin-1")
        through, set_cookie = self.gate.bypassed(headers.get("cookie", ""), query)
        if through:
            if not set_cookie:
                await self.app(scope, receive, send)
                return

            async def send_with_cookie(message: Any) -> None:
                if message.get("type") == "http.response.start":
                    extra = [(b"set-cookie", self.gate.cookie().encode("latin-1"))]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
                await send(message)

            await self.app(scope, receive, send_with_cookie)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(k.lower().encode(), v.encode()) for k, v in self.gate.headers()],
            }
        )
        await send({"type": "http.response.body", "body": self.gate.body})
