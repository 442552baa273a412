"""≥ 1000 bad requests on the control socket (``mw/watcher/control.sock``), as raw bytes.

Binary, empty, huge (over ``MAX_REQUEST``), deep JSON, JSON that is not an object, wrong
types for every operation's fields (none of them a request the service could carry out),
unknown operations, bytes that are not UTF-8, NaN, and now and then a peer that sends half
a request and never finishes (the service must time it out). Every connection must be
answered or closed within ``TIMEOUT`` (else a hang); none may be answered ``ok``; the
service's stderr must hold no traceback; afterwards ``status`` still answers on the
socket and on the CLI, and maintenance is still off (no bad request changed anything).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

from faults.context import Context, control_socket, raw_request, service_active, started
from faults.report import Row, check, figure, zero

NAME = "bad control requests"
TIMEOUT = 10.0
Maker = Callable[[random.Random], bytes]

WRONG = (
    {"op": 5},
    {"op": None},
    {"op": ["enter"]},
    {"op": {"op": "enter"}},
    {"op": ""},
    {"op": "enter", "message": 5},
    {"op": "enter", "message": ["x"]},
    {"op": "enter", "for": 0},
    {"op": "enter", "for": False},
    {"op": "enter", "for": "forever"},
    {"op": "enter", "until": {}},
    {"op": "enter", "until": "yesterday"},
    {"op": "enter", "window": 5},
    {"op": "enter", "window": "25:00-26:00"},
    {"op": "trigger"},
    {"op": "trigger", "job": 5},
    {"op": "trigger", "job": ["dbcheck"]},
    {"op": "trigger", "job": "dbcheck", "args": []},
    {"op": "trigger", "job": "dbcheck", "args": "x"},
    {"op": "trigger", "job": "zz-nosuch"},
    {"op": "trigger", "job": "../../bin/sh"},
    {"op": "trigger", "job": "dbcheck", "args": {"argv": ["/bin/sh"]}},
    {"op": "trigger", "job": "backup", "args": {"dest": "/etc"}},
    {"op": "launch-missiles"},
    {"op": "ENTER"},
    {},
)


def binary(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))


def empty(rng: random.Random) -> bytes:
    return rng.choice((b"", b"\n", b" ", b"\0"))


def huge(rng: random.Random) -> bytes:
    size = rng.choice((64 * 1024 + 1, 300_000, 2_000_000))
    if rng.random() < 0.5:
        return json.dumps({"op": "enter", "message": "x" * size}).encode()
    return b"x" * size


def deep(rng: random.Random) -> bytes:
    depth = rng.choice((100, 1000, 5000, 30000))
    nested = "[" * depth + "]" * depth
    return rng.choice(
        (nested, '{"op": ' + nested + "}", '{"op": "enter", "message": ' + nested + "}")
    )[: 64 * 1024].encode()


def not_object(rng: random.Random) -> bytes:
    return json.dumps(rng.choice(([], "enter", 5, None, True, [{"op": "enter"}]))).encode()


def wrong_types(rng: random.Random) -> bytes:
    return json.dumps(rng.choice(WRONG)).encode()


def odd_bytes(rng: random.Random) -> bytes:
    return rng.choice(
        (
            b'{"op": "\xff\xfe"}',
            b'{"op": NaN}',
            b'{"op": "enter",}',
            b"{'op': 'enter'}",
            b'{"op": "\\ud800"}',
            b'{"op": "enter"}{"op": "leave"}',
            b'{"op": "enter"\n"message": 1}',
            b"\xef\xbb\xbf{}",
        )
    )


MAKERS: dict[str, Maker] = {
    "binary": binary,
    "empty": empty,
    "huge": huge,
    "deep JSON": deep,
    "not an object": not_object,
    "wrong types": wrong_types,
    "odd bytes": odd_bytes,
}


def half_request(data_dir: os.PathLike[str]) -> bytes:
    """Send half a request and never finish: the service must answer or close on its own."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(control_socket(data_dir)))  # type: ignore[arg-type]
        sock.sendall(b'{"op": "ent')
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def verdict(answer: bytes) -> str:
    """``ok`` (accepted: a failure here), ``refused`` (an error answer), or ``closed``."""
    if not answer:
        return "closed"
    try:
        doc = json.loads(answer)
    except ValueError:
        return "not JSON"
    if isinstance(doc, dict) and doc.get("ok") is False:
        return "refused"
    return "ok"


def run(ctx: Context) -> list[Row]:
    """Send the bad requests one after the other; count hangs, accepts, tracebacks."""
    count = 100 if ctx.quick else 1000
    data_dir = ctx.data_dir()
    svc = started(data_dir)
    kinds = Counter[str]()
    outcomes = Counter[str]()
    hangs: list[str] = []
    accepted: list[str] = []
    try:
        for _ in range(count):
            if ctx.rng.random() < 0.01:
                kind, payload = "half a request", b""
            else:
                kind = ctx.rng.choice(tuple(MAKERS))
                payload = MAKERS[kind](ctx.rng)
            kinds[kind] += 1
            try:
                if kind == "half a request":
                    answer = half_request(data_dir)
                else:
                    answer = raw_request(data_dir, payload, TIMEOUT)
            except TimeoutError:
                hangs.append(f"{kind}: {payload[:80]!r}")
                continue
            except ConnectionResetError:
                answer = b""
            outcome = verdict(answer)
            outcomes[outcome] += 1
            if outcome == "ok":
                accepted.append(f"{payload[:120]!r} → {answer[:200]!r}")
        active = service_active(data_dir)
        argv = [sys.executable, "-m", "watcher", "status", "--data-dir", str(data_dir)]
        env = {**os.environ, "WATCHER_CONFIG": ""}
        cli_ok = subprocess.run(argv, capture_output=True, timeout=60, env=env).returncode == 0
        serving = active is False and cli_ok and svc.proc.poll() is None
    finally:
        code = svc.stop(60)
    spread = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return [
        figure(NAME, "requests sent", f"{count}: {spread}"),
        figure(NAME, "answers", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))),
        zero(
            NAME,
            f"hangs (no answer or close within {TIMEOUT:.0f} s)",
            len(hangs),
            "; ".join(hangs[:5]),
        ),
        zero(NAME, "accepted (answered ok)", len(accepted), "; ".join(accepted[:5])),
        zero(
            NAME,
            "tracebacks in the service's stderr",
            svc.stderr.count("Traceback"),
            svc.stderr[-1500:],
        ),
        check(
            NAME,
            "still serving, maintenance still off",
            serving,
            "yes" if serving else f"no (active={active}, cli={cli_ok})",
        ),
        zero(NAME, "exit code of the SIGTERM stop", code, svc.stderr[-1000:]),
    ]
