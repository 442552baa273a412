"""The disk guard in the service: scripted readings → disk.* events, the disk hold, reminders.

A real ``Controller`` on tmp_path owns the maint file; a bare ``EventBus`` carries the events,
collected with ``watcher.testing.capture_events``. Readings are scripted (the sampler itself is
tested in test_disk_sampler.py and on a real filesystem in test_disk_e2e.py).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

import watcher.service.diskguard
from watcher.config import Config
from watcher.core.disklevels import Reading
from watcher.events.bus import EventBus
from watcher.events.record import Event
from watcher.registry import build_config
from watcher.service.controller import Controller
from watcher.service.diskguard import DiskGuard
from watcher.testing import capture_events

MiB = 1024**2
TOTAL = 1000 * MiB
# warn 200 MiB, maintenance 100 MiB, critical 50 MiB: critical is left above 100 MiB,
# maintenance above 200 MiB, warn above 200 + (200 - 100) / 2 = 250 MiB.
LEVELS = {"warn": "200MiB", "maintenance": "100MiB", "critical": "50MiB"}
THRESHOLDS = {"warn": 200 * MiB, "maintenance": 100 * MiB, "critical": 50 * MiB}


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A DiskGuard, its Controller and its bus on one data directory, as the service wires them."""

    def __init__(self, data_dir: Path, config: Config) -> None:
        self.data_dir = data_dir
        self.config = config
        self.bus = EventBus()
        self.controller = Controller(
            config.paths, self.bus, default_message=config.maintenance.message
        )
        self.controller.load()
        self.guard = DiskGuard(lambda: self.config, self.bus, self.controller)

    @property
    def maint_file(self) -> Path:
        return self.config.paths.maint_file

    def feed(self, *frees_mib: float) -> None:
        """Apply one reading per free amount (MiB of a TOTAL-byte filesystem, no inodes)."""
        for free in frees_mib:
            self.guard.apply(Reading(int(free * MiB), TOTAL, None, None))

    def holds(self) -> list[tuple[str, str]]:
        return [(h.reason, h.name) for h in self.controller.state.holds]

    def file_holds(self) -> list[str]:
        """The hold reasons written in the maint file."""
        return [h["reason"] for h in orjson.loads(self.maint_file.read_bytes())["holds"]]

    def operator_release(self) -> str:
        """What an operator's ``rm`` of the maint file does, seen by the next re-read."""
        self.maint_file.unlink()
        return self.controller.observe()


def make_config(data_dir: Path, **disk: Any) -> Config:
    """The config with the disk levels above (overridable), built as the service builds it."""
    section = {**LEVELS, "for_samples": 2, "reminder": "10m", **disk}
    return build_config({"disk": section}, source=None, data_dir=data_dir)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """A guard on a fresh data directory with the default levels of this module."""
    return Rig(tmp_path, make_config(tmp_path))


def disk_actions(events: Sequence[Event]) -> list[str]:
    return [e.action for e in events if e.action.startswith("disk.")]


def actions(events: Sequence[Event], prefix: str = "") -> list[str]:
    return [e.action for e in events if e.action.startswith(prefix)]


def reminders(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if e.action == "disk.reminder"]


def only(events: Sequence[Event], action: str) -> Event:
    found = [e for e in events if e.action == action]
    assert len(found) == 1, f"{action}: {[e.action for e in events]}"
    return found[0]


# --- events ---------------------------------------------------------------------------------


def test_events_follow_the_levels_down_and_back_up_in_order(rig: Rig) -> None:
    """Falling then recovering readings give warn, maintenance, critical, then back to ok."""
    with capture_events(rig.bus) as events:
        rig.feed(500, 150, 150, 80, 80, 40, 90, 150, 240, 260)
    assert disk_actions(events) == [
        "disk.warn",
        "disk.maintenance",
        "disk.critical",
        "disk.maintenance",  # 150 MiB: above maintenance, so critical is left — for maintenance
        "disk.warn",  # 240 MiB: above warn (200) but not above its exit (250)
        "disk.ok",
    ]
    assert [e.level for e in events if e.action.startswith("disk.")] == [
        "warning",
        "error",
        "critical",
        "error",
        "warning",
        "info",
    ]


def test_events_carry_free_total_and_thresholds(rig: Rig) -> None:
    """Each disk event says where, which level, how much is free of how much, and the levels."""
    with capture_events(rig.bus) as events:
        rig.feed(150, 150)
    event = only(events, "disk.warn")
    disk = event.fields["disk"]
    assert disk["path"] == str(rig.data_dir)
    assert disk["level"] == "warn"
    assert disk["free"] == 150 * MiB
    assert disk["total"] == TOTAL
    assert disk["inodes_free"] is None and disk["inodes_total"] is None
    assert {k: disk["thresholds"][k] for k in THRESHOLDS} == THRESHOLDS
    assert set(disk["thresholds"]) == {*THRESHOLDS, "inodes_warn", "inodes_critical"}
    assert "150.0 MiB" in event.message and "1000.0 MiB" in event.message


def test_percent_levels_are_reported_resolved_against_the_total(tmp_path: Path) -> None:
    """Levels given in percent appear in the event as bytes of this filesystem's total."""
    rig = Rig(tmp_path, make_config(tmp_path, warn="20%", maintenance="10%", critical="5%"))
    with capture_events(rig.bus) as events:
        rig.feed(40)  # 4 % of the total: critical at once
    disk = only(events, "disk.critical").fields["disk"]
    assert disk["thresholds"]["warn"] == TOTAL * 20 // 100
    assert disk["thresholds"]["maintenance"] == TOTAL * 10 // 100
    assert disk["thresholds"]["critical"] == TOTAL * 5 // 100


def test_inode_levels_raise_events_with_the_inode_numbers(rig: Rig) -> None:
    """Few free inodes (plenty of bytes) enter critical, with the inode counts and levels."""
    with capture_events(rig.bus) as events:
        rig.guard.apply(Reading(900 * MiB, TOTAL, 5, 1000))  # 0.5 % free: below inodes_critical
    disk = only(events, "disk.critical").fields["disk"]
    assert (disk["inodes_free"], disk["inodes_total"]) == (5, 1000)
    assert disk["thresholds"]["inodes_warn"] == 50  # 5 % of 1000
    assert disk["thresholds"]["inodes_critical"] == 10  # 1 %
    assert rig.holds() == [("disk", "space")]


def test_debounce_needs_for_samples_readings_in_a_row(rig: Rig) -> None:
    """One low reading between good ones is no event; for_samples in a row is."""
    with capture_events(rig.bus) as events:
        rig.feed(150, 500, 150, 500, 80, 500)
    assert disk_actions(events) == []
    with capture_events(rig.bus) as events:
        rig.feed(150, 150)
    assert disk_actions(events) == ["disk.warn"]


def test_no_event_while_the_level_stays(rig: Rig) -> None:
    """Readings that move inside one level's band produce no further transition events."""
    rig.feed(150, 150)
    with capture_events(rig.bus) as events:
        rig.feed(190, 120, 199, 101, 250, 210)
    assert disk_actions(events) == []


# --- the disk hold ----------------------------------------------------------------------------


def test_maintenance_level_adds_the_disk_hold(rig: Rig) -> None:
    """Entering maintenance adds the disk hold: the maint file exists and names it."""
    with capture_events(rig.bus) as events:
        rig.feed(150, 150)
        assert not rig.maint_file.exists()
        rig.feed(80, 80)
    assert actions(events) == [
        "disk.warn",
        "disk.maintenance",
        "maintenance.hold_added",
        "maintenance.entered",
    ]
    assert rig.maint_file.exists()
    assert rig.file_holds() == ["disk"]
    assert rig.holds() == [("disk", "space")]
    assert only(events, "maintenance.hold_added").fields["hold"]["reason"] == "disk"


def test_critical_keeps_the_single_disk_hold(rig: Rig) -> None:
    """Going on from maintenance to critical keeps one disk hold and adds no second one."""
    rig.feed(80, 80)
    with capture_events(rig.bus) as events:
        rig.feed(40, 30)
    assert actions(events) == ["disk.critical"]
    assert rig.holds() == [("disk", "space")]
    assert rig.maint_file.exists()


def test_critical_straight_from_ok_holds_maintenance(rig: Rig) -> None:
    """A single reading below critical from OK enters critical and holds maintenance at once."""
    with capture_events(rig.bus) as events:
        rig.feed(10)
    assert actions(events)[:2] == ["disk.critical", "maintenance.hold_added"]
    assert rig.maint_file.exists()


def test_recovery_releases_the_disk_hold(rig: Rig) -> None:
    """Back above warn, the disk hold is released and the maint file removed."""
    rig.feed(80, 80)
    with capture_events(rig.bus) as events:
        rig.feed(150)  # above maintenance, not above warn: maintenance still held
        assert rig.maint_file.exists()
        rig.feed(210)  # above warn: maintenance left, warn remains
    assert actions(events) == ["disk.warn", "maintenance.hold_released", "maintenance.left"]
    assert only(events, "maintenance.hold_released").fields["why"] == "disk recovered"
    assert not rig.maint_file.exists()
    assert rig.holds() == []


def test_disk_hold_keeps_other_holds(rig: Rig) -> None:
    """Releasing the disk hold on recovery keeps an operator's manual hold and the file."""
    rig.maint_file.parent.mkdir(parents=True)
    rig.maint_file.write_text("Upgrading\n")
    assert rig.controller.observe() == "adopt"
    rig.feed(80, 80)
    assert sorted(rig.file_holds()) == ["disk", "manual"]
    rig.feed(300)
    assert rig.holds() == [("manual", "operator")]
    assert rig.maint_file.exists()


# --- operator release: the disk hold re-arms only after recovery (DESIGN §3) ----------------


def test_operator_release_is_not_undone_while_the_disk_stays_low(rig: Rig) -> None:
    """After an rm of the maint file, low readings — even down to critical — add no disk hold."""
    rig.feed(80, 80)
    assert rig.operator_release() == "released"
    with capture_events(rig.bus) as events:
        rig.feed(80, 90, 60)  # still maintenance
        rig.feed(40)  # critical: a transition, but still no recovery
        rig.feed(120)  # back to maintenance from critical: still not recovered
    assert disk_actions(events) == ["disk.critical", "disk.maintenance"]
    assert "maintenance.hold_added" not in actions(events)
    assert not rig.maint_file.exists()
    assert rig.holds() == []


def test_disk_hold_rearms_after_recovery_to_warn_and_a_new_fall(rig: Rig) -> None:
    """Once the disk is back above the maintenance band, the next fall holds maintenance again."""
    rig.feed(80, 80)
    rig.operator_release()
    rig.feed(40, 120)
    with capture_events(rig.bus) as events:
        rig.feed(210)  # recovered: out of maintenance, into warn
        assert not rig.maint_file.exists()
        rig.feed(80, 80)  # fell again
    assert actions(events) == [
        "disk.warn",
        "disk.maintenance",
        "maintenance.hold_added",
        "maintenance.entered",
    ]
    assert rig.maint_file.exists()
    assert rig.file_holds() == ["disk"]


def test_disk_hold_rearms_after_recovery_to_ok_and_a_new_fall(rig: Rig) -> None:
    """A full recovery to OK, then a fall straight to critical, holds maintenance again."""
    rig.feed(80, 80)
    rig.operator_release()
    rig.feed(500)
    with capture_events(rig.bus) as events:
        rig.feed(10)
    assert actions(events)[:2] == ["disk.critical", "maintenance.hold_added"]
    assert rig.maint_file.exists()


def test_operator_release_then_restart_still_rearms_after_recovery(tmp_path: Path) -> None:
    """A restart after an operator release: the disk recovers, falls again — and is held again."""
    config = make_config(tmp_path)
    first = Rig(tmp_path, config)
    first.feed(80, 80)
    first.operator_release()
    second = Rig(tmp_path, config)  # the service restarted; its guard starts at "ok"
    second.feed(500, 500)  # the disk has recovered
    with capture_events(second.bus) as events:
        second.feed(80, 80)  # and falls again, straight into the maintenance band
    assert disk_actions(events) == ["disk.maintenance"]
    assert second.maint_file.exists(), "the disk hold did not re-arm after recovery"
    assert second.holds() == [("disk", "space")]


# --- reminders ------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The guard's monotonic clock, replaced in ``watcher.service.diskguard`` only."""
    fake = Clock()
    monkeypatch.setattr(watcher.service.diskguard, "time", types.SimpleNamespace(monotonic=fake))
    return fake


def test_reminder_repeats_every_reminder_seconds_while_not_ok(tmp_path: Path, clock: Clock) -> None:
    """disk.reminder comes `reminder` seconds after the last disk event, then again, with fields."""
    rig = Rig(tmp_path, make_config(tmp_path, reminder="60s"))
    rig.feed(150, 150)
    with capture_events(rig.bus) as events:
        clock.now += 59.0
        rig.feed(160)
        assert reminders(events) == []
        clock.now += 1.0
        rig.feed(170)
        assert len(reminders(events)) == 1
        clock.now += 59.0
        rig.feed(170)
        assert len(reminders(events)) == 1
        clock.now += 1.0
        rig.feed(180)
    found = reminders(events)
    assert len(found) == 2
    assert [e.fields["disk"]["free"] for e in found] == [170 * MiB, 180 * MiB]
    assert all(e.fields["disk"]["level"] == "warn" and e.level == "warning" for e in found)
    assert found[0].fields["disk"]["thresholds"]["warn"] == THRESHOLDS["warn"]
    assert disk_actions(events) == ["disk.reminder", "disk.reminder"]


def test_a_transition_restarts_the_reminder_period(tmp_path: Path, clock: Clock) -> None:
    """A level change is itself news: the next reminder is a full period after it."""
    rig = Rig(tmp_path, make_config(tmp_path, reminder="60s"))
    rig.feed(150, 150)
    clock.now += 50.0
    with capture_events(rig.bus) as events:
        rig.feed(80, 80)  # maintenance entered at t+50
        clock.now += 30.0
        rig.feed(80)  # 80 s after warn, 30 s after maintenance: not yet
        assert "disk.reminder" not in actions(events)
        clock.now += 30.0
        rig.feed(80)
    reminder = only(events, "disk.reminder")
    assert reminder.fields["disk"]["level"] == "maintenance"
    assert reminder.level == "error"


def test_no_reminder_while_ok(tmp_path: Path, clock: Clock) -> None:
    """An OK disk is never reminded about, however long it stays OK."""
    rig = Rig(tmp_path, make_config(tmp_path, reminder="1s"))
    with capture_events(rig.bus) as events:
        for _ in range(5):
            clock.now += 3600.0
            rig.feed(900)
    assert events == []


def restarted(rig: Rig) -> Rig:
    """A new guard and controller on the same data directory, as after a service restart."""
    return Rig(rig.data_dir, rig.config)


def test_a_carried_over_disk_hold_is_released_when_the_disk_has_recovered(rig: Rig) -> None:
    """A disk hold persisted across a restart goes at the first sample of a recovered disk."""
    rig.feed(80, 80)
    assert rig.holds() == [("disk", "space")]
    after = restarted(rig)
    assert after.holds() == [("disk", "space")]
    after.feed(600)
    assert after.holds() == []
    assert not after.maint_file.exists()


def test_a_carried_over_disk_hold_stays_while_the_disk_is_still_low(rig: Rig) -> None:
    """A disk hold persisted across a restart stays while the disk is still low, and is left
    by hysteresis as usual."""
    rig.feed(80, 80)
    after = restarted(rig)
    after.feed(80, 150)  # back above maintenance, but not above warn: still held
    assert after.holds() == [("disk", "space")]
    after.feed(220)
    assert after.holds() == []


def test_an_operator_release_is_not_undone_by_a_restart_while_still_low(rig: Rig) -> None:
    """After an operator release and a restart, a disk that never recovered is not held again."""
    rig.feed(80, 80)
    assert rig.operator_release() == "released"
    after = restarted(rig)
    with capture_events(after.bus) as events:
        after.feed(80, 80, 80)
    assert after.holds() == []
    assert not after.maint_file.exists()
    assert "maintenance.hold_added" not in actions(events)


# --- pacing and forecast ----------------------------------------------------------------------


def test_the_guard_samples_slowly_far_from_levels_and_fast_near_them(tmp_path: Path) -> None:
    """Far above warn the next sample is an interval away; near it, the fast interval."""
    rig = Rig(tmp_path, make_config(tmp_path, max_fill_rate="100MiB/s"))
    rig.feed(900)  # 700 MiB above warn: 7 s of filling at the fastest, capped at 1 s
    assert rig.guard.delay == 1.0
    rig.feed(200.5)  # half a MiB above warn: a crossing is possible at once
    assert rig.guard.delay == 0.05


def test_a_pending_level_is_confirmed_after_the_fast_interval(rig: Rig) -> None:
    """With for_samples = 2, the first reading below warn asks for the second one right away."""
    rig.feed(900)
    with capture_events(rig.bus) as events:
        rig.feed(150)
        assert rig.guard.delay == 0.05
        assert disk_actions(events) == []
        rig.feed(150)
    assert disk_actions(events) == ["disk.warn"]


def test_a_failed_sample_waits_a_whole_interval(rig: Rig) -> None:
    """A disk that cannot be sampled is tried again at the slow pace, not in a tight loop."""
    rig.feed(200.5)
    rig.guard.path = rig.data_dir / "gone"
    rig.guard.tick()
    assert rig.guard.delay == 1.0


def fill(rig: Rig, clock: Clock, start_mib: float, mib_per_s: float, seconds: int) -> None:
    """Readings once a second of free space falling at ``mib_per_s``."""
    for i in range(seconds):
        rig.feed(start_mib - mib_per_s * i)
        clock.now += 1.0


def test_forecast_is_said_once_when_maintenance_is_near_and_again_after_clearing(
    tmp_path: Path, clock: Clock
) -> None:
    """disk.forecast names the time and rate once; it re-arms only after the fall has stopped."""
    rig = Rig(tmp_path, make_config(tmp_path, forecast_horizon="10m"))
    with capture_events(rig.bus) as events:
        fill(rig, clock, 900, 1, 120)  # 1 MiB/s, 780 MiB above maintenance: 13 min away
        assert [e for e in events if e.action == "disk.forecast"] == []
        fill(rig, clock, 780, 2, 60)  # 2 MiB/s: about 5 min away
        said = [e for e in events if e.action == "disk.forecast"]
        assert len(said) == 1
        ahead = said[0].fields["forecast"]
        assert ahead["level"] == "maintenance"
        assert 0 < ahead["eta"] <= 600
        assert MiB < ahead["fill_rate"] <= 2 * MiB  # the fit spans the change of pace
        left = said[0].fields["disk"]["free"] - THRESHOLDS["maintenance"]
        assert ahead["eta"] * ahead["fill_rate"] == pytest.approx(left, rel=0.05)
        assert said[0].level == "warning"
        fill(rig, clock, 662, 2, 30)  # still falling: not said again
        assert len([e for e in events if e.action == "disk.forecast"]) == 1
        fill(rig, clock, 602, 0, 400)  # steady for longer than the window: re-armed
        fill(rig, clock, 602, 3, 40)
    assert len([e for e in events if e.action == "disk.forecast"]) == 2


def test_no_forecast_when_disabled_or_already_in_maintenance(tmp_path: Path, clock: Clock) -> None:
    """forecast_horizon = 0 turns it off; a disk already at maintenance needs no forecast."""
    off = Rig(tmp_path / "off", make_config(_mkdir(tmp_path / "off"), forecast_horizon="0"))
    assert make_config(tmp_path, forecast_horizon=0).disk.forecast_horizon == 0
    with capture_events(off.bus) as events:
        fill(off, clock, 400, 5, 60)
    assert "disk.forecast" not in disk_actions(events)
    low = Rig(tmp_path / "low", make_config(_mkdir(tmp_path / "low"), forecast_horizon="1h"))
    with capture_events(low.bus) as events:
        fill(low, clock, 90, 0.5, 80)
    assert "disk.forecast" not in disk_actions(events)
    assert "disk.maintenance" in disk_actions(events)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
