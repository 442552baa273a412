"""The spool (DESIGN §5): a trigger file starts a job, exactly once.

What a trigger file is and asks for is read by :mod:`watcher.sources.triggerfile`; this
module claims it, journals it and runs it.

Accepted: ``trigger.accepted``, claimed by an atomic rename into ``.claimed/``, run; the
journal records ``started`` (fsynced before the job starts, with the file's inode) and
``finished``. The claim's rename is not fsynced on its own: the ``started`` record is what
makes a run durable, and it is enough. After a power loss that kept the record but lost the
rename, the trigger is back in the spool under its name — with the inode the record names,
which no other file can have while this one exists — and recovery claims it again as the
interrupted run it was instead of running it twice (issue 15: one fsync on a trigger's
path to its job, not two). The file ends
in ``done/`` or ``failed/`` with ``<name>.result.json``. Progress goes to ``.progress/``,
best-effort (no fsync; a failed write is skipped); the last report is also kept in the
result (``progress``), so a follower that polled too rarely still sees how far it got.

After a crash, a claimed trigger that never started simply runs; one that started and never
finished is ``job.interrupted`` and goes to ``failed/``. It runs again only when its job is
configured ``retry_safe = true``: the operator's word, never the job type's own
``retry_safe`` (which says the job *could* be re-run, not that this site wants it). Its job
hold is released, except for job types that move data — ``restore`` and ``archive``, and
plugins declaring ``moves_data = True`` — whose interruption may leave data half-moved:
that hold stays, marked interrupted, until ``watcher leave`` or the maint file is removed.

A burst is claimed ``BACKLOG`` triggers ahead of the runner (``_offer``): the rest stay in the
spool, unclaimed, and are taken in the order they came as jobs end.

No space (ENOSPC/EDQUOT) never stops the service: a trigger that cannot be rejected or
filed for lack of space (or any other error writing its result) stays where it is — in the
spool, or in ``.claimed/`` with its result still to write — a ``disk.reminder`` event (for
another error: ``trigger.rejected`` or ``job.failed``) names it once, and it is tried again
on every later scan (about once a second) until it is filed. A job whose ``started`` record
cannot be written does not run (``job.failed``, ``reason = "insufficient_space"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from watcher.config import Config, JobConfig
from watcher.events.bus import NO_SPACE, EventBus
from watcher.jobs import BUILTIN_JOBS, job_type
from watcher.jobs.base import Job, Progress
from watcher.service.controller import Clock, Controller
from watcher.service.groupcommit import GroupCommit
from watcher.service.journal import Journal
from watcher.service.runner import JobOutcome, JobRequest, JobRunner, request_for
from watcher.sources.triggerfile import (
    Rejected,
    check_file,
    check_name,
    check_trigger_args,
    confine_paths,
    filed_name,
    parse_trigger,
    read_trigger,
    shown,
    wanted,
)
from watcher.system.atomic import fsync_dir, sync_filesystem, write_atomic
from watcher.system.plugins import PluginError

PENDING_RESULT = ".result.json"  # in .claimed/: a finished trigger's result before its move
FULL_SCAN_EVERY = 10.0  # seconds; in between, a scan lists the spool only if its mtime moved
DATA_MOVING_TYPES = ("restore", "archive")  # built-ins whose interruption keeps the hold
BACKLOG = 64  # triggers claimed and queued ahead of the running jobs, at most (``_offer``)


Outcome = tuple[str, str, str, dict[str, Any]]  # trigger id, file name, status, result


def job_config(config: Config, name: str) -> JobConfig | None:
    """The configured job of that name, or a built-in type used by its name."""
    found = config.job(name)
    if found is None and name in BUILTIN_JOBS:
        found = JobConfig(name=name, type=name)
    return found


def checked_request(
    cfg: Config, job_name: str, trigger_args: dict[str, Any]
) -> tuple[JobConfig, Job, dict[str, Any]]:
    """What a trigger asks (a job and its arguments) checked as the spool checks a file.

    Raises ``Rejected``; used for trigger files and for ``trigger`` requests on the control
    socket, so a request the spool would reject is refused at once instead of dropped.
    """
    check_trigger_args(trigger_args)
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
    except (ValueError, TypeError, OSError) as exc:  # ArgumentError is a ValueError
        raise Rejected("bad_args", str(exc)) from None
    return job, impl, args


def moves_data(impl: object, type_name: str) -> bool:
    """Whether an interrupted run of this job type may have left data half-moved."""
    return bool(getattr(impl, "moves_data", type_name in DATA_MOVING_TYPES))


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
        runner.record_starts = self.journal.append_many  # triggers' ``started``, per batch
        self._looks: dict[str, tuple[int, int]] = {}
        self._dir_mtime = -1
        self._full_scan_at = 0.0
        # What could not be completed (no space, mostly), by key, with how to try again;
        # ``_warned``: the keys whose event has been emitted (once while stuck).
        self._retry: dict[str, Callable[[], None]] = {}
        self._warned: set[str] = set()
        # Claims of this turn of the event loop, accepted together at its end (``_soon``).
        self._claims: list[tuple[str, str, JobConfig, Job, dict[str, Any]]] = []
        # Complete trigger files left in the spool while the runner's queue is full, in the
        # order they came (``_offer``); ``_held_names``: the same, to look them up.
        self._held: deque[str] = deque()
        self._held_names: set[str] = set()
        # Outcomes of ended jobs, filed in batches (``_file_finished``).
        self._filing = GroupCommit[Outcome, dict[str, OSError]](self._file_finished)

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
            self._offer(name)

    def scan(self, *, force: bool = False) -> None:
        """Look at the spool; a file seen unchanged on two looks is complete.

        First, try again what could not be completed before (a full disk).
        """
        self._retry_stuck()
        try:
            mtime = os.stat(self.dir).st_mtime_ns
        except OSError:
            return
        now = time.monotonic()
        if not (force or self._looks or mtime != self._dir_mtime or now >= self._full_scan_at):
            return
        self._dir_mtime, self._full_scan_at = mtime, now + FULL_SCAN_EVERY
        looks: dict[str, tuple[int, int]] = {}
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            return
        for entry in entries:
            if not wanted(entry.name) or entry.name in ("done", "failed"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            if not stat.S_ISREG(st.st_mode) or self._looks.get(entry.name) == key:
                self._offer(entry.name)
            else:
                looks[entry.name] = key
        self._looks = looks

    def _retry_stuck(self) -> None:
        for key, retry in list(self._retry.items()):
            del self._retry[key]
            retry()
            if key not in self._retry:
                self._warned.discard(key)

    # --- validating and claiming ---------------------------------------------------------

    def _offer(self, name: str) -> None:
        """Take a complete spool entry now — or, while ``BACKLOG`` claimed triggers already
        wait for the runner, leave it in the spool, remembered by name, until ``refill``.

        A burst of N triggers thus holds ``BACKLOG`` claimed requests (their closures, events,
        journal records to come) at a time, not N: the service's memory after the burst is
        its size before it, not the arenas a peak of N requests left behind. A held trigger is
        an unclaimed file, as before its event was read: a crash loses nothing, and it is
        found again by the start-up scan."""
        if name in self._held_names:
            return
        if self._held or self._backlog_full():
            self._held.append(name)
            self._held_names.add(name)
            return
        self.take(name)

    def _backlog_full(self) -> bool:
        return self.runner.waiting + len(self._claims) >= BACKLOG

    def refill(self) -> None:
        """Take held triggers, in the order they came, while the runner's queue has room
        (called by the runner each time it has started what it can)."""
        while self._held and not self._backlog_full():
            name = self._held.popleft()
            self._held_names.discard(name)
            self.take(name)
            if not self._held:
                self._held_names = set()  # a set keeps its burst-sized table once emptied

    @property
    def held(self) -> int:
        """Complete trigger files waiting in the spool for room in the runner's queue."""
        return len(self._held)

    @property
    def busy(self) -> bool:
        """Whether triggers are held or claimed and not yet handed to the runner."""
        return bool(self._held or self._claims)

    def take(self, name: str) -> None:
        """Validate one spool entry; reject it or claim it and queue its job. Never raises."""
        path = self.dir / name
        key = f"take:{name}"
        try:
            job, impl, args = self._validate(path, name)
        except FileNotFoundError:
            return  # gone already (taken by an earlier event, or withdrawn)
        except Rejected as exc:
            self._reject(path, exc, name, key, lambda: self.take(name))
            return
        ident = f"{time.time_ns()}-{name}"
        claimed = self.claimed / ident
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._stuck(
                key,
                lambda: self.take(name),
                exc,
                what=f"trigger {name} could not be claimed",
                where=self.dir,
                other="trigger.rejected",
                trigger={"file": name, "moved_to": None},
                reason="not_claimed",
            )
            return
        self._claims.append((ident, name, job, impl, args))
        if len(self._claims) == 1:
            _soon(self._accept_claims)

    def _accept_claims(self) -> None:
        """The claims of this turn of the loop, accepted and queued together (see the module
        docstring for why the claim needs no fsync of its own)."""
        claims, self._claims = self._claims, []
        requests = [(claim, self._request(*claim)) for claim in claims]
        for (ident, name, job, _impl, _args), _request in requests:
            self.bus.emit(
                "trigger.accepted",
                f"trigger {name} accepted: job {job.name}",
                trigger={"file": name, "id": ident},
                job={"name": job.name, "type": job.type},
            )
        # The jobs the rules allow start now, in this turn: their ``started`` records written
        # together, then each ``job.started`` and a command's fork (``JobRunner._begin``).
        self.runner.submit(*(r for _c, r in requests if isinstance(r, JobRequest)))
        for (ident, name, _job, _impl, _args), request in requests:
            if not isinstance(request, JobRequest):
                self._finish(ident, name, "failed", request)

    def _validate(self, path: Path, name: str) -> tuple[JobConfig, Job, dict[str, Any]]:
        """What the file asks for; raises ``Rejected``, or ``FileNotFoundError`` when gone."""
        cfg = self.config()
        limits = (cfg.trigger.max_size, cfg.trigger.allowed_uids)
        check_name(name)
        if name.endswith(".json"):  # its one descriptor is checked as an lstat would be
            content: bytes | None = read_trigger(path, *limits)[1]
        else:
            content = None
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise Rejected("unreadable", f"cannot look at the file: {exc.strerror}") from None
            check_file(st, *limits)
        job_name, trigger_args = parse_trigger(name, content)
        return checked_request(cfg, job_name, trigger_args)

    def _reject(
        self, path: Path, exc: Rejected, name: str, key: str, retry: Callable[[], None]
    ) -> None:
        """File ``path`` in ``failed/`` with its error; where that fails, it stays for later."""
        target = self._unique(self.failed, filed_name(name))
        body = {"trigger": shown(name), "reason": exc.reason, "message": exc.message}
        try:
            error = self._write_result(target, "error", body)
            try:
                os.rename(path, target)
            except OSError:
                with contextlib.suppress(OSError):
                    error.unlink()
                if not os.path.lexists(path):
                    return  # gone meanwhile (taken by an earlier event, or withdrawn)
                raise
        except OSError as err:
            self._stuck(
                key,
                retry,
                err,
                what=f"trigger {shown(name)} could not be moved to failed/ ({exc.message})",
                where=path.parent,
                other="trigger.rejected",
                trigger={"file": shown(name), "moved_to": None},
                reason=exc.reason,
            )
            return
        self.bus.emit(
            "trigger.rejected",
            f"trigger {shown(name)} rejected: {exc.message}",
            level="warning",
            trigger={"file": shown(name), "moved_to": shown(str(target))},
            reason=exc.reason,
        )

    def _stuck(
        self,
        key: str,
        retry: Callable[[], None],
        exc: OSError,
        *,
        what: str,
        where: Path,
        other: str,
        **fields: Any,
    ) -> None:
        """``what`` could not be done (``exc``): try again on every scan, and say so once —
        ``disk.reminder`` for no space (and the disk is looked at now), else ``other``."""
        self._retry[key] = retry
        if key in self._warned:
            return
        self._warned.add(key)
        kept_in = shown(str(where))
        later = f"it stays in {kept_in} and is tried again"
        error = exc.strerror or str(exc)
        fields = {**fields, "error": error, "kept_in": kept_in}
        if exc.errno in NO_SPACE:
            self.bus.emit("disk.reminder", f"{what}: no space left; {later}", "critical", **fields)
            for callback in self.controller.on_no_space:
                callback()
        else:
            self.bus.emit(other, f"{what} ({error}); {later}", "error", **fields)

    # --- running -------------------------------------------------------------------------

    def _request(
        self, ident: str, name: str, job: JobConfig, impl: Job, args: dict[str, Any]
    ) -> JobRequest | dict[str, Any]:
        """The trigger's job request, or (arguments a plugin refuses) the failure to file."""

        def started() -> dict[str, Any]:
            record: dict[str, Any] = {
                "event": "started",
                "id": ident,
                "file": name,
                "job": job.name,
                "type": job.type,
                "at": _iso(self.clock()),
            }
            with contextlib.suppress(OSError):  # gone: recovery has no lost rename to find
                record["ino"] = os.lstat(self.claimed / ident).st_ino
            return record

        last: list[dict[str, Any]] = []  # the job's latest progress, kept in its result

        def outcome_doc(outcome: JobOutcome) -> dict[str, Any]:
            return {**outcome.to_dict(), **({"progress": last[0]} if last else {})}

        def done(outcome: JobOutcome) -> None:
            self._finish(ident, name, outcome.status, outcome_doc(outcome))

        async def file(outcome: JobOutcome) -> None:
            result = outcome_doc(outcome)
            failed = await self._filing.add((ident, name, outcome.status, result))
            if ident in failed:
                self._not_filed(ident, name, outcome.status, result, failed[ident])

        def progress(p: Progress) -> None:
            last[:] = [dict(p.__dict__)]
            with contextlib.suppress(OSError):  # best-effort: the next report replaces it
                write_atomic(
                    self.progress_dir / f"{name}.json", orjson.dumps(p.__dict__), durable=False
                )

        try:
            return request_for(
                job,
                impl,
                source="trigger",
                args=args,
                trigger=name,
                start_record=started,
                on_done=done,
                file_outcome=file,
                on_progress=progress,
            )
        except (ValueError, TypeError, OSError) as exc:  # checked once already; a plugin's whim
            return {"status": "failed", "reason": "bad_args", "message": str(exc)}

    def _finish(self, ident: str, name: str, status: str, result: dict[str, Any]) -> None:
        """File one trigger now (recovery, a retry, a job that never ran or was interrupted),
        the same way a batch is filed. What cannot be written now (no space) stays as it is
        and is tried again. Never raises."""
        if self._filing.busy:  # a batch is being filed in the worker thread: after it
            self._retry[f"finish:{ident}"] = lambda: self._finish(ident, name, status, result)
            return
        failed = self._file_finished([(ident, name, status, result)])
        if ident in failed:
            self._not_filed(ident, name, status, result, failed[ident])

    def _file_finished(self, batch: list[Outcome]) -> dict[str, OSError]:
        """File the triggers of ended jobs (I/O only: it runs in a worker thread for a
        batch). Results first (beside the claims, naming where each file goes), made durable
        before anything moves — a lone one by its own fsync, several together by one
        ``syncfs``; then the moves, one fsync per folder they went to; then the journal
        records, one write and one fsync. A crash at any point leaves what ``recover`` needs
        to complete each. Returns what could not be filed, by trigger id (the caller says so
        and retries it on later scans)."""
        alone = len(batch) == 1
        failed: dict[str, OSError] = {}
        reserved: set[Path] = set()
        written: list[tuple[str, str, Path]] = []
        for ident, name, status, result in batch:
            try:
                target = self._pending_target(ident)
                if target is None:
                    folder = self.done if status == "finished" else self.failed
                    target = self._unique(folder, name, reserved)
                    body = {"trigger": name, "id": ident, "moved_to": str(target), **result}
                    write_atomic(
                        self._pending_result(ident),
                        orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str),
                        durable=alone,
                    )
                reserved.add(target)
                written.append((ident, name, target))
            except OSError as exc:
                failed[ident] = exc
        try:
            if written and not alone:
                sync_filesystem(self.claimed)
        except OSError as exc:
            return failed | {ident: exc for ident, _name, _target in written}
        moved: list[tuple[str, Path]] = []
        for ident, name, target in written:
            try:
                self._move(ident, name, target)
                moved.append((ident, target))
            except OSError as exc:
                failed[ident] = exc
        try:
            for folder in {target.parent for _ident, target in moved}:
                fsync_dir(folder)
            self.journal.append_many([{"event": "finished", "id": i} for i, _target in moved])
        except OSError as exc:
            failed |= {ident: exc for ident, _target in moved}
        return failed

    def _not_filed(
        self, ident: str, name: str, status: str, result: dict[str, Any], exc: OSError
    ) -> None:
        self._stuck(
            f"finish:{ident}",
            lambda: self._finish(ident, name, status, result),
            exc,
            what=f"the result of trigger {name} ({status}) could not be filed",
            where=self.claimed,
            other="job.failed",
            trigger={"file": name, "id": ident},
            job={"source": "trigger", "trigger": name},
            reason="not_filed",
        )

    def _pending_result(self, ident: str) -> Path:
        return self.claimed / f"{ident}{PENDING_RESULT}"

    def _pending_target(self, ident: str) -> Path | None:
        """Where a finished trigger goes, from its pending result; ``None`` if there is none."""
        try:
            body = orjson.loads(self._pending_result(ident).read_bytes())
            return Path(body["moved_to"])
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None  # not one we wrote whole: written again

    def _move(self, ident: str, name: str, target: Path) -> None:
        """The trigger and its result into ``target``'s folder; each may already be there (a
        retry, or moved before a crash)."""
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.claimed / ident, target)  # moved before a crash, or a failed try
        with contextlib.suppress(FileNotFoundError):
            os.rename(self._pending_result(ident), target.with_name(f"{target.name}.result.json"))
        (self.progress_dir / f"{name}.json").unlink(missing_ok=True)

    def _unique(self, directory: Path, name: str, reserved: set[Path] | None = None) -> Path:
        """A free name in ``directory``: ``name``, else with a timestamp (``reserved``: names
        chosen in this batch and not moved in yet)."""
        target = directory / name
        taken = reserved or set()
        while target in taken or os.path.lexists(target):
            target = directory / f"{name}.{time.time_ns()}"
        return target

    def _write_result(self, moved: Path, kind: str, body: dict[str, Any]) -> Path:
        path = moved.with_name(f"{moved.name}.{kind}.json")
        write_atomic(path, orjson.dumps(body, option=orjson.OPT_INDENT_2, default=str))
        return path

    # --- after a crash -------------------------------------------------------------------

    def recover(self) -> None:
        """Settle triggers a crash left behind: run the unstarted, report the interrupted.

        Never raises: what cannot be settled now (no space) is tried again on later scans.
        """
        try:
            unfinished = self.journal.unfinished()
            leftovers = sorted(self.claimed.iterdir())
        except OSError as exc:
            self._stuck(
                "recover",
                self.recover,
                exc,
                what="claimed triggers could not be settled (journal or spool unreadable)",
                where=self.claimed,
                other="disk.reminder",
            )
            return
        for ident, record in unfinished.items():
            self._interrupted(ident, record)
        for claimed in leftovers:
            if claimed.name.startswith("."):
                with contextlib.suppress(OSError):
                    claimed.unlink(missing_ok=True)  # a temp file a crash left mid-write
            elif claimed.name not in unfinished and not claimed.name.endswith(PENDING_RESULT):
                self._resume(claimed.name)
        with contextlib.suppress(OSError):  # no space: the journal stays as long as it is
            self.journal.compact()

    def _interrupted(self, ident: str, record: dict[str, Any]) -> None:
        name, job_name = record.get("file", ident), record.get("job", "")
        if self._pending_target(ident) is not None:
            # It had finished; a crash cut the bookkeeping short (the result says all).
            self._finish(ident, name, "finished", {})
            return
        if not os.path.lexists(self.claimed / ident) and not self._claim_again(ident, record):
            with contextlib.suppress(OSError):
                self.journal.append({"event": "finished", "id": ident, "status": "unknown"})
            return
        self.bus.emit(
            "job.interrupted",
            f"job {job_name} from trigger {name} was interrupted (the service stopped)",
            level="warning",
            job={"name": job_name, "source": "trigger", "trigger": name},
        )
        job = job_config(self.config(), job_name)
        type_name = record.get("type") or (job.type if job is not None else "")
        try:
            impl: object = job_type(type_name) if type_name else None
        except PluginError:
            impl = None
        if type_name and moves_data(impl, type_name):
            self.controller.set_holds_interrupted({job_name})
        else:
            self.controller.release("job", job_name, why="interrupted")
        if job is not None and job.retry_safe is True:  # the config's word only
            with contextlib.suppress(OSError):
                self.journal.append({"event": "finished", "id": ident, "status": "retried"})
            self._resume(ident)
            return
        self._finish(ident, name, "interrupted", {"status": "interrupted", "job": job_name})

    def _claim_again(self, ident: str, record: dict[str, Any]) -> bool:
        """A started trigger whose claim a power loss undid: the spool file with the record's
        name and inode is that trigger; claim it again (``True``) so it is not run twice."""
        name, ino = record.get("file"), record.get("ino")
        if not isinstance(name, str) or not isinstance(ino, int):
            return False
        path = self.dir / name
        try:
            if os.lstat(path).st_ino != ino:
                return False  # a new trigger of the same name
            os.rename(path, self.claimed / ident)
            fsync_dir(self.claimed)
        except OSError:
            return False
        self._looks.pop(name, None)
        return True

    def _resume(self, ident: str) -> None:
        """Run a claimed trigger that never started (or may safely start again)."""
        name = ident.split("-", 1)[1] if "-" in ident else ident
        path = self.claimed / ident
        try:
            job, impl, args = self._validate(path, name)
        except Rejected as exc:
            self._reject(path, exc, name, f"resume:{ident}", lambda: self._resume(ident))
            return
        except FileNotFoundError:
            return
        self._submit(ident, name, job, impl, args)

    def _submit(
        self, ident: str, name: str, job: JobConfig, impl: Job, args: dict[str, Any]
    ) -> None:
        request = self._request(ident, name, job, impl, args)
        if isinstance(request, JobRequest):
            self.runner.submit(request)
        else:
            self._finish(ident, name, "failed", request)

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


def _soon(work: Callable[[], None]) -> None:
    """Run ``work`` once the current turn of the event loop is done, so what that turn
    gathered (a burst's claims) is done in one go; at once outside a loop.

    The service runs on anyio's asyncio backend; ``work`` never raises."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        work()
        return
    loop.call_soon(work)


def _iso(moment: datetime) -> str:
    return moment.isoformat()
