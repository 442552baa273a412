"""Drop-in triggers (DESIGN §5): a file in the spool starts a job, exactly once.

A regular file ``<job>``, ``<job>.<anything>`` or ``*.json`` (``{"job": …, "args": {…}}``)
in the spool requests that job; for a non-JSON name the content is not read. Dot-files,
``*.tmp`` and ``*.part`` are ignored (that is how writers stage a file). A file is taken
when it is complete: renamed into place or closed by its writer (inotify, at once), or —
when only a scan sees it — once its size and mtime are unchanged across two looks.

Checks, each a ``trigger.rejected`` with the file moved to ``failed/`` beside
``<name>.error.json``: symlink, not a regular file, larger than ``max_size``, owner not in
``allowed_uids`` (default: watcher's uid and root), bad JSON, unknown job, bad arguments,
or a path argument outside ``allowed_paths`` (none allowed when that list is empty).

Accepted: ``trigger.accepted``, claimed by an atomic rename into ``.claimed/``, run; the
journal records ``started`` (fsynced before the job starts) and ``finished``. The file ends
in ``done/`` or ``failed/`` with ``<name>.result.json``. After a crash, a claimed trigger
that never started simply runs; one that started and never finished is
``job.interrupted`` and goes to ``failed/`` — or runs again if its job is configured
``retry_safe = true``. Its job hold is released, except for jobs that move data and are not
retry-safe (restore, archive): that hold stays, marked interrupted, until ``watcher leave``.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from watcher.atomic import fsync_dir, write_atomic
from watcher.bus import EventBus
from watcher.config import Config, JobConfig
from watcher.controller import Clock, Controller
from watcher.jobs import BUILTIN_JOBS, job_type
from watcher.jobs.base import ArgumentError, Job, Progress
from watcher.jobs.runner import JobOutcome, JobRunner, request_for
from watcher.journal import Journal
from watcher.plugins import PluginError

IGNORED_SUFFIXES = (".tmp", ".part")
PENDING_RESULT = ".result.json"  # in .claimed/: a finished trigger's result before its move
FULL_SCAN_EVERY = 10.0  # seconds; in between, a scan lists the spool only if its mtime moved


class Rejected(Exception):
    """A trigger file that will not run; ``reason`` is a stable name."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def wanted(name: str) -> bool:
    """Whether a spool entry's name is a trigger candidate at all."""
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)


def parse_trigger(name: str, content: bytes | None) -> tuple[str, dict[str, Any]]:
    """The job name and arguments a trigger file asks for (``content`` only for ``*.json``)."""
    if not name.endswith(".json"):
        return name.split(".", 1)[0], {}
    try:
        body = orjson.loads(content or b"")
    except orjson.JSONDecodeError as exc:
        raise Rejected("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("job"), str) or not body["job"]:
        raise Rejected("bad_json", 'expected {"job": "<name>", "args": {...}}')
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise Rejected("bad_json", '"args" must be an object')
    unknown = set(body) - {"job", "args"}
    if unknown:
        raise Rejected("bad_json", f"unknown keys: {', '.join(sorted(unknown))}")
    return body["job"], args


def confine_paths(args: Mapping[str, Any], names: tuple[str, ...], roots: tuple[Path, ...]) -> None:
    """Reject path arguments that resolve outside the allowed roots (``..``, symlinks)."""
    for name in names:
        if name not in args:
            continue
        if not roots:
            raise Rejected(
                "path_not_allowed",
                f"{name}: trigger arguments may not name paths (trigger.allowed_paths is empty)",
            )
        value = args[name]
        if not isinstance(value, str) or not value:
            raise Rejected("bad_args", f"{name}: expected a path")
        resolved = Path(value).resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            allowed = ", ".join(str(r) for r in roots)
            raise Rejected("path_not_allowed", f"{name}: {resolved} is not under {allowed}")


def job_config(config: Config, name: str) -> JobConfig | None:
    """The configured job of that name, or a built-in type used by its name."""
    found = config.job(name)
    if found is None and name in BUILTIN_JOBS:
        found = JobConfig(name=name, type=name)
    return found


class Spool:
    """Takes trigger files from the spool and hands them to the job runner."""

    def __init__(
        self,
        config: Callable[[], Config],
        bus: EventBus,
        controller: Controller,
        runner: JobRunner,
        clock: Clock,
    ) -> None:
        self.config = config
        self.bus = bus
        self.controller = controller
        self.runner = runner
        self.clock = clock
        spool = config().paths.spool
        self.dir = spool
        self.done = spool / "done"
        self.failed = spool / "failed"
        self.claimed = spool / ".claimed"
        self.progress_dir = spool / ".progress"
        self.journal = Journal(config().paths.state)
        self._looks: dict[str, tuple[int, int]] = {}
        self._dir_mtime = -1
        self._full_scan_at = 0.0

    def prepare(self) -> None:
        for directory in (self.dir, self.done, self.failed, self.claimed, self.progress_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # --- finding trigger files -----------------------------------------------------------

    def changed(self, name: str | None, complete: bool) -> None:
        """A watch event in the spool: take a complete file at once, rescan on ``None``."""
        if name is None:
            self.scan(force=True)
        elif complete and wanted(name):
            self._looks.pop(name, None)
            self.take(name)

    def scan(self, *, force: bool = False) -> None:
        """Look at the spool; a file seen unchanged on two looks is complete."""
        try:
            mtime = os.stat(self.dir).st_mtime_ns
        except FileNotFoundError:
            return
        now = time.monotonic()
        if not (force or self._looks or mtime != self._dir_mtime or now >= self._full_scan_at):
            return
        self._dir_mtime, self._full_scan_at = mtime, now + FULL_SCAN_EVERY
        looks: dict[str, tuple[int, int]] = {}
        for entry in os.scandir(self.dir):
            if not wanted(entry.name) or entry.name in ("done", "failed"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            if not stat.S_ISREG(st.st_mode) or self._looks.get(entry.name) == key:
                self.take(entry.name)
            else:
                looks[entry.name] = key
        self._looks = looks

    # --- validating and claiming ---------------------------------------------------------

    def take(self, name: str) -> None:
        """Validate one spool entry; reject it or claim it and queue its job."""
        path = self.dir / name
        try:
            job, impl, args = self._validate(path, name)
        except FileNotFoundError:
            return  # gone already (taken by an earlier event, or withdrawn)
        except Rejected as exc:
            self._reject(path, exc)
            return
        ident = f"{time.time_ns()}-{name}"
        claimed = self.claimed / ident
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return
        fsync_dir(self.dir)
        self.bus.emit(
            "trigger.accepted",
            f"trigger {name} accepted: job {job.name}",
            trigger={"file": name, "id": ident},
            job={"name": job.name, "type": job.type},
        )
        self._submit(ident, name, job, impl, args)

    def _validate(self, path: Path, name: str) -> tuple[JobConfig, Job, dict[str, Any]]:
        cfg = self.config()
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise Rejected("symlink", "trigger files may not be symbolic links")
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("not_regular", "not a regular file")
        if st.st_size > cfg.trigger.max_size:
            raise Rejected("too_large", f"{st.st_size} bytes; the limit is {cfg.trigger.max_size}")
        allowed = cfg.trigger.allowed_uids or (os.getuid(), 0)
        if st.st_uid not in allowed:
            raise Rejected("owner", f"owned by uid {st.st_uid}; allowed: {list(allowed)}")
        content = path.read_bytes() if name.endswith(".json") else None
        job_name, trigger_args = parse_trigger(name, content)
        job = job_config(cfg, job_name)
        if job is None:
            raise Rejected("unknown_job", f"no job named {job_name!r}")
        try:
            impl = job_type(job.type)
        except PluginError as exc:
            raise Rejected("unknown_job", str(exc)) from None
        confine_paths(trigger_args, getattr(impl, "path_args", ()), cfg.trigger.allowed_paths)
        args = {**job.args, **trigger_args}
        try:
            impl.check_args(args)
        except ArgumentError as exc:
            raise Rejected("bad_args", str(exc)) from None
        return job, impl, args

    def _reject(self, path: Path, exc: Rejected, name: str | None = None) -> None:
        name = name or path.name
        target = self._unique(self.failed, name)
        error = self._write_result(target, "error", {"reason": exc.reason, "message": exc.message})
        try:
            os.rename(path, target)
        except FileNotFoundError:
            error.unlink(missing_ok=True)
            return
        self.bus.emit(
            "trigger.rejected",
            f"trigger {name} rejected: {exc.message}",
            level="warning",
            trigger={"file": name, "moved_to": str(target)},
            reason=exc.reason,
        )

    # --- running -------------------------------------------------------------------------

    def _submit(
        self, ident: str, name: str, job: JobConfig, impl: Job, args: dict[str, Any]
    ) -> None:
        def started() -> None:
            self.journal.append(
                {
                    "event": "started",
                    "id": ident,
                    "file": name,
                    "job": job.name,
                    "at": _iso(self.clock()),
                }
            )

        def done(outcome: JobOutcome) -> None:
            self._finish(ident, name, outcome.status, outcome.to_dict())

        def progress(p: Progress) -> None:
            write_atomic(self.progress_dir / f"{name}.json", orjson.dumps(p.__dict__))

        self.runner.submit(
            request_for(
                job,
                impl,
                source="trigger",
                args=args,
                trigger=name,
                on_start=started,
                on_done=done,
                on_progress=progress,
            )
        )

    def _finish(self, ident: str, name: str, status: str, result: dict[str, Any]) -> None:
        """Result first (beside the claim, naming where the file goes), then the moves, then
        the journal: a crash at any point leaves what ``recover`` needs to complete it."""
        target = self._unique(self.done if status == "finished" else self.failed, name)
        body = {"trigger": name, "id": ident, "moved_to": str(target), **result}
        write_atomic(
            self._pending_result(ident), orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str)
        )
        self._complete(ident, name, target)

    def _pending_result(self, ident: str) -> Path:
        return self.claimed / f"{ident}{PENDING_RESULT}"

    def _complete(self, ident: str, name: str, target: Path) -> None:
        try:
            os.rename(self.claimed / ident, target)
        except FileNotFoundError:
            pass  # moved before a crash
        os.rename(self._pending_result(ident), target.with_name(f"{target.name}.result.json"))
        fsync_dir(target.parent)
        (self.progress_dir / f"{name}.json").unlink(missing_ok=True)
        self.journal.append({"event": "finished", "id": ident})

    def _unique(self, directory: Path, name: str) -> Path:
        target = directory / name
        return target if not target.exists() else directory / f"{name}.{time.time_ns()}"

    def _write_result(self, moved: Path, kind: str, body: dict[str, Any]) -> Path:
        path = moved.with_name(f"{moved.name}.{kind}.json")
        write_atomic(path, orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str))
        return path

    # --- after a crash -------------------------------------------------------------------

    def recover(self) -> None:
        """Settle triggers a crash left behind: run the unstarted, report the interrupted."""
        unfinished = self.journal.unfinished()
        for ident, record in unfinished.items():
            self._interrupted(ident, record)
        for claimed in sorted(self.claimed.iterdir()):
            if claimed.name.startswith("."):
                claimed.unlink(missing_ok=True)  # a temp file a crash left mid-write
            elif claimed.name not in unfinished and not claimed.name.endswith(PENDING_RESULT):
                self._resume(claimed.name)
        self.journal.compact()

    def _interrupted(self, ident: str, record: dict[str, Any]) -> None:
        name, job_name = record.get("file", ident), record.get("job", "")
        cfg = self.config()
        job = job_config(cfg, job_name)
        pending = self._pending_result(ident)
        if pending.exists():  # it had finished; a crash cut the bookkeeping short
            target = Path(orjson.loads(pending.read_bytes())["moved_to"])
            self._complete(ident, name, target)
            return
        if not (self.claimed / ident).exists():
            self.journal.append({"event": "finished", "id": ident, "status": "unknown"})
            return
        self.bus.emit(
            "job.interrupted",
            f"job {job_name} from trigger {name} was interrupted (the service stopped)",
            level="warning",
            job={"name": job_name, "source": "trigger", "trigger": name},
        )
        keep_hold = False
        if job is not None:
            try:
                impl = job_type(job.type)
                maintenance = (
                    job.maintenance if job.maintenance is not None else impl.maintenance_default
                )
                keep_hold = maintenance and not impl.retry_safe
            except PluginError:
                keep_hold = False
        if keep_hold:
            self.controller.set_holds_interrupted({job_name})
        else:
            self.controller.release("job", job_name, why="interrupted")
        if job is not None and job.retry_safe:
            self.journal.append({"event": "finished", "id": ident, "status": "retried"})
            self._resume(ident)
            return
        self._finish(ident, name, "interrupted", {"status": "interrupted", "job": job_name})

    def _resume(self, ident: str) -> None:
        """Run a claimed trigger that never started (or may safely start again)."""
        name = ident.split("-", 1)[1] if "-" in ident else ident
        try:
            job, impl, args = self._validate(self.claimed / ident, name)
        except Rejected as exc:
            self._reject(self.claimed / ident, exc, name)
            return
        except FileNotFoundError:
            return
        self._submit(ident, name, job, impl, args)

    def release_stale_job_holds(self) -> None:
        """Job holds no trigger accounts for (a scheduled job cut short by a crash)."""
        for hold in list(self.controller.state.holds):
            if hold.reason != "job" or hold.interrupted or hold.name.endswith(": corruption"):
                continue
            self.bus.emit(
                "job.interrupted",
                f"job {hold.name} was interrupted (the service stopped while it ran)",
                level="warning",
                job={"name": hold.name},
            )
            self.controller.release("job", hold.name, why="interrupted")


def _iso(moment: datetime) -> str:
    return moment.isoformat()
