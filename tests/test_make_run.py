"""``make run`` — the README's first command — sets up the demo and runs the real service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WAIT

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_reaches_ready_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """``make run`` creates the demo data directory, reaches ``service.ready``, and Ctrl-C
    (SIGINT to its process group, as a terminal sends it) stops it cleanly."""
    demo = tmp_path / "demo"
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(REPO), "run", f"DEMO={demo}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "WATCHER_CONFIG": ""},
    )
    assert proc.stdout is not None
    actions: list[str] = []
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                actions.append(json.loads(line)["event"]["action"])
            if "service.ready" in actions:
                break
        assert "service.ready" in actions, f"make run ended without service.ready: {actions}"
        assert (demo / "mw" / "data" / "mail.db").is_file()
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.stdout.read().decode(errors="replace")
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    stopped = [json.loads(x)["event"]["action"] for x in rest.splitlines() if x.startswith("{")]
    assert stopped[-1] == "service.stopped"
