"""Disk sampling: a ``statvfs`` reading of the data dir's filesystem, and its type.

:func:`sample` reads ``statvfs`` (the service calls it directly for local filesystems, where
it returns at once); :func:`sample_with_timeout` runs it in a worker thread with a timeout,
so that a hung network mount cannot hang the service. What a reading means is decided by the
pure :mod:`watcher.core.disklevels`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import psutil  # type: ignore[import-untyped]  # reason: types-psutil is not a dependency

from watcher.core.disklevels import Reading

# Remote or user-space filesystems, whose statvfs can hang; FUSE and SMB variants by prefix.
_NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "sshfs", "9p", "glusterfs", "ceph", "afs", "lustre"}
    | {"gpfs", "beegfs", "davfs", "fuse", "fuseblk"}
)
_NETWORK_PREFIXES = ("smb", "fuse.")


def sample(path: Path) -> Reading:
    """A reading of the filesystem holding ``path``; may block on a hung mount."""
    st = os.statvfs(path)
    has_inodes = st.f_files > 0
    return Reading(
        free=st.f_bavail * st.f_frsize,
        total=st.f_blocks * st.f_frsize,
        inodes_free=st.f_favail if has_inodes else None,
        inodes_total=st.f_files if has_inodes else None,
    )


async def sample_with_timeout(
    path: Path,
    timeout: float,  # noqa: ASYNC109  reason: bounds a thread that is abandoned, not cancelled
    sampler: Callable[[Path], Reading] = sample,
    *,
    in_flight: threading.Lock | None = None,
) -> Reading | None:
    """A reading taken in a worker thread, or ``None`` when it takes longer than ``timeout``.

    A late thread is abandoned, not waited for. Pass the same ``in_flight`` lock on every call
    to keep at most one thread stuck on a hung mount: while one holds it, later calls return
    ``None`` at once instead of leaving another thread behind.
    """
    with anyio.move_on_after(timeout):
        return await anyio.to_thread.run_sync(
            _sample_guarded, sampler, path, in_flight, abandon_on_cancel=True
        )
    return None


def filesystem_type(path: Path) -> str:
    """The type (``"ext4"``, ``"nfs4"``…) of the mount holding ``path``, or ``"unknown"``.

    Resolves ``path`` (following symlinks), so call it once at start-up, not on each sample.
    """
    target = Path(path).resolve()
    best, fstype = -1, "unknown"
    for part in psutil.disk_partitions(all=True):
        mount = Path(part.mountpoint)
        if (mount == target or mount in target.parents) and len(mount.parts) > best:
            best, fstype = len(mount.parts), part.fstype
    return fstype


def is_network_fs(fstype: str) -> bool:
    """Whether a filesystem type is remote or user-space (NFS, SMB, FUSE…), which may hang."""
    name = fstype.lower()
    return name in _NETWORK_FS or name.startswith(_NETWORK_PREFIXES)


def _sample_guarded(
    sampler: Callable[[Path], Reading], path: Path, in_flight: threading.Lock | None
) -> Reading | None:
    """Run ``sampler`` unless another thread still holds ``in_flight`` (then ``None``)."""
    if in_flight is None:
        return sampler(path)
    if not in_flight.acquire(blocking=False):
        return None
    try:
        return sampler(path)
    finally:
        in_flight.release()
