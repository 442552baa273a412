"""The control socket: who may ask, what is answered, and the CLI through the running service."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.conftest import Start, cli, maint, write_config
from watcher.sources import control
from watcher.sources.control import Access, ControlUnavailable, Peer, request, socket_path

NOBODY = 65534


@pytest.mark.parametrize(
    ("peer", "access", "allowed"),
    [
        (Peer(1, 0, 0), Access(1000), True),  # root
        (Peer(1, 1000, 1000), Access(1000), True),  # watcher's own uid
        (Peer(1, 1001, 1001), Access(1000), False),
        (Peer(1, 1001, 1001), Access(1000, allowed_uids=(1001,)), True),
        (Peer(1, 1001, 50), Access(1000, allowed_gids=(50,)), True),
        (Peer(1, 1001, 51), Access(1000, allowed_uids=(1002,), allowed_gids=(50,)), False),
    ],
)
def test_access_table(peer: Peer, access: Access, allowed: bool) -> None:
    """Root, watcher's own uid and the configured uids/gids may control; nobody else."""
    assert access.allows(peer) is allowed


def echo(req: dict[str, Any], peer: Peer) -> dict[str, Any]:
    if req.get("op") == "boom":
        raise RuntimeError("handler bug")
    return {"ok": True, "message": "echo", "req": req, "uid": peer.uid}


def raw_exchange(path: Path, data: bytes) -> bytes:
    """Send ``data`` as is, close the writing side, and return everything answered
    (``b"<reset>"`` when the service hung up on a request too large to read)."""
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(path))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks) or b"<reset>"
    return b"".join(chunks)


async def with_server(path: Path, client: Any, refused: list[Peer] | None = None) -> Any:
    """Serve ``path`` with ``echo`` while ``client`` runs in a thread; its result."""
    sock = control.bind(path)
    seen = refused if refused is not None else []
    async with anyio.create_task_group() as tg:
        await tg.start(control.serve, sock, lambda: Access(os.getuid()), echo, seen.append)
        result = await anyio.to_thread.run_sync(client)
        tg.cancel_scope.cancel()
    return result


def test_round_trip_and_bad_requests(tmp_path: Path) -> None:
    """One JSON answer per connection; bad input is answered with an error, never a crash."""
    path = tmp_path / "control.sock"

    def client() -> list[Any]:
        answers: list[Any] = [request(path, {"op": "ping", "x": [1, 2]})]
        for data in (b"\xff\xfe\x00binary", b"[1, 2]", b"{" * 5000, b"x" * (200 * 1024), b""):
            answers.append(raw_exchange(path, data))
        answers.append(request(path, {"op": "boom"}))
        answers.append(request(path, {"op": "ping"}))
        return answers

    answers = anyio.run(with_server, path, client)
    assert answers[0]["req"] == {"op": "ping", "x": [1, 2]}
    assert answers[0]["uid"] == os.getuid()
    assert b"not valid JSON" in answers[1]
    assert b"JSON object" in answers[2]
    assert b"not valid JSON" in answers[3]
    assert b"larger than" in answers[4] or answers[4] == b"<reset>"
    assert b"not valid JSON" in answers[5]
    assert answers[6] == {"ok": False, "message": "request failed: RuntimeError: handler bug"}
    assert answers[7]["ok"] is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


def test_slow_peer_is_answered_and_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that never finishes its request gets an error; others are served meanwhile."""
    monkeypatch.setattr(control, "READ_TIMEOUT", 0.5)
    path = tmp_path / "control.sock"

    def client() -> tuple[bytes, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
            slow.settimeout(30)
            slow.connect(str(path))
            slow.sendall(b'{"op": "pi')
            other = request(path, {"op": "ping"})
            return slow.recv(65536), other

    slow_answer, other = anyio.run(with_server, path, client)
    assert b"not complete" in slow_answer
    assert other["ok"] is True


def test_long_socket_path_is_reachable(tmp_path: Path) -> None:
    """A socket path longer than sockaddr_un allows is bound and reached all the same."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(str(path)) > 108
    answer = anyio.run(with_server, path, lambda: request(path, {"op": "ping"}))
    assert answer["ok"] is True


def test_no_socket_is_a_clear_error(tmp_path: Path) -> None:
    """Connecting to a missing or dead socket raises ``ControlUnavailable`` saying which."""
    with pytest.raises(ControlUnavailable, match="no control socket"):
        request(tmp_path / "none.sock", {"op": "ping"})
    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(dead))
    with pytest.raises(ControlUnavailable, match="stale"):
        request(dead, {"op": "ping"})


# --- end to end: the CLI and the running service -----------------------------------------


def test_cli_goes_through_the_socket(data_dir: Path, service: Start) -> None:
    """enter, status, trigger and leave reach the running service over its socket; no file area."""
    service()
    sock = socket_path(data_dir / "mw" / "watcher")
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o660
    done = cli("enter", "--message", "over the socket", data_dir=data_dir)
    assert done.returncode == 0 and "through the running service" in done.stdout, done
    assert b"over the socket" in maint(data_dir).read_bytes()
    done = cli("trigger", "dbcheck", "--wait", data_dir=data_dir)
    assert done.returncode == 0 and "finished" in done.stdout, done
    done = cli("leave", data_dir=data_dir)
    assert done.returncode == 0 and "through the running service" in done.stdout, done
    assert not maint(data_dir).exists()
    assert not (data_dir / "mw" / "spool" / ".control").exists()


def test_stale_socket_does_not_block_a_restart(data_dir: Path, service: Start) -> None:
    """After kill -9 the socket file stays; the next service replaces it and answers."""
    first = service()
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    sock = socket_path(data_dir / "mw" / "watcher")
    assert os.path.lexists(sock)
    done = cli("enter", data_dir=data_dir)
    assert done.returncode == 0 and "service not running" in done.stdout, done
    service()
    done = cli("leave", data_dir=data_dir)
    assert done.returncode == 0 and "through the running service" in done.stdout, done


def test_service_without_its_socket_says_so(data_dir: Path, service: Start) -> None:
    """When the socket cannot be made the service runs on; the CLI names what is missing."""
    state = data_dir / "mw" / "watcher"
    state.mkdir(parents=True, exist_ok=True)
    (state / "control.sock").mkdir()  # a directory where the socket belongs
    (state / "control.sock" / "x").write_text("x")
    svc = service()
    svc.wait_for("control.unavailable")
    done = cli("enter", data_dir=data_dir)
    assert done.returncode == 1, done
    assert "cannot be reached" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _as_nobody(path: Path, req: dict[str, Any]) -> dict[str, Any]:
    """``request`` from a child running as uid/gid 65534, reaching ``path`` by an open handle."""
    read, write = os.pipe()
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = request(Path(f"/proc/self/fd/{dir_fd}/{path.name}"), req)
            os.write(write, repr(answer).encode())
        except BaseException as exc:
            os.write(write, repr({"error": str(exc)}).encode())
        os._exit(0)
    os.close(write)
    os.close(dir_fd)
    with os.fdopen(read, "rb") as f:
        raw = f.read()
    os.waitpid(pid, 0)
    import ast

    result = ast.literal_eval(raw.decode())
    assert isinstance(result, dict)
    return result


@pytest.mark.root
@pytest.mark.parametrize("allowed", [False, True])
def test_other_uid_is_refused_unless_allowed(
    data_dir: Path, service: Start, tmp_path: Path, allowed: bool
) -> None:
    """A uid that is neither root, watcher's nor allowed is refused and reported by uid."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    uids = f"allowed_uids = [{NOBODY}]\n" if allowed else ""
    config = write_config(tmp_path / "w.toml", f"[control]\ngroup = {NOBODY}\n{uids}")
    svc = service(config)
    mark = svc.mark()
    answer = _as_nobody(socket_path(data_dir / "mw" / "watcher"), {"op": "enter"})
    if allowed:
        assert answer["ok"] is True, answer
        assert maint(data_dir).exists()
    else:
        assert answer.get("refused") is True and f"uid {NOBODY}" in answer["message"], answer
        event = svc.wait_for("control.refused", after=mark)
        assert f"uid {NOBODY}" in event["message"]
        assert event["watcher"]["uid"] == NOBODY
        assert not maint(data_dir).exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"for": 3600},
        {"for": 0},
        {"for": False},
        {"for": ""},
        {"until": 1234},
        {"until": ["12:00"]},
        {"window": 5},
        {"window": {"start": "01:00"}},
        {"message": {"text": "x"}},
        {"message": 7},
    ],
)
def test_enter_refuses_fields_that_are_not_strings(
    data_dir: Path, service: Start, fields: dict[str, Any]
) -> None:
    """A socket ``enter`` whose for/until/window/message is not a string is refused."""
    service()
    answer = request(socket_path(data_dir / "mw" / "watcher"), {"op": "enter", **fields})
    assert answer["ok"] is False, answer
    assert "--" in answer["message"], answer
    assert not maint(data_dir).exists()


@pytest.mark.parametrize(
    ("job", "args", "reason"),
    [
        ("zz-nosuch", {}, "unknown_job"),
        ("dbcheck", {"argv": ["/bin/sh"]}, "bad_args"),
        ("backup", {"dest": "/etc"}, "path_not_allowed"),
    ],
    ids=["unknown-job", "argv", "path"],
)
def test_trigger_the_spool_would_reject_is_refused(
    data_dir: Path, service: Start, job: str, args: dict[str, Any], reason: str
) -> None:
    """A socket ``trigger`` the spool would reject is refused at once, and nothing is dropped."""
    service()
    request_ = {"op": "trigger", "job": job, "args": args}
    answer = request(socket_path(data_dir / "mw" / "watcher"), request_)
    assert answer["ok"] is False and reason in answer["message"], answer
    spool = data_dir / "mw" / "spool"
    assert sorted(p.name for p in spool.iterdir() if not p.name.startswith(".")) == [
        "done",
        "failed",
    ]
