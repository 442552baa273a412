"""Throughput of the event bus and of the JSON log handler (DESIGN §10).

Bus: events emitted in batches through ``EventBus`` (with a maintenance snapshot as
context, as the service gives it) to one no-op handler, ``drain`` awaited after each
batch; events per second, median of 5 runs. §10 names no reference; so that the
machine's speed can be told from the bus's own cost, the same events also go through
a bare anyio memory object stream to a task, alternating with the bus runs.

Log handler: ``LogHandler`` (format json) writing pre-built events to a file, against a
bare loop of ``orjson.dumps`` + ``os.write`` of the same ECS documents; lines per
second, median of 5 runs each, alternated, ratio ours ÷ reference.

Run alone: ``python -m bench.bench_bus [--quick]``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import orjson

from bench.report import Row, row
from bench.stats import median, rate, ratio, render_rate, render_ratio
from watcher.config import HandlerConfig
from watcher.events.bus import EventBus, Subscription
from watcher.events.record import Event, Origin, to_document
from watcher.handlers.log import LogHandler

RUNS = 5
BATCH = 1_000
BUS_TARGET = 50_000
LOG_TARGET = 20_000
SNAPSHOT: dict[str, Any] = {
    "maintenance": {
        "active": True,
        "holds": [{"reason": "manual", "name": "operator", "since": "2026-11-26T04:50:43Z"}],
        "message": "The system is under maintenance.",
    }
}


async def _noop(event: Event) -> None:
    """The handler that does nothing, so the bus's own cost is what is measured."""


async def _bus_once(count: int) -> float:
    """Seconds to emit ``count`` events in batches and see each batch delivered."""
    bus = EventBus(context=lambda: SNAPSHOT)
    bus.subscribe(Subscription("noop", _noop, queue_size=BATCH * 2))
    async with anyio.create_task_group() as tg:
        await tg.start(bus.run)
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            for i in range(first, min(first + BATCH, count)):
                bus.emit("bench.event", "an event", index=i)
            if not await bus.drain(within=60):
                raise RuntimeError("the bus did not drain within 60 s")
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed


async def _stream_once(count: int) -> float:
    """The plainest bus: events built the same way, on an anyio memory stream to a task."""
    send, receive = anyio.create_memory_object_stream[Event](BATCH * 2)
    received = 0
    batch_done = anyio.Event()

    async def consume() -> None:
        nonlocal received, batch_done
        async for event in receive:
            await _noop(event)
            received += 1
            if received % BATCH == 0 or received == count:
                batch_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        started = time.perf_counter()
        for first in range(0, count, BATCH):
            batch_done = anyio.Event()
            for i in range(first, min(first + BATCH, count)):
                fields = {"index": i, **SNAPSHOT}
                send.send_nowait(Event("bench.event", "an event", fields=fields, sequence=i + 1))
            await batch_done.wait()
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed


def bus_rows(count: int) -> list[Row]:
    """Events per second through the bus and through a bare memory stream, alternated."""
    ours: list[float] = []
    reference: list[float] = []
    for i in range(RUNS):
        pair = [(ours, _bus_once), (reference, _stream_once)]
        for results, once in pair if i % 2 == 0 else pair[::-1]:
            results.append(rate(count, anyio.run(once, count)))
    mine, theirs = median(ours), median(reference)
    return [
        row(
            f"events through the bus to a no-op handler ({count:,} in batches of {BATCH:,})",
            f"{render_rate(mine, 'events')} (median of {RUNS})",
            reference=(
                f"{render_rate(theirs, 'events')} same events on a bare anyio memory stream "
                "(§10 names none)"
            ),
            ratio=render_ratio(ratio(mine, theirs), "events/s"),
            target=f"≥ {BUS_TARGET:,}/s",
            passed=mine >= BUS_TARGET,
        )
    ]


def _events(count: int) -> list[Event]:
    """Events shaped like the service's: a message, a couple of fields, the snapshot."""
    return [
        Event(
            action="maintenance.hold_added",
            message=f"maintenance held: manual operator {i}",
            fields={"hold": {"reason": "manual", "name": "operator"}, "index": i, **SNAPSHOT},
            sequence=i + 1,
        )
        for i in range(count)
    ]


def _timed_handler(handler: LogHandler, events: list[Event]) -> float:
    async def deliver() -> float:
        started = time.perf_counter()
        for event in events:
            await handler(event)
        return time.perf_counter() - started

    return anyio.run(deliver)


def _timed_bare(fd: int, documents: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for document in documents:
        os.write(fd, orjson.dumps(document) + b"\n")
    return time.perf_counter() - started


def _append_fd(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC)


def _log_round(
    workdir: Path, events: list[Event], origin: Origin, handler_first: bool
) -> tuple[float, float]:
    """Lines per second of the handler and of the bare loop, one fresh file each."""
    ours_file, bare_file = workdir / "bus-log-handler.jsonl", workdir / "bus-log-bare.jsonl"
    ours_file.unlink(missing_ok=True)
    handler = LogHandler(HandlerConfig(target=str(ours_file), format="json"), origin)
    bare_fd = _append_fd(bare_file)
    documents = [to_document(e, origin) for e in events]
    try:
        timings: list[Callable[[], float]] = [
            partial(_timed_handler, handler, events),
            partial(_timed_bare, bare_fd, documents),
        ]
        order = timings if handler_first else timings[::-1]
        seconds = dict(zip(order, (measure() for measure in order), strict=True))
    finally:
        anyio.run(handler.aclose)
        os.close(bare_fd)
        ours_file.unlink(missing_ok=True)
        bare_file.unlink(missing_ok=True)
    count = len(events)
    return rate(count, seconds[timings[0]]), rate(count, seconds[timings[1]])


def log_rows(workdir: Path, count: int) -> list[Row]:
    """Lines per second through ``LogHandler`` against the bare orjson + write loop."""
    origin = Origin(data_dir=str(workdir))
    events = _events(count)
    rounds = [_log_round(workdir, events, origin, i % 2 == 0) for i in range(RUNS)]
    ours = [o for o, _ in rounds]
    reference = [r for _, r in rounds]
    mine, theirs = median(ours), median(reference)
    return [
        row(
            f"JSON log handler to a file ({count:,} events)",
            f"{render_rate(mine, 'lines')} (median of {RUNS})",
            reference=f"{render_rate(theirs, 'lines')} bare orjson.dumps + os.write",
            ratio=render_ratio(ratio(mine, theirs), "lines/s"),
            target=f"≥ {LOG_TARGET:,}/s",
            passed=mine >= LOG_TARGET,
        )
    ]


def run(workdir: Path, quick: bool) -> list[Row]:
    """Both throughput rows."""
    workdir.mkdir(parents=True, exist_ok=True)
    return bus_rows(20_000 if quick else 100_000) + log_rows(workdir, 20_000 if quick else 100_000)


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
