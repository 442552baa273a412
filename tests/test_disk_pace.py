"""Disk pacing and forecast (pure): when the next sample is due, and when the disk will be full.

Tables of readings and thresholds in, seconds or forecasts out; no I/O, no clock.
"""

from __future__ import annotations

import pytest

from watcher.core.disklevels import GuardState, Reading, Thresholds, margins
from watcher.core.diskpace import (
    MIN_FORECAST_SAMPLES,
    Pace,
    forecast,
    forecast_window,
    next_delay,
)
from watcher.core.units import parse_level, parse_rate

MiB = 1024**2
GiB = 1024**3
TOTAL = 100 * GiB
LEVELS = Thresholds(
    warn=parse_level("10GiB"),
    maintenance=parse_level("5GiB"),
    critical=parse_level("1GiB"),
    inodes_warn=parse_level("5%"),
    inodes_critical=parse_level("1%"),
)
PACE = Pace(interval=1.0, fast_interval=0.05, max_fill_rate=float(GiB))


def reading(free: int, inodes_free: int | None = None) -> Reading:
    return Reading(free, TOTAL, inodes_free, 1_000_000 if inodes_free is not None else None)


@pytest.mark.parametrize(
    ("free", "level", "expected"),
    [
        (50 * GiB, "ok", [40 * GiB]),  # to warn
        (10 * GiB, "ok", [0]),  # exactly at warn: the next byte crosses it
        (12 * GiB, "warn", [7 * GiB]),  # at warn, the next worse is maintenance
        (4 * GiB, "maintenance", [3 * GiB]),  # then critical
        (GiB // 2, "critical", []),  # nothing worse to enter
        (9 * GiB, "ok", [-GiB]),  # already below warn: pending its debounce
    ],
)
def test_margins_measure_the_distance_to_the_next_worse_level(
    free: int, level: str, expected: list[int]
) -> None:
    """The margin is free space above the nearest threshold that would make the level worse."""
    assert margins(reading(free), LEVELS, level) == expected  # type: ignore[arg-type]


def test_margins_include_inodes_when_the_filesystem_has_them() -> None:
    """Inodes get their own margin, in inodes, to the nearest worse inode level."""
    assert margins(reading(50 * GiB, inodes_free=80_000), LEVELS, "ok") == [40 * GiB, 30_000]


@pytest.mark.parametrize(
    ("free", "state", "expected"),
    [
        (50 * GiB, GuardState(), 1.0),  # 40 GiB away at 1 GiB/s: 40 s, capped at interval
        (10 * GiB + GiB // 2, GuardState(), 0.5),  # half a second of filling away
        (10 * GiB + MiB, GuardState(), 0.05),  # about to cross: the fastest
        (9 * GiB, GuardState("ok", "warn", 1), 0.05),  # a pending warn is confirmed now
        (GiB // 2, GuardState("critical"), 1.0),  # nothing worse: no hurry
        (12 * GiB, GuardState("warn"), 1.0),  # 7 GiB to maintenance
    ],
)
def test_next_delay_closes_in_as_a_crossing_becomes_possible(
    free: int, state: GuardState, expected: float
) -> None:
    """No crossing can come sooner than margin / max_fill_rate: the next sample is due then."""
    assert next_delay(state, reading(free), LEVELS, PACE) == pytest.approx(expected)


def test_next_delay_paces_inodes_too() -> None:
    """A filesystem near an inode level is sampled fast even with plenty of space."""
    near = reading(50 * GiB, inodes_free=50_010)  # 10 inodes above inodes_warn (5 %)
    assert next_delay(GuardState(), near, LEVELS, PACE) == pytest.approx(0.05)


def falling(rate: float, start: int, seconds: int, step: float = 1.0) -> list[tuple[float, int]]:
    """Samples every ``step`` seconds of free space falling at ``rate`` bytes/s."""
    count = int(seconds / step) + 1
    return [(i * step, int(start - rate * i * step)) for i in range(count)]


def test_forecast_extends_the_line_to_the_target() -> None:
    """At 10 MiB/s from 20 GiB, 5 GiB is reached in (15 GiB / 10 MiB/s) from the last sample."""
    samples = falling(10 * MiB, 20 * GiB, 60)
    ahead = forecast(samples, 5 * GiB, horizon=3600, window=60)
    assert ahead is not None
    assert ahead.rate == pytest.approx(-10 * MiB, rel=1e-6)
    assert ahead.eta == pytest.approx((samples[-1][1] - 5 * GiB) / (10 * MiB), rel=1e-6)
    assert ahead.target == 5 * GiB


@pytest.mark.parametrize(
    ("samples", "horizon", "why"),
    [
        (falling(MiB, 20 * GiB, 60), 600, "too slow: the target is hours away"),
        (falling(-10 * MiB, 20 * GiB, 60), 3600, "rising"),
        (falling(0, 20 * GiB, 60), 3600, "steady"),
        (falling(10 * MiB, 20 * GiB, 2), 3600, "too few samples"),
        (falling(10 * MiB, 20 * GiB, 10, step=0.5)[: MIN_FORECAST_SAMPLES + 2], 3600, "too short"),
        (falling(10 * MiB, 4 * GiB, 60), 3600, "already below the target"),
        (falling(10 * MiB, 20 * GiB, 60), 0, "disabled"),
        ([], 3600, "no samples"),
    ],
)
def test_no_forecast_without_a_real_fall_toward_the_target(
    samples: list[tuple[float, int]], horizon: float, why: str
) -> None:
    """Rising, steady, slow, noisy-short or already-low disks give no forecast."""
    assert forecast(samples, 5 * GiB, horizon=horizon, window=60) is None, why


def test_forecast_looks_only_at_the_window() -> None:
    """An old fast fall outside the window does not count once the disk is steady."""
    old_fall = falling(100 * MiB, 50 * GiB, 60)
    steady = [(60.0 + i, old_fall[-1][1]) for i in range(1, 61)]
    assert forecast(old_fall + steady, 5 * GiB, horizon=3600, window=60) is None
    assert forecast(old_fall, 5 * GiB, horizon=3600, window=60) is not None


@pytest.mark.parametrize(("horizon", "window"), [(1800, 300), (300, 50), (30, 10), (86400, 300)])
def test_forecast_window_is_a_sixth_of_the_horizon_within_bounds(
    horizon: float, window: float
) -> None:
    """The look-back is horizon / 6, at least 10 s and at most 5 minutes."""
    assert forecast_window(horizon) == window


@pytest.mark.parametrize(
    ("text", "expected"), [("1GiB/s", float(GiB)), ("200MB/s", 200e6), (" 64KiB/s ", 65536.0)]
)
def test_parse_rate(text: str, expected: float) -> None:
    """A rate is a size per second."""
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["1GiB", "fast", "0B/s", 5, "-1MiB/s"])
def test_parse_rate_rejects_what_is_not_a_rate(text: object) -> None:
    """Anything but a positive size per second is an error with a reason."""
    with pytest.raises(ValueError, match=r"rate|size"):
        parse_rate(text)
