"""watcher: keeps an application's maintenance mode honest."""

__version__ = "0.1.0"
