"""The real ``watcher run``: broken handlers, one instance, signals, reload, systemd notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import WAIT, Doc, ServiceProcess, cli, eventually, toml, write_config
from watcher.system.lock import running_pid


def failed_on(action: str, reason: str) -> Callable[[Doc], bool]:
    """Matches a ``handler.failed`` about ``action`` whose reason contains ``reason``."""
    return lambda e: (
        e["watcher"]["failed_event"]["action"] == action and reason in e["watcher"]["reason"]
    )


def sequences(docs: list[Doc]) -> list[int]:
    return [d["event"]["sequence"] for d in docs]


def read_json_lines(path: Path) -> list[Doc]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_broken_command_handlers_do_not_stop_the_others(
    tmp_path: Path, data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """Commands exiting non-zero or hanging give handler.failed; a log file still gets all."""
    log = tmp_path / "events.log"
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    hanging = [sys.executable, "-c", "import time; time.sleep(600)"]
    cfg = write_config(
        tmp_path / "watcher.toml",
        '[[handlers]]\ntype = "log"\n'
        f'[[handlers]]\ntype = "log"\ntarget = "{log}"\n'
        '[[handlers]]\ntype = "command"\nevents = ["maintenance.*"]\n'
        f"argv = {toml(failing)}\n"
        '[[handlers]]\ntype = "command"\nevents = ["maintenance.*"]\ntimeout = "1s"\n'
        f"argv = {toml(hanging)}\n",
    )
    proc = service(cfg)
    assert cli("enter", data_dir=data_dir).returncode == 0
    proc.wait_for("handler.failed", failed_on("maintenance.entered", "exited with status 3"))
    proc.wait_for("handler.failed", failed_on("maintenance.entered", "timed out"))
    assert cli("leave", data_dir=data_dir).returncode == 0
    # the failed handlers keep receiving later events, and keep failing on them
    proc.wait_for("handler.failed", failed_on("maintenance.left", "exited with status 3"))
    proc.wait_for("handler.failed", failed_on("maintenance.left", "timed out"))
    assert proc.stop() == 0
    on_stdout = [e for e in proc.events if e["log.level"] != "debug"]
    assert sequences(read_json_lines(log)) == sequences(on_stdout)
    assert proc.actions()[-1] == "service.stopped"


def test_second_instance_exits_2_naming_the_running_pid(
    data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """A second ``watcher run`` on the same data dir exits 2 naming the running pid."""
    first = service()
    second = cli("run", data_dir=data_dir, timeout=WAIT)
    assert second.returncode == 2
    assert f"pid {first.proc.pid}" in second.stderr
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.proc.poll() is None
    assert first.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(
    signum: signal.Signals, service: Callable[..., ServiceProcess]
) -> None:
    """SIGTERM or SIGINT: service.stopping, service.stopped, every handler flushed, exit 0."""
    proc = service()
    proc.signal(signum)
    assert proc.proc.wait(WAIT) == 0
    assert proc.stop() == 0  # already exited: only collects the output
    actions = proc.actions()
    assert actions[-2:] == ["service.stopping", "service.stopped"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ("[disk]\nfoo = 1\n", ": disk.foo: unknown key"),
        ("[disk\n", ": (syntax):"),
    ],
    ids=["unknown-key", "syntax-error"],
)
def test_sighup_with_broken_config_is_rejected_and_service_goes_on(
    tmp_path: Path,
    data_dir: Path,
    service: Callable[..., ServiceProcess],
    broken: str,
    problem: str,
) -> None:
    """SIGHUP with a broken config gives config.rejected; the old config keeps serving."""
    cfg = write_config(tmp_path / "watcher.toml", '[maintenance]\nmessage = "kept"\n')
    proc = service(cfg)
    write_config(cfg, broken)
    mark = proc.mark()
    proc.signal(signal.SIGHUP)
    rejected = proc.wait_for("config.rejected", after=mark)
    assert rejected["log.level"] == "error"
    assert any(p.startswith(f"{cfg}{problem}") for p in rejected["watcher"]["problems"])
    assert proc.proc.poll() is None
    entered = cli("enter", data_dir=data_dir)
    assert entered.returncode == 0, entered.stderr
    assert "through the running service" in entered.stdout
    event = proc.wait_for("maintenance.entered", after=mark)
    assert event["watcher"]["maintenance"]["message"] == "kept"
    assert "config.reloaded" not in proc.actions()[mark:]
    assert proc.stop() == 0


def test_sighup_with_valid_changed_config_reloads(
    tmp_path: Path, data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """SIGHUP with a valid changed config gives config.reloaded, and the change takes effect."""
    log = tmp_path / "events.log"
    cfg = write_config(tmp_path / "watcher.toml", '[maintenance]\nmessage = "first"\n')
    proc = service(cfg)
    write_config(
        cfg,
        '[maintenance]\nmessage = "second"\n'
        '[[handlers]]\ntype = "log"\n'
        f'[[handlers]]\ntype = "log"\ntarget = "{log}"\nevents = ["maintenance.*"]\n',
    )
    mark = proc.mark()
    proc.signal(signal.SIGHUP)
    reloaded = proc.wait_for("config.reloaded", after=mark)
    assert reloaded["watcher"]["config"] == str(cfg)
    assert cli("enter", data_dir=data_dir).returncode == 0
    entered = proc.wait_for("maintenance.entered", after=mark)
    assert entered["watcher"]["maintenance"]["message"] == "second"
    assert proc.stop() == 0
    in_file = read_json_lines(log)
    assert "maintenance.entered" in [d["event"]["action"] for d in in_file]
    assert all(d["event"]["action"].startswith("maintenance.") for d in in_file)


def test_systemd_notify_ready_status_and_watchdog(
    tmp_path: Path, service: Callable[..., ServiceProcess]
) -> None:
    """With NOTIFY_SOCKET and WATCHDOG_USEC: READY=1 with STATUS=, WATCHDOG=1 pings, STOPPING=1."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(WAIT)  # a bound on each datagram's arrival; never a synchronisation

        def receive_until(done: Callable[[list[str]], bool]) -> list[str]:
            got: list[str] = []
            while not done(got):
                got.append(sock.recv(4096).decode())
            return got

        proc = service(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})
        messages = receive_until(
            lambda got: (
                any("READY=1" in m for m in got)
                and sum(m.split("\n").count("WATCHDOG=1") for m in got) >= 3
            )
        )
        (ready,) = [m.split("\n") for m in messages if "READY=1" in m]
        assert any(line.startswith("STATUS=") for line in ready)
        proc.signal(signal.SIGTERM)
        receive_until(lambda got: any("STOPPING=1" in m.split("\n") for m in got))
        assert proc.proc.wait(WAIT) == 0


def test_python_dash_m_watcher_version() -> None:
    """``python -m watcher --version`` prints the version and exits 0."""
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "watcher 0.1.0"


def test_a_stalled_stdout_reader_never_stalls_the_service(data_dir: Path, tmp_path: Path) -> None:
    """With nobody reading its stdout pipe, the service still carries out requests (the log
    handler waits for the pipe, not the event loop) and stops on SIGTERM."""
    err = (tmp_path / "stderr").open("wb")
    config = write_config(
        tmp_path / "watcher.toml",
        '[service]\nshutdown_timeout = "2s"\n[[handlers]]\ntype = "log"\ntimeout = "1s"\n',
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watcher",
            "run",
            "--data-dir",
            str(data_dir),
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,  # never read: the pipe fills up (64 KiB)
        stderr=err,
        env={**os.environ, "WATCHER_CONFIG": ""},
    )
    try:
        eventually(lambda: running_pid(data_dir / "mw" / "watcher" / "lock"))
        message = "m" * 400  # every event carries it three times: the pipe fills in a few rounds
        for _ in range(40):
            for verb in (["enter", "-m", message], ["leave"]):
                done = cli(*verb, data_dir=data_dir, config=config)
                assert done.returncode == 0, done.stderr
                assert "through the running service" in done.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0  # handlers are flushed for at most shutdown_timeout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        err.close()
