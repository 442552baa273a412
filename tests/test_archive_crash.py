"""An archive SIGKILLed at random points, then recovered, is either not done or fully done.

A child process archives a mail-shaped data dir; the test kills it with SIGKILL after a
random delay drawn over the archive's own measured duration, runs ``recover`` (what the next
archive job does first) and compares live rows, attachments and archives with the two
allowed states. The seed is in every assertion message; ``WATCHER_CRASH_SEED=<n>`` replays.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from watcher.demo import add_mail_data
from watcher.jobs.archive import JOURNAL, recover
from watcher.jobs.base import DataPaths

ROUNDS = 12
CHILD = """
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from watcher.config import ArchiveConfig
from watcher.demo import MAIL_TABLES
from watcher.jobs.archive import archive
from watcher.jobs.base import DataPaths
mw = Path(sys.argv[1]) / "mw"
paths = DataPaths(mw.parent, mw / "data/maint", mw / "data", mw / "file", mw, mw / "log", mw)
print("go", flush=True)
archive(paths, date(2025, 1, 1), now=datetime(2026, 3, 1, tzinfo=UTC),
        config=ArchiveConfig(tables=MAIL_TABLES, immutable=False))
print("done", flush=True)
"""


def paths_of(root: Path) -> DataPaths:
    """The data paths of a test data dir."""
    mw = root / "mw"
    return DataPaths(root, mw / "data/maint", mw / "data", mw / "file", mw, mw / "log", mw)


def state(root: Path) -> dict[str, Any]:
    """Live rows, archived rows, and every file path under mw except the archive metadata."""
    mw = root / "mw"
    out: dict[str, Any] = {}
    for where in ("data", "back1/data"):
        for db, table in (("mail.db", "mails"), ("phone.db", "calls"), ("address.db", "customers")):
            path = mw / where / db
            if path.exists():
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                out[f"{where}/{db}"] = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                conn.close()
    out["files"] = sorted(
        p.relative_to(mw).as_posix()
        for p in mw.rglob("*")
        if p.is_file() and not p.name.endswith(("-journal", "-wal", "-shm"))
    )
    return out


def run_child(root: Path, kill_after: float | None) -> tuple[bool, float]:
    """Archive ``root`` in a child; kill it ``kill_after`` s after it starts (None: let it end).

    Returns whether it finished and how long it ran.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "go"
    start = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)  # the random kill point, not synchronisation
        child.send_signal(signal.SIGKILL)
    out = child.communicate(timeout=50)[0]
    return "done" in out, time.monotonic() - start


def test_sigkill_at_random_points_leaves_old_or_finished_state(tmp_path: Path) -> None:
    """After any kill and a recovery, the data is exactly the old state or the finished one."""
    seed = int(os.environ.get("WATCHER_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    template = tmp_path / "template"
    add_mail_data(template / "mw", 1200, date(2024, 1, 1), 730)
    old = state(template)
    full = tmp_path / "full"
    shutil.copytree(template, full)
    finished_ok, duration = run_child(full, None)
    assert finished_ok, f"seed {seed}"
    finished = state(full)
    assert finished != old
    outcomes = []
    for round_no in range(ROUNDS):
        work = tmp_path / f"round{round_no}"
        shutil.copytree(template, work)
        delay = rng.uniform(0, duration * 1.2)
        run_child(work, delay)
        recover(paths_of(work))
        now = state(work)
        assert now in (old, finished), f"seed {seed} round {round_no} delay {delay:.3f}"
        assert not (work / "mw" / JOURNAL).exists(), f"seed {seed} round {round_no}"
        assert not list((work / "mw").glob(".back*")), f"seed {seed} round {round_no}"
        outcomes.append(now == finished)
    print(f"seed {seed}: finished in {sum(outcomes)} of {ROUNDS} rounds")
