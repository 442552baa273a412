"""The service: carries out what the core decides, on what the sources observe.

``lifecycle`` (``Service``: one linear ``serve()``, signals, reload), ``controller`` (owns
the maint file and the holds), ``state`` (``state.json``), ``operations`` (enter, leave),
``scheduler`` (windows and scheduled jobs), ``diskguard`` (disk levels → holds and events),
``spool`` (claims and runs triggers), ``journal`` (the trigger journal), ``runner`` (runs
jobs under their holds).

May import everything below it: ``watcher.registry``, sources, jobs, handlers, events,
config, system, core. Never the CLI.
"""
