"""The worker's view of the active alerts: changes from the alerts channel, the full set from the alerter's hash."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from numcast import alerts
from numcast.logs import Throttled
from numcast.redis_conn import CONNECTION_ERRORS, Endpoint, client, describe

log = logging.getLogger(__name__)

SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2, "info": 3}
# Alerts in each `alerts` event to browsers, most severe first: a page lists 50 and counts the rest (`total`), and
# every change sends the whole event to every browser, so a rule with many label sets firing must not cost each
# browser up to MAX_ACTIVE alerts (8 MB at 16 KiB each) per change.
BROWSER_ALERTS = 100


class ActiveAlerts:
    """A bounded map fingerprint -> message of the firing alerts; `on_change()` runs after every change."""

    def __init__(self, url: Endpoint, alerts_channel: str, stats, on_change: Callable[[], None]) -> None:
        self.url, self.key = url, alerts.key(alerts_channel)
        self.stats, self.on_change = stats, on_change
        self.limit = alerts.MAX_ACTIVE
        self.synced = False  # the full set was read since the last (re)subscription
        self.failed = False  # the last read failed: the worker tries again until one succeeds
        self._active: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._warn = Throttled(log)

    def __len__(self) -> int:
        return len(self._active)

    def accept_batch(self, batch: list[bytes]) -> None:
        """Apply changes from the channel, oldest first; invalid ones are rejected, counted and logged."""
        changed = False
        with self._lock:
            for raw in batch:
                try:
                    message = alerts.decode(raw)
                except alerts.AlertError as exc:
                    self.stats.rejected["alerts", exc.reason] += 1
                    self._warn.warning(
                        f"alerts:{exc.reason}",
                        "alert message rejected reason=%s detail=%s sample=%r",
                        exc.reason,
                        exc,
                        bytes(raw[:80]),
                    )
                    continue
                changed = self._apply(message) or changed
        if changed:
            self.on_change()

    def sync(self) -> None:
        """Replace the set with the alerter's hash; on failure keep the old one and say it is not synced."""
        conn = client(self.url, timeout=1.0)  # short: this runs in the subscribe loop
        try:
            entries = conn.hgetall(self.key)
        except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
            self.synced, self.failed = False, True
            log.warning("cannot read the active alerts key=%s error=%s", self.key, describe(exc))
            self.on_change()
            return
        finally:
            conn.close()
        active: dict[str, dict] = {}
        for fp, raw in list(entries.items())[: self.limit]:
            try:
                message = alerts.decode(raw)
            except alerts.AlertError as exc:
                self.stats.rejected["alerts", exc.reason] += 1
                continue
            if message["status"] == "firing" and message["fingerprint"] == fp.decode(errors="replace"):
                active[message["fingerprint"]] = message
        with self._lock:
            self._active = active
            self.synced, self.failed = True, False
        log.info("active alerts read key=%s count=%d", self.key, len(active))
        self.on_change()

    def payload(self, limit: int | None = None) -> dict:
        """The active alerts, most severe first (the first `limit` of them), how many there are, and if synced.

        /api/alerts serves them all; browsers get the first BROWSER_ALERTS as the `alerts` event.
        """
        with self._lock:
            items = sorted(
                self._active.values(),
                key=lambda m: (SEVERITY_ORDER.get(m["labels"].get("severity", ""), 4), m["startsAt"], m["alertname"]),
            )
        return {"alerts": items[:limit], "total": len(items), "synced": self.synced}

    def to_browsers(self) -> dict:
        """The `alerts` event: the first BROWSER_ALERTS alerts and the total."""
        return self.payload(BROWSER_ALERTS)

    def _apply(self, message: dict) -> bool:
        fp = message["fingerprint"]
        if message["status"] == "resolved":
            return self._active.pop(fp, None) is not None
        if fp not in self._active and len(self._active) >= self.limit:
            self.stats.rejected["alerts", "too_many"] += 1
            return False
        self._active[fp] = message
        return True
