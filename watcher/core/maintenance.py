"""The decision core of maintenance: holds in, maint-file content out. No I/O, no clock.

Maintenance is active exactly while at least one hold is active (a hold with an
``until`` in the past is expired). ``decide`` turns the active holds into the
content the maint file must have, or ``None`` when the file must not exist.
``reconcile`` decides what an observation of the file means: nothing new, an
operator's file to adopt, or an operator's release.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, Literal

import orjson

Reason = Literal["manual", "window", "job", "disk", "cluster"]
REASONS: tuple[Reason, ...] = ("manual", "disk", "job", "window", "cluster")  # message priority


@dataclass(frozen=True)
class Hold:
    """One reason to be in maintenance."""

    reason: Reason
    name: str
    since: datetime
    until: datetime | None = None
    message: str | None = None
    interrupted: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.reason, self.name)

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reason": self.reason,
            "name": self.name,
            "since": self.since.isoformat(),
        }
        if self.until is not None:
            out["until"] = self.until.isoformat()
        if self.message is not None:
            out["message"] = self.message
        if self.interrupted:
            out["interrupted"] = True
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Hold:
        reason = raw["reason"]
        if reason not in REASONS:
            raise ValueError(f"unknown hold reason {reason!r}")
        until = raw.get("until")
        return cls(
            reason=reason,
            name=str(raw["name"]),
            since=aware(raw["since"]),
            until=aware(until) if until else None,
            message=raw.get("message"),
            interrupted=bool(raw.get("interrupted", False)),
        )


@dataclass(frozen=True)
class MaintContent:
    """What the maint file says (DESIGN §3)."""

    message: str
    start: datetime
    end: datetime | None
    holds: tuple[Hold, ...]
    set_by: Literal["watcher", "operator"]

    def render(self, tz: tzinfo | None = None) -> bytes:
        """The file's bytes; ``start_local``/``end_local`` in ``tz`` (system zone if ``None``).

        ``start``/``end`` stay as they always were (UTC); the local pair is added beside them
        so an application's maintenance screen shows them without converting.
        """
        return (
            orjson.dumps(
                {
                    "message": self.message,
                    "start": self.start.isoformat(),
                    "end": self.end.isoformat() if self.end else None,
                    "start_local": self.start.astimezone(tz).isoformat(),
                    "end_local": self.end.astimezone(tz).isoformat() if self.end else None,
                    "timezone": _zone_name(tz),
                    "holds": [
                        {"reason": h.reason, "name": h.name, "since": h.since.isoformat()}
                        | ({"until": h.until.isoformat()} if h.until else {})
                        for h in self.holds
                    ],
                    "set_by": self.set_by,
                },
                option=orjson.OPT_INDENT_2,
            )
            + b"\n"
        )


def _zone_name(tz: tzinfo | None) -> str | None:
    """The IANA name of ``tz`` when it has one (``None`` for the system zone)."""
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else None


def aware(text: str) -> datetime:
    """An ISO-8601 time that must carry its UTC offset (``ValueError`` otherwise)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return moment


def active_holds(holds: Iterable[Hold], now: datetime) -> tuple[Hold, ...]:
    """The holds that still count at ``now``, in priority order."""
    live = [h for h in holds if h.active(now)]
    return tuple(sorted(live, key=lambda h: (REASONS.index(h.reason), h.since)))


def decide(holds: Sequence[Hold], now: datetime, default_message: str) -> MaintContent | None:
    """The maint file's content for these holds at ``now``; ``None``: no maintenance."""
    live = active_holds(holds, now)
    if not live:
        return None
    message = next((h.message for h in live if h.message), default_message)
    ends = [h.until for h in live]
    end = None if any(e is None for e in ends) else max(e for e in ends if e is not None)
    set_by: Literal["watcher", "operator"] = (
        "operator"
        if any(h.reason == "manual" and h.name == "operator" for h in live)
        else "watcher"
    )
    return MaintContent(message, min(h.since for h in live), end, live, set_by)


def next_expiry(holds: Iterable[Hold], now: datetime) -> datetime | None:
    """When the next active hold expires by itself, if any does."""
    ends = [h.until for h in holds if h.until is not None and h.until > now]
    return min(ends) if ends else None


def without(holds: Iterable[Hold], reason: str, name: str | None = None) -> tuple[Hold, ...]:
    """The holds minus those of ``reason`` (and ``name``, when given)."""
    return tuple(h for h in holds if not (h.reason == reason and (name is None or h.name == name)))


def with_hold(holds: Iterable[Hold], hold: Hold) -> tuple[Hold, ...]:
    """The holds with ``hold`` added, replacing one with the same reason and name."""
    return (*without(holds, hold.reason, hold.name), hold)


def message_from_file(content: bytes) -> str | None:
    """The message an operator's maint file carries: JSON ``message``, else its first line."""
    text = content.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        message = parsed.get("message")
        return str(message)[:500] if message else None
    first = text.splitlines()[0].strip()
    return first[:500] or None


Observation = Literal["unchanged", "adopt", "released"]


def reconcile(file_exists: bool, holds: Sequence[Hold], now: datetime) -> Observation:
    """What the file's presence means given the holds watcher keeps.

    The file present without any active hold is an operator's: adopt it. The file gone
    while holds are active is an operator's release. Anything else is as it should be
    (or is watcher's own doing, which it already knows about).
    """
    live = bool(active_holds(holds, now))
    if file_exists and not live:
        return "adopt"
    if not file_exists and live:
        return "released"
    return "unchanged"


def operator_hold(now: datetime, message: str | None) -> Hold:
    """The manual hold an adopted maint file becomes."""
    return Hold(reason="manual", name="operator", since=now, message=message)
