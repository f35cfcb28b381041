"""The admin port: /metrics and the full /api/status, for Prometheus and operators, off the public port.

The public port (PORT, published by the NodePort Services) keeps the pages, their assets, the history, the
Socket.IO connection, the probes and the API the pages use; its /api/status is the page's view, without what
only an operator needs (the sink's path, the Redis user a refusal names, replay errors). The admin port
(ADMIN_PORT) serves the same app, for the admin routes only, and marks its requests so that they get the full
view. In a cluster only Prometheus reaches it (infra/k8s/08-network-policies.yaml).
"""

from __future__ import annotations

from flask import Flask, abort, request

ROUTES = ("/metrics", "/api/status", "/healthz", "/readyz")
PUBLIC_NOT = ("/metrics",)  # on the admin port only; /api/status is on both, in two views
ENVIRON = "numcast.admin"  # set on every request that came in on the admin port
_NOT_HERE = b'{"error": "the admin port serves /metrics, /api/status, /healthz and /readyz only", "status": 404}'


def init_app(app: Flask) -> None:
    """Answer 404 on the public port for what only the admin port serves."""

    @app.before_request
    def admin_only():
        if request.path in PUBLIC_NOT and not requested():
            abort(404)


def requested() -> bool:
    """True if the current request came in on the admin port."""
    return bool(request.environ.get(ENVIRON))


def wsgi(app: Flask):
    """The WSGI callable the admin port serves: `app`, for the admin routes only."""

    def admin(environ, start_response):
        if environ.get("PATH_INFO") not in ROUTES:
            start_response(
                "404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(_NOT_HERE)))]
            )
            return [_NOT_HERE]
        environ[ENVIRON] = True
        return app(environ, start_response)

    return admin
