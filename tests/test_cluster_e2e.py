"""The must-show: one real redis-server, three ``watcher run`` services, one decision."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceProcess, cli, write_config
from tests.redis_server import RedisServer
from watcher.demo import create_demo

pytestmark = pytest.mark.skipif(not RedisServer.available(), reason="redis-server not installed")
HOSTS = ("h1", "h2", "h3")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a unix socket in tmp_path."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


class Fleet:
    """Three data dirs, three configs naming the same Redis, and their services."""

    def __init__(self, root: Path, url: str) -> None:
        self.configs: dict[str, Path] = {}
        self.data: dict[str, Path] = {}
        self.procs: dict[str, ServiceProcess] = {}
        for host in HOSTS:
            data = root / host
            create_demo(data)
            self.data[host] = data
            self.configs[host] = write_config(
                root / f"{host}.toml",
                f'data_dir = "{data}"\n[cluster]\nurl = "{url}"\nname = "e2e"\n'
                f'host_id = "{host}"\nheartbeat = "1s"\nbackoff_max = "500ms"\n',
            )

    def start(self, host: str) -> ServiceProcess:
        proc = ServiceProcess(self.data[host], self.configs[host]).ready()
        self.procs[host] = proc
        return proc

    def maint(self, host: str) -> Path:
        return self.data[host] / "mw" / "data" / "maint"

    def holds(self, host: str) -> list[tuple[str, str]]:
        content = json.loads(self.maint(host).read_text())
        return [(h["reason"], h["name"]) for h in content["holds"]]

    def cli(self, *args: str, host: str = "h1") -> tuple[int, str, str]:
        result = cli(*args, config=self.configs[host])
        return result.returncode, result.stdout, result.stderr

    def kill_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()


@pytest.fixture
def fleet(tmp_path: Path, redis: RedisServer) -> Iterator[Fleet]:
    """Three connected watchers."""
    f = Fleet(tmp_path, redis.url)
    try:
        for host in HOSTS:
            f.start(host).wait_for("cluster.connected")
        yield f
    finally:
        f.kill_all()


def _left_since(proc: ServiceProcess, mark: int) -> list[str]:
    return [a for a in proc.actions()[mark:] if a == "maintenance.left"]


def test_enter_reaches_all_hosts_and_survives_a_redis_kill(
    fleet: Fleet, redis: RedisServer
) -> None:
    """``enter --cluster`` reaches all three maint files; Redis SIGKILLed, CLI changes are
    refused clearly, Redis restarted: all converge and none ever drops maintenance."""
    marks = {h: fleet.procs[h].mark() for h in HOSTS}
    code, out, err = fleet.cli("enter", "--cluster", "--message", "fleet upgrade")
    assert code == 0, err
    assert "every host" in out
    for host in HOSTS:
        fleet.procs[host].wait_for("maintenance.entered", after=marks[host])
        assert fleet.holds(host) == [("cluster", "cli")]
        assert json.loads(fleet.maint(host).read_text())["message"] == "fleet upgrade"

    redis.kill()
    for host in HOSTS:
        fleet.procs[host].wait_for("cluster.unreachable", after=marks[host])
    for args in (("leave", "--cluster"), ("enter", "--cluster", "--for", "1h")):
        code, out, err = fleet.cli(*args, host="h2")
        assert code == 1
        assert err.count("\n") == 1 and "unreachable" in err and "nothing changed" in err, err
        assert "Traceback" not in err
    for host in HOSTS:
        assert fleet.maint(host).exists(), f"{host} dropped maintenance while Redis was away"

    redis.start()
    for host in HOSTS:
        event = fleet.procs[host].wait_for("cluster.reconnected", after=marks[host])
        assert event["watcher"]["caught_up"] == 0
        assert fleet.holds(host) == [("cluster", "cli")]
        assert not _left_since(fleet.procs[host], marks[host])
        said = [a for a in fleet.procs[host].actions()[marks[host] :] if a == "cluster.unreachable"]
        assert len(said) == 1, f"{host}: cluster.unreachable said {len(said)} times in one outage"

    code, out, err = fleet.cli("leave", "--cluster", host="h3")
    assert code == 0, err
    assert "1 holds" in out
    for host in HOSTS:
        fleet.procs[host].wait_for("maintenance.left", after=marks[host])
        assert not fleet.maint(host).exists()


def test_rm_on_one_host_releases_only_its_mirror(fleet: Fleet) -> None:
    """An operator's ``rm`` of one host's maint file releases that host only
    (``cluster.release_local``); the next cluster ``enter`` holds it again."""
    marks = {h: fleet.procs[h].mark() for h in HOSTS}
    assert fleet.cli("enter", "--cluster")[0] == 0
    for host in HOSTS:
        fleet.procs[host].wait_for("maintenance.entered", after=marks[host])
    fleet.maint("h2").unlink()
    event = fleet.procs["h2"].wait_for("cluster.release_local", after=marks["h2"])
    assert event["watcher"]["released"] == ["cli"]
    fleet.procs["h2"].wait_for("maintenance.left", after=marks["h2"])
    assert not fleet.maint("h2").exists()
    assert fleet.maint("h1").exists() and fleet.maint("h3").exists()

    again = fleet.procs["h2"].mark()
    assert fleet.cli("enter", "--cluster", "--message", "again", host="h3")[0] == 0
    fleet.procs["h2"].wait_for("maintenance.entered", after=again)
    assert fleet.holds("h2") == [("cluster", "cli")]


def test_a_host_that_was_down_catches_up(fleet: Fleet) -> None:
    """A watcher stopped while the cluster changes enters maintenance when it starts again,
    from Redis, and counts the changes it caught up on."""
    assert fleet.procs["h3"].stop() == 0
    assert fleet.cli("enter", "--cluster", "--for", "2h")[0] == 0
    assert fleet.cli("enter", "--cluster", "--window", "02:00-03:00")[0] == 0
    proc = fleet.start("h3")
    event = proc.wait_for("cluster.connected")
    assert event["watcher"]["caught_up"] == 2
    proc.wait_for("maintenance.entered")
    assert ("cluster", "cli") in fleet.holds("h3")


def test_status_cluster_shows_every_host(fleet: Fleet) -> None:
    """``status --cluster --json`` lists each host's heartbeat, maintenance, disk and job."""
    marks = {h: fleet.procs[h].mark() for h in HOSTS}
    assert fleet.cli("enter", "--cluster")[0] == 0
    for host in HOSTS:
        fleet.procs[host].wait_for("maintenance.entered", after=marks[host])
    code, out, err = fleet.cli("status", "--cluster", "--json", host="h2")
    assert code == 0, err
    report = json.loads(out)
    assert [r["host_id"] for r in report["hosts"]] == list(HOSTS)
    for row in report["hosts"]:
        assert row["alive"] and row["disk"] == "ok" and row["jobs"] == []
        assert "at" in row and "maintenance" in row
    assert [h["name"] for h in report["holds"]] == ["cli"]
    code, out, err = fleet.cli("status", "--cluster", host="h1")
    assert code == 0 and "host h3: alive" in out, err


def test_cluster_flags_need_a_cluster_config(tmp_path: Path) -> None:
    """``--cluster`` without ``[cluster]`` exits 2 with one line saying so."""
    data = tmp_path / "d"
    create_demo(data)
    for args in (("enter", "--cluster"), ("leave", "--cluster"), ("status", "--cluster")):
        result = cli(*args, data_dir=data)
        assert result.returncode == 2
        assert "[cluster]" in result.stderr and "Traceback" not in result.stderr


def test_password_is_used_and_never_printed(tmp_path: Path) -> None:
    """With ``requirepass``, the right ``password_file`` works; a wrong ``password_env`` is
    refused in one line that never shows either password."""
    server = RedisServer(tmp_path / "redis", "--requirepass", "right-secret").start()
    try:
        data = tmp_path / "d"
        create_demo(data)
        secret = write_config(tmp_path / "pw", "right-secret\n")
        base = f'data_dir = "{data}"\n[cluster]\nurl = "{server.url}"\nhost_id = "h"\n'
        good = write_config(tmp_path / "good.toml", base + f'password_file = "{secret}"\n')
        bad = write_config(tmp_path / "bad.toml", base + 'password_env = "WATCHER_TEST_PW"\n')
        result = cli("enter", "--cluster", config=good)
        assert result.returncode == 0, result.stderr
        result = cli("leave", "--cluster", config=bad, env={"WATCHER_TEST_PW": "wrong-secret"})
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and "nothing changed" in result.stderr
        assert "secret" not in result.stderr + result.stdout
        result = cli("status", "--cluster", "--json", config=good)
        assert result.returncode == 0 and "secret" not in result.stdout
        assert [h["name"] for h in json.loads(result.stdout)["holds"]] == ["cli"]
    finally:
        server.kill()
