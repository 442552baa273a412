"""Maintenance windows and daily job times: pure functions of (schedule, time zone, time).

Times of day are minutes since local midnight. Instants going in must be timezone-aware;
instants coming out are UTC. Nothing here reads the clock or does I/O: the service asks
"what is due between my last two clock readings?" (:func:`plan`) and "when must I look
next?" (:func:`next_wakeup`), then does what the answers say.

DST (DESIGN §4): a wall time inside a skipped (spring-forward) gap maps to the first valid
instant after the gap, the transition itself; a wall time in a repeated (fall-back) hour maps
to its first occurrence. Each local date therefore yields exactly one instant per window
start, window end and job, so a repeated hour never runs anything twice and a skipped one
never loses a run. A window lying wholly inside a gap still occurs, with ``end == start``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from watcher.core.units import WEEKDAYS, format_time_of_day

ALL_DAYS: frozenset[int] = frozenset(range(len(WEEKDAYS)))
DEFAULT_MAX_LATE = timedelta(minutes=2)

DueKind = Literal["window.upcoming", "window.opened", "window.closed", "job.due", "job.skipped"]
SkipReason = Literal["window", "missed"]

_DAY = timedelta(days=1)
_MINUTES_PER_DAY = 24 * 60
_LOOKAHEAD = timedelta(days=len(WEEKDAYS) + 1)  # a non-empty `days` recurs within a week
_NOTHING_DONE: frozenset[str] = frozenset()
# Order at one instant: warn, open (back-to-back windows overlap rather than let the maint
# file flicker), jobs, close.
_KIND_ORDER: dict[str, int] = {
    "window.upcoming": 0,
    "window.opened": 1,
    "job.skipped": 2,
    "job.due": 2,
    "window.closed": 3,
}


def _validate(what: str, days: frozenset[int], *times: int) -> None:
    """Raise ``ValueError`` naming `what` unless the times of day and weekdays are usable."""
    for minutes in times:
        if not 0 <= minutes < _MINUTES_PER_DAY:
            raise ValueError(f"{what}: {minutes} is not a time of day (0 to 1439 minutes)")
    if not days:
        raise ValueError(f"{what}: no days given, so it would never run")
    if not days <= ALL_DAYS:
        raise ValueError(f"{what}: days must be 0 ({WEEKDAYS[0]}) to 6 ({WEEKDAYS[6]})")


@dataclass(frozen=True)
class Window:
    """A daily maintenance window; `days` are weekdays of the local date it starts on."""

    name: str
    start: int
    end: int
    days: frozenset[int] = ALL_DAYS
    message: str | None = None

    def __post_init__(self) -> None:
        _validate(f"window {self.name!r}", self.days, self.start, self.end)
        if self.start == self.end:
            raise ValueError(
                f"window {self.name!r}: start and end are both "
                f"{format_time_of_day(self.start)}; a window cannot be empty"
            )


@dataclass(frozen=True)
class Occurrence:
    """One concrete run of a window, `start` to `end` in UTC."""

    name: str
    start: datetime
    end: datetime
    message: str | None

    def key(self) -> str:
        """A stable id of this occurrence, for remembering what already happened."""
        return f"{self.name}@{self.start.isoformat()}"


@dataclass(frozen=True)
class DailyJob:
    """A job that runs daily at local wall time `at` on the given weekdays."""

    name: str
    at: int
    days: frozenset[int] = ALL_DAYS

    def __post_init__(self) -> None:
        _validate(f"job {self.name!r}", self.days, self.at)


@dataclass(frozen=True)
class Due:
    """Something scheduled that came due between two clock readings."""

    kind: DueKind
    name: str
    at: datetime
    key: str
    occurrence: Occurrence | None
    reason: SkipReason | None = None
    late: bool = False


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    """The naive local wall time of `instant` in `tz`."""
    return instant.astimezone(tz).replace(tzinfo=None)


def _end_of_gap(wall: datetime, tz: ZoneInfo) -> datetime:
    """The transition instant ending the DST gap that swallows `wall`, found by bisection."""
    # The two folds apply the offsets before and after the transition: one lands before
    # it (wall time still short of `wall`), the other after it (wall time past `wall`).
    lo, hi = sorted(int(wall.replace(tzinfo=tz, fold=fold).timestamp()) for fold in (0, 1))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), tz) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def local_instant(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of wall time `minutes` on local date `day` (DST rules: module doc)."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minutes)
    instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(instant, tz) == wall:  # exists; fold=0 picks the first of a repeated hour
        return instant
    return _end_of_gap(wall, tz)


def _local_days(since: datetime, until: datetime, tz: ZoneInfo) -> list[date]:
    """Local dates from the day before `since` to the day after `until`.

    The margin catches windows that started the day before and cross midnight.
    """
    for instant in (since, until):
        if instant.utcoffset() is None:
            raise ValueError(f"{instant!r} is naive; pass a timezone-aware datetime")
    first = since.astimezone(tz).date() - _DAY
    last = until.astimezone(tz).date() + _DAY
    return [first + n * _DAY for n in range((last - first).days + 1)]


def occurrence_on(window: Window, day: date, tz: ZoneInfo) -> Occurrence | None:
    """The occurrence of `window` starting on local date `day`; None if `day` is not in days."""
    if day.weekday() not in window.days:
        return None
    end_day = day + _DAY if window.end < window.start else day
    return Occurrence(
        name=window.name,
        start=local_instant(day, window.start, tz),
        end=local_instant(end_day, window.end, tz),
        message=window.message,
    )


def _occurrences(
    window: Window, tz: ZoneInfo, since: datetime, until: datetime
) -> Iterator[Occurrence]:
    """Occurrences of `window` on the local dates around `since` … `until`, in time order."""
    for day in _local_days(since, until, tz):
        occurrence = occurrence_on(window, day, tz)
        if occurrence is not None:
            yield occurrence


def current_occurrence(window: Window, tz: ZoneInfo, now: datetime) -> Occurrence | None:
    """The occurrence of `window` open at `now` (``start <= now < end``), if any."""
    return next((o for o in _occurrences(window, tz, now, now) if o.start <= now < o.end), None)


def occurrences_between(
    window: Window, tz: ZoneInfo, since: datetime, until: datetime
) -> list[Occurrence]:
    """Occurrences of `window` whose start is in ``(since, until]``, in time order."""
    return [o for o in _occurrences(window, tz, since, until) if since < o.start <= until]


def next_occurrence(window: Window, tz: ZoneInfo, now: datetime) -> Occurrence:
    """The first occurrence of `window` starting after `now`."""
    return occurrences_between(window, tz, now, now + _LOOKAHEAD)[0]


def job_times_between(
    job: DailyJob, tz: ZoneInfo, since: datetime, until: datetime
) -> list[datetime]:
    """The run instants of `job` in ``(since, until]``, in time order."""
    instants = (
        local_instant(day, job.at, tz)
        for day in _local_days(since, until, tz)
        if day.weekday() in job.days
    )
    return [at for at in instants if since < at <= until]


def next_job_time(job: DailyJob, tz: ZoneInfo, now: datetime) -> datetime:
    """The first run instant of `job` after `now`."""
    return job_times_between(job, tz, now, now + _LOOKAHEAD)[0]


def blocking_window(windows: Sequence[Window], tz: ZoneInfo, t: datetime) -> Occurrence | None:
    """The occurrence that skips a job starting at `t`: ``start <= t <= end``.

    The first blocking window in `windows` order wins; yesterday's occurrences count too.
    """
    for window in windows:
        for occurrence in _occurrences(window, tz, t, t):
            if occurrence.start <= t <= occurrence.end:
                return occurrence
    return None


def open_occurrences(windows: Sequence[Window], tz: ZoneInfo, now: datetime) -> list[Occurrence]:
    """The window occurrences open at `now`, in `windows` order (e.g. at start-up mid-window)."""
    return [o for w in windows if (o := current_occurrence(w, tz, now)) is not None]


def _window_dues(
    window: Window,
    tz: ZoneInfo,
    notice: timedelta,
    since: datetime,
    now: datetime,
    cutoff: datetime,
) -> Iterator[Due]:
    """upcoming / opened / closed of `window` whose instant is in ``(since, now]``."""
    for occurrence in _occurrences(window, tz, since - _DAY, now + notice):
        moments: tuple[tuple[DueKind, datetime], ...] = (
            ("window.upcoming", occurrence.start - notice),
            ("window.opened", occurrence.start),
            ("window.closed", occurrence.end),
        )
        for kind, at in moments:
            if since < at <= now:
                key = f"{kind}:{window.name}@{at.isoformat()}"
                yield Due(kind, window.name, at, key, occurrence, late=at < cutoff)


def _job_dues(
    job: DailyJob,
    windows: Sequence[Window],
    tz: ZoneInfo,
    since: datetime,
    now: datetime,
    cutoff: datetime,
) -> Iterator[Due]:
    """One due-or-skipped per run instant of `job` in ``(since, now]``."""
    for at in job_times_between(job, tz, since, now):
        key = f"job:{job.name}@{at.isoformat()}"  # shared by due and skipped: one firing
        late = at < cutoff
        blocker = blocking_window(windows, tz, at)
        if blocker is not None:
            yield Due("job.skipped", job.name, at, key, blocker, reason="window", late=late)
        elif late:
            yield Due("job.skipped", job.name, at, key, None, reason="missed", late=True)
        else:
            yield Due("job.due", job.name, at, key, None)


def _order(due: Due) -> tuple[datetime, int, str]:
    """Sort key: time, then kind (see ``_KIND_ORDER``), then name."""
    return (due.at, _KIND_ORDER[due.kind], due.name)


def plan(
    windows: Sequence[Window],
    jobs: Sequence[DailyJob],
    tz: ZoneInfo,
    notice: timedelta,
    since: datetime,
    now: datetime,
    done: frozenset[str] = _NOTHING_DONE,
    max_late: timedelta = DEFAULT_MAX_LATE,
) -> list[Due]:
    """Everything scheduled in ``(since, now]``, in time order, minus keys in `done`.

    Anything scheduled more than `max_late` before `now` (the clock jumped forward, or the
    service was down) is ``late=True``. Late window events are history: the caller reports
    them but holds a window only while ``occurrence.end > now`` (what :func:`open_occurrences`
    says), so a window that opened and closed unseen never flickers the maint file. A late
    job is never run: it becomes ``job.skipped`` with reason ``"missed"`` (or ``"window"`` if
    a window blocked it anyway). A backward jump (``now <= since``) yields nothing.
    """
    if now <= since:
        return []
    cutoff = now - max_late
    dues = [d for w in windows for d in _window_dues(w, tz, notice, since, now, cutoff)]
    dues += [d for j in jobs for d in _job_dues(j, windows, tz, since, now, cutoff)]
    return sorted((d for d in dues if d.key not in done), key=_order)


def next_wakeup(
    windows: Sequence[Window],
    jobs: Sequence[DailyJob],
    tz: ZoneInfo,
    notice: timedelta,
    now: datetime,
) -> datetime | None:
    """The earliest instant after `now` at which :func:`plan` yields something.

    None when there are no windows and no jobs. Keys in `done` are not considered.
    """
    candidates = [next_job_time(job, tz, now) for job in jobs]
    for window in windows:
        following = next_occurrence(window, tz, now)
        current = current_occurrence(window, tz, now)
        candidates += [
            next_occurrence(window, tz, now + notice).start - notice,
            following.start,
            following.end,
            *([current.end] if current is not None else []),
        ]
    return min(candidates, default=None)
