"""kill -9 at random points while triggers run (dbcheck, command, backup, archive jobs).

100 rounds (10 with ``--quick``) of ``faults.crash.crash_round``, then one settling run;
the figures are the problems ``final_problems`` finds, by kind, plus state files that did
not parse after a kill. All must be 0.
"""

from __future__ import annotations

from faults.context import Context
from faults.crash import (
    LOST,
    OTHER,
    STUCK,
    TWICE,
    UNPARSABLE,
    Problem,
    Run,
    Unparsable,
    configure,
    crash_round,
    final_problems,
    settle,
    tally,
)
from faults.report import Row, figure, zero

NAME = "kill -9"
SETTLE_TIMEOUT = 600.0  # the backlog of 100 rounds, one maintenance job at a time


def run(ctx: Context) -> list[Row]:
    """Kill the service at random points, settle, count what went wrong."""
    rounds = 10 if ctx.quick else 100
    data_dir = ctx.data_dir()
    config, ledger, backups = configure(ctx.workdir)
    crashes = Run(ctx.seed)
    problems: list[Problem] = []
    for index in range(rounds):
        try:
            crash_round(index, data_dir, config, backups, crashes, ctx.rng)
        except Unparsable as exc:
            problems.append((UNPARSABLE, str(exc)))
    last = settle(data_dir, config, crashes, timeout=SETTLE_TIMEOUT)
    code = last.stop()
    tally(last, crashes)
    problems += final_problems(data_dir, ledger, crashes)
    started = sum(crashes.started.values())
    rows = [
        figure(
            NAME,
            "SIGKILLs / triggers dropped / jobs started",
            f"{rounds} / {len(crashes.dropped)} / {started}",
        ),
    ]
    labels = {
        LOST: "triggers lost (not filed once with a result)",
        TWICE: "jobs run twice",
        STUCK: "maintenance stuck without a hold that explains it",
        UNPARSABLE: "unparsable state or maint files",
        OTHER: "jobs failed for other reasons than the kill",
    }
    for kind, label in labels.items():
        found = [text for k, text in problems if k == kind]
        rows.append(zero(NAME, label, len(found), "; ".join(found)[:2000]))
    rows.append(zero(NAME, "exit code of the final SIGTERM stop", code, last.stderr[-1000:]))
    return rows
