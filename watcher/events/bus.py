"""The event bus: fan-out of events to handlers that can never stall the core.

``EventBus.emit`` is synchronous and never waits: it stamps the event (sequence,
current maintenance snapshot) and appends it to each matching handler's own queue.
Each handler runs in its own task, one event at a time, under a per-event timeout.
A handler that raises or times out produces ``handler.failed`` (not delivered back to
that handler, so a broken handler cannot feed itself) and goes on with the next event.

Right away: inside ``EventBus.delivering_now()`` — the controller's reading of an
operator's ``touch`` or ``rm``, whose truth is already on disk — a handler that can deliver
an event without waiting (``deliver_now(event) -> bool``; the log handler: one ``os.write``
that cannot block) gets it at once when its queue is empty, so the line is out while the
decision is still being made, in order. Everywhere else events wait for the handler's task,
i.e. until the code that emitted them is done: watcher's own decisions write the maint file
first, so a handler that sees ``maintenance.entered`` finds the file. When ``deliver_now``
returns ``False`` (it would have to wait) or raises, the event is queued and the task
delivers it (and reports a failure) the usual way. After the first event of such a block
the service yields the CPU once (``sched_yield``): the process reading that line (a log
shipper, journald) runs now instead of waiting behind watcher's follow-up work — on two
cores it otherwise waited about a millisecond (issue 15, bench_maint).

Prepared: an event known ahead but for its time, sequence and a few late fields (what an
operator's ``touch`` or ``rm`` will make the controller say first) can be prepared at idle
(``prepare``): each handler that can write at once renders its line template then
(``template(event, late)``, see ``watcher.events.template``), and ``emit_prepared`` fills and
writes those lines before the event object is even made. After idle every step costs
several times its warm price, so this is what brings the line ≈ 0.2 ms closer to the
``touch`` (issue 15). A preparation made for other handlers (a reload since) is emitted
the ordinary way.

Overload: a queue holds ``queue_size`` events. Past that, only ``debug`` events are
dropped and counted (reported once a second as ``handler.dropped``); every other event
is still queued, because maintenance, disk, job and trigger events are never dropped.
The timeout bounds how long one event can hold a handler, so such a queue keeps moving.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Protocol

import anyio
import anyio.abc
from anyio.abc import TaskStatus

from watcher.events.record import LEVELS, Event, Level
from watcher.events.template import LineTemplate, fill_values, moment

DROP_REPORT_INTERVAL = 1.0
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Handler(Protocol):
    """A consumer of events. May also have ``reopen()`` (SIGHUP) and ``async aclose()``."""

    async def __call__(self, event: Event) -> None: ...


class Subscription:
    """One handler with its queue, filter and counters."""

    def __init__(
        self,
        name: str,
        handler: Handler,
        *,
        events: tuple[str, ...] = ("*",),
        min_level: Level = "info",
        timeout: float = 5.0,
        queue_size: int = 10_000,
    ) -> None:
        self.name = name
        self.handler = handler
        self.patterns = events
        self.min_severity = LEVELS[min_level]
        self.timeout = timeout
        self.queue_size = queue_size
        self.queue: deque[Event] = deque()
        self.dropped = 0
        self.failed = 0
        self.busy = False
        self.closing = False
        self._matches: dict[str, bool] = {}
        self._wake = anyio.Event()
        self._deliver_now: Callable[[Event], bool] | None = getattr(handler, "deliver_now", None)
        self._write_now: Callable[[bytes], bool] | None = getattr(handler, "write_now", None)

    def wants(self, event: Event) -> bool:
        """Whether the event passes this handler's level and action filters."""
        if event.severity < self.min_severity or event.origin == self.name:
            return False
        hit = self._matches.get(event.action)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(event.action, p) for p in self.patterns)
            self._matches[event.action] = hit
        return hit

    def template(self, event: Event, late: tuple[str, ...]) -> LineTemplate | None:
        """The handler's line for ``event`` rendered ahead, if it writes lines at once."""
        make = getattr(self.handler, "template", None)
        if make is None or self._write_now is None or not self.wants(event):
            return None
        template: LineTemplate | None = make(event, late)
        return template

    def write_now(self, line: bytes) -> bool:
        """Write a line rendered ahead (``EventBus.emit_prepared``) at once, when nothing is
        queued ahead of it; ``False``: not written (the event is then offered as usual)."""
        if self._write_now is None or self.queue or self.busy or self.closing:
            return False
        try:
            return self._write_now(line)
        except Exception:
            return False  # offered next: the task delivers it again and reports the failure

    def offer(self, event: Event, now: bool = False) -> bool:
        """Queue the event (or, ``now``, deliver it at once when it can be); ``False`` when it
        was a debug event dropped for lack of room."""
        if (
            now
            and self._deliver_now is not None
            and not self.queue
            and not self.busy
            and not self.closing
        ):
            try:
                if self._deliver_now(event):
                    return True
            except Exception:
                pass  # queued below: the task delivers it again and reports the failure
        if len(self.queue) >= self.queue_size and event.level == "debug":
            self.dropped += 1
            return False
        self.queue.append(event)
        self._wake.set()
        return True

    @property
    def idle(self) -> bool:
        return not self.queue and not self.busy

    async def run(self, bus: EventBus) -> None:
        """Deliver queued events one at a time, each under the timeout, until closed."""
        while True:
            if not self.queue:
                if self.closing:
                    await _close_handler(self)
                    return
                self._wake = anyio.Event()
                bus.settled()
                await self._wake.wait()
                continue
            self.busy = True
            try:
                await self._deliver_queued(bus)
            finally:
                self.busy = False

    async def _deliver_queued(self, bus: EventBus) -> None:
        """Deliver what is queued under one cancel scope whose deadline moves per event.

        Entering a scope per event costs more than the rest of delivery together; moving the
        deadline of one scope is cheap. A timeout ends the scope; the next batch gets a new one.
        """
        event: Event | None = None
        with anyio.CancelScope() as scope:
            while self.queue:
                event = self.queue.popleft()
                scope.deadline = anyio.current_time() + self.timeout
                try:
                    await self.handler(event)
                except Exception as exc:
                    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
                        for callback in bus.on_no_space:
                            callback()
                    self._failed(bus, event, f"{type(exc).__name__}: {exc}")
        if scope.cancelled_caught and event is not None:
            self._failed(bus, event, f"timed out after {self.timeout:g}s")

    def close(self) -> None:
        """Deliver what is queued, then stop and close the handler."""
        self.closing = True
        self._wake.set()

    def _failed(self, bus: EventBus, event: Event, reason: str) -> None:
        self.failed += 1
        bus.emit(
            "handler.failed",
            f"handler {self.name} failed on {event.action}: {reason}",
            level="error",
            origin=self.name,
            handler={"name": self.name, "failures": self.failed},
            reason=reason,
            failed_event={"action": event.action, "sequence": event.sequence},
        )


class EventBus:
    """Creates events and hands them to every subscribed handler's queue."""

    def __init__(self, context: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.subscriptions: list[Subscription] = []
        self.taps: list[Callable[[Event], None]] = []
        self.on_no_space: list[Callable[[], None]] = []  # a handler's write hit ENOSPC/EDQUOT
        self.context = context
        self.sequence = 0
        self.now = False  # inside delivering_now()
        self._yielded = False
        self._drops_pending = anyio.Event()
        self._settled = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    def subscribe(self, subscription: Subscription) -> Subscription:
        self.subscriptions.append(subscription)
        return subscription

    def emit(
        self,
        action: str,
        message: str,
        level: Level = "info",
        *,
        duration_ns: int | None = None,
        origin: str | None = None,
        **fields: Any,
    ) -> Event:
        """Create an event and queue it for every handler that wants it; never waits."""
        self.sequence += 1
        if self.context is not None:
            fields = {**fields, **self.context()}
        event = Event(
            action=action,
            message=message,
            level=level,
            fields=fields,
            sequence=self.sequence,
            duration_ns=duration_ns,
            origin=origin,
        )
        self.publish(event)
        return event

    def publish(self, event: Event) -> None:
        """Queue an already-built event (``emit`` is the usual way in)."""
        if event.sequence == 0:
            self.sequence += 1
            event = replace(event, sequence=self.sequence)
        self._offer(event, self.subscriptions)

    def _offer(self, event: Event, subscriptions: Iterable[Subscription]) -> None:
        for sub in subscriptions:  # handlers first: a log line is on its way soonest
            if sub.wants(event) and not sub.offer(event, self.now):
                self._drops_pending.set()
        self._yield_once()
        for tap in self.taps:
            tap(event)

    def _yield_once(self) -> None:
        if self.now and not self._yielded:
            self._yielded = True
            os.sched_yield()  # let the line's reader run first (see the module docstring)

    def prepare(
        self,
        action: str,
        message: str,
        level: Level = "info",
        *,
        context: Mapping[str, Any],
        late: tuple[str, ...] = (),
        **fields: Any,
    ) -> Prepared:
        """An event to emit later with ``emit_prepared``: its fields (``late`` ones among them,
        with placeholder values), the ``context`` it will carry — what the bus's context gives
        once the state is what the caller knows it will be then (a bus without a context adds
        none) — and each handler's line rendered ahead."""
        if self.context is not None:
            fields = {**fields, **context}
        proto = Event(action, message, level, fields=fields, sequence=1)
        templates = [sub.template(proto, late) for sub in self.subscriptions]
        return Prepared(proto, late, list(self.subscriptions), templates)

    def emit_prepared(self, prepared: Prepared, **late: Any) -> Event:
        """Emit a prepared event with its ``late`` field values: inside ``delivering_now``,
        each handler that had a template gets its line before the event object is made."""
        time_ns = time.time_ns()
        self.sequence += 1
        sequence = self.sequence
        rest: Iterable[Subscription] = self.subscriptions
        if self.now and prepared.current(self):
            values = fill_values(time_ns, sequence, [late[name] for name in prepared.late])
            rest = self._write_prepared(prepared.templates, values)
        proto = prepared.proto
        event = Event(
            action=proto.action,
            message=proto.message,
            level=proto.level,
            fields={**proto.fields, **late},
            time=moment(time_ns),
            sequence=sequence,
        )
        self._offer(event, rest)
        return event

    def _write_prepared(
        self, templates: list[LineTemplate | None], values: tuple[Any, ...]
    ) -> list[Subscription]:
        """Write each prepared line that can go at once; the subscriptions still to offer."""
        rest = []
        for sub, template in zip(self.subscriptions, templates, strict=True):
            if template is None or not sub.write_now(template.fill(values)):
                rest.append(sub)
        return rest

    def delivering_now(self) -> _DeliveringNow:
        """Events emitted inside go to handlers that can take them at once (see the module
        docstring): only where what they report is already on disk."""
        return _DeliveringNow(self)

    def settled(self) -> None:
        """Called by a subscription whose queue ran empty."""
        self._settled.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every handler's task and the drop reporter until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for sub in self.subscriptions:
                tg.start_soon(sub.run, self, name=f"handler {sub.name}")
            tg.start_soon(self._report_drops, name="drop reporter")
            task_status.started()

    def replace_subscriptions(self, new: list[Subscription]) -> None:
        """Swap the handlers (config reload): the old ones finish their queues, then close."""
        old, self.subscriptions = self.subscriptions, list(new)
        for sub in old:
            sub.close()
        if self._tg is not None:
            for sub in new:
                self._tg.start_soon(sub.run, self, name=f"handler {sub.name}")

    async def drain(self, within: float) -> bool:
        """Wait until every queue is empty and no handler is busy; ``False`` if not ``within``."""
        with anyio.move_on_after(within):
            while not all(sub.idle for sub in self.subscriptions):
                self._settled = anyio.Event()
                with anyio.move_on_after(0.05):
                    await self._settled.wait()
            return True
        return False

    async def aclose(self) -> None:
        """Close every handler that has ``aclose``."""
        for sub in self.subscriptions:
            await _close_handler(sub)

    def reopen(self) -> list[str]:
        """Ask every handler that can (log files) to reopen its output, e.g. after rotation.

        Returns the problems of those that could not (they keep their old output)."""
        problems = []
        for sub in self.subscriptions:
            reopen = getattr(sub.handler, "reopen", None)
            if reopen is None:
                continue
            try:
                reopen()
            except Exception as exc:
                problems.append(f"{sub.name}: {type(exc).__name__}: {exc}")
        return problems

    async def _report_drops(self) -> None:
        while True:
            await self._drops_pending.wait()
            await anyio.sleep(DROP_REPORT_INTERVAL)
            self._drops_pending = anyio.Event()
            counts = {s.name: s.dropped for s in self.subscriptions if s.dropped}
            self.emit(
                "handler.dropped",
                f"debug events dropped under load: {sum(counts.values())} in total",
                level="warning",
                dropped=counts,
            )

    @contextmanager
    def capture(self) -> Iterator[list[Event]]:
        """Collect every event emitted inside the block (for tests; see ``watcher.testing``)."""
        captured: list[Event] = []
        self.taps.append(captured.append)
        try:
            yield captured
        finally:
            self.taps.remove(captured.append)


class Prepared:
    """An event made ahead (``EventBus.prepare``): the event with placeholder ``late`` fields,
    and the line template of each subscription of the time (``None``: offered as usual)."""

    __slots__ = ("late", "proto", "subscriptions", "templates")

    def __init__(
        self,
        proto: Event,
        late: tuple[str, ...],
        subscriptions: list[Subscription],
        templates: list[LineTemplate | None],
    ) -> None:
        self.proto = proto
        self.late = late
        self.subscriptions = subscriptions
        self.templates = templates

    def current(self, bus: EventBus) -> bool:
        """Whether it was made for the bus's handlers of now (not replaced by a reload)."""
        return self.subscriptions == bus.subscriptions


class _DeliveringNow:
    """``EventBus.delivering_now()``: a plain class, not ``@contextmanager`` — it opens an
    operator's change, where each step before the first line counts."""

    __slots__ = ("bus", "outer")

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.outer = (False, False)

    def __enter__(self) -> None:
        bus = self.bus
        self.outer = (bus.now, bus._yielded)
        bus.now, bus._yielded = True, False

    def __exit__(self, *_exc: object) -> None:
        self.bus.now, self.bus._yielded = self.outer


async def _close_handler(sub: Subscription) -> None:
    closer = getattr(sub.handler, "aclose", None)
    if closer is not None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(sub.timeout):
            await closer()
