"""Logging: one line per event on stdout, with context as key=value."""

from __future__ import annotations

import logging
import sys
import time


def setup(level: str, name: str) -> None:
    """Send every record to stdout as one line that names the process."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Per-request and per-packet chatter from the libraries drowns the events that matter.
    for noisy in ("werkzeug", "engineio", "socketio", "engineio.server", "socketio.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class Throttled:
    """Logs at most one line per `interval` seconds per key, saying how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self.logger, self.interval = logger, interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        """Log `message` unless `key` was logged less than `interval` seconds ago."""
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if len(self._last) > 1000:  # keys come from a small fixed set; this only guards against a bug
            self._last.clear()
        suffix = f" (+{held} similar in the last {self.interval:g}s)" if held else ""
        self.logger.warning(message + suffix, *args)
