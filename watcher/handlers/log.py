"""The ``log`` handler: one JSON line per event (or a readable line on a terminal).

Writes go straight to the file descriptor with one ``os.write`` per event, so a
line is never torn and a log shipper tailing the file sees whole lines. A file target
is opened in append mode and reopened by ``reopen()`` (SIGHUP), so rotation by rename
loses nothing: lines go to the old file until the reopen, then to the new one.

A pipe (stdout read by journald, a shell pipe) is made non-blocking: when its reader
stalls, the handler waits for the pipe to drain without holding the event loop, and the
bus's per-event timeout turns a reader that never comes back into ``handler.failed``
instead of a frozen service. A line of up to ``PIPE_BUF`` (4 KiB) is still written whole.

``deliver_now`` lets the bus write a line at the moment the event is emitted (when nothing
is queued ahead of it; ``write_now`` the same for a line rendered ahead from ``template``):
a regular file or terminal takes it at once, a pipe only when the
whole line fits (a write of up to ``PIPE_BUF`` to a non-blocking pipe is all or nothing).
Anything else goes through the handler's task as above.
"""

from __future__ import annotations

import os
import select
import stat
import sys

import anyio

from watcher.config import HandlerConfig
from watcher.events.record import Event, Origin, render_console, render_json
from watcher.events.template import LineTemplate


class LogHandler:
    """JSON lines to stdout or a file; console format when stdout is a terminal."""

    def __init__(self, config: HandlerConfig, origin: Origin) -> None:
        self.origin = origin
        self.target = config.target
        self.fd = -1
        self.pipe = False
        self._open()
        console = config.format == "console" or (
            config.format == "auto" and self.target == "stdout" and os.isatty(self.fd)
        )
        self.console = console
        self.colour = console and os.isatty(self.fd)

    def _open(self) -> None:
        if self.target == "stdout":
            self.fd = sys.stdout.fileno()
            self.pipe = stat.S_ISFIFO(os.fstat(self.fd).st_mode)
            if self.pipe:
                os.set_blocking(self.fd, False)
        else:
            self.fd = os.open(
                self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640
            )

    def render(self, event: Event) -> bytes:
        if self.console:
            return render_console(event, self.origin, self.colour).encode() + b"\n"
        return render_json(event, self.origin) + b"\n"

    async def __call__(self, event: Event) -> None:
        line = self.render(event)
        while line:
            try:
                written = os.write(self.fd, line)
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
                continue
            line = line[written:]

    def template(self, event: Event, late: tuple[str, ...]) -> LineTemplate | None:
        """The event's JSON line rendered ahead (``EventBus.prepare``); none on a terminal."""
        return None if self.console else LineTemplate.of(event, self.origin, late)

    def deliver_now(self, event: Event) -> bool:
        """Write the event's line now if that cannot wait; ``True`` when it is written."""
        return self.write_now(self.render(event))

    def write_now(self, line: bytes) -> bool:
        """Write a rendered line now if that cannot wait; ``True`` when it is written."""
        if self.pipe and len(line) > select.PIPE_BUF:
            return False
        try:
            written = os.write(self.fd, line)
        except BlockingIOError:
            return False  # a full pipe: nothing was written
        while written < len(line):  # a file or terminal: the rest does not wait either
            written += os.write(self.fd, line[written:])
        return True

    def reopen(self) -> None:
        """Reopen a file target (after rotation); stdout stays as it is."""
        if self.target == "stdout":
            return
        old = self.fd
        self._open()
        os.close(old)

    async def aclose(self) -> None:
        if self.target != "stdout" and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
