"""``watcher jobs``: every job, its next scheduled run (and whether it will be skipped), its
last result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from watcher.config import Config
from watcher.core.schedule import DailyJob, blocking_window, next_job_time
from watcher.core.units import format_time_of_day
from watcher.jobs import BUILTIN_JOBS
from watcher.service.state import StateStore, all_windows


def collect(config: Config, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    state, _ = StateStore(config.paths.state).load_readonly()
    windows = all_windows(config, state)
    rows: list[dict[str, Any]] = []
    for job in config.jobs:
        row: dict[str, Any] = {"name": job.name, "type": job.type, "configured": True}
        if job.at is not None:
            at = next_job_time(DailyJob(job.name, job.at, job.days), config.tz, now)
            blocker = blocking_window(windows, config.tz, at)
            row["at"] = format_time_of_day(job.at)
            row["next_run"] = at.astimezone(config.tz).isoformat()
            row["skipped_by"] = blocker.name if blocker else None
        row["last"] = state.jobs.get(job.name)
        rows.append(row)
    configured = {j.name for j in config.jobs}
    for name in BUILTIN_JOBS:
        if name not in configured:
            rows.append(
                {"name": name, "type": name, "configured": False, "last": state.jobs.get(name)}
            )
    return rows


def format_jobs(rows: list[dict[str, Any]]) -> str:
    out = []
    for row in rows:
        head = f"{row['name']:<12} {row['type']:<10}"
        if "next_run" in row:
            skip = (
                f"  — will be SKIPPED (inside window {row['skipped_by']})"
                if row["skipped_by"]
                else ""
            )
            head += f" daily at {row['at']}, next {row['next_run']}{skip}"
        elif row["configured"]:
            head += " on trigger only"
        else:
            head += " built-in, on trigger only"
        out.append(head)
        last = row.get("last")
        if last:
            reason = f" ({last.get('reason')})" if last.get("reason") else ""
            out.append(f"{'':<12} last: {last.get('status')}{reason} at {last.get('finished')}")
    return "\n".join(out)
