"""The rows of the fault suite and the one markdown table they are printed as.

A row is one figure of one scenario: what was counted, its value, what it must be, and
whether it is. Figures with no requirement (a drain time, a peak RSS) are reported with
the verdict ``—``; any row whose verdict is ``FAIL`` or ``ERROR`` fails the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PASS, FAIL, ERROR, INFO = "PASS", "FAIL", "ERROR", "—"
HEADERS = ("scenario", "measure", "value", "required", "verdict")


@dataclass(frozen=True)
class Row:
    """One figure of one scenario."""

    scenario: str
    measure: str
    value: str
    required: str = "—"
    verdict: str = INFO
    detail: str = ""  # why it failed: printed under the table, not in it

    @property
    def failed(self) -> bool:
        return self.verdict in (FAIL, ERROR)


def zero(scenario: str, measure: str, count: int, detail: str = "") -> Row:
    """A count that must be 0 (a loss, a duplicate, a traceback, a hang)."""
    return Row(scenario, measure, str(count), "0", PASS if count == 0 else FAIL, detail)


def exactly(scenario: str, measure: str, count: int, wanted: int, detail: str = "") -> Row:
    """A count that must equal ``wanted``."""
    verdict = PASS if count == wanted else FAIL
    return Row(scenario, measure, str(count), str(wanted), verdict, detail)


def check(scenario: str, measure: str, ok: bool, value: str, detail: str = "") -> Row:
    """A yes/no requirement (``still serving``, ``state matches the file``)."""
    return Row(scenario, measure, value, "yes", PASS if ok else FAIL, detail)


def figure(scenario: str, measure: str, value: str) -> Row:
    """A figure with no requirement (time to drain, peak RSS, how many were run)."""
    return Row(scenario, measure, value)


def error(scenario: str, message: str) -> Row:
    """A scenario that could not run to its end."""
    return Row(scenario, "scenario ran to its end", "no", "yes", ERROR, message)


def markdown_table(rows: Iterable[Row]) -> str:
    """The rows as one GitHub-flavoured markdown table."""
    lines = [_line(HEADERS), _line(("---",) * len(HEADERS))]
    lines += [_line((r.scenario, r.measure, r.value, r.required, r.verdict)) for r in rows]
    return "\n".join(lines)


def details(rows: Iterable[Row]) -> str:
    """What went wrong, one paragraph per failed row (empty when nothing failed)."""
    return "\n".join(
        f"- {r.scenario} / {r.measure}: {r.detail}" for r in rows if r.failed and r.detail
    )


def _line(cells: tuple[str, ...]) -> str:
    escaped = (cell.replace("|", "\\|").replace("\n", " ") for cell in cells)
    return "| " + " | ".join(escaped) + " |"
