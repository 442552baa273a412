"""Watching the two latency-critical flat directories: the maint file's and the spool's.

Why this mechanism (measured, see README "Performance" and bench/): an event-driven
inotify reader (asyncinotify) on its **own** inotify instance costs nothing while idle,
reports a change in about a millisecond, and cannot be flooded by a burst of writes
elsewhere in the data tree, because the kernel's event queue is per instance and this
one only has these few watches. watchfiles' loop wakes every ``step`` even when idle
(p99 ≈ 100 ms at its defaults, ≈ 4 ms only at 2.5 % idle CPU), so it is not used here.

Events are hints; the file system is the truth (DESIGN §5a). Each directory's callback
is told *that* something happened there (and the name, when known); it then re-reads
the truth. The service's tick (``poll_interval``, at most 1 s) calls ``rearm`` and re-reads
regardless, which also covers polling mode and lost events (queue overflow).

Reading: the inotify descriptor stays registered with the loop for the service's life, and
its reader callback reads one buffer (``os.read``, up to ``READ_SIZE``) and dispatches every
event in it right there — no task switch, no re-registering the descriptor per read (which
asyncinotify's ``get()`` does), no enum or ``Path`` per event. asyncinotify still opens the
instance and adds/removes watches. Repeated events for the same name in one read (``touch``
is CREATE then CLOSE_WRITE) reach the callback once, so an operator's change is re-read
once and its events reach the handlers sooner (issue 15). A large burst is read in several
buffers, each its own loop callback, so other work runs between them.

Supervision: a directory renamed away with another already in its place (a restore's swap
of ``mw/data``: ``IN_MOVE_SELF``) is re-armed on the new one at once, silently. One that is
deleted (``IN_DELETE_SELF``/``IN_IGNORED``) is reported even when it was made again at once
(then restored at once); one that does not exist or vanishes is re-armed when it reappears, checked
on every tick with back-off on failure; the inotify watch limit (ENOSPC) or no inotify at
all falls back to polling. Each fallback is a ``watch.degraded`` event and each recovery
``watch.restored``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from asyncinotify import Inotify, Mask

from watcher.events.bus import EventBus

DIR_MASK = (
    Mask.CREATE
    | Mask.DELETE
    | Mask.MOVED_TO
    | Mask.MOVED_FROM
    | Mask.CLOSE_WRITE
    | Mask.ATTRIB
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
)
MAX_BACKOFF = 30.0
READ_SIZE = 64 * 1024  # bytes per read: ~2000 events with short names
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
_OVERFLOW = int(Mask.Q_OVERFLOW)
_GONE = int(Mask.IGNORED | Mask.DELETE_SELF | Mask.MOVE_SELF)
_MOVED_AWAY = int(Mask.MOVE_SELF)
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()

# on_change(name, complete): name None means "anything may have changed: rescan";
# complete means the file was renamed into place or closed by its writer.
DirCallback = Callable[[str | None, bool], None]
COMPLETE = int(Mask.MOVED_TO | Mask.CLOSE_WRITE)


@dataclass
class WatchedDir:
    """One directory, what to call when it changes, and its watch (if armed)."""

    path: Path
    on_change: DirCallback
    watch: Any = None
    wd: int = -1
    retry_at: float = 0.0
    backoff: float = 1.0
    degraded: str | None = None
    names: set[str] = field(default_factory=set)


class FlatWatcher:
    """Event-driven watch of a few flat directories, with polling as the fallback."""

    def __init__(self, bus: EventBus, *, mode: str = "native") -> None:
        self.bus = bus
        self.mode = mode
        self.dirs: list[WatchedDir] = []
        self.inotify: Inotify | None = None
        self._armed: dict[int, WatchedDir] = {}  # by watch descriptor: the armed ones

    def add(self, path: Path, on_change: DirCallback) -> None:
        """Watch ``path`` (flat); ``on_change(name)`` is called on any change in it."""
        self.dirs.append(WatchedDir(path, on_change))

    @property
    def polling(self) -> bool:
        return self.inotify is None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Arm the watches, report ready, then deliver events and ticks until cancelled."""
        if self.mode != "poll":
            self._open()
        self._arm_all()
        try:
            task_status.started()
            await self._read_events()
        finally:
            if self.inotify is not None:
                self.inotify.close()

    def _open(self) -> None:
        try:
            self.inotify = Inotify()
            os.set_blocking(self.inotify.fd, False)  # a spurious wake-up must not block the loop
        except OSError as exc:
            self._degraded(None, f"inotify unavailable ({exc.strerror}); polling", "poll")

    def _arm_all(self) -> None:
        now = anyio.current_time() if self._in_loop() else 0.0
        for d in self.dirs:
            if d.watch is None and now >= d.retry_at:
                self._arm(d, now)

    @staticmethod
    def _in_loop() -> bool:
        try:
            anyio.current_time()
        except RuntimeError:
            return False
        return True

    def _arm(self, d: WatchedDir, now: float) -> None:
        if self.inotify is None:
            return
        try:
            d.watch = self.inotify.add_watch(d.path, DIR_MASK)
        except OSError as exc:
            d.retry_at = now + d.backoff
            d.backoff = min(d.backoff * 2, MAX_BACKOFF)
            if exc.errno == errno.ENOSPC:
                self._degraded(
                    d, "inotify watch limit reached (fs.inotify.max_user_watches)", "poll"
                )
            elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self._degraded(d, "directory does not exist; waiting for it", "wait")
            else:
                self._degraded(d, f"cannot watch: {exc.strerror}", "poll")
            return
        d.backoff = 1.0
        d.wd = d.watch.wd
        self._armed[d.wd] = d
        if d.degraded is not None:
            d.degraded = None
            self.bus.emit(
                "watch.restored",
                f"watching {d.path} again",
                directory=str(d.path),
            )
            d.on_change(None, False)  # scan again once the watch is live

    def _degraded(self, d: WatchedDir | None, reason: str, fallback: str) -> None:
        if d is not None:
            if d.degraded == reason:
                return
            d.degraded = reason
        self.bus.emit(
            "watch.degraded",
            f"watch degraded: {reason}",
            level="warning",
            directory=str(d.path) if d else None,
            reason=reason,
            fallback=fallback,
        )

    async def _read_events(self) -> None:
        if self.inotify is None:
            return
        fd = self.inotify.fd
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._readable, fd)
        try:
            await anyio.sleep_forever()
        finally:
            loop.remove_reader(fd)

    def _readable(self, fd: int) -> None:
        """The loop's reader callback: read one buffer of events and dispatch them."""
        try:
            buffer = os.read(fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        pending: tuple[WatchedDir, str | None, bool] | None = None
        armed = self._armed
        for wd, mask, name in _parse(buffer):
            if mask & _OVERFLOW:
                self._deliver(pending)
                pending = None
                self._overflowed()
                continue
            d = armed.get(wd)
            if d is None:
                continue
            if mask & _GONE:
                self._deliver(pending)
                pending = None
                self._lost(d, moved=bool(mask & _MOVED_AWAY))
                continue
            complete = bool(mask & COMPLETE)
            if pending is not None and pending[0] is d and pending[1] == name:
                pending = (d, name, pending[2] or complete)
            else:
                self._deliver(pending)
                pending = (d, name, complete)
        self._deliver(pending)

    @staticmethod
    def _deliver(pending: tuple[WatchedDir, str | None, bool] | None) -> None:
        if pending is not None:
            d, name, complete = pending
            d.on_change(name, complete)

    def _overflowed(self) -> None:
        self.bus.emit(
            "watch.degraded",
            "inotify queue overflowed; rescanning",
            level="warning",
            reason="queue overflow",
            fallback="rescan",
        )
        for d in self.dirs:
            d.on_change(None, False)

    def _lost(self, d: WatchedDir, *, moved: bool) -> None:
        """The watched directory went away: deleted, or (``moved``) renamed away."""
        if d.watch is not None and self.inotify is not None:
            # The kernel may already have dropped it (IN_IGNORED).
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.inotify.rm_watch(d.watch)
        if self._armed.get(d.wd) is d:
            del self._armed[d.wd]
        d.watch = None
        d.retry_at = 0.0
        replaced = d.path.is_dir() and not d.path.is_symlink()
        if not (moved and replaced):
            self._degraded(d, "directory vanished; waiting for it", "wait")
        if replaced:
            # Moved away with another directory already in its place (a restore's swap of
            # mw/data): watched at once, nothing to report. Deleted and already made again:
            # reported above, and restored (with its rescan) by _arm now.
            self._arm(d, anyio.current_time() if self._in_loop() else 0.0)
            if d.watch is not None:
                if moved:
                    d.on_change(None, False)
                return
        d.on_change(None, False)

    def rearm(self) -> None:
        """Re-arm watches on directories that have (re)appeared; called on every tick."""
        self._arm_all()


def _parse(buffer: bytes) -> list[tuple[int, int, str | None]]:
    """``(wd, mask, name)`` of each ``struct inotify_event`` in a buffer read from inotify.

    Names are decoded as ``os.fsdecode`` does, without its Python-level steps: on an
    operator's ``touch`` this is the first code to run after idle, where each step costs."""
    events = []
    offset, end, size = 0, len(buffer), _HEADER.size
    unpack = _HEADER.unpack_from
    while offset + size <= end:
        wd, mask, _cookie, length = unpack(buffer, offset)
        offset += size
        raw = buffer[offset : offset + length].rstrip(b"\0")
        offset += length
        events.append((wd, mask, raw.decode(_FS_ENCODING, _FS_ERRORS) if raw else None))
    return events
