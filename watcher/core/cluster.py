"""The cluster's decisions, pure: what Redis says in, the holds this host mirrors out.

The cluster's state is two maps (manual holds by name, recurring windows by name) and the
id of the last stream entry seen. Every change is a stream entry (``op`` and its fields);
``apply`` folds one entry into the state, so a host that was away replays what it missed.
``wanted`` turns the state, the fleet's windows and the clock into the holds with
``reason = "cluster"`` the local maint file must carry; ``suppressed`` names the ones an
operator released on this host (by ``rm`` of the maint file), which stay released here
until the cluster sets them anew.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from watcher.core.maintenance import Hold, aware
from watcher.core.schedule import Window, next_occurrence, open_occurrences
from watcher.core.units import format_time_of_day

ZERO_ID = "0-0"
OPS = ("hold", "unhold", "window", "unwindow", "clear", "note")


@dataclass(frozen=True)
class ClusterHold:
    """A fleet-wide manual hold (``watcher enter --cluster``)."""

    name: str
    since: datetime
    until: datetime | None = None
    message: str | None = None
    by: str = ""  # the host_id that set it

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "name": self.name,
                "since": self.since.isoformat(),
                "until": self.until.isoformat() if self.until else None,
                "message": self.message,
                "by": self.by,
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> ClusterHold:
        raw = orjson.loads(text)
        until = raw.get("until")
        return cls(
            name=str(raw["name"]),
            since=aware(raw["since"]),
            until=aware(until) if until else None,
            message=raw.get("message"),
            by=str(raw.get("by", "")),
        )


@dataclass(frozen=True)
class ClusterWindow:
    """A fleet-wide daily window set with ``watcher enter --cluster --window``."""

    start: int  # minutes since local midnight
    end: int
    message: str | None = None

    @property
    def name(self) -> str:
        return f"{format_time_of_day(self.start)}-{format_time_of_day(self.end)}"

    def to_json(self) -> str:
        return orjson.dumps(
            {"start": self.start, "end": self.end, "message": self.message}
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> ClusterWindow:
        raw = orjson.loads(text)
        return cls(int(raw["start"]), int(raw["end"]), raw.get("message"))


@dataclass(frozen=True)
class ClusterState:
    """What this host knows of the cluster (cached locally, so it outlives Redis outages)."""

    holds: Mapping[str, ClusterHold] = field(default_factory=dict)
    windows: Mapping[str, ClusterWindow] = field(default_factory=dict)
    last_id: str = ZERO_ID
    suppressed: frozenset[str] = frozenset()  # keys released here by an operator

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "last_id": self.last_id,
                "holds": {k: orjson.loads(v.to_json()) for k, v in self.holds.items()},
                "windows": {k: orjson.loads(v.to_json()) for k, v in self.windows.items()},
                "suppressed": sorted(self.suppressed),
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes) -> ClusterState:
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("cluster cache is not a JSON object")
        return cls(
            holds={
                k: ClusterHold.from_json(orjson.dumps(v).decode())
                for k, v in raw.get("holds", {}).items()
            },
            windows={
                k: ClusterWindow.from_json(orjson.dumps(v).decode())
                for k, v in raw.get("windows", {}).items()
            },
            last_id=str(raw.get("last_id", ZERO_ID)),
            suppressed=frozenset(str(s) for s in raw.get("suppressed", [])),
        )


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``"<ms>-<seq>"`` as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def newer(a: str, b: str) -> bool:
    """Stream id ``a`` comes after ``b``."""
    return parse_id(a) > parse_id(b)


def from_maps(
    holds: Mapping[str, str], windows: Mapping[str, str], last_id: str, suppressed: frozenset[str]
) -> ClusterState:
    """The state a snapshot of Redis's hashes describes (undecodable entries are skipped)."""
    return ClusterState(
        holds=_decoded(holds, ClusterHold.from_json),
        windows=_decoded(windows, ClusterWindow.from_json),
        last_id=last_id,
        suppressed=suppressed,
    )


def _decoded(raw: Mapping[str, str], decode: Any) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        try:
            out[key] = decode(value)
        except (ValueError, KeyError, TypeError):
            continue  # written by something else; never fatal
    return out


def apply(state: ClusterState, entry_id: str, fields: Mapping[str, str]) -> ClusterState:
    """The state after one stream entry. Unknown or malformed entries only move the id."""
    op = fields.get("op")
    name = fields.get("name", "")
    value = fields.get("value", "")
    state = replace(state, last_id=entry_id)
    try:
        if op == "hold":
            return replace(state, holds={**state.holds, name: ClusterHold.from_json(value)})
        if op == "unhold":
            return replace(state, holds={k: v for k, v in state.holds.items() if k != name})
        if op == "window":
            window = ClusterWindow.from_json(value)
            return replace(state, windows={**state.windows, window.name: window})
        if op == "unwindow":
            return replace(state, windows={k: v for k, v in state.windows.items() if k != name})
        if op == "clear":
            return replace(state, holds={}, windows={})
    except (ValueError, KeyError, TypeError):
        pass
    return state


def fleet_windows(config_windows: Iterable[Window], state: ClusterState) -> list[Window]:
    """The configured ``[[cluster.windows]]`` and the ones set with ``enter --cluster``."""
    stored = [
        Window(f"cli {w.name}", w.start, w.end, message=w.message) for w in state.windows.values()
    ]
    return [*config_windows, *stored]


def hold_key(hold: Hold) -> str:
    """The identity of one mirrored hold: a new ``enter`` (new ``since``) is a new hold."""
    return f"{hold.name}@{hold.since.isoformat()}"


def candidates(
    state: ClusterState, windows: Sequence[Window], tz: ZoneInfo, now: datetime
) -> list[Hold]:
    """Every cluster hold that counts at ``now``, suppressed or not."""
    holds = [
        Hold("cluster", h.name, since=h.since, until=h.until, message=h.message)
        for h in state.holds.values()
    ]
    holds += [
        Hold("cluster", f"window {o.name}", since=o.start, until=o.end, message=o.message)
        for o in open_occurrences(windows, tz, now)
    ]
    return [h for h in holds if h.active(now)]


def wanted(
    state: ClusterState, windows: Sequence[Window], tz: ZoneInfo, now: datetime
) -> list[Hold]:
    """The cluster holds this host must mirror now: those counting, less the suppressed."""
    return [h for h in candidates(state, windows, tz, now) if hold_key(h) not in state.suppressed]


@dataclass(frozen=True)
class MirrorPlan:
    add: tuple[Hold, ...]
    release: tuple[str, ...]  # names of mirrored holds to release


def plan_mirror(mirrored: Iterable[Hold], want: Iterable[Hold]) -> MirrorPlan:
    """What to change so the mirrored holds (reason ``cluster``) become ``want``."""
    have = {h.name: h for h in mirrored if h.reason == "cluster"}
    target = {h.name: h for h in want}
    add = tuple(
        h
        for name, h in target.items()
        if name not in have
        or (have[name].since, have[name].until, have[name].message) != (h.since, h.until, h.message)
    )
    release = tuple(name for name in have if name not in target)
    return MirrorPlan(add, release)


def pruned(
    state: ClusterState, windows: Sequence[Window], tz: ZoneInfo, now: datetime
) -> ClusterState:
    """Forget suppressions of holds that no longer count (they cannot come back)."""
    live = {hold_key(h) for h in candidates(state, windows, tz, now)}
    return replace(state, suppressed=state.suppressed & live)


def next_opening(windows: Sequence[Window], tz: ZoneInfo, now: datetime) -> datetime | None:
    """When the next fleet window opens (closing is each hold's own ``until``)."""
    starts = [next_occurrence(w, tz, now).start for w in windows]
    return min(starts) if starts else None


def backoff(attempt: int, cap: float, first: float = 0.1) -> float:
    """Seconds before reconnection attempt ``attempt`` (0, 1, …): doubling, capped."""
    return float(min(cap, first * 2.0 ** min(attempt, 30)))
