"""The trigger journal: an append-only, fsynced record of each trigger's ``started`` and
``finished``, so a trigger runs exactly once even across crashes.

One JSON object per line in ``<state>/journal``. A torn last line (a crash mid-write) is
ignored. The journal is compacted at start-up to the triggers still unfinished.

Group commit (:meth:`Journal.append_soon`, ``watcher.service.groupcommit``): records added
in one turn of the event loop (a burst of triggers starting together) go out in one
``write`` and one ``fsync``; each is still durable before its caller goes on.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from watcher.service.groupcommit import GroupCommit
from watcher.system.atomic import write_atomic


class Journal:
    """Records and replays trigger progress."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "journal"
        self._group = GroupCommit[Mapping[str, Any], None](lambda rs: self.append_many(rs))

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record durably (fsync before returning)."""
        self.append_many([record])

    async def append_soon(self, record: Mapping[str, Any]) -> None:
        """Add one record durably, sharing the write and fsync with the records of its batch.
        Raises ``OSError`` (for each of them) when it failed."""
        await self._group.add(record)

    def append_many(self, records: list[Mapping[str, Any]]) -> None:
        """Add records durably in one write and one fsync; none of them on failure."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                data = b"".join(orjson.dumps(dict(r)) + b"\n" for r in records)
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, "short write to the journal")
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # no torn line for the next record to be glued onto
                raise
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for line in raw.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn line from a crash mid-append
            if isinstance(record, dict) and "id" in record:
                out.append(record)
        return out

    def unfinished(self) -> dict[str, dict[str, Any]]:
        """``started`` records with no ``finished`` record, by trigger id."""
        started: dict[str, dict[str, Any]] = {}
        for record in self.records():
            if record.get("event") == "started":
                started[record["id"]] = record
            elif record.get("event") == "finished":
                started.pop(record["id"], None)
        return started

    def compact(self) -> None:
        """Rewrite the journal with only the unfinished triggers' records."""
        if not self.path.exists():
            return
        keep = self.unfinished()
        data = b"".join(orjson.dumps(r) + b"\n" for r in keep.values())
        write_atomic(self.path, data, 0o600)
