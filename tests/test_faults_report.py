"""The fault suite's table: losses fail, figures do not, cells cannot break the table."""

from __future__ import annotations

import pytest

from faults.report import (
    FAIL,
    INFO,
    PASS,
    Row,
    check,
    details,
    error,
    exactly,
    figure,
    markdown_table,
    zero,
)


@pytest.mark.parametrize(
    ("row", "verdict"),
    [
        (zero("s", "lost", 0), PASS),
        (zero("s", "lost", 1), FAIL),
        (exactly("s", "ran", 5, 5), PASS),
        (exactly("s", "ran", 4, 5), FAIL),
        (check("s", "serving", True, "yes"), PASS),
        (check("s", "serving", False, "no"), FAIL),
        (figure("s", "drain", "1.0 s"), INFO),
    ],
)
def test_verdicts(row: Row, verdict: str) -> None:
    """A count of losses passes only at 0, an exact count only when equal; a figure never fails."""
    assert row.verdict == verdict
    assert row.failed == (verdict == FAIL)


def test_error_row_fails_and_details_name_it() -> None:
    """A scenario that raised is a failed row, and its reason is listed under the table."""
    rows = [figure("a", "x", "1"), error("b", "OSError: boom"), zero("c", "lost", 2, "t1, t2")]
    assert [r.failed for r in rows] == [False, True, True]
    assert details(rows).splitlines() == [
        "- b / scenario ran to its end: OSError: boom",
        "- c / lost: t1, t2",
    ]


def test_table_escapes_pipes_and_newlines() -> None:
    """A value with ``|`` or a newline stays in its cell."""
    table = markdown_table([figure("s", "a|b", "line\nbreak")])
    assert table.splitlines()[-1] == "| s | a\\|b | line break | — | — |"
