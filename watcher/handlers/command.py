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

import anyio

from watcher.config import HandlerConfig
from watcher.events.record import Event, Origin, render_json
from watcher.system.child import Child, Tail, read_until_closed
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
        child = Child(self.argv, env, stdin=True, stdout=False)
        stderr = Tail(4096)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_until_closed, child.stderr, stderr.keep)
                await child.send(payload)
                code = await child.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # the whole group (its own session)
            with anyio.move_on_after(1, shield=True):
                await child.wait()
            raise
        finally:
            child.close()
        if code != 0:
            tail = stderr.text().strip()[-500:]
            raise CommandFailed(
                f"{self.argv[0]} exited with status {code}" + (f": {tail}" if tail else "")
            )
