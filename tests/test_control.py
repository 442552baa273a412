"""The control area: what the service takes as a request, and what it refuses, on real files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Start, cli, eventually, maint
from watcher.sources.control import MAX_REQUEST, SETTLE, answer, control_dir, pending, submit, take

HOUR_AGO = 3600.0


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """An empty control directory."""
    directory = tmp_path / ".control"
    directory.mkdir()
    return directory


def request_file(area: Path, name: str, content: bytes) -> Path:
    path = area / name
    path.write_bytes(content)
    return path


def response(request: Path) -> dict[str, Any] | None:
    """The answer written for ``request``, or ``None`` when there is none."""
    resp = request.with_name(request.name.removesuffix(".req") + ".resp")
    try:
        doc = json.loads(resp.read_bytes())
    except FileNotFoundError:
        return None
    assert isinstance(doc, dict)
    return doc


def refused(request: Path) -> str:
    """The message of the refusal answered for ``request`` (which must be gone)."""
    doc = response(request)
    assert doc is not None and doc["ok"] is False, doc
    assert not os.path.lexists(request)
    message = doc["message"]
    assert isinstance(message, str)
    return message


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s modification time ``seconds`` into the past."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


# --- what is a request ------------------------------------------------------------------


def test_request_is_read_and_removed(area: Path) -> None:
    """A JSON object in a regular ``*.req`` file is returned and the file removed, unanswered."""
    path = request_file(area, "a.req", b'{"op": "ping"}')
    assert take(path) == {"op": "ping"}
    assert not path.exists()
    assert response(path) is None


def test_vanished_request_is_nothing(area: Path) -> None:
    """A request withdrawn before it was taken is ``None`` and gets no answer."""
    assert take(area / "gone.req") is None
    assert response(area / "gone.req") is None


def test_empty_directory_is_removed_and_answered(area: Path) -> None:
    """A directory named ``*.req`` is no request: removed and answered, never a crash."""
    path = area / "dir.req"
    path.mkdir()
    assert take(path) is None
    assert "regular file" in refused(path)


def test_full_directory_is_moved_aside(area: Path) -> None:
    """A directory that cannot be removed is renamed aside to a dot-name pending never lists."""
    path = area / "full.req"
    path.mkdir()
    (path / "inside").write_text("x")
    assert take(path) is None
    assert "regular file" in refused(path)
    [aside] = [p for p in area.iterdir() if p.is_dir()]
    assert aside.name.startswith(".full.req.") and (aside / "inside").exists()
    assert pending(area) == []


@pytest.mark.timeout(10)
def test_fifo_is_refused_without_blocking(area: Path) -> None:
    """A FIFO named ``*.req`` is removed and answered; reading it never blocks the service."""
    path = area / "pipe.req"
    os.mkfifo(path)
    assert take(path) is None
    assert "regular file" in refused(path)


def test_symlink_is_refused_and_not_followed(area: Path, tmp_path: Path) -> None:
    """A symlink named ``*.req`` is removed (not its target) and answered, even to a request."""
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b'{"op": "leave"}')
    path = area / "link.req"
    path.symlink_to(target)
    assert take(path) is None
    assert "regular file" in refused(path)
    assert target.read_bytes() == b'{"op": "leave"}'


def test_partial_request_is_left_while_young(area: Path) -> None:
    """Invalid JSON written just now may still be being written: left alone, unanswered."""
    path = request_file(area, "hand.req", b'{"op": "pi')
    assert take(path) is None
    assert path.exists() and response(path) is None
    with path.open("ab") as f:
        f.write(b'ng"}')
    assert take(path) == {"op": "ping"}


@pytest.mark.parametrize("content", [b"", b'{"op": "pi', b"\xff\xfe"])
def test_invalid_json_older_than_settle_is_refused(area: Path, content: bytes) -> None:
    """Invalid JSON not modified for longer than ``SETTLE`` seconds is removed and answered."""
    path = request_file(area, "old.req", content)
    age(path, SETTLE + HOUR_AGO)
    assert take(path) is None
    assert "not valid JSON" in refused(path)


def test_mtime_far_in_the_future_is_not_young(area: Path) -> None:
    """Invalid JSON dated far in the future (a skewed clock) is refused, not kept for ever."""
    path = request_file(area, "future.req", b"{")
    age(path, -HOUR_AGO)
    assert take(path) is None
    assert "not valid JSON" in refused(path)


@pytest.mark.parametrize("content", [b"[]", b'"ping"', b"3", b"null"])
def test_json_that_is_not_an_object_is_refused(area: Path, content: bytes) -> None:
    """Valid JSON that is not an object is refused at once."""
    path = request_file(area, "shape.req", content)
    assert take(path) is None
    assert "JSON object" in refused(path)


def test_oversized_request_is_refused(area: Path) -> None:
    """A request larger than 64 KiB is refused whatever its age."""
    body = b'{"op": "ping", "pad": "' + b"x" * MAX_REQUEST + b'"}'
    path = request_file(area, "big.req", body)
    assert take(path) is None
    assert "larger than" in refused(path)


def test_foreign_owner_is_refused_unless_allowed(area: Path) -> None:
    """A request owned by a uid other than watcher's, root or ``allowed_uids`` is refused."""
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    path = request_file(area, "foreign.req", b'{"op": "ping"}')
    os.chown(path, 12345, 12345)
    assert take(path) is None
    assert "uid 12345" in refused(path)
    path = request_file(area, "friend.req", b'{"op": "ping"}')
    os.chown(path, 12345, 12345)
    assert take(path, (12345,)) == {"op": "ping"}


def test_pending_lists_requests_oldest_first(area: Path) -> None:
    """``pending`` lists ``*.req`` entries (not dot-files, not responses) by age."""
    newer = request_file(area, "b.req", b"{}")
    older = request_file(area, "a-later-name.req", b"{}")
    age(older, 10)
    request_file(area, ".staged.req", b"{}")
    request_file(area, "x.resp", b"{}")
    (area / "d.req").mkdir()
    age(area / "d.req", 20)
    assert pending(area) == [area / "d.req", older, newer]
    assert pending(area / "missing") == []


def test_answer_never_raises(area: Path) -> None:
    """An answer that cannot be written is ``False``, never an exception in the service."""
    (area / "blocked.resp").mkdir()
    (area / "blocked.resp" / "inside").write_text("x")
    assert answer(area / "blocked.req", {"ok": True}) is False
    assert answer(area / "fine.req", {"ok": True}) is True
    assert response(area / "fine.req") == {"ok": True}


# --- the real service -------------------------------------------------------------------


def ping(data_dir: Path) -> None:
    """One request through the running service, answered."""
    answered = submit(control_dir(data_dir / "mw" / "spool"), {"op": "ping"})
    assert answered is not None and answered["message"] == "pong"


def test_service_survives_junk_in_the_control_area(data_dir: Path, service: Start) -> None:
    """A directory and a FIFO named ``*.req`` are refused; the service still answers the CLI."""
    svc = service()
    area = control_dir(data_dir / "mw" / "spool")
    (area / "junk.req").mkdir()
    os.mkfifo(area / "pipe.req")
    done = cli("enter", "--message", "by the book", data_dir=data_dir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert maint(data_dir).exists()
    ping(data_dir)  # a later pass than any that saw the junk: all of it is settled
    for name in ("junk.req", "pipe.req"):
        assert "regular file" in refused(area / name)
    assert svc.proc.poll() is None


def test_service_waits_for_a_request_being_written(data_dir: Path, service: Start) -> None:
    """A hand-written request seen before its writer closes it is left until it is complete."""
    service()
    area = control_dir(data_dir / "mw" / "spool")
    path = area / "hand.req"
    with path.open("wb") as f:
        f.write(b'{"op": "pi')
        f.flush()
        ping(data_dir)
        ping(data_dir)  # the pass that answered the first has finished: it saw hand.req
        assert path.exists() and response(path) is None
        f.write(b'ng"}')
    doc = eventually(lambda: response(path))
    assert doc == {"ok": True, "message": "pong", "active": False}
    assert not path.exists()
