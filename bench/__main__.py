"""``python -m bench [--quick] [--only NAME ...] [--out FILE]``: one markdown table.

Runs the benchmark modules in order (the known ones, then any other ``bench_*.py``),
collects their rows, prints one table and writes it to ``bench/results/latest.md`` (or
``--out``). A module is run when it exists and imports cleanly, and skipped with the
reason otherwise (``bench_dbcheck`` and ``bench_backup`` are written by others); a
module that fails while running becomes an ``ERROR`` row, so the others still report.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.report import LEGEND, Row, markdown_table, note_row
from bench.standalone import DEFAULT_WORKDIR

HERE = Path(__file__).resolve().parent
ORDER = (
    "bus",
    "maint",
    "process",
    "trigger",
    "incron",
    "disk",
    "dbcheck",
    "backup",
    "archive",
    "http",
    "cluster",
)
DEFAULT_OUT = HERE / "results" / "latest.md"

RunFn = Callable[[Path, bool], list[Row]]


def module_names() -> list[str]:
    """The known benchmarks in their order, then any other ``bench_*.py`` found here."""
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    return [*ORDER, *(name for name in found if name not in ORDER)]


def load(name: str) -> RunFn | str:
    """The module's ``run``, or why it cannot be used."""
    module_name = f"bench.bench_{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return f"not written yet (no bench/bench_{name}.py)"
        return f"does not import: {exc}"
    except Exception as exc:  # any import-time failure of someone else's module
        return f"does not import: {type(exc).__name__}: {exc}"
    run = getattr(module, "run", None)
    if not callable(run):
        return "has no run(workdir, quick)"
    return run  # type: ignore[no-any-return]  # reason: checked callable above


def run_one(name: str, workdir: Path, quick: bool) -> list[Row]:
    """One module's rows; a skipped or failed module is a row that says so."""
    loaded = load(name)
    if isinstance(loaded, str):
        _say(f"{name}: skipped — {loaded}")
        return [note_row(f"{name}: {loaded}", "SKIPPED")]
    _say(f"{name}: running")
    started = time.monotonic()
    try:
        rows = loaded(workdir, quick)
    except Exception as exc:  # report it and go on with the other benchmarks
        traceback.print_exc(file=sys.stderr)
        _say(f"{name}: failed after {time.monotonic() - started:.0f} s")
        return [note_row(f"{name}: failed — {type(exc).__name__}: {exc}", "ERROR")]
    _say(f"{name}: done in {time.monotonic() - started:.0f} s")
    return rows


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def caption(quick: bool, elapsed: float, only: list[str] | None = None) -> str:
    """Which run this was and on what, since absolute numbers depend on the machine."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    kind = "quick run" if quick else "full run"
    if only:
        kind += f" of {', '.join(only)} only"
    return (
        f"Benchmarks, {kind}, {when}: {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average at the end {load}, "
        f"{elapsed / 60:.1f} min."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run watcher's benchmarks; print one markdown table."
    )
    parser.add_argument("--quick", action="store_true", help="fewer trials, shorter windows")
    names = module_names()
    parser.add_argument(
        "--only",
        nargs="+",
        choices=names,
        metavar="NAME",
        help=f"run only these ({', '.join(names)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="FILE",
        help="where to write the table (default: bench/results/latest.md)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        metavar="DIR",
        help="where data directories and databases are built and cached",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print the table, write it to ``--out``."""
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows: list[Row] = []
    for name in args.only or module_names():
        rows += run_one(name, workdir, args.quick)
    text = "\n\n".join(
        (caption(args.quick, time.monotonic() - started, args.only), markdown_table(rows), LEGEND)
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    _say(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
