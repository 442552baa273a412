"""Every CLI command under a vanished data dir, a read-only filesystem, EACCES and a full disk:
a one-line message and exit 1 or 2 (or success), never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import watcher.cli.diagnose
import watcher.cli.jobs_report
import watcher.cli.main
import watcher.cli.status
import watcher.cli.trigger
import watcher.jobs.dbcheck
import watcher.sources.triggerdrop  # noqa: F401 - loaded before a child drops its uid
from tests.conftest import Start, cli, maint
from tests.test_disk_e2e import small_filesystem
from watcher.demo import create_demo

NOBODY = 65534
COMMANDS: list[tuple[str, ...]] = [
    ("status",),
    ("status", "--json"),
    ("enter", "--message", "fault"),
    ("leave",),
    ("trigger", "dbcheck"),
    ("trigger", "dbcheck", "--wait"),
    ("jobs",),
    ("check-db",),
    ("check-db", "--output", "report.txt"),
    ("diagnose",),
    ("config", "check"),
]


def clean(done: subprocess.CompletedProcess[str], what: str) -> None:
    """Success, or exit 1/2 with exactly one ``watcher:`` line on stderr; never a traceback."""
    context = f"{what}: rc={done.returncode} stderr={done.stderr!r}"
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, context
    assert done.returncode in (0, 1, 2), context
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("watcher: "), context


def as_user(uid: int, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``watcher ARGV`` in a forked child that dropped to ``uid`` (its gid too) first.

    Forked, not executed: the interpreter under /root is not executable by that uid.
    """
    out, err = cwd / f".out.{uid}", cwd / f".err.{uid}"
    with out.open("w+") as fo, err.open("w+") as fe:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 70
            try:
                os.dup2(fo.fileno(), 1)
                os.dup2(fe.fileno(), 2)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - pytest replaced them
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                os.chdir(cwd)
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                os.environ["WATCHER_CONFIG"] = ""
                from watcher.cli.main import main

                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback

                os.write(2, traceback.format_exc().encode())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        fo.seek(0)
        fe.seek(0)
        code = os.waitstatus_to_exitcode(status)
        return subprocess.CompletedProcess(argv, code, fo.read(), fe.read())


def run_all(data_dir: Path, cwd: Path, user: int | None = None) -> dict[str, int]:
    """Each command of ``COMMANDS`` on ``data_dir``; their exit codes by command line."""
    codes = {}
    for args in COMMANDS:
        argv = [*args, "--data-dir", str(data_dir)]
        if user is not None:
            done = as_user(user, argv, cwd)
        else:
            done = subprocess.run(
                [sys.executable, "-m", "watcher", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=cwd,
                env={**os.environ, "WATCHER_CONFIG": "", "PYTHONPATH": str(Path.cwd())},
            )
        clean(done, " ".join(args))
        codes[" ".join(args)] = done.returncode
    return codes


@pytest.mark.parametrize("gone", ["data_dir", "mw", "mw/data"])
def test_vanished_data_dir(tmp_path: Path, gone: str) -> None:
    """With the data dir (or part of its layout) removed, every command ends cleanly."""
    root = tmp_path / "data"
    create_demo(root)
    shutil.rmtree(root if gone == "data_dir" else root / gone)
    codes = run_all(root, tmp_path)
    if gone == "data_dir":
        assert all(code == 2 for name, code in codes.items() if name != "diagnose"), codes


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A temp dir other uids can traverse (pytest's own is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="watcher-faults-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.root
def test_eacces_as_another_uid(world_dir: Path) -> None:
    """Run as uid 65534 on root's data dir, every command ends cleanly (refusals say so)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the CLI as another uid")
    root = world_dir / "data"
    create_demo(root)
    done = cli("enter", data_dir=root)  # state files exist, owned by root
    assert done.returncode == 0, done
    os.chmod(root / "mw" / "watcher" / "state.json", 0o600)
    codes = run_all(root, world_dir, user=NOBODY)
    assert codes["enter --message fault"] == 1 and codes["leave"] == 1, codes


@pytest.mark.root
def test_read_only_filesystem(tmp_path: Path) -> None:
    """On a filesystem remounted read-only, every command ends cleanly; writers fail with exit 1."""
    with small_filesystem(tmp_path, 16) as fs:
        root = fs / "data"
        create_demo(root)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, timeout=60)
        try:
            codes = run_all(root, tmp_path)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(fs)], timeout=60)
        assert codes["enter --message fault"] == 1 and codes["trigger dbcheck"] == 1, codes
        assert codes["status"] == 0, codes


def fill(fs: Path) -> None:
    """Fill ``fs`` until a write fails for lack of space (blocks; inodes are left)."""
    for name, size in (("filler", 1 << 20), ("filler2", 512)):
        fd = os.open(fs / name, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
        finally:
            os.close(fd)


@pytest.mark.root
def test_full_disk_enter_without_service(tmp_path: Path) -> None:
    """On a full tmpfs, ``enter`` (service down) enters and says the message was not written."""
    with small_filesystem(tmp_path, 16) as fs:
        root = fs / "data"
        create_demo(root)
        assert cli("status", data_dir=root).returncode == 0  # state dir laid out
        fill(fs)
        done = cli("enter", "--message", "full", data_dir=root)
        clean(done, "enter")
        assert done.returncode == 0, done
        assert maint(root).exists()
        assert "message could not be written" in done.stderr
        run_all(root, tmp_path)


@pytest.mark.root
def test_full_disk_enter_through_service(tmp_path: Path, service: Start) -> None:
    """On a full tmpfs, ``enter`` through the running service enters maintenance, no traceback."""
    with small_filesystem(tmp_path, 16) as fs:
        root = fs / "data"
        create_demo(root)
        svc = service(root=root)
        try:
            fill(fs)
            done = cli("enter", "--message", "full", data_dir=root)
            clean(done, "enter")
            assert done.returncode == 0 and "through the running service" in done.stdout, done
            assert maint(root).exists()
            assert "message could not be written" in done.stderr
            run_all(root, tmp_path)
            assert svc.proc.poll() is None
        finally:
            svc.kill()
