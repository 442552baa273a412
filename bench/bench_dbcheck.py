"""dbcheck's integrity check against the ``sqlite3`` shell's ``PRAGMA integrity_check``.

Builds one SQLite database (≥ 200 MB; 20 MB with ``quick``) with a table and an index,
cached in the work directory between runs, then times ``check_databases(optimise=False)``
and ``sqlite3 DB "PRAGMA integrity_check"`` alternately (7 rounds; quick: 3), after one
untimed warm-up of each (so both read from a warm page cache). Reports medians and their
ratio (target ≤ 1.2×).

Run alone: ``python -m bench.bench_dbcheck [--quick] [--workdir DIR]`` (prints the table).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from bench.report import Row
from bench.stats import median, ratio
from watcher.jobs.dbcheck import check_databases

FULL_MB = 210
QUICK_MB = 20
BATCH = 20_000


def _rows(start: int, count: int) -> Iterator[tuple[str, str, int]]:
    """Deterministic rows: an indexed key, a ~150-byte payload, a number."""
    for i in range(start, start + count):
        key = f"user{(i * 7919) % 1_000_003:07d}-{i:08d}@example.com"
        yield key, f"{i:010d} " + "lorem ipsum dolor sit amet " * 5, i


def build_database(path: Path, megabytes: int) -> Path:
    """Create ``path`` of at least ``megabytes`` MB unless a big enough one is already there."""
    target = megabytes * 1_000_000
    if path.exists() and path.stat().st_size >= target:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    with closing(sqlite3.connect(part)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("CREATE TABLE mail (id INTEGER PRIMARY KEY, addr TEXT, body TEXT, n INT)")
        conn.execute("CREATE INDEX mail_addr ON mail (addr)")
        done = 0
        while part.stat().st_size < target:
            conn.executemany(
                "INSERT INTO mail (addr, body, n) VALUES (?, ?, ?)", _rows(done, BATCH)
            )
            conn.commit()
            done += BATCH
    fd = os.open(part, os.O_RDONLY)  # flush now, so write-back does not disturb the timings
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(part, path)
    return path


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _ours(data: Path) -> None:
    report = check_databases(data, optimise=False)
    assert report.databases and report.corrupt == (), report


def _reference(cli: str, db: Path) -> None:
    done = subprocess.run(
        [cli, str(db), "PRAGMA integrity_check"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "ok", done.stdout


def run(workdir: Path, quick: bool) -> list[Row]:
    """Time both checks alternately on the cached database; one row with medians and ratio."""
    cli = shutil.which("sqlite3")
    if cli is None:
        raise RuntimeError("the sqlite3 command-line shell is needed as the reference")
    megabytes = QUICK_MB if quick else FULL_MB
    data = workdir / f"dbcheck-{megabytes}mb"
    db = build_database(data / "bench.db", megabytes)
    rounds = 3 if quick else 7
    ours: list[float] = []
    reference: list[float] = []
    _ours(data)
    _reference(cli, db)
    for i in range(rounds):
        pair = [(ours, lambda: _ours(data)), (reference, lambda: _reference(cli, db))]
        for times, action in pair if i % 2 == 0 else reversed(pair):
            times.append(_timed(action))
    mine, theirs = median(ours), median(reference)
    size = round(db.stat().st_size / 1_000_000)
    return [
        {
            "measure": f"dbcheck integrity vs sqlite3 CLI ({size} MB)",
            "ours": f"{mine:.3f} s",
            "reference": f"{theirs:.3f} s",
            "ratio": ratio(mine, theirs),
            "target": "≤ 1.2×",
        }
    ]


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
