"""Settings as data: frozen dataclasses filled from env vars, validated once at start-up."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

from numcast import parsing
from numcast.envelope import SOURCE_RULE, valid_source
from numcast.push import stream
from numcast.redis_conn import MASTER_NAME, RETRY_MAX_SECONDS, Endpoint, Sentinels, read_password

ASYNC_MODES = ("eventlet", "threading")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ORIGIN_RE = re.compile(r"https?://[^/\s]+")


class SettingsError(ValueError):
    """An env var holds a value the service cannot run with; the message names the variable."""


def env(name: str, default: Any, doc: str, parse: Callable[[str], Any] = str, secret: bool = False) -> Any:
    """Declare a dataclass field read from env var `name`, parsed with `parse`.

    `secret`: the value is a credential, or (`*_FILE`) names a file holding one; it is left out of the repr.
    """
    metadata = {"env": name, "doc": doc, "parse": parse, "secret": secret}
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


def from_env(cls: type, environ: Mapping[str, str] | None = None, **overrides: Any) -> Any:
    """Build settings `cls` from `environ` (default os.environ); keyword overrides win over both."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in overrides:
            values[f.name] = overrides.pop(f.name)
            continue
        raw = environ.get(f.metadata["env"])
        if raw is None or raw == "":
            continue
        try:
            values[f.name] = f.metadata["parse"](raw.strip())
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{f.metadata['env']}={raw!r}: {exc}") from None
    if overrides:
        raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
    settings = cls(**values)
    settings.validate()
    return settings


def check(condition: bool, name: str, value: Any, message: str) -> None:
    """Raise SettingsError naming env var `name` unless `condition` holds."""
    if not condition:
        raise SettingsError(f"{name}={value!r}: {message}")


def parse_int(raw: str) -> int:
    """An integer in ASCII digits, with a readable error."""
    text = raw.strip()
    try:
        return -parsing.ascii_int(text[1:]) if text.startswith("-") else parsing.ascii_int(text.removeprefix("+"))
    except ValueError:
        raise ValueError("not an integer") from None


def parse_float(raw: str) -> float:
    """A finite number in ASCII digits, with a readable error."""
    try:
        value = parsing.ascii_float(raw.strip())
    except ValueError:
        raise ValueError("not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def parse_targets(raw: str) -> tuple[tuple[str, int], ...]:
    """A comma-separated list of host:port pairs."""
    targets = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        targets.append((host.strip("[]"), int(port)))
    return tuple(targets)


def parse_origins(raw: str) -> tuple[str, ...]:
    """A comma-separated list of browser origins, such as https://example.org."""
    origins = tuple(filter(None, (part.strip() for part in raw.split(","))))
    for origin in origins:
        if not _ORIGIN_RE.fullmatch(origin):
            raise ValueError(f"{origin!r} is not an origin like https://host:port")
    return origins


def default_host_name() -> str:
    """The pod or host name, as Kubernetes sets it."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


@dataclasses.dataclass(frozen=True)
class Common:
    """Settings every service reads."""

    redis_url: str = env("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis server (redis:// or rediss://).")
    redis_username: str = env(
        "REDIS_USERNAME", "", "Redis ACL user (see docs/security.md); overrides one in `REDIS_URL`. Empty: `default`."
    )
    redis_password: str = env("REDIS_PASSWORD", "", "Redis password; overrides one in `REDIS_URL`.", secret=True)
    redis_password_file: str = env(
        "REDIS_PASSWORD_FILE",
        "",
        "File holding the Redis password (a mounted Secret); wins over `REDIS_PASSWORD`. Read at each connection.",
        secret=True,
    )
    redis_sentinels: tuple[tuple[str, int], ...] = env(
        "REDIS_SENTINELS",
        (),
        "Comma-separated host:port of the Redis Sentinels (see docs/operations.md). Set: the primary is the one "
        "they name, found again after each lost connection, and `REDIS_URL` gives only the scheme and database.",
        parse_targets,
    )
    redis_master_name: str = env("REDIS_MASTER_NAME", MASTER_NAME, "The name the Sentinels monitor the primary under.")
    redis_sentinel_username: str = env(
        "REDIS_SENTINEL_USERNAME", "", "User on the Sentinels themselves, when they require one. Empty: `default`."
    )
    redis_sentinel_password: str = env(
        "REDIS_SENTINEL_PASSWORD", "", "Password on the Sentinels themselves (empty: no AUTH).", secret=True
    )
    redis_sentinel_password_file: str = env(
        "REDIS_SENTINEL_PASSWORD_FILE",
        "",
        "File holding the Sentinels' password; wins over `REDIS_SENTINEL_PASSWORD`. Read at each connection.",
        secret=True,
    )
    redis_retry_max_seconds: float = env(
        "REDIS_RETRY_MAX_SECONDS",
        RETRY_MAX_SECONDS,
        "The longest wait between two attempts to reach Redis after a failure (exponential backoff with jitter, "
        "capped here).",
        parse_float,
    )
    channel: str = env("CHANNEL", "numbers", "Pub/sub channel the values travel on.")
    alerts_channel: str = env("ALERTS_CHANNEL", "alerts", "Pub/sub channel alerts travel on (see docs/contract.md).")
    host: str = env("HOST", "0.0.0.0", "Address the HTTP server binds to.")
    log_level: str = env("LOG_LEVEL", "INFO", f"One of {', '.join(LOG_LEVELS)}.", str.upper)
    async_mode: str = env(
        "ASYNC_MODE", "eventlet", f"Flask-SocketIO async mode: {' or '.join(ASYNC_MODES)}.", str.lower
    )
    admin_port: int = env(
        "ADMIN_PORT",
        9180,
        "HTTP port of `/metrics` and the full `/api/status`, for Prometheus and operators; the public port (`PORT`) "
        "answers `/metrics` with 404 and shows the pages' view of `/api/status` (see docs/security.md).",
        parse_int,
    )
    http_max_connections: int = env(
        "HTTP_MAX_CONNECTIONS",
        4096,
        "HTTP connections open at once (browsers included); at the limit the one waiting longest for its "
        "request is closed to make room (see docs/security.md, HTTP connections).",
        parse_int,
    )
    http_header_timeout: float = env(
        "HTTP_HEADER_TIMEOUT",
        5.0,
        "Seconds a connection may take to send a request's headers (or stay idle between requests) before it "
        "is closed.",
        parse_float,
    )
    http_body_timeout: float = env(
        "HTTP_BODY_TIMEOUT",
        10.0,
        "Seconds a request that announces a body (`Content-Length`, or chunked) may take from its headers to the "
        "end of its answer, body read included, before its connection is closed. A body the service does not "
        "read is never drained: the connection is closed after the answer.",
        parse_float,
    )

    @property
    def redis(self) -> Endpoint:
        """Redis and the credentials to use there: REDIS_PASSWORD_FILE, then REDIS_PASSWORD, then the URL's."""
        sentinels = None
        if self.redis_sentinels:
            sentinels = Sentinels(
                self.redis_sentinels,
                self.redis_master_name,
                self.redis_sentinel_username,
                self.redis_sentinel_password,
                self.redis_sentinel_password_file,
            )
        return Endpoint.parse(
            self.redis_url, self.redis_username, self.redis_password, self.redis_password_file, sentinels
        )

    def validate(self) -> None:
        """Raise SettingsError for the first setting that is out of range."""
        check(
            self.redis_url.startswith(("redis://", "rediss://", "unix://")),
            "REDIS_URL",
            self.redis_url,
            "must start with redis://, rediss:// or unix://",
        )
        check(not any(c.isspace() for c in self.redis_username), "REDIS_USERNAME", self.redis_username, "no whitespace")
        for name, path in (
            ("REDIS_PASSWORD_FILE", self.redis_password_file),
            ("REDIS_SENTINEL_PASSWORD_FILE", self.redis_sentinel_password_file),
        ):
            if path:
                try:
                    read_password(path)
                except (OSError, ValueError) as exc:
                    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    raise SettingsError(f"{name}={path!r}: cannot use it: {why}") from None
        check(len(self.redis_sentinels) <= 16, "REDIS_SENTINELS", self.redis_sentinels, "at most 16 Sentinels")
        check(
            bool(_NAME_RE.fullmatch(self.redis_master_name)),
            "REDIS_MASTER_NAME",
            self.redis_master_name,
            "1-64 of A-Z a-z 0-9 . _ -",
        )
        check(
            not any(c.isspace() for c in self.redis_sentinel_username),
            "REDIS_SENTINEL_USERNAME",
            self.redis_sentinel_username,
            "no whitespace",
        )
        check(
            0.05 <= self.redis_retry_max_seconds <= 300,
            "REDIS_RETRY_MAX_SECONDS",
            self.redis_retry_max_seconds,
            "must be 0.05-300 (seconds)",
        )
        # A channel name follows the same rule as a source: it is shown in pages and names Redis keys.
        # Pushed samples travel on `<CHANNEL>:push` (numcast.push.stream), which must follow the rule too.
        check(valid_source(stream.channel(self.channel)), "CHANNEL", self.channel, f"{SOURCE_RULE}, with `:push` added")
        check(
            valid_source(self.alerts_channel)
            and self.alerts_channel not in (self.channel, stream.channel(self.channel)),
            "ALERTS_CHANNEL",
            self.alerts_channel,
            f"{SOURCE_RULE}, not the same as CHANNEL or its push channel",
        )
        check(self.log_level in LOG_LEVELS, "LOG_LEVEL", self.log_level, f"one of {', '.join(LOG_LEVELS)}")
        check(self.async_mode in ASYNC_MODES, "ASYNC_MODE", self.async_mode, f"one of {', '.join(ASYNC_MODES)}")
        check(
            16 <= self.http_max_connections <= 100_000,
            "HTTP_MAX_CONNECTIONS",
            self.http_max_connections,
            "must be 16-100000",
        )
        check(
            0.5 <= self.http_header_timeout <= 300,
            "HTTP_HEADER_TIMEOUT",
            self.http_header_timeout,
            "must be 0.5-300 (seconds)",
        )
        check(
            self.admin_port != getattr(self, "port", None),
            "ADMIN_PORT",
            self.admin_port,
            "must differ from PORT",
        )
        check(
            0.5 <= self.http_body_timeout <= 300,
            "HTTP_BODY_TIMEOUT",
            self.http_body_timeout,
            "must be 0.5-300 (seconds)",
        )
        for f in dataclasses.fields(self):
            if f.metadata["parse"] is parse_int and f.name.endswith("port"):
                port = getattr(self, f.name)
                check(0 < port < 65536, f.metadata["env"], port, "must be a TCP port, 1-65535")


def check_name(value: str, name: str) -> None:
    """Names shown in pages and Redis keys: short, no markup."""
    check(bool(_NAME_RE.fullmatch(value)), name, value, "1-64 of A-Z a-z 0-9 . _ -")


def markdown_table(cls: type, without: type | None = None) -> str:
    """docs/configuration.md's table of env vars for `cls`, leaving out the fields of `without` (a base class)."""
    skip = {f.name for f in dataclasses.fields(without)} if without else set()
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(str(item) for item in default)
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        rows.append(f"| `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(rows)
