"""The service: one linear lifecycle — start up, run, shut down — in an anyio task group.

Start: take the instance lock, start the handlers, load the state and reconcile it
with the maint file (scan), arm the watches, scan again now that they are live, then
``service.ready`` (and ``READY=1`` to systemd). Run: watches, ticks, deadlines and
the control socket feed the controller; signals are only recorded by the signal task.
Stop (SIGTERM/SIGINT): ``service.stopping``, stop taking work, ``service.stopped``,
flush the handlers within ``shutdown_timeout``, exit 0. A second SIGINT exits at once.
SIGHUP reopens log files and reloads the config (validated first; on error the old
config stays and ``config.rejected`` says why).
"""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from watcher import __version__
from watcher.config import Config, ConfigError, Problem
from watcher.events.bus import EventBus, Subscription
from watcher.events.record import Origin
from watcher.handlers import build_handler
from watcher.registry import load_config
from watcher.service.controller import Clock, Controller, utc_now
from watcher.service.diskguard import DiskGuard
from watcher.service.history import HistoryWriter
from watcher.service.metrics import Metrics
from watcher.service.observe import ServiceView
from watcher.service.operations import leave
from watcher.service.requests import Requests
from watcher.service.runner import JobRunner
from watcher.service.scheduler import Scheduler
from watcher.service.spool import Spool
from watcher.sources import control, treewatch
from watcher.sources.watching import FlatWatcher
from watcher.system import memory, secretenv
from watcher.system.lock import InstanceLock
from watcher.system.sdnotify import Notifier
from watcher.web.broker import Broker

if TYPE_CHECKING:
    from watcher.service.cluster import ClusterMirror


class Service:
    """One running watcher for one data directory."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = utc_now,
        data_dir_override: Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        hide_secrets(config)
        self.data_dir_override = data_dir_override
        self.origin = Origin(data_dir=str(config.data_dir))
        self.controller: Controller
        self.bus = EventBus(context=lambda: self.controller.snapshot())
        self.controller = Controller(
            config.paths,
            self.bus,
            default_message=config.maintenance.message,
            clock=clock,
            tz=config.tz,
        )
        self.lock = InstanceLock(config.paths.state / "lock")
        self.notifier = notifier or Notifier()
        self.runner = JobRunner(config, self.bus, self.controller, clock)
        self.scheduler = Scheduler(
            lambda: self.config, self.bus, self.controller, self.runner, clock
        )
        self.disk = DiskGuard(lambda: self.config, self.bus, self.controller)
        self._observers(config)
        mode = config.watch.mode
        if mode == "auto":
            mode = "poll" if self.disk.network else "native"
        self.watcher = FlatWatcher(self.bus, mode=mode)
        self._maint_name = config.paths.maint_file.name  # paths never change on reload
        self.watcher.add(config.paths.maint_file.parent, self._maint_dir_changed)
        self.spool = Spool(lambda: self.config, self.bus, self.controller, self.runner, clock)
        self.watcher.add(config.paths.spool, self._spool_changed)
        self.runner.on_room.append(self._runner_has_room)
        self.controller.on_release.append(self.scheduler.poke)
        self.controller.on_no_space.append(self._no_space)
        self.bus.on_no_space.append(self._no_space)
        self.requests = Requests(
            lambda: self.config,
            self.controller,
            self.scheduler,
            self.runner,
            self._deadline_changed_set,
        )
        self.cluster: ClusterMirror | None = None
        if config.cluster.enabled:
            from watcher.service.cluster import ClusterMirror  # redis only when configured

            self.cluster = ClusterMirror(
                lambda: self.config,
                self.bus,
                self.controller,
                clock=clock,
                disk_level=lambda: str(self.disk.state.level),
                running=lambda: self.runner.running_names,
            )
        self._stop = anyio.Event()
        self._trimmed_at = 0  # runner.settled at the last give_back
        self._deadline_changed = anyio.Event()
        self._stopping = False

    def _observers(self, config: Config) -> None:
        """Metrics, history and the SSE broker: taps on the bus, never able to stall it."""
        self.metrics = Metrics(
            self.controller.snapshot, lambda: (self.disk.state.level, self.disk.reading)
        )
        self.bus.taps.append(self.metrics)
        self.history: HistoryWriter | None = None
        if config.history.enabled:
            self.history = HistoryWriter(
                config.paths.state / "history.db",
                lambda: self.config.history,
                self.origin,
                writable=lambda: self.disk.state.level == "ok",  # stop below the warn level
            )
            self.bus.taps.append(self.history)
        self.broker = Broker()
        self.bus.taps.append(self.broker)
        self.http_port: int | None = None
        self.http_address: str | None = None  # "HOST:PORT" bound (reported in service.ready)

    async def _listen(self, tg: anyio.abc.TaskGroup) -> None:
        """The HTTP listener (``[http] listen``): metrics, status page, SSE."""
        http = self.config.http
        if not http.listen:
            return
        host, _, port = http.listen.rpartition(":")
        token = None
        if http.release_token_file:
            token = _read_token(Path(http.release_token_file))
        view = ServiceView(
            lambda: self.config,
            self.controller,
            self.disk,
            self.metrics,
            self.config.paths.state / "history.db",
        )
        from watcher.web.app import build_app  # aiohttp only when listening
        from watcher.web.app import serve as serve_http

        app = build_app(view, self.broker, release=self._release if token else None, token=token)
        self.http_port = await tg.start(serve_http, app, host.strip("[]"), int(port))
        self.http_address = f"{host}:{self.http_port}"

    async def _release(self) -> str:
        """The status page's "release manual maintenance" action (authenticated there)."""
        message = leave(self.controller, running=self.runner.running_names)
        self.controller.flush()
        return message

    def _observe_disk(self) -> None:
        """After a disk sample: record it in the history, refresh the metrics textfile."""
        reading = self.disk.reading
        if self.history is not None and reading is not None:
            self.history.sample(reading.free, reading.total)
        if self.config.http.textfile:
            try:
                self.metrics.write_textfile(Path(self.config.http.textfile))
            except OSError as exc:
                self.bus.emit(
                    "handler.failed",
                    f"metrics textfile: {exc}",
                    level="error",
                    reason=str(exc),
                    handler={"name": "metrics.textfile", "failures": 1},
                )

    # --- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code. Raises ``AlreadyRunning``."""
        self.lock.acquire(patience=1.0)
        try:
            self._prepare_directories()
            if self.history is not None:
                self.history.start()
            for subscription in self._subscriptions(self.config):
                self.bus.subscribe(subscription)
            async with anyio.create_task_group() as tg:
                await tg.start(self.bus.run)
                await self._startup(tg)
                await self._stop.wait()
                await self._shutdown()
                tg.cancel_scope.cancel()
        finally:
            await self.bus.aclose()
            if self.history is not None:
                await self.history.aclose()
            with contextlib.suppress(OSError):
                os.unlink(control.socket_path(self.config.paths.state))
            self.lock.release()
        return 0

    def stop(self) -> None:
        """Ask the service to shut down (what SIGTERM does)."""
        self._stop.set()

    def _prepare_directories(self) -> None:
        paths = self.config.paths
        for directory in (paths.state, paths.spool):
            directory.mkdir(parents=True, exist_ok=True)

    def _subscriptions(self, config: Config) -> list[Subscription]:
        """Every configured handler, built; a handler that cannot be built is a config error
        naming it (whatever its constructor raised: plugins are not ours to trust)."""
        built = []
        for i, handler_config in enumerate(config.handlers):
            try:
                built.append(self._subscription(i, handler_config))
            except Exception as exc:
                source = str(config.source or "(no config file)")
                reason = (
                    f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
                )
                raise ConfigError([Problem(source, f"handlers[{i}]", reason)]) from None
        return built

    def _subscription(self, index: int, handler_config: Any) -> Subscription:
        return Subscription(
            f"{index}:{handler_config.type}",
            build_handler(handler_config, self.origin),
            events=handler_config.events,
            min_level=handler_config.min_level,
            timeout=handler_config.timeout,
            queue_size=handler_config.queue_size,
        )

    async def _startup(self, tg: anyio.abc.TaskGroup) -> None:
        self.bus.emit(
            "service.started",
            f"watcher {__version__} starting for {self.config.data_dir}",
            config=str(self.config.source) if self.config.source else None,
            timezone=self.config.timezone,
            inotify=inotify_limits(),
        )
        warning = self.controller.load()
        if warning:
            self.bus.emit("service.started", warning, level="warning")
        self.spool.prepare()
        self.controller.observe()  # settle the file against the state before anything changes
        self.spool.recover()
        self.spool.release_stale_job_holds()
        self._scan()
        await tg.start(self.watcher.run)
        self._scan()  # again, now that the watch is live: nothing slips in between
        self.disk.tick() if not self.disk.network else await self.disk.sample_async()
        await self._serve_control(tg)
        await tg.start(self.runner.run)
        await tg.start(self.scheduler.run)
        if self.cluster is not None:
            await tg.start(self.cluster.run)  # from the cache; Redis may come later
        await tg.start(self._signals)  # installed before service.ready (SIGHUP would kill)
        tg.start_soon(self._deadlines, name="deadlines")
        tg.start_soon(self._ticker, name="ticker")
        if treewatch.wanted(self.bus):
            await tg.start(treewatch.watch_tree, self.config, self.bus)
        tg.start_soon(self.notifier.watchdog, name="watchdog")
        await tg.start(self._persist)
        await self._listen(tg)
        self._observe_disk()
        self.controller.prepare_reactions()
        self.bus.emit(
            "service.ready",
            "watcher ready",
            watching="poll" if self.watcher.polling else "inotify",
            **_listening(self.http_address),
        )
        active = "in maintenance" if self.controller.active else "not in maintenance"
        self.notifier.notify("READY=1", f"STATUS=ready, {active}")

    async def _serve_control(self, tg: anyio.abc.TaskGroup) -> None:
        """Bind the control socket and serve it; when it cannot be bound, say so and run on
        (the maint file, the spool and ``status`` still work; ``enter``/``leave`` then fail
        with a message naming the socket)."""
        path = control.socket_path(self.config.paths.state)
        try:
            sock = control.bind(path, self.config.control.group)
        except OSError as exc:
            self.bus.emit(
                "control.unavailable",
                f"control socket {path} cannot be made: {exc.strerror}",
                level="error",
                path=str(path),
                error=str(exc),
            )
            return
        await tg.start(control.serve, sock, self._access, self.requests.handle, self._refused)

    def _access(self) -> control.Access:
        c = self.config.control
        return control.Access(os.getuid(), c.allowed_uids, c.allowed_gids)

    def _refused(self, peer: control.Peer) -> None:
        self.bus.emit(
            "control.refused",
            f"control request from uid {peer.uid} refused",
            level="warning",
            uid=peer.uid,
            gid=peer.gid,
            pid=peer.pid,
        )

    def _deadline_changed_set(self) -> None:
        self._deadline_changed.set()

    async def _persist(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush what an observed operator action left to write, once handlers had the events.

        An operator's ``touch`` or ``rm`` is already on disk; watcher's own follow-up (the
        state, the maint file rewritten as JSON) takes several fsyncs. Deciding and emitting
        take well under a millisecond, so the watch observes with ``defer`` and this task —
        after one checkpoint, which lets the woken handler tasks run — does the writes, then
        prepares the answer to the operator's next action (``Controller.prepare_reactions``).
        """
        self.controller.deferred_saves = True
        task_status.started()
        try:
            while True:
                await self.controller.dirty.wait()
                self.controller.dirty = anyio.Event()
                await anyio.lowlevel.checkpoint()
                self.controller.flush(create=False)
                self.controller.prepare_reactions()  # for the operator's next touch or rm
        finally:
            self.controller.deferred_saves = False
            self.controller.flush()

    async def _shutdown(self) -> None:
        self._stopping = True
        self.requests.stopping = True
        self.notifier.notify("STOPPING=1", "STATUS=stopping")
        self.bus.emit("service.stopping", "watcher stopping")
        await self.runner.shutdown(self.config.service.shutdown_timeout)
        self.bus.emit("service.stopped", "watcher stopped")
        await self.bus.drain(self.config.service.shutdown_timeout)

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reopen()
                    self.reload()
                elif self._stop.is_set() and signum == signal.SIGINT:
                    os._exit(130)  # a second Ctrl-C: the operator wants out now
                else:
                    self._stop.set()

    def _reopen(self) -> None:
        """Reopen log files (rotation); a handler that cannot is reported, not fatal."""
        for problem in self.bus.reopen():
            self.bus.emit(
                "handler.failed", f"reopening failed: {problem}", level="error", reason=problem
            )

    # --- reading the truth -------------------------------------------------------------

    def _scan(self) -> str:
        verdict = self.controller.observe()
        self.spool.scan(force=True)
        self._deadline_changed.set()
        return verdict

    async def _ticker(self) -> None:
        """One periodic wake-up for everything that polls: re-read the truth, sample the disk.

        Sharing it keeps idle wake-ups to about one a second (the idle CPU budget is ~0.1 %):
        far from every disk level the disk guard asks for its next sample a whole interval
        later, and that sample is put on a watch tick. Only near a level (or to confirm a
        pending one) does it ask sooner, and only then does the ticker wake for it alone.
        """
        period = min(self.config.watch.poll_interval, 1.0)
        now = anyio.current_time()
        next_watch = now + period
        next_disk = now + self.disk.delay
        while True:
            await anyio.sleep(max(0.0, min(next_watch, next_disk) - anyio.current_time()))
            now = anyio.current_time()
            if now >= next_watch:
                period = min(self.config.watch.poll_interval, 1.0)
                next_watch = now + period
                self.watcher.rearm()
                self._tick()
            if now >= next_disk:
                if self.disk.network:
                    await self.disk.sample_async()
                else:
                    self.disk.tick()
                self._observe_disk()
                next_disk = _on_tick(anyio.current_time() + self.disk.delay, next_watch, period)

    def _no_space(self) -> None:
        """One of watcher's own writes failed for lack of space: look at the disk now."""
        if not self.disk.network:
            self.disk.tick()

    def _tick(self) -> None:
        verdict = self.controller.observe()
        if verdict != "unchanged":
            self.bus.emit(
                "watch.rescanned",
                f"the periodic re-read found a change no event reported ({verdict})",
                level="warning" if not self.watcher.polling else "info",
                change=verdict,
            )
        if not self._stopping:
            self.spool.scan()
        self.controller.prepare_reactions()
        burst_over = self.runner.idle and not self.spool.busy
        if burst_over and self.runner.settled - self._trimmed_at >= memory.AFTER_JOBS:
            self._trimmed_at = self.runner.settled
            memory.give_back()  # a burst is over: back to the idle size

    def _maint_dir_changed(self, name: str | None, _complete: bool) -> None:
        if name is None or name == self._maint_name:
            self.controller.observe(defer=True)
            self._deadline_changed.set()

    def _spool_changed(self, name: str | None, complete: bool) -> None:
        if not self._stopping:
            self.spool.changed(name, complete)

    def _runner_has_room(self) -> None:
        if not self._stopping:
            self.spool.refill()

    async def _deadlines(self) -> None:
        """Expire holds on time (``enter --for``), re-planning whenever the holds change."""
        while True:
            self._deadline_changed = anyio.Event()
            deadline = self.controller.next_deadline()
            delay = 60.0 if deadline is None else _seconds_until(deadline, self.controller.clock())
            with anyio.move_on_after(min(max(delay, 0.0), 60.0)):
                await self._deadline_changed.wait()
            self.controller.expire()

    # --- reload ------------------------------------------------------------------------

    def reload(self) -> bool:
        """Validate and apply the config file again; on error ``config.rejected``, ``False``."""
        try:
            new = load_config(self.config.source, self.data_dir_override)
            if new.paths != self.config.paths:
                raise ConfigError([Problem(str(new.source), "paths", "cannot change on reload")])
            subscriptions = self._subscriptions(new)
        except ConfigError as exc:
            self.bus.emit(
                "config.rejected",
                "new configuration rejected; the old one stays",
                level="error",
                problems=[str(p) for p in exc.problems],
            )
            return False
        # Everything is built and valid: only now does anything switch over.
        self.config = new
        hide_secrets(new)
        self.runner.config = new
        self.controller.default_message = new.maintenance.message
        self.controller.tz = new.tz
        self.scheduler.poke()
        self.bus.replace_subscriptions(subscriptions)
        self.bus.emit("config.reloaded", "configuration reloaded", config=str(new.source))
        return True


def _on_tick(due: float, next_watch: float, period: float) -> float:
    """``due``, moved back onto the last watch tick at or before it when one is that late:
    a slow disk sample shares the tick's wake-up instead of adding its own."""
    if due < next_watch:
        return due
    return next_watch + ((due - next_watch) // period) * period


def _seconds_until(moment: datetime, now: datetime) -> float:
    return (moment - now).total_seconds()


def inotify_limits() -> dict[str, int]:
    limits = {}
    for name in ("max_user_watches", "max_user_instances", "max_queued_events"):
        try:
            limits[name] = int(Path(f"/proc/sys/fs/inotify/{name}").read_text())
        except (OSError, ValueError):
            continue
    return limits


def _read_token(path: Path) -> str | None:
    """The release action's token (read once at start; an empty file turns the action off)."""
    return path.read_text().strip() or None


def _listening(address: str | None) -> dict[str, Any]:
    """``service.ready``'s ``http`` field (the bound HOST:PORT), only when listening."""
    return {"http": address} if address else {}


def hide_secrets(config: Config) -> None:
    """Keep the variables holding the webhook secrets and the cluster password from the
    commands the service starts (``watcher.system.secretenv``)."""
    names = [h.secret_env or "" for h in config.handlers]
    secretenv.hide([*names, config.cluster.password_env])
