"""``watcher history``: recent events from the service's history file."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from watcher.core.printable import one_line, safe_json
from watcher.core.units import parse_duration
from watcher.system import historydb


def history_path(state_dir: Path) -> Path:
    return state_dir / "history.db"


def read(path: Path, since: str, action: str) -> list[historydb.Row]:
    """Events of the last ``since`` (a duration) matching ``action``; raises ``ValueError``."""
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise ValueError(f"--since: {exc}") from None
    try:
        db = historydb.connect(path)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    try:
        return historydb.events(db, since=time.time() - seconds, action=action)
    except sqlite3.Error as exc:
        raise ValueError(f"{path}: {exc}") from None
    finally:
        db.close()


def render(rows: list[historydb.Row], *, as_json: bool) -> str:
    if as_json:
        return "\n".join(safe_json(orjson.dumps(r.document)).decode() for r in rows)
    lines = []
    for r in rows:
        stamp = datetime.fromtimestamp(r.time, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        lines.append(one_line(f"{stamp}  {r.level:<8} {r.action:<28} {r.message}"))
    return "\n".join(lines) if lines else "(no events)"
