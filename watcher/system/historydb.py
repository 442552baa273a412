"""The history file: recent events and disk samples in SQLite (WAL), bounded by age and size.

One writer (the service's history thread) and any number of readers (``watcher history``,
the status page). Every function here is blocking: callers run it off the event loop.
"""

from __future__ import annotations

import fnmatch
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    document BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE TABLE IF NOT EXISTS samples (
    time REAL PRIMARY KEY,
    free INTEGER NOT NULL,
    total INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Row:
    """One stored event."""

    time: float
    action: str
    level: str
    message: str
    document: dict[str, Any]


def connect(path: Path, *, write: bool = False) -> sqlite3.Connection:
    """Open the history file; a writer creates it (WAL, normal sync), a reader never does."""
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        return db
    if not path.exists():
        raise FileNotFoundError(f"{path}: no history file (is the service running?)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout=2000")
    return db


def release_memory(db: sqlite3.Connection) -> None:
    """Free what the connection caches (its page cache); it reads pages again as needed."""
    db.execute("PRAGMA shrink_memory")


def insert(
    db: sqlite3.Connection,
    events: Iterable[tuple[float, str, str, str, bytes]],
    samples: Iterable[tuple[float, int, int]] = (),
) -> None:
    """Append a batch of events and samples in one transaction."""
    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT INTO events (time, action, level, message, document) VALUES (?,?,?,?,?)",
            events,
        )
        db.executemany("INSERT OR REPLACE INTO samples VALUES (?,?,?)", samples)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def size(db: sqlite3.Connection) -> int:
    """Bytes the main database file uses (pages in use, not counting the free list)."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * page_size)


def prune(db: sqlite3.Connection, *, older_than: float, max_size: int) -> int:
    """Delete rows older than ``older_than``, then the oldest tenth until under ``max_size``.

    Returns the number of events deleted. Freed pages are reused, so the file stops growing.
    """
    deleted = db.execute("DELETE FROM events WHERE time < ?", (older_than,)).rowcount
    db.execute("DELETE FROM samples WHERE time < ?", (older_than,))
    while size(db) > max_size:
        count = db.execute("SELECT count(*) FROM events").fetchone()[0]
        if count == 0:
            break
        cut = max(1, count // 10)
        deleted += db.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)", (cut,)
        ).rowcount
        db.execute("DELETE FROM samples WHERE time < (SELECT coalesce(min(time), 0) FROM events)")
    return int(deleted)


def events(
    db: sqlite3.Connection, *, since: float, action: str = "*", limit: int = 10_000
) -> list[Row]:
    """Events at or after ``since`` (epoch seconds) whose action matches the glob, oldest first."""
    rows = db.execute(
        "SELECT time, action, level, message, document FROM events WHERE time >= ? "
        "ORDER BY id DESC LIMIT ?",
        (since, limit if action == "*" else limit * 20),
    ).fetchall()
    found = [
        Row(t, a, lv, m, orjson.loads(d))
        for t, a, lv, m, d in rows
        if action == "*" or fnmatch.fnmatchcase(a, action)
    ]
    return list(reversed(found[:limit]))


def samples(db: sqlite3.Connection, *, since: float) -> Sequence[tuple[float, int, int]]:
    """Disk samples (time, free, total) at or after ``since``, oldest first."""
    return db.execute(
        "SELECT time, free, total FROM samples WHERE time >= ? ORDER BY time", (since,)
    ).fetchall()
