"""≥ 1000 bad trigger files dropped into a running service's spool.

Binary and empty ``*.json``, files over ``max_size``, deep JSON, wrong types, ``argv``/``env``
set by a trigger, path traversal (``..`` in a job name or a path argument), symlinks (to a
valid trigger), FIFOs, directories, valid triggers owned by ``nobody``, and odd names (not
UTF-8, over 200 bytes, spaces, newlines, control and bidi characters, shell and format
metacharacters). Each is written beside the spool and renamed in; every one must be
moved to ``failed/`` with a reason (``trigger.rejected``), none may start a job, the
service's stderr must hold no traceback, and afterwards a good trigger still runs and
``watcher status`` answers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from faults.context import Context, started
from faults.report import Row, check, exactly, figure, zero
from tests.conftest import ran, write_config

NAME = "bad triggers"
NOBODY = 65534
Maker = Callable[[random.Random, bytes, int], bytes]  # (rng, staging dir, index) → name made


def _file(where: bytes, name: bytes, data: bytes) -> bytes:
    with open(os.path.join(where, name), "wb") as f:
        f.write(data)
    return name


def binary(rng: random.Random, where: bytes, i: int) -> bytes:
    data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2048)))
    return _file(where, f"bin-{i}.json".encode(), data + b"\0")


def empty(rng: random.Random, where: bytes, i: int) -> bytes:
    return _file(where, f"empty-{i}.json".encode(), b"")


def huge(rng: random.Random, where: bytes, i: int) -> bytes:
    size = rng.choice((64 * 1024 + 1, 200_000, 1_000_000))
    if rng.random() < 0.5:  # a valid job's plain name: only the size is wrong
        return _file(where, f"dbcheck.huge-{i}".encode(), b"x" * size)
    body = json.dumps({"job": "dbcheck", "pad": "x" * size}).encode()
    return _file(where, f"huge-{i}.json".encode(), body)


def deep(rng: random.Random, where: bytes, i: int) -> bytes:
    depth = rng.choice((100, 1000, 5000, 30000))
    nested = "[" * depth + "]" * depth
    body = rng.choice(
        (
            nested,
            '{"job": ' + nested + "}",
            '{"job": "recorder", "args": {"x": ' + nested + '}, "zz": 1}',
        )
    )
    return _file(where, f"deep-{i}.json".encode(), body.encode())


WRONG_TYPES = (
    [],
    "dbcheck",
    5,
    None,
    {"job": 5},
    {"job": None},
    {"job": ["dbcheck"]},
    {"job": {"name": "dbcheck"}},
    {"job": ""},
    {"job": True},
    {"job": "dbcheck", "args": []},
    {"job": "dbcheck", "args": "all"},
    {"job": "dbcheck", "args": 1},
    {"job": "dbcheck", "zz": 1},
    {"job": "recorder", "args": {"argv": ["/bin/sh", "-c", "touch /tmp/pwned"]}},
    {"job": "recorder", "args": {"env": {"LD_PRELOAD": "/tmp/x.so"}}},
    {"args": {}},
)


def wrong_types(rng: random.Random, where: bytes, i: int) -> bytes:
    text = json.dumps(rng.choice(WRONG_TYPES))
    if rng.random() < 0.2:
        text = rng.choice(
            ('{"job": NaN}', '{"job": "dbcheck",}', '{"job": "\\ud800"}', "{'job': 1}")
        )
    return _file(where, f"types-{i}.json".encode(), text.encode())


TRAVERSAL = (
    {"job": "../../../bin/sh"},
    {"job": "/usr/bin/id"},
    {"job": "backup", "args": {"dest": "../../../../etc"}},
    {"job": "backup", "args": {"dest": "/tmp/../etc/cron.d"}},
    {"job": "backup", "args": {"dest": "/"}},
    {"job": "restore", "args": {"from": "/etc/shadow"}},
    {"job": "backup", "args": {"dest": "x\u0000y"}},
    {"job": "backup", "args": {"dest": 5}},
)


def traversal(rng: random.Random, where: bytes, i: int) -> bytes:
    return _file(where, f"trav-{i}.json".encode(), json.dumps(rng.choice(TRAVERSAL)).encode())


def symlink(rng: random.Random, where: bytes, i: int) -> bytes:
    target = rng.choice((b"/etc/passwd", b"/dev/zero", os.path.join(where, b"../good.json")))
    name = rng.choice((f"dbcheck.link-{i}", f"link-{i}.json")).encode()
    os.symlink(target, os.path.join(where, name))
    return name


def fifo(rng: random.Random, where: bytes, i: int) -> bytes:
    name = rng.choice((f"dbcheck.fifo-{i}", f"fifo-{i}.json")).encode()
    os.mkfifo(os.path.join(where, name))
    return name


def directory(rng: random.Random, where: bytes, i: int) -> bytes:
    name = rng.choice((f"dbcheck.dir-{i}", f"dir-{i}.json")).encode()
    os.mkdir(os.path.join(where, name))
    return name


def foreign(rng: random.Random, where: bytes, i: int) -> bytes:
    name = rng.choice((f"dbcheck.nobody-{i}", f"nobody-{i}.json")).encode()
    _file(where, name, json.dumps({"job": "dbcheck"}).encode())
    os.chown(os.path.join(where, name), NOBODY, NOBODY)
    return name


ODD = (
    "zz job with spaces {i}",
    "zz\nforged line {i}",
    "zz\r\n{i}",
    "zz\t\x1b[31mred{i}",
    "zz\u202egnp.exe{i}",
    "-rf {i}",
    "--help{i}",
    "$(reboot){i}",
    "`id`{i}",
    "%s%n%x{i}",
    "zz*?[{i}]",
    "zz…ünïcødé-{i}",
    "zz😀{i}.json",
    "zz ..{i}",
    "zz..{i}.json",
    "zz~{i}",
)


def odd_name(rng: random.Random, where: bytes, i: int) -> bytes:
    roll = rng.random()
    if roll < 0.25:  # not UTF-8, with a valid job's name in front
        name = b"dbcheck." + bytes(rng.choice((0xFF, 0xFE, 0x80, 0xC3)) for _ in range(3))
        name += f"-{i}".encode()
    elif roll < 0.45:  # over 200 bytes (the filesystem allows 255)
        name = f"dbcheck.{i}-".encode() + b"y" * rng.randint(200, 230)
    else:
        name = rng.choice(ODD).format(i=i).encode()
    body = json.dumps({"job": f"zz-nosuch-{i}"}).encode() if name.endswith(b".json") else b""
    return _file(where, name, body)


MAKERS: dict[str, Maker] = {
    "binary": binary,
    "empty": empty,
    "huge": huge,
    "deep JSON": deep,
    "wrong types": wrong_types,
    "traversal": traversal,
    "symlink": symlink,
    "FIFO": fifo,
    "directory": directory,
    "foreign owner": foreign,
    "odd name": odd_name,
}


def status_answers(data_dir: Path) -> bool:
    argv = [sys.executable, "-m", "watcher", "status", "--data-dir", str(data_dir)]
    env = {**os.environ, "WATCHER_CONFIG": ""}
    return subprocess.run(argv, capture_output=True, timeout=60, env=env).returncode == 0


def run(ctx: Context) -> list[Row]:
    """Make the bad entries, rename them all into the spool, count what the service did."""
    count = 100 if ctx.quick else 1000
    data_dir = ctx.data_dir()
    config = write_config(
        ctx.workdir / "watcher.toml",
        '[[jobs]]\nname = "recorder"\ntype = "command"\nargv = ["/bin/true"]\n',
    )
    staging = os.fsencode(ctx.workdir / "staging")
    os.mkdir(staging)
    (ctx.workdir / "good.json").write_text(json.dumps({"job": "dbcheck"}))
    kinds = Counter[str]()
    names = []
    for i in range(count):
        kind = ctx.rng.choice(tuple(MAKERS))
        names.append(MAKERS[kind](ctx.rng, staging, i))
        kinds[kind] += 1
    spool = os.fsencode(data_dir / "mw" / "spool")
    svc = started(data_dir, config)
    try:
        mark = svc.mark()
        for name in names:
            os.rename(os.path.join(staging, name), os.path.join(spool, name))
        svc.wait_count(("trigger.rejected",), count, after=mark, timeout=600)
        events = svc.events[mark:]
        good = svc.mark()
        (data_dir / "mw" / "spool" / "dbcheck.good").touch()
        svc.wait_for("job.finished", ran("dbcheck.good"), after=good, timeout=120)
        serving = status_answers(data_dir) and svc.proc.poll() is None
    finally:
        code = svc.stop(60)
    actions = Counter(e["event"]["action"] for e in events)
    reasons = Counter(
        str(e.get("watcher", {}).get("reason") or e.get("reason"))
        for e in events
        if e["event"]["action"] == "trigger.rejected"
    )
    failed = os.fsencode(data_dir / "mw" / "spool" / "failed")
    errors = [n for n in os.listdir(failed) if n.endswith(b".error.json")]
    left = [
        n for n in os.listdir(spool) if not n.startswith(b".") and n not in (b"done", b"failed")
    ]
    return [
        figure(
            NAME,
            "bad entries dropped",
            f"{count}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        ),
        figure(NAME, "reasons given", ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))),
        exactly(NAME, "moved to failed/ with a reason (.error.json)", len(errors), count),
        zero(
            NAME,
            "accepted (trigger.accepted or job.started)",
            actions["trigger.accepted"] + actions["job.started"],
        ),
        zero(NAME, "left in the spool", len(left), repr(left[:5])),
        zero(
            NAME,
            "tracebacks in the service's stderr",
            svc.stderr.count("Traceback"),
            svc.stderr[-1500:],
        ),
        check(
            NAME,
            "still serving (a good trigger runs, status answers)",
            serving,
            "yes" if serving else "no",
        ),
        zero(NAME, "exit code of the SIGTERM stop", code, svc.stderr[-1000:]),
    ]
