"""Maintenance intervals over a span of time, from the ``maintenance.*`` event stream."""

from __future__ import annotations

from collections.abc import Iterable


def intervals(
    changes: Iterable[tuple[float, bool]], start: float, end: float, active_now: bool
) -> list[tuple[float, float]]:
    """The (from, to) spans in [start, end] spent in maintenance.

    ``changes`` are (time, active-after) pairs in time order, each a ``maintenance.*`` event's
    time and the maintenance state it reports. Before the first change the state is the
    opposite of that change's (or, with no changes, ``active_now`` throughout).
    """
    points = [(t, a) for t, a in changes if t <= end]
    state = (not points[0][1]) if points else active_now
    spans: list[tuple[float, float]] = []
    opened = start if state else None
    for t, active in points:
        t = max(t, start)
        if active and opened is None:
            opened = t
        elif not active and opened is not None:
            if t > opened:
                spans.append((opened, t))
            opened = None
    if opened is not None and end > opened:
        spans.append((opened, end))
    return spans
