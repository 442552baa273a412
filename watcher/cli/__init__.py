"""The command-line face: argument parsing, reports for people (status, jobs, diagnose), and
``trigger --wait``'s follower. The only layer that turns errors into messages and exit codes.

May import every other layer.
"""

from watcher.cli.main import main

__all__ = ["main"]
