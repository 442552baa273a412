"""Loading plugins: ``module:attr`` strings and entry-point groups, with precise errors.

Modelled on uvicorn's ``importer.py`` (say exactly which part failed) and pluggy's
entry-point walk with ``importlib.metadata``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any


class PluginError(ImportError):
    """A plugin named in config or an entry point cannot be loaded; the message says why."""


def import_from_string(spec: str) -> Any:
    """The object named by ``"package.module:attribute.path"``."""
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise PluginError(f'{spec!r} is not of the form "module:attribute"')
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise PluginError(f"could not import module {module_name!r}") from None
        raise PluginError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise PluginError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginError(f"module {module_name!r} has no attribute {attrs!r}") from None
    return obj


def load_entry_point(group: str, name: str) -> Any | None:
    """The object registered as ``name`` in entry-point ``group``, or ``None``."""
    for ep in entry_points(group=group):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:
                raise PluginError(
                    f"entry point {name!r} in {group} ({ep.value}) failed to load: {exc}"
                ) from None
    return None


def resolve(group: str, name: str, builtins: dict[str, str]) -> Any:
    """A built-in by name, an entry point of ``group``, or a ``module:attr`` object."""
    if name in builtins:
        return import_from_string(builtins[name])
    if ":" in name:
        return import_from_string(name)
    found = load_entry_point(group, name)
    if found is None:
        raise PluginError(f"no {group} plugin named {name!r}")
    return found
