"""Windows, job times and the planner: tables across midnight and DST, plus properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.schedule import (
    ALL_DAYS,
    DailyJob,
    Due,
    Occurrence,
    Window,
    blocking_window,
    current_occurrence,
    job_times_between,
    local_instant,
    next_job_time,
    next_occurrence,
    next_wakeup,
    occurrence_on,
    occurrences_between,
    open_occurrences,
    plan,
)
from watcher.core.units import parse_time_of_day

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
UTC_ZONE = ZoneInfo("UTC")
ZONES = [BERLIN, NEW_YORK, LORD_HOWE, UTC_ZONE, ZoneInfo("Asia/Tokyo")]
# 2026 transitions: Berlin 03-29 / 10-25, New York 03-08 / 11-01, Lord Howe 10-04 / 04-05.
TRANSITION_DAYS = [
    date(2026, month, day) for month, day in [(3, 29), (10, 25), (3, 8), (11, 1), (10, 4), (4, 5)]
]
WEEKDAYS_ONLY = frozenset(range(5))
SATURDAY = frozenset({5})
NOTICE = timedelta(minutes=10)
PROPERTY = settings(deadline=None)  # zone data loads lazily; no timing assertions


def hm(text: str) -> int:
    """Minutes since midnight of an ``"HH:MM"`` literal."""
    return parse_time_of_day(text)


def z(text: str) -> datetime:
    """A UTC instant from ``"YYYY-MM-DD HH:MM"``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def at(tz: ZoneInfo, text: str, fold: int = 0) -> datetime:
    """A local instant from ``"YYYY-MM-DD HH:MM"`` (fold=1: the second pass of a repeated hour)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold)


def d(text: str) -> date:
    """A date from ``"YYYY-MM-DD"``."""
    return date.fromisoformat(text)


NIGHTLY = Window("nightly", hm("02:00"), hm("03:00"), message="Nightly maintenance")
LATE_SAT = Window("late-sat", hm("23:00"), hm("01:00"), days=SATURDAY)
WEEKDAY = Window("weekday", hm("02:00"), hm("03:00"), days=WEEKDAYS_ONLY)

# ---------------------------------------------------------------- local_instant


@pytest.mark.parametrize(
    ("tz", "day", "wall", "expected"),
    [
        (UTC_ZONE, "2026-06-10", "02:00", "2026-06-10 02:00"),
        (BERLIN, "2026-06-10", "02:00", "2026-06-10 00:00"),
        (BERLIN, "2026-03-29", "01:50", "2026-03-29 00:50"),
        (BERLIN, "2026-03-29", "02:00", "2026-03-29 01:00"),
        (BERLIN, "2026-03-29", "02:30", "2026-03-29 01:00"),
        (BERLIN, "2026-03-29", "03:00", "2026-03-29 01:00"),
        (BERLIN, "2026-03-29", "03:10", "2026-03-29 01:10"),
        (BERLIN, "2026-10-25", "02:00", "2026-10-25 00:00"),
        (BERLIN, "2026-10-25", "02:30", "2026-10-25 00:30"),
        (BERLIN, "2026-10-25", "03:00", "2026-10-25 02:00"),
        (NEW_YORK, "2026-03-08", "02:00", "2026-03-08 07:00"),
        (NEW_YORK, "2026-03-08", "02:50", "2026-03-08 07:00"),
        (NEW_YORK, "2026-11-01", "01:00", "2026-11-01 05:00"),
        (NEW_YORK, "2026-11-01", "01:30", "2026-11-01 05:30"),
        (NEW_YORK, "2026-11-01", "02:00", "2026-11-01 07:00"),
        (LORD_HOWE, "2026-10-04", "01:50", "2026-10-03 15:20"),
        (LORD_HOWE, "2026-10-04", "02:00", "2026-10-03 15:30"),
        (LORD_HOWE, "2026-10-04", "02:20", "2026-10-03 15:30"),
        (LORD_HOWE, "2026-10-04", "02:30", "2026-10-03 15:30"),
        (LORD_HOWE, "2026-10-04", "02:40", "2026-10-03 15:40"),
        (LORD_HOWE, "2026-04-05", "01:20", "2026-04-04 14:20"),
        (LORD_HOWE, "2026-04-05", "01:30", "2026-04-04 14:30"),
        (LORD_HOWE, "2026-04-05", "01:50", "2026-04-04 14:50"),
        (LORD_HOWE, "2026-04-05", "02:00", "2026-04-04 15:30"),
    ],
    ids=lambda v: str(v),
)
def test_local_instant(tz: ZoneInfo, day: str, wall: str, expected: str) -> None:
    """A wall time maps to UTC: in a gap to the transition, in a repeated hour to the first pass."""
    assert local_instant(d(day), hm(wall), tz) == z(expected)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("start", "end", "days", "match"),
    [
        (hm("02:00"), hm("02:00"), ALL_DAYS, "both 02:00"),
        (24 * 60, hm("02:00"), ALL_DAYS, "not a time of day"),
        (hm("02:00"), -10, ALL_DAYS, "not a time of day"),
        (hm("02:00"), hm("03:00"), frozenset(), "never run"),
        (hm("02:00"), hm("03:00"), frozenset({7}), "days must be"),
    ],
)
def test_window_rejects_invalid(start: int, end: int, days: frozenset[int], match: str) -> None:
    """An empty window, an impossible time or unusable days is a ValueError naming the window."""
    with pytest.raises(ValueError, match=rf"window 'w'.*{match}"):
        Window("w", start, end, days=days)


@pytest.mark.parametrize(
    ("minutes", "days", "match"),
    [(24 * 60, ALL_DAYS, "not a time of day"), (hm("03:00"), frozenset(), "never run")],
)
def test_daily_job_rejects_invalid(minutes: int, days: frozenset[int], match: str) -> None:
    """An impossible time or no days is a ValueError naming the job."""
    with pytest.raises(ValueError, match=rf"job 'j'.*{match}"):
        DailyJob("j", minutes, days=days)


def test_naive_datetimes_are_rejected() -> None:
    """A naive datetime is refused instead of being read as the host's local time."""
    with pytest.raises(ValueError, match="naive"):
        current_occurrence(NIGHTLY, BERLIN, datetime(2026, 6, 10, 2, 30))


# ---------------------------------------------------------------- occurrences


@pytest.mark.parametrize(
    ("window", "tz", "day", "expected"),
    [
        (NIGHTLY, BERLIN, "2026-06-10", ("2026-06-10 00:00", "2026-06-10 01:00")),
        (
            Window("x", hm("22:00"), hm("02:00")),
            BERLIN,
            "2026-06-10",
            ("2026-06-10 20:00", "2026-06-11 00:00"),
        ),
        (WEEKDAY, BERLIN, "2026-06-13", None),
        (LATE_SAT, BERLIN, "2026-06-13", ("2026-06-13 21:00", "2026-06-13 23:00")),
        (LATE_SAT, BERLIN, "2026-06-14", None),
        (
            Window("x", hm("02:00"), hm("04:00")),
            BERLIN,
            "2026-03-29",
            ("2026-03-29 01:00", "2026-03-29 02:00"),
        ),
        (
            Window("x", hm("02:00"), hm("02:30")),
            BERLIN,
            "2026-03-29",
            ("2026-03-29 01:00", "2026-03-29 01:00"),
        ),
        (NIGHTLY, BERLIN, "2026-10-25", ("2026-10-25 00:00", "2026-10-25 02:00")),
        (NIGHTLY, LORD_HOWE, "2026-10-04", ("2026-10-03 15:30", "2026-10-03 16:00")),
        (
            Window("x", hm("23:00"), hm("02:00")),
            NEW_YORK,
            "2026-10-31",
            ("2026-11-01 03:00", "2026-11-01 07:00"),
        ),
    ],
    ids=[
        "plain",
        "across-midnight",
        "day-filtered",
        "sat-only",
        "starts-sunday",
        "gap-start",
        "wholly-in-gap",
        "fall-back",
        "lord-howe-gap",
        "midnight-and-fall-back",
    ],
)
def test_occurrence_on(
    window: Window, tz: ZoneInfo, day: str, expected: tuple[str, str] | None
) -> None:
    """A date in `days` gives one occurrence, ending on the next date when it crosses midnight."""
    occurrence = occurrence_on(window, d(day), tz)
    if expected is None:
        assert occurrence is None
    else:
        assert occurrence is not None
        assert (occurrence.start, occurrence.end) == (z(expected[0]), z(expected[1]))
        assert occurrence.message == window.message


@pytest.mark.parametrize(
    ("window", "tz", "now", "expected_start"),
    [
        (NIGHTLY, BERLIN, at(BERLIN, "2026-06-10 02:00"), "2026-06-10 00:00"),
        (NIGHTLY, BERLIN, at(BERLIN, "2026-06-10 02:59"), "2026-06-10 00:00"),
        (NIGHTLY, BERLIN, at(BERLIN, "2026-06-10 03:00"), None),
        (NIGHTLY, BERLIN, at(BERLIN, "2026-06-10 01:59"), None),
        (LATE_SAT, BERLIN, at(BERLIN, "2026-06-14 00:30"), "2026-06-13 21:00"),
        (LATE_SAT, BERLIN, at(BERLIN, "2026-06-15 00:30"), None),
        (
            Window("x", hm("02:00"), hm("02:30")),
            BERLIN,
            at(BERLIN, "2026-10-25 02:10"),
            "2026-10-25 00:00",
        ),
        (
            Window("x", hm("02:00"), hm("02:30")),
            BERLIN,
            at(BERLIN, "2026-10-25 02:10", fold=1),
            None,
        ),
    ],
    ids=[
        "at-start",
        "inside",
        "at-end",
        "before",
        "after-midnight",
        "day-filtered",
        "repeated-first-pass",
        "repeated-second-pass",
    ],
)
def test_current_occurrence(
    window: Window, tz: ZoneInfo, now: datetime, expected_start: str | None
) -> None:
    """The open occurrence satisfies start <= now < end, and a repeated hour does not reopen it."""
    occurrence = current_occurrence(window, tz, now)
    assert (occurrence.start if occurrence else None) == (expected_start and z(expected_start))


@pytest.mark.parametrize(
    ("window", "now", "expected_start"),
    [
        (NIGHTLY, at(BERLIN, "2026-06-10 01:00"), "2026-06-10 00:00"),
        (NIGHTLY, at(BERLIN, "2026-06-10 02:00"), "2026-06-11 00:00"),
        (NIGHTLY, at(BERLIN, "2026-06-10 02:30"), "2026-06-11 00:00"),
        (WEEKDAY, at(BERLIN, "2026-06-12 03:00"), "2026-06-15 00:00"),
        (NIGHTLY, at(BERLIN, "2026-03-29 01:00"), "2026-03-29 01:00"),
        (NIGHTLY, at(BERLIN, "2026-10-25 02:30", fold=1), "2026-10-26 01:00"),
    ],
    ids=["later-today", "at-start", "inside", "friday-to-monday", "into-gap", "after-fall-back"],
)
def test_next_occurrence(window: Window, now: datetime, expected_start: str) -> None:
    """The next occurrence is the first one starting strictly after now."""
    assert next_occurrence(window, BERLIN, now).start == z(expected_start)


def test_occurrences_between_is_half_open() -> None:
    """An occurrence starting exactly at `since` is excluded, one starting at `until` included."""
    found = occurrences_between(
        NIGHTLY, BERLIN, at(BERLIN, "2026-06-10 02:00"), at(BERLIN, "2026-06-12 02:00")
    )
    assert [o.start for o in found] == [z("2026-06-11 00:00"), z("2026-06-12 00:00")]


def test_occurrence_key_is_stable() -> None:
    """The key names the window and its UTC start, so equal occurrences share it."""
    occurrence = occurrence_on(NIGHTLY, d("2026-06-10"), BERLIN)
    assert occurrence is not None
    assert occurrence.key() == "nightly@2026-06-10T00:00:00+00:00"


# ---------------------------------------------------------------- jobs


@pytest.mark.parametrize(
    ("job", "tz", "now", "expected"),
    [
        (DailyJob("j", hm("03:30")), BERLIN, at(BERLIN, "2026-06-10 03:29"), "2026-06-10 01:30"),
        (DailyJob("j", hm("03:30")), BERLIN, at(BERLIN, "2026-06-10 03:30"), "2026-06-11 01:30"),
        (
            DailyJob("j", hm("03:30"), WEEKDAYS_ONLY),
            BERLIN,
            at(BERLIN, "2026-06-12 04:00"),
            "2026-06-15 01:30",
        ),
        (DailyJob("j", hm("02:30")), BERLIN, at(BERLIN, "2026-03-28 12:00"), "2026-03-29 01:00"),
        (
            DailyJob("j", hm("02:10")),
            LORD_HOWE,
            at(LORD_HOWE, "2026-10-03 12:00"),
            "2026-10-03 15:30",
        ),
        (
            DailyJob("j", hm("01:30")),
            NEW_YORK,
            at(NEW_YORK, "2026-11-01 01:45"),
            "2026-11-02 06:30",
        ),
        (
            DailyJob("j", hm("01:40")),
            LORD_HOWE,
            at(LORD_HOWE, "2026-04-05 01:35", fold=1),
            "2026-04-05 15:10",
        ),
    ],
    ids=[
        "later-today",
        "at-time",
        "friday-to-monday",
        "berlin-gap",
        "lord-howe-gap",
        "new-york-repeated",
        "lord-howe-repeated",
    ],
)
def test_next_job_time(job: DailyJob, tz: ZoneInfo, now: datetime, expected: str) -> None:
    """The next run is the first daily instant strictly after now; a repeated hour is not rerun."""
    assert next_job_time(job, tz, now) == z(expected)


@pytest.mark.parametrize(
    ("tz", "day", "wall", "expected"),
    [
        (BERLIN, "2026-03-29", "02:30", "2026-03-29 01:00"),
        (BERLIN, "2026-10-25", "02:30", "2026-10-25 00:30"),
        (NEW_YORK, "2026-03-08", "02:10", "2026-03-08 07:00"),
        (NEW_YORK, "2026-11-01", "01:10", "2026-11-01 05:10"),
        (LORD_HOWE, "2026-10-04", "02:20", "2026-10-03 15:30"),
        (LORD_HOWE, "2026-04-05", "01:40", "2026-04-04 14:40"),
    ],
    ids=[
        "berlin-skipped",
        "berlin-repeated",
        "ny-skipped",
        "ny-repeated",
        "lh-skipped",
        "lh-repeated",
    ],
)
def test_job_runs_once_on_dst_days(tz: ZoneInfo, day: str, wall: str, expected: str) -> None:
    """On a DST day a job at a skipped or repeated wall time runs exactly once."""
    midnight = datetime.combine(d(day), time(), tz)
    runs = job_times_between(DailyJob("j", hm(wall)), tz, midnight, midnight + timedelta(days=1))
    assert runs == [z(expected)]


# ---------------------------------------------------------------- blocking_window


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (at(BERLIN, "2026-06-10 02:00"), "nightly"),
        (at(BERLIN, "2026-06-10 02:30"), "nightly"),
        (at(BERLIN, "2026-06-10 03:00"), "nightly"),
        (at(BERLIN, "2026-06-10 03:10"), None),
        (at(BERLIN, "2026-06-10 01:50"), None),
        (at(BERLIN, "2026-06-13 23:00"), "late-sat"),
        (at(BERLIN, "2026-06-14 00:30"), "late-sat"),
        (at(BERLIN, "2026-06-14 01:00"), "late-sat"),
        (at(BERLIN, "2026-06-14 01:10"), None),
        (at(BERLIN, "2026-06-15 00:30"), None),
    ],
    ids=[
        "at-start",
        "inside",
        "at-end",
        "after-end",
        "before-start",
        "sat-start",
        "after-midnight",
        "end-after-midnight",
        "after-that-end",
        "day-filtered",
    ],
)
def test_blocking_window(t: datetime, expected: str | None) -> None:
    """A job is blocked from a window's start up to and including its end, even past midnight."""
    blocker = blocking_window([NIGHTLY, LATE_SAT], BERLIN, t)
    assert (blocker.name if blocker else None) == expected


def test_blocking_window_in_dst_gap() -> None:
    """A job at a skipped wall time is blocked by a window that starts in the same gap."""
    job_at = next_job_time(DailyJob("j", hm("02:30")), BERLIN, at(BERLIN, "2026-03-28 12:00"))
    blocker = blocking_window([NIGHTLY], BERLIN, job_at)
    assert blocker is not None and blocker.start == job_at


# ---------------------------------------------------------------- planner


def summary(dues: list[Due], tz: ZoneInfo = BERLIN) -> list[tuple[str, str, str, str | None]]:
    """(kind, name, local HH:MM, reason) of each due, for readable expectations."""
    return [(u.kind, u.name, u.at.astimezone(tz).strftime("%H:%M"), u.reason) for u in dues]


def step_through(
    windows: list[Window], jobs: list[DailyJob], start: datetime, end: datetime, step: timedelta
) -> list[Due]:
    """Run the planner like the service: consecutive clock readings `step` apart."""
    dues: list[Due] = []
    since = start
    while since < end:
        now = min(since + step, end)
        dues += plan(windows, jobs, BERLIN, NOTICE, since, now)
        since = now
    return dues


def test_plan_normal_progression() -> None:
    """Ticking through a night yields notice, open, skipped job, close and a due job, once each."""
    jobs = [DailyJob("dbcheck", hm("03:00")), DailyJob("backup", hm("04:00"))]
    dues = step_through(
        [NIGHTLY],
        jobs,
        at(BERLIN, "2026-06-10 00:00"),
        at(BERLIN, "2026-06-10 05:00"),
        timedelta(seconds=50),
    )
    assert summary(dues) == [
        ("window.upcoming", "nightly", "01:50", None),
        ("window.opened", "nightly", "02:00", None),
        ("job.skipped", "dbcheck", "03:00", "window"),
        ("window.closed", "nightly", "03:00", None),
        ("job.due", "backup", "04:00", None),
    ]
    assert not any(u.late for u in dues)
    assert dues[2].occurrence == dues[1].occurrence


def test_plan_clock_jumps_over_a_window_and_a_job() -> None:
    """After an hours-long jump, past window events are late and a past job is skipped as missed."""
    dues = plan(
        [NIGHTLY],
        [DailyJob("dbcheck", hm("03:30"))],
        BERLIN,
        NOTICE,
        at(BERLIN, "2026-06-10 00:00"),
        at(BERLIN, "2026-06-10 05:00"),
    )
    assert summary(dues) == [
        ("window.upcoming", "nightly", "01:50", None),
        ("window.opened", "nightly", "02:00", None),
        ("window.closed", "nightly", "03:00", None),
        ("job.skipped", "dbcheck", "03:30", "missed"),
    ]
    assert all(u.late for u in dues)
    assert dues[-1].occurrence is None


def test_plan_clock_jumps_into_a_window() -> None:
    """A jump into an open window reports it opened late, with an occurrence still open at now."""
    now = at(BERLIN, "2026-06-10 02:30")
    dues = plan([NIGHTLY], [], BERLIN, NOTICE, at(BERLIN, "2026-06-10 00:00"), now)
    assert summary(dues) == [
        ("window.upcoming", "nightly", "01:50", None),
        ("window.opened", "nightly", "02:00", None),
    ]
    opened = dues[1]
    assert opened.late and opened.occurrence is not None and opened.occurrence.end > now


def test_plan_job_just_before_a_jumps_end_still_runs() -> None:
    """A job scheduled within max_late of now runs on time even though the clock jumped."""
    dues = plan(
        [],
        [DailyJob("j", hm("04:59"))],
        BERLIN,
        NOTICE,
        at(BERLIN, "2026-06-10 00:00"),
        at(BERLIN, "2026-06-10 05:00"),
    )
    assert [(u.kind, u.late) for u in dues] == [("job.due", False)]


def test_plan_skips_a_blocked_job_as_window_even_when_late() -> None:
    """A job that a window would have blocked anyway is reported as skipped by that window."""
    dues = plan(
        [NIGHTLY],
        [DailyJob("j", hm("02:30"))],
        BERLIN,
        NOTICE,
        at(BERLIN, "2026-06-10 00:00"),
        at(BERLIN, "2026-06-10 05:00"),
    )
    skipped = [u for u in dues if u.kind == "job.skipped"]
    assert [(u.reason, u.late) for u in skipped] == [("window", True)]
    assert skipped[0].occurrence is not None and skipped[0].occurrence.name == "nightly"


def test_plan_clock_jumps_backward() -> None:
    """When the clock goes backward nothing is due, so nothing fires twice."""
    dues = plan(
        [NIGHTLY],
        [DailyJob("j", hm("02:30"))],
        BERLIN,
        NOTICE,
        at(BERLIN, "2026-06-10 05:00"),
        at(BERLIN, "2026-06-10 01:00"),
    )
    assert dues == []


def test_plan_done_suppresses_refiring() -> None:
    """Keys already in `done` are not reported again when the same span is planned twice."""
    since, now = at(BERLIN, "2026-06-10 01:00"), at(BERLIN, "2026-06-10 04:30")
    jobs = [DailyJob("j", hm("04:00"))]
    first = plan([NIGHTLY], jobs, BERLIN, NOTICE, since, now)
    assert len(first) == 4
    assert plan([NIGHTLY], jobs, BERLIN, NOTICE, since, now, frozenset(u.key for u in first)) == []


def test_plan_missed_job_is_not_run_after_the_clock_returns() -> None:
    """A job marked missed by a forward jump does not run when the clock steps back over it."""
    job = [DailyJob("j", hm("03:30"))]
    jumped = plan(
        [], job, BERLIN, NOTICE, at(BERLIN, "2026-06-10 00:00"), at(BERLIN, "2026-06-10 05:00")
    )
    done = frozenset(u.key for u in jumped)
    replay = plan(
        [],
        job,
        BERLIN,
        NOTICE,
        at(BERLIN, "2026-06-10 03:00"),
        at(BERLIN, "2026-06-10 03:31"),
        done,
    )
    assert summary(jumped) == [("job.skipped", "j", "03:30", "missed")] and replay == []


def test_plan_back_to_back_windows_open_before_closing() -> None:
    """At a shared boundary the next window opens before the previous one closes (no lapse)."""
    second = Window("second", hm("03:00"), hm("04:00"))
    dues = plan(
        [NIGHTLY, second],
        [],
        BERLIN,
        NOTICE,
        at(BERLIN, "2026-06-10 02:59"),
        at(BERLIN, "2026-06-10 03:00"),
    )
    assert summary(dues) == [
        ("window.opened", "second", "03:00", None),
        ("window.closed", "nightly", "03:00", None),
    ]


def test_plan_window_wholly_in_dst_gap_opens_and_closes_at_transition() -> None:
    """A window whose wall times are all skipped opens, then closes, at the transition."""
    window = Window("gap", hm("02:00"), hm("02:30"))
    dues = plan(
        [window], [], BERLIN, NOTICE, at(BERLIN, "2026-03-29 01:55"), at(BERLIN, "2026-03-29 03:00")
    )
    assert [(u.kind, u.at) for u in dues] == [
        ("window.opened", z("2026-03-29 01:00")),
        ("window.closed", z("2026-03-29 01:00")),
    ]


def test_started_mid_window() -> None:
    """At start-up inside a window, open_occurrences reports it; at its end, nothing is open."""
    windows = [NIGHTLY, LATE_SAT]
    assert [o.name for o in open_occurrences(windows, BERLIN, at(BERLIN, "2026-06-10 02:30"))] == [
        "nightly"
    ]
    assert open_occurrences(windows, BERLIN, at(BERLIN, "2026-06-10 03:00")) == []
    assert [o.name for o in open_occurrences(windows, BERLIN, at(BERLIN, "2026-06-14 00:10"))] == [
        "late-sat"
    ]


@pytest.mark.parametrize(
    ("windows", "jobs", "now", "expected"),
    [
        ([NIGHTLY], [DailyJob("j", hm("04:00"))], "2026-06-10 00:00", "2026-06-10 01:50"),
        ([NIGHTLY], [DailyJob("j", hm("04:00"))], "2026-06-10 01:50", "2026-06-10 02:00"),
        ([NIGHTLY], [DailyJob("j", hm("04:00"))], "2026-06-10 02:30", "2026-06-10 03:00"),
        ([NIGHTLY], [DailyJob("j", hm("04:00"))], "2026-06-10 03:00", "2026-06-10 04:00"),
        ([NIGHTLY], [], "2026-06-10 04:00", "2026-06-11 01:50"),
        ([], [], "2026-06-10 04:00", None),
    ],
    ids=["upcoming", "opened", "closed", "job", "tomorrow", "nothing-scheduled"],
)
def test_next_wakeup(
    windows: list[Window], jobs: list[DailyJob], now: str, expected: str | None
) -> None:
    """The wake-up is the nearest of upcoming, open, close and job instants after now."""
    wake = next_wakeup(windows, jobs, BERLIN, NOTICE, at(BERLIN, now))
    assert wake == (expected and at(BERLIN, expected))


# ---------------------------------------------------------------- properties

minutes_of_day = st.integers(0, 143).map(lambda n: n * 10)
weekday_sets = st.frozensets(st.integers(0, 6), min_size=1)
zones = st.sampled_from(ZONES)
windows = st.builds(
    lambda start, length, days: Window("w", start, (start + length) % 1440, days=days),
    minutes_of_day,
    st.integers(1, 143).map(lambda n: n * 10),
    weekday_sets,
)
jobs = st.builds(lambda minute, days: DailyJob("j", minute, days), minutes_of_day, weekday_sets)
first_days = st.one_of(
    st.builds(
        lambda day, shift: day + timedelta(days=shift),
        st.sampled_from(TRANSITION_DAYS),
        st.integers(-3, 1),
    ),
    st.dates(date(2026, 1, 1), date(2026, 12, 31)),
)
instants = st.builds(
    lambda day, minutes: datetime.combine(day, time(), UTC) + timedelta(minutes=minutes),
    first_days,
    st.integers(-24 * 60, 48 * 60),
)


def local_span(first: date, count: int, tz: ZoneInfo) -> tuple[list[date], datetime, datetime]:
    """`count` local dates from `first`, and the instants just before and after them."""
    dates = [first + timedelta(days=n) for n in range(count)]
    since = local_instant(first, 0, tz) - timedelta(microseconds=1)
    until = local_instant(dates[-1] + timedelta(days=1), 0, tz) - timedelta(microseconds=1)
    return dates, since, until


@PROPERTY
@given(window=windows, tz=zones, first=first_days, count=st.integers(1, 40))
def test_each_local_date_yields_exactly_one_occurrence(
    window: Window, tz: ZoneInfo, first: date, count: int
) -> None:
    """Over any span, each local date in `days` yields one occurrence, starting on that date."""
    dates, since, until = local_span(first, count, tz)
    found = occurrences_between(window, tz, since, until)
    expected = [day for day in dates if day.weekday() in window.days]
    assert [o.start.astimezone(tz).date() for o in found] == expected
    assert found == [occurrence_on(window, day, tz) for day in expected]
    assert len({o.key() for o in found}) == len(found)


@PROPERTY
@given(window=windows, tz=zones, first=first_days, count=st.integers(2, 40))
def test_occurrences_of_one_window_never_overlap(
    window: Window, tz: ZoneInfo, first: date, count: int
) -> None:
    """Occurrences of one window are ordered, non-negative in length and never overlap."""
    _, since, until = local_span(first, count, tz)
    found: list[Occurrence] = occurrences_between(window, tz, since, until)
    assert all(o.start <= o.end for o in found)
    assert all(a.end <= b.start for a, b in pairwise(found))


@PROPERTY
@given(job=jobs, tz=zones, first=first_days, count=st.integers(1, 40))
def test_each_local_date_yields_exactly_one_job_run(
    job: DailyJob, tz: ZoneInfo, first: date, count: int
) -> None:
    """Over any span, a job runs once per local date in `days`; repeated hours never rerun it."""
    dates, since, until = local_span(first, count, tz)
    runs = job_times_between(job, tz, since, until)
    assert [r.astimezone(tz).date() for r in runs] == [d for d in dates if d.weekday() in job.days]
    assert runs == sorted(set(runs))


@PROPERTY
@given(window=windows, tz=zones, now=instants)
def test_current_occurrence_agrees_with_occurrences(
    window: Window, tz: ZoneInfo, now: datetime
) -> None:
    """current_occurrence is exactly the occurrence with start <= now < end, if there is one."""
    around = occurrences_between(window, tz, now - timedelta(days=3), now + timedelta(days=3))
    containing = [o for o in around if o.start <= now < o.end]
    assert current_occurrence(window, tz, now) == (containing[0] if containing else None)
    assert len(containing) <= 1


@PROPERTY
@given(
    window_list=st.lists(windows, max_size=2),
    job_list=st.lists(jobs, max_size=2),
    tz=zones,
    since=instants,
    cuts=st.lists(st.integers(1, 3 * 24 * 60), min_size=1, max_size=8),
)
def test_plan_is_independent_of_how_time_is_sliced(
    window_list: list[Window],
    job_list: list[DailyJob],
    tz: ZoneInfo,
    since: datetime,
    cuts: list[int],
) -> None:
    """Planning consecutive slices yields the same firings as planning the whole span at once."""
    readings = [since] + [since + timedelta(minutes=c) for c in sorted(set(cuts))]
    slack = timedelta(days=30)  # no lateness, so slices and the whole agree on flags too
    sliced = [
        due
        for a, b in pairwise(readings)
        for due in plan(window_list, job_list, tz, NOTICE, a, b, max_late=slack)
    ]
    assert sliced == plan(window_list, job_list, tz, NOTICE, since, readings[-1], max_late=slack)


@PROPERTY
@given(
    window_list=st.lists(windows, max_size=2),
    job_list=st.lists(jobs, max_size=2),
    tz=zones,
    now=instants,
)
def test_next_wakeup_is_the_first_instant_with_something_due(
    window_list: list[Window], job_list: list[DailyJob], tz: ZoneInfo, now: datetime
) -> None:
    """Nothing is due before next_wakeup, and something is due at it."""
    wake = next_wakeup(window_list, job_list, tz, NOTICE, now)
    if wake is None:
        assert not window_list and not job_list
        return
    assert wake > now
    assert plan(window_list, job_list, tz, NOTICE, now, wake - timedelta(microseconds=1)) == []
    assert plan(window_list, job_list, tz, NOTICE, now, wake) != []
