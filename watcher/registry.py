"""The registry of handler and job types, and the config loaders that consult it.

``watcher.config`` validates the schema but cannot import the handler and job packages
(they import it for their option records), so the checks that only a type can make (does
``module:attr`` load, do a job's arguments suit its type) come from here. Everything that
loads a configuration — the service, the CLI, tests — calls these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from watcher import config
from watcher.config import Config, HandlerConfig, JobConfig
from watcher.handlers import check_handler
from watcher.jobs import check_job


class TypeChecks:
    """The ``config.PluginChecks`` of the built-in and plugin handler and job types."""

    def job(self, config: JobConfig) -> list[str]:
        return check_job(config)

    def handler(self, config: HandlerConfig) -> list[str]:
        return check_handler(config)


CHECKS = TypeChecks()


def load_config(path: Path | None, data_dir: Path | None = None) -> Config:
    """Read and validate the config file (``None``: defaults only); raises ``ConfigError``."""
    return config.load_config(path, CHECKS, data_dir)


def build_config(
    raw: Mapping[str, Any], *, source: Path | None, data_dir: Path | None = None
) -> Config:
    """A ``Config`` from parsed TOML; raises ``ConfigError`` with every problem found."""
    return config.build_config(raw, source=source, checks=CHECKS, data_dir=data_dir)


def default_config(data_dir: Path) -> Config:
    """The configuration with every default, for ``data_dir``."""
    return config.default_config(data_dir, CHECKS)
