"""The HTTP listener and the history (issue 13): idle CPU with ``[http] listen`` on, and the
maint file's latency while a 20k-event burst feeds the history, against the same without.

(a) Idle: two real ``watcher run`` on two demo data dirs over the same window, one with
``[http] listen`` on a free loopback port and a status-page client holding ``/events``
open (the SSE stream), one with the default config (the reference). Target ≤ 0.1 % of a
core for the listener's service.

(b) Burst: 20k trigger files naming an unknown job are dropped into the spool (each becomes
one ``trigger.rejected`` event, so 20k events reach the history's tap); during the burst the
maint file is created and deleted as in ``bench_maint`` and the time from the syscall to the
``maintenance.*`` event's own ``@timestamp`` is taken (the event loop's reaction, which a
history writer could stall; the log file only carries ``maintenance.*`` events, so no handler
backlog is timed). The reference is the same burst with ``[history] enabled = false``, in the
same run. Target: p99 with history ≤ 1.25 × p99 without (noise margin on a shared machine)
and no more misses (no line within 2 s) than without.

Run alone: ``python -m bench.bench_http [--quick]``.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from bench.bench_maint import CREATE, DELETE, MISS_AFTER, Op, Samples, _event_ms
from bench.bench_maint import SETTLE as SETTLE_BETWEEN
from bench.bench_process import SETTLE, idle_cpu
from bench.datadirs import demo_dir, maint_file, reset
from bench.lines import FileTail, contains, drain, wait_for
from bench.procs import READY, spawn, start_until_ready, stopped_at_exit, watcher_argv
from bench.report import Row, row
from bench.stats import percentile, ratio, render_ratio

IDLE_TARGET_PCT = 0.1
BURST = 20_000
BURST_RATIO = 1.25
DROPPER = """\
import os, sys
spool, count = sys.argv[1], int(sys.argv[2])
for i in range(count):
    staged = f"{spool}/.b{i:05d}.staging"
    with open(staged, "w") as f:
        f.write('{"job": "no-such-job"}')
    os.rename(staged, f"{spool}/b{i:05d}.json")
"""


def free_port() -> int:
    """A free loopback port (bound and released; the service binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def second_demo(workdir: Path) -> Path:
    """Another demo data dir (one service per data dir), built once."""
    from watcher.demo import create_demo

    root = workdir / "demo-http"
    if not (root / "mw" / "data").is_dir():
        create_demo(root)
    reset(root)
    return root


def idle_row(workdir: Path, window: float) -> Row:
    """The listener's service (one SSE client attached) next to the default one."""
    port = free_port()
    listening = workdir / "http.toml"
    listening.write_text(f'[http]\nlisten = "127.0.0.1:{port}"\n[[handlers]]\ntype = "log"\n')
    plain = workdir / "http-default.toml"
    plain.write_text('[[handlers]]\ntype = "log"\n')
    ours, _ = start_until_ready(watcher_argv(second_demo(workdir), listening))
    ref, _ = start_until_ready(watcher_argv(demo_dir(workdir), plain))
    with (
        stopped_at_exit(ours),
        stopped_at_exit(ref),
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        client.sendall(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
        assert b"text/event-stream" in client.recv(4096)
        time.sleep(SETTLE)
        mine, theirs = idle_cpu([ours, ref], window)
    return row(
        f"idle CPU of watcher run with [http] listen and one SSE client, demo data dir "
        f"({window:.0f} s)",
        mine.render(),
        reference=f"watcher run without the listener {theirs.render()}",
        ratio=render_ratio(ratio(mine.percent, theirs.percent), "CPU"),
        target=f"≤ {IDLE_TARGET_PCT} % of a core",
        passed=mine.percent <= IDLE_TARGET_PCT,
    )


def burst_samples(workdir: Path, history: bool, trials: int) -> tuple[Samples, int, float]:
    """Maint file trials during a 20k-trigger burst; (samples, trials while the spool was
    not empty, seconds the service took to reject the whole burst)."""
    data_dir = demo_dir(workdir)
    reset(data_dir)
    (data_dir / "mw" / "watcher" / "history.db").unlink(missing_ok=True)
    log_file = workdir / "http-burst.log"
    log_file.write_bytes(b"")
    config = workdir / "http-burst.toml"
    config.write_text(
        f"[history]\nenabled = {'true' if history else 'false'}\n"
        f'[[handlers]]\ntype = "log"\ntarget = "{log_file}"\nformat = "json"\n'
        'events = ["maintenance.*", "service.*"]\n'
    )
    spool = data_dir / "mw" / "spool"
    samples, during = Samples(), 0
    with ExitStack() as stack:
        tail = FileTail(log_file)
        stack.callback(tail.close)
        stack.enter_context(stopped_at_exit(spawn(watcher_argv(data_dir, config))))
        if wait_for({"r": (tail, contains(READY))}, time.perf_counter_ns(), 30)["r"] is None:
            raise RuntimeError("watcher was not ready within 30 s")
        rng = random.Random(3)
        started = time.monotonic()
        argv = [sys.executable, "-c", DROPPER, str(spool), str(BURST)]
        dropper = stack.enter_context(stopped_at_exit(spawn(argv, stdout=subprocess.DEVNULL)))
        busy = True
        while busy and len(samples.ours) < 2 * trials:  # only while the burst is on
            for op in (CREATE, DELETE):
                samples.add(_trial(tail, maint_file(data_dir), op))
                time.sleep(rng.uniform(*SETTLE_BETWEEN))
            busy = dropper.poll() is None or _pending(spool)
            during += 2 * busy
        dropper.wait(120)
        while _pending(spool) and time.monotonic() - started < 300:
            time.sleep(0.2)
        took = time.monotonic() - started
    reset(data_dir)
    return samples, during, took


def _pending(spool: Path) -> bool:
    """Whether trigger files still wait in the spool (not yet filed)."""
    with os.scandir(spool) as entries:
        return any(e.name.endswith(".json") and e.is_file() for e in entries)


def _trial(tail: FileTail, flag: Path, op: Op) -> dict[str, float | None]:
    """One maint-file operation; ms until watcher's line (``None``: missed) and until the
    event's own ``@timestamp``."""
    drain(tail)
    matched: dict[str, bytes] = {}
    wall = time.time_ns()
    started = time.perf_counter_ns()
    op.act(flag)
    found = wait_for({"ours": (tail, contains(op.ours))}, started, MISS_AFTER, matched)
    if found["ours"] is None:
        time.sleep(1.5)  # let watcher's tick re-read the truth before going on
    return found | {"reference": None, "emitted": _event_ms(matched.get("ours"), wall)}


def burst_row(workdir: Path, trials: int) -> Row:
    """syscall → maintenance.* event created, with and without the history, same burst."""
    ours, _during, took = burst_samples(workdir, True, trials)
    ref, _ref_during, ref_took = burst_samples(workdir, False, trials)
    p99, ref_p99 = percentile(ours.emitted, 99), percentile(ref.emitted, 99)
    misses = sum(v is None for v in ours.ours)
    ref_misses = sum(v is None for v in ref.ours)
    return row(
        f"maint file created/deleted during a 20k-event burst (20k rejected triggers) feeding "
        f"the history, demo data dir ({len(ours.ours)} ops, all during the burst; burst "
        f"filed in {took:.0f} s)",
        f"syscall → event created p50 {percentile(ours.emitted, 50):.2f} / p99 {p99:.2f} ms, "
        f"{misses} misses",
        reference=(
            f"same burst, [history] enabled = false: p50 {percentile(ref.emitted, 50):.2f} / "
            f"p99 {ref_p99:.2f} ms, {ref_misses} misses ({len(ref.ours)} ops, filed in "
            f"{ref_took:.0f} s)"
        ),
        ratio=render_ratio(ratio(p99, ref_p99), "p99"),
        target=f"p99 ≤ {BURST_RATIO:g} × without history, misses ≤ without",
        passed=p99 <= BURST_RATIO * ref_p99 and misses <= ref_misses,
    )


def run(workdir: Path, quick: bool) -> list[Row]:
    """The idle row and the burst row."""
    workdir.mkdir(parents=True, exist_ok=True)
    return [idle_row(workdir, 20.0 if quick else 60.0), burst_row(workdir, 40 if quick else 100)]


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
