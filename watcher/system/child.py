"""A child process started in the caller's turn of the event loop, its end awaited on a pidfd.

Why not ``anyio.open_process`` (measured, issue 15): it yields a turn of the event loop
before it forks, so every handler's delivery queued that turn (``trigger.accepted``,
``job.started`` written to the log) runs first — ≈ 0.19 ms on a lone trigger's path to its
job — and asyncio then builds a subprocess transport, connects a read-pipe transport per
stream and starts a thread per child to ``waitpid`` in (``ThreadedChildWatcher``), ≈ 1 ms of
the loop's time after the fork. Here ``subprocess.Popen`` forks at once; the process's end
is a pidfd becoming readable (Linux ≥ 5.3), its output non-blocking pipes read when
readable — no thread, no transport, no polling. Without pidfds (an old kernel, seccomp)
the end is awaited by ``Popen.wait`` in a worker thread instead. The command job and the
command handler both start their processes here.

After the fork the service yields the CPU once (``sched_yield``). Measured on this 2-core
VM (Linux 6.18): the new process waits on the CPU of the process that started it until
that one blocks — 2.8 ms from ``Popen`` returning to the process's first instruction of its
own while the parent kept busy for 2 ms, 0.7 ms when the parent yielded first (or slept).
The service's follow-up work (the handlers writing ``trigger.accepted`` and
``job.started``) would otherwise delay the job it has just started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import anyio
import anyio.to_thread

READ_SIZE = 64 * 1024


class Child:
    """A process in a new session (it leads its own process group), its standard error on a
    pipe, its standard output on a pipe or ``/dev/null``, its standard input ``/dev/null`` or
    a pipe fed by ``send``."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        stdin: bool = False,
        stdout: bool = True,
    ) -> None:
        """Start ``argv`` now; ``OSError`` when it cannot be started. ``stdin``: a pipe to
        write to (else ``/dev/null``); ``stdout``: a pipe to read (else ``/dev/null``)."""
        self._popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            bufsize=0,  # the pipes as plain file objects: used here by descriptor
        )
        self.pid = self._popen.pid
        self._pidfd = _pidfd(self.pid)
        self.stdout = _nonblocking(self._popen.stdout)
        self.stderr = _nonblocking(self._popen.stderr)
        self._stdin = _nonblocking(self._popen.stdin)
        os.sched_yield()  # let it start now, not after our own follow-up work: see above

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the process's standard input, then close it. A process that
        stops reading (or never reads) is within its rights: the rest is dropped."""
        fd = self._stdin
        if fd is None:
            raise ValueError("this child's standard input is not a pipe")
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:  # the pipe is full: wait until the process reads
                    await anyio.wait_writable(fd)
        except BrokenPipeError:
            pass
        finally:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self._popen.stdin is not None and not self._popen.stdin.closed:
            self._popen.stdin.close()
        self._stdin = None

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal); ``None`` until awaited."""
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait for the process to end and reap it; its exit status."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        if self._pidfd is None:
            return await anyio.to_thread.run_sync(self._popen.wait, abandon_on_cancel=True)
        await anyio.wait_readable(self._pidfd)
        return self._popen.wait()

    def close(self) -> None:
        """Close the pipes and the pidfd (the process itself is left as it is); idempotent."""
        self._close_stdin()
        for stream in (self._popen.stdout, self._popen.stderr):
            if stream is not None:
                stream.close()
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = None  # a later wait() falls back to a thread


class Tail:
    """The last ``limit`` bytes of a stream, handed over chunk by chunk (``keep``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def keep(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        """The tail as text (UTF-8, undecodable bytes replaced)."""
        return self.data.decode("utf-8", "replace")


async def read_until_closed(fd: int | None, keep: Callable[[bytes], None]) -> None:
    """Read the non-blocking pipe ``fd`` until its writers have all closed it, handing each
    chunk to ``keep``."""
    if fd is None:
        return
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            continue
        if not chunk:
            return
        keep(chunk)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd_open here: wait in a thread instead
        return None


def _nonblocking(stream: IO[bytes] | None) -> int | None:
    """The pipe's descriptor, made non-blocking (``Child.close`` closes it)."""
    if stream is None:
        return None
    fd = stream.fileno()
    os.set_blocking(fd, False)
    return fd
