"""Line sources the latency benchmarks wait on, and the clock that times them.

Two kinds: a file another process appends to (woken by inotify ``IN_MODIFY`` on that
file, never by polling) and a pipe from a child process. Both are non-blocking and
report only complete lines, so ``wait_for`` can ``poll`` them together and stamp the
moment a line became readable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

IN_MODIFY = 0x00000002
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

_HANG_UP = select.POLLHUP | select.POLLERR | select.POLLNVAL

Match = Callable[[bytes], bool]


class LineSource(Protocol):
    """Something ``poll`` can wait on that yields complete lines."""

    def fileno(self) -> int: ...

    def read_lines(self) -> list[bytes]: ...


class _Lines:
    """Splits a byte stream into complete lines, keeping the unfinished tail."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        *complete, self.partial = (self.partial + data).split(b"\n")
        return complete


class FileTail:
    """Lines appended to ``path`` from now on, with an inotify descriptor to wait on."""

    def __init__(self, path: Path) -> None:
        self.notify_fd: int = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.notify_fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if _libc.inotify_add_watch(self.notify_fd, os.fsencode(path), IN_MODIFY) < 0:
            os.close(self.notify_fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {path}")
        self.file_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        os.lseek(self.file_fd, 0, os.SEEK_END)
        self._lines = _Lines()

    def fileno(self) -> int:
        return self.notify_fd

    def read_lines(self) -> list[bytes]:
        """Clear the pending notifications, then read what was appended."""
        _read_available(self.notify_fd)
        return self._lines.feed(_read_to_eof(self.file_fd))

    def close(self) -> None:
        os.close(self.notify_fd)
        os.close(self.file_fd)


class PipeLines:
    """Lines from a child's pipe, read without blocking."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._lines = _Lines()

    def fileno(self) -> int:
        return self.fd

    def read_lines(self) -> list[bytes]:
        return self._lines.feed(_read_available(self.fd))


def _read_available(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                break
            raise
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _read_to_eof(fd: int) -> bytes:
    chunks: list[bytes] = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def drain(*sources: LineSource) -> None:
    """Discard whatever the sources have ready, so the next wait sees only new lines."""
    for source in sources:
        source.read_lines()


def wait_for(
    watched: Mapping[str, tuple[LineSource, Match]],
    started_ns: int,
    timeout: float,
    matched: dict[str, bytes] | None = None,
) -> dict[str, float | None]:
    """Milliseconds from ``started_ns`` until each source showed a matching line.

    ``None`` for a source that showed none within ``timeout`` seconds (a miss). When
    ``matched`` is given, the first matching line of each source is put in it.
    """
    found: dict[str, float | None] = dict.fromkeys(watched)
    by_fd = {source.fileno(): name for name, (source, _) in watched.items()}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = started_ns + int(timeout * 1e9)
    while by_fd:
        left_ms = (deadline - time.perf_counter_ns()) / 1e6
        if left_ms <= 0:
            break
        for fd, event in poller.poll(max(1, int(left_ms))):
            name = by_fd[fd]
            source, match = watched[name]
            lines = source.read_lines()
            now = time.perf_counter_ns()
            hit = next((line for line in lines if match(line)), None)
            if hit is not None:
                found[name] = (now - started_ns) / 1e6
                if matched is not None:
                    matched[name] = hit
            elif not event & _HANG_UP:
                continue  # lines, but not the one we wait for
            poller.unregister(fd)  # found, or the writer is gone: stop waiting on it
            del by_fd[fd]
    return found


def contains(marker: bytes) -> Match:
    """A matcher for lines that contain ``marker``."""
    return lambda line: marker in line


def equals(expected: bytes) -> Match:
    """A matcher for lines that are exactly ``expected``."""
    return lambda line: line.strip() == expected
