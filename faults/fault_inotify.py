"""Lost inotify events: a queue overflow, and ``mw/data`` deleted and recreated.

**Overflow.** The service is started while ``fs.inotify.max_queued_events`` is lowered to
``QUEUE`` (the kernel gives each inotify instance the limit in force when it is made), and
the limit is restored as soon as the service is ready, in a ``finally``. Each round then
SIGSTOPs the service, writes a burst of files into ``mw/data`` (far more events than the
queue holds, so the kernel queues ``IN_Q_OVERFLOW``), creates or removes the maint file as
an operator would in the middle of the burst, and SIGCONTs the service. Once the service
has reported the change (``maintenance.adopted`` / ``maintenance.released_by_operator``),
its own word on maintenance (the control socket's ``status``) must match the file.

**Vanished directory.** Each round deletes ``mw/data`` (rm -r) and recreates it: half the
rounds while maintenance is on (an operator release: the file is gone) with an empty new
directory, then an operator's ``touch`` of the maint file in it, which must be adopted; the
other half with maintenance off, the new directory renamed into place with a maint file
already in it. The service must re-arm its watch (``watch.restored``) each time, and its
word must match the file after every step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from faults.context import Context, request, service_active, started
from faults.report import Row, exactly, zero
from tests.conftest import Doc, ServiceProcess

QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")
QUEUE = 64
BURST = 400  # files created in mw/data while the service is stopped: ≫ QUEUE events


@contextlib.contextmanager
def lowered_queue(limit: int) -> Iterator[None]:
    """``max_queued_events`` set to ``limit`` inside the block, restored on leaving it."""
    saved = QUEUE_LIMIT.read_text().strip()
    QUEUE_LIMIT.write_text(f"{limit}\n")
    try:
        yield
    finally:
        QUEUE_LIMIT.write_text(f"{saved}\n")


def started_with_small_queue(data_dir: Path) -> ServiceProcess:
    """The service, its inotify instances made while the queue limit was ``QUEUE``."""
    with lowered_queue(QUEUE):
        return started(data_dir)


def overflowed(e: Doc) -> bool:
    return "overflow" in str(e.get("message", ""))


def burst(data: Path, round_no: int, maint: Path, create: bool) -> None:
    """``BURST`` files in ``data`` with the maint file's change in the middle of them."""
    junk = data / f"junk-{round_no}"
    junk.mkdir()
    for i in range(BURST):
        (data / f"junk-{round_no}-{i}").touch()
        if i == BURST // 2:
            if create:
                maint.write_text(f"operator, fault round {round_no}\n")
            else:
                maint.unlink()
    for i in range(BURST):
        (data / f"junk-{round_no}-{i}").unlink()
    junk.rmdir()


def overflow_rounds(ctx: Context, rounds: int) -> list[Row]:
    """SIGSTOP, burst with a maint change, SIGCONT; the service's word must match the file."""
    data_dir = ctx.data_dir("overflow")
    data = data_dir / "mw" / "data"
    maint = data / "maint"
    svc = started_with_small_queue(data_dir)
    seen_overflow = mismatches = 0
    notes: list[str] = []
    try:
        for n in range(rounds):
            create = not maint.exists()
            mark = svc.mark()
            svc.signal(signal.SIGSTOP)
            try:
                burst(data, n, maint, create)
            finally:
                svc.signal(signal.SIGCONT)
            action = "maintenance.adopted" if create else "maintenance.released_by_operator"
            svc.wait_for(action, after=mark)
            if any(overflowed(e) for e in svc.events[mark:]) or _overflow_later(svc, mark):
                seen_overflow += 1
            active = service_active(data_dir)
            if active != maint.exists():
                mismatches += 1
                notes.append(f"round {n}: service says {active}, file exists {maint.exists()}")
    finally:
        code = svc.stop()
    scenario = "inotify overflow"
    return [
        exactly(scenario, "rounds in which the queue overflowed", seen_overflow, rounds),
        zero(
            scenario, "service's state ≠ maint file after the rescan", mismatches, "; ".join(notes)
        ),
        zero(scenario, "tracebacks in the service's stderr", svc.stderr.count("Traceback")),
        zero(scenario, "exit code of the SIGTERM stop", code, svc.stderr[-1000:]),
    ]


def _overflow_later(svc: ServiceProcess, mark: int) -> bool:
    """The overflow event may come after the tick already reported the change."""
    try:
        svc.wait_for("watch.degraded", overflowed, after=mark, timeout=5)
    except AssertionError:
        return False
    return True


def vanish_rounds(ctx: Context, rounds: int) -> list[Row]:
    """Delete and recreate ``mw/data``; re-armed each time; the service's word matches."""
    data_dir = ctx.data_dir("vanish")
    data = data_dir / "mw" / "data"
    maint = data / "maint"
    svc = started(data_dir)
    rearmed = mismatches = 0
    notes: list[str] = []

    def matches(step: str) -> None:
        nonlocal mismatches
        active = service_active(data_dir)
        if active != maint.exists():
            mismatches += 1
            notes.append(f"{step}: service says {active}, file exists {maint.exists()}")

    try:
        for n in range(rounds):
            mark = svc.mark()
            if n % 2 == 0:
                assert request(data_dir, {"op": "enter", "message": f"round {n}"})["ok"]
                shutil.rmtree(data)
                svc.wait_for("maintenance.released_by_operator", after=mark)
                data.mkdir()
                rearmed += _restored(svc, data, mark)
                matches(f"round {n}, recreated empty")
                mark = svc.mark()
                maint.touch()
                svc.wait_for("maintenance.adopted", after=mark)
                matches(f"round {n}, touched")
                assert request(data_dir, {"op": "leave"})["ok"]
                matches(f"round {n}, left")
            else:
                shutil.rmtree(data)
                fresh = data_dir / "mw" / f".data-{n}"
                fresh.mkdir()
                (fresh / "maint").write_text(f"restored with the maint file, round {n}\n")
                os.rename(fresh, data)
                svc.wait_for("maintenance.adopted", after=mark)
                rearmed += _restored(svc, data, mark)
                matches(f"round {n}, renamed in with a maint file")
                assert request(data_dir, {"op": "leave"})["ok"]
                matches(f"round {n}, left")
    finally:
        code = svc.stop()
    scenario = "mw/data deleted + recreated"
    return [
        exactly(scenario, "watch re-armed (watch.restored)", rearmed, rounds),
        zero(scenario, "service's state ≠ maint file after a step", mismatches, "; ".join(notes)),
        zero(scenario, "tracebacks in the service's stderr", svc.stderr.count("Traceback")),
        zero(scenario, "exit code of the SIGTERM stop", code, svc.stderr[-1000:]),
    ]


def _restored(svc: ServiceProcess, data: Path, mark: int) -> int:
    event = svc.wait_for("watch.restored", after=mark)
    return 1 if str(data) in str(event.get("message", "")) else 0


def run(ctx: Context) -> list[Row]:
    """Both halves: the overflow rounds, then the vanished-directory rounds."""
    rounds = 4 if ctx.quick else 20
    return overflow_rounds(ctx, rounds) + vanish_rounds(ctx, rounds)
