"""What both services' HTTP sides share: health endpoints, JSON errors, body limits, security headers."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

MAX_BODY_BYTES = 4096  # the default: a config patch is a few dozen bytes (the alerter asks for more)

# Everything the pages load comes from the service itself; a message's text can never become script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def init_app(app: Flask, ready: Callable[[], tuple[bool, dict]], max_body: int = MAX_BODY_BYTES) -> None:
    """Add /healthz, /readyz (200 only when `ready()` says so), JSON errors, headers and shared assets.

    A request body over `max_body` bytes gets 413 before it is read.
    """
    app.config["MAX_CONTENT_LENGTH"] = max_body
    # The stylesheet both pages share, from this library: url_for("numcast.static", filename="base.css").
    # Its templates too: {% include "numcast/development_banner.html" %} (numcast.dev_credentials).
    app.register_blueprint(
        Blueprint("numcast", __name__, static_folder="static", static_url_path="/numcast", template_folder="templates")
    )

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        ok, detail = ready()
        return jsonify(status="ready" if ok else "not ready", **detail), 200 if ok else 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description, status=exc.code), exc.code or 500

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def allowed_origins(extra: tuple[str, ...]) -> Callable[[str | None, dict], bool]:
    """A Socket.IO origin check: the page's own origin, plus `extra`. (An empty list would allow every origin.)"""

    def allowed(origin: str | None, environ: dict) -> bool:
        if origin in extra:
            return True
        host = environ.get("HTTP_X_FORWARDED_HOST", environ.get("HTTP_HOST", "")).split(",")[0].strip()
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http")).split(",")[0].strip()
        return origin == f"{scheme}://{host}"

    return allowed
