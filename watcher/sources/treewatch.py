"""``fs.changed``: batched changes anywhere in the data tree, for debugging (DESIGN §5a).

watchfiles (Rust ``notify``) watches the tree recursively on its own inotify instance, so
a burst here can never overflow the queue that carries the maint file and the spool. It
only runs when some handler actually wants ``fs.changed`` at ``debug`` level: watching a
100k-file tree costs start-up time and a worker thread that wakes every ``step``, which
the default config should not pay for. watcher's own writes (state, spool, logs, the maint
file) are filtered out. A large batch is summarised (counts plus the first paths) and its
conversion is broken into chunks so the event loop is never held for long.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from watchfiles import Change, awatch

from watcher.config import Config
from watcher.events.bus import EventBus
from watcher.events.record import Event

STEP_MS = 500
MAX_PATHS = 50


class TreeFilter:
    """Ignore watcher's own paths; keep everything else (no editor-file heuristics)."""

    def __init__(self, config: Config) -> None:
        p = config.paths
        self.ignored = tuple(str(d) + os.sep for d in (p.state, p.spool, p.logs))
        self.maint = str(p.maint_file)

    def __call__(self, _change: Change, path: str) -> bool:
        return path != self.maint and not path.startswith(self.ignored)


def wanted(bus: EventBus) -> bool:
    """Whether any handler would receive a debug ``fs.changed`` event."""
    probe = Event(action="fs.changed", message="", level="debug")
    return any(sub.wants(probe) for sub in bus.subscriptions)


async def watch_tree(
    config: Config, bus: EventBus, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Emit ``fs.changed`` for each batch of changes in the data tree until cancelled."""
    stop = anyio.Event()
    root = config.data_dir
    task_status.started()
    try:
        async for changes in awatch(
            root,
            watch_filter=TreeFilter(config),
            step=STEP_MS,
            stop_event=stop,
            force_polling=config.watch.mode == "poll",
            ignore_permission_denied=True,
        ):
            await _report(bus, root, changes)
    finally:
        stop.set()


async def _report(bus: EventBus, root: Path, changes: set[tuple[Change, str]]) -> None:
    counts: Counter[str] = Counter()
    paths: list[str] = []
    for i, (change, path) in enumerate(changes):
        counts[change.name] += 1
        if len(paths) < MAX_PATHS:
            paths.append(path.removeprefix(f"{root}{os.sep}"))
        if i % 2000 == 1999:
            await anyio.lowlevel.checkpoint()  # let latency-critical work in between
    bus.emit(
        "fs.changed",
        f"{len(changes)} changes in the data directory",
        level="debug",
        changes=dict(counts),
        paths=paths,
        truncated=len(changes) > len(paths),
    )
