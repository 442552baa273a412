"""The flat-directory watch: events read from a real inotify instance, one buffer at a time."""

from __future__ import annotations

import os
from pathlib import Path

from watcher.events.bus import EventBus
from watcher.sources.watching import FlatWatcher


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
