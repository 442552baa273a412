"""The job runner with the real Controller: holds around jobs, one maintenance job at a time."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import psutil  # type: ignore[import-untyped]  # reason: types-psutil is not a dependency
import pytest

from tests.conftest import corrupt_db, make_db
from watcher.config import Config, ConfigError, JobConfig
from watcher.events.bus import EventBus
from watcher.events.record import Event
from watcher.jobs import job_type
from watcher.jobs.base import JobContext, JobFailed, Progress
from watcher.registry import build_config
from watcher.service.controller import Controller
from watcher.service.operations import leave
from watcher.service.runner import JobOutcome, JobRequest, JobRunner, request_for
from watcher.testing import capture_events

SCRIPTED = "tests.test_runner:BLOCKING"
THREADED_TYPE = "tests.test_runner:THREADED"
WAIT = 15.0  # generous upper bound for an awaited condition; never a sleep
Ending = Literal["succeed", "fail", "raise", "hang"]


# --- a job the test controls ----------------------------------------------------------------


@dataclass
class Run:
    """One scripted run: the test sees when it started and decides when and how it ends."""

    ending: Ending = "succeed"
    started: anyio.Event = field(default_factory=anyio.Event)
    proceed: anyio.Event = field(default_factory=anyio.Event)
    maint_file_at_start: bool | None = None
    saw_cancel: bool | None = None


class BlockingJob:
    """A ``Job`` that reports progress, then waits for the test's go-ahead and ends as scripted."""

    maintenance_default = True
    retry_safe = True

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}

    def reset(self) -> None:
        self.runs = {}

    def script(self, name: str, ending: Ending = "succeed") -> Run:
        """Prepare the run of the job called ``name`` (call inside the event loop)."""
        self.runs[name] = Run(ending)
        return self.runs[name]

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return dict(args)

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        run = self.runs[ctx.name]
        run.maint_file_at_start = ctx.paths.maint_file.exists()
        ctx.progress(Progress(1, 2, 10, 20, "halfway"))
        run.started.set()
        if run.ending == "hang":
            await anyio.sleep_forever()
        await run.proceed.wait()
        if run.ending == "fail":
            raise JobFailed("broken", "the scripted job broke", step=2)
        if run.ending == "raise":
            raise RuntimeError("scripted crash")
        return {"done": True}


BLOCKING = BlockingJob()


class ThreadedJob(BlockingJob):
    """Like the built-in jobs, works in a worker thread that stops when ``ctx.cancelled`` is set."""

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        run = self.runs[ctx.name]
        run.started.set()
        return await anyio.to_thread.run_sync(self._work, ctx, run)

    @staticmethod
    def _work(ctx: JobContext, run: Run) -> Mapping[str, Any]:
        run.saw_cancel = ctx.cancelled.wait(WAIT)
        return {"saw_cancel": run.saw_cancel}


THREADED = ThreadedJob()


@pytest.fixture(autouse=True)
def fresh_test_jobs() -> Iterator[None]:
    """No scripted run leaks from one test into the next."""
    for job in (BLOCKING, THREADED):
        job.reset()
    yield
    for job in (BLOCKING, THREADED):
        job.reset()


# --- the rig ----------------------------------------------------------------------------------


@dataclass
class Rig:
    """A running JobRunner with a real Controller on tmp_path and captured events."""

    runner: JobRunner
    controller: Controller
    config: Config
    events: list[Event]
    stop: Callable[[], None]  # cancels the runner's task group, as a shutdown does
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)
    done: dict[str, anyio.Event] = field(default_factory=dict)

    @property
    def maint_file(self) -> Path:
        return self.config.paths.maint_file

    async def start(self, name: str, ending: Ending = "succeed", **kw: Any) -> Run:
        """Script ``name`` to end as ``ending``, submit it (``kw`` as for ``submit``) and wait
        until it has started."""
        run = BLOCKING.script(name, ending)
        self.submit(name, **kw)
        await run.started.wait()
        return run

    def submit(self, name: str, *, maintenance: bool = True, **kw: Any) -> None:
        """Submit the scripted job under ``name``."""
        self.submit_request(JobRequest(name=name, type=SCRIPTED, maintenance=maintenance, **kw))

    def submit_request(self, request: JobRequest) -> None:
        self.done[request.name] = anyio.Event()

        def finished(outcome: JobOutcome) -> None:
            self.outcomes[outcome.name] = outcome
            self.done[outcome.name].set()

        self.runner.submit(replace(request, on_done=finished))

    async def wait_done(self, name: str) -> JobOutcome:
        await self.done[name].wait()
        return self.outcomes[name]

    def of(self, action: str, job: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if e.action == action and (job is None or e.fields.get("job", {}).get("name") == job)
        ]

    def index(self, action: str, job: str) -> int:
        """Where the first ``action`` event about ``job`` (or its hold) is in the events."""
        return next(
            i
            for i, e in enumerate(self.events)
            if e.action == action
            and job in (e.fields.get("job", {}).get("name"), e.fields.get("hold", {}).get("name"))
        )

    def job_holds(self) -> list[str]:
        return [h.name for h in self.controller.state.holds if h.reason == "job"]


@asynccontextmanager
async def running(tmp_path: Path, **raw: Any) -> AsyncIterator[Rig]:
    """A JobRunner started in a task group (config: ``raw`` TOML keys); cancelled at the end."""
    (tmp_path / "mw" / "data").mkdir(parents=True, exist_ok=True)
    config = build_config({"timezone": "UTC", **raw}, source=None, data_dir=tmp_path)
    bus = EventBus()
    with capture_events(bus) as events:
        controller = Controller(config.paths, bus, default_message=config.maintenance.message)
        controller.load()
        runner = JobRunner(config, bus, controller, lambda: datetime.now(UTC))
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            yield Rig(runner, controller, config, events, tg.cancel_scope.cancel)
            tg.cancel_scope.cancel()


# --- maintenance around a job -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_maintenance_job_holds_while_running_and_releases_on_success(
    tmp_path: Path,
) -> None:
    """A maintenance job adds a job hold before it starts and releases it when it succeeds."""
    async with running(tmp_path) as rig:
        run = await rig.start("work")
        assert run.maint_file_at_start is True
        assert rig.maint_file.exists() and rig.job_holds() == ["work"]
        assert rig.controller.active
        run.proceed.set()
        outcome = await rig.wait_done("work")
        assert outcome.status == "finished" and outcome.result == {"done": True}
        assert not rig.maint_file.exists() and rig.job_holds() == []
        assert rig.index("maintenance.hold_added", "work") < rig.index("job.started", "work")
        assert rig.of("maintenance.entered") and rig.of("maintenance.left")


@pytest.mark.parametrize(
    ("ending", "reason"),
    [("fail", "broken"), ("raise", "error")],
)
@pytest.mark.asyncio
async def test_hold_released_when_the_job_fails(
    tmp_path: Path, ending: Ending, reason: str
) -> None:
    """A job that raises JobFailed or any exception releases its hold; job.failed says why."""
    async with running(tmp_path) as rig:
        run = await rig.start("work", ending)
        assert rig.maint_file.exists()
        run.proceed.set()
        outcome = await rig.wait_done("work")
        assert outcome.status == "failed" and outcome.reason == reason
        assert not rig.maint_file.exists() and rig.job_holds() == []
        [failed] = rig.of("job.failed", "work")
        assert failed.fields["reason"] == reason and failed.level == "error"
        assert failed.duration_ns is not None and failed.duration_ns >= 0
        assert rig.of("job.finished") == []
    if ending == "fail":
        assert failed.fields["details"] == {"step": 2}
        assert "the scripted job broke" in failed.message
    else:
        assert "RuntimeError: scripted crash" in failed.message


@pytest.mark.asyncio
async def test_hold_released_when_the_job_times_out(tmp_path: Path) -> None:
    """A job past its ``timeout`` fails with reason "timeout" and its hold is released."""
    async with running(tmp_path) as rig:
        await rig.start("slow", "hang", timeout=0.05)
        assert rig.maint_file.exists()
        outcome = await rig.wait_done("slow")
        assert outcome.status == "failed" and outcome.reason == "timeout"
        assert not rig.maint_file.exists() and rig.job_holds() == []
        [failed] = rig.of("job.failed", "slow")
        assert failed.fields["reason"] == "timeout"


@pytest.mark.asyncio
async def test_hold_released_when_the_job_is_cancelled(tmp_path: Path) -> None:
    """A job cancelled at shutdown is reported interrupted and its hold is released."""
    async with running(tmp_path) as rig:
        await rig.start("work")
        assert rig.maint_file.exists()
        await rig.runner.shutdown(0)
        outcome = await rig.wait_done("work")
        assert outcome.status == "interrupted"
        assert not rig.maint_file.exists() and rig.job_holds() == []
        assert rig.of("job.interrupted", "work")
        assert rig.of("job.finished") == [] and rig.of("job.failed") == []


@pytest.mark.asyncio
async def test_hold_released_when_the_task_group_is_cancelled(tmp_path: Path) -> None:
    """Cancelling the scope the runner lives in still releases the running job's hold."""
    async with running(tmp_path) as rig:
        await rig.start("work")
        assert rig.maint_file.exists()
    assert not rig.maint_file.exists() and rig.job_holds() == []
    assert rig.outcomes["work"].status == "interrupted"


@pytest.mark.asyncio
async def test_timeout_stops_a_job_working_in_a_thread(tmp_path: Path) -> None:
    """At its timeout a thread-based job is told to stop (ctx.cancelled) and fails "timeout"."""
    async with running(tmp_path) as rig:
        run = THREADED.script("slow")
        rig.submit_request(JobRequest(name="slow", type=THREADED_TYPE, timeout=0.05))
        await run.started.wait()
        outcome = await rig.wait_done("slow")
        assert run.saw_cancel is True, "the worker thread was never told to stop"
        assert outcome.status == "failed" and outcome.reason == "timeout"
        assert not rig.maint_file.exists() and rig.job_holds() == []


@pytest.mark.asyncio
async def test_shutdown_stops_a_job_working_in_a_thread(tmp_path: Path) -> None:
    """Cancelled at shutdown, a thread-based job is told to stop and is reported interrupted."""
    async with running(tmp_path) as rig:
        run = THREADED.script("long")
        rig.submit_request(JobRequest(name="long", type=THREADED_TYPE))
        await run.started.wait()
        await rig.runner.shutdown(0)
        outcome = await rig.wait_done("long")
        assert run.saw_cancel is True, "the worker thread was never told to stop"
        assert outcome.status == "interrupted"
        assert rig.of("job.interrupted", "long") and rig.of("job.finished") == []
        assert not rig.maint_file.exists() and rig.job_holds() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("ending", ["timeout", "shutdown"])
async def test_a_command_job_is_stopped_by_its_scope_without_the_thread_relay(
    tmp_path: Path, ending: str
) -> None:
    """A command job (``threads = False``: it only awaits) is stopped by its timeout or the
    shutdown directly: the process is gone and the run ends as it should."""
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    script = (
        "import os, time; open(os.environ['PID_FIFO'], 'w').write(str(os.getpid()));"
        " time.sleep(600)"
    )
    args = {"argv": [sys.executable, "-c", script], "env": {"PID_FIFO": str(fifo)}}
    async with running(tmp_path) as rig:
        rig.submit_request(
            JobRequest(
                name="sleeper",
                type="command",
                args=job_type("command").check_args(args),
                maintenance=False,
                timeout=1.0 if ending == "timeout" else None,
            )
        )
        with anyio.fail_after(WAIT):  # the process says its pid once it runs
            pid = int(await anyio.to_thread.run_sync(fifo.read_text))
        if ending == "shutdown":
            await rig.runner.shutdown(0)
        outcome = await rig.wait_done("sleeper")
    expected = ("failed", "timeout") if ending == "timeout" else ("interrupted", "shutdown")
    assert (outcome.status, outcome.reason) == expected
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _children_running(token: str) -> list[psutil.Process]:
    """Our child processes whose command line holds ``token``."""
    return [c for c in psutil.Process().children() if token in " ".join(c.cmdline())]


@pytest.mark.asyncio
async def test_a_command_job_is_forked_in_the_turn_that_starts_it(tmp_path: Path) -> None:
    """``submit`` returns with the command's process already running and ``job.started``
    emitted: no turn of the event loop comes between the decision and the fork."""
    token = f"forked-now-{os.getpid()}"
    args = {"argv": [sys.executable, "-c", "import sys; sys.stdin.read()", token]}
    async with running(tmp_path) as rig:
        rig.submit_request(
            JobRequest(
                name="now",
                type="command",
                args=job_type("command").check_args(args),
                maintenance=False,
                timeout=WAIT,
            )
        )
        assert len(_children_running(token)) == 1 and len(rig.of("job.started", "now")) == 1
        outcome = await rig.wait_done("now")
    assert outcome.status == "finished" and outcome.result["returncode"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("maintenance", [False, True])
async def test_a_run_cancelled_before_its_task_ran_is_settled(
    tmp_path: Path, maintenance: bool
) -> None:
    """A shutdown in the very turn that began a command job (its task cancelled before its
    first step, so its coroutine never runs): the process is killed, the run ends as
    ``job.interrupted`` and its hold is released."""
    token = f"never-awaited-{os.getpid()}-{maintenance}"
    args = {"argv": [sys.executable, "-c", "import time; time.sleep(600)", token]}
    async with running(tmp_path) as rig:
        rig.submit_request(
            JobRequest(
                name="orphan",
                type="command",
                args=job_type("command").check_args(args),
                maintenance=maintenance,
            )
        )
        [process] = _children_running(token)
        assert rig.job_holds() == (["orphan"] if maintenance else [])
        rig.stop()  # the test's own wait would be cancelled too: the outcome is read after
    outcome = rig.outcomes["orphan"]
    assert (outcome.status, outcome.reason) == ("interrupted", "shutdown")
    assert [e.action for e in rig.events if e.fields.get("job", {}).get("name") == "orphan"] == [
        "job.started",
        "job.interrupted",
    ]
    assert rig.job_holds() == [] and not rig.maint_file.exists()
    gone, _alive = await anyio.to_thread.run_sync(lambda: psutil.wait_procs([process], WAIT))
    assert gone == [process]


@pytest.mark.asyncio
async def test_operator_release_mid_job_lets_the_job_finish_without_maintenance(
    tmp_path: Path,
) -> None:
    """Deleting the maint file mid-job releases it; the job goes on and nothing recreates it."""
    async with running(tmp_path) as rig:
        run = await rig.start("work")
        rig.maint_file.unlink()
        assert rig.controller.observe() == "released"
        warnings = [e for e in rig.of("maintenance.hold_released") if e.fields.get("job_running")]
        assert [e.fields["hold"]["name"] for e in warnings] == ["work"]
        run.proceed.set()
        assert (await rig.wait_done("work")).status == "finished"
        assert not rig.maint_file.exists() and rig.controller.state.holds == ()


@pytest.mark.asyncio
async def test_non_maintenance_job_takes_no_hold(tmp_path: Path) -> None:
    """A job with ``maintenance = false`` runs without touching the maint file."""
    async with running(tmp_path) as rig:
        run = await rig.start("report", maintenance=False)
        assert run.maint_file_at_start is False and not rig.maint_file.exists()
        run.proceed.set()
        assert (await rig.wait_done("report")).status == "finished"
        assert rig.of("maintenance.hold_added") == []


# --- queueing ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_maintenance_jobs_run_one_at_a_time_others_alongside(tmp_path: Path) -> None:
    """A second maintenance job waits for the first to end; a non-maintenance job runs beside."""
    async with running(tmp_path) as rig:
        first, second = BLOCKING.script("first"), BLOCKING.script("second")
        beside = BLOCKING.script("beside")
        rig.submit("first")
        rig.submit("second")
        rig.submit("beside", maintenance=False)
        await first.started.wait()
        await beside.started.wait()  # runs while "first" holds maintenance
        assert not first.proceed.is_set() and rig.job_holds() == ["first"]
        assert not second.started.is_set()
        assert [r.name for r in rig.runner.queue] == ["second"]

        beside.proceed.set()
        await rig.wait_done("beside")
        assert not second.started.is_set()

        first.proceed.set()
        await second.started.wait()
        assert rig.index("job.finished", "first") < rig.index("job.started", "second")
        assert rig.job_holds() == ["second"] and rig.maint_file.exists()
        assert second.maint_file_at_start is True
        second.proceed.set()
        await rig.wait_done("second")
        assert not rig.maint_file.exists() and rig.job_holds() == []


@pytest.mark.asyncio
async def test_failed_maintenance_job_lets_the_next_one_start(tmp_path: Path) -> None:
    """A maintenance job that fails frees the one-at-a-time slot for the queued one."""
    async with running(tmp_path) as rig:
        first, second = BLOCKING.script("first", "raise"), BLOCKING.script("second")
        rig.submit("first")
        rig.submit("second")
        await first.started.wait()
        first.proceed.set()
        await second.started.wait()
        second.proceed.set()
        assert (await rig.wait_done("second")).status == "finished"
        assert rig.outcomes["first"].status == "failed"
        assert not rig.maint_file.exists()


# --- events -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_job_events_started_progress_finished(tmp_path: Path) -> None:
    """A run is job.started, job.progress, then job.finished with event.duration in ns."""
    async with running(tmp_path) as rig:
        run = await rig.start("work", source="trigger", trigger="work.json", args={"level": 3})
        run.proceed.set()
        await rig.wait_done("work")
    jobs = [e for e in rig.events if e.action.startswith("job.")]
    assert [e.action for e in jobs] == ["job.started", "job.progress", "job.finished"]
    started, progress, finished = jobs
    assert started.fields["job"] == {
        "name": "work",
        "type": SCRIPTED,
        "source": "trigger",
        "trigger": "work.json",
    }
    assert started.fields["args"] == {"level": 3}
    assert progress.fields["progress"] == {
        "files_done": 1,
        "files_total": 2,
        "bytes_done": 10,
        "bytes_total": 20,
        "message": "halfway",
    }
    assert finished.duration_ns is not None and finished.duration_ns >= 0
    assert finished.fields["result"] == {"done": True}
    assert rig.controller.state.jobs["work"]["status"] == "finished"


# --- dbcheck on corruption --------------------------------------------------------------------


def dbcheck_request(on_corruption: str) -> JobRequest:
    config = JobConfig(name="dbcheck", type="dbcheck", args={"on_corruption": on_corruption})
    return request_for(config, job_type("dbcheck"), source="schedule")


@pytest.mark.asyncio
async def test_dbcheck_corruption_holds_until_leave(tmp_path: Path) -> None:
    """With on_corruption = "hold", db.corrupt names the database and a hold stays until leave."""
    data = tmp_path / "mw" / "data"
    make_db(data / "good.db")
    corrupt_db(make_db(data / "bad.db"))
    async with running(tmp_path) as rig:
        rig.submit_request(dbcheck_request("hold"))
        outcome = await rig.wait_done("dbcheck")
        assert outcome.status == "finished"
        [corrupt] = rig.of("db.corrupt")
        assert corrupt.fields["databases"] == ["bad.db"] and "bad.db" in corrupt.message
        assert corrupt.fields["maintenance_held"] is True
        assert rig.job_holds() == ["dbcheck: corruption"] and rig.maint_file.exists()
        assert "bad.db" in rig.maint_file.read_text()
        assert rig.index("db.corrupt", "dbcheck") < rig.index("job.finished", "dbcheck")

        leave(rig.controller, running=rig.runner.running_names)
        assert rig.job_holds() == [] and not rig.maint_file.exists()


@pytest.mark.asyncio
async def test_dbcheck_corruption_with_release_lets_maintenance_go(tmp_path: Path) -> None:
    """With on_corruption = "release", db.corrupt is emitted and maintenance ends with the job."""
    data = tmp_path / "mw" / "data"
    make_db(data / "good.db")
    corrupt_db(make_db(data / "bad.db"))
    async with running(tmp_path) as rig:
        rig.submit_request(dbcheck_request("release"))
        await rig.wait_done("dbcheck")
        [corrupt] = rig.of("db.corrupt")
        assert corrupt.fields["databases"] == ["bad.db"]
        assert corrupt.fields["maintenance_held"] is False
        assert rig.job_holds() == [] and not rig.maint_file.exists()


@pytest.mark.asyncio
async def test_dbcheck_on_healthy_data_leaves_no_hold(tmp_path: Path) -> None:
    """A dbcheck of healthy databases holds maintenance while it runs and nothing after."""
    make_db(tmp_path / "mw" / "data" / "good.db")
    async with running(tmp_path) as rig:
        rig.submit_request(dbcheck_request("hold"))
        outcome = await rig.wait_done("dbcheck")
        assert outcome.status == "finished" and outcome.result["corrupt"] == []
        assert rig.of("db.corrupt") == []
        [added] = rig.of("maintenance.hold_added")
        assert added.fields["hold"]["name"] == "dbcheck"
        assert rig.job_holds() == [] and not rig.maint_file.exists()


@pytest.mark.asyncio
async def test_dbcheck_failure_keeps_its_reason(tmp_path: Path) -> None:
    """A built-in job's JobFailed reason reaches job.failed (dbcheck without its data dir)."""
    async with running(tmp_path, paths={"data": "mw/missing"}) as rig:
        rig.submit_request(dbcheck_request("hold"))
        outcome = await rig.wait_done("dbcheck")
        assert outcome.status == "failed" and outcome.reason == "data_missing"
        [failed] = rig.of("job.failed", "dbcheck")
        assert failed.fields["reason"] == "data_missing"
        assert rig.job_holds() == [] and not rig.maint_file.exists()


class OddResultJob:
    """A plugin job whose result is not plain JSON (a set, a path)."""

    maintenance_default = False
    retry_safe = True

    def check_args(self, args: Any) -> Any:
        return dict(args)

    async def run(self, ctx: Any) -> Any:
        return {"files": {"a"}, "where": Path("/srv/app"), "output": "x" * 70_000}


ODD = OddResultJob()


@pytest.mark.asyncio
async def test_a_plugin_result_that_is_not_json_is_kept_as_text(tmp_path: Path) -> None:
    """A job result with sets or paths is reported and recorded as JSON text, and the state
    keeps only a short tail of long output."""
    async with running(tmp_path) as rig:
        rig.submit_request(JobRequest(name="odd", type="tests.test_runner:ODD", maintenance=False))
        outcome = await rig.wait_done("odd")
        assert outcome.status == "finished"
        assert outcome.result["where"] == "/srv/app"
        [finished] = rig.of("job.finished", "odd")
        assert finished.fields["result"]["where"] == "/srv/app"
        last = rig.controller.state.jobs["odd"]
        assert len(last["result"]["output"]) == 500


# --- bounded concurrency --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_jobs_without_maintenance_run_at_most_max_concurrent_at_once(tmp_path: Path) -> None:
    """With max_concurrent = 2, a third job waits until one of the first two ends."""
    async with running(tmp_path, trigger={"max_concurrent": 2}) as rig:
        runs = [BLOCKING.script(f"c{i}") for i in range(3)]
        for i in range(3):
            rig.submit(f"c{i}", maintenance=False)
        await runs[0].started.wait()
        await runs[1].started.wait()
        assert not runs[2].started.is_set()
        assert len(rig.runner.running) == 2
        assert [r.name for r in rig.runner.queue] == ["c2"]
        runs[0].proceed.set()
        await runs[2].started.wait()
        assert (await rig.wait_done("c0")).status == "finished"
        for run in runs[1:]:
            run.proceed.set()
        for name in ("c1", "c2"):
            assert (await rig.wait_done(name)).status == "finished"


@pytest.mark.asyncio
async def test_max_concurrent_does_not_count_the_maintenance_job(tmp_path: Path) -> None:
    """A running maintenance job leaves every max_concurrent slot to the other jobs."""
    async with running(tmp_path, trigger={"max_concurrent": 1}) as rig:
        serial = await rig.start("serial")
        other = await rig.start("other", maintenance=False)
        assert serial.started.is_set() and other.started.is_set()
        serial.proceed.set()
        other.proceed.set()
        assert (await rig.wait_done("serial")).status == "finished"
        assert (await rig.wait_done("other")).status == "finished"


def test_max_concurrent_defaults_to_four_per_cpu(tmp_path: Path) -> None:
    """The default bound is four times the CPU count; 0 is a config error."""
    config = build_config({}, source=None, data_dir=tmp_path)
    assert config.trigger.max_concurrent == (os.cpu_count() or 1) * 4
    with pytest.raises(ConfigError, match=r"trigger\.max_concurrent"):
        build_config({"trigger": {"max_concurrent": 0}}, source=None, data_dir=tmp_path)


# --- start records ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_jobs_starting_together_have_their_start_records_written_in_one_go_first(
    tmp_path: Path,
) -> None:
    """Three jobs submitted together: one write of their three start records, done before
    the submit returns, so before any of them runs."""
    writes: list[list[str]] = []
    async with running(tmp_path, trigger={"max_concurrent": 4}) as rig:
        rig.runner.record_starts = lambda records: writes.append([r["id"] for r in records])
        runs = [BLOCKING.script(name) for name in ("a", "b", "c")]
        requests = [
            JobRequest(
                name=name,
                type=SCRIPTED,
                maintenance=False,
                start_record=lambda name=name: {"id": name},  # type: ignore[misc]
            )
            for name in ("a", "b", "c")
        ]
        rig.runner.submit(*requests)
        assert writes == [["a", "b", "c"]]
        assert not any(run.started.is_set() for run in runs)
        for run in runs:
            await run.started.wait()
            run.proceed.set()


@pytest.mark.asyncio
async def test_a_start_record_that_cannot_be_written_means_the_job_never_runs(
    tmp_path: Path,
) -> None:
    """No space for the start record: the job fails as ``insufficient_space`` and never runs."""

    def full(_records: list[Mapping[str, Any]]) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async with running(tmp_path) as rig:
        rig.runner.record_starts = full
        run = BLOCKING.script("j")
        rig.submit("j", maintenance=False, start_record=lambda: {"id": "j"})
        outcome = await rig.wait_done("j")
    assert outcome.status == "failed" and outcome.reason == "insufficient_space"
    assert not run.started.is_set()
    assert rig.of("job.started", "j") == []
