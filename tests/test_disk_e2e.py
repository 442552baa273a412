"""The disk guard end to end: the real ``watcher run`` on a real small filesystem, filled for real.

Each test mounts its own 64 MiB tmpfs (or, where tmpfs cannot be mounted, a loop-mounted ext4
image), lays out the demo data directory inside it and fills the filesystem with real files
in a directory beside the data dir until each level is crossed, then frees them. Mounting
needs root (CI runs as root); otherwise the tests skip and print why.

Levels for a 64 MiB filesystem: warn 24 MiB, maintenance 16 MiB, critical 8 MiB. By the
hysteresis rules critical is left above 16 MiB, maintenance above 24 MiB and warn above
24 + (24 - 16) / 2 = 28 MiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Doc, ServiceProcess, Start, service_at, stopped_once, toml, write_config
from tests.conftest import maint as maint_of
from watcher.demo import create_demo

MiB = 1024**2
FS_SIZE_MIB = 64
WARN, MAINTENANCE, CRITICAL = 24 * MiB, 16 * MiB, 8 * MiB
WARN_EXIT = WARN + (WARN - MAINTENANCE) // 2
CHUNK = 1 * MiB
FULL = 1 * MiB  # "no space left": tmpfs reports 0 free; ext4 keeps a little for metadata

pytestmark = pytest.mark.root


# --- a real small filesystem ----------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60)


def _mount_tmpfs(where: Path, size_mib: int) -> str | None:
    """Mount a tmpfs of ``size_mib`` on ``where``; the error text when it cannot."""
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(where))
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def _mount_loop_ext4(where: Path, image: Path, size_mib: int) -> str | None:
    """Make an ext4 image (no root reserve) and loop-mount it on ``where``; the error text."""
    with image.open("wb") as f:
        f.truncate(size_mib * MiB)
    made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    if made.returncode != 0:
        return f"mkfs.ext4: {made.stderr.strip() or made.returncode}"
    done = _run("mount", "-o", "loop", str(image), str(where))
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def _unmount(where: Path) -> None:
    """Unmount, lazily when something still has it busy."""
    if _run("umount", str(where)).returncode != 0:
        _run("umount", "-l", str(where))


def _skip(reason: str) -> None:
    print(f"skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


@contextmanager
def small_filesystem(base: Path, size_mib: int = FS_SIZE_MIB) -> Iterator[Path]:
    """A freshly mounted filesystem of ``size_mib`` under ``base``, unmounted on exit.

    tmpfs first, then a loop-mounted ext4 image; skips the test (printing why) when not
    root or when neither can be mounted.
    """
    if os.geteuid() != 0:
        _skip("needs root to mount a small filesystem (tmpfs or loop ext4)")
    where = base / "mnt"
    where.mkdir(parents=True)
    tmpfs_error = _mount_tmpfs(where, size_mib)
    if tmpfs_error is not None:
        loop_error = _mount_loop_ext4(where, base / "fs.img", size_mib)
        if loop_error is not None:
            _skip(f"cannot mount a test filesystem: tmpfs: {tmpfs_error}; loop ext4: {loop_error}")
    try:
        yield where
    finally:
        _unmount(where)


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB filesystem mounted for this test only."""
    with small_filesystem(tmp_path) as where:
        yield where


def free_bytes(path: Path) -> int:
    """Bytes available to non-root on ``path``'s filesystem, as the guard samples it."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Filler:
    """Fills and frees a filesystem with real files, moving free space towards a target.

    Filling writes a new file; freeing shrinks the newest files (``truncate``), so free space
    moves in one direction per call and never overshoots into another level's band.
    """

    def __init__(self, fs: Path) -> None:
        self.fs = fs
        self.dir = fs / "filler"
        self.dir.mkdir()
        self.files: list[Path] = []

    def free(self) -> int:
        return free_bytes(self.fs)

    def fill_to(self, target: int) -> int:
        """Write or free real data until about ``target`` bytes are free; the free space after."""
        gap = self.free() - target
        if gap > 0:
            self._write(gap)
        elif gap < 0:
            self._shrink(-gap)
        return self.free()

    def fill_up(self) -> int:
        """Write until the filesystem refuses (ENOSPC): nothing left for non-root."""
        self._write(self.free() + 64 * MiB, until_full=True)
        return self.free()

    def empty(self) -> int:
        """Remove every filler file."""
        for path in self.files:
            path.unlink()
        self.files.clear()
        return self.free()

    def _write(self, size: int, *, until_full: bool = False) -> None:
        path = self.dir / f"fill-{len(self.files):03d}"
        self.files.append(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            left = size
            block = b"\xa5" * CHUNK
            while left > 0:
                try:
                    left -= os.write(fd, block[: min(CHUNK, left)])
                except OSError as exc:
                    if until_full and exc.errno == 28:  # ENOSPC
                        break
                    raise
            os.fsync(fd)
        finally:
            os.close(fd)

    def _shrink(self, amount: int) -> None:
        while amount > 0 and self.files:
            path = self.files[-1]
            size = path.stat().st_size
            cut = min(size, amount)
            if cut == size:
                path.unlink()
                self.files.pop()
            else:
                os.truncate(path, size - cut)
            amount -= cut


# --- the service on it ----------------------------------------------------------------------


def guard_config(tmp_path: Path, command_out: Path, *, reminder: str = "200ms") -> Path:
    """Byte levels sized for the 64 MiB filesystem, a 100 ms interval, and the stand-in
    "stop the application" command handler on ``disk.critical`` appending the event JSON."""
    copy = (
        "import sys; data = sys.stdin.buffer.read(); "
        "f = open(sys.argv[1], 'ab'); f.write(data); f.close()"
    )
    argv = toml([sys.executable, "-c", copy, str(command_out)])
    return write_config(
        tmp_path / "watcher.toml",
        f"""\
[disk]
interval = "100ms"
warn = "24MiB"
maintenance = "16MiB"
critical = "8MiB"
for_samples = 2
reminder = "{reminder}"

[[handlers]]
type = "log"
target = "stdout"
format = "json"

[[handlers]]
type = "command"
events = ["disk.critical"]
argv = {argv}
timeout = "30s"
""",
    )


@pytest.fixture
def on_fs(fs: Path, service: Start) -> Iterator[tuple[Path, Filler, Start]]:
    """The demo data dir on the small filesystem, a filler beside it, and ``service`` to run
    watcher there; the service is stopped before the filesystem is unmounted."""
    root = fs / "data"
    create_demo(root)
    with service_at(service, root) as start:
        yield root, Filler(fs), start


def disk(event: Doc) -> dict[str, Any]:
    return dict(event["watcher"].get("disk") or {})


def transitions(svc: ServiceProcess, after: int = 0) -> list[str]:
    """The disk level changes (not reminders) seen since ``after``."""
    return [
        a
        for a in svc.actions()[after:]
        if a in ("disk.ok", "disk.warn", "disk.maintenance", "disk.critical")
    ]


def reminder_above(
    svc: ServiceProcess, level: str, free_above: int, after: int
) -> Callable[[], Doc]:
    """A waiter for a ``disk.reminder`` at ``level`` from a sample with more than
    ``free_above`` free: that sample was taken and did not change the level."""

    def wait() -> Doc:
        return svc.wait_for(
            "disk.reminder",
            lambda e: disk(e).get("level") == level and disk(e).get("free", 0) > free_above,
            after=after,
        )

    return wait


def hold_reasons(maint: Path) -> list[str]:
    return [h["reason"] for h in json.loads(maint.read_text())["holds"]]


# --- tests ----------------------------------------------------------------------------------


def recovers_cleanly(svc: ServiceProcess, filler: Filler, maint: Path, out: Path) -> None:
    """Space back: the disk is ok, maintenance released, no temporary files left in mw/data,
    a clean stop, and the critical command had run first."""
    mark = svc.mark()
    filler.empty()
    svc.wait_for("disk.ok", after=mark)
    svc.wait_for("maintenance.left", after=mark)
    assert not maint.exists()
    leftovers = sorted(p.name for p in maint.parent.iterdir() if p.name.startswith("."))
    assert leftovers == [], "watcher left temporary files in the application's mw/data"
    assert svc.stop() == 0
    assert json.loads(out.read_text().splitlines()[0])["event"]["action"] == "disk.critical"


def test_levels_crossed_and_recovered_with_real_files(
    tmp_path: Path, on_fs: tuple[Path, Filler, Start]
) -> None:
    """Filling the filesystem crosses warn, maintenance and critical in order, holding
    maintenance and running the critical command; freeing it steps back down with hysteresis."""
    root, filler, start = on_fs
    out = tmp_path / "critical-command.jsonl"
    svc = start(guard_config(tmp_path, out))
    maint = maint_of(root)
    assert filler.free() > WARN_EXIT

    mark = svc.mark()
    filler.fill_to(20 * MiB)
    warn = svc.wait_for("disk.warn", after=mark)
    assert MAINTENANCE < disk(warn)["free"] < WARN
    assert 48 * MiB <= disk(warn)["total"] <= FS_SIZE_MIB * MiB
    assert {k: disk(warn)["thresholds"][k] for k in ("warn", "maintenance", "critical")} == {
        "warn": WARN,
        "maintenance": MAINTENANCE,
        "critical": CRITICAL,
    }
    assert not maint.exists()

    mark = svc.mark()
    filler.fill_to(12 * MiB)
    entered = svc.wait_for("disk.maintenance", after=mark)
    assert CRITICAL < disk(entered)["free"] < MAINTENANCE
    svc.wait_for("maintenance.entered", after=mark)
    assert maint.exists()
    assert hold_reasons(maint) == ["disk"]

    mark = svc.mark()
    filler.fill_to(4 * MiB)
    critical = svc.wait_for("disk.critical", after=mark)
    assert disk(critical)["free"] < CRITICAL
    assert critical["log.level"] == "critical"
    assert maint.exists()

    # Hysteresis at the maintenance boundary: above the maintenance level, not above warn.
    mark = svc.mark()
    filler.fill_to(20 * MiB)
    back = svc.wait_for("disk.maintenance", after=mark)  # critical left, maintenance stays
    waiter = reminder_above(svc, "maintenance", MAINTENANCE, svc.events.index(back))
    first = waiter()
    reminder_above(svc, "maintenance", MAINTENANCE, svc.events.index(first) + 1)()
    assert transitions(svc, mark) == ["disk.maintenance"]
    assert maint.exists()

    # Hysteresis at the warn boundary: above warn (maintenance left), not above warn's exit.
    mark = svc.mark()
    filler.fill_to(26 * MiB)
    svc.wait_for("disk.warn", after=mark)
    svc.wait_for("maintenance.left", after=mark)
    assert not maint.exists()
    first = reminder_above(svc, "warn", WARN, mark)()
    reminder_above(svc, "warn", WARN, svc.events.index(first) + 1)()
    assert transitions(svc, mark) == ["disk.warn"]

    mark = svc.mark()
    filler.empty()
    ok = svc.wait_for("disk.ok", after=mark)
    assert disk(ok)["free"] > WARN_EXIT

    assert transitions(svc) == [
        "disk.warn",
        "disk.maintenance",
        "disk.critical",
        "disk.maintenance",
        "disk.warn",
        "disk.ok",
    ]
    assert svc.stop() == 0  # shutdown drains the handlers: the command has finished
    lines = out.read_text().splitlines()
    assert len(lines) == 1, "the critical command runs once per disk.critical"
    ran = json.loads(lines[0])
    assert ran["event"]["action"] == "disk.critical"
    assert ran["event"]["id"] == critical["event"]["id"]
    assert ran["watcher"]["disk"]["free"] < CRITICAL
    assert "handler.failed" not in svc.actions()


def test_operator_release_on_a_full_disk_rearms_only_after_recovery(
    tmp_path: Path, on_fs: tuple[Path, Filler, Start]
) -> None:
    """An operator's rm of the maint file on a low disk is respected while it stays low, even
    into critical; after the disk recovers and fills again, maintenance is held again."""
    root, filler, start = on_fs
    svc = start(guard_config(tmp_path, tmp_path / "critical.jsonl"))
    maint = maint_of(root)

    mark = svc.mark()
    filler.fill_to(12 * MiB)
    svc.wait_for("maintenance.entered", after=mark)
    assert maint.exists()

    mark = svc.mark()
    maint.unlink()
    svc.wait_for("maintenance.released_by_operator", after=mark)

    mark = svc.mark()
    filler.fill_to(4 * MiB)
    critical = svc.wait_for("disk.critical", after=mark)
    first = reminder_above(svc, "critical", 0, svc.events.index(critical))()
    reminder_above(svc, "critical", 0, svc.events.index(first) + 1)()
    assert "maintenance.hold_added" not in svc.actions()[mark:]
    assert not maint.exists()

    mark = svc.mark()
    filler.empty()
    svc.wait_for("disk.ok", after=mark)
    mark = svc.mark()
    filler.fill_to(12 * MiB)
    svc.wait_for("disk.maintenance", after=mark)
    svc.wait_for("maintenance.entered", after=mark)
    assert maint.exists()
    assert hold_reasons(maint) == ["disk"]
    assert svc.stop() == 0


def test_full_filesystem_at_start_still_enters_maintenance(
    tmp_path: Path, on_fs: tuple[Path, Filler, Start]
) -> None:
    """Started on a filesystem with no space left, watcher still runs, goes critical and holds
    maintenance (an empty maint file when nothing more fits), and cleans up once space is back."""
    root, filler, start = on_fs
    out = tmp_path / "critical.jsonl"
    config = guard_config(tmp_path, out, reminder="10m")
    assert filler.fill_up() < FULL
    svc = start(config)
    critical = svc.wait_for("disk.critical")
    assert disk(critical)["free"] < FULL
    svc.wait_for("maintenance.entered")
    maint = maint_of(root)
    assert maint.exists()

    recovers_cleanly(svc, filler, maint, out)


def test_restart_on_a_full_filesystem_holds_maintenance_with_an_empty_file(
    tmp_path: Path, on_fs: tuple[Path, Filler, Start]
) -> None:
    """Restarted after the filesystem filled up, watcher goes critical and still holds
    maintenance — an empty maint file when the JSON cannot be written — and reports the
    failed write; once space is back it releases and leaves no temporary files behind."""
    root, filler, start = on_fs
    out = tmp_path / "critical.jsonl"
    config = guard_config(tmp_path, out, reminder="10m")
    stopped_once(start, config)  # a previous run: its lock and state files exist
    left = filler.fill_up()
    assert left < FULL
    svc = start(config)
    critical = svc.wait_for("disk.critical")
    assert disk(critical)["free"] < FULL
    svc.wait_for("maintenance.entered")
    maint = maint_of(root)
    assert maint.exists()
    if left == 0:  # tmpfs: truly nothing left (ext4 keeps a margin the small JSON fits in)
        assert maint.stat().st_size == 0  # the ENOSPC fallback: presence is the truth
        failed = svc.wait_for("disk.reminder", lambda e: "error" in e["watcher"])
        assert failed["log.level"] == "critical"
        assert "No space left on device" in failed["watcher"]["error"]

    recovers_cleanly(svc, filler, maint, out)


def test_a_steady_fill_is_forecast_before_warn_and_warn_follows(
    tmp_path: Path, on_fs: tuple[Path, Filler, Start]
) -> None:
    """Free space falling steadily toward maintenance is announced by disk.forecast (with its
    time and rate) while the disk is still ok; the default 1 s interval then still sees warn."""
    _root, filler, start = on_fs
    config = write_config(
        tmp_path / "watcher.toml",
        """\
[disk]
warn = "24MiB"
maintenance = "16MiB"
critical = "8MiB"
forecast_horizon = "60s"

[[handlers]]
type = "log"
target = "stdout"
format = "json"
""",
    )
    svc = start(config)
    mark = svc.mark()
    step = MiB // 2
    # The workload: half a MiB every quarter second (2 MiB/s: maintenance about 20 s away),
    # until the forecast is out or the disk nears warn. The pause is the fill rate, not a wait.
    while not any(a == "disk.forecast" for a in svc.actions()[mark:]):
        assert filler.free() > WARN_EXIT, "free space reached warn's band with no forecast"
        filler.fill_to(filler.free() - step)
        time.sleep(0.25)
    said = svc.wait_for("disk.forecast", after=mark)
    ahead = said["watcher"]["forecast"]
    assert ahead["level"] == "maintenance"
    assert 0 < ahead["eta"] <= 60
    assert ahead["fill_rate"] > 0
    assert said["log.level"] == "warning"
    assert disk(said)["level"] == "ok"
    filler.fill_to(20 * MiB)
    svc.wait_for("disk.warn", after=mark)
    assert svc.stop() == 0
