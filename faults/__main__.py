"""``python -m faults [--quick] [--only NAME ...] [--seed N]``: the fault suite, one table.

Runs the scenarios in order (``fault_<name>.py``, each with ``run(ctx) -> list[Row]``),
prints the seed first and one markdown table at the end, writes it to
``faults/results/latest.md`` (or ``--out``) and exits 1 when any row failed. Every
scenario draws from its own generator seeded with ``<seed>-<name>``, so ``--seed N
--only NAME`` replays one scenario exactly as it ran in the full suite. A scenario that
raises becomes an ``ERROR`` row, and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from faults.context import Context
from faults.report import Row, details, error, markdown_table

HERE = Path(__file__).resolve().parent
ORDER = ("crash", "flood", "inotify", "configs", "triggers", "control")
DEFAULT_OUT = HERE / "results" / "latest.md"


def run_one(name: str, ctx: Context) -> list[Row]:
    """One scenario's rows; one that raises is an ``ERROR`` row with the reason."""
    _say(f"{name}: running")
    started = time.monotonic()
    try:
        module = importlib.import_module(f"faults.fault_{name}")
        rows: list[Row] = module.run(ctx)
    except Exception as exc:  # report it and go on with the other scenarios
        traceback.print_exc(file=sys.stderr)
        rows = [error(name, f"{type(exc).__name__}: {exc}")]
    _say(f"{name}: done in {time.monotonic() - started:.0f} s")
    return rows


def caption(args: argparse.Namespace, elapsed: float) -> str:
    """Which run this was and on what (the figures depend on the machine and its load)."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    kind = "quick run" if args.quick else "full run"
    return (
        f"Faults, {kind}, seed {args.seed}, {when}: {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average at the end {load}, "
        f"{elapsed / 60:.1f} min."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m faults",
        description="Run watcher's fault suite; print one table; exit 1 on any loss.",
    )
    parser.add_argument("--quick", action="store_true", help="a short version of each scenario")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=ORDER,
        metavar="NAME",
        help=f"run only these ({', '.join(ORDER)})",
    )
    parser.add_argument("--seed", type=int, help="replay a run (default: a random seed)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="FILE")
    parser.add_argument(
        "--workdir", type=Path, metavar="DIR", help="where data dirs are made (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios, print the table, write it to ``--out``; 1 on any loss."""
    args = parse_args(argv)
    _say(f"seed {args.seed} (--seed {args.seed} replays this run)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="watcher-faults-")).resolve()
    started = time.monotonic()
    rows: list[Row] = []
    try:
        for name in args.only or ORDER:
            where = workdir / name
            where.mkdir(parents=True, exist_ok=True)
            ctx = Context(where, args.quick, args.seed, random.Random(f"{args.seed}-{name}"))
            rows += run_one(name, ctx)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [r for r in rows if r.failed]
    verdict = f"{len(failed)} of {len(rows)} rows failed" if failed else "no losses"
    parts = [caption(args, time.monotonic() - started), markdown_table(rows), verdict]
    if failed and details(rows):
        parts.append(details(rows))
    text = "\n\n".join(parts)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    _say(f"written to {args.out}")
    return 1 if failed else 0


def _say(message: str) -> None:
    print(f"faults: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
