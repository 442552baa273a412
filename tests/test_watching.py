"""FlatWatcher on a real directory: a swapped-in replacement re-armed silently, not a deletion."""

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

pytestmark = pytest.mark.anyio


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


async def test_deleted_directory_is_still_reported(tmp_path: Path) -> None:
    """An operator deleting the directory gets watch.degraded naming it."""
    live = tmp_path / "data"
    live.mkdir()
    async with watching(live) as (seen, events):
        shutil.rmtree(live)
        await seen.until(None)
    degraded = [e for e in events if e.action == "watch.degraded"]
    assert len(degraded) == 1 and degraded[0].fields["directory"] == str(live)
