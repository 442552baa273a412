"""Restore of back<ID> (when asked), the manual's data_bak/file_bak names, chattr +i handled."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_jobs_backup_restore import NOW, damage, make_db, make_paths, run_backup
from watcher.jobs import restore as restore_mod
from watcher.jobs.base import ArgumentError, DataPaths, JobFailed
from watcher.jobs.restore import JOB as RESTORE
from watcher.jobs.restore import restore
from watcher.system.immutable import is_immutable, set_immutable


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[DataPaths]:
    """Live data, files and a read-only back1 (data and file) under ``tmp_path/app``."""
    p = make_paths(tmp_path / "app")
    (p.files / "ws1").mkdir(parents=True)
    p.data.mkdir(parents=True)
    make_db(p.data / "main.db", ["alice", "bob"])
    (p.files / "ws1" / "a.txt").write_text("attachment a")
    back = p.archive_root / "back1"
    (back / "data").mkdir(parents=True)
    (back / "file" / "ws1").mkdir(parents=True)
    make_db(back / "data" / "main.db", ["archived"])
    (back / "file" / "ws1" / "old.txt").write_text("old attachment")
    read_only(back)
    p.maint_file.write_text("{}")
    yield p
    for root in p.archive_root.glob("back*"):
        set_immutable(root, False)  # so that pytest can remove the tree


def read_only(root: Path) -> None:
    """Files 0444 and directories 0555, as an archive is."""
    for dirpath, _dirs, names in os.walk(root, topdown=False):
        for name in names:
            os.chmod(Path(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


def writable(root: Path) -> None:
    """Undo ``read_only`` so a test can damage the archive."""
    for dirpath, _dirs, names in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in names:
            os.chmod(Path(dirpath, name), 0o644)


def lose_an_archived_file(paths: DataPaths) -> Path:
    """Delete one attachment from the live back1 (a damaged archive); its path."""
    back = paths.archive_root / "back1"
    writable(back)
    gone = back / "file" / "ws1" / "old.txt"
    gone.unlink()
    read_only(back)
    return gone


def modes(root: Path) -> set[int]:
    """The permission bits of everything under ``root``, ``root`` included."""
    found = {root.stat().st_mode & 0o777}
    for dirpath, dirs, names in os.walk(root):
        found |= {Path(dirpath, n).stat().st_mode & 0o777 for n in [*dirs, *names]}
    return found


def test_originals_keep_the_manual_names_then_timestamped(paths: DataPaths, tmp_path: Path) -> None:
    """The first restore sets aside data_bak and file_bak; the next, with those taken, adds <T>."""
    root = run_backup(paths, tmp_path / "dest")
    first = restore(paths, root, now=NOW)
    assert (first["data_bak"], first["file_bak"]) == (
        str(paths.archive_root / "data_bak"),
        str(paths.archive_root / "file_bak"),
    )
    damage(paths)
    second = restore(paths, root, now=NOW + timedelta(hours=1))
    assert Path(second["data_bak"]).name == "data_bak.20261126T055043Z"
    assert Path(second["file_bak"]).name == "file_bak.20261126T055043Z"
    assert (Path(second["file_bak"]) / "ws1" / "a.txt").read_text() == "overwritten"
    assert (paths.archive_root / "data_bak" / "main.db").is_file()


def test_only_the_taken_name_gets_a_timestamp(paths: DataPaths, tmp_path: Path) -> None:
    """An existing file_bak (but no data_bak) timestamps file's original only."""
    root = run_backup(paths, tmp_path / "dest")
    (paths.archive_root / "file_bak").mkdir()
    result = restore(paths, root, now=NOW)
    assert Path(result["data_bak"]).name == "data_bak"
    assert Path(result["file_bak"]).name == "file_bak.20261126T045043Z"


def test_live_archives_left_alone_by_default(paths: DataPaths, tmp_path: Path) -> None:
    """Without archives=true the live back1 is untouched (same inode) and nothing is set aside."""
    root = run_backup(paths, tmp_path / "dest")
    gone = lose_an_archived_file(paths)
    inode = (paths.archive_root / "back1").stat().st_ino
    result = restore(paths, root, now=NOW)
    assert (paths.archive_root / "back1").stat().st_ino == inode and not gone.exists()
    assert not (paths.archive_root / "back1_bak").exists() and "archives" not in result


def test_archives_restored_when_asked(paths: DataPaths, tmp_path: Path) -> None:
    """archives=true swaps in the set's back1 read-only; the live one becomes back1_bak."""
    root = run_backup(paths, tmp_path / "dest")
    gone = lose_an_archived_file(paths)
    result = restore(paths, root, now=NOW, archives=True, immutable=False)
    back, bak = paths.archive_root / "back1", paths.archive_root / "back1_bak"
    assert gone.read_text() == "old attachment"
    assert (back / "data" / "main.db").is_file() and not (bak / "file" / "ws1" / "old.txt").exists()
    assert modes(back) == {0o555, 0o444}
    assert result["archives"] == [str(back)] and result["archives_bak"] == [str(bak)]
    assert result["immutable"] is False and "not asked" in result["immutable_problem"]
    assert not list(paths.archive_root.glob("*.restore.*"))


def test_missing_live_archive_is_put_back(paths: DataPaths, tmp_path: Path) -> None:
    """An archive the live data lost entirely comes back from the set, with nothing set aside."""
    root = run_backup(paths, tmp_path / "dest")
    back = paths.archive_root / "back1"
    writable(back)
    subprocess.run(["rm", "-rf", str(back)], check=True)
    result = restore(paths, root, now=NOW, archives=True, immutable=False)
    assert (back / "file" / "ws1" / "old.txt").read_text() == "old attachment"
    assert result["archives_bak"] == []


def freeze(root: Path) -> None:
    """``chattr +i`` on ``root``, or skip the test where this filesystem or user cannot."""
    problem = set_immutable(root, True)
    if problem is not None:
        pytest.skip(f"chattr +i unavailable here: {problem}")


def test_immutable_live_archive_is_thawed_and_restored_frozen(
    paths: DataPaths, tmp_path: Path
) -> None:
    """A chattr +i live back1 is cleared to be set aside; the restored one is +i again."""
    root = run_backup(paths, tmp_path / "dest")
    gone = lose_an_archived_file(paths)
    freeze(paths.archive_root / "back1")
    result = restore(paths, root, now=NOW, archives=True, immutable=True)
    back, bak = paths.archive_root / "back1", paths.archive_root / "back1_bak"
    assert gone.is_file() and is_immutable(back) and is_immutable(back / "data" / "main.db")
    assert bak.is_dir() and not is_immutable(bak)
    assert result["immutable"] is True and result["immutable_problem"] is None


def test_failed_swap_puts_the_frozen_archive_back(
    paths: DataPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while swapping the archive undoes everything and re-freezes the live back1."""
    root = run_backup(paths, tmp_path / "dest")
    gone = lose_an_archived_file(paths)
    freeze(paths.archive_root / "back1")
    real = restore_mod.exchange

    def failing(a: Path, b: Path) -> bool:
        if b.name == "back1":
            raise OSError(5, "Input/output error", str(a))
        return real(a, b)

    monkeypatch.setattr(restore_mod, "exchange", failing)
    damage(paths)
    with pytest.raises(JobFailed) as failed:
        restore(paths, root, now=NOW, archives=True)
    assert failed.value.reason == "restore_failed"
    assert not gone.exists() and is_immutable(paths.archive_root / "back1")
    assert (paths.files / "ws1" / "a.txt").read_text() == "overwritten"
    assert not list(paths.archive_root.glob("*_bak*")) and not list(
        paths.archive_root.glob("*.restore.*")
    )


@pytest.mark.parametrize(
    ("given", "expected"), [({}, False), ({"archives": True}, True), ({"archives": "true"}, True)]
)
def test_archives_argument(given: dict[str, Any], expected: bool) -> None:
    """``archives`` defaults to false and takes true/false (JSON or text)."""
    assert RESTORE.check_args({"from": "/b/set", **given})["archives"] is expected


def test_archives_argument_rejects_other_values() -> None:
    """A value that is not true or false is one clear error naming the argument."""
    with pytest.raises(ArgumentError, match="archives: expected true or false"):
        RESTORE.check_args({"from": "/b/set", "archives": 3})
