"""Operator requests (``enter``, ``leave``), carried out on a ``Controller``.

The same code runs inside the service (a request sent over the control socket) and in
the CLI when the service is down (under the instance lock), so both
paths behave alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from watcher.core.maintenance import Hold
from watcher.core.units import format_time_of_day, parse_duration, parse_time_of_day
from watcher.service.controller import Controller
from watcher.service.state import ManualWindow

CLI_HOLD = "cli"
MAX_FOR = 366 * 86400.0  # seconds; longer is a typo, not a plan
MAX_MESSAGE = 500  # characters; the message travels in every event while maintenance lasts


class RequestError(ValueError):
    """A request that cannot be carried out as given; the message says why."""


def parse_until(text: str, now: datetime, tz: ZoneInfo) -> datetime:
    """``--until``: ``HH:MM`` (the next such local time) or an ISO-8601 date-time."""
    try:
        minutes = parse_time_of_day(text)
    except ValueError:
        minutes = -1
    if minutes >= 0:
        local = now.astimezone(tz)
        candidate = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(
            minutes=minutes
        )
        if candidate <= local:
            candidate += timedelta(days=1)
        return candidate
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RequestError(f"--until {text!r}: use HH:MM or an ISO-8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def parse_window(text: str, granularity: int) -> ManualWindow:
    """``--window HH:MM-HH:MM`` in steps of the granularity."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise RequestError(f"--window {text!r}: use HH:MM-HH:MM")
    try:
        start = parse_time_of_day(start_text, granularity)
        end = parse_time_of_day(end_text, granularity)
    except ValueError as exc:
        raise RequestError(f"--window: {exc}") from None
    if start == end:
        raise RequestError("--window: start and end are equal; a window cannot be empty")
    return ManualWindow(start, end)


def _texts(request: Mapping[str, Any]) -> dict[str, str]:
    """The request's ``message``/``window``/``for``/``until``: each absent, null or a string.

    Anything else (a number, a boolean, a list, an object) is refused rather than read
    loosely: ``"for": 0`` or ``"for": false`` must not become maintenance without an end.
    An empty ``window``/``for``/``until`` is refused too; an empty message is no message.
    """
    texts: dict[str, str] = {}
    for key in ("message", "window", "for", "until"):
        value = request.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RequestError(f"--{key}: expected a string, not {type(value).__name__}")
        if key != "message" and not value.strip():
            raise RequestError(f"--{key}: empty")
        texts[key] = value
    return texts


def enter(ctl: Controller, request: Mapping[str, Any], tz: ZoneInfo, granularity: int) -> str:
    """Hold manual maintenance now (optionally until a time) or add a recurring window."""
    now = ctl.clock()
    texts = _texts(request)
    message = texts.get("message", "")[:MAX_MESSAGE] or None
    if "window" in texts:
        if "for" in texts or "until" in texts:
            raise RequestError("--window repeats daily until `leave`: it takes no --for/--until")
        window = replace(parse_window(texts["window"], granularity), message=message)
        kept = tuple(
            w for w in ctl.state.manual_windows if (w.start, w.end) != (window.start, window.end)
        )
        ctl.update(manual_windows=(*kept, window))
        span = f"{format_time_of_day(window.start)}-{format_time_of_day(window.end)}"
        return f"daily maintenance window {span} added; it repeats until `watcher leave`"
    until: datetime | None = None
    if "for" in texts:
        try:
            seconds = parse_duration(texts["for"])
            if not 0 < seconds <= MAX_FOR:
                raise ValueError("must be more than zero and at most a year")
            until = now + timedelta(seconds=seconds)
        except ValueError as exc:
            raise RequestError(f"--for: {exc}") from None
    elif "until" in texts:
        until = parse_until(texts["until"], now, tz)
        if until <= now:
            raise RequestError("--until is in the past")
    ctl.add_hold(Hold(reason="manual", name=CLI_HOLD, since=now, until=until, message=message))
    if until is not None:
        return f"maintenance on until {until.astimezone(tz).isoformat(timespec='minutes')}"
    return "maintenance on until `watcher leave`"


def leave(ctl: Controller, running: set[str] | frozenset[str] = frozenset()) -> str:
    """Release manual maintenance: manual holds and windows, and job holds no running job owns
    (an interrupted restore or archive, a dbcheck's corruption hold)."""
    ctl.observe()
    released = ctl.release("manual", why="leave")
    windows = ctl.state.manual_windows
    if windows:
        ctl.update(manual_windows=())
        for w in windows:
            released |= ctl.release("window", w.name, why="leave")
    for hold in [h for h in ctl.state.holds if h.reason == "job" and h.name not in running]:
        released |= ctl.release(hold.reason, hold.name, why="leave")
    if not released and not windows:
        return "no manual maintenance to release"
    remaining = [f"{h.reason} {h.name}" for h in ctl.state.holds]
    if remaining:
        return "manual maintenance released; still held by: " + ", ".join(remaining)
    return "manual maintenance released; maintenance is off"
