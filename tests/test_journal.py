"""The trigger journal's group commit: records of one loop turn share a write and an fsync."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from watcher.service.journal import Journal


@pytest.mark.asyncio
async def test_records_added_in_one_turn_are_written_together_and_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fifty tasks starting together cost one write and one fsync, and every record is there
    when each of them goes on."""
    journal = Journal(tmp_path)
    writes: list[int] = []
    real = journal.append_many

    def counted(records: list[Mapping[str, Any]]) -> None:
        writes.append(len(records))
        real(records)

    monkeypatch.setattr(journal, "append_many", counted)
    seen: list[int] = []

    async def start(i: int) -> None:
        await journal.append_soon({"event": "started", "id": f"t{i}"})
        seen.append(len(journal.unfinished()))

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(start, i)
    assert writes == [50]
    assert seen == [50] * 50
    assert sorted(journal.unfinished()) == sorted(f"t{i}" for i in range(50))


@pytest.mark.asyncio
async def test_a_failed_group_write_fails_every_record_and_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the shared write fails (no space), each caller gets the error and nothing is kept."""
    journal = Journal(tmp_path)
    journal.append({"event": "started", "id": "before"})

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    failures: list[int] = []

    async def start(i: int) -> None:
        try:
            await journal.append_soon({"event": "started", "id": f"t{i}"})
        except OSError as exc:
            failures.append(exc.errno or 0)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(start, i)
    monkeypatch.undo()
    assert failures == [errno.ENOSPC] * 3
    assert list(journal.unfinished()) == ["before"]
    assert journal.path.read_bytes().count(b"\n") == 1
