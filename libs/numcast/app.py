"""The app factory every service shares: its service object, metrics, health endpoints, errors and Socket.IO."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from flask_socketio import SocketIO

from numcast import admin, auth, dev_credentials, web
from numcast.doors import Doors
from numcast.metrics import Metrics
from numcast.socket_input import SocketInput

ADMIN_CONNECTIONS = 64  # Prometheus and an operator or two: the admin port is no door for crowds


def create_app(
    import_name: str,
    settings,
    make_service: Callable[[Metrics], object],
    init_api: Callable[[Flask], None],
    socketio: SocketIO,
    cors_origins: tuple[str, ...] = (),
    max_body: int = web.MAX_BODY_BYTES,
    max_message: int = 1_000_000,
) -> Flask:
    """A Flask app whose service (`app.extensions["numcast"]`) has `ready`, `start` and `stop`; nothing runs yet.

    The page's own origin may always open the Socket.IO connection; `cors_origins` adds others (never '*').
    Request bodies over `max_body` bytes get 413; a Socket.IO message over `max_message` bytes closes its
    connection (python-engineio's `max_http_buffer_size`). With settings that declare `CONTROL_TOKEN`, every
    change (POST, PUT, PATCH, DELETE) needs that token, or comes from loopback when none is set (`numcast.auth`).
    """
    app = Flask(import_name)
    metrics = Metrics()
    service = make_service(metrics)
    app.extensions["numcast"] = service
    # The HTTP server's connections (numcast.doors), counted in this app's metrics; `numcast.serve.run` uses it.
    app.extensions["numcast.doors"] = Doors(
        settings.http_max_connections, settings.http_header_timeout, metrics, settings.http_body_timeout
    )
    # The admin port's own connections (ADMIN_PORT: /metrics and the full /api/status, numcast.admin).
    app.extensions["numcast.admin_doors"] = Doors(
        ADMIN_CONNECTIONS, settings.http_header_timeout, metrics, settings.http_body_timeout, name="admin_http"
    )
    app.extensions["numcast.admin_port"] = settings.admin_port
    # What clients send over WebSockets to /socket.io/ (numcast.socket_input), installed by `numcast.serve.run`.
    app.extensions["numcast.socket_input"] = SocketInput(metrics)
    metrics.init_app(app)
    admin.init_app(app)
    # The committed development Secrets are for a Minikube on one's own machine: say so wherever one looks.
    development = dev_credentials.found(settings)
    dev_credentials.warn(development)
    app.extensions["numcast.development_credentials"] = development
    app.context_processor(lambda: {"development_credentials": development})
    web.init_app(app, _with_development(service.ready, development), max_body)
    if hasattr(settings, "control_token"):  # a service that takes changes: each needs the token (numcast.auth)
        auth.init_app(app, settings, metrics)
    init_api(app)
    # WebSocket only, as the dashboard connects: long-polling would be a second way in for packets, unchecked.
    socketio.init_app(
        app,
        async_mode=settings.async_mode,
        cors_allowed_origins=web.allowed_origins(cors_origins),
        transports=["websocket"],
        max_http_buffer_size=max_message,
    )
    app.extensions["numcast.socket_input"].init_app(app)  # outside Socket.IO: long-polling never reaches it
    return app


def _with_development(ready: Callable[[], tuple[bool, dict]], names: tuple[str, ...]):
    """`ready`, its detail naming the settings that hold development credentials (readiness itself unchanged)."""
    if not names:
        return ready

    def checked() -> tuple[bool, dict]:
        ok, detail = ready()
        return ok, {**detail, "development_credentials": list(names)}

    return checked
