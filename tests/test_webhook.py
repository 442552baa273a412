"""The webhook handler against real HTTP servers on 127.0.0.1 (stdlib ``http.server``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest

from tests.conftest import ServiceProcess, cli, write_config
from watcher.config import HandlerConfig
from watcher.events.bus import EventBus, Subscription
from watcher.events.record import Event, Origin, render_json
from watcher.handlers import build_handler
from watcher.handlers.webhook import (
    BACKOFF_CAP,
    WebhookFailed,
    WebhookHandler,
    WebhookRejected,
)
from watcher.registry import load_config
from watcher.testing import capture_events

SECRET_ENV = "WATCHER_TEST_WEBHOOK_SECRET"
SECRET = "s3cret-ключ"
ORIGIN = Origin(data_dir="/srv/app", host="testhost", pid=4242)

# What a server answers to its n-th request (from 0): (status, body), or None to hang
# until the test ends and then close the connection without an answer.
Respond = Callable[[int], tuple[int, bytes] | None]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    peer_port: int


class Server:
    """A real HTTP/1.1 server (keep-alive) in a thread that records what it receives."""

    def __init__(self, respond: Respond) -> None:
        self.requests: list[Seen] = []
        self.gate = threading.Event()  # hanging requests wait for this (set at teardown)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(
                        Seen(
                            "POST",
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            self.client_address[1],
                        )
                    )
                answer = respond(index)
                if answer is None:
                    server.gate.wait()
                    self.close_connection = True
                    return
                status, payload = answer
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/hooks/T0KEN-in-path?key=hidden"

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def http_server() -> Iterator[Callable[[Respond], Server]]:
    """Start real HTTP servers with a given behaviour; all are shut down at teardown."""
    servers: list[Server] = []

    def start(respond: Respond) -> Server:
        server = Server(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The webhook secret, set in the environment variable the handler config names."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET


def ok(_index: int) -> tuple[int, bytes]:
    return 204, b""


def webhook(
    url: str, *, retries: int = 3, timeout: float = 5.0, signed: bool = True
) -> WebhookHandler:
    config = HandlerConfig(
        type="webhook",
        url=url,
        secret_env=SECRET_ENV if signed else None,
        retries=retries,
        timeout=timeout,
    )
    return WebhookHandler(config, ORIGIN, backoff=0.01, rng=random.Random(7))


def an_event(sequence: int = 1) -> Event:
    return Event(
        "maintenance.entered",
        "maintenance entered: メンテナンス中",
        fields={"maintenance": {"active": True}},
        sequence=sequence,
    )


def expected_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.asyncio
async def test_posts_the_signed_event_json(
    http_server: Callable[[Respond], Server], secret: str
) -> None:
    """The body is the event's JSON line and the signature header is its HMAC-SHA256."""
    server = http_server(ok)
    handler = webhook(server.url)
    event = an_event()
    try:
        await handler(event)
    finally:
        await handler.aclose()
    [seen] = server.requests
    assert seen.method == "POST"
    assert seen.path == "/hooks/T0KEN-in-path?key=hidden"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == render_json(event, ORIGIN)
    assert hmac.compare_digest(seen.headers["x-watcher-signature"], expected_signature(seen.body))
    assert seen.headers["x-watcher-event"] == "maintenance.entered"
    assert seen.headers["x-watcher-delivery"] == event.id
    doc = json.loads(seen.body)
    assert doc["event"]["action"] == "maintenance.entered"
    assert doc["message"] == "maintenance entered: メンテナンス中"
    assert doc["watcher"]["data_dir"] == "/srv/app"


@pytest.mark.asyncio
async def test_one_client_keeps_its_connection_between_events(
    http_server: Callable[[Respond], Server], secret: str
) -> None:
    """Consecutive events travel over one kept-alive connection of the one client."""
    server = http_server(ok)
    handler = webhook(server.url)
    try:
        for n in range(1, 4):
            await handler(an_event(n))
    finally:
        await handler.aclose()
    assert [json.loads(s.body)["event"]["sequence"] for s in server.requests] == [1, 2, 3]
    assert len({s.peer_port for s in server.requests}) == 1


@pytest.mark.asyncio
async def test_unsigned_without_secret_env(http_server: Callable[[Respond], Server]) -> None:
    """Without ``secret_env`` the request goes out with no signature header."""
    server = http_server(ok)
    handler = webhook(server.url, signed=False)
    try:
        await handler(an_event())
    finally:
        await handler.aclose()
    [seen] = server.requests
    assert "x-watcher-signature" not in seen.headers


def test_missing_secret_variable_is_an_error_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``secret_env`` naming an unset variable fails when the handler is built, naming it."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ValueError, match=f"{SECRET_ENV}.*not set"):
        webhook("http://127.0.0.1:9/")


def test_empty_secret_variable_is_an_error_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty secret is refused too: it would sign with a key anyone can guess."""
    monkeypatch.setenv(SECRET_ENV, "")
    with pytest.raises(ValueError, match=f"{SECRET_ENV}.*empty"):
        webhook("http://127.0.0.1:9/")


@pytest.mark.asyncio
async def test_server_errors_are_retried_until_success(
    http_server: Callable[[Respond], Server], secret: str
) -> None:
    """Two 500 answers then a 200: the same signed delivery is retried and succeeds."""
    server = http_server(lambda n: (500, b"oops") if n < 2 else (200, b"ok"))
    handler = webhook(server.url, retries=3)
    event = an_event()
    try:
        await handler(event)
    finally:
        await handler.aclose()
    assert len(server.requests) == 3
    assert len({s.body for s in server.requests}) == 1
    assert {s.headers["x-watcher-delivery"] for s in server.requests} == {event.id}
    for seen in server.requests:
        assert seen.headers["x-watcher-signature"] == expected_signature(seen.body)


@pytest.mark.asyncio
async def test_server_errors_past_the_retries_raise(
    http_server: Callable[[Respond], Server], secret: str
) -> None:
    """A receiver that keeps answering 503 gets 1 + retries attempts, then the handler raises."""
    server = http_server(lambda _n: (503, b"down"))
    handler = webhook(server.url, retries=2)
    try:
        with pytest.raises(WebhookFailed, match=r"after 3 attempts \(503 Service Unavailable\)"):
            await handler(an_event())
    finally:
        await handler.aclose()
    assert len(server.requests) == 3


@pytest.mark.asyncio
async def test_client_errors_are_not_retried(
    http_server: Callable[[Respond], Server], secret: str
) -> None:
    """A 400 is final: one request, raised at once with the receiver's reason, URL redacted."""
    server = http_server(lambda _n: (400, b"bad signature"))
    handler = webhook(server.url, retries=3)
    try:
        with pytest.raises(WebhookRejected, match="400 Bad Request: bad signature") as caught:
            await handler(an_event())
    finally:
        await handler.aclose()
    assert len(server.requests) == 1
    assert "T0KEN" not in str(caught.value) and "hidden" not in str(caught.value)


@pytest.mark.asyncio
async def test_connection_errors_are_retried_then_raise(secret: str) -> None:
    """Nothing listening: every attempt is a connection error, and the last one raises."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: connections are refused
    handler = webhook(f"http://127.0.0.1:{port}/", retries=2)
    try:
        with pytest.raises(WebhookFailed, match=r"after 3 attempts \(ConnectError"):
            await handler(an_event())
    finally:
        await handler.aclose()


@pytest.mark.asyncio
async def test_slow_receiver_fails_within_the_bus_timeout(
    http_server: Callable[[Respond], Server], secret: str
) -> None:
    """A receiver that never answers: each attempt times out and the bus reports the failure."""
    server = http_server(lambda _n: None)
    handler = webhook(server.url, retries=1, timeout=2.0)
    bus = EventBus()
    bus.subscribe(Subscription("0:webhook", handler, timeout=2.0))
    with capture_events(bus) as captured:
        async with anyio.create_task_group() as tg:
            await tg.start(bus.run)
            bus.emit("maintenance.entered", "maintenance entered")
            assert await bus.drain(within=15)
            tg.cancel_scope.cancel()
    await bus.aclose()
    [failed] = [e for e in captured if e.action == "handler.failed"]
    # The handler's own reason, not the bus's "timed out after 2s": it gave up at 80 % of it.
    assert failed.fields["reason"].startswith("WebhookFailed: POST http://127.0.0.1:")
    assert "after 2 attempts (timed out" in failed.fields["reason"]
    assert failed.fields["failed_event"]["action"] == "maintenance.entered"


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    """Back-off before retry n lies in [c/2, c] with c = base·2^(n-1), capped at BACKOFF_CAP."""
    handler = WebhookHandler(
        HandlerConfig(type="webhook", url="http://127.0.0.1:9/"),
        ORIGIN,
        backoff=0.2,
        rng=random.Random(1),
    )
    for retry in range(1, 12):
        ceiling = min(BACKOFF_CAP, 0.2 * 2 ** (retry - 1))
        delays = {handler._delay(retry) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered, not a fixed schedule


@pytest.mark.asyncio
async def test_webhook_from_the_config_file(
    tmp_path: Path, http_server: Callable[[Respond], Server], secret: str
) -> None:
    """A ``[[handlers]] type = "webhook"`` entry builds this handler with its keys."""
    server = http_server(ok)
    (tmp_path / "data").mkdir()
    config_file = tmp_path / "watcher.toml"
    config_file.write_text(
        f'data_dir = "data"\n[[handlers]]\ntype = "webhook"\nurl = "{server.url}"\n'
        f'secret_env = "{SECRET_ENV}"\nretries = 1\ntimeout = "2s"\n'
        'events = ["maintenance.*"]\n'
    )
    [config] = load_config(config_file).handlers
    handler = build_handler(config, ORIGIN)
    assert isinstance(handler, WebhookHandler)
    assert handler.retries == 1
    assert handler.budget == pytest.approx(1.6)  # 80 % of the 2 s bus timeout
    try:
        await handler(an_event())
    finally:
        await handler.aclose()
    [seen] = server.requests
    assert seen.headers["x-watcher-signature"] == expected_signature(seen.body)


def test_the_service_signs_with_its_environment_and_reports_rejections(
    service: Callable[..., ServiceProcess],
    data_dir: Path,
    tmp_path: Path,
    http_server: Callable[[Respond], Server],
) -> None:
    """In the real service the secret comes from its environment and a 4xx is handler.failed."""
    server = http_server(lambda n: (204, b"") if n == 0 else (400, b"unknown hook"))
    config = write_config(
        tmp_path / "watcher.toml",
        f"""
[[handlers]]
type = "log"
target = "stdout"
format = "json"

[[handlers]]
type = "webhook"
url = "{server.url}"
secret_env = "{SECRET_ENV}"
events = ["maintenance.entered", "maintenance.left"]
""",
    )
    proc = service(config=config, env={SECRET_ENV: SECRET})
    for verb in ("enter", "leave"):
        result = cli(verb, data_dir=data_dir)
        assert result.returncode == 0, result.stderr
    failed = proc.wait_for("handler.failed")
    assert failed["watcher"]["failed_event"]["action"] == "maintenance.left"
    assert failed["watcher"]["reason"].startswith("WebhookRejected: POST http://127.0.0.1:")
    assert "400 Bad Request: unknown hook" in failed["watcher"]["reason"]
    entered = proc.wait_for("maintenance.entered")
    first, second = server.requests
    assert json.loads(first.body)["event"]["id"] == entered["event"]["id"]
    for seen in (first, second):
        assert seen.headers["x-watcher-signature"] == expected_signature(seen.body)
    assert proc.stop() == 0
