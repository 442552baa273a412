"""Lines rendered ahead: an event's JSON line known but for its time, sequence and a few
late fields, filled in by one bytes ``%``-format.

Why (measured, issue 15): an operator's ``touch`` or ``rm`` wakes the service after idle,
when every step that has not run for a while costs several times its usual price (the
caches are cold: on this VM a function that takes 3.5 µs warm takes 87 µs the first time
after 30 ms asleep). Creating the event and rendering it (a dataclass, ``datetime``,
``isoformat``, dicts, orjson) cost ≈ 90 µs of the ≈ 250 µs between the inotify wake-up and
the line. Filling a template is one C call on integers and bytes, ≈ 20 µs.

``fill`` gives exactly ``render_json`` of the event with that time, sequence and late
values (a test holds it to that): the timestamp is the one ``rfc3339`` writes, the id the
one ``event_id`` makes, each late value is rendered as ``render_json`` renders a field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from watcher.core.printable import safe_json
from watcher.events.record import ID_PREFIX, Event, Origin, render_json, rfc3339

_MARK = "\ue000"  # a private-use character: where the parts filled in later go
_MINUTE_NS = 60_000_000_000
_minute: tuple[int, bytes] = (0, b"")  # the current minute's start and "YYYY-MM-DDTHH:MM:"


@dataclass(frozen=True)
class LineTemplate:
    """One event's JSON line (with its newline) as a bytes ``%``-format."""

    format: bytes
    late: tuple[str, ...]

    @classmethod
    def of(cls, event: Event, origin: Origin, late: tuple[str, ...] = ()) -> LineTemplate | None:
        """The template of ``event``'s line, ``late`` being the names of fields (present in
        ``event.fields``) whose values come later; ``None`` when the event's own text holds
        the marker character, so the places to fill cannot be told apart."""
        fields = dict(event.fields) | {name: f"{_MARK}L" for name in late}
        marked = replace(event, fields=fields, sequence=1, id=f"{_MARK}I")
        line = render_json(marked, origin).replace(b"%", b"%%")
        mark = _MARK.encode()
        if line.count(mark) != 1 + len(late):
            return None
        timestamp = orjson.dumps(rfc3339(marked.time))
        if line.count(timestamp) != 1:
            return None
        line = line.replace(timestamp, b'"%s%02d.%06dZ"', 1)
        line = line.replace(b'"sequence":1,', b'"sequence":%d,', 1)
        line = line.replace(f'"{_MARK}I"'.encode(), f'"{ID_PREFIX}%010x"'.encode(), 1)
        line = line.replace(f'"{_MARK}L"'.encode(), b"%s")
        template = cls(line + b"\n", late)
        return template if template._renders(event, origin) else None

    def _renders(self, event: Event, origin: Origin) -> bool:
        """Whether a filled line is exactly ``render_json``'s (checked once, when made)."""
        time_ns, sequence = time.time_ns(), 12_345  # now: the minute's text is kept for later
        fields = dict(event.fields) | dict.fromkeys(self.late)
        probe = replace(event, fields=fields, time=moment(time_ns), sequence=sequence, id="")
        try:
            filled = self.fill(fill_values(time_ns, sequence, [None] * len(self.late)))
        except (TypeError, ValueError):  # the format's places do not match its values
            return False
        return filled == render_json(probe, origin) + b"\n"

    def fill(self, values: tuple[Any, ...]) -> bytes:
        """The line for ``fill_values(...)``: one ``%``-format."""
        return self.format % values


def fill_values(time_ns: int, sequence: int, late: list[Any]) -> tuple[Any, ...]:
    """What every template of one event is filled with: its time (``time_ns``, wall clock),
    its ``sequence`` and the late fields' values (in the templates' ``late`` order). Made
    once per event, however many handlers' templates it fills."""
    prefix, seconds, micros = _timestamp_parts(time_ns)
    values = [b"null" if value is None else _json_value(value) for value in late]
    return (prefix, seconds, micros, sequence, sequence & 0xFFFFFFFFFF, *values)


def moment(time_ns: int) -> datetime:
    """``time_ns`` (wall clock) as the UTC ``datetime`` an event carries, to the microsecond."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


def _timestamp_parts(time_ns: int) -> tuple[bytes, int, int]:
    """``("YYYY-MM-DDTHH:MM:", seconds, microseconds)`` of ``time_ns``; the minute's text is
    kept, so most calls do integer arithmetic only."""
    global _minute
    start, prefix = _minute
    if not start <= time_ns < start + _MINUTE_NS:
        start = time_ns - time_ns % _MINUTE_NS
        prefix = moment(start).strftime("%Y-%m-%dT%H:%M:").encode()
        _minute = (start, prefix)
    micros = (time_ns - start) // 1000
    return prefix, micros // 1_000_000, micros % 1_000_000


def _json_value(value: Any) -> bytes:
    return safe_json(orjson.dumps(value, default=str))
