"""Command job with real processes: environment, exit status, timeouts, process groups."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from watcher.jobs.base import ArgumentError, DataPaths, JobContext, JobFailed
from watcher.jobs.command import JOB, TAIL_BYTES, CommandJob

PY = sys.executable

#: Starts a grandchild that writes its pid file (after ignoring SIGTERM when asked), waits.
SPAWNER = """
import subprocess, sys, time
ignore = sys.argv[2] == "ignore"
grandchild = (
    "import os, signal, sys, time\\n"
    + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if ignore else "")
    + "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\\n"
    + "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\\n"
    + "time.sleep(600)\\n"
)
subprocess.Popen([sys.executable, "-c", grandchild, sys.argv[1]])
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def context(
    tmp_path: Path,
    args: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    cancelled: threading.Event | None = None,
) -> JobContext:
    """A job context for a command job named ``reindex``."""
    mw = tmp_path / "mw"
    paths = DataPaths(
        tmp_path, mw / "data" / "maint", mw / "data", mw / "file", mw, mw / "log", mw / "watcher"
    )
    return JobContext(
        "reindex", "command", paths, args, env=env or {}, cancelled=cancelled or threading.Event()
    )


@pytest.mark.asyncio
async def test_success_sees_the_job_environment(tmp_path: Path) -> None:
    """A command sees watcher's, the context's and the job's variables, and its output returns."""
    names = [
        "WATCHER_JOB_NAME",
        "WATCHER_JOB_TYPE",
        "WATCHER_DATA_DIR",
        "WATCHER_JOB_ARGS",
        "FROM_CTX",
        "FROM_ARGS",
        "PATH",
    ]
    script = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
    args = {"argv": [PY, "-c", script], "env": {"FROM_ARGS": "2"}, "timeout": "30s"}
    result = await JOB.run(context(tmp_path, args, env={"FROM_CTX": "1"}))
    seen = json.loads(result["stdout"])
    assert result["returncode"] == 0 and result["stderr"] == ""
    assert seen["WATCHER_JOB_NAME"] == "reindex" and seen["WATCHER_JOB_TYPE"] == "command"
    assert seen["WATCHER_DATA_DIR"] == str(tmp_path)
    assert (seen["FROM_CTX"], seen["FROM_ARGS"], seen["PATH"]) == ("1", "2", os.environ["PATH"])
    assert json.loads(seen["WATCHER_JOB_ARGS"]) == {
        "argv": args["argv"],
        "env": {"FROM_ARGS": "2"},
        "timeout": 30.0,
    }


@pytest.mark.asyncio
async def test_nonzero_exit_fails_with_the_status_and_output(tmp_path: Path) -> None:
    """A non-zero exit is ``exit_status`` with the code and the output tails."""
    script = "import sys; print('partial'); sys.stderr.write('broken index'); sys.exit(3)"
    with pytest.raises(JobFailed) as info:
        await JOB.run(context(tmp_path, {"argv": [PY, "-c", script]}))
    assert info.value.reason == "exit_status"
    assert info.value.details["returncode"] == 3
    assert info.value.details["stderr"] == "broken index"
    assert info.value.details["stdout"] == "partial\n"


@pytest.mark.asyncio
async def test_output_keeps_only_the_tail(tmp_path: Path) -> None:
    """Only the last 64 KiB of a long output is kept."""
    script = "import sys; sys.stdout.write('a' * 200_000 + 'END')"
    result = await JOB.run(context(tmp_path, {"argv": [PY, "-c", script]}))
    assert len(result["stdout"]) == TAIL_BYTES and result["stdout"].endswith("aEND")


@pytest.mark.asyncio
@pytest.mark.parametrize("grandchild", ["obey", "ignore"])
async def test_timeout_kills_the_whole_process_group(tmp_path: Path, grandchild: str) -> None:
    """On timeout the child and its child die, SIGKILL following SIGTERM when it is ignored."""
    pid_file = tmp_path / "grandchild.pid"
    job = CommandJob(kill_grace=0.2)
    args = {"argv": [PY, "-c", SPAWNER, str(pid_file), grandchild], "timeout": 2}
    with pytest.raises(JobFailed) as info:
        await job.run(context(tmp_path, args))
    assert info.value.reason == "timeout" and info.value.details["timeout"] == 2.0
    assert not alive(int(pid_file.read_text()))


@pytest.mark.asyncio
async def test_cancelled_job_stops_the_command(tmp_path: Path) -> None:
    """A job whose cancel flag is set stops its command and fails as ``cancelled``."""
    flag = threading.Event()
    flag.set()
    with pytest.raises(JobFailed) as info:
        await JOB.run(
            context(tmp_path, {"argv": [PY, "-c", "import time; time.sleep(600)"]}, cancelled=flag)
        )
    assert info.value.reason == "cancelled"


@pytest.mark.asyncio
async def test_missing_program_fails_to_spawn(tmp_path: Path) -> None:
    """A program that does not exist is ``spawn_failed``, not a crash."""
    with pytest.raises(JobFailed) as info:
        await JOB.run(context(tmp_path, {"argv": [str(tmp_path / "nope")]}))
    assert info.value.reason == "spawn_failed"


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ({}, "argv"),
        ({"argv": []}, "argv"),
        ({"argv": "ls -l"}, "argv"),
        ({"argv": ["ls", 3]}, "argv"),
        ({"argv": [""]}, "argv"),
        ({"argv": ["ls"], "timeout": 0}, "timeout"),
        ({"argv": ["ls"], "timeout": "soon"}, "timeout"),
        ({"argv": ["ls"], "timeout": True}, "timeout"),
        ({"argv": ["ls"], "env": ["A=1"]}, "env"),
        ({"argv": ["ls"], "env": {"A": 1}}, "env"),
        ({"argv": ["ls"], "env": {"A=B": "1"}}, "env"),
        ({"argv": ["ls"], "shell": True}, "shell"),
    ],
)
def test_check_args_names_the_bad_argument(args: dict[str, object], word: str) -> None:
    """Bad or missing arguments raise ``ArgumentError`` naming the argument."""
    with pytest.raises(ArgumentError, match=word):
        JOB.check_args(args)


def test_check_args_normalises() -> None:
    """Durations become seconds, tuples lists, and missing options their defaults."""
    assert JOB.check_args({"argv": ("ls", "-l"), "timeout": "30m"}) == {
        "argv": ["ls", "-l"],
        "timeout": 1800.0,
        "env": {},
    }
    assert not JOB.maintenance_default and not JOB.retry_safe and JOB.path_args == ()
