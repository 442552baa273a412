"""FlatWatcher on a real directory: events read one buffer at a time, coalesced per name; a
swapped-in replacement re-armed silently, not a deletion."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from tests.conftest import WAIT
from watcher.events.bus import EventBus
from watcher.events.record import Event
from watcher.sources.watching import FlatWatcher
from watcher.system.atomic import exchange


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the service's loop."""
    return "asyncio"


class Seen:
    """The names the watcher reported, and a way to await one."""

    def __init__(self) -> None:
        self.names: list[str | None] = []
        self.changed = anyio.Event()

    def __call__(self, name: str | None, _complete: bool) -> None:
        self.names.append(name)
        self.changed.set()

    async def until(self, name: str | None) -> None:
        """Wait until ``name`` is reported (``None``: a rescan) after the last ``clear``."""
        with anyio.fail_after(WAIT):
            while name not in self.names:
                self.changed = anyio.Event()
                await self.changed.wait()

    def clear(self) -> None:
        self.names.clear()


@asynccontextmanager
async def watching(path: Path) -> AsyncIterator[tuple[Seen, list[Event]]]:
    """A running FlatWatcher on ``path``; what it reported and the events it emitted."""
    bus = EventBus()
    seen = Seen()
    watcher = FlatWatcher(bus)
    watcher.add(path, seen)
    with bus.capture() as events:
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run)
            try:
                yield seen, events
            finally:
                tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_exchanged_directory_is_rearmed_without_degraded(tmp_path: Path) -> None:
    """A directory exchanged into place (a restore's swap) is watched at once, no watch.degraded."""
    live, staged = tmp_path / "data", tmp_path / "data.restore"
    live.mkdir()
    staged.mkdir()
    async with watching(live) as (seen, events):
        assert exchange(staged, live)
        os.rename(staged, tmp_path / "data_bak")
        await seen.until(None)
        seen.clear()
        (live / "maint").write_text("x")
        await seen.until("maint")
    actions = [e.action for e in events]
    assert "watch.degraded" not in actions and "watch.restored" not in actions


@pytest.mark.anyio
async def test_renamed_in_replacement_is_rearmed(tmp_path: Path) -> None:
    """Two renames (old away, new in) before the event is read also re-arm silently."""
    live, staged = tmp_path / "data", tmp_path / "data.restore"
    live.mkdir()
    staged.mkdir()
    async with watching(live) as (seen, events):
        os.rename(live, tmp_path / "data_bak")
        os.rename(staged, live)
        await seen.until(None)
        seen.clear()
        (live / "maint").write_text("x")
        await seen.until("maint")
    assert "watch.degraded" not in [e.action for e in events]


@pytest.mark.anyio
async def test_deleted_directory_is_still_reported(tmp_path: Path) -> None:
    """An operator deleting the directory gets watch.degraded naming it."""
    live = tmp_path / "data"
    live.mkdir()
    async with watching(live) as (seen, events):
        shutil.rmtree(live)
        await seen.until(None)
    degraded = [e for e in events if e.action == "watch.degraded"]
    assert len(degraded) == 1 and degraded[0].fields["directory"] == str(live)


def armed(directory: Path) -> tuple[FlatWatcher, list[tuple[str | None, bool]]]:
    calls: list[tuple[str | None, bool]] = []
    watcher = FlatWatcher(EventBus())
    watcher.add(directory, lambda name, complete: calls.append((name, complete)))
    watcher._open()
    watcher._arm_all()
    return watcher, calls


def test_one_change_of_one_name_reaches_the_callback_once(tmp_path: Path) -> None:
    """``touch`` (CREATE, then CLOSE_WRITE) read in one buffer is one call, marked complete;
    other names keep their own calls, in order."""
    watcher, calls = armed(tmp_path)
    assert watcher.inotify is not None
    (tmp_path / "maint").touch()
    (tmp_path / "other").write_text("x")
    os.rename(tmp_path / "other", tmp_path / "moved")
    watcher._readable(watcher.inotify.fd)
    assert calls == [("maint", True), ("other", True), ("moved", True)]
    watcher.inotify.close()


def test_a_vanished_directory_is_reported_and_rescanned(tmp_path: Path) -> None:
    """The watched directory removed: ``watch.degraded`` and a rescan call (name ``None``)."""
    folder = tmp_path / "data"
    folder.mkdir()
    watcher, calls = armed(folder)
    assert watcher.inotify is not None
    with watcher.bus.capture() as events:
        folder.rmdir()
        watcher._readable(watcher.inotify.fd)
    assert calls[-1] == (None, False)
    assert [e.action for e in events] == ["watch.degraded"]
    assert watcher.dirs[0].watch is None
    watcher.inotify.close()


def test_nothing_to_read_is_not_an_error(tmp_path: Path) -> None:
    """A spurious wake-up (nothing queued) reads nothing and calls nothing."""
    watcher, calls = armed(tmp_path)
    assert watcher.inotify is not None
    watcher._readable(watcher.inotify.fd)
    assert calls == []
    watcher.inotify.close()


def test_deleted_and_made_again_is_reported_and_restored_at_once(tmp_path: Path) -> None:
    """A directory deleted and made again before the watch reads it is still a deletion:
    ``watch.degraded``, then ``watch.restored`` right away, watching the new one."""
    folder = tmp_path / "data"
    folder.mkdir()
    watcher, calls = armed(folder)
    assert watcher.inotify is not None
    with watcher.bus.capture() as events:
        folder.rmdir()
        folder.mkdir()
        watcher._readable(watcher.inotify.fd)
        assert [e.action for e in events] == ["watch.degraded", "watch.restored"]
        calls.clear()
        (folder / "maint").touch()
        watcher._readable(watcher.inotify.fd)
    assert calls == [("maint", True)]
    watcher.inotify.close()
