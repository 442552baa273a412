"""The trigger journal: records added together share a write and an fsync, or none is kept."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from watcher.service.journal import Journal


def test_records_added_together_are_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty records in one ``append_many`` cost one write and one fsync, and all are there."""
    journal = Journal(tmp_path)
    calls: list[str] = []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append("write") or real_write(fd, data))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    journal.append_many([{"event": "started", "id": f"t{i}"} for i in range(50)])
    monkeypatch.undo()
    assert calls == ["write", "fsync"]
    assert sorted(journal.unfinished()) == sorted(f"t{i}" for i in range(50))


def test_a_failed_write_keeps_none_of_the_records_and_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the shared write fails (no space), the caller gets the error and nothing is kept."""
    journal = Journal(tmp_path)
    journal.append({"event": "started", "id": "before"})

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        journal.append_many([{"event": "started", "id": f"t{i}"} for i in range(3)])
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert list(journal.unfinished()) == ["before"]
    assert journal.path.read_bytes().count(b"\n") == 1
