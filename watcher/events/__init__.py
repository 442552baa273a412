"""Events: the record every observation and decision becomes, and the bus that fans it out.

``record`` (the frozen ``Event``, its ECS JSON and console renderings), ``bus`` (one bounded
queue and task per handler; the core never waits on a handler).

May import: ``watcher.system`` and ``watcher.core``. Knows nothing of config, sources, the
service, jobs or handlers' implementations.
"""
