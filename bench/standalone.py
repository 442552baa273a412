"""Running one benchmark module on its own: ``python -m bench.bench_<name> [--quick]``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench.report import Row, markdown_table

DEFAULT_WORKDIR = Path(__file__).resolve().parent.parent / "var" / "bench"


def main(run: Callable[[Path, bool], list[Row]]) -> None:
    """Parse ``--quick`` and ``--workdir``, run, print the rows as a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer trials, shorter windows")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(markdown_table(run(args.workdir.resolve(), args.quick)))
