"""Row-level work of the archive job on SQLite: which rows, copy them out, delete them.

A configured table (``[[archive.tables]]``) names its database (under ``mw/data``), the
table, the date column and optionally the mail-space column and the attachment column.
``selection`` turns ``before``/``space`` into one SQL condition with its parameters; the
same condition (stored in the archive journal) drives the copy and, later, the delete, so a
recovery after a crash deletes exactly what was copied. The archive databases get the live
table's schema (table first, its indexes after the rows are in, which is faster).

Everything here runs while the archive holds maintenance, so the application does not write.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from watcher.config import ArchiveTableConfig
from watcher.jobs.base import JobFailed
from watcher.jobs.sqlitefiles import interrupt_on, is_interrupt, settle_hot_journal

_SPACE = re.compile(r"ws(\d+)")
Params = list[str | int | float]
CACHE = "PRAGMA cache_size = -65536"
"""64 MiB of page cache (the default is 2 MiB) for the big copy and delete, so a
transaction of hundreds of thousands of rows does not spill dirty pages mid-way (each
spill syncs the rollback journal and may write a page twice); memory is only used as the
transaction touches pages."""


@dataclass(frozen=True)
class Selection:
    """The rows of one table to archive: where they are and the condition that picks them."""

    database: str
    table: str
    where: str
    params: Params
    date_column: str
    attachment_column: str | None
    attachment_path: str
    space_column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "table": self.table,
            "where": self.where,
            "params": self.params,
            "date_column": self.date_column,
            "attachment_column": self.attachment_column,
            "attachment_path": self.attachment_path,
            "space_column": self.space_column,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Selection:
        return cls(**doc)


def quote(name: str) -> str:
    """An SQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def cutoff(day: date, tz: tzinfo | None) -> float:
    """The epoch time of midnight starting ``day`` in ``tz`` (system local time unless IANA)."""
    if isinstance(tz, ZoneInfo):
        return datetime.combine(day, time(), tz).timestamp()
    return datetime.combine(day, time()).timestamp()


def selection(
    table: ArchiveTableConfig, before: date, space: str | None, tz: tzinfo | None
) -> Selection | None:
    """The condition for ``table``; ``None`` when a space is asked and the table has none."""
    bound: str | float = before.isoformat() if table.date_format == "iso" else cutoff(before, tz)
    where = f"{quote(table.date_column)} < ?"
    params: Params = [bound]
    if space is not None:
        if table.space_column is None:
            return None
        where += f" AND {quote(table.space_column)} IN (?, ?)"
        m = _SPACE.fullmatch(space)
        params += [space, int(m[1]) if m else space]
    return Selection(
        table.database,
        table.table,
        where,
        params,
        table.date_column,
        table.attachment_column,
        table.attachment_path,
        table.space_column,
    )


def count_rows(live: Path, sel: Selection) -> int:
    """How many rows of the live table the selection picks (0 when the table is missing)."""
    settle_hot_journal(live)
    with closing(sqlite3.connect(f"file:{live}?mode=ro", uri=True)) as conn:
        if not _has_table(conn, "main", sel.table):
            return 0
        sql = f"SELECT count(*) FROM {quote(sel.table)} WHERE {sel.where}"
        return int(conn.execute(sql, sel.params).fetchone()[0])


def _has_table(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    sql = f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (table,)).fetchone() is not None


def copy_rows(live: Path, back: Path, sel: Selection, stop: threading.Event) -> int:
    """Copy the selected rows into ``back`` (same schema, created here); the row count."""
    back.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(back, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute(CACHE)
        conn.execute("ATTACH ? AS live", (f"file:{live}?mode=ro",))
        schema = conn.execute(
            "SELECT type, sql FROM live.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL"
            " ORDER BY type = 'index'",
            (sel.table,),
        ).fetchall()
        table_sql = [sql for kind, sql in schema if kind == "table"]
        if not table_sql:
            raise JobFailed("archive_failed", f"{live}: no table {sel.table}")
        try:
            with interrupt_on(conn, stop):
                conn.execute("BEGIN")
                conn.execute(table_sql[0])
                cur = conn.execute(
                    f"INSERT INTO main.{quote(sel.table)} SELECT * FROM live.{quote(sel.table)}"
                    f" WHERE {sel.where}",
                    sel.params,
                )
                rows = cur.rowcount
                for kind, sql in schema:
                    if kind != "table":
                        conn.execute(sql)
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if is_interrupt(exc):
                raise JobFailed("cancelled", "archive cancelled") from None
            raise JobFailed("archive_failed", f"copying {sel.table} of {live}: {exc}") from exc
        conn.execute("DETACH live")
    return rows


def attachment_names(live: Path, sel: Selection) -> tuple[set[str], set[str]]:
    """Attachment paths (as named, relative to ``mw/file``) of the live table's rows, in one
    scan: those of the rows the selection archives, and those of the rows that stay."""
    if sel.attachment_column is None:
        return set(), set()
    col = quote(sel.attachment_column)
    space = quote(sel.space_column) if sel.space_column is not None else "NULL"
    sql = (
        f"SELECT coalesce(({sel.where}), 0), {col}, {space} FROM {quote(sel.table)}"
        f" WHERE {col} IS NOT NULL AND {col} != ''"
    )
    archived: set[str] = set()
    staying: set[str] = set()
    name = sel.attachment_path.format
    settle_hot_journal(live)
    with closing(sqlite3.connect(f"file:{live}?mode=ro", uri=True)) as conn:
        for chosen, value, where in conn.execute(sql, sel.params):
            found = name(value=value, space=_space_name(where, sel.space_column))
            (archived if chosen else staying).add(found)
    return archived, staying


def _space_name(value: object, column: str | None) -> str:
    """A row's mail space as ``ws<N>`` (or its value as text; empty without a space column)."""
    if column is None:
        return ""
    return f"ws{value}" if isinstance(value, int) else str(value)


def delete_rows(live: Path, sel: Selection, expected: int) -> int:
    """Delete the selected rows in one transaction; 0 or ``expected`` rows, or nothing changes.

    0 means an earlier run already deleted them (a recovery after a crash).
    """
    settle_hot_journal(live)
    with closing(sqlite3.connect(live, isolation_level=None)) as conn:
        conn.execute(CACHE)
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(f"DELETE FROM {quote(sel.table)} WHERE {sel.where}", sel.params)
            if cur.rowcount not in (0, expected):
                conn.execute("ROLLBACK")
                raise JobFailed(
                    "archive_failed",
                    f"{live} {sel.table}: {cur.rowcount} rows match, {expected} were archived",
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            message = f"deleting from {sel.table} of {live}: {exc}"
            raise JobFailed("archive_failed", message) from exc
    return int(cur.rowcount)


def period_start(back: Path, sel: Selection, tz: tzinfo | None) -> str | None:
    """The day of the oldest archived row, ``YYYY-MM-DD`` (``None`` when there are none)."""
    with closing(sqlite3.connect(f"file:{back}?mode=ro", uri=True)) as conn:
        sql = f"SELECT min({quote(sel.date_column)}) FROM {quote(sel.table)}"
        value = conn.execute(sql).fetchone()[0]
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz).date().isoformat()
    return None if value is None else str(value)[:10]
