"""The worker: subscribes to the channel, mirrors to a file, and pushes values to browsers."""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from numcast import web
from numcast.metrics import Metrics
from numcast_worker import api
from numcast_worker.service import WorkerService
from numcast_worker.settings import WorkerSettings

socketio = SocketIO()


def create_app(settings: WorkerSettings) -> Flask:
    """Build the worker app for `settings`; nothing runs until `numcast.serve.run` starts it."""
    app = Flask(__name__)
    metrics = Metrics()
    service = WorkerService(settings, metrics, socketio)
    app.extensions["numcast"] = service
    metrics.init_app(app)
    web.init_app(app, service.ready)
    api.init_app(app, socketio)
    # The page's own origin is always allowed; CORS_ORIGINS adds others (never '*').
    socketio.init_app(
        app, async_mode=settings.async_mode, cors_allowed_origins=web.allowed_origins(settings.cors_origins)
    )
    return app
