"""Exactly once across crashes: the real service SIGKILLed at random points, over and over.

The rounds themselves (``crash_round``, ``settle``, ``final_problems``) live in
``faults/crash.py``, shared with the fault suite's 100-kill scenario; this test runs 60 of
them. The seed is in every assertion message; ``WATCHER_CRASH_SEED=<n>`` replays a run.
Below it, each crash window the random test runs into is reproduced exactly.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from faults.crash import Run, configure, crash_round, final_problems, settle, tally
from tests.conftest import (
    ServiceProcess,
    allowed_paths,
    drop_trigger,
    filed_in,
    ran,
    stopped_once,
    write_config,
)
from watcher.config import system_timezone
from watcher.core.maintenance import Hold, decide
from watcher.service.journal import Journal
from watcher.service.state import FileStamp, ManualWindow, State, StateStore
from watcher.system.atomic import write_atomic

ROUNDS = 60


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_random_points(data_dir: Path, tmp_path: Path) -> None:
    """After ≥50 random SIGKILLs nothing is lost, nothing ran twice, state and maint stay sane."""
    seed = int(os.environ.get("WATCHER_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    run = Run(seed)
    config, ledger, backups = configure(tmp_path)
    for index in range(ROUNDS):
        crash_round(index, data_dir, config, backups, run, rng)

    last = settle(data_dir, config, run)
    assert last.stop() == 0, run.why(f"final stop failed: {last.stderr[-2000:]}")
    tally(last, run)
    problems = final_problems(data_dir, ledger, run)
    assert not problems, run.why("".join(f"\n  - {kind}: {text}" for kind, text in problems))


# --- the crash windows the random test runs into, each reproduced exactly ----------------
#
# Each test below lays out on disk what a SIGKILL at one precise point leaves behind
# (the service having been started and stopped once first, so the state is its own), then
# starts the service and checks that it recovers as if the crash had not happened.

DEFAULT_MESSAGE = "The system is under maintenance."


def claimed(data_dir: Path, name: str) -> str:
    """Put trigger ``name`` in ``.claimed/`` as ``take`` does; returns its id."""
    ident = f"{time.time_ns()}-{name}"
    (data_dir / "mw" / "spool" / ".claimed" / ident).touch()
    return ident


def job_hold(job: str) -> Hold:
    return Hold("job", job, since=datetime.now(UTC), message=f"job {job} running")


def written_for(data_dir: Path, holds: tuple[Hold, ...]) -> os.stat_result:
    """Write the maint file exactly as watcher renders it for ``holds`` (in the default
    configuration's zone, the system's)."""
    content = decide(holds, datetime.now(UTC), DEFAULT_MESSAGE)
    assert content is not None
    rendered = content.render(ZoneInfo(system_timezone()))
    return write_atomic(data_dir / "mw" / "data" / "maint", rendered)


def test_own_maint_file_not_adopted_after_kill_before_state_save(
    data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """Killed after writing the maint file for a job hold but before recording it: not adopted."""
    stopped_once(service)
    # The kill point: the runner added the dbcheck hold, the controller saved the holds
    # first (write-ahead), wrote the maint file (controller._apply → _write_file) and was
    # killed before saving the file's identity; the trigger is claimed and its journal has
    # no ``started`` yet, so it simply runs after the restart.
    claimed(data_dir, "dbcheck.sim")
    store = StateStore(data_dir / "mw" / "watcher")
    saved, _ = store.load()
    hold = job_hold("dbcheck")
    store.save(replace(saved, holds=(hold,), written=None, entered_at=hold.since))
    written_for(data_dir, (hold,))
    svc = service(wait_ready=False)
    svc.wait_for("job.finished", ran("dbcheck.sim"))
    svc.wait_for("service.ready")
    adopted = [e["message"] for e in svc.events if e["event"]["action"] == "maintenance.adopted"]
    assert adopted == [], "watcher adopted its own maint file as an operator's manual hold"
    assert svc.stop() == 0  # state on disk follows the events; a stop flushes it
    state = State.from_json((data_dir / "mw" / "watcher" / "state.json").read_bytes())
    assert [(h.reason, h.name) for h in state.holds] == []
    assert not (data_dir / "mw" / "data" / "maint").exists()


def test_own_maint_removal_not_operator_release_after_kill_before_state_save(
    data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """Killed after removing the maint file at a job's end, before saving: no operator release."""
    stopped_once(service)
    state_dir = data_dir / "mw" / "watcher"
    store = StateStore(state_dir)
    saved, _ = store.load()
    later = (datetime.now().hour * 60 + 6 * 60) // 10 * 10 % 1440  # an operator's daily window
    window = ManualWindow(later, (later + 60) % 1440)
    hold = job_hold("dbcheck")
    stamp = FileStamp.of(written_for(data_dir, (hold,)))
    store.save(
        replace(
            saved,
            holds=(),
            manual_windows=(window,),
            written=stamp,
            entered_at=hold.since,
        )
    )
    # The kill point: the job ended, the runner released its hold, the controller saved
    # the holds first (write-ahead: none left, the file's identity still noted), removed
    # the maint file (controller._apply → remove_durably) and was killed before saving
    # again; on_done never ran, so the trigger is still claimed with an unfinished journal
    # record.
    ident = claimed(data_dir, "dbcheck.sim")
    Journal(state_dir).append(
        {
            "event": "started",
            "id": ident,
            "file": "dbcheck.sim",
            "job": "dbcheck",
            "at": hold.since.isoformat(),
        }
    )
    (data_dir / "mw" / "data" / "maint").unlink()
    svc = service()
    svc.wait_for("job.interrupted", ran("dbcheck.sim"))
    operator = [
        e["message"]
        for e in svc.events
        if e["event"]["action"] == "maintenance.released_by_operator"
    ]
    assert operator == [], "watcher took its own removal of the maint file for an operator's"
    after, _ = StateStore(state_dir).load_readonly()
    assert after.manual_windows == (window,), "the operator's recurring window was dropped"
    assert after.holds == ()
    assert (data_dir / "mw" / "spool" / "failed" / "dbcheck.sim.result.json").exists()


def test_result_json_after_kill_between_move_and_result(
    data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """Killed after moving a finished trigger to done/, before its result's move: it appears."""
    stopped_once(service)
    spool = data_dir / "mw" / "spool"
    # The kill point: Spool._finish wrote the result beside the claim (naming where the
    # trigger goes), renamed .claimed/<id> to done/<name> and was killed before moving the
    # result and before the journal's ``finished`` record.
    ident = claimed(data_dir, "dbcheck.sim")
    target = spool / "done" / "dbcheck.sim"
    (spool / ".claimed" / f"{ident}.result.json").write_text(
        json.dumps(
            {"trigger": "dbcheck.sim", "id": ident, "moved_to": str(target), "status": "finished"}
        )
    )
    os.rename(spool / ".claimed" / ident, target)
    Journal(data_dir / "mw" / "watcher").append(
        {
            "event": "started",
            "id": ident,
            "file": "dbcheck.sim",
            "job": "dbcheck",
            "at": datetime.now(UTC).isoformat(),
        }
    )
    service()
    result = spool / "done" / "dbcheck.sim.result.json"
    assert result.exists(), "a trigger in done/ has no result JSON, and recovery never writes one"
    assert json.loads(result.read_bytes())["trigger"] == "dbcheck.sim"


KILLED_WRITER = """\
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")  # spill changed pages into the database file
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE items SET body = body || 'half-written'")
os.kill(os.getpid(), 9)
"""


def killed_writer(db: Path) -> None:
    """A writer SIGKILLed mid-transaction (watcher's own VACUUM, or the application):
    it leaves a hot rollback journal, which SQLite rolls back on the next read-write open."""
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)], check=False)
    assert done.returncode == -9
    assert db.with_name(db.name + "-journal").exists()


def test_dbcheck_after_a_killed_writer_is_not_corruption(
    data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """A hot journal left by a killed writer is recovered, not reported as corruption."""
    db = data_dir / "mw" / "data" / "mail.db"
    killed_writer(db)
    svc = service()
    mark = svc.mark()
    (data_dir / "mw" / "spool" / "dbcheck").touch()
    finished = svc.wait_for("job.finished", ran("dbcheck"), after=mark)
    corrupt = finished["watcher"]["result"].get("corrupt")
    assert corrupt == [], f"an intact database with a hot journal reported as corrupt: {corrupt}"
    assert "db.corrupt" not in svc.actions()[mark:]
    assert not (data_dir / "mw" / "data" / "maint").exists()
    with sqlite3.connect(db) as conn:
        half = conn.execute("SELECT count(*) FROM items WHERE body LIKE '%half-written'")
        assert half.fetchone() == (0,)
    conn.close()


def test_backup_after_a_killed_writer(
    data_dir: Path, tmp_path: Path, service: Callable[..., ServiceProcess]
) -> None:
    """A backup of a database with a hot journal copies the recovered database, not fails."""
    backups = tmp_path / "backups"
    backups.mkdir()
    config = write_config(tmp_path / "watcher.toml", allowed_paths(backups))
    killed_writer(data_dir / "mw" / "data" / "mail.db")
    svc = service(config)
    mark = svc.mark()
    spool = data_dir / "mw" / "spool"
    drop_trigger(spool, "bk.json", {"job": "backup", "args": {"dest": str(backups)}})
    svc.wait_for("maintenance.left", after=mark)
    outcome = spool / filed_in(spool, "bk.json.result.json")[0] / "bk.json.result.json"
    doc = json.loads(outcome.read_bytes())
    assert doc["status"] == "finished", f"backup failed: {doc.get('reason')}: {doc.get('message')}"
