"""What the HTTP listener shows, gathered from the running service (a ``web.StatusSource``).

Live state comes from the controller and disk guard; the 24-hour timeline, the disk chart,
job results and recent events from the history file, read in a worker thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from watcher.config import Config
from watcher.core.schedule import DailyJob, next_job_time
from watcher.core.timeline import intervals
from watcher.service.controller import Controller
from watcher.service.diskguard import DiskGuard, thresholds_of
from watcher.service.metrics import Metrics
from watcher.system import historydb

DAY = 86400.0
RECENT = 30


class ServiceView:
    """The service's state for the status page and ``/metrics``."""

    def __init__(
        self,
        config: Callable[[], Config],
        controller: Controller,
        disk: DiskGuard,
        metrics: Metrics,
        history: Path,
    ) -> None:
        self.config = config
        self.controller = controller
        self.disk = disk
        self._metrics = metrics
        self.history = history

    def metrics(self) -> bytes:
        return self._metrics.text()

    async def status(self) -> dict[str, Any]:
        now = time.time()
        active = bool(self.controller.snapshot()["maintenance"]["active"])
        stored = await anyio.to_thread.run_sync(self._stored, now)
        changes = [
            (r.time, bool(r.document.get("watcher", {}).get("maintenance", {}).get("active")))
            for r in stored["maintenance"]
        ]
        config = self.config()
        reading = self.disk.reading
        thresholds = thresholds_of(config)
        total = reading.total if reading else 0
        return {
            "now": now,
            "timezone": config.timezone,
            "data_dir": str(config.data_dir),
            "maintenance": self.controller.snapshot()["maintenance"],
            "timeline": intervals(changes, now - DAY, now, active),
            "disk": {
                "level": self.disk.state.level,
                "free": reading.free if reading else None,
                "total": total or None,
                "thresholds": {
                    "warn": thresholds.warn.resolve(total),
                    "maintenance": thresholds.maintenance.resolve(total),
                    "critical": thresholds.critical.resolve(total),
                }
                if total
                else {},
                "samples": [(t, f) for t, f, _total in stored["samples"]],
            },
            "jobs": self._jobs(config, stored["jobs"]),
            "events": [
                {"time": r.time, "action": r.action, "level": r.level, "message": r.message}
                for r in stored["recent"]
            ],
        }

    def _stored(self, now: float) -> dict[str, list[Any]]:
        empty: dict[str, list[Any]] = {"maintenance": [], "samples": [], "jobs": [], "recent": []}
        try:
            db = historydb.connect(self.history)
        except FileNotFoundError:
            return empty
        try:
            since = now - DAY
            return {
                "maintenance": historydb.events(db, since=since, action="maintenance.*"),
                "samples": list(historydb.samples(db, since=since)),
                "jobs": historydb.events(db, since=now - 7 * DAY, action="job.*"),
                "recent": historydb.events(db, since=since, limit=RECENT),
            }
        except sqlite3.Error:
            return empty
        finally:
            db.close()

    def _jobs(self, config: Config, rows: list[historydb.Row]) -> list[dict[str, Any]]:
        last: dict[str, historydb.Row] = {}
        for r in rows:
            if r.action in ("job.finished", "job.failed", "job.interrupted", "job.skipped"):
                name = r.document.get("watcher", {}).get("job", {}).get("name")
                if name:
                    last[name] = r
        out = []
        now = datetime.now(config.tz)
        for job in config.jobs:
            row: dict[str, Any] = {"name": job.name}
            if job.at is not None:
                at = next_job_time(DailyJob(job.name, job.at, job.days), config.tz, now)
                row["next_run"] = at.isoformat() if at else None
            if job.name in last:
                row["last_outcome"] = last[job.name].action.removeprefix("job.")
                row["last_time"] = last[job.name].time
            out.append(row)
        return out
