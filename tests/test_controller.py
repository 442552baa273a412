"""The maintenance shell on real files: holds ↔ maint file, operator actions, state, restarts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from watcher.config import PathsConfig
from watcher.core.maintenance import Hold
from watcher.events.bus import EventBus
from watcher.events.record import Event
from watcher.service.controller import Controller
from watcher.service.state import ManualWindow
from watcher.testing import capture_events

DEFAULT = "The system is under maintenance."
T0 = datetime(2026, 11, 26, 1, 55, tzinfo=UTC)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def paths(tmp_path: Path) -> PathsConfig:
    """The DESIGN §2 paths under tmp_path, with mw/data present."""
    mw = tmp_path / "mw"
    (mw / "data").mkdir(parents=True)
    return PathsConfig(
        maint_file=mw / "data" / "maint",
        data=mw / "data",
        files=mw / "file",
        archive_root=mw,
        logs=mw / "log" / "sched" / "dynamic",
        spool=mw / "spool",
        state=mw / "watcher",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(paths: PathsConfig, clock: FakeClock) -> Callable[[], Controller]:
    """A factory of Controllers on the same paths and clock (a new one is a restart)."""

    def new() -> Controller:
        ctl = Controller(paths, EventBus(), default_message=DEFAULT, clock=clock)
        ctl.load()
        return ctl

    return new


@pytest.fixture
def ctl(make: Callable[[], Controller]) -> Controller:
    return make()


def actions(events: list[Event]) -> list[str]:
    return [e.action for e in events]


def only(events: list[Event], action: str) -> Event:
    """The single event with ``action``."""
    found = [e for e in events if e.action == action]
    assert len(found) == 1, f"expected one {action}, got {actions(events)}"
    return found[0]


def read_maint(paths: PathsConfig) -> dict[str, Any]:
    doc = orjson.loads(paths.maint_file.read_bytes())
    assert isinstance(doc, dict)
    return doc


def manual(since: datetime, **kw: Any) -> Hold:
    return Hold("manual", "cli", since, **kw)


# --- holds ↔ file ------------------------------------------------------------------------


def test_add_hold_writes_the_design_json(ctl: Controller, paths: PathsConfig) -> None:
    """Adding a hold writes the maint file with the DESIGN §3 JSON of that hold."""
    ctl.add_hold(manual(T0, until=T0 + timedelta(hours=1), message="Upgrade"))
    doc = read_maint(paths)
    assert set(doc) == {"message", "start", "end", "holds", "set_by"} | {
        "start_local",
        "end_local",
        "timezone",
    }
    assert doc["message"] == "Upgrade"
    assert datetime.fromisoformat(doc["start"]) == T0
    assert datetime.fromisoformat(doc["end"]) == T0 + timedelta(hours=1)
    assert doc["set_by"] == "watcher"
    assert [(h["reason"], h["name"]) for h in doc["holds"]] == [("manual", "cli")]
    assert datetime.fromisoformat(doc["holds"][0]["since"]) == T0
    assert ctl.active


def test_default_message_and_open_end(ctl: Controller, paths: PathsConfig) -> None:
    """A hold without message or until gives the default message and ``end: null``."""
    ctl.add_hold(manual(T0))
    doc = read_maint(paths)
    assert doc["message"] == DEFAULT
    assert doc["end"] is None


@pytest.fixture
def fs_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Record os.open/fsync/rename/unlink as (call, path), to check the atomic write protocol."""
    calls: list[tuple[str, str]] = []
    fds: dict[int, str] = {}
    real_open, real_fsync, real_rename, real_unlink = os.open, os.fsync, os.rename, os.unlink
    real_link = os.link

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        fd = real_open(path, flags, mode, **kw)
        fds[fd] = str(path)
        calls.append(("open", str(path)))
        return fd

    def spy_fsync(fd: int) -> None:
        calls.append(("fsync", fds.get(fd, f"fd {fd}")))
        real_fsync(fd)

    def spy_rename(src: Any, dst: Any, **kw: Any) -> None:
        calls.append(("rename", f"{src} -> {dst}"))
        real_rename(src, dst, **kw)

    def spy_link(src: Any, dst: Any, **kw: Any) -> None:
        calls.append(("link", f"{src} -> {dst}"))
        real_link(src, dst, **kw)

    def spy_unlink(path: Any, **kw: Any) -> None:
        calls.append(("unlink", str(path)))
        real_unlink(path, **kw)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "rename", spy_rename)
    monkeypatch.setattr(os, "unlink", spy_unlink)
    monkeypatch.setattr(os, "link", spy_link)
    yield calls


def test_file_is_written_and_removed_atomically(
    ctl: Controller, paths: PathsConfig, fs_calls: list[tuple[str, str]]
) -> None:
    """The file is written via temp file in its dir, fsync, then published whole (a hard link
    when creating it, which never overwrites someone else's file), fsync dir; removed likewise."""
    maint = str(paths.maint_file)
    directory = str(paths.maint_file.parent)
    ctl.add_hold(manual(T0))
    renames = [c for c in fs_calls if c[0] == "link" and c[1].endswith(f"-> {maint}")]
    assert len(renames) == 1
    tmp = renames[0][1].split(" -> ")[0]
    assert Path(tmp).parent == paths.maint_file.parent
    assert tmp != maint
    i_rename = fs_calls.index(renames[0])
    assert ("fsync", tmp) in fs_calls[:i_rename], "data is fsynced before the rename"
    assert ("fsync", directory) in fs_calls[i_rename:], "the directory is fsynced after it"
    assert not Path(tmp).exists()
    assert not [p for p in paths.maint_file.parent.iterdir() if p.name.endswith(".tmp")]

    fs_calls.clear()
    ctl.release("manual")
    i_unlink = fs_calls.index(("unlink", maint))
    assert ("fsync", directory) in fs_calls[i_unlink:]
    assert not paths.maint_file.exists()


def test_rewrite_replaces_the_file(ctl: Controller, paths: PathsConfig) -> None:
    """A change of holds replaces the file (new inode), never edits it in place."""
    ctl.add_hold(manual(T0, message="first"))
    before = paths.maint_file.stat().st_ino
    with paths.maint_file.open("rb") as old:  # a reader holding the old file
        ctl.add_hold(Hold("job", "dbcheck", T0, message="ignored: manual wins"))
        assert orjson.loads(old.read())["holds"] == [
            {"reason": "manual", "name": "cli", "since": T0.isoformat()}
        ]
    assert paths.maint_file.stat().st_ino != before
    assert [h["name"] for h in read_maint(paths)["holds"]] == ["cli", "dbcheck"]


def test_entered_and_left_events_with_duration(
    ctl: Controller, paths: PathsConfig, clock: FakeClock
) -> None:
    """The first hold emits entered; the last release emits left with event.duration in ns."""
    with capture_events(ctl.bus) as events:
        ctl.add_hold(manual(T0))
        assert actions(events) == ["maintenance.hold_added", "maintenance.entered"]
        clock.advance(seconds=90.5)
        ctl.add_hold(Hold("job", "dbcheck", clock()))
        assert actions(events)[2:] == ["maintenance.hold_added"], "no second entered"
        ctl.release("job", "dbcheck")
        assert paths.maint_file.exists(), "one hold is left"
        assert "maintenance.left" not in actions(events)
        clock.advance(seconds=30)
        assert ctl.release("manual") is True
    assert actions(events)[-2:] == ["maintenance.hold_released", "maintenance.left"]
    left = only(events, "maintenance.left")
    assert left.duration_ns == 120_500_000_000
    released = [e for e in events if e.action == "maintenance.hold_released"]
    assert [e.fields["why"] for e in released] == ["released", "released"]
    assert not paths.maint_file.exists()
    assert not ctl.active


def test_release_without_matching_hold(ctl: Controller, paths: PathsConfig) -> None:
    """Releasing a hold that is not there returns False and changes nothing."""
    ctl.add_hold(manual(T0))
    with capture_events(ctl.bus) as events:
        assert ctl.release("job", "backup") is False
    assert events == []
    assert paths.maint_file.exists()


def test_expiry_with_injected_clock(ctl: Controller, paths: PathsConfig, clock: FakeClock) -> None:
    """Past a hold's until, expire() releases it (why=expired) and removes the file."""
    ctl.add_hold(manual(T0, until=T0 + timedelta(minutes=5)))
    assert ctl.next_deadline() == T0 + timedelta(minutes=5)
    with capture_events(ctl.bus) as events:
        clock.advance(minutes=4, seconds=59)
        ctl.expire()
        assert events == []
        assert paths.maint_file.exists()
        clock.advance(seconds=1)
        ctl.expire()
    assert not paths.maint_file.exists()
    assert only(events, "maintenance.hold_released").fields["why"] == "expired"
    assert only(events, "maintenance.left").duration_ns == 300 * 10**9
    assert ctl.state.holds == ()
    assert ctl.next_deadline() is None


def test_expiry_of_one_hold_rewrites_the_file(
    ctl: Controller, paths: PathsConfig, clock: FakeClock
) -> None:
    """An expired hold among others only updates the file's content (end, holds)."""
    ctl.add_hold(manual(T0, until=T0 + timedelta(minutes=5), message="short"))
    ctl.add_hold(Hold("window", "nightly", T0, until=T0 + timedelta(hours=1), message="Nightly"))
    assert read_maint(paths)["message"] == "short"
    clock.advance(minutes=6)
    ctl.observe()
    doc = read_maint(paths)
    assert doc["message"] == "Nightly"
    assert datetime.fromisoformat(doc["end"]) == T0 + timedelta(hours=1)
    assert [h["name"] for h in doc["holds"]] == ["nightly"]


# --- operator touch ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", None, id="empty"),
        pytest.param(b"Replacing a disk\nback at 6\n", "Replacing a disk", id="text"),
        pytest.param(b'{"message": "from a script"}', "from a script", id="json"),
        pytest.param(b"\xff\xfe\x00\x81garbage", "\ufffd\ufffd\x00\ufffdgarbage", id="garbage"),
    ],
)
def test_operator_touch_is_adopted(
    ctl: Controller, paths: PathsConfig, content: bytes, message: str | None
) -> None:
    """A maint file created by someone else becomes a manual operator hold with its message."""
    paths.maint_file.write_bytes(content)
    with capture_events(ctl.bus) as events:
        assert ctl.observe() == "adopt"
    assert actions(events) == [
        "maintenance.adopted",
        "maintenance.hold_added",
        "maintenance.entered",
    ]
    assert events[0].fields["operator_message"] == message
    held = ctl.hold("manual", "operator")
    assert held is not None
    assert (held.since, held.until, held.message) == (T0, None, message)
    doc = read_maint(paths)  # rewritten as watcher's JSON
    assert doc["set_by"] == "operator"
    assert doc["message"] == (message or DEFAULT)
    assert [(h["reason"], h["name"]) for h in doc["holds"]] == [("manual", "operator")]
    with capture_events(ctl.bus) as later:
        assert ctl.observe() == "unchanged", "watcher's own rewrite is not a new operator file"
    assert later == []


def test_watchers_own_file_is_not_adopted(ctl: Controller) -> None:
    """After watcher writes the file, observing it is unchanged: no adoption of its own write."""
    ctl.add_hold(manual(T0))
    with capture_events(ctl.bus) as events:
        assert ctl.observe() == "unchanged"
    assert events == []


def test_adopted_hold_is_released_by_leave_like_manual(ctl: Controller, paths: PathsConfig) -> None:
    """The adopted hold is a manual hold: releasing manual maintenance removes the file."""
    paths.maint_file.touch()
    ctl.observe()
    assert ctl.release("manual") is True
    assert not paths.maint_file.exists()


def test_operator_replacing_watchers_file_is_adopted(
    ctl: Controller, paths: PathsConfig, clock: FakeClock
) -> None:
    """An operator's file put in place of watcher's (new inode) is adopted, outliving its holds."""
    ctl.add_hold(Hold("window", "nightly", T0, until=T0 + timedelta(hours=1)))
    mine = paths.maint_file.stat().st_ino
    theirs = paths.data / "maint.new"
    theirs.write_text("Extended by the DBA\n")
    os.replace(theirs, paths.maint_file)  # e.g. an editor's atomic save
    assert paths.maint_file.stat().st_ino != mine
    ctl.observe()
    held = ctl.hold("manual", "operator")
    assert held is not None, "the operator's file is told from watcher's by its identity"
    assert held.message == "Extended by the DBA"
    clock.advance(hours=2)  # watcher's own window hold ends
    ctl.observe()
    assert paths.maint_file.exists(), "watcher does not delete a file the operator wrote"


# --- operator rm ------------------------------------------------------------------------


def held_everything(ctl: Controller, clock: FakeClock) -> dict[str, Hold]:
    """Hold maintenance for every reason, plus a recurring manual window."""
    window_end = T0 + timedelta(minutes=65)
    holds = {
        "manual": manual(T0, message="manual"),
        "window": Hold("window", "nightly", T0, until=window_end),
        "manual_window": Hold("window", "manual 02:00-04:00", T0, until=T0 + timedelta(hours=2)),
        "disk": Hold("disk", "disk", T0),
        "job": Hold("job", "dbcheck", T0),
    }
    ctl.update(manual_windows=(ManualWindow(120, 240, "weekly work"),))
    for h in holds.values():
        ctl.add_hold(h)
    return holds


def test_operator_rm_releases_everything(
    ctl: Controller, paths: PathsConfig, clock: FakeClock
) -> None:
    """Deleting the file drops all holds and manual windows, skips windows, disarms disk."""
    holds = held_everything(ctl, clock)
    clock.advance(minutes=5)
    paths.maint_file.unlink()
    released: list[int] = []
    ctl.on_release.append(lambda: released.append(1))
    with capture_events(ctl.bus) as events:
        assert ctl.observe() == "released"
    assert not paths.maint_file.exists(), "never recreated"
    assert ctl.state.holds == ()
    assert ctl.state.manual_windows == ()
    ends = {h.name: h.until.isoformat() for h in holds.values() if h.until is not None}
    assert set(ctl.state.skipped) == {
        f"nightly@{ends['nightly']}",
        f"manual 02:00-04:00@{ends['manual 02:00-04:00']}",
    }
    assert ctl.state.disk_armed is False
    assert ctl.state.written is None
    assert not ctl.active
    assert released == [1]

    rel = only(events, "maintenance.released_by_operator")
    assert rel.level == "warning"
    assert {(h["reason"], h["name"]) for h in rel.fields["released"]} == {
        (h.reason, h.name) for h in holds.values()
    }
    dropped = [
        e
        for e in events
        if e.action == "maintenance.hold_released" and not e.fields.get("job_running")
    ]
    assert {(e.fields["hold"]["reason"], e.fields["hold"]["name"]) for e in dropped} == {
        (h.reason, h.name) for h in holds.values()
    }
    assert {e.fields["why"] for e in dropped} == {"operator"}
    warning = [e for e in events if e.fields.get("job_running")]
    assert len(warning) == 1
    assert warning[0].level == "warning"
    assert warning[0].fields["hold"]["name"] == "dbcheck"
    assert "keeps running" in warning[0].message
    assert only(events, "maintenance.left").duration_ns == 5 * 60 * 10**9
    assert actions(events)[-1] == "maintenance.left"


def test_operator_rm_without_disk_hold_keeps_disk_armed(
    ctl: Controller, paths: PathsConfig
) -> None:
    """An operator release with no disk hold leaves the disk guard armed and warns about no job."""
    ctl.add_hold(manual(T0))
    paths.maint_file.unlink()
    with capture_events(ctl.bus) as events:
        ctl.observe()
    assert ctl.state.disk_armed is True
    assert not [e for e in events if e.fields.get("job_running")]


def test_operator_rm_is_persisted(
    ctl: Controller, paths: PathsConfig, clock: FakeClock, make: Callable[[], Controller]
) -> None:
    """After an operator release, a restarted controller has no holds and leaves the file absent."""
    held_everything(ctl, clock)
    paths.maint_file.unlink()
    ctl.observe()
    again = make()
    assert again.state.holds == ()
    assert again.state.manual_windows == ()
    assert again.state.disk_armed is False
    assert len(again.state.skipped) == 2
    with capture_events(again.bus) as events:
        assert again.observe() == "unchanged"
    assert events == []
    assert not paths.maint_file.exists()


def test_apply_guard_release_after_unobserved_rm(ctl: Controller, paths: PathsConfig) -> None:
    """Releasing one hold before the rm was observed reports the operator release, not a rewrite."""
    ctl.add_hold(manual(T0))
    ctl.add_hold(Hold("job", "dbcheck", T0))
    paths.maint_file.unlink()
    with capture_events(ctl.bus) as events:
        ctl.release("job", "dbcheck")  # the job ends; observe has not run yet
    assert not paths.maint_file.exists(), "the file is not recreated for the manual hold"
    assert "maintenance.released_by_operator" in actions(events)
    assert ctl.state.holds == ()


def test_apply_guard_expiry_after_unobserved_rm(
    ctl: Controller, paths: PathsConfig, clock: FakeClock
) -> None:
    """An expiry that runs before the rm was observed does not recreate the file for the rest."""
    ctl.add_hold(manual(T0, until=T0 + timedelta(minutes=1)))
    ctl.add_hold(Hold("window", "nightly", T0, until=T0 + timedelta(hours=1)))
    paths.maint_file.unlink()
    clock.advance(minutes=2)
    with capture_events(ctl.bus) as events:
        ctl.expire()
    assert not paths.maint_file.exists()
    assert "maintenance.released_by_operator" in actions(events)
    assert ctl.state.holds == ()


def test_apply_guard_new_hold_before_observe(ctl: Controller, paths: PathsConfig) -> None:
    """A hold applied before an rm was observed does not recreate the file (``_apply`` guard)."""
    ctl.add_hold(manual(T0))
    paths.maint_file.unlink()
    with capture_events(ctl.bus) as events:
        ctl._add_hold(Hold("job", "backup", T0))  # the shell's path that skips observe
    assert not paths.maint_file.exists()
    assert "maintenance.released_by_operator" in actions(events)
    assert "maintenance.entered" not in actions(events)
    assert ctl.state.holds == ()


def test_add_hold_honours_an_earlier_rm_first(
    ctl: Controller, paths: PathsConfig, clock: FakeClock
) -> None:
    """add_hold after an unobserved rm first releases every old hold; none of them come back."""
    held_everything(ctl, clock)
    paths.maint_file.unlink()
    clock.advance(seconds=1)
    with capture_events(ctl.bus) as events:
        ctl.add_hold(Hold("job", "backup", clock()))
    seen = actions(events)
    assert seen.index("maintenance.released_by_operator") < seen.index("maintenance.hold_added")
    assert [(h.reason, h.name) for h in ctl.state.holds] == [("job", "backup")]
    assert ctl.state.manual_windows == ()
    if paths.maint_file.exists():  # the new hold is a new decision, made after the release
        assert [h["name"] for h in read_maint(paths)["holds"]] == ["backup"]


# --- state across restarts --------------------------------------------------------------


def test_state_persists_across_a_new_controller(
    ctl: Controller, paths: PathsConfig, clock: FakeClock, make: Callable[[], Controller]
) -> None:
    """Holds, manual windows and the entry time survive a restart; the file is not re-adopted."""
    until = T0 + timedelta(hours=2)
    ctl.add_hold(manual(T0, until=until, message="kept"))
    ctl.update(manual_windows=(ManualWindow(120, 240),))
    before = paths.maint_file.read_bytes()
    assert make().observe() == "unchanged"
    assert paths.maint_file.read_bytes() == before, "a restart leaves the file alone"

    again = make()
    assert again.state.holds == ctl.state.holds
    assert again.state.manual_windows == (ManualWindow(120, 240),)
    assert again.state.entered_at == T0
    assert again.state.written == ctl.state.written
    assert again.active
    assert again.next_deadline() == until
    with capture_events(again.bus) as events:
        assert again.observe() == "unchanged"
        assert events == []
        clock.advance(minutes=10)
        again.release("manual")
    assert not paths.maint_file.exists()
    assert only(events, "maintenance.left").duration_ns == 600 * 10**9


def corrupt_state_cases() -> list[Any]:
    since = T0.isoformat()
    return [
        pytest.param(b"\x00\xff\xfe not json", id="binary"),
        pytest.param(b'{"holds": [{"reason": "man', id="truncated"),
        pytest.param(b"[1, 2, 3]", id="not an object"),
        pytest.param(b'{"holds": 5}', id="holds not a list"),
        pytest.param(
            b'{"holds": [{"reason": "bogus", "name": "x", "since": "%s"}]}' % since.encode(),
            id="unknown reason",
        ),
        pytest.param(
            b'{"holds": [{"reason": "manual", "name": "x", "since": "yesterday"}]}',
            id="bad time",
        ),
        pytest.param(b'{"holds": [{"reason": "manual"}]}', id="missing keys"),
        pytest.param(b'{"written": {"nope": 1}}', id="bad stamp"),
        pytest.param(b'{"manual_windows": [{"start": 120, "end": 120}]}', id="empty window"),
        pytest.param(b'{"manual_windows": [{"start": 120, "end": 99999}]}', id="window past day"),
        pytest.param(b'{"jobs": []}', id="jobs not an object"),
    ]


@pytest.mark.parametrize("garbage", corrupt_state_cases())
def test_corrupt_state_is_moved_aside_and_file_stays_truth(
    ctl: Controller, paths: PathsConfig, make: Callable[[], Controller], garbage: bytes
) -> None:
    """An unreadable state.json is moved aside; the maint file present makes a manual hold."""
    ctl.add_hold(manual(T0, message="Kept from the file"))
    state_file = paths.state / "state.json"
    state_file.write_bytes(garbage)

    fresh = Controller(paths, EventBus(), default_message=DEFAULT, clock=ctl.clock)
    warning = fresh.load()
    assert warning is not None and "state.json.corrupt-" in warning
    aside = list(paths.state.glob("state.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == garbage
    with capture_events(fresh.bus) as events:
        assert fresh.observe() == "adopt"
    assert "maintenance.adopted" in actions(events)
    assert paths.maint_file.exists(), "the maint file stays the truth"
    held = fresh.hold("manual", "operator")
    assert held is not None and held.message == "Kept from the file"
    assert make().state.holds == fresh.state.holds, "a good state.json is written again"


def test_corrupt_state_without_file_means_no_maintenance(paths: PathsConfig) -> None:
    """An unreadable state.json and no maint file: not in maintenance, no file created."""
    paths.state.mkdir(parents=True)
    (paths.state / "state.json").write_bytes(b"{{{{")
    fresh = Controller(paths, EventBus(), default_message=DEFAULT)
    assert fresh.load() is not None
    with capture_events(fresh.bus) as events:
        assert fresh.observe() == "unchanged"
    assert events == []
    assert not paths.maint_file.exists()
    assert not fresh.active


def test_state_with_naive_times_does_not_break_the_controller(
    ctl: Controller, paths: PathsConfig, make: Callable[[], Controller]
) -> None:
    """A hand-edited state.json with a time lacking a UTC offset is set aside, not a crash."""
    ctl.add_hold(manual(T0, message="Kept from the file"))
    (paths.state / "state.json").write_bytes(
        b'{"holds": [{"reason": "manual", "name": "cli", '
        b'"since": "2026-11-26T01:00:00", "until": "2026-11-26T09:00:00"}]}'
    )
    fresh = make()
    fresh.observe()  # must not raise
    assert paths.maint_file.exists()
    assert fresh.active


# --- reconcile at start -----------------------------------------------------------------


def test_start_with_file_and_no_state_adopts(
    paths: PathsConfig, make: Callable[[], Controller]
) -> None:
    """A maint file present at start with no state is adopted as an operator's manual hold."""
    paths.maint_file.write_text("Planned outage\n")
    ctl = make()
    with capture_events(ctl.bus) as events:
        assert ctl.observe() == "adopt"
    assert actions(events) == [
        "maintenance.adopted",
        "maintenance.hold_added",
        "maintenance.entered",
    ]
    held = ctl.hold("manual", "operator")
    assert held is not None and held.message == "Planned outage"
    assert read_maint(paths)["set_by"] == "operator"


def test_start_with_active_state_and_no_file_is_operator_release(
    ctl: Controller, paths: PathsConfig, clock: FakeClock, make: Callable[[], Controller]
) -> None:
    """State active but the file removed while the service was down: operator release at start."""
    ctl.add_hold(manual(T0, until=T0 + timedelta(hours=1)))
    ctl.add_hold(Hold("disk", "disk", T0))
    paths.maint_file.unlink()  # while down
    clock.advance(minutes=3)
    restarted = make()
    with capture_events(restarted.bus) as events:
        assert restarted.observe() == "released"
    assert "maintenance.released_by_operator" in actions(events)
    assert only(events, "maintenance.left").duration_ns == 180 * 10**9
    assert not paths.maint_file.exists()
    assert restarted.state.holds == ()
    assert restarted.state.disk_armed is False
    assert make().state.holds == ()


def test_start_after_expiry_while_down_releases_as_expired(
    ctl: Controller, paths: PathsConfig, clock: FakeClock, make: Callable[[], Controller]
) -> None:
    """A hold whose until passed while down is released at start as expired, not by the operator."""
    ctl.add_hold(manual(T0, until=T0 + timedelta(seconds=2)))
    clock.advance(minutes=1)
    restarted = make()
    with capture_events(restarted.bus) as events:
        restarted.observe()
    assert only(events, "maintenance.hold_released").fields["why"] == "expired"
    assert "maintenance.released_by_operator" not in actions(events)
    assert "maintenance.adopted" not in actions(events)
    assert "maintenance.left" in actions(events)
    assert not paths.maint_file.exists()


def test_an_unrelated_save_never_removes_an_operators_new_file(
    ctl: Controller, paths: PathsConfig
) -> None:
    """An operator's ``touch`` not yet observed when some other state change is saved (the
    scheduler's bookmark, a reload) is adopted, not removed as if it were watcher's."""
    with ctl.bus.capture() as events:
        paths.maint_file.touch()
        ctl.update(planned_until=T0)
    assert paths.maint_file.exists()
    assert "maintenance.adopted" in actions(events)
    assert ctl.active
