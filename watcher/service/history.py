"""The history writer: events and disk samples into ``<state>/history.db``, off the loop.

A tap on the bus (``EventBus.taps``, called synchronously by ``publish``), it only appends
each event to a list on the loop; the list is handed to a bounded queue (never waits: past
the bound it drops and counts) ``HAND_OVER`` seconds after its first event, or at once when
it holds ``BATCH`` events. Handing over per event would wake the worker thread on every
event, and that wake-up (GIL hand-off on 2 cores) sat on the maint file's path — the events
of one change are emitted together, so the thread now wakes once, well after their handlers
wrote them (issue 15). Without a running loop (tests, the CLI) an event is handed over at
once. One worker thread takes what is queued, inserts it in one transaction (WAL,
synchronous=NORMAL) and prunes by age and size now and then; once it has been idle
``RELEASE_IDLE`` seconds after writing ``RELEASE_AFTER`` rows or more (a burst), it releases
SQLite's page cache and trims the heap, so the burst's rows cost no memory after it. While
the disk is below the warn level (``writable()`` is false) it writes nothing, so history can
never fill the disk. ``close()`` flushes what is queued and stops the thread.
"""

from __future__ import annotations

import asyncio
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
from watcher.system import historydb, memory

QUEUE_SIZE = 20_000  # events queued or being written, at most
BATCH = 1_000
HAND_OVER = 0.2  # seconds from a batch's first event to handing it to the thread
PRUNE_EVERY = 60.0  # seconds between age/size prunes
PRUNE_ROWS = 2_000  # or after this many rows, so a burst cannot outgrow the bound for long
RELEASE_AFTER = 1_000  # rows written since the last release of SQLite's page cache …
RELEASE_IDLE = 0.5  # … and this many seconds without work: a burst is over, give it back
SAMPLE_EVERY = 60.0  # seconds between recorded disk samples (the guard samples more often)

_Item = Event | tuple[float, int, int]


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
        self._queue: queue.Queue[list[_Item] | None] = queue.Queue()
        self._batch: list[_Item] = []  # on the loop, not yet handed over
        self._timer: asyncio.TimerHandle | None = None
        self._idle = threading.Condition()
        self._pending = 0  # handed over and not yet written (bounded by QUEUE_SIZE)
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
        self._batch.append(item)
        if len(self._batch) >= BATCH:
            self._hand_over()
        elif len(self._batch) == 1:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._hand_over()
                return
            self._timer = loop.call_later(HAND_OVER, self._hand_over)

    def _hand_over(self) -> None:
        """Give the thread what was collected (one wake-up), or drop it past the bound."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        with self._idle:
            room = max(0, QUEUE_SIZE - self._pending)
            kept = batch[:room]
            self._pending += len(kept)
        self.dropped += len(batch) - len(kept)
        if kept:
            self._queue.put_nowait(kept)

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
        self._hand_over()
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
        unreleased = 0  # rows written since the connection's cache was last released
        while not stop:
            release_due = db is not None and unreleased >= RELEASE_AFTER
            try:
                lists = [self._queue.get(timeout=RELEASE_IDLE if release_due else None)]
            except queue.Empty:  # idle that long after a burst
                _release(db)
                unreleased = 0
                continue
            while sum(len(b) for b in lists if b) < BATCH:
                try:
                    lists.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in lists
            items = [i for b in lists if b for i in b]
            try:
                db = self._write(db, items)
                since_prune += len(items)
                unreleased += len(items)
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
                self._done(len(items))
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


def _release(db: sqlite3.Connection | None) -> None:
    """After a burst: give SQLite's page cache (up to 2 MB, kept in this thread's malloc
    arena) back to the system; the next write reads the pages it needs again."""
    if db is None:
        return
    with contextlib.suppress(sqlite3.Error):
        historydb.release_memory(db)
    memory.trim()
