"""Text that cannot forge a line: control characters and line separators shown escaped.

A message, a trigger argument or a file name may hold ``\\n``, ``\\r``, U+2028, C1 controls
or ANSI escapes. Written raw into a log line or a terminal they would start a line of their
own (a forged event) or drive the terminal. ``one_line`` shows each such character as a
Python-style escape (``\\n``, ``\\x1b``, ``\\u2028``), so the text stays on its line and
readable; ``one_line_all`` does it for every string in a report. ``safe_json`` does the same
for rendered JSON, where C0 controls are escaped already but U+0085, U+2028, U+2029 and the
other C1 controls are legal raw (and some readers split lines on them).
"""

from __future__ import annotations

import re
from typing import Any

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]


def _escape(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {code: _escape(code) for code in _CONTROLS}
# In valid UTF-8 (all orjson writes): C2 80..9F is U+0080..U+009F, E2 80 A8/A9 U+2028/9.
_RAW_IN_JSON = re.compile(rb"\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


def one_line(text: str) -> str:
    """``text`` with every control character and line separator escaped."""
    return text.translate(_TABLE)


def one_line_all(value: Any) -> Any:
    """``value`` with ``one_line`` applied to every string in it (keys too), recursively."""
    if isinstance(value, str):
        return one_line(value)
    if isinstance(value, dict):
        return {one_line_all(k): one_line_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [one_line_all(v) for v in value]
    if isinstance(value, tuple):
        return tuple(one_line_all(v) for v in value)
    return value


def _json_escape(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode())


def safe_json(rendered: bytes) -> bytes:
    """Rendered JSON with the raw line separators and C1 controls as ``\\uXXXX`` (the same
    JSON value)."""
    if rendered.isascii():
        return rendered  # the usual case, checked a word at a time (~0.1 µs a line)
    if b"\xc2" not in rendered and b"\xe2\x80" not in rendered:
        return rendered  # other non-ASCII text (ü, é, 日本): no lead byte of the characters
    return _RAW_IN_JSON.sub(_json_escape, rendered)
