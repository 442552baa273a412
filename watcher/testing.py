"""Test helpers shipped with watcher, like ``structlog.testing.capture_logs``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from watcher.events.bus import EventBus
from watcher.events.record import Event


@contextmanager
def capture_events(bus: EventBus) -> Iterator[list[Event]]:
    """Collect every event ``bus`` emits inside the block, in order, as they are emitted."""
    with bus.capture() as captured:
        yield captured
