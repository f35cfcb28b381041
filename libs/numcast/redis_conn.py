"""The Redis connection: who we are there, one way to build a client, capped backoff, and URLs safe to log."""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import urllib.parse

import redis
import redis.sentinel
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


MASTER_NAME = "numcast"  # the name the Sentinels monitor the primary under (REDIS_MASTER_NAME)


@dataclasses.dataclass(frozen=True)
class Sentinels(CredentialProvider):
    """The Sentinels that know where the primary is: addresses, the primary's name, and who we are there."""

    addresses: tuple[tuple[str, int], ...]
    master: str = MASTER_NAME
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    password_file: str = ""

    def get_credentials(self) -> tuple[str, ...]:
        """As Endpoint.get_credentials, with the Sentinels' own credentials."""
        return _credentials(self.username, self.password, self.password_file)

    @property
    def label(self) -> str:
        """`sentinel://[user@]host:port,host:port/name`, for logs and pages."""
        user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
        hosts = ",".join(f"{host}:{port}" for host, port in self.addresses)
        return f"sentinel://{user}{hosts}/{self.master}"


def _credentials(username: str, password: str, password_file: str) -> tuple[str, ...]:
    try:
        secret = read_password(password_file) if password_file else password
    except (OSError, ValueError) as exc:  # the file went missing after start-up: retried like a refusal
        raise redis.AuthenticationError(f"password file {password_file}: {exc}") from None
    if username:
        return (username, secret)  # an empty password gets a clear WRONGPASS, not a NOAUTH as `default`
    return (secret,) if secret else ()


@dataclasses.dataclass(frozen=True)
class Endpoint(CredentialProvider):
    """Where Redis is and who we are there: a URL without credentials, a username, and a password or a file.

    The file is read at every new connection, so a rotated Secret is picked up by the next reconnect. With
    `sentinels`, the URL's host and port are not used: each new connection asks the Sentinels for the primary.
    """

    url: str
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    password_file: str = ""
    sentinels: Sentinels | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        username: str = "",
        password: str = "",
        password_file: str = "",
        sentinels: Sentinels | None = None,
    ) -> Endpoint:
        """Credentials given here win over those inside `url`: the file, then the password, then the URL's."""
        parts = urllib.parse.urlsplit(url)
        if "@" in parts.netloc:
            url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
            username = username or urllib.parse.unquote(parts.username or "")
            password = password or urllib.parse.unquote(parts.password or "")
        return cls(url, username, password, password_file, sentinels)

    def get_credentials(self) -> tuple[str, ...]:
        """redis-py asks at each connection: (username, password), (password,) or () for no AUTH."""
        return _credentials(self.username, self.password, self.password_file)

    @property
    def label(self) -> str:
        """The URL with the username and never the password, for logs and pages (the Sentinels, with them)."""
        if self.sentinels is not None:
            user = f"{urllib.parse.quote(self.username, safe='')}@" if self.username else ""
            return f"{self.sentinels.label} ({user}db {self.db})"
        if not self.username:
            return self.url
        parts = urllib.parse.urlsplit(self.url)
        user = urllib.parse.quote(self.username, safe="")
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc}"))

    @property
    def db(self) -> int:
        """The database number in the URL's path (0 when none)."""
        path = urllib.parse.urlsplit(self.url).path.strip("/")
        return int(path) if path.isascii() and path.isdigit() else 0  # "٣".isdigit(): ASCII digits only

    def __str__(self) -> str:
        return self.label


def client(target: Endpoint | str, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast: no hidden retries, so callers own reconnects and can count them.

    No CLIENT command on connecting (no SETINFO, no MAINT_NOTIFICATIONS): a least-privilege user may not run it,
    and each refusal would fill Redis's ACL LOG.
    """
    endpoint = target if isinstance(target, Endpoint) else Endpoint.parse(target)
    options = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }
    if endpoint.sentinels is not None:
        # Each new connection asks the Sentinels where the primary is (a replica that answers READONLY is left as
        # a connection error): after a failover, the caller's usual reconnect lands on the new primary.
        manager = _sentinel(endpoint.sentinels, timeout)
        ssl = endpoint.url.startswith("rediss://")
        return manager.master_for(
            endpoint.sentinels.master, db=endpoint.db, ssl=ssl, credential_provider=endpoint, **options
        )
    return redis.Redis.from_url(endpoint.url, credential_provider=endpoint, **options)


@functools.lru_cache(maxsize=16)
def _sentinel(sentinels: Sentinels, timeout: float) -> redis.sentinel.Sentinel:
    """One client of the Sentinels per process and setting: asking them is one short request per connection."""
    options = {
        "socket_connect_timeout": min(timeout, 1.0),  # a Sentinel that does not answer: ask the next one
        "socket_timeout": min(timeout, 1.0),
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "driver_info": None,
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        "credential_provider": sentinels,
    }
    return redis.sentinel.Sentinel(list(sentinels.addresses), sentinel_kwargs=options)


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
    if isinstance(exc, redis.sentinel.MasterNotFoundError):
        # redis-py lists each Sentinel's client in full: the reasons alone, with the Sentinel's port.
        found, _, errors = str(exc).partition(" : ")
        reasons = re.findall(r"port=(\d+).*? - ([^,]+)", errors)
        detail = ", ".join(f":{port} {reason.strip()}" for port, reason in reasons)
        return f"{type(exc).__name__}: {found}" + (f" (Sentinels: {detail})" if detail else "")
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
