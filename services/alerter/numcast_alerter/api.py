"""The alerter's HTTP API: the rules' states, and the webhook Alertmanager calls."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request

from numcast import auth, parsing
from numcast.alerts import AlertError

MAX_ERRORS_SHOWN = 10  # of a payload's skipped alerts, in the answer; all are counted and logged


def _service():
    return current_app.extensions["numcast"]


def init_app(app: Flask) -> None:
    """Register the routes on `app`."""

    @app.get("/")
    def index() -> Response:
        return jsonify(
            service="numcast alerter",
            endpoints=["/api/alerts", "POST /api/alertmanager", "/healthz", "/readyz", "/metrics"],
        )

    @app.get("/api/alerts")
    def alerts() -> Response:
        return jsonify({**_service().status(), "auth": auth.mode()})

    @app.post("/api/alertmanager")
    def alertmanager() -> tuple[Response, int]:
        try:
            payload = parsing.loads(request.get_data(cache=False) or b"null")
        except ValueError as exc:
            refused = AlertError("not_json", f"body is not valid JSON: {str(exc)[:200]}")
            _service().refuse_webhook(refused)
            return jsonify(error=str(refused), reason=refused.reason), 400
        try:
            published, errors = _service().webhook(payload)
        except AlertError as exc:
            return jsonify(error=str(exc), reason=exc.reason), 400
        # 200 even with skipped alerts: Alertmanager takes a 4xx as final, and would drop the good ones with them.
        return jsonify(published=published, rejected=len(errors), errors=errors[:MAX_ERRORS_SHOWN]), 200
