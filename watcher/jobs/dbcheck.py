"""The database check job: integrity check, then optimisation, of each SQLite file in mw/data.

``check_databases`` is synchronous (the job runs it in a worker thread). Each database is
checked on a read-only connection with SQLite's default page cache, like the ``sqlite3``
shell. With ``optimise`` (the scheduled job, never ``watcher check-db``) a database found ok
then gets a free-space check, ``PRAGMA optimize``, ``ANALYZE``, and ``VACUUM`` only when its
filesystem has twice its size free (else ``vacuum_skipped`` gives the numbers). A database
that is corrupt, not a database, or unreadable is not ok and is listed in ``corrupt``;
that is a result, never an exception.

A cancel (timeout, shutdown) interrupts the database being checked or optimised, not only
the loop between them: the check's connection is interrupted (``interrupt_on``). A check cut
short is ``cancelled`` — no verdict on that database, never a corruption claim — and the
run stops there with ``cancelled`` set.

Logs in ``mw/log/sched/dynamic``: ``Maintenance.log`` and ``Optimize.log`` are appended to,
``Maintenance_result.log`` and ``Optimize_result.log`` hold the latest run only (replaced
atomically); ``Optimize*`` only for runs that optimise. One record per line: ISO-8601 local
time, tag, ``key=value`` fields. Values are bare words, ``yes``/``no``, or JSON strings when
they hold spaces or quotes. ``*.start`` lines carry the run's start time, the others its end
time (a run's lines are written together when it ends). For example::

    2026-11-26T03:30:00+09:00 check.start mode=integrity
    2026-11-26T03:30:07+09:00 check.db path=app.db result=ok size=8192
    2026-11-26T03:30:07+09:00 check.db path=x.db result=corrupt size=40960 problems=1
    2026-11-26T03:30:07+09:00 check.problem path=x.db text="Tree 4 page 4: btreeInitPage..."
    2026-11-26T03:30:07+09:00 check.db path=n.db result=error size=9 error="file is not a database"
    2026-11-26T03:30:07+09:00 check.disk path=/srv/mw/data result=ok free=52428800 total=...
    2026-11-26T03:30:07+09:00 check.end result=corrupt databases=3 ok=1 corrupt=2 cancelled=no
    2026-11-26T03:30:00+09:00 optimise.start
    2026-11-26T03:30:07+09:00 optimise.db path=app.db optimised=yes vacuumed=yes
    2026-11-26T03:30:07+09:00 optimise.db path=n.db optimised=no vacuumed=no skipped=check_failed
    2026-11-26T03:30:07+09:00 optimise.end optimised=1 vacuumed=1 skipped=2 cancelled=no

``check.disk`` is the disk-capacity step (the manual's ディスク容量のチェック), on every run,
ok or not: ``free``/``total`` bytes of the filesystem holding ``mw/data``, the 10 MB
``floor`` and ``vacuum_needs`` (2 × the largest database); ``result`` is ``ok``, ``low``
(too little to VACUUM the largest) or ``below_floor``. It does not change ``check.end``'s
result (that is about the databases). ``*.end`` lines also carry ``elapsed=7.012s``.
``check.db`` ``result`` is ``ok``, ``corrupt``
(problems found, one ``check.problem`` line each), ``error`` (the check could not run) or
``cancelled`` (a cancel interrupted it; ``check.end`` then says ``cancelled=yes``);
``error=`` says what SQLite reported. ``check.end`` counts ``ok`` and ``corrupt`` (corrupt
or error) databases; a cancelled one is neither, and its ``optimise.db`` line says
``skipped=cancelled``. A skipped VACUUM adds ``vacuum_skipped="insufficient_space: needs
<N> bytes, <M> free"`` and a failed optimisation ``error="optimisation failed: ..."``.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from watcher.core.printable import one_line
from watcher.jobs.base import ArgumentError, JobContext, JobFailed, Progress
from watcher.jobs.manifest import reject_unknown
from watcher.jobs.space import free_bytes
from watcher.jobs.sqlitefiles import (
    HOT_JOURNAL_NOTE,
    has_hot_journal,
    interrupt_on,
    is_database,
    is_interrupt,
    is_side_file,
    settle_hot_journal,
)
from watcher.system.atomic import write_atomic

Check = Literal["integrity", "quick"]
Verdict = Literal["ok", "corrupt", "error", "cancelled"]

MAX_PROBLEMS = 100
_NOT_PROBLEMS = frozenset({"ok", "*** in database main ***"})
_BARE = re.compile(r"[\w.:/+@%-]+")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _local_now() -> datetime:
    return datetime.now().astimezone()


@dataclass(frozen=True)
class DatabaseResult:
    """The outcome for one database; ``error`` is why the check or the optimisation failed.

    ``cancelled``: a cancel interrupted the check, so there is no verdict on the database.
    """

    path: str
    ok: bool
    problems: tuple[str, ...]
    size: int
    optimised: bool = False
    vacuumed: bool = False
    vacuum_skipped: str | None = None
    error: str | None = None
    cancelled: bool = False

    @property
    def verdict(self) -> Verdict:
        """``ok``, ``corrupt`` (problems found), ``error`` (the check could not run) or
        ``cancelled`` (interrupted: no verdict)."""
        if self.cancelled:
            return "cancelled"
        return "ok" if self.ok else "corrupt" if self.problems else "error"


FLOOR = 10 * 1024 * 1024
"""The model product stops working under 10 MB free (its DiskFreeSpace floor)."""


@dataclass(frozen=True)
class DiskCheck:
    """The disk-capacity step: free space where the databases live, against the floor and
    against what optimising needs (VACUUM of the largest database wants 2 × its size)."""

    path: str
    free: int
    total: int
    floor: int
    vacuum_needs: int

    @property
    def result(self) -> Literal["ok", "low", "below_floor"]:
        """``below_floor``: under 10 MB; ``low``: too little to VACUUM the largest database."""
        if self.free < self.floor:
            return "below_floor"
        return "low" if self.free < self.vacuum_needs else "ok"


def check_disk(data: Path, sizes: list[int], free_space: Callable[[Path], int]) -> DiskCheck:
    """The disk-capacity step's figures for the filesystem holding ``data``."""
    st = os.statvfs(data)
    return DiskCheck(
        str(data), free_space(data), st.f_blocks * st.f_frsize, FLOOR, 2 * max(sizes, default=0)
    )


@dataclass(frozen=True)
class CheckReport:
    """One run over all databases; ``cancelled``: a cancel came during it (may be partial)."""

    started: datetime
    finished: datetime
    check: Check
    databases: tuple[DatabaseResult, ...]
    optimise: bool = False
    cancelled: bool = False
    disk: DiskCheck | None = None

    @property
    def corrupt(self) -> tuple[str, ...]:
        """Paths of the databases found corrupt, not a database, or unreadable.

        A database whose check was cancelled is not among them: nothing was found.
        """
        return tuple(db.path for db in self.databases if db.verdict in ("corrupt", "error"))

    @property
    def ok_count(self) -> int:
        """How many databases passed the check."""
        return sum(db.ok for db in self.databases)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable data, with ISO-8601 times and the ``corrupt`` list."""
        times = {"started": self.started.isoformat(), "finished": self.finished.isoformat()}
        dbs = [{**asdict(db), "problems": list(db.problems)} for db in self.databases]
        disk = None if self.disk is None else {**asdict(self.disk), "result": self.disk.result}
        return {
            **asdict(self),
            **times,
            "databases": dbs,
            "corrupt": list(self.corrupt),
            "disk": disk,
        }


def find_databases(data: Path, *, maint_file: Path | None = None) -> list[Path]:
    """SQLite files under ``data``, sorted: by extension or by header, never side files or maint."""
    if not data.is_dir():
        raise FileNotFoundError(f"database directory {data} does not exist")
    found = [
        Path(root, name)
        for root, _dirs, names in os.walk(data)
        for name in names
        if not is_side_file(name)
    ]
    return sorted(p for p in found if p != maint_file and _is_database_file(p))


def _is_database_file(path: Path) -> bool:
    """Whether ``path`` is a regular file that is a database (unreadable: not one)."""
    try:
        return stat.S_ISREG(path.lstat().st_mode) and is_database(path)
    except OSError:
        return False


def check_databases(
    data: Path,
    *,
    check: Check = "integrity",
    optimise: bool,
    progress: Callable[[Progress], None] = lambda _p: None,
    cancelled: threading.Event | None = None,
    now: Callable[[], datetime] = _local_now,
    free_space: Callable[[Path], int] = free_bytes,
    maint_file: Path | None = None,
    settle_journals: bool = False,
) -> CheckReport:
    """Check (and with ``optimise``, optimise) every database; a cancel stops the run.

    A cancel interrupts the database at hand (its result is ``cancelled``) and no further
    database is started.

    ``settle_journals`` (the job, under maintenance) first rolls back a hot journal left by
    a killed writer; without it (the manual check) a hot journal is reported, not touched.
    """
    started, stop = now(), cancelled or threading.Event()
    paths = find_databases(data, maint_file=maint_file)
    sizes = [_size(p) for p in paths]
    results: list[DatabaseResult] = []
    for path, size in zip(paths, sizes, strict=True):
        if stop.is_set():
            break
        name = path.relative_to(data).as_posix()
        if has_hot_journal(path) and not _settled(path, settle_journals):
            result = DatabaseResult(name, False, (), size, error=HOT_JOURNAL_NOTE)
        else:
            result = _check_one(path, name, size, check, stop)
        if optimise and result.ok:
            result = _optimise_one(path, result, free_space, stop)
        results.append(result)
        done = len(results)
        progress(Progress(done, len(paths), sum(sizes[:done]), sum(sizes), result.path))
    disk = check_disk(data, sizes, free_space)
    return CheckReport(started, now(), check, tuple(results), optimise, stop.is_set(), disk)


def _settled(path: Path, allowed: bool) -> bool:
    """Roll back a hot journal when allowed; ``False`` when it is still there."""
    if not allowed:
        return False
    try:
        settle_hot_journal(path)
    except sqlite3.Error:
        return False
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _check_one(
    path: Path, name: str, size: int, check: Check, stop: threading.Event
) -> DatabaseResult:
    """Run the integrity or quick check on a read-only connection that a cancel interrupts.

    SQLite may return the b-tree problems as a row and then fail the next step with
    "database disk image is malformed". Python's cursor drops a row whose next step fails,
    so each row is captured by a SQL function as SQLite produces it. An interrupted check
    is ``cancelled``: no verdict, and whatever it reported so far is dropped (a partial
    check proves nothing, and a corruption claim holds maintenance).
    """
    rows: list[str] = []
    error = None
    try:
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as conn:
            conn.create_function("watcher_row", 1, rows.append)
            with interrupt_on(conn, stop):
                sql = f"SELECT watcher_row({check}_check) FROM pragma_{check}_check"
                conn.execute(sql).fetchall()
    except sqlite3.Error as exc:
        if is_interrupt(exc):
            return DatabaseResult(name, False, (), size, cancelled=True)
        error = str(exc)
    lines = (line for row in rows for line in str(row).splitlines())
    problems = tuple(line for line in lines if line not in _NOT_PROBLEMS)[:MAX_PROBLEMS]
    ok = bool(rows) and not problems and error is None
    return DatabaseResult(name, ok, problems, size, error=error)


def _optimise_one(
    path: Path,
    result: DatabaseResult,
    free_space: Callable[[Path], int],
    cancelled: threading.Event,
) -> DatabaseResult:
    """Free-space check, ``PRAGMA optimize``, ``ANALYZE``, then ``VACUUM`` if 2 × size is free."""
    needed, free = 2 * result.size, free_space(path.parent)
    try:
        with (
            closing(sqlite3.connect(path, isolation_level=None)) as conn,
            interrupt_on(conn, cancelled),
        ):
            conn.execute("PRAGMA optimize")
            conn.execute("ANALYZE")
            result = replace(result, optimised=True)
            if free < needed:
                skipped = f"insufficient_space: needs {needed} bytes, {free} free"
                return replace(result, vacuum_skipped=skipped)
            conn.execute("VACUUM")
            return replace(result, vacuumed=True)
    except sqlite3.Error as exc:
        return replace(result, error=f"optimisation failed: {exc}")


def write_logs(logs: Path, report: CheckReport) -> None:
    """Append the run to ``Maintenance.log``/``Optimize.log``; replace the ``*_result.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    _publish(logs, "Maintenance", _check_lines(report))
    if report.optimise:
        _publish(logs, "Optimize", _optimise_lines(report))


def _publish(logs: Path, stem: str, lines: Iterator[str]) -> None:
    text = "".join(f"{line}\n" for line in lines)
    with (logs / f"{stem}.log").open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    write_atomic(logs / f"{stem}_result.log", text.encode())


def _line(at: datetime, tag: str, **fields: object) -> str:
    values = (f"{key}={_value(value)}" for key, value in fields.items() if value is not None)
    return " ".join((at.isoformat(timespec="seconds"), tag, *values))


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text if _BARE.fullmatch(text) else one_line(json.dumps(text, ensure_ascii=False))


def _elapsed(report: CheckReport) -> str:
    return f"{(report.finished - report.started).total_seconds():.3f}s"


def _check_lines(report: CheckReport) -> Iterator[str]:
    end = report.finished
    yield _line(report.started, "check.start", mode=report.check)
    for db in report.databases:
        yield _line(
            end,
            "check.db",
            path=db.path,
            result=db.verdict,
            size=db.size,
            problems=len(db.problems) or None,
            error=None if db.ok else db.error,
        )
        for problem in db.problems:
            yield _line(end, "check.problem", path=db.path, text=problem)
    if report.disk is not None:
        d = report.disk
        yield _line(
            end,
            "check.disk",
            path=d.path,
            result=d.result,
            free=d.free,
            total=d.total,
            floor=d.floor,
            vacuum_needs=d.vacuum_needs,
        )
    yield _line(
        end,
        "check.end",
        result="corrupt" if report.corrupt else "ok",
        databases=len(report.databases),
        ok=report.ok_count,
        corrupt=len(report.corrupt),
        cancelled=report.cancelled,
        elapsed=_elapsed(report),
    )


def _optimise_lines(report: CheckReport) -> Iterator[str]:
    end, dbs = report.finished, report.databases
    yield _line(report.started, "optimise.start")
    for db in dbs:
        yield _line(
            end,
            "optimise.db",
            path=db.path,
            optimised=db.optimised,
            vacuumed=db.vacuumed,
            vacuum_skipped=db.vacuum_skipped,
            skipped=None if db.ok else "cancelled" if db.cancelled else "check_failed",
            error=db.error if db.ok else None,
        )
    yield _line(
        end,
        "optimise.end",
        optimised=sum(db.optimised for db in dbs),
        vacuumed=sum(db.vacuumed for db in dbs),
        skipped=sum(not db.optimised for db in dbs),
        cancelled=report.cancelled,
        elapsed=_elapsed(report),
    )


def format_report(report: CheckReport) -> str:
    """Human-readable text of a run, as ``watcher check-db`` prints it; names and errors
    escaped (``one_line``), one line each."""
    out = [
        f"Database check ({report.check}): {report.started.isoformat(timespec='seconds')}"
        f" – {report.finished.isoformat(timespec='seconds')}"
    ]
    for db in report.databases:
        out.append(f"  {db.verdict.upper():<8} {one_line(str(db.path))} ({db.size} bytes)")
        out += [f"           {one_line(text)}" for p in db.problems for text in p.splitlines()]
        if db.error:
            out.append(f"           {one_line(db.error)}")
        if report.optimise and db.optimised:
            vacuum = "vacuumed" if db.vacuumed else f"vacuum skipped: {db.vacuum_skipped}"
            out.append(f"           optimised, {vacuum}")
    if report.disk is not None:
        d = report.disk
        out.append(
            f"  DISK     {d.result}: {d.free} bytes free of {d.total} on {d.path}"
            f" (floor {d.floor}, VACUUM of the largest database needs {d.vacuum_needs})"
        )
    total, bad = len(report.databases), len(report.corrupt)
    unchecked = sum(db.verdict == "cancelled" for db in report.databases)
    out.append(
        f"{total} database(s): {report.ok_count} ok, {bad} corrupt or unreadable"
        + (f", {unchecked} not checked" if unchecked else "")
        + (" — cancelled before the end" if report.cancelled else "")
    )
    return "\n".join(out) + "\n"


def _choice(args: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = args.get(key, allowed[0])
    if value not in allowed:
        raise ArgumentError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _flag(args: Mapping[str, Any], key: str, default: bool) -> bool:
    value = args.get(key, default)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if not isinstance(value, bool):
        raise ArgumentError(f"{key} must be true or false, not {value!r}")
    return value


class DbCheckJob:
    """The ``dbcheck`` job type: checks and optimises the databases under maintenance."""

    maintenance_default = True
    retry_safe = True

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        """``check`` (integrity|quick), ``on_corruption`` (hold|release), ``optimise`` (bool)."""
        reject_unknown(args, ("check", "on_corruption", "optimise"))
        return {
            "check": _choice(args, "check", ("integrity", "quick")),
            "on_corruption": _choice(args, "on_corruption", ("hold", "release")),
            "optimise": _flag(args, "optimise", True),
        }

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        """Check in a worker thread, write the logs there too; the result lists ``corrupt``."""
        args = self.check_args(ctx.args)
        report = await anyio.to_thread.run_sync(partial(self._work, ctx, args))
        return report.to_dict()

    @staticmethod
    def _work(ctx: JobContext, args: Mapping[str, Any]) -> CheckReport:
        """The thread's part: check, then log, so an interrupted run is logged too."""
        if not ctx.paths.data.is_dir():
            raise JobFailed(
                "data_missing",
                f"database directory {ctx.paths.data} does not exist",
                path=str(ctx.paths.data),
            )
        report = check_databases(
            ctx.paths.data,
            check=args["check"],
            optimise=args["optimise"],
            progress=ctx.progress,
            cancelled=ctx.cancelled,
            now=ctx.now,
            maint_file=ctx.paths.maint_file,
            settle_journals=True,
        )
        write_logs(ctx.paths.logs, report)
        return report


JOB = DbCheckJob()
