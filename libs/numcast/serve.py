"""Running a service: start its background work, serve HTTP, and shut down cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal

from flask import Flask
from flask_socketio import SocketIO

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)  # PID 1 in a container gets no default SIGTERM action: handle it
# A service with `reload()` (the alerter) re-reads its configuration on SIGHUP. `reload()` only asks: the
# service's own loop does the work, so nothing heavy runs inside a signal handler.
RELOAD = signal.SIGHUP


def run(app: Flask, socketio: SocketIO, host: str, port: int) -> None:
    """Serve `app` until SIGTERM or SIGINT, then stop the service's work and return; SIGHUP asks for a reload."""
    service = app.extensions["numcast"]
    reload = getattr(service, "reload", None)
    if socketio.async_mode == "threading":
        # The handler runs in the main thread, which is the server's loop and nothing else: raise right there.
        _on_signals(_interrupt)
        if reload is not None:
            signal.signal(RELOAD, lambda signum, frame: reload())  # it only sets an Event
    else:
        # Under eventlet every green thread runs in the main thread, so a handler that raised would raise
        # inside whichever one the signal interrupted, perhaps holding a lock. Instead the interpreter writes
        # the signal's number to a pipe (set_wakeup_fd, below Python), the handler does nothing, and a task of
        # its own reads the pipe and stops the server the way Flask-SocketIO's stop() does.
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        _on_signals(lambda signum, frame: None)
        if reload is not None:
            signal.signal(RELOAD, lambda signum, frame: None)
        socketio.start_background_task(_stop_on_signal, socketio, read_end, reload)
    service.start(socketio)
    log.info("serving http://%s:%d async_mode=%s", host, port, socketio.async_mode)
    try:
        socketio.run(app, host=host, port=port, log_output=False, allow_unsafe_werkzeug=True)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        for signum in (*SIGNALS, RELOAD) if reload is not None else SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        service.stop()
        log.info("stopped")


def _on_signals(handler) -> None:
    for signum in SIGNALS:
        signal.signal(signum, handler)


def _interrupt(signum, frame):
    log.info("shutting down signal=%s", signal.Signals(signum).name)
    raise KeyboardInterrupt


def _reload(reload) -> None:
    log.info("reload requested signal=SIGHUP")
    reload()


def _stop_on_signal(socketio: SocketIO, read_end: int, reload) -> None:
    signum = os.read(read_end, 1)[0]  # green under eventlet: this task sleeps until a signal comes
    while signum == RELOAD and reload is not None:
        _reload(reload)
        signum = os.read(read_end, 1)[0]
    log.info("shutting down signal=%s", signal.Signals(signum).name)
    socketio.stop()  # raises SystemExit out of this task, which ends the server loop
