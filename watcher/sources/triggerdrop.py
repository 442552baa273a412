"""Dropping a trigger file into the spool: written under a dot-name, renamed into place.

The CLI does it when the service is down; the service does it for a ``trigger`` request
on its control socket. Either way the trigger then runs through the spool's journal,
exactly once.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from watcher.system.atomic import write_atomic


def drop(spool: Path, job: str, args: dict[str, Any]) -> str:
    """Write the trigger file atomically; returns its name. Raises ``OSError``/``ValueError``."""
    if not job or "/" in job or job.startswith(".") or "\0" in job or len(job) > 200:
        raise ValueError(f"job name {job[:80]!r}: not a plain name")
    name = f"{job}.{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.json"
    spool.mkdir(parents=True, exist_ok=True)
    staged = spool / f".{name}.tmp"
    try:
        write_atomic(staged, orjson.dumps({"job": job, "args": args}), 0o644)
        os.rename(staged, spool / name)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return name
