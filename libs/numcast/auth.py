"""Who may change things: a bearer token for every change, or, with none configured, loopback clients only.

Every request whose method changes something (anything but GET, HEAD and OPTIONS) passes here before its view,
so a mutation added later is guarded without a word; reads stay open. Services whose settings declare
`CONTROL_TOKEN` and `CONTROL_TOKEN_FILE` (the control-plane, the alerter) get a guard from `numcast.app`.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import os
import re
import urllib.parse

from flask import Flask, Response, current_app, jsonify, request

from numcast.logs import Throttled
from numcast.settings import SettingsError

log = logging.getLogger(__name__)

TOKEN_VAR, FILE_VAR = "CONTROL_TOKEN", "CONTROL_TOKEN_FILE"
PUSH_VARS = ("PUSH_TOKEN", "PUSH_TOKEN_FILE")  # the publisher's token (numcast_control.push_api), not for changes
MIN_LENGTH, MAX_LENGTH = 16, 1024
# RFC 6750's b64token: what `openssl rand -hex 24`, `openssl rand -base64 24` and secrets.token_urlsafe() make.
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
REASONS = ("missing", "wrong", "not_loopback", "cross_origin")
HOW_TO_SET = (
    f"set {TOKEN_VAR} (or {FILE_VAR}, a file holding it) on this service, restart it, and send "
    "Authorization: Bearer <token> with each change"
)
MESSAGES = {
    "missing": "this change needs Authorization: Bearer <token>, with the token this service was started with",
    "wrong": "this token is not the one this service was started with",
    "not_loopback": f"no token is set, so changes are accepted from this machine (loopback) only: {HOW_TO_SET}",
    "cross_origin": "no token is set, and this change comes from a web page of another site (its Origin, or the "
    f"Host it asked for, is not this loopback address): {HOW_TO_SET}",
}


def problem(token: str) -> str | None:
    """What makes `token` unusable, in words that never repeat it; None when it is fine."""
    if not MIN_LENGTH <= len(token) <= MAX_LENGTH:
        return f"must be {MIN_LENGTH}-{MAX_LENGTH} characters, not {len(token)} (`openssl rand -hex 24` makes one)"
    if not _TOKEN_RE.fullmatch(token):
        return "may hold only A-Z a-z 0-9 - . _ ~ + / and a trailing = (a bearer token, RFC 6750)"
    return None


def check_settings(token: str, token_file: str, names: tuple[str, str] = (TOKEN_VAR, FILE_VAR)) -> None:
    """Settings validation: at most one of the two variables (`names`), and a usable token in the first."""
    if token and token_file:
        raise SettingsError(f"{names[0]} and {names[1]} are both set: set one of them")
    if token and (why := problem(token)):
        raise SettingsError(f"{names[0]}: {why}")


def load(token: str, token_file: str, file_var: str = FILE_VAR) -> bytes | None:
    """The token, from `token` or read from `token_file` (a trailing newline dropped); None when neither is set."""
    if token:
        return token.encode()
    if not token_file:
        return None
    try:
        with open(token_file, "rb") as file:
            raw = file.read(MAX_LENGTH + 3)  # enough to tell a token that is too long
    except OSError as exc:
        raise SettingsError(f"{file_var}={token_file!r}: cannot read it: {exc.strerror}") from None
    text = raw.decode("ascii", errors="replace").removesuffix("\n").removesuffix("\r")
    if why := problem(text):
        raise SettingsError(f"{file_var}={token_file!r}: the token in it {why}")
    return text.encode()


def file_stamp(path: str) -> tuple | None:
    """What tells a file changed (inode, mtime, size), None while it cannot be read: a mounted Secret's update
    replaces the file behind a symlink, which os.stat follows."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Token:
    """The token in force: `CONTROL_TOKEN`, or `CONTROL_TOKEN_FILE` read again whenever the file changes.

    A mounted Secret is rotated by swapping a symlink; Alertmanager re-reads its credentials_file at every call,
    so a token read once would refuse every notification after a rotation. The file is stat()ed at each change
    request (reads never need the token): a new inode, size or mtime means it is read again. A file that cannot
    be read or holds no usable token leaves the previous token in force, logged, and is tried again next time.
    """

    def __init__(self, token: str, token_file: str, file_var: str = FILE_VAR) -> None:
        """Read now: a bad file at start-up is a SettingsError naming `file_var`."""
        self.file, self.file_var = "" if token else token_file, file_var
        self.value = load(token, token_file, file_var)
        self._seen = self._stat()
        self._warn = Throttled(log, interval=30.0)

    def get(self) -> bytes | None:
        """The token to compare with, None when changes are for loopback clients only."""
        if self.file:
            seen = self._stat()
            if seen != self._seen:
                try:
                    self.value = load("", self.file, self.file_var)
                except SettingsError as exc:
                    self._warn.warning(
                        "file", "token file changed but is not usable, the previous token stays: %s", exc
                    )
                else:
                    self._seen = seen
                    log.info("token file changed, read again file=%s", self.file)
        return self.value

    def _stat(self) -> tuple | None:
        return file_stamp(self.file)


def loopback(address: str | None) -> bool:
    """True for a loopback IP address (127.0.0.0/8, ::1, or ::ffff:127.x.x.x); False for anything else."""
    try:
        ip = ipaddress.ip_address((address or "").strip("[]").partition("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def local_refusal() -> str | None:
    """With no token set: None for a loopback client of this site; else why not (`not_loopback`, `cross_origin`)."""
    # The TCP peer, never X-Forwarded-For: a header is whatever the client wrote.
    if not loopback(request.remote_addr):
        return "not_loopback"
    # A browser is a loopback client that runs any site's script: a simple cross-site POST, or a page whose
    # name was rebound to 127.0.0.1, must not change anything. Such requests carry another Origin or Host.
    host = urllib.parse.urlsplit(f"//{request.host}").hostname or ""
    origin = request.headers.get("Origin")
    if not (host == "localhost" or loopback(host)) or origin not in (None, f"{request.scheme}://{request.host}"):
        return "cross_origin"
    return None


def presented() -> str | None:
    """The token a request carries: `Bearer <t>`, `Token <t>` (InfluxDB's clients) or HTTP Basic's password."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme in ("bearer", "token") and credentials:
        return credentials
    if scheme == "basic" and credentials:
        try:
            return base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")[2] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None


class Guard:
    """Before every change: without the token, 401; with no token configured, 403 unless loopback and same-site.

    Blueprints named in `own` (the push doors) check a token of their own instead.
    """

    def __init__(self, token: Token, metrics) -> None:
        self.source = token
        self.refused = metrics.counter(
            "auth_refused", f"Changes refused, by reason ({', '.join(REASONS)}).", ("reason",)
        )
        for reason in REASONS:
            self.refused.labels(reason)
        self._warn = Throttled(log)
        self.own: set[str] = set()

    @property
    def token(self) -> bytes | None:
        """The token in force now (a token file is read again when it changes)."""
        return self.source.get()

    @property
    def mode(self) -> str:
        """`token` when changes need the token, `loopback` when none is set."""
        return "token" if self.source.value is not None else "loopback"

    def check(self) -> tuple[Response, int] | None:
        """Flask's before_request: None lets the request through, a response refuses it."""
        if request.method in SAFE_METHODS or request.routing_exception is not None or request.blueprint in self.own:
            return None  # reads, requests that get 404 or 405 anyway, and doors with a guard of their own
        token = self.token
        if token is not None:
            scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
            credentials = credentials.strip()
            if scheme.lower() != "bearer" or not credentials:
                return self._refuse("missing", 401)
            if not hmac.compare_digest(credentials.encode("utf-8", "replace"), token):
                return self._refuse("wrong", 401)
            return None
        reason = local_refusal()
        return self._refuse(reason, 403) if reason else None

    def _refuse(self, reason: str, status: int) -> tuple[Response, int]:
        self.refused.labels(reason).inc()
        self._warn.warning(
            reason,
            "change refused reason=%s peer=%s method=%s path=%s",
            reason,
            request.remote_addr,
            request.method,
            request.path[:200],
        )
        response = jsonify(error=MESSAGES[reason], reason=reason, status=status)
        if status == 401:
            # RFC 6750: a request without credentials gets the bare challenge; a wrong token says so.
            error = ', error="invalid_token"' if reason == "wrong" else ""
            response.headers["WWW-Authenticate"] = f'Bearer realm="numcast"{error}'
        return response, status


def init_app(app: Flask, settings, metrics) -> Guard:
    """Guard every change to `app` with the token of `settings` (read now: a bad file stops the start)."""
    guard = Guard(Token(settings.control_token, settings.control_token_file), metrics)
    app.extensions["numcast.auth"] = guard
    app.before_request(guard.check)
    if guard.source.value is None:
        log.info("changes accepted from loopback only: no %s or %s", TOKEN_VAR, FILE_VAR)
    else:
        log.info("changes need the bearer token from %s", FILE_VAR if settings.control_token_file else TOKEN_VAR)
    return guard


def mode() -> str:
    """The current app's `Guard.mode`, as /api/status tells the page."""
    return current_app.extensions["numcast.auth"].mode
