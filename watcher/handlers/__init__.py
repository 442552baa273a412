"""Handler types: built-ins, the ``watcher.handlers`` entry-point group, ``module:attr``.

A handler type is a factory ``(HandlerConfig, Origin) -> Handler``; a handler is an async
callable taking one ``Event`` (see ``watcher.events.bus.Handler``). Factories raise
``ValueError`` for unusable options; ``check_handler`` reports that at config time.
"""

from __future__ import annotations

from typing import Protocol

from watcher.config import HandlerConfig
from watcher.events.bus import Handler
from watcher.events.record import Origin
from watcher.system.plugins import PluginError, resolve

BUILTIN_HANDLERS = {
    "log": "watcher.handlers.log:LogHandler",
    "command": "watcher.handlers.command:CommandHandler",
    "webhook": "watcher.handlers.webhook:WebhookHandler",
    "page": "watcher.handlers.page:PageHandler",
}


class HandlerFactory(Protocol):
    def __call__(self, config: HandlerConfig, origin: Origin) -> Handler: ...


def handler_factory(kind: str) -> HandlerFactory:
    """The factory for a handler type name; raises ``PluginError``."""
    factory = resolve("watcher.handlers", kind, BUILTIN_HANDLERS)
    if not callable(factory):
        raise PluginError(f"handler type {kind!r} is not callable")
    return factory  # type: ignore[no-any-return]  # reason: plugin objects are untyped


def check_handler(config: HandlerConfig) -> list[str]:
    """Problems with a handler's configuration (its type must at least load)."""
    try:
        handler_factory(config.type)
    except PluginError as exc:
        return [f"type: {exc}"]
    if config.type == "page":
        from watcher.handlers.page import _options

        try:
            _options(dict(config.options))
        except ValueError as exc:
            return [str(exc)]
    return []


def build_handler(config: HandlerConfig, origin: Origin) -> Handler:
    """A ready handler for one ``[[handlers]]`` entry."""
    return handler_factory(config.type)(config, origin)
