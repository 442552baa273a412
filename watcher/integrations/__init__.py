"""Middleware for Python applications: answer 503 while the maint file exists.

Standalone (imports nothing else of watcher): one ``stat`` of the maint file per request.
A request carrying the admin bypass cookie (``watcher_bypass=<secret>``, like Laravel's
``--secret``) passes through. ``?watcher_bypass=<secret>`` sets that cookie.
"""

from watcher.integrations.middleware import MaintenanceASGI, MaintenanceWSGI

__all__ = ["MaintenanceASGI", "MaintenanceWSGI"]
