"""The control socket (``mw/watcher/control.sock``): how the CLI reaches the running service.

One JSON object per connection each way: the CLI connects, sends its request and shuts
its side down (or ends it with a newline); the service answers one JSON object and
closes. Nothing touches the disk on the way, so a full or read-only filesystem cannot
stop a request, and there is no polling: the answer arrives on the connection.

Who may ask is decided by the kernel's word, ``SO_PEERCRED``: root, watcher's own uid,
and ``[control] allowed_uids`` / ``allowed_gids`` (the peer's primary group). The socket
file is mode 0660 (group ``[control] group`` when set), so the filesystem already keeps
strangers out; a peer that gets through but is not allowed is answered with a refusal
and reported (``control.refused``). A request larger than ``MAX_REQUEST``, not JSON, not
an object, or slower than ``READ_TIMEOUT`` is answered with an error; the connection
never blocks the service.

A path longer than ``sockaddr_un`` allows (108 bytes) is reached through
``/proc/self/fd/N/``, an open handle on its directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024
READ_TIMEOUT = 2.0  # seconds a peer has to send its whole request
SOCKET_MODE = 0o660
_MAX_SUN_PATH = 100  # sockaddr_un holds 108 bytes; keep a margin

Answer = dict[str, Any]


class ControlUnavailable(Exception):
    """The service cannot be reached through its socket; the message says why."""


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the kernel says (``SO_PEERCRED``)."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class Access:
    """Who may send requests besides root and watcher's own uid."""

    own_uid: int
    allowed_uids: tuple[int, ...] = ()
    allowed_gids: tuple[int, ...] = ()

    def allows(self, peer: Peer) -> bool:
        return (
            peer.uid in (0, self.own_uid)
            or peer.uid in self.allowed_uids
            or peer.gid in self.allowed_gids
        )


Handler = Callable[[dict[str, Any], Peer], Answer]
Refused = Callable[[Peer], None]


def socket_path(state: Path) -> Path:
    return state / SOCKET_NAME


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """A name ``bind``/``connect`` accept for ``path``, however long the path is."""
    if len(os.fsencode(path)) <= _MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


# --- the client (the CLI) -----------------------------------------------------------------


def request(path: Path, req: Mapping[str, Any], timeout: float = 30.0) -> Answer:
    """Send ``req`` to the service at ``path`` and return its answer.

    Raises ``ControlUnavailable`` (one line saying why) when there is no socket, nobody
    listens, the socket cannot be reached (permissions), or the answer does not come.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            with _addressable(path) as name:
                sock.connect(name)
        except FileNotFoundError:
            raise ControlUnavailable(f"no control socket {path}") from None
        except ConnectionRefusedError:
            raise ControlUnavailable(f"nobody listens on {path} (a stale socket)") from None
        except OSError as exc:
            raise ControlUnavailable(f"cannot connect to {path}: {exc.strerror}") from None
        try:
            sock.sendall(orjson.dumps(dict(req)) + b"\n")
            sock.shutdown(socket.SHUT_WR)
            raw = _receive_all(sock)
        except TimeoutError:
            raise ControlUnavailable(f"the service did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise ControlUnavailable(f"the connection to {path} failed: {exc.strerror}") from None
    finally:
        sock.close()
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ControlUnavailable("the service's answer was not JSON") from None
    if not isinstance(answer, dict):
        raise ControlUnavailable("the service's answer was not a JSON object")
    return answer


def _receive_all(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# --- the server (the service) -------------------------------------------------------------


def bind(path: Path, group: int | None = None) -> socket.socket:
    """A listening socket at ``path`` (mode 0660, ``group`` when given).

    The caller holds the instance lock, so a socket file already there is a dead service's
    leftover and is replaced. Raises ``OSError`` when the socket cannot be made.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _addressable(path) as name:
            old = os.umask(0o177)  # never reachable by others, not even for a moment
            try:
                sock.bind(name)
            finally:
                os.umask(old)
        os.chmod(path, SOCKET_MODE)
        if group is not None:
            os.chown(path, -1, group)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    sock: socket.socket,
    access: Callable[[], Access],
    handler: Handler,
    refused: Refused,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on ``sock`` until cancelled; each gets one answer."""
    listener = await anyio.abc.SocketListener.from_socket(sock)
    async with listener, anyio.create_task_group() as tg:
        task_status.started()
        while True:
            stream = await listener.accept()
            tg.start_soon(_connection, stream, access, handler, refused)


async def _connection(
    stream: anyio.abc.SocketStream, access: Callable[[], Access], handler: Handler, refused: Refused
) -> None:
    async with stream:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            answer = await _answer_for(stream, access, handler, refused)
            await stream.send(orjson.dumps(answer) + b"\n")


async def _answer_for(
    stream: anyio.abc.SocketStream, access: Callable[[], Access], handler: Handler, refused: Refused
) -> Answer:
    peer = peer_of(stream.extra(anyio.abc.SocketAttribute.raw_socket))
    raw = b""
    with anyio.move_on_after(READ_TIMEOUT) as scope:
        raw = await _read_request(stream)  # read first, so the refusal is not a reset
    if not access().allows(peer):
        refused(peer)
        return {"ok": False, "refused": True, "message": f"uid {peer.uid} may not control watcher"}
    if scope.cancelled_caught:
        return {"ok": False, "message": f"request not complete within {READ_TIMEOUT:g}s"}
    if len(raw) > MAX_REQUEST:
        return {"ok": False, "message": f"request larger than {MAX_REQUEST} bytes"}
    try:
        req = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"ok": False, "message": "request is not valid JSON"}
    if not isinstance(req, dict):
        return {"ok": False, "message": "a request is a JSON object"}
    return _safely(handler, req, peer)


async def _read_request(stream: anyio.abc.SocketStream) -> bytes:
    """Bytes up to the peer's end of writing, a newline, or just past ``MAX_REQUEST``."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_REQUEST:
        try:
            chunk = await stream.receive(65536)
        except anyio.EndOfStream:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
    return b"".join(chunks)


def _safely(handler: Handler, req: dict[str, Any], peer: Peer) -> Answer:
    """The handler's answer; whatever it raised becomes an answer, never a crash."""
    try:
        return handler(req, peer)
    except Exception as exc:
        return {"ok": False, "message": f"request failed: {type(exc).__name__}: {exc}"}
