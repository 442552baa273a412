"""History: the SQLite writer (bounded, off the loop, silent below the warn level) and
``watcher history`` reading what a real service recorded."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import WAIT, Start, cli, maint, write_config
from watcher.config import HistoryConfig
from watcher.core.timeline import intervals
from watcher.events.record import Event, Origin
from watcher.service.history import RELEASE_AFTER, HistoryWriter
from watcher.system import historydb


def _writer(path: Path, config: HistoryConfig, writable: bool = True) -> HistoryWriter:
    writer = HistoryWriter(path, lambda: config, Origin(data_dir="/d"), lambda: writable)
    writer.start()
    return writer


def _close(writer: HistoryWriter) -> None:
    writer._queue.put(None)
    writer._thread.join(WAIT)


def test_history_stays_under_its_size_bound(tmp_path: Path) -> None:
    """20k events into a 256 KiB history leave a file that stays near the bound, newest kept."""
    path = tmp_path / "history.db"
    writer = _writer(path, HistoryConfig(max_size=256 * 1024))
    for i in range(20_000):
        writer(Event("fs.changed", f"event {i} " + "x" * 200, sequence=i + 1))
    assert writer.wait_idle(WAIT)
    assert path.stat().st_size < 4 * 1024**2  # pruned during the burst, not only at the end
    db = historydb.connect(path, write=True)
    historydb.prune(db, older_than=0, max_size=256 * 1024)
    assert historydb.size(db) <= 256 * 1024
    rows = historydb.events(db, since=0, limit=1)
    assert rows[-1].message.startswith("event 19999")
    db.close()
    _close(writer)


def test_history_releases_its_cache_once_idle_after_a_burst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a burst of RELEASE_AFTER events the idle writer releases SQLite's page cache
    once, and writes what comes next as before."""
    released = threading.Event()
    calls: list[int] = []
    real = historydb.release_memory

    def spy(db: sqlite3.Connection) -> None:
        real(db)
        calls.append(1)
        released.set()

    monkeypatch.setattr(historydb, "release_memory", spy)
    path = tmp_path / "history.db"
    writer = _writer(path, HistoryConfig())
    for i in range(RELEASE_AFTER):
        writer(Event("fs.changed", f"burst {i}", sequence=i + 1))
    assert released.wait(WAIT)
    writer(Event("fs.changed", "after the burst", sequence=RELEASE_AFTER + 1))
    assert writer.wait_idle(WAIT)
    _close(writer)
    assert calls == [1]
    db = historydb.connect(path, write=True)
    assert historydb.events(db, since=0, limit=1)[-1].message == "after the burst"
    db.close()


def test_history_prunes_by_age(tmp_path: Path) -> None:
    """Rows older than max_age are deleted by a prune."""
    db = historydb.connect(tmp_path / "h.db", write=True)
    now = time.time()
    old, new = (now - 100, "a.old", "info", "old", b"{}"), (now, "a.new", "info", "new", b"{}")
    historydb.insert(db, [old, new])
    historydb.prune(db, older_than=now - 50, max_size=10**9)
    assert [r.action for r in historydb.events(db, since=0)] == ["a.new"]


def test_history_writes_nothing_below_the_warn_level(tmp_path: Path) -> None:
    """While the disk is not ok the writer only counts what it skipped."""
    path = tmp_path / "history.db"
    writer = _writer(path, HistoryConfig(), writable=False)
    writer(Event("maintenance.entered", "in", sequence=1))
    assert writer.wait_idle(WAIT)
    assert writer.skipped == 1 and not path.exists()
    _close(writer)


def test_history_queue_is_bounded(tmp_path: Path) -> None:
    """With the thread not started, events past the queue size are dropped and counted."""
    writer = HistoryWriter(tmp_path / "h.db", HistoryConfig, Origin(data_dir="/d"))
    for i in range(20_005):
        writer(Event("fs.changed", "e", sequence=i + 1))
    assert writer.dropped == 5


@pytest.mark.parametrize(
    ("changes", "active_now", "expected"),
    [
        ([], False, []),
        ([], True, [(0.0, 100.0)]),
        ([(10.0, True), (20.0, False)], False, [(10.0, 20.0)]),
        ([(30.0, False)], False, [(0.0, 30.0)]),
        ([(90.0, True)], True, [(90.0, 100.0)]),
        ([(10.0, True), (20.0, True), (40.0, False)], False, [(10.0, 40.0)]),
    ],
)
def test_timeline_intervals(
    changes: list[tuple[float, bool]], active_now: bool, expected: list[tuple[float, float]]
) -> None:
    """Maintenance spans over [0, 100] follow the event stream's states."""
    assert intervals(changes, 0.0, 100.0, active_now) == expected


def test_watcher_history_reads_what_the_service_recorded(data_dir: Path, service: Start) -> None:
    """A maint file flip is in `watcher history --action 'maintenance.*' --json` after a stop."""
    proc = service()
    maint(data_dir).touch()
    proc.wait_for("maintenance.entered")
    assert proc.stop() == 0
    out = cli("history", "--action", "maintenance.*", "--json", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    actions = [json.loads(line)["event"]["action"] for line in out.stdout.splitlines()]
    assert "maintenance.entered" in actions and all(a.startswith("maintenance.") for a in actions)
    text = cli("history", "--since", "1h", data_dir=data_dir)
    assert "service.started" in text.stdout


def test_watcher_history_bad_input_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    """No history file, or a bad --since: a one-line error and exit 1, no traceback."""
    out = cli("history", data_dir=data_dir)
    assert out.returncode == 1 and "no history file" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1
    config = write_config(tmp_path / "w.toml", f'data_dir = "{data_dir}"\n')
    out = cli("history", "--since", "soon", config=config)
    assert out.returncode == 1 and "--since" in out.stderr
