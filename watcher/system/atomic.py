"""Crash-safe file replacement: temp file in the same directory, fsync, rename, fsync the dir.

``durable=False`` skips the fsyncs (still atomic for readers, and against a process crash,
not against power loss): for writes whose loss a restart would simply redo.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from pathlib import Path

_LIBC = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def write_atomic(
    path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True
) -> os.stat_result:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix."""
    tmp, stat = _write_temp(path, data, mode, durable)
    try:
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return stat


def rewrite_existing(
    path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True
) -> os.stat_result | None:
    """Replace ``path``'s content atomically, but only while it exists: ``None`` when it was
    removed meanwhile, which is then left as it is (someone else's removal is not undone).

    The new version is swapped in with ``RENAME_EXCHANGE``, which fails rather than create
    the file; where the filesystem cannot exchange, a check right before a plain rename is
    the best there is.
    """
    tmp, stat = _write_temp(path, data, mode, durable)
    try:
        try:
            swapped = exchange(tmp, path)
        except FileNotFoundError:
            return None
        if not swapped:
            if not os.path.lexists(path):
                return None
            os.rename(tmp, path)
        if durable:
            fsync_dir(path.parent)
        return stat
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # after an exchange: the old version


def create_new(
    path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True
) -> os.stat_result | None:
    """Create ``path`` with ``data``, complete from its first instant, unless it exists:
    ``None`` when someone else created it meanwhile (their file is left as it is)."""
    tmp, stat = _write_temp(path, data, mode, durable)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    if durable:
        fsync_dir(path.parent)
    return stat


def _write_temp(path: Path, data: bytes, mode: int, durable: bool) -> tuple[Path, os.stat_result]:
    """The data in a temp file beside ``path``; never left behind when writing fails (it
    would take space on a full disk)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
            return tmp, os.fstat(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_durably(path: Path, *, durable: bool = True) -> bool:
    """Unlink ``path`` and fsync its directory; ``False`` when it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if durable:
        fsync_dir(path.parent)
    return True


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (``renameat2(RENAME_EXCHANGE)``); ``False`` where the OS or
    filesystem cannot. Raises ``FileNotFoundError`` when either is missing."""
    fn = getattr(_LIBC, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding ``path`` to disk (``syncfs``; ``sync`` where missing)."""
    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
