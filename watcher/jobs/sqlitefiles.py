"""SQLite file facts the jobs share: a hot journal and how to settle it.

A writer killed mid-transaction (the application, or an interrupted VACUUM) leaves a hot
rollback journal (``<db>-journal``). A read-only connection cannot roll it back and fails
with "attempt to write a readonly database" — which is not corruption. Jobs that hold
maintenance settle it first with an ordinary read-write open, exactly what SQLite does
for any writer; the manual ``check-db`` (no maintenance) only reports it.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

HOT_JOURNAL_NOTE = (
    "hot journal: an interrupted write awaits rollback (not corruption); it is rolled back "
    "by the next writer, e.g. the dbcheck job under maintenance"
)


def journal_of(db: Path) -> Path:
    return db.with_name(db.name + "-journal")


def has_hot_journal(db: Path) -> bool:
    """Whether a non-empty rollback journal sits beside the database."""
    try:
        return journal_of(db).stat().st_size > 0
    except FileNotFoundError:
        return False


def settle_hot_journal(db: Path) -> bool:
    """Roll back a hot journal with a read-write open; ``True`` when there was one."""
    if not has_hot_journal(db):
        return False
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    return True
