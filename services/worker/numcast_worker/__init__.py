"""The worker: subscribes to the channel, mirrors to a file, and pushes values to browsers."""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from numcast import app
from numcast_worker import api
from numcast_worker.service import WorkerService
from numcast_worker.settings import WorkerSettings as Settings

socketio = SocketIO()
# A browser only sends pongs and `subscribe` (at most SUBSCRIBE_MAX_SERIES names and 16 matchers: a few KB);
# a larger message closes its connection instead of being read into memory.
MAX_MESSAGE_BYTES = 16 * 1024


def create_app(settings: Settings) -> Flask:
    """Build the worker app for `settings`; nothing runs until `numcast.serve.run` starts it."""
    flask_app = app.create_app(
        __name__,
        settings,
        lambda metrics: WorkerService(settings, metrics, socketio),
        lambda flask_app: api.init_app(flask_app, socketio),
        socketio,
        settings.cors_origins,
        max_message=MAX_MESSAGE_BYTES,
    )
    flask_app.extensions["numcast"].gate.init_app(flask_app)  # outside Socket.IO's own middleware
    return flask_app
