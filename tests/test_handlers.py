"""Built-in handlers (log, command) and plugin loading (``module:attr``, precise errors)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import ServiceProcess, cli, write_config
from watcher.config import HandlerConfig
from watcher.events.bus import EventBus, Subscription
from watcher.events.record import Event, Origin, to_document
from watcher.handlers import build_handler, check_handler, handler_factory
from watcher.handlers.command import CommandFailed, CommandHandler
from watcher.handlers.log import LogHandler
from watcher.system.plugins import PluginError, import_from_string, resolve

WAIT = 15.0  # upper bound on an awaited condition; never a sleep
ORIGIN = Origin(data_dir="/srv/app", host="srv1", pid=4121)

PLUGIN = '''
"""A third-party handler for the tests: appends each event's action to a file."""


class ActionFile:
    def __init__(self, config, origin):
        self.path = config.options["path"]
        self.data_dir = origin.data_dir

    async def __call__(self, event):
        with open(self.path, "a") as f:
            f.write(event.action + "\\n")
'''

HANGING_COMMAND = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def event(n: int, action: str = "maintenance.entered") -> Event:
    return Event(action, f"event {n}", sequence=n, fields={"n": n})


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The file's lines, each of which must be one whole JSON object ending in a newline."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "a torn last line"
    docs = [json.loads(line) for line in data.splitlines()]
    assert all(isinstance(d, dict) for d in docs)
    return docs


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until_gone(pid: int, within: float = WAIT) -> bool:
    """Poll (bounded) until ``pid`` is gone; the condition, not the delay, is what is awaited."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def python(code: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code, *args)


# --- log ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_log_handler_writes_whole_json_lines(tmp_path: Path) -> None:
    """The log handler appends one whole JSON document per event to its file."""
    path = tmp_path / "events.log"
    path.write_text("")  # appended to, not truncated
    handler = LogHandler(HandlerConfig(type="log", target=str(path), format="auto"), ORIGIN)
    sent = [event(n) for n in range(1, 101)]
    for e in sent:
        await handler(e)
    await handler.aclose()
    assert json_lines(path) == [json.loads(json.dumps(to_document(e, ORIGIN))) for e in sent]


def test_log_line_is_written_when_the_event_is_emitted(tmp_path: Path) -> None:
    """Inside ``delivering_now`` with nothing queued ahead, the log line is in the file as soon
    as ``emit`` returns — before any handler task has run — and later events keep their
    order; outside it, events wait for the handler's task."""
    path = tmp_path / "events.log"
    handler = LogHandler(HandlerConfig(type="log", target=str(path), format="json"), ORIGIN)
    bus = EventBus()
    sub = bus.subscribe(Subscription("log", handler))
    with bus.delivering_now():
        bus.emit("maintenance.adopted", "adopted")
        bus.emit("maintenance.entered", "entered")
    bus.emit("maintenance.hold_added", "later")
    assert len(sub.queue) == 1
    assert [d["event"]["action"] for d in json_lines(path)] == [
        "maintenance.adopted",
        "maintenance.entered",
    ]
    assert not sub.idle


@pytest.mark.asyncio
async def test_log_line_waits_in_the_queue_while_the_pipe_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full stdout pipe: ``emit`` does not wait; the line is queued and written whole, in
    order, by the handler's task once the reader drains the pipe."""
    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w", closefd=False))
    handler = LogHandler(HandlerConfig(type="log", target="stdout", format="json"), ORIGIN)
    filler = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filler += os.write(write_end, b"x" * 4096)
    bus = EventBus()
    sub = bus.subscribe(Subscription("log", handler))
    with bus.delivering_now():
        bus.emit("maintenance.entered", "entered")
        bus.emit("maintenance.left", "left")
    assert len(sub.queue) == 2  # nothing written, nothing lost
    os.set_blocking(read_end, True)
    received = b""
    async with anyio.create_task_group() as tg:
        await tg.start(bus.run)
        while received.count(b"\n") < 2:
            received += await anyio.to_thread.run_sync(os.read, read_end, 1 << 20)
        tg.cancel_scope.cancel()
    os.close(read_end)
    os.close(write_end)
    lines = received[filler:].splitlines()
    assert [json.loads(line)["event"]["action"] for line in lines] == [
        "maintenance.entered",
        "maintenance.left",
    ]


@pytest.mark.asyncio
async def test_log_handler_reopen_after_rename_loses_nothing(tmp_path: Path) -> None:
    """After a rename, lines go on to the old file until ``reopen()``, then to a new file."""
    path, rotated = tmp_path / "events.log", tmp_path / "events.log.1"
    handler = LogHandler(HandlerConfig(type="log", target=str(path), format="json"), ORIGIN)
    for n in range(1, 51):
        await handler(event(n))
    path.rename(rotated)
    for n in range(51, 61):
        await handler(event(n))
    handler.reopen()
    for n in range(61, 101):
        await handler(event(n))
    await handler.aclose()
    assert [d["event"]["sequence"] for d in json_lines(rotated)] == list(range(1, 61))
    assert [d["event"]["sequence"] for d in json_lines(path)] == list(range(61, 101))


def test_log_rotation_through_sighup_loses_nothing(
    tmp_path: Path, service: Callable[..., ServiceProcess], data_dir: Path
) -> None:
    """A log file renamed away and then SIGHUP: old and new files hold every event once."""
    path, rotated = tmp_path / "events.log", tmp_path / "events.log.1"
    cfg = write_config(
        tmp_path / "watcher.toml",
        f'[[handlers]]\ntype = "log"\n[[handlers]]\ntype = "log"\ntarget = "{path}"\n',
    )
    proc = service(cfg)
    path.rename(rotated)
    mark = proc.mark()
    proc.signal(signal.SIGHUP)
    proc.wait_for("config.reloaded", after=mark)
    entered = cli("enter", data_dir=data_dir)
    assert entered.returncode == 0, entered.stderr
    proc.wait_for("maintenance.entered")
    assert proc.stop() == 0
    before, after = json_lines(rotated), json_lines(path)
    assert "service.ready" in [d["event"]["action"] for d in before]
    assert "maintenance.entered" in [d["event"]["action"] for d in after]
    in_files = [d["event"]["sequence"] for d in before + after]
    assert sorted(in_files) == [e["event"]["sequence"] for e in proc.events]


# --- command -----------------------------------------------------------------------------


def command(*argv: str) -> CommandHandler:
    return CommandHandler(HandlerConfig(type="command", argv=argv), ORIGIN)


@pytest.mark.asyncio
async def test_command_gets_the_event_json_on_stdin(tmp_path: Path) -> None:
    """The command runs once per event with the event's JSON document on its stdin."""
    out, action = tmp_path / "stdin.json", tmp_path / "action"
    handler = command(
        *python(
            "import os, sys\n"
            "open(sys.argv[1], 'wb').write(sys.stdin.buffer.read())\n"
            "open(sys.argv[2], 'w').write(os.environ['WATCHER_EVENT_ACTION'])\n",
            str(out),
            str(action),
        )
    )
    sent = event(7, "disk.critical")
    await handler(sent)
    assert out.read_bytes().endswith(b"\n")
    assert json.loads(out.read_bytes()) == json.loads(json.dumps(to_document(sent, ORIGIN)))
    assert action.read_text() == "disk.critical"


@pytest.mark.asyncio
async def test_command_exiting_non_zero_raises() -> None:
    """A non-zero exit raises ``CommandFailed`` with the status and the end of its stderr."""
    handler = command(*python("import sys; sys.stderr.write('disk on fire'); sys.exit(3)"))
    with pytest.raises(CommandFailed, match="exited with status 3: disk on fire"):
        await handler(event(1))


@pytest.mark.asyncio
async def test_command_not_reading_stdin_is_fine() -> None:
    """A command that ignores its stdin and exits 0 is a success."""
    await command(*python("pass"))(event(1))


@pytest.mark.asyncio
async def test_hanging_command_is_killed_with_its_process_group(tmp_path: Path) -> None:
    """A command past the handler timeout gives handler.failed and its whole group is killed."""
    pids = tmp_path / "pids"
    bus = EventBus()
    failed = anyio.Event()
    reports: list[Event] = []

    async def observer(e: Event) -> None:
        reports.append(e)
        failed.set()

    handler = command(*python(HANGING_COMMAND, str(pids)))
    bus.subscribe(Subscription("hang", handler, timeout=3.0))
    bus.subscribe(Subscription("observer", observer, events=("handler.failed",)))
    child = grandchild = 0
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(bus.run)
            bus.emit("disk.critical", "run the hanging command")
            with anyio.fail_after(WAIT):
                await failed.wait()
            tg.cancel_scope.cancel()
        assert pids.exists(), "the command had not started its grandchild before the timeout"
        child, grandchild = map(int, pids.read_text().split())
        assert "timed out" in reports[0].fields["reason"]
        assert wait_until_gone(child)
        assert wait_until_gone(grandchild), "the grandchild outlived the timeout"
    finally:
        for pid in (child, grandchild):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- plugins -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("os.path:join", os.path.join),
        ("os:path.join", os.path.join),
        ("watcher.handlers.log:LogHandler", LogHandler),
    ],
)
def test_import_from_string_finds_the_object(spec: str, expected: object) -> None:
    """``module:attr`` (attr may be dotted) names the object it points at."""
    assert import_from_string(spec) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch.module:thing", "could not import module 'nosuch.module'"),
        ("os:nosuch", "module 'os' has no attribute 'nosuch'"),
        ("os:path.nosuch", "module 'os' has no attribute 'path.nosuch'"),
        ("nocolon", 'is not of the form "module:attribute"'),
        (":thing", 'is not of the form "module:attribute"'),
        ("os:", 'is not of the form "module:attribute"'),
    ],
)
def test_import_from_string_errors_are_precise(spec: str, message: str) -> None:
    """Each way a ``module:attr`` string can fail has its own ``PluginError`` message."""
    with pytest.raises(PluginError, match=message.replace(".", r"\.")):
        import_from_string(spec)


def test_import_errors_inside_the_plugin_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that exists but fails to import says so, with its own error, not 'not found'."""
    (tmp_path / "wtest_missing_dep.py").write_text("import wtest_no_such_dependency\n")
    (tmp_path / "wtest_raises.py").write_text("raise RuntimeError('broken plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="importing 'wtest_missing_dep' failed") as missing:
        import_from_string("wtest_missing_dep:thing")
    assert "wtest_no_such_dependency" in str(missing.value)
    with pytest.raises(PluginError, match="importing 'wtest_raises' failed: RuntimeError"):
        import_from_string("wtest_raises:thing")


def test_unknown_plain_name_is_not_a_plugin() -> None:
    """A handler type that is neither built in, an entry point nor ``module:attr`` is named."""
    with pytest.raises(PluginError, match=r"no watcher\.handlers plugin named 'nosuch'"):
        resolve("watcher.handlers", "nosuch", {})
    assert check_handler(HandlerConfig(type="nosuch")) == [
        "type: no watcher.handlers plugin named 'nosuch'"
    ]


@pytest.mark.asyncio
async def test_module_attr_handler_is_built_from_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``module:attr`` handler type is constructed with its config (extra keys as options)."""
    (tmp_path / "wtest_inproc_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "actions"
    config = HandlerConfig(type="wtest_inproc_plugin:ActionFile", options={"path": str(out)})
    assert handler_factory(config.type) is import_from_string(config.type)
    handler = build_handler(config, ORIGIN)
    await handler(event(1, "disk.warn"))
    assert out.read_text() == "disk.warn\n"


def test_module_attr_handler_receives_events_in_the_service(
    tmp_path: Path, data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """A handler named ``module:attr`` in the config receives the service's events."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "wtest_plugin.py").write_text(PLUGIN)
    out = tmp_path / "actions"
    cfg = write_config(
        tmp_path / "watcher.toml",
        '[[handlers]]\ntype = "log"\n'
        '[[handlers]]\ntype = "wtest_plugin:ActionFile"\n'
        f'path = "{out}"\nevents = ["service.*", "maintenance.*"]\n',
    )
    path = [str(plugins), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in path if p)}
    checked = cli("config", "check", config=cfg, data_dir=data_dir, env=env)
    assert checked.returncode == 0, checked.stderr
    unimportable = cli("config", "check", config=cfg, data_dir=data_dir)
    assert unimportable.returncode == 2
    assert "could not import module 'wtest_plugin'" in unimportable.stderr
    proc = service(cfg, env=env)
    entered = cli("enter", data_dir=data_dir)
    assert entered.returncode == 0, entered.stderr
    proc.wait_for("maintenance.entered")
    assert proc.stop() == 0
    received = out.read_text().splitlines()
    expected = [a for a in proc.actions() if a.startswith(("service.", "maintenance."))]
    assert received == expected
    assert {"service.ready", "maintenance.entered", "service.stopped"} <= set(received)


ENTRY_JOB = """
class Hello:
    maintenance_default = False
    retry_safe = True

    def check_args(self, args):
        return dict(args)

    async def run(self, ctx):
        return {"hello": ctx.name}


JOB = Hello()
"""


def test_entry_point_plugins_are_found_by_name(
    tmp_path: Path, data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """Handlers and jobs registered in the ``watcher.handlers``/``watcher.jobs`` entry-point
    groups of an installed distribution are used by their plain names."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "wtest_ep_plugin.py").write_text(PLUGIN + ENTRY_JOB)
    dist = site / "wtest_ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wtest-ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[watcher.handlers]\nactionfile = wtest_ep_plugin:ActionFile\n\n"
        "[watcher.jobs]\nhello = wtest_ep_plugin:JOB\n"
    )
    out = tmp_path / "actions"
    cfg = write_config(
        tmp_path / "watcher.toml",
        '[[handlers]]\ntype = "log"\n'
        f'[[handlers]]\ntype = "actionfile"\npath = "{out}"\nevents = ["job.*"]\n'
        '[[jobs]]\nname = "greet"\ntype = "hello"\n',
    )
    path = [str(site), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in path if p)}
    assert cli("config", "check", config=cfg, data_dir=data_dir, env=env).returncode == 0
    missing = cli("config", "check", config=cfg, data_dir=data_dir)
    assert missing.returncode == 2
    assert "no watcher.handlers plugin named 'actionfile'" in missing.stderr
    proc = service(cfg, env=env)
    assert cli("trigger", "greet", data_dir=data_dir, config=cfg, env=env).returncode == 0
    proc.wait_for("job.finished", lambda e: e["watcher"]["result"] == {"hello": "greet"})
    assert proc.stop() == 0
    assert out.read_text().splitlines()[:2] == ["job.started", "job.finished"]
