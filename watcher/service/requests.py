"""What the service does with a request from its control socket (``enter``, ``leave``,
``trigger``, ``status``, ``ping``): each answered as a JSON object ``{"ok": …, "message": …}``.

Requests are carried out inside the event loop, between other work, in well under a
millisecond (plus the fsyncs that make ``enter``/``leave`` durable before the answer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from watcher.config import Config
from watcher.service.operations import RequestError, enter, leave
from watcher.service.spool import checked_request
from watcher.sources.control import Answer, Peer
from watcher.sources.triggerdrop import drop
from watcher.sources.triggerfile import Rejected

if TYPE_CHECKING:
    from watcher.service.controller import Controller
    from watcher.service.runner import JobRunner
    from watcher.service.scheduler import Scheduler


class Requests:
    """Carries out control requests on the running service's parts."""

    def __init__(
        self,
        config: Callable[[], Config],
        controller: Controller,
        scheduler: Scheduler,
        runner: JobRunner,
        changed: Callable[[], None],
    ) -> None:
        self.config = config
        self.controller = controller
        self.scheduler = scheduler
        self.runner = runner
        self.changed = changed
        self.stopping = False

    def handle(self, request: dict[str, Any], _peer: Peer) -> Answer:
        op = request.get("op")
        if self.stopping and op != "ping":
            return {"ok": False, "message": "the service is stopping; try again when it runs"}
        try:
            if op == "enter":
                return self._enter(request)
            if op == "leave":
                message = leave(self.controller, running=self.runner.running_names)
                return self._done(message)
            if op == "trigger":
                return self._trigger(request)
            if op == "status":
                return {"ok": True, "message": "running", "active": self.controller.active}
            if op == "ping":
                return {"ok": True, "message": "pong"}
        except RequestError as exc:
            return {"ok": False, "message": str(exc)}
        return {"ok": False, "message": f"unknown request {str(op)[:80]!r}"}

    def _enter(self, request: dict[str, Any]) -> Answer:
        config = self.config()
        message = enter(self.controller, request, config.tz, config.maintenance.granularity)
        self.scheduler.poke()
        self.scheduler.open_current()
        return self._done(message)

    def _done(self, message: str) -> Answer:
        self.controller.flush()  # durable before the CLI is told it is done
        self.changed()
        answer: Answer = {"ok": True, "message": message, "active": self.controller.active}
        if self.controller.message_lost:
            answer["warning"] = "the maint file is empty: its message could not be written"
        return answer

    def _trigger(self, request: dict[str, Any]) -> Answer:
        job, args = request.get("job"), request.get("args", {})
        if not isinstance(job, str) or not isinstance(args, dict):
            return {"ok": False, "message": "a trigger request has a job name and an args object"}
        config = self.config()
        try:
            checked_request(config, job, args)  # what the spool would reject is refused now
        except Rejected as exc:
            return {"ok": False, "message": f"trigger refused ({exc.reason}): {exc.message}"}
        try:
            name = drop(config.paths.spool, job, args)
        except ValueError as exc:
            return {"ok": False, "message": str(exc)}
        except OSError as exc:
            return {"ok": False, "message": f"cannot write the trigger: {exc.strerror}"}
        return {"ok": True, "message": f"trigger {name} dropped", "name": name}
