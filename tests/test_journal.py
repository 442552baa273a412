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


def test_an_append_after_the_first_opens_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal stays open between appends: the next record is written without an open."""
    journal = Journal(tmp_path / "state")
    journal.append({"event": "started", "id": "first"})
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(str(a[0])) or real_open(*a, **k))
    journal.append({"event": "started", "id": "second"})
    monkeypatch.undo()
    assert opened == []
    assert sorted(journal.unfinished()) == ["first", "second"]


def test_a_journal_deleted_under_the_service_is_made_again_and_gets_the_next_record(
    tmp_path: Path,
) -> None:
    """An open file with no links left is not written to: the record goes to a new journal."""
    journal = Journal(tmp_path / "state")
    journal.append({"event": "started", "id": "lost-with-the-file"})
    journal.path.unlink()
    journal.append({"event": "started", "id": "after"})
    assert list(journal.unfinished()) == ["after"]


def test_records_after_a_compaction_go_to_the_compacted_journal(tmp_path: Path) -> None:
    """``compact`` replaces the file; what is appended next is in the new one, with what it kept."""
    journal = Journal(tmp_path)
    journal.append_many([{"event": "started", "id": "done"}, {"event": "started", "id": "open"}])
    journal.append({"event": "finished", "id": "done"})
    journal.compact()
    journal.append({"event": "started", "id": "next"})
    assert sorted(journal.unfinished()) == ["next", "open"]
    assert journal.path.read_bytes().count(b"\n") == 2
