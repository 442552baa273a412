"""The service process's own costs on the 100k-file tree: idle CPU, memory, start-up.

Idle CPU: ``watcher run`` with the default configuration, once ready and settled, over
a 60 s window (20 s quick): the ``utime + stime`` delta from ``/proc/<pid>/stat`` as a
percentage of one core, with wake-ups per second (voluntary context switches) to say
why. The reference, ``inotifywait -m`` on the maint file's directory (DESIGN §10: 0 %),
is measured over the same window.

Start-up and memory: five rounds, each starting in turn watcher (exec → its
``service.ready`` line on stdout), a bare interpreter that imports anyio and orjson
and prints a line (so the ratio shows watcher's own cost), and watchfiles alone
watching the tree (the §10 memory reference, and "watchfiles ready" for context).
Resident memory is read 0.5 s after each is ready. Medians.

Run alone: ``python -m bench.bench_process [--quick]``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.datadirs import flag_dir, tree_dir
from bench.procfs import CLOCK_TICKS, cpu_seconds, rss_bytes, wakeups
from bench.procs import (
    Proc,
    start_inotifywait,
    start_until_ready,
    stop,
    stopped_at_exit,
    watcher_argv,
)
from bench.report import Row, row
from bench.stats import median, ratio, render_ratio

ROUNDS = 5
SETTLE = 2.0
RSS_AFTER = 0.5
MB = 1_000_000
IDLE_TARGET_PCT = 0.1
RSS_TARGET_MB = 60
STARTUP_TARGET_S = 1.0
READY_LINE = b"ready"
BARE = "import anyio, orjson; print('ready', flush=True)"
WATCHFILES_ALONE = """\
import sys, time, watchfiles
for _ in watchfiles.watch(sys.argv[1], yield_on_timeout=True, rust_timeout=1):
    print("ready", flush=True)
    time.sleep(3600)
"""


def default_config(workdir: Path) -> Path:
    """An empty config file: every default, and nothing from ``/etc`` can creep in."""
    path = workdir / "default.toml"
    path.write_text("# written by bench: the default configuration\n")
    return path


@dataclass(frozen=True)
class CpuWindow:
    """CPU time and wake-ups of one process over a wall-clock window."""

    cpu: float
    wakeups: int
    seconds: float

    @property
    def percent(self) -> float:
        return self.cpu / self.seconds * 100

    def render(self) -> str:
        ticks = round(self.cpu * CLOCK_TICKS)
        return (
            f"{self.percent:.3f} % of a core ({ticks} ticks in {self.seconds:.0f} s, "
            f"{self.wakeups / self.seconds:.1f} wake-ups/s)"
        )


def idle_cpu(procs: list[Proc], window: float) -> list[CpuWindow]:
    """CPU used by each process over the same ``window`` seconds."""
    before = [(cpu_seconds(p.pid), wakeups(p.pid)) for p in procs]
    started = time.monotonic()
    time.sleep(window)
    after = [(cpu_seconds(p.pid), wakeups(p.pid)) for p in procs]
    seconds = time.monotonic() - started
    return [
        CpuWindow(a[0] - b[0], a[1] - b[1], seconds) for b, a in zip(before, after, strict=True)
    ]


def idle_row(tree: Path, config: Path, window: float) -> Row:
    """watcher's idle CPU next to inotifywait's, over the same window."""
    ours, _ = start_until_ready(watcher_argv(tree, config))
    with stopped_at_exit(ours), stopped_at_exit(start_inotifywait(flag_dir(tree))) as ref:
        time.sleep(SETTLE)
        mine, theirs = idle_cpu([ours, ref], window)
    return row(
        f"idle CPU of watcher run, default config, 100k-file data dir ({window:.0f} s)",
        mine.render(),
        reference=f"inotifywait {theirs.render()}",
        ratio=render_ratio(ratio(mine.percent, theirs.percent), "CPU"),
        target=f"≤ {IDLE_TARGET_PCT} % of a core",
        passed=mine.percent <= IDLE_TARGET_PCT,
    )


@dataclass
class Starts:
    """Seconds to ready and resident bytes after it, per kind of process."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, list[int]] = field(default_factory=dict)

    def start(self, kind: str, argv: list[str], marker: bytes, *, memory: bool) -> None:
        """Start one, record its time to ready (and memory), stop it."""
        proc, seconds = start_until_ready(argv, marker)
        try:
            self.seconds.setdefault(kind, []).append(seconds)
            if memory:
                time.sleep(RSS_AFTER)
                self.rss.setdefault(kind, []).append(rss_bytes(proc.pid))
        finally:
            stop(proc)


def measure_starts(tree: Path, config: Path, rounds: int) -> Starts:
    """``rounds`` rounds of watcher, bare interpreter and watchfiles, order rotating."""
    starts = Starts()
    kinds = [
        ("watcher", watcher_argv(tree, config), b'"action":"service.ready"', True),
        ("bare", [sys.executable, "-c", BARE], READY_LINE, False),
        ("watchfiles", [sys.executable, "-c", WATCHFILES_ALONE, str(tree)], READY_LINE, True),
    ]
    for i in range(rounds):
        for kind, argv, marker, memory in kinds[i % 3 :] + kinds[: i % 3]:
            starts.start(kind, argv, marker, memory=memory)
    return starts


def start_rows(starts: Starts, rounds: int) -> list[Row]:
    """The memory and start-up rows."""
    rss = {kind: median(values) / MB for kind, values in starts.rss.items()}
    ready = {kind: median(values) for kind, values in starts.seconds.items()}
    return [
        row(
            "resident memory after start-up, 100k-file data dir",
            f"{rss['watcher']:.1f} MB (median of {rounds})",
            reference=f"watchfiles alone watching the tree {rss['watchfiles']:.1f} MB",
            ratio=render_ratio(ratio(rss["watcher"], rss["watchfiles"]), "RSS"),
            target=f"≤ {RSS_TARGET_MB} MB",
            passed=rss["watcher"] <= RSS_TARGET_MB,
        ),
        row(
            "start-up: exec → service.ready, 100k-file data dir",
            f"{ready['watcher']:.3f} s (median of {rounds})",
            reference=(
                f"python importing anyio+orjson {ready['bare']:.3f} s "
                f"(watchfiles ready on the tree {ready['watchfiles']:.3f} s)"
            ),
            ratio=render_ratio(ratio(ready["watcher"], ready["bare"]), "median"),
            target=f"≤ {STARTUP_TARGET_S:g} s",
            passed=ready["watcher"] <= STARTUP_TARGET_S,
        ),
    ]


def run(workdir: Path, quick: bool) -> list[Row]:
    """Idle CPU, memory and start-up rows."""
    workdir.mkdir(parents=True, exist_ok=True)
    tree = tree_dir(workdir)
    config = default_config(workdir)
    rows = start_rows(measure_starts(tree, config, ROUNDS), ROUNDS)
    return [idle_row(tree, config, 20.0 if quick else 60.0), *rows]


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
