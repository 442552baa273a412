"""SQLite file facts the jobs share: what a database is, a hot journal, and cancelling work.

A database is a file named ``*.db``, ``*.sqlite`` or ``*.sqlite3`` (any case; a name covers an
empty database) or one starting with the SQLite header. Beside it SQLite keeps ``-wal``,
``-shm`` and ``-journal`` side files, which belong to the database and are never data of
their own. The database check and archive recognise databases by name or header; the
backup copies by header only (a non-SQLite file named ``*.db`` is copied byte for byte).

A writer killed mid-transaction (the application, or an interrupted VACUUM) leaves a hot
rollback journal (``<db>-journal``). A read-only connection cannot roll it back and fails
with "attempt to write a readonly database" — which is not corruption. Jobs that hold
maintenance settle it first with an ordinary read-write open, exactly what SQLite does
for any writer; the manual ``check-db`` (no maintenance) only reports it.

A cancel (``JobContext.cancelled``) must stop a long statement on one large database, not
only the loop between databases: ``interrupt_on`` aborts the running statement, which then
fails with SQLite's "interrupted" (``SQLITE_INTERRUPT``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")
#: Virtual-machine steps between looks at the cancel flag (well under a millisecond).
PROGRESS_STEPS = 10_000
#: How often the watcher thread of ``interrupt_on`` looks at the cancel flag, in seconds.
INTERRUPT_POLL = 0.05

HOT_JOURNAL_NOTE = (
    "hot journal: an interrupted write awaits rollback (not corruption); it is rolled back "
    "by the next writer, e.g. the dbcheck job under maintenance"
)


def is_side_file(name: str) -> bool:
    """Whether the file name is SQLite's ``-wal``, ``-shm`` or ``-journal`` of a database."""
    return name.endswith(SIDE_FILE_SUFFIXES)


def is_database(path: Path, head: bytes | None = None) -> bool:
    """Whether ``path`` is named like a database or starts with the SQLite header.

    ``head`` is the file's first bytes when the caller has read them already; otherwise
    the file is read (``OSError`` when it cannot be). Side files are not databases here:
    callers that care test ``is_side_file`` first. The file type is the caller's concern.
    """
    if path.name.lower().endswith(DATABASE_SUFFIXES):
        return True
    if head is None:
        with open(path, "rb", buffering=0) as f:
            head = f.read(len(SQLITE_HEADER))
    return head.startswith(SQLITE_HEADER)


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


def error_code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code for ``exc`` (0 for an error raised by Python itself)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else 0


def is_interrupt(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the statement was interrupted (``interrupt_on``)."""
    return error_code(exc) == sqlite3.SQLITE_INTERRUPT


@contextmanager
def interrupt_on(conn: sqlite3.Connection, stop: threading.Event) -> Iterator[None]:
    """While inside, a set ``stop`` aborts ``conn``'s running statement ("interrupted").

    Two ways, because neither covers everything: the progress handler answers within
    ``PROGRESS_STEPS`` virtual-machine steps but, in older SQLite (3.40 included), is never
    called inside one long step such as the page walk of ``integrity_check`` (over ten
    seconds on a 700 MB database with a cold cache); a watcher thread calls
    ``conn.interrupt()``, which that walk honours, within ``INTERRUPT_POLL`` seconds. The
    thread is stopped and joined before this returns, so it never touches a closed
    connection.
    """
    done = threading.Event()

    def watch() -> None:
        while not done.wait(INTERRUPT_POLL):
            if stop.is_set():
                conn.interrupt()

    conn.set_progress_handler(lambda: 1 if stop.is_set() else 0, PROGRESS_STEPS)
    thread = threading.Thread(target=watch, name="watcher-sqlite-cancel", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        conn.set_progress_handler(None, 0)
