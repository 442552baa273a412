"""Trigger files (DESIGN §5), as a source: which spool entries are triggers, and what they ask.

A regular file ``<job>``, ``<job>.<anything>`` or ``*.json`` (``{"job": …, "args": {…}}``)
in the spool requests that job; for a non-JSON name the content is not read (not even
opened). Dot-files, ``*.tmp`` and ``*.part`` are ignored (that is how writers stage a file).
A file is taken when it is complete: renamed into place or closed by its writer (inotify,
at once), or — when only a scan sees it — once its size and mtime are unchanged across two
looks.

Checks, each a ``trigger.rejected`` with the file moved to ``failed/`` beside
``<name>.error.json`` and a stable ``reason``: ``symlink``, ``not_regular``, ``too_large``
(over ``max_size``), ``owner`` (not in ``allowed_uids``; default: watcher's uid and root),
``bad_name`` (not UTF-8, or longer than 200 bytes: it could not be recorded or filed),
``unreadable`` (the file cannot be opened or read, e.g. a root-owned 0600 file while watcher
runs unprivileged), ``bad_json``, ``unknown_job``, ``bad_args``, or ``path_not_allowed`` (a
path argument outside ``allowed_paths``; none allowed when that list is empty). A JSON
trigger is read through one descriptor — opened without following symlinks and without
blocking, checked again with ``fstat`` (regular, owner, size) and read at most
``max_size + 1`` bytes — so what is checked is what is read.

A trigger may never set ``argv`` or ``env`` (``bad_args``: they come from the
configuration only): it chooses a job and tunes it, it does not say what program runs or
with which environment. The built-in ``command`` type used by its name, with no configured
job behind it, therefore has no ``argv`` and is rejected.

Claiming, the journal and running the job are the service's: :mod:`watcher.service.spool`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

IGNORED_SUFFIXES = (".tmp", ".part")
MAX_NAME = 200  # bytes: room for the claim's and the results' additions within NAME_MAX (255)
CONFIG_ONLY_ARGS = ("argv", "env")  # what a trigger may never set
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Rejected(Exception):
    """A trigger file that will not run; ``reason`` is a stable name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def wanted(name: str) -> bool:
    """Whether a spool entry's name is a trigger candidate at all."""
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)


def shown(text: str) -> str:
    """``text`` safe for JSON: bytes that are not UTF-8 (a file name's) as ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def check_name(name: str) -> None:
    """Reject a name that could not be recorded (not UTF-8) or filed (too long)."""
    if shown(name) != name:
        raise Rejected("bad_name", f"the file name {shown(name)!r} is not valid UTF-8")
    if len(os.fsencode(name)) > MAX_NAME:
        raise Rejected("bad_name", f"the file name is longer than {MAX_NAME} bytes")


def parse_trigger(name: str, content: bytes | None) -> tuple[str, dict[str, Any]]:
    """The job name and arguments a trigger file asks for (``content`` only for ``*.json``)."""
    if not name.endswith(".json"):
        return name.split(".", 1)[0], {}
    try:
        body = orjson.loads(content or b"")
    except orjson.JSONDecodeError as exc:
        raise Rejected("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("job"), str) or not body["job"]:
        raise Rejected("bad_json", 'expected {"job": "<name>", "args": {...}}')
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise Rejected("bad_json", '"args" must be an object')
    unknown = set(body) - {"job", "args"}
    if unknown:
        raise Rejected("bad_json", f"unknown keys: {', '.join(sorted(unknown))}")
    return body["job"], args


def check_trigger_args(args: Mapping[str, Any]) -> None:
    """A trigger chooses and tunes a job; what runs, and its environment, are the config's."""
    given = [key for key in CONFIG_ONLY_ARGS if key in args]
    if given:
        raise Rejected(
            "bad_args",
            f"{', '.join(given)}: argv and env come from the configuration only",
        )


def confine_paths(args: Mapping[str, Any], names: tuple[str, ...], roots: tuple[Path, ...]) -> None:
    """Reject path arguments that resolve outside the allowed roots (``..``, symlinks)."""
    for name in names:
        if name not in args:
            continue
        if not roots:
            raise Rejected(
                "path_not_allowed",
                f"{name}: trigger arguments may not name paths (trigger.allowed_paths is empty)",
            )
        value = args[name]
        if not isinstance(value, str) or not value:
            raise Rejected("bad_args", f"{name}: expected a path")
        if "\0" in value:
            raise Rejected("bad_args", f"{name}: a path may not contain a NUL character")
        try:
            resolved = Path(value).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise Rejected("bad_args", f"{name}: cannot resolve {value!r}: {exc}") from None
        if not any(resolved.is_relative_to(root) for root in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise Rejected("path_not_allowed", f"{name}: {resolved} is not under {allowed}")


def check_file(st: os.stat_result, max_size: int, allowed_uids: tuple[int, ...]) -> None:
    """The checks on the file itself: no symlink, regular, not too large, allowed owner."""
    if stat.S_ISLNK(st.st_mode):
        raise Rejected("symlink", "trigger files may not be symbolic links")
    if not stat.S_ISREG(st.st_mode):
        raise Rejected("not_regular", "not a regular file")
    if st.st_size > max_size:
        raise Rejected("too_large", f"{st.st_size} bytes; the limit is {max_size}")
    allowed = allowed_uids or (os.getuid(), 0)
    if st.st_uid not in allowed:
        raise Rejected("owner", f"owned by uid {st.st_uid}; allowed: {list(allowed)}")


def read_trigger(
    path: Path, max_size: int, allowed_uids: tuple[int, ...]
) -> tuple[os.stat_result, bytes]:
    """The file's content, read through one descriptor checked with ``fstat``.

    Never follows a symlink, never blocks (a FIFO swapped in), never reads more than
    ``max_size + 1`` bytes. ``FileNotFoundError`` when it is gone; ``Rejected`` otherwise.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):  # ELOOP: replaced by a symlink since the lstat
            raise Rejected("symlink", "trigger files may not be symbolic links") from None
        raise Rejected("unreadable", f"cannot open the file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        check_file(st, max_size, allowed_uids)
        chunks: list[bytes] = []
        size = 0
        while size <= max_size:
            wanted_bytes = max_size + 1 - size
            chunk = os.read(fd, wanted_bytes)
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < wanted_bytes:
                break  # a short read of a regular file is its end: no second read to learn it
    except OSError as exc:
        raise Rejected("unreadable", f"cannot read the file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > max_size:
        raise Rejected("too_large", f"more than {max_size} bytes; the limit is {max_size}")
    return st, b"".join(chunks)


def filed_name(name: str) -> str:
    """The name a trigger is filed under: its own, cut to ``MAX_NAME`` bytes if longer."""
    raw = os.fsencode(name)
    return name if len(raw) <= MAX_NAME else os.fsdecode(raw[:MAX_NAME])
