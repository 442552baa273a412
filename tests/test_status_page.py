"""The status page of a real ``watcher run``: served, live over server-sent events, rendered by
real headless Chromium (timeline and disk chart), and the optional release action."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import WAIT, ServiceProcess, Start, cli, eventually, maint, write_config
from watcher.system import historydb

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "var" / "screenshots" / "status.png"


def config(tmp_path: Path, extra: str = "") -> Path:
    """The listener on any free loopback port, events logged to stdout."""
    return write_config(
        tmp_path / "watcher.toml",
        '[http]\nlisten = "127.0.0.1:0"\n' + extra + '[[handlers]]\ntype = "log"\n',
    )


def address(proc: ServiceProcess) -> str:
    """The ``http://HOST:PORT`` the service bound (from ``service.ready``)."""
    return "http://" + proc.wait_for("service.ready")["watcher"]["http"]


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, object]]:
    """The JSON ``data:`` payloads of an event stream (comments skipped)."""
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def test_page_is_served_with_its_assets(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """The page, its CSS and script come from the package; nothing is loaded from elsewhere."""
    base = address(service(config(tmp_path)))
    page = httpx.get(base + "/", timeout=WAIT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<svg id=timeline" in page.text and "<svg id=disk" in page.text
    assert "serving" in page.text
    urls = re.findall(r"""(?:src|href)=['"]?([^'" >]+)""", page.text)
    assert sorted(urls) == ["static/live.js", "static/style.css"]  # relative: no CDN
    for url in urls:
        asset = httpx.get(f"{base}/{url}", timeout=WAIT)
        assert asset.status_code == 200 and asset.content
    assert httpx.get(base + "/static/nope.js", timeout=WAIT).status_code == 404
    status = httpx.get(base + "/api/status", timeout=WAIT).json()
    assert status["maintenance"]["active"] is False and "csrf" not in status


def test_sse_delivers_maintenance_entered(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """A client on /events receives maintenance.entered when an operator enters maintenance."""
    base = address(service(config(tmp_path)))
    with (
        httpx.Client(timeout=httpx.Timeout(WAIT)) as client,
        client.stream("GET", base + "/events") as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        assert next(lines) == ": watcher"  # the stream is open and subscribed
        assert cli("enter", "-m", "upgrade", data_dir=data_dir).returncode == 0
        actions = []
        for event in sse_events(lines):
            actions.append(event["action"])
            if event["action"] == "maintenance.entered":
                assert "upgrade" in str(event["message"])
                break
        assert actions[-1] == "maintenance.entered"


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Real headless Chromium (the Debian package), with a throwaway profile."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (scripts/test-setup installs it)")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=50,
    )


def earlier_run(path: Path) -> None:
    """What an earlier run left in the history file: two hours of maintenance eight hours
    ago and a disk sample every half hour for a day, free space shrinking."""
    now = time.time()
    db = historydb.connect(path, write=True)

    def change(t: float, action: str, active: bool) -> tuple[float, str, str, str, bytes]:
        doc = {"watcher": {"maintenance": {"active": active}}}
        return (t, action, "info", action, json.dumps(doc).encode())

    usage = shutil.disk_usage(path.parent)
    step = usage.total // 400
    samples = [(now - i * 1800, usage.free + i * step, usage.total) for i in range(48, 0, -1)]
    events = [
        change(now - 8 * 3600, "maintenance.entered", True),
        change(now - 6 * 3600, "maintenance.left", False),
    ]
    historydb.insert(db, events, samples)
    db.close()


def test_chromium_renders_timeline_and_disk_chart(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """Headless Chromium loads the page in maintenance: the DOM has the timeline bar and the
    disk chart, and the screenshot is a real PNG (kept in var/screenshots/status.png)."""
    earlier_run(data_dir / "mw" / "watcher" / "history.db")
    proc = service(config(tmp_path))
    base = address(proc)
    mark = proc.mark()
    assert cli("enter", "-m", "database upgrade", data_dir=data_dir).returncode == 0
    proc.wait_for("maintenance.entered", after=mark)

    def recorded() -> bool:
        status = httpx.get(base + "/api/status", timeout=WAIT).json()
        actions = [e["action"] for e in status["events"]]
        return "maintenance.entered" in actions and bool(status["disk"]["samples"])

    eventually(recorded)  # the history is written off the loop
    profile = tmp_path / "chromium"
    dom = chromium(f"--user-data-dir={profile}", "--dump-dom", base + "/")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "IN MAINTENANCE" in dom.stdout and "database upgrade" in dom.stdout
    timeline = re.search(r"<svg id=\"timeline\".*?</svg>", dom.stdout, re.S)
    disk = re.search(r"<svg id=\"disk\".*?</svg>", dom.stdout, re.S)
    assert timeline and timeline.group(0).count('class="maint"') == 2  # earlier + now
    assert disk and 'class="level warn"' in disk.group(0) and "<circle" in disk.group(0)
    png = tmp_path / "status.png"
    shot = chromium(
        f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1000,1100", base + "/"
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, SCREENSHOT)


def test_release_action_needs_token_and_csrf(
    data_dir: Path, tmp_path: Path, service: Start
) -> None:
    """With a token file the page offers the release; a wrong CSRF value or token is refused,
    the right pair releases manual maintenance."""
    token = tmp_path / "release.token"
    token.write_text("s3cret-token\n")
    proc = service(config(tmp_path, f'release_token_file = "{token}"\n'))
    base = address(proc)
    mark = proc.mark()
    assert cli("enter", data_dir=data_dir).returncode == 0
    proc.wait_for("maintenance.entered", after=mark)
    with httpx.Client(base_url=base, timeout=WAIT) as client:
        page = client.get("/").text
        found = re.search(r"name=csrf value='([^']+)'", page)
        assert found and "Release manual maintenance" in page
        csrf = found.group(1)
        bad_csrf = client.post("/release", data={"csrf": "x", "token": "s3cret-token"})
        bad_token = client.post("/release", data={"csrf": csrf, "token": "wrong"})
        assert (bad_csrf.status_code, bad_token.status_code) == (403, 403)
        assert maint(data_dir).exists()
        mark = proc.mark()
        ok = client.post("/release", data={"csrf": csrf, "token": "s3cret-token"})
        assert ok.status_code == 200
    proc.wait_for("maintenance.left", after=mark)
    assert not maint(data_dir).exists()


def test_release_action_is_off_by_default(data_dir: Path, tmp_path: Path, service: Start) -> None:
    """Without a token file the page is read-only: no form, and POST /release is 404."""
    proc = service(config(tmp_path))
    base = address(proc)
    mark = proc.mark()
    assert cli("enter", data_dir=data_dir).returncode == 0
    proc.wait_for("maintenance.entered", after=mark)
    assert "Release" not in httpx.get(base + "/", timeout=WAIT).text
    assert httpx.post(base + "/release", data={"token": "x"}, timeout=WAIT).status_code == 404
    assert maint(data_dir).exists()
