"""``watcher.core.printable``: control characters and line separators escaped (tables, no I/O)."""

from __future__ import annotations

import json

import pytest

from watcher.core.printable import one_line, one_line_all, safe_json


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcode ✓", "plain text, ünïcode ✓"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("nel\x85csi\x9b", "nel\\x85csi\\x9b"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("vt\x0bff\x0cfs\x1c", "vt\\x0bff\\x0cfs\\x1c"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_one_line_escapes_what_breaks_or_drives_a_line(text: str, shown: str) -> None:
    """Every C0/C1 control, DEL and U+2028/9 is shown escaped; other text is unchanged."""
    assert one_line(text) == shown
    assert one_line(text).splitlines() == [shown]


def test_one_line_all_reaches_every_string() -> None:
    """Keys, values, list and tuple items are escaped; other values are left as they are."""
    report = {"a\nb": ["x\ry", ("\x1b",)], "n": 3, "none": None, "ok": True}
    assert one_line_all(report) == {
        "a\\nb": ["x\\ry", ("\\x1b",)],
        "n": 3,
        "none": None,
        "ok": True,
    }


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "£ — ü 日本",
        "ls\u2028ps\u2029",
        "nel\x85 csi\x9b c1\x80\x9f",
        "é\u2027\u202a",
        "\n\x1b",
    ],
)
def test_safe_json_is_the_same_value_on_one_line(value: str) -> None:
    """Raw U+0085, C1 controls and U+2028/9 become ``\\uXXXX``: same JSON value, one line."""
    raw = json.dumps({"m": value}, ensure_ascii=False).encode()
    safe = safe_json(raw)
    assert json.loads(safe) == {"m": value}
    assert len(safe.decode().splitlines()) == 1
    assert not any(0x80 <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in safe.decode())
