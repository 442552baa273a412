"""What every scenario is given, and the helpers they share: a data dir, the service,
a control-socket request."""

from __future__ import annotations

import json
import random
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ServiceProcess
from watcher.demo import create_demo


@dataclass
class Context:
    """A scenario's working directory, whether this is the short run, and its generator."""

    workdir: Path
    quick: bool
    seed: int
    rng: random.Random

    def data_dir(self, name: str = "data") -> Path:
        """A fresh demo data directory under the working directory."""
        root = self.workdir / name
        create_demo(root)
        return root


def control_socket(data_dir: Path) -> Path:
    return data_dir / "mw" / "watcher" / "control.sock"


def raw_request(data_dir: Path, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload`` to the control socket, shut the write side, read the whole answer.

    Raises ``TimeoutError`` (a hang) when no complete answer comes within ``timeout``.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(control_socket(data_dir)))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service stopped reading (a huge request): its answer still counts
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def request(data_dir: Path, doc: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """A well-formed request; the answer as a dict."""
    answer = json.loads(raw_request(data_dir, json.dumps(doc).encode(), timeout))
    assert isinstance(answer, dict)
    return answer


def service_active(data_dir: Path) -> bool | None:
    """The running service's own word on whether maintenance is on (``None``: no answer)."""
    try:
        answer = request(data_dir, {"op": "status"})
    except (OSError, ValueError, AssertionError):
        return None
    active = answer.get("active")
    return active if isinstance(active, bool) else None


def started(data_dir: Path, config: Path | None = None) -> ServiceProcess:
    """``watcher run`` on the data dir, ready; killed if it never gets ready (no leak)."""
    svc = ServiceProcess(data_dir, config)
    try:
        return svc.ready()
    except BaseException:
        svc.kill()
        raise
