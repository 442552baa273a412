"""Deployment: the systemd unit and notify protocol, rotation by rename, the container files."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import WAIT, ServiceProcess, cli, write_config
from watcher.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "watcher.service"
INSTALLED_WATCHER = "/usr/local/bin/watcher"
ROTATIONS = 24


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (comments and blanks dropped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def venv_watcher() -> Path:
    """The ``watcher`` console script installed beside the interpreter running the tests."""
    return Path(sys.executable).parent / "watcher"


# --- the systemd unit ----------------------------------------------------------------------


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit (ExecStart pointed at a real binary) silently."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        reason = "systemd-analyze is not installed (scripts/test-setup installs it as root)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    binary = venv_watcher()
    assert binary.is_file(), f"{binary} missing: is the project installed in the venv?"
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_WATCHER} " in text
    unit = tmp_path / "watcher.service"
    unit.write_text(text.replace(f"ExecStart={INSTALLED_WATCHER} ", f"ExecStart={binary} "))
    result = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # Unknown keys and unparsable values are only printed, with exit status 0.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_has_the_settings_the_service_relies_on() -> None:
    """The unit is Type=notify with a watchdog, reloads with SIGHUP and runs hardened."""
    service = unit_settings(UNIT.read_text())["Service"]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "watcher",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/local/app",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "KillMode": "mixed",
    }
    assert {key: service.get(key) for key in expected} == {k: [v] for k, v in expected.items()}
    # Stopping must outlast watcher's default shutdown_timeout (30 s) for a running job.
    assert int(service["TimeoutStopSec"][0]) > 30


def test_unit_exec_start_is_a_valid_watcher_command_line() -> None:
    """ExecStart's arguments parse as ``watcher run --config …`` with the real CLI parser."""
    [exec_start] = unit_settings(UNIT.read_text())["Service"]["ExecStart"]
    program, *args = shlex.split(exec_start)
    assert program == INSTALLED_WATCHER
    parsed = build_parser().parse_args(args)
    assert (parsed.command, parsed.config) == ("run", "/etc/watcher/watcher.toml")


# --- systemd's side of the notify protocol ---------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[socket.socket]:
    """A datagram socket bound where systemd's would be, passing the sender's credentials."""
    directory = tempfile.mkdtemp(prefix="wn-")  # short: AF_UNIX paths are limited to 108 bytes
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(os.path.join(directory, "notify"))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(WAIT)  # every receive is bounded: a missing message fails the test
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory)


def receive(sock: socket.socket) -> tuple[int, list[str]]:
    """One notify datagram: the sender's pid (SCM_CREDENTIALS) and its lines."""
    creds = struct.calcsize("3i")
    data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(creds))
    pid = -1
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("3i", payload[:creds])[0]
    return pid, data.decode().splitlines()


def test_notify_ready_status_and_watchdog(
    service: Callable[..., ServiceProcess], notify_socket: socket.socket
) -> None:
    """The real service sends READY=1 and STATUS=…, pings WATCHDOG=1 repeatedly, then STOPPING=1."""
    address = notify_socket.getsockname()
    proc = service(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}, wait_ready=False)
    lines: list[str] = []
    senders: set[int] = set()
    while not (
        "READY=1" in lines
        and any(line.startswith("STATUS=") for line in lines)
        and lines.count("WATCHDOG=1") >= 3
    ):
        pid, received = receive(notify_socket)
        senders.add(pid)
        lines += received
    status = next(line for line in lines if line.startswith("STATUS="))
    assert status.startswith("STATUS=ready")
    proc.wait_for("service.ready")
    assert proc.stop() == 0
    while "STOPPING=1" not in lines:
        pid, received = receive(notify_socket)
        senders.add(pid)
        lines += received
    # NotifyAccess=main: every message must come from the main process itself.
    assert senders == {proc.proc.pid}


# --- rotation by rename + SIGHUP --------------------------------------------------------------


class MaintToggler(threading.Thread):
    """Touches and removes the maint file as an operator would, each change awaited, until told."""

    def __init__(self, proc: ServiceProcess, maint: Path) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.maint = maint
        self.cycles = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                mark = self.proc.mark()
                self.maint.touch()
                self.proc.wait_for("maintenance.entered", after=mark)
                mark = self.proc.mark()
                self.maint.unlink()
                self.proc.wait_for("maintenance.left", after=mark)
                self.cycles += 1
        except BaseException as exc:  # re-raised by the test thread
            self.error = exc

    def finish(self) -> int:
        self.done.set()
        self.join(WAIT)
        if self.error is not None:
            raise self.error
        return self.cycles


def test_rotation_by_rename_and_sighup_loses_nothing(
    service: Callable[..., ServiceProcess], data_dir: Path, tmp_path: Path
) -> None:
    """Renaming the log and sending SIGHUP many times while events flow loses and tears nothing."""
    log = tmp_path / "log" / "watcher.json"
    log.parent.mkdir()
    config = write_config(
        tmp_path / "watcher.toml",
        f"""
[[handlers]]
type = "log"
target = "stdout"
format = "json"
min_level = "debug"

[[handlers]]
type = "log"
target = "{log}"
format = "json"
min_level = "debug"
""",
    )
    proc = service(config=config)
    toggler = MaintToggler(proc, data_dir / "mw" / "data" / "maint")
    toggler.start()
    files: list[Path] = []
    try:
        for step in range(ROTATIONS):
            mark = proc.mark()
            files.append(log.with_name(f"watcher.json.{step + 1}"))
            os.rename(log, files[-1])
            proc.signal(signal.SIGHUP)
            proc.wait_for("config.reloaded", after=mark)
            proc.wait_for("maintenance.left", after=mark)  # events keep flowing meanwhile
    finally:
        cycles = toggler.finish()
    for verb in ("enter", "leave"):  # and through the CLI, into the last file
        result = cli(verb, data_dir=data_dir)
        assert result.returncode == 0, result.stderr
    assert proc.stop() == 0
    files.append(log)

    docs = []
    for path in files:
        content = path.read_bytes()
        assert content == b"" or content.endswith(b"\n"), f"{path.name} ends in a torn line"
        docs += [json.loads(line) for line in content.splitlines()]  # each line whole JSON
    sequences = sorted(d["event"]["sequence"] for d in docs)
    assert sequences == list(range(1, len(docs) + 1)), "sequence numbers missing or repeated"
    in_files = {(d["event"]["sequence"], d["event"]["id"]) for d in docs}
    on_stdout = {(e["event"]["sequence"], e["event"]["id"]) for e in proc.events}
    assert on_stdout <= in_files
    actions = [d["event"]["action"] for d in docs]
    assert actions.count("config.reloaded") == ROTATIONS
    assert actions.count("maintenance.adopted") == cycles >= ROTATIONS
    assert actions.count("maintenance.released_by_operator") == cycles
    assert actions.count("maintenance.entered") == actions.count("maintenance.left") == cycles + 1
    assert max(docs, key=lambda d: d["event"]["sequence"])["event"]["action"] == "service.stopped"


def test_logrotate_renames_and_signals_never_copytruncate() -> None:
    """The logrotate config rotates the JSON log by rename and reloads watcher afterwards."""
    text = (DEPLOY / "logrotate" / "watcher").read_text()
    directives = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert directives[0] == "/var/log/watcher/*.json {"
    assert "copytruncate" not in directives
    assert "delaycompress" in directives
    postrotate = directives[directives.index("postrotate") + 1 : directives.index("endscript")]
    assert postrotate == ["systemctl reload watcher.service >/dev/null 2>&1 || true"]


# --- container ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile as (INSTRUCTION, arguments) pairs, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line.removesuffix(chr(92)).strip()}".strip()
        if not line.endswith(chr(92)):
            logical.append(pending)
            pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def test_dockerfile_runs_watcher_as_non_root_on_the_data_volume() -> None:
    """The image is python:3.11-slim, runs as a non-root user, and starts ``watcher run``."""
    steps = dockerfile_instructions((DEPLOY / "container" / "Dockerfile").read_text())
    last = {kind: args for kind, args in steps}
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert last["USER"].split(":")[0] not in ("root", "0")
    assert last["VOLUME"] == "/data"
    entrypoint, cmd = json.loads(last["ENTRYPOINT"]), json.loads(last["CMD"])
    assert (entrypoint, cmd) == (["watcher", "run"], ["--data-dir", "/data"])
    parsed = build_parser().parse_args(entrypoint[1:] + cmd)
    assert (parsed.command, parsed.data_dir) == ("run", "/data")


def test_sidecar_shares_the_data_volume_between_app_and_watcher() -> None:
    """The Pod mounts one volume in the application and in watcher, which gets --data-dir."""
    text = (DEPLOY / "kubernetes" / "sidecar.yaml").read_text()
    assert "kind: Pod" in text
    names = [line.strip() for line in text.splitlines() if line.strip().startswith("- name:")]
    # The two containers, their two mounts of app-data, and the volume itself.
    assert {"- name: app", "- name: watcher"} <= set(names)
    assert names.count("- name: app-data") == 3
    assert 'args: ["--data-dir", "/data"]' in text
