"""The history writer: events and disk samples into ``<state>/history.db``, off the loop.

A tap on the bus (``EventBus.taps``, called synchronously by ``publish``), it only puts
each event on a bounded queue (never waits: a full queue drops and counts); one worker
thread takes what is queued, inserts it in one transaction (WAL, synchronous=NORMAL) and
prunes by age and size now and then. While
the disk is below the warn level (``writable()`` is false) it writes nothing, so history can
never fill the disk. ``close()`` flushes what is queued and stops the thread.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from watcher.config import HistoryConfig
from watcher.events.record import Event, Origin, render_json
from watcher.system import historydb

QUEUE_SIZE = 20_000
BATCH = 1_000
PRUNE_EVERY = 60.0  # seconds between age/size prunes
PRUNE_ROWS = 2_000  # or after this many rows, so a burst cannot outgrow the bound for long
SAMPLE_EVERY = 60.0  # seconds between recorded disk samples (the guard samples more often)

_Item = Event | tuple[float, int, int] | None


class HistoryWriter:
    """A bus handler that records events (and ``sample()`` disk readings) in SQLite."""

    def __init__(
        self,
        path: Path,
        config: Callable[[], HistoryConfig],
        origin: Origin,
        writable: Callable[[], bool] = lambda: True,
    ) -> None:
        self.path = path
        self.config = config
        self.origin = origin
        self.writable = writable
        self.dropped = 0  # queue full
        self.skipped = 0  # not written: disk below warn
        self.written = 0
        self.failure: str | None = None
        self._queue: queue.Queue[_Item] = queue.Queue(QUEUE_SIZE)
        self._idle = threading.Condition()
        self._pending = 0
        self._last_sample = 0.0
        self._thread = threading.Thread(target=self._work, name="history", daemon=True)

    def start(self) -> None:
        """Start the writer thread (events queued before are kept)."""
        self._thread.start()

    def __call__(self, event: Event) -> None:
        """A bus tap: queue the event (rendered in the thread); never blocks."""
        self._put(event)

    def sample(self, free: int, total: int) -> None:
        """Record a disk reading, at most one a minute (called from the loop; never blocks)."""
        now = time.time()
        if now - self._last_sample < SAMPLE_EVERY:
            return
        self._last_sample = now
        self._put((now, free, total))

    def _put(self, item: _Item) -> None:
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            self._done(1)

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            if self._pending == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until everything queued so far is written (tests, shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    async def aclose(self) -> None:
        """Flush what is queued, then stop the thread (called when the bus closes)."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        await anyio.to_thread.run_sync(self._thread.join, 10.0)

    # --- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        db: sqlite3.Connection | None = None
        last_prune = 0.0
        since_prune = 0
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            items = [i for i in batch if i is not None]
            try:
                db = self._write(db, items)
                since_prune += len(items)
                due = time.monotonic() - last_prune > PRUNE_EVERY or since_prune >= PRUNE_ROWS
                if db is not None and due:
                    last_prune, since_prune = time.monotonic(), 0
                    cfg = self.config()
                    historydb.prune(db, older_than=time.time() - cfg.max_age, max_size=cfg.max_size)
            except (sqlite3.Error, OSError) as exc:
                self.failure = f"{type(exc).__name__}: {exc}"
                if db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        db.close()
                db = None
            finally:
                self._done(len(batch))
        if db is not None:
            db.close()

    def _write(
        self, db: sqlite3.Connection | None, items: Sequence[_Item]
    ) -> sqlite3.Connection | None:
        if not items:
            return db
        if not self.writable():
            self.skipped += len(items)
            return db
        if db is None:
            db = historydb.connect(self.path, write=True)
        events = [
            (e.time.timestamp(), e.action, e.level, e.message, render_json(e, self.origin))
            for e in items
            if isinstance(e, Event)
        ]
        samples = [i for i in items if isinstance(i, tuple)]
        historydb.insert(db, events, samples)
        self.written += len(items)
        self.failure = None
        return db
