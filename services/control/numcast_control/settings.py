"""The control-plane's settings."""

from __future__ import annotations

import dataclasses

from numcast import auth
from numcast.alerts import MAX_LABEL_VALUE, MAX_LABELS
from numcast.envelope import SOURCE_RULE, valid_source
from numcast.push import stream
from numcast.settings import Common, SettingsError, check, env, parse_float, parse_int, parse_targets

MAX_RATE_HZ = 5000.0
MAX_ABS_VALUE = 1e12
# What new_source adds to SOURCE_PREFIX (a dash and six hex digits), and the push stream's source after that.
SOURCE_SUFFIX = "-xxxxxx" + stream.SOURCE_SUFFIX
MAX_STREAM_MAXLEN = 10_000_000
PUSH_IN_FLIGHT = stream.SEND_LINES  # pushed samples the push output sends at once (numcast_control.outputs)


@dataclasses.dataclass(frozen=True)
class ControlSettings(Common):
    """Env vars of `numcast control`."""

    port: int = env("PORT", 8000, "HTTP port of the control page and API.", parse_int)
    rate_hz: float = env("RATE_HZ", 1.0, f"Values published per second, > 0 and <= {MAX_RATE_HZ:g}.", parse_float)
    value_min: float = env("VALUE_MIN", 0.0, "Smallest value generated.", parse_float)
    value_max: float = env("VALUE_MAX", 100.0, "Largest value generated.", parse_float)
    tcp_mirror_targets: tuple = env(
        "TCP_MIRROR_TARGETS",
        (),
        "Comma-separated `host:port` of workers' TCP ports that also get every envelope.",
        parse_targets,
    )
    mirror_key_file: str = env(
        "MIRROR_KEY_FILE",
        "",
        "File of the TCP mirror's keys (a mounted Secret; one per line: the first signs each line; read again when "
        "it changes). Required with `TCP_MIRROR_TARGETS`.",
        secret=True,
    )
    mirror_queue: int = env(
        "MIRROR_QUEUE",
        10000,
        "Envelopes queued per output (Redis, each TCP target) before the oldest drop.",
        parse_int,
    )
    source_prefix: str = env(
        "SOURCE_PREFIX", "control", "Start of the envelope's `source`; a random suffix names each run.", str
    )
    stream_maxlen: int = env(
        "STREAM_MAXLEN",
        100_000,
        "Envelopes kept in the replay log `<CHANNEL>:log` (trimmed with `MAXLEN ~`: a few more); 0: no log.",
        parse_int,
    )
    control_token: str = env(
        "CONTROL_TOKEN",
        "",
        "Bearer token every change (`PATCH /api/config`) must send; empty: changes from loopback clients only.",
        secret=True,
    )
    control_token_file: str = env(
        "CONTROL_TOKEN_FILE",
        "",
        "File holding that token (a mounted Secret), instead of `CONTROL_TOKEN`; read again when it changes.",
        secret=True,
    )

    push_token: str = env(
        "PUSH_TOKEN",
        "",
        "Token a pod must send to push samples (Bearer, `Token` or the Basic password; see docs/push.md); not "
        "`CONTROL_TOKEN`'s. Empty: pushes from loopback clients only.",
        secret=True,
    )
    push_token_file: str = env(
        "PUSH_TOKEN_FILE",
        "",
        "File holding that token (a mounted Secret), instead of `PUSH_TOKEN`; read again when it changes.",
        secret=True,
    )
    push_max_body_bytes: int = env(
        "PUSH_MAX_BODY_BYTES",
        8 * 1024 * 1024,
        "Largest push body, and largest once gunzipped; a larger one gets 413.",
        parse_int,
    )
    push_max_samples: int = env("PUSH_MAX_SAMPLES", 10_000, "Samples in one push; more gets 413.", parse_int)
    push_max_labels: int = env(
        "PUSH_MAX_LABELS", 16, f"Labels of one pushed series, at most {MAX_LABELS}; more gets 400.", parse_int
    )
    push_max_label_value: int = env(
        "PUSH_MAX_LABEL_VALUE",
        256,
        f"Characters of one label value, at most {MAX_LABEL_VALUE}; longer gets 400.",
        parse_int,
    )
    push_max_series: int = env(
        "PUSH_MAX_SERIES",
        10_000,
        "Distinct pushed series (name and label set) known at once; a push that would add one more gets 400.",
        parse_int,
    )
    push_series_ttl: float = env(
        "PUSH_SERIES_TTL",
        3600.0,
        "Seconds a pushed series is kept after its last sample (served to Prometheus, counted in "
        "`PUSH_MAX_SERIES`); 0: until its group is deleted, as Pushgateway does.",
        parse_float,
    )
    push_rate: float = env(
        "PUSH_RATE",
        200_000.0,
        "Samples per second each push token may send (a second's worth at once); more gets 429 with Retry-After.",
        parse_float,
    )
    lease_seconds: float = env(
        "LEASE_SECONDS",
        0.0,
        "With two or more control-plane replicas: the length of the generator's lease in Redis; only its holder "
        "generates, and another replica takes over within this long after the holder dies (see "
        "docs/operations.md). 0: no lease, this replica always generates.",
        parse_float,
    )
    push_queue: int = env(
        "PUSH_QUEUE",
        100_000,
        "Pushed samples waiting for Redis; a push that does not fit gets 503 with Retry-After, nothing is dropped.",
        parse_int,
    )

    def validate(self) -> None:
        """Raise SettingsError for the first setting that is out of range."""
        super().validate()
        check(0 < self.rate_hz <= MAX_RATE_HZ, "RATE_HZ", self.rate_hz, f"must be > 0 and <= {MAX_RATE_HZ:g}")
        for name, value in (("VALUE_MIN", self.value_min), ("VALUE_MAX", self.value_max)):
            check(abs(value) <= MAX_ABS_VALUE, name, value, f"must be within +-{MAX_ABS_VALUE:g}")
        check(self.value_min <= self.value_max, "VALUE_MIN", self.value_min, "must be <= VALUE_MAX")
        check(
            bool(self.mirror_key_file) or not self.tcp_mirror_targets,
            "MIRROR_KEY_FILE",
            self.mirror_key_file,
            "must name the mirror's key file when TCP_MIRROR_TARGETS is set: the workers refuse unsigned lines",
        )
        check(1 <= self.mirror_queue <= 1_000_000, "MIRROR_QUEUE", self.mirror_queue, "must be 1-1000000")
        check(
            valid_source(self.source_prefix + SOURCE_SUFFIX),
            "SOURCE_PREFIX",
            self.source_prefix,
            f"with the {len(SOURCE_SUFFIX)} characters of a run's suffix, the source must be {SOURCE_RULE}",
        )
        check(
            0 <= self.stream_maxlen <= MAX_STREAM_MAXLEN,
            "STREAM_MAXLEN",
            self.stream_maxlen,
            f"must be 0-{MAX_STREAM_MAXLEN}",
        )
        check(
            self.lease_seconds == 0 or 0.5 <= self.lease_seconds <= 60,
            "LEASE_SECONDS",
            self.lease_seconds,
            "must be 0 (no lease) or 0.5-60 (seconds)",
        )
        auth.check_settings(self.control_token, self.control_token_file)
        auth.check_settings(self.push_token, self.push_token_file, auth.PUSH_VARS)
        if self.push_token and self.push_token == self.control_token:
            raise SettingsError("PUSH_TOKEN: must differ from CONTROL_TOKEN: a pod that pushes must not steer")
        limits = (
            ("PUSH_MAX_BODY_BYTES", self.push_max_body_bytes, 1024, 256 * 1024 * 1024),
            ("PUSH_MAX_SAMPLES", self.push_max_samples, 1, 1_000_000),
            ("PUSH_MAX_LABELS", self.push_max_labels, 0, MAX_LABELS),
            ("PUSH_MAX_LABEL_VALUE", self.push_max_label_value, 1, MAX_LABEL_VALUE),
            ("PUSH_MAX_SERIES", self.push_max_series, 1, 10_000_000),
            ("PUSH_SERIES_TTL", self.push_series_ttl, 0, 365 * 86400),
            ("PUSH_RATE", self.push_rate, 1, 100_000_000),
        )
        for name, value, low, high in limits:
            check(low <= value <= high, name, value, f"must be {low:g}-{high:g}")
        # Room is kept for one batch in flight to Redis, which a failed send puts back (numcast_control.outputs).
        check(
            self.push_max_samples + PUSH_IN_FLIGHT <= self.push_queue <= 10_000_000,
            "PUSH_QUEUE",
            self.push_queue,
            f"must be at least PUSH_MAX_SAMPLES + {PUSH_IN_FLIGHT}, at most 10000000",
        )
        check(self.push_rate >= self.push_max_samples, "PUSH_RATE", self.push_rate, "must be >= PUSH_MAX_SAMPLES")
