"""The event bus in process: filters, failing and hanging handlers, overload, reload, capture."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from watcher.events.bus import EventBus, Subscription
from watcher.events.record import Event, Level
from watcher.testing import capture_events

WAIT = 15.0  # upper bound on an awaited condition; never a sleep
LEVEL_ORDER: list[Level] = ["debug", "info", "warning", "error", "critical"]


class Recorder:
    """A handler that records every event; it raises or hangs on the actions it is told to."""

    def __init__(self, fail_on: Iterable[str] = (), hang_on: Iterable[str] = ()) -> None:
        self.events: list[Event] = []
        self.fail_on = set(fail_on)
        self.hang_on = set(hang_on)
        self.seen: dict[str, anyio.Event] = {}

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self.seen.setdefault(event.action, anyio.Event()).set()
        if event.action in self.fail_on:
            raise RuntimeError(f"boom on {event.action}")
        if event.action in self.hang_on:
            await anyio.sleep_forever()

    @property
    def actions(self) -> list[str]:
        return [e.action for e in self.events]

    async def wait_for(self, action: str) -> None:
        with anyio.fail_after(WAIT):
            await self.seen.setdefault(action, anyio.Event()).wait()


class Gated(Recorder):
    """A handler that cannot take its first event until ``gate`` is set; records its closing."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.closed = anyio.Event()
        self.log: list[str] = []

    async def __call__(self, event: Event) -> None:
        await self.gate.wait()
        self.log.append(event.action)
        await super().__call__(event)

    async def aclose(self) -> None:
        self.log.append("<closed>")
        self.closed.set()


@asynccontextmanager
async def running(bus: EventBus) -> AsyncIterator[EventBus]:
    """Run the bus's handler tasks for the duration of the block."""
    async with anyio.create_task_group() as tg:
        await tg.start(bus.run)
        try:
            yield bus
        finally:
            tg.cancel_scope.cancel()


def sub(name: str, handler: Recorder, **options: Any) -> Subscription:
    return Subscription(name, handler, **options)


async def settle(bus: EventBus) -> None:
    """Wait until every handler has taken everything queued for it."""
    assert await bus.drain(WAIT), "handlers did not settle"


@pytest.mark.asyncio
async def test_glob_filters_select_actions() -> None:
    """Each handler gets exactly the actions its glob patterns match."""
    bus = EventBus()
    maint, disk_or_job, everything = Recorder(), Recorder(), Recorder()
    bus.subscribe(sub("maint", maint, events=("maintenance.*",)))
    bus.subscribe(sub("disk", disk_or_job, events=("disk.critical", "job.*")))
    bus.subscribe(sub("all", everything))
    actions = [
        "maintenance.entered",
        "disk.warn",
        "disk.critical",
        "job.started",
        "maintenance.left",
        "maintenancex",
    ]
    async with running(bus):
        for action in actions:
            bus.emit(action, action)
        await settle(bus)
    assert maint.actions == ["maintenance.entered", "maintenance.left"]
    assert disk_or_job.actions == ["disk.critical", "job.started"]
    assert everything.actions == actions


@pytest.mark.asyncio
async def test_min_level_filters_by_severity() -> None:
    """A handler gets only events at or above its ``min_level`` (default ``info``)."""
    bus = EventBus()
    default, warning, debug = Recorder(), Recorder(), Recorder()
    bus.subscribe(sub("default", default))
    bus.subscribe(sub("warning", warning, min_level="warning"))
    bus.subscribe(sub("debug", debug, min_level="debug"))
    async with running(bus):
        for level in LEVEL_ORDER:
            bus.emit(f"test.{level}", level, level=level)
        await settle(bus)
    assert [e.level for e in default.events] == ["info", "warning", "error", "critical"]
    assert [e.level for e in warning.events] == ["warning", "error", "critical"]
    assert [e.level for e in debug.events] == LEVEL_ORDER


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("broken_on", "reason"),
    [
        ({"fail_on": {"b"}}, "RuntimeError: boom on b"),
        ({"hang_on": {"b"}}, "timed out after 0.2s"),
    ],
    ids=["raises", "hangs"],
)
async def test_broken_handler_gives_handler_failed_and_goes_on(
    broken_on: dict[str, set[str]], reason: str
) -> None:
    """A handler that raises or hangs past its timeout gives ``handler.failed``; all go on."""
    bus = EventBus()
    broken, other = Recorder(**broken_on), Recorder()
    broken_sub = bus.subscribe(sub("broken", broken, timeout=0.2))
    bus.subscribe(sub("other", other))
    async with running(bus):
        for action in ("a", "b", "c"):
            bus.emit(action, action)
        await other.wait_for("handler.failed")
        bus.emit("d", "after the failure")
        await settle(bus)
    assert broken.actions == ["a", "b", "c", "d"]  # later events still delivered
    assert other.actions == ["a", "b", "c", "handler.failed", "d"]
    failed = other.events[3]
    assert failed.level == "error"
    assert failed.fields["handler"] == {"name": "broken", "failures": 1}
    assert failed.fields["failed_event"] == {"action": "b", "sequence": 2}
    assert reason in failed.fields["reason"]
    assert broken_sub.failed == 1


@pytest.mark.asyncio
async def test_handler_failed_is_not_delivered_to_the_handler_it_is_about() -> None:
    """Each failing handler hears of the other's failure but never of its own."""
    bus = EventBus()
    first, second = Recorder(fail_on={"boom"}), Recorder(fail_on={"boom"})
    bus.subscribe(sub("first", first))
    bus.subscribe(sub("second", second))
    with capture_events(bus) as captured:
        async with running(bus):
            bus.emit("boom", "both fail on this")
            await first.wait_for("handler.failed")
            await second.wait_for("handler.failed")
            await settle(bus)
    about = {e.fields["handler"]["name"] for e in captured if e.action == "handler.failed"}
    assert about == {"first", "second"}
    assert [e.fields["handler"]["name"] for e in first.events[1:]] == ["second"]
    assert [e.fields["handler"]["name"] for e in second.events[1:]] == ["first"]


@pytest.mark.asyncio
async def test_overload_drops_only_debug_events_and_reports_them() -> None:
    """A full queue drops debug events (counted, reported as ``handler.dropped``), no others."""
    bus = EventBus()
    slow, observer = Gated(), Recorder()
    slow_sub = bus.subscribe(sub("slow", slow, queue_size=5, min_level="debug", timeout=WAIT))
    bus.subscribe(sub("observer", observer, events=("handler.dropped",)))
    kept = ["maintenance.entered", "disk.warn", "job.progress", "trigger.accepted"]
    expected: list[str] = []
    async with running(bus):
        for i in range(30):
            bus.emit("fs.changed", f"debug {i}", level="debug", n=i)
            action = kept[i % len(kept)]
            bus.emit(action, f"info {i}", n=i)
            expected.append(action)
        slow.gate.set()
        await observer.wait_for("handler.dropped")
        await settle(bus)
    debug_delivered = [e for e in slow.events if e.level == "debug"]
    others = [e for e in slow.events if e.action != "fs.changed"]
    assert [e.action for e in others if e.action != "handler.dropped"] == expected
    assert [e.fields["n"] for e in others if e.action != "handler.dropped"] == list(range(30))
    assert slow_sub.dropped > 0
    assert len(debug_delivered) + slow_sub.dropped == 30
    (report,) = observer.events
    assert report.level == "warning"
    assert report.fields["dropped"] == {"slow": slow_sub.dropped}


@pytest.mark.asyncio
async def test_capture_events_collects_what_is_emitted_in_the_block() -> None:
    """``capture_events`` lists the events emitted inside its block, in order, and no others."""
    bus = EventBus()
    bus.emit("before", "not captured")
    with capture_events(bus) as captured:
        first = bus.emit("maintenance.entered", "entered", holds=1)
        bus.emit("fs.changed", "debug too", level="debug")
    bus.emit("after", "not captured")
    assert captured[0] is first
    assert [e.action for e in captured] == ["maintenance.entered", "fs.changed"]
    assert [e.sequence for e in captured] == [2, 3]
    assert captured[0].fields == {"holds": 1}


@pytest.mark.asyncio
async def test_emit_adds_the_context_to_every_event() -> None:
    """The bus's context (the maintenance snapshot) is merged into every event's fields."""
    bus = EventBus(context=lambda: {"maintenance": {"active": True}})
    with capture_events(bus) as captured:
        bus.emit("disk.warn", "low", free=5)
    assert captured[0].fields == {"free": 5, "maintenance": {"active": True}}


@pytest.mark.asyncio
async def test_replace_subscriptions_delivers_queued_events_to_the_old_handler_first() -> None:
    """On reload the old handler gets all that was queued for it, then closes; new gets the rest."""
    bus = EventBus()
    old, new = Gated(), Recorder()
    bus.subscribe(sub("old", old, timeout=WAIT))
    async with running(bus):
        for action in ("a", "b", "c"):
            bus.emit(action, action)
        bus.replace_subscriptions([sub("new", new)])
        bus.emit("d", "d")
        bus.emit("e", "e")
        old.gate.set()
        with anyio.fail_after(WAIT):
            await old.closed.wait()
        await settle(bus)
    assert old.log == ["a", "b", "c", "<closed>"]
    assert new.actions == ["d", "e"]
