"""2000 triggers at once: each runs exactly once; time to drain and peak RSS.

The triggers (200 with ``--quick``) are written beside the spool first and then renamed
into it one after the other as fast as Python can, each naming the ``recorder`` command
job, which appends the trigger's name to a ledger. The clock runs from the first rename
to the last job's end event; the service's peak RSS is ``VmHWM`` from ``/proc``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

from faults.context import Context, started
from faults.report import Row, exactly, figure, zero
from tests.conftest import toml, write_config

NAME = "2000 triggers"
RECORD = 'printf "%s\\n" "$WATCHER_TRIGGER" >> "{ledger}"'
ENDED = ("job.finished", "job.failed", "job.interrupted")


def peak_rss(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmHWM":
            return int(value.split()[0]) * 1024
    raise KeyError(f"VmHWM not in /proc/{pid}/status")


def run(ctx: Context) -> list[Row]:
    """Rename the triggers into a running service's spool; wait for every job's end."""
    count = 200 if ctx.quick else 2000
    name = NAME if not ctx.quick else f"{count} triggers"
    data_dir = ctx.data_dir()
    ledger = ctx.workdir / "ledger.txt"
    ledger.touch()
    argv = ["/bin/sh", "-c", RECORD.format(ledger=ledger)]
    config = write_config(
        ctx.workdir / "watcher.toml",
        f'[[jobs]]\nname = "recorder"\ntype = "command"\nargv = {toml(argv)}\n',
    )
    staging = ctx.workdir / "staging"
    staging.mkdir()
    names = [f"rec-{i:05d}.json" for i in range(count)]
    body = json.dumps({"job": "recorder"}).encode()
    for n in names:
        (staging / n).write_bytes(body)
    spool = data_dir / "mw" / "spool"
    svc = started(data_dir, config)
    try:
        mark = svc.mark()
        began = time.monotonic()
        for n in names:
            os.rename(staging / n, spool / n)
        svc.wait_count(ENDED, count, after=mark, timeout=900)
        drained = time.monotonic() - began
        rss = peak_rss(svc.proc.pid)
    finally:
        code = svc.stop(60)
    ends = Counter(e["event"]["action"] for e in svc.events[mark:] if e["event"]["action"] in ENDED)
    entries = Counter(ledger.read_text().split())
    done = {p.name for p in (spool / "done").iterdir()}
    return [
        figure(name, "time to drain (first rename → last job end)", f"{drained:.1f} s"),
        figure(name, "rate", f"{count / drained:.0f} triggers/s"),
        figure(name, "peak RSS of the service (VmHWM)", f"{rss / 2**20:.1f} MiB"),
        exactly(name, "jobs finished", ends["job.finished"], count, str(dict(ends))),
        zero(name, "triggers never run", sum(1 for n in names if n not in entries)),
        zero(name, "triggers run more than once", sum(1 for c in entries.values() if c > 1)),
        zero(name, "triggers not in done/", sum(1 for n in names if n not in done)),
        zero(name, "exit code of the SIGTERM stop", code, svc.stderr[-1000:]),
    ]
