"""``Child``: a real process started at once, its output read and its end awaited on a pidfd."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path

import anyio
import pytest

from watcher.system.child import Child, read_until_closed

PY = sys.executable


async def output_and_status(child: Child) -> tuple[bytes, bytes, int]:
    """Everything the child wrote to each stream, and its exit status."""
    out: list[bytes] = []
    err: list[bytes] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_until_closed, child.stdout, out.append)
        tg.start_soon(read_until_closed, child.stderr, err.append)
        status = await child.wait()
    child.close()
    return b"".join(out), b"".join(err), status


def test_the_process_runs_before_anything_is_awaited_in_a_session_of_its_own() -> None:
    """Starting is synchronous (no turn of an event loop), and the child leads its group."""
    child = Child([PY, "-c", "import sys; sys.stdin.read(); import time; time.sleep(600)"], {})
    try:
        assert os.getpgid(child.pid) == child.pid
        assert os.getsid(child.pid) == child.pid
        assert child.returncode is None
    finally:
        os.kill(child.pid, signal.SIGKILL)
        assert anyio.run(child.wait) == -signal.SIGKILL
        child.close()


@pytest.mark.asyncio
async def test_output_and_exit_status_come_back_whole() -> None:
    """Both streams are read to their end; the status is the exit code; stdin is empty."""
    script = (
        "import sys; data = sys.stdin.read(); sys.stdout.write('o' * 300_000 + repr(data));"
        "sys.stderr.write('e' * 100_000); sys.exit(7)"
    )
    out, err, status = await output_and_status(Child([PY, "-c", script], dict(os.environ)))
    assert status == 7 and out == b"o" * 300_000 + b"''" and err == b"e" * 100_000


@pytest.mark.asyncio
async def test_the_environment_is_exactly_the_one_given() -> None:
    out, _err, status = await output_and_status(Child(["/usr/bin/env"], {"ONLY": "this"}))
    assert (out, status) == (b"ONLY=this\n", 0)


@pytest.mark.asyncio
async def test_a_killed_process_reports_the_signal() -> None:
    child = Child([PY, "-c", "import time; time.sleep(600)"], {})
    os.kill(child.pid, signal.SIGTERM)
    assert await child.wait() == -signal.SIGTERM
    assert await child.wait() == -signal.SIGTERM  # reaped once, asked again
    child.close()
    child.close()


@pytest.mark.asyncio
async def test_waiting_uses_no_thread() -> None:
    """The end is a pidfd becoming readable: no thread waits for it, nothing polls."""
    child = Child([PY, "-c", "import time; time.sleep(600)"], {})
    threads = threading.active_count()
    statuses: list[int] = []

    async def wait() -> None:
        statuses.append(await child.wait())

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        assert threading.active_count() == threads
        os.kill(child.pid, signal.SIGKILL)
    assert statuses == [-signal.SIGKILL]
    child.close()


@pytest.mark.asyncio
async def test_without_pidfds_the_end_is_awaited_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel without ``pidfd_open`` (ENOSYS) still gets the process reaped."""

    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    out, _err, status = await output_and_status(Child([PY, "-c", "print('hi')"], {}))
    assert (out, status) == (b"hi\n", 0)


def test_a_missing_program_raises_at_once(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(OSError):
        Child([os.path.join(tmp_path, "nope")], {})


@pytest.mark.asyncio
async def test_standard_input_larger_than_a_pipe_goes_through_whole() -> None:
    """``send`` writes more than the pipe holds (waiting until it is writable) and closes."""
    data = bytes(range(256)) * 4096  # 1 MiB
    child = Child(["/bin/cat"], {}, stdin=True)
    out: list[bytes] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(read_until_closed, child.stdout, out.append)
        await child.send(data)
        status = await child.wait()
    child.close()
    assert status == 0 and b"".join(out) == data


@pytest.mark.asyncio
async def test_a_process_that_does_not_read_its_input_is_within_its_rights() -> None:
    child = Child(["/bin/true"], {}, stdin=True, stdout=False)
    assert await child.wait() == 0
    await child.send(b"x" * 1024 * 1024)  # nobody reads: the rest is dropped, no error
    child.close()
    assert child.stdout is None


@pytest.mark.asyncio
async def test_a_child_closed_before_its_end_is_still_reaped() -> None:
    """``close`` lets go of the pipes and the pidfd; waiting afterwards still reaps it."""
    child = Child([PY, "-c", "import time; time.sleep(600)"], {})
    child.close()
    os.kill(child.pid, signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL


def _signal_bits(status_line: str) -> set[int]:
    """The signals a ``/proc/<pid>/status`` mask line (``SigIgn:``) names."""
    mask = int(status_line.split()[1], 16)
    return {n for n in range(1, 65) if mask & (1 << (n - 1))}


def _ignored(pid: int | str) -> set[int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return _signal_bits(next(line for line in lines if line.startswith("SigIgn:")))


def test_the_child_gets_only_its_three_streams_and_default_signals(tmp_path: Path) -> None:
    """No descriptor of ours reaches the program (sockets, files, pipes of this process
    stay here), and SIGPIPE and SIGXFSZ, which Python ignores, are back to their defaults."""
    held = [
        socket.socket(),
        open(tmp_path / "held", "wb"),  # noqa: SIM115  # reason: held open across the spawn
        *[os.fdopen(fd) for fd in os.pipe()],
    ]
    assert {signal.SIGPIPE, signal.SIGXFSZ} <= _ignored("self")
    child = Child(["/bin/sleep", "600"], {})  # started: posix_spawn returns after the exec
    try:
        assert sorted(os.listdir(f"/proc/{child.pid}/fd")) == ["0", "1", "2"]
        assert not {signal.SIGPIPE, signal.SIGXFSZ} & _ignored(child.pid)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        assert anyio.run(child.wait) == -signal.SIGKILL
        child.close()
        for thing in held:
            thing.close()


@pytest.mark.asyncio
async def test_a_bare_program_name_is_looked_up_in_the_given_path(tmp_path: Path) -> None:
    """``PATH`` of the child's environment decides, not ours; not found there is an error."""
    program = tmp_path / "hello-from-path"
    program.write_text("#!/bin/sh\necho found\n")
    program.chmod(0o755)
    out, _err, status = await output_and_status(
        Child([program.name], {"PATH": f"/nonexistent:{tmp_path}"})
    )
    assert (out, status) == (b"found\n", 0)
    with pytest.raises(FileNotFoundError):
        Child(["sleep", "600"], {"PATH": str(tmp_path)})  # on our PATH, not on the given one
