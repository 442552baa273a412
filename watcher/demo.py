"""``python -m watcher.demo DIR``: create a demo data directory (DESIGN §2) unless it exists.

Used by ``make run``: a couple of small SQLite databases, mail-shaped dated rows with
attachments in ``ws1``/``ws2`` (``add_mail_data``, archivable with ``config/demo.toml``'s
``[[archive.tables]]``) and the log directory, so every feature has something real to act on.
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from watcher.config import ArchiveTableConfig

#: The tables of the mail-shaped data ``add_mail_data`` makes, as ``[[archive.tables]]``.
MAIL_TABLES = (
    ArchiveTableConfig(
        "mail.db", "mails", "received", "iso", "space", "attachment", "{space}/{value}"
    ),
    ArchiveTableConfig("phone.db", "calls", "at", "unix", "space"),
    ArchiveTableConfig("address.db", "customers", "updated", "iso"),
)


def add_mail_data(mw: Path, rows: int, first: date, days: int) -> None:
    """Mail-shaped data under ``mw``: dated rows in three databases, attachments in ws1/ws2.

    ``rows`` mails (half in each space, one attachment per mail, every third with none),
    ``rows`` calls and ``rows // 2`` customers, dated evenly over ``days`` days from
    ``first``; plus a ``settings.ini`` that no archive may move.
    """
    data = mw / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "settings.ini").write_text("[mail]\nserver = localhost\n")
    for ws in ("ws1", "ws2"):
        (mw / "file" / ws / "att").mkdir(parents=True, exist_ok=True)
    start = datetime.combine(first, datetime.min.time(), UTC)
    step = timedelta(days=days) / max(rows, 1)
    with sqlite3.connect(data / "mail.db") as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS mails (id INTEGER PRIMARY KEY, space TEXT,"
            " received TEXT, subject TEXT, attachment TEXT)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS mails_received ON mails (received)")
        for i in range(rows):
            ws = f"ws{i % 2 + 1}"
            name = f"att/mail-{i}.txt" if i % 3 else None
            when = (start + step * i).isoformat(timespec="seconds")
            db.execute(
                "INSERT INTO mails (space, received, subject, attachment) VALUES (?, ?, ?, ?)",
                (ws, when, f"subject {i}", name),
            )
            if name:
                (mw / "file" / ws / name).write_text(f"attachment of mail {i}\n")
    db.close()
    with sqlite3.connect(data / "phone.db") as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, space INTEGER,"
            " at INTEGER, note TEXT)"
        )
        db.executemany(
            "INSERT INTO calls (space, at, note) VALUES (?, ?, ?)",
            ((i % 2 + 1, int((start + step * i).timestamp()), f"call {i}") for i in range(rows)),
        )
    db.close()
    with sqlite3.connect(data / "address.db") as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT, updated TEXT)"
        )
        db.executemany(
            "INSERT INTO customers (name, updated) VALUES (?, ?)",
            (
                (f"customer {i}", (start + step * 2 * i).date().isoformat())
                for i in range(rows // 2)
            ),
        )
    db.close()


def create_demo(root: Path) -> bool:
    """Lay out the demo data directory; ``False`` when it already existed."""
    if (root / "mw" / "data").is_dir():
        return False
    data = root / "mw" / "data"
    data.mkdir(parents=True)
    for name, rows in (("mail.db", 500), ("schedule.sqlite", 200)):
        with sqlite3.connect(data / name) as db:
            db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, subject TEXT, body TEXT)")
            db.executemany(
                "INSERT INTO items (subject, body) VALUES (?, ?)",
                ((f"subject {i}", f"body of item {i} " * 20) for i in range(rows)),
            )
            db.execute("CREATE INDEX items_subject ON items (subject)")
        db.close()
    for ws in ("ws1", "ws2"):
        folder = root / "mw" / "file" / ws
        folder.mkdir(parents=True)
        for i in range(5):
            (folder / f"attachment-{i}.txt").write_text(f"attachment {i} in {ws}\n" * 50)
    add_mail_data(root / "mw", 400, date(2024, 1, 1), 730)
    (root / "mw" / "log" / "sched" / "dynamic").mkdir(parents=True)
    (root / "mw" / "spool").mkdir()
    return True


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "var/demo")
    if create_demo(root):
        print(f"demo data directory created in {root}")


if __name__ == "__main__":
    main()
