"""Data directories to run the real service on: the demo one and a 100k-file tree.

Both are built once under the work directory and reused; the big tree is built in a
``.part`` directory and renamed into place, so an interrupted build is never taken for
a finished one. ``reset`` removes what a previous run of watcher or of a benchmark left
behind (maint file, state, control requests, burst directories), so each run starts
from "not in maintenance, no holds".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from watcher.demo import create_demo

TREE_DIRS = 1_000
TREE_FILES_PER_DIR = 100
_PAYLOAD = b"attachment body\n" * 4


def demo_dir(workdir: Path) -> Path:
    """The demo data directory (a few small files), created on first use."""
    root = workdir / "demo"
    create_demo(root)
    reset(root)
    return root


def tree_dir(workdir: Path) -> Path:
    """A data directory with 100k files in 1k directories under ``mw/file``."""
    root = workdir / f"tree-{TREE_DIRS * TREE_FILES_PER_DIR // 1000}k"
    if not root.is_dir():
        part = root.with_name(root.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        _build_tree(part)
        part.rename(root)
    reset(root)
    return root


def _build_tree(root: Path) -> None:
    create_demo(root)
    files = root / "mw" / "file"
    for d in range(1, TREE_DIRS + 1):
        folder = files / f"ws{d}"
        folder.mkdir(exist_ok=True)
        for f in range(TREE_FILES_PER_DIR):
            fd = os.open(folder / f"f{f:03d}.dat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, _PAYLOAD)
            finally:
                os.close(fd)


def maint_file(root: Path) -> Path:
    """Where the default configuration puts the maint file."""
    return root / "mw" / "data" / "maint"


def flag_dir(root: Path) -> Path:
    """The maint file's directory: what watcher and the reference watch."""
    return maint_file(root).parent


def reset(root: Path) -> None:
    """Back to no maintenance and no saved state; burst directories removed."""
    maint_file(root).unlink(missing_ok=True)
    shutil.rmtree(root / "mw" / "watcher", ignore_errors=True)
    shutil.rmtree(root / "mw" / "spool", ignore_errors=True)
    (root / "mw" / "spool").mkdir(parents=True)
    for burst in (root / "mw" / "file").glob("burst*"):
        shutil.rmtree(burst, ignore_errors=True)
