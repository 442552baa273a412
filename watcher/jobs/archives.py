"""What the archives (``mw/back<ID>``) hold, and their rows as CSV; read-only throughout.

An archive made by the record-level archive job carries ``archive.json`` (space, period,
rows and bytes per table). Archive databases are opened ``mode=ro&immutable=1``: SQLite
neither writes nor creates ``-wal``/``-shm`` files beside them, so reading never alters
an archive (its manifest stays exact).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote as url_quote

from watcher.jobs.archivedb import quote
from watcher.jobs.backup import archive_dirs
from watcher.jobs.manifest import MANIFEST_NAME, ManifestError, read_manifest
from watcher.jobs.space import tree_size

INFO = "archive.json"


class ArchiveLookupError(Exception):
    """No such archive or table; the message says which and what there is."""


def read_only_uri(db: Path) -> str:
    """The SQLite URI that opens ``db`` read-only and immutable (no side files, no locks)."""
    return f"file:{url_quote(str(db.absolute()))}?mode=ro&immutable=1"


def list_archives(archive_root: Path) -> list[dict[str, Any]]:
    """Every ``back<ID>``: ID, mail space, period, directory, rows and bytes per table."""
    found = []
    for root in archive_dirs(archive_root):
        info = _info(root)
        found.append(
            {
                "id": int(root.name[4:]),
                "space": info.get("space"),
                "period": {"from": _period_from(info), "before": info.get("before")},
                "directory": str(root),
                "created": info.get("created"),
                "tables": info.get("tables", []),
                "attachments": info.get("attachments", 0),
                "bytes": tree_size(root),
                "kind": "records" if info else _legacy_kind(root),
            }
        )
    return found


def _info(root: Path) -> dict[str, Any]:
    """``archive.json`` of an archive, or ``{}`` for one made otherwise."""
    try:
        doc = json.loads((root / INFO).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _period_from(info: dict[str, Any]) -> Any:
    starts = [t.get("from") for t in info.get("tables", []) if t.get("from") is not None]
    return min(starts, key=str) if starts else None


def _legacy_kind(root: Path) -> str:
    """An archive without ``archive.json``: files only (or unknown without a manifest)."""
    if not (root / MANIFEST_NAME).exists():
        return "unknown"
    try:
        return "files" if read_manifest(root)[0] == "archive" else "unknown"
    except ManifestError:
        return "unknown"


def find_table(archive_root: Path, ident: int, table: str) -> tuple[Path, str]:
    """The archive database holding ``table`` (``name`` or ``database:name``) in ``back<ID>``."""
    root = archive_root / f"back{ident}"
    if not root.is_dir():
        have = ", ".join(p.name for p in archive_dirs(archive_root)) or "none"
        raise ArchiveLookupError(f"no archive back{ident} in {archive_root} (there are: {have})")
    database, _, name = table.rpartition(":")
    tables = _info(root).get("tables", [])
    matches = [t for t in tables if t.get("table") == name and database in ("", t.get("database"))]
    if len(matches) != 1:
        names = ", ".join(f"{t.get('database')}:{t.get('table')}" for t in tables) or "none"
        why = "is ambiguous" if matches else "is not in it"
        raise ArchiveLookupError(f"back{ident}: table {table!r} {why} (tables: {names})")
    return root / "data" / str(matches[0]["database"]), name


def export_csv(db: Path, table: str, out: TextIO) -> int:
    """Write the table's rows to ``out`` as CSV with a header line; the row count."""
    writer = csv.writer(out)
    count = 0
    with closing(sqlite3.connect(read_only_uri(db), uri=True)) as conn:
        cur = conn.execute(f"SELECT * FROM {quote(table)}")
        writer.writerow([d[0] for d in cur.description])
        for row in _rows(cur):
            writer.writerow(row)
            count += 1
    return count


def _rows(cur: sqlite3.Cursor) -> Iterator[tuple[Any, ...]]:
    while batch := cur.fetchmany(1000):
        yield from batch
