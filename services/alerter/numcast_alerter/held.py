"""The alerts Alertmanager's webhook delivered that still fire, and how the alerter learns that one ended.

Alertmanager tells a webhook that an alert resolved only when it can: an alert silenced before it resolved, an
Alertmanager restarted without its state (an emptyDir), a notification refused, and the resolution never comes.
So a held alert also ends without one: with Alertmanagers to ask (ALERTMANAGER_URLS), when a reconciliation with
their `GET /api/v2/alerts` no longer finds it; without, when its lease runs out (each notification renews it).
"""

from __future__ import annotations

from numcast import alerts


class WebhookAlerts:
    """Fingerprint -> (message, when last delivered) of the firing alerts from Alertmanager; at most `limit`."""

    def __init__(self, lease: float | None, limit: int = alerts.MAX_ACTIVE) -> None:
        """`lease`: seconds a held alert lasts without a new notification; None: until a reconciliation."""
        self.lease, self.limit = lease, limit
        self._held: dict[str, tuple[dict, float]] = {}

    def __len__(self) -> int:
        return len(self._held)

    def accept(self, message: dict, now: float) -> bool:
        """A notification: hold a firing alert (renewing its lease), forget a resolved one; False when full."""
        fp = message["fingerprint"]
        if message["status"] == "resolved":
            self._held.pop(fp, None)
            return True
        if fp not in self._held and len(self._held) >= self.limit:
            return False
        self._held[fp] = (message, now)
        return True

    def expired(self, now: float) -> list[dict]:
        """The held alerts whose lease ran out, as resolved messages; they are forgotten."""
        if self.lease is None:
            return []
        return self._end([fp for fp, (_, at) in self._held.items() if now - at >= self.lease], now)

    def reconcile(self, present: set[str], asked_at: float, now: float) -> list[dict]:
        """The held alerts no Alertmanager holds any more, as resolved messages; they are forgotten.

        Only alerts delivered before `asked_at` (when the question went out) can be missing from the answer:
        one that arrived while the question was on its way is kept.
        """
        return self._end([fp for fp, (_, at) in self._held.items() if fp not in present and at < asked_at], now)

    def _end(self, fingerprints: list[str], now: float) -> list[dict]:
        ended = []
        for fp in fingerprints:
            message, _ = self._held.pop(fp)
            ended.append({**message, "status": "resolved", "endsAt": alerts.rfc3339(now)})
        return ended
