"""The control-plane: generates values and publishes them to Redis and the TCP mirror."""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from numcast import app
from numcast_control import api
from numcast_control.service import ControlService
from numcast_control.settings import ControlSettings as Settings

socketio = SocketIO()


def create_app(settings: Settings) -> Flask:
    """Build the control-plane app for `settings`; nothing runs until `numcast.serve.run` starts it."""
    return app.create_app(__name__, settings, lambda metrics: ControlService(settings, metrics), api.init_app, socketio)
