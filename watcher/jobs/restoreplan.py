"""What a restore swaps, and the names it uses: staging, and the originals set aside.

The originals keep the manual's names when they are free (``mw/data`` → ``mw/data_bak``,
``mw/file`` → ``mw/file_bak``, ``mw/back3`` → ``mw/back3_bak``); only when that name is
taken (an earlier restore's) is the UTC timestamp of the run added (``data_bak.<T>``).
Archives (``back<ID>``) are planned only when the operator asks and the set holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from watcher.jobs.backup import ARCHIVE_DIR, set_path
from watcher.jobs.base import DataPaths


@dataclass(frozen=True)
class Swap:
    """One live directory, the set's copy of it, and the names used while swapping."""

    live: Path
    source: Path
    staged: Path
    bak: Path
    archive: bool = False


def plan(live: Path, source_dir: Path, stamp: str, *, archive: bool = False) -> Swap:
    """Names for swapping ``live`` with the set's ``source_dir``."""
    staged = unused(live.with_name(f"{live.name}.restore.{stamp}"))
    return Swap(live, source_dir, staged, bak_name(live, stamp), archive)


def bak_name(live: Path, stamp: str) -> Path:
    """``<name>_bak`` when free, else ``<name>_bak.<stamp>`` (``-1``, ``-2`` … if taken too)."""
    plain = live.with_name(f"{live.name}_bak")
    if not (plain.exists() or plain.is_symlink()):
        return plain
    return unused(live.with_name(f"{live.name}_bak.{stamp}"))


def unused(path: Path) -> Path:
    """``path``, or ``path-1``, ``path-2`` … if it is taken."""
    candidate, n = path, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def data_swaps(paths: DataPaths, source: Path, stamp: str) -> list[Swap]:
    """``mw/data`` (always first) and ``mw/file``."""
    return [
        plan(live, source / set_path(live, paths.data_dir), stamp)
        for live in (paths.data, paths.files)
    ]


def archive_swaps(paths: DataPaths, source: Path, stamp: str) -> list[Swap]:
    """One swap per ``back<ID>`` the set holds, by ID, onto ``<archive_root>/back<ID>``."""
    holder = (source / set_path(paths.archive_root / "back0", paths.data_dir)).parent
    if not holder.is_dir():
        return []
    found = sorted(
        (p for p in holder.iterdir() if ARCHIVE_DIR.fullmatch(p.name) and p.is_dir()),
        key=lambda p: int(p.name[4:]),
    )
    return [plan(paths.archive_root / p.name, p, stamp, archive=True) for p in found]
