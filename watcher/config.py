"""The configuration: typed, frozen records built from TOML, with every problem reported at once.

``load_config`` reads the file (or none: defaults), applies ``--data-dir``, and either
returns a ``Config`` or raises ``ConfigError`` listing each problem as
``file: key: reason``. Nothing here prints or exits; the CLI does that (exit 2). Callers
use ``watcher.registry``'s loaders, which pass in the checks only handler and job types
can make (:class:`PluginChecks`).

Relative paths: ``data_dir`` in a file is relative to that file's directory; ``[paths]``
entries are relative to ``data_dir``; ``--data-dir`` is relative to the working directory.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import re
import socket
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watcher.core.units import Level as SpaceLevel
from watcher.core.units import (
    parse_bytes,
    parse_count_level,
    parse_duration,
    parse_level,
    parse_rate,
    parse_time_of_day,
    parse_weekday,
)
from watcher.events.record import LEVELS, Level

T = TypeVar("T")
DEFAULT_CONFIG_PATHS = (Path("/etc/watcher/watcher.toml"),)
BUILTIN_HANDLER_TYPES = ("log", "command", "webhook")
JOB_ARG_KEYS: dict[str, frozenset[str]] = {
    "dbcheck": frozenset({"check", "on_corruption", "optimise"}),
    "backup": frozenset({"dest", "keep"}),
    "restore": frozenset({"from"}),
    "archive": frozenset({"before", "space"}),
    "command": frozenset({"argv", "env"}),
}
_JOB_COMMON_KEYS = frozenset({"name", "type", "at", "days", "maintenance", "timeout", "retry_safe"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {shortened(self.reason)}"


MAX_REASON = 240  # a reason quoting a huge value is cut in its middle, keeping the hint


def shortened(text: str, limit: int = MAX_REASON) -> str:
    """``text``, or its start and end around ``…`` when longer than ``limit``."""
    if len(text) <= limit:
        return text
    head = limit // 3
    return f"{text[:head]}…{text[len(text) - (limit - head - 1) :]}"


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` says every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class PathsConfig:
    maint_file: Path
    data: Path
    files: Path
    archive_root: Path
    logs: Path
    spool: Path
    state: Path


@dataclass(frozen=True)
class WatchConfig:
    mode: Literal["auto", "native", "poll"] = "auto"
    poll_interval: float = 1.0


@dataclass(frozen=True)
class WindowConfig:
    name: str
    start: int  # minutes since local midnight
    end: int
    message: str | None = None
    days: frozenset[int] = frozenset(range(7))


@dataclass(frozen=True)
class MaintenanceConfig:
    message: str = "The system is under maintenance."
    granularity: int = 10  # minutes
    notice: float = 600.0
    windows: tuple[WindowConfig, ...] = ()


_WARN = SpaceLevel(percent=10.0)
_MAINTENANCE = SpaceLevel(amount=512 * 1024**2)
_CRITICAL = SpaceLevel(amount=10 * 1024**2)  # the model product's floor
_INODES_WARN = SpaceLevel(percent=5.0)
_INODES_CRITICAL = SpaceLevel(percent=1.0)


@dataclass(frozen=True)
class DiskConfig:
    interval: float = 1.0
    warn: SpaceLevel = _WARN
    maintenance: SpaceLevel = _MAINTENANCE
    critical: SpaceLevel = _CRITICAL
    inodes_warn: SpaceLevel = _INODES_WARN
    inodes_critical: SpaceLevel = _INODES_CRITICAL
    for_samples: int = 2
    reminder: float = 600.0
    timeout: float = 5.0  # sampling timeout (network filesystems)
    fast_interval: float = 0.05  # the fastest sampling, when a crossing is possible now
    max_fill_rate: float = float(1024**3)  # bytes/s the filesystem can fill at most (pacing)
    forecast_horizon: float = 1800.0  # disk.forecast when maintenance is this close; 0: off


@dataclass(frozen=True)
class TriggerConfig:
    allowed_uids: tuple[int, ...] = ()
    allowed_paths: tuple[Path, ...] = ()
    max_size: int = 64 * 1024
    # jobs that do not hold maintenance (command jobs) running at once; more wait their turn
    max_concurrent: int = field(default_factory=lambda: (os.cpu_count() or 1) * 4)


@dataclass(frozen=True)
class ControlConfig:
    allowed_uids: tuple[int, ...] = ()
    allowed_gids: tuple[int, ...] = ()
    group: int | None = None  # the control socket's group (a gid); None: watcher's own


@dataclass(frozen=True)
class JobConfig:
    name: str
    type: str
    at: int | None = None
    days: frozenset[int] = frozenset(range(7))
    maintenance: bool | None = None  # None: the job type's default
    timeout: float | None = None
    retry_safe: bool | None = None
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HandlerConfig:
    type: str = "log"
    events: tuple[str, ...] = ("*",)
    min_level: Level = "info"
    timeout: float = 5.0
    queue_size: int = 10_000
    target: str = "stdout"
    format: Literal["auto", "json", "console"] = "auto"
    argv: tuple[str, ...] = ()
    url: str = ""
    secret_env: str | None = None
    retries: int = 3
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchiveTableConfig:
    """One table the archive job moves rows of (``[[archive.tables]]``)."""

    database: str  # relative to paths.data
    table: str
    date_column: str
    date_format: Literal["iso", "unix"] = "iso"
    space_column: str | None = None
    attachment_column: str | None = None
    attachment_path: str = "{value}"  # relative to paths.files; {value} and {space}


@dataclass(frozen=True)
class ArchiveConfig:
    tables: tuple[ArchiveTableConfig, ...] = ()
    immutable: bool = True  # chattr +i on archived files where the filesystem allows


@dataclass(frozen=True)
class ServiceConfig:
    shutdown_timeout: float = 30.0


@dataclass(frozen=True)
class HistoryConfig:
    enabled: bool = True
    max_age: float = 7 * 86400.0  # seconds
    max_size: int = 64 * 1024**2  # bytes


@dataclass(frozen=True)
class HttpConfig:
    listen: str = ""  # "127.0.0.1:9469"; empty: no listener
    textfile: str = ""  # node_exporter textfile path; empty: none
    release_token_file: str = ""  # empty: the release action is off


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]``: one maintenance decision across hosts, on Redis (off while ``url`` is "").

    The password is never held here: ``password_file`` / ``password_env`` say where to read it
    when connecting, so no repr, report or event can print it.
    """

    url: str = ""  # redis://host:port/db, rediss://…, unix:///path/redis.sock
    name: str = "default"  # the fleet: its keys are watcher:<name>:*
    host_id: str = field(default_factory=lambda: socket.gethostname())
    password_file: str = ""
    password_env: str = ""
    heartbeat: float = 5.0  # seconds between heartbeats; the key lives 3× as long
    backoff_max: float = 5.0  # the longest wait between reconnection attempts
    windows: tuple[WindowConfig, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.url)


@dataclass(frozen=True)
class Config:
    data_dir: Path
    paths: PathsConfig
    source: Path | None = None
    timezone: str = "UTC"
    watch: WatchConfig = WatchConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    disk: DiskConfig = DiskConfig()
    trigger: TriggerConfig = TriggerConfig()
    control: ControlConfig = ControlConfig()
    jobs: tuple[JobConfig, ...] = ()
    handlers: tuple[HandlerConfig, ...] = (HandlerConfig(),)
    service: ServiceConfig = ServiceConfig()
    history: HistoryConfig = HistoryConfig()
    http: HttpConfig = HttpConfig()
    archive: ArchiveConfig = ArchiveConfig()
    cluster: ClusterConfig = ClusterConfig()

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def job(self, name: str) -> JobConfig | None:
        return next((j for j in self.jobs if j.name == name), None)


class _Collector:
    """Collects problems for one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, key: str, reason: str) -> None:
        self.problems.append(Problem(self.file, key, reason))


class _Section:
    """Reads one TOML table, converting values and recording problems and unknown keys."""

    def __init__(self, data: object, prefix: str, out: _Collector) -> None:
        self.prefix = prefix
        self.out = out
        self.seen: set[str] = set()
        if isinstance(data, dict):
            self.data: dict[str, Any] = data
        else:
            out.add(prefix or "(top level)", "expected a table")
            self.data = {}

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def get(self, name: str, convert: Callable[[Any], T], default: T) -> T:
        self.seen.add(name)
        if name not in self.data:
            return default
        try:
            return convert(self.data[name])
        except (ValueError, TypeError) as exc:
            self.out.add(self.key(name), str(exc))
            return default

    def finish(self, allowed_extra: frozenset[str] = frozenset()) -> None:
        for name in self.data:
            if name not in self.seen and name not in allowed_extra:
                self.out.add(self.key(name), "unknown key")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number ≥ 1, got {value!r}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number ≥ 0, got {value!r}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _choice(*options: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value not in options:
            raise ValueError(f"{value!r} is not one of: {', '.join(options)}")
        return value

    return convert


def _weekdays(value: Any) -> frozenset[int]:
    days = frozenset(parse_weekday(d) for d in _strings(value))
    if not days:
        raise ValueError("no days given, so it would never run; leave days out for every day")
    return days


def _duration_or_off(value: Any) -> float:
    """A duration, or ``0`` / ``"0"`` for off."""
    return 0.0 if value in (0, "0") else parse_duration(value)


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _timezone(value: Any) -> str:
    name = _string(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'{name!r} is not a known IANA time zone (e.g. "Asia/Tokyo")') from None
    return name


def system_timezone() -> str:
    """The system's IANA zone name: $TZ, /etc/timezone, the /etc/localtime link, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        link = os.readlink("/etc/localtime")
        candidates.append(link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "")
    except OSError:
        pass
    for name in candidates:
        try:
            if name:
                ZoneInfo(name)
                return name
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return "UTC"


def _paths_for(data_dir: Path, raw: object, out: _Collector) -> PathsConfig:
    section = _Section(raw, "paths", out)
    defaults = {
        "maint_file": "mw/data/maint",
        "data": "mw/data",
        "files": "mw/file",
        "archive_root": "mw",
        "logs": "mw/log/sched/dynamic",
        "spool": "mw/spool",
        "state": "mw/watcher",
    }
    resolved = {
        name: data_dir / section.get(name, _string, default) for name, default in defaults.items()
    }
    section.finish()
    return PathsConfig(**resolved)


def _window(raw: object, key: str, granularity: int, out: _Collector) -> WindowConfig | None:
    section = _Section(raw, key, out)
    name = section.get("name", _string, "")
    if not name:
        out.add(section.key("name"), "every window needs a name")

    def time_of_day(value: Any) -> int:
        return parse_time_of_day(value, granularity)

    start = section.get("start", time_of_day, -1)
    end = section.get("end", time_of_day, -1)
    for part in ("start", "end"):
        if not section.has(part):
            out.add(section.key(part), 'missing; use "HH:MM"')
    message = section.get("message", _string, None)
    days = section.get("days", _weekdays, None)
    section.finish()
    if start >= 0 and start == end:
        out.add(section.key("end"), "equals start; a window cannot be empty")
        return None
    if start < 0 or end < 0 or not name:
        return None
    return WindowConfig(
        name, start, end, message, days if days is not None else frozenset(range(7))
    )


def _maintenance(raw: object, out: _Collector) -> MaintenanceConfig:
    section = _Section(raw, "maintenance", out)
    message = section.get("message", _string, MaintenanceConfig.message)
    granularity_s = section.get("granularity", _positive_duration, 600.0)
    granularity = int(granularity_s // 60)
    if granularity_s % 60 or granularity < 1 or (24 * 60) % granularity:
        out.add("maintenance.granularity", 'must be whole minutes that divide a day (e.g. "10m")')
        granularity = 10
    notice = section.get("notice", parse_duration, MaintenanceConfig.notice)
    windows = _windows(section, granularity, out)
    section.finish()
    return MaintenanceConfig(message, granularity, notice, windows)


def _windows(section: _Section, granularity: int, out: _Collector) -> tuple[WindowConfig, ...]:
    """A section's ``[[….windows]]``: each checked, names unique (maintenance and cluster)."""
    windows: list[WindowConfig] = []
    for i, item in enumerate(_array(section, "windows")):
        key = f"{section.key('windows')}[{i}]"
        window = _window(item, key, granularity, out)
        if window is not None:
            if any(w.name == window.name for w in windows):
                out.add(f"{key}.name", f"duplicate window name {window.name!r}")
            windows.append(window)
    return tuple(windows)


def _disk(raw: object, out: _Collector, data_dir: Path) -> DiskConfig:
    section = _Section(raw, "disk", out)
    d = DiskConfig()
    disk = DiskConfig(
        interval=section.get("interval", _positive_duration, d.interval),
        warn=section.get("warn", parse_level, d.warn),
        maintenance=section.get("maintenance", parse_level, d.maintenance),
        critical=section.get("critical", parse_level, d.critical),
        inodes_warn=section.get("inodes_warn", parse_count_level, d.inodes_warn),
        inodes_critical=section.get("inodes_critical", parse_count_level, d.inodes_critical),
        for_samples=section.get("for_samples", _positive_int, d.for_samples),
        reminder=section.get("reminder", _positive_duration, d.reminder),
        timeout=section.get("timeout", _positive_duration, d.timeout),
        fast_interval=section.get("fast_interval", _positive_duration, d.fast_interval),
        max_fill_rate=section.get("max_fill_rate", parse_rate, d.max_fill_rate),
        forecast_horizon=section.get("forecast_horizon", _duration_or_off, d.forecast_horizon),
    )
    section.finish()
    if disk.fast_interval > disk.interval:
        out.add("disk.fast_interval", f"must not be longer than disk.interval ({disk.interval:g}s)")
    try:
        st = os.statvfs(data_dir)
        total, inodes = st.f_blocks * st.f_frsize, st.f_files
    except OSError:
        total, inodes = 100 * 1024**3, 10**7
    # Two levels of one kind (both % or both sizes) must be ordered. A mixed pair is compared
    # on this filesystem only when the operator set both; a default that does not fit a small
    # filesystem (10% vs 512MiB below ~5GiB) is clamped at sample time
    # instead (watcher.core.disklevels).
    order = (("warn", disk.warn), ("maintenance", disk.maintenance), ("critical", disk.critical))
    for (hi_name, hi), (lo_name, lo) in itertools.pairwise(order):
        same_kind = (hi.percent is None) == (lo.percent is None)
        both_set = section.has(hi_name) and section.has(lo_name)
        if (same_kind or both_set) and hi.resolve(total) <= lo.resolve(total):
            out.add(
                f"disk.{hi_name}",
                f"{hi} must be more free space than disk.{lo_name} ({lo}) on this filesystem",
            )
    if inodes and disk.inodes_warn.resolve(inodes) <= disk.inodes_critical.resolve(inodes):
        out.add("disk.inodes_warn", "must be more free inodes than disk.inodes_critical")
    return disk


def _trigger(raw: object, out: _Collector, base: Path) -> TriggerConfig:
    section = _Section(raw, "trigger", out)

    def uids(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        ):
            raise ValueError("expected a list of numeric user ids")
        return tuple(value)

    def roots(value: Any) -> tuple[Path, ...]:
        return tuple((base / p).resolve() for p in _strings(value))

    trigger = TriggerConfig(
        allowed_uids=section.get("allowed_uids", uids, ()),
        allowed_paths=section.get("allowed_paths", roots, ()),
        max_size=section.get("max_size", parse_bytes, TriggerConfig.max_size),
        max_concurrent=section.get("max_concurrent", _positive_int, TriggerConfig().max_concurrent),
    )
    section.finish()
    return trigger


def _ids(what: str) -> Callable[[Any], tuple[int, ...]]:
    def ids(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32 for v in value
        ):
            raise ValueError(f"expected a list of numeric {what} ids")
        return tuple(value)

    return ids


def _group(value: Any) -> int:
    """A group name or a numeric gid that exists on this machine."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
        return value
    name = _string(value)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"no group named {name!r} on this machine") from None


def _control(raw: object, out: _Collector) -> ControlConfig:
    section = _Section(raw, "control", out)
    control = ControlConfig(
        allowed_uids=section.get("allowed_uids", _ids("user"), ()),
        allowed_gids=section.get("allowed_gids", _ids("group"), ()),
        group=section.get("group", _group, None),
    )
    section.finish()
    return control


def _job(raw: object, key: str, granularity: int, out: _Collector) -> JobConfig | None:
    section = _Section(raw, key, out)
    name = section.get("name", _string, "")
    job_type = section.get("type", _string, name)
    mistyped = section.has("name") and not isinstance(section.raw("name"), str)
    if not name and not mistyped:  # a name of the wrong type is reported already
        out.add(section.key("name"), "every job needs a name")
    at = section.get("at", lambda v: parse_time_of_day(v, granularity), None)
    days = section.get("days", _weekdays, None)
    job = JobConfig(
        name=name,
        type=job_type,
        at=at,
        days=days if days is not None else frozenset(range(7)),
        maintenance=section.get("maintenance", _boolean, None),
        timeout=section.get("timeout", _positive_duration, None),
        retry_safe=section.get("retry_safe", _boolean, None),
        args={k: v for k, v in section.data.items() if k not in _JOB_COMMON_KEYS},
    )
    allowed = JOB_ARG_KEYS.get(job_type)
    section.finish(allowed if allowed is not None else frozenset(section.data))  # plugins: theirs
    return job if name else None


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"


def _identifier(value: Any) -> str:
    name = _string(value)
    if not re.fullmatch(_IDENTIFIER, name):
        raise ValueError(f"{name!r} is not a plain SQL name (letters, digits, _)")
    return name


def _relative(value: Any) -> str:
    text = _string(value)
    parts = Path(text).parts
    if not text or Path(text).is_absolute() or ".." in parts:
        raise ValueError(f"{text!r} must be a relative path without ..")
    return text


def _attachment_pattern(value: Any) -> str:
    text = _relative(value)
    try:
        text.format(value="x", space="ws1")
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"{text!r}: only {{value}} and {{space}} may be used") from None
    if "{value}" not in text:
        raise ValueError(f"{text!r} must contain {{value}}")
    return text


def _archive_table(raw: object, key: str, out: _Collector) -> ArchiveTableConfig | None:
    section = _Section(raw, key, out)
    database = section.get("database", _relative, "")
    table = section.get("table", _identifier, "")
    date_column = section.get("date_column", _identifier, "")
    for name, value in (("database", database), ("table", table), ("date_column", date_column)):
        if not value and not section.has(name):
            out.add(section.key(name), "required")
    entry = ArchiveTableConfig(
        database=database,
        table=table,
        date_column=date_column,
        date_format=cast(Any, section.get("date_format", _choice("iso", "unix"), "iso")),
        space_column=section.get("space_column", _identifier, None),
        attachment_column=section.get("attachment_column", _identifier, None),
        attachment_path=section.get("attachment_path", _attachment_pattern, "{value}"),
    )
    if section.has("attachment_path") and entry.attachment_column is None:
        out.add(section.key("attachment_path"), "needs attachment_column")
    section.finish()
    return entry if database and table and date_column else None


def _archive(raw: object, out: _Collector) -> ArchiveConfig:
    section = _Section(raw, "archive", out)
    immutable = section.get("immutable", _boolean, True)
    tables: list[ArchiveTableConfig] = []
    for i, item in enumerate(_array(section, "tables")):
        entry = _archive_table(item, f"archive.tables[{i}]", out)
        if entry is None:
            continue
        if any((t.database, t.table) == (entry.database, entry.table) for t in tables):
            out.add(f"archive.tables[{i}]", f"{entry.database} {entry.table} is listed twice")
        tables.append(entry)
    section.finish()
    return ArchiveConfig(tables=tuple(tables), immutable=immutable)


def _handler(raw: object, key: str, out: _Collector) -> HandlerConfig:
    section = _Section(raw, key, out)
    d = HandlerConfig()
    kind = section.get("type", _string, "log")
    handler = HandlerConfig(
        type=kind,
        events=section.get("events", _strings, d.events),
        min_level=section.get("min_level", _choice(*LEVELS), d.min_level),
        timeout=section.get("timeout", _positive_duration, d.timeout),
        queue_size=section.get("queue_size", _positive_int, d.queue_size),
        target=section.get("target", _string, d.target),
        format=section.get("format", _choice("auto", "json", "console"), d.format),
        argv=section.get("argv", _strings, d.argv),
        url=section.get("url", _string, d.url),
        secret_env=section.get("secret_env", _string, None),
        retries=section.get("retries", _count, d.retries),
        options={k: v for k, v in section.data.items() if k not in section.seen},
    )
    if kind == "log" and handler.target != "stdout" and not Path(handler.target).parent.is_dir():
        out.add(section.key("target"), f"directory {Path(handler.target).parent} does not exist")
    if kind == "command" and not handler.argv:
        out.add(section.key("argv"), "a command handler needs a non-empty argv list")
    if kind == "webhook" and not handler.url.startswith(("http://", "https://")):
        out.add(section.key("url"), "a webhook handler needs an http:// or https:// url")
    section.finish(frozenset(section.data) if kind not in BUILTIN_HANDLER_TYPES else frozenset())
    return handler


def _array(section: _Section, name: str) -> list[Any]:
    value = section.raw(name)
    if value is None:
        return []
    if not isinstance(value, list):
        section.out.add(section.key(name), f"expected an array of tables ([[{section.key(name)}]])")
        return []
    return value


def build_config(
    raw: Mapping[str, Any],
    *,
    source: Path | None,
    checks: PluginChecks,
    data_dir: Path | None = None,
) -> Config:
    """A ``Config`` from parsed TOML; raises ``ConfigError`` with every problem found."""
    out = _Collector(str(source) if source else "(no config file)")
    top = _Section(dict(raw), "", out)
    base = source.parent if source else Path.cwd()
    configured = top.get("data_dir", _string, None)
    if data_dir is None and configured is not None:
        data_dir = base / configured
    if data_dir is None:
        if not top.has("data_dir"):  # a data_dir of the wrong type is reported already
            out.add("data_dir", "required: set data_dir in the config or pass --data-dir")
        data_dir = Path("/nonexistent")
    data_dir = data_dir.absolute()
    if (configured is not None or data_dir != Path("/nonexistent")) and not data_dir.is_dir():
        out.add("data_dir", f"directory {data_dir} does not exist")
    tz = top.get("timezone", _timezone, None) or system_timezone()
    paths = _paths_for(data_dir, top.raw("paths") or {}, out)
    watch_s = _Section(top.raw("watch") or {}, "watch", out)
    watch = WatchConfig(
        mode=cast(Any, watch_s.get("mode", _choice("auto", "native", "poll"), "auto")),
        poll_interval=watch_s.get("poll_interval", _positive_duration, 1.0),
    )
    watch_s.finish()
    maintenance = _maintenance(top.raw("maintenance") or {}, out)
    disk = _disk(top.raw("disk") or {}, out, data_dir)
    trigger = _trigger(top.raw("trigger") or {}, out, base)
    control = _control(top.raw("control") or {}, out)
    numbered_jobs = [
        (i, job)
        for i, item in enumerate(_array(top, "jobs"))
        if (job := _job(item, f"jobs[{i}]", maintenance.granularity, out)) is not None
    ]
    jobs = [job for _i, job in numbered_jobs]
    seen: set[str] = set()
    for i, job in numbered_jobs:
        if job.name in seen:
            out.add(f"jobs[{i}].name", f"duplicate job name {job.name!r}")
        seen.add(job.name)
    handlers_raw = _array(top, "handlers")
    handlers = [_handler(item, f"handlers[{i}]", out) for i, item in enumerate(handlers_raw)]
    _check_plugins(numbered_jobs, handlers, checks, out)
    service_s = _Section(top.raw("service") or {}, "service", out)
    service = ServiceConfig(
        shutdown_timeout=service_s.get("shutdown_timeout", parse_duration, 30.0)
    )
    service_s.finish()
    history = _history(top.raw("history") or {}, out)
    http = _http(top.raw("http") or {}, out, base)
    archive = _archive(top.raw("archive") or {}, out)
    cluster = _cluster(top.raw("cluster") or {}, out, base, maintenance.granularity)
    top.finish()
    if out.problems:
        raise ConfigError(out.problems)
    return Config(
        data_dir=data_dir,
        source=source,
        timezone=tz,
        paths=paths,
        watch=watch,
        maintenance=maintenance,
        disk=disk,
        trigger=trigger,
        control=control,
        jobs=tuple(jobs),
        handlers=tuple(handlers) if handlers_raw else (HandlerConfig(),),
        service=service,
        history=history,
        http=http,
        archive=archive,
        cluster=cluster,
    )


_CLUSTER_NAME = r"[A-Za-z0-9_.-]+"


def _cluster_url(value: Any) -> str:
    url = _string(value)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{redact_url(url)!r}: use redis://, rediss:// or unix://")
    return url


def _cluster_name(value: Any) -> str:
    name = _string(value)
    if not re.fullmatch(_CLUSTER_NAME, name):
        raise ValueError(f"{name!r}: use letters, digits, '.', '_' or '-'")
    return name


def _cluster(raw: object, out: _Collector, base: Path, granularity: int) -> ClusterConfig:
    section = _Section(raw, "cluster", out)
    d = ClusterConfig(host_id="")

    def path(value: Any) -> str:
        return str(base / _string(value))

    url = section.get("url", _cluster_url, "")
    cluster = ClusterConfig(
        url=url,
        name=section.get("name", _cluster_name, d.name),
        host_id=section.get("host_id", _cluster_name, "") or socket.gethostname(),
        password_file=section.get("password_file", path, ""),
        password_env=section.get("password_env", _string, ""),
        heartbeat=section.get("heartbeat", _positive_duration, d.heartbeat),
        backoff_max=section.get("backoff_max", _positive_duration, d.backoff_max),
    )
    windows = _windows(section, granularity, out)
    section.finish()
    if section.data and not url:
        out.add("cluster.url", "required when [cluster] is given (redis://, rediss://, unix://)")
    if cluster.password_file and cluster.password_env:
        out.add("cluster.password_env", "give password_file or password_env, not both")
    if cluster.password_file and not Path(cluster.password_file).is_file():
        out.add("cluster.password_file", f"file {cluster.password_file} does not exist")
    return replace(cluster, windows=windows)


def redact_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***`` (for messages and reports)."""
    url = re.sub(r"^([a-z]+://)([^/@]*:)?[^/@]*@", lambda m: f"{m[1]}{m[2] or ''}***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _history(raw: object, out: _Collector) -> HistoryConfig:
    section = _Section(raw, "history", out)
    d = HistoryConfig()
    history = HistoryConfig(
        enabled=section.get("enabled", _boolean, d.enabled),
        max_age=section.get("max_age", _positive_duration, d.max_age),
        max_size=section.get("max_size", parse_bytes, d.max_size),
    )
    section.finish()
    return history


def _listen(value: Any) -> str:
    host, sep, port = _string(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (port 0: any free port), got {value!r}")
    return str(value)


def _http(raw: object, out: _Collector, base: Path) -> HttpConfig:
    section = _Section(raw, "http", out)

    def path(value: Any) -> str:
        return str(base / _string(value))

    http = HttpConfig(
        listen=section.get("listen", _listen, ""),
        textfile=section.get("textfile", path, ""),
        release_token_file=section.get("release_token_file", path, ""),
    )
    section.finish()
    if http.release_token_file and not Path(http.release_token_file).is_file():
        out.add("http.release_token_file", f"file {http.release_token_file} does not exist")
    return http


class PluginChecks(Protocol):
    """What the handler and job types say of their options; supplied by ``watcher.registry``.

    Config validates the schema; whether ``type = "module:attr"`` loads and whether a job's
    arguments suit its type is for the types themselves. Config does not import them (they
    import config): the registry passes them in.
    """

    def job(self, config: JobConfig) -> list[str]: ...

    def handler(self, config: HandlerConfig) -> list[str]: ...


def _check_plugins(
    jobs: list[tuple[int, JobConfig]],
    handlers: list[HandlerConfig],
    checks: PluginChecks,
    out: _Collector,
) -> None:
    """Job arguments checked by their job type; plugin handlers and jobs importable."""
    for i, job in jobs:
        for reason in checks.job(job):
            out.add(f"jobs[{i}]", reason)
    for i, handler in enumerate(handlers):
        for reason in checks.handler(handler):
            out.add(f"handlers[{i}]", reason)


def default_config(data_dir: Path, checks: PluginChecks) -> Config:
    """The configuration with every default, for ``data_dir``."""
    return build_config({}, source=None, checks=checks, data_dir=data_dir)


def find_config(explicit: Path | None) -> Path | None:
    """The config file to use: ``--config``, else ``$WATCHER_CONFIG``, else /etc/watcher/…"""
    if explicit is not None:
        return explicit
    env = os.environ.get("WATCHER_CONFIG")
    if env:
        return Path(env)
    return next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)


def load_config(path: Path | None, checks: PluginChecks, data_dir: Path | None = None) -> Config:
    """Read and validate the config file (``None``: defaults only)."""
    raw = {} if path is None else read_toml(path)
    return build_config(raw, source=path, checks=checks, data_dir=data_dir)


MAX_CONFIG_SIZE = 1024 * 1024  # a config file is a few KiB; more is a mistake (or /dev/zero)


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; ``ConfigError`` for a missing, non-regular, huge or unparsable one.

    Opened without blocking (a FIFO given as ``--config`` must not hang the command) and
    read at most ``MAX_CONFIG_SIZE + 1`` bytes; nesting too deep for the parser
    (``RecursionError``) and bytes that are not UTF-8 are syntax errors like any other.
    """

    def problem(key: str, reason: str) -> ConfigError:
        return ConfigError([Problem(str(path), key, reason)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise problem("(file)", "no such file") from None
    except OSError as exc:
        raise problem("(file)", exc.strerror or str(exc)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise problem("(file)", "not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_CONFIG_SIZE + 1)
        except OSError as exc:
            raise problem("(file)", exc.strerror or str(exc)) from None
    if len(data) > MAX_CONFIG_SIZE:
        raise problem("(file)", f"larger than {MAX_CONFIG_SIZE // 1024} KiB")
    try:
        return tomllib.loads(data.decode())
    except UnicodeDecodeError as exc:
        raise problem("(syntax)", f"not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise problem("(syntax)", str(exc)) from None
    except RecursionError:
        raise problem("(syntax)", "arrays or tables nested too deeply") from None
