"""Exactly once across crashes: the real service SIGKILLed at random points, over and over.

Shared by ``tests/test_crash.py`` (60 rounds) and the fault suite (``faults/fault_crash.py``,
100 rounds). Each round drops a batch of triggers (some while the service is down, the
rest once it is ready) — dbcheck, a command job that sleeps a few ms and appends its
trigger's name to a ledger, now and then a backup or a (no-op) archive — and kills the
service with SIGKILL at a random point: during start-up and recovery, after a random
number of ``job.started`` events, or after a random short delay. After each kill the state
file must parse. At the end the service runs once more until everything has settled
(``settle``), and ``final_problems`` lists, by kind, everything wrong with the end state:
a trigger not in exactly one of ``done/`` and ``failed/`` with its result, a job run twice,
a maint file no held state explains, a state file that does not parse.

The service helpers come from ``tests/conftest.py`` (one copy of ``ServiceProcess``).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import (
    WAIT,
    ServiceProcess,
    allowed_paths,
    drop_trigger,
    filed_in,
    ran,
    toml,
    write_config,
)
from watcher.service.state import State

LOST, TWICE, STUCK, UNPARSABLE, OTHER = "lost", "twice", "stuck", "unparsable", "other"
KINDS_OF_PROBLEM = (LOST, TWICE, STUCK, UNPARSABLE, OTHER)
Problem = tuple[str, str]  # (one of KINDS_OF_PROBLEM, what is wrong)


class Unparsable(AssertionError):
    """``state.json`` or the maint file does not parse while the service is dead."""


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
            raise Unparsable(run.why(f"maint file is not JSON {when}: {exc}")) from None
    path = data_dir / "mw" / "watcher" / "state.json"
    if not path.exists():
        return State()
    raw = path.read_bytes()
    try:
        return State.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        detail = f"state.json unreadable {when}: {exc}: {raw[:200]!r}"
        raise Unparsable(run.why(detail)) from None


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


def settle(data_dir: Path, config: Path, run: Run, timeout: float = WAIT) -> ServiceProcess:
    """Start once more and wait until every trigger has settled.

    Maintenance jobs run one at a time in submission order, so once a dbcheck dropped
    after start-up has finished, every maintenance job queued before it has ended too;
    the command jobs, which run beside them, are each awaited. ``timeout`` bounds the wait
    for that backlog (100 rounds leave more of it than 60). The service is killed if the
    wait fails, so no process outlives the caller.
    """
    spool = data_dir / "mw" / "spool"
    svc = ServiceProcess(data_dir, config)
    try:
        svc.ready()
        sentinel = "dbcheck.final"
        mark = svc.mark()
        (spool / sentinel).touch()
        run.dropped[sentinel] = "dbcheck"
        svc.wait_for("job.finished", ran(sentinel), after=mark, timeout=timeout)
        for name, kind in sorted(run.dropped.items()):
            if kind == "sleepy" and not filed_in(spool, name):
                svc.wait_for("job.finished", ran(name), timeout=timeout)
    except BaseException:
        svc.kill()
        raise
    return svc


def final_problems(data_dir: Path, ledger: Path, run: Run) -> list[Problem]:
    """Everything wrong with the end state (all of it, so one run reports every failure)."""
    spool = data_dir / "mw" / "spool"
    problems: list[Problem] = []

    # Every trigger ended in exactly one of done/ and failed/, with its result; none lost.
    for name in sorted(run.dropped):
        places = filed_in(spool, name)
        if len(places) != 1:
            problems.append((LOST, f"{name} is in {places or 'neither done/ nor failed/'}"))
            continue
        result = spool / places[0] / f"{name}.result.json"
        if not result.exists():
            problems.append((LOST, f"{name}: in {places[0]}/ without {name}.result.json"))
            continue
        status = json.loads(result.read_bytes())["status"]
        if (status == "finished") != (places[0] == "done"):
            problems.append((LOST, f"{name}: status {status} in {places[0]}/"))
    leftovers = sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))
    if leftovers != ["done", "failed"]:
        problems.append((LOST, f"left in the spool: {leftovers}"))
    if list((spool / ".claimed").iterdir()):
        problems.append(
            (LOST, f"left claimed: {sorted(p.name for p in (spool / '.claimed').iterdir())}")
        )
    rejected = sorted(p.name for p in (spool / "failed").glob("*.error.json"))
    if rejected:
        problems.append((LOST, f"valid triggers were rejected: {rejected}"))
    failed = sorted(
        f"{p.name.removesuffix('.result.json')}: {doc.get('reason')} {doc.get('message', '')[:80]}"
        for p in (spool / "failed").glob("*.result.json")
        if (doc := json.loads(p.read_bytes())).get("status") != "interrupted"
    )
    if failed:
        problems.append((OTHER, f"jobs failed for reasons other than the crash: {failed[:5]} …"))

    # No job ran twice: at most one job.started per trigger, and the ledger has no repeats.
    twice = {n: c for n, c in run.started.items() if c > 1 and n not in RETRY_ALLOWED}
    if twice:
        problems.append((TWICE, f"job.started more than once: {twice}"))
    entries = ledger.read_text().split()
    repeats = {n: c for n, c in Counter(entries).items() if c > 1}
    if repeats:
        problems.append((TWICE, f"command jobs ran more than once: {repeats}"))
    sleepy = {n for n, k in run.dropped.items() if k == "sleepy"}
    if not set(entries) <= sleepy:
        problems.append((OTHER, f"unknown ledger entries: {set(entries) - sleepy}"))
    never = sorted(n for n in sleepy if os.path.lexists(spool / "done" / n) and n not in entries)
    if never:
        problems.append((LOST, f"done but never ran: {never}"))

    # watcher never takes its own maint file writes for an operator's.
    if run.operator_events:
        problems.append((STUCK, f"operator events with no operator: {run.operator_events[:3]}"))

    # The state parses, and a maint file left behind is explained by an interrupted hold.
    try:
        state = read_state(data_dir, run, "at the end")
    except Unparsable as exc:
        return [*problems, (UNPARSABLE, str(exc))]
    holds = [(h.reason, h.name, h.interrupted) for h in state.holds]
    unexplained = [
        h for h in holds if not (h[0] == "job" and h[1] in ("restore", "archive") and h[2])
    ]
    if unexplained:
        problems.append((STUCK, f"holds no crash explains: {unexplained}"))
    maint = data_dir / "mw" / "data" / "maint"
    if maint.exists():
        content = json.loads(maint.read_bytes())
        in_file = {(h["reason"], h["name"]) for h in content.get("holds", [])}
        if not in_file or not in_file <= {(r, n) for r, n, _ in holds}:
            problems.append((STUCK, f"maint file holds {in_file} not in state {holds}"))
    elif holds:
        problems.append((STUCK, f"state holds {holds} but there is no maint file"))
    return problems
