"""Drop-in triggers, the pure parts: names, the JSON form, path confinement, the journal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from watcher.config import build_config
from watcher.journal import Journal
from watcher.trigger_cli import parse_args
from watcher.triggers import Rejected, confine_paths, job_config, parse_trigger, wanted

# --- which names are triggers -----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["dbcheck", "backup.nightly", "restore.2026-01-01", "anything.json", "a.b.c", "x.tmpfile"],
)
def test_wanted_names(name: str) -> None:
    """``<job>``, ``<job>.<anything>`` and ``*.json`` names are trigger candidates."""
    assert wanted(name)


@pytest.mark.parametrize(
    "name",
    [".dbcheck", ".backup.json", ".claimed", ".control", "dbcheck.tmp", "x.json.tmp",
     "backup.part", "x.json.part", ".x.json.123.tmp"],
)
def test_ignored_names(name: str) -> None:
    """Dot-files and ``*.tmp``/``*.part`` (how writers stage a file) are never candidates."""
    assert not wanted(name)


# --- what a trigger asks for ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "job"),
    [("dbcheck", "dbcheck"), ("backup.nightly", "backup"), ("archive.2026.old", "archive")],
)
def test_plain_name_gives_the_job_and_no_args(name: str, job: str) -> None:
    """A non-JSON name requests the job before the first dot, with no arguments."""
    assert parse_trigger(name, None) == (job, {})


def test_plain_name_content_is_not_read() -> None:
    """For a non-JSON name the content is irrelevant, even if it is not JSON at all."""
    assert parse_trigger("dbcheck.x", b"\x00\xff garbage") == ("dbcheck", {})


def test_json_trigger_gives_job_and_args() -> None:
    """``{"job": …, "args": {…}}`` is read whatever the file's stem says."""
    body = orjson.dumps({"job": "backup", "args": {"dest": "/b", "keep": 2}})
    assert parse_trigger("dbcheck.json", body) == ("backup", {"dest": "/b", "keep": 2})


def test_json_trigger_args_default_to_empty() -> None:
    """A JSON trigger without ``args`` has no arguments."""
    assert parse_trigger("x.json", b'{"job": "dbcheck"}') == ("dbcheck", {})


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"job": "dbcheck",}',
        b"\xff\xfe",
        b"[]",
        b'"dbcheck"',
        b"{}",
        b'{"job": ""}',
        b'{"job": 3}',
        b'{"job": null}',
        b'{"job": "dbcheck", "args": []}',
        b'{"job": "dbcheck", "args": "x=1"}',
        b'{"job": "dbcheck", "extra": 1}',
    ],
)
def test_bad_json_is_rejected(content: bytes) -> None:
    """Malformed or wrongly shaped JSON is a ``bad_json`` rejection, never a crash."""
    with pytest.raises(Rejected) as caught:
        parse_trigger("t.json", content)
    assert caught.value.reason == "bad_json"
    assert caught.value.message


def test_json_name_without_content_is_rejected() -> None:
    """A ``*.json`` trigger whose content could not be read counts as bad JSON."""
    with pytest.raises(Rejected) as caught:
        parse_trigger("t.json", None)
    assert caught.value.reason == "bad_json"


# --- where path arguments may point -----------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, ...]:
    """One allowed root (resolved, as the config stores it) and an outside directory."""
    allowed = tmp_path / "allowed"
    (allowed / "sets").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return (allowed.resolve(),)


def confine(value: Any, roots: tuple[Path, ...], name: str = "dest") -> None:
    confine_paths({name: value}, ("dest", "from"), roots)


def test_path_inside_root_is_allowed(roots: tuple[Path, ...]) -> None:
    """A path under an allowed root (or the root itself) passes."""
    confine(str(roots[0] / "sets"), roots)
    confine(str(roots[0]), roots, "from")
    confine(str(roots[0] / "sets" / "not-yet-created"), roots)


def test_path_outside_roots_is_rejected(roots: tuple[Path, ...], tmp_path: Path) -> None:
    """A path outside every allowed root is ``path_not_allowed``."""
    with pytest.raises(Rejected) as caught:
        confine(str(tmp_path / "outside"), roots)
    assert caught.value.reason == "path_not_allowed"


@pytest.mark.parametrize("tail", ["..", "../outside", "sets/../../outside", "sets/../../../etc"])
def test_dot_dot_traversal_is_rejected(roots: tuple[Path, ...], tail: str) -> None:
    """``..`` cannot climb out of an allowed root, however it is spelled."""
    with pytest.raises(Rejected) as caught:
        confine(f"{roots[0]}/{tail}", roots)
    assert caught.value.reason == "path_not_allowed"


def test_dot_dot_staying_inside_is_allowed(roots: tuple[Path, ...]) -> None:
    """``..`` that ends inside the root is fine: the resolved path is what counts."""
    confine(f"{roots[0]}/sets/../sets", roots)


def test_symlink_escaping_the_root_is_rejected(roots: tuple[Path, ...], tmp_path: Path) -> None:
    """A symlink inside an allowed root that points outside it does not let a path out."""
    (roots[0] / "escape").symlink_to(tmp_path / "outside")
    for value in (roots[0] / "escape", roots[0] / "escape" / "set1"):
        with pytest.raises(Rejected) as caught:
            confine(str(value), roots, "from")
        assert caught.value.reason == "path_not_allowed"


def test_symlink_staying_inside_is_allowed(roots: tuple[Path, ...]) -> None:
    """A symlink inside the root that points inside it is fine."""
    (roots[0] / "latest").symlink_to(roots[0] / "sets")
    confine(str(roots[0] / "latest"), roots, "from")


def test_sibling_with_common_prefix_is_rejected(roots: tuple[Path, ...]) -> None:
    """``/x/allowed2`` is not under ``/x/allowed``: roots compare by path parts, not text."""
    sibling = roots[0].with_name(roots[0].name + "2")
    sibling.mkdir()
    with pytest.raises(Rejected) as caught:
        confine(str(sibling), roots)
    assert caught.value.reason == "path_not_allowed"


def test_no_roots_means_no_paths(tmp_path: Path) -> None:
    """With ``allowed_paths`` empty, a trigger may not name a path at all."""
    with pytest.raises(Rejected) as caught:
        confine(str(tmp_path), ())
    assert caught.value.reason == "path_not_allowed"
    assert "allowed_paths" in caught.value.message


@pytest.mark.parametrize("value", ["", 3, None, ["/x"], {"p": "/x"}])
def test_non_path_value_is_bad_args(roots: tuple[Path, ...], value: Any) -> None:
    """A path argument that is not a non-empty string is ``bad_args``."""
    with pytest.raises(Rejected) as caught:
        confine(value, roots)
    assert caught.value.reason == "bad_args"


def test_only_path_arguments_are_confined(tmp_path: Path) -> None:
    """Arguments the job does not declare as paths are not checked, and absent ones are fine."""
    confine_paths({"keep": "/etc", "before": "2020-01-01"}, ("dest", "from"), ())
    confine_paths({}, ("dest",), (tmp_path,))


def test_any_of_several_roots_will_do(tmp_path: Path) -> None:
    """A path under any one of the allowed roots passes."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    confine(str(two / "x"), (one.resolve(), two.resolve()))


# --- which job a name means -------------------------------------------------------------


def test_job_config_built_in_configured_and_unknown(tmp_path: Path) -> None:
    """Configured jobs win; built-in types are usable by name; anything else is unknown."""
    config = build_config(
        {
            "jobs": [
                {"name": "hello", "type": "command", "argv": ["true"]},
                {"name": "backup", "type": "backup", "dest": "/b", "keep": 2},
            ]
        },
        source=None,
        data_dir=tmp_path,
    )
    hello = job_config(config, "hello")
    assert hello is not None and hello.type == "command" and hello.args["argv"] == ["true"]
    backup = job_config(config, "backup")
    assert backup is not None and backup.args == {"dest": "/b", "keep": 2}
    restore = job_config(config, "restore")
    assert restore is not None and restore.type == "restore" and restore.args == {}
    assert job_config(config, "nosuch") is None


# --- the journal ------------------------------------------------------------------------


def test_journal_unfinished_and_compact(tmp_path: Path) -> None:
    """Started-but-unfinished triggers survive compaction; finished ones are dropped."""
    journal = Journal(tmp_path / "state")
    journal.append({"event": "started", "id": "1-a", "file": "a", "job": "dbcheck"})
    journal.append({"event": "started", "id": "2-b", "file": "b", "job": "dbcheck"})
    journal.append({"event": "finished", "id": "1-a", "status": "finished"})
    assert list(journal.unfinished()) == ["2-b"]
    journal.compact()
    assert [r["id"] for r in journal.records()] == ["2-b"]
    assert journal.unfinished()["2-b"]["file"] == "b"


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A record cut short by a crash mid-append is ignored; the ones before it count."""
    journal = Journal(tmp_path)
    journal.append({"event": "started", "id": "1-a", "file": "a", "job": "x"})
    with journal.path.open("ab") as f:
        f.write(b'{"event": "finished", "id": "1-')
    assert list(journal.unfinished()) == ["1-a"]
    journal.append({"event": "started", "id": "2-b", "file": "b", "job": "x"})
    assert "1-a" in journal.unfinished()


def test_journal_missing_is_empty(tmp_path: Path) -> None:
    """No journal file means nothing unfinished, and compacting it creates nothing."""
    journal = Journal(tmp_path)
    assert journal.unfinished() == {}
    journal.compact()
    assert not journal.path.exists()


def test_journal_is_private(tmp_path: Path) -> None:
    """The journal is readable by watcher's user only."""
    journal = Journal(tmp_path)
    journal.append({"event": "started", "id": "1-a"})
    assert os.stat(journal.path).st_mode & 0o777 == 0o600


# --- the CLI's --arg parsing ------------------------------------------------------------


def test_cli_args_parse_json_values_else_strings() -> None:
    """``--arg K=V`` takes JSON values as such and anything else as a string."""
    assert parse_args(["keep=3", "before=2000-01-01", "dest=/b", "flag=true", "v=a=b"]) == {
        "keep": 3,
        "before": "2000-01-01",
        "dest": "/b",
        "flag": True,
        "v": "a=b",
    }


@pytest.mark.parametrize("pair", ["novalue", "=x"])
def test_cli_args_need_key_and_value(pair: str) -> None:
    """A pair without ``=`` or without a key is a usage error."""
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_args([pair])
