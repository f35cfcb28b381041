"""The Redis connection: who we are there, one way to build a client, capped backoff, and URLs safe to log."""

from __future__ import annotations

import dataclasses
import random
import urllib.parse

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import NoPermissionError
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

MAX_PASSWORD_BYTES = 4096  # a password file longer than this is not a password
# Errors after which a fresh connection may succeed; anything else is a bug and propagates. A refused password
# (AuthenticationError) and a missing permission (NOPERM) are among them: the operator fixes the Secret or the
# ACL, and the service, still running and retrying, connects.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError, NoPermissionError)
# Of those, the ones only a person can fix: /readyz and the logs say so.
CREDENTIAL_ERRORS = (redis.AuthenticationError, NoPermissionError)
CREDENTIALS_HINT = "check REDIS_USERNAME, REDIS_PASSWORD_FILE or REDIS_PASSWORD, and the ACL (docs/security.md)"


def read_password(path: str) -> str:
    """The password in file `path` (a mounted Secret), without a trailing newline; OSError or ValueError."""
    with open(path, "rb") as file:
        raw = file.read(MAX_PASSWORD_BYTES + 1)
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ValueError(f"longer than {MAX_PASSWORD_BYTES} bytes")
    text = raw.decode("utf-8", errors="strict").removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError("it is empty")
    return text


@dataclasses.dataclass(frozen=True)
class Endpoint(CredentialProvider):
    """Where Redis is and who we are there: a URL without credentials, a username, and a password or a file.

    The file is read at every new connection, so a rotated Secret is picked up by the next reconnect.
    """

    url: str
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    password_file: str = ""

    @classmethod
    def parse(cls, url: str, username: str = "", password: str = "", password_file: str = "") -> Endpoint:
        """Credentials given here win over those inside `url`: the file, then the password, then the URL's."""
        parts = urllib.parse.urlsplit(url)
        if "@" in parts.netloc:
            url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
            username = username or urllib.parse.unquote(parts.username or "")
            password = password or urllib.parse.unquote(parts.password or "")
        return cls(url, username, password, password_file)

    def get_credentials(self) -> tuple[str, ...]:
        """redis-py asks at each connection: (username, password), (password,) or () for no AUTH."""
        try:
            secret = read_password(self.password_file) if self.password_file else self.password
        except (OSError, ValueError) as exc:  # the file went missing after start-up: retried like a refusal
            raise redis.AuthenticationError(f"password file {self.password_file}: {exc}") from None
        if self.username:
            return (self.username, secret)  # an empty password gets a clear WRONGPASS, not a NOAUTH as `default`
        return (secret,) if secret else ()

    @property
    def label(self) -> str:
        """The URL with the username and never the password, for logs and pages."""
        if not self.username:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        user = urllib.parse.quote(self.username, safe="")
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc}"))

    def __str__(self) -> str:
        return self.label


def client(target: Endpoint | str, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast: no hidden retries, so callers own reconnects and can count them.

    No CLIENT command on connecting (no SETINFO, no MAINT_NOTIFICATIONS): a least-privilege user may not run it,
    and each refusal would fill Redis's ACL LOG.
    """
    endpoint = target if isinstance(target, Endpoint) else Endpoint.parse(target)
    return redis.Redis.from_url(
        endpoint.url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        credential_provider=endpoint,
        driver_info=None,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


def redact(url: Endpoint | str) -> str:
    """The URL with any password replaced, for logs and pages."""
    if isinstance(url, Endpoint):
        return url.label
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def reachable(target: Endpoint | str, timeout: float = 0.5) -> bool:
    """True when a PING gets an answer within `timeout` seconds."""
    conn = client(target, timeout)
    try:
        return bool(conn.ping())
    except (*CONNECTION_ERRORS, redis.ResponseError):
        return False
    finally:
        conn.close()


def describe(exc: BaseException) -> str:
    """An exception as `Type: message`, for one-line logs."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


RETRY_MAX_SECONDS = 2.0  # the longest wait between two attempts to reach Redis (REDIS_RETRY_MAX_SECONDS)


class Backoff:
    """Exponential delays with full jitter, capped, reset after a success."""

    def __init__(self, base: float = 0.1, cap: float = RETRY_MAX_SECONDS) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Start again from the smallest delay."""
        self.attempt = 0
