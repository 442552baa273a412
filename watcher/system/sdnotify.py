"""systemd's notify protocol: ``READY=1``, ``STATUS=…``, ``STOPPING=1``, ``WATCHDOG=1``.

A datagram to the socket named by ``$NOTIFY_SOCKET`` (``@`` = abstract namespace).
Does nothing when the variable is unset, so the service runs the same outside systemd.
"""

from __future__ import annotations

import os
import socket

import anyio


class Notifier:
    """Sends notify messages; ``watchdog_interval`` is half of ``$WATCHDOG_USEC`` (or None)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> None:
        """Send one datagram; errors are ignored (systemd may be gone during shutdown)."""
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            pass

    async def watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` at half the interval systemd asked for, until cancelled."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await anyio.sleep(self.watchdog_interval)
