"""Running a service: start its background work, serve HTTP, and shut down cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import threading

from flask import Flask
from flask_socketio import SocketIO

from numcast import admin
from numcast import doors as http_doors
from numcast.logs import Throttled

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)  # PID 1 in a container gets no default SIGTERM action: handle it
SOCKET_IO_PATH = "/socket.io"
FILES_BESIDES_HTTP = 256  # open files for Redis, the sink, TCP mirror clients and Python itself
# Connections the kernel completes before the server accepts them, whatever the connection limit: beyond the
# limit the doors make room or answer 503 (numcast.doors), which a SYN dropped for a full queue never learns.
BACKLOG = 1024


class Gate:
    """In front of Socket.IO: at most `limit` connections at once; the rest get 503 at once, and are counted.

    Eventlet's server stops accepting (the kernel's backlog fills, probes time out) when its pool is full, and
    werkzeug's starts a thread per connection without limit; a cap of our own refuses cleanly in both modes.
    It also declines WebSocket compression (permessage-deflate): each browser would keep its own zlib state
    (about 200 KB) and have every frame compressed for it alone, for frames of a few hundred bytes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0  # Socket.IO requests in progress: open WebSockets and long-polls
        self.refused = 0
        self._lock = threading.Lock()
        self._warn = Throttled(log)
        self._app = None

    def init_app(self, app: Flask) -> None:
        """Wrap `app`'s WSGI callable (after Socket.IO has wrapped it), so every Socket.IO request passes here."""
        self._app = app.wsgi_app
        app.wsgi_app = self

    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith(SOCKET_IO_PATH):
            return self._app(environ, start_response)
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        with self._lock:
            admitted = self.active < self.limit
            if admitted:
                self.active += 1
            else:
                self.refused += 1
        if not admitted:
            self._warn.warning("full", "browser refused active=%d limit=%d", self.active, self.limit)
            start_response("503 Service Unavailable", [("Content-Type", "application/json"), ("Retry-After", "5")])
            return [b'{"error": "too many browsers connected", "status": 503}']
        try:
            return self._app(environ, start_response)  # a WebSocket returns only once it is closed
        finally:
            with self._lock:
                self.active -= 1


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
        socketio.start_background_task(_stop_on_signal, socketio, read_end, reload, app.extensions["numcast.doors"])
    # Every HTTP connection passes through the doors: counted, capped, and closed if it holds a place without
    # sending its request (numcast.doors). Eventlet's pool is sized to the same limit.
    doors = app.extensions["numcast.doors"]
    files = _allow_files(doors.limit + FILES_BESIDES_HTTP)
    if files < doors.limit + FILES_BESIDES_HTTP:  # fewer places than asked, rather than accept() failing
        doors.limit = max(16, files - FILES_BESIDES_HTTP)
        log.warning("http connections limited limit=%d open_files=%d", doors.limit, files)
    if socketio.async_mode == "eventlet":
        options = http_doors.eventlet_options(doors)
    else:
        options = http_doors.werkzeug_options(doors)
    socketio.start_background_task(doors.reap, socketio.sleep)
    server = _listen(app, socketio, host, port, BACKLOG, options)  # a taken port fails here
    admin_server = _admin(app, socketio, host)
    service.start(socketio)
    # After the service, which may wrap engineio's WebSocket driver too (numcast_worker.direct): checks come first.
    app.extensions["numcast.socket_input"].install(socketio.server.eio)
    socketio.start_background_task(admin_server)
    log.info(
        "serving http://%s:%d admin_port=%d async_mode=%s",
        host,
        port,
        app.extensions["numcast.admin_port"],
        socketio.async_mode,
    )
    try:
        server()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        for signum in (*SIGNALS, RELOAD) if reload is not None else SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        service.stop()
        log.info("stopped")


def _admin(app: Flask, socketio: SocketIO, host: str):
    """Bind the admin port (numcast.admin), with doors of its own; return what serves it (run as a task)."""
    doors = app.extensions["numcast.admin_doors"]
    if socketio.async_mode == "eventlet":
        options = http_doors.eventlet_options(doors)
    else:
        options = http_doors.werkzeug_options(doors)
    socketio.start_background_task(doors.reap, socketio.sleep)
    port = app.extensions["numcast.admin_port"]
    return _listen(admin.wsgi(app), socketio, host, port, BACKLOG, options)


def _listen(app, socketio: SocketIO, host: str, port: int, backlog: int, options: dict):
    """Bind the HTTP port with a backlog of `backlog`; return what serves it until the process is told to stop.

    What `socketio.run` does, with two differences. The listen backlog is ours: its default (50 under eventlet,
    128 under werkzeug) drops the SYNs of a burst of connections, such as every browser reconnecting after a
    restart, and each dropped one waits out the kernel's one-second retransmission. And the port is ours alone:
    eventlet's listen() sets SO_REUSEPORT, so a second process on the same port would start without a word and
    get half of the first one's connections; a taken port must stop the start (OSError, "cannot start").
    """
    family, *_, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    if socketio.async_mode == "eventlet":
        import eventlet
        import eventlet.wsgi

        sock = eventlet.listen(address, family, backlog=backlog, reuse_port=False)
        # debug=False: an exception that escapes the app is answered 500 without its traceback.
        return lambda: eventlet.wsgi.server(sock, app, log_output=False, debug=False, **options)
    from werkzeug.serving import ThreadedWSGIServer

    sock = socket.create_server(address, family=family, backlog=backlog)  # SO_REUSEADDR only, as it should be
    server = ThreadedWSGIServer(host, port, app, handler=options["request_handler"], fd=sock.fileno())
    sock.close()  # the server holds its own duplicate of the descriptor

    def serve() -> None:
        try:
            server.serve_forever()
        finally:
            server.server_close()

    return serve


def _allow_files(needed: int) -> int:
    """Raise the soft limit of open files to `needed` if the hard limit allows; return the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning("open files limited files=%d needed=%d: fewer connections can be served", target, needed)
    return target


def _on_signals(handler) -> None:
    for signum in SIGNALS:
        signal.signal(signum, handler)


def _interrupt(signum, frame):
    log.info("shutting down signal=%s", signal.Signals(signum).name)
    raise KeyboardInterrupt


def _reload(reload) -> None:
    log.info("reload requested signal=SIGHUP")
    reload()


def _stop_on_signal(socketio: SocketIO, read_end: int, reload, doors: http_doors.Doors) -> None:
    signum = os.read(read_end, 1)[0]  # green under eventlet: this task sleeps until a signal comes
    while signum == RELOAD and reload is not None:
        _reload(reload)
        signum = os.read(read_end, 1)[0]
    log.info("shutting down signal=%s", signal.Signals(signum).name)
    # The server waits for each connection that has begun a request: one whose headers never end must not
    # hold the shutdown (and the sink's last flush) for a whole header timeout.
    doors.close_waiting()
    socketio.stop()  # raises SystemExit out of this task, which ends the server loop
