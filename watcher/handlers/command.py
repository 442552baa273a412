"""The ``command`` handler: run an argv (never a shell) with the event's JSON on stdin.

Its environment is watcher's without the variables that hold watcher's secrets
(``secret_env``, ``password_env``: ``watcher.system.secretenv``), plus ``WATCHER_EVENT_ACTION``.
Each event starts the command in a new session; if it outlives the handler's timeout
the whole process group is killed, so a hung script leaves nothing behind. A non-zero
exit raises, which the bus reports as ``handler.failed``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import anyio
from anyio.abc import Process

from watcher.config import HandlerConfig
from watcher.events.record import Event, Origin, render_json
from watcher.system.secretenv import child_environ


class CommandFailed(RuntimeError):
    """The command exited non-zero."""


class CommandHandler:
    """Runs ``argv`` once per event."""

    def __init__(self, config: HandlerConfig, origin: Origin) -> None:
        if not config.argv:
            raise ValueError("a command handler needs a non-empty argv")
        self.argv = list(config.argv)
        self.origin = origin

    async def __call__(self, event: Event) -> None:
        payload = render_json(event, self.origin) + b"\n"
        env = {**child_environ(), "WATCHER_EVENT_ACTION": event.action}
        process = await anyio.open_process(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            assert process.stdin is not None
            # A command that does not read its stdin is within its rights.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.send(payload)
            await process.stdin.aclose()
            stderr = await _read_all(process)
            code = await process.wait()
        except BaseException:
            _kill_group(process)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await process.aclose()
        if code != 0:
            tail = stderr.decode(errors="replace").strip()[-500:]
            raise CommandFailed(
                f"{self.argv[0]} exited with status {code}" + (f": {tail}" if tail else "")
            )


async def _read_all(process: Process) -> bytes:
    assert process.stderr is not None
    chunks: list[bytes] = []
    async for chunk in process.stderr:
        chunks.append(chunk)
    return b"".join(chunks)[-4096:]


def _kill_group(process: Process) -> None:
    """SIGKILL the command's whole process group (it runs in its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
