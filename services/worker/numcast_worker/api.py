"""The worker's HTTP API, dashboard and Socket.IO events."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, render_template, request


def _service():
    return current_app.extensions["numcast"]


def init_app(app: Flask, socketio) -> None:
    """Register the routes and Socket.IO handlers."""

    @app.get("/")
    def index() -> str:
        return render_template("index.html", status=_service().status())

    @app.get("/api/status")
    def status() -> Response:
        return jsonify(_service().status())

    @app.get("/api/history")
    def history() -> tuple[Response, int]:
        service = _service()
        size = service.settings.history_size
        raw = request.args.get("limit", str(size))
        if not raw.isdigit() or not 1 <= int(raw) <= size:
            return jsonify(error=f"limit must be an integer from 1 to {size}", field="limit"), 400
        envelopes = service.ingest.recent(int(raw))
        return jsonify(worker=service.settings.worker_name, envelopes=envelopes), 200

    @app.get("/api/alerts")
    def alerts() -> Response:
        return jsonify(_service().alerts.payload())

    @socketio.on("connect")
    def connect(auth=None) -> None:
        _service().fanout.connect(request.sid)

    @socketio.on("disconnect")
    def disconnect(reason=None) -> None:
        _service().fanout.disconnect(request.sid)
