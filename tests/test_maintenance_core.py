"""The pure maintenance core: holds × time → maint-file content, observations, messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.core.maintenance import (
    REASONS,
    Hold,
    MaintContent,
    Reason,
    active_holds,
    decide,
    message_from_file,
    next_expiry,
    operator_hold,
    reconcile,
    with_hold,
    without,
)

NOW = datetime(2026, 11, 26, 4, 50, tzinfo=UTC)
DEFAULT = "The system is under maintenance."


def at(minutes: float) -> datetime:
    """NOW shifted by ``minutes``."""
    return NOW + timedelta(minutes=minutes)


def hold(
    reason: Reason = "manual",
    name: str = "cli",
    since: float = -10,
    until: float | None = None,
    message: str | None = None,
) -> Hold:
    """A hold with times given in minutes relative to NOW."""
    return Hold(
        reason=reason,
        name=name,
        since=at(since),
        until=None if until is None else at(until),
        message=message,
    )


# --- decide: holds × time → file content ----------------------------------------------

DECIDE_TABLE: list[tuple[str, list[Hold], tuple[str, datetime, datetime | None, str] | None]] = [
    ("no holds: no file", [], None),
    ("one manual hold: default message, open end", [hold()], (DEFAULT, at(-10), None, "watcher")),
    (
        "manual hold with its own message",
        [hold(message="Upgrading")],
        ("Upgrading", at(-10), None, "watcher"),
    ),
    (
        "manual hold until later: end is its until",
        [hold(until=30)],
        (DEFAULT, at(-10), at(30), "watcher"),
    ),
    ("manual hold whose until has passed: no file", [hold(until=-1)], None),
    ("manual hold expiring exactly now: no file", [hold(until=0)], None),
    (
        "several holds: manual message wins over window, disk and job",
        [
            hold("window", "nightly", since=-5, until=60, message="Nightly"),
            hold("job", "dbcheck", since=-3, message="Checking databases"),
            hold("disk", "disk", since=-2, message="Disk low"),
            hold("manual", "cli", since=-1, message="Operator says"),
        ],
        ("Operator says", at(-5), None, "watcher"),
    ),
    (
        "several holds: disk message wins over job and window",
        [
            hold("window", "nightly", since=-5, until=60, message="Nightly"),
            hold("job", "dbcheck", since=-30, message="Checking databases"),
            hold("disk", "disk", since=-2, message="Disk low"),
        ],
        ("Disk low", at(-30), None, "watcher"),
    ),
    (
        "several holds: job message wins over window",
        [
            hold("window", "nightly", since=-5, until=60, message="Nightly"),
            hold("job", "dbcheck", since=-3, message="Checking databases"),
        ],
        ("Checking databases", at(-5), None, "watcher"),
    ),
    (
        "a higher-priority hold without a message leaves the next message",
        [hold("manual", "cli"), hold("window", "nightly", until=60, message="Nightly")],
        ("Nightly", at(-10), None, "watcher"),
    ),
    (
        "no hold has a message: the default",
        [hold("job", "dbcheck"), hold("window", "nightly", until=60)],
        (DEFAULT, at(-10), None, "watcher"),
    ),
    (
        "all holds have until: end is the latest",
        [hold("window", "nightly", since=-20, until=60), hold("manual", "cli", until=90)],
        (DEFAULT, at(-20), at(90), "watcher"),
    ),
    (
        "one hold without until: no end",
        [hold("window", "nightly", until=60), hold("job", "dbcheck", since=-40)],
        (DEFAULT, at(-40), None, "watcher"),
    ),
    (
        "an expired hold counts for nothing: not start, end nor message",
        [
            hold("manual", "cli", since=-120, until=-60, message="Old"),
            hold("window", "nightly", since=-5, until=60, message="Nightly"),
        ],
        ("Nightly", at(-5), at(60), "watcher"),
    ),
    (
        "an expired open-ended sibling does not remove the end",
        [hold("manual", "cli", since=-120, until=-60), hold("window", "nightly", until=60)],
        (DEFAULT, at(-10), at(60), "watcher"),
    ),
    (
        "an operator's adopted hold: set_by operator",
        [Hold("manual", "operator", at(-3), message="From the operator")],
        ("From the operator", at(-3), None, "operator"),
    ),
    (
        "operator's hold among watcher's: still set_by operator",
        [Hold("manual", "operator", at(-3)), hold("job", "dbcheck", since=-8)],
        (DEFAULT, at(-8), None, "operator"),
    ),
    (
        "a manual hold named otherwise is watcher's",
        [hold("manual", "cli"), hold("disk", "operator")],
        (DEFAULT, at(-10), None, "watcher"),
    ),
]


@pytest.mark.parametrize(
    ("holds", "expected"),
    [pytest.param(h, e, id=label) for label, h, e in DECIDE_TABLE],
)
def test_decide_table(
    holds: list[Hold], expected: tuple[str, datetime, datetime | None, str] | None
) -> None:
    """decide gives the message, start, end and set_by the table says, or None for no file."""
    content = decide(holds, NOW, DEFAULT)
    if expected is None:
        assert content is None
        return
    assert content is not None
    assert (content.message, content.start, content.end, content.set_by) == expected
    assert set(content.holds) == {h for h in holds if h.active(NOW)}


def test_decide_orders_holds_by_priority_then_since() -> None:
    """The holds in the content are the active ones, manual first, then disk, job, window."""
    holds = [
        hold("window", "b", since=-1, until=60),
        hold("job", "j", since=-2),
        hold("window", "a", since=-9, until=60),
        hold("disk", "disk", since=-3),
        hold("manual", "cli", since=-4),
        hold("manual", "old", since=-50, until=-40),
    ]
    content = decide(holds, NOW, DEFAULT)
    assert content is not None
    assert [(h.reason, h.name) for h in content.holds] == [
        ("manual", "cli"),
        ("disk", "disk"),
        ("job", "j"),
        ("window", "a"),
        ("window", "b"),
    ]


def test_render_is_the_design_json() -> None:
    """The rendered content is one JSON object: DESIGN §3's keys plus the local-time pair."""
    holds = [
        hold("window", "nightly", since=-20, until=60, message="Nightly"),
        hold("manual", "cli", since=-5, until=30),
    ]
    content = decide(holds, NOW, DEFAULT)
    assert content is not None
    doc = orjson.loads(content.render())
    assert set(doc) == {"message", "start", "end", "holds", "set_by"} | {
        "start_local",
        "end_local",
        "timezone",
    }
    assert doc["message"] == "Nightly"
    assert datetime.fromisoformat(doc["start"]) == at(-20)
    assert datetime.fromisoformat(doc["end"]) == at(60)
    assert doc["set_by"] == "watcher"
    assert [(h["reason"], h["name"]) for h in doc["holds"]] == [
        ("manual", "cli"),
        ("window", "nightly"),
    ]
    for entry in doc["holds"]:
        assert {"reason", "name", "since"} <= set(entry)
        assert entry["reason"] in ("manual", "window", "job", "disk")
        datetime.fromisoformat(entry["since"])


def test_render_open_end_is_null() -> None:
    """A maintenance without an end renders ``"end": null``."""
    content = decide([hold()], NOW, DEFAULT)
    assert content is not None
    assert orjson.loads(content.render())["end"] is None


LOCAL_TABLE = [
    # zone, start (UTC), end (UTC), expected start_local, expected end_local
    ("Asia/Tokyo", NOW, at(60), "2026-11-26T13:50:00+09:00", "2026-11-26T14:50:00+09:00"),
    ("UTC", NOW, None, "2026-11-26T04:50:00+00:00", None),
    (
        "America/New_York",  # the window spans the end of DST: the offset changes inside it
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
    ),
]


@pytest.mark.parametrize(("zone", "start", "end", "start_local", "end_local"), LOCAL_TABLE)
def test_render_local_times(
    zone: str, start: datetime, end: datetime | None, start_local: str, end_local: str | None
) -> None:
    """``start_local``/``end_local`` are the same instants in the configured zone."""
    content = MaintContent("m", start, end, (hold(),), "watcher")
    doc = orjson.loads(content.render(ZoneInfo(zone)))
    assert (doc["start_local"], doc["end_local"], doc["timezone"]) == (start_local, end_local, zone)
    assert doc["start"] == start.isoformat()  # old readers: UTC as before
    assert datetime.fromisoformat(doc["start_local"]) == start


def test_rendered_file_gives_its_message_back() -> None:
    """Reading watcher's own rendered file as an operator's file yields the same message."""
    content = MaintContent("Back at 6", NOW, None, (hold(),), "watcher")
    assert message_from_file(content.render()) == "Back at 6"


# --- reconcile: what an observation of the file means ----------------------------------

RECONCILE_TABLE = [
    ("file and active hold: as it should be", True, [hold()], "unchanged"),
    ("no file and no hold: as it should be", False, [], "unchanged"),
    ("file without any hold: an operator's, adopt", True, [], "adopt"),
    ("file with only expired holds: adopt", True, [hold(until=-1)], "adopt"),
    ("no file while a hold is active: operator release", False, [hold()], "released"),
    ("no file, hold until later: operator release", False, [hold(until=5)], "released"),
    ("no file, only expired holds: nothing to release", False, [hold(until=-1)], "unchanged"),
]


@pytest.mark.parametrize(
    ("exists", "holds", "expected"),
    [pytest.param(e, h, x, id=label) for label, e, h, x in RECONCILE_TABLE],
)
def test_reconcile_table(exists: bool, holds: list[Hold], expected: str) -> None:
    """reconcile maps (file present?, holds, now) to unchanged, adopt or released."""
    assert reconcile(exists, holds, NOW) == expected


# --- message_from_file -----------------------------------------------------------------

MESSAGE_TABLE: list[tuple[str, bytes, str | None]] = [
    ("empty", b"", None),
    ("only whitespace", b"  \n\t\n", None),
    ("plain text", b"Upgrading the database\n", "Upgrading the database"),
    ("first line of several", b"Back at 06:00\nsecond line\nthird\n", "Back at 06:00"),
    ("leading blank lines skipped", b"\n\n   Swapping disks  \nmore", "Swapping disks"),
    ("CRLF line ends", b"Windows editor\r\nline 2\r\n", "Windows editor"),
    ("JSON with message", b'{"message": "From JSON", "other": 1}', "From JSON"),
    ("JSON with empty message", b'{"message": ""}', None),
    ("JSON without message", b'{"start": "2026-01-01T00:00:00Z"}', None),
    ("JSON message not a string", b'{"message": 42}', "42"),
    ("UTF-8 text", "メンテナンス中です\n".encode(), "メンテナンス中です"),
]


@pytest.mark.parametrize(
    ("content", "expected"),
    [pytest.param(c, e, id=label) for label, c, e in MESSAGE_TABLE],
)
def test_message_from_file_table(content: bytes, expected: str | None) -> None:
    """An operator's file gives its JSON message or first line of text, else None."""
    assert message_from_file(content) == expected


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(bytes(range(256)), id="every byte"),
        pytest.param(b"\xff\xfe\x00\x00garbage\x80\x81", id="invalid UTF-8"),
        pytest.param(b"\x00" * 1000, id="NULs"),
        pytest.param(b'{"message": "unterminated', id="broken JSON"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", id="a PNG header"),
    ],
)
def test_message_from_file_never_fails_on_garbage(content: bytes) -> None:
    """Garbage bytes give a short string or None, never an exception."""
    message = message_from_file(content)
    assert message is None or (isinstance(message, str) and 0 < len(message) <= 500)
    if message is not None:
        orjson.dumps({"message": message})  # it can go into the maint file and events


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"x" * 5_000_000, id="one huge line"),
        pytest.param(b"line\n" * 1_000_000, id="a million lines"),
        pytest.param(orjson.dumps({"message": "m" * 1_000_000}), id="huge JSON message"),
    ],
)
def test_message_from_file_huge(content: bytes) -> None:
    """A huge file gives a message of at most 500 characters."""
    message = message_from_file(content)
    assert message is not None
    assert 0 < len(message) <= 500


# --- the property: the file exists iff at least one hold is active ----------------------

times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)
holds_strategy = st.lists(
    st.builds(
        Hold,
        reason=st.sampled_from(REASONS),
        name=st.sampled_from(["cli", "operator", "nightly", "dbcheck", "disk"]),
        since=times,
        until=st.none() | times,
        message=st.none() | st.text(max_size=20),
    ),
    max_size=8,
)


@given(holds=holds_strategy, now=times)
def test_file_exists_iff_a_hold_is_active(holds: list[Hold], now: datetime) -> None:
    """For any holds and time, decide gives content iff some hold has no until or a later one."""
    content = decide(holds, now, DEFAULT)
    live = [h for h in holds if h.until is None or now < h.until]
    assert (content is not None) == bool(live)
    if content is not None:
        assert sorted(content.holds, key=repr) == sorted(live, key=repr)
        assert content.start == min(h.since for h in live)
        if any(h.until is None for h in live):
            assert content.end is None
        else:
            assert content.end == max(h.until for h in live if h.until is not None)
        assert content.message
        assert orjson.loads(content.render())["set_by"] == content.set_by


# --- Hold records ----------------------------------------------------------------------

ROUND_TRIP = [
    Hold("manual", "cli", NOW),
    Hold("manual", "operator", NOW, message="from the operator"),
    Hold("window", "nightly", at(-5), until=at(55), message="Nightly"),
    Hold("job", "restore", at(-1), interrupted=True),
    Hold("disk", "disk", at(-1), message=""),
    Hold("cluster", "all", datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=9)))),
]


@pytest.mark.parametrize("original", ROUND_TRIP, ids=lambda h: f"{h.reason}-{h.name}")
def test_hold_round_trip(original: Hold) -> None:
    """Hold.from_dict(to_dict()) gives back an equal hold, also through JSON."""
    assert Hold.from_dict(original.to_dict()) == original
    assert Hold.from_dict(orjson.loads(orjson.dumps(original.to_dict()))) == original


@given(
    st.builds(
        Hold,
        reason=st.sampled_from(REASONS),
        name=st.text(max_size=30),
        since=times,
        until=st.none() | times,
        message=st.none() | st.text(max_size=30),
        interrupted=st.booleans(),
    )
)
def test_hold_round_trip_property(original: Hold) -> None:
    """Any hold survives to_dict → JSON → from_dict unchanged."""
    assert Hold.from_dict(orjson.loads(orjson.dumps(original.to_dict()))) == original


def test_hold_from_dict_rejects_an_unknown_reason() -> None:
    """A hold with a reason outside the known ones is a ValueError."""
    with pytest.raises(ValueError, match="unknown hold reason"):
        Hold.from_dict({"reason": "whim", "name": "x", "since": NOW.isoformat()})


# --- small helpers ----------------------------------------------------------------------


def test_with_hold_replaces_same_reason_and_name() -> None:
    """Adding a hold with an existing (reason, name) replaces it; others stay."""
    first = hold("manual", "cli", message="first")
    other = hold("job", "dbcheck")
    second = hold("manual", "cli", message="second")
    assert with_hold([first, other], second) == (other, second)
    assert without([first, other], "manual") == (other,)
    assert without([first, other], "job", "backup") == (first, other)


def test_next_expiry_is_the_soonest_future_until() -> None:
    """next_expiry ignores open-ended and past holds and picks the soonest future until."""
    holds = [hold(until=-1), hold("window", "w", until=30), hold("job", "j"), hold(until=5)]
    assert next_expiry(holds, NOW) == at(5)
    assert next_expiry([hold()], NOW) is None


def test_active_holds_drops_expired() -> None:
    """active_holds keeps holds with no until or an until after now."""
    assert active_holds([hold(until=-1), hold(until=0)], NOW) == ()


def test_operator_hold_is_manual_operator() -> None:
    """An adopted file becomes the manual hold named operator, since now, with no end."""
    assert operator_hold(NOW, "msg") == Hold("manual", "operator", NOW, None, "msg")
