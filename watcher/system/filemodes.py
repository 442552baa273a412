"""The modes of the files watcher creates: never writable by others (issue 11, item 4).

``restrict_umask`` adds ``o-w`` to the process umask when a command starts, so every file
and directory made later (by watcher, SQLite, or a job's command, which inherits the umask)
is without the bit even when the service was started with ``umask 000``; group bits are
left as the operator set them. Copies that take their mode from a source (backup, restore,
archive) pass it through ``without_world_write``.
"""

from __future__ import annotations

import os

WORLD_WRITE = 0o002


def restrict_umask() -> int:
    """Add ``o-w`` to the process umask; returns the umask as it was."""
    old = os.umask(WORLD_WRITE)
    os.umask(old | WORLD_WRITE)
    return old


def without_world_write(mode: int) -> int:
    """``mode`` without the ``o+w`` bit."""
    return mode & ~WORLD_WRITE


def chmod_copied(path: os.PathLike[str] | str) -> None:
    """Clear ``o+w`` on a file whose mode was copied from a source (``shutil.copystat``)."""
    mode = os.lstat(path).st_mode
    if mode & WORLD_WRITE:
        os.chmod(path, without_world_write(mode & 0o7777))
