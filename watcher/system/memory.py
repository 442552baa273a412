"""Giving memory back after a burst.

CPython keeps freed objects' memory in its own arenas and glibc keeps freed heap in the
process, so after a burst of 2000 triggers the service would stay ~12 MB above its idle
size for good. Once the burst is over (the service's tick sees no job running or queued
after at least ``AFTER_JOBS`` jobs, and the spool holds none back), ``give_back`` collects
garbage and asks glibc to return free heap to the system (``malloc_trim``; skipped where
there is no glibc); the history writer ``trim``s after releasing its SQLite cache.

What this cannot give back (measured, issue 15): pymalloc arenas (1 MiB each) that a burst's
peak made and that one surviving object each keeps — 2–3 MiB once the spool's backlog
bounds that peak (not growing with more bursts), ~7 MiB before it did.
"""

from __future__ import annotations

import ctypes
import gc

AFTER_JOBS = 100


def trim() -> None:
    """Return free heap to the operating system (glibc's ``malloc_trim``; a no-op elsewhere).

    Safe from any thread: the history writer trims after releasing its SQLite cache."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: glibc's, if any
    except (OSError, AttributeError):  # not glibc
        return
    malloc_trim(0)


def give_back() -> None:
    """Collect garbage and return free heap to the operating system."""
    gc.collect()
    trim()
