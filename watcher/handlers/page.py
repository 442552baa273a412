"""The ``page`` handler: the application's maintenance screen, rendered on every change.

On each ``maintenance.*`` event it writes, atomically, into ``directory`` (one nginx serves):
``maintenance.html`` (message, start and end in the configured zone and language, from the
built-in template or the operator's ``template``), ``maintenance.json`` and ``retry-after``
(seconds until the announced end, or ``retry_after`` when no end is known).

Options: ``directory`` (required), ``template`` (a file using ``$title $message $start $end
$retry_after $lang``), ``timezone`` (default UTC), ``language`` (``en``, ``de``, ``fr``),
``retry_after`` (seconds, default 300).
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import orjson

from watcher.config import HandlerConfig
from watcher.events.record import Event, Origin
from watcher.system.atomic import write_atomic

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Down for maintenance",
        "since": "since",
        "until": "until",
        "open": "until further notice",
        "format": "%Y-%m-%d %H:%M %Z",
    },
    "de": {
        "title": "Wartungsarbeiten",
        "since": "seit",
        "until": "bis",
        "open": "bis auf Weiteres",
        "format": "%d.%m.%Y %H:%M %Z",
    },
    "fr": {
        "title": "Maintenance en cours",
        "since": "depuis",
        "until": "jusqu’à",
        "open": "jusqu’à nouvel ordre",
        "format": "%d/%m/%Y %H:%M %Z",
    },
}
OPTIONS = frozenset({"directory", "template", "timezone", "language", "retry_after"})


def _options(options: dict[str, Any]) -> tuple[Path, string.Template, ZoneInfo, str, int]:
    """The handler's options, checked; raises ``ValueError`` naming the option."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (page takes {', '.join(sorted(OPTIONS))})")
    directory = options.get("directory")
    if not isinstance(directory, str) or not Path(directory).is_dir():
        raise ValueError(f"directory: {directory!r} is not an existing directory")
    template_path = options.get("template")
    try:
        text = (
            Path(template_path).read_text()
            if isinstance(template_path, str)
            else resources.files("watcher.handlers").joinpath("maintenance.html").read_text()
        )
    except OSError as exc:
        raise ValueError(f"template: {exc.strerror}: {template_path}") from None
    try:
        zone = ZoneInfo(str(options.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone: unknown zone {options.get('timezone')!r}") from None
    language = str(options.get("language", "en"))
    if language not in WORDS:
        raise ValueError(f"language: {language!r} is not one of {', '.join(WORDS)}")
    retry = options.get("retry_after", 300)
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 1:
        raise ValueError(f"retry_after: expected whole seconds ≥ 1, got {retry!r}")
    return Path(directory), string.Template(text), zone, language, retry


def screen(
    maintenance: dict[str, Any], now: datetime, zone: ZoneInfo, language: str, default_retry: int
) -> dict[str, Any]:
    """What the screen says: start, end (``None``: open-ended) and Retry-After seconds."""
    holds = maintenance.get("holds") or []
    starts = [datetime.fromisoformat(h["since"]) for h in holds if h.get("since")]
    ends = [h.get("until") for h in holds]
    end = max(datetime.fromisoformat(u) for u in ends if u) if ends and all(ends) else None
    retry = max(1, int((end - now).total_seconds())) if end else default_retry
    words = WORDS[language]
    return {
        "active": bool(maintenance.get("active")),
        "message": maintenance.get("message") or "",
        "start": min(starts).isoformat() if starts else None,
        "end": end.isoformat() if end else None,
        "start_text": min(starts).astimezone(zone).strftime(words["format"]) if starts else "",
        "end_text": end.astimezone(zone).strftime(words["format"]) if end else words["open"],
        "retry_after": retry,
    }


class PageHandler:
    """Writes the maintenance screen files on every ``maintenance.*`` event."""

    def __init__(self, config: HandlerConfig, origin: Origin) -> None:
        self.directory, self.template, self.zone, self.language, self.retry = _options(
            dict(config.options)
        )
        self.origin = origin

    async def __call__(self, event: Event) -> None:
        if not event.action.startswith("maintenance."):
            return
        maintenance = dict(event.fields.get("maintenance") or {})
        await anyio.to_thread.run_sync(self.write, maintenance, datetime.now(UTC))

    def write(self, maintenance: dict[str, Any], now: datetime) -> None:
        info = screen(maintenance, now, self.zone, self.language, self.retry)
        words = WORDS[self.language]
        html = self.template.safe_substitute(
            title=escape(words["title"]),
            message=escape(info["message"]),
            start=escape(f"{words['since']} {info['start_text']}" if info["start_text"] else ""),
            end=escape(f"{words['until']} {info['end_text']}" if info["end"] else info["end_text"]),
            retry_after=info["retry_after"],
            lang=self.language,
        )
        d = self.directory
        write_atomic(d / "maintenance.html", html.encode(), durable=False)
        write_atomic(
            d / "maintenance.json",
            orjson.dumps({k: v for k, v in info.items() if not k.endswith("_text")}),
            durable=False,
        )
        write_atomic(d / "retry-after", f"{info['retry_after']}\n".encode(), durable=False)
