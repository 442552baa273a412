"""Log shipping: a real rsyslogd reading watcher's JSON log, and the other shippers' examples."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from asyncinotify import Inotify, Mask

from tests.conftest import WAIT, Doc, ServiceProcess, cli, write_config
from watcher.events.record import Event, Origin, to_document
from watcher.service.operations import MAX_MESSAGE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RSYSLOG_CONF = DEPLOY / "rsyslog" / "watcher.conf"
SHIPPING = DEPLOY / "shipping"
DEFAULT_LOG_DIR = "/var/log/watcher/"
DEFAULT_LOG = DEFAULT_LOG_DIR + "watcher.json"
LONG_MESSAGE = "長い" * 1500  # 9 KB of UTF-8; watcher keeps the first MAX_MESSAGE characters


def wait_for_file(path: Path, done: Callable[[bytes], bool], timeout: float = WAIT) -> bytes:
    """The file's content once ``done(content)`` holds, re-checked on every inotify event."""
    deadline = time.monotonic() + timeout
    with Inotify() as inotify:
        inotify.add_watch(path.parent, Mask.CREATE | Mask.MODIFY | Mask.MOVED_TO | Mask.CLOSE_WRITE)
        while True:
            content = path.read_bytes() if path.exists() else b""
            if done(content):
                return content
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{path} never got there; it holds {content[-2000:]!r}")
            inotify.sync_timeout = left
            inotify.sync_get()


def render_rsyslog_conf(log_dir: Path) -> str:
    """The deploy drop-in with its /var/log/watcher/ paths moved to ``log_dir``."""
    text = RSYSLOG_CONF.read_text()
    for name in ("watcher.json", "events.log", "unparsed.log"):
        assert f'"{DEFAULT_LOG_DIR}{name}"' in text
    return text.replace(DEFAULT_LOG_DIR, f"{log_dir}/")


@dataclass
class Rsyslog:
    """A private rsyslogd run in the foreground on the deploy config."""

    binary: str
    main_conf: Path
    log_dir: Path
    internal: Path

    @property
    def input(self) -> Path:
        return self.log_dir / "watcher.json"

    @property
    def events(self) -> Path:
        return self.log_dir / "events.log"

    @property
    def unparsed(self) -> Path:
        return self.log_dir / "unparsed.log"


@pytest.fixture
def rsyslog(tmp_path: Path) -> Rsyslog:
    """The deploy drop-in rendered into a fresh directory under a minimal main config."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    binary = shutil.which("rsyslogd", path=search)
    if binary is None:
        reason = "rsyslogd is not installed (scripts/test-setup installs it as root)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    base = tmp_path / "rsyslog"
    log_dir = base / "log"
    (base / "work").mkdir(parents=True)
    log_dir.mkdir()
    dropin = base / "watcher.conf"
    dropin.write_text(render_rsyslog_conf(log_dir))
    main_conf = base / "rsyslog.conf"
    internal = base / "internal.log"
    main_conf.write_text(
        f'global(workDirectory="{base / "work"}" processInternalMessages="on")\n'
        f'include(file="{dropin}")\n'
        f'*.* action(type="omfile" file="{internal}")\n'
    )
    return Rsyslog(binary, main_conf, log_dir, internal)


@pytest.fixture
def rsyslogd(rsyslog: Rsyslog) -> Iterator[Rsyslog]:
    """rsyslogd running on ``rsyslog``'s config (input file created first); stopped at teardown."""
    rsyslog.input.touch()  # with a fresh workDirectory imfile then reads it from offset 0
    with (rsyslog.main_conf.parent / "rsyslogd.out").open("wb") as out:
        process = subprocess.Popen(
            [
                rsyslog.binary,
                "-n",
                "-f",
                str(rsyslog.main_conf),
                "-i",
                str(rsyslog.main_conf.parent / "rsyslogd.pid"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_file(rsyslog.internal, lambda text: b"] start" in text)
        yield rsyslog
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(WAIT)


def test_rsyslog_config_validates(rsyslog: Rsyslog) -> None:
    """``rsyslogd -N1`` accepts the rendered deploy config without errors or warnings."""
    result = subprocess.run(
        [rsyslog.binary, "-N1", "-f", str(rsyslog.main_conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, output
    assert all(
        line.startswith(("rsyslogd: version", "rsyslogd: End of config validation"))
        for line in output
    ), output


def read_json_lines(*paths: Path) -> list[Doc]:
    """Every line of the files, each parsed as JSON (a torn line fails the test)."""
    return [json.loads(line) for path in paths for line in path.read_bytes().splitlines()]


def test_rsyslog_ships_every_event_with_its_fields_parsed(
    service: Callable[..., ServiceProcess], data_dir: Path, tmp_path: Path, rsyslogd: Rsyslog
) -> None:
    """Every event watcher logs reaches rsyslog's output once, parsed, across a rotation."""
    log = rsyslogd.input
    config = write_config(
        tmp_path / "watcher.toml",
        f"""
[[handlers]]
type = "log"
target = "stdout"
format = "json"

[[handlers]]
type = "log"
target = "{log}"
format = "json"
min_level = "debug"
""",
    )
    proc = service(config=config)
    maint = data_dir / "mw" / "data" / "maint"
    for verb, *args in (["enter", "--message", "メンテナンス中 / back at 03:00"], ["leave"]):
        result = cli(verb, *args, data_dir=data_dir)
        assert result.returncode == 0, result.stderr
    mark = proc.mark()
    maint.touch()
    proc.wait_for("maintenance.entered", after=mark)
    mark = proc.mark()
    rotated = log.with_name("watcher.json.1")
    os.rename(log, rotated)  # rotation by rename, as deploy/logrotate/watcher does
    proc.signal(signal.SIGHUP)
    proc.wait_for("config.reloaded", after=mark)
    maint.unlink()
    proc.wait_for("maintenance.left", after=mark)
    for verb, *args in (["enter", "--message", LONG_MESSAGE], ["leave"]):
        result = cli(verb, *args, data_dir=data_dir)
        assert result.returncode == 0, result.stderr
    assert proc.stop() == 0

    logged = read_json_lines(rotated, log)
    assert logged[-1]["event"]["action"] == "service.stopped"
    shipped_text = wait_for_file(
        rsyslogd.events, lambda text: text.count(b"\n") >= len(logged)
    ).decode()
    shipped: dict[int, tuple[str, str, Doc]] = {}
    for line in shipped_text.splitlines():
        level, action, sequence, tree = line.split(" ", 3)
        assert int(sequence) not in shipped, f"event {sequence} shipped twice"
        shipped[int(sequence)] = (level, action, json.loads(tree))
    assert len(shipped) == len(logged)
    for doc in logged:
        # Fields parsed by mmjsonparse (%$!log.level%, %$!event!action%), and the whole tree.
        assert shipped[doc["event"]["sequence"]] == (doc["log.level"], doc["event"]["action"], doc)
    messages = {doc["message"] for doc in logged}
    assert "maintenance entered: メンテナンス中 / back at 03:00" in messages
    assert f"maintenance entered: {LONG_MESSAGE[:MAX_MESSAGE]}" in messages
    assert not rsyslogd.unparsed.exists()


# --- the other shippers' examples: shape only (the tools are not installed here) -----------


def test_vector_example_reads_the_log_and_parses_json() -> None:
    """vector.toml is valid TOML that tails the JSON log and parses every line."""
    config = tomllib.loads((SHIPPING / "vector.toml").read_text())
    source = config["sources"]["watcher_log"]
    assert (source["type"], source["include"]) == ("file", [DEFAULT_LOG])
    remap = config["transforms"]["watcher_parse"]
    assert remap["type"] == "remap" and remap["inputs"] == ["watcher_log"]
    assert "parse_json!(string!(.message))" in remap["source"]
    sinks = config["sinks"]
    assert {s["inputs"][0] for s in sinks.values()} == {"watcher_parse", "watcher_parse.dropped"}


def test_fluent_bit_parser_reads_watcher_timestamps() -> None:
    """The Fluent Bit parser is JSON with a Time_Format that parses a real event's @timestamp."""
    conf = (SHIPPING / "fluent-bit.conf").read_text()
    assert f"Path              {DEFAULT_LOG}" in conf
    assert "Parsers_File  parsers-watcher.conf" in conf
    assert "Parser            watcher_json" in conf
    parser = dict(
        line.split(None, 1)
        for line in (SHIPPING / "parsers-watcher.conf").read_text().splitlines()
        if line.startswith("    ")
    )
    assert parser["Name"] == "watcher_json"
    assert (parser["Format"], parser["Time_Key"], parser["Time_Keep"]) == (
        "json",
        "@timestamp",
        "On",
    )
    stamp = to_document(Event("service.ready", "ready"), Origin())["@timestamp"]
    # Fluent Bit's %L (fractional seconds) is Python's %f here.
    datetime.strptime(stamp, parser["Time_Format"].replace("%L", "%f"))


def test_filebeat_example_uses_the_ndjson_parser_at_the_root() -> None:
    """filebeat.yml reads the JSON log with ndjson into the document root, dotted keys expanded."""
    lines = [line.strip() for line in (SHIPPING / "filebeat.yml").read_text().splitlines()]
    assert f"- {DEFAULT_LOG}" in lines
    for setting in (
        "- ndjson:",
        'target: ""',
        "overwrite_keys: true",
        "expand_keys: true",
        "add_error_key: true",
    ):
        assert setting in lines


def leaf_paths(doc: Doc, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        paths |= leaf_paths(value, path + ".") if isinstance(value, dict) else {path}
    return paths


def test_field_mapping_documents_every_ecs_field() -> None:
    """The shipping README's mapping names every field outside ``watcher`` that events carry."""
    readme = (SHIPPING / "README.md").read_text()
    doc = to_document(Event("job.finished", "done", duration_ns=5), Origin(data_dir="/srv"))
    ecs = {path for path in leaf_paths(doc) if not path.startswith("watcher.")}
    assert {"@timestamp", "event.action", "event.duration", "process.pid"} <= ecs
    assert {path for path in ecs if f"| `{path}` |" not in readme} == set()
    assert "| `watcher.data_dir` |" in readme
