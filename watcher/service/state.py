"""watcher's persistent state (``<state>/state.json``): holds, manual windows, memory of what
was already done, and a fingerprint of the maint file watcher last wrote.

Written atomically on every change; a state file that cannot be parsed is moved aside
(``state.json.corrupt-<time>``) and watcher starts from the maint file alone, which
stays the truth.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from watcher.config import Config
from watcher.core.maintenance import Hold, aware
from watcher.core.schedule import Window
from watcher.core.units import format_time_of_day
from watcher.system.atomic import write_atomic

MAX_REMEMBERED = 256


@dataclass(frozen=True)
class ManualWindow:
    """A recurring daily window set with ``watcher enter --window``."""

    start: int  # minutes since local midnight
    end: int
    message: str | None = None

    @property
    def name(self) -> str:
        return f"manual {format_time_of_day(self.start)}-{format_time_of_day(self.end)}"


@dataclass(frozen=True)
class FileStamp:
    """Identity of a file version: what watcher wrote, to tell its writes from others'."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class State:
    holds: tuple[Hold, ...] = ()
    manual_windows: tuple[ManualWindow, ...] = ()
    skipped: tuple[str, ...] = ()  # window occurrences released by an operator
    fired: tuple[str, ...] = ()  # scheduler firings already acted on
    disk_armed: bool = True  # False after an operator release, until the disk recovers
    entered_at: datetime | None = None
    written: FileStamp | None = None
    writing: bool = False  # saved just before watcher writes the maint file (write-ahead)
    planned_until: datetime | None = None  # the scheduler has acted on everything up to here
    jobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # last result per job

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "holds": [h.to_dict() for h in self.holds],
                "manual_windows": [
                    {"start": w.start, "end": w.end, "message": w.message}
                    for w in self.manual_windows
                ],
                "skipped": list(self.skipped[-MAX_REMEMBERED:]),
                "fired": list(self.fired[-MAX_REMEMBERED:]),
                "disk_armed": self.disk_armed,
                "entered_at": self.entered_at.isoformat() if self.entered_at else None,
                "written": self.written.__dict__ if self.written else None,
                "writing": self.writing,
                "planned_until": self.planned_until.isoformat() if self.planned_until else None,
                "jobs": dict(self.jobs),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes) -> State:
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("state is not a JSON object")
        written = raw.get("written")
        return cls(
            holds=tuple(Hold.from_dict(h) for h in raw.get("holds", [])),
            manual_windows=tuple(_manual_window(w) for w in raw.get("manual_windows", [])),
            skipped=tuple(raw.get("skipped", [])),
            fired=tuple(raw.get("fired", [])),
            disk_armed=bool(raw.get("disk_armed", True)),
            entered_at=_when(raw.get("entered_at")),
            written=FileStamp(**written) if written else None,
            writing=bool(raw.get("writing", False)),
            planned_until=_when(raw.get("planned_until")),
            jobs=_jobs(raw.get("jobs", {})),
        )


def _manual_window(raw: Any) -> ManualWindow:
    start, end = int(raw["start"]), int(raw["end"])
    if not (0 <= start < 1440 and 0 <= end < 1440) or start == end:
        raise ValueError(f"manual window {start}-{end} is not a window of the day")
    message = raw.get("message")
    return ManualWindow(start, end, str(message) if message is not None else None)


def _jobs(raw: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError("jobs is not an object of job results")
    return raw


def _when(value: Any) -> datetime | None:
    return aware(value) if value else None


class StateStore:
    """Loads and saves ``state.json``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "state.json"

    def load(self) -> tuple[State, str | None]:
        """The saved state, or a fresh one; the second value explains a discarded file."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return State(), None
        try:
            return State.from_json(data), None
        except (ValueError, KeyError, TypeError) as exc:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = self.path.with_name(f"state.json.corrupt-{stamp}")
            os.replace(self.path, aside)
            return State(), f"unreadable state file moved to {aside.name}: {exc}"

    def load_readonly(self) -> tuple[State, str | None]:
        """Like ``load`` but never moves a bad file aside (for ``status``)."""
        try:
            return State.from_json(self.path.read_bytes()), None
        except FileNotFoundError:
            return State(), None
        except (ValueError, KeyError, TypeError) as exc:
            return State(), f"state file unreadable: {exc}"

    def save(self, state: State, *, durable: bool = True) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, state.to_json(), 0o644, durable=durable)


def all_windows(config: Config, state: State) -> list[Window]:
    """Configured windows and the operator's recurring manual windows, for the schedule."""
    configured = [
        Window(w.name, w.start, w.end, w.days, w.message) for w in config.maintenance.windows
    ]
    manual = [Window(w.name, w.start, w.end, message=w.message) for w in state.manual_windows]
    return configured + manual
