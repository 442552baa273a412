"""The cluster mirror: Redis's fleet-wide holds become local holds with ``reason = "cluster"``.

One task follows the cluster's stream (``XREAD BLOCK``: a change arrives as soon as it is
appended, with no polling loop) and folds each entry into the cached ``ClusterState``
(``<state>/cluster.json``); after every change, ``reconcile`` has the controller's cluster
holds match ``watcher.core.cluster.wanted``. Windows (``[[cluster.windows]]`` and those set
with ``enter --cluster --window``) are opened by a timer from the cache, so they open on time
while Redis is away. Redis gone: the last state stays, ``cluster.unreachable`` is said once,
reconnection backs off up to ``backoff_max``; back, the hashes are read in one ``MULTI`` with
the stream entries missed since the last id (``cluster.reconnected`` says how many).

An operator's ``rm`` of the maint file releases every hold here, the mirrored ones too; those
are remembered as suppressed (``cluster.release_local``) so this host stays out of
maintenance until the cluster sets a hold anew — the other hosts keep theirs.
A heartbeat (a key with a TTL of three beats) tells the fleet view this host's state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import orjson
from anyio.abc import TaskStatus

from watcher import __version__
from watcher.config import Config
from watcher.core.cluster import (
    ClusterState,
    apply,
    backoff,
    candidates,
    fleet_windows,
    from_maps,
    hold_key,
    newer,
    next_opening,
    plan_mirror,
    pruned,
    wanted,
)
from watcher.core.schedule import Window
from watcher.events.bus import EventBus
from watcher.events.record import Event
from watcher.service.controller import Clock, Controller
from watcher.sources.cluster import ClusterStore, ClusterUnreachable, Snapshot
from watcher.system.atomic import write_atomic

MAX_SLEEP = 60.0
BEAT_ON = ("maintenance.", "disk.", "job.")  # events that change the fleet view's row


class ClusterMirror:
    """Mirrors one fleet's holds into this host's controller."""

    def __init__(
        self,
        config: Callable[[], Config],
        bus: EventBus,
        controller: Controller,
        *,
        clock: Clock,
        disk_level: Callable[[], str],
        running: Callable[[], set[str]],
    ) -> None:
        self.config = config
        self.bus = bus
        self.controller = controller
        self.clock = clock
        self.disk_level = disk_level
        self.running = running
        cluster = config().cluster
        self.host = cluster.host_id
        self.store = ClusterStore(cluster)
        self.cache = config().paths.state / "cluster.json"
        self.state = ClusterState()
        self.connected = False
        self._wake = anyio.Event()
        self._beat = anyio.Event()
        self._notes: list[dict[str, str]] = []
        controller.on_release.append(self._released_locally)
        bus.taps.append(self._tap)

    # --- the decision ------------------------------------------------------------------

    def windows(self) -> list[Window]:
        cfg = self.config()
        configured = [
            Window(w.name, w.start, w.end, w.days, w.message) for w in cfg.cluster.windows
        ]
        return fleet_windows(configured, self.state)

    def reconcile(self) -> None:
        """Have the controller's cluster holds match what the cluster wants now."""
        tz = self.config().tz
        now = self.clock()
        windows = self.windows()
        self.state = pruned(self.state, windows, tz, now)
        change = plan_mirror(self.controller.state.holds, wanted(self.state, windows, tz, now))
        for name in change.release:
            self.controller.release("cluster", name, why="cluster")
        for hold in change.add:
            if hold_key(hold) not in self.state.suppressed:  # an rm observed meanwhile
                self.controller.add_hold(hold)

    def _released_locally(self) -> None:
        """The operator removed the maint file: this host's mirror stays released."""
        tz = self.config().tz
        now = self.clock()
        released = candidates(self.state, self.windows(), tz, now)
        keys = {hold_key(h) for h in released} - self.state.suppressed
        if not keys:
            return
        self.state = ClusterState(
            self.state.holds, self.state.windows, self.state.last_id, self.state.suppressed | keys
        )
        self._save()
        self.bus.emit(
            "cluster.release_local",
            "maint file removed by an operator: the cluster's holds are released on this host "
            "only; `watcher leave --cluster` releases them everywhere",
            level="warning",
            host=self.host,
            released=sorted(h.name for h in released if hold_key(h) in keys),
        )
        self._notes.append({"op": "note", "name": "release_local", "host": self.host})
        self._wake.set()

    def _tap(self, event: Event) -> None:
        if event.action.startswith(BEAT_ON):
            self._beat.set()

    # --- the cache ---------------------------------------------------------------------

    def load(self) -> None:
        try:
            self.state = ClusterState.from_json(self.cache.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.bus.emit(
                "cluster.unreachable",
                f"cluster cache {self.cache} unreadable ({exc}); waiting for Redis",
                level="warning",
            )

    def _save(self) -> None:
        try:
            write_atomic(self.cache, self.state.to_json(), durable=False)
        except OSError as exc:
            self.bus.emit("handler.failed", f"cluster cache: {exc}", level="error", reason=str(exc))

    # --- running -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.load()
        self.reconcile()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._follow, name="cluster.follow")
                tg.start_soon(self._timer, name="cluster.windows")
                tg.start_soon(self._heartbeat, name="cluster.heartbeat")
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self.store.aclose()

    async def _follow(self) -> None:
        attempt = 0
        outage_started: datetime | None = None
        first = True
        while True:
            try:
                snapshot = await self.store.snapshot(self.state.last_id)
                caught_up = self._adopt(snapshot)
                if outage_started is not None:
                    self.bus.emit(
                        "cluster.reconnected",
                        f"cluster {self.store.where} back: {caught_up} changes caught up",
                        caught_up=caught_up,
                        outage_ns=int((self.clock() - outage_started).total_seconds() * 1e9),
                        last_id=self.state.last_id,
                    )
                elif first:
                    self.bus.emit(
                        "cluster.connected",
                        f"cluster {self.store.where} connected as {self.host}",
                        host=self.host,
                        caught_up=caught_up,
                        last_id=self.state.last_id,
                    )
                first, attempt, outage_started = False, 0, None
                self.connected = True
                self._beat.set()
                while True:
                    await self._send_notes()
                    entries = await self.store.read(self.state.last_id)
                    if entries:
                        for entry_id, fields in entries:
                            self.state = apply(self.state, entry_id, fields)
                        self.reconcile()
                        self._save()
                        self._wake.set()
            except ClusterUnreachable as exc:
                self.connected = False
                if outage_started is None:
                    outage_started = self.clock()
                    self.bus.emit(
                        "cluster.unreachable",
                        f"{exc}; keeping the last known state, retrying",
                        level="warning",
                        reason=str(exc),
                    )
                first = False
                await anyio.sleep(backoff(attempt, self.config().cluster.backoff_max))
                attempt += 1

    def _adopt(self, snapshot: Snapshot) -> int:
        """Take a snapshot as the truth; how many stream entries it moved past."""
        if snapshot.newest is not None and newer(self.state.last_id, snapshot.newest):
            # Redis has less than this host saw: it lost data (restarted without
            # persistence). Keep the last known state rather than drop maintenance.
            self.bus.emit(
                "cluster.unreachable",
                f"cluster {self.store.where} is behind this host (stream at {snapshot.newest}, "
                f"seen {self.state.last_id}): it lost data; keeping the last known state",
                level="warning",
                reason="stream_behind",
            )
            self.state = ClusterState(
                self.state.holds, self.state.windows, snapshot.newest, self.state.suppressed
            )
            return 0
        last = snapshot.missed[-1][0] if snapshot.missed else self.state.last_id
        if snapshot.newest is None:
            last = self.state.last_id
        self.state = from_maps(snapshot.holds, snapshot.windows, last, self.state.suppressed)
        self.reconcile()
        self._save()
        self._wake.set()
        return len(snapshot.missed)

    async def _send_notes(self) -> None:
        """Tell the fleet what happened here (an operator's local release)."""
        while self._notes:
            note = self._notes[0]
            await self.store.change(note["op"], name=note["name"], host=note["host"])
            self._notes.pop(0)

    async def _timer(self) -> None:
        """Open fleet windows on time, from the cache (Redis need not be there)."""
        while True:
            self._wake = anyio.Event()
            self.reconcile()
            opening = next_opening(self.windows(), self.config().tz, self.clock())
            delay = MAX_SLEEP
            if opening is not None:
                delay = min(max((opening - self.clock()).total_seconds(), 0.0), MAX_SLEEP)
            with anyio.move_on_after(delay):
                await self._wake.wait()

    async def _heartbeat(self) -> None:
        """Publish this host's row of the fleet view every ``heartbeat``, and on changes."""
        while True:
            self._beat = anyio.Event()
            interval = self.config().cluster.heartbeat
            if self.connected:
                try:
                    await self.store.heartbeat(self.host, self.beat(), 3 * interval)
                except ClusterUnreachable:
                    pass  # the follower says so, once
            with anyio.move_on_after(interval):
                await self._beat.wait()

    def beat(self) -> str:
        """This host's heartbeat document."""
        snapshot = self.controller.snapshot().get("maintenance", {})
        doc: dict[str, Any] = {
            "host": self.host,
            "at": datetime.now(UTC).isoformat(),
            "pid": os.getpid(),
            "version": __version__,
            "data_dir": str(self.config().data_dir),
            "maintenance": {
                "active": bool(snapshot.get("active")),
                "holds": [f"{h['reason']} {h['name']}" for h in snapshot.get("holds", [])],
                "message": snapshot.get("message"),
            },
            "disk": self.disk_level(),
            "jobs": sorted(self.running()),
            "last_id": self.state.last_id,
            "suppressed": len(self.state.suppressed),
        }
        return orjson.dumps(doc).decode()
