"""The ``page`` handler: the application's maintenance screen written under real maint-file
flips by a real service, the operator's template, and its pure Retry-After decision."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Start, cli, eventually, maint, toml, write_config
from watcher.handlers.page import screen


def config(tmp_path: Path, screen_dir: Path, extra: str = "") -> Path:
    """A log handler and a page handler writing into ``screen_dir``."""
    screen_dir.mkdir(exist_ok=True)
    return write_config(
        tmp_path / "watcher.toml",
        '[[handlers]]\ntype = "log"\n'
        f'[[handlers]]\ntype = "page"\nevents = ["maintenance.*"]\n'
        f"directory = {toml(str(screen_dir))}\n" + extra,
    )


def written(screen_dir: Path, active: bool) -> dict[str, Any]:
    """``maintenance.json`` once it says ``active`` (the handler writes after the event)."""

    def check() -> dict[str, Any] | None:
        info: dict[str, Any] = json.loads((screen_dir / "maintenance.json").read_text())
        return info if info["active"] is active else None

    result: dict[str, Any] = eventually(check)
    return result


def test_screen_follows_cli_enter_with_an_end(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """``enter --for 2h`` writes the message, start and end in the zone and language, and a
    Retry-After of about two hours; ``leave`` writes an inactive screen."""
    out = tmp_path / "screen"
    extra = 'timezone = "Europe/Berlin"\nlanguage = "de"\n'
    proc = service(config(tmp_path, out, extra))
    assert cli("enter", "-m", "Datenbank-Upgrade", "--for", "2h", data_dir=data_dir).returncode == 0
    info = written(out, True)
    assert info["message"] == "Datenbank-Upgrade"
    end = datetime.fromisoformat(info["end"])
    start = datetime.fromisoformat(info["start"])
    assert timedelta(hours=2) - timedelta(seconds=5) < end - start <= timedelta(hours=2)
    assert 7000 < info["retry_after"] <= 7200
    assert (out / "retry-after").read_text() == f"{info['retry_after']}\n"
    html = (out / "maintenance.html").read_text()
    berlin = end.astimezone(ZoneInfo("Europe/Berlin")).strftime("%d.%m.%Y %H:%M")
    assert '<html lang="de">' in html and "Wartungsarbeiten" in html
    assert "Datenbank-Upgrade" in html and f"bis {berlin}" in html
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # atomic: no staging left
    assert cli("leave", data_dir=data_dir).returncode == 0
    assert written(out, False)["end"] is None
    assert proc.stop() == 0


def test_screen_follows_a_hand_made_maint_file(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """An operator creating and deleting the maint file by hand flips the screen too, with the
    default Retry-After (no end known) and the operator's own template."""
    out = tmp_path / "screen"
    template = tmp_path / "screen.html"
    template.write_text("<p lang=$lang>$title|$message|$start|$end|$retry_after</p>\n")
    extra = f"template = {toml(str(template))}\nretry_after = 120\n"
    proc = service(config(tmp_path, out, extra))
    maint(data_dir).write_text("back soon\n")
    info = written(out, True)
    assert info["end"] is None and info["retry_after"] == 120
    html = (out / "maintenance.html").read_text()
    assert html.startswith("<p lang=en>Down for maintenance|")
    assert html.rstrip().endswith("|until further notice|120</p>")
    mark = proc.mark()
    maint(data_dir).unlink()
    proc.wait_for("maintenance.released_by_operator", after=mark)
    assert written(out, False)["active"] is False
    assert proc.stop() == 0


def test_bad_page_options_are_one_line_config_errors(data_dir: Path, tmp_path: Path) -> None:
    """A missing directory or an unknown zone is named on one line, exit 2, no traceback."""
    bad = write_config(
        tmp_path / "bad.toml",
        f'[[handlers]]\ntype = "page"\ndirectory = {toml(str(tmp_path / "nope"))}\n',
    )
    result = cli("run", config=bad, data_dir=data_dir)
    assert result.returncode == 2
    assert "directory" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def hold(since: datetime, until: datetime | None) -> dict[str, Any]:
    """A hold as the maintenance snapshot spells it."""
    return {"since": since.isoformat(), "until": until.isoformat() if until else None}


@pytest.mark.parametrize(
    ("holds", "retry", "end"),
    [
        ([], 300, None),
        ([hold(NOW, NOW + timedelta(minutes=30))], 1800, NOW + timedelta(minutes=30)),
        ([hold(NOW, NOW + timedelta(hours=1)), hold(NOW, None)], 300, None),  # one open hold
        (
            [hold(NOW, NOW + timedelta(hours=1)), hold(NOW, NOW + timedelta(hours=2))],
            7200,
            NOW + timedelta(hours=2),
        ),
        ([hold(NOW, NOW - timedelta(seconds=5))], 1, NOW - timedelta(seconds=5)),  # overdue
    ],
)
def test_retry_after_is_the_time_to_the_last_end(
    holds: list[dict[str, Any]], retry: int, end: datetime | None
) -> None:
    """Retry-After: seconds to the latest end when every hold has one, else the default."""
    info = screen({"active": True, "holds": holds}, NOW, ZoneInfo("UTC"), "en", 300)
    assert info["retry_after"] == retry
    assert info["end"] == (end.isoformat() if end else None)
