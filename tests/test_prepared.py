"""Lines rendered ahead (``LineTemplate``, ``EventBus.prepare``) and the controller's prepared
answer to an operator's ``touch`` or ``rm``: the same events, the same lines, the same state
as the general path — only sooner."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from watcher.config import HandlerConfig, PathsConfig
from watcher.core.maintenance import Hold
from watcher.events.bus import EventBus, Prepared, Subscription
from watcher.events.record import Event, Origin, render_json
from watcher.events.template import LineTemplate, fill_values, moment
from watcher.handlers.log import LogHandler
from watcher.service.controller import Controller
from watcher.testing import capture_events

ORIGIN = Origin(data_dir="/srv/100% app", host="srv1", pid=4121)
T0 = datetime(2026, 11, 26, 1, 55, tzinfo=UTC)
DEFAULT = "The system is under maintenance."
SNAPSHOT = {"maintenance": {"active": False, "holds": [], "message": None}}
VALUES: list[Any] = [
    None,
    "",
    "Upgrade until 06:00",
    'quotes " and \\ and %s %d 100%',
    "line\u2028separator \x85 and \x1b[31m",
    "日本語のメッセージ",
    {"nested": [1, 2.5, None]},
]


def event_at(time_ns: int, sequence: int, message: Any) -> Event:
    return Event(
        "maintenance.adopted",
        "maint file created by someone else",
        fields={"file": "/srv/app/mw/data/maint", "operator_message": message, **SNAPSHOT},
        time=moment(time_ns),
        sequence=sequence,
    )


# --- the template ------------------------------------------------------------------------


@pytest.mark.parametrize("message", VALUES)
@pytest.mark.parametrize(
    "time_ns",
    [
        1_764_122_100_000_000_000,  # on a minute, microseconds 0
        1_764_122_159_999_999_999,  # the last nanosecond of that minute
        1_764_122_160_000_001_000,  # the next minute (the kept minute text is replaced)
        1_798_761_599_123_456_789,  # 2026-12-31T23:59:59 (new year next)
    ],
)
def test_filled_template_is_exactly_render_json(time_ns: int, message: Any) -> None:
    """Filling a template gives byte for byte ``render_json`` of the event it stands for."""
    template = LineTemplate.of(event_at(0, 1, None), ORIGIN, ("operator_message",))
    assert template is not None
    for sequence in (1, 99, 2**40 + 5):
        expected = render_json(event_at(time_ns, sequence, message), ORIGIN) + b"\n"
        assert template.fill(fill_values(time_ns, sequence, [message])) == expected


def test_no_template_when_the_event_text_holds_the_marker() -> None:
    """An event whose own text holds the private-use marker gets no template (offered as
    usual) rather than a wrong line."""
    marked = Event("maintenance.adopted", "odd \ue000L message", fields={"operator_message": None})
    assert LineTemplate.of(marked, ORIGIN, ("operator_message",)) is None


# --- the bus -----------------------------------------------------------------------------


def json_docs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def log_subscription(path: Path, name: str = "log", **options: Any) -> Subscription:
    handler = LogHandler(HandlerConfig(type="log", target=str(path), format="json"), ORIGIN)
    return Subscription(name, handler, **options)


def prepared_adopt(bus: EventBus) -> Prepared:
    return bus.prepare(
        "maintenance.adopted",
        "adopted",
        context=SNAPSHOT,
        late=("operator_message",),
        file="/f",
        operator_message=None,
    )


def test_prepared_line_is_written_at_emit_and_matches_the_event(tmp_path: Path) -> None:
    """Inside ``delivering_now`` a prepared event's line is in the file when ``emit_prepared``
    returns; the event the taps get is the one the line shows (time, sequence, id, fields)."""
    path = tmp_path / "events.log"
    bus = EventBus(context=lambda: SNAPSHOT)
    sub = bus.subscribe(log_subscription(path))
    prepared = prepared_adopt(bus)
    with capture_events(bus) as events, bus.delivering_now():
        emitted = bus.emit_prepared(prepared, operator_message="Upgrade")
    assert sub.idle, "written at once, nothing queued"
    assert events == [emitted]
    assert path.read_bytes() == render_json(emitted, ORIGIN) + b"\n"
    assert emitted.fields == {"file": "/f", "operator_message": "Upgrade", **SNAPSHOT}


def test_prepared_event_waits_behind_queued_events_and_outside_delivering_now(
    tmp_path: Path,
) -> None:
    """A handler with events queued gets the prepared event queued behind them (order kept);
    outside ``delivering_now`` it is queued like any event."""
    path = tmp_path / "events.log"
    bus = EventBus()
    sub = bus.subscribe(log_subscription(path))
    prepared = prepared_adopt(bus)
    bus.emit("maintenance.entered", "queued first")
    with bus.delivering_now():
        bus.emit_prepared(prepared, operator_message=None)
    bus.emit_prepared(prepared, operator_message="later")
    assert [e.action for e in sub.queue] == ["maintenance.entered", *["maintenance.adopted"] * 2]
    assert path.read_bytes() == b""


def test_prepared_event_reaches_handlers_replaced_since(tmp_path: Path) -> None:
    """After a reload replaced the handlers, a preparation made for the old ones still
    reaches the new ones (the ordinary way), and the old ones get nothing more."""
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    bus = EventBus()
    bus.subscribe(log_subscription(old))
    prepared = prepared_adopt(bus)
    bus.replace_subscriptions([log_subscription(new, "new")])
    assert not prepared.current(bus)
    with bus.delivering_now():
        emitted = bus.emit_prepared(prepared, operator_message="m")
    assert old.read_bytes() == b""
    assert new.read_bytes() == render_json(emitted, ORIGIN) + b"\n"


def test_prepared_event_respects_each_handlers_filter(tmp_path: Path) -> None:
    """Only handlers whose filters want the event get it, prepared or not."""
    wanted, unwanted = tmp_path / "wanted.log", tmp_path / "unwanted.log"
    bus = EventBus()
    bus.subscribe(log_subscription(wanted, "a", events=("maintenance.*",)))
    bus.subscribe(log_subscription(unwanted, "b", events=("disk.*",)))
    prepared = prepared_adopt(bus)
    with bus.delivering_now():
        bus.emit_prepared(prepared, operator_message=None)
    assert [d["event"]["action"] for d in json_docs(wanted)] == ["maintenance.adopted"]
    assert unwanted.read_bytes() == b""


# --- the controller ----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[[str], Controller]]:
    """Controllers, each on its own data dir with a JSON log file, on one fake clock."""
    clock = FakeClock()
    handlers: list[LogHandler] = []

    def new(name: str) -> Controller:
        mw = tmp_path / name / "mw"
        (mw / "data").mkdir(parents=True)
        paths = PathsConfig(
            maint_file=mw / "data" / "maint",
            data=mw / "data",
            files=mw / "file",
            archive_root=mw,
            logs=mw / "log",
            spool=mw / "spool",
            state=mw / "watcher",
        )
        made: list[Controller] = []
        bus = EventBus(context=lambda: made[0].snapshot())  # as the service's
        sub = log_subscription(tmp_path / name / "events.log")
        handlers.append(sub.handler)  # type: ignore[arg-type]
        bus.subscribe(sub)
        ctl = Controller(paths, bus, default_message=DEFAULT, clock=clock)
        made.append(ctl)
        ctl.load()
        return ctl

    yield new
    for handler in handlers:
        os.close(handler.fd)


def comparable(ctl: Controller, events: list[Event]) -> str:
    """What an observation did (events, log lines, state, file), with the data dir's root
    replaced: two controllers on two dirs are compared."""
    root = ctl.paths.maint_file.parents[2]
    docs = [
        {k: v for k, v in d.items() if k != "@timestamp"} for d in json_docs(root / "events.log")
    ]
    seen = {
        "events": [(e.action, e.level, e.message, dict(e.fields)) for e in events],
        "lines": docs,
        "state": json.loads(ctl.state.to_json()) | {"written": "(the file's own identity)"},
        "file": ctl.paths.maint_file.exists(),
    }
    return repr(seen).replace(str(root), "<root>")


def observe_both(
    make: Callable[[str], Controller], setup: Callable[[Controller], None]
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The same operator action observed with the prepared answer and by the general path;
    also how many prepared events were emitted."""
    fast, general = make("fast"), make("general")
    used = 0
    for ctl in (fast, general):
        setup(ctl)
    fast.prepare_reactions()
    emit_prepared = fast.bus.emit_prepared

    def counted(prepared: Prepared, **late: Any) -> Event:
        nonlocal used
        used += 1
        return emit_prepared(prepared, **late)

    fast.bus.emit_prepared = counted  # type: ignore[method-assign]
    results = []
    for ctl in (fast, general):
        with capture_events(ctl.bus) as events:
            verdict = ctl.observe(defer=True)
        ctl.flush(create=False)
        results.append({"verdict": verdict, "seen": comparable(ctl, events)})
    return results[0], results[1], used


def hold(name: str, **kw: Any) -> Hold:
    return Hold("manual", name, T0, **kw)


@pytest.mark.parametrize(
    "content", [b"", b'{"message": "Upgrade until 06:00"}\n', b"Disk swap\nsecond line\n"]
)
def test_touch_answered_prepared_as_the_general_path(
    make: Callable[[str], Controller], content: bytes
) -> None:
    """An operator's file with no hold active: the prepared answer is used, and it emits,
    logs and saves exactly what the general path does."""

    def touch(ctl: Controller) -> None:
        ctl.paths.maint_file.write_bytes(content)

    fast, general, used = observe_both(make, touch)
    assert used == 1
    assert fast == general
    assert fast["verdict"] == "adopt"


def test_rm_answered_prepared_as_the_general_path(make: Callable[[str], Controller]) -> None:
    """The file removed while holds are active: prepared, and the same as the general path
    (every hold released, the post-release snapshot in the first line)."""

    def rm(ctl: Controller) -> None:
        ctl.add_hold(hold("cli", message="manual"))
        ctl.add_hold(Hold("window", "nightly", T0, until=T0 + timedelta(hours=1)))
        ctl.paths.maint_file.unlink()

    fast, general, used = observe_both(make, rm)
    assert used == 1
    assert fast == general
    assert fast["verdict"] == "released"
    assert "'active': False" in fast["seen"]


def test_hold_expired_since_preparing_takes_the_general_path(
    make: Callable[[str], Controller],
) -> None:
    """A hold whose time ran out after the preparation: the general path, which expires it
    first (and so reads the rm of an already-released file as nothing new)."""
    clocks: list[FakeClock] = []

    def expire_then_rm(ctl: Controller) -> None:
        ctl.add_hold(hold("cli", until=T0 + timedelta(minutes=5)))
        ctl.paths.maint_file.unlink()
        clocks.append(ctl.clock)  # type: ignore[arg-type]

    fast_ctl = make("expiry")
    expire_then_rm(fast_ctl)
    fast_ctl.prepare_reactions()
    clocks[0].now = T0 + timedelta(minutes=6)
    with capture_events(fast_ctl.bus) as events:
        fast_ctl.observe(defer=True)
    assert [e.action for e in events][:1] == ["maintenance.hold_released"]
    assert events[0].fields["why"] == "expired"


def test_symlinked_or_changed_state_takes_the_general_path(
    make: Callable[[str], Controller], tmp_path: Path
) -> None:
    """A symlink as the maint file, or a state changed since the preparation: nothing
    prepared is used, and the outcome is still the general path's."""
    target = tmp_path / "message.txt"
    target.write_text("Behind a symlink\n")

    def symlink(ctl: Controller) -> None:
        ctl.paths.maint_file.symlink_to(target)

    fast, general, used = observe_both(make, symlink)
    assert used == 0
    assert fast == general
    assert "Behind a symlink" in fast["seen"]

    ctl = make("changed")
    ctl.prepare_reactions()
    ctl.add_hold(hold("cli"))
    ctl.paths.maint_file.unlink()
    with capture_events(ctl.bus) as events:
        assert ctl.observe(defer=True) == "released"
    assert events[0].action == "maintenance.released_by_operator"
