"""Events: the frozen record every observation and decision becomes, and its renderings.

The JSON rendering is the public contract of DESIGN §6: ECS-compatible, the four
top-level ECS keys (``@timestamp``, ``log.level``, ``message``, ``ecs.version``)
and nested objects for everything else; custom fields live under ``watcher``.
Rendering goes through structlog's renderers (JSON with orjson, or the console
renderer for a terminal) so handlers share one pipeline.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import structlog

from watcher import __version__
from watcher.core.printable import one_line, safe_json

Level = Literal["debug", "info", "warning", "error", "critical"]
LEVELS: dict[str, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
ECS_VERSION = "8.11.0"


@dataclass(frozen=True)
class Event:
    """One observation or decision, as handed to every handler."""

    action: str
    message: str
    level: Level = "info"
    fields: Mapping[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    sequence: int = 0
    id: str = ""
    duration_ns: int | None = None
    origin: str | None = None  # the handler an internal event is about (not rendered)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(
                self, "id", event_id(self.sequence) if self.sequence else str(uuid.uuid4())
            )

    @property
    def severity(self) -> int:
        """The level as a number, for ``min_level`` comparisons."""
        return LEVELS[self.level]


@dataclass(frozen=True)
class Origin:
    """What every event says about where it comes from (``service``, ``host``, ``process``)."""

    data_dir: str = ""
    service_name: str = "watcher"
    version: str = __version__
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _uuid_head(p: str) -> str:
    return f"{p[:8]}-{p[8:12]}-4{p[12:15]}-8{p[15:18]}-{p[18:20]}"


ID_PREFIX = _uuid_head(uuid.uuid4().hex)  # random per process; the sequence makes ids unique


def event_id(sequence: int) -> str:
    """A version-4-shaped UUID: per-process random bits plus the event's sequence.

    ``uuid.uuid4()`` costs ~3 µs (a third of an event's creation); this costs ~0.3 µs and
    is as unique: random across processes, sequential within one.
    """
    return f"{ID_PREFIX}{sequence & 0xFFFFFFFFFF:010x}"


def to_document(event: Event, origin: Origin) -> dict[str, Any]:
    """The ECS document of DESIGN §6 as a plain dict."""
    ev: dict[str, Any] = {
        "kind": "event",
        "action": event.action,
        "sequence": event.sequence,
        "id": event.id,
    }
    if event.duration_ns is not None:
        ev["duration"] = event.duration_ns
    return {
        "@timestamp": rfc3339(event.time),
        "log.level": event.level,
        "message": event.message,
        "ecs.version": ECS_VERSION,
        "event": ev,
        "service": {"name": origin.service_name, "version": origin.version},
        "host": {"name": origin.host},
        "process": {"pid": origin.pid},
        "watcher": {"data_dir": origin.data_dir, **event.fields},
    }


def _orjson_dumps(obj: Any, **_kw: Any) -> bytes:
    return orjson.dumps(obj, default=str)


_json_renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
_LEVEL_STYLES = {
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}


_last_json: tuple[Event, Origin, bytes] | None = None


def render_json(event: Event, origin: Origin) -> bytes:
    """One JSON line (without the newline) as shipped to log pipelines: no raw line
    separator of any kind inside (``safe_json``), so no text in it can forge a line.

    The last rendering is kept: the handlers an event goes to one after another (stdout and
    a log file) render it once."""
    global _last_json
    last = _last_json
    if last is not None and last[0] is event and last[1] is origin:
        return last[2]
    rendered = _json_renderer(None, event.level, to_document(event, origin))
    line = safe_json(rendered if isinstance(rendered, bytes) else rendered.encode())
    _last_json = (event, origin, line)
    return line


def render_console(event: Event, origin: Origin, colour: bool = True) -> str:
    """A readable line for a terminal: time, level, action, message, then the custom fields;
    control characters in the text are shown escaped (``one_line``), never acted on."""
    local = event.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
    details = " ".join(f"{k}={_short(v)}" for k, v in event.fields.items() if k != "maintenance")
    if event.duration_ns is not None:
        details = f"{details} duration={event.duration_ns / 1e9:.3f}s".strip()
    level = f"{event.level:<8}"
    if colour:
        level = f"{_LEVEL_STYLES[event.level]}{level}\x1b[0m"
        action = f"\x1b[1m{event.action:<32}\x1b[0m"
    else:
        action = f"{event.action:<32}"
    text = one_line(f"{event.message}  {details}" if details else event.message)
    return f"{local} {level} {action} {text}"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= 120 else text[:117] + "..."


def level_at_least(event: Event, minimum: Level) -> bool:
    """Whether ``event`` passes a ``min_level`` filter."""
    return event.severity >= LEVELS[minimum]
