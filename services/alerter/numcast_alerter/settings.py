"""The alerter's settings."""

from __future__ import annotations

import dataclasses
import re

from numcast import auth
from numcast.settings import Common, check, env, parse_float, parse_int
from numcast_alerter.rules import MAX_LABEL_SETS

MAX_RESEND_SECONDS = 3600.0
MAX_ALERTMANAGERS = 10


def parse_url(raw: str) -> str:
    """An http(s) base URL without a trailing slash, and without credentials (they would show in logs, /metrics)."""
    if not re.fullmatch(r"https?://[^/\s?#@]+(/[^\s?#]*)?", raw):
        raise ValueError(f"{raw[:100]!r} is not an http:// or https:// URL without user:password@")
    return raw.rstrip("/")


def parse_urls(raw: str) -> tuple[str, ...]:
    """A comma-separated list of http(s) base URLs, each once."""
    urls = tuple(parse_url(part.strip()) for part in raw.split(",") if part.strip())
    if len(set(urls)) != len(urls):
        raise ValueError("a URL is listed twice")
    return urls


@dataclasses.dataclass(frozen=True)
class AlerterSettings(Common):
    """Env vars of `numcast alerter`."""

    port: int = env("PORT", 8090, "HTTP port of the alerter's API, webhook and /metrics.", parse_int)
    alert_rules: str = env(
        "ALERT_RULES", "", "YAML rules file; empty means the built-in defaults. Reloaded on SIGHUP or a change."
    )
    alert_max_label_sets: int = env(
        "ALERT_MAX_LABEL_SETS",
        MAX_LABEL_SETS,
        "Label sets (alert instances) the rules keep at once, every rule together: a new one past it is refused and "
        "counted. Also the most a rule's `max_label_sets` may say.",
        parse_int,
    )
    alertmanager_urls: tuple[str, ...] = env(
        "ALERTMANAGER_URLS",
        (),
        "Alertmanagers to send stream alerts to, comma-separated: every one of an HA set, each gets every alert "
        "(`http://alertmanager-0.alertmanager-peers:9093,…`); empty: the channel only.",
        parse_urls,
    )
    alertmanager_url: str = env(
        "ALERTMANAGER_URL", "", "One Alertmanager, as before `ALERTMANAGER_URLS` (set one of the two).", parse_url
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
        "ALERTMANAGER_QUEUE",
        1000,
        "Alert changes held for each Alertmanager while it is unreachable; the oldest drop.",
        parse_int,
    )
    alertmanager_backoff_max_seconds: float = env(
        "ALERTMANAGER_BACKOFF_MAX_SECONDS",
        5.0,
        "Longest wait between attempts to reach an Alertmanager: once it is back, held alerts get there within this.",
        parse_float,
    )
    alertmanager_sync_seconds: float = env(
        "ALERTMANAGER_SYNC_SECONDS",
        60.0,
        "How often the alerts from the webhook are checked against the Alertmanagers' `GET /api/v2/alerts`: one "
        "they no longer hold leaves the dashboards.",
        parse_float,
    )
    webhook_lease_seconds: float = env(
        "WEBHOOK_LEASE_SECONDS",
        7200.0,
        "Without `ALERTMANAGER_URLS` to ask, how long an alert from the webhook lasts after its last notification; "
        "keep it above Alertmanager's `repeat_interval` (1h in alertmanager.yml).",
        parse_float,
    )
    control_token: str = env(
        "CONTROL_TOKEN",
        "",
        "Bearer token Alertmanager's webhook (`POST /api/alertmanager`) must send; empty: loopback clients only.",
        secret=True,
    )
    control_token_file: str = env(
        "CONTROL_TOKEN_FILE",
        "",
        "File holding that token (a mounted Secret), instead of `CONTROL_TOKEN`; read again when it changes.",
        secret=True,
    )

    @property
    def alertmanagers(self) -> tuple[str, ...]:
        """Every Alertmanager to send to: `ALERTMANAGER_URLS`, or the one `ALERTMANAGER_URL`."""
        return self.alertmanager_urls or ((self.alertmanager_url,) if self.alertmanager_url else ())

    def validate(self) -> None:
        """Raise SettingsError for the first setting that is out of range."""
        super().validate()
        check(
            not (self.alertmanager_urls and self.alertmanager_url),
            "ALERTMANAGER_URL",
            self.alertmanager_url,
            "ALERTMANAGER_URLS is set too: set one of the two",
        )
        check(
            len(self.alertmanager_urls) <= MAX_ALERTMANAGERS,
            "ALERTMANAGER_URLS",
            ",".join(self.alertmanager_urls),
            f"at most {MAX_ALERTMANAGERS} Alertmanagers",
        )
        check(
            0.05 <= self.alertmanager_backoff_max_seconds <= 300,
            "ALERTMANAGER_BACKOFF_MAX_SECONDS",
            self.alertmanager_backoff_max_seconds,
            "must be 0.05-300",
        )
        check(
            0.5 <= self.alertmanager_sync_seconds <= 3600,
            "ALERTMANAGER_SYNC_SECONDS",
            self.alertmanager_sync_seconds,
            "must be 0.5-3600",
        )
        check(
            1 <= self.webhook_lease_seconds <= 7 * 86400,
            "WEBHOOK_LEASE_SECONDS",
            self.webhook_lease_seconds,
            "must be 1-604800 (a week)",
        )
        check(
            0.1 <= self.resend_seconds <= MAX_RESEND_SECONDS,
            "RESEND_SECONDS",
            self.resend_seconds,
            f"must be 0.1-{MAX_RESEND_SECONDS:g}",
        )
        check(
            10 <= self.alertmanager_queue <= 100_000, "ALERTMANAGER_QUEUE", self.alertmanager_queue, "must be 10-100000"
        )
        check(
            1 <= self.alert_max_label_sets <= 1_000_000,
            "ALERT_MAX_LABEL_SETS",
            self.alert_max_label_sets,
            "must be 1-1000000",
        )
        auth.check_settings(self.control_token, self.control_token_file)
