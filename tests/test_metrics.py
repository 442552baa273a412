"""Prometheus metrics: a real ``watcher run`` with ``[http] listen`` scraped over loopback and
parsed with ``prometheus_client.parser``; the node_exporter textfile."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Start, cli, maint, toml, write_config

PY = sys.executable


def config(tmp_path: Path, extra: str = "") -> Path:
    """A config with the listener on any free loopback port, a textfile, a job, a bad handler."""
    lines = [
        "[http]",
        'listen = "127.0.0.1:0"',
        f"textfile = {toml(str(tmp_path / 'watcher.prom'))}",
        "[[jobs]]",
        'name = "hello"',
        'type = "command"',
        f"argv = {toml([PY, '-c', 'print(1)'])}",
        "[[handlers]]",
        'type = "log"',
        "[[handlers]]",
        'type = "command"',
        'argv = ["false"]',
        'events = ["maintenance.*"]',
    ]
    return write_config(tmp_path / "watcher.toml", "\n".join(lines) + "\n" + extra)


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed: (sample name, sorted labels) → value."""
    response = httpx.get(f"http://{address}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text parsed by prometheus_client into a flat sample table."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_follow_maintenance_jobs_and_handlers(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """Enter, leave and a job move the gauges, counters and histogram the issue names."""
    proc = service(config(tmp_path))
    address = proc.wait_for("service.ready")["watcher"]["http"]
    first = scrape(address)
    assert first[("watcher_maintenance_active", ())] == 0
    assert first[("watcher_holds", (("reason", "manual"),))] == 0
    assert first[("watcher_disk_free_bytes", ())] > 0
    assert first[("watcher_disk_level", (("watcher_disk_level", "ok"),))] == 1
    assert first[("watcher_disk_level", (("watcher_disk_level", "critical"),))] == 0
    assert first[("watcher_events_total", (("action", "service.ready"),))] == 1

    mark = proc.mark()
    assert cli("enter", "-m", "upgrade", data_dir=data_dir).returncode == 0
    proc.wait_for("maintenance.entered", after=mark)
    proc.wait_for("handler.failed", after=mark)
    entered = scrape(address)
    assert maint(data_dir).exists()
    assert entered[("watcher_maintenance_active", ())] == 1
    assert entered[("watcher_holds", (("reason", "manual"),))] == 1
    assert entered[("watcher_events_total", (("action", "maintenance.entered"),))] == 1
    assert entered[("watcher_handler_failures_total", (("handler", "1:command"),))] >= 1

    mark = proc.mark()
    assert cli("leave", data_dir=data_dir).returncode == 0
    proc.wait_for("maintenance.left", after=mark)
    left = scrape(address)
    assert left[("watcher_maintenance_active", ())] == 0
    assert left[("watcher_holds", (("reason", "manual"),))] == 0

    mark = proc.mark()
    assert cli("trigger", "hello", data_dir=data_dir).returncode == 0
    finished = proc.wait_for("job.finished", after=mark)
    ran = scrape(address)
    job = (("job", "hello"),)
    assert ran[("watcher_job_duration_seconds_count", job)] == 1
    assert ran[("watcher_job_duration_seconds_bucket", (*job, ("le", "+Inf")))] == 1
    stamp = ran[("watcher_job_last_success_timestamp_seconds", job)]
    assert abs(stamp - _epoch(finished["@timestamp"])) < 1
    assert ran[("watcher_triggers_total", (("outcome", "accepted"),))] == 1
    assert proc.stop() == 0


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_metrics_textfile_for_node_exporter(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """With ``textfile`` set the same metrics are written atomically for the textfile collector."""
    proc = service(config(tmp_path))
    textfile = tmp_path / "watcher.prom"
    samples = parse(textfile.read_text())
    assert samples[("watcher_maintenance_active", ())] == 0
    assert ("watcher_disk_free_bytes", ()) in samples
    assert not list(tmp_path.glob(".watcher.prom*"))  # no staging file left behind
    assert proc.stop() == 0
