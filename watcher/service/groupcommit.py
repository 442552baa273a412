"""Group commit: durable work that many tasks ask for, done in batches.

A burst (2000 triggers renamed into the spool at once) has many tasks each needing an fsync
before they may go on — the filing of ended jobs. :meth:`GroupCommit.add` puts the item in
the open batch. The task that opened it yields once (so the rest of this turn of the event
loop can join), waits for the commit before it to end, and commits the batch in a worker
thread: the event loop keeps serving meanwhile and everything that arrives during one commit
forms the next batch — for work that trickles in under load (jobs ending one by one in a
burst) — at the price of one thread hop for an item alone. (A trigger's ``started`` record
does not come here: the runner writes those of the jobs it starts together itself, before
their tasks exist.) Every task returns only once its item is committed, with the batch's
result, or raises the batch's ``OSError``. Nothing here is cancelled half-way: a commit,
once asked for, completes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

T = TypeVar("T")
R = TypeVar("R")


class _Batch(Generic[T, R]):
    def __init__(self) -> None:
        self.items: list[T] = []
        self.result: R | None = None
        self.error: OSError | None = None
        self.done = anyio.Event()


class GroupCommit(Generic[T, R]):
    """Commits items with ``commit(items)`` in a worker thread (so pure I/O, no events)."""

    def __init__(self, commit: Callable[[list[T]], R]) -> None:
        self._commit = commit
        self._open: _Batch[T, R] | None = None
        self._lock = anyio.Lock()

    @property
    def busy(self) -> bool:
        """Whether a batch is being committed now (in the worker thread)."""
        return self._lock.locked()

    async def add(self, item: T) -> R:
        """Commit ``item`` with the others of its batch; the batch's result."""
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            batch.items.append(item)
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # the rest of this turn joins
                async with self._lock:  # the commit before ours; ours grows meanwhile
                    self._open = None  # closed: later items open the next batch
                    try:
                        batch.result = await anyio.to_thread.run_sync(self._commit, batch.items)
                    except OSError as exc:
                        batch.error = exc
                    batch.done.set()
        else:
            batch.items.append(item)
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
        if batch.error is not None:
            raise OSError(batch.error.errno, batch.error.strerror)
        return batch.result  # type: ignore[return-value]  # reason: set with done, no error
