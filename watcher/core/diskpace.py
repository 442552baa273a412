"""Disk pacing and forecast (pure): when to sample next, and when the disk will be full.

**Pacing.** A periodic sampler sees a crossing at most one interval late, so a fixed 1 s
interval answers in up to a second, and a fixed 100 ms one costs ten wake-ups a second even
when the disk is nowhere near a level. Instead, each sample says how far free space is above
the nearest threshold that would make the level worse (:func:`disklevels.margins`); the
filesystem cannot close that gap faster than ``max_fill_rate``, so no crossing can happen
before ``margin / max_fill_rate`` — the next sample is due then, clamped between
``fast_interval`` and ``interval``. Far from every level the guard samples once per
``interval`` (sharing the service's one-a-second tick); as free space nears a level the
samples close in, and a crossing at up to ``max_fill_rate`` is seen within
``fast_interval``. A worse level still pending its ``for_samples`` debounce is confirmed
``fast_interval`` later rather than a whole interval later. Inodes are paced the same way at
``MAX_INODE_RATE``.

**Forecast.** Like Prometheus' ``predict_linear``: a least-squares line through the free
space samples of the last ``window`` seconds, extended to the maintenance level. When it
would be reached within the horizon, :func:`forecast` says when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from watcher.core.disklevels import GuardState, Reading, Thresholds, margins

MAX_INODE_RATE = 100_000  # inodes a second: faster than any real workload creates files
MIN_FORECAST_SAMPLES = 5


@dataclass(frozen=True)
class Pace:
    """The sampler's settings, from ``[disk]``."""

    interval: float  # the slowest: far from every level
    fast_interval: float  # the fastest: a crossing is possible now
    max_fill_rate: float  # bytes a second the filesystem can fill at most


def next_delay(state: GuardState, reading: Reading, thresholds: Thresholds, pace: Pace) -> float:
    """Seconds until the next sample should be taken, after ``reading`` left ``state``."""
    if state.candidate is not None:
        return pace.fast_interval  # confirm the pending level now, not a whole interval later
    gaps = margins(reading, thresholds, state.level)
    if not gaps:
        return pace.interval
    rates = (pace.max_fill_rate, MAX_INODE_RATE)
    soonest = min(max(0, gap) / rate for gap, rate in zip(gaps, rates, strict=False))
    return min(pace.interval, max(pace.fast_interval, soonest))


@dataclass(frozen=True)
class Forecast:
    """Free space falls at ``rate`` bytes/s and reaches ``target`` bytes in ``eta`` seconds."""

    eta: float
    rate: float
    target: int


def forecast(
    samples: Sequence[tuple[float, int]], target: int, horizon: float, window: float
) -> Forecast | None:
    """The forecast from ``(time, free bytes)`` samples (oldest first), or ``None`` when free
    space is not falling fast enough to reach ``target`` within ``horizon`` seconds.

    Only samples of the last ``window`` seconds count, and at least
    ``MIN_FORECAST_SAMPLES`` spanning half the window: a rate from two close samples is noise.
    Already at or below ``target`` is not a forecast (the level itself says so).
    """
    if not samples or horizon <= 0:
        return None
    newest = samples[-1][0]
    recent = [(t, free) for t, free in samples if t >= newest - window]
    if len(recent) < MIN_FORECAST_SAMPLES or newest - recent[0][0] < window / 2:
        return None
    rate = _slope(recent)
    now_free = recent[-1][1]
    if rate >= 0 or now_free <= target:
        return None
    eta = (now_free - target) / -rate
    return Forecast(eta=eta, rate=rate, target=target) if eta <= horizon else None


def forecast_window(horizon: float) -> float:
    """The samples a forecast looks back over: a sixth of the horizon, 10 s to 5 min."""
    return min(300.0, max(10.0, horizon / 6))


def _slope(points: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope of free space over time, bytes a second."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_f = sum(f for _, f in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (f - mean_f) for t, f in points) / var
