"""Sources: what observes the outside world and reports it, deciding nothing.

``watching`` (the event-driven inotify reader of the flat, latency-critical directories),
``treewatch`` (watchfiles on the data tree, for ``fs.changed``), ``disksample`` (``statvfs``
readings), ``triggerfile`` (which spool entries are triggers and what they ask), ``control``
(requests from the CLI to the running service).

May import: ``watcher.config``, ``watcher.events``, ``watcher.system``, ``watcher.core``.
Never the service, jobs, handlers or the CLI.
"""
