"""Environment variables that hold watcher's secrets, kept from the commands it starts.

The webhook secret (``secret_env``) and the cluster password (``password_env``) come from
watcher's environment. A command job or command handler inherits that environment; one that
prints it (``env`` while debugging) would put the secret into its output tail, and so into
``job.failed``/``handler.failed`` events, result files and logs. The service names those
variables here (``hide``) and ``child_environ`` is watcher's environment without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_hidden: frozenset[str] = frozenset()


def hide(names: Iterable[str]) -> None:
    """Keep these variables (empty names ignored) from every command started from now on;
    replaces the set named before (a reloaded configuration names its own)."""
    global _hidden
    _hidden = frozenset(n for n in names if n)


def child_environ() -> dict[str, str]:
    """Watcher's environment without the variables that hold its secrets."""
    return {k: v for k, v in os.environ.items() if k not in _hidden}
