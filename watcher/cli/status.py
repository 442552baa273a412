"""``watcher status``: what an operator wants to know at a glance, from the files alone."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from watcher.cli.jobs_report import collect as jobs_report
from watcher.config import Config
from watcher.core.maintenance import active_holds, message_from_file
from watcher.core.schedule import next_occurrence
from watcher.core.units import format_time_of_day
from watcher.service.state import StateStore, all_windows
from watcher.sources.disksample import sample
from watcher.system.lock import running_pid


def collect(config: Config) -> dict[str, Any]:
    """The status report as a JSON-ready dict."""
    now = datetime.now(UTC)
    pid = running_pid(config.paths.state / "lock")
    state, _warning = StateStore(config.paths.state).load_readonly()
    maint = config.paths.maint_file
    exists = os.path.lexists(maint)
    try:
        message = message_from_file(maint.read_bytes()) if exists else None
    except OSError:
        message = None
    windows = all_windows(config, state)
    upcoming = sorted((next_occurrence(w, config.tz, now) for w in windows), key=lambda o: o.start)
    reading = sample(config.data_dir)
    return {
        "data_dir": str(config.data_dir),
        "next_window": {
            "name": upcoming[0].name,
            "start": upcoming[0].start.astimezone(config.tz).isoformat(),
            "end": upcoming[0].end.astimezone(config.tz).isoformat(),
        }
        if upcoming
        else None,
        "disk": {"free": reading.free, "total": reading.total, "inodes_free": reading.inodes_free},
        "next_jobs": [
            {"name": r["name"], "at": r["next_run"], "skipped_by": r["skipped_by"]}
            for r in sorted(jobs_report(config, now), key=lambda r: r.get("next_run", ""))
            if "next_run" in r
        ],
        "service": {"running": pid is not None, "pid": pid if pid and pid > 0 else None},
        "maintenance": {
            "active": exists,
            "file": str(maint),
            "message": message,
            "holds": [h.to_dict() for h in active_holds(state.holds, now)],
        },
        "manual_windows": [
            {
                "start": format_time_of_day(w.start),
                "end": format_time_of_day(w.end),
                "message": w.message,
            }
            for w in state.manual_windows
        ],
        "windows": [
            {"name": w.name, "start": format_time_of_day(w.start), "end": format_time_of_day(w.end)}
            for w in config.maintenance.windows
        ],
    }


def format_status(report: dict[str, Any]) -> str:
    """The report as readable lines."""
    service = report["service"]
    maint = report["maintenance"]
    lines = [
        f"data dir:     {report['data_dir']}",
        "service:      "
        + (f"running (pid {service['pid']})" if service["running"] else "not running"),
        "maintenance:  "
        + (f"ON — {maint['message'] or '(no message)'}" if maint["active"] else "off"),
    ]
    for hold in maint["holds"]:
        until = f" until {hold['until']}" if "until" in hold else ""
        note = f" — {hold['message']}" if hold.get("message") else ""
        flag = " [interrupted]" if hold.get("interrupted") else ""
        lines.append(
            f"  hold: {hold['reason']} {hold['name']} since {hold['since']}{until}{flag}{note}"
        )
    for w in report["manual_windows"]:
        lines.append(f"manual window: {w['start']}-{w['end']} daily")
    for w in report["windows"]:
        lines.append(f"window:       {w['name']} {w['start']}-{w['end']}")
    for job in report["next_jobs"]:
        skip = f" (skipped: inside window {job['skipped_by']})" if job["skipped_by"] else ""
        lines.append(f"next job:     {job['name']} {job['at']}{skip}")
    nxt = report["next_window"]
    if nxt:
        lines.append(f"next window:  {nxt['name']} {nxt['start']} – {nxt['end']}")
    disk = report["disk"]
    percent = 100 * disk["free"] / disk["total"] if disk["total"] else 0
    lines.append(
        f"disk:         {disk['free'] // 2**20} MiB free of {disk['total'] // 2**20} MiB "
        f"({percent:.1f}%)"
    )
    return "\n".join(lines)
