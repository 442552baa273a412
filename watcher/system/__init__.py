"""Thin wrappers over the operating system, with no knowledge of watcher's concepts.

``atomic`` (durable writes, renames and exchanges), ``lock`` (the instance flock),
``sdnotify`` (systemd's notify protocol), ``plugins`` (``module:attr`` and entry-point
loading).

May import: the standard library, third-party libraries and ``watcher.core``.
"""
