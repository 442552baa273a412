"""File sets with a manifest: hashing copies, the manifest itself, its verification, progress.

A backup set and an archive (``mw/back<ID>``) each carry ``manifest.json`` at their root::

    {"version": 1, "created": "2026-11-26T04:50:43Z", "kind": "backup" | "archive",
     "files": [{"path": "mw/data/x.db", "size": 8192, "sha256": "…", "mode": 420}],
     "total_bytes": 8192}

``path`` is POSIX, relative to the root, never absolute and never with ``..``; ``mode`` is
the permission bits as an integer (``0o644`` is stored as ``420``), recorded for the record
and not verified (an archive is made read-only after its manifest is written).

Extra files are problems: ``verify_manifest`` reports any file (or symlink) under the root that
the manifest does not list (other than the manifest). A set is complete and immutable once
written; a file that appeared later means it was altered (for instance a database opened
in place, which leaves ``-wal``/``-shm`` files) and a restore would otherwise carry
unverified bytes into live data.

The small helpers the built-in jobs share (argument checks, throttled progress,
cancellation, tree removal) sit at the end of this module for now; they belong in a
``watcher/jobs`` helper module of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from watcher.jobs.base import ArgumentError, JobFailed, Progress
from watcher.system.atomic import write_atomic
from watcher.system.filemodes import without_world_write

MANIFEST_NAME = "manifest.json"
VERSION = 1
#: Copy/hash buffer: large enough that per-call overhead vanishes, small enough to stay in cache.
BUFFER_SIZE = 1 << 20

Kind = Literal["backup", "archive"]


@dataclass(frozen=True)
class Entry:
    """One file of a set: where it is, how big, its SHA-256 and its permission bits."""

    path: str
    size: int
    sha256: str
    mode: int


class ManifestError(Exception):
    """The manifest is missing, unreadable or not a version-1 manifest."""


def hash_file(
    path: str | os.PathLike[str], *, stop: threading.Event | None = None
) -> tuple[int, str]:
    """Size and SHA-256 hex digest of ``path``, read once in large chunks.

    A set ``stop`` ends the reading between chunks with ``JobFailed("cancelled")``.
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as src:
        # sized to the file: a fresh 1 MiB buffer per small attachment was most of the cost
        buf = bytearray(min(BUFFER_SIZE, max(os.fstat(src.fileno()).st_size + 1, 1 << 16)))
        view = memoryview(buf)
        while n := src.readinto(buf):
            if stop is not None:
                raise_if_cancelled(stop, f"hashing {path}")
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()


def copy_hashed(
    src: Path,
    dst: Path,
    meta: os.stat_result | None = None,
    unless: bytes = b"",
    *,
    stop: threading.Event | None = None,
) -> tuple[int, str] | None:
    """Copy ``src`` to a new file ``dst`` reading it once; return its size and SHA-256.

    With ``meta`` (``src``'s stat), permission bits, times, extended attributes and (as
    root) ownership are copied too, all through the open files. When ``src`` starts with
    ``unless``, nothing is created and the result is ``None``. A set ``stop`` ends the copy
    between chunks with ``JobFailed("cancelled")``, leaving ``dst`` partly written.
    """
    buf = bytearray(BUFFER_SIZE)
    view = memoryview(buf)
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        n = os.readv(sfd, [buf])
        if unless and n >= len(unless) and view[: len(unless)] == unless:
            return None
        digest, size = hashlib.sha256(), 0
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while n:
                if stop is not None:
                    raise_if_cancelled(stop, f"copy of {src}")
                digest.update(view[:n])
                _write_all(dfd, view[:n])
                size += n
                n = os.readv(sfd, [buf])
            if meta is not None:
                copy_meta_fd(sfd, dfd, meta)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    return size, digest.hexdigest()


def copy_meta_fd(sfd: int, dfd: int, meta: os.stat_result) -> None:
    """Extended attributes, owner (as root), permission bits and times from ``meta``."""
    for name in os.listxattr(sfd):
        with contextlib.suppress(OSError):  # like shutil.copystat: unsupported or forbidden
            os.setxattr(dfd, name, os.getxattr(sfd, name))
    if os.geteuid() == 0:
        os.fchown(dfd, meta.st_uid, meta.st_gid)
    os.fchmod(dfd, without_world_write(stat.S_IMODE(meta.st_mode)))
    os.utime(dfd, ns=(meta.st_atime_ns, meta.st_mtime_ns))


def _write_all(fd: int, data: memoryview) -> None:
    """Write every byte of ``data`` (``os.write`` may write less than asked)."""
    while data:
        data = data[os.write(fd, data) :]


def entry_for(root: Path, path: Path, size: int, sha256: str, mode: int) -> Entry:
    """The manifest entry for ``path`` (which lies under ``root``)."""
    return Entry(
        path.relative_to(root).as_posix(), size, sha256, without_world_write(mode & 0o7777)
    )


def write_manifest(
    root: Path, entries: Iterable[Entry], kind: Kind = "backup", created: datetime | None = None
) -> Path:
    """Write ``root/manifest.json`` atomically (temp file, fsync, rename, fsync the dir)."""
    files = sorted(entries, key=lambda e: e.path)
    when = (created or datetime.now(UTC)).astimezone(UTC)
    head = {
        "version": VERSION,
        "created": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "kind": kind,
    }
    target = root / MANIFEST_NAME
    write_atomic(target, _render(head, files, sum(e.size for e in files)).encode())
    return target


def _render(head: Mapping[str, Any], files: list[Entry], total: int) -> str:
    """The manifest as JSON with one file record a line (readable, diffable, and rendered
    by the C encoder: ``indent`` would make ``json`` use its pure-Python one)."""
    records = "".join(
        f"\n  {json.dumps({'path': e.path, 'size': e.size, 'sha256': e.sha256, 'mode': e.mode})},"
        for e in files
    )
    fields = "".join(f"\n {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items())
    listed = f"[{records[:-1]}\n ]" if records else "[]"
    return f'{{{fields}\n "files": {listed},\n "total_bytes": {total}\n}}\n'


def read_manifest(root: Path) -> tuple[str, list[Entry]]:
    """The kind and entries of ``root``'s manifest; ``ManifestError`` saying what is wrong."""
    try:
        doc = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {root}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{MANIFEST_NAME} unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ManifestError(f"{MANIFEST_NAME} is not a version-{VERSION} manifest")
    if doc.get("kind") not in ("backup", "archive") or not isinstance(doc.get("files"), list):
        raise ManifestError(f"{MANIFEST_NAME} lacks a valid kind or file list")
    return str(doc["kind"]), [_parse_entry(item) for item in doc["files"]]


def _parse_entry(item: object) -> Entry:
    """One manifest file record, checked for types and a safe relative path."""
    if not isinstance(item, dict):
        raise ManifestError("a file record is not an object")
    path, size, sha, mode = (item.get(k) for k in ("path", "size", "sha256", "mode"))
    if not (isinstance(path, str) and isinstance(size, int) and isinstance(sha, str)):
        raise ManifestError(f"file record {item!r} lacks path, size or sha256")
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or path == MANIFEST_NAME:
        raise ManifestError(f"file record has an unsafe path {path!r}")
    return Entry(path, size, sha, mode if isinstance(mode, int) else 0)


def set_files(root: Path) -> Iterator[Path]:
    """Every non-directory under ``root`` except the manifest (symlinks included, not followed)."""
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if path != root / MANIFEST_NAME:
                yield path


def verify_manifest(root: Path, *, content: bool = True) -> list[str]:
    """Problems found comparing ``root`` with its manifest (empty: the set is intact).

    Checks that every listed file exists as a regular file with the recorded size and, when
    ``content``, the recorded SHA-256; any unlisted file is a problem too.
    """
    try:
        _kind, entries = read_manifest(root)
    except ManifestError as exc:
        return [str(exc)]
    listed = {e.path for e in entries}
    problems = [p for e in entries if (p := _check_entry(root, e, content))]
    for path in set_files(root):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            problems.append(f"extra file: {rel}")
    return problems


def _check_entry(root: Path, entry: Entry, content: bool) -> str:
    """The problem with one listed file, or ``""``."""
    path = root / entry.path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        return f"missing: {entry.path}"
    size = st.st_size
    if size != entry.size:
        return f"size mismatch: {entry.path} (manifest {entry.size}, found {size})"
    if content and hash_file(path)[1] != entry.sha256:
        return f"hash mismatch: {entry.path}"
    return ""


def raise_if_cancelled(cancelled: threading.Event, what: str) -> None:
    """Raise ``JobFailed("cancelled")`` when the job has been asked to stop."""
    if cancelled.is_set():
        raise JobFailed("cancelled", f"{what} cancelled")


class Meter:
    """Counts files and bytes and reports ``Progress`` at most every ``interval`` seconds."""

    def __init__(
        self,
        report: Callable[[Progress], None],
        files_total: int = 0,
        bytes_total: int = 0,
        message: str = "",
        interval: float = 0.1,
    ) -> None:
        self._report = report
        self._interval = interval
        self._last = time.monotonic()
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.message = message
        self.files = 0
        self.bytes = 0

    def add(self, files: int = 1, nbytes: int = 0) -> None:
        """Count work done; report when the last report is old enough."""
        self.files += files
        self.bytes += nbytes
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self.flush()

    def flush(self) -> None:
        """Report the current counts now."""
        self._report(
            Progress(self.files, self.files_total, self.bytes, self.bytes_total, self.message)
        )


def reject_unknown(args: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise ``ArgumentError`` naming any argument the job does not take."""
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ArgumentError(f"{unknown[0]}: unknown argument (takes {', '.join(sorted(known))})")


def path_arg(args: Mapping[str, Any], name: str) -> str:
    """The required absolute path argument ``name``, normalised to a string."""
    value = args.get(name)
    if value is None:
        raise ArgumentError(f"{name}: required")
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ArgumentError(f"{name}: expected a path, got {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str) or "\0" in text or not os.path.isabs(text):
        raise ArgumentError(f"{name}: must be an absolute path, got {value!r}")
    return os.path.normpath(text)


def remove_tree(path: Path) -> None:
    """Delete ``path`` and everything under it, read-only directories included."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o700)
        shutil.rmtree(path)
    else:
        path.unlink()
