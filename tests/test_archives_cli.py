"""``watcher archives`` lists every archive; ``archives export ID TABLE --csv`` round-trips."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.conftest import write_config
from watcher.cli.main import main
from watcher.config import ArchiveConfig
from watcher.demo import MAIL_TABLES, add_mail_data
from watcher.jobs.archive import archive
from watcher.jobs.archives import read_only_uri
from watcher.jobs.base import DataPaths

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A mail-shaped data dir archived twice: ws1 before 2025, then everything before mid-2025."""
    data_dir = tmp_path / "app"
    mw = data_dir / "mw"
    add_mail_data(mw, 200, date(2024, 1, 1), 730)
    paths = DataPaths(
        data_dir, mw / "data/maint", mw / "data", mw / "file", mw, mw / "log", mw / "watcher"
    )
    config = ArchiveConfig(tables=MAIL_TABLES, immutable=False)
    archive(paths, date(2025, 1, 1), now=NOW, config=config, space="ws1")
    archive(paths, date(2025, 7, 1), now=NOW, config=config)
    return data_dir


def test_archives_lists_both(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json gives space, period, directory, rows and bytes per table for each archive."""
    assert main(["archives", "--json", "--data-dir", str(root)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in listed] == [1, 2]
    assert [a["space"] for a in listed] == ["ws1", None]
    assert listed[0]["period"] == {"from": "2024-01-01", "before": "2025-01-01"}
    assert listed[1]["directory"] == str(root / "mw" / "back2")
    assert {t["table"] for t in listed[1]["tables"]} == {"mails", "calls", "customers"}
    assert all(t["rows"] > 0 and t["bytes"] > 0 for a in listed for t in a["tables"])
    assert main(["archives", "--data-dir", str(root)]) == 0
    text = capsys.readouterr().out
    assert "back1  space ws1  2024-01-01 … before 2025-01-01" in text
    assert "mail.db:mails" in text


def test_csv_export_round_trips(root: Path, tmp_path: Path) -> None:
    """The CSV has a header and exactly the archived rows, values as text."""
    out = tmp_path / "mails.csv"
    args = ["archives", "export", "2", "mail.db:mails", "--csv", "--output", str(out)]
    assert main([*args, "--data-dir", str(root)]) == 0
    with sqlite3.connect(read_only_uri(root / "mw/back2/data/mail.db"), uri=True) as conn:
        cur = conn.execute("SELECT * FROM mails ORDER BY id")
        expected = [[d[0] for d in cur.description]] + [
            ["" if v is None else str(v) for v in row] for row in cur
        ]
    conn.close()
    assert list(csv.reader(io.StringIO(out.read_text()))) == expected
    assert not list((root / "mw/back2/data").glob("*-*")), "reading left side files"


def test_export_unknown_archive_or_table_is_one_line(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown ID or table exits 1 with one line naming what exists."""
    with pytest.raises(SystemExit) as caught:
        main(["archives", "export", "9", "mails", "--csv", "--data-dir", str(root)])
    assert caught.value.code == 1
    assert "no archive back9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["archives", "export", "1", "customers", "--csv", "--data-dir", str(root)])
    err = capsys.readouterr().err
    assert "is not in it" in err and "mail.db:mails" in err and len(err.splitlines()) == 1


def test_archive_files_read_only(root: Path) -> None:
    """Every archived file is 0444."""
    for dirpath, _dirs, names in os.walk(root / "mw" / "back1"):
        for name in names:
            assert os.stat(Path(dirpath, name)).st_mode & 0o777 == 0o444


def test_archives_from_config(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a config naming data_dir, archives needs no --data-dir."""
    cfg = write_config(tmp_path / "w.toml", f'data_dir = "{root}"\n')
    assert main(["archives", "--config", str(cfg)]) == 0
    assert "back2" in capsys.readouterr().out
