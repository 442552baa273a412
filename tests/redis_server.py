"""A real ``redis-server`` for tests and benchmarks: on a unix socket, append-only, own dir."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

READY = "ready to accept connections"


class RedisServer:
    """``redis-server`` on ``<dir>/redis.sock`` with ``appendonly yes`` (state survives a kill)."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.extra = extra  # more redis-server options, e.g. "--requirepass", "s3cret"
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start it and return once its log says it accepts connections."""
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line.rstrip())
                if READY in line.lower():
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("redis-server did not start:\n" + "\n".join(self.log[-20:]))
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would; reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            self._reader.join(15.0)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        self.proc = None
