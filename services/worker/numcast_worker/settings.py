"""The worker's settings."""

from __future__ import annotations

import dataclasses

from numcast.doors import HEADROOM
from numcast.settings import (
    Common,
    check,
    check_name,
    default_host_name,
    env,
    parse_float,
    parse_int,
    parse_origins,
)


@dataclasses.dataclass(frozen=True)
class WorkerSettings(Common):
    """Env vars of `numcast worker`."""

    port: int = env("PORT", 8080, "HTTP port of the dashboard, API and WebSocket.", parse_int)
    tcp_port: int = env("TCP_PORT", 9000, "TCP port for the control-plane's newline-delimited mirror.", parse_int)
    tcp_host: str = env(
        "TCP_HOST", "127.0.0.1", "Address `TCP_PORT` binds to: loopback unless set (Kubernetes sets `0.0.0.0`)."
    )
    tcp_idle_seconds: float = env(
        "TCP_IDLE_SECONDS",
        5.0,
        "A mirror connection that sends no complete line (envelope or empty heartbeat) this long is closed.",
        parse_float,
    )
    mirror_key_file: str = env(
        "MIRROR_KEY_FILE",
        "",
        "File of the TCP mirror's keys (a mounted Secret; one per line, the first signs, any verifies; read again "
        "when it changes). Empty: the mirror port does not listen, and a warning says so.",
        secret=True,
    )
    worker_name: str = env("WORKER_NAME", "", "Name shown on the dashboard; empty means the host (pod) name.")
    sink_file: str = env("SINK_FILE", "numbers.jsonl", "File that gets every accepted envelope as a JSON line.")
    sink_max_bytes: int = env(
        "SINK_MAX_BYTES", 10 * 1024 * 1024, "Size at which the sink file rotates to `.1`, `.2`...", parse_int
    )
    sink_backups: int = env("SINK_BACKUPS", 3, "Rotated sink files kept; older ones are deleted.", parse_int)
    sink_buffer_bytes: int = env(
        "SINK_BUFFER_BYTES",
        8 * 1024 * 1024,
        "Lines kept in memory while the sink file fails (full disk...), written once it works; the oldest go beyond.",
        parse_int,
    )
    sink_sync_seconds: float = env(
        "SINK_SYNC_SECONDS",
        0.0,
        "0: every write of the sink file (each 0.5 s, or 64 KiB) ends with fdatasync, so a power loss loses nothing "
        "written; more: at most one fdatasync per this many seconds, trading up to that much on a power loss for "
        "less disk work (see docs/operations.md).",
        parse_float,
    )
    seq_max_skip: int = env(
        "SEQ_MAX_SKIP",
        64,
        "Seqs a live value may skip past its source's settled position; one that skips more is held apart until "
        "the replay log (or continuity) confirms it.",
        parse_int,
    )
    seq_grace_seconds: float = env(
        "SEQ_GRACE_SECONDS",
        2.0,
        "A missing seq may still come by the other path (Redis, the mirror, the replay log) this long before it is "
        "counted as a gap.",
        parse_float,
    )
    seq_stale_seconds: float = env(
        "SEQ_STALE_SECONDS",
        5.0,
        "A seq jump the replay log cannot confirm is taken on continuity only once its source's own line has been "
        "silent this long.",
        parse_float,
    )
    history_size: int = env(
        "HISTORY_SIZE", 1000, "Recent envelopes of each label set kept in memory for `/api/history`.", parse_int
    )
    history_total: int = env(
        "HISTORY_TOTAL",
        100_000,
        "Recent envelopes kept for `/api/history`, all label sets together; past it each is cut to an equal share.",
        parse_int,
    )
    max_series: int = env(
        "MAX_SERIES",
        10_000,
        "Pushed label sets listed in `/api/series` and kept in the history at once; the samples of more are still "
        "filed and sent to browsers, and counted in `numcast_series_unlisted_total`.",
        parse_int,
    )
    series_ttl: float = env(
        "SERIES_TTL",
        3600.0,
        "Seconds a pushed label set stays listed (and its history kept) after its last sample; 0: for ever.",
        parse_float,
    )
    max_subscriptions: int = env(
        "MAX_SUBSCRIPTIONS",
        256,
        "Distinct subscriptions (sets of series and matchers) browsers hold at once; a `subscribe` that would add "
        "one more gets `subscribe_error`.",
        parse_int,
    )
    subscribe_max_series: int = env(
        "SUBSCRIBE_MAX_SERIES", 16, "Series one browser may watch (named in one `subscribe`).", parse_int
    )
    cors_origins: tuple = env(
        "CORS_ORIGINS",
        (),
        "Extra browser origins allowed to open the WebSocket; the page's own always is.",
        parse_origins,
    )
    client_queue: int = env(
        "CLIENT_QUEUE",
        2000,
        "Envelopes a slow browser may fall behind before the oldest are dropped for it.",
        parse_int,
    )
    batch_ms: int = env(
        "BATCH_MS",
        50,
        "The longest a value is held back to be batched for browsers, in ms; an idle worker sends at once.",
        parse_int,
    )
    max_tcp_clients: int = env(
        "MAX_TCP_CLIENTS",
        16,
        "Concurrent connections on `TCP_PORT`; when full, a new one replaces the oldest that sent no envelope yet.",
        parse_int,
    )
    max_browsers: int = env(
        "MAX_BROWSERS",
        1000,
        "Browsers (Socket.IO connections) served at once; more are refused with 503 and counted.",
        parse_int,
    )

    def __post_init__(self) -> None:
        if not self.worker_name:
            object.__setattr__(self, "worker_name", default_host_name()[:64])

    def validate(self) -> None:
        """Raise SettingsError for the first setting that is out of range."""
        super().validate()
        check_name(self.worker_name, "WORKER_NAME")
        check(bool(self.sink_file), "SINK_FILE", self.sink_file, "must name a file")
        check(self.sink_max_bytes >= 4096, "SINK_MAX_BYTES", self.sink_max_bytes, "must be >= 4096")
        check(0 <= self.sink_backups <= 100, "SINK_BACKUPS", self.sink_backups, "must be 0-100")
        check(
            1 << 20 <= self.sink_buffer_bytes <= 1 << 30,
            "SINK_BUFFER_BYTES",
            self.sink_buffer_bytes,
            "must be 1048576-1073741824 (1 MiB-1 GiB)",
        )
        check(0 <= self.sink_sync_seconds <= 60, "SINK_SYNC_SECONDS", self.sink_sync_seconds, "must be 0-60")
        check(0 <= self.seq_max_skip <= 4000, "SEQ_MAX_SKIP", self.seq_max_skip, "must be 0-4000 (below the window)")
        check(0.1 <= self.seq_grace_seconds <= 60, "SEQ_GRACE_SECONDS", self.seq_grace_seconds, "must be 0.1-60")
        check(0.5 <= self.seq_stale_seconds <= 300, "SEQ_STALE_SECONDS", self.seq_stale_seconds, "must be 0.5-300")
        check(1 <= self.history_size <= 100_000, "HISTORY_SIZE", self.history_size, "must be 1-100000")
        check(
            max(self.history_size, self.max_series) <= self.history_total <= 10_000_000,
            "HISTORY_TOTAL",
            self.history_total,
            f"must be from max(HISTORY_SIZE, MAX_SERIES) = {max(self.history_size, self.max_series)} to 10000000",
        )
        check(1 <= self.max_series <= 1_000_000, "MAX_SERIES", self.max_series, "must be 1-1000000")
        check(0 <= self.series_ttl <= 365 * 86400, "SERIES_TTL", self.series_ttl, "must be 0-31536000")
        check(1 <= self.max_subscriptions <= 20_000, "MAX_SUBSCRIPTIONS", self.max_subscriptions, "must be 1-20000")
        check(1 <= self.subscribe_max_series <= 256, "SUBSCRIBE_MAX_SERIES", self.subscribe_max_series, "must be 1-256")
        check(10 <= self.client_queue <= 100_000, "CLIENT_QUEUE", self.client_queue, "must be 10-100000")
        check(10 <= self.batch_ms <= 1000, "BATCH_MS", self.batch_ms, "must be 10-1000")
        check(bool(self.tcp_host), "TCP_HOST", self.tcp_host, "must be an address, such as 127.0.0.1 or 0.0.0.0")
        check(1 <= self.tcp_idle_seconds <= 300, "TCP_IDLE_SECONDS", self.tcp_idle_seconds, "must be 1-300")
        check(1 <= self.max_tcp_clients <= 1024, "MAX_TCP_CLIENTS", self.max_tcp_clients, "must be 1-1024")
        check(1 <= self.max_browsers <= 20_000, "MAX_BROWSERS", self.max_browsers, "must be 1-20000")
        check(
            self.http_max_connections >= self.max_browsers + HEADROOM,
            "HTTP_MAX_CONNECTIONS",
            self.http_max_connections,
            f"must be at least MAX_BROWSERS + {HEADROOM} = {self.max_browsers + HEADROOM}",
        )
