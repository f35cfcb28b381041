"""Background tasks through Flask-SocketIO, so no module but the entry point touches the async library."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Tasks:
    """Starts long-running loops, restarts one that crashes, and waits for all of them at shutdown."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._done: list[threading.Event] = []

    def start(self, socketio, loop: Callable[[], None], name: str) -> None:
        """Run `loop` in the background; if it raises, log it and run it again a second later."""
        done = threading.Event()

        def supervise() -> None:
            try:
                while not self.stopping.is_set():
                    try:
                        loop()
                        return
                    except Exception:
                        log.exception("task crashed, restarting in 1s task=%s", name)
                        self.stopping.wait(1.0)
            finally:
                done.set()

        self._done.append(done)
        socketio.start_background_task(supervise)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds in all for every task to return; True if all did."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        return all(done.wait(max(0.0, deadline - time.monotonic())) for done in self._done)
