"""The disk guard's shell: statvfs readings, the sampling timeout, filesystem types."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import anyio.to_thread
import psutil  # type: ignore[import-untyped]  # reason: types-psutil is not a dependency
import pytest

from watcher.core.disklevels import Reading
from watcher.sources.disksample import filesystem_type, is_network_fs, sample, sample_with_timeout


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event blocking fakes wait on, set at teardown so their worker threads can finish."""
    event = threading.Event()
    yield event
    event.set()


def blocking(gate: threading.Event, started: threading.Event) -> Callable[[Path], Reading]:
    """A sampler that hangs like a dead NFS mount until ``gate`` is set."""

    def sampler(path: Path) -> Reading:
        started.set()
        gate.wait()
        return Reading(1, 1, None, None)

    return sampler


def test_sample_matches_statvfs(tmp_path: Path) -> None:
    """A reading of tmp_path's filesystem has statvfs's total and a free space within it."""
    reading = sample(tmp_path)
    st = os.statvfs(tmp_path)
    assert reading.total == st.f_blocks * st.f_frsize == psutil.disk_usage(str(tmp_path)).total
    assert 0 <= reading.free <= reading.total
    if st.f_files:
        assert reading.inodes_total == st.f_files
        assert reading.inodes_free is not None
        assert 0 <= reading.inodes_free <= reading.inodes_total
    else:
        assert reading.inodes_free is reading.inodes_total is None


def test_sample_without_inodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that reports no inodes (f_files == 0) gives None inode counts."""
    fake = os.statvfs_result((4096, 4096, 100, 50, 40, 0, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    assert sample(tmp_path) == Reading(
        free=40 * 4096, total=100 * 4096, inodes_free=None, inodes_total=None
    )


@pytest.mark.asyncio
async def test_sample_with_timeout_returns_a_reading(tmp_path: Path) -> None:
    """A sample that finishes in time is returned as taken."""
    reading = await sample_with_timeout(tmp_path, 30.0)
    assert reading is not None
    assert reading.total == sample(tmp_path).total


@pytest.mark.asyncio
async def test_sample_with_timeout_abandons_a_hung_sample(
    tmp_path: Path, gate: threading.Event
) -> None:
    """A sampler that blocks past the timeout yields None instead of hanging the caller."""
    started = threading.Event()
    assert await sample_with_timeout(tmp_path, 0.05, blocking(gate, started)) is None


@pytest.mark.asyncio
async def test_in_flight_lock_keeps_one_thread_on_a_hung_mount(
    tmp_path: Path, gate: threading.Event
) -> None:
    """While an abandoned sample holds the lock, later calls return None without sampling."""
    started, lock, calls = threading.Event(), threading.Lock(), []
    hung = blocking(gate, started)

    def counting(path: Path) -> Reading:
        calls.append(path)
        return hung(path)

    assert await sample_with_timeout(tmp_path, 0.05, counting, in_flight=lock) is None
    await anyio.to_thread.run_sync(started.wait)
    assert await sample_with_timeout(tmp_path, 30.0, counting, in_flight=lock) is None
    assert calls == [tmp_path]


@pytest.mark.asyncio
async def test_in_flight_lock_is_released_after_a_sample(tmp_path: Path) -> None:
    """A sample that finished leaves the lock free for the next one."""
    lock = threading.Lock()
    assert await sample_with_timeout(tmp_path, 30.0, in_flight=lock) is not None
    assert await sample_with_timeout(tmp_path, 30.0, in_flight=lock) is not None
    assert not lock.locked()


def test_filesystem_type_of_tmp_path(tmp_path: Path) -> None:
    """The mount holding tmp_path has a non-empty type name."""
    fstype = filesystem_type(tmp_path)
    assert isinstance(fstype, str)
    assert fstype


def test_filesystem_type_takes_the_longest_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deepest mount point containing the path wins, matched by whole path components."""
    root = tmp_path.resolve()
    mounts = [("/", "ext4"), (str(root), "nfs4"), (str(root / "a"), "tmpfs")]
    parts = [SimpleNamespace(mountpoint=m, fstype=t) for m, t in mounts]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all: parts)
    assert filesystem_type(root / "ab" / "c") == "nfs4"
    assert filesystem_type(root / "a" / "c") == "tmpfs"
    assert filesystem_type(root) == "nfs4"


def test_filesystem_type_unknown_without_a_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path under no listed mount point has type "unknown"."""
    monkeypatch.setattr(psutil, "disk_partitions", lambda all: [])
    assert filesystem_type(tmp_path) == "unknown"


@pytest.mark.parametrize(
    ("fstype", "expected"),
    [
        ("nfs", True),
        ("nfs4", True),
        ("cifs", True),
        ("smb3", True),
        ("smbfs", True),
        ("fuse.sshfs", True),
        ("fuse.s3fs", True),
        ("sshfs", True),
        ("9p", True),
        ("glusterfs", True),
        ("ceph", True),
        ("NFS4", True),
        ("ext4", False),
        ("xfs", False),
        ("btrfs", False),
        ("tmpfs", False),
        ("overlay", False),
        ("zfs", False),
        ("", False),
    ],
)
def test_is_network_fs(fstype: str, expected: bool) -> None:
    """Remote and FUSE filesystem types are network filesystems; local ones are not."""
    assert is_network_fs(fstype) is expected
