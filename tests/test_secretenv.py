"""The environment commands get: watcher's own, without the variables holding its secrets,
kept between calls but never stale."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from watcher.system import secretenv


@pytest.fixture(autouse=True)
def nothing_hidden_after() -> Iterator[None]:
    yield
    secretenv.hide([])


def test_hidden_variables_are_left_out_and_the_rest_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    monkeypatch.setenv("PLAIN", "1")
    secretenv.hide(["HOOK_SECRET", ""])
    env = secretenv.child_environ()
    assert "HOOK_SECRET" not in env and env["PLAIN"] == "1"


def test_a_change_to_the_environment_shows_in_the_next_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHANGING", "before")
    assert secretenv.child_environ()["CHANGING"] == "before"
    monkeypatch.setenv("CHANGING", "after")
    monkeypatch.setenv("ADDED", "new")
    env = secretenv.child_environ()
    assert (env["CHANGING"], env["ADDED"]) == ("after", "new")
    monkeypatch.delenv("ADDED")
    assert "ADDED" not in secretenv.child_environ()


def test_naming_other_secrets_takes_effect_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLD_SECRET", "a")
    monkeypatch.setenv("NEW_SECRET", "b")
    secretenv.hide(["OLD_SECRET"])
    assert "NEW_SECRET" in secretenv.child_environ()
    secretenv.hide(["NEW_SECRET"])
    env = secretenv.child_environ()
    assert "NEW_SECRET" not in env and env["OLD_SECRET"] == "a"


def test_each_caller_gets_its_own_copy() -> None:
    first = secretenv.child_environ()
    first["ADDED_BY_A_CALLER"] = "x"
    del first["PATH"]
    second = secretenv.child_environ()
    assert "ADDED_BY_A_CALLER" not in second and "PATH" in second
