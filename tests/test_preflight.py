"""Space pre-flight: jobs refuse to start without room, as ``job.failed`` with the numbers.

``require_space`` on its own (scripted free space, and a real small filesystem); the archive
job through the real runner (scripted free space); and archive and backup triggered in the
real ``watcher run`` on a real small filesystem (root; skipped with the reason otherwise).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import pytest

import watcher.jobs.space
from tests.conftest import Doc, Start, allowed_paths, cli, service_at, write_config
from tests.test_disk_e2e import free_bytes, small_filesystem
from watcher.config import ArchiveTableConfig, Config
from watcher.demo import MAIL_TABLES, create_demo
from watcher.events.bus import EventBus
from watcher.jobs.base import JobFailed
from watcher.jobs.space import require_space, tree_size
from watcher.registry import build_config
from watcher.service.controller import Controller
from watcher.service.runner import JobOutcome, JobRequest, JobRunner
from watcher.testing import capture_events

MiB = 1024**2
OLD = 930_000_000  # 1999-06-21: older than the archive cut-off below
BEFORE = "2026-01-01"
# Levels sized for the small test filesystems, so the disk guard stays quiet throughout.
SMALL_LEVELS = '[disk]\nwarn = "3MiB"\nmaintenance = "2MiB"\ncritical = "1MiB"\n'
# The demo data dir's mail-shaped tables (rows dated 2024–2025), so an archive has rows to move.
ARCHIVE_TABLES: dict[str, Any] = {
    "immutable": False,  # scratch data: removable by the test's cleanup without chattr -i
    "tables": [
        {k: v for k, v in asdict(t).items() if v != getattr(ArchiveTableConfig, k, None)}
        for t in MAIL_TABLES
    ],
}
ARCHIVE_TOML = "[archive]\nimmutable = false\n" + "".join(
    "[[archive.tables]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    for table in ARCHIVE_TABLES["tables"]
)


def archive_needs(root: Path) -> int:
    """What DESIGN §4 says archive needs: 2 × size(mw/data) + Σ size(mw/file/ws*)."""
    mw = root / "mw"
    data = sum(
        p.stat().st_size for p in (mw / "data").rglob("*") if p.is_file() and p.name != "maint"
    )
    return 2 * data + sum(tree_size(ws) for ws in (mw / "file").glob("ws*"))


def old_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes last modified long before the archive cut-off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(b"\x5a" * size)
    os.utime(path, (OLD, OLD))
    return path


# --- require_space ------------------------------------------------------------------------


def test_refusal_carries_needed_free_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needing one byte more than is free is refused: insufficient_space, needed, free, path."""
    monkeypatch.setattr(watcher.jobs.space, "free_bytes", lambda _p: 1000)
    with pytest.raises(JobFailed) as info:
        require_space(1001, tmp_path, "archive")
    failed = info.value
    assert failed.reason == "insufficient_space"
    assert failed.details == {"needed": 1001, "free": 1000, "path": str(tmp_path)}
    assert "archive needs 1001 bytes" in failed.message and "only 1000 available" in failed.message


def test_exactly_enough_is_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Needing exactly the free space (or nothing) passes."""
    monkeypatch.setattr(watcher.jobs.space, "free_bytes", lambda _p: 1000)
    require_space(1000, tmp_path, "archive")
    require_space(0, tmp_path, "archive")


def test_a_destination_not_made_yet_is_measured_on_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A destination that does not exist yet is measured on its nearest existing parent."""
    asked: list[Path] = []

    def free(path: Path) -> int:
        asked.append(path)
        return 10

    monkeypatch.setattr(watcher.jobs.space, "free_bytes", free)
    with pytest.raises(JobFailed) as info:
        require_space(11, tmp_path / "backups" / "set1", "backup")
    assert asked == [tmp_path]
    assert info.value.details["path"] == str(tmp_path)


@pytest.mark.root
def test_refusal_on_a_real_small_filesystem(tmp_path: Path) -> None:
    """On a real 16 MiB filesystem, asking for more than its free space is refused with the
    filesystem's own numbers, and asking for what is free passes."""
    with small_filesystem(tmp_path, 16) as fs:
        free = free_bytes(fs)
        with pytest.raises(JobFailed) as info:
            require_space(free + 1, fs / "dest", "backup")
        require_space(free, fs, "backup")
    assert info.value.details == {"needed": free + 1, "free": free, "path": str(fs)}
    assert 0 < free <= 16 * MiB


# --- the archive job in the runner ----------------------------------------------------------


def small_config(data_dir: Path) -> Config:
    return build_config(
        {
            "disk": {"warn": "3MiB", "maintenance": "2MiB", "critical": "1MiB"},
            "archive": ARCHIVE_TABLES,
        },
        source=None,
        data_dir=data_dir,
    )


Requester = Callable[[Callable[[JobOutcome], None]], JobRequest]


async def run_job(
    config: Config, request: Requester, bus: EventBus, controller: Controller
) -> JobOutcome:
    """Run one request through a real JobRunner until it ends; its outcome."""
    runner = JobRunner(config, bus, controller, controller.clock)
    outcomes: list[JobOutcome] = []
    done = anyio.Event()

    def finished(outcome: JobOutcome) -> None:
        outcomes.append(outcome)
        done.set()

    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        runner.submit(request(finished))
        with anyio.fail_after(30):
            await done.wait()
        tg.cancel_scope.cancel()
    return outcomes[0]


@pytest.mark.asyncio
async def test_archive_job_refused_is_job_failed_with_the_numbers(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner reports an archive refused for space as job.failed with reason
    insufficient_space and the needed and free bytes, and moves nothing."""
    old_file(data_dir / "mw" / "data" / "old-export.csv", 300_000)
    monkeypatch.setattr(watcher.jobs.space, "free_bytes", lambda _p: 4096)
    config = small_config(data_dir)
    bus = EventBus()
    controller = Controller(config.paths, bus, default_message="m")
    controller.load()
    needed = archive_needs(data_dir)

    def request(on_done: Callable[[JobOutcome], None]) -> JobRequest:
        # maintenance=False keeps the maint file out of mw/data, so the sum is exact
        return JobRequest(
            "archive",
            "archive",
            {"before": BEFORE},
            maintenance=False,
            source="cli",
            on_done=on_done,
        )

    with capture_events(bus) as events:
        outcome = await run_job(config, request, bus, controller)
    failed = [e for e in events if e.action == "job.failed"]
    assert len(failed) == 1
    fields = failed[0].fields
    assert fields["reason"] == "insufficient_space"
    assert fields["details"]["needed"] == needed
    assert fields["details"]["free"] == 4096
    assert fields["job"]["name"] == "archive"
    assert f"needs {needed} bytes" in failed[0].message and "only 4096" in failed[0].message
    assert (outcome.status, outcome.reason) == ("failed", "insufficient_space")
    assert outcome.result["needed"] == needed
    assert (data_dir / "mw" / "data" / "old-export.csv").exists()
    assert not list((data_dir / "mw").glob("back*"))


@pytest.mark.asyncio
async def test_refused_archive_releases_its_maintenance_hold(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archive refused for space lets go of the job hold it took: no maint file remains."""
    monkeypatch.setattr(watcher.jobs.space, "free_bytes", lambda _p: 0)
    config = small_config(data_dir)
    bus = EventBus()
    controller = Controller(config.paths, bus, default_message="m")
    controller.load()

    def request(on_done: Callable[[JobOutcome], None]) -> JobRequest:
        return JobRequest(
            "archive",
            "archive",
            {"before": BEFORE},
            maintenance=True,
            source="trigger",
            on_done=on_done,
        )

    with capture_events(bus) as events:
        outcome = await run_job(config, request, bus, controller)
    assert outcome.reason == "insufficient_space"
    names = [e.action for e in events]
    assert names.index("maintenance.hold_added") < names.index("job.failed")
    assert names.index("job.failed") < names.index("maintenance.hold_released")
    assert not config.paths.maint_file.exists()


# --- triggered in the real service on a real small filesystem -------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB filesystem mounted for this test only (root; skipped with the reason)."""
    with small_filesystem(tmp_path, 16) as where:
        yield where


@pytest.fixture
def on_small_fs(small_fs: Path, service: Start) -> Iterator[tuple[Path, Start]]:
    """The demo data dir on the small filesystem and ``service`` to run watcher there; the
    service is stopped before the filesystem is unmounted."""
    root = small_fs / "data"
    create_demo(root)
    with service_at(service, root) as start:
        yield root, start


def failed_details(event: Doc) -> dict[str, Any]:
    return dict(event["watcher"]["details"])


@pytest.mark.root
def test_triggered_archive_on_a_small_filesystem_is_refused_with_the_numbers(
    tmp_path: Path, on_small_fs: tuple[Path, Start]
) -> None:
    """An archive triggered on a 16 MiB filesystem whose mw/data holds 6 MiB is refused:
    job.failed, insufficient_space, the numbers in the event and the trigger's result, nothing
    moved; with the space there, the same archive runs."""
    root, start = on_small_fs
    big = old_file(root / "mw" / "data" / "old-export.csv", 6 * MiB)
    config = write_config(tmp_path / "watcher.toml", SMALL_LEVELS + ARCHIVE_TOML)
    svc = start(config)
    needed = archive_needs(root)
    assert needed > free_bytes(root)

    mark = svc.mark()
    done = cli(
        "trigger", "archive", "--arg", f"before={BEFORE}", "--wait", data_dir=root, config=config
    )
    assert done.returncode == 1, done.stdout + done.stderr
    failed = svc.wait_for("job.failed", after=mark)
    assert failed["watcher"]["reason"] == "insufficient_space"
    details = failed_details(failed)
    # mw/data also held the maint file of the job's own hold while it measured
    assert needed <= details["needed"] <= needed + 2 * 4096
    assert details["free"] < details["needed"]
    assert abs(details["free"] - free_bytes(root)) <= 64 * 1024
    assert f"needed: {details['needed']}" in done.stdout
    assert f"free: {details['free']}" in done.stdout
    results = list((root / "mw" / "spool" / "failed").glob("archive.*.result.json"))
    assert len(results) == 1
    result = json.loads(results[0].read_text())
    assert result["reason"] == "insufficient_space"
    assert result["result"]["needed"] == details["needed"]
    assert big.exists()
    assert not list((root / "mw").glob("back*"))
    assert not (root / "mw" / "data" / "maint").exists()

    os.truncate(big, 1 * MiB)  # now 2 × mw/data + the workspaces fits
    os.utime(big, (OLD, OLD))
    mark = svc.mark()
    done = cli(
        "trigger", "archive", "--arg", f"before={BEFORE}", "--wait", data_dir=root, config=config
    )
    assert done.returncode == 0, done.stdout + done.stderr
    svc.wait_for("job.finished", after=mark)
    archived = sorted(p.name for p in (root / "mw").glob("back*"))
    assert archived == ["back1"]
    assert (root / "mw" / "back1" / "data" / "mail.db").exists()
    assert big.exists()  # a file no [[archive.tables]] names stays in live data
    assert svc.stop() == 0


@pytest.mark.root
def test_triggered_backup_to_a_small_filesystem_is_refused_with_the_numbers(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """A backup whose destination is a 4 MiB filesystem, of a data dir holding 6 MiB, is
    refused with the numbers measured on that filesystem, and nothing is written there."""
    old_file(data_dir / "mw" / "file" / "ws1" / "big.bin", 6 * MiB)
    with small_filesystem(tmp_path / "dest", 4) as fs:
        config = write_config(tmp_path / "watcher.toml", allowed_paths(fs))
        svc = service(config)
        try:
            done = cli(
                "trigger",
                "backup",
                "--arg",
                f"dest={fs / 'backups'}",
                "--wait",
                data_dir=data_dir,
                config=config,
            )
            failed = svc.wait_for("job.failed")
            assert svc.stop() == 0
        finally:
            if svc.proc.poll() is None:
                svc.proc.kill()
                svc.proc.wait()
        written = list(fs.iterdir())
        free = free_bytes(fs)
    assert done.returncode == 1
    assert failed["watcher"]["reason"] == "insufficient_space"
    details = failed_details(failed)
    assert details["path"] == str(fs)
    assert details["free"] == free
    assert details["needed"] > 6 * MiB > details["free"]
    assert written == []
