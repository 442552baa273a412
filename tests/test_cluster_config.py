"""``[cluster]``: off by default, validated like every other section, the password never shown."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import cli, write_config
from watcher.config import ConfigError, redact_url
from watcher.registry import load_config


def _config(tmp_path: Path, body: str) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return write_config(tmp_path / "watcher.toml", f'data_dir = "{data}"\n{body}')


def test_cluster_is_off_by_default(tmp_path: Path) -> None:
    """Without ``[cluster]`` nothing about the cluster is enabled, and host_id is the hostname."""
    config = load_config(_config(tmp_path, ""))
    assert not config.cluster.enabled
    assert config.cluster.host_id == socket.gethostname()


def test_cluster_section_is_read(tmp_path: Path) -> None:
    """Every ``[cluster]`` key lands in the typed record, windows included."""
    body = (
        '[cluster]\nurl = "unix:///run/redis.sock"\nname = "app"\nhost_id = "srv1"\n'
        'password_env = "PW"\nheartbeat = "2s"\nbackoff_max = "1s"\n'
        '[[cluster.windows]]\nname = "fleet"\nstart = "01:00"\nend = "01:30"\n'
    )
    cluster = load_config(_config(tmp_path, body)).cluster
    assert cluster.enabled and cluster.url == "unix:///run/redis.sock"
    assert (cluster.name, cluster.host_id, cluster.password_env) == ("app", "srv1", "PW")
    assert (cluster.heartbeat, cluster.backoff_max) == (2.0, 1.0)
    assert [(w.name, w.start, w.end) for w in cluster.windows] == [("fleet", 60, 90)]


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        ('[cluster]\nurl = "http://x"\n', "cluster.url", "use redis://"),
        ('[cluster]\nname = "app"\n', "cluster.url", "required"),
        ('[cluster]\nurl = "redis://h"\nname = "a b"\n', "cluster.name", "letters"),
        (
            '[cluster]\nurl = "redis://h"\npassword_file = "nope"\n',
            "cluster.password_file",
            "exist",
        ),
        (
            '[cluster]\nurl = "redis://h"\npassword_file = "watcher.toml"\npassword_env = "X"\n',
            "cluster.password_env",
            "not both",
        ),
        ('[cluster]\nurl = "redis://h"\nbogus = 1\n', "cluster.bogus", "unknown key"),
        (
            '[cluster]\nurl = "redis://h"\n[[cluster.windows]]\nname = "w"\nstart = "01:05"\n'
            'end = "02:00"\n',
            "cluster.windows[0].start",
            "",
        ),
    ],
    ids=["scheme", "no-url", "name", "password-file", "both-passwords", "unknown", "window"],
)
def test_cluster_mistakes_name_the_key(tmp_path: Path, body: str, key: str, fragment: str) -> None:
    """A bad ``[cluster]`` value is a problem naming ``cluster.<key>`` and the reason."""
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, body))
    assert any(p.key == key and fragment in p.reason for p in caught.value.problems), [
        str(p) for p in caught.value.problems
    ]


def test_password_in_a_bad_url_is_not_printed(tmp_path: Path) -> None:
    """``config check`` on a URL with a password and a wrong scheme exits 2 without the secret."""
    cfg = _config(tmp_path, '[cluster]\nurl = "http://:s3cret@h:1"\n')
    result = cli("config", "check", config=cfg)
    assert result.returncode == 2
    assert "cluster.url" in result.stderr and "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://:pw@h:6379", "redis://:***@h:6379"),
        ("rediss://user:pw@h", "rediss://user:***@h"),
        ("unix:///run/r.sock?password=pw&db=1", "unix:///run/r.sock?password=***&db=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """Passwords in a Redis URL are replaced by ``***`` wherever the URL is shown."""
    assert redact_url(url) == shown
