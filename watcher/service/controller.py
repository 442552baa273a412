"""The maintenance shell: keeps holds, makes the maint file match them, and reads the truth.

Every change goes through here, in the service and in the CLI when the service is down:
add or release a hold, expire holds whose time is up, and ``observe`` the maint file to
notice an operator's ``touch`` (adopt as a manual hold) or ``rm`` (release everything,
never recreating the file). Decisions come from ``watcher.core.maintenance``; this class
only carries them out, persists the state and emits the events.

watcher tells its own writes from others' by the file's identity (inode, size, mtime)
recorded when it wrote it, never by timing.

The service's watch answers an operator's action from a reaction prepared at idle
(``prepare_reactions``, ``_react``): the first event's line is out after one system call on
the file (``access`` or ``lstat``); the rest is then carried out exactly as the general path
would have (tests compare the two). Anything the preparation did not foresee takes the
general path from the start.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import anyio

from watcher.config import PathsConfig
from watcher.core.maintenance import (
    Hold,
    Observation,
    active_holds,
    decide,
    message_from_file,
    next_expiry,
    operator_hold,
    reconcile,
    with_hold,
)
from watcher.events.bus import NO_SPACE, EventBus, Prepared
from watcher.events.record import Event, Level
from watcher.service.state import FileStamp, State, StateStore
from watcher.system.atomic import create_new, remove_durably, rewrite_existing

Clock = Callable[[], datetime]
READ_LIMIT = 65536  # bytes of an operator's maint file read for its message

# An operator's actions on the maint file: (action, message, level) of the first event.
_ADOPTED: tuple[str, str, Level] = (
    "maintenance.adopted",
    "maint file created by someone else: adopted as a manual hold",
    "info",
)
_RELEASED: tuple[str, str, Level] = (
    "maintenance.released_by_operator",
    "maint file deleted by someone else: all holds released",
    "warning",
)


@dataclass(frozen=True)
class _Reactions:
    """The prepared first event of an operator's action, and what it was prepared for."""

    state: State
    snapshot: dict[str, Any]
    until: datetime | None  # valid before this: the first hold's expiry
    prepared: Prepared | None


def utc_now() -> datetime:
    return datetime.now(UTC)


class Controller:
    """Owns the holds and the maint file for one data directory."""

    def __init__(
        self,
        paths: PathsConfig,
        bus: EventBus,
        *,
        default_message: str,
        clock: Clock = utc_now,
        tz: tzinfo | None = None,
    ) -> None:
        self.paths = paths
        self._maint_path = os.fspath(paths.maint_file)  # str: no Path step in ``_react``
        self.tz = tz  # the zone of the maint file's start_local/end_local
        self.bus = bus
        self.default_message = default_message
        self.clock = clock
        self.store = StateStore(paths.state)
        self.state = State()
        self._rendered: bytes | None = None
        self._snapshot: dict[str, Any] = {}
        self.on_release: list[Callable[[], None]] = []
        self.on_no_space: list[Callable[[], None]] = []
        self.message_lost = False  # the last write of the maint file left it empty (no space)
        # autoflush: every change is durable before the call returns, and before its events
        # reach a handler — except inside ``observe(defer=True)`` (see there); ``dirty`` is set
        # while something waits for ``flush``.
        self.autoflush = True
        self.deferred_saves = False  # a task flushes when ``dirty`` is set (``note``)
        self.dirty = anyio.Event()
        self._dirty = False
        self._durable = True
        self._file_at_decision = False
        self._reactions: _Reactions | None = None

    # --- state -------------------------------------------------------------------------

    def load(self) -> str | None:
        """Load the saved state; returns a warning when the file had to be discarded."""
        self.state, warning = self.store.load()
        self._refresh_snapshot()
        return warning

    def update(self, **changes: Any) -> None:
        """Change non-hold parts of the state and save it."""
        self.state = replace(self.state, **changes)
        self._changed()

    def note(self, **changes: Any) -> None:
        """Change informational parts of the state (the jobs' last results) and save them
        soon: with the service's persist task running, on its next flush, without fsync and
        together with whatever else changed meanwhile (a burst of jobs finishing costs one
        write, not an fsync each; a crash loses at most a last result). Otherwise now."""
        self.state = replace(self.state, **changes)
        if not self.deferred_saves:
            self._changed()
            return
        self._dirty = True
        self._file_at_decision = os.path.lexists(self.paths.maint_file)
        self.dirty.set()

    @property
    def active(self) -> bool:
        return bool(active_holds(self.state.holds, self.clock()))

    def snapshot(self) -> dict[str, Any]:
        """The ``watcher.maintenance`` fields every event carries."""
        return self._snapshot

    def _refresh_snapshot(self) -> None:
        self._snapshot = self._snapshot_of(self.state.holds, self.clock())

    def _snapshot_of(self, holds: tuple[Hold, ...], now: datetime) -> dict[str, Any]:
        content = decide(holds, now, self.default_message)
        return {
            "maintenance": {
                "active": content is not None,
                "holds": [h.to_dict() for h in active_holds(holds, now)],
                "message": content.message if content else None,
            }
        }

    # --- holds -------------------------------------------------------------------------

    def add_hold(self, hold: Hold) -> None:
        """Hold maintenance for a reason (replacing a hold with the same reason and name).

        The truth is read first, so an operator's release that happened just before is
        honoured before the new hold, not undone by it.
        """
        self.observe()
        self._add_hold(hold)

    def _add_hold(self, hold: Hold) -> None:
        self.state = replace(self.state, holds=with_hold(self.state.holds, hold))
        self._refresh_snapshot()
        self.bus.emit(
            "maintenance.hold_added",
            f"maintenance held: {hold.reason} {hold.name}",
            hold=hold.to_dict(),
        )
        self._apply()

    def release(self, reason: str, name: str | None = None, *, why: str = "released") -> bool:
        """Release the matching holds; ``False`` when there were none."""
        gone = [h for h in self.state.holds if h.reason == reason and name in (None, h.name)]
        if not gone:
            return False
        self.state = replace(self.state, holds=tuple(h for h in self.state.holds if h not in gone))
        self._refresh_snapshot()
        for hold in gone:
            self._emit_released(hold, why)
        self._apply()
        return True

    def expire(self, now: datetime | None = None) -> None:
        """Release holds whose ``until`` has passed (by ``now``, or the clock's)."""
        if now is None:
            now = self.clock()
        expired = [h for h in self.state.holds if not h.active(now)]
        if not expired:
            return
        self.state = replace(self.state, holds=tuple(h for h in self.state.holds if h.active(now)))
        self._refresh_snapshot()
        for hold in expired:
            self._emit_released(hold, "expired")
        self._apply()

    def next_deadline(self) -> datetime | None:
        return next_expiry(self.state.holds, self.clock())

    def hold(self, reason: str, name: str) -> Hold | None:
        return next((h for h in self.state.holds if h.key == (reason, name)), None)

    def _emit_released(self, hold: Hold, why: str) -> None:
        self.bus.emit(
            "maintenance.hold_released",
            f"maintenance hold released ({why}): {hold.reason} {hold.name}",
            hold=hold.to_dict(),
            why=why,
        )

    # --- the file ----------------------------------------------------------------------

    def observe(self, *, defer: bool = False) -> Observation:
        """Re-read the truth (does the maint file exist?) and act on what others did.

        Returns ``"unchanged"``, ``"adopt"`` or ``"released"``. With ``defer`` (the service's
        watch), the durable writes wait until ``flush``: what an operator did is already on
        disk (the file exists, or is gone), so the events can reach handlers first.
        """
        if not defer:
            return self._observe()
        self.autoflush = False
        try:
            with self.bus.delivering_now():  # what an operator did is on disk already
                return self._react() or self._observe()
        finally:
            self.autoflush = True

    # --- prepared reactions (the first line of an operator's touch or rm) -------------

    def prepare_reactions(self) -> None:
        """Prepare, for the state of now, the first event of an operator's ``touch`` (no hold
        active: ``maintenance.adopted``) or ``rm`` (holds active: ``released_by_operator``),
        rendered ahead by the handlers (``EventBus.prepare``). Called at idle by the service;
        cheap when nothing changed since the last call.

        ``_react`` uses it while the state, the snapshot and the handlers are still those it
        was made for and no hold has expired since; anything else takes the general path.
        """
        if self._reactions_current():
            return
        now = self.clock()
        holds = self.state.holds
        prepared = self._prepare(holds, now)
        self._reactions = _Reactions(self.state, self._snapshot, next_expiry(holds, now), prepared)

    def _prepare(self, holds: tuple[Hold, ...], now: datetime) -> Prepared | None:
        if any(not h.active(now) for h in holds):
            return None  # expire comes first: the general path
        if not holds:
            return self.bus.prepare(
                *_ADOPTED,
                context=self._snapshot,
                late=("operator_message",),
                **self._adopted_fields(None),
            )
        if self.state.writing:
            return None  # a crash came between the intent and the write: the general path
        return self.bus.prepare(
            *_RELEASED, context=self._snapshot_of((), now), **self._released_fields(holds)
        )

    def _reactions_current(self) -> bool:
        r = self._reactions
        if r is None or r.state is not self.state or r.snapshot is not self._snapshot:
            return False
        return r.prepared is None or r.prepared.current(self.bus)

    def _react(self) -> Observation | None:
        """An operator's ``touch`` or ``rm`` answered from the prepared reaction: its line is
        out before anything else is computed. ``None``: not this case; the general path
        (``_observe``) decides, and nothing was changed here.

        It covers exactly what ``_observe`` would decide first at this state: a regular file
        (not a symlink) appeared that watcher did not write while no hold is active (adopt),
        or the file is gone while holds are active and watcher was not writing (released).
        """
        r = self._reactions
        if r is None or r.prepared is None or not self._reactions_current():
            return None
        if r.until is not None and self.clock() >= r.until:
            return None
        if self.state.holds:  # the prepared reaction is "released": is the file gone?
            if os.access(self._maint_path, os.F_OK, follow_symlinks=False):
                return None  # access: no exception to build (≈ 10 µs less than lstat's ENOENT)
            self._released_by_operator(announced=self.bus.emit_prepared(r.prepared))
            return "released"
        try:  # the prepared reaction is "adopted": did an operator create a regular file?
            st = os.lstat(self._maint_path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or FileStamp.of(st) == self.state.written:
            return None  # a symlink, a FIFO; or watcher's own file a crash kept it from removing
        message = message_from_file(read_small_file(self.paths.maint_file)) if st.st_size else None
        self._adopt(
            self.clock(),
            message,
            announced=self.bus.emit_prepared(r.prepared, operator_message=message),
        )
        return "adopt"

    def _observe(self) -> Observation:
        # One clock reading and one lstat: this runs first on an operator's change, and each
        # step before the first event is a step between the ``touch`` and its log line.
        now = self.clock()
        self.expire(now)
        found = self._stamp()
        exists = found is not None
        verdict = reconcile(exists, self.state.holds, now)
        if verdict == "adopt" and found == self.state.written:
            verdict = "unchanged"  # our own file, which a crash kept us from removing
            self._apply()
        elif verdict == "released" and self.state.writing:
            verdict = "unchanged"  # never written: a crash came between the intent and the write
            self._apply()
        elif verdict == "unchanged" and found and self._replaced_by_someone_else(found):
            verdict = "adopt"
        elif verdict == "unchanged" and not exists and self.state.written is not None:
            self.state = replace(self.state, written=None)  # removed by us; a crash kept the note
            self._changed()
        if verdict == "adopt":
            self._adopt(now)
        elif verdict == "released":
            self._released_by_operator()
        return verdict

    def _stamp(self) -> FileStamp | None:
        try:
            return FileStamp.of(os.lstat(self.paths.maint_file))
        except FileNotFoundError:
            return None

    def _replaced_by_someone_else(self, current: FileStamp) -> bool:
        """The file exists but is not a version watcher wrote (saved over, or edited).

        Told by identity (inode, size, mtime) first; a file whose identity differs but whose
        content is exactly what the holds say is ours (a crash came between the write and
        recording it), and its identity is recorded now.
        """
        if current == self.state.written:
            return False
        content = decide(self.state.holds, self.clock(), self.default_message)
        try:
            ours = content is not None and read_small_file(self.paths.maint_file) == content.render(
                self.tz
            )
        except OSError:
            ours = False
        if ours:
            self.state = replace(self.state, written=current)
            self._changed()
        # No identity recorded (a crash before it was saved) and not our content: unknown,
        # left as it is until the holds change.
        return not ours and self.state.written is not None

    def _adopt(
        self, now: datetime, message: str | None = None, *, announced: Event | None = None
    ) -> None:
        """Adopt the file as a manual hold; ``announced``: ``maintenance.adopted`` is out
        already (``_react``), with ``message`` read from the file."""
        if announced is None:
            message = message_from_file(read_small_file(self.paths.maint_file))
        hold = operator_hold(now, message)
        if announced is None:
            self.bus.emit(*_ADOPTED, **self._adopted_fields(message))
        self._add_hold(hold)

    def _adopted_fields(self, message: str | None) -> dict[str, Any]:
        return {"file": str(self.paths.maint_file), "operator_message": message}

    def _released_by_operator(self, *, announced: Event | None = None) -> None:
        """The file was deleted by someone else: drop every hold, never recreate the file.
        ``announced``: ``maintenance.released_by_operator`` is out already (``_react``)."""
        now = self.clock()
        holds = self.state.holds
        skipped = [
            f"{h.name}@{h.until.isoformat()}" for h in holds if h.reason == "window" and h.until
        ]
        self.state = replace(
            self.state,
            holds=(),
            manual_windows=(),
            skipped=(*self.state.skipped, *skipped),
            disk_armed=self.state.disk_armed and not any(h.reason == "disk" for h in holds),
            written=None,
        )
        self._rendered = None
        self._refresh_snapshot()
        if announced is None:
            self.bus.emit(*_RELEASED, **self._released_fields(holds))
        for hold in holds:
            self._emit_released(hold, "operator")
            if hold.reason == "job":
                self.bus.emit(
                    "maintenance.hold_released",
                    f"job {hold.name} keeps running without maintenance",
                    level="warning",
                    hold=hold.to_dict(),
                    why="operator",
                    job_running=True,
                )
        if self.state.entered_at is not None:
            self._left(now)
        self._changed()
        for callback in self.on_release:
            callback()

    def _released_fields(self, holds: tuple[Hold, ...]) -> dict[str, Any]:
        return {"file": str(self.paths.maint_file), "released": [h.to_dict() for h in holds]}

    def _apply(self) -> None:
        """Decide from the holds; emit entered/left; have the file and state follow."""
        now = self.clock()
        was_active = self.state.entered_at is not None
        content = decide(self.state.holds, now, self.default_message)
        if self.state.written is not None and not os.path.lexists(self.paths.maint_file):
            # The file we wrote is gone: that is an operator's release, not ours to undo.
            self._released_by_operator()
            return
        if content is None and was_active:
            self._left(now)
        elif content is not None and not was_active:
            self.state = replace(self.state, entered_at=now)
            self._refresh_snapshot()
            self.bus.emit(
                "maintenance.entered",
                f"maintenance entered: {content.message}",
                file=str(self.paths.maint_file),
            )
        self._changed()

    def _changed(self) -> None:
        """The state changed: persist it now, or (service) as soon as handlers had the events."""
        self._refresh_snapshot()
        self._dirty = True
        self._file_at_decision = os.path.lexists(self.paths.maint_file)
        if self.autoflush:
            self.flush()
        else:
            self.dirty.set()

    def flush(self, *, create: bool = True) -> None:
        """Make the maint file match the holds and save the state, durably.

        Write-ahead: the state that explains a change (and ``writing``) is saved before the
        file changes, so a crash at any point leaves what ``observe`` recognises as watcher's
        own doing. With ``create=False`` (a deferred flush after an observed operator action)
        the file is only ever updated, never created: if it vanished meanwhile, that is the
        operator's release, observed now instead of undone. Such a flush also skips fsync:
        the operator's action is the durable truth, and a restart that lost these writes
        observes it again and decides the same (fsync under a write burst elsewhere on the
        disk takes tens of milliseconds, which the next event would otherwise wait for).
        """
        if not self._dirty:
            return
        self._dirty = False
        self._durable = create
        content = decide(self.state.holds, self.clock(), self.default_message)
        if content is None:
            if os.path.lexists(self.paths.maint_file):
                ours = self.state.written is not None and self._stamp() == self.state.written
                if not ours or not self._file_at_decision:
                    # Someone else's file (watcher wrote none, or not this one), or one made
                    # since the decision: read it as the operator's, never remove it.
                    self._observe()
                    return
                self._save()
                remove_durably(self.paths.maint_file, durable=self._durable)
            self.state = replace(self.state, written=None)
            self._rendered = None
        else:
            rendered = content.render(self.tz)
            if rendered != self._rendered or self.state.written is None:
                exists = os.path.lexists(self.paths.maint_file)
                if not exists and not create:
                    self._observe()  # removed since the decision: the operator's release
                    return
                self.state = replace(self.state, writing=True)
                self._save()
                written = self._write_file(rendered, update=exists)
                self.state = replace(self.state, writing=False)
                if written is None:  # someone else got there while we wrote
                    if os.path.lexists(self.paths.maint_file):
                        self._adopt(self.clock())  # created meanwhile: an operator's file
                    else:
                        self._observe()  # removed meanwhile: not ours to recreate
                    return
                self.state = replace(self.state, written=written)
                self._rendered = rendered
        self._save()

    def _write_file(self, rendered: bytes, *, update: bool) -> FileStamp | None:
        """Write the maint file; on a full disk, an empty file still means maintenance.

        An ``update`` of an existing file never recreates it, and creating never overwrites
        one: ``None`` when someone removed or created it meanwhile.
        """
        self.paths.maint_file.parent.mkdir(parents=True, exist_ok=True)
        self.message_lost = False
        try:
            if update:
                st = rewrite_existing(self.paths.maint_file, rendered, durable=self._durable)
                return FileStamp.of(st) if st is not None else None
            st = create_new(self.paths.maint_file, rendered, durable=self._durable)
            return FileStamp.of(st) if st is not None else None
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            self._no_space(exc)
            self.message_lost = True
            fd = os.open(self.paths.maint_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                return FileStamp.of(os.fstat(fd))
            finally:
                os.close(fd)

    def _no_space(self, exc: OSError) -> None:
        self.bus.emit(
            "disk.reminder",
            f"watcher could not write its files: {exc.strerror}",
            level="critical",
            error=str(exc),
        )
        for callback in self.on_no_space:
            callback()

    def _left(self, now: datetime) -> None:
        entered = self.state.entered_at
        self.state = replace(self.state, entered_at=None)
        self._refresh_snapshot()
        duration = int((now - entered).total_seconds() * 1e9) if entered else None
        self.bus.emit("maintenance.left", "maintenance left", duration_ns=duration)

    def _save(self) -> None:
        try:
            self.store.save(self.state, durable=self._durable)
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            self._no_space(exc)  # the maint file is the truth; state catches up when it can

    def set_holds_interrupted(self, names: set[str]) -> None:
        """Mark job holds as interrupted (a crash cut their job short)."""
        holds = tuple(
            replace(h, interrupted=True) if h.reason == "job" and h.name in names else h
            for h in self.state.holds
        )
        self.state = replace(self.state, holds=holds)
        self._apply()


def read_small_file(path: Path, limit: int = READ_LIMIT) -> bytes:
    """At most ``limit`` bytes of a regular file, without ever blocking: a FIFO, a device or
    a symlink to one (``/dev/zero``) reads as empty — it still means maintenance."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.read(fd, limit)
    except OSError:
        return b""
    finally:
        os.close(fd)
