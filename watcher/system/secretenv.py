"""Environment variables that hold watcher's secrets, kept from the commands it starts.

The webhook secret (``secret_env``) and the cluster password (``password_env``) come from
watcher's environment. A command job or command handler inherits that environment; one that
prints it (``env`` while debugging) would put the secret into its output tail, and so into
``job.failed``/``handler.failed`` events, result files and logs. The service names those
variables here (``hide``) and ``child_environ`` is watcher's environment without them.

``child_environ`` is on a trigger's path to its job's process, and decoding ``os.environ``
item by item costs ≈ 35 µs for 35 variables (more after the process was idle). The result
is kept and reused while the environment is unchanged: CPython's ``os.environ`` holds its
bytes in a plain dict (``_data``), which is compared (at C speed, ≈ 1 µs) with the copy the
kept result was made from. Anything that changes the environment through ``os.environ``
(``putenv`` alone never shows in it) is therefore seen at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_hidden: frozenset[str] = frozenset()
_made_from: dict[bytes, bytes] | None = None  # os.environ's bytes when _kept was made
_kept: dict[str, str] = {}


def hide(names: Iterable[str]) -> None:
    """Keep these variables (empty names ignored) from every command started from now on;
    replaces the set named before (a reloaded configuration names its own)."""
    global _hidden, _made_from
    _hidden = frozenset(n for n in names if n)
    _made_from = None


def child_environ() -> dict[str, str]:
    """Watcher's environment without the variables that hold its secrets (a new dict)."""
    global _made_from, _kept
    raw: dict[bytes, bytes] | None = getattr(os.environ, "_data", None)
    if raw is None or raw != _made_from:
        _kept = {k: v for k, v in os.environ.items() if k not in _hidden}
        _made_from = dict(raw) if raw is not None else None
    return dict(_kept)
