"""Cluster ``enter`` → maint file present on all 3 hosts (issue 14: p99 ≤ 100 ms).

One real ``redis-server`` (unix socket, append-only with ``appendfsync always``, in the
workdir) and three real ``watcher run`` services on three demo data dirs, each with
``[cluster]`` naming it. Each trial stamps the clock, writes the cluster hold the way
``watcher enter --cluster`` does (one ``MULTI``: the holds hash and the stream entry, through
``watcher.sources.cluster.ClusterStore``), and waits until inotify has reported the maint
file created in all three ``mw/data`` directories; the trial's latency is the slowest host.
Then the hold is cleared (``leave --cluster``) and the bench waits, untimed, for all three
files to go. The reference, in the same run and interleaved with the trials: the bare
Redis round trip (``PING``) on the same socket. The CLI's own start-up (a Python process,
~0.3 s) is not part of the measure.

Run alone: ``python -m bench.bench_cluster [--quick] [--workdir DIR]``.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
from asyncinotify import Inotify, Mask

from bench.lines import FileTail, contains, wait_for
from bench.procs import spawn, stopped_at_exit, watcher_argv
from bench.report import Row, row
from bench.stats import Latency, percentile
from tests.redis_server import RedisServer
from watcher.config import ClusterConfig
from watcher.core.cluster import ClusterHold
from watcher.demo import create_demo
from watcher.sources.cluster import ClusterStore

MEASURE = "cluster enter → maint file on all 3 hosts"
TARGET_P99_MS = 100.0
TRIALS, QUICK_TRIALS = 100, 30
WARMUP = 3
MISS_AFTER = 2.0
HOSTS = ("b1", "b2", "b3")
CONNECTED = b'"action":"cluster.connected"'


def write_config(path: Path, data_dir: Path, url: str, host: str, log: Path) -> Path:
    path.write_text(
        "# written by bench: one host of a three-host cluster, a JSON log file the bench tails\n"
        f'data_dir = "{data_dir}"\n'
        f'[cluster]\nurl = "{url}"\nname = "bench"\nhost_id = "{host}"\n\n'
        f'[[handlers]]\ntype = "log"\ntarget = "{log}"\nformat = "json"\n'
    )
    return path


@contextmanager
def fleet(workdir: Path) -> Iterator[tuple[RedisServer, list[Path]]]:
    """Redis and three connected watchers; the maint-file directories to watch."""
    shutil.rmtree(workdir / "cluster", ignore_errors=True)
    root = workdir / "cluster"
    redis = RedisServer(root / "redis").start()
    with ExitStack() as stack:
        stack.callback(redis.kill)
        dirs = []
        for host in HOSTS:
            data = root / host
            create_demo(data)
            log = root / f"{host}.log"
            log.write_bytes(b"")
            config = write_config(root / f"{host}.toml", data, redis.url, host, log)
            tail = FileTail(log)
            stack.callback(tail.close)
            stack.enter_context(stopped_at_exit(spawn(watcher_argv(data, config))))
            found = wait_for({"up": (tail, contains(CONNECTED))}, time.perf_counter_ns(), 30)
            if found["up"] is None:
                raise RuntimeError(f"watcher {host} did not connect to Redis within 30 s")
            dirs.append(data / "mw" / "data")
        yield redis, dirs


async def _until(inotify: Inotify, dirs: list[Path], mask: Mask, started: int) -> float | None:
    """Milliseconds until every dir reported ``maint`` with ``mask``; ``None``: a miss."""
    pending = {str(d) for d in dirs}
    with anyio.move_on_after(MISS_AFTER):
        while pending:
            event = await inotify.get()
            if event.name is not None and str(event.name) == "maint" and event.mask & mask:
                pending.discard(str(event.watch.path) if event.watch else "")
        return (time.perf_counter_ns() - started) / 1e6
    return None


async def trials(url: str, dirs: list[Path], count: int) -> tuple[list[float | None], list[float]]:
    """``count`` timed enter/leave cycles; (latencies, PING round trips), in ms."""
    store = ClusterStore(ClusterConfig(url=url, name="bench", host_id="bench"))
    rng = random.Random(14)
    latencies: list[float | None] = []
    pings: list[float] = []
    try:
        with Inotify() as inotify:
            for d in dirs:
                inotify.add_watch(d, Mask.CREATE | Mask.MOVED_TO | Mask.DELETE | Mask.MOVED_FROM)
            for i in range(WARMUP + count):
                started = time.perf_counter_ns()
                await store.ping()
                ping = (time.perf_counter_ns() - started) / 1e6
                hold = ClusterHold("cli", since=datetime.now(UTC), message=f"trial {i}", by="bench")
                started = time.perf_counter_ns()
                await store.change("hold", name="cli", value=hold.to_json(), host="bench")
                took = await _until(inotify, dirs, Mask.CREATE | Mask.MOVED_TO, started)
                await store.change("clear", host="bench")
                await _until(inotify, dirs, Mask.DELETE | Mask.MOVED_FROM, time.perf_counter_ns())
                if i >= WARMUP:
                    latencies.append(took)
                    pings.append(ping)
                await anyio.sleep(rng.uniform(0.02, 0.05))
    finally:
        await store.aclose()
    return latencies, pings


def run(workdir: Path, quick: bool) -> list[Row]:
    """One row: cluster enter → all three maint files, with Redis's PING as reference."""
    if not RedisServer.available():
        return [row(MEASURE, "—", reference="redis-server not installed") | {"verdict": "SKIPPED"}]
    workdir.mkdir(parents=True, exist_ok=True)
    with fleet(workdir) as (redis, dirs):
        samples, pings = anyio.run(trials, redis.url, dirs, QUICK_TRIALS if quick else TRIALS)
    latency = Latency.of(samples)
    ref50, ref99 = percentile(pings, 50), percentile(pings, 99)
    return [
        row(
            MEASURE,
            latency.render(misses=True),
            reference=f"bare Redis round trip (PING, same socket): p50 {ref50:.2f} / "
            f"p99 {ref99:.2f} ms",
            ratio=f"{latency.p50 / ref50:.0f}× [p50]" if ref50 else "—",
            target=f"p99 ≤ {TARGET_P99_MS:g} ms",
            passed=latency.p99 <= TARGET_P99_MS and latency.misses == 0,
        )
    ]


if __name__ == "__main__":
    from bench.standalone import main

    main(run)
