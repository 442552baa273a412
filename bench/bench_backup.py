"""The backup job's copy against ``cp -a`` of the same tree (DESIGN §10: ≤ 1.2×).

Builds a data directory once (≈ 300 MB in ≈ 2,000 files, three SQLite databases among
them, an archive ``mw/back1``; quick: ≈ 30 MB in ≈ 400 files), cached in the work
directory. Then, alternately and ≥ 5 rounds (quick: 3), times ``backup()`` into a fresh
destination and ``cp -a`` of ``mw`` into a fresh destination. Before each timed run the
previous destination is removed and the page cache's dirty data written out (untimed),
so neither pays for the other's write-back.

Two rows: the copy as such (``durable=False`` against plain ``cp -a``), and the job as it
runs, flushing the set to disk before marking it complete (``syncfs``), against
``cp -a`` followed by ``sync -f``. Reports medians and their ratio.

Run alone: ``python -m bench.bench_backup [--quick] [--workdir DIR]`` (prints the table).
"""

from __future__ import annotations

import functools
import os
import random
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from bench.report import Row
from bench.stats import median, ratio
from watcher.jobs.backup import backup
from watcher.jobs.base import DataPaths
from watcher.jobs.manifest import remove_tree

FULL = (300, 2_000)
QUICK = (30, 400)
DATABASES = 3
DB_SHARE = 0.15


def data_paths(root: Path) -> DataPaths:
    """The default layout under ``root``."""
    mw = root / "mw"
    return DataPaths(
        root, mw / "data" / "maint", mw / "data", mw / "file", mw, mw / "log", mw / "watcher"
    )


def build_tree(root: Path, megabytes: int, files: int) -> DataPaths:
    """The benchmark's data directory, built in ``<root>.part`` unless ``root`` exists."""
    if not root.is_dir():
        part = root.with_name(root.name + ".part")
        remove_tree(part)
        _fill(data_paths(part), megabytes * 1_000_000, files, random.Random(1))
        part.rename(root)
    return data_paths(root)


def _fill(paths: DataPaths, total: int, files: int, rnd: random.Random) -> None:
    """Databases for ``DB_SHARE`` of the bytes, then log-normally sized files for the rest."""
    paths.data.mkdir(parents=True)
    for i in range(DATABASES):
        _database(paths.data / f"db{i}.sqlite", int(total * DB_SHARE / DATABASES), rnd)
    paths.maint_file.write_text("{}")
    sizes = [rnd.lognormvariate(0, 1.2) for _ in range(files - DATABASES)]
    scale = total * (1 - DB_SHARE) / sum(sizes)
    for n, size in enumerate(sizes):
        archived = n % 20 == 0
        folder = paths.archive_root / "back1" / "file" if archived else paths.files
        path = folder / f"ws{n % 4 + 1}" / f"d{n % 25:02d}" / f"f{n:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rnd.randbytes(int(size * scale)))


def _database(path: Path, size: int, rnd: random.Random) -> None:
    """An SQLite database of about ``size`` bytes of random blobs."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE blob (id INTEGER PRIMARY KEY, body BLOB)")
        rows = ((rnd.randbytes(3000),) for _ in range(size // 3100))
        conn.executemany("INSERT INTO blob (body) VALUES (?)", rows)
        conn.commit()


def _timed(dest: Path, action: Callable[[], object]) -> float:
    """Remove ``dest`` and flush dirty pages (both untimed), then time ``action``."""
    remove_tree(dest)
    os.sync()
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _ours(paths: DataPaths, dest: Path, durable: bool) -> None:
    result = backup(paths, dest, 1, now=datetime.now(UTC), durable=durable)
    assert result["files"] > 0, result


def _cp(paths: DataPaths, dest: Path, durable: bool) -> None:
    dest.mkdir()
    subprocess.run(["cp", "-a", str(paths.archive_root), str(dest)], check=True)
    if durable:
        subprocess.run(["sync", "-f", str(dest)], check=True)


def _compare(paths: DataPaths, out: Path, rounds: int, durable: bool) -> tuple[float, float]:
    """Median seconds of ours and of the reference, run alternately."""
    ours: list[float] = []
    reference: list[float] = []
    dest = out / "dest"
    for i in range(rounds):
        pair = [(ours, _ours), (reference, _cp)]
        for times, action in pair if i % 2 == 0 else reversed(pair):
            times.append(_timed(dest, functools.partial(action, paths, dest, durable)))
    remove_tree(dest)
    return median(ours), median(reference)


def run(workdir: Path, quick: bool) -> list[Row]:
    """Both comparisons on the cached tree; one row each with medians and ratio."""
    megabytes, files = QUICK if quick else FULL
    paths = build_tree(workdir / f"backup-{megabytes}mb", megabytes, files)
    size = sum(p.stat().st_size for p in paths.archive_root.rglob("*") if p.is_file())
    count = sum(1 for p in paths.archive_root.rglob("*") if p.is_file())
    tree = f"{size / 1e6:.0f} MB, {count} files"
    rounds = 3 if quick else 5
    out = Path(tempfile.mkdtemp(prefix="backup-out-", dir=workdir))  # concurrent runs stay apart
    rows: list[Row] = []
    variants = (
        (False, f"backup vs cp -a ({tree})"),
        (True, f"backup incl. syncfs vs cp -a + sync -f ({tree})"),
    )
    for durable, name in variants:
        mine, theirs = _compare(paths, out, rounds, durable)
        rows.append(
            {
                "measure": name,
                "ours": f"{mine:.3f} s",
                "reference": f"{theirs:.3f} s",
                "ratio": ratio(mine, theirs),
                "target": "≤ 1.2×",
            }
        )
    remove_tree(out)
    return rows


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
