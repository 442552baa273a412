"""The tiny job that says when it ran: ``<trigger name> <CLOCK_REALTIME ns>``, appended with one
``O_APPEND`` write as soon as it runs (a C program compiled for the run; a Python one where
no compiler is found). Its time is the job's own, not an event's. The name is its second
argument, or ``WATCHER_TRIGGER`` (what watcher's command job sets).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

RECORDER_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const char *name = argc > 2 ? argv[2] : getenv("WATCHER_TRIGGER");
    char line[512];
    int n = snprintf(line, sizeof line, "%s %lld%09ld\n", name ? name : "?",
                     (long long)ts.tv_sec, ts.tv_nsec);
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n) return 1;
    return close(fd);
}
"""

RECORDER_PY = """\
import os, sys, time
ns = time.time_ns()
name = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("WATCHER_TRIGGER", "?")
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, f"{name} {ns}\\n".encode())
"""


def recorder(where: Path) -> tuple[list[str], str]:
    """The recorder's argv prefix (output file and name follow) and what it is."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is not None:
        source, binary = where / "recorder.c", where / "recorder"
        source.write_text(RECORDER_C)
        if subprocess.run([cc, "-O2", "-o", str(binary), str(source)]).returncode == 0:
            return [str(binary)], "a C recorder"
    script = where / "recorder.py"
    script.write_text(RECORDER_PY)
    return [sys.executable, str(script)], "a Python recorder"


class Records:
    """The recorder's output file: name → start times (ns)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")

    def read(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for line in self.path.read_bytes().splitlines():
            name, _, ns = line.decode().rpartition(" ")
            found.setdefault(name, []).append(int(ns))
        return found

    def wait(self, names: set[str], timeout: float) -> dict[str, list[int]]:
        """Poll (every 5 ms: the bench, not the timed path) until every name has a line."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.read()
            if names <= found.keys() or time.monotonic() > deadline:
                return found
            time.sleep(0.005)
