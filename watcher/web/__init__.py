"""The HTTP face: metrics, the status page and its live updates (aiohttp, same event loop)."""
