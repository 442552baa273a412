"""The archive job against the ``sqlite3`` shell moving the same rows (issue 12: ≤ 1.5×).

Builds a data directory once (cached in the work directory): three SQLite databases in
``mw/data`` with 1,000,000 rows in all (quick: 100,000) dated evenly from 2021-01-01 to
2024-12-31 in insertion order, as an application writes them — ``mail.db`` (mails, ISO
dates, mail space 1 or 2, 1 % with an attachment under ``mw/file/ws1`` / ``ws2``),
``phone.db`` (calls, unix times, mail space) and ``address.db`` (customers, ISO dates) —
each with an index on its date column, in SQLite's default rollback-journal mode
(``journal_mode = DELETE``, ``synchronous = FULL``), plus a ``settings.ini`` that must stay.

Each trial starts from a fresh ``cp -a`` of that directory and a ``sync`` (both untimed),
then times, on the rows dated before 2023-01-01 (half of them):

- ours: the archive job's function, ``archive()``, as the service's ``archive`` job runs it
  in its worker thread (the job function directly, as the backup row measures backup):
  space pre-flight, journal, rows copied into ``back<ID>``, attachments moved, manifest,
  the single syncfs, the commit rename, the delete from live data. Checked after every
  trial: rows left in live data and rows in the archive per table, attachments moved.
- reference, measured alone: per database one ``sqlite3`` shell that ``ATTACH``es a new
  database and, in one transaction, creates the same table (and its index), ``INSERT …
  SELECT``s the same rows into it and ``DELETE``s them from the live table, with the live
  database's journal mode and synchronous setting (the shell's defaults, as the app's);
  checked the same way (row counts).

Rounds alternate which goes first (5 rounds; quick: 3). Reports medians and their ratio.

Run alone: ``python -m bench.bench_archive [--quick] [--workdir DIR]`` (prints the table).
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.report import Row
from bench.stats import median, ratio
from watcher.config import ArchiveConfig, ArchiveTableConfig
from watcher.jobs.archive import archive
from watcher.jobs.base import DataPaths
from watcher.jobs.manifest import remove_tree

FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
FIRST_DAY = date(2021, 1, 1)
LAST_DAY = date(2024, 12, 31)
BEFORE = date(2023, 1, 1)
ATTACHMENT_EVERY = 100  # 1 % of the mails name an attachment
BATCH = 50_000


@dataclass(frozen=True)
class Table:
    """One generated table: its share of the rows, its DDL and how watcher is told about it."""

    database: str
    name: str
    share: float
    ddl: str
    index: str
    date_column: str
    unix: bool
    config: ArchiveTableConfig


TABLES = (
    Table(
        "mail.db",
        "mails",
        0.5,
        "CREATE TABLE {schema}mails (id INTEGER PRIMARY KEY, space INTEGER NOT NULL,"
        " received TEXT NOT NULL, sender TEXT, subject TEXT, body TEXT, attachment TEXT)",
        "CREATE INDEX {schema}mails_received ON mails (received)",
        "received",
        False,
        ArchiveTableConfig(
            "mail.db",
            "mails",
            "received",
            space_column="space",
            attachment_column="attachment",
            attachment_path="{space}/{value}",
        ),
    ),
    Table(
        "phone.db",
        "calls",
        0.3,
        "CREATE TABLE {schema}calls (id INTEGER PRIMARY KEY, space INTEGER NOT NULL,"
        " at INTEGER NOT NULL, number TEXT, seconds INTEGER, note TEXT)",
        "CREATE INDEX {schema}calls_at ON calls (at)",
        "at",
        True,
        ArchiveTableConfig("phone.db", "calls", "at", date_format="unix", space_column="space"),
    ),
    Table(
        "address.db",
        "customers",
        0.2,
        "CREATE TABLE {schema}customers (id INTEGER PRIMARY KEY, name TEXT, email TEXT,"
        " phone TEXT, updated TEXT NOT NULL)",
        "CREATE INDEX {schema}customers_updated ON customers (updated)",
        "updated",
        False,
        ArchiveTableConfig("address.db", "customers", "updated"),
    ),
)
CONFIG = ArchiveConfig(tables=tuple(t.config for t in TABLES), immutable=False)
UTC_ZONE = ZoneInfo("UTC")  # watcher's unix cut-off is midnight in the configured zone


def data_paths(root: Path) -> DataPaths:
    """The default layout under ``root``."""
    mw = root / "mw"
    return DataPaths(
        root, mw / "data" / "maint", mw / "data", mw / "file", mw, mw / "log", mw / "watcher"
    )


def build_tree(root: Path, total: int) -> DataPaths:
    """The benchmark's data directory, built in ``<root>.part`` unless ``root`` exists."""
    if not root.is_dir():
        part = root.with_name(root.name + ".part")
        remove_tree(part)
        paths = data_paths(part)
        paths.data.mkdir(parents=True)
        (paths.data / "settings.ini").write_text("[app]\nname = bench\n")
        for table in TABLES:
            _database(paths, table, int(total * table.share), random.Random(table.name))
        os.sync()
        part.rename(root)
    return data_paths(root)


def _moment(i: int, count: int) -> datetime:
    """Row ``i`` of ``count``, spread evenly from the first to the last day (UTC)."""
    span = (LAST_DAY - FIRST_DAY + timedelta(days=1)).total_seconds()
    start = datetime.combine(FIRST_DAY, datetime.min.time(), UTC)
    return start + timedelta(seconds=span * i / count)


def _database(paths: DataPaths, table: Table, count: int, rnd: random.Random) -> None:
    """Create ``table.database`` with ``count`` rows (and the mails' attachment files)."""
    with closing(sqlite3.connect(paths.data / table.database)) as conn:
        conn.execute(table.ddl.format(schema=""))
        conn.execute(table.index.format(schema=""))
        for start in range(0, count, BATCH):
            rows = list(_rows(table.name, start, min(count, start + BATCH), count, rnd))
            marks = ", ".join("?" * len(rows[0]))
            conn.executemany(f"INSERT INTO {table.name} VALUES ({marks})", rows)
            conn.commit()
            if table.name == "mails":
                _attachments(paths, rows)


def _rows(name: str, start: int, stop: int, count: int, rnd: random.Random) -> Iterator[tuple]:
    """Deterministic rows of table ``name``, ids ``start + 1`` … ``stop``, in date order."""
    for i in range(start, stop):
        when = _moment(i, count)
        iso = when.strftime("%Y-%m-%d %H:%M:%S")
        words = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(8, 24)))
        if name == "mails":
            named = i % ATTACHMENT_EVERY == i // ATTACHMENT_EVERY % 2  # both spaces
            attachment = f"a{i // 1000:04d}/{i}.bin" if named else None
            yield (i + 1, i % 2 + 1, iso, f"u{i % 5000}@example.com", words[:40], words,
                   attachment)  # fmt: skip
        elif name == "calls":
            yield (i + 1, i % 2 + 1, int(when.timestamp()), f"+81{i % 10**9:09d}",
                   rnd.randint(5, 900), words[:30])  # fmt: skip
        else:
            yield (i + 1, f"Customer {i}", f"c{i}@example.com", f"03-{i % 10**8:08d}", iso)


_WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
]


def _attachments(paths: DataPaths, rows: list[tuple]) -> None:
    """The attachment files the rows name, under ``mw/file/ws<space>``."""
    for row in rows:
        if row[6] is not None:
            path = paths.files / f"ws{row[1]}" / row[6]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"%d\n" % row[0] * 200)


def counts(paths: DataPaths) -> dict[str, tuple[int, int]]:
    """Per table: rows dated before ``BEFORE`` and rows on or after it, in live data."""
    found = {}
    for table in TABLES:
        with closing(sqlite3.connect(f"file:{paths.data / table.database}?mode=ro", uri=True)) as c:
            bound = _bound(table)
            sql = f"SELECT sum({table.date_column} < ?), sum({table.date_column} >= ?) FROM"
            old, new = c.execute(f"{sql} {table.name}", (bound, bound)).fetchone()
        found[table.name] = (old or 0, new or 0)
    return found


def _bound(table: Table) -> str | int:
    """The first date that stays, as the table stores dates."""
    if table.unix:
        return int(datetime.combine(BEFORE, datetime.min.time(), UTC).timestamp())
    return BEFORE.isoformat()


def _reference_sql(table: Table, back: Path) -> str:
    """The shell script moving ``table``'s old rows into the new database ``back``."""
    bound = _bound(table)
    literal = bound if isinstance(bound, int) else f"'{bound}'"
    where = f"{table.date_column} < {literal}"
    return "\n".join(
        (
            f"ATTACH '{back}' AS archive;",
            "BEGIN;",
            table.ddl.format(schema="archive.") + ";",
            f"INSERT INTO archive.{table.name} SELECT * FROM main.{table.name} WHERE {where};",
            table.index.format(schema="archive.") + ";",
            f"DELETE FROM main.{table.name} WHERE {where};",
            "COMMIT;",
            "",
        )
    )


def _reference(cli: str, paths: DataPaths) -> None:
    back = paths.archive_root / "ref-back" / "data"
    back.mkdir(parents=True)
    for table in TABLES:
        script = _reference_sql(table, back / table.database)
        subprocess.run([cli, str(paths.data / table.database)], input=script, text=True,
                       check=True)  # fmt: skip


def _ours(paths: DataPaths) -> dict[str, object]:
    return archive(paths, BEFORE, now=datetime.now(UTC_ZONE), config=CONFIG)


def _verify_reference(before: dict[str, tuple[int, int]], paths: DataPaths) -> None:
    """The reference moved the same rows: old ones gone from live data and in its copy."""
    _verify_rows(before, paths, paths.archive_root / "ref-back" / "data")


def _verify(before: dict[str, tuple[int, int]], paths: DataPaths, result: dict) -> None:
    """Old rows gone from live data and in ``back1``, new rows kept, attachments moved."""
    back = paths.archive_root / f"back{result['id']}" / "data"
    _verify_rows(before, paths, back)
    moved = sum(1 for p in (back.parent / "file").rglob("*.bin"))
    assert moved == result["attachments"] > 0, (moved, result["attachments"])
    assert (paths.data / "settings.ini").is_file()


def _verify_rows(before: dict[str, tuple[int, int]], paths: DataPaths, back: Path) -> None:
    after = counts(paths)
    for table in TABLES:
        old, new = before[table.name]
        assert after[table.name] == (0, new), (table.name, after[table.name], new)
        with closing(sqlite3.connect(f"file:{back / table.database}?mode=ro", uri=True)) as c:
            archived = c.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]
        assert archived == old, (table.name, archived, old)


def _trial(
    pristine: Path, trial: Path, action: Callable[[DataPaths], object]
) -> tuple[float, float]:
    """A fresh copy of ``pristine`` at ``trial`` and a sync (untimed), then ``action`` timed:
    wall seconds, and CPU seconds of this process and of the children it waited for."""
    remove_tree(trial)
    subprocess.run(["cp", "-a", str(pristine), str(trial)], check=True)
    os.sync()
    paths = data_paths(trial)
    cpu = _cpu()
    started = time.perf_counter()
    action(paths)
    return time.perf_counter() - started, _cpu() - cpu


def _cpu() -> float:
    """User + system CPU seconds of this process and its waited-for children so far."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _spread(times: list[float]) -> str:
    """``median of 5, 2.31–2.90 s``: how far the trials were apart on a noisy machine."""
    return f"median of {len(times)}, {min(times):.2f}–{max(times):.2f} s"


def run(workdir: Path, quick: bool) -> list[Row]:
    """Both moves alternately on fresh copies of the cached tree; one row with medians."""
    cli = shutil.which("sqlite3")
    if cli is None:
        raise RuntimeError("the sqlite3 command-line shell is needed as the reference")
    total = QUICK_ROWS if quick else FULL_ROWS
    pristine = build_tree(workdir / f"archive-{total // 1000}k", total).data_dir
    before = counts(data_paths(pristine))
    old = sum(o for o, _n in before.values())
    rounds = 3 if quick else 5
    out = Path(tempfile.mkdtemp(prefix="archive-out-", dir=workdir))
    trial = out / "trial"
    ours: list[float] = []
    reference: list[float] = []
    cpu: dict[str, list[float]] = {"ours": [], "reference": []}

    def mine(paths: DataPaths) -> None:
        results.append(_ours(paths))

    results: list[dict[str, object]] = []
    for i in range(rounds):
        pair = [("ours", ours, mine), ("reference", reference, lambda p: _reference(cli, p))]
        for who, times, action in pair if i % 2 == 0 else reversed(pair):
            wall, used = _trial(pristine, trial, action)
            times.append(wall)
            cpu[who].append(used)
            if action is mine:
                _verify(before, data_paths(trial), results[-1])
            else:
                _verify_reference(before, data_paths(trial))
    remove_tree(out)
    size = sum(p.stat().st_size for p in (pristine / "mw" / "data").iterdir()) / 1e6
    attachments = results[-1]["attachments"]
    return [
        {
            "measure": (
                f"archive of {old:,} of {total:,} rows (3 databases, {size:.0f} MB,"
                f" {attachments} attachments) vs sqlite3 CLI INSERT … SELECT + DELETE"
            ),
            "ours": f"{median(ours):.3f} s ({_spread(ours)}); CPU {median(cpu['ours']):.2f} s",
            "reference": (
                f"{median(reference):.3f} s, alone ({_spread(reference)});"
                f" CPU {median(cpu['reference']):.2f} s"
            ),
            "ratio": ratio(median(ours), median(reference)),
            "target": "≤ 1.5×",
        }
    ]


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
