"""The cluster's Redis, through the maintained ``redis`` package's asyncio API.

Keys, for a fleet ``name`` (prefix ``watcher:<name>``):

- ``:holds`` — hash, hold name → ``ClusterHold`` JSON (``enter --cluster``)
- ``:windows`` — hash, ``HH:MM-HH:MM`` → ``ClusterWindow`` JSON (``enter --cluster --window``)
- ``:stream`` — every change, appended in the same ``MULTI`` as the hash it changes
  (``op`` = hold | unhold | window | unwindow | clear | note, plus ``name``, ``value``,
  ``host``), trimmed to about ``STREAM_MAXLEN`` entries
- ``:hosts`` — hash, host_id → its last heartbeat JSON (kept, for the fleet view)
- ``:alive:<host_id>`` — the heartbeat again, with a TTL of three heartbeats

Any failure to talk to Redis (refused, reset, timed out, loading, auth) is raised as
``ClusterUnreachable`` with a one-line reason; nothing here prints the password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from watcher.config import ClusterConfig, redact_url

STREAM_MAXLEN = 10_000
BLOCK_MS = 5_000  # one XREAD waits this long at most (it returns at once on an entry)
CONNECT_TIMEOUT = 2.0
Entry = tuple[str, dict[str, str]]


class ClusterUnreachable(Exception):
    """Redis cannot be used right now; the message says where and why (no password)."""


@dataclass(frozen=True)
class Snapshot:
    holds: dict[str, str]
    windows: dict[str, str]
    newest: str | None  # the stream's last id; None: the stream is empty
    missed: list[Entry]  # entries after the id asked about


def read_password(config: ClusterConfig) -> str | None:
    """The password from ``password_file`` or ``password_env``, if either is set."""
    if config.password_file:
        return Path(config.password_file).read_text().strip() or None
    if config.password_env:
        return os.environ.get(config.password_env) or None
    return None


class ClusterStore:
    """One fleet's keys in one Redis."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.where = redact_url(config.url)
        self.prefix = f"watcher:{config.name}"
        self.stream = f"{self.prefix}:stream"
        self._redis: aioredis.Redis | None = None

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            try:
                password = read_password(self.config)
            except OSError as exc:
                raise ClusterUnreachable(
                    f"cannot read cluster.password_file: {exc.strerror}"
                ) from None
            self._redis = aioredis.from_url(
                self.config.url,
                password=password,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=BLOCK_MS / 1000 + 5.0,
                retry_on_timeout=False,
            )
        return self._redis

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _run(self, call: Any) -> Any:
        """Await one Redis call; every way it can fail becomes ``ClusterUnreachable``."""
        try:
            return await call(self._client())
        except (redis.exceptions.RedisError, OSError) as exc:
            await self._reset()
            reason = str(exc).replace(self.config.url, self.where) or type(exc).__name__
            raise ClusterUnreachable(f"cluster {self.where} unreachable: {reason}") from None

    async def _reset(self) -> None:
        """Drop the pool after a failure, so the next call connects afresh."""
        client, self._redis = self._redis, None
        if client is not None:
            try:
                await client.aclose()
            except (redis.exceptions.RedisError, OSError):
                pass

    async def ping(self) -> None:
        await self._run(lambda r: r.ping())

    # --- reading -----------------------------------------------------------------------

    async def snapshot(self, after: str | None) -> Snapshot:
        """The hashes, the stream's newest id and what came after ``after``, atomically."""

        async def call(r: aioredis.Redis) -> list[Any]:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hgetall(f"{self.prefix}:holds")
                pipe.hgetall(f"{self.prefix}:windows")
                pipe.xrevrange(self.stream, count=1)
                if after is not None:
                    pipe.xrange(self.stream, min=f"({after}", count=STREAM_MAXLEN)
                result: list[Any] = await pipe.execute()
                return result

        holds, windows, newest, *rest = await self._run(call)
        missed = rest[0] if rest else []
        return Snapshot(
            holds=dict(holds),
            windows=dict(windows),
            newest=newest[0][0] if newest else None,
            missed=[(i, dict(f)) for i, f in missed],
        )

    async def read(self, after: str) -> list[Entry]:
        """Entries after ``after``; waits up to ``BLOCK_MS`` for the first (``XREAD BLOCK``)."""
        reply = await self._run(lambda r: r.xread({self.stream: after}, block=BLOCK_MS, count=1000))
        if not reply:
            return []
        return [(i, dict(f)) for i, f in reply[0][1]]

    async def fleet(self) -> tuple[dict[str, str], dict[str, bool], Snapshot]:
        """Every host's last heartbeat, whether it is alive, and the cluster's holds."""
        hosts: dict[str, str] = await self._run(lambda r: r.hgetall(f"{self.prefix}:hosts"))
        alive: dict[str, bool] = {}
        if hosts:
            names = sorted(hosts)
            flags = await self._run(lambda r: r.mget([f"{self.prefix}:alive:{h}" for h in names]))
            alive = {h: flag is not None for h, flag in zip(names, flags, strict=True)}
        return hosts, alive, await self.snapshot(None)

    # --- writing -----------------------------------------------------------------------

    async def change(self, op: str, *, name: str = "", value: str = "", host: str = "") -> str:
        """Change the hashes and append the change to the stream in one ``MULTI``; the id."""
        holds, windows = f"{self.prefix}:holds", f"{self.prefix}:windows"

        async def call(r: aioredis.Redis) -> str:
            async with r.pipeline(transaction=True) as pipe:
                if op == "hold":
                    pipe.hset(holds, name, value)
                elif op == "unhold":
                    pipe.hdel(holds, name)
                elif op == "window":
                    pipe.hset(windows, name, value)
                elif op == "unwindow":
                    pipe.hdel(windows, name)
                elif op == "clear":
                    pipe.delete(holds, windows)
                fields: Mapping[Any, Any] = {"op": op, "name": name, "value": value, "host": host}
                pipe.xadd(self.stream, dict(fields), maxlen=STREAM_MAXLEN, approximate=True)
                result = await pipe.execute()
                return str(result[-1])

        entry_id: str = await self._run(call)
        return entry_id

    async def counts(self) -> tuple[int, int]:
        """How many holds and windows the cluster has now."""

        async def call(r: aioredis.Redis) -> tuple[int, int]:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hlen(f"{self.prefix}:holds")
                pipe.hlen(f"{self.prefix}:windows")
                holds, windows = await pipe.execute()
                return int(holds), int(windows)

        result: tuple[int, int] = await self._run(call)
        return result

    async def heartbeat(self, host: str, doc: str, ttl: float) -> None:
        """Publish this host's heartbeat: the fleet view's row, alive for ``ttl`` seconds."""

        async def call(r: aioredis.Redis) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(f"{self.prefix}:hosts", host, doc)
                pipe.set(f"{self.prefix}:alive:{host}", doc, px=max(1, int(ttl * 1000)))
                await pipe.execute()

        await self._run(call)
