"""The status page as HTML: everything rendered on the server (inline SVG charts), so the
page works without JavaScript; ``static/live.js`` only swaps in fresh fragments on SSE."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

DAY = 86400.0
WIDTH, HEIGHT = 720, 160
LEVEL_COLOURS = {"warn": "#d9a400", "maintenance": "#d96b00", "critical": "#c62828"}


def _when(epoch: float | None, tz: ZoneInfo) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _iso(value: str | None, tz: ZoneInfo) -> str:
    if not value:
        return "—"
    return _when(datetime.fromisoformat(value).timestamp(), tz)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _x(start: float, t: float) -> float:
    return (t - start) / DAY * WIDTH


def _y(total: float, free: float) -> float:
    return HEIGHT - 10 - (free / total) * (HEIGHT - 20)


def _until(hold: dict[str, Any], tz: ZoneInfo) -> str:
    return _iso(hold["until"], tz) if hold.get("until") else "until released"


def state_section(status: dict[str, Any], tz: ZoneInfo) -> str:
    m = status["maintenance"]
    head = "IN MAINTENANCE" if m["active"] else "serving"
    cls = "active" if m["active"] else "ok"
    rows = "".join(
        f"<tr><td>{escape(h['reason'])}</td><td>{escape(h.get('name') or '')}</td>"
        f"<td>{_iso(h.get('since'), tz)}</td><td>{_until(h, tz)}</td></tr>"
        for h in m["holds"]
    )
    message = f"<p class=message>{escape(m['message'])}</p>" if m.get("message") else ""
    holds = (
        f"<table><tr><th>hold</th><th>name</th><th>since</th><th>until</th></tr>{rows}</table>"
        if rows
        else "<p>no holds</p>"
    )
    release = ""
    if status.get("release_enabled") and any(h["reason"] == "manual" for h in m["holds"]):
        release = (
            "<form method=post action=release><input type=hidden name=csrf "
            f"value='{escape(status.get('csrf', ''))}'><input type=password name=token "
            "placeholder=token><button>Release manual maintenance</button></form>"
        )
    return f"<section id=state class={cls}><h2>{head}</h2>{message}{holds}{release}</section>"


def timeline_svg(status: dict[str, Any], tz: ZoneInfo) -> str:
    now = status["now"]
    start = now - DAY
    bars = "".join(
        f"<rect class=maint x='{min(_x(start, a), WIDTH - 3):.1f}' y='10' "
        f"width='{max(_x(start, b) - _x(start, a), 3):.1f}' height='30'/>"  # ≥ 3 px: visible
        for a, b in status["timeline"]
    )
    ticks = "".join(
        f"<text x='{_x(start, t):.1f}' y='58'>{_when(t, tz)[11:]}</text>"
        for t in (start + i * DAY / 6 for i in range(7))
    )
    return (
        f"<svg id=timeline viewBox='0 0 {WIDTH} 64' width='{WIDTH}' height='64' role=img "
        "aria-label='maintenance over the last 24 hours'>"
        f"<rect class=track x='0' y='10' width='{WIDTH}' height='30'/>{bars}{ticks}</svg>"
    )


def disk_svg(status: dict[str, Any]) -> str:
    disk = status["disk"]
    samples = disk["samples"]
    total = disk.get("total") or max((f for _t, f in samples), default=1) or 1
    now = status["now"]
    start = now - DAY
    lines = "".join(
        f"<line class='level {name}' x1='0' x2='{WIDTH}' y1='{_y(total, v):.1f}' "
        f"y2='{_y(total, v):.1f}' stroke='{LEVEL_COLOURS[name]}'/>"
        f"<text x='{4 + i * 240}' y='{_y(total, v) - 3:.1f}'>{name} {_human(v)}</text>"
        for i, (name, v) in enumerate((disk.get("thresholds") or {}).items())
        if name in LEVEL_COLOURS
    )
    points = " ".join(f"{_x(start, t):.1f},{_y(total, f):.1f}" for t, f in samples)
    path = f"<polyline class=free points='{points}'/>" if points else ""
    if samples:  # the latest sample as a dot: visible even before there is a line
        t, f = samples[-1]
        path += f"<circle class=free cx='{_x(start, t):.1f}' cy='{_y(total, f):.1f}' r='4'/>"
    return (
        f"<svg id=disk viewBox='0 0 {WIDTH} {HEIGHT}' width='{WIDTH}' height='{HEIGHT}' role=img "
        "aria-label='free disk space over the last 24 hours'>"
        f"<rect class=track x='0' y='0' width='{WIDTH}' height='{HEIGHT}'/>{lines}{path}</svg>"
    )


def jobs_section(status: dict[str, Any], tz: ZoneInfo) -> str:
    rows = "".join(
        f"<tr><td>{escape(j['name'])}</td><td class='{escape(j.get('last_outcome') or '')}'>"
        f"{escape(j.get('last_outcome') or '—')}</td><td>{_when(j.get('last_time'), tz)}</td>"
        f"<td>{_iso(j.get('next_run'), tz)}</td></tr>"
        for j in status["jobs"]
    )
    return (
        "<section id=jobs><h2>Jobs</h2><table><tr><th>job</th><th>last result</th>"
        f"<th>when</th><th>next run</th></tr>{rows}</table></section>"
    )


def events_section(status: dict[str, Any], tz: ZoneInfo) -> str:
    items = "".join(
        f"<li class='{escape(e['level'])}'><time>{_when(e['time'], tz)}</time> "
        f"<b>{escape(e['action'])}</b> {escape(e['message'])}</li>"
        for e in reversed(status["events"])
    )
    return f"<section><h2>Recent events</h2><ul id=events>{items}</ul></section>"


def body(status: dict[str, Any]) -> str:
    """The live part of the page (what ``live.js`` replaces)."""
    tz = ZoneInfo(status["timezone"])
    disk = status["disk"]
    free = f"{_human(disk['free'])} free" if disk.get("free") is not None else "not sampled"
    return (
        f"{state_section(status, tz)}"
        f"<section><h2>Maintenance, last 24 h</h2>{timeline_svg(status, tz)}</section>"
        f"<section><h2>Disk: {escape(disk['level'])}, {free}</h2>{disk_svg(status)}</section>"
        f"{jobs_section(status, tz)}{events_section(status, tz)}"
    )


def page(status: dict[str, Any]) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>watcher — {escape(status['data_dir'])}</title>"
        "<link rel=stylesheet href=static/style.css></head><body>"
        f"<header><h1>watcher</h1><span>{escape(status['data_dir'])}</span>"
        "<span id=live>static</span></header>"
        f"<main id=main>{body(status)}</main>"
        "<script src=static/live.js></script></body></html>"
    )
