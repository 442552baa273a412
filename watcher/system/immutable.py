"""The immutable attribute (``chattr +i``/``-i``), where the filesystem and privileges allow.

``chattr`` (e2fsprogs) needs ``CAP_LINUX_IMMUTABLE`` and a filesystem that supports the
flag (ext4, xfs, btrfs; not tmpfs or overlayfs). Failure is not an error here: callers
report the reason and rely on the permission bits alone.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def set_immutable(root: Path, on: bool) -> str | None:
    """``chattr -R ±i root``; ``None`` when it worked, else the reason it could not."""
    chattr = shutil.which("chattr")
    if chattr is None:
        return "chattr not installed (e2fsprogs)"
    try:
        done = subprocess.run(
            [chattr, "-R", "+i" if on else "-i", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"chattr failed: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"chattr failed: {lines[-1] if lines else f'exit {done.returncode}'}"
    return None


def is_immutable(path: Path) -> bool:
    """Whether ``lsattr`` shows the ``i`` flag on ``path`` (``False`` when it cannot tell)."""
    lsattr = shutil.which("lsattr")
    if lsattr is None:
        return False
    done = subprocess.run(
        [lsattr, "-d", str(path)], capture_output=True, text=True, timeout=10, check=False
    )
    return done.returncode == 0 and "i" in done.stdout.split(" ", 1)[0]
