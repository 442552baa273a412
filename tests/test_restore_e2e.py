"""A real ``watcher run`` restoring a set with its archive: no watch.degraded, maint file kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Start, allowed_paths, cli, maint, write_config
from tests.test_triggers_e2e import ARCHIVE_TABLES, result, run_trigger, spool_of
from watcher.system.immutable import set_immutable


@pytest.fixture
def thawed(data_dir: Path) -> Iterator[Path]:
    """The data dir; its archives lose ``chattr +i`` at teardown so they can be removed."""
    yield data_dir
    for root in (data_dir / "mw").glob("back*"):
        set_immutable(root, False)


def count(db: Path, table: str) -> int:
    """Rows in ``table`` of ``db``."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    conn.close()
    return int(n)


def test_restore_with_archives_under_manual_maintenance(
    thawed: Path, tmp_path: Path, service: Start
) -> None:
    """archive, backup, damage, restore archives=true: no watch.degraded, still in maintenance."""
    data_dir, backups = thawed, tmp_path / "backups"
    backups.mkdir()
    text = allowed_paths(backups) + ARCHIVE_TABLES.replace("immutable = false", "immutable = true")
    svc = service(write_config(tmp_path / "restore.toml", text))
    spool, mw = spool_of(data_dir), data_dir / "mw"
    run_trigger(svc, spool, "archive.json", {"job": "archive", "args": {"before": "2025-01-01"}})
    assert result(spool, "done", "archive.json")["result"]["id"] == 1
    body = {"job": "backup", "args": {"dest": str(backups)}}
    run_trigger(svc, spool, "backup.json", body)
    made = result(spool, "done", "backup.json")["result"]["set"]
    live_mails = count(mw / "data" / "mail.db", "mails")
    with sqlite3.connect(mw / "data" / "mail.db") as conn:
        conn.execute("DELETE FROM mails")
    conn.close()

    entered = cli("enter", "-m", "Restoring from the backup", data_dir=data_dir)
    assert entered.returncode == 0, entered.stderr
    svc.wait_for("maintenance.entered")
    mark = svc.mark()
    body = {"job": "restore", "args": {"from": made, "archives": True}}
    finished = run_trigger(svc, spool, "restore.json", body)
    assert maint(data_dir).is_file()  # right afterwards: the operator's maintenance holds
    assert "Restoring from the backup" in maint(data_dir).read_text()
    done = result(spool, "done", "restore.json")["result"]
    assert finished["watcher"]["job"]["name"] == "restore"
    assert done["data_bak"] == str(mw / "data_bak") and done["file_bak"] == str(mw / "file_bak")
    assert done["archives"] == [str(mw / "back1")] and done["archives_bak"] == [
        str(mw / "back1_bak")
    ]
    assert count(mw / "data" / "mail.db", "mails") == live_mails
    assert count(mw / "back1" / "data" / "mail.db", "mails") > 0
    actions = svc.actions()[mark:]
    assert "watch.degraded" not in actions and "maintenance.left" not in actions

    mark = svc.mark()
    left = cli("leave", data_dir=data_dir)
    assert left.returncode == 0, left.stderr
    svc.wait_for("maintenance.left", after=mark)
    assert not maint(data_dir).exists()
    mark = svc.mark()
    maint(data_dir).touch()  # the watch is on the restored mw/data
    svc.wait_for("maintenance.adopted", after=mark)
    assert "watch.degraded" not in svc.actions()
