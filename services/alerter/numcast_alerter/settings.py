"""The alerter's settings."""

from __future__ import annotations

import dataclasses
import re

from numcast import auth
from numcast.settings import Common, check, env, parse_float, parse_int

MAX_RESEND_SECONDS = 3600.0


def parse_url(raw: str) -> str:
    """An http(s) base URL without a trailing slash."""
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", raw):
        raise ValueError("not an http:// or https:// URL")
    return raw.rstrip("/")


@dataclasses.dataclass(frozen=True)
class AlerterSettings(Common):
    """Env vars of `numcast alerter`."""

    port: int = env("PORT", 8090, "HTTP port of the alerter's API, webhook and /metrics.", parse_int)
    alert_rules: str = env(
        "ALERT_RULES", "", "YAML rules file; empty means the built-in defaults. Reloaded on SIGHUP or a change."
    )
    alertmanager_url: str = env(
        "ALERTMANAGER_URL",
        "",
        "Alertmanager to send stream alerts to (`http://alertmanager:9093`); empty: the channel only.",
        parse_url,
    )
    external_url: str = env(
        "EXTERNAL_URL",
        "",
        "The alerter's own address as users reach it; alerts link to `/api/alerts` there.",
        parse_url,
    )
    resend_seconds: float = env(
        "RESEND_SECONDS",
        60.0,
        "How often a firing alert is re-sent to Alertmanager (Prometheus' default is 1m).",
        parse_float,
    )
    alertmanager_queue: int = env(
        "ALERTMANAGER_QUEUE", 1000, "Alert changes held while Alertmanager is unreachable; the oldest drop.", parse_int
    )
    control_token: str = env(
        "CONTROL_TOKEN",
        "",
        "Bearer token Alertmanager's webhook (`POST /api/alertmanager`) must send; empty: loopback clients only.",
        secret=True,
    )
    control_token_file: str = env(
        "CONTROL_TOKEN_FILE", "", "File holding that token (a mounted Secret), instead of `CONTROL_TOKEN`.", secret=True
    )

    def validate(self) -> None:
        """Raise SettingsError for the first setting that is out of range."""
        super().validate()
        check(
            0.1 <= self.resend_seconds <= MAX_RESEND_SECONDS,
            "RESEND_SECONDS",
            self.resend_seconds,
            f"must be 0.1-{MAX_RESEND_SECONDS:g}",
        )
        check(
            10 <= self.alertmanager_queue <= 100_000, "ALERTMANAGER_QUEUE", self.alertmanager_queue, "must be 10-100000"
        )
        auth.check_settings(self.control_token, self.control_token_file)
