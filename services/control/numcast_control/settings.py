"""The control-plane's settings."""

from __future__ import annotations

import dataclasses

from numcast import auth
from numcast.envelope import SOURCE_RULE, valid_source
from numcast.settings import Common, check, env, parse_float, parse_int, parse_targets

MAX_RATE_HZ = 5000.0
MAX_ABS_VALUE = 1e12
SOURCE_SUFFIX = "-xxxxxx"  # what new_source adds to SOURCE_PREFIX: a dash and six hex digits
MAX_STREAM_MAXLEN = 10_000_000


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

    def validate(self) -> None:
        """Raise SettingsError for the first setting that is out of range."""
        super().validate()
        check(0 < self.rate_hz <= MAX_RATE_HZ, "RATE_HZ", self.rate_hz, f"must be > 0 and <= {MAX_RATE_HZ:g}")
        for name, value in (("VALUE_MIN", self.value_min), ("VALUE_MAX", self.value_max)):
            check(abs(value) <= MAX_ABS_VALUE, name, value, f"must be within +-{MAX_ABS_VALUE:g}")
        check(self.value_min <= self.value_max, "VALUE_MIN", self.value_min, "must be <= VALUE_MAX")
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
        auth.check_settings(self.control_token, self.control_token_file)
