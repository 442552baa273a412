"""The control area (``<spool>/.control/``): how the CLI hands a request to the running service.

There is one writer of state at a time. When the service runs, the CLI writes
``<id>.req`` (atomically) and waits for ``<id>.resp``; the service is woken by its
inotify watch on the directory, carries the request out and answers. A request left
unanswered past the timeout is withdrawn, so it cannot run later by surprise.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from watcher.atomic import write_atomic

REQUEST_SUFFIX = ".req"
RESPONSE_SUFFIX = ".resp"


def control_dir(spool: Path) -> Path:
    return spool / ".control"


def submit(
    directory: Path, request: Mapping[str, Any], timeout: float = 10.0
) -> dict[str, Any] | None:
    """Hand ``request`` to the service and return its answer, or ``None`` on timeout."""
    directory.mkdir(parents=True, exist_ok=True)
    ident = uuid.uuid4().hex
    req = directory / f"{ident}{REQUEST_SUFFIX}"
    resp = directory / f"{ident}{RESPONSE_SUFFIX}"
    write_atomic(req, orjson.dumps(dict(request)), 0o644)
    deadline = time.monotonic() + timeout
    delay = 0.002
    while time.monotonic() < deadline:
        try:
            answer = orjson.loads(resp.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            continue
        resp.unlink(missing_ok=True)
        return answer if isinstance(answer, dict) else {"ok": False, "message": "bad answer"}
    try:
        os.unlink(req)
    except FileNotFoundError:
        # The service took it at the last moment: give it a final chance to answer.
        time.sleep(0.5)
        if resp.exists():
            answer = orjson.loads(resp.read_bytes())
            resp.unlink(missing_ok=True)
            return answer if isinstance(answer, dict) else None
    return None


def pending(directory: Path) -> list[Path]:
    """Requests waiting for the service, oldest first."""
    try:
        found = [p for p in directory.iterdir() if p.name.endswith(REQUEST_SUFFIX)]
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)


def take(path: Path) -> dict[str, Any] | None:
    """Read and remove a request; ``None`` when it vanished or is not a JSON object."""
    try:
        raw = path.read_bytes()
        path.unlink()
    except FileNotFoundError:
        return None
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return request if isinstance(request, dict) else {}


def answer(path: Path, response: Mapping[str, Any]) -> None:
    """Write the response for request file ``path``."""
    resp = path.with_name(path.name[: -len(REQUEST_SUFFIX)] + RESPONSE_SUFFIX)
    write_atomic(resp, orjson.dumps(dict(response)), 0o644)
