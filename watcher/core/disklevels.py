"""Disk levels (pure): which level a filesystem reading is at, with debounce and hysteresis.

:func:`raw_level` and :func:`step` are functions of (state, reading, thresholds) with no I/O
and no clock; readings come from :mod:`watcher.sources.disksample`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from watcher.core.units import Level

DiskLevel = Literal["ok", "warn", "maintenance", "critical"]
LEVELS: tuple[DiskLevel, ...] = ("ok", "warn", "maintenance", "critical")  # best to worst
_BINARY_UNITS = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


@dataclass(frozen=True)
class Reading:
    """One sample of the data dir's filesystem."""

    free: int  # bytes available to non-root (f_bavail * f_frsize)
    total: int  # bytes (f_blocks * f_frsize)
    inodes_free: int | None  # f_favail; None when the filesystem reports no inodes
    inodes_total: int | None  # f_files; None when it is 0


@dataclass(frozen=True)
class _Rung:
    """One level of one measure, resolved: entered below ``enter``, left above ``leave``."""

    level: DiskLevel
    enter: int
    leave: int


@dataclass(frozen=True)
class Thresholds:
    """Free-space levels (bytes or % of total) and inode levels, from ``[disk]``."""

    warn: Level
    maintenance: Level
    critical: Level
    inodes_warn: Level
    inodes_critical: Level
    for_samples: int = 2  # consecutive samples to enter warn/maintenance; critical enters after 1

    def check_order(self, total: int | None = None, inodes_total: int | None = None) -> list[str]:
        """Problems with the levels' order: each must be strictly greater than the next worse one.

        Two levels of different kinds (a percentage and an absolute amount) are compared only
        when the filesystem's ``total`` (or ``inodes_total``) is given; at sample time a mixed
        pair that resolves out of order is clamped, so the better level's band is empty.
        """
        space = [("warn", self.warn), ("maintenance", self.maintenance)]
        space.append(("critical", self.critical))
        inodes = [("inodes_warn", self.inodes_warn), ("inodes_critical", self.inodes_critical)]
        problems = _order_problems(space, total, _show_bytes)
        return problems + _order_problems(inodes, inodes_total, str)


@dataclass(frozen=True)
class GuardState:
    """The level, and a worse ``candidate`` seen ``count`` times running but not yet entered."""

    level: DiskLevel = "ok"
    candidate: DiskLevel | None = None
    count: int = 0


def raw_level(reading: Reading, thresholds: Thresholds) -> DiskLevel:
    """The level of this one reading alone: the worst of the space and inode levels, no debounce."""
    return _worst(_entered(value, rungs) for value, rungs in _measures(reading, thresholds))


def step(
    state: GuardState, reading: Reading, thresholds: Thresholds
) -> tuple[GuardState, DiskLevel | None]:
    """The next state after ``reading``, and the new level when it changed (else ``None``).

    Entering: a level is entered below its threshold (``free < level``; exactly at the
    threshold is not below), after ``for_samples`` consecutive readings at that level or
    worse; critical after one. A streak of mixed worse readings enters the least bad of them,
    and the streak for anything worse restarts with the reading that made the entry.

    Leaving (hysteresis): critical is left only when free > the maintenance threshold,
    maintenance only when free > warn, and warn only when free > warn + (warn - maintenance) / 2,
    so warn has a band of its own. Leaving lands on the worst level still held, which may be one
    step down or several (critical straight to ok). Inodes follow the same rules: inode
    critical is left above inodes_warn, inode warn above inodes_warn + (inodes_warn -
    inodes_critical) / 2. The guard keeps one level for both measures, so a level is left
    only when neither measure still holds it.
    """
    measures = _measures(reading, thresholds)
    raw = _worst(_entered(value, rungs) for value, rungs in measures)
    if _rank(raw) > _rank(state.level):
        new = _escalate(state, raw, max(1, thresholds.for_samples))
    else:
        new = GuardState(_worst(_held(value, rungs, state.level) for value, rungs in measures))
    return new, (new.level if new.level != state.level else None)


def reminder_due(level: DiskLevel, last_event_at: float, now: float, every: float) -> bool:
    """Whether ``disk.reminder`` is due: not OK and ``every`` (> 0) seconds since the last event."""
    return level != "ok" and every > 0 and now - last_event_at >= every


def _rank(level: DiskLevel) -> int:
    return LEVELS.index(level)


def _worst(levels: Iterable[DiskLevel]) -> DiskLevel:
    return max(levels, key=_rank, default="ok")


def _ladder(steps: Sequence[tuple[DiskLevel, int]]) -> tuple[_Rung, ...]:
    """Rungs from (level, threshold) pairs, worst first; thresholds are clamped to be ordered."""
    enters: list[int] = []
    for _level, threshold in steps:
        enters.append(max([threshold, *enters[-1:]]))
    last, below = enters[-1], (enters[-2] if len(enters) > 1 else 0)
    leaves = [*enters[1:], last + (last - below) // 2]
    return tuple(
        _Rung(level, enter, leave)
        for (level, _), enter, leave in zip(steps, enters, leaves, strict=True)
    )


def _measures(reading: Reading, t: Thresholds) -> list[tuple[int, tuple[_Rung, ...]]]:
    """(free amount, rungs) for space and, when the filesystem has them, inodes."""
    total = reading.total
    space: list[tuple[DiskLevel, Level]] = [
        ("critical", t.critical),
        ("maintenance", t.maintenance),
        ("warn", t.warn),
    ]
    measures = [(reading.free, _ladder([(name, lv.resolve(total)) for name, lv in space]))]
    if reading.inodes_free is not None and reading.inodes_total is not None:
        itotal = reading.inodes_total
        inodes: list[tuple[DiskLevel, Level]] = [
            ("critical", t.inodes_critical),
            ("warn", t.inodes_warn),
        ]
        rungs = _ladder([(name, lv.resolve(itotal)) for name, lv in inodes])
        measures.append((reading.inodes_free, rungs))
    return measures


def _entered(value: int, rungs: Sequence[_Rung]) -> DiskLevel:
    """The worst level whose threshold ``value`` is below."""
    return next((rung.level for rung in rungs if value < rung.enter), "ok")


def _held(value: int, rungs: Sequence[_Rung], current: DiskLevel) -> DiskLevel:
    """The worst level, no worse than ``current``, that ``value`` has not yet risen above."""
    return next(
        (r.level for r in rungs if _rank(r.level) <= _rank(current) and value <= r.leave), "ok"
    )


def _escalate(state: GuardState, raw: DiskLevel, for_samples: int) -> GuardState:
    """Count one more reading worse than the level; enter a level when the streak is long enough."""
    candidate = raw if state.candidate is None else min(state.candidate, raw, key=_rank)
    count = state.count + 1
    if raw == "critical":
        target: DiskLevel = "critical"
    elif count >= for_samples:
        target = candidate
    else:
        return GuardState(state.level, candidate, count)
    if _rank(raw) > _rank(target):
        return GuardState(target, raw, 1)
    return GuardState(target)


def _order_problems(
    named: Sequence[tuple[str, Level]], total: int | None, show: Callable[[int], str]
) -> list[str]:
    """Pairs of levels out of order, skipping a pair that comparisons through a middle one cover."""

    def comparable(a: Level, b: Level) -> bool:
        return total is not None or (a.percent is None) == (b.percent is None)

    problems = []
    for i, (upper_name, upper) in enumerate(named):
        for j in range(i + 1, len(named)):
            lower_name, lower = named[j]
            middle = [m for _, m in named[i + 1 : j]]
            if not comparable(upper, lower) or any(
                comparable(upper, m) and comparable(m, lower) for m in middle
            ):
                continue
            mixed = (upper.percent is None) != (lower.percent is None)
            on = f" for a total of {show(total)}" if mixed and total is not None else ""
            if on and total is not None:
                bad = upper.resolve(total) <= lower.resolve(total)
            else:
                bad = _value(upper) <= _value(lower)
            if bad:
                problems.append(
                    f"disk.{upper_name} ({_show(upper, show)}) must be greater than "
                    f"disk.{lower_name} ({_show(lower, show)}){on}"
                )
    return problems


def _value(level: Level) -> float:
    return level.percent if level.percent is not None else float(level.amount or 0)


def _show(level: Level, show: Callable[[int], str]) -> str:
    return str(level) if level.percent is not None else show(level.amount or 0)


def _show_bytes(amount: int) -> str:
    """``"512MiB"`` when a binary unit divides the amount exactly, else ``"1234B"``."""
    for unit, factor in _BINARY_UNITS:
        if amount >= factor and amount % factor == 0:
            return f"{amount // factor}{unit}"
    return f"{amount}B"


def margins(reading: Reading, thresholds: Thresholds, level: DiskLevel) -> list[int]:
    """How far each measure (space in bytes, then inodes) is above the nearest threshold whose
    crossing would make the level worse than ``level``; 0 or less when it is already below
    one (a worse level is pending its debounce). Empty at critical: nothing worse to enter."""
    out = []
    for value, rungs in _measures(reading, thresholds):
        worse = [rung.enter for rung in rungs if _rank(rung.level) > _rank(level)]
        if worse:
            out.append(value - max(worse))
    return out
