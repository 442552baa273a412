"""The job runner: holds maintenance around a job, one maintenance job at a time, and reports.

A job with ``maintenance = true`` adds a ``job`` hold before it starts and releases it
however it ends — success, failure, timeout or cancellation (DESIGN §4). Jobs that hold
maintenance run one at a time in submission order; the others run at once beside them.
Every run is ``job.started`` then exactly one of ``job.finished`` (with
``event.duration``), ``job.failed`` (with the reason) or ``job.interrupted`` (cancelled
at shutdown). A dbcheck that finds corruption emits ``db.corrupt`` and, with
``on_corruption = "hold"``, leaves a hold saying why until ``watcher leave``.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import orjson
from anyio.abc import TaskGroup, TaskStatus

from watcher.config import Config, JobConfig
from watcher.core.maintenance import Hold
from watcher.events.bus import NO_SPACE, EventBus
from watcher.jobs import job_type
from watcher.jobs.base import DataPaths, Job, JobContext, JobFailed, Progress
from watcher.service.controller import Clock, Controller

Status = Literal["finished", "failed", "interrupted"]
PROGRESS_EVERY = 0.5  # seconds between job.progress events of one job
CANCEL_GRACE = 5.0  # seconds a cancelled job gets to settle at shutdown


@dataclass(frozen=True)
class JobRequest:
    """A job to run: which, with what arguments, and why."""

    name: str
    type: str
    args: Mapping[str, Any] = field(default_factory=dict)
    maintenance: bool = True
    timeout: float | None = None
    source: str = "schedule"  # schedule | trigger | cli
    trigger: str | None = None
    on_done: Callable[[JobOutcome], None] | None = None
    # The record that must be durable before the job runs (a trigger's ``started``): the
    # runner writes those of the jobs starting together in one go (``record_starts``).
    start_record: Callable[[], Mapping[str, Any]] | None = None
    # Called with a finished or failed outcome before it is announced (job.finished,
    # job.failed): the spool files the trigger here, so whoever sees the event finds it in
    # done/ or failed/. ``on_done`` is then not called for that outcome.
    file_outcome: Callable[[JobOutcome], Awaitable[None]] | None = None
    on_progress: Callable[[Progress], None] | None = None


@dataclass(frozen=True)
class JobOutcome:
    """How a run ended."""

    name: str
    status: Status
    started: datetime
    finished: datetime
    reason: str | None = None
    message: str = ""
    result: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "reason": self.reason,
            "message": self.message,
            "result": dict(self.result),
        }


@dataclass
class _Begun:
    """A run as the turn that started it began it (``JobRunner._begin``)."""

    started: datetime
    t0: int  # monotonic ns, for event.duration
    job_fields: dict[str, Any]
    ctx: JobContext | None = None
    work: Awaitable[Mapping[str, Any]] | None = None  # the job's run (``start``: begun already)
    threads: bool = True  # the job may work in threads: relay cancellation to ctx.cancelled
    error: Exception | None = None  # raised in the run's task


def data_paths(config: Config) -> DataPaths:
    p = config.paths
    return DataPaths(
        data_dir=config.data_dir,
        maint_file=p.maint_file,
        data=p.data,
        files=p.files,
        archive_root=p.archive_root,
        logs=p.logs,
        state=p.state,
    )


def request_for(
    job: JobConfig,
    impl: Job,
    *,
    source: str,
    args: Mapping[str, Any] | None = None,
    trigger: str | None = None,
    on_done: Callable[[JobOutcome], None] | None = None,
    start_record: Callable[[], Mapping[str, Any]] | None = None,
    file_outcome: Callable[[JobOutcome], Awaitable[None]] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> JobRequest:
    """The request to run a job: checked arguments, maintenance per config or job type."""
    maintenance = job.maintenance if job.maintenance is not None else impl.maintenance_default
    return JobRequest(
        name=job.name,
        type=job.type,
        args=impl.check_args(job.args if args is None else args),
        maintenance=maintenance,
        timeout=job.timeout,
        source=source,
        trigger=trigger,
        on_done=on_done,
        start_record=start_record,
        file_outcome=file_outcome,
        on_progress=on_progress,
    )


class JobRunner:
    """Runs job requests under the rules above."""

    def __init__(self, config: Config, bus: EventBus, controller: Controller, clock: Clock) -> None:
        self.config = config
        self.bus = bus
        self.controller = controller
        self.clock = clock
        self.queue: deque[JobRequest] = deque()
        self.running: dict[int, JobRequest] = {}  # by id(): one job may run twice at once
        self._wake = anyio.Event()
        self._tg: TaskGroup | None = None
        # Makes the start records of a batch durable (one write, one fsync): the spool's
        # journal. Raises ``OSError`` when they could not be written.
        self.record_starts: Callable[[list[Mapping[str, Any]]], None] | None = None
        self._serial_busy = False
        self._idle = anyio.Event()
        self._loop_thread = threading.get_ident()
        self.settled = 0  # jobs ended since start
        # Called whenever the runner has started what it can (a job was submitted or ended):
        # the spool takes held triggers then, as the queue has room (``Spool.refill``).
        self.on_room: list[Callable[[], None]] = []

    def submit(self, *requests: JobRequest) -> None:
        """Queue requests; each starts as soon as the rules allow — those the rules allow now
        at once, together (no turn of the event loop for the runner to notice them first)."""
        self.queue.extend(requests)
        if self._tg is not None and not self._tg.cancel_scope.cancel_called:
            self._start_what_it_can(self._tg)
        else:
            self._wake.set()

    @property
    def idle(self) -> bool:
        """No job running or waiting."""
        return not self.running and not self.queue

    @property
    def waiting(self) -> int:
        """Requests queued and not started yet."""
        return len(self.queue)

    @property
    def running_names(self) -> set[str]:
        return {request.name for request in self.running.values()}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._loop_thread = threading.get_ident()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                while True:
                    self._wake = anyio.Event()
                    self._start_what_it_can(tg)
                    await self._wake.wait()
        finally:
            self._tg = None

    def _start_what_it_can(self, tg: TaskGroup) -> None:
        """Start what the rules allow, then tell ``on_room`` (which may submit more)."""
        self._start_ready(tg)
        for callback in self.on_room:
            callback()

    def _start_ready(self, tg: TaskGroup) -> None:
        """Start what the rules allow: one maintenance job at a time, and at most
        ``[trigger] max_concurrent`` others. The rest wait in the queue (no task each)."""
        waiting: deque[JobRequest] = deque()
        starting: list[JobRequest] = []
        limit = self.config.trigger.max_concurrent
        others = sum(1 for r in self.running.values() if not r.maintenance)
        while self.queue:
            request = self.queue.popleft()
            if request.maintenance and self._serial_busy:
                waiting.append(request)
                continue
            if not request.maintenance:
                if others >= limit:
                    waiting.append(request)
                    continue
                others += 1
            if request.maintenance:
                self._serial_busy = True
            self.running[id(request)] = request
            starting.append(request)
        self.queue = waiting
        error = self._record_starts(starting)
        for request in starting:
            begun = self._begin(request, error if request.start_record is not None else None)
            tg.start_soon(self._run_one, request, begun, name=f"job {request.name}")

    def _record_starts(self, starting: list[JobRequest]) -> OSError | None:
        """Write the start records of the jobs starting now, together, before any of them
        runs (and before the turn of the event loop ends: the fsync is the only wait on a
        trigger's path to its job); the error when that failed."""
        records = [r.start_record() for r in starting if r.start_record is not None]
        if not records or self.record_starts is None:
            return None
        try:
            self.record_starts(records)
        except OSError as exc:
            return exc
        return None

    async def shutdown(self, within: float) -> None:
        """Stop taking jobs; let running ones finish ``within`` seconds, then cancel them."""
        for request in self.queue:
            self.bus.emit(
                "job.skipped",
                f"job {request.name} not started: the service is stopping",
                level="warning",
                job={"name": request.name, "type": request.type},
                reason="shutdown",
            )
        self.queue.clear()
        await self._until_idle(within)
        if self._tg is not None and self.running:
            for request in self.running.values():
                self.bus.emit(
                    "service.stopping",
                    f"job {request.name} did not finish within {within:g}s: cancelling it",
                    level="warning",
                    job={"name": request.name, "type": request.type},
                )
            self._tg.cancel_scope.cancel()
            # Cancelled jobs settle (job.interrupted, their hold released) before the service
            # says it stopped; a job in a worker thread stops at its next check.
            await self._until_idle(CANCEL_GRACE)

    async def _until_idle(self, within: float) -> None:
        with anyio.move_on_after(within):
            while self.running:
                self._idle = anyio.Event()
                await self._idle.wait()

    def _begin(self, request: JobRequest, start_error: OSError | None) -> _Begun:
        """Begin a run in the turn that starts it: its hold, ``job.started``, and — for a job
        type with ``start`` (the command job) — its work itself, so the command is forked
        before this turn of the event loop ends (issue 15). What goes wrong here is raised
        in the run's task, to end as ``job.failed``.

        The work begun here is awaited by the run's task, which ends it however it goes (a
        command is killed, reaped and closed by the await). That task always gets there: anyio
        runs a task until its first checkpoint even when its scope is cancelled before it
        starts (a shutdown in this same turn), and the cancellation arrives at that await."""
        job_fields = {"name": request.name, "type": request.type, "source": request.source}
        if request.trigger:
            job_fields["trigger"] = request.trigger
        begun = _Begun(self.clock(), time.monotonic_ns(), job_fields)
        try:
            if request.maintenance:
                self.controller.add_hold(
                    Hold(
                        "job",
                        request.name,
                        since=begun.started,
                        message=f"job {request.name} running",
                    )
                )
            if start_error is not None:
                raise _not_started(start_error)
            self.bus.emit(
                "job.started",
                f"job {request.name} started",
                job=job_fields,
                args=_loggable(request.args),
            )
            begun.ctx = self._context(request, job_fields)
            job = job_type(request.type)
            begun.threads = getattr(job, "threads", True)
            start: Callable[[JobContext], Awaitable[Mapping[str, Any]]] | None = getattr(
                job, "start", None
            )
            begun.work = job.run(begun.ctx) if start is None else start(begun.ctx)
        except Exception as exc:
            begun.error = exc
        return begun

    async def _run_one(self, request: JobRequest, begun: _Begun) -> None:
        started, t0, job_fields = begun.started, begun.t0, begun.job_fields
        outcome: JobOutcome | None = None
        filed = False
        try:
            try:
                if begun.error is not None:
                    raise begun.error
                assert begun.ctx is not None and begun.work is not None
                try:
                    with anyio.fail_after(request.timeout):
                        result = await _cancellable(begun.work, begun.ctx, begun.threads)
                except TimeoutError:
                    raise JobFailed("timeout", f"timed out after {request.timeout:g}s") from None
                outcome, announce = self._finished(
                    request, started, t0, job_fields, _json_safe(result)
                )
            except JobFailed as exc:
                outcome, announce = self._failed(
                    request, started, t0, job_fields, exc.reason, exc.message, exc.details
                )
            except Exception as exc:
                outcome, announce = self._failed(
                    request, started, t0, job_fields, "error", f"{type(exc).__name__}: {exc}", {}
                )
            if request.file_outcome is not None:
                await request.file_outcome(outcome)  # never cancelled half-way (shielded)
                filed = True
            announce()
        except anyio.get_cancelled_exc_class():
            outcome = self._interrupted(request, begun)
            raise
        finally:
            self._settle(request, outcome, filed)  # synchronous: cannot be cancelled half-way

    def _interrupted(self, request: JobRequest, begun: _Begun) -> JobOutcome:
        """The outcome of a run cancelled at shutdown, announced (``job.interrupted``)."""
        outcome = JobOutcome(
            request.name,
            "interrupted",
            begun.started,
            self.clock(),
            reason="shutdown",
            message="cancelled at shutdown",
        )
        self.bus.emit(
            "job.interrupted",
            f"job {request.name} interrupted: the service stopped",
            level="warning",
            job=begun.job_fields,
            duration_ns=time.monotonic_ns() - begun.t0,
        )
        return outcome

    def _settle(self, request: JobRequest, outcome: JobOutcome | None, filed: bool) -> None:
        self.running.pop(id(request), None)
        self.settled += 1
        if request.maintenance:
            self.controller.release("job", request.name, why="job ended")
            self._serial_busy = False
        if outcome is not None:
            self.controller.note(
                jobs={**self.controller.state.jobs, request.name: _last_result(outcome)}
            )
            if request.on_done is not None and not filed:
                request.on_done(outcome)
        self._wake.set()
        self._idle.set()

    def _finished(
        self,
        request: JobRequest,
        started: datetime,
        t0: int,
        job_fields: dict[str, Any],
        result: dict[str, Any],
    ) -> tuple[JobOutcome, Callable[[], object]]:
        """The outcome, and how to announce it (``job.finished``)."""
        corrupt = result.get("corrupt") or []
        if corrupt:
            self._corruption(request, corrupt)
        announce = functools.partial(
            self.bus.emit,
            "job.finished",
            f"job {request.name} finished",
            job=job_fields,
            result=_loggable(result),
            duration_ns=time.monotonic_ns() - t0,
        )
        outcome = JobOutcome(request.name, "finished", started, self.clock(), result=result)
        return outcome, announce

    def _failed(
        self,
        request: JobRequest,
        started: datetime,
        t0: int,
        job_fields: dict[str, Any],
        reason: str,
        message: str,
        details: Mapping[str, Any],
    ) -> tuple[JobOutcome, Callable[[], object]]:
        """The outcome, and how to announce it (``job.failed``)."""
        announce = functools.partial(
            self.bus.emit,
            "job.failed",
            f"job {request.name} failed: {message}",
            level="error",
            job=job_fields,
            reason=reason,
            details=_loggable(details),
            duration_ns=time.monotonic_ns() - t0,
        )
        outcome = JobOutcome(
            request.name,
            "failed",
            started,
            self.clock(),
            reason=reason,
            message=message,
            result=dict(details),
        )
        return outcome, announce

    def _corruption(self, request: JobRequest, corrupt: list[str]) -> None:
        hold = request.args.get("on_corruption", "hold") == "hold"
        self.bus.emit(
            "db.corrupt",
            f"corrupt databases: {', '.join(corrupt)}",
            level="critical",
            databases=corrupt,
            job={"name": request.name},
            maintenance_held=hold,
        )
        if hold:
            self.controller.add_hold(
                Hold(
                    "job",
                    f"{request.name}: corruption",
                    since=self.clock(),
                    message=f"database corruption found in {', '.join(corrupt)}",
                )
            )

    def _context(self, request: JobRequest, job_fields: dict[str, Any]) -> JobContext:
        last = [0.0]

        def emit_progress(progress: Progress) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_EVERY and progress.files_done != progress.files_total:
                return
            last[0] = now
            if request.on_progress is not None:
                request.on_progress(progress)
            self.bus.emit(
                "job.progress",
                f"job {request.name}: {progress.files_done}/{progress.files_total} files",
                job=job_fields,
                progress={
                    "files_done": progress.files_done,
                    "files_total": progress.files_total,
                    "bytes_done": progress.bytes_done,
                    "bytes_total": progress.bytes_total,
                    "message": progress.message,
                },
            )

        def progress(p: Progress) -> None:
            if threading.get_ident() == self._loop_thread:
                emit_progress(p)
            else:
                try:
                    anyio.from_thread.run_sync(emit_progress, p)
                except RuntimeError:
                    pass  # the loop is shutting down; progress is not worth blocking for

        return JobContext(
            name=request.name,
            type=request.type,
            paths=data_paths(self.config),
            args=request.args,
            progress=progress,
            now=lambda: self.clock().astimezone(self.config.tz),
            env={"WATCHER_JOB_SOURCE": request.source, "WATCHER_TRIGGER": request.trigger or ""},
            archive=self.config.archive,
        )


async def _cancellable(
    work: Awaitable[Mapping[str, Any]], ctx: JobContext, threads: bool
) -> Mapping[str, Any]:
    """Run the job; the moment its scope is cancelled (timeout, shutdown), set
    ``ctx.cancelled`` so work in a worker thread stops at its next check, rather than the
    cancellation waiting for the thread to finish on its own.

    A job type that says it works in no thread (``threads = False``: the command job, whose
    awaits the cancellation reaches directly) runs without that relay, a task and a task
    group fewer on its way to its process (issue 15)."""
    if not threads:
        return await work

    async def relay() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            ctx.cancelled.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay)
            try:
                result = await work
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the job's own exception, as the job raised it
            raise group.exceptions[0] from None
        raise
    # A job working in a thread may return normally after being told to stop: the timeout
    # or shutdown that told it must still be what ends it.
    await anyio.lowlevel.checkpoint_if_cancelled()
    return result


def _last_result(outcome: JobOutcome) -> dict[str, Any]:
    """What the state keeps of a run for ``watcher jobs``: short (it is rewritten often)."""
    return {**outcome.to_dict(), "result": _loggable(outcome.result, longest=500)}


def _json_safe(result: Mapping[str, Any]) -> dict[str, Any]:
    """A job's result as plain JSON data (a plugin may return sets, paths, dates …)."""
    try:
        safe = orjson.loads(orjson.dumps(dict(result), default=str))
    except (TypeError, orjson.JSONEncodeError):
        return {"result": str(result)}
    return safe if isinstance(safe, dict) else {"result": safe}


def _loggable(values: Mapping[str, Any], longest: int = 2000) -> dict[str, Any]:
    """Values safe to put in an event or the state (paths as strings, long text cut to the
    last ``longest`` characters: a command's output tail)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, str) and len(value) > longest:
            value = value[-longest:]
        out[key] = (
            value
            if isinstance(value, str | int | float | bool | list | dict) or value is None
            else str(value)
        )
    return out


def _not_started(exc: OSError) -> Exception:
    """Why a job whose start record could not be written does not run."""
    if exc.errno in NO_SPACE:
        return JobFailed(
            "insufficient_space",
            f"its start could not be recorded ({exc.strerror}): the job did not start",
        )
    return exc
