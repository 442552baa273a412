"""The ``watcher`` command line (DESIGN §8). Exit codes: 0 ok, 1 failure, 2 usage or config.

Only this module turns errors into messages and exit codes; everything below raises.
Commands that change state go through the running service's control socket
(``mw/watcher/control.sock``), or, when no service runs, write the state themselves under
the instance lock; they say which way they went. Every path ends in one line on stderr
and exit 1 or 2 — a full disk, a read-only filesystem, a refused permission or a vanished
data directory included; ``main`` turns any stray ``OSError`` into one such line.
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
import orjson

from watcher import __version__
from watcher.config import Config, ConfigError, find_config
from watcher.core.printable import one_line, one_line_all, safe_json
from watcher.events.bus import EventBus
from watcher.registry import load_config
from watcher.service.controller import Controller
from watcher.service.operations import RequestError, enter, leave
from watcher.sources.control import ControlUnavailable, socket_path
from watcher.sources.control import request as control_request
from watcher.system.filemodes import restrict_umask
from watcher.system.lock import AlreadyRunning, InstanceLock, running_pid

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A command failed; the message is for the operator."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace) -> Config:
    data_dir = Path(args.data_dir) if args.data_dir else None
    return load_config(find_config(Path(args.config) if args.config else None), data_dir)


def cmd_run(args: argparse.Namespace) -> int:
    from watcher.service.lifecycle import Service

    config = _config(args)
    service = Service(config, data_dir_override=Path(args.data_dir) if args.data_dir else None)
    try:
        return anyio.run(service.serve)
    except AlreadyRunning as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _config(args)
    where = config.source or "(defaults)"
    print(
        f"{where}: ok (data_dir {config.data_dir}, {len(config.jobs)} jobs, "
        f"{len(config.maintenance.windows)} windows, {len(config.handlers)} handlers)"
    )
    return EXIT_OK


def _change(args: argparse.Namespace, request: dict[str, Any]) -> int:
    """Carry out a state-changing request through the service, or directly when it is down."""
    config = _config(args)
    lock = InstanceLock(config.paths.state / "lock")
    try:
        lock.acquire(record_pid=False)
    except AlreadyRunning as running:
        answer = _ask(config, request, running.pid)
        _print_answer(answer, running.pid)
        return EXIT_OK if answer.get("ok") else EXIT_FAILURE
    except OSError as exc:
        raise CommandError(_os_message("cannot take the instance lock", exc)) from None
    try:
        ctl = Controller(
            config.paths, EventBus(), default_message=config.maintenance.message, tz=config.tz
        )
        ctl.load()
        if request["op"] == "enter":
            message = enter(ctl, request, config.tz, config.maintenance.granularity)
        else:
            message = leave(ctl)
    except RequestError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(_os_message(f"{request['op']} failed", exc)) from None
    finally:
        lock.release()
    print(f"{message} (service not running: state written directly)")
    if ctl.message_lost:
        print("watcher: the maint file is empty: its message could not be written", file=sys.stderr)
    return EXIT_OK


def _ask(config: Config, request: dict[str, Any], pid: int | None) -> dict[str, Any]:
    """The running service's answer to ``request`` over its control socket."""
    try:
        return control_request(socket_path(config.paths.state), request)
    except ControlUnavailable as exc:
        raise CommandError(f"the service (pid {pid}) cannot be reached: {exc}") from None


def _print_answer(answer: dict[str, Any], pid: int | None) -> None:
    answer = one_line_all(answer)
    if answer.get("refused"):
        print(f"watcher: refused by the service: {answer.get('message')}", file=sys.stderr)
        return
    stream = sys.stdout if answer.get("ok") else sys.stderr
    prefix = "" if answer.get("ok") else "watcher: "
    print(f"{prefix}{answer.get('message')} (through the running service, pid {pid})", file=stream)
    if answer.get("warning"):
        print(f"watcher: {answer['warning']}", file=sys.stderr)


def _os_message(what: str, exc: OSError) -> str:
    """One line: what failed, on which file, and why."""
    where = f" ({exc.filename})" if exc.filename else ""
    reason = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "; the disk is full",
        errno.EROFS: "; the filesystem is read-only",
        errno.EACCES: f"; uid {os.getuid()} may not",
        errno.EPERM: f"; uid {os.getuid()} may not",
        errno.ENOENT: "; does the data directory exist?",
    }.get(exc.errno or 0, "")
    return f"{what}: {reason}{where}{hint}"


def cmd_enter(args: argparse.Namespace) -> int:
    request = {
        "op": "enter",
        "message": args.message,
        "window": args.window,
        "for": args.duration,
        "until": args.until,
    }
    if args.cluster:
        return _cluster_change(args, request)
    return _change(args, request)


def cmd_leave(args: argparse.Namespace) -> int:
    if args.cluster:
        return _cluster_change(args, {"op": "leave"})
    return _change(args, {"op": "leave"})


def _cluster_config(args: argparse.Namespace) -> Config:
    config = _config(args)
    if not config.cluster.enabled:
        where = config.source or "(no config file)"
        raise CommandError(f"--cluster: {where} has no [cluster] url", EXIT_USAGE)
    return config


def _cluster_change(args: argparse.Namespace, request: dict[str, Any]) -> int:
    """A fleet-wide change, written to the cluster's Redis (never through the local service)."""
    from watcher.cli import cluster
    from watcher.sources.cluster import ClusterUnreachable

    config = _cluster_config(args)
    try:
        if request["op"] == "enter":
            message = cluster.enter(config, request)
        else:
            message = cluster.leave(config)
    except RequestError as exc:
        raise CommandError(str(exc)) from None
    except ClusterUnreachable as exc:
        raise CommandError(f"{exc}; nothing changed") from None
    print(message)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    if args.cluster:
        from watcher.cli.cluster import fleet, format_fleet
        from watcher.sources.cluster import ClusterUnreachable

        try:
            report = fleet(_cluster_config(args))
        except ClusterUnreachable as exc:
            raise CommandError(str(exc)) from None
        _show(report, args.json, format_fleet)
        return EXIT_OK
    from watcher.cli.status import collect, format_status

    _show(collect(_config(args)), args.json, format_status)
    return EXIT_OK


def _show(report: Any, as_json: bool, formatter: Callable[[Any], str]) -> None:
    """Print a report as indented JSON or through its formatter."""
    if as_json:
        sys.stdout.write(
            safe_json(orjson.dumps(report, option=orjson.OPT_INDENT_2)).decode() + "\n"
        )
    else:
        print(formatter(one_line_all(report)))


def cmd_trigger(args: argparse.Namespace) -> int:
    from watcher.cli.trigger import follow, parse_args
    from watcher.sources.triggerdrop import drop

    config = _config(args)
    try:
        job_args = parse_args(args.arg or [])
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    pid = running_pid(config.paths.state / "lock")
    if pid is not None:
        answer = _ask(config, {"op": "trigger", "job": args.job, "args": job_args}, pid)
        if not answer.get("ok"):
            _print_answer(answer, pid)
            return EXIT_FAILURE
        name = str(answer.get("name"))
        print(f"trigger {name} dropped (service pid {pid})")
        return follow(config, name) if args.wait else EXIT_OK
    if args.require_service:
        raise CommandError(f"the service is not running: nothing started (trigger {args.job})")
    try:
        name = drop(config.paths.spool, args.job, job_args)
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except OSError as exc:
        raise CommandError(_os_message("cannot write the trigger", exc)) from None
    print(f"trigger {name} dropped; the service is not running: it runs when it starts")
    if args.wait:
        print("watcher: --wait: no service is running to follow the job", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    from watcher.cli.jobs_report import collect, format_jobs

    _show(collect(_config(args)), args.json, format_jobs)
    return EXIT_OK


def cmd_check_db(args: argparse.Namespace) -> int:
    from watcher.jobs.dbcheck import check_databases, format_report

    config = _config(args)
    if not config.paths.data.is_dir():
        raise CommandError(f"no database directory {config.paths.data}")
    report = check_databases(config.paths.data, optimise=False, maint_file=config.paths.maint_file)
    text = format_report(report)
    if args.output:  # the manual saves the check and the environment report in one file
        text += "\n" + _environment(args)
    _deliver(text, args.output)
    if report.corrupt:
        print(f"CORRUPT: {', '.join(report.corrupt)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _environment(args: argparse.Namespace) -> str:
    """The ``diagnose`` report as text, headed, for appending to a saved check."""
    from watcher.cli.diagnose import collect, format_report

    report = collect(
        Path(args.config) if args.config else None,
        Path(args.data_dir) if args.data_dir else None,
    )
    return "Environment (watcher diagnose)\n" + format_report(one_line_all(report))


def cmd_diagnose(args: argparse.Namespace) -> int:
    from watcher.cli.diagnose import collect, format_report

    report = collect(
        Path(args.config) if args.config else None,
        Path(args.data_dir) if args.data_dir else None,
    )
    if args.json:
        text = safe_json(orjson.dumps(report, option=orjson.OPT_INDENT_2)).decode()
    else:
        text = format_report(one_line_all(report))
    _deliver(text, args.output)
    if not report["config_check"]["ok"]:
        if args.output or not args.json:  # --json on stdout stays clean for its reader
            where = args.output or "the report"
            print(f"watcher: the configuration check failed (see {where})", file=sys.stderr)
        return EXIT_FAILURE
    if report.get("warnings"):
        print(f"watcher: {one_line(report['warnings'][0])}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from watcher.cli.history import history_path, read, render

    config = _config(args)
    try:
        rows = read(history_path(config.paths.state), args.since, args.action)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(render(rows, as_json=args.json))
    return EXIT_OK


def cmd_archives(args: argparse.Namespace) -> int:
    from watcher.cli.archives import collect, export, format_archives
    from watcher.jobs.archives import ArchiveLookupError

    config = _config(args)
    if getattr(args, "archives_command", None) != "export":
        _show(collect(config), args.json, format_archives)
        return EXIT_OK
    if not args.csv:
        raise CommandError("archives export: --csv is required (the only format)", EXIT_USAGE)
    try:
        count, db = export(config, args.id, args.table, args.output)
    except ArchiveLookupError as exc:
        raise CommandError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise CommandError(f"archives export: {exc}") from None
    if args.output:
        print(f"{count} rows of {args.table} from {db} written to {args.output}")
    return EXIT_OK


def cmd_archive_prepare(args: argparse.Namespace) -> int:
    from datetime import datetime

    from watcher.cli.mwsave import PrepareError, prepare

    config = _config(args)
    try:
        path = prepare(config, args.before, args.space, datetime.now(config.tz))
    except PrepareError as exc:
        raise CommandError(f"archive prepare: {exc}", EXIT_USAGE) from None
    except OSError as exc:
        raise CommandError(_os_message("archive prepare: cannot write mwsave", exc)) from None
    space = f" of mail space {args.space}" if args.space else ""
    print(f"{path} written: run it (./mwsave) to archive the data before {args.before}{space}")
    return EXIT_OK


def _deliver(text: str, output: str | None) -> None:
    """A report to ``--output F``, or to stdout."""
    if output:
        try:
            Path(output).write_text(text + "\n")
        except OSError as exc:
            raise CommandError(_os_message(f"cannot write the report to {output}", exc)) from None
        print(f"report written to {output}")
    else:
        print(text)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="F",
        help="config file (default: $WATCHER_CONFIG, /etc/watcher/watcher.toml, or none)",
    )
    parser.add_argument("--data-dir", metavar="D", help="data directory (overrides data_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watcher", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        _common(p)
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "run the service in the foreground")
    status = command("status", cmd_status, "maintenance, holds, windows, service up?")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--cluster", action="store_true", help="every host of the [cluster]")
    p = command("enter", cmd_enter, "enter manual maintenance")
    p.add_argument("--cluster", action="store_true", help="on every host of the [cluster]")
    p.add_argument("--message", "-m", help="message shown to users")
    p.add_argument("--window", metavar="HH:MM-HH:MM", help="a daily window, until `leave`")
    until = p.add_mutually_exclusive_group()
    until.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 2h, 30m")
    until.add_argument("--until", metavar="TIME", help="HH:MM or an ISO-8601 date-time")
    p = command("leave", cmd_leave, "release manual maintenance")
    p.add_argument("--cluster", action="store_true", help="release the [cluster]'s, everywhere")
    p = command("trigger", cmd_trigger, "drop a trigger file to start a job")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--arg", action="append", metavar="K=V", help="a job argument (repeatable)")
    p.add_argument("--wait", action="store_true", help="follow the job to its end")
    p.add_argument(
        "--require-service",
        action="store_true",
        help="with no running service, drop nothing and exit 1 (mwsave uses this)",
    )
    p = command("jobs", cmd_jobs, "jobs, schedules, last results")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("check-db", cmd_check_db, "check the databases now (no maintenance, no optimising)")
    p.add_argument("--output", metavar="F", help="write the report and the environment to F")
    p = command("diagnose", cmd_diagnose, "environment report for support")
    p.add_argument("--output", metavar="F", help="write the report to F")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("history", cmd_history, "recent events from the history file")
    p.add_argument("--since", default="24h", metavar="DURATION", help="how far back (24h)")
    p.add_argument("--action", default="*", metavar="GLOB", help="e.g. 'maintenance.*'")
    p.add_argument("--json", action="store_true", help="one ECS JSON document a line")
    p = command("archives", cmd_archives, "archived data (back<ID>): space, period, tables")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    archives_sub = p.add_subparsers(dest="archives_command", metavar="SUBCOMMAND")
    export = archives_sub.add_parser("export", help="an archived table's rows as CSV")
    _common(export)
    export.add_argument("id", type=int, metavar="ID", help="the archive's ID (back<ID>)")
    export.add_argument("table", metavar="TABLE", help="table name, or DATABASE:TABLE")
    export.add_argument("--csv", action="store_true", help="CSV with a header line")
    export.add_argument("--output", metavar="F", help="write to F instead of stdout")
    export.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    export.set_defaults(func=cmd_archives)
    p = sub.add_parser("archive", help="archive (退避) commands: prepare writes ./mwsave")
    archive_sub = p.add_subparsers(dest="archive_command", required=True, metavar="SUBCOMMAND")
    prepare = archive_sub.add_parser(
        "prepare", help="write <data_dir>/mwsave, which runs this archive through the service"
    )
    _common(prepare)
    prepare.add_argument("--before", required=True, metavar="DATE", help="YYYY-MM-DD")
    prepare.add_argument("--space", metavar="WS", help="only this mail space, e.g. ws1")
    prepare.set_defaults(func=cmd_archive_prepare)
    config = sub.add_parser("config", help="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = config_sub.add_parser("check", help="validate the configuration without running")
    _common(check)
    check.set_defaults(func=cmd_config_check)
    return parser


def fail(message: str, code: int, details: Sequence[str] = ()) -> NoReturn:
    """``watcher: MESSAGE`` on stderr, then each detail on a line of its own; all escaped
    (``one_line``), so no text in them starts a line of its own; then exit with ``code``."""
    lines = [f"watcher: {one_line(message)}", *(f"  {one_line(d)}" for d in details)]
    sys.stderr.write("\n".join(lines) + "\n")
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    restrict_umask()  # nothing watcher (or a job it starts) creates is world-writable
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        if len(exc.problems) == 1:
            fail(f"configuration error: {exc.problems[0]}", EXIT_USAGE)
        fail("configuration error:", EXIT_USAGE, [str(p) for p in exc.problems])
    except CommandError as exc:
        fail(str(exc), exc.code)
    except BrokenPipeError:
        return EXIT_FAILURE
    except OSError as exc:  # the backstop: any path above should have said more
        fail(_os_message(f"{args.command} failed", exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
