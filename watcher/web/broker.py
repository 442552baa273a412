"""The SSE broker: a bus tap fanning events out to the status page's open streams.

Apart from ``watcher.web.app`` so that the service can install it without importing the
HTTP server (aiohttp is imported only when ``[http] listen`` is set: it costs ~20 MB and
~0.1 s of start-up otherwise).
"""

from __future__ import annotations

import asyncio

import anyio
import orjson

from watcher.events.record import Event


class Broker:
    """A bus handler fanning events out to the open SSE streams (dropping for slow readers)."""

    def __init__(self) -> None:
        self.streams: set[asyncio.Queue[bytes]] = set()
        self.changed = anyio.Event()

    def __call__(self, event: Event) -> None:
        """A bus tap: hand the event to every open stream; never blocks."""
        if not self.streams:
            return
        data = orjson.dumps(
            {
                "action": event.action,
                "level": event.level,
                "message": event.message,
                "time": event.time.timestamp(),
            }
        )
        for stream in self.streams:
            try:
                stream.put_nowait(data)
            except asyncio.QueueFull:
                pass  # a stalled reader misses events; it re-fetches the page on the next one

    def _opened(self, stream: asyncio.Queue[bytes]) -> None:
        self.streams.add(stream)
        self.changed.set()
        self.changed = anyio.Event()
