"""Rows and the one markdown table they are printed as.

A row is a plain dict with the keys in ``COLUMNS``; benchmarks written by others may
leave some out (``verdict`` especially), so ``complete`` fills the gaps, deriving the
verdict from a numeric ratio and a ``≤ N×`` target when it can.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

Row = dict[str, object]

COLUMNS = ("measure", "ours", "reference", "ratio", "target", "verdict")
HEADERS = ("measure", "ours", "reference (same run)", "ratio", "target", "verdict")
PASS, FAIL, NO_TARGET = "PASS", "FAIL", "—"
LEGEND = (
    "ratio = ours ÷ reference for the statistic named in brackets (for throughput, "
    "above 1 is faster than the reference; for times and latencies, below 1 is). "
    "Verdicts compare ours with the DESIGN §10 target."
)

_TARGET_RATIO = re.compile(r"^\s*(?:≤|<=)\s*([0-9.]+)\s*[×x]\s*$")


def row(
    measure: str,
    ours: str,
    *,
    reference: str = "—",
    ratio: str = "—",
    target: str = "—",
    passed: bool | None = None,
) -> Row:
    """A complete row; ``passed`` is ``None`` when there is no target to judge by."""
    verdict = NO_TARGET if passed is None else (PASS if passed else FAIL)
    return {
        "measure": measure,
        "ours": ours,
        "reference": reference,
        "ratio": ratio,
        "target": target,
        "verdict": verdict,
    }


def note_row(measure: str, verdict: str) -> Row:
    """A row that reports a benchmark that did not produce numbers (skipped, failed)."""
    return row(measure, "—") | {"verdict": verdict}


def complete(raw: Row) -> Row:
    """Every column present and printable; a missing verdict derived from ratio and target."""
    done = {key: raw.get(key) for key in COLUMNS}
    for key, value in done.items():
        if value is None or value == "":
            done[key] = "—"
    if "verdict" not in raw:
        done["verdict"] = _derived_verdict(raw.get("ratio"), raw.get("target"))
    if isinstance(done["ratio"], float):
        done["ratio"] = "—" if math.isnan(done["ratio"]) else f"{done['ratio']:.2f}×"
    return done


def _derived_verdict(ratio: object, target: object) -> str:
    match = _TARGET_RATIO.match(str(target)) if target is not None else None
    if match is None or not isinstance(ratio, int | float) or math.isnan(ratio):
        return NO_TARGET
    return PASS if ratio <= float(match.group(1)) else FAIL


def markdown_table(rows: Iterable[Row]) -> str:
    """The rows as one GitHub-flavoured markdown table."""
    lines = [_line(HEADERS), _line(("---",) * len(HEADERS))]
    for r in rows:
        done = complete(r)
        lines.append(_line(tuple(str(done[key]) for key in COLUMNS)))
    return "\n".join(lines)


def _line(cells: tuple[str, ...]) -> str:
    escaped = (cell.replace("|", "\\|").replace("\n", " ") for cell in cells)
    return "| " + " | ".join(escaped) + " |"
