"""Starting and stopping the processes the benchmarks measure: watcher and its references.

``watcher run`` is started the way an operator starts it (``python -m watcher run``
with the venv's interpreter), in an environment without ``WATCHER_CONFIG`` or systemd
variables so the bench's own surroundings cannot change its configuration.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bench.lines import PipeLines, contains, wait_for

READY = b'"action":"service.ready"'
_SCRUBBED = ("WATCHER_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

Proc = subprocess.Popen[bytes]


def bench_env() -> dict[str, str]:
    """The environment for children: ours, minus what would reconfigure watcher."""
    return {k: v for k, v in os.environ.items() if k not in _SCRUBBED}


def watcher_argv(data_dir: Path, config: Path | None = None) -> list[str]:
    """``python -m watcher run`` for ``data_dir``, with the default config unless given one."""
    argv = [sys.executable, "-m", "watcher", "run", "--data-dir", str(data_dir)]
    return [*argv, "--config", str(config)] if config is not None else argv


def write_log_config(path: Path, log_file: Path) -> Path:
    """The default configuration plus a JSON log handler writing to ``log_file``.

    The default's own handler (stdout) is kept, as it would be in production.
    """
    path.write_text(
        "# written by bench: defaults, plus a JSON log file the bench tails\n"
        '[[handlers]]\ntype = "log"\ntarget = "stdout"\nformat = "auto"\n\n'
        f'[[handlers]]\ntype = "log"\ntarget = "{log_file}"\nformat = "json"\n'
    )
    return path


def spawn(argv: Sequence[str], *, stdout: int | IO[Any] | None = subprocess.DEVNULL) -> Proc:
    """Start a child with the bench environment, stdin closed."""
    return subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=stdout, env=bench_env(), close_fds=True
    )


def stop(proc: Proc, timeout: float = 15.0) -> int:
    """SIGTERM, wait, SIGKILL if it will not go; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


@contextmanager
def stopped_at_exit(proc: Proc) -> Iterator[Proc]:
    """Make sure ``proc`` is stopped when the block ends, however it ends."""
    try:
        yield proc
    finally:
        stop(proc)


def start_until_ready(argv: Sequence[str], marker: bytes = READY) -> tuple[Proc, float]:
    """Start a child and wait for a stdout line containing ``marker``; (proc, seconds)."""
    started = time.perf_counter_ns()
    proc = spawn(argv, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    found = wait_for({"ready": (PipeLines(proc.stdout.fileno()), contains(marker))}, started, 30)
    if found["ready"] is None:
        stop(proc)
        raise RuntimeError(f"{' '.join(argv[:4])} printed no {marker.decode()} within 30 s")
    return proc, found["ready"] / 1000


def inotifywait_argv(directory: Path) -> list[str]:
    """``inotifywait -m`` on one directory, printing ``EVENTS NAME`` per change."""
    exe = shutil.which("inotifywait")
    if exe is None:
        raise RuntimeError("inotifywait (inotify-tools) is needed as the reference")
    events = ["-e", "create", "-e", "delete", "-e", "moved_to", "-e", "moved_from"]
    return [exe, "-m", *events, "--format", "%e %f", str(directory)]


def start_inotifywait(directory: Path) -> Proc:
    """Start the reference watcher and return once its watch is established."""
    proc = subprocess.Popen(
        inotifywait_argv(directory),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"Watches established" in line:
            return proc
    stop(proc)
    raise RuntimeError(f"inotifywait failed on {directory}")
