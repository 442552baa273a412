"""Space accounting for the jobs' pre-flight checks (DESIGN §4 "Space pre-flight")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from watcher.jobs.base import JobFailed


def free_bytes(path: Path) -> int:
    """Bytes available to unprivileged users on the filesystem holding ``path`` (``f_bavail``)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def tree_size(path: Path) -> int:
    """Apparent size in bytes of every regular file under ``path`` (0 when it does not exist)."""
    total = 0
    if path.is_file():
        return path.stat().st_size
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):  # one lstat a file: symlinks are not counted
                total += st.st_size
    return total


def require_space(needed: int, where: Path, what: str) -> None:
    """Raise ``JobFailed(reason="insufficient_space")`` with the numbers unless ``needed`` fits."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = free_bytes(probe)
    if free < needed:
        raise JobFailed(
            "insufficient_space",
            f"{what} needs {needed} bytes free on {probe}, only {free} available",
            needed=needed,
            free=free,
            path=str(probe),
        )
