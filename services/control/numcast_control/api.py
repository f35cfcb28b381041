"""The control-plane's HTTP API and page."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, render_template, request

from numcast import admin, auth, parsing
from numcast_control import push_api
from numcast_control.config import ConfigError


def _service():
    return current_app.extensions["numcast"]


def _status() -> dict:
    # `auth` tells the page whether to ask for the token before the first change. The public port shows the page's
    # view: whether an output was refused, not the refusal's text (it names the Redis user).
    status = {**_service().status(), "auth": auth.mode()}
    if not admin.requested():
        status["outputs"] = [{**o, "refused": True} if o.get("refused") else o for o in status["outputs"]]
    return status


def init_app(app: Flask) -> None:
    """Register the routes on `app`, and the push doors (numcast_control.push_api)."""
    push_api.init_app(app, app.extensions["numcast"].settings)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", status=_status())

    @app.get("/api/status")
    def status() -> Response:
        return jsonify(_status())

    @app.get("/api/workers")
    def workers() -> Response:
        return jsonify(workers=_service().workers())

    @app.get("/api/alerts")
    def alerts() -> Response:
        return jsonify(_service().alerts())

    @app.patch("/api/config")
    def patch_config() -> tuple[Response, int]:
        try:
            body = parsing.loads(request.get_data(cache=False) or b"null")
        except ValueError as exc:
            return jsonify(error=f"body is not valid JSON: {exc}", field=None), 400
        try:
            config = _service().update(body)
        except ConfigError as exc:
            return jsonify(exc.to_dict()), 400
        return jsonify(config=config.to_dict()), 200
