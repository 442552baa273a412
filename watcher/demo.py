"""``python -m watcher.demo DIR``: create a demo data directory (DESIGN §2) unless it exists.

Used by ``make run``: a couple of small SQLite databases, some attachment files, an
archived area and the log directory, so every feature has something real to act on.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path


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
    (root / "mw" / "back1").mkdir()
    (root / "mw" / "back1" / "README").write_text("archived, read-only data\n")
    (root / "mw" / "log" / "sched" / "dynamic").mkdir(parents=True)
    (root / "mw" / "spool").mkdir()
    return True


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "var/demo")
    if create_demo(root):
        print(f"demo data directory created in {root}")


if __name__ == "__main__":
    main()
