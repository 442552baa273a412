"""The ``restore`` job: put a verified backup set back in place of ``mw/data`` and ``mw/file``.

Steps, with ``T`` the UTC timestamp of the run:

1. Verify the set's manifest, hashes included. Any problem: ``manifest_invalid``, nothing
   touched.
2. Stage: copy the set's ``mw/data`` and ``mw/file`` into ``mw/data.restore.<T>`` and
   ``mw/file.restore.<T>`` next to the live directories (same filesystem), hashing as it
   copies and comparing with the manifest again. Live data is still untouched.
3. Carry the live maint file into the staged data directory (a hard link, so the same
   file; a copy where links are impossible).
4. Swap each directory: ``renameat2(RENAME_EXCHANGE)`` swaps staged and live atomically,
   then the old one is renamed to ``mw/data_bak`` / ``mw/file_bak`` (the manual's names),
   or ``mw/data_bak.<T>`` / ``mw/file_bak.<T>`` when those are taken. Because the
   staged data directory already holds the maint file, ``mw/data/maint`` exists at every
   instant: the application stays in maintenance and watcher sees no release. Where the
   filesystem cannot exchange, two renames are used and the maint file is missing for the
   instant between them.
5. Settle the maint file: if it was replaced or removed in the old directory while the
   copy was being staged, that newer state is applied to the restored one; the old
   directory's link is removed.

Any failure in 2–4 removes the staged directories and undoes the renames in reverse, so the
originals are back where they were (``restore_failed``).

Archives (``mw/back<ID>``) are in a set but restored only when asked (``archives=true``):
each ``back<ID>`` of the set is staged (read-only bits) and swapped in the same way, the
live one (its ``chattr +i`` cleared first) set aside as ``back<ID>_bak``; the restored ones
get ``chattr +i`` again when ``archive.immutable``. Live archives the set lacks are left
alone, as are all live archives by default: they are read-only and never change.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from watcher.jobs.archive import make_read_only
from watcher.jobs.backup import copy_meta
from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed, Progress
from watcher.jobs.manifest import (
    Entry,
    Meter,
    copy_hashed,
    path_arg,
    raise_if_cancelled,
    read_manifest,
    reject_unknown,
    remove_tree,
    verify_manifest,
)
from watcher.jobs.restoreplan import Swap, archive_swaps, data_swaps
from watcher.jobs.space import require_space
from watcher.system.atomic import exchange
from watcher.system.filemodes import chmod_copied
from watcher.system.immutable import is_immutable, set_immutable

Undo = list[Callable[[], object]]


def restore(
    paths: DataPaths,
    source: Path,
    *,
    now: datetime,
    archives: bool = False,
    immutable: bool = True,
    progress: Callable[[Progress], None] = lambda _p: None,
    cancelled: threading.Event | None = None,
) -> dict[str, Any]:
    """Verify the set at ``source`` and swap it in for the live data; the job's core.

    ``archives``: also swap in the set's ``back<ID>`` directories (``immutable``: ``chattr
    +i`` on the restored ones, as the archive job does).
    """
    entries = _verified_entries(source)
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    swaps = data_swaps(paths, source, stamp)
    if not swaps[0].source.is_dir():
        raise JobFailed("manifest_invalid", f"backup set {source} holds no {swaps[0].source.name}")
    swaps += archive_swaps(paths, source, stamp) if archives else []
    wanted = [e for e in entries.values() if any(_under(e.path, s, source) for s in swaps)]
    require_space(sum(e.size for e in wanted), paths.data.parent, "restore")
    meter = Meter(progress, len(wanted), sum(e.size for e in wanted), "restore")
    undo: Undo = []
    try:
        for swap in swaps:
            _stage(swap, source, entries, paths.maint_file, meter, cancelled or threading.Event())
        meter.flush()
        carried = _carry_maint(paths.maint_file, swaps[0])
        had_live = [_swap_in(swap, undo) for swap in swaps]
    except BaseException as exc:
        _fail(exc, source, _roll_back(undo, swaps))
        raise
    if carried is not None:
        _settle_maint(paths.maint_file, swaps[0], carried)
    bak = [str(s.bak) if had else None for s, had in zip(swaps, had_live, strict=True)]
    result: dict[str, Any] = {
        "from": str(source),
        "data_bak": bak[0],
        "file_bak": bak[1],
        "files": meter.files,
        "bytes": meter.bytes,
    }
    if archives:
        result.update(_sealed(swaps[2:], bak[2:], immutable))
    return result


def _sealed(swaps: list[Swap], baks: list[str | None], immutable: bool) -> dict[str, Any]:
    """``chattr +i`` on the restored archives; what was restored and set aside, for the result."""
    problems = [set_immutable(s.live, True) if immutable else None for s in swaps]
    problem = next((p for p in problems if p is not None), None)
    if not immutable:
        problem = "not asked (archive.immutable = false)"
    return {
        "archives": [str(s.live) for s in swaps],
        "archives_bak": [b for b in baks if b is not None],
        "immutable": bool(swaps) and problem is None,
        "immutable_problem": problem if swaps else None,
    }


def _fail(exc: BaseException, source: Path, rollback_errors: list[str]) -> None:
    """Turn a failure into ``restore_failed`` (saying whether the roll-back worked)."""
    if not rollback_errors and not isinstance(exc, OSError):
        return
    message = f"restore from {source} failed: {exc}"
    if rollback_errors:
        message += f"; putting the originals back failed too: {rollback_errors[0]}"
    raise JobFailed("restore_failed", message, rollback_errors=rollback_errors) from exc


def _verified_entries(source: Path) -> dict[str, Entry]:
    """The set's manifest entries by path, once the whole set has checked out."""
    problems = verify_manifest(source)
    if not problems and read_manifest(source)[0] != "backup":
        problems = [f"{source} is an archive, not a backup set"]
    if problems:
        raise JobFailed(
            "manifest_invalid",
            f"backup set {source} failed verification: {problems[0]}",
            problems=problems,
        )
    return {e.path: e for e in read_manifest(source)[1]}


def _under(rel: str, swap: Swap, source: Path) -> bool:
    """Whether the set path ``rel`` lies in the set's copy of ``swap.live``."""
    return (source / rel).is_relative_to(swap.source)


def _stage(
    swap: Swap,
    source: Path,
    entries: Mapping[str, Entry],
    maint: Path,
    meter: Meter,
    stop: threading.Event,
) -> None:
    """Copy the set's tree for ``swap`` into its staging directory, checking every hash."""
    swap.staged.mkdir(mode=0o700)
    if not swap.source.is_dir():
        return
    skip = maint.relative_to(swap.live) if maint.is_relative_to(swap.live) else None
    dirs: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(swap.source):
        dirnames.sort()
        here = Path(dirpath)
        there = swap.staged / here.relative_to(swap.source)
        there.mkdir(exist_ok=True)
        dirs.append((here, there))
        for name in sorted(filenames):
            if skip is not None and here / name == swap.source / skip:
                continue
            raise_if_cancelled(stop, "restore")
            entry = entries.get((here / name).relative_to(source).as_posix())
            if entry is None:
                raise JobFailed("restore_failed", f"{here / name} is not in the manifest")
            _copy_checked(here / name, there / name, entry)
            meter.add(1, entry.size)
    for src, dst in reversed(dirs):
        copy_meta(src, dst)
    if swap.archive:
        make_read_only(swap.staged)


def _copy_checked(src: Path, dst: Path, entry: Entry) -> None:
    """Copy one file from the set and fail if it no longer matches its manifest entry."""
    copied = copy_hashed(src, dst, os.lstat(src))
    if copied != (entry.size, entry.sha256):
        raise JobFailed("restore_failed", f"{src} changed after it was verified")


def _carry_maint(maint: Path, data: Swap) -> int | None:
    """Put the live maint file into the staged data directory; its inode, or None."""
    if not maint.is_relative_to(data.live):
        return None
    target = data.staged / maint.relative_to(data.live)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(maint, target)
    except FileNotFoundError:
        return None
    except OSError:
        _replace_with_copy(maint, target)
    return os.lstat(target).st_ino


def _replace_with_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a copy of ``src`` (temp file beside it, then rename)."""
    tmp = dst.with_name(f".{dst.name}.restore.tmp")
    shutil.copy2(src, tmp)
    chmod_copied(tmp)
    os.replace(tmp, dst)


def _swap_in(swap: Swap, undo: Undo) -> bool:
    """Put ``swap.staged`` at ``swap.live`` and the old one at ``swap.bak``; was there one?"""
    if not swap.live.exists():
        os.rename(swap.staged, swap.live)
        undo.append(functools.partial(os.rename, swap.live, swap.staged))
        return False
    if swap.archive:
        _thaw(swap.live, undo)
    if exchange(swap.staged, swap.live):
        undo.append(functools.partial(exchange, swap.staged, swap.live))
        os.rename(swap.staged, swap.bak)
        undo.append(functools.partial(os.rename, swap.bak, swap.staged))
    else:
        os.rename(swap.live, swap.bak)
        undo.append(functools.partial(os.rename, swap.bak, swap.live))
        os.rename(swap.staged, swap.live)
        undo.append(functools.partial(os.rename, swap.live, swap.staged))
    return True


def _thaw(archive: Path, undo: Undo) -> None:
    """Clear ``chattr +i`` on a live archive so it can be renamed aside (again on undo)."""
    frozen = is_immutable(archive)
    problem = set_immutable(archive, False)
    if frozen and problem is not None:
        raise JobFailed("restore_failed", f"{archive} is immutable and stays so: {problem}")
    if frozen:
        undo.append(functools.partial(set_immutable, archive, True))


def _roll_back(undo: Undo, swaps: list[Swap]) -> list[str]:
    """Undo the renames done so far, newest first, then drop the staged copies; the errors."""
    errors = []
    steps: Undo = [*reversed(undo), *(functools.partial(remove_tree, s.staged) for s in swaps)]
    for step in steps:
        try:
            step()
        except OSError as exc:
            errors.append(str(exc))
    return errors


def _settle_maint(maint: Path, data: Swap, carried: int) -> None:
    """Apply a change the old maint file saw during staging; drop the old directory's link."""
    old = data.bak / maint.relative_to(data.live)
    with contextlib.suppress(OSError):
        if os.lstat(maint).st_ino == carried:
            if not old.exists():
                maint.unlink()
            elif os.lstat(old).st_ino != carried:
                _replace_with_copy(old, maint)
    with contextlib.suppress(FileNotFoundError):
        old.unlink()


class RestoreJob:
    """Replaces the live databases and files with a verified backup set."""

    maintenance_default: bool = True
    retry_safe: bool = False
    path_args: tuple[str, ...] = ("from",)

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``from``: the absolute path of a backup set directory (required); ``archives``:
        also restore the set's ``back<ID>`` directories (true or false, default false)."""
        reject_unknown(args, ("from", "archives"))
        archives = args.get("archives", False)
        if isinstance(archives, str) and archives.lower() in ("true", "false"):
            archives = archives.lower() == "true"
        if not isinstance(archives, bool):
            raise ArgumentError(f"archives: expected true or false, got {archives!r}")
        return {"from": path_arg(args, "from"), "archives": archives}

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        """Run the restore in a worker thread."""
        args = self.check_args(ctx.args)
        work = functools.partial(
            restore,
            ctx.paths,
            Path(args["from"]),
            now=ctx.now(),
            archives=args["archives"],
            immutable=ctx.archive.immutable,
            progress=ctx.progress,
            cancelled=ctx.cancelled,
        )
        return await anyio.to_thread.run_sync(work)


JOB = RestoreJob()
