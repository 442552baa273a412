"""Exactly once across crashes: the real service SIGKILLed at random points, over and over.

Each round drops a batch of triggers (some while the service is down, the rest once it
is ready) — dbcheck, a command job that sleeps a few ms and appends its trigger's name to
a ledger, now and then a backup or a (no-op) archive — and kills the service with SIGKILL
at a random point: during start-up and recovery, after a random number of ``job.started``
events, or after a random short delay. After each kill the state file must parse. At the
end the service runs once more until everything has settled, and then: every trigger is in
exactly one of ``done/`` and ``failed/`` with its result, no job ran twice, and a maint file
left behind is explained by held state. The seed is in every assertion message;
``WATCHER_CRASH_SEED=<n>`` replays a run.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ServiceProcess,
    allowed_paths,
    drop_trigger,
    filed_in,
    ran,
    stopped_once,
    toml,
    write_config,
)
from watcher.core.maintenance import Hold, decide
from watcher.service.journal import Journal
from watcher.service.state import FileStamp, ManualWindow, State, StateStore
from watcher.system.atomic import write_atomic

ROUNDS = 60
SLEEPY = (  # a few ms, then the trigger's name (a trigger may not set env) into the ledger
    "sleep 0.00$(( ${{#WATCHER_TRIGGER}} % 9 + 1 )); "
    'printf "%s\\n" "$WATCHER_TRIGGER" >> "{ledger}"'
)
KINDS = ("dbcheck", "sleepy", "backup", "archive")
WEIGHTS = (40, 46, 9, 5)
RETRY_ALLOWED: set[str] = set()  # no job here is configured retry_safe: none may run twice
OPERATOR_ONLY = ("maintenance.adopted", "maintenance.released_by_operator")


@dataclass
class Run:
    """What the crash rounds did, for the final checks."""

    seed: int
    dropped: dict[str, str] = field(default_factory=dict)  # trigger file → kind
    started: Counter[str] = field(default_factory=Counter)  # trigger file → job.started seen
    operator_events: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def why(self, detail: str = "") -> str:
        tail = "; ".join(self.log[-6:])
        return f"seed={self.seed} (WATCHER_CRASH_SEED to replay) {detail} | last rounds: {tail}"


def configure(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The config (backups allowed, the ``sleepy`` command job), the ledger, the backup dir."""
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    backups = tmp_path / "backups"
    backups.mkdir()
    argv = ["/bin/sh", "-c", SLEEPY.format(ledger=ledger)]
    config = write_config(
        tmp_path / "watcher.toml",
        allowed_paths(backups) + "\n"
        '[[jobs]]\nname = "sleepy"\ntype = "command"\n'
        f"argv = {toml(argv)}\n",
    )
    return config, ledger, backups


def drop(spool: Path, run: Run, rng: random.Random, tag: str, backups: Path) -> str:
    """One trigger of a random kind, renamed into place; returns its file name."""
    kind = rng.choices(KINDS, WEIGHTS)[0]
    body: dict[str, Any] | None
    if kind == "dbcheck":
        name, body = f"dbcheck.{tag}", None
    elif kind == "sleepy":
        name = f"sleepy-{tag}.json"  # the job reads it from WATCHER_TRIGGER
        body = {"job": "sleepy"}
    elif kind == "backup":
        name = f"backup-{tag}.json"
        body = {"job": "backup", "args": {"dest": str(backups), "keep": 2}}
    else:
        name = f"archive-{tag}.json"
        body = {"job": "archive", "args": {"before": "2000-01-01"}}
    drop_trigger(spool, name, body)
    run.dropped[name] = kind
    return name


def nth_event(svc: ServiceProcess, action: str, n: int) -> None:
    """Wait until ``n`` events with ``action`` have been seen (from the process's start)."""
    after = 0
    for _ in range(n):
        event = svc.wait_for(action, after=after)
        after = next(i for i in range(after, len(svc.events)) if svc.events[i] is event) + 1


def tally(svc: ServiceProcess, run: Run) -> None:
    """Count job starts per trigger and note any operator-only event (watcher saw itself)."""
    for event in svc.events:
        action = event["event"]["action"]
        trigger = event.get("watcher", {}).get("job", {}).get("trigger")
        if action == "job.started" and trigger:
            run.started[trigger] += 1
        if action in OPERATOR_ONLY:
            run.operator_events.append(f"{action}: {event['message']}")


def read_state(data_dir: Path, run: Run, when: str) -> State:
    """``state.json`` parses (and loads) whenever the service is dead; so does the maint file."""
    maint = data_dir / "mw" / "data" / "maint"
    if maint.exists():
        try:
            json.loads(maint.read_bytes())
        except ValueError as exc:
            raise AssertionError(run.why(f"maint file is not JSON {when}: {exc}")) from None
    path = data_dir / "mw" / "watcher" / "state.json"
    if not path.exists():
        return State()
    raw = path.read_bytes()
    try:
        return State.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"state.json unreadable {when}: {exc}: {raw[:200]!r}"
        raise AssertionError(run.why(detail)) from None


def crash_round(
    index: int, data_dir: Path, config: Path, backups: Path, run: Run, rng: random.Random
) -> None:
    """Drop triggers, start the service, SIGKILL it at a random point."""
    spool = data_dir / "mw" / "spool"
    here = [drop(spool, run, rng, f"{index:02d}-p{j}", backups) for j in range(rng.randint(0, 2))]
    svc = ServiceProcess(data_dir, config)
    mode = rng.choices(("startup", "started", "delay"), (15, 50, 35))[0]
    try:
        if mode == "startup":
            # The kill point itself is what is random here; nothing is waited for.
            time.sleep(rng.uniform(0.15, 0.6))
        else:
            svc.ready()
            here += [
                drop(spool, run, rng, f"{index:02d}-{j}", backups) for j in range(rng.randint(1, 5))
            ]
            if mode == "started":
                nth_event(svc, "job.started", rng.randint(1, len(here)))
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0, 0.02))  # a random point, not synchronisation
            else:
                time.sleep(rng.uniform(0, 0.1))  # a random point, not synchronisation
    finally:
        svc.kill()
    seen = sum(1 for a in svc.actions() if a == "job.started")
    run.log.append(f"#{index} {mode} dropped={len(here)} started={seen}")
    tally(svc, run)
    read_state(data_dir, run, f"after kill #{index}")


def settle(data_dir: Path, config: Path, run: Run) -> ServiceProcess:
    """Start once more and wait until every trigger has settled.

    Maintenance jobs run one at a time in submission order, so once a dbcheck dropped
    after start-up has finished, every maintenance job queued before it has ended too;
    the command jobs, which run beside them, are each awaited.
    """
    spool = data_dir / "mw" / "spool"
    svc = ServiceProcess(data_dir, config).ready()
    sentinel = "dbcheck.final"
    mark = svc.mark()
    (spool / sentinel).touch()
    run.dropped[sentinel] = "dbcheck"
    svc.wait_for("job.finished", ran(sentinel), after=mark)
    for name, kind in sorted(run.dropped.items()):
        if kind == "sleepy" and not filed_in(spool, name):
            svc.wait_for("job.finished", ran(name))
    return svc


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
    assert not problems, run.why("\n  - " + "\n  - ".join(problems))


def final_problems(data_dir: Path, ledger: Path, run: Run) -> list[str]:
    """Everything wrong with the end state (all of it, so one run reports every failure)."""
    spool = data_dir / "mw" / "spool"
    problems: list[str] = []

    # Every trigger ended in exactly one of done/ and failed/, with its result; none lost.
    for name in sorted(run.dropped):
        places = filed_in(spool, name)
        if len(places) != 1:
            problems.append(f"{name} is in {places or 'neither done/ nor failed/'}")
            continue
        result = spool / places[0] / f"{name}.result.json"
        if not result.exists():
            problems.append(f"{name}: in {places[0]}/ without {name}.result.json")
            continue
        status = json.loads(result.read_bytes())["status"]
        if (status == "finished") != (places[0] == "done"):
            problems.append(f"{name}: status {status} in {places[0]}/")
    leftovers = sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))
    if leftovers != ["done", "failed"]:
        problems.append(f"left in the spool: {leftovers}")
    if list((spool / ".claimed").iterdir()):
        problems.append(f"left claimed: {sorted(p.name for p in (spool / '.claimed').iterdir())}")
    rejected = sorted(p.name for p in (spool / "failed").glob("*.error.json"))
    if rejected:
        problems.append(f"valid triggers were rejected: {rejected}")
    failed = sorted(
        f"{p.name.removesuffix('.result.json')}: {doc.get('reason')} {doc.get('message', '')[:80]}"
        for p in (spool / "failed").glob("*.result.json")
        if (doc := json.loads(p.read_bytes())).get("status") != "interrupted"
    )
    if failed:
        problems.append(f"jobs failed for reasons other than the crash: {failed[:5]} …")

    # No job ran twice: at most one job.started per trigger, and the ledger has no repeats.
    twice = {n: c for n, c in run.started.items() if c > 1 and n not in RETRY_ALLOWED}
    if twice:
        problems.append(f"job.started more than once: {twice}")
    entries = ledger.read_text().split()
    repeats = {n: c for n, c in Counter(entries).items() if c > 1}
    if repeats:
        problems.append(f"command jobs ran more than once: {repeats}")
    sleepy = {n for n, k in run.dropped.items() if k == "sleepy"}
    if not set(entries) <= sleepy:
        problems.append(f"unknown ledger entries: {set(entries) - sleepy}")
    never = sorted(n for n in sleepy if os.path.lexists(spool / "done" / n) and n not in entries)
    if never:
        problems.append(f"done but never ran: {never}")

    # watcher never takes its own maint file writes for an operator's.
    if run.operator_events:
        problems.append(f"operator events with no operator: {run.operator_events[:3]}")

    # The state parses, and a maint file left behind is explained by an interrupted hold.
    state = read_state(data_dir, run, "at the end")
    holds = [(h.reason, h.name, h.interrupted) for h in state.holds]
    unexplained = [
        h for h in holds if not (h[0] == "job" and h[1] in ("restore", "archive") and h[2])
    ]
    if unexplained:
        problems.append(f"holds no crash explains: {unexplained}")
    maint = data_dir / "mw" / "data" / "maint"
    if maint.exists():
        content = json.loads(maint.read_bytes())
        in_file = {(h["reason"], h["name"]) for h in content.get("holds", [])}
        if not in_file or not in_file <= {(r, n) for r, n, _ in holds}:
            problems.append(f"maint file holds {in_file} not in state {holds}")
    elif holds:
        problems.append(f"state holds {holds} but there is no maint file")
    return problems


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
    """Write the maint file exactly as watcher renders it for ``holds``."""
    content = decide(holds, datetime.now(UTC), DEFAULT_MESSAGE)
    assert content is not None
    return write_atomic(data_dir / "mw" / "data" / "maint", content.render())


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
