"""The unit parsers: durations, sizes, free-space levels, event levels, times of day, weekdays."""

from __future__ import annotations

from typing import Any

import pytest

from watcher.core.units import (
    Level,
    format_time_of_day,
    parse_bytes,
    parse_count_level,
    parse_duration,
    parse_level,
    parse_time_of_day,
    parse_weekday,
)
from watcher.events.record import LEVELS, Event, level_at_least

KIB, MIB, GIB = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("200ms", 0.2),
        ("30s", 30.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("10 m", 600.0),
        ("10M", 600.0),
        ("0s", 0.0),
        (5, 5.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    """A duration with ms/s/m/h/d units (or a bare number of seconds) parses to seconds."""
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "10", "abc", "10x", "m", "-5s", "5s garbage", -1, True, None, []]
)
def test_parse_duration_rejects(value: object) -> None:
    """Anything that is not a non-negative duration is a ``ValueError`` with a reason."""
    with pytest.raises(ValueError, match=r"\S"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512MiB", 512 * MIB),
        ("2GiB", 2 * GIB),
        ("64KiB", 64 * KIB),
        ("2GB", 2 * 1000**3),
        ("10kb", 10_000),
        ("1.5KiB", 1536),
        ("10 MiB", 10 * MIB),
        ("100", 100),
        ("100b", 100),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_bytes_accepts(value: object, size: int) -> None:
    """Sizes with decimal or binary units (or a bare byte count) parse to bytes."""
    assert parse_bytes(value) == size


@pytest.mark.parametrize("value", ["", "MiB", "10XB", "-1", "ten", -1, 1.5, True, None])
def test_parse_bytes_rejects(value: object) -> None:
    """Anything that is not a non-negative size is a ``ValueError``."""
    with pytest.raises(ValueError, match=r"\S"):
        parse_bytes(value)


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("10%", Level(percent=10.0)),
        ("0.5%", Level(percent=0.5)),
        ("100%", Level(percent=100.0)),
        ("512MiB", Level(amount=512 * MIB)),
        ("10 MiB", Level(amount=10 * MIB)),
        (1000, Level(amount=1000)),
    ],
)
def test_parse_level_accepts(value: object, level: Level) -> None:
    """A free-space level is a percentage of the total or an absolute size."""
    assert parse_level(value) == level


@pytest.mark.parametrize("value", ["150%", "-5%", "abc", "%", "10 percent", True, None])
def test_parse_level_rejects(value: object) -> None:
    """A level that is neither a 0–100 % percentage nor a size is a ``ValueError``."""
    with pytest.raises(ValueError, match=r"level|percentage"):
        parse_level(value)


@pytest.mark.parametrize(
    ("value", "level"),
    [("5%", Level(percent=5.0)), ("1%", Level(percent=1.0)), (1000, Level(amount=1000))],
)
def test_parse_count_level_accepts(value: object, level: Level) -> None:
    """An inode level is a percentage or a plain count."""
    assert parse_count_level(value) == level


@pytest.mark.parametrize("value", ["200%", "abc", "1000", -1, True, 1.5])
def test_parse_count_level_rejects(value: object) -> None:
    """An inode level that is neither a 0–100 % percentage nor a count is a ``ValueError``."""
    with pytest.raises(ValueError, match="inode level"):
        parse_count_level(value)


@pytest.mark.parametrize(
    ("level", "total", "absolute"),
    [
        (Level(percent=10.0), 1000, 100),
        (Level(percent=0.5), 10_000, 50),
        (Level(amount=512), 1_000_000, 512),
        (Level(amount=512), 100, 512),
    ],
)
def test_level_resolve(level: Level, total: int, absolute: int) -> None:
    """A percentage resolves against the filesystem's total; an amount is itself."""
    assert level.resolve(total) == absolute


@pytest.mark.parametrize(("level", "text"), [(Level(percent=10.0), "10%"), (Level(amount=5), "5")])
def test_level_str(level: Level, text: str) -> None:
    """A level prints the way it was written (for error messages)."""
    assert str(level) == text


@pytest.mark.parametrize(
    ("value", "granularity", "minutes"),
    [
        ("00:00", 1, 0),
        ("23:59", 1, 23 * 60 + 59),
        ("02:00", 10, 120),
        ("02:05", 1, 125),
        ("02:05", 5, 125),
        ("12:30", 30, 750),
        (" 03:30 ", 10, 210),
    ],
)
def test_parse_time_of_day_accepts(value: str, granularity: int, minutes: int) -> None:
    """``HH:MM`` on the granularity parses to minutes since midnight."""
    assert parse_time_of_day(value, granularity) == minutes


@pytest.mark.parametrize(
    ("value", "granularity", "reason"),
    [
        ("25:00", 1, "not a time of day"),
        ("24:00", 1, "not a time of day"),
        ("12:60", 1, "not a time of day"),
        ("2:00", 1, "not a time of day"),
        ("0200", 1, "not a time of day"),
        ("", 1, "not a time of day"),
        (200, 1, "HH:MM"),
        ("02:05", 10, "multiple of the granularity"),
        ("12:15", 30, "multiple of the granularity"),
    ],
)
def test_parse_time_of_day_rejects(value: object, granularity: int, reason: str) -> None:
    """A malformed time or one off the granularity is a ``ValueError`` saying which."""
    with pytest.raises(ValueError, match=reason):
        parse_time_of_day(value, granularity)


@pytest.mark.parametrize("minutes", [0, 5, 125, 23 * 60 + 59])
def test_format_time_of_day_round_trips(minutes: int) -> None:
    """Formatting minutes as ``HH:MM`` and parsing them back is the identity."""
    assert parse_time_of_day(format_time_of_day(minutes)) == minutes


@pytest.mark.parametrize(
    ("value", "index"),
    [
        ("mon", 0),
        ("tue", 1),
        ("wed", 2),
        ("thu", 3),
        ("fri", 4),
        ("sat", 5),
        ("sun", 6),
        ("Sun", 6),
        ("MONDAY", 0),
        (" fri ", 4),
    ],
)
def test_parse_weekday_accepts(value: str, index: int) -> None:
    """Weekday names (any case, abbreviated or not) map to 0 = Monday … 6 = Sunday."""
    assert parse_weekday(value) == index


@pytest.mark.parametrize("value", ["xyz", "", "mo", 1, None])
def test_parse_weekday_rejects(value: Any) -> None:
    """Anything that is not a weekday name is a ``ValueError`` listing the valid names."""
    with pytest.raises(ValueError, match="mon, tue"):
        parse_weekday(value)


def test_event_levels_are_ordered() -> None:
    """Event levels order debug < info < warning < error < critical."""
    ordered = sorted(LEVELS, key=LEVELS.__getitem__)
    assert ordered == ["debug", "info", "warning", "error", "critical"]


@pytest.mark.parametrize(
    ("level", "minimum", "passes"),
    [
        ("debug", "info", False),
        ("info", "info", True),
        ("warning", "info", True),
        ("info", "warning", False),
        ("critical", "error", True),
        ("debug", "debug", True),
    ],
)
def test_level_at_least(level: Any, minimum: Any, passes: bool) -> None:
    """An event passes a ``min_level`` filter exactly when its level is at least that level."""
    assert level_at_least(Event("x.y", "m", level=level), minimum) is passes
