"""The disk guard's pure core: levels of one reading, debounce, hysteresis, threshold order."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.core.disklevels import (
    LEVELS,
    DiskLevel,
    GuardState,
    Reading,
    Thresholds,
    raw_level,
    reminder_due,
    step,
)
from watcher.core.units import Level

MiB = 1024**2
TOTAL = 10_000
INODES = 1_000

# warn 1000, maintenance 500, critical 100 bytes: warn is left above 1000 + (1000 - 500) / 2.
# inodes_warn 50, inodes_critical 10: inode warn is left above 50 + (50 - 10) / 2.
BYTES = Thresholds(
    warn=Level(amount=1000),
    maintenance=Level(amount=500),
    critical=Level(amount=100),
    inodes_warn=Level(amount=50),
    inodes_critical=Level(amount=10),
)
PERCENT = Thresholds(
    warn=Level(percent=10),
    maintenance=Level(percent=5),
    critical=Level(percent=1),
    inodes_warn=Level(percent=5),
    inodes_critical=Level(percent=1),
)


def reading(free: int, inodes: int | None = None) -> Reading:
    """A reading of a TOTAL-byte filesystem, with INODES inodes when ``inodes`` is given."""
    return Reading(free, TOTAL, inodes, None if inodes is None else INODES)


def transitions(
    frees: Sequence[int | tuple[int, int]],
    thresholds: Thresholds = BYTES,
    state: GuardState | None = None,
) -> list[DiskLevel | None]:
    """The transition reported by each step over scripted readings (free, or (free, inodes))."""
    state = state or GuardState()
    out: list[DiskLevel | None] = []
    for free in frees:
        r = reading(*free) if isinstance(free, tuple) else reading(free)
        state, changed = step(state, r, thresholds)
        out.append(changed)
    return out


@pytest.mark.parametrize(
    ("thresholds", "free", "inodes", "expected"),
    [
        (BYTES, 5000, None, "ok"),
        (BYTES, 1000, None, "ok"),
        (BYTES, 999, None, "warn"),
        (BYTES, 500, None, "warn"),
        (BYTES, 499, None, "maintenance"),
        (BYTES, 100, None, "maintenance"),
        (BYTES, 99, None, "critical"),
        (BYTES, 0, None, "critical"),
        (BYTES, 5000, 50, "ok"),
        (BYTES, 5000, 49, "warn"),
        (BYTES, 5000, 9, "critical"),
        (BYTES, 400, 40, "maintenance"),
        (BYTES, 900, 5, "critical"),
        (PERCENT, 1000, None, "ok"),
        (PERCENT, 999, None, "warn"),
        (PERCENT, 499, None, "maintenance"),
        (PERCENT, 99, None, "critical"),
        (PERCENT, 5000, 49, "warn"),
        (PERCENT, 5000, 9, "critical"),
    ],
)
def test_raw_level(thresholds: Thresholds, free: int, inodes: int | None, expected: str) -> None:
    """One reading is at the worst level whose threshold its free space or inodes are below."""
    assert raw_level(reading(free, inodes), thresholds) == expected


def test_percent_levels_scale_with_the_total() -> None:
    """A percentage level is resolved against each reading's own total."""
    big = Reading(free=999 * MiB, total=10_000 * MiB, inodes_free=None, inodes_total=None)
    assert raw_level(big, PERCENT) == "warn"
    assert raw_level(dataclasses.replace(big, total=9_990 * MiB), PERCENT) == "ok"


def test_mixed_levels_out_of_order_are_clamped() -> None:
    """A mixed pair that resolves out of order leaves the better level no band, never inverted."""
    mixed = dataclasses.replace(BYTES, warn=Level(percent=10), maintenance=Level(amount=2000))
    assert raw_level(reading(1500), mixed) == "maintenance"
    assert raw_level(reading(2000), mixed) == "ok"


@pytest.mark.parametrize(
    ("frees", "expected"),
    [
        ([900, 900], [None, "warn"]),
        ([900, 5000, 900, 5000], [None, None, None, None]),
        ([400, 400], [None, "maintenance"]),
        ([900, 400, 400], [None, "warn", "maintenance"]),
        ([400, 900, 400], [None, "warn", None]),
        ([50], ["critical"]),
        ([900, 50], [None, "critical"]),
        ([1000, 1000, 100, 100], [None, None, None, "maintenance"]),
    ],
)
def test_entering_is_debounced(frees: list[int], expected: list[DiskLevel | None]) -> None:
    """warn and maintenance are entered after for_samples readings at or worse; critical at once."""
    assert transitions(frees) == expected


def test_for_samples_three() -> None:
    """With for_samples = 3 a level needs three readings in a row at that level or worse."""
    three = dataclasses.replace(BYTES, for_samples=3)
    assert transitions([900, 900, 5000, 900, 400, 400], three) == [None] * 5 + ["warn"]


@pytest.mark.parametrize(
    ("frees", "expected"),
    [
        ([50, 500, 501], ["critical", None, "maintenance"]),
        ([400, 400, 1000, 1001], [None, "maintenance", None, "warn"]),
        ([900, 900, 1250, 1251], [None, "warn", None, "ok"]),
        ([50, 100, 99, 100], ["critical", None, None, None]),
        ([900, 900, 1000, 999, 1000], [None, "warn", None, None, None]),
    ],
)
def test_hysteresis_at_the_boundary(frees: list[int], expected: list[DiskLevel | None]) -> None:
    """A level is left only strictly above the next better level's threshold, not at it."""
    assert transitions(frees) == expected


@pytest.mark.parametrize(
    ("frees", "expected"),
    [
        ([50, 600, 1100, 1300], ["critical", "maintenance", "warn", "ok"]),
        ([50, 1100], ["critical", "warn"]),
        ([50, 5000], ["critical", "ok"]),
    ],
)
def test_recovery_in_steps(frees: list[int], expected: list[DiskLevel | None]) -> None:
    """Recovery lands on the worst level the reading still holds, one step or several at once."""
    assert transitions(frees) == expected


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ([(5000, 40), (5000, 40)], [None, "warn"]),
        ([(5000, 5)], ["critical"]),
        (
            [(5000, 5), (5000, 50), (5000, 51), (5000, 70), (5000, 71)],
            ["critical", None, "warn", None, "ok"],
        ),
        ([(5000, 40), (5000, 40), (5000, 500)], [None, "warn", "ok"]),
    ],
)
def test_inodes_follow_the_same_rules(
    readings: list[tuple[int, int]], expected: list[DiskLevel | None]
) -> None:
    """Inode levels debounce warn, enter critical at once and have their own hysteresis."""
    assert transitions(readings) == expected


def test_a_level_is_left_only_when_no_measure_holds_it() -> None:
    """A level entered through inodes is kept while free space is still inside that level's band."""
    assert transitions([(5000, 5), (300, 500), (600, 500)]) == ["critical", None, "maintenance"]


def test_filesystem_without_inodes_ignores_inode_levels() -> None:
    """A reading with no inode counts is judged on free space alone."""
    assert transitions([1200, 1200]) == [None, None]
    assert raw_level(Reading(5000, TOTAL, None, None), BYTES) == "ok"


def test_step_keeps_a_pending_candidate() -> None:
    """A worse reading not yet long enough is recorded as the candidate with its count."""
    state, changed = step(GuardState(), reading(400), BYTES)
    assert (state, changed) == (GuardState("ok", "maintenance", 1), None)


@st.composite
def band_case(draw: st.DrawFn) -> tuple[Thresholds, GuardState, list[Reading]]:
    """Ordered thresholds, a level L, a start at L or the next better level, readings in L's band.

    L's band runs from the next worse level's threshold (0 for critical) to the value above
    which L is left; the readings are of free space or, with space healthy, of inodes.
    """
    worst = draw(st.integers(0, 10**6))
    middle = worst + draw(st.integers(1, 10**6))
    best = middle + draw(st.integers(1, 10**6))
    total = 4 * 10**6
    on_inodes = draw(st.booleans())
    ladder: Sequence[DiskLevel] = ("ok", "warn", "critical") if on_inodes else LEVELS
    enter = (
        {"warn": middle, "critical": worst}
        if on_inodes
        else {"warn": best, "maintenance": middle, "critical": worst}
    )
    index = draw(st.integers(1, len(ladder) - 1))
    level = ladder[index]
    below = enter[ladder[index + 1]] if index + 1 < len(ladder) else 0
    better = ladder[index - 1]
    leave = enter[better] if better != "ok" else enter[level] + (enter[level] - below) // 2
    values = draw(st.lists(st.integers(below, leave), min_size=1, max_size=30))
    thresholds = Thresholds(
        warn=Level(amount=best if not on_inodes else 3),
        maintenance=Level(amount=middle if not on_inodes else 2),
        critical=Level(amount=worst if not on_inodes else 1),
        inodes_warn=Level(amount=middle),
        inodes_critical=Level(amount=worst),
        for_samples=draw(st.integers(1, 4)),
    )
    if on_inodes:
        readings = [Reading(total, total, v, total) for v in values]
    else:
        readings = [Reading(v, total, None, None) for v in values]
    return thresholds, GuardState(draw(st.sampled_from([better, level]))), readings


@given(band_case())
def test_no_flapping_inside_a_hysteresis_band(
    case: tuple[Thresholds, GuardState, list[Reading]],
) -> None:
    """Readings that stay inside one level's hysteresis band make at most one transition."""
    thresholds, state, readings = case
    changes = 0
    for r in readings:
        state, changed = step(state, r, thresholds)
        changes += changed is not None
    assert changes <= 1


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        (
            {"warn": Level(amount=10 * MiB), "maintenance": Level(amount=512 * MiB)},
            ["disk.warn (10MiB) must be greater than disk.maintenance (512MiB)"],
        ),
        (
            {"maintenance": Level(amount=10 * MiB), "critical": Level(amount=10 * MiB)},
            ["disk.maintenance (10MiB) must be greater than disk.critical (10MiB)"],
        ),
        (
            {"warn": Level(percent=5), "maintenance": Level(percent=10)},
            ["disk.warn (5%) must be greater than disk.maintenance (10%)"],
        ),
        ({"warn": Level(percent=1), "maintenance": Level(amount=512 * MiB)}, []),
        (
            {"warn": Level(amount=5 * MiB), "maintenance": Level(percent=5)},
            ["disk.warn (5MiB) must be greater than disk.critical (10MiB)"],
        ),
        (
            {"inodes_warn": Level(amount=100), "inodes_critical": Level(amount=1000)},
            ["disk.inodes_warn (100) must be greater than disk.inodes_critical (1000)"],
        ),
    ],
)
def test_check_order(changes: dict[str, Any], expected: list[str]) -> None:
    """Levels of the same kind must be strictly ordered; mixed kinds wait for a total."""
    defaults = Thresholds(
        warn=Level(percent=10),
        maintenance=Level(amount=512 * MiB),
        critical=Level(amount=10 * MiB),
        inodes_warn=Level(percent=5),
        inodes_critical=Level(percent=1),
    )
    assert dataclasses.replace(defaults, **changes).check_order() == expected


def test_check_order_with_totals_compares_mixed_levels() -> None:
    """Given the filesystem's size, a percentage is compared with an absolute level."""
    mixed = dataclasses.replace(
        BYTES,
        warn=Level(percent=1),
        maintenance=Level(amount=512 * MiB),
        inodes_warn=Level(percent=50),
    )
    assert mixed.check_order() == []
    assert mixed.check_order(total=1024 * MiB, inodes_total=10) == [
        "disk.warn (1%) must be greater than disk.maintenance (512MiB) for a total of 1GiB",
        "disk.inodes_warn (50%) must be greater than disk.inodes_critical (10) for a total of 10",
    ]


@pytest.mark.parametrize(
    ("level", "last", "now", "every", "expected"),
    [
        ("ok", 0.0, 1000.0, 600.0, False),
        ("warn", 0.0, 599.0, 600.0, False),
        ("warn", 0.0, 600.0, 600.0, True),
        ("critical", 100.0, 800.0, 600.0, True),
        ("maintenance", 0.0, 1000.0, 0.0, False),
    ],
)
def test_reminder_due(
    level: DiskLevel, last: float, now: float, every: float, expected: bool
) -> None:
    """A reminder is due while not OK once `every` seconds have passed; 0 turns it off."""
    assert reminder_due(level, last, now, every) is expected
