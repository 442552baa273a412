"""``enter --cluster``, ``leave --cluster``, ``status --cluster``: straight to the cluster's Redis.

A cluster change is written in one ``MULTI`` (the hash and the stream entry), so every host's
watcher sees it at once; it never goes through the local service. Redis unreachable: a
``ClusterUnreachable`` with one line naming the (redacted) URL and the reason; nothing changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import orjson

from watcher.config import Config
from watcher.core.cluster import ClusterHold, ClusterWindow
from watcher.core.units import format_time_of_day, parse_duration
from watcher.service.operations import (
    CLI_HOLD,
    MAX_FOR,
    MAX_MESSAGE,
    RequestError,
    parse_until,
    parse_window,
)
from watcher.sources.cluster import ClusterStore

T = TypeVar("T")


def _run(config: Config, work: Callable[[ClusterStore], Awaitable[T]]) -> T:
    async def main() -> T:
        store = ClusterStore(config.cluster)
        try:
            return await work(store)
        finally:
            await store.aclose()

    return anyio.run(main)


def enter(config: Config, request: Mapping[str, Any]) -> str:
    """Set a fleet-wide hold (or daily window) in Redis; raises ``ClusterUnreachable``."""
    cluster = config.cluster
    now = datetime.now(UTC)
    message = str(request.get("message") or "")[:MAX_MESSAGE] or None
    if request.get("window"):
        if request.get("for") or request.get("until"):
            raise RequestError("--window repeats daily until `leave`: it takes no --for/--until")
        local = parse_window(str(request["window"]), config.maintenance.granularity)
        window = ClusterWindow(local.start, local.end, message)
        _run(
            config,
            lambda s: s.change(
                "window", name=window.name, value=window.to_json(), host=cluster.host_id
            ),
        )
        span = f"{format_time_of_day(window.start)}-{format_time_of_day(window.end)}"
        return (
            f"fleet {cluster.name}: daily window {span} added on every host; "
            "it repeats until `watcher leave --cluster`"
        )
    until = None
    if request.get("for"):
        try:
            seconds = parse_duration(request["for"])
            if not 0 < seconds <= MAX_FOR:
                raise ValueError("must be more than zero and at most a year")
        except ValueError as exc:
            raise RequestError(f"--for: {exc}") from None
        until = now + timedelta(seconds=seconds)
    elif request.get("until"):
        until = parse_until(str(request["until"]), now, config.tz)
        if until <= now:
            raise RequestError("--until is in the past")
    hold = ClusterHold(CLI_HOLD, since=now, until=until, message=message, by=cluster.host_id)
    _run(config, lambda s: s.change("hold", name=hold.name, value=hold.to_json(), host=hold.by))
    end = (
        f"until {until.astimezone(config.tz).isoformat(timespec='minutes')}"
        if until
        else "until `watcher leave --cluster`"
    )
    return f"fleet {cluster.name}: maintenance on for every host {end}"


def leave(config: Config) -> str:
    """Release every fleet-wide hold and window, on every host."""

    async def work(store: ClusterStore) -> tuple[int, int]:
        counts = await store.counts()
        await store.change("clear", host=config.cluster.host_id)
        return counts

    holds, windows = _run(config, work)
    if not holds and not windows:
        return f"fleet {config.cluster.name}: no cluster maintenance to release"
    return (
        f"fleet {config.cluster.name}: {holds} holds and {windows} windows released on every host"
    )


def fleet(config: Config) -> dict[str, Any]:
    """Every host's last heartbeat and liveness, and the cluster's holds and windows."""
    hosts, alive, snapshot = _run(config, lambda s: s.fleet())
    rows = []
    for host in sorted(hosts):
        try:
            beat = orjson.loads(hosts[host])
        except orjson.JSONDecodeError:
            beat = {}
        rows.append({"host": host, "alive": alive.get(host, False), **beat, "host_id": host})
    return {
        "cluster": {"name": config.cluster.name, "url": ClusterStore(config.cluster).where},
        "holds": [orjson.loads(v) for v in snapshot.holds.values()],
        "windows": [orjson.loads(v) for v in snapshot.windows.values()],
        "stream_id": snapshot.newest,
        "hosts": rows,
    }


def format_fleet(report: dict[str, Any]) -> str:
    """The fleet view as lines: the cluster's holds, then one line per host."""
    c = report["cluster"]
    lines = [f"cluster:      {c['name']} at {c['url']} (stream at {report['stream_id']})"]
    for hold in report["holds"]:
        until = f" until {hold['until']}" if hold.get("until") else ""
        note = f" — {hold['message']}" if hold.get("message") else ""
        lines.append(f"  hold: {hold['name']} by {hold['by']} since {hold['since']}{until}{note}")
    for w in report["windows"]:
        span = f"{format_time_of_day(w['start'])}-{format_time_of_day(w['end'])}"
        lines.append(f"  window: {span} daily")
    if not report["hosts"]:
        lines.append("hosts:        none has sent a heartbeat yet")
    for row in report["hosts"]:
        maint = row.get("maintenance", {})
        state = "ON " if maint.get("active") else "off"
        held = f" ({', '.join(maint.get('holds', []))})" if maint.get("holds") else ""
        jobs = ", ".join(row.get("jobs", [])) or "-"
        seen = "alive" if row["alive"] else "SILENT"
        lines.append(
            f"host {row['host_id']}: {seen}, last heartbeat {row.get('at', '?')}, "
            f"maintenance {state}{held}, disk {row.get('disk', '?')}, job {jobs}"
        )
    return "\n".join(lines)
