"""``python -m watcher`` is the ``watcher`` command."""

import sys

from watcher.cli.main import main

sys.exit(main())
