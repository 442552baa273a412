"""Prometheus metrics: live state read at scrape time, counters kept from the events.

State (maintenance, holds, disk) is read from the controller and the disk guard when
scraped, so it is never stale; counters and job results come from the bus, subscribed
like a handler. ``text()`` is the exposition format; ``write_textfile`` writes it for
node_exporter's textfile collector (atomically, as that collector requires).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, StateSetMetricFamily
from prometheus_client.registry import Collector

from watcher.core.disklevels import DiskLevel, Reading
from watcher.core.maintenance import REASONS
from watcher.events.record import Event
from watcher.system.atomic import write_atomic

disable_created_metrics()  # type: ignore[no-untyped-call]  # reason: untyped; no *_created series

LEVELS: tuple[DiskLevel, ...] = ("ok", "warn", "maintenance", "critical")


class _StateCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], Mapping[str, Any]],
        disk: Callable[[], tuple[DiskLevel, Reading | None]],
        last_success: dict[str, float],
    ) -> None:
        self.snapshot = snapshot
        self.disk = disk
        self.last_success = last_success

    def collect(self) -> Iterator[Any]:
        m = self.snapshot().get("maintenance", {})
        yield GaugeMetricFamily(
            "watcher_maintenance_active",
            "1 while the maint file should exist",
            value=int(bool(m.get("active"))),
        )
        holds = GaugeMetricFamily("watcher_holds", "active holds by reason", labels=["reason"])
        counts: dict[str, int] = dict.fromkeys(REASONS, 0)
        for hold in m.get("holds", []):
            counts[str(hold.get("reason"))] = counts.get(str(hold.get("reason")), 0) + 1
        for reason, n in sorted(counts.items()):
            holds.add_metric([reason], n)
        yield holds
        level, reading = self.disk()
        if reading is not None:
            yield GaugeMetricFamily(
                "watcher_disk_free_bytes", "bytes free to non-root", value=reading.free
            )
        yield StateSetMetricFamily(
            "watcher_disk_level", "the disk guard's level", value={x: x == level for x in LEVELS}
        )
        jobs = GaugeMetricFamily(
            "watcher_job_last_success_timestamp_seconds",
            "when each job last finished successfully",
            labels=["job"],
        )
        for name, when in sorted(self.last_success.items()):
            jobs.add_metric([name], when)
        yield jobs


class Metrics:
    """The service's metrics registry, fed by the bus (a tap: called with each event)."""

    def __init__(
        self,
        snapshot: Callable[[], Mapping[str, Any]],
        disk: Callable[[], tuple[DiskLevel, Reading | None]],
    ) -> None:
        self.registry = CollectorRegistry()
        self.last_success: dict[str, float] = {}
        self._per_action: dict[str, tuple[Any, ...]] = {}
        self.registry.register(_StateCollector(snapshot, disk, self.last_success))
        r = self.registry
        self.events = Counter("watcher_events", "events emitted", ["action"], registry=r)
        self.triggers = Counter(
            "watcher_triggers", "trigger files by outcome", ["outcome"], registry=r
        )
        self.failures = Counter(
            "watcher_handler_failures", "handler failures", ["handler"], registry=r
        )
        self.duration = Histogram(
            "watcher_job_duration_seconds",
            "job run time",
            ["job"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
            registry=r,
        )

    def __call__(self, event: Event) -> None:
        action = event.action
        counters = self._per_action.get(action)
        if counters is None:
            counters = self._per_action[action] = self._counters_of(action)
        for counter in counters:
            counter.inc()
        if action == "handler.failed":
            handler = event.fields.get("handler") or {}
            self.failures.labels(str(handler.get("name", "?"))).inc()
        elif action in ("job.finished", "job.failed") and event.duration_ns is not None:
            name = str((event.fields.get("job") or {}).get("name", "?"))
            self.duration.labels(name).observe(event.duration_ns / 1e9)
            if action == "job.finished":
                self.last_success[name] = event.time.timestamp()

    def _counters_of(self, action: str) -> tuple[Any, ...]:
        """The counter children an action's events count in, looked up once per action: a
        tap runs on every event, and ``labels()`` takes a lock and builds a key each time."""
        counters = [self.events.labels(action)]
        if action.startswith("trigger."):
            counters.append(self.triggers.labels(action.removeprefix("trigger.")))
        return tuple(counters)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        write_atomic(path, self.text(), durable=False)
