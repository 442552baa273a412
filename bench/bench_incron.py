"""Trigger dropped → job *process* running, watcher side by side with incron 0.5.12.

Both start the same tiny recorder (a C program compiled for the run; a Python one where no
compiler is found), which appends ``<trigger name> <CLOCK_REALTIME ns>`` to its output file
with one ``O_APPEND`` write as soon as it runs: the time is the job's own, not an event's.

- **watcher**: the real ``watcher run`` on the demo data dir, a ``command`` job ``rec``
  (``maintenance = false``) whose argv is the recorder; a trigger is a plain-name file
  ``rec.<n>`` renamed into the spool (the name is passed as ``WATCHER_TRIGGER``).
- **incron**: ``incrond -n`` with a private ``incron.conf`` (its own system table,
  user table and lock directories) and one system table line
  ``<spool> IN_MOVED_TO <recorder> <out> $#`` on a spool of its own.

Single triggers: ``TRIALS`` rounds, each dropping one file into watcher's spool and one into
incron's, one at a time (order alternating, a random 20–50 ms pause between), so neither
waits behind the other; the latency is the recorder's timestamp minus the clock read just
before the ``rename``. Bursts: ``BURST`` files staged beside the spool, then renamed in as
fast as the bench can; the row gives the time from the first rename to the last recorder
start, jobs a second, and whether every trigger ran exactly once (names counted). Each
burst runs with the other daemon idle; watcher's peak RSS (``VmHWM``) and RSS after the
burst settle are reported.

Run alone: ``python -m bench.bench_incron [--quick]``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.datadirs import demo_dir, reset
from bench.lines import PipeLines, contains, wait_for
from bench.procs import READY, spawn, stopped_at_exit, watcher_argv
from bench.recorder import Records, recorder
from bench.report import Row, note_row, row
from bench.stats import Latency, ratio, render_ratio

TRIALS, QUICK_TRIALS = 200, 40
WARMUP = 5
BURST, QUICK_BURST = 2000, 500
SETTLE = (0.020, 0.050)
MISS_AFTER = 2.0
BURST_TIMEOUT = 120.0


@dataclass
class Side:
    """One daemon under test: its spool, a staging dir beside it, and the recorder's file."""

    spool: Path
    stage: Path
    records: Records
    pid: int

    def drop(self, name: str) -> int:
        """Rename one staged file into the spool; the wall-clock ns just before."""
        staged = self.stage / name
        staged.write_bytes(b"")
        stamp = time.time_ns()
        os.rename(staged, self.spool / name)
        return stamp


@contextmanager
def watcher_side(workdir: Path, argv: list[str]) -> Iterator[Side]:
    data = demo_dir(workdir)
    reset(data)
    records = Records(workdir / "watcher-records")
    config = workdir / "incron-bench.toml"
    command = ", ".join(f'"{a}"' for a in [*argv, str(records.path)])
    config.write_text(
        "# written by bench: the recorder as a command job; readiness and failures on stdout\n"
        f'[[jobs]]\nname = "rec"\ntype = "command"\nargv = [{command}]\nmaintenance = false\n\n'
        '[[handlers]]\ntype = "log"\ntarget = "stdout"\nformat = "json"\n'
        'events = ["service.ready", "job.failed", "trigger.rejected"]\n'
    )
    with ExitStack() as stack:
        proc = spawn(watcher_argv(data, config), stdout=subprocess.PIPE)
        stack.enter_context(stopped_at_exit(proc))
        assert proc.stdout is not None
        lines = PipeLines(proc.stdout.fileno())
        if wait_for({"r": (lines, contains(READY))}, time.perf_counter_ns(), 30)["r"] is None:
            raise RuntimeError(f"watcher (pid {proc.pid}) was not ready within 30 s")
        spool = data / "mw" / "spool"
        stage = data / "mw" / "stage"
        stage.mkdir(exist_ok=True)
        yield Side(spool, stage, records, proc.pid)
    reset(data)


@contextmanager
def incron_side(workdir: Path, argv: list[str]) -> Iterator[Side]:
    if shutil.which("incrond") is None:
        raise RuntimeError("incron is not installed (scripts/test-setup installs it as root)")
    if os.geteuid() != 0:
        raise RuntimeError("incrond's system tables need root")
    home = Path(tempfile.mkdtemp(prefix="incron-", dir=workdir))
    try:
        spool, stage = home / "spool", home / "stage"
        system, users, lock = home / "system", home / "users", home / "lock"
        for d in (spool, stage, system, users, lock):
            d.mkdir()
        records = Records(home / "records")
        (system / "bench").write_text(f"{spool} IN_MOVED_TO {' '.join(argv)} {records.path} $#\n")
        conf = home / "incron.conf"
        conf.write_text(
            f"system_table_dir = {system}\nuser_table_dir = {users}\n"
            f"lockfile_dir = {lock}\nlockfile_name = incrond\n"
        )
        proc = spawn(["incrond", "-n", "-f", str(conf)])
        with stopped_at_exit(proc):
            side = Side(spool, stage, records, proc.pid)
            probe = "ready.0"
            for _ in range(100):  # incrond reads its tables after start: drop until it answers
                side.drop(probe)
                if probe in records.wait({probe}, 0.1):
                    break
                os.unlink(spool / probe)
            else:
                raise RuntimeError("incrond did not start the recorder within 10 s")
            yield side
    finally:
        shutil.rmtree(home, ignore_errors=True)


def single(sides: dict[str, Side], count: int) -> dict[str, list[float | None]]:
    """Interleaved single triggers: milliseconds from the rename to the recorder's start."""
    rng = random.Random(7)
    out: dict[str, list[float | None]] = {name: [] for name in sides}
    order = list(sides)
    for i in range(WARMUP + count):
        order.reverse()
        for name in order:
            side = sides[name]
            trigger = f"rec.s{i:05d}"
            stamp = side.drop(trigger)
            got = side.records.wait({trigger}, MISS_AFTER).get(trigger)
            if i >= WARMUP:
                out[name].append((got[0] - stamp) / 1e6 if got else None)
            time.sleep(rng.uniform(*SETTLE))
    return out


@dataclass(frozen=True)
class Burst:
    seconds: float  # first rename → last recorder start
    ran: int  # distinct triggers that ran
    twice: int  # triggers that ran more than once
    count: int


def burst(side: Side, count: int) -> Burst:
    names = [f"rec.b{i:05d}" for i in range(count)]
    for name in names:
        (side.stage / name).write_bytes(b"")
    start = time.time_ns()
    for name in names:
        os.rename(side.stage / name, side.spool / name)
    found = side.records.wait(set(names), BURST_TIMEOUT)
    ran = [n for n in names if n in found]
    last = max((max(found[n]) for n in ran), default=start)
    twice = sum(1 for n in ran if len(found[n]) > 1)
    return Burst((last - start) / 1e9, len(ran), twice, count)


def _kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _burst_cell(b: Burst) -> str:
    rate = b.ran / b.seconds if b.seconds > 0 else float("nan")
    once = (
        "all exactly once"
        if b.ran == b.count and b.twice == 0
        else (f"{b.count - b.ran} lost, {b.twice} twice")
    )
    return f"last start {b.seconds:.2f} s after the first rename, {rate:.0f} jobs/s, {once}"


def run(workdir: Path, quick: bool) -> list[Row]:
    """Single-trigger and burst rows, watcher vs incron in the same run."""
    workdir.mkdir(parents=True, exist_ok=True)
    measure = "trigger dropped → job process running (recorder's own clock), vs incron 0.5.12"
    scratch = Path(tempfile.mkdtemp(prefix="incron-bench-", dir=workdir))
    try:
        argv, what = recorder(scratch)
        with watcher_side(workdir, argv) as ours, incron_side(scratch, argv) as ref:
            lat = single({"watcher": ours, "incron": ref}, QUICK_TRIALS if quick else TRIALS)
            size = QUICK_BURST if quick else BURST
            idle_rss = _kib(ours.pid, "VmRSS")
            b_ours = burst(ours, size)
            peak_rss = _kib(ours.pid, "VmHWM")
            time.sleep(2.0)  # settle: the last jobs' results filed, memory given back
            after_rss = _kib(ours.pid, "VmRSS")
            b_ref = burst(ref, size)
    except RuntimeError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        return [note_row(f"{measure}: {exc}", "SKIPPED")]
    shutil.rmtree(scratch, ignore_errors=True)
    mine, theirs = Latency.of(lat["watcher"]), Latency.of(lat["incron"])
    burst_ok = b_ours.ran == size and b_ours.twice == 0
    return [
        row(
            f"{measure}: single triggers, interleaved one at a time ({what})",
            mine.render(misses=True),
            reference=f"incron {theirs.render(misses=True)}",
            ratio=render_ratio(ratio(mine.p99, theirs.p99), "p99"),
            target="ratio ≤ 1.0 (p99)",
            passed=mine.misses == 0 and mine.p99 <= theirs.p99,
        ),
        row(
            f"{measure}: {size} triggers renamed in at once, each daemon alone",
            f"{_burst_cell(b_ours)}; RSS {idle_rss / 1024:.0f} MB before, peak "
            f"{peak_rss / 1024:.0f} MB, {after_rss / 1024:.0f} MB after",
            reference=f"incron {_burst_cell(b_ref)}",
            ratio=render_ratio(ratio(b_ours.seconds, b_ref.seconds), "time to last start"),
            target="all exactly once; jobs/s ≥ incron's",
            passed=burst_ok and b_ours.seconds <= b_ref.seconds,
        ),
    ]


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
