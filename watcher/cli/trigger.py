"""``watcher trigger JOB [--arg K=V …] [--wait]``: drop a trigger file and optionally follow it.

When the service runs, it drops the trigger itself (a ``trigger`` request on its control
socket); otherwise the CLI does (``watcher.sources.triggerdrop``). ``--wait`` follows the
job through ``.progress/`` and the result JSON that the service leaves beside the trigger
in ``done/`` or ``failed/`` (it still polls these files every 0.1 s); the last progress,
kept in the result, is shown at the end if polling missed it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import orjson

from watcher.config import Config
from watcher.core.printable import one_line_all
from watcher.system.lock import running_pid


def parse_args(pairs: list[str]) -> dict[str, Any]:
    """``K=V`` pairs; a value that parses as JSON (numbers, true, lists) is taken as such."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg {pair!r}: use KEY=VALUE")
        try:
            args[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            args[key] = value
    return args


def outcome_files(spool: Path, name: str) -> list[Path]:
    return [
        spool / "done" / f"{name}.result.json",
        spool / "failed" / f"{name}.result.json",
        spool / "failed" / f"{name}.error.json",
    ]


def follow(config: Config, name: str, timeout: float | None = None) -> int:
    """Show progress until the trigger's result appears; exit code from the job's outcome."""
    spool = config.paths.spool
    progress_file = spool / ".progress" / f"{name}.json"
    tty = sys.stdout.isatty()
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = b""
    last_shown: dict[str, Any] | None = None
    while deadline is None or time.monotonic() < deadline:
        for path in outcome_files(spool, name):
            try:
                result = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            final = result.get("progress")
            if isinstance(final, dict) and orjson.dumps(final) != orjson.dumps(last_shown):
                # the end state, even when the job outran the polling
                _show_progress(one_line_all(final), tty)
            return _report(one_line_all(result), path, tty)
        try:
            raw = progress_file.read_bytes()
            progress = orjson.loads(raw) if raw and raw != shown else None
        except (OSError, orjson.JSONDecodeError):
            raw, progress = b"", None
        if isinstance(progress, dict):
            shown, last_shown = raw, progress
            _show_progress(one_line_all(progress), tty)
        if running_pid(config.paths.state / "lock") is None:
            print("\nwatcher: the service stopped before the job finished", file=sys.stderr)
            return 1
        time.sleep(0.1)
    return 1


def _show_progress(p: dict[str, Any], tty: bool) -> None:
    files_total, files_done = p.get("files_total", 0), p.get("files_done", 0)
    line = (
        f"{files_done}/{files_total} files, {p.get('bytes_done', 0)} bytes {p.get('message', '')}"
    )
    if tty and files_total:
        width = 30
        filled = int(width * files_done / files_total)
        sys.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {line[:60]:<60}")
        sys.stdout.flush()
    else:
        print(f"progress: {line}", flush=True)


def _report(result: dict[str, Any], path: Path, tty: bool) -> int:
    if tty:
        print()
    status = result.get("status", "rejected")
    if path.name.endswith(".error.json"):
        print(f"rejected: {result.get('message')} (reason: {result.get('reason')})")
        return 1
    message = result.get("message") or ""
    print(f"{status}{': ' + message if message else ''}")
    details = result.get("result") or {}
    for key, value in details.items():
        if key not in ("stdout", "stderr", "databases"):
            print(f"  {key}: {value}")
    return 0 if status == "finished" else 1
