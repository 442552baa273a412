"""The cluster's pure decisions (tables, no I/O) and the mirror with Redis away (real files,
an injected clock): windows from the local cache open on time; an operator's rm is honoured."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from watcher.core.cluster import (
    ClusterHold,
    ClusterState,
    ClusterWindow,
    apply,
    backoff,
    hold_key,
    newer,
    plan_mirror,
    pruned,
    wanted,
)
from watcher.core.maintenance import Hold
from watcher.core.schedule import Window
from watcher.events.bus import EventBus
from watcher.registry import build_config
from watcher.service.cluster import ClusterMirror
from watcher.service.controller import Controller
from watcher.testing import capture_events

UTC_TZ = ZoneInfo("UTC")
T0 = datetime(2026, 11, 26, 1, 50, tzinfo=UTC)
HOLD = ClusterHold("cli", since=T0, message="fleet", by="h1")


def test_apply_folds_every_op() -> None:
    """Each stream op changes the state as named and moves the last id; unknown ops only move it."""
    s = ClusterState()
    s = apply(s, "1-0", {"op": "hold", "name": "cli", "value": HOLD.to_json()})
    assert s.holds == {"cli": HOLD} and s.last_id == "1-0"
    window = ClusterWindow(120, 180, "w")
    s = apply(s, "2-0", {"op": "window", "name": window.name, "value": window.to_json()})
    assert s.windows == {"02:00-03:00": window}
    s = apply(s, "3-0", {"op": "note", "name": "release_local"})
    assert (s.last_id, len(s.holds), len(s.windows)) == ("3-0", 1, 1)
    s = apply(s, "4-0", {"op": "hold", "name": "cli", "value": "not json"})
    assert s.holds == {"cli": HOLD} and s.last_id == "4-0"
    s = apply(s, "5-0", {"op": "unhold", "name": "cli"})
    assert s.holds == {}
    s = apply(s, "6-0", {"op": "clear"})
    assert s.windows == {} and s.last_id == "6-0"


def test_state_round_trips_through_the_cache() -> None:
    """The cached state reads back equal, suppressions included."""
    s = ClusterState(
        {"cli": HOLD}, {"02:00-03:00": ClusterWindow(120, 180)}, "9-1", frozenset({"x"})
    )
    assert ClusterState.from_json(s.to_json()) == s


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("2-0", "1-9", True), ("10-0", "9-0", True), ("1-2", "1-10", False), ("0-0", "0-0", False)],
)
def test_stream_ids_compare_numerically(a: str, b: str, expected: bool) -> None:
    """Stream ids compare as (ms, seq) numbers, not as text."""
    assert newer(a, b) is expected


@pytest.mark.parametrize(
    ("now", "names"),
    [
        (T0, ["cli"]),
        (T0 + timedelta(minutes=10), ["cli", "window fleet"]),
        (T0 + timedelta(hours=2), ["window cli 03:00-04:00"]),
    ],
    ids=["hold only", "configured window open", "hold expired, stored window open"],
)
def test_wanted_holds(now: datetime, names: list[str]) -> None:
    """The holds mirrored: active manual holds, then every open fleet window."""
    hold = ClusterHold("cli", since=T0, until=T0 + timedelta(hours=1))
    state = ClusterState({"cli": hold}, {"03:00-04:00": ClusterWindow(180, 240)})
    windows = [Window("fleet", 120, 150), Window("cli 03:00-04:00", 180, 240)]
    assert [h.name for h in wanted(state, windows, UTC_TZ, now)] == names


def test_suppressed_holds_are_not_wanted_until_set_anew() -> None:
    """A hold released here by an operator stays released; a new ``enter`` (new since) is not."""
    state = ClusterState({"cli": HOLD})
    (hold,) = wanted(state, [], UTC_TZ, T0)
    state = ClusterState(state.holds, suppressed=frozenset({hold_key(hold)}))
    assert wanted(state, [], UTC_TZ, T0) == []
    renewed = ClusterHold("cli", since=T0 + timedelta(minutes=1))
    state = pruned(ClusterState({"cli": renewed}, suppressed=state.suppressed), [], UTC_TZ, T0)
    assert state.suppressed == frozenset()
    assert [h.name for h in wanted(state, [], UTC_TZ, T0)] == ["cli"]


def test_plan_mirror_adds_changed_and_releases_gone() -> None:
    """Missing or changed holds are (re)added, vanished ones released, local ones untouched."""
    local = Hold("manual", "cli", since=T0)
    kept = Hold("cluster", "a", since=T0)
    gone = Hold("cluster", "b", since=T0)
    changed = Hold("cluster", "c", since=T0)
    new_c = Hold("cluster", "c", since=T0, message="new")
    fresh = Hold("cluster", "d", since=T0)
    plan = plan_mirror([local, kept, gone, changed], [kept, new_c, fresh])
    assert plan.add == (new_c, fresh) and plan.release == ("b",)


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(0, 0.1), (1, 0.2), (3, 0.8), (6, 5.0), (99, 5.0)]
)
def test_backoff_doubles_up_to_the_cap(attempt: int, seconds: float) -> None:
    """Reconnection waits double from 0.1 s and never exceed ``backoff_max``."""
    assert backoff(attempt, 5.0) == pytest.approx(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _mirror(tmp_path: Path, clock: Clock) -> tuple[ClusterMirror, Controller, EventBus]:
    data = tmp_path / "data"
    (data / "mw" / "data").mkdir(parents=True)
    raw = {
        "timezone": "UTC",
        "cluster": {
            "url": f"unix://{tmp_path}/no-redis.sock",
            "host_id": "h1",
            "windows": [{"name": "fleet", "start": "02:00", "end": "02:30"}],
        },
    }
    config = build_config(raw, source=None, data_dir=data)
    bus = EventBus()
    ctl = Controller(config.paths, bus, default_message="m", clock=clock)
    ctl.load()
    mirror = ClusterMirror(
        lambda: config, bus, ctl, clock=clock, disk_level=lambda: "ok", running=set
    )
    return mirror, ctl, bus


def test_windows_open_from_the_cache_while_redis_is_away(tmp_path: Path) -> None:
    """With no Redis at all, configured and cached fleet windows open and close on time."""
    clock = Clock()
    mirror, ctl, _bus = _mirror(tmp_path, clock)
    cached = ClusterState(windows={"02:40-03:00": ClusterWindow(160, 180, "cached")})
    mirror.cache.parent.mkdir(parents=True, exist_ok=True)
    mirror.cache.write_bytes(cached.to_json())
    mirror.load()
    mirror.reconcile()
    assert not ctl.paths.maint_file.exists()
    clock.now = T0 + timedelta(minutes=10)  # 02:00
    mirror.reconcile()
    assert [h.name for h in ctl.state.holds] == ["window fleet"]
    assert ctl.paths.maint_file.exists()
    clock.now = T0 + timedelta(minutes=50)  # 02:40: fleet closed, the cached one open
    ctl.expire()
    mirror.reconcile()
    assert [h.name for h in ctl.state.holds] == ["window cli 02:40-03:00"]
    content = json.loads(ctl.paths.maint_file.read_text())
    assert content["message"] == "cached"


def test_operator_rm_releases_the_mirror_here_only(tmp_path: Path) -> None:
    """The maint file removed: ``cluster.release_local``, and the mirror stays released."""
    clock = Clock()
    mirror, ctl, bus = _mirror(tmp_path, clock)
    mirror.state = ClusterState({"cli": HOLD})
    mirror.reconcile()
    assert ctl.paths.maint_file.exists()
    with capture_events(bus) as events:
        ctl.paths.maint_file.unlink()
        ctl.observe()
        mirror.reconcile()
    actions = [e.action for e in events]
    assert "cluster.release_local" in actions and "maintenance.released_by_operator" in actions
    assert not ctl.paths.maint_file.exists() and ctl.state.holds == ()
    assert ClusterState.from_json(mirror.cache.read_bytes()).suppressed == {
        hold_key(Hold("cluster", "cli", since=T0))
    }
