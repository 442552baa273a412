"""``watcher archive prepare`` writes ./mwsave; run, it archives through the running service."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import Start, cli, write_config
from tests.test_triggers_e2e import ARCHIVE_TABLES
from watcher.cli.mwsave import script
from watcher.registry import load_config

OLD_WS1 = "SELECT count(*) FROM mails WHERE space = 'ws1' AND received < '2025'"
OLD_WS2 = "SELECT count(*) FROM mails WHERE space = 'ws2' AND received < '2025'"


def count(db: Path, sql: str) -> int:
    """The single number ``sql`` returns from ``db`` (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (n,) = conn.execute(sql).fetchone()
    conn.close()
    return int(n)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config naming the demo's mails table for the archive."""
    return write_config(tmp_path / "watcher.toml", ARCHIVE_TABLES)


def run_mwsave(mwsave: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``./mwsave`` as the operator would, from ``cwd``, with no watcher variables set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER")}
    return subprocess.run(
        [str(mwsave)], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )


def test_mwsave_archives_through_the_service(
    data_dir: Path, config: Path, tmp_path: Path, service: Start
) -> None:
    """prepare, then ./mwsave from elsewhere: ws1's old rows move to back1, progress shown."""
    svc = service(config)
    live = data_dir / "mw" / "data" / "mail.db"
    old_ws1, old_ws2 = count(live, OLD_WS1), count(live, OLD_WS2)
    assert old_ws1 > 0 and old_ws2 > 0
    done = cli(
        "archive", "prepare", "--before", "2025-01-01", "--space", "ws1",
        data_dir=data_dir, config=config,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    mwsave = data_dir / "mwsave"
    assert done.stdout.startswith(f"{mwsave} written")
    mode = mwsave.stat().st_mode
    assert stat.S_IMODE(mode) == 0o750 and not mode & stat.S_IWOTH
    text = mwsave.read_text()
    assert text.startswith("#!/bin/sh\n") and f"# config: {config}" in text

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mark = svc.mark()
    ran = run_mwsave(mwsave, elsewhere)
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    lines = ran.stdout.splitlines()
    assert any(line.startswith("progress: ") and "archive" in line for line in lines), lines
    assert "finished" in ran.stdout and "space: ws1" in ran.stdout
    back = data_dir / "mw" / "back1" / "data" / "mail.db"
    assert count(live, OLD_WS1) == 0 and count(live, OLD_WS2) == old_ws2
    assert count(back, "SELECT count(*) FROM mails") == old_ws1
    svc.wait_for("job.progress", lambda e: e["watcher"]["job"]["name"] == "archive", after=mark)
    held = svc.wait_for("maintenance.hold_added", after=mark)
    assert held["watcher"]["hold"]["name"] == "archive"


def test_mwsave_without_a_service_starts_nothing(
    data_dir: Path, config: Path, tmp_path: Path
) -> None:
    """./mwsave with no service running exits 1 in one line and leaves no trigger behind."""
    done = cli("archive", "prepare", "--before", "2025-01-01", data_dir=data_dir, config=config)
    assert done.returncode == 0, done.stderr
    ran = run_mwsave(data_dir / "mwsave", tmp_path)
    assert ran.returncode == 1 and ran.stderr.count("\n") == 1, ran.stderr
    assert "service is not running" in ran.stderr
    spool = data_dir / "mw" / "spool"
    assert not [p for p in spool.iterdir() if p.name.startswith("archive")]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--before", "2025-02-30"], "before: expected a date YYYY-MM-DD, got '2025-02-30'"),
        (["--before", "yesterday"], "before: expected a date"),
        (["--before", "2025-01-01", "--space", "1"], "space: expected a mail space like ws1"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    data_dir: Path, config: Path, argv: list[str], says: str
) -> None:
    """A bad DATE or space is refused at prepare time: exit 2, one line, no mwsave written."""
    done = cli("archive", "prepare", *argv, data_dir=data_dir, config=config)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr and not (data_dir / "mwsave").exists()


def test_no_archive_tables_is_refused(data_dir: Path) -> None:
    """Without [[archive.tables]] prepare says the archive would move nothing (exit 2)."""
    done = cli("archive", "prepare", "--before", "2025-01-01", data_dir=data_dir)
    assert done.returncode == 2 and "no [[archive.tables]]" in done.stderr
    assert not (data_dir / "mwsave").exists()


def test_paths_with_spaces_are_quoted(tmp_path: Path) -> None:
    """A data dir and config path with spaces and quotes still make a working command line."""
    odd = tmp_path / "it's a dir"
    odd.mkdir()
    config = load_config(write_config(odd / "w.toml", ARCHIVE_TABLES), odd)
    text = script(config, {"before": "2025-01-01"}, datetime(2026, 1, 1, tzinfo=UTC))
    line = text.splitlines()[-1]
    assert line.startswith("exec ")
    argv = subprocess.run(
        ["sh", "-c", f"set -- {line[5:]}; printf '%s\\n' \"$@\""],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert argv[argv.index("--config") + 1] == str(odd / "w.toml")
    assert argv[argv.index("--data-dir") + 1] == str(odd)
