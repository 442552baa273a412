"""The scheduler in the service: an injected clock, a real Controller, a stub job runner."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from watcher.config import Config
from watcher.events.bus import EventBus
from watcher.events.record import Event
from watcher.registry import build_config
from watcher.service.controller import Controller
from watcher.service.operations import enter
from watcher.service.runner import JobRequest, JobRunner
from watcher.service.scheduler import Scheduler
from watcher.testing import capture_events

T0 = datetime(2026, 11, 26, 1, 40, tzinfo=UTC)  # a Thursday; 20 minutes before "nightly"
NIGHTLY = {"name": "nightly", "start": "02:00", "end": "03:00", "message": "Nightly maintenance"}


class FakeClock:
    """A wall clock that only moves when told to, forwards or backwards."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class StubRunner:
    """Stands in for ``JobRunner``: records each submitted request with the clock's time."""

    clock: FakeClock
    submitted: list[tuple[datetime, JobRequest]] = field(default_factory=list)

    def submit(self, request: JobRequest) -> None:
        self.submitted.append((self.clock(), request))

    def names(self) -> list[str]:
        return [request.name for _at, request in self.submitted]


@dataclass
class Rig:
    """A scheduler wired to a real Controller on tmp_path, with its events captured."""

    scheduler: Scheduler
    controller: Controller
    runner: StubRunner
    clock: FakeClock
    config: Config
    events: list[Event]

    @property
    def maint_file(self) -> Path:
        return self.config.paths.maint_file

    def step_at(self, moment: datetime) -> None:
        """Set the clock to ``moment`` and let the scheduler act on what is due."""
        self.clock.set(moment)
        self.scheduler.step()

    def of(self, action: str) -> list[Event]:
        return [e for e in self.events if e.action == action]

    def window_holds(self) -> list[str]:
        return [h.name for h in self.controller.state.holds if h.reason == "window"]

    def message(self) -> str:
        doc = json.loads(self.maint_file.read_bytes())
        assert isinstance(doc, dict)
        return str(doc["message"])


def config_for(
    data_dir: Path,
    *,
    windows: tuple[dict[str, Any], ...] = (),
    jobs: tuple[dict[str, Any], ...] = (),
    timezone: str = "UTC",
) -> Config:
    """A validated Config on ``data_dir`` with these windows and scheduled jobs."""
    (data_dir / "mw" / "data").mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "timezone": timezone,
        "maintenance": {"windows": list(windows)},
        "jobs": list(jobs),
    }
    return build_config(raw, source=None, data_dir=data_dir)


def dbcheck_at(name: str, at: str) -> dict[str, Any]:
    """A scheduled dbcheck job (the stub runner never runs it)."""
    return {"name": name, "type": "dbcheck", "at": at}


Make = Callable[..., Rig]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Build a Rig for given windows and jobs, the clock at ``now`` (default T0)."""
    with ExitStack() as stack:

        def build(
            *,
            windows: tuple[dict[str, Any], ...] = (),
            jobs: tuple[dict[str, Any], ...] = (),
            timezone: str = "UTC",
            now: datetime = T0,
        ) -> Rig:
            config = config_for(tmp_path, windows=windows, jobs=jobs, timezone=timezone)
            clock = FakeClock(now)
            bus = EventBus()
            events = stack.enter_context(capture_events(bus))
            controller = Controller(
                config.paths, bus, default_message=config.maintenance.message, clock=clock
            )
            controller.load()
            runner = StubRunner(clock)
            scheduler = Scheduler(lambda: config, bus, controller, cast(JobRunner, runner), clock)
            return Rig(scheduler, controller, runner, clock, config, events)

        yield build


def z(text: str) -> datetime:
    """A UTC instant from ``"YYYY-MM-DD HH:MM"``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- windows ------------------------------------------------------------------------------


def test_window_upcoming_opened_closed(make: Make) -> None:
    """A window gives upcoming at notice before start, a hold with its message, then release."""
    rig = make(windows=(NIGHTLY,))
    rig.scheduler.step()
    assert rig.events == []

    rig.step_at(z("2026-11-26 01:50"))
    [upcoming] = rig.of("window.upcoming")
    assert upcoming.fields["window"]["name"] == "nightly"
    assert upcoming.fields["window"]["start"] == z("2026-11-26 02:00").isoformat()
    assert not rig.maint_file.exists() and rig.window_holds() == []

    rig.step_at(z("2026-11-26 02:00"))
    [opened] = rig.of("window.opened")
    assert opened.fields["held"] is True and opened.fields["late"] is False
    assert rig.window_holds() == ["nightly"]
    assert rig.maint_file.exists() and rig.message() == "Nightly maintenance"
    assert rig.of("maintenance.entered")

    rig.step_at(z("2026-11-26 02:30"))
    assert rig.maint_file.exists() and len(rig.of("window.opened")) == 1

    rig.step_at(z("2026-11-26 03:00"))
    [closed] = rig.of("window.closed")
    assert closed.fields["window"]["name"] == "nightly"
    assert rig.window_holds() == [] and not rig.maint_file.exists()
    assert rig.of("maintenance.left")


def test_window_around_now_is_held_by_open_current(make: Make) -> None:
    """Started in the middle of a window, ``open_current`` holds it at once."""
    rig = make(windows=(NIGHTLY,), now=z("2026-11-26 02:25"))
    rig.scheduler.open_current()
    [opened] = rig.of("window.opened")
    assert opened.fields["held"] is True
    assert rig.window_holds() == ["nightly"]
    assert rig.maint_file.exists() and rig.message() == "Nightly maintenance"

    rig.scheduler.step()
    rig.scheduler.open_current()  # a second look does not open it again
    assert len(rig.of("window.opened")) == 1 and len(rig.of("maintenance.hold_added")) == 1

    rig.step_at(z("2026-11-26 03:00"))
    assert rig.window_holds() == [] and not rig.maint_file.exists()


def test_window_across_midnight_opens_and_closes(make: Make) -> None:
    """A window whose end is before its start ends the next day."""
    late = {"name": "late", "start": "23:30", "end": "00:30"}
    rig = make(windows=(late,), now=z("2026-11-26 23:00"))
    rig.scheduler.step()
    rig.step_at(z("2026-11-26 23:30"))
    assert rig.window_holds() == ["late"] and rig.maint_file.exists()
    rig.step_at(z("2026-11-27 00:00"))
    assert rig.window_holds() == ["late"]
    rig.step_at(z("2026-11-27 00:30"))
    assert rig.window_holds() == [] and not rig.maint_file.exists()
    assert [e.action for e in rig.events if e.action.startswith("window.")] == [
        "window.opened",
        "window.closed",
    ]


# --- scheduled jobs -----------------------------------------------------------------------


def test_job_inside_window_or_at_its_end_is_skipped_naming_it(make: Make) -> None:
    """Jobs at a time inside a window or equal to its end are skipped; others are submitted."""
    rig = make(
        windows=(NIGHTLY,),
        jobs=(dbcheck_at("inside", "02:30"), dbcheck_at("at-end", "03:00")),
    )
    rig.scheduler.step()
    for moment in ("01:50", "02:00", "02:30", "03:00", "03:10"):
        rig.step_at(z(f"2026-11-26 {moment}"))
    skipped = rig.of("job.skipped")
    assert [e.fields["job"]["name"] for e in skipped] == ["inside", "at-end"]
    for event in skipped:
        assert event.fields["reason"] == "window"
        assert event.fields["window"]["name"] == "nightly"
        assert "nightly" in event.message
    assert rig.runner.submitted == []


def test_job_outside_windows_is_submitted_once(make: Make) -> None:
    """A job outside every window is submitted once at its time, however often the clock is read."""
    rig = make(windows=(NIGHTLY,), jobs=(dbcheck_at("check", "04:00"),))
    rig.scheduler.step()
    for moment in ("02:00", "03:00", "03:50", "04:00", "04:00", "04:01", "05:00"):
        rig.step_at(z(f"2026-11-26 {moment}"))
    assert [(at, req.name) for at, req in rig.runner.submitted] == [
        (z("2026-11-26 04:00"), "check")
    ]
    [(_at, request)] = rig.runner.submitted
    assert request.type == "dbcheck" and request.source == "schedule" and request.maintenance
    assert rig.of("job.skipped") == []


# --- clock jumps --------------------------------------------------------------------------


def test_clock_jumps_forward_then_back(make: Make) -> None:
    """A jump forward reports the missed job and holds the open window; back repeats nothing."""
    long_window = {"name": "long", "start": "02:00", "end": "06:00"}
    rig = make(
        windows=(long_window,),
        jobs=(dbcheck_at("early", "00:40"), dbcheck_at("report", "01:00")),
        now=z("2026-11-26 00:30"),
    )
    rig.scheduler.step()
    rig.step_at(z("2026-11-26 00:40"))
    assert rig.runner.names() == ["early"]

    rig.step_at(z("2026-11-26 03:00"))  # an NTP step or a manual date change
    [missed] = rig.of("job.skipped")
    assert missed.fields["job"]["name"] == "report" and missed.fields["reason"] == "missed"
    assert missed.level == "warning"
    [opened] = rig.of("window.opened")
    assert opened.fields["late"] is True and opened.fields["held"] is True
    assert rig.window_holds() == ["long"] and rig.maint_file.exists()
    assert rig.runner.names() == ["early"]
    seen = len(rig.events)

    rig.step_at(z("2026-11-26 00:35"))  # and back again
    for moment in ("00:40", "01:00", "01:50", "02:00", "03:00", "03:05"):
        rig.step_at(z(f"2026-11-26 {moment}"))
    assert rig.runner.names() == ["early"]
    again = [e.action for e in rig.events[seen:]]
    assert "job.skipped" not in again and "window.opened" not in again
    assert "window.upcoming" not in again and "maintenance.hold_added" not in again
    assert rig.window_holds() == ["long"] and rig.maint_file.exists()

    rig.step_at(z("2026-11-26 06:00"))
    assert rig.window_holds() == [] and not rig.maint_file.exists()
    assert len(rig.of("window.closed")) == 1


def test_window_missed_entirely_while_the_clock_jumped_is_not_held(make: Make) -> None:
    """A window that opened and closed during a forward jump is reported, never held."""
    rig = make(windows=(NIGHTLY,), now=z("2026-11-26 01:00"))
    rig.scheduler.step()
    rig.step_at(z("2026-11-26 05:00"))
    [opened] = rig.of("window.opened")
    assert opened.fields["held"] is False and opened.fields["late"] is True
    assert rig.of("maintenance.hold_added") == [] and not rig.maint_file.exists()


# --- manual windows and operator release --------------------------------------------------


def test_manual_recurring_window_opens_and_closes(make: Make) -> None:
    """``enter --window`` stores a daily window that the scheduler opens and closes every day."""
    rig = make()
    answer = enter(
        rig.controller,
        {"window": "02:00-03:00", "message": "Manual work"},
        rig.config.tz,
        rig.config.maintenance.granularity,
    )
    assert "02:00-03:00" in answer
    rig.scheduler.step()
    for day in ("2026-11-26", "2026-11-27"):
        rig.step_at(z(f"{day} 01:50"))
        rig.step_at(z(f"{day} 02:00"))
        assert rig.window_holds() == ["manual 02:00-03:00"]
        assert rig.maint_file.exists() and rig.message() == "Manual work"
        rig.step_at(z(f"{day} 03:00"))
        assert rig.window_holds() == [] and not rig.maint_file.exists()
    assert len(rig.of("window.upcoming")) == 2
    assert len(rig.of("window.opened")) == 2 and len(rig.of("window.closed")) == 2


def test_manual_window_entered_mid_window_is_held_by_open_current(make: Make) -> None:
    """A manual window added while its time is running is held at once (as the service does)."""
    rig = make(now=z("2026-11-26 02:20"))
    rig.scheduler.step()
    enter(rig.controller, {"window": "02:00-03:00"}, rig.config.tz, 10)
    rig.scheduler.open_current()
    assert rig.window_holds() == ["manual 02:00-03:00"] and rig.maint_file.exists()


def test_operator_release_skips_the_occurrence_until_the_next_day(make: Make) -> None:
    """Deleting the maint file drops the window hold for this occurrence; tomorrow's is held."""
    rig = make(windows=(NIGHTLY,))
    rig.scheduler.step()
    rig.step_at(z("2026-11-26 02:00"))
    assert rig.window_holds() == ["nightly"]

    rig.clock.advance(minutes=5)
    rig.maint_file.unlink()
    assert rig.controller.observe() == "released"
    assert rig.of("maintenance.released_by_operator")
    assert rig.window_holds() == []
    holds_added = len(rig.of("maintenance.hold_added"))

    rig.step_at(z("2026-11-26 02:10"))
    rig.scheduler.open_current()  # even asked directly, this occurrence stays released
    rig.step_at(z("2026-11-26 02:50"))
    assert rig.window_holds() == [] and not rig.maint_file.exists()
    assert len(rig.of("maintenance.hold_added")) == holds_added
    rig.step_at(z("2026-11-26 03:00"))

    rig.step_at(z("2026-11-27 01:50"))
    rig.step_at(z("2026-11-27 02:00"))
    assert rig.window_holds() == ["nightly"] and rig.maint_file.exists()
    rig.step_at(z("2026-11-27 03:00"))
    assert rig.window_holds() == [] and not rig.maint_file.exists()


def test_operator_release_removes_manual_windows(make: Make) -> None:
    """An operator release also removes recurring manual windows: they do not come back."""
    rig = make()
    enter(rig.controller, {"window": "02:00-03:00"}, rig.config.tz, 10)
    rig.scheduler.step()
    rig.step_at(z("2026-11-26 02:00"))
    assert rig.maint_file.exists()
    rig.maint_file.unlink()
    rig.controller.observe()
    assert rig.controller.state.manual_windows == ()
    rig.step_at(z("2026-11-26 03:00"))
    rig.step_at(z("2026-11-27 02:00"))
    assert rig.window_holds() == [] and not rig.maint_file.exists()


# --- DST ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        pytest.param("2026-03-29", z("2026-03-29 01:00"), id="spring-forward-gap"),
        pytest.param("2026-10-25", z("2026-10-25 00:30"), id="fall-back-repeat"),
    ],
)
def test_dst_job_runs_once_at_first_valid_instant(make: Make, day: str, expected: datetime) -> None:
    """In Europe/Berlin a 02:30 job runs once on a DST day: after the gap, or in the first pass."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC) - timedelta(hours=1)
    rig = make(jobs=(dbcheck_at("check", "02:30"),), timezone="Europe/Berlin", now=start)
    rig.scheduler.step()
    moment = start
    while moment < start + timedelta(hours=24):
        moment += timedelta(minutes=10)
        rig.step_at(moment)
    assert [at for at, _request in rig.runner.submitted] == [expected]
    assert rig.of("job.skipped") == []


@pytest.mark.parametrize(
    ("day", "end", "opens", "closes"),
    [
        pytest.param(
            "2026-03-29", "04:00", z("2026-03-29 01:00"), z("2026-03-29 02:00"), id="spring"
        ),
        pytest.param(
            "2026-10-25", "03:00", z("2026-10-25 00:00"), z("2026-10-25 02:00"), id="fall"
        ),
    ],
)
def test_dst_window_held_once_from_first_valid_instant(
    make: Make, day: str, end: str, opens: datetime, closes: datetime
) -> None:
    """A Berlin window from 02:00 on a DST day is held once, from the first valid instant."""
    window = {"name": "dst", "start": "02:00", "end": end}
    start = datetime.fromisoformat(day).replace(tzinfo=UTC) - timedelta(hours=1)
    rig = make(windows=(window,), timezone="Europe/Berlin", now=start)
    rig.scheduler.step()
    moment, held_at = start, []
    while moment < start + timedelta(hours=24):
        moment += timedelta(minutes=10)
        rig.step_at(moment)
        if rig.window_holds():
            held_at.append(moment)
    expected = int((closes - opens) / timedelta(minutes=10))
    assert held_at == [opens + n * timedelta(minutes=10) for n in range(expected)]
    assert len(rig.of("window.opened")) == 1 and len(rig.of("window.closed")) == 1
