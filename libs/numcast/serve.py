"""Running a service: start its background work, serve HTTP, and shut down cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal

from flask import Flask
from flask_socketio import SocketIO

log = logging.getLogger(__name__)


def _interrupt(signum, frame):
    # Under eventlet this unwinds the hub into the server loop just as Ctrl-C does; PID 1 in a
    # container gets no default SIGTERM action, so without this handler `docker stop` waits and kills.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(app: Flask, socketio: SocketIO, host: str, port: int) -> None:
    """Serve `app` until SIGTERM or SIGINT, then stop the service's work and return."""
    service = app.extensions["numcast"]
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    service.start(socketio)
    log.info("serving http://%s:%d async_mode=%s", host, port, socketio.async_mode)
    try:
        socketio.run(app, host=host, port=port, log_output=False, allow_unsafe_werkzeug=True)
    except KeyboardInterrupt as exc:
        log.info("shutting down signal=%s", exc or "SIGINT")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        service.stop()
        log.info("stopped")
