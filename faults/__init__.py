"""watcher's fault suite: ``python -m faults [--quick] [--only NAME ...] [--seed N]``.

Each ``fault_*.py`` module is one scenario (crashes, a trigger flood, lost inotify events,
bad input); each returns rows of figures, and ``faults.report`` prints them as one table.
A row whose figure is a loss (a trigger lost, a job run twice, a traceback, a hang, a bad
input accepted) fails the run: the command exits 1. It is not part of ``make test``.
"""
