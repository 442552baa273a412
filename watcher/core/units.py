"""Parsing of the units the configuration speaks: durations, sizes, levels, times of day.

Each parser takes the raw TOML value and returns a plain number (seconds, bytes,
minutes since midnight) or raises ``ValueError`` with a reason an operator can act on.
The configuration loader adds the file and key to that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_duration(value: object) -> float:
    """Seconds from ``"200ms"``, ``"10m"``, ``"1h30m"`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as "30s" or "10m"')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(
                f'{value!r} is not a duration; use a number with ms, s, m, h or d, e.g. "30s"'
            )
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError('expected a duration such as "30s" or "10m"')
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_bytes(value: object) -> int:
    """Bytes from ``"512MiB"``, ``"2GB"``, ``"64KiB"`` or a bare integer."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as "512MiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError('expected a size such as "512MiB"')
    match = _SIZE.fullmatch(value.strip().lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f'{value!r} is not a size; use e.g. "512MiB", "2GB" or a byte count')
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


@dataclass(frozen=True)
class Level:
    """A free-space level: an absolute number of bytes (or inodes), or a percentage of the total."""

    amount: int | None = None
    percent: float | None = None

    def resolve(self, total: int) -> int:
        """The level in absolute units for a filesystem of ``total`` units."""
        if self.percent is not None:
            return int(total * self.percent / 100)
        return self.amount or 0

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.amount}"


def parse_level(value: object) -> Level:
    """A level from ``"10%"`` or a size (``"512MiB"``)."""
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value.strip())
        if match is not None:
            percent = float(match.group(1))
            if not 0 <= percent <= 100:
                raise ValueError(f"{value!r}: a percentage must be between 0% and 100%")
            return Level(percent=percent)
    try:
        return Level(amount=parse_bytes(value))
    except ValueError:
        raise ValueError(
            f'{value!r} is not a level; use a percentage ("10%") or a size ("512MiB")'
        ) from None


def parse_count_level(value: object) -> Level:
    """An inode level from ``"5%"`` or a plain count."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Level(amount=value)
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value.strip())
        if match is not None and 0 <= float(match.group(1)) <= 100:
            return Level(percent=float(match.group(1)))
    raise ValueError(f'{value!r} is not an inode level; use a percentage ("5%") or a count')


def parse_time_of_day(value: object, granularity_minutes: int = 1) -> int:
    """Minutes since midnight from ``"HH:MM"``, which must be a multiple of the granularity."""
    if not isinstance(value, str):
        raise ValueError('expected a time of day as "HH:MM"')
    match = _TIME_OF_DAY.fullmatch(value.strip())
    if match is None:
        raise ValueError(f'{value!r} is not a time of day; use "HH:MM" (00:00 to 23:59)')
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if granularity_minutes > 1 and minutes % granularity_minutes:
        raise ValueError(
            f"{value!r} is not a multiple of the granularity ({granularity_minutes} minutes)"
        )
    return minutes


def format_time_of_day(minutes: int) -> str:
    """``"HH:MM"`` from minutes since midnight."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_weekday(value: object) -> int:
    """0 (Monday) to 6 (Sunday) from ``"mon"`` … ``"sun"``."""
    if isinstance(value, str) and value.strip().lower()[:3] in WEEKDAYS:
        return WEEKDAYS.index(value.strip().lower()[:3])
    raise ValueError(f"{value!r} is not a weekday; use one of {', '.join(WEEKDAYS)}")


def parse_rate(value: object) -> float:
    """Bytes a second from ``"1GiB/s"`` or ``"200MB/s"``."""
    text = value.strip() if isinstance(value, str) else ""
    if not text.lower().endswith("/s"):
        raise ValueError(f'{value!r} is not a rate; use a size per second, e.g. "1GiB/s"')
    amount = parse_bytes(text[:-2])
    if amount <= 0:
        raise ValueError("a rate must be more than 0")
    return float(amount)
