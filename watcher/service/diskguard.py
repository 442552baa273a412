"""The disk guard in the service: samples, levels, events and the disk hold.

Each sample goes through the pure ``watcher.core.disklevels.step`` (debounce, hysteresis); a level
change is an event (``disk.ok`` / ``disk.warn`` / ``disk.maintenance`` /
``disk.critical``) carrying free, total and the thresholds, and a reminder repeats
while not OK. ``maintenance`` and ``critical`` hold maintenance (reason ``disk``); after an
operator release the hold re-arms only once the disk has recovered (DESIGN §3).
``disk.critical`` is what a ``command`` handler acts on to stop the application.

The next sample is paced by the pure ``watcher.core.diskpace.next_delay`` (``delay``): a
whole ``interval`` while far from every level, down to ``fast_interval`` when a crossing at
``max_fill_rate`` is possible or a pending level needs its confirmation. The samples of the
last minutes feed ``disk.forecast`` (``watcher.core.diskpace.forecast``): free space
falling fast enough to reach the maintenance level within ``forecast_horizon``; said once,
and again only after the forecast has cleared (with a margin: half the horizon again).

A local filesystem is sampled directly on the service's tick (``statvfs`` returns at
once); a network or FUSE filesystem is sampled in a worker thread with a timeout, and a
sample that times out — or any sample that fails (the data dir gone, ESTALE) — is a
``disk.unavailable`` event, once per outage, and the guard tries again on the next tick.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from watcher.config import Config
from watcher.core.disklevels import GuardState, Reading, Thresholds, raw_level, reminder_due, step
from watcher.core.diskpace import Pace, forecast, forecast_window, next_delay
from watcher.core.maintenance import Hold
from watcher.events.bus import EventBus
from watcher.events.record import Level
from watcher.service.controller import Controller
from watcher.sources.disksample import filesystem_type, is_network_fs, sample, sample_with_timeout

HISTORY = 1200  # samples kept for the forecast (at most 2 a second: 10 minutes)
HISTORY_STEP = 0.5  # seconds between kept samples

_EVENT_LEVEL: dict[str, Level] = {
    "ok": "info",
    "warn": "warning",
    "maintenance": "error",
    "critical": "critical",
}


def thresholds_of(config: Config) -> Thresholds:
    d = config.disk
    return Thresholds(
        warn=d.warn,
        maintenance=d.maintenance,
        critical=d.critical,
        inodes_warn=d.inodes_warn,
        inodes_critical=d.inodes_critical,
        for_samples=d.for_samples,
    )


class DiskGuard:
    """Watches free space and inodes of the data directory's filesystem."""

    def __init__(self, config: Callable[[], Config], bus: EventBus, controller: Controller) -> None:
        self.config = config
        self.bus = bus
        self.controller = controller
        self.path = config().data_dir
        self.fstype = filesystem_type(self.path)
        self.network = is_network_fs(self.fstype)
        self.state = GuardState()
        self.reading: Reading | None = None
        self._last_event = time.monotonic()
        self._in_flight = threading.Lock()
        self._unavailable: str | None = None
        self.first = True
        self.delay = config().disk.interval  # until the next sample (set by every reading)
        self.history: deque[tuple[float, int]] = deque(maxlen=HISTORY)  # (monotonic, free)
        self._forecast_armed = True

    def tick(self) -> None:
        """Sample now (local filesystems) and act on the reading."""
        try:
            reading = sample(self.path)
        except OSError as exc:  # the data dir vanished, ESTALE, EIO: say so, try again later
            self._cannot_sample(f"{exc.strerror or exc}")
            return
        self.apply(reading)

    async def sample_async(self) -> None:
        """Sample off the event loop with a timeout (network filesystems)."""
        try:
            reading = await sample_with_timeout(
                self.path, self.config().disk.timeout, in_flight=self._in_flight
            )
        except OSError as exc:
            self._cannot_sample(f"{exc.strerror or exc}")
            return
        if reading is None:
            self._cannot_sample(f"timed out after {self.config().disk.timeout:g}s")
            return
        self.apply(reading)

    def _cannot_sample(self, reason: str) -> None:
        """``disk.unavailable`` once per outage (and again at the reminder interval)."""
        self.delay = self.config().disk.interval
        now = time.monotonic()
        if self._unavailable == reason and now - self._last_event < self.config().disk.reminder:
            return
        self._unavailable, self._last_event = reason, now
        self.bus.emit(
            "disk.unavailable",
            f"cannot sample {self.path} ({self.fstype}): {reason}",
            level="error",
            disk={"path": str(self.path), "fstype": self.fstype},
            reason=reason,
        )

    def apply(self, reading: Reading) -> None:
        """Feed one reading through the level logic; emit and hold as it says.

        The first reading also settles what a restart carried over: a disk hold, or an
        operator's release. A recovered disk releases the hold and re-arms; a disk still low
        keeps the hold (the guard starts at that level, to be left by hysteresis) or stays
        released. Otherwise levels are entered with the usual debounce.
        """
        self.reading = reading
        self._unavailable = None
        config = self.config()
        thresholds = thresholds_of(config)
        now = time.monotonic()
        self._remember(now, reading)
        if self.first:
            self.first = False
            level = raw_level(reading, thresholds)
            if level in ("ok", "warn"):
                self._hold(level)
            elif self.controller.hold("disk", "space") is not None:
                self.state = GuardState(level=level)
                self._pace(reading, thresholds)
                return
        self.state, changed = step(self.state, reading, thresholds)
        self._pace(reading, thresholds)
        if changed is not None:
            self._emit_level(changed, reading, thresholds)
            self._hold(changed)
        elif reminder_due(self.state.level, self._last_event, now, config.disk.reminder):
            self._last_event = now
            self.bus.emit(
                "disk.reminder",
                f"disk still {self.state.level}: {_human(reading.free)} free",
                level=_EVENT_LEVEL[self.state.level],
                disk=self.fields(reading, thresholds),
            )
        self._forecast(reading, thresholds)

    def _pace(self, reading: Reading, thresholds: Thresholds) -> None:
        d = self.config().disk
        pace = Pace(d.interval, d.fast_interval, d.max_fill_rate)
        self.delay = next_delay(self.state, reading, thresholds, pace)

    def _remember(self, now: float, reading: Reading) -> None:
        if not self.history or now - self.history[-1][0] >= HISTORY_STEP:
            self.history.append((now, reading.free))

    def _forecast(self, reading: Reading, thresholds: Thresholds) -> None:
        """``disk.forecast`` once when the maintenance level is near at the current rate."""
        horizon = self.config().disk.forecast_horizon
        if horizon <= 0 or self.state.level in ("maintenance", "critical"):
            return
        target = thresholds.maintenance.resolve(reading.total)
        window = forecast_window(horizon)
        if not self._forecast_armed:
            if forecast(self.history, target, horizon * 1.5, window) is None:
                self._forecast_armed = True
            return
        ahead = forecast(self.history, target, horizon, window)
        if ahead is None:
            return
        self._forecast_armed = False
        when = self.controller.clock() + timedelta(seconds=ahead.eta)
        self.bus.emit(
            "disk.forecast",
            f"disk fills to the maintenance level ({_human(target)} free) in about "
            f"{_duration(ahead.eta)} at {_human(int(-ahead.rate))}/s",
            level="warning",
            disk=self.fields(reading, thresholds),
            forecast={
                "level": "maintenance",
                "eta": round(ahead.eta, 1),
                "at": when.isoformat(),
                "fill_rate": round(-ahead.rate),
                "horizon": horizon,
            },
        )

    def _emit_level(self, level: str, reading: Reading, thresholds: Thresholds) -> None:
        self._last_event = time.monotonic()
        self.bus.emit(
            f"disk.{level}",
            f"disk {level}: {_human(reading.free)} free of {_human(reading.total)}",
            level=_EVENT_LEVEL[level],
            disk=self.fields(reading, thresholds),
        )

    def _hold(self, level: str) -> None:
        if level in ("maintenance", "critical"):
            if self.controller.state.disk_armed and self.controller.hold("disk", "space") is None:
                self.controller.add_hold(
                    Hold(
                        "disk",
                        "space",
                        since=self.controller.clock(),
                        message="The system is under maintenance: disk space is low.",
                    )
                )
            return
        self.controller.release("disk", "space", why="disk recovered")
        if not self.controller.state.disk_armed:
            self.controller.update(disk_armed=True)

    def fields(self, reading: Reading, thresholds: Thresholds) -> dict[str, Any]:
        total, inodes = reading.total, reading.inodes_total or 0
        return {
            "path": str(self.path),
            "level": self.state.level,
            "free": reading.free,
            "total": reading.total,
            "inodes_free": reading.inodes_free,
            "inodes_total": reading.inodes_total,
            "thresholds": {
                "warn": thresholds.warn.resolve(total),
                "maintenance": thresholds.maintenance.resolve(total),
                "critical": thresholds.critical.resolve(total),
                "inodes_warn": thresholds.inodes_warn.resolve(inodes),
                "inodes_critical": thresholds.inodes_critical.resolve(inodes),
            },
        }


def _human(amount: int) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if amount >= size:
            return f"{amount / size:.1f} {unit}"
    return f"{amount} B"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
