"""The worker's HTTP API, dashboard and Socket.IO events."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_socketio import emit

from numcast import admin, parsing
from numcast.envelope import SERIES_RULE, valid_series
from numcast.logs import Throttled
from numcast.matchers import RULE as MATCH_RULE
from numcast.matchers import MatcherError, from_texts
from numcast_worker.subscriptions import SubscribeError, parse

log = logging.getLogger(__name__)
_warn = Throttled(log)


def _service():
    return current_app.extensions["numcast"]


class QueryError(ValueError):
    """A query parameter out of its rule: answered 400 naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _selection(max_series: int):
    """(series names or None for all, matchers) from `?series=…&match=…`."""
    names = request.args.getlist("series")
    if len(names) > max_series:
        raise QueryError("series", f"at most {max_series} series (SUBSCRIBE_MAX_SERIES)")
    for name in names:
        if not valid_series(name):
            raise QueryError("series", f"{name[:60]!r} is not a series name: {SERIES_RULE}")
    try:
        matchers = from_texts(request.args.getlist("match"))
    except MatcherError as exc:
        raise QueryError("match", f"{exc} ({MATCH_RULE})") from None
    return (sorted(set(names)) or None), matchers


def init_app(app: Flask, socketio) -> None:
    """Register the routes and Socket.IO handlers."""

    @app.errorhandler(QueryError)
    def bad_query(exc: QueryError) -> tuple[Response, int]:
        return jsonify(error=str(exc), field=exc.field), 400

    @app.get("/")
    def index() -> str:
        service = _service()
        return render_template(
            "index.html", status=service.public_status(), max_series=service.settings.subscribe_max_series
        )

    @app.get("/api/status")
    def status() -> Response:
        service = _service()
        return jsonify(service.status() if admin.requested() else service.public_status())

    @app.get("/api/history")
    def history() -> tuple[Response, int]:
        service = _service()
        size = service.settings.history_size
        try:
            limit = parsing.ascii_int(request.args.get("limit", str(size)))  # `²`, `٣`: no digits of ours
        except ValueError:
            limit = 0
        if not 1 <= limit <= size:
            return jsonify(error=f"limit must be an integer from 1 to {size}", field="limit"), 400
        names, matchers = _selection(service.settings.subscribe_max_series)
        envelopes = service.ingest.recent(limit, names, matchers)
        return jsonify(worker=service.settings.worker_name, envelopes=envelopes), 200

    @app.get("/api/series")
    def series() -> Response:
        service = _service()
        names, matchers = _selection(service.settings.subscribe_max_series)
        return jsonify(
            worker=service.settings.worker_name,
            series=service.ingest.listing(names, matchers),
            limit=service.settings.max_series,
            unlisted=service.series.unlisted,
        )

    @app.get("/api/alerts")
    def alerts() -> Response:
        return jsonify(_service().alerts.payload())

    @socketio.on("connect")
    def connect(auth=None) -> None:
        _service().fanout.connect(request.sid)

    @socketio.on("disconnect")
    def disconnect(reason=None) -> None:
        _service().fanout.disconnect(request.sid)

    @socketio.on("subscribe")
    def subscribe(*args) -> dict:
        """Watch the series named (and matched): the answer goes to the acknowledgement, an error also as an event."""
        service = _service()
        try:
            if len(args) != 1:
                raise SubscribeError("invalid", "", f"subscribe takes one argument, got {len(args)}")
            held = service.fanout.subscribe(request.sid, parse(args[0], service.settings.subscribe_max_series))
        except SubscribeError as exc:
            service.stats.subscribe_refused[exc.reason] += 1
            _warn.warning(
                f"subscribe:{exc.reason}",
                "subscribe refused sid=%s reason=%s detail=%s",
                request.sid,
                exc.reason,
                str(exc)[:200],
            )
            emit("subscribe_error", exc.to_dict())
            return exc.to_dict()
        return {"subscribed": held.to_dict()}
