"""The ``command`` job: run an argv (never through a shell) with a timeout and the job's context.

The process starts in a new session, so it leads its own process group and everything it
starts stays in that group. Its environment is watcher's (without the variables that hold
its secrets: ``secret_env``, ``password_env``), plus the context's ``env``, plus
the job's ``env`` argument, plus ``WATCHER_JOB_NAME``, ``WATCHER_JOB_TYPE``,
``WATCHER_DATA_DIR`` and ``WATCHER_JOB_ARGS`` (the normalised arguments as JSON); the
runner adds ``WATCHER_JOB_SOURCE`` (schedule, trigger) and ``WATCHER_TRIGGER`` (the trigger
file's name, or empty). Standard input is ``/dev/null``; the last 64 KiB of standard output
and of standard error are kept.

On timeout, cancellation (``ctx.cancelled`` or the task's cancel scope) the whole group gets
SIGTERM, then SIGKILL if anything in it is still running ``kill_grace`` seconds later.
Zombies count as gone (orphans may never be reaped when PID 1 is not an init). After the
command exits, output still held open by a process that left the group is read for at most
``DRAIN`` seconds.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from watcher.core.units import parse_duration
from watcher.jobs.base import ArgumentError, JobContext, JobFailed
from watcher.jobs.manifest import reject_unknown
from watcher.system.child import Child, Tail, read_until_closed
from watcher.system.secretenv import child_environ

TAIL_BYTES = 64 * 1024
KILL_GRACE = 5.0
DRAIN = 1.0
_POLL = 0.05


Status = Literal["exited", "timeout", "cancelled"]


@dataclass(frozen=True)
class Outcome:
    """How a command ended, its exit status (``None`` if it never ended) and its output."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True
    return any(_running_in_group(Path("/proc", pid, "stat"), pgid) for pid in pids)


def _running_in_group(stat_file: Path, pgid: int) -> bool:
    """Whether ``/proc/<pid>/stat`` describes a live process of group ``pgid``."""
    try:
        fields = stat_file.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X") and int(fields[2]) == pgid


async def _gone_within(pgid: int, seconds: float) -> bool:
    """Wait until group ``pgid`` has no running process; ``False`` if ``seconds`` pass first."""
    with anyio.move_on_after(seconds):
        # reason: a process group's end has no event to await, so its members are polled
        while group_alive(pgid):  # noqa: ASYNC110
            await anyio.sleep(_POLL)
        return True
    return False


async def kill_group(pgid: int, grace: float = KILL_GRACE) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` s if needed, wait until it is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, DRAIN)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if await _gone_within(pgid, wait):
            return


async def _wait(child: Child, cancelled: threading.Event | None) -> Status:
    """Wait for the process to exit (``"exited"``), or ``"cancelled"`` when the job was told
    to stop before it began waiting. A cancellation while waiting (timeout, shutdown)
    arrives as the scope's own cancellation, so nothing is polled."""
    if cancelled is not None and cancelled.is_set():
        return "cancelled"
    await child.wait()
    return "exited"


def start_command(argv: list[str], env: Mapping[str, str]) -> Child:
    """Start ``argv`` in its own process group, now (the fork happens in this call)."""
    try:
        return Child(argv, env)
    except OSError as exc:
        raise JobFailed("spawn_failed", f"cannot start {argv[0]}: {exc}", argv=argv) from exc


async def finish_command(
    child: Child,
    time_limit: float | None,
    *,
    grace: float = KILL_GRACE,
    cancelled: threading.Event | None = None,
) -> Outcome:
    """Wait for a started command, keep its output tails, kill its group on timeout.

    ``time_limit`` is in seconds (``None``: none); ``cancelled`` is the job's cancel flag.
    The child is killed, reaped and closed however this ends.
    """
    out, err = Tail(TAIL_BYTES), Tail(TAIL_BYTES)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_until_closed, child.stdout, out.keep)
            tg.start_soon(read_until_closed, child.stderr, err.keep)
            status: Status = "timeout"
            with anyio.move_on_after(math.inf if time_limit is None else time_limit):
                status = await _wait(child, cancelled)
            if status != "exited":
                await kill_group(child.pid, grace)
            tg.cancel_scope.deadline = anyio.current_time() + DRAIN
    except BaseException:
        with anyio.move_on_after(grace + DRAIN, shield=True):
            await kill_group(child.pid, grace)
            await child.wait()
        raise
    else:
        if child.returncode is None:  # timed out or cancelled, and killed: reap it
            with anyio.move_on_after(DRAIN, shield=True):
                await child.wait()
    finally:
        child.close()
    return Outcome(status, child.returncode, out.text(), err.text())


async def run_command(
    argv: list[str],
    env: Mapping[str, str],
    time_limit: float | None,
    *,
    grace: float = KILL_GRACE,
    cancelled: threading.Event | None = None,
) -> Outcome:
    """Run ``argv`` in its own process group (started before this coroutine first yields),
    keep its output tails, kill the group on timeout (``finish_command``)."""
    child = start_command(argv, env)
    return await finish_command(child, time_limit, grace=grace, cancelled=cancelled)


def job_env(ctx: JobContext, args: Mapping[str, Any]) -> dict[str, str]:
    """The command's environment: ours (without the variables holding secrets), the
    context's, the job's, then the WATCHER_* variables."""
    return {
        **child_environ(),
        **ctx.env,
        **args.get("env", {}),
        "WATCHER_JOB_NAME": ctx.name,
        "WATCHER_JOB_TYPE": ctx.type,
        "WATCHER_DATA_DIR": str(ctx.paths.data_dir),
        "WATCHER_JOB_ARGS": json.dumps(dict(args), sort_keys=True),
    }


def result_of(argv: list[str], timeout: float | None, outcome: Outcome) -> dict[str, Any]:
    """The job result for a successful run; ``JobFailed`` for any other ending."""
    output = {"stdout": outcome.stdout, "stderr": outcome.stderr}
    if outcome.status == "timeout":
        raise JobFailed(
            "timeout",
            f"{argv[0]} ran over its {timeout} s timeout; process group killed",
            timeout=timeout,
            **output,
        )
    if outcome.status == "cancelled":
        raise JobFailed("cancelled", f"{argv[0]} cancelled; process group killed", **output)
    code = outcome.returncode
    if code != 0:
        how = f"was killed by signal {-code}" if code and code < 0 else f"exited with status {code}"
        raise JobFailed("exit_status", f"{argv[0]} {how}", returncode=code, **output)
    return {"returncode": 0, **output}


class CommandJob:
    """Runs an external program with the job's context in its environment."""

    maintenance_default: bool = False
    retry_safe: bool = False
    path_args: tuple[str, ...] = ()
    threads: bool = False  # only awaits: a cancellation reaches it without ctx.cancelled

    def __init__(self, kill_grace: float = KILL_GRACE) -> None:
        self.kill_grace = kill_grace

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``argv`` (non-empty list of strings, required), ``timeout``, ``env`` (optional)."""
        reject_unknown(args, ("argv", "timeout", "env"))
        return {
            "argv": _argv_arg(args.get("argv")),
            "timeout": _timeout_arg(args.get("timeout")),
            "env": _env_arg(args.get("env", {})),
        }

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        """Run the command and turn its ending into a result or ``JobFailed``."""
        return await self.start(ctx)

    def start(self, ctx: JobContext) -> Awaitable[Mapping[str, Any]]:
        """Start the command now, before any await (the runner calls this in the turn that
        starts the job: issue 15); what it returns awaits the end, as ``run`` does. Awaiting
        it is what kills, reaps and closes the process: it must be awaited (a task the
        runner starts always reaches it, even when cancelled at once: see the runner)."""
        args = self.check_args(ctx.args)
        child = start_command(args["argv"], job_env(ctx, args))
        return self._finish(child, args, ctx)

    async def _finish(
        self, child: Child, args: Mapping[str, Any], ctx: JobContext
    ) -> Mapping[str, Any]:
        outcome = await finish_command(
            child, args["timeout"], grace=self.kill_grace, cancelled=ctx.cancelled
        )
        return result_of(args["argv"], args["timeout"], outcome)


def _argv_arg(value: object) -> list[str]:
    """``argv`` as a non-empty list of strings without NUL characters."""
    if value is None:
        raise ArgumentError("argv: required (a non-empty list of strings)")
    if not isinstance(value, list | tuple) or not value:
        raise ArgumentError(f"argv: expected a non-empty list of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or "\0" in item:
            raise ArgumentError(f"argv: every item must be a string without NUL, got {item!r}")
    if not value[0]:
        raise ArgumentError("argv: the program (first item) is empty")
    return list(value)


def _timeout_arg(value: object) -> float | None:
    """``timeout`` in seconds from a positive number or a duration such as ``"30m"``."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ArgumentError(f"timeout: {exc}") from None
    if seconds <= 0:
        raise ArgumentError(f"timeout: must be more than 0 seconds, got {value!r}")
    return seconds


def _env_arg(value: object) -> dict[str, str]:
    """``env`` as a mapping of variable names to string values."""
    if not isinstance(value, Mapping):
        raise ArgumentError(f"env: expected a table of strings, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ArgumentError(f"env: {key!r} is not a valid variable name")
        if not isinstance(item, str) or "\0" in item:
            raise ArgumentError(f"env: value of {key} must be a string, got {item!r}")
    return dict(value)


JOB = CommandJob()
