"""``watcher archive prepare``: write ``<data_dir>/mwsave``, the manual's ``./mwsave``.

The script is a few lines of POSIX sh that run *this* watcher (the interpreter that ran
``prepare``, ``sys.executable``, so a venv's) on the config file ``prepare`` used:
``watcher trigger archive --arg before=… [--arg space=…] --wait``. The running service
starts the archive (under its maintenance hold, with the space pre-flight) and the script
follows it with progress to the end; its exit status is the job's (0 finished, 1 failed or
rejected). With no service running it starts nothing (``--require-service``) and exits 1.
Every path in it is absolute and shell-quoted, so it runs from any directory. It is written
atomically, mode 0750 (never world-writable).
"""

from __future__ import annotations

import shlex
import sys
from datetime import datetime
from pathlib import Path

from watcher.config import Config
from watcher.jobs.archive import JOB as ARCHIVE
from watcher.system.atomic import write_atomic

SCRIPT_NAME = "mwsave"
MODE = 0o750


class PrepareError(ValueError):
    """The archive cannot be prepared as asked; the message is one line for the operator."""


def checked_args(config: Config, before: str, space: str | None) -> dict[str, str]:
    """The archive's arguments, validated as the job will (and against the config)."""
    given = {"before": before, **({"space": space} if space is not None else {})}
    try:
        args = dict(ARCHIVE.check_args(given))
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    where = config.source or "the configuration (no config file)"
    tables = config.archive.tables
    if not tables:
        raise PrepareError(f"{where} has no [[archive.tables]]: the archive would move nothing")
    if space is not None and not any(t.space_column for t in tables):
        raise PrepareError(f"space: no [[archive.tables]] in {where} has a space_column")
    return {str(k): str(v) for k, v in args.items()}


def script(config: Config, args: dict[str, str], now: datetime) -> str:
    """The text of ``mwsave`` for these arguments."""
    source = str(Path(config.source).resolve()) if config.source is not None else None
    argv = [sys.executable, "-m", "watcher", "trigger", "archive"]
    if source is not None:
        argv += ["--config", source]
    argv += ["--data-dir", str(config.data_dir.resolve())]
    for key, value in args.items():
        argv += ["--arg", f"{key}={value}"]
    argv += ["--wait", "--require-service"]
    env = "" if source is not None else "WATCHER_CONFIG=''\nexport WATCHER_CONFIG\n"
    what = f"data dated before {args['before']}"
    if "space" in args:
        what += f" of mail space {args['space']}"
    named = source or "none (defaults; WATCHER_CONFIG cleared)"
    return (
        "#!/bin/sh\n"
        f"# mwsave: archive (退避) the {what}\n"
        "# into a read-only mw/back<ID>, through the running watcher service (maintenance is\n"
        "# on while it runs), following its progress to the end. Exit 0 when the archive\n"
        "# finished; 1 when it failed, was rejected, or no service runs (nothing started).\n"
        f"# Written by `watcher archive prepare` at {now.isoformat(timespec='seconds')}.\n"
        f"# config: {named}\n"
        f"{env}exec {shlex.join(argv)}\n"
    )


def prepare(config: Config, before: str, space: str | None, now: datetime) -> Path:
    """Write ``<data_dir>/mwsave`` (atomically, mode 0750) and return its path."""
    args = checked_args(config, before, space)
    target = config.data_dir.resolve() / SCRIPT_NAME
    write_atomic(target, script(config, args, now).encode(), MODE)
    target.chmod(MODE)  # whatever the umask took away
    return target
