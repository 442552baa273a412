"""``watcher diagnose``: the environment report an operator sends to support.

Collected without the service: OS and kernel, Python and package versions, the absolute
paths involved, the data dir's filesystem (type, size, free space and inodes, and whether
watching will poll), inotify limits, the time zone, and the result of ``config check``.
Free space under the model product's 10 MB floor is flagged (``filesystem.below_floor`` and
a line in ``warnings``), and ``diagnose`` then exits 1.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from watcher.config import Config, ConfigError, find_config
from watcher.jobs.dbcheck import FLOOR
from watcher.registry import default_config, load_config
from watcher.service.lifecycle import inotify_limits
from watcher.sources.disksample import filesystem_type, is_network_fs, sample
from watcher.system.lock import running_pid

PACKAGES = (
    "watcher",
    "watchfiles",
    "anyio",
    "aiofiles",
    "structlog",
    "psutil",
    "orjson",
    "asyncinotify",
    "httpx",
)


def collect(config_path: Path | None, data_dir: Path | None) -> dict[str, Any]:
    """The report as a JSON-ready dict; never raises for a broken config (it reports it)."""
    path = find_config(config_path)
    report: dict[str, Any] = {
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "version": platform.version(),
            "machine": platform.machine(),
            "distribution": _os_release(),
        },
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "packages": {name: _version(name) for name in PACKAGES},
        "paths": {
            "executable_dir": str(_executable_dir()),
            "watcher_on_path": shutil.which("watcher"),
            "config": str(path.resolve()) if path else None,
        },
        "inotify": inotify_limits(),
        "user": {"uid": os.getuid(), "gid": os.getgid()},
    }
    try:
        config = load_config(path, data_dir)
        report["config_check"] = {"ok": True, "problems": []}
    except ConfigError as exc:
        report["config_check"] = {"ok": False, "problems": [str(p) for p in exc.problems]}
        fallback = data_dir or _configured_data_dir(path)
        if fallback is None or not fallback.is_dir():
            return report
        config = default_config(fallback)  # still describe the data dir's environment
        report["config_check"]["described_with"] = "defaults (the config is broken)"
    report["timezone"] = config.timezone
    report["paths"] |= _paths(config)
    report["filesystem"] = _filesystem(config)
    report["warnings"] = _warnings(report["filesystem"])
    pid = running_pid(config.paths.state / "lock")
    report["service"] = {"running": pid is not None, "pid": pid if pid and pid > 0 else None}
    return report


def _configured_data_dir(path: Path | None) -> Path | None:
    """``data_dir`` from a config file that may be broken elsewhere."""
    if path is None:
        return None
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    value = raw.get("data_dir")
    return path.parent / value if isinstance(value, str) else None


def _paths(config: Config) -> dict[str, Any]:
    p = config.paths
    return {
        name: str(getattr(p, name).resolve())
        for name in ("maint_file", "data", "files", "spool", "state", "logs")
    } | {"data_dir": str(config.data_dir.resolve())}


def _filesystem(config: Config) -> dict[str, Any]:
    fstype = filesystem_type(config.data_dir)
    reading = sample(config.data_dir)
    mode = config.watch.mode
    polls = mode == "poll" or (mode == "auto" and is_network_fs(fstype))
    return {
        "type": fstype,
        "network": is_network_fs(fstype),
        "watching": "poll" if polls else "inotify",
        "total": reading.total,
        "free": reading.free,
        "floor": FLOOR,
        "below_floor": reading.free < FLOOR,
        "inodes_total": reading.inodes_total,
        "inodes_free": reading.inodes_free,
    }


def _warnings(fs: dict[str, Any]) -> list[str]:
    """What support should see first: free space under the model product's 10 MB floor."""
    if fs["free"] < FLOOR:
        return [
            f"free space {fs['free']} bytes is under the 10 MB floor ({FLOOR} bytes):"
            " the application stops working below it"
        ]
    return []


def _executable_dir() -> Path:
    """Where the ``watcher`` command lives (the interpreter's under ``python -m watcher``)."""
    script = Path(sys.argv[0])
    if script.name == "watcher":
        return script.resolve().parent
    return Path(sys.executable).parent


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None


def format_report(report: dict[str, Any], indent: str = "") -> str:
    """Readable nested ``key: value`` lines."""
    lines: list[str] = []
    for key, value in report.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(format_report(value, indent + "  "))
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: " + ("none" if not value else ""))
            lines += [f"{indent}  - {item}" for item in value]
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)
