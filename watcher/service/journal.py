"""The trigger journal: an append-only, fsynced record of each trigger's ``started`` and
``finished``, so a trigger runs exactly once even across crashes.

One JSON object per line in ``<state>/journal``. A torn last line (a crash mid-write) is
ignored. The journal is compacted at start-up to the triggers still unfinished.

Batches: the runner writes the ``started`` records of the jobs that start together (a
burst's first jobs, the ones a finished batch made room for) in one ``append_many``: one
``write`` and one ``fsync``, done before any of them runs and before that turn of the event
loop ends — the only wait on a lone trigger's path to its job. Writes from different
threads (the loop's, the filing of finished triggers in a worker thread) are serialised by a
lock, so a failed write's truncation never cuts another's record.

The file stays open between appends (closed when the journal object goes): a trigger's
``started`` record is then one ``fstat``, one ``write`` and the fsync, not a ``mkdir``, an
``open`` and a ``close`` besides — each a step on the trigger's path to its job (issue 15).
``compact`` closes it after replacing the file, and the ``fstat`` tells when it was deleted
under us (no links left): it is then opened again, so no record goes to a file nobody reads.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from watcher.system.atomic import write_atomic


class Journal:
    """Records and replays trigger progress."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "journal"
        self._writing = threading.Lock()
        self._fd = -1
        self._closer: weakref.finalize[[int], Journal] | None = None

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record durably (fsync before returning)."""
        self.append_many([record])

    def append_many(self, records: list[Mapping[str, Any]]) -> None:
        """Add records durably in one write and one fsync; none of them on failure."""
        if not records:
            return
        with self._writing:
            self._append(records)

    def _append(self, records: list[Mapping[str, Any]]) -> None:
        fd, size = self._open()
        try:
            data = b"".join(orjson.dumps(dict(r)) + b"\n" for r in records)
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write to the journal")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # no torn line for the next record to be glued onto
            raise

    def _open(self) -> tuple[int, int]:
        """The open journal file and its size; opened again when it has no links left
        (deleted, or replaced by a rename over it)."""
        if self._fd >= 0:
            st = os.fstat(self._fd)
            if st.st_nlink > 0:
                return self._fd, st.st_size
            self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._fd, self._closer = fd, weakref.finalize(self, os.close, fd)
        return fd, os.fstat(fd).st_size

    def close(self) -> None:
        """Close the file (the next append opens it again)."""
        if self._closer is not None:
            self._closer()
        self._fd, self._closer = -1, None

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
        with self._writing:  # no append in between the read and the replacement
            if not self.path.exists():
                return
            keep = self.unfinished()
            data = b"".join(orjson.dumps(r) + b"\n" for r in keep.values())
            write_atomic(self.path, data, 0o600)
            self.close()  # the old file is unlinked by the rename; appends go to the new one
