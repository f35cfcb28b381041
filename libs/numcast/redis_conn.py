"""The Redis connection: one way to build a client, capped backoff, and URLs safe to log."""

from __future__ import annotations

import random
import urllib.parse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Errors after which a fresh connection may succeed; anything else is a bug and propagates.
CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def client(url: str, password: str = "", timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast: no hidden retries, so callers own reconnects and can count them."""
    options = {"password": password} if password else {}
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        **options,
    )


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and pages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def reachable(url: str, password: str = "", timeout: float = 0.5) -> bool:
    """True when a PING gets an answer within `timeout` seconds."""
    conn = client(url, password, timeout)
    try:
        return bool(conn.ping())
    except (*CONNECTION_ERRORS, redis.ResponseError):
        return False
    finally:
        conn.close()


def describe(exc: BaseException) -> str:
    """An exception as `Type: message`, for one-line logs."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Backoff:
    """Exponential delays with full jitter, capped, reset after a success."""

    def __init__(self, base: float = 0.1, cap: float = 2.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Start again from the smallest delay."""
        self.attempt = 0
