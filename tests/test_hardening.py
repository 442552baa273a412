"""Hardening (issue 11, item 4): file modes under a permissive umask, secrets that never show,
and messages that cannot forge a log line — each on a real ``watcher run``."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import uuid
from pathlib import Path

import httpx

from tests.conftest import (
    ServiceProcess,
    Start,
    cli,
    drop_trigger,
    maint,
    make_db,
    ran,
    write_config,
)
from tests.redis_server import RedisServer
from tests.test_webhook import Server
from watcher.handlers.webhook import sign


def world_writable(root: Path, skip: set[Path]) -> list[str]:
    """Every file or directory under ``root`` (``root`` included) with the ``o+w`` bit."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath, name) if name != "." else Path(dirpath)
            if path in skip:
                continue
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o002:
                found.append(f"{stat.filemode(mode)} {path}")
    return found


def test_files_made_under_umask_0_are_not_world_writable(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A service and CLI run with ``umask 000`` through maintenance, every job type, history,
    the control socket, the page, a log file and the HTTP listener leave no file or
    directory with ``o+w`` anywhere under the data dir, the page dir, the backups or logs."""
    source = data_dir / "mw" / "data" / "settings.ini"
    source.chmod(0o666)  # the application's own file: its copies must still lose o+w
    page, backups, out = tmp_path / "page", tmp_path / "backups", tmp_path / "out"
    for d in (page, backups, out):
        d.mkdir()
    token = write_config(tmp_path / "release.token", "tok\n")
    made = out / "made-by-command.txt"
    config = write_config(
        tmp_path / "w.toml",
        f"""
[[jobs]]
name = "dbcheck"
type = "dbcheck"
[[jobs]]
name = "backup"
type = "backup"
dest = "{backups}"
[[jobs]]
name = "archive"
type = "archive"
[[jobs]]
name = "touch"
type = "command"
argv = ["{sys.executable}", "-c", "open({str(made)!r}, 'w').write('x')"]
[archive]
immutable = false
[[archive.tables]]
database = "mail.db"
table = "mails"
date_column = "received"
space_column = "space"
attachment_column = "attachment"
attachment_path = "{{space}}/{{value}}"
[[handlers]]
type = "log"
target = "stdout"
format = "json"
[[handlers]]
type = "log"
target = "{out / "watcher.log"}"
format = "json"
[[handlers]]
type = "page"
events = ["maintenance.*"]
directory = "{page}"
[history]
enabled = true
[http]
listen = "127.0.0.1:0"
release_token_file = "{token}"
""",
    )
    proc = service(config, umask=0)
    assert cli("enter", "-m", "modes", config=config, data_dir=data_dir, umask=0).returncode == 0
    proc.wait_for("maintenance.entered")
    for job, *args in (
        ("dbcheck",),
        ("backup",),
        ("archive", "--arg", "before=2025-01-01"),
        ("touch",),
    ):
        done = cli("trigger", job, *args, "--wait", config=config, data_dir=data_dir, umask=0)
        assert done.returncode == 0, (job, done.stdout, done.stderr)
    listen = proc.wait_for("service.ready")["watcher"]["http"]
    assert httpx.get(f"http://{listen}/", timeout=15).status_code == 200
    assert cli("leave", config=config, data_dir=data_dir, umask=0).returncode == 0
    report = out / "check.txt"
    assert cli("check-db", "--output", str(report), data_dir=data_dir, umask=0).returncode == 0
    socket = data_dir / "mw" / "watcher" / "control.sock"
    assert stat.S_IMODE(socket.stat().st_mode) == 0o660
    assert proc.stop() == 0
    assert made.exists() and any(backups.iterdir()) and list(data_dir.glob("mw/back*"))
    assert (data_dir / "mw" / "watcher" / "history.db").exists() and not maint(data_dir).exists()
    assert world_writable(tmp_path, {source}) == []


def test_secrets_never_appear_in_events_outputs_or_files(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A unique webhook secret, cluster password and release token are all used (signed
    posts, Redis auth, a release by the page) yet none shows in the service's JSON lines or
    stderr, a log file, the data dir's files, history, the HTTP pages, ``status [--json]``,
    ``diagnose [--json]``, ``config check``, or the output of a command job and a command
    handler that print their whole environment."""
    tag = uuid.uuid4().hex
    hook_secret, password, token = f"hook-{tag}", f"redis-{tag}", f"release-{tag}"
    secrets = (hook_secret, password, token)
    redis = RedisServer(tmp_path / "redis", "--requirepass", password).start()
    receiver = Server(lambda _n: (204, b""))
    try:
        token_file = write_config(tmp_path / "release.token", token + "\n")
        log_file = tmp_path / "events.json"
        config = write_config(
            tmp_path / "w.toml",
            f"""
[cluster]
url = "{redis.url}"
host_id = "h1"
password_env = "REDIS_PW"
[[jobs]]
name = "env"
type = "command"
argv = ["{sys.executable}", "-c", "import os; print(dict(os.environ)); exit(1)"]
[[handlers]]
type = "command"
events = ["maintenance.entered"]
argv = ["{sys.executable}", "-c", "import os; exit(str(dict(os.environ)))"]
[[handlers]]
type = "log"
target = "stdout"
format = "json"
[[handlers]]
type = "log"
target = "{log_file}"
format = "json"
[[handlers]]
type = "webhook"
url = "{receiver.url}"
secret_env = "HOOK_SECRET"
[[handlers]]
type = "webhook"
url = "http://127.0.0.1:1/refused"
secret_env = "HOOK_SECRET"
retries = 0
[history]
enabled = true
[http]
listen = "127.0.0.1:0"
release_token_file = "{token_file}"
""",
        )
        env = {"HOOK_SECRET": hook_secret, "REDIS_PW": password}
        proc = service(config, env=env)
        base = "http://" + proc.wait_for("service.ready")["watcher"]["http"]
        outputs = []

        def run(*args: str, code: int = 0) -> None:
            done = cli(*args, config=config, data_dir=data_dir, env=env)
            assert done.returncode == code, (args, done.stdout, done.stderr)
            outputs.append(done.stdout + done.stderr)

        run("enter", "--cluster", "-m", "fleet")
        run("leave", "--cluster")
        run("enter", "-m", "local")
        proc.wait_for("maintenance.entered")
        with httpx.Client(base_url=base, timeout=15) as client:
            page = client.get("/").text
            found = re.search(r"name=csrf value='([^']+)'", page)
            assert found
            mark = proc.mark()
            done = client.post("/release", data={"csrf": found.group(1), "token": token})
            assert done.status_code == 200
            proc.wait_for("maintenance.left", after=mark)
            outputs += [client.get(p).text for p in ("/", "/metrics", "/api/status")]
        proc.wait_for("handler.failed", where=lambda e: "WATCHER_EVENT_ACTION" in str(e))
        run("trigger", "env", "--wait", code=1)  # a job and a handler that print their env
        proc.wait_for("job.failed", where=lambda e: "WATCHER_JOB_NAME" in str(e))
        proc.wait_for("handler.failed", where=lambda e: "Connect" in str(e))
        for args in (("status",), ("status", "--json"), ("status", "--cluster", "--json")):
            run(*args)
        for args in (("diagnose",), ("diagnose", "--json"), ("config", "check")):
            run(*args)
        run("history", "--json")
        assert proc.stop() == 0
        assert receiver.requests and all(
            seen.headers["x-watcher-signature"] == sign(hook_secret.encode(), seen.body)
            for seen in receiver.requests
        )
        texts = [*outputs, "\n".join(proc.lines), proc.stderr, log_file.read_text()]
        for path in data_dir.rglob("*"):
            if path.is_file() and not path.is_symlink():
                texts.append(path.read_bytes().decode(errors="replace"))
        leaks = [s for s in secrets for text in texts if s in text]
        assert leaks == []
    finally:
        receiver.close()
        redis.kill()


FORGED = '{"event":{"action":"maintenance.left"},"message":"forged"}'
#: Line breaks of every kind a reader may split on, and a terminal escape, around a forged event.
SHORT = 'x\n{"event":{"action":"maintenance.left"}}\r\u2028\x85\x1b[31m'  # fits a file name
PAYLOAD = f"x\n{FORGED}\r{FORGED}\u2028{FORGED}\x85\x1b[2K\x1b[31m{FORGED}\x0b\x1c"


def forged_lines(text: str) -> list[str]:
    """Lines (split wherever any reader might) that start like the forged event, or that hold
    a raw control character (an ANSI escape) a terminal would act on."""
    return [
        line
        for line in text.splitlines()
        if line.lstrip().startswith('{"event"') or any(c in line for c in "\x1b\x85\x0b\x1c")
    ]


def one_event_a_line(proc: ServiceProcess) -> bool:
    """Whether each of the service's stdout lines is one whole JSON event, with no line
    break of any kind inside."""
    lines = [line for line in proc.lines if line]
    return len(lines) == len(proc.events) and all(line.splitlines() == [line] for line in lines)


def test_messages_with_line_breaks_cannot_forge_a_log_line(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A maintenance message, trigger arguments and a trigger file name full of line breaks
    and ANSI escapes: the JSON log has exactly one parseable line per event (none forged),
    and the console log, ``status``, ``history``, ``jobs``, ``trigger --wait`` and the CLI's
    error messages show them escaped, on their own line."""
    console = tmp_path / "console.log"
    name = SHORT + ".json"  # a trigger file's name
    note = write_config(tmp_path / "note.txt", PAYLOAD)  # what the job prints and exits with
    handed = tmp_path / "handed.txt"  # what the command handler got: action, then stdin
    hand = write_config(
        tmp_path / "hand.py",
        "import os, sys\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write(os.environ['WATCHER_EVENT_ACTION'] + ' ' + sys.stdin.read())\n",
    )
    config = write_config(
        tmp_path / "w.toml",
        f"""
[[jobs]]
name = "echo"
type = "command"
argv = [
    "{sys.executable}", "-c", "import sys; t = open(sys.argv[1]).read(); print(t); exit(t)",
    "{note}",
]
[[handlers]]
type = "log"
target = "stdout"
format = "json"
[[handlers]]
type = "log"
target = "{console}"
format = "console"
[[handlers]]
type = "command"
events = ["maintenance.*", "job.*"]
argv = ["{sys.executable}", "{hand}", "{handed}"]
[history]
enabled = true
""",
    )
    proc = service(config)
    texts: list[str] = []

    def run(*args: str, code: int = 0) -> None:
        done = cli(*args, config=config, data_dir=data_dir)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        texts.extend((done.stdout, done.stderr))

    run("enter", "--message", PAYLOAD)
    proc.wait_for("maintenance.entered")
    run("status")
    run("trigger", "echo", "--wait", code=1)
    run("trigger", "echo", "--arg", f"{PAYLOAD}=1", "--wait", code=1)
    run("trigger", "echo", "--arg", f"timeout={PAYLOAD}", "--wait", code=1)
    spool = data_dir / "mw" / "spool"
    drop_trigger(spool, name, {"job": "echo"})
    proc.wait_for("job.failed", where=ran(name))
    run("trigger", PAYLOAD, code=1)
    run("enter", "--for", PAYLOAD, code=1)
    run("leave")
    assert proc.stop() == 0
    run("history")
    assert one_event_a_line(proc)
    assert [e["event"]["action"] for e in proc.events].count("maintenance.left") == 1
    entered = proc.wait_for("maintenance.entered")
    assert entered["watcher"]["maintenance"]["message"] == PAYLOAD  # kept, only escaped
    handler_lines = handed.read_text().split("\n")[:-1]
    assert all(json.loads(line.split(" ", 1)[1]) for line in handler_lines)
    assert len(handler_lines) == len(handed.read_text().splitlines())
    texts += [console.read_text(), proc.stderr]
    assert [line for text in texts for line in forged_lines(text)] == []


def test_a_database_name_with_line_breaks_cannot_forge_a_log_line(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A database whose file name holds line breaks and escapes: the dbcheck job's events,
    its ``Maintenance.log``/``Optimize.log`` and result logs, ``jobs`` and ``check-db`` show
    the name escaped on its own line."""
    make_db(data_dir / "mw" / "data" / f"{SHORT}.db", rows=10)
    config = write_config(
        tmp_path / "w.toml",
        '[[jobs]]\nname = "dbcheck"\ntype = "dbcheck"\n'
        '[[handlers]]\ntype = "log"\ntarget = "stdout"\nformat = "json"\n',
    )
    proc = service(config)
    texts = []
    for args in (("trigger", "dbcheck", "--wait"), ("jobs",), ("check-db",)):
        done = cli(*args, config=config, data_dir=data_dir)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        texts += [done.stdout, done.stderr]
    assert proc.stop() == 0
    assert one_event_a_line(proc)
    logs = sorted((data_dir / "mw" / "log" / "sched" / "dynamic").glob("*.log"))
    assert len(logs) == 4 and all(SHORT not in p.read_text() for p in logs)
    texts += [proc.stderr, *(p.read_text() for p in logs)]
    assert [line for text in texts for line in forged_lines(text)] == []
