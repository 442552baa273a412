"""The scheduler: carries out what ``watcher.core.schedule.plan`` says is due.

It keeps one bookmark, ``planned_until`` in the state: everything scheduled up to there
has been acted on, and ``fired`` remembers the keys, so a restart or a wall-clock jump
backwards never fires anything twice, and a jump forwards (or downtime) reports what was
missed instead of skipping it silently (``job.skipped`` with ``reason = "missed"``).
Sleeps are capped at a minute, so a stepped clock is noticed within one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import anyio
from anyio.abc import TaskStatus

from watcher.config import Config
from watcher.core.maintenance import Hold
from watcher.core.schedule import (
    DailyJob,
    Due,
    Occurrence,
    Window,
    next_wakeup,
    open_occurrences,
    plan,
)
from watcher.events.bus import EventBus
from watcher.jobs import job_type
from watcher.jobs.base import ArgumentError
from watcher.service.controller import Clock, Controller
from watcher.service.runner import JobRunner, request_for
from watcher.service.state import all_windows

MAX_SLEEP = 60.0
MAX_CATCH_UP = timedelta(days=2)
BOOKMARK_EVERY = timedelta(minutes=10)
REMEMBERED = 256


def windows_of(config: Config, controller: Controller) -> list[Window]:
    """Configured windows and the operator's recurring manual windows."""
    return all_windows(config, controller.state)


def jobs_of(config: Config) -> list[DailyJob]:
    return [DailyJob(j.name, j.at, j.days) for j in config.jobs if j.at is not None]


def skip_key(occurrence: Occurrence) -> str:
    """How an operator-released occurrence is remembered (see ``Controller``)."""
    return f"{occurrence.name}@{occurrence.end.isoformat()}"


class Scheduler:
    """Opens and closes windows and starts scheduled jobs on time."""

    def __init__(
        self,
        config: Callable[[], Config],
        bus: EventBus,
        controller: Controller,
        runner: JobRunner,
        clock: Clock,
    ) -> None:
        self.config = config
        self.bus = bus
        self.controller = controller
        self.runner = runner
        self.clock = clock
        self._wake = anyio.Event()

    def poke(self) -> None:
        """Plan again now (manual windows or config changed)."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.open_current()
        task_status.started()
        while True:
            self._wake = anyio.Event()
            self.step()
            delay = self._delay()
            with anyio.move_on_after(delay):
                await self._wake.wait()

    def _delay(self) -> float:
        cfg = self.config()
        now = self.clock()
        wake = next_wakeup(
            windows_of(cfg, self.controller),
            jobs_of(cfg),
            cfg.tz,
            timedelta(seconds=cfg.maintenance.notice),
            now,
        )
        if wake is None:
            return MAX_SLEEP
        return min(max((wake - now).total_seconds(), 0.0), MAX_SLEEP)

    def open_current(self) -> None:
        """Hold maintenance for every window open right now (e.g. started mid-window)."""
        cfg = self.config()
        for occurrence in open_occurrences(windows_of(cfg, self.controller), cfg.tz, self.clock()):
            self._open(occurrence, late=False, announce=True)

    def step(self) -> None:
        """Act on everything due since the bookmark."""
        cfg = self.config()
        now = self.clock()
        state = self.controller.state
        since = state.planned_until or now
        if since > now:
            since = now  # the clock stepped back: `fired` keeps anything from running twice
        if since < now - MAX_CATCH_UP:
            since = now - MAX_CATCH_UP
        dues = plan(
            windows_of(cfg, self.controller),
            jobs_of(cfg),
            cfg.tz,
            timedelta(seconds=cfg.maintenance.notice),
            since,
            now,
            done=frozenset(state.fired),
        )
        for due in dues:
            self._act(due, now)
        bookmark = state.planned_until
        if dues or bookmark is None or bookmark > now or now - bookmark >= BOOKMARK_EVERY:
            fired = (*self.controller.state.fired, *(d.key for d in dues))[-REMEMBERED:]
            self.controller.update(planned_until=now, fired=fired)

    def _act(self, due: Due, now: datetime) -> None:
        occurrence = due.occurrence
        if due.kind == "window.upcoming" and occurrence is not None and not due.late:
            self.bus.emit(
                "window.upcoming",
                f"maintenance window {due.name} opens at {occurrence.start.isoformat()}",
                window=_window_fields(occurrence),
            )
        elif due.kind == "window.opened" and occurrence is not None:
            self._open(occurrence, late=due.late, announce=True)
        elif due.kind == "window.closed" and occurrence is not None:
            self._close(occurrence, late=due.late)
        elif due.kind == "job.due":
            self._start_job(due.name)
        elif due.kind == "job.skipped":
            self._skipped(due)

    def _open(self, occurrence: Occurrence, *, late: bool, announce: bool) -> None:
        now = self.clock()
        held = self.controller.hold("window", occurrence.name)
        if held is not None and held.until == occurrence.end:
            return  # already open (restart, or a second look)
        fields: dict[str, Any] = {"window": _window_fields(occurrence), "late": late}
        if occurrence.end <= now:
            why = (
                "lies wholly in a DST gap today (zero length)"
                if occurrence.start == occurrence.end
                else "was missed (clock jump or downtime)"
            )
            self.bus.emit(
                "window.opened",
                f"maintenance window {occurrence.name} {why}",
                level="warning",
                held=False,
                **fields,
            )
            return
        if skip_key(occurrence) in self.controller.state.skipped:
            self.bus.emit(
                "window.opened",
                f"maintenance window {occurrence.name} skipped: released by an operator",
                held=False,
                **fields,
            )
            return
        if announce:
            self.bus.emit(
                "window.opened", f"maintenance window {occurrence.name} opened", held=True, **fields
            )
        self.controller.add_hold(
            Hold(
                "window",
                occurrence.name,
                since=occurrence.start,
                until=occurrence.end,
                message=occurrence.message,
            )
        )

    def _close(self, occurrence: Occurrence, *, late: bool) -> None:
        held = self.controller.hold("window", occurrence.name)
        if held is not None and held.until == occurrence.end:
            self.controller.release("window", occurrence.name, why="window closed")
        self.bus.emit(
            "window.closed",
            f"maintenance window {occurrence.name} closed",
            window=_window_fields(occurrence),
            late=late,
        )

    def _start_job(self, name: str) -> None:
        cfg = self.config()
        job = cfg.job(name)
        if job is None:
            return
        try:
            request = request_for(job, job_type(job.type), source="schedule")
        except ArgumentError as exc:
            self.bus.emit(
                "job.failed",
                f"scheduled job {name} not started: {exc}",
                level="error",
                job={"name": name, "type": job.type, "source": "schedule"},
                reason="bad_args",
            )
            return
        self.runner.submit(request)

    def _skipped(self, due: Due) -> None:
        window = due.occurrence
        why = (
            f"inside maintenance window {window.name}"
            if due.reason == "window" and window is not None
            else "its time passed while the clock jumped or the service was down"
        )
        self.bus.emit(
            "job.skipped",
            f"scheduled job {due.name} skipped: {why}",
            level="warning" if due.reason == "missed" else "info",
            job={"name": due.name, "source": "schedule", "at": due.at.isoformat()},
            reason=due.reason,
            window=_window_fields(window) if window is not None else None,
        )


def _window_fields(occurrence: Occurrence) -> dict[str, str | None]:
    return {
        "name": occurrence.name,
        "start": occurrence.start.isoformat(),
        "end": occurrence.end.isoformat(),
        "message": occurrence.message,
    }
