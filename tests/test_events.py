"""Event renderings: the ECS JSON document of DESIGN §6, and the console line."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import ServiceProcess, cli, write_config
from watcher.events.record import (
    ECS_VERSION,
    Event,
    Origin,
    render_console,
    render_json,
    to_document,
)

ECS_TOP = {"@timestamp", "log.level", "message", "ecs.version"}
RFC3339_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
ORIGIN = Origin(data_dir="/srv/app", service_name="watcher", version="0.1.0", host="srv1", pid=4121)
HOLDS = [{"reason": "manual", "name": "cli"}]


def sample(**overrides: Any) -> Event:
    """The DESIGN §6 example event (at 13:50:43.123456 Tokyo time = 04:50:43.123456 UTC)."""
    values: dict[str, Any] = {
        "action": "maintenance.entered",
        "message": "maintenance entered",
        "level": "info",
        "fields": {"maintenance": {"active": True, "holds": HOLDS, "message": "back soon"}},
        "time": datetime(2026, 11, 26, 13, 50, 43, 123456, tzinfo=ZoneInfo("Asia/Tokyo")),
        "sequence": 42,
        "id": "5f0c6b8e-1d2a-4c8e-9b7a-0e1f2a3b4c5d",
    }
    return Event(**{**values, **overrides})


def test_json_rendering_is_exactly_the_design_document() -> None:
    """The JSON line is the DESIGN §6 document: four ECS keys on top, nested objects, Z time."""
    line = render_json(sample(), ORIGIN)
    assert b"\n" not in line
    assert json.loads(line) == {
        "@timestamp": "2026-11-26T04:50:43.123456Z",
        "log.level": "info",
        "message": "maintenance entered",
        "ecs.version": "8.11.0",
        "event": {
            "kind": "event",
            "action": "maintenance.entered",
            "sequence": 42,
            "id": "5f0c6b8e-1d2a-4c8e-9b7a-0e1f2a3b4c5d",
        },
        "service": {"name": "watcher", "version": "0.1.0"},
        "host": {"name": "srv1"},
        "process": {"pid": 4121},
        "watcher": {
            "data_dir": "/srv/app",
            "maintenance": {"active": True, "holds": HOLDS, "message": "back soon"},
        },
    }


def test_only_the_four_ecs_keys_are_dotted() -> None:
    """Apart from the four top-level ECS keys no key anywhere in the document has a dot."""

    def keys(obj: Any) -> Iterator[str]:
        if isinstance(obj, dict):
            for key, value in obj.items():
                yield key
                yield from keys(value)
        elif isinstance(obj, list):
            for item in obj:
                yield from keys(item)

    doc = json.loads(render_json(sample(duration_ns=5), ORIGIN))
    assert doc.keys() == ECS_TOP | {"event", "service", "host", "process", "watcher"}
    nested = [k for top, v in doc.items() if top not in ECS_TOP for k in keys(v)]
    assert nested and not [k for k in nested if "." in k]


def test_duration_is_in_nanoseconds_when_set() -> None:
    """``event.duration`` is present, in nanoseconds, exactly when the event has a duration."""
    with_duration = json.loads(render_json(sample(duration_ns=1_500_000_000), ORIGIN))
    assert with_duration["event"]["duration"] == 1_500_000_000
    assert "duration" not in json.loads(render_json(sample(), ORIGIN))["event"]


@pytest.mark.parametrize(
    ("moment", "stamp"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "2026-01-02T03:04:05.000006Z"),
        (
            datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5))),
            "2025-12-31T20:00:00.000000Z",
        ),
        (
            datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("America/New_York")),
            "2026-07-01T16:00:00.000000Z",
        ),
    ],
)
def test_timestamp_is_rfc3339_utc_with_z(moment: datetime, stamp: str) -> None:
    """``@timestamp`` is the instant in UTC, RFC 3339 with microseconds and ``Z``."""
    assert to_document(sample(time=moment), ORIGIN)["@timestamp"] == stamp


def test_custom_fields_live_under_watcher() -> None:
    """An event's own fields go under ``watcher`` (beside ``data_dir``), never at the top."""
    doc = json.loads(render_json(sample(fields={"job": {"name": "backup"}, "files": 3}), ORIGIN))
    assert doc["watcher"] == {"data_dir": "/srv/app", "job": {"name": "backup"}, "files": 3}
    assert "job" not in doc and "files" not in doc


def test_json_rendering_stringifies_paths() -> None:
    """Values JSON has no type for (paths) are rendered as strings, not an error."""
    doc = json.loads(render_json(sample(fields={"path": Path("/srv/app/x")}), ORIGIN))
    assert doc["watcher"]["path"] == "/srv/app/x"


def test_console_rendering_is_a_readable_line() -> None:
    """The console line has level, action, message and fields, colour only when asked for."""
    event = sample(level="warning", fields={"files": 3}, duration_ns=2_000_000_000)
    plain = render_console(event, ORIGIN, colour=False)
    assert "\x1b" not in plain and "\n" not in plain
    assert "warning" in plain and "maintenance.entered" in plain
    assert "maintenance entered" in plain and "files=3" in plain and "duration=2.000s" in plain
    assert "\x1b[" in render_console(event, ORIGIN, colour=True)


def test_service_stdout_is_one_json_object_per_line(
    data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """Every stdout line of the real service (JSON mode) is one ECS JSON object."""
    proc = service()
    entered = cli("enter", "--message", "back soon", data_dir=data_dir)
    assert entered.returncode == 0, entered.stderr
    proc.wait_for("maintenance.entered")
    left = cli("leave", data_dir=data_dir)
    assert left.returncode == 0, left.stderr
    proc.wait_for("maintenance.left")
    assert proc.stop() == 0
    lines = [line for line in proc.lines if line]
    assert len(lines) == len(proc.lines) >= 6
    sequences = []
    for line in lines:
        doc = json.loads(line)
        assert isinstance(doc, dict)
        assert doc.keys() >= ECS_TOP
        assert RFC3339_Z.fullmatch(doc["@timestamp"])
        assert doc["log.level"] in {"debug", "info", "warning", "error", "critical"}
        assert isinstance(doc["message"], str) and doc["message"]
        assert doc["ecs.version"] == ECS_VERSION
        assert isinstance(doc["event"]["action"], str)
        assert doc["service"]["name"] == "watcher"
        assert doc["watcher"]["data_dir"] == str(data_dir)
        sequences.append(doc["event"]["sequence"])
    assert sequences == sorted(sequences)
    actions = proc.actions()
    for action in ("service.started", "service.ready", "maintenance.entered", "service.stopped"):
        assert action in actions


def test_console_format_is_used_when_configured(
    tmp_path: Path, service: Callable[..., ServiceProcess]
) -> None:
    """A log handler with ``format = "console"`` writes readable lines, not JSON."""
    log = tmp_path / "console.log"
    cfg = write_config(
        tmp_path / "watcher.toml",
        '[[handlers]]\ntype = "log"\nformat = "json"\n'
        f'[[handlers]]\ntype = "log"\ntarget = "{log}"\nformat = "console"\n',
    )
    proc = service(cfg)
    assert proc.stop() == 0
    text = log.read_text()
    lines = text.splitlines()
    assert lines
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "service.ready" in text and "service.stopped" in text
    assert "\x1b" not in text  # a file is not a terminal: no colour
