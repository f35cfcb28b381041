"""The push doors of the control-plane: Pushgateway's, InfluxDB's write API and JSON, one path behind them.

Each door only reads its format (numcast.push.formats) and answers in its clients' own terms; checking, stamping
and publishing is numcast_control.push.Pusher's. Who may push: the PUSH_TOKEN, as `Authorization: Bearer`,
`Token` (InfluxDB's clients) or the password of HTTP Basic (`push_to_gateway`'s basic_auth_handler); with none
set, loopback clients of this site only, as for changes (numcast.auth).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import zlib

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from numcast import auth
from numcast.envelope import valid_label_name
from numcast.logs import Throttled
from numcast.push import formats
from numcast_control.push import Pusher, PushError
from numcast_control.series import Group

log = logging.getLogger(__name__)

EXPOSITION_PATH = "/api/push/metrics"  # what Prometheus scrapes (honor_labels: true): every pushed series
INFLUX_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    413: "request too large",
    429: "too many requests",
}
MESSAGES = {
    "missing": "pushing needs the push token: Authorization: Bearer <token> (or Token <token>, or HTTP Basic with "
    "the token as password)",
    "wrong": "this is not the push token this control-plane was started with",
    "not_loopback": "no PUSH_TOKEN is set, so pushes are accepted from this machine (loopback) only: set PUSH_TOKEN "
    "(or PUSH_TOKEN_FILE) on the control-plane and send it with each push",
    "cross_origin": "no PUSH_TOKEN is set, and this push comes from a web page of another site",
}

bp = Blueprint("push", __name__)
_warn = Throttled(log)


def _pusher() -> Pusher:
    return current_app.extensions["numcast"].pusher


def _token() -> bytes | None:
    return current_app.extensions["numcast.push_token"].get()  # a rotated PUSH_TOKEN_FILE is read again


@bp.before_request
def guard() -> tuple[Response, int] | None:
    """Who may push; and the door's own body limit, larger than the control API's."""
    request.max_content_length = current_app.extensions["numcast"].settings.push_max_body_bytes
    if request.method in auth.SAFE_METHODS:
        return None
    token = _token()
    if token is None:
        reason = auth.local_refusal()
        return _refused(PushError(403, reason, MESSAGES[reason])) if reason else None
    presented = auth.presented()
    if presented is None:
        return _refused(PushError(401, "missing", MESSAGES["missing"]))
    if not hmac.compare_digest(presented.encode("utf-8", "replace"), token):
        return _refused(PushError(401, "wrong", MESSAGES["wrong"]))
    return None


def _refused(exc: PushError, group: Group | None = None) -> tuple[Response, int]:
    """Count, log and answer a refusal in the door's own terms."""
    pusher = _pusher()
    pusher.refused.labels(exc.reason).inc()
    pusher.failed(group)
    _warn.warning(
        exc.reason,
        "push refused reason=%s peer=%s path=%s error=%s",
        exc.reason,
        request.remote_addr,
        request.path[:200],
        str(exc)[:300],
    )
    if request.path.startswith("/api/v2/"):  # InfluxDB's clients read {"code", "message"}
        code = "unavailable" if exc.status == 503 else INFLUX_CODES.get(exc.status, "invalid")
        response = jsonify(code=code, message=str(exc))
    else:
        response = jsonify(error=str(exc), reason=exc.reason, status=exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="numcast push"'
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response, exc.status


def _who() -> str:
    """Whose rate bucket a push counts in: the token's (one token today), or loopback's."""
    return "token" if _token() is not None else "loopback"


def _body() -> bytes:
    """The request body, gunzipped when it says so, within PUSH_MAX_BODY_BYTES either way."""
    limit = current_app.extensions["numcast"].settings.push_max_body_bytes
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise PushError(413, "too_large", f"the body is over PUSH_MAX_BODY_BYTES ({limit} bytes)") from None
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise PushError(400, "invalid", f"Content-Encoding {encoding[:40]!r}: only gzip is understood")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise PushError(400, "invalid", f"the gzip body is broken: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise PushError(413, "too_large", f"the body, gunzipped, is over PUSH_MAX_BODY_BYTES ({limit} bytes)")
    if not inflater.eof:
        raise PushError(400, "invalid", "the gzip body is cut short")
    return data


def _grouping_key(path: str) -> Group:
    """Pushgateway's `job/<job>{/<label>/<value>}`, a name ending in `@base64` having its value base64url-encoded."""
    parts = path.split("/")
    if len(parts) % 2 or parts[0] not in ("job", "job@base64"):
        raise PushError(400, "invalid", "the path must be /metrics/job/<job>{/<label>/<value>}")
    labels: dict[str, str] = {}
    for name, value in zip(parts[::2], parts[1::2], strict=True):
        if name.endswith("@base64"):
            name = name.removesuffix("@base64")
            try:
                value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            except (binascii.Error, ValueError):
                raise PushError(400, "invalid", f"the value of {name[:40]} is not base64url UTF-8") from None
        if name in labels or not valid_label_name(name):
            raise PushError(400, "invalid", f"{name[:40]!r} in the path is not a label name, or comes twice")
        if not value:
            raise PushError(400, "invalid", f"the path gives {name} no value")
        labels[name] = value
    return Group.of(labels)


@bp.route("/metrics/<path:key>", methods=["PUT", "POST", "DELETE"])
def pushgateway(key: str) -> tuple[Response, int]:
    """PUT replaces the group's series, POST those with the pushed names, DELETE forgets the group (Pushgateway)."""
    group = None
    try:
        group = _grouping_key(key)
        if request.method == "DELETE":
            _pusher().delete(group)
            return jsonify(deleted=True), 202
        kind = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if "protobuf" in kind:  # anything else is read as text, as Pushgateway does
            raise PushError(400, "invalid", f"Content-Type {kind[:60]}: only the text exposition format is taken")
        samples = _parse(formats.from_exposition, _body())
        pushed = _pusher().push(samples, _who(), "exposition", group, "group" if request.method == "PUT" else "names")
    except PushError as exc:
        return _refused(exc, group)
    return jsonify(pushed=pushed), 202


@bp.post("/api/v2/write")
def influx_write() -> tuple[Response, int]:
    """InfluxDB v2's write API: line protocol, `precision` honoured, `org` and `bucket` accepted and ignored."""
    try:
        precision = request.args.get("precision", "ns")
        if precision not in formats.PRECISIONS:
            raise PushError(400, "invalid", f"precision must be one of {', '.join(formats.PRECISIONS)}")
        samples, skipped = _parse(lambda body: formats.from_line_protocol(body, precision), _body())
        _pusher().push(samples, _who(), "line_protocol")
    except PushError as exc:
        return _refused(exc)
    if skipped:
        _pusher().skipped.inc(skipped)
    return Response(status=204), 204


@bp.post("/api/push")
def json_push() -> tuple[Response, int]:
    """`{"samples": [{"series", "labels", "value", "ts"}, ...]}`."""
    try:
        pushed = _pusher().push(_parse(formats.from_json, _body()), _who(), "json")
    except PushError as exc:
        return _refused(exc)
    return jsonify(pushed=pushed), 200


@bp.get(EXPOSITION_PATH)
def exposition() -> Response:
    """Every pushed series' last value, for Prometheus (scraped with honor_labels: true)."""
    return Response(_pusher().render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _parse(parser, body: bytes):
    try:
        return parser(body)
    except formats.FormatError as exc:
        raise PushError(400, "invalid", str(exc)) from None


def init_app(app: Flask, settings) -> None:
    """Register the doors; the push token is read now (a bad file stops the start)."""
    token = auth.Token(settings.push_token, settings.push_token_file, auth.PUSH_VARS[1])
    app.extensions["numcast.push_token"] = token
    guard = app.extensions.get("numcast.auth")
    if guard is not None:
        guard.own.add(bp.name)  # the control token never admits a push, nor the push token a change
    app.register_blueprint(bp)
    log.info("pushes %s", "need the push token" if token.get() else "accepted from loopback only: no PUSH_TOKEN")
