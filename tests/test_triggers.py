"""Drop-in triggers: names, the JSON form, path confinement, the journal, and the spool itself
on real files with a stub runner (a full disk simulated where the real one is too slow)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from watcher.cli.trigger import parse_args
from watcher.config import Config
from watcher.core.maintenance import Hold
from watcher.events.bus import EventBus
from watcher.events.record import Event
from watcher.jobs.base import JobContext, Progress
from watcher.registry import build_config
from watcher.service.controller import Controller
from watcher.service.journal import Journal
from watcher.service.runner import JobOutcome, JobRequest, JobRunner
from watcher.service.spool import BACKLOG, Spool, job_config
from watcher.sources.triggerfile import (
    MAX_NAME,
    Rejected,
    check_name,
    confine_paths,
    parse_trigger,
    read_trigger,
    wanted,
)
from watcher.system.atomic import write_atomic
from watcher.testing import capture_events

# --- which names are triggers -----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["dbcheck", "backup.nightly", "restore.2026-01-01", "anything.json", "a.b.c", "x.tmpfile"],
)
def test_wanted_names(name: str) -> None:
    """``<job>``, ``<job>.<anything>`` and ``*.json`` names are trigger candidates."""
    assert wanted(name)


@pytest.mark.parametrize(
    "name",
    [
        ".dbcheck",
        ".backup.json",
        ".claimed",
        ".control",
        "dbcheck.tmp",
        "x.json.tmp",
        "backup.part",
        "x.json.part",
        ".x.json.123.tmp",
    ],
)
def test_ignored_names(name: str) -> None:
    """Dot-files and ``*.tmp``/``*.part`` (how writers stage a file) are never candidates."""
    assert not wanted(name)


# --- what a trigger asks for ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "job"),
    [("dbcheck", "dbcheck"), ("backup.nightly", "backup"), ("archive.2026.old", "archive")],
)
def test_plain_name_gives_the_job_and_no_args(name: str, job: str) -> None:
    """A non-JSON name requests the job before the first dot, with no arguments."""
    assert parse_trigger(name, None) == (job, {})


def test_plain_name_content_is_not_read() -> None:
    """For a non-JSON name the content is irrelevant, even if it is not JSON at all."""
    assert parse_trigger("dbcheck.x", b"\x00\xff garbage") == ("dbcheck", {})


def test_json_trigger_gives_job_and_args() -> None:
    """``{"job": …, "args": {…}}`` is read whatever the file's stem says."""
    body = orjson.dumps({"job": "backup", "args": {"dest": "/b", "keep": 2}})
    assert parse_trigger("dbcheck.json", body) == ("backup", {"dest": "/b", "keep": 2})


def test_json_trigger_args_default_to_empty() -> None:
    """A JSON trigger without ``args`` has no arguments."""
    assert parse_trigger("x.json", b'{"job": "dbcheck"}') == ("dbcheck", {})


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"job": "dbcheck",}',
        b"\xff\xfe",
        b"[]",
        b'"dbcheck"',
        b"{}",
        b'{"job": ""}',
        b'{"job": 3}',
        b'{"job": null}',
        b'{"job": "dbcheck", "args": []}',
        b'{"job": "dbcheck", "args": "x=1"}',
        b'{"job": "dbcheck", "extra": 1}',
    ],
)
def test_bad_json_is_rejected(content: bytes) -> None:
    """Malformed or wrongly shaped JSON is a ``bad_json`` rejection, never a crash."""
    with pytest.raises(Rejected) as caught:
        parse_trigger("t.json", content)
    assert caught.value.reason == "bad_json"
    assert caught.value.message


def test_json_name_without_content_is_rejected() -> None:
    """A ``*.json`` trigger whose content could not be read counts as bad JSON."""
    with pytest.raises(Rejected) as caught:
        parse_trigger("t.json", None)
    assert caught.value.reason == "bad_json"


# --- where path arguments may point -----------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, ...]:
    """One allowed root (resolved, as the config stores it) and an outside directory."""
    allowed = tmp_path / "allowed"
    (allowed / "sets").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return (allowed.resolve(),)


def confine(value: Any, roots: tuple[Path, ...], name: str = "dest") -> None:
    confine_paths({name: value}, ("dest", "from"), roots)


def test_path_inside_root_is_allowed(roots: tuple[Path, ...]) -> None:
    """A path under an allowed root (or the root itself) passes."""
    confine(str(roots[0] / "sets"), roots)
    confine(str(roots[0]), roots, "from")
    confine(str(roots[0] / "sets" / "not-yet-created"), roots)


def test_path_outside_roots_is_rejected(roots: tuple[Path, ...], tmp_path: Path) -> None:
    """A path outside every allowed root is ``path_not_allowed``."""
    with pytest.raises(Rejected) as caught:
        confine(str(tmp_path / "outside"), roots)
    assert caught.value.reason == "path_not_allowed"


@pytest.mark.parametrize("tail", ["..", "../outside", "sets/../../outside", "sets/../../../etc"])
def test_dot_dot_traversal_is_rejected(roots: tuple[Path, ...], tail: str) -> None:
    """``..`` cannot climb out of an allowed root, however it is spelled."""
    with pytest.raises(Rejected) as caught:
        confine(f"{roots[0]}/{tail}", roots)
    assert caught.value.reason == "path_not_allowed"


def test_dot_dot_staying_inside_is_allowed(roots: tuple[Path, ...]) -> None:
    """``..`` that ends inside the root is fine: the resolved path is what counts."""
    confine(f"{roots[0]}/sets/../sets", roots)


def test_symlink_escaping_the_root_is_rejected(roots: tuple[Path, ...], tmp_path: Path) -> None:
    """A symlink inside an allowed root that points outside it does not let a path out."""
    (roots[0] / "escape").symlink_to(tmp_path / "outside")
    for value in (roots[0] / "escape", roots[0] / "escape" / "set1"):
        with pytest.raises(Rejected) as caught:
            confine(str(value), roots, "from")
        assert caught.value.reason == "path_not_allowed"


def test_symlink_staying_inside_is_allowed(roots: tuple[Path, ...]) -> None:
    """A symlink inside the root that points inside it is fine."""
    (roots[0] / "latest").symlink_to(roots[0] / "sets")
    confine(str(roots[0] / "latest"), roots, "from")


def test_sibling_with_common_prefix_is_rejected(roots: tuple[Path, ...]) -> None:
    """``/x/allowed2`` is not under ``/x/allowed``: roots compare by path parts, not text."""
    sibling = roots[0].with_name(roots[0].name + "2")
    sibling.mkdir()
    with pytest.raises(Rejected) as caught:
        confine(str(sibling), roots)
    assert caught.value.reason == "path_not_allowed"


def test_no_roots_means_no_paths(tmp_path: Path) -> None:
    """With ``allowed_paths`` empty, a trigger may not name a path at all."""
    with pytest.raises(Rejected) as caught:
        confine(str(tmp_path), ())
    assert caught.value.reason == "path_not_allowed"
    assert "allowed_paths" in caught.value.message


@pytest.mark.parametrize("value", ["", 3, None, ["/x"], {"p": "/x"}])
def test_non_path_value_is_bad_args(roots: tuple[Path, ...], value: Any) -> None:
    """A path argument that is not a non-empty string is ``bad_args``."""
    with pytest.raises(Rejected) as caught:
        confine(value, roots)
    assert caught.value.reason == "bad_args"


def test_nul_byte_in_a_path_is_bad_args(roots: tuple[Path, ...]) -> None:
    """A path argument with a NUL character is ``bad_args``, not a ``ValueError`` crash."""
    with pytest.raises(Rejected) as caught:
        confine(f"{roots[0]}/sets\x00/x", roots)
    assert caught.value.reason == "bad_args"


def test_symlink_loop_in_a_path_is_bad_args(roots: tuple[Path, ...]) -> None:
    """A path through a symlink loop is ``bad_args``, not a ``RuntimeError`` crash."""
    (roots[0] / "loop").symlink_to(roots[0] / "loop")
    with pytest.raises(Rejected) as caught:
        confine(str(roots[0] / "loop" / "x"), roots, "from")
    assert caught.value.reason == "bad_args"


def test_only_path_arguments_are_confined(tmp_path: Path) -> None:
    """Arguments the job does not declare as paths are not checked, and absent ones are fine."""
    confine_paths({"keep": "/etc", "before": "2020-01-01"}, ("dest", "from"), ())
    confine_paths({}, ("dest",), (tmp_path,))


def test_any_of_several_roots_will_do(tmp_path: Path) -> None:
    """A path under any one of the allowed roots passes."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    confine(str(two / "x"), (one.resolve(), two.resolve()))


# --- which job a name means -------------------------------------------------------------


def test_job_config_built_in_configured_and_unknown(tmp_path: Path) -> None:
    """Configured jobs win; built-in types are usable by name; anything else is unknown."""
    config = build_config(
        {
            "jobs": [
                {"name": "hello", "type": "command", "argv": ["true"]},
                {"name": "backup", "type": "backup", "dest": "/b", "keep": 2},
            ]
        },
        source=None,
        data_dir=tmp_path,
    )
    hello = job_config(config, "hello")
    assert hello is not None and hello.type == "command" and hello.args["argv"] == ["true"]
    backup = job_config(config, "backup")
    assert backup is not None and backup.args == {"dest": "/b", "keep": 2}
    restore = job_config(config, "restore")
    assert restore is not None and restore.type == "restore" and restore.args == {}
    assert job_config(config, "nosuch") is None


# --- the journal ------------------------------------------------------------------------


def test_journal_unfinished_and_compact(tmp_path: Path) -> None:
    """Started-but-unfinished triggers survive compaction; finished ones are dropped."""
    journal = Journal(tmp_path / "state")
    journal.append({"event": "started", "id": "1-a", "file": "a", "job": "dbcheck"})
    journal.append({"event": "started", "id": "2-b", "file": "b", "job": "dbcheck"})
    journal.append({"event": "finished", "id": "1-a", "status": "finished"})
    assert list(journal.unfinished()) == ["2-b"]
    journal.compact()
    assert [r["id"] for r in journal.records()] == ["2-b"]
    assert journal.unfinished()["2-b"]["file"] == "b"


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A record cut short by a crash mid-append is ignored; the ones before it count."""
    journal = Journal(tmp_path)
    journal.append({"event": "started", "id": "1-a", "file": "a", "job": "x"})
    with journal.path.open("ab") as f:
        f.write(b'{"event": "finished", "id": "1-')
    assert list(journal.unfinished()) == ["1-a"]
    journal.append({"event": "started", "id": "2-b", "file": "b", "job": "x"})
    assert "1-a" in journal.unfinished()


def test_journal_missing_is_empty(tmp_path: Path) -> None:
    """No journal file means nothing unfinished, and compacting it creates nothing."""
    journal = Journal(tmp_path)
    assert journal.unfinished() == {}
    journal.compact()
    assert not journal.path.exists()


def test_journal_is_private(tmp_path: Path) -> None:
    """The journal is readable by watcher's user only."""
    journal = Journal(tmp_path)
    journal.append({"event": "started", "id": "1-a"})
    assert os.stat(journal.path).st_mode & 0o777 == 0o600


# --- the CLI's --arg parsing ------------------------------------------------------------


def test_cli_args_parse_json_values_else_strings() -> None:
    """``--arg K=V`` takes JSON values as such and anything else as a string."""
    assert parse_args(["keep=3", "before=2000-01-01", "dest=/b", "flag=true", "v=a=b"]) == {
        "keep": 3,
        "before": "2000-01-01",
        "dest": "/b",
        "flag": True,
        "v": "a=b",
    }


@pytest.mark.parametrize("pair", ["novalue", "=x"])
def test_cli_args_need_key_and_value(pair: str) -> None:
    """A pair without ``=`` or without a key is a usage error."""
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_args([pair])


# --- file names that could not be recorded or filed -------------------------------------


@pytest.mark.parametrize(
    "name", [os.fsdecode(b"dbcheck.\xff"), "dbcheck." + "x" * MAX_NAME], ids=["utf8", "long"]
)
def test_bad_names_are_rejected(name: str) -> None:
    """A name that is not UTF-8 or is longer than ``MAX_NAME`` bytes is ``bad_name``."""
    with pytest.raises(Rejected) as caught:
        check_name(name)
    assert caught.value.reason == "bad_name"


def test_names_up_to_the_limit_are_fine() -> None:
    """UTF-8 names of up to ``MAX_NAME`` bytes, accents and all, pass."""
    check_name("x.json")
    check_name("dbcheck." + "é" * ((MAX_NAME - len("dbcheck.")) // 2))


# --- the spool on real files, with a stub runner ----------------------------------------

NOBODY = 65534


class PluginJob:
    """A third-party job type (``module:attr`` in the config) that says nothing about data."""

    maintenance_default = True
    retry_safe = False

    def check_args(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        return dict(args)

    async def run(self, ctx: JobContext) -> Mapping[str, Any]:
        return {}


class MovingJob(PluginJob):
    """A third-party job type that declares it moves data."""

    moves_data = True


PLAIN = PluginJob()
MOVING = MovingJob()

JOBS: list[dict[str, Any]] = [
    {"name": "hello", "type": "command", "argv": ["/bin/true"]},
    {"name": "reindex", "type": "command", "argv": ["/bin/true"], "maintenance": True},
    {"name": "plugin", "type": "tests.test_triggers:PLAIN"},
    {"name": "mover", "type": "tests.test_triggers:MOVING"},
    {"name": "again", "type": "dbcheck", "retry_safe": True},
]


class StubRunner:
    """Collects job requests instead of running them; ``started`` of them count as running,
    the rest as waiting in its queue."""

    def __init__(self) -> None:
        self.requests: list[JobRequest] = []
        self.record_starts: Callable[[list[Mapping[str, Any]]], None] | None = None
        self.started = 0

    def submit(self, *requests: JobRequest) -> None:
        self.requests.extend(requests)

    def start(self, request: JobRequest) -> None:
        """What the real runner does first when it starts the job: write its start record."""
        assert request.start_record is not None and self.record_starts is not None
        self.record_starts([request.start_record()])

    @property
    def waiting(self) -> int:
        return len(self.requests) - self.started


class Disk:
    """``write_atomic`` for the triggers module that fails with ENOSPC while ``full``."""

    def __init__(self) -> None:
        self.full = False
        self.durable: list[bool] = []

    def write_atomic(
        self, path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True
    ) -> os.stat_result:
        self.durable.append(durable)
        if self.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write_atomic(path, data, mode, durable=durable)


@dataclass
class Rig:
    """A spool on real directories with a real controller, a stub runner and a fake disk."""

    spool: Spool
    runner: StubRunner
    controller: Controller
    events: list[Event]
    disk: Disk
    no_space: list[str]

    def drop(self, name: str, body: dict[str, Any] | bytes = b"") -> Path:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        staged = self.spool.dir / f".{name}.staging"
        staged.write_bytes(data)
        os.rename(staged, self.spool.dir / name)
        return self.spool.dir / name

    def of(self, action: str) -> list[Event]:
        return [e for e in self.events if e.action == action]

    def claim(self, name: str, job: str, **record: Any) -> str:
        """Lay out a claimed trigger whose job had started (what a crash leaves)."""
        ident = f"1700000000000000000-{name}"
        (self.spool.claimed / ident).touch()
        self.spool.journal.append(
            {"event": "started", "id": ident, "file": name, "job": job, **record}
        )
        return ident

    def filed(self, where: str, name: str) -> dict[str, Any]:
        result = orjson.loads((self.spool.dir / where / f"{name}.result.json").read_bytes())
        assert isinstance(result, dict)
        return result


@contextmanager
def rig_at(data: Path, monkeypatch: pytest.MonkeyPatch, **trigger: Any) -> Iterator[Rig]:
    (data / "mw" / "data").mkdir(parents=True, exist_ok=True)
    config: Config = build_config({"jobs": JOBS, "trigger": trigger}, source=None, data_dir=data)
    disk = Disk()
    monkeypatch.setattr("watcher.service.spool.write_atomic", disk.write_atomic)
    bus = EventBus()
    controller = Controller(config.paths, bus, default_message="maintenance")
    controller.load()
    runner = StubRunner()
    spool = Spool(
        lambda: config, bus, controller, cast(JobRunner, runner), lambda: datetime.now(UTC)
    )
    spool.prepare()
    no_space: list[str] = []
    controller.on_no_space.append(lambda: no_space.append("sampled"))
    with capture_events(bus) as events:
        yield Rig(spool, runner, controller, events, disk, no_space)


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    """A spool in a fresh data directory (see ``Rig``)."""
    with rig_at(tmp_path / "data", monkeypatch) as made:
        yield made


def outcome(request: JobRequest, status: str = "finished") -> JobOutcome:
    now = datetime.now(UTC)
    return JobOutcome(request.name, status, now, now, result={"ok": True})  # type: ignore[arg-type]


def test_reject_on_a_full_disk_waits_in_the_spool(rig: Rig) -> None:
    """A trigger that cannot be rejected for lack of space stays put, is reported once, and is
    rejected on a scan once there is space."""
    rig.drop("broken.json", b"{")
    rig.disk.full = True
    rig.spool.take("broken.json")
    rig.spool.scan(force=True)
    rig.spool.scan(force=True)
    assert (rig.spool.dir / "broken.json").exists()
    assert list(rig.spool.failed.iterdir()) == []
    [warning] = rig.of("disk.reminder")
    assert warning.level == "critical"
    assert warning.fields["trigger"]["file"] == "broken.json"
    assert warning.fields["reason"] == "bad_json"
    assert rig.no_space and rig.of("trigger.rejected") == []
    rig.disk.full = False
    rig.spool.scan()
    [rejected] = rig.of("trigger.rejected")
    assert rejected.fields["reason"] == "bad_json"
    assert (rig.spool.failed / "broken.json").exists()
    assert (rig.spool.failed / "broken.json.error.json").exists()
    assert not (rig.spool.dir / "broken.json").exists()


def test_result_on_a_full_disk_waits_in_claimed(rig: Rig) -> None:
    """A finished trigger whose result cannot be written stays claimed and unfinished in the
    journal, and is filed on a scan once there is space."""
    rig.drop("dbcheck.full")
    rig.spool.take("dbcheck.full")
    [request] = rig.runner.requests
    assert request.start_record is not None and request.on_done is not None
    rig.runner.start(request)
    rig.disk.full = True
    request.on_done(outcome(request))
    [ident] = [p.name for p in rig.spool.claimed.iterdir()]
    assert list(rig.spool.journal.unfinished()) == [ident]
    assert list(rig.spool.done.iterdir()) == []
    [warning] = rig.of("disk.reminder")
    assert warning.fields["trigger"] == {"file": "dbcheck.full", "id": ident}
    rig.spool.scan()
    assert len(rig.of("disk.reminder")) == 1
    rig.disk.full = False
    rig.spool.scan()
    assert rig.filed("done", "dbcheck.full")["status"] == "finished"
    assert (rig.spool.done / "dbcheck.full").exists()
    assert list(rig.spool.claimed.iterdir()) == []
    assert rig.spool.journal.unfinished() == {}


def test_recover_on_a_full_disk_never_raises(rig: Rig) -> None:
    """Recovery on a full disk reports the interrupted trigger, keeps it claimed, and files it
    once there is space."""
    ident = rig.claim("dbcheck.cut", "dbcheck")
    rig.disk.full = True
    rig.spool.recover()
    assert [e.fields["job"]["trigger"] for e in rig.of("job.interrupted")] == ["dbcheck.cut"]
    assert (rig.spool.claimed / ident).exists()
    assert len(rig.of("disk.reminder")) == 1
    rig.disk.full = False
    rig.spool.scan()
    assert rig.filed("failed", "dbcheck.cut")["status"] == "interrupted"
    assert rig.spool.journal.unfinished() == {}


def test_progress_is_best_effort_and_not_fsynced(rig: Rig) -> None:
    """A progress report that cannot be written is skipped; progress is never fsynced."""
    rig.drop("dbcheck.p")
    rig.spool.take("dbcheck.p")
    [request] = rig.runner.requests
    assert request.on_progress is not None
    rig.disk.full = True
    request.on_progress(Progress(files_done=1, files_total=3))
    assert not (rig.spool.progress_dir / "dbcheck.p.json").exists()
    rig.disk.full = False
    request.on_progress(Progress(files_done=2, files_total=3))
    written = orjson.loads((rig.spool.progress_dir / "dbcheck.p.json").read_bytes())
    assert written["files_done"] == 2
    assert rig.disk.durable == [False, False]


def test_the_started_record_names_the_claimed_file_and_goes_to_the_journal(rig: Rig) -> None:
    """The runner writes a trigger's ``started`` record (its id, name, job and the claimed
    file's inode) into the spool's journal before the job runs."""
    rig.drop("dbcheck.j")
    rig.spool.take("dbcheck.j")
    [request] = rig.runner.requests
    [claimed] = rig.spool.claimed.iterdir()
    rig.runner.start(request)
    record = rig.spool.journal.unfinished()[claimed.name]
    assert record["file"] == "dbcheck.j" and record["job"] == "dbcheck"
    assert record["ino"] == claimed.stat().st_ino


@pytest.mark.parametrize(
    "body",
    [
        {"job": "command", "args": {"argv": ["/usr/bin/id"]}},
        {"job": "hello", "args": {"argv": ["/usr/bin/id"]}},
        {"job": "hello", "args": {"env": {"LD_PRELOAD": "/tmp/x.so"}}},
        {"job": "plugin", "args": {"argv": ["/usr/bin/id"], "env": {}}},
    ],
    ids=["builtin_command", "configured_argv", "configured_env", "plugin"],
)
def test_argv_and_env_never_come_from_a_trigger(rig: Rig, body: dict[str, Any]) -> None:
    """A trigger that sets ``argv`` or ``env`` is ``bad_args`` and nothing is run."""
    rig.drop("t.json", body)
    rig.spool.take("t.json")
    [rejected] = rig.of("trigger.rejected")
    assert rejected.fields["reason"] == "bad_args"
    assert "come from the configuration only" in rejected.message
    assert rig.runner.requests == []
    assert (rig.spool.failed / "t.json").exists()


def test_trigger_may_tune_a_configured_command(rig: Rig) -> None:
    """A trigger may still set a configured command's ``timeout``; argv stays the config's."""
    rig.drop("t.json", {"job": "hello", "args": {"timeout": "5s"}})
    rig.spool.take("t.json")
    [request] = rig.runner.requests
    assert request.args["argv"] == ["/bin/true"] and request.args["timeout"] == 5


@pytest.mark.parametrize(
    ("job", "kept"),
    [
        ("restore", True),
        ("archive", True),
        ("mover", True),
        ("reindex", False),
        ("plugin", False),
        ("dbcheck", False),
    ],
)
def test_interrupted_hold_stays_only_for_jobs_that_move_data(
    rig: Rig, job: str, kept: bool
) -> None:
    """After a crash only restore, archive and plugins with ``moves_data`` keep their hold."""
    rig.claim(f"{job}.cut", job)
    rig.controller.add_hold(Hold("job", job, since=datetime.now(UTC), message=f"job {job}"))
    rig.spool.recover()
    hold = rig.controller.hold("job", job)
    assert (hold is not None and hold.interrupted) if kept else hold is None
    assert rig.filed("failed", f"{job}.cut")["status"] == "interrupted"
    assert rig.runner.requests == []


def test_interrupted_job_type_comes_from_the_journal(rig: Rig) -> None:
    """A job since removed from the config is judged by the type its journal record names."""
    rig.claim("gone.cut", "nightly-restore", type="restore")
    since = datetime.now(UTC)
    rig.controller.add_hold(Hold("job", "nightly-restore", since=since, message="restoring"))
    rig.spool.recover()
    hold = rig.controller.hold("job", "nightly-restore")
    assert hold is not None and hold.interrupted


def test_retry_safe_is_the_configs_word_only(rig: Rig) -> None:
    """An interrupted job runs again only when configured ``retry_safe``, whatever its type says."""
    rig.claim("dbcheck.cut", "dbcheck")
    ident = rig.claim("again.cut", "again")
    rig.spool.recover()
    assert rig.filed("failed", "dbcheck.cut")["status"] == "interrupted"
    assert [r.trigger for r in rig.runner.requests] == ["again.cut"]
    assert (rig.spool.claimed / ident).exists()


# --- a burst: claimed a backlog at a time -----------------------------------------------


def unclaimed(rig: Rig) -> list[str]:
    return sorted(p.name for p in rig.spool.dir.iterdir() if p.is_file())


def test_a_burst_is_claimed_a_backlog_at_a_time(rig: Rig) -> None:
    """Past ``BACKLOG`` requests waiting for the runner, complete triggers stay unclaimed in
    the spool (rescans take none of them twice) and are taken in arrival order as it has room."""
    names = [f"hello.{i:03d}" for i in range(BACKLOG + 10)]
    for name in names:
        rig.drop(name)
        rig.spool.changed(name, True)
    assert [r.trigger for r in rig.runner.requests] == names[:BACKLOG]
    assert rig.spool.held == 10 and rig.spool.busy
    assert unclaimed(rig) == names[BACKLOG:]
    rig.spool.scan(force=True)
    rig.spool.scan(force=True)
    rig.spool.refill()
    assert len(rig.runner.requests) == BACKLOG and unclaimed(rig) == names[BACKLOG:]
    rig.runner.started = 3
    rig.spool.refill()
    assert [r.trigger for r in rig.runner.requests] == names[: BACKLOG + 3]
    rig.runner.started = len(names)
    rig.spool.refill()
    assert [r.trigger for r in rig.runner.requests] == names
    assert unclaimed(rig) == [] and rig.spool.held == 0 and not rig.spool.busy
    assert len(rig.of("trigger.accepted")) == len(names)


def test_a_held_trigger_withdrawn_before_its_turn_does_not_run(rig: Rig) -> None:
    """A held trigger is an unclaimed file: removed before there is room, it never runs."""
    names = [f"hello.{i:03d}" for i in range(BACKLOG + 2)]
    for name in names:
        rig.drop(name)
        rig.spool.changed(name, True)
    (rig.spool.dir / names[-2]).unlink()
    rig.runner.started = len(names)
    rig.spool.refill()
    assert [r.trigger for r in rig.runner.requests] == [*names[:BACKLOG], names[-1]]
    assert rig.of("trigger.rejected") == [] and not rig.spool.busy


# --- trigger files watcher may not read -------------------------------------------------


@pytest.fixture
def open_data(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    """A spool any user can reach (a 0755 directory under the system's temp dir)."""
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o755)
        with rig_at(top / "data", monkeypatch) as made:
            yield made
    finally:
        shutil.rmtree(top)


@contextmanager
def unreadable(rig: Rig, name: str) -> Iterator[Path]:
    """A trigger watcher cannot open: as root, a root-owned 0600 file while the block runs as
    ``nobody`` (which then owns the spool); otherwise the caller's own file, mode 000."""
    path = rig.drop(name, {"job": "dbcheck"})
    if os.geteuid() != 0:
        path.chmod(0)
        yield path
        return
    path.chmod(0o600)
    for directory in (rig.spool.dir, rig.spool.failed, rig.spool.claimed):
        os.chown(directory, NOBODY, NOBODY)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield path
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_trigger_is_rejected(open_data: Rig) -> None:
    """A JSON trigger watcher may not read is rejected as ``unreadable``, not a crash."""
    with unreadable(open_data, "secret.json"):
        open_data.spool.take("secret.json")
    [rejected] = open_data.of("trigger.rejected")
    assert rejected.fields["reason"] == "unreadable"
    assert (open_data.spool.failed / "secret.json").exists()
    assert open_data.runner.requests == []


def test_plain_name_content_is_never_opened(open_data: Rig) -> None:
    """A plain-named trigger is taken on its name alone, even when its content is unreadable."""
    with unreadable(open_data, "dbcheck.secret"):
        open_data.spool.take("dbcheck.secret")
    assert [r.trigger for r in open_data.runner.requests] == ["dbcheck.secret"]
    assert open_data.of("trigger.rejected") == []


def test_a_started_trigger_whose_claim_was_lost_is_not_run_again(rig: Rig) -> None:
    """A power loss that kept the ``started`` record but undid the claim's rename leaves the
    file in the spool under its name and inode: recovery files it as interrupted, never runs it."""
    path = rig.drop("lost.cut")
    ident = "1700000000000000000-lost.cut"
    record = {"event": "started", "id": ident, "file": "lost.cut", "job": "dbcheck"}
    rig.spool.journal.append({**record, "ino": path.stat().st_ino})
    rig.spool.recover()
    rig.spool.scan(force=True)
    assert rig.filed("failed", "lost.cut")["status"] == "interrupted"
    assert rig.runner.requests == [] and not path.exists()
    assert [e.fields["job"]["name"] for e in rig.of("job.interrupted")] == ["dbcheck"]


def test_a_new_trigger_of_the_same_name_is_not_taken_for_a_lost_claim(rig: Rig) -> None:
    """A spool file with the recorded name but another inode is a new trigger: it runs."""
    ident = "1700000000000000000-again.cut"
    rig.spool.journal.append(
        {"event": "started", "id": ident, "file": "again.cut", "job": "dbcheck", "ino": 1}
    )
    rig.drop("again.cut")
    rig.spool.recover()
    rig.spool.take("again.cut")
    assert [r.trigger for r in rig.runner.requests] == ["again.cut"]
    assert rig.of("job.interrupted") == []


@pytest.mark.parametrize("size", [0, 1, 4096, 65536])
def test_a_trigger_up_to_the_limit_is_read_whole_in_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A short read of a regular file is its end: no second ``read`` to learn it, and a file
    of exactly ``max_size`` bytes is still accepted whole."""
    path = tmp_path / "t.json"
    path.write_bytes(b"x" * size)
    reads: list[int] = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    _st, content = read_trigger(path, 65536, ())
    monkeypatch.undo()
    assert content == b"x" * size
    assert len(reads) == 1


def test_a_trigger_one_byte_over_the_limit_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b"x" * 65537)
    with pytest.raises(Rejected) as caught:
        read_trigger(path, 65536, ())
    assert caught.value.reason == "too_large"
