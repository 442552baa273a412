"""Summaries of repeated measurements: medians, percentiles, ratios, and their rendering."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0–100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Latency:
    """Percentiles of a set of latencies in milliseconds, and how many trials found nothing."""

    p50: float
    p95: float
    p99: float
    worst: float
    trials: int
    misses: int

    @classmethod
    def of(cls, samples: Sequence[float | None]) -> Latency:
        """Summarise samples where ``None`` is a miss (nothing seen within the timeout)."""
        seen = [s for s in samples if s is not None]
        return cls(
            p50=percentile(seen, 50),
            p95=percentile(seen, 95),
            p99=percentile(seen, 99),
            worst=max(seen, default=math.nan),
            trials=len(samples),
            misses=len(samples) - len(seen),
        )

    def render(self, *, misses: bool = False) -> str:
        """``p50 0.71 / p95 1.20 / p99 2.03 ms`` (plus the miss count when asked)."""
        text = (
            f"p50 {_ms(self.p50)} / p95 {_ms(self.p95)} / p99 {_ms(self.p99)} ms (n={self.trials})"
        )
        return f"{text}, misses {self.misses}/{self.trials}" if misses else text


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else math.nan


def ratio(ours: float, reference: float) -> float:
    """``ours / reference``; NaN when the reference is zero or missing."""
    if reference == 0 or math.isnan(reference) or math.isnan(ours):
        return math.nan
    return ours / reference


def render_ratio(value: float, what: str) -> str:
    """``2.31× (p99)``; a dash when there is nothing to divide by."""
    if math.isnan(value):
        return "—"
    return f"{value:.2f}× ({what})"


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / seconds if seconds > 0 else math.nan


def render_rate(per_second: float, unit: str) -> str:
    """``123,456 events/s``."""
    return f"{per_second:,.0f} {unit}/s"
