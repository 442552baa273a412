"""Configuration: every mistake is reported at once, naming file and key, exit 2, no traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServiceProcess, cli, write_config
from watcher.config import ConfigError, HandlerConfig
from watcher.core.units import Level
from watcher.registry import load_config

DATA = "@DATA@"
HEAD = f'data_dir = "{DATA}"\n'
CLI_TIMEOUT = 30  # a bound on a subprocess that should exit at once; never a synchronisation


def window(start: str, end: str, extra: str = "") -> str:
    return f'[[maintenance.windows]]\nname = "nightly"\nstart = "{start}"\nend = "{end}"\n{extra}'


# id: (config text, the key the message must name, a fragment of the reason)
ARCHIVE_TABLE = '[[archive.tables]]\ndatabase = "mail.db"\ntable = "mails"\n'
MISTAKES: dict[str, tuple[str, str, str]] = {
    "archive table without date column": (
        HEAD + ARCHIVE_TABLE,
        "archive.tables[0].date_column",
        "required",
    ),
    "archive table name not plain": (
        HEAD + ARCHIVE_TABLE.replace("mails", "mails; DROP") + 'date_column = "d"\n',
        "archive.tables[0].table",
        "plain SQL name",
    ),
    "archive database outside data": (
        HEAD + ARCHIVE_TABLE.replace("mail.db", "../x.db") + 'date_column = "d"\n',
        "archive.tables[0].database",
        "without ..",
    ),
    "archive attachment pattern": (
        HEAD + ARCHIVE_TABLE + 'date_column = "d"\nattachment_column = "a"\n'
        'attachment_path = "{row}"\n',
        "archive.tables[0].attachment_path",
        "only {value} and {space}",
    ),
    "archive unknown key": (HEAD + "[archive]\ncolour = 1\n", "archive.colour", "unknown key"),
    "unknown top-level key": (HEAD + "foo = 1\n", "foo", "unknown key"),
    "unknown nested key": (HEAD + "[disk]\nfoo = 1\n", "disk.foo", "unknown key"),
    "unknown key in a handler": (
        HEAD + '[[handlers]]\ntype = "log"\ncolour = true\n',
        "handlers[0].colour",
        "unknown key",
    ),
    "unknown key in a window": (
        HEAD + window("02:00", "03:00", "colour = 1\n"),
        "maintenance.windows[0].colour",
        "unknown key",
    ),
    "wrong type: string": (
        HEAD + "[maintenance]\nmessage = 5\n",
        "maintenance.message",
        "expected a string",
    ),
    "wrong type: integer": (
        HEAD + '[disk]\nfor_samples = "two"\n',
        "disk.for_samples",
        "whole number",
    ),
    "wrong type: duration": (HEAD + "[disk]\ninterval = true\n", "disk.interval", "duration"),
    "wrong type: table": (HEAD + "disk = 5\n", "disk", "expected a table"),
    "fill rate without a time unit": (
        HEAD + '[disk]\nmax_fill_rate = "1GiB"\n',
        "disk.max_fill_rate",
        "size per second",
    ),
    "fast interval longer than the interval": (
        HEAD + '[disk]\ninterval = "1s"\nfast_interval = "2s"\n',
        "disk.fast_interval",
        "must not be longer than disk.interval",
    ),
    "wrong choice": (
        HEAD + '[[handlers]]\ntype = "log"\nformat = "xml"\n',
        "handlers[0].format",
        "is not one of",
    ),
    "bad time": (
        HEAD + window("25:00", "03:00"),
        "maintenance.windows[0].start",
        "not a time of day",
    ),
    "time off the granularity": (
        HEAD + window("02:05", "03:00"),
        "maintenance.windows[0].start",
        "granularity",
    ),
    "job time off the granularity": (
        HEAD + '[[jobs]]\nname = "check"\ntype = "dbcheck"\nat = "03:35"\n',
        "jobs[0].at",
        "granularity",
    ),
    "log file in a missing directory": (
        HEAD + '[[handlers]]\ntype = "log"\ntarget = "/nonexistent/dir/events.json"\n',
        "handlers[0].target",
        "does not exist",
    ),
    "window with no days": (
        HEAD + window("02:00", "03:00") + "days = []\n",
        "maintenance.windows[0].days",
        "no days given",
    ),
    "job with no days": (
        HEAD + '[[jobs]]\nname = "check"\ntype = "dbcheck"\nat = "03:30"\ndays = []\n',
        "jobs[0].days",
        "no days given",
    ),
    "window end equals start": (
        HEAD + window("02:00", "02:00"),
        "maintenance.windows[0].end",
        "equals start",
    ),
    "unordered disk levels": (
        HEAD + '[disk]\nwarn = "100MiB"\nmaintenance = "1GiB"\n',
        "disk.warn",
        "must be more free space than disk.maintenance",
    ),
    "unknown handler type": (
        HEAD + '[[handlers]]\ntype = "nosuch"\n',
        "handlers[0]",
        "'nosuch'",
    ),
    "command handler without argv": (
        HEAD + '[[handlers]]\ntype = "command"\n',
        "handlers[0].argv",
        "non-empty argv",
    ),
    "unimportable handler": (
        HEAD + '[[handlers]]\ntype = "nosuch.module:thing"\n',
        "handlers[0]",
        "could not import module 'nosuch.module'",
    ),
    "unimportable job type": (
        HEAD + '[[jobs]]\nname = "x"\ntype = "nosuch.module:thing"\n',
        "jobs[0]",
        "could not import module 'nosuch.module'",
    ),
    "missing data dir": (f'data_dir = "{DATA}/nosuch"\n', "data_dir", "does not exist"),
    "no data dir at all": ('[disk]\ninterval = "1s"\n', "data_dir", "required"),
    "TOML syntax error": (HEAD + "[disk\nwarn = 1\n", "(syntax)", "line 2"),
    "bad timezone": (
        HEAD + 'timezone = "Mars/Olympus"\n',
        "timezone",
        "not a known IANA time zone",
    ),
    "scheduled backup without dest": (
        HEAD + '[[jobs]]\nname = "backup"\ntype = "backup"\nat = "03:00"\n',
        "jobs[0]",
        "dest",
    ),
}


@pytest.fixture
def plain_dir(tmp_path: Path) -> Path:
    """An existing, empty data directory (config checks need nothing more)."""
    root = tmp_path / "data"
    root.mkdir()
    return root


def config_file(tmp_path: Path, data: Path, text: str, name: str = "watcher.toml") -> Path:
    return write_config(tmp_path / name, text.replace(DATA, str(data)))


def assert_reported(stderr: str, cfg: Path, key: str, fragment: str) -> None:
    """One line of ``stderr`` names the file and key and gives the reason."""
    lines = [line for line in stderr.splitlines() if f"{cfg}: {key}" in line]
    assert any(fragment in line for line in lines), (
        f"no line naming {cfg}: {key} with {fragment!r} in:\n{stderr}"
    )


@pytest.mark.parametrize(("text", "key", "fragment"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_is_a_problem_naming_file_and_key(
    tmp_path: Path, plain_dir: Path, text: str, key: str, fragment: str
) -> None:
    """``load_config`` raises ``ConfigError`` with a problem naming the file, the key and why."""
    cfg = config_file(tmp_path, plain_dir, text)
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    problems = [str(p) for p in caught.value.problems]
    assert all(p.file == str(cfg) for p in caught.value.problems)
    assert_reported("\n".join(problems), cfg, key, fragment)


@pytest.mark.parametrize("command", [["config", "check"], ["run"]], ids=["config-check", "run"])
@pytest.mark.parametrize(("text", "key", "fragment"), MISTAKES.values(), ids=MISTAKES.keys())
def test_mistake_exits_2_with_message_and_no_traceback(
    tmp_path: Path, plain_dir: Path, command: list[str], text: str, key: str, fragment: str
) -> None:
    """The CLI reports a config mistake on stderr naming file and key, exits 2, no traceback."""
    cfg = config_file(tmp_path, plain_dir, text)
    result = cli(*command, config=cfg, timeout=CLI_TIMEOUT)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert_reported(result.stderr, cfg, key, fragment)


def test_several_mistakes_are_reported_together(tmp_path: Path, plain_dir: Path) -> None:
    """Every mistake in one file is reported in one run, each with its own key."""
    text = (
        HEAD
        + 'foo = 1\ntimezone = "Mars/Olympus"\n'
        + '[disk]\nwarn = "100MiB"\nmaintenance = "1GiB"\nfor_samples = "two"\n'
        + window("25:00", "03:00")
    )
    cfg = config_file(tmp_path, plain_dir, text)
    result = cli("config", "check", config=cfg, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for key, fragment in [
        ("foo", "unknown key"),
        ("timezone", "IANA"),
        ("disk.warn", "more free space"),
        ("disk.for_samples", "whole number"),
        ("maintenance.windows[0].start", "not a time of day"),
    ]:
        assert_reported(result.stderr, cfg, key, fragment)


def test_plugin_mistakes_are_reported_with_the_others(tmp_path: Path, plain_dir: Path) -> None:
    """Unloadable handler and job types are reported together with the file's other mistakes."""
    text = (
        HEAD
        + "foo = 1\n"
        + '[[handlers]]\ntype = "nosuch.module:thing"\n'
        + '[[jobs]]\nname = "x"\ntype = "nosuch.other:thing"\n'
    )
    cfg = config_file(tmp_path, plain_dir, text)
    result = cli("config", "check", config=cfg, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert_reported(result.stderr, cfg, "foo", "unknown key")
    assert_reported(result.stderr, cfg, "handlers[0]", "'nosuch.module'")
    assert_reported(result.stderr, cfg, "jobs[0]", "'nosuch.other'")


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A ``--config`` that does not exist is a config error naming the file, not a traceback."""
    cfg = tmp_path / "absent.toml"
    result = cli("config", "check", config=cfg, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{cfg}: (file): no such file" in result.stderr


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n"), "nested too deeply"),
        (lambda p: p.write_bytes(b'message = "\xff\xfe"\n'), "not UTF-8"),
        (lambda p: os.mkfifo(p), "not a regular file"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_text("# " + "x" * (1024 * 1024) + "\n"), "larger than 1024 KiB"),
    ],
    ids=["deep-nesting", "not-utf8", "fifo", "directory", "huge"],
)
def test_unreadable_config_file_is_one_line_exit_2(
    tmp_path: Path, make: Callable[[Path], object], reason: str
) -> None:
    """A config nested too deep, not UTF-8, a FIFO, a directory, huge: one line, exit 2, no hang."""
    cfg = tmp_path / "watcher.toml"
    make(cfg)
    result = cli("config", "check", config=cfg, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{cfg}: " in result.stderr and reason in result.stderr


def test_valid_config_is_typed(tmp_path: Path, plain_dir: Path) -> None:
    """A valid file becomes typed records: seconds, minutes since midnight, levels, handlers."""
    text = (
        HEAD
        + 'timezone = "Asia/Tokyo"\n'
        + '[paths]\nmaint_file = "flags/maint"\n'
        + '[maintenance]\ngranularity = "15m"\nnotice = "5m"\n'
        + '[[maintenance.windows]]\nname = "nightly"\nstart = "23:45"\nend = "01:15"\n'
        + 'days = ["mon", "fri"]\n'
        + '[disk]\ninterval = "500ms"\nwarn = "20%"\nmaintenance = "1GiB"\ncritical = "64MiB"\n'
        + '[[jobs]]\nname = "check"\ntype = "dbcheck"\nat = "03:30"\ncheck = "quick"\n'
        + '[[handlers]]\ntype = "log"\ntarget = "stdout"\nformat = "json"\n'
        + 'min_level = "debug"\nevents = ["maintenance.*"]\n'
        + '[[handlers]]\ntype = "command"\nargv = ["/bin/true"]\ntimeout = "2s"\n'
        + '[service]\nshutdown_timeout = "1m"\n'
    )
    config = load_config(config_file(tmp_path, plain_dir, text))
    assert config.data_dir == plain_dir
    assert config.timezone == "Asia/Tokyo"
    assert config.paths.maint_file == plain_dir / "flags" / "maint"
    assert config.paths.spool == plain_dir / "mw" / "spool"
    assert config.maintenance.granularity == 15
    assert config.maintenance.notice == 300.0
    (nightly,) = config.maintenance.windows
    assert (nightly.start, nightly.end, nightly.days) == (23 * 60 + 45, 75, frozenset({0, 4}))
    assert config.disk.interval == 0.5
    assert config.disk.warn == Level(percent=20.0)
    assert config.disk.maintenance == Level(amount=1024**3)
    assert config.disk.critical == Level(amount=64 * 1024**2)
    (job,) = config.jobs
    assert (job.name, job.type, job.at) == ("check", "dbcheck", 210)
    assert dict(job.args) == {"check": "quick"}
    log, command = config.handlers
    assert log == HandlerConfig(
        type="log", events=("maintenance.*",), min_level="debug", format="json"
    )
    assert (command.type, command.argv, command.timeout) == ("command", ("/bin/true",), 2.0)
    assert config.service.shutdown_timeout == 60.0


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    """A relative ``data_dir`` in a file is resolved against that file's directory."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "app").mkdir()
    cfg = write_config(tmp_path / "etc" / "watcher.toml", 'data_dir = "app"\n')
    assert load_config(cfg).data_dir == tmp_path / "etc" / "app"


def test_no_handlers_means_one_log_handler_to_stdout(plain_dir: Path) -> None:
    """Without ``[[handlers]]`` the default is one log handler to stdout for every event."""
    config = load_config(None, plain_dir)
    assert config.handlers == (HandlerConfig(type="log", target="stdout", events=("*",)),)


def test_config_check_on_defaults(plain_dir: Path) -> None:
    """``watcher config check --data-dir D`` with no config file validates the defaults."""
    result = cli("config", "check", data_dir=plain_dir, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "(defaults): ok" in result.stdout
    assert str(plain_dir) in result.stdout


def test_run_on_defaults_reaches_ready(
    data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """``watcher run --data-dir D`` with no config file runs on the defaults to service.ready."""
    proc = service()
    ready = proc.wait_for("service.ready")
    assert ready["watcher"]["data_dir"] == str(data_dir)
    assert proc.stop() == 0


def test_data_dir_option_overrides_the_file(tmp_path: Path, plain_dir: Path) -> None:
    """``--data-dir`` wins over ``data_dir`` in the file (which need not even exist then)."""
    cfg = write_config(tmp_path / "watcher.toml", 'data_dir = "/nonexistent/elsewhere"\n')
    result = cli("config", "check", config=cfg, data_dir=plain_dir, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert f"data_dir {plain_dir}," in result.stdout
    assert load_config(cfg, plain_dir).data_dir == plain_dir


def test_run_data_dir_option_overrides_the_file(
    tmp_path: Path, data_dir: Path, service: Callable[..., ServiceProcess]
) -> None:
    """``watcher run --config F --data-dir D`` serves D although F names another directory."""
    other = tmp_path / "other"
    other.mkdir()
    cfg = write_config(tmp_path / "watcher.toml", f'data_dir = "{other}"\n')
    proc = service(cfg)
    ready = proc.wait_for("service.ready")
    assert ready["watcher"]["data_dir"] == str(data_dir)
    assert proc.stop() == 0
    assert not (other / "mw").exists()


def test_huge_value_is_quoted_shortened(tmp_path: Path, plain_dir: Path) -> None:
    """A 300 kB wrong value is quoted cut in its middle: the error stays one short line."""
    cfg = config_file(tmp_path, plain_dir, HEAD + f'[watch]\npoll_interval = "{"x" * 300_000}"\n')
    result = cli("config", "check", config=cfg, timeout=CLI_TIMEOUT)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert len(line) < 400 and "…" in line and line.endswith('e.g. "30s"')


def test_job_name_of_wrong_type_is_one_problem(tmp_path: Path, plain_dir: Path) -> None:
    """``name = 5`` is reported once (wrong type), not also as a missing name."""
    cfg = config_file(tmp_path, plain_dir, HEAD + '[[jobs]]\nname = 5\ntype = "dbcheck"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    assert [p.reason for p in caught.value.problems] == ["expected a string, got int"]


def test_data_dir_of_wrong_type_is_one_problem(tmp_path: Path) -> None:
    """``data_dir = 7`` is reported once (wrong type), not also as missing."""
    cfg = write_config(tmp_path / "watcher.toml", "data_dir = 7\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cfg)
    assert [p.reason for p in caught.value.problems] == ["expected a string, got int"]
