"""Maintenance end to end: the real ``watcher run`` on a real data dir, driven by the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WAIT, Doc, ServiceProcess, Start, cli, eventually, maint
from watcher.sources.control import request, socket_path

DEFAULT = "The system is under maintenance."


def run(*args: str, data_dir: Path) -> str:
    """Run a CLI command that must succeed; its stdout."""
    done = cli(*args, data_dir=data_dir)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def status(data_dir: Path) -> dict[str, Any]:
    """``watcher status --json`` as a dict."""
    report = json.loads(run("status", "--json", data_dir=data_dir))
    assert isinstance(report, dict)
    return report


def ping(data_dir: Path) -> None:
    """A round trip through the service's control socket: everything it was told before is done."""
    answer = request(socket_path(data_dir / "mw" / "watcher"), {"op": "ping"}, timeout=WAIT)
    assert answer["ok"], answer


def file_doc(data_dir: Path) -> dict[str, Any]:
    """The maint file's JSON, once watcher has written it (an adopted file is rewritten
    right after the events)."""
    doc = eventually(lambda: json.loads(maint(data_dir).read_bytes()))
    assert isinstance(doc, dict)
    return doc


def why(value: str) -> Callable[[Doc], bool]:
    return lambda e: e["watcher"].get("why") == value


def actions_between(svc: ServiceProcess, start: int, end: int | None = None) -> list[str]:
    return svc.actions()[start:end]


def index_of(svc: ServiceProcess, event: Doc) -> int:
    return next(i for i, e in enumerate(svc.events) if e["event"]["id"] == event["event"]["id"])


# --- operator touch and rm --------------------------------------------------------------


def test_operator_touch_is_adopted(data_dir: Path, service: Start) -> None:
    """An operator's ``touch`` gives adopted + entered and the file becomes JSON set_by operator."""
    svc = service()
    mark = svc.mark()
    maint(data_dir).touch()
    adopted = svc.wait_for("maintenance.adopted", after=mark)
    entered = svc.wait_for("maintenance.entered", after=mark)
    assert index_of(svc, adopted) < index_of(svc, entered)
    assert entered["watcher"]["maintenance"]["active"] is True
    doc = file_doc(data_dir)
    assert doc["set_by"] == "operator"
    assert doc["message"] == DEFAULT
    assert [(h["reason"], h["name"]) for h in doc["holds"]] == [("manual", "operator")]
    report = status(data_dir)
    assert report["maintenance"]["active"] is True
    assert [(h["reason"], h["name"]) for h in report["maintenance"]["holds"]] == [
        ("manual", "operator")
    ]


def test_operator_rm_is_a_release_and_file_stays_absent(data_dir: Path, service: Start) -> None:
    """An operator's ``rm`` gives released_by_operator + left; watcher never recreates the file."""
    svc = service()
    assert "through the running service" in run("enter", "-m", "Upgrade", data_dir=data_dir)
    svc.wait_for("maintenance.entered")
    mark = svc.mark()
    maint(data_dir).unlink()
    released = svc.wait_for("maintenance.released_by_operator", after=mark)
    left = svc.wait_for("maintenance.left", after=mark)
    assert index_of(svc, released) < index_of(svc, left)
    assert left["event"]["duration"] > 0
    assert [h["name"] for h in released["watcher"]["released"]] == ["cli"]
    assert not maint(data_dir).exists()
    # A later pass of the service over the truth (leave re-reads it) still leaves it absent.
    out = run("leave", data_dir=data_dir)
    assert "through the running service" in out
    assert "no manual maintenance" in out
    assert not maint(data_dir).exists()
    report = status(data_dir)
    assert report["maintenance"]["active"] is False
    assert report["maintenance"]["holds"] == []
    assert "maintenance.entered" not in actions_between(svc, mark)


def test_garbage_maint_file_is_adopted(data_dir: Path, service: Start) -> None:
    """A binary maint file is still maintenance: adopted as a manual hold, never an error."""
    svc = service()
    mark = svc.mark()
    maint(data_dir).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\x80garbage\x00")
    svc.wait_for("maintenance.adopted", after=mark)
    svc.wait_for("maintenance.entered", after=mark)
    assert maint(data_dir).exists()
    assert file_doc(data_dir)["set_by"] == "operator"
    assert status(data_dir)["maintenance"]["active"] is True
    assert "handler.failed" not in actions_between(svc, mark)
    assert svc.proc.poll() is None


def test_operator_file_replacing_watchers_is_not_removed(data_dir: Path, service: Start) -> None:
    """An operator's file moved over watcher's is adopted and survives watcher's hold expiring."""
    svc = service()
    mark = svc.mark()
    run("enter", "--for", "3s", data_dir=data_dir)
    svc.wait_for("maintenance.entered", after=mark)
    theirs = data_dir / "mw" / "data" / "maint.new"
    theirs.write_text("Extended by the DBA\n")
    os.replace(theirs, maint(data_dir))  # an editor's atomic save, or a script's mv
    svc.wait_for("maintenance.hold_released", why("expired"), after=mark)
    ping(data_dir)
    assert "maintenance.adopted" in actions_between(svc, mark)
    assert maint(data_dir).exists(), "watcher removed a maint file the operator wrote"


# --- enter / leave ----------------------------------------------------------------------


def test_enter_and_leave_through_the_running_service(data_dir: Path, service: Start) -> None:
    """With the service running, enter/leave go through it and watcher's own file is not adopted."""
    svc = service()
    mark = svc.mark()
    out = run("enter", "-m", "Upgrading the mail store", data_dir=data_dir)
    assert "through the running service" in out
    assert f"pid {svc.proc.pid}" in out
    added = svc.wait_for("maintenance.hold_added", after=mark)
    assert (added["watcher"]["hold"]["reason"], added["watcher"]["hold"]["name"]) == (
        "manual",
        "cli",
    )
    svc.wait_for("maintenance.entered", after=mark)
    doc = file_doc(data_dir)
    assert doc["message"] == "Upgrading the mail store"
    assert doc["set_by"] == "watcher"
    ping(data_dir)
    assert "maintenance.adopted" not in actions_between(svc, mark)

    mark = svc.mark()
    out = run("leave", data_dir=data_dir)
    assert "through the running service" in out
    assert "maintenance is off" in out
    svc.wait_for("maintenance.hold_released", why("leave"), after=mark)
    left = svc.wait_for("maintenance.left", after=mark)
    assert left["event"]["duration"] > 0
    assert not maint(data_dir).exists()
    ping(data_dir)
    assert "maintenance.released_by_operator" not in actions_between(svc, mark)


def test_enter_and_leave_without_the_service(data_dir: Path, service: Start) -> None:
    """Without the service, enter/leave write the files directly; a later service takes over."""
    out = run("enter", "-m", "Offline work", data_dir=data_dir)
    assert "service not running" in out
    doc = file_doc(data_dir)
    assert doc["message"] == "Offline work"
    assert doc["set_by"] == "watcher"
    assert status(data_dir)["service"] == {"running": False, "pid": None}

    svc = service()
    ping(data_dir)
    seen = svc.actions()
    for unexpected in (
        "maintenance.adopted",
        "maintenance.released_by_operator",
        "maintenance.entered",
        "maintenance.left",
    ):
        assert unexpected not in seen
    ready = svc.wait_for("service.ready")
    assert ready["watcher"]["maintenance"]["active"] is True
    holds = status(data_dir)["maintenance"]["holds"]
    assert [(h["name"], h.get("message")) for h in holds] == [("cli", "Offline work")]
    assert svc.stop() == 0

    out = run("leave", data_dir=data_dir)
    assert "service not running" in out
    assert "maintenance is off" in out
    assert not maint(data_dir).exists()

    svc = service()
    ping(data_dir)
    assert not [a for a in svc.actions() if a.startswith("maintenance.")]
    assert status(data_dir)["maintenance"]["active"] is False


def test_restart_keeps_state(data_dir: Path, service: Start) -> None:
    """Holds survive SIGTERM and a new start: no adoption, no release, status shows the hold."""
    first = service()
    run("enter", "-m", "Kept across restarts", "--for", "1h", data_dir=data_dir)
    first.wait_for("maintenance.entered")
    assert first.stop() == 0
    assert "service.stopped" in first.actions()
    assert maint(data_dir).exists()

    second = service()
    ping(data_dir)
    assert not [a for a in second.actions() if a.startswith("maintenance.")]
    report = status(data_dir)
    assert report["service"] == {"running": True, "pid": second.proc.pid}
    assert report["maintenance"]["active"] is True
    [hold] = report["maintenance"]["holds"]
    assert (hold["reason"], hold["name"], hold["message"]) == (
        "manual",
        "cli",
        "Kept across restarts",
    )
    assert "until" in hold
    assert file_doc(data_dir)["message"] == "Kept across restarts"

    mark = second.mark()
    run("leave", data_dir=data_dir)
    left = second.wait_for("maintenance.left", after=mark)
    assert left["event"]["duration"] > 0
    assert not maint(data_dir).exists()


# --- expiry -----------------------------------------------------------------------------


def test_enter_for_expires_end_to_end(data_dir: Path, service: Start) -> None:
    """``enter --for 2s`` is released by the service itself (why=expired), never early."""
    svc = service()
    mark = svc.mark()
    out = run("enter", "--for", "2s", data_dir=data_dir)
    assert "through the running service" in out
    added = svc.wait_for("maintenance.hold_added", after=mark)
    until = datetime.fromisoformat(added["watcher"]["hold"]["until"])
    released = svc.wait_for("maintenance.hold_released", why("expired"), after=mark)
    left = svc.wait_for("maintenance.left", after=mark)
    assert index_of(svc, released) < index_of(svc, left)
    assert datetime.fromisoformat(released["@timestamp"]) >= until
    assert not maint(data_dir).exists()
    assert status(data_dir)["maintenance"]["active"] is False
    assert "maintenance.released_by_operator" not in actions_between(svc, mark)


def test_enter_for_set_while_down_expires_at_start(data_dir: Path, service: Start) -> None:
    """An ``--for`` hold that ran out while the service was down is released as expired at start."""
    assert "service not running" in run("enter", "--for", "1s", data_dir=data_dir)
    assert maint(data_dir).exists()
    # Let the hold run out, watching it through status (no sleep): its holds list empties.
    deadline = datetime.now().timestamp() + WAIT
    while status(data_dir)["maintenance"]["holds"]:
        assert datetime.now().timestamp() < deadline, "the hold never expired"
    assert maint(data_dir).exists(), "nothing removes it while the service is down"

    svc = service()
    ready = svc.wait_for("service.ready")
    released = svc.wait_for("maintenance.hold_released", why("expired"))
    assert index_of(svc, released) < index_of(svc, ready), "released during start-up"
    assert index_of(svc, svc.wait_for("maintenance.left")) < index_of(svc, ready)
    assert "maintenance.released_by_operator" not in svc.actions()
    assert "maintenance.adopted" not in svc.actions()
    assert not maint(data_dir).exists()


# --- watching under stress --------------------------------------------------------------


def test_data_dir_deleted_and_recreated(data_dir: Path, service: Start) -> None:
    """``mw/data`` removed and recreated: watch.degraded, watch.restored, then touch is adopted."""
    svc = service()
    data = data_dir / "mw" / "data"
    mark = svc.mark()
    shutil.rmtree(data)
    degraded = svc.wait_for(
        "watch.degraded", lambda e: e["watcher"].get("directory") == str(data), after=mark
    )
    assert degraded["log.level"] == "warning"
    data.mkdir()
    svc.wait_for("watch.restored", lambda e: e["watcher"].get("directory") == str(data), after=mark)
    mark = svc.mark()
    maint(data_dir).touch()
    svc.wait_for("maintenance.adopted", after=mark)
    svc.wait_for("maintenance.entered", after=mark)
    assert file_doc(data_dir)["set_by"] == "operator"
    assert svc.proc.poll() is None


def test_maint_file_created_while_its_directory_was_gone(data_dir: Path, service: Start) -> None:
    """A maint file made in the recreated directory before the watch is back is adopted."""
    svc = service()
    data = data_dir / "mw" / "data"
    mark = svc.mark()
    shutil.rmtree(data)
    svc.wait_for("watch.degraded", after=mark)
    data.mkdir()
    maint(data_dir).write_text("Restoring the databases\n")
    adopted = svc.wait_for("maintenance.adopted", after=mark)
    assert adopted["watcher"]["operator_message"] == "Restoring the databases"
    svc.wait_for("watch.restored", after=mark)
    mark = svc.mark()
    maint(data_dir).unlink()  # the re-armed watch sees the release
    svc.wait_for("maintenance.released_by_operator", after=mark)
    assert not maint(data_dir).exists()


def test_status_json_fields(data_dir: Path, service: Start) -> None:
    """``status --json`` reports the service and its pid, active, and every hold in full."""
    svc = service()
    run("enter", "-m", "Status check", "--for", "1h", data_dir=data_dir)
    report = status(data_dir)
    assert report["data_dir"] == str(data_dir)
    assert report["service"] == {"running": True, "pid": svc.proc.pid}
    m = report["maintenance"]
    assert m["active"] is True
    assert m["file"] == str(maint(data_dir))
    assert m["message"] == "Status check"
    [hold] = m["holds"]
    assert hold["reason"] == "manual"
    assert hold["name"] == "cli"
    assert hold["message"] == "Status check"
    since = datetime.fromisoformat(hold["since"])
    until = datetime.fromisoformat(hold["until"])
    assert since.tzinfo is not None
    assert until > since
    assert isinstance(report["manual_windows"], list)
    assert isinstance(report["windows"], list)
    text = run("status", data_dir=data_dir)
    assert f"running (pid {svc.proc.pid})" in text
    assert "hold: manual cli" in text
    assert svc.stop() == 0
    assert status(data_dir)["service"] == {"running": False, "pid": None}


@pytest.mark.slow
def test_touch_during_a_20k_file_burst_is_not_missed(data_dir: Path, service: Start) -> None:
    """A maint file touched while another thread creates 20k files elsewhere is still adopted."""
    svc = service()
    burst = data_dir / "mw" / "file" / "burst"
    burst.mkdir()
    total = 20_000
    halfway = threading.Event()
    created: list[int] = [0]

    def make_files() -> None:
        for i in range(total):
            fd = os.open(burst / f"f{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x")
            os.close(fd)
            created[0] = i + 1
            if i == total // 4:
                halfway.set()

    writer = threading.Thread(target=make_files, name="burst")
    mark = svc.mark()
    writer.start()
    try:
        assert halfway.wait(WAIT)
        maint(data_dir).touch()
        touched_at = created[0]
        svc.wait_for("maintenance.adopted", after=mark, timeout=2 * WAIT)
        svc.wait_for("maintenance.entered", after=mark, timeout=2 * WAIT)
    finally:
        writer.join(4 * WAIT)
    assert created[0] == total
    assert touched_at < total, "the touch happened during the burst"
    assert file_doc(data_dir)["set_by"] == "operator"
