"""The disk guard's costs: free space crossing a level → event at a handler, and sampling CPU.

(a) Level crossing → event (DESIGN §10: ≤ interval + 50 ms at interval 1 s). A 64 MiB tmpfs
is mounted for the run (root only; otherwise the row says why it was skipped), the demo data
dir laid out in it and ``watcher run`` started there with ``[disk] interval = "1s"``, levels
warn 24 / maintenance 16 / critical 8 MiB, ``for_samples = 1`` (so the crossing is seen by
the first sample after it; with the default 2 the wait is one interval longer by design),
and a JSON log file handler outside the tmpfs. The filesystem is kept at 30 MiB free (above
warn's exit, 28 MiB); each trial waits a random 0–1 s (a random phase against watcher's
tick, stratified so that the trials cover the whole cycle), writes 5 MiB (still above warn),
stamps the clock and writes the 2 MiB that cross warn, then waits for the ``disk.warn`` line
to be readable in the log file (woken by inotify on that file). The reference, measured in
the same trials, is the least any 1 s sampler can do: a bare loop calling ``statvfs`` every
second and printing a line when free space falls below warn. Then the files go and both must
report recovery before the next trial. Median and max; the verdict is on the max. The
``ours`` cell also gives the part of the latency after the sample: the event's own
``@timestamp`` to the line being readable.

(b) CPU cost of sampling: three ``watcher run`` processes, idle on their own demo data dirs,
over the same window (30 s, quick 10 s): ``[disk] interval = "1s"``, ``"100ms"``, and as the
reference ``"1h"`` (no sample inside the window; the once-a-second watch tick still runs).
CPU is the ``utime + stime`` delta from ``/proc/<pid>/stat`` as a percentage of one core.

Run alone: ``python -m bench.bench_disk [--quick]``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from bench.bench_process import CpuWindow, idle_cpu
from bench.lines import FileTail, PipeLines, contains, drain, equals, wait_for
from bench.procs import READY, spawn, start_until_ready, stopped_at_exit, watcher_argv
from bench.report import Row, note_row, row
from bench.stats import median, ratio, render_ratio
from watcher.demo import create_demo

MiB = 1024**2
INTERVAL = 1.0
TARGET_MS = INTERVAL * 1000 + 50
FS_MIB = 64
WARN, MAINTENANCE, CRITICAL = 24 * MiB, 16 * MiB, 8 * MiB
WARN_EXIT = WARN + (WARN - MAINTENANCE) // 2  # 28 MiB
BASE_FREE = 30 * MiB  # between trials: above warn's exit, so the guard is back to OK
APPROACH = 5 * MiB  # written before the clock starts: 25 MiB free, still above warn
CROSS = 2 * MiB  # the write that crosses: 23 MiB free, below warn
MISS_AFTER = 3 * INTERVAL
SETTLE = 2.0
CPU_INTERVALS = (("1s", "1s"), ("100ms", "100ms"), ("reference", "1h"))
# Levels far below any real free space, so the idle services emit nothing (part b).
QUIET_LEVELS = 'warn = "3MiB"\nmaintenance = "2MiB"\ncritical = "1MiB"\n'

CROSSED = b'"action":"disk.warn"'
RECOVERED = b'"action":"disk.ok"'

REFERENCE = """\
import os, sys, time
path, level, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
low = False
print("started", flush=True)
while True:
    st = os.statvfs(path)
    now_low = st.f_bavail * st.f_frsize < level
    if now_low != low:
        print("crossed" if now_low else "recovered", flush=True)
        low = now_low
    time.sleep(interval)
"""


# --- (a) level crossing → event --------------------------------------------------------------


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


@contextmanager
def tmpfs(workdir: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs on a fresh directory under ``workdir`` for the block (its own per run, so two
    runs never share or unmount each other's); ``RuntimeError`` when it cannot be mounted."""
    where = Path(tempfile.mkdtemp(prefix="disk-tmpfs-", dir=workdir))
    try:
        done = _sh("mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(where))
        if done.returncode != 0:
            raise RuntimeError(f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}")
        try:
            yield where
        finally:
            if _sh("umount", str(where)).returncode != 0:
                _sh("umount", "-l", str(where))
    finally:
        shutil.rmtree(where, ignore_errors=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def write_file(path: Path, size: int) -> None:
    """Write ``size`` bytes of real data to a new file (tmpfs: counted at once)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        block = b"\xa5" * min(size, MiB)
        left = size
        while left > 0:
            left -= os.write(fd, block[: min(len(block), left)])
    finally:
        os.close(fd)


def latency_config(path: Path, log_file: Path) -> Path:
    path.write_text(
        "# written by bench: the disk guard at 1 s on a 64 MiB tmpfs, events to a JSON log\n"
        f'[disk]\ninterval = "{INTERVAL:g}s"\nwarn = "24MiB"\nmaintenance = "16MiB"\n'
        'critical = "8MiB"\nfor_samples = 1\nreminder = "1h"\n\n'
        f'[[handlers]]\ntype = "log"\ntarget = "{log_file}"\nformat = "json"\n'
    )
    return path


@dataclass
class Crossings:
    """Milliseconds from the crossing write to each side's line (``None``: missed), and
    watcher's own share after its sample (event timestamp → line readable)."""

    ours: list[float | None] = field(default_factory=list)
    reference: list[float | None] = field(default_factory=list)
    after_sample: list[float] = field(default_factory=list)


class Capture:
    """A line matcher that also keeps the lines it matched."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.lines: list[bytes] = []

    def __call__(self, line: bytes) -> bool:
        if self.marker in line:
            self.lines.append(line)
            return True
        return False


def _event_time(line: bytes) -> float:
    """The event's ``@timestamp`` as epoch seconds."""
    stamp = orjson.loads(line)["@timestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def crossing_trials(fs: Path, workdir: Path, trials: int) -> Crossings:
    """Run watcher and the reference on ``fs`` and time ``trials`` crossings of warn."""
    data, filler = fs / "data", fs / "filler"
    create_demo(data)
    filler.mkdir()
    log_file = fs.with_name(fs.name + ".log")  # outside the tmpfs, one per run
    log_file.write_bytes(b"")
    config = latency_config(fs.with_name(fs.name + ".toml"), log_file)
    write_file(filler / "base", free_bytes(fs) - BASE_FREE)
    rng = random.Random(5)
    result = Crossings()
    with ExitStack() as stack:
        stack.callback(log_file.unlink, missing_ok=True)
        stack.callback(config.unlink, missing_ok=True)
        tail = FileTail(log_file)
        stack.callback(tail.close)
        proc = stack.enter_context(stopped_at_exit(spawn(watcher_argv(data, config))))
        if wait_for({"r": (tail, contains(READY))}, time.perf_counter_ns(), 30)["r"] is None:
            raise RuntimeError(f"watcher (pid {proc.pid}) was not ready within 30 s")
        argv = [sys.executable, "-c", REFERENCE, str(fs), str(WARN), str(INTERVAL)]
        ref = stack.enter_context(stopped_at_exit(spawn(argv, stdout=subprocess.PIPE)))
        assert ref.stdout is not None
        lines = PipeLines(ref.stdout.fileno())
        if wait_for({"r": (lines, equals(b"started"))}, time.perf_counter_ns(), 10)["r"] is None:
            raise RuntimeError("the reference sampler did not start")
        # Each trial starts just after both samplers saw the recovery, so the pause sets the
        # phase: one random pause in each of ``trials`` equal slices of the interval, shuffled,
        # covers the whole cycle (the max then shows the worst phase, not a lucky draw).
        phases = [(i + rng.random()) * INTERVAL / trials for i in range(trials)]
        rng.shuffle(phases)
        for phase in phases:
            drain(tail, lines)
            time.sleep(phase)
            write_file(filler / "approach", APPROACH)
            capture = Capture(CROSSED)
            started_ns, started_wall = time.perf_counter_ns(), time.time()
            write_file(filler / "cross", CROSS)
            found = wait_for(
                {"ours": (tail, capture), "reference": (lines, equals(b"crossed"))},
                started_ns,
                MISS_AFTER,
            )
            result.ours.append(found["ours"])
            result.reference.append(found["reference"])
            if found["ours"] is not None and capture.lines:
                seen_wall = started_wall + found["ours"] / 1000
                result.after_sample.append((seen_wall - _event_time(capture.lines[0])) * 1000)
            (filler / "cross").unlink()
            (filler / "approach").unlink()
            back = wait_for(
                {"ours": (tail, contains(RECOVERED)), "reference": (lines, equals(b"recovered"))},
                time.perf_counter_ns(),
                MISS_AFTER,
            )
            if None in back.values():
                raise RuntimeError(f"no recovery seen after freeing the space: {back}")
    return result


def latency_row(workdir: Path, trials: int) -> Row:
    """The level-crossing row, or a row saying why it could not be measured."""
    measure = (
        "free space crosses a level (real writes, tmpfs) → disk.* event at a handler, "
        f"interval {INTERVAL:g} s"
    )
    if os.geteuid() != 0:
        return note_row(f"{measure}: needs root to mount a tmpfs", "SKIPPED")
    try:
        with tmpfs(workdir, FS_MIB) as fs:
            found = crossing_trials(fs, workdir, trials)
    except RuntimeError as exc:
        return note_row(f"{measure}: {exc}", "SKIPPED")
    ours = [v for v in found.ours if v is not None]
    ref = [v for v in found.reference if v is not None]
    misses = len(found.ours) - len(ours)
    worst = max(ours, default=float("nan"))
    return row(
        measure,
        f"median {median(ours):.0f} ms, max {worst:.0f} ms (n={len(found.ours)}, misses "
        f"{misses}); after the sample: median {median(found.after_sample):.1f} ms, "
        f"max {max(found.after_sample, default=float('nan')):.1f} ms",
        reference=(
            f"bare statvfs loop at {INTERVAL:g} s: median {median(ref):.0f} ms, "
            f"max {max(ref, default=float('nan')):.0f} ms"
        ),
        ratio=render_ratio(ratio(median(ours), median(ref)), "median"),
        target=f"≤ interval + 50 ms = {TARGET_MS:.0f} ms (max)",
        passed=misses == 0 and worst <= TARGET_MS,
    )


# --- (b) CPU cost of sampling ----------------------------------------------------------------


def cpu_config(path: Path, interval: str) -> Path:
    path.write_text(
        f"# written by bench: idle service, disk sampled every {interval}\n"
        f'[disk]\ninterval = "{interval}"\n{QUIET_LEVELS}'
    )
    return path


def cpu_rows(workdir: Path, window: float) -> list[Row]:
    """Idle CPU at 1 s and 100 ms sampling, against the same service not sampling."""
    procs = {}
    scratch = Path(tempfile.mkdtemp(prefix="disk-cpu-", dir=workdir))  # this run's own
    try:
        with ExitStack() as stack:
            for label, interval in CPU_INTERVALS:
                data = scratch / label
                create_demo(data)
                config = cpu_config(scratch / f"{label}.toml", interval)
                proc, _ = start_until_ready(watcher_argv(data, config))
                procs[label] = stack.enter_context(stopped_at_exit(proc))
            time.sleep(SETTLE)
            measured = dict(zip(procs, idle_cpu(list(procs.values()), window), strict=True))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = measured["reference"]
    return [
        _cpu_row("1s", measured["1s"], base, window, 1.0),
        _cpu_row("100ms", measured["100ms"], base, window, 0.1),
    ]


def _cpu_row(label: str, ours: CpuWindow, base: CpuWindow, window: float, every: float) -> Row:
    per_sample_us = (ours.cpu - base.cpu) / (ours.seconds / every) * 1e6
    default = label == "1s"
    return row(
        f'CPU of disk sampling, idle watcher run, [disk] interval = "{label}" ({window:.0f} s)',
        f"{ours.render()}; ≈ {max(per_sample_us, 0.0):.0f} µs CPU per sample above the reference",
        reference=f'same service, interval = "1h" (no sampling): {base.render()}',
        ratio=render_ratio(ratio(ours.percent, base.percent), "CPU"),
        target="≤ 0.1 % of a core (§10 idle budget)" if default else "—",
        passed=ours.percent <= 0.1 if default else None,
    )


def run(workdir: Path, quick: bool) -> list[Row]:
    """The level-crossing latency row and the two sampling-CPU rows."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [latency_row(workdir, 5 if quick else 10)]
    return rows + cpu_rows(workdir, 10.0 if quick else 30.0)


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
