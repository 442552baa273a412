"""Drop-in triggers end to end: the real ``watcher run`` taking real files from a real spool."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    Doc,
    ServiceProcess,
    Start,
    allowed_paths,
    cli,
    drop_trigger,
    eventually,
    filed_in,
    maint,
    ran,
    service_at,
    stopped_once,
    toml,
    write_config,
)
from tests.test_disk_e2e import small_filesystem
from watcher.core.maintenance import Hold, decide
from watcher.demo import create_demo
from watcher.jobs.manifest import verify_manifest
from watcher.service.journal import Journal
from watcher.service.spool import BACKLOG
from watcher.service.state import FileStamp, StateStore
from watcher.sources.triggerfile import MAX_NAME, shown
from watcher.system.atomic import write_atomic

Maker = Callable[[Path, Path], str]
PY = sys.executable

HELLO = (
    "import os, sys; "
    "print('hello from', os.environ['WATCHER_JOB_NAME'], os.environ['WATCHER_JOB_SOURCE'], "
    "os.environ.get('GREETING', '-')); "
    "print('to stderr', file=sys.stderr)"
)
SAD = "import sys; print('partial output'); sys.exit(3)"


# --- helpers ----------------------------------------------------------------------------


def spool_of(data_dir: Path) -> Path:
    return data_dir / "mw" / "spool"


def config_file(tmp_path: Path, *, allowed: list[Path] | None = None, extra: str = "") -> Path:
    """A config with the given ``allowed_paths`` and two command jobs, ``hello`` and ``sad``."""
    trigger = "[trigger]\n" if allowed is None else allowed_paths(*allowed)
    lines = [
        trigger + extra,
        "[[jobs]]",
        'name = "hello"',
        'type = "command"',
        f"argv = {toml([PY, '-c', HELLO])}",
        "[[jobs]]",
        'name = "sad"',
        'type = "command"',
        f"argv = {toml([PY, '-c', SAD])}",
    ]
    return write_config(tmp_path / "watcher.toml", "\n".join(lines) + "\n")


def about(name: str) -> Callable[[Doc], bool]:
    """Events about the trigger file ``name`` (trigger.* events)."""
    return lambda e: e["watcher"].get("trigger", {}).get("file") == name


def count(svc: ServiceProcess, action: str, where: Callable[[Doc], bool], after: int = 0) -> int:
    return sum(1 for e in svc.events[after:] if e["event"]["action"] == action and where(e))


def result(spool: Path, where: str, name: str, kind: str = "result") -> dict[str, Any]:
    doc = json.loads((spool / where / f"{name}.{kind}.json").read_bytes())
    assert isinstance(doc, dict)
    return doc


def run_trigger(
    svc: ServiceProcess,
    spool: Path,
    name: str,
    body: dict[str, Any] | bytes | None = None,
    outcome: str = "job.finished",
) -> Doc:
    """Drop a trigger and wait for its job's outcome event."""
    mark = svc.mark()
    drop_trigger(spool, name, body)
    return svc.wait_for(outcome, ran(name), after=mark)


def assert_serving(svc: ServiceProcess, spool: Path, tag: str = "after") -> None:
    """A valid trigger dropped now still runs to completion and lands in ``done/``."""
    name = f"dbcheck.{tag}"
    run_trigger(svc, spool, name)
    assert result(spool, "done", name)["status"] == "finished"


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM items").fetchone()
    conn.close()
    return int(n)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- rejections -------------------------------------------------------------------------


def symlink(spool: Path, tmp: Path) -> str:
    target = tmp / "elsewhere"
    target.write_text("")
    (spool / "dbcheck.link").symlink_to(target)
    return "dbcheck.link"


def fifo(spool: Path, _tmp: Path) -> str:
    os.mkfifo(spool / "dbcheck.fifo")
    return "dbcheck.fifo"


def directory(spool: Path, _tmp: Path) -> str:
    (spool / "dbcheck.dir").mkdir()
    return "dbcheck.dir"


def symlink_json(spool: Path, tmp: Path) -> str:
    """A ``*.json`` trigger is read through one descriptor with no ``lstat`` first: the
    ``O_NOFOLLOW`` open and its ``fstat`` must refuse what the ``lstat`` refuses."""
    target = tmp / "elsewhere.json"
    target.write_bytes(b'{"job": "dbcheck"}')
    (spool / "linked.json").symlink_to(target)
    return "linked.json"


def fifo_json(spool: Path, _tmp: Path) -> str:
    os.mkfifo(spool / "piped.json")
    return "piped.json"


def directory_json(spool: Path, _tmp: Path) -> str:
    (spool / "folder.json").mkdir()
    return "folder.json"


def foreign_owner_json(spool: Path, _tmp: Path) -> str:
    staged = spool / ".owned-json.staging"
    staged.write_bytes(b'{"job": "dbcheck"}')
    os.chown(staged, 12345, 12345)
    os.rename(staged, spool / "owned.json")
    return "owned.json"


def too_large(spool: Path, _tmp: Path) -> str:
    body = b'{"job": "dbcheck"}'
    drop_trigger(spool, "big.json", body + b" " * (64 * 1024 + 1 - len(body)))
    return "big.json"


def foreign_owner(spool: Path, _tmp: Path) -> str:
    staged = spool / ".owned.staging"
    staged.write_text("")
    os.chown(staged, 12345, 12345)
    os.rename(staged, spool / "dbcheck.owned")
    return "dbcheck.owned"


def json_trigger(name: str, body: dict[str, Any] | bytes) -> Maker:
    def make(spool: Path, _tmp: Path) -> str:
        drop_trigger(spool, name, body)
        return name

    return make


def backup_to(name: str, dest: Callable[[Path], str]) -> Maker:
    def make(spool: Path, tmp: Path) -> str:
        drop_trigger(spool, name, {"job": "backup", "args": {"dest": dest(tmp)}})
        return name

    return make


def escape_link(tmp: Path) -> str:
    (tmp / "backups" / "escape").symlink_to(tmp / "outside")
    return str(tmp / "backups" / "escape" / "sets")


REJECTIONS: list[tuple[str, Maker, str]] = [
    ("symlink", symlink, "symlink"),
    ("fifo", fifo, "not_regular"),
    ("directory", directory, "not_regular"),
    ("too_large", too_large, "too_large"),
    ("owner", foreign_owner, "owner"),
    ("symlink_json", symlink_json, "symlink"),
    ("fifo_json", fifo_json, "not_regular"),
    ("directory_json", directory_json, "not_regular"),
    ("owner_json", foreign_owner_json, "owner"),
    ("bad_json", json_trigger("broken.json", b'{"job": "dbcheck", '), "bad_json"),
    ("bad_json_shape", json_trigger("shape.json", b'["dbcheck"]'), "bad_json"),
    ("unknown_job_json", json_trigger("nosuch.json", {"job": "nosuch"}), "unknown_job"),
    ("unknown_job_name", json_trigger("nosuch", b""), "unknown_job"),
    (
        "bad_args_date",
        json_trigger("arch.json", {"job": "archive", "args": {"before": "not-a-date"}}),
        "bad_args",
    ),
    ("bad_args_missing", json_trigger("bk.json", {"job": "backup"}), "bad_args"),
    ("bad_args_unknown", json_trigger("db.json", {"job": "dbcheck", "args": {"x": 1}}), "bad_args"),
    ("bad_args_command", json_trigger("cmd.json", {"job": "command"}), "bad_args"),
    (
        "argv_builtin_command",
        json_trigger("id.json", {"job": "command", "args": {"argv": ["/usr/bin/id"]}}),
        "bad_args",
    ),
    (
        "argv_configured",
        json_trigger("argv.json", {"job": "hello", "args": {"argv": ["/usr/bin/id"]}}),
        "bad_args",
    ),
    (
        "env_configured",
        json_trigger("env.json", {"job": "hello", "args": {"env": {"GREETING": "hi"}}}),
        "bad_args",
    ),
    ("path_nul_byte", backup_to("nul.json", lambda t: f"{t}/backups/a\x00b"), "bad_args"),
    ("path_outside", backup_to("out.json", lambda t: str(t / "outside")), "path_not_allowed"),
    (
        "path_dot_dot",
        backup_to("dots.json", lambda t: f"{t}/backups/../outside"),
        "path_not_allowed",
    ),
    ("path_symlink_escape", backup_to("link.json", escape_link), "path_not_allowed"),
]


@pytest.mark.parametrize(
    ("make", "reason"), [(m, r) for _, m, r in REJECTIONS], ids=[i for i, _, _ in REJECTIONS]
)
def test_rejection(
    make: Maker, reason: str, data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A bad trigger goes to failed/ with an error JSON and trigger.rejected; service goes on."""
    if make is foreign_owner and os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    (tmp_path / "backups").mkdir()
    (tmp_path / "outside").mkdir()
    svc = service(config_file(tmp_path, allowed=[tmp_path / "backups"]))
    spool = spool_of(data_dir)
    mark = svc.mark()
    name = make(spool, tmp_path)
    event = svc.wait_for("trigger.rejected", about(name), after=mark)
    assert event["watcher"]["reason"] == reason, event
    assert event["log.level"] == "warning"
    assert not os.path.lexists(spool / name)
    moved = spool / "failed" / name
    assert os.path.lexists(moved)
    assert event["watcher"]["trigger"]["moved_to"] == str(moved)
    error = result(spool, "failed", name, "error")
    assert error["reason"] == reason
    assert error["message"]
    assert count(svc, "trigger.accepted", about(name)) == 0
    assert count(svc, "job.started", ran(name)) == 0
    assert_serving(svc, spool)
    assert svc.proc.poll() is None


BAD_NAMES = [b"dbcheck.\xff\xfe", b"dbcheck." + b"x" * (MAX_NAME + 30)]


@pytest.mark.parametrize("raw", BAD_NAMES, ids=["not_utf8", "too_long"])
def test_bad_name_is_rejected(raw: bytes, data_dir: Path, service: Start) -> None:
    """A trigger whose name is not UTF-8 or too long to file is ``bad_name``; service goes on."""
    svc = service()
    spool = spool_of(data_dir)
    staged = spool / ".bad.staging"
    staged.write_bytes(b"")
    mark = svc.mark()
    os.rename(staged, os.fsdecode(os.fsencode(spool) + b"/" + raw))
    event = svc.wait_for("trigger.rejected", lambda e: e["watcher"]["reason"] == "bad_name", mark)
    filed = os.fsdecode(raw[:MAX_NAME])
    assert event["watcher"]["trigger"]["moved_to"] == shown(str(spool / "failed" / filed))
    assert os.path.lexists(spool / "failed" / filed)
    assert result(spool, "failed", filed, "error")["reason"] == "bad_name"
    assert not os.path.lexists(os.fsdecode(os.fsencode(spool) + b"/" + raw))
    assert_serving(svc, spool)


def test_owner_allowed_by_config(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """A uid listed in ``allowed_uids`` may drop triggers; the default (own uid, root) no more."""
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    svc = service(config_file(tmp_path, extra="allowed_uids = [12345]"))
    spool = spool_of(data_dir)
    mark = svc.mark()
    foreign_owner(spool, tmp_path)
    svc.wait_for("job.finished", ran("dbcheck.owned"), after=mark)
    mark = svc.mark()
    drop_trigger(spool, "dbcheck.mine")  # owned by root, which the configured list leaves out
    event = svc.wait_for("trigger.rejected", about("dbcheck.mine"), after=mark)
    assert event["watcher"]["reason"] == "owner"


def test_paths_not_allowed_without_allowed_paths(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """With ``allowed_paths`` empty, a trigger naming any path is rejected."""
    svc = service()
    spool = spool_of(data_dir)
    mark = svc.mark()
    drop_trigger(spool, "r.json", {"job": "restore", "args": {"from": str(tmp_path)}})
    event = svc.wait_for("trigger.rejected", about("r.json"), after=mark)
    assert event["watcher"]["reason"] == "path_not_allowed"
    assert result(spool, "failed", "r.json", "error")["reason"] == "path_not_allowed"
    assert_serving(svc, spool)


def test_size_limit_is_inclusive(data_dir: Path, service: Start) -> None:
    """A trigger of exactly ``max_size`` (default 64 KiB) is accepted; one byte more is not."""
    svc = service()
    spool = spool_of(data_dir)
    body = b'{"job": "dbcheck"}'
    run_trigger(svc, spool, "exact.json", body + b" " * (64 * 1024 - len(body)))
    assert result(spool, "done", "exact.json")["status"] == "finished"


def test_configured_max_size(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """``[trigger] max_size`` replaces the 64 KiB default."""
    svc = service(config_file(tmp_path, extra='max_size = "1KiB"'))
    spool = spool_of(data_dir)
    body = b'{"job": "dbcheck"}'
    mark = svc.mark()
    drop_trigger(spool, "big.json", body + b" " * (1025 - len(body)))
    event = svc.wait_for("trigger.rejected", about("big.json"), after=mark)
    assert event["watcher"]["reason"] == "too_large"
    run_trigger(svc, spool, "fits.json", body + b" " * (1024 - len(body)))


def test_rejected_name_twice_keeps_both(data_dir: Path, service: Start) -> None:
    """A second rejected file of the same name does not overwrite the first in failed/."""
    svc = service()
    spool = spool_of(data_dir)
    for content in (b"{", b"[1]"):
        mark = svc.mark()
        drop_trigger(spool, "twice.json", content)
        svc.wait_for("trigger.rejected", about("twice.json"), after=mark)
    kept = sorted(p.name for p in (spool / "failed").iterdir() if not p.name.endswith(".json"))
    assert len(kept) == 1 and kept[0].startswith("twice.json.")  # the second, renamed
    assert (spool / "failed" / "twice.json").read_bytes() == b"{"
    assert (spool / "failed" / f"{kept[0]}.error.json").exists()


# --- what is taken, and when ------------------------------------------------------------

IGNORED = (".dbcheck", "dbcheck.tmp", "dbcheck.part", ".x.json", "x.json.tmp", "backup.part")


def test_ignored_names_stay_put(data_dir: Path, service: Start) -> None:
    """Dot-files and ``*.tmp``/``*.part`` stay where they are, with no event, at start or later."""
    spool = spool_of(data_dir)
    spool.mkdir(parents=True, exist_ok=True)
    for name in IGNORED[:3]:
        (spool / name).write_text('{"job": "dbcheck"}')
    svc = service()
    for name in IGNORED[3:]:
        (spool / name).write_text('{"job": "dbcheck"}')
    assert_serving(svc, spool)
    for name in IGNORED:
        assert (spool / name).exists(), name
        assert count(svc, "trigger.accepted", about(name)) == 0
        assert count(svc, "trigger.rejected", about(name)) == 0
    assert count(svc, "job.started", lambda _e: True) == 1


def test_staged_file_is_taken_once_complete(data_dir: Path, service: Start) -> None:
    """A trigger written slowly under a ``.tmp`` name is left alone, then taken once on rename."""
    svc = service()
    spool = spool_of(data_dir)
    staged = spool / "slow.json.tmp"
    with staged.open("wb") as f:
        f.write(b'{"job": "dbch')
        f.flush()
        os.fsync(f.fileno())
        assert_serving(svc, spool, "while-half-written")
        assert staged.exists()
        f.write(b'eck", "args": {"check": "quick"}}')
    assert_serving(svc, spool, "after-close")
    assert staged.exists()
    mark = svc.mark()
    os.rename(staged, spool / "slow.json")
    finished = svc.wait_for("job.finished", ran("slow.json"), after=mark)
    assert finished["watcher"]["job"]["name"] == "dbcheck"
    assert_serving(svc, spool, "sentinel")
    assert count(svc, "trigger.accepted", about("slow.json")) == 1
    assert count(svc, "job.started", ran("slow.json")) == 1
    assert result(spool, "done", "slow.json")["status"] == "finished"


def test_plain_name_runs_the_job(data_dir: Path, service: Start) -> None:
    """``touch spool/dbcheck`` runs dbcheck under maintenance and files it in done/."""
    svc = service()
    spool = spool_of(data_dir)
    mark = svc.mark()
    (spool / "dbcheck").touch()
    accepted = svc.wait_for("trigger.accepted", about("dbcheck"), after=mark)
    assert accepted["watcher"]["job"] == {"name": "dbcheck", "type": "dbcheck"}
    started = svc.wait_for("job.started", ran("dbcheck"), after=mark)
    assert started["watcher"]["job"]["source"] == "trigger"
    svc.wait_for("job.finished", ran("dbcheck"), after=mark)
    svc.wait_for("maintenance.left", after=mark)
    held = svc.wait_for("maintenance.hold_added", after=mark)
    assert held["watcher"]["hold"]["reason"] == "job"
    assert held["watcher"]["hold"]["name"] == "dbcheck"
    assert (spool / "done" / "dbcheck").exists()
    doc = result(spool, "done", "dbcheck")
    assert doc["status"] == "finished" and doc["trigger"] == "dbcheck"
    assert doc["result"]["corrupt"] == []
    assert not (spool / "dbcheck").exists()
    assert list((spool / ".claimed").iterdir()) == []
    assert list((spool / ".progress").iterdir()) == []
    assert (data_dir / "mw" / "log" / "sched" / "dynamic" / "Maintenance_result.log").exists()
    assert not maint(data_dir).exists()


def test_same_name_twice_runs_twice(data_dir: Path, service: Start) -> None:
    """Two triggers of the same name, one after the other, both run and both results are kept."""
    svc = service()
    spool = spool_of(data_dir)
    for _ in range(2):
        run_trigger(svc, spool, "dbcheck")
    done = sorted(p.name for p in (spool / "done").iterdir())
    results = [n for n in done if n.endswith(".result.json")]
    assert len(results) == 2, done
    assert "dbcheck" in done and "dbcheck.result.json" in done


def test_files_present_at_start_are_taken(data_dir: Path, service: Start) -> None:
    """Triggers already in the spool when the service starts are taken without a new event."""
    spool = spool_of(data_dir)
    spool.mkdir(parents=True, exist_ok=True)
    (spool / "dbcheck.pre").write_text("")
    (spool / "pre.json").write_text('{"job": "dbcheck", "args": {"check": "quick"}}')
    (spool / "bad.json").write_text("{")
    svc = service(wait_ready=False)
    for name in ("dbcheck.pre", "pre.json"):
        svc.wait_for("job.finished", ran(name))
        assert result(spool, "done", name)["status"] == "finished"
    assert svc.wait_for("trigger.rejected", about("bad.json"))["watcher"]["reason"] == "bad_json"
    svc.wait_for("service.ready")


def test_dropped_while_down_runs_exactly_once(data_dir: Path, service: Start) -> None:
    """A trigger dropped while the service is down runs once after start, and never again."""
    spool = spool_of(data_dir)
    first = stopped_once(service)
    (spool / "dbcheck.while-down").write_text("")
    svc = service(wait_ready=False)
    svc.wait_for("job.finished", ran("dbcheck.while-down"))
    svc.wait_for("service.ready")
    doc = result(spool, "done", "dbcheck.while-down")
    assert doc["status"] == "finished" and doc["name"] == "dbcheck"
    assert_serving(svc, spool, "sentinel")
    assert svc.stop() == 0
    again = service()
    assert_serving(again, spool, "sentinel2")
    started = [
        e
        for p in (first, svc, again)
        for e in p.events
        if e["event"]["action"] == "job.started" and ran("dbcheck.while-down")(e)
    ]
    assert len(started) == 1
    assert (spool / "done" / "dbcheck.while-down").exists()
    assert not (spool / "failed" / "dbcheck.while-down").exists()


# --- backup, restore, archive -----------------------------------------------------------


def test_backup_damage_restore(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """backup → damage live data → restore brings it back, keeps data_bak/file_bak, releases."""
    backups = tmp_path / "backups"
    backups.mkdir()
    svc = service(config_file(tmp_path, allowed=[backups]))
    spool = spool_of(data_dir)
    db = data_dir / "mw" / "data" / "mail.db"
    attachment = data_dir / "mw" / "file" / "ws1" / "attachment-0.txt"
    original = attachment.read_bytes()
    assert rows(db) == 500

    mark = svc.mark()
    run_trigger(svc, spool, "backup.json", {"job": "backup", "args": {"dest": str(backups)}})
    held = svc.wait_for("maintenance.hold_added", after=mark)
    assert held["watcher"]["hold"]["name"] == "backup"
    svc.wait_for("maintenance.left", after=mark)
    made = result(spool, "done", "backup.json")["result"]["set"]
    backup_set = Path(made)
    assert backup_set.parent == backups
    assert (backup_set / "manifest.json").exists()
    assert not (backup_set / "mw" / "data" / "maint").exists()

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM items WHERE id > 10")
    conn.close()
    attachment.write_bytes(b"overwritten by mistake\n")
    stray = attachment.with_name("stray.txt")
    stray.write_text("not in the backup\n")
    assert rows(db) == 10

    mark = svc.mark()
    finished = run_trigger(svc, spool, "restore.json", {"job": "restore", "args": {"from": made}})
    held = svc.wait_for("maintenance.hold_added", after=mark)
    assert held["watcher"]["hold"]["name"] == "restore"
    svc.wait_for("maintenance.left", after=mark)
    assert finished["watcher"]["job"]["name"] == "restore"
    restored = result(spool, "done", "restore.json")
    assert restored["status"] == "finished"

    assert rows(db) == 500
    assert attachment.read_bytes() == original
    assert not stray.exists()
    data_bak = sorted((data_dir / "mw").glob("data_bak*"))
    file_bak = sorted((data_dir / "mw").glob("file_bak*"))
    assert [p.name for p in data_bak + file_bak] == ["data_bak", "file_bak"]
    assert restored["result"]["data_bak"] == str(data_bak[0])
    assert rows(data_bak[0] / "mail.db") == 10
    assert (file_bak[0] / "ws1" / "attachment-0.txt").read_bytes() == b"overwritten by mistake\n"
    assert (file_bak[0] / "ws1" / "stray.txt").exists()
    assert not list((data_dir / "mw").glob("*.restore.*"))
    assert not maint(data_dir).exists()
    assert not (data_bak[0] / "maint").exists()
    after = svc.actions()[mark:]
    assert "maintenance.released_by_operator" not in after
    assert "maintenance.adopted" not in after
    assert "watch.degraded" not in after
    assert_serving(svc, spool)


def test_restore_of_a_damaged_set_touches_nothing(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A set that fails its manifest check is refused: live data untouched, maintenance released."""
    backups = tmp_path / "backups"
    backups.mkdir()
    svc = service(config_file(tmp_path, allowed=[backups]))
    spool = spool_of(data_dir)
    run_trigger(svc, spool, "backup.json", {"job": "backup", "args": {"dest": str(backups)}})
    made = Path(result(spool, "done", "backup.json")["result"]["set"])
    tampered = made / "mw" / "file" / "ws1" / "attachment-0.txt"
    tampered.chmod(0o644)
    with tampered.open("ab") as f:
        f.write(b"tampered\n")
    mark = svc.mark()
    failed = run_trigger(
        svc, spool, "restore.json", {"job": "restore", "args": {"from": str(made)}}, "job.failed"
    )
    assert failed["watcher"]["reason"] == "manifest_invalid"
    svc.wait_for("maintenance.left", after=mark)
    doc = result(spool, "failed", "restore.json")
    assert doc["status"] == "failed" and doc["reason"] == "manifest_invalid"
    assert (spool / "failed" / "restore.json").exists()
    assert rows(data_dir / "mw" / "data" / "mail.db") == 500
    assert not list((data_dir / "mw").glob("data_bak*"))
    assert not list((data_dir / "mw").glob("*.restore.*"))
    assert not maint(data_dir).exists()


ARCHIVE_TABLES = """
[archive]
immutable = false
[[archive.tables]]
database = "mail.db"
table = "mails"
date_column = "received"
space_column = "space"
attachment_column = "attachment"
attachment_path = "{space}/{value}"
"""


def test_archive_read_only_with_manifest(data_dir: Path, service: Start, tmp_path: Path) -> None:
    """archive moves old rows and their attachments into a read-only back1 with a manifest."""
    config = write_config(tmp_path / "archive.toml", ARCHIVE_TABLES)
    svc = service(config)
    spool = spool_of(data_dir)
    db = data_dir / "mw" / "data" / "mail.db"
    with sqlite3.connect(db) as conn:
        (old,) = conn.execute("SELECT count(*) FROM mails WHERE received < '2025'").fetchone()
        (total,) = conn.execute("SELECT count(*) FROM mails").fetchone()
    conn.close()

    mark = svc.mark()
    body = {"job": "archive", "args": {"before": "2025-01-01"}}
    run_trigger(svc, spool, "archive.json", body)
    held = svc.wait_for("maintenance.hold_added", after=mark)
    assert held["watcher"]["hold"]["name"] == "archive"
    svc.wait_for("maintenance.left", after=mark)
    doc = result(spool, "done", "archive.json")["result"]
    back = data_dir / "mw" / "back1"
    assert doc["archive"] == str(back) and doc["id"] == 1 and doc["rows"] == old > 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM mails").fetchone() == (total - old,)
    conn.close()
    assert rows(db) == 500  # a table no config names is untouched
    for dirpath, _dirs, names in os.walk(back):
        assert os.stat(dirpath).st_mode & 0o777 == 0o555, dirpath
        for name in names:
            assert os.stat(Path(dirpath, name)).st_mode & 0o777 == 0o444, name
    manifest = json.loads((back / "manifest.json").read_bytes())
    assert manifest["kind"] == "archive"
    assert "data/mail.db" in {e["path"] for e in manifest["files"]}
    assert verify_manifest(back) == []
    assert (data_dir / "mw" / "data" / "settings.ini").is_file()
    assert not maint(data_dir).exists()


# --- command jobs -----------------------------------------------------------------------


def test_command_job_output_in_result(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """A configured command job runs its argv without maintenance; its output is in the result."""
    svc = service(config_file(tmp_path))
    spool = spool_of(data_dir)
    mark = svc.mark()
    run_trigger(svc, spool, "hello")
    doc = result(spool, "done", "hello")
    assert doc["status"] == "finished"
    assert doc["result"]["returncode"] == 0
    assert doc["result"]["stdout"] == "hello from hello trigger -\n"
    assert doc["result"]["stderr"] == "to stderr\n"
    assert "maintenance.hold_added" not in svc.actions()[mark:]
    run_trigger(svc, spool, "tuned.json", {"job": "hello", "args": {"timeout": "30s"}})
    assert result(spool, "done", "tuned.json")["result"]["stdout"].endswith(" trigger -\n")


def test_failing_command_lands_in_failed(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """A command that exits non-zero ends in failed/ with its status and output in the result."""
    svc = service(config_file(tmp_path))
    spool = spool_of(data_dir)
    failed = run_trigger(svc, spool, "sad", outcome="job.failed")
    assert failed["watcher"]["reason"] == "exit_status"
    doc = result(spool, "failed", "sad")
    assert doc["status"] == "failed" and doc["reason"] == "exit_status"
    assert doc["result"]["returncode"] == 3
    assert doc["result"]["stdout"] == "partial output\n"
    assert (spool / "failed" / "sad").exists()
    assert_serving(svc, spool)


def test_a_burst_past_the_backlog_waits_unclaimed_and_runs_exactly_once(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """While one job runs (max_concurrent = 1), a burst claims only ``BACKLOG`` triggers; the
    rest wait unclaimed in the spool and then each runs exactly once, in the order dropped."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    wait_for_gate = toml(["sh", "-c", f"read x < {gate}"])
    config = write_config(
        tmp_path / "watcher.toml",
        "[trigger]\nmax_concurrent = 1\n"
        f'[[jobs]]\nname = "gate"\ntype = "command"\nargv = {wait_for_gate}\n'
        '[[jobs]]\nname = "quick"\ntype = "command"\nargv = ["true"]\n',
    )
    svc = service(config)
    spool = spool_of(data_dir)
    mark = svc.mark()
    drop_trigger(spool, "gate")
    svc.wait_for("job.started", ran("gate"), after=mark)
    names = [f"quick.{i:03d}" for i in range(BACKLOG + 20)]
    for name in names:
        drop_trigger(spool, name)
    eventually(lambda: count(svc, "trigger.accepted", lambda _e: True, mark) >= BACKLOG + 1)
    assert sorted(p.name for p in spool.iterdir() if p.is_file()) == names[BACKLOG:]
    assert count(svc, "trigger.accepted", lambda _e: True, mark) == BACKLOG + 1
    with gate.open("w") as opened:
        opened.write("go\n")
    for name in names:
        svc.wait_for("job.finished", ran(name), after=mark)
    started = [
        e["watcher"]["job"]["trigger"]
        for e in svc.events[mark:]
        if e["event"]["action"] == "job.started"
    ]
    assert started == ["gate", *names]
    assert all(filed_in(spool, name) == ["done"] for name in names)
    assert not any(p.is_file() for p in spool.iterdir())


# --- the CLI ----------------------------------------------------------------------------


def test_cli_trigger_wait_shows_progress(data_dir: Path, service: Start) -> None:
    """``watcher trigger dbcheck --wait`` prints plain progress lines off a TTY and exits 0."""
    locked = data_dir / "mw" / "data" / "zz-locked.db"
    with sqlite3.connect(locked) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    conn.close()
    svc = service()
    lock = sqlite3.connect(locked, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # dbcheck stalls on this database after the first two
    argv = [PY, "-m", "watcher", "trigger", "dbcheck", "--wait", "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WATCHER_CONFIG": ""},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("progress: "):
                break
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    out, err = proc.communicate(timeout=60)
    text = "".join(seen) + out
    assert proc.returncode == 0, (text, err)
    files = len([p for p in locked.parent.iterdir() if p.suffix in (".db", ".sqlite")])
    assert any(line.startswith("progress: ") and f"/{files} files" in line for line in seen), text
    assert "\r" not in text
    assert "finished" in out
    svc.wait_for("job.finished", lambda e: e["watcher"]["job"]["name"] == "dbcheck")


def test_cli_trigger_archive_wait(data_dir: Path, service: Start) -> None:
    """``watcher trigger archive --arg before=2000-01-01 --wait`` follows the job and exits 0."""
    service()
    done = cli("trigger", "archive", "--arg", "before=2000-01-01", "--wait", data_dir=data_dir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "finished" in done.stdout
    assert "before: 2000-01-01" in done.stdout
    assert not (data_dir / "mw" / "back2").exists()  # nothing that old in the demo


def test_cli_trigger_wait_rejected(data_dir: Path, service: Start) -> None:
    """A trigger the spool would reject is refused by the service at once: reason, exit 1."""
    service()
    done = cli("trigger", "archive", "--arg", "before=not-a-date", "--wait", data_dir=data_dir)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "refused (bad_args)" in done.stderr and "not-a-date" in done.stderr, done.stderr
    spool = data_dir / "mw" / "spool"
    assert sorted(p.name for p in spool.iterdir() if not p.name.startswith(".")) == [
        "done",
        "failed",
    ]


def test_cli_trigger_wait_failed_job(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """``--wait`` on a job that fails exits 1 and says so."""
    config = config_file(tmp_path)
    service(config)
    done = cli("trigger", "sad", "--wait", data_dir=data_dir, config=config)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "failed" in done.stdout


def test_cli_trigger_while_down(data_dir: Path, service: Start) -> None:
    """``watcher trigger`` with no service drops the file, says so, and the job runs at start."""
    done = cli("trigger", "dbcheck", data_dir=data_dir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "not running" in done.stdout
    [name] = [p.name for p in spool_of(data_dir).iterdir() if p.name.startswith("dbcheck.")]
    svc = service(wait_ready=False)
    svc.wait_for("job.finished", ran(name))
    assert result(spool_of(data_dir), "done", name)["status"] == "finished"


# --- after a crash: which holds stay ----------------------------------------------------


def test_interrupted_command_job_releases_its_hold(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A crash-interrupted command job that held maintenance releases it: it moves no data."""
    config = config_file(
        tmp_path,
        extra='[[jobs]]\nname = "reindex"\ntype = "command"\nargv = ["true"]\nmaintenance = true\n',
    )
    stopped_once(service, config)
    spool, state_dir = spool_of(data_dir), data_dir / "mw" / "watcher"
    # The kill point: the job's hold is saved and the maint file written for it, the
    # journal says it started, the trigger is still claimed.
    hold = Hold("job", "reindex", since=datetime.now(UTC), message="job reindex running")
    content = decide((hold,), datetime.now(UTC), "The system is under maintenance.")
    assert content is not None
    stamp = FileStamp.of(write_atomic(maint(data_dir), content.render()))
    store = StateStore(state_dir)
    saved, _ = store.load()
    store.save(replace(saved, holds=(hold,), written=stamp, entered_at=hold.since))
    ident = "1700000000000000000-reindex"
    (spool / ".claimed" / ident).touch()
    Journal(state_dir).append(
        {
            "event": "started",
            "id": ident,
            "file": "reindex",
            "job": "reindex",
            "at": hold.since.isoformat(),
        }
    )
    svc = service(config)
    svc.wait_for("job.interrupted", ran("reindex"))
    released = svc.wait_for("maintenance.hold_released")
    assert released["watcher"]["hold"]["name"] == "reindex"
    assert not maint(data_dir).exists()
    assert result(spool, "failed", "reindex")["status"] == "interrupted"
    assert svc.stop() == 0
    after, _ = StateStore(state_dir).load_readonly()
    assert after.holds == ()


# --- a full disk ------------------------------------------------------------------------


def fill(fs: Path) -> None:
    """Write one file until the filesystem has no space left at all."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    chunk = b"\0" * (1024 * 1024)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def about_file(name: str) -> Callable[[Doc], bool]:
    return lambda e: e["watcher"].get("trigger", {}).get("file") == name


@pytest.mark.root
def test_full_disk_never_stops_the_service(tmp_path: Path, service: Start) -> None:
    """On a full disk triggers wait where they are (at run time and at start), the service
    keeps serving, and they are filed once there is space again."""
    with small_filesystem(tmp_path, 32) as fs, service_at(service, fs / "data") as start:
        root = fs / "data"
        create_demo(root)
        config = write_config(
            tmp_path / "watcher.toml",
            '[disk]\nwarn = "4MiB"\nmaintenance = "2MiB"\ncritical = "1MiB"\n',
        )
        svc = start(config)
        spool = spool_of(root)
        for name, body in (("broken.json", b"{"), ("dbcheck.full", b"")):
            (spool / f".{name}.staging").write_bytes(body)
        fill(fs)
        mark = svc.mark()
        for name in ("broken.json", "dbcheck.full"):
            os.rename(spool / f".{name}.staging", spool / name)
            warning = svc.wait_for("disk.reminder", about_file(name), after=mark)
            assert warning["log.level"] == "critical"
        assert (spool / "broken.json").exists()
        assert svc.proc.poll() is None
        svc.kill()

        again = start(config)  # a restart on the full disk reaches service.ready
        again.wait_for("disk.reminder", about_file("broken.json"))
        assert (spool / "broken.json").exists()
        mark = again.mark()
        (fs / "filler").unlink()
        rejected = again.wait_for("trigger.rejected", about("broken.json"), after=mark)
        assert rejected["watcher"]["reason"] == "bad_json"
        assert result(spool, "failed", "broken.json", "error")["reason"] == "bad_json"
        eventually(lambda: len(filed_in(spool, "dbcheck.full.result.json")) == 1)
        assert_serving(again, spool)
        assert again.stop() == 0
