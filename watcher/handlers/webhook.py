"""The ``webhook`` handler: an HTTP POST of each event's JSON, signed, retried, time-bounded.

The body is exactly the event's JSON line (``render_json``, no newline), sent with
``Content-Type: application/json``. When ``secret_env`` names an environment variable,
``X-Watcher-Signature: sha256=<hex>`` carries the HMAC-SHA256 of those exact bytes under
that secret (UTF-8), so a receiver verifies the body before parsing it. A missing or empty
variable is a ``ValueError`` when the handler is built: a webhook never goes out unsigned
by accident. ``X-Watcher-Event`` (the action) and ``X-Watcher-Delivery`` (``event.id``,
the same on every retry) let a receiver route and de-duplicate.

Retries: connection errors, timeouts and 5xx answers are retried up to ``retries`` times,
with exponential back-off and jitter; any other answer outside 2xx (4xx, and 3xx, which is
not followed) is final and raised at once. After the last attempt the error is raised,
and the bus reports ``handler.failed``. One ``httpx.AsyncClient`` serves every event, so
connections are kept alive between events.

Time budget: the bus cancels a handler that spends more than ``timeout`` (the handler's
``timeout`` key, default 5 s) on one event. This handler spends that budget itself: it gives
up at ``BUDGET_SHARE`` of it, each attempt may use an equal share of what is left for the
attempts still to come (a hanging receiver cannot eat the retries), and a retry whose
back-off would leave too little time for an attempt is not made. So a failure is reported
with its own reason (status or error, number of attempts) rather than the bus's bare
timeout. A receiver must therefore answer within about ``timeout / (retries + 1)``; raise
``timeout`` for a slow one. While a handler retries, later events wait in its queue.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random

import anyio
import httpx

from watcher import __version__
from watcher.config import HandlerConfig
from watcher.events.record import Event, Origin, render_json

BUDGET_SHARE = 0.8  # of the bus's per-event timeout; the rest is margin for the bus
BACKOFF_BASE = 0.2  # seconds before the first retry (before jitter); doubles each retry
BACKOFF_CAP = 5.0
MIN_ATTEMPT = 0.05  # an attempt given less time than this is not worth making
SIGNATURE_HEADER = "X-Watcher-Signature"


class WebhookError(RuntimeError):
    """The event could not be delivered."""


class WebhookRejected(WebhookError):
    """The receiver answered with a final status (4xx, or a redirect): not retried."""


class WebhookFailed(WebhookError):
    """Every attempt failed (connection error, timeout or 5xx)."""


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Watcher-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookHandler:
    """POSTs each event to ``url``; see the module docstring for signing, retries and time."""

    def __init__(
        self,
        config: HandlerConfig,
        origin: Origin,
        *,
        backoff: float = BACKOFF_BASE,
        rng: random.Random | None = None,
    ) -> None:
        if not config.url.startswith(("http://", "https://")):
            raise ValueError(
                f"a webhook handler needs an http:// or https:// url, not {config.url!r}"
            )
        self.url = config.url
        self.origin = origin
        self.retries = config.retries
        self.budget = config.timeout * BUDGET_SHARE
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.secret = _secret(config.secret_env)
        self.where = _redacted(config.url)
        self.client = httpx.AsyncClient(
            headers={"User-Agent": f"watcher/{__version__}"},
            timeout=self.budget,
            follow_redirects=False,
        )

    def headers(self, event: Event, body: bytes) -> dict[str, str]:
        """The request headers for one event's body."""
        headers = {
            "Content-Type": "application/json",
            "X-Watcher-Event": event.action,
            "X-Watcher-Delivery": event.id,
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        return headers

    async def __call__(self, event: Event) -> None:
        body = render_json(event, self.origin)
        headers = self.headers(event, body)
        deadline = anyio.current_time() + self.budget
        attempts = self.retries + 1
        attempt = 0
        while True:
            share = (deadline - anyio.current_time()) / (attempts - attempt)
            problem = await self._post(body, headers, share)
            if problem is None:
                return
            attempt += 1
            if attempt == attempts:
                raise WebhookFailed(
                    f"POST {self.where} failed after {attempt} attempts ({problem})"
                )
            delay = self._delay(attempt)
            if deadline - anyio.current_time() - delay < MIN_ATTEMPT:
                raise WebhookFailed(
                    f"POST {self.where} failed after {attempt} attempts ({problem}); "
                    "no time left for a retry within the handler timeout"
                )
            await anyio.sleep(delay)

    async def _post(self, body: bytes, headers: dict[str, str], within: float) -> str | None:
        """One attempt: ``None`` on 2xx, or why it may be retried; raises when it is final."""
        try:
            with anyio.fail_after(within):
                response = await self.client.post(
                    self.url, content=body, headers=headers, timeout=within
                )
        except (TimeoutError, httpx.TimeoutException):
            return f"timed out after {within:.2f}s"
        except httpx.TransportError as exc:
            return f"{type(exc).__name__}: {exc}"
        status = f"{response.status_code} {response.reason_phrase}".strip()
        if response.is_success:
            return None
        if response.is_server_error:
            return status
        detail = response.text.strip()[:200]
        raise WebhookRejected(
            f"POST {self.where} rejected with {status}" + (f": {detail}" if detail else "")
        )

    def _delay(self, retry: int) -> float:
        """Back-off before retry number ``retry`` (1, 2, …): exponential, half of it jitter."""
        ceiling: float = min(BACKOFF_CAP, self.backoff * 2 ** (retry - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    async def aclose(self) -> None:
        await self.client.aclose()


def _secret(name: str | None) -> bytes | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ValueError(
            f"webhook handler: secret_env names the environment variable {name}, which is not "
            f"set; set it in the service's environment or remove secret_env"
        )
    if not value:
        raise ValueError(f"webhook handler: the environment variable {name} (secret_env) is empty")
    return value.encode()


def _redacted(url: str) -> str:
    """The URL for messages: scheme, host and port only (paths and queries may hold tokens)."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"
