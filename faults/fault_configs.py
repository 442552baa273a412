"""≥ 1000 generated bad configs: ``watcher config check`` and ``watcher run`` on each.

Each config is a valid base with exactly one defect (a wrong type or value for a known
key, an unknown key, broken TOML, binary garbage, bytes that are not UTF-8, deep nesting,
a huge value or file), or is not a readable file at all (a directory, a FIFO, a dangling
symlink, a symlink loop, missing). Both commands must exit non-zero with a short error
(at most two lines: the header and the one problem, none longer than ``MAX_LINE``), no
``Traceback``, within ``TIMEOUT`` (a config that is accidentally valid makes ``run`` serve,
which is a hang here). The base itself must pass the check, or nothing else means much.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from faults.context import Context
from faults.report import Row, check, figure, zero

NAME = "bad configs"
TIMEOUT = 30.0
MAX_LINE = 400
Sections = dict[str, dict[str, str]]  # table → key → TOML literal

# (table, key, bad literals): each value is wrong for its key
BAD_VALUES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "timezone", ('"Mars/Olympus"', '"../../etc/passwd"', '""', "5", '"UTC\\u0000"')),
    ("", "data_dir", ('"/nonexistent/watcher-faults"', "7", "[]", '"/etc/passwd"')),
    ("watch", "mode", ('"psychic"', "1", '""', "true")),
    ("watch", "poll_interval", ('"fast"', '"-1s"', '"0s"', "[]", '"1 fortnight"', '"nan s"')),
    ("maintenance", "granularity", ('"7m"', '"0m"', '"-10m"', "true", '"25h"')),
    ("maintenance", "message", ("5", "[1]", "{a = 1}")),
    ("maintenance", "notice", ('"soon"', '"-1m"', "[]")),
    ("disk", "warn", ('"101%"', '"-1%"', '"lots"', '"1e400MiB"', "[]")),
    ("disk", "interval", ('"0s"', '"forever"', '"-5s"')),
    ("disk", "for_samples", ("0", "-1", '"two"', "1.5")),
    ("trigger", "max_size", ('"-1KiB"', '"big"', "-5", '"1ZiB!"')),
    ("trigger", "max_concurrent", ("0", "-1", '"eight"', "2.5")),
    ("trigger", "allowed_uids", ('"root"', '["root"]', "[-1]", "5")),
    ("trigger", "allowed_paths", ('"/backup"', "[1]", "[[]]")),
    ("control", "allowed_gids", ('"wheel"', "[true]", "3")),
    ("control", "group", ('"no-such-group-zz"', "[]", "-3")),
)
BAD_JOBS = (
    'name = "j"\ntype = "nosuch"\n',
    'type = "command"\nargv = ["/bin/true"]\n',
    'name = "j"\ntype = "command"\nargv = "/bin/true"\n',
    'name = "j"\ntype = "command"\nargv = []\n',
    'name = "j"\ntype = "command"\nargv = ["/bin/true"]\ntimeout = "-1s"\n',
    'name = "j"\ntype = "command"\nargv = ["/bin/true"]\nat = "99:99"\n',
    'name = "j"\ntype = "faults_no_such_module_zz:attr"\n',
    'name = "recorder"\ntype = "command"\nargv = ["/bin/true"]\n',  # a duplicate name
    'name = 5\ntype = "dbcheck"\n',
    'name = "j"\ntype = "dbcheck"\ncheck = "thorough"\n',
)
BAD_WINDOWS = (
    'name = "w"\nstart = "25:00"\nend = "03:00"\n',
    'name = "w"\nstart = "02:00"\nend = "02:00"\n',
    'name = "w"\nstart = "02:05"\nend = "03:00"\n',
    'name = "w"\nstart = "02:00"\nend = "03:00"\ndays = ["someday"]\n',
    'name = "w"\nstart = 2\nend = "03:00"\n',
)
BAD_HANDLERS = (
    'type = "webhook"\n',
    'type = "log"\nformat = "xml"\n',
    'type = "log"\nmin_level = "loud"\n',
    'type = "nosuch"\n',
    'type = "log"\ntarget = 5\n',
)


@dataclass(frozen=True)
class Case:
    kind: str
    path: Path


def base(data_dir: Path, ledger: Path) -> Sections:
    """A valid config: every table a defect below is put into."""
    return {
        "": {"data_dir": f'"{data_dir}"', "timezone": '"UTC"'},
        "watch": {"mode": '"auto"', "poll_interval": '"1s"'},
        "maintenance": {"message": '"Under maintenance"', "granularity": '"10m"'},
        "disk": {"warn": '"10%"', "interval": '"1s"', "for_samples": "2"},
        "trigger": {"max_size": '"64KiB"', "max_concurrent": "4", "allowed_uids": "[]"},
        "control": {"allowed_uids": "[]", "allowed_gids": "[]"},
    }


JOB = '[[jobs]]\nname = "recorder"\ntype = "command"\nargv = ["/bin/true"]\n'


def render(sections: Sections, extra: str = "", top: str = "") -> str:
    """The TOML text: top-level keys (and ``top``), the tables, the job, then ``extra``."""
    out = [f"{k} = {v}" for k, v in sections[""].items()] + ([top] if top else [])
    for table, keys in sections.items():
        if table:
            out += [f"\n[{table}]", *(f"{k} = {v}" for k, v in keys.items())]
    return "\n".join(out) + "\n\n" + JOB + extra


def generate(rng: random.Random, sections: Sections, where: Path, i: int) -> Case:
    """One bad config file (or non-file) at ``where/NNNN.toml``."""
    path = where / f"{i:05d}.toml"
    kind = rng.choice(tuple(GENERATORS))
    GENERATORS[kind](rng, sections, path)
    return Case(kind, path)


def _write(path: Path, text: str | bytes) -> None:
    path.write_bytes(text.encode() if isinstance(text, str) else text)


def wrong_value(rng: random.Random, s: Sections, path: Path) -> None:
    table, key, values = rng.choice(BAD_VALUES)
    changed = {t: dict(keys) for t, keys in s.items()}
    changed.setdefault(table, {})[key] = rng.choice(values)
    _write(path, render(changed))


def unknown_key(rng: random.Random, s: Sections, path: Path) -> None:
    changed = {t: dict(keys) for t, keys in s.items()}
    table = rng.choice(tuple(changed))
    changed[table][f"zz_{rng.randrange(10**6)}"] = rng.choice(("1", '"x"', "[]", "true"))
    _write(path, render(changed))


def bad_table(rng: random.Random, s: Sections, path: Path) -> None:
    header, bodies = rng.choice(
        (
            ("[[jobs]]", BAD_JOBS),
            ("[[maintenance.windows]]", BAD_WINDOWS),
            ("[[handlers]]", BAD_HANDLERS),
        )
    )
    _write(path, render(s, f"\n{header}\n{rng.choice(bodies)}"))


def broken_toml(rng: random.Random, s: Sections, path: Path) -> None:
    breakage = rng.choice(
        (
            'message = "unterminated\n',
            "[watch]\n",  # a table defined twice
            "= 1\n",
            "key = \n",
            "[[jobs]\n",
            "x = 1\nx = 2\n",
            "a = [1, 2\n",
            "b = {c = 1,}\n",
            "c = 1979-13-45\n",
            "d = 0x\n",
        )
    )
    _write(path, render(s, breakage))


def garbage(rng: random.Random, s: Sections, path: Path) -> None:
    data = bytes(rng.randrange(256) for _ in range(rng.randint(16, 4096)))
    at = rng.randrange(len(data))
    _write(path, data[:at] + b"\0" + data[at:])  # a NUL is never valid TOML


def not_utf8(rng: random.Random, s: Sections, path: Path) -> None:
    bad = bytes(rng.choice((0xFF, 0xFE, 0xC0, 0x80)) for _ in range(rng.randint(1, 8)))
    head, _, tail = render(s).encode().partition(b"\n[")
    _write(path, head + b'\nzz_message = "' + bad + b'"\n[' + tail)


def deep(rng: random.Random, s: Sections, path: Path) -> None:
    depth = rng.choice((200, 1000, 5000, 50000))
    opener, closer = rng.choice((("[", "]"), ("{a = ", "}")))
    _write(path, render(s, top=f"zz_deep = {opener * depth}1{closer * depth}"))


def huge(rng: random.Random, s: Sections, path: Path) -> None:
    size = rng.choice((70_000, 300_000, 2_000_000))
    table, key, _ = rng.choice([v for v in BAD_VALUES[2:] if v[1] != "message"])
    changed = {t: dict(keys) for t, keys in s.items()}
    changed.setdefault(table, {})[key] = '"' + "x" * size + '"'  # a wrong value, and huge
    _write(path, render(changed))


def not_a_file(rng: random.Random, s: Sections, path: Path) -> None:
    what = rng.choice(("directory", "fifo", "dangling", "loop", "missing"))
    if what == "directory":
        path.mkdir()
    elif what == "fifo":
        os.mkfifo(path)
    elif what == "dangling":
        path.symlink_to(path.with_name(path.name + ".absent"))
    elif what == "loop":
        path.symlink_to(path)


GENERATORS: dict[str, Callable[[random.Random, Sections, Path], None]] = {
    "wrong value": wrong_value,
    "unknown key": unknown_key,
    "bad job/window/handler": bad_table,
    "broken TOML": broken_toml,
    "binary garbage": garbage,
    "not UTF-8": not_utf8,
    "deep nesting": deep,
    "huge": huge,
    "not a regular file": not_a_file,
}


@dataclass
class Outcome:
    exit_zero: bool = False
    traceback: bool = False
    hang: bool = False
    not_short: bool = False
    detail: str = ""


def attempt(argv: list[str]) -> Outcome:
    """Run one command; what was wrong with how it failed."""
    env = {**os.environ, "WATCHER_CONFIG": ""}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return Outcome(hang=True, detail=f"{argv[3:]}: no answer in {TIMEOUT:.0f} s")
    lines = done.stderr.strip().splitlines()
    out = Outcome(
        exit_zero=done.returncode == 0,
        traceback="Traceback" in done.stderr,
        not_short=not lines or len(lines) > 2 or any(len(line) > MAX_LINE for line in lines),
    )
    if out.exit_zero or out.traceback or out.not_short:
        out.detail = f"{argv[3:]}: exit {done.returncode}: {done.stderr[-300:]!r}"
    return out


def run(ctx: Context) -> list[Row]:
    """Generate the configs, run both commands on each (a few at a time), count."""
    count = 100 if ctx.quick else 1000
    data_dir = ctx.data_dir()
    sections = base(data_dir, ctx.workdir / "ledger")
    where = ctx.workdir / "configs"
    where.mkdir()
    good = where / "base.toml"
    _write(good, render(sections))
    base_ok = attempt_ok(good)
    cases = [generate(ctx.rng, sections, where, i) for i in range(count)]
    commands = [
        [sys.executable, "-m", "watcher", *cmd, "--config", str(c.path)]
        for c in cases
        for cmd in (["config", "check"], ["run"])
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, commands))
    kinds = sorted({c.kind for c in cases})
    spread = ", ".join(f"{k} {sum(1 for c in cases if c.kind == k)}" for k in kinds)

    def bad(attr: str) -> tuple[int, str]:
        hits = [o for o in outcomes if getattr(o, attr)]
        return len(hits), "; ".join(o.detail for o in hits[:5])

    return [
        check(NAME, "the base config passes the check", base_ok, "yes" if base_ok else "no"),
        figure(NAME, "configs generated (each run by check and by run)", f"{count}: {spread}"),
        zero(NAME, "accepted (exit 0)", *bad("exit_zero")),
        zero(NAME, "tracebacks", *bad("traceback")),
        zero(NAME, f"hangs (no exit within {TIMEOUT:.0f} s)", *bad("hang")),
        zero(
            NAME, f"errors not one short line (> 2 lines or > {MAX_LINE} chars)", *bad("not_short")
        ),
    ]


def attempt_ok(path: Path) -> bool:
    env = {**os.environ, "WATCHER_CONFIG": ""}
    argv = [sys.executable, "-m", "watcher", "config", "check", "--config", str(path)]
    return subprocess.run(argv, capture_output=True, timeout=TIMEOUT, env=env).returncode == 0
