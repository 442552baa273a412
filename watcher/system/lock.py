"""One instance per data directory: an ``flock`` on ``<state>/lock`` holding the owner's pid.

The kernel drops the lock when the process dies, so a crash never leaves a stale lock.
The CLI uses the same lock to tell whether the service runs, and takes it briefly to
write state itself when it does not.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path


class AlreadyRunning(Exception):
    """Another process holds the lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"watcher is already running for this data directory ({who}, lock {path})")
        self.pid = pid


class InstanceLock:
    """An exclusive, non-blocking lock; ``acquire`` raises ``AlreadyRunning``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, *, record_pid: bool = True, patience: float = 0.0) -> None:
        """Take the lock; ``patience`` seconds of retrying ride out a CLI command that holds
        it for a moment (``status``, or ``enter`` while the service is down)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                raise AlreadyRunning(self.path, read_pid(self.path)) from None
        if record_pid:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                # A full disk must not stop the service that guards it; the lock still holds.
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire(record_pid=False)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def read_pid(path: Path) -> int | None:
    """The pid recorded in a lock file, if any."""
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def running_pid(path: Path) -> int | None:
    """The pid of the running service for this lock, or ``None`` when none runs."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(path) or -1
    finally:
        os.close(fd)
    return None
