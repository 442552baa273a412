"""Maint file created or deleted → ``maintenance.*`` event, against inotifywait (DESIGN §10).

The real ``watcher run`` runs as a child (default configuration plus a JSON log file)
next to ``inotifywait -m`` on the maint file's directory. Each trial drains both
outputs, stamps the clock just before the syscall (``open(O_CREAT)`` as ``touch`` does,
or ``unlink`` as ``rm`` does), then waits for watcher's ``maintenance.adopted`` /
``maintenance.released_by_operator`` line to be readable in its log file (woken by
inotify on that file) and for inotifywait's ``CREATE maint`` / ``DELETE maint`` line on
its pipe — the same clock, the same trial, the same way. A line not seen within 2 s is
a miss. watcher's latency is also split at the event's own ``@timestamp``: syscall →
event created (wake-up, re-reading the truth) and event → line readable (the rest of
the reaction, e.g. durable writes, then the handler). Between trials the bench waits a
random 20–50 ms, so trials do not lock onto watcher's 1 s tick.

Scenarios: (a) the demo data dir, (b) 100k files in 1k directories, (c) the same while
a writer process creates 20k files in ``mw/file/burst<k>``: one create, at a random
point of the burst, and one delete during each burst.

Honest references: beside watcher on 2 cores, inotifywait often waits behind it, which
flatters the ratio — and watcher waits behind inotifywait just as often. For (a) and (b)
the same trials are run again with each **alone** (watcher without inotifywait, then
inotifywait without watcher, one after the other); the ratio and the verdict compare the
two alone (issue 15: watcher ≤ 2 × inotifywait at p50), the row also shows watcher beside
inotifywait and its ratio to inotifywait alone, and both of watcher's figures must meet
DESIGN's p99 ≤ 5 ms with no misses. (c) keeps the beside figures only: its reference also
shares the cores with the burst writer.

A second reference, also alone, shows what a Python process costs by itself: a bare asyncio
program (``FLOOR``: the inotify descriptor on the loop, one JSON line per event appended to
a log file, read back the way watcher's is). It is the floor for any reaction written in
Python with a log file in between; the verdict still uses inotifywait.

Run alone: ``python -m bench.bench_maint [--quick]``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench.datadirs import demo_dir, flag_dir, maint_file, reset, tree_dir
from bench.lines import (
    FileTail,
    LineSource,
    Match,
    PipeLines,
    contains,
    drain,
    equals,
    wait_for,
)
from bench.procs import (
    READY,
    spawn,
    start_inotifywait,
    stopped_at_exit,
    watcher_argv,
    write_log_config,
)
from bench.report import Row, row
from bench.stats import Latency, percentile, ratio, render_ratio

MISS_AFTER = 2.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TARGET_P99_MS = 5.0
ALONE_RATIO = 2.0  # issue 15: watcher's p50 within 2× inotifywait's, measured alone
TARGET = "p99 ≤ 5 ms, 0 misses"
WARMUP = 5
BURST_FILES = 20_000
SETTLE = (0.020, 0.050)
PROGRESS_EVERY = 1_000
WRITER = """\
import os, sys
folder, count, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.mkdir(folder)
for i in range(1, count + 1):
    os.close(os.open(f"{folder}/f{i:05d}", os.O_WRONLY | os.O_CREAT, 0o644))
    if i % every == 0:
        print(i, flush=True)
"""

FLOOR = """\
import asyncio, ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
libc.inotify_add_watch(fd, os.fsencode(sys.argv[1]), 0x100 | 0x200)  # IN_CREATE | IN_DELETE
out = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND)
def readable():
    buf, at = os.read(fd, 65536), 0
    while at < len(buf):
        _wd, mask, _c, n = struct.unpack_from("iIII", buf, at)
        name = buf[at + 16 : at + 16 + n].rstrip(bytes(1)).decode()
        at += 16 + n
        kind = "CREATE" if mask & 0x100 else "DELETE"
        os.write(out, f'{{"floor":"{kind} {name}"}}\\n'.encode())
async def main():
    asyncio.get_running_loop().add_reader(fd, readable)
    os.write(out, b'{"floor":"ready"}\\n')
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _touch(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOCTTY, 0o644))


@dataclass(frozen=True)
class Op:
    """One operator action on the maint file and the lines that report it."""

    name: str
    act: Callable[[Path], None]
    ours: bytes
    reference: bytes


CREATE = Op("created", _touch, b'"action":"maintenance.adopted"', b"CREATE maint")
DELETE = Op("deleted", Path.unlink, b'"action":"maintenance.released_by_operator"', b"DELETE maint")


@dataclass
class Samples:
    """Latencies in ms (``None``: missed) for watcher and for the reference.

    watcher's are also split at the event's own ``@timestamp``: ``emitted`` is syscall →
    event created (inside the service), ``delivered`` event created → line readable.
    """

    ours: list[float | None] = field(default_factory=list)
    reference: list[float | None] = field(default_factory=list)
    emitted: list[float] = field(default_factory=list)
    delivered: list[float] = field(default_factory=list)

    def add(self, found: dict[str, float | None]) -> None:
        self.ours.append(found["ours"])
        self.reference.append(found["reference"])
        total, emitted = found["ours"], found.get("emitted")
        if total is not None and emitted is not None:
            self.emitted.append(emitted)
            self.delivered.append(total - emitted)


def _event_ms(line: bytes | None, syscall_ns: int) -> float | None:
    """Milliseconds from the syscall (wall clock) to the event's ``@timestamp``."""
    if line is None:
        return None
    stamp = datetime.strptime(orjson.loads(line)["@timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    micros = (stamp.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    return (micros * 1000 - syscall_ns) / 1e6


@dataclass
class Rig:
    """watcher and inotifywait running on one data dir, and their outputs to wait on."""

    data_dir: Path
    log: FileTail
    reference: PipeLines | None  # None: watcher alone
    rng: random.Random

    @property
    def flag(self) -> Path:
        return maint_file(self.data_dir)

    def trial(self, op: Op) -> dict[str, float | None]:
        """Do ``op`` once; milliseconds until each side reported it (``None``: missed)."""
        watched: dict[str, tuple[LineSource, Match]] = {"ours": (self.log, contains(op.ours))}
        if self.reference is not None:
            watched["reference"] = (self.reference, equals(op.reference))
        drain(*(source for source, _ in watched.values()))
        matched: dict[str, bytes] = {}
        wall = time.time_ns()
        started = time.perf_counter_ns()
        op.act(self.flag)
        found = wait_for(watched, started, MISS_AFTER, matched)
        if found["ours"] is None:
            time.sleep(1.5)  # let watcher's tick re-read the truth before going on
        return {"reference": None} | found | {"emitted": _event_ms(matched.get("ours"), wall)}

    def settle(self) -> None:
        """A random pause, so trials do not keep the same phase as watcher's tick."""
        time.sleep(self.rng.uniform(*SETTLE))


@contextmanager
def running(data_dir: Path, workdir: Path, *, beside: bool = True) -> Iterator[Rig]:
    """watcher (with a JSON log file) on ``data_dir``, ready; with inotifywait ``beside``."""
    reset(data_dir)
    log_file = workdir / "maint-events.log"
    log_file.write_bytes(b"")
    config = write_log_config(workdir / "maint-bench.toml", log_file)
    with ExitStack() as stack:
        tail = FileTail(log_file)
        stack.callback(tail.close)
        reference = None
        if beside:
            ref = stack.enter_context(stopped_at_exit(start_inotifywait(flag_dir(data_dir))))
            assert ref.stdout is not None
            reference = PipeLines(ref.stdout.fileno())
        proc = stack.enter_context(stopped_at_exit(spawn(watcher_argv(data_dir, config))))
        ready = wait_for({"ready": (tail, contains(READY))}, time.perf_counter_ns(), 30)
        if ready["ready"] is None:
            raise RuntimeError(f"watcher (pid {proc.pid}) was not ready within 30 s")
        yield Rig(data_dir, tail, reference, random.Random(1))
    reset(data_dir)


def cycles(rig: Rig, count: int) -> dict[str, Samples]:
    """``count`` create/delete pairs (after a few unrecorded ones), by operation."""
    samples = {op.name: Samples() for op in (CREATE, DELETE)}
    for i in range(WARMUP + count):
        for op in (CREATE, DELETE):
            found = rig.trial(op)
            if i >= WARMUP:
                samples[op.name].add(found)
            rig.settle()
    return samples


def _reached(count: int) -> Match:
    """A matcher for the writer's progress lines at or past ``count`` files."""
    return lambda line: line.strip().isdigit() and int(line) >= count


def bursts(rig: Rig, count: int) -> tuple[Samples, int]:
    """One create and one delete during each of ``count`` 20k-file bursts.

    The create comes at a random point of the burst (after 1k–19k files), so it meets
    a kernel queue at every fill level a whole-tree watch would have; the writer is
    stopped once both are measured. Returns the samples and how many of the operations
    started while the writer was still writing.
    """
    samples = Samples()
    during = 0
    files = rig.data_dir / "mw" / "file"
    for k in range(count):
        folder = files / f"burst{k}"
        argv = [sys.executable, "-c", WRITER, str(folder), str(BURST_FILES), str(PROGRESS_EVERY)]
        with stopped_at_exit(spawn(argv, stdout=subprocess.PIPE)) as writer:
            assert writer.stdout is not None
            progress = PipeLines(writer.stdout.fileno())
            point = rig.rng.randrange(PROGRESS_EVERY, BURST_FILES, PROGRESS_EVERY)
            found = wait_for({"w": (progress, _reached(point))}, time.perf_counter_ns(), 60)
            if found["w"] is None:
                raise RuntimeError(f"the burst writer did not reach {point} files in 60 s")
            for op in (CREATE, DELETE):
                during += writer.poll() is None
                samples.add(rig.trial(op))
        shutil.rmtree(folder)  # the writer was stopped: the rest of its burst measures nothing
    return samples, during


def latency_row(
    measure: str,
    samples: Samples,
    alone: list[float | None] | None = None,
    floor: list[float | None] | None = None,
    ours_alone: Samples | None = None,
) -> Row:
    """One row: watcher's and inotifywait's percentiles and misses, p50 and p99 ratios.

    With ``alone`` (inotifywait alone) and ``ours_alone`` (watcher alone), the ratios and
    the ≤ 2× p50 verdict compare the two alone; watcher beside inotifywait is shown too,
    with its p50 ratio, and both of watcher's figures must meet the p99 and misses target.
    """
    beside_ours, beside_ref = Latency.of(samples.ours), Latency.of(samples.reference)
    judged = ours_alone if ours_alone is not None and alone is not None else samples
    ours, ref = Latency.of(judged.ours), Latency.of(alone) if alone is not None else beside_ref
    which = " vs alone" if alone is not None else ""
    mine = f"{ours.render(misses=True)}{_split(judged)}"
    ratios = f"{render_ratio(ratio(ours.p50, ref.p50), 'p50' + which)}, " + render_ratio(
        ratio(ours.p99, ref.p99), "p99" + which
    )
    if judged is not samples:
        mine = f"alone {mine}; beside inotifywait {beside_ours.render(misses=True)}"
        ratios = f"alone ÷ alone: {ratios}; beside ÷ alone: " + render_ratio(
            ratio(beside_ours.p50, ref.p50), "p50"
        )
    reference = f"inotifywait beside watcher {beside_ref.render(misses=True)}"
    if alone is not None:
        reference = f"inotifywait alone {ref.render(misses=True)}; {reference}"
    if floor is not None:
        reference += f"; bare Python asyncio reader → log file, alone {Latency.of(floor).render()}"
    passed = all(x.p99 <= TARGET_P99_MS and x.misses == 0 for x in (ours, beside_ours))
    if alone is not None:
        passed = passed and ours.p50 <= ALONE_RATIO * ref.p50
    return row(
        measure,
        mine,
        reference=reference,
        ratio=ratios,
        target=TARGET + (f"; p50 ≤ {ALONE_RATIO:g}× inotifywait alone" if alone else ""),
        passed=passed,
    )


def _split(samples: Samples) -> str:
    return (
        f"; of which syscall → event created {_p50_p99(samples.emitted)}, "
        f"event → line readable {_p50_p99(samples.delivered)}"
    )


def reference_alone(data_dir: Path, count: int) -> dict[str, list[float | None]]:
    """The same create/delete trials with inotifywait alone on ``data_dir`` (no watcher)."""
    reset(data_dir)
    out: dict[str, list[float | None]] = {op.name: [] for op in (CREATE, DELETE)}
    with stopped_at_exit(start_inotifywait(flag_dir(data_dir))) as ref:
        assert ref.stdout is not None
        lines = PipeLines(ref.stdout.fileno())
        _trials_alone(data_dir, lines, equals, count, random.Random(2), out)
    reset(data_dir)
    return out


def _trials_alone(
    data_dir: Path,
    source: LineSource,
    matcher: Callable[[bytes], Match],
    count: int,
    rng: random.Random,
    out: dict[str, list[float | None]],
) -> None:
    """Create/delete trials against one reference alone, appended to ``out`` by operation."""
    for i in range(WARMUP + count):
        for op in (CREATE, DELETE):
            drain(source)
            started = time.perf_counter_ns()
            op.act(maint_file(data_dir))
            found = wait_for({"r": (source, matcher(op.reference))}, started, MISS_AFTER)
            if i >= WARMUP:
                out[op.name].append(found["r"])
            time.sleep(rng.uniform(*SETTLE))


def floor_alone(data_dir: Path, workdir: Path, count: int) -> dict[str, list[float | None]]:
    """The same trials with only ``FLOOR`` (a bare Python asyncio reader) on ``data_dir``."""
    reset(data_dir)
    log_file = workdir / "maint-floor.log"
    log_file.write_bytes(b"")
    out: dict[str, list[float | None]] = {op.name: [] for op in (CREATE, DELETE)}
    tail = FileTail(log_file)
    argv = [sys.executable, "-c", FLOOR, str(flag_dir(data_dir)), str(log_file)]
    try:
        with stopped_at_exit(spawn(argv)):
            ready = wait_for({"r": (tail, contains(b"ready"))}, time.perf_counter_ns(), 30)
            if ready["r"] is None:
                raise RuntimeError("the Python floor reader was not ready within 30 s")
            _trials_alone(data_dir, tail, contains, count, random.Random(3), out)
    finally:
        tail.close()
    reset(data_dir)
    return out


def _p50_p99(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):.2f} / p99 {percentile(values, 99):.2f} ms"


def scenario_rows(
    label: str,
    samples: dict[str, Samples],
    alone: dict[str, list[float | None]],
    ours_alone: dict[str, Samples],
    floor: dict[str, list[float | None]] | None = None,
) -> list[Row]:
    """The created and deleted rows for one data directory."""
    actions = {CREATE.name: "maintenance.adopted", DELETE.name: "released_by_operator"}
    return [
        latency_row(
            f"maint file {name} → {actions[name]}, {label}",
            s,
            alone[name],
            floor[name] if floor is not None else None,
            ours_alone[name],
        )
        for name, s in samples.items()
    ]


def run(workdir: Path, quick: bool) -> list[Row]:
    """Scenarios (a), (b) and (c); five rows."""
    trials, burst_count = (50, 10) if quick else (200, 12)
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with running(demo_dir(workdir), workdir) as rig:
        demo = cycles(rig, trials)
    with running(demo_dir(workdir), workdir, beside=False) as rig:
        demo_alone = cycles(rig, trials)
    alone = reference_alone(demo_dir(workdir), trials)
    floor = floor_alone(demo_dir(workdir), workdir, trials)
    rows += scenario_rows("demo data dir", demo, alone, demo_alone, floor)
    with running(tree_dir(workdir), workdir) as rig:
        tree = cycles(rig, trials)
        samples, during = bursts(rig, burst_count)
    with running(tree_dir(workdir), workdir, beside=False) as rig:
        tree_alone = cycles(rig, trials)
    alone = reference_alone(tree_dir(workdir), trials)
    rows += scenario_rows("100k-file data dir", tree, alone, tree_alone)
    rows.append(
        latency_row(
            f"maint file created/deleted during 20k-file bursts elsewhere, 100k-file data dir "
            f"({burst_count} bursts, {during}/{2 * burst_count} ops while the writer ran)",
            samples,
        )
    )
    return rows


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
