"""Shared fixtures: a real data directory, the real CLI, and the real service as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
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
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m watcher ARGS`` as an operator would, capturing its output (under
    ``umask`` when given)."""
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
        umask=umask,
    )


class ServiceProcess:
    """``watcher run`` in a subprocess; its JSON event lines are collected as they arrive."""

    def __init__(
        self,
        data_dir: Path,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        umask: int = -1,
    ) -> None:
        argv = [sys.executable, "-m", "watcher", "run", "--data-dir", str(data_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "WATCHER_CONFIG": "", **(env or {})},
            umask=umask,
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

    def wait_count(
        self, actions: tuple[str, ...], n: int, after: int = 0, timeout: float = WAIT
    ) -> int:
        """Wait until ``n`` events with one of ``actions`` are seen from ``after``, or fail."""

        def count() -> int:
            return sum(1 for e in self.events[after:] if e["event"]["action"] in actions)

        with self._cond:
            self._cond.wait_for(lambda: count() >= n or self.proc.poll() is not None, timeout)
            seen = count()
        if seen < n:
            raise AssertionError(
                f"{seen} of {n} {'/'.join(actions)} events (exit={self.proc.poll()}, "
                f"stderr={self.stderr[-2000:]!r})"
            )
        return seen

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

    def kill(self) -> None:
        """SIGKILL the process if it still runs, reap it, join the readers, close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close()

    def close(self) -> None:
        """Join the readers and close the pipes (no ResourceWarning under filterwarnings)."""
        self._reader.join(WAIT)
        self._errs.join(WAIT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


Start = Callable[..., ServiceProcess]


@pytest.fixture
def service(data_dir: Path) -> Iterator[Start]:
    """Start ``watcher run`` on the data dir (optionally with a config); stopped at teardown."""
    started: list[ServiceProcess] = []

    def start(
        config: Path | None = None,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        root: Path | None = None,
        umask: int = -1,
    ) -> ServiceProcess:
        proc = ServiceProcess(root or data_dir, config, env, umask)
        started.append(proc)
        return proc.ready() if wait_ready else proc

    yield start
    for proc in started:
        proc.kill()


@contextmanager
def service_at(service: Start, root: Path) -> Iterator[Callable[[Path], ServiceProcess]]:
    """``service`` on the data dir ``root``, given a config; each process it started is killed
    on leaving (before, say, the filesystem under ``root`` is unmounted)."""
    started: list[ServiceProcess] = []

    def start(config: Path) -> ServiceProcess:
        proc = service(config, root=root)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.kill()


def stopped_once(service: Start, *args: Any, **kwargs: Any) -> ServiceProcess:
    """Run the service once and stop it, so the spool and state are its own."""
    first = service(*args, **kwargs)
    assert first.stop() == 0
    return first


def write_config(path: Path, text: str) -> Path:
    """Write a TOML config file and return its path."""
    path.write_text(text)
    return path


def toml(value: Any) -> str:
    """A TOML value for a string or a list of strings (JSON spells them the same way)."""
    return json.dumps(value)


def allowed_paths(*paths: Path) -> str:
    """A ``[trigger]`` table allowing ``paths`` in the arguments of triggered jobs."""
    return f"[trigger]\nallowed_paths = {toml([str(p) for p in paths])}\n"


def drop_trigger(spool: Path, name: str, body: dict[str, Any] | bytes | None = None) -> Path:
    """Put a trigger in the spool the way writers should: staged under a dot-name, renamed."""
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    staged = spool / f".{name}.staging"
    staged.write_bytes(data)
    os.rename(staged, spool / name)
    return spool / name


def maint(root: Path) -> Path:
    """The maint file of the data dir ``root``."""
    return root / "mw" / "data" / "maint"


def ran(name: str) -> Callable[[Doc], bool]:
    """Job events of the job started by the trigger file ``name``."""
    return lambda e: bool(e["watcher"].get("job", {}).get("trigger") == name)


def filed_in(spool: Path, name: str) -> list[str]:
    """The spool folders of ``done`` and ``failed`` that hold ``name`` (settled: not empty)."""
    return [d for d in ("done", "failed") if os.path.lexists(spool / d / name)]


def make_db(path: Path, rows: int = 3000) -> Path:
    """A database with a table of ``rows`` rows and an index on its text column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
        conn.execute("CREATE INDEX t_v ON t (v)")
        conn.executemany(
            "INSERT INTO t (v, n) VALUES (?, ?)",
            ((f"value-{i:06d}-" + "x" * 40, i) for i in range(rows)),
        )
        conn.commit()
    return path


def corrupt_db(path: Path) -> Path:
    """Overwrite 512 bytes in the middle of a leaf page of the index b-tree."""
    with closing(sqlite3.connect(path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = [
            row[0]
            for row in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 't_v' AND pagetype = 'leaf' ORDER BY pageno"
            )
        ]
    assert len(leaves) > 2
    page = leaves[len(leaves) // 2]
    with path.open("r+b") as f:
        f.seek((page - 1) * page_size + page_size // 2 - 256)
        f.write(b"\xa5" * 512)
    return path


def eventually(check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Await a condition on files (no event announces it): ``check()``'s first truthy value.

    Used where watcher writes after its events (an adopted maint file is rewritten as JSON
    once handlers have the events); fails after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (OSError, ValueError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(0.005)
