"""Shared fixtures: a real data directory, the real CLI, and the real service as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from watcher.demo import create_demo

Doc = dict[str, Any]
WAIT = 15.0  # generous upper bound for an awaited condition; never a sleep


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A fresh demo data directory (DESIGN §2 layout, real SQLite databases)."""
    root = tmp_path / "data"
    create_demo(root)
    return root


def cli(
    *args: str,
    data_dir: Path | None = None,
    config: Path | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m watcher ARGS`` as an operator would, capturing its output."""
    argv = [sys.executable, "-m", "watcher", *args]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WATCHER_CONFIG": "", **(env or {})},
    )


class ServiceProcess:
    """``watcher run`` in a subprocess; its JSON event lines are collected as they arrive."""

    def __init__(
        self, data_dir: Path, config: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        argv = [sys.executable, "-m", "watcher", "run", "--data-dir", str(data_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "WATCHER_CONFIG": "", **(env or {})},
        )
        self.events: list[Doc] = []
        self.lines: list[str] = []
        self.stderr = ""
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._errs = threading.Thread(target=self._read_err, daemon=True)
        self._errs.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                try:
                    self.events.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read().decode(errors="replace")

    def actions(self) -> list[str]:
        with self._cond:
            return [e["event"]["action"] for e in self.events]

    def wait_for(
        self,
        action: str,
        where: Callable[[Doc], bool] = lambda _e: True,
        after: int = 0,
        timeout: float = WAIT,
    ) -> Doc:
        """The first event with ``action`` (and ``where``) from index ``after``, or fail."""

        def found() -> Doc | None:
            for e in self.events[after:]:
                if e["event"]["action"] == action and where(e):
                    return e
            return None

        with self._cond:
            hit = self._cond.wait_for(
                lambda: found() is not None or self.proc.poll() is not None, timeout
            )
            event = found()
        if event is None:
            raise AssertionError(
                f"no {action} event (exit={self.proc.poll()}, saw {self.actions()}, "
                f"stderr={self.stderr[-2000:]!r}, hit={hit})"
            )
        return event

    def mark(self) -> int:
        """The index of the next event, to wait only for what happens after now."""
        with self._cond:
            return len(self.events)

    def ready(self) -> ServiceProcess:
        self.wait_for("service.ready")
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = WAIT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.close()
        return code

    def close(self) -> None:
        """Join the readers and close the pipes (no ResourceWarning under filterwarnings)."""
        self._reader.join(WAIT)
        self._errs.join(WAIT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def service(data_dir: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``watcher run`` on the data dir (optionally with a config); stopped at teardown."""
    started: list[ServiceProcess] = []

    def start(
        config: Path | None = None,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        root: Path | None = None,
    ) -> ServiceProcess:
        proc = ServiceProcess(root or data_dir, config, env)
        started.append(proc)
        return proc.ready() if wait_ready else proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
        proc.close()


def write_config(path: Path, text: str) -> Path:
    """Write a TOML config file and return its path."""
    path.write_text(text)
    return path
