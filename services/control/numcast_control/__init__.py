"""The control-plane: generates values and publishes them to Redis and the TCP mirror."""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from numcast import web
from numcast.metrics import Metrics
from numcast_control import api
from numcast_control.service import ControlService
from numcast_control.settings import ControlSettings

socketio = SocketIO()


def create_app(settings: ControlSettings) -> Flask:
    """Build the control-plane app for `settings`; nothing runs until `numcast.serve.run` starts it."""
    app = Flask(__name__)
    metrics = Metrics()
    service = ControlService(settings, metrics)
    app.extensions["numcast"] = service
    metrics.init_app(app)
    web.init_app(app, service.ready)
    api.init_app(app)
    socketio.init_app(app, async_mode=settings.async_mode, cors_allowed_origins=web.allowed_origins(()))
    return app
