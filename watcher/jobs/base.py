"""What a job is: its context, its progress reports, its outcome, and the protocol jobs follow.

The runner (``watcher.service.runner``) owns maintenance holds, queuing, timeouts and events;
a job only does its work. Built-in jobs do their file and database work in a worker
thread (``anyio.to_thread.run_sync``) and report through ``JobContext.progress``, which is
safe to call from that thread. A job signals failure by raising ``JobFailed`` with a
stable ``reason`` string; anything else it raises is reported as ``reason = "error"``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from watcher.config import ArchiveConfig


@dataclass(frozen=True)
class Progress:
    """How far a job has come; totals are 0 when unknown."""

    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    message: str = ""


class JobFailed(Exception):
    """A job ended without doing its work; ``reason`` is a stable name, ``details`` the numbers."""

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.details = details


class ArgumentError(ValueError):
    """A job's arguments (from config or a trigger) are unusable; the message says which and why."""


class MissingArgument(ArgumentError):
    """A required argument is absent (a trigger may still supply what the config leaves out)."""


@dataclass(frozen=True)
class DataPaths:
    """The absolute paths of the data directory's parts that jobs work on."""

    data_dir: Path
    maint_file: Path
    data: Path
    files: Path
    archive_root: Path
    logs: Path
    state: Path


@dataclass
class JobContext:
    """Everything a running job may use."""

    name: str
    type: str
    paths: DataPaths
    args: Mapping[str, Any]
    progress: Callable[[Progress], None] = lambda _p: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    now: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())
    env: Mapping[str, str] = field(default_factory=dict)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)


class Job(Protocol):
    """A job type: built-in, an entry point in ``watcher.jobs``, or ``module:attr`` in config.

    Optional attributes, read with a default: ``path_args`` (arguments naming paths, confined
    by ``[trigger] allowed_paths``; none), ``moves_data`` (restore and archive), and
    ``threads`` (``True``: the job may work in worker threads, so the runner sets
    ``ctx.cancelled`` the moment it is cancelled; a job that only awaits says ``False``), and
    ``start(ctx) -> Awaitable[result]`` (the job begins its work synchronously, in the turn
    of the event loop that starts it, and returns what awaits its end, as ``run`` would: so
    nothing waits between the runner's decision and, say, the fork of a command. The command
    job has it; the runner then awaits that instead of ``run``).
    """

    #: Whether the job holds maintenance while it runs unless the config says otherwise.
    maintenance_default: bool
    #: Whether a run cut short leaves nothing half done. After a crash, a maintenance job that
    #: is not retry-safe keeps its hold (marked interrupted) only if it moves data (restore,
    #: archive); re-running a trigger is decided by the config's ``retry_safe`` alone.
    retry_safe: bool

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """Validated, normalised arguments; raises ``ArgumentError`` naming the bad one."""
        ...

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        """Do the work; return the result details (JSON-serialisable); raise ``JobFailed``."""
        ...
