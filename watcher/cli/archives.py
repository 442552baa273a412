"""``watcher archives``: what every ``back<ID>`` holds, and ``export ID TABLE --csv``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from watcher.config import Config
from watcher.jobs.archives import export_csv, find_table, list_archives


def collect(config: Config) -> list[dict[str, Any]]:
    """The archives of the configured data directory."""
    return list_archives(config.paths.archive_root)


def format_archives(archives: list[dict[str, Any]]) -> str:
    """One block per archive: ID, space, period, directory, then rows and bytes per table."""
    if not archives:
        return "no archives"
    lines = []
    for a in archives:
        period = a["period"]
        span = f"{period['from'] or '?'} … before {period['before'] or '?'}"
        lines.append(
            f"back{a['id']}  space {a['space'] or 'all'}  {span}  {a['directory']}"
            f"  ({a['bytes']} bytes, {a['attachments']} attachments)"
        )
        for t in a["tables"]:
            lines.append(f"  {t['database']}:{t['table']}  {t['rows']} rows  {t['bytes']} bytes")
        if a["kind"] != "records":
            lines.append(f"  ({a['kind']} archive: no table list)")
    return "\n".join(lines)


def export(config: Config, ident: int, table: str, output: str | None) -> tuple[int, Path]:
    """Write the rows of ``table`` in ``back<ID>`` as CSV to ``output`` (or stdout)."""
    db, name = find_table(config.paths.archive_root, ident, table)
    if output is None:
        return export_csv(db, name, sys.stdout), db
    with open(output, "w", newline="", encoding="utf-8") as out:
        return export_csv(db, name, out), db
