"""A child process started in the caller's turn of the event loop, its end awaited on a pidfd.

Why not ``anyio.open_process`` (measured, issue 15): it yields a turn of the event loop
before it forks, so every handler's delivery queued that turn (``trigger.accepted``,
``job.started`` written to the log) runs first — ≈ 0.19 ms on a lone trigger's path to its
job — and asyncio then builds a subprocess transport, connects a read-pipe transport per
stream and starts a thread per child to ``waitpid`` in (``ThreadedChildWatcher``), ≈ 1 ms of
the loop's time after the fork. Here the process is started at once; its end is a pidfd
becoming readable (Linux ≥ 5.3), its output non-blocking pipes read when readable — no
thread, no transport, no polling. Without pidfds (an old kernel, seccomp) the end is
awaited by ``waitpid`` in a worker thread instead. The command job and the command handler
both start their processes here.

Why ``os.posix_spawn`` and not ``subprocess.Popen`` (measured, issue 15): ``Popen`` spends
≈ 0.18 ms of Python before its fork on a lone trigger's path (its pipes, the environment
encoded item by item, the ``PATH`` candidates) and reads an error pipe after it;
``posix_spawn`` does the same in C, in glibc's ``vfork``-style clone, and reports a failed
``exec`` as its own ``OSError``: 0.37–0.43 ms per start against 0.54–0.56 ms, from a 40 MB
process (``/usr/bin/true``, stdin ``/dev/null``, two pipes, a new session). What ``Popen``
does besides, this does too: SIGPIPE and SIGXFSZ back to their defaults, a program without
``/`` looked up in the given environment's ``PATH``. ``Popen``'s ``close_fds`` has no
``posix_spawn`` action here: the child gets no descriptor of ours because every descriptor
the service opens is close-on-exec (Python's default since 3.4; sqlite, epoll, inotify and
the sockets alike), and the descriptors the service was started with (a shell's, a
launcher's: anything but 0, 1 and 2) are made close-on-exec once, before the first child
(``_keep_inherited_to_ourselves``; scanning before every start would cost ≈ 0.06 ms). A
descriptor a plugin makes inheritable on purpose after that would reach children; a test
holds the child to the rest.

After the fork the service yields the CPU once (``sched_yield``). Measured on this 2-core
VM (Linux 6.18): the new process waits on the CPU of the process that started it until
that one blocks — 2.8 ms from ``Popen`` returning to the process's first instruction of its
own while the parent kept busy for 2 ms, 0.7 ms when the parent yielded first (or slept).
The service's follow-up work (the handlers writing ``trigger.accepted`` and
``job.started``) would otherwise delay the job it has just started.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence

import anyio
import anyio.to_thread

READ_SIZE = 64 * 1024
# Python ignores these; a program started by ``exec`` would inherit the ignoring (a shell
# pipeline's ``head`` would then never stop its writer). ``subprocess`` resets the same two.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
_unreaped: set[int] = set()  # children closed before their end: reaped when they are done


class Child:
    """A process in a new session (it leads its own process group), its standard error on a
    pipe, its standard output on a pipe or ``/dev/null``, its standard input ``/dev/null`` or
    a pipe fed by ``send``. It gets no descriptor of ours but those three."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        stdin: bool = False,
        stdout: bool = True,
    ) -> None:
        """Start ``argv`` now; ``OSError`` when it cannot be started. ``stdin``: a pipe to
        write to (else ``/dev/null``); ``stdout``: a pipe to read (else ``/dev/null``).
        A program without a ``/`` is looked up in ``env``'s ``PATH``, as ``subprocess``
        does."""
        _keep_inherited_to_ourselves()
        _reap_finished()
        self.returncode: int | None = None  # the exit status (negative: killed by that signal)
        self.stdout: int | None  # the pipes' reading ends, non-blocking (None once closed)
        self.stderr: int | None
        self._stdin, self.stdout, self.stderr, self.pid = _spawn(list(argv), env, stdin, stdout)
        self._pidfd = _pidfd(self.pid)
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
        _close(self._stdin)
        self._stdin = None

    async def wait(self) -> int:
        """Wait for the process to end and reap it; its exit status."""
        if self.returncode is not None:
            return self.returncode
        if self._pidfd is None:
            status = await anyio.to_thread.run_sync(_waitpid, self.pid, abandon_on_cancel=True)
        else:
            await anyio.wait_readable(self._pidfd)
            status = _waitpid(self.pid)
        self.returncode = status
        return status

    def close(self) -> None:
        """Close the pipes and the pidfd; idempotent. A process still running is left to run
        and reaped once it has ended (at the next ``Child`` started)."""
        self._close_stdin()
        for fd in (self.stdout, self.stderr, self._pidfd):
            _close(fd)
        self.stdout = self.stderr = self._pidfd = None  # a later wait() uses a thread
        if self.returncode is None:
            _unreaped.add(self.pid)


def _spawn(
    argv: list[str], env: Mapping[str, str], stdin: bool, stdout: bool
) -> tuple[int | None, int | None, int, int]:
    """``posix_spawn`` (glibc's is a ``vfork``: nothing of ours is copied, and an ``exec``
    that fails raises here): our ends of its stdin, stdout and stderr pipes (non-blocking),
    and its pid."""
    ours: list[int] = []
    theirs: list[int] = []
    actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
    try:
        for target, wanted, reading in ((0, stdin, False), (1, stdout, True), (2, True, True)):
            if not wanted:
                mode = os.O_RDONLY if target == 0 else os.O_WRONLY
                actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, mode, 0))
                ours.append(-1)
                continue
            read_end, write_end = _pipe()
            mine, child = (read_end, write_end) if reading else (write_end, read_end)
            os.set_blocking(mine, False)
            ours.append(mine)
            theirs.append(child)
            actions.append((os.POSIX_SPAWN_DUP2, child, target))
        pid = os.posix_spawn(
            _program(argv[0], env),
            argv,
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=DEFAULT_SIGNALS,
        )
    except BaseException:
        for fd in ours:
            _close(fd if fd >= 0 else None)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    fds = [fd if fd >= 0 else None for fd in ours]
    stderr = fds[2]
    assert stderr is not None
    return fds[0], fds[1], stderr, pid


def _program(name: str, env: Mapping[str, str]) -> str:
    """The file to execute: ``name`` itself when it holds a ``/``, else the first executable
    of that name in ``env``'s ``PATH`` (its default when unset)."""
    if os.sep in name:
        return name
    found = shutil.which(name, path=os.pathsep.join(os.get_exec_path(env)))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
    return found


def _pipe() -> tuple[int, int]:
    """A pipe (close-on-exec) whose ends are not 0, 1 or 2: were the service started with
    one of those closed, a pipe could get it, and ``dup2`` onto itself would keep it
    close-on-exec, closing it in the child."""
    ends = list(os.pipe())
    for i, fd in enumerate(ends):
        if fd <= 2:
            ends[i] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    return ends[0], ends[1]


@functools.cache
def _keep_inherited_to_ourselves() -> None:
    """Make the descriptors this process inherited (all but 0, 1, 2) close-on-exec, once."""
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            with contextlib.suppress(OSError):  # the listing's own, closed by now
                if fd > 2 and os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


def _waitpid(pid: int) -> int:
    """Reap ``pid``; its exit status (negative: the signal that killed it)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): as subprocess does
        return 0
    return os.waitstatus_to_exitcode(status)


def _reap_finished() -> None:
    """Reap the children closed before their end that have ended since."""
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.discard(pid)


def _close(fd: int | None) -> None:
    """Close ``fd`` if it is one (already closed: nothing to do)."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


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
