"""The alerter: evaluates rules on the live stream, and carries alerts to Alertmanager and to the dashboards."""

from __future__ import annotations

from flask import Flask
from flask_socketio import SocketIO

from numcast import app
from numcast_alerter import api
from numcast_alerter.service import AlerterService
from numcast_alerter.settings import AlerterSettings as Settings

socketio = SocketIO()

MAX_BODY_BYTES = 1024 * 1024  # a webhook payload of many alerts; larger ones get 413


def create_app(settings: Settings) -> Flask:
    """Build the alerter app for `settings`; nothing runs until `numcast.serve.run` starts it."""
    return app.create_app(
        __name__,
        settings,
        lambda metrics: AlerterService(settings, metrics),
        api.init_app,
        socketio,
        max_body=MAX_BODY_BYTES,
    )
