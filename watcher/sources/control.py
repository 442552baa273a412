"""The control area (``<spool>/.control/``): how the CLI hands a request to the running service.

There is one writer of state at a time. When the service runs, the CLI writes
``<id>.req`` (atomically) and waits for ``<id>.resp``; the service is woken by its
inotify watch on the directory, carries the request out and answers. A request left
unanswered past the timeout is withdrawn, so it cannot run later by surprise.

What the service takes (``take``): a request is a regular file (never followed through a
symlink, opened without blocking, checked again with ``fstat``, at most 64 KiB), owned by
watcher's own uid, root or a uid in ``trigger.allowed_uids``, holding one JSON object.
Dot-files are never requests (stage a hand-written one under a dot-name, then rename it).
A file that is not (yet) valid JSON and was modified in the last ``SETTLE`` seconds may
still be being written (``echo … > x.req`` is seen on its creation): it is left for a
later look — the close, or the service's next periodic look. Anything else that is not a
request — a directory, a FIFO, a symlink, a foreign owner, too large, invalid JSON older
than that, JSON that is not an object — is removed (a directory that cannot be is renamed
aside to a dot-name) and answered ``{"ok": false, "message": …}`` where that is possible.
Answers are best-effort: a response that cannot be written (no space) leaves the CLI to
time out, never the service to stop.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from watcher.system.atomic import write_atomic

REQUEST_SUFFIX = ".req"
RESPONSE_SUFFIX = ".resp"
MAX_REQUEST = 64 * 1024
SETTLE = 2.0  # seconds: unparsable and younger than this may still be being written
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


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
    """Request files waiting for the service (not dot-files), oldest first."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    found: list[tuple[int, str]] = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(REQUEST_SUFFIX):
            continue
        try:
            found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
        except OSError:
            continue  # gone meanwhile
    return [directory / name for _, name in sorted(found)]


def take(path: Path, allowed_uids: tuple[int, ...] = ()) -> dict[str, Any] | None:
    """Read and remove a request; ``None`` when there is none to carry out now.

    ``None`` when it vanished (withdrawn), when it may still be being written (left for a
    later look), or when it is no request (removed and answered here). ``allowed_uids``:
    owners allowed besides watcher's own uid and root (``trigger.allowed_uids``).
    Never raises and never blocks.
    """
    try:
        return _take(path, (os.getuid(), 0, *allowed_uids))
    except _Refused as refused:
        _dispose(path)
        answer(path, {"ok": False, "message": f"request refused: {refused}"})
        return None


class _Refused(Exception):
    """Not a request; the message says why."""


def _take(path: Path, allowed: tuple[int, ...]) -> dict[str, Any] | None:
    try:
        st = os.lstat(path)
        _check(st, allowed)
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Refused(f"cannot open it: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        _check(st, allowed)
        raw = _read(fd, MAX_REQUEST + 1)
    except OSError as exc:
        raise _Refused(f"cannot read it: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_REQUEST:
        raise _Refused(f"larger than {MAX_REQUEST} bytes")
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if abs(time.time() - st.st_mtime) < SETTLE:
            return None  # may still be being written: the close, or the next look, decides
        raise _Refused("not valid JSON") from None
    if not isinstance(request, dict):
        raise _Refused("a request is a JSON object")
    try:
        os.unlink(path)
    except FileNotFoundError:
        return None  # withdrawn by the CLI (it timed out): must not run by surprise
    except OSError as exc:
        raise _Refused(f"cannot remove it: {exc.strerror}") from None
    return request


def _check(st: os.stat_result, allowed: tuple[int, ...]) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("a request must be a regular file")
    if st.st_uid not in allowed:
        raise _Refused(f"owned by uid {st.st_uid}, which may not send requests")
    if st.st_size > MAX_REQUEST:
        raise _Refused(f"larger than {MAX_REQUEST} bytes")


def _read(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes from ``fd``."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _dispose(path: Path) -> None:
    """Remove what is not a request; a directory that cannot be is renamed aside."""
    try:
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass
    except OSError:
        return
    try:
        os.rmdir(path)
    except OSError:
        with contextlib.suppress(OSError):
            os.rename(path, path.with_name(f".{path.name}.{time.time_ns()}.refused"))


def answer(path: Path, response: Mapping[str, Any]) -> bool:
    """Write the response for request file ``path``; ``False`` when it could not be."""
    resp = path.with_name(path.name[: -len(REQUEST_SUFFIX)] + RESPONSE_SUFFIX)
    try:
        # Not fsynced: the CLI waiting for it would not outlive a power loss either.
        write_atomic(resp, orjson.dumps(dict(response)), 0o644, durable=False)
    except (OSError, TypeError):
        return False
    return True
