"""Alertmanager's v2 API as Prometheus uses it: changes at once, firing alerts re-sent, each with an `endsAt` lease.

An HA set of Alertmanagers gossips silences and the notification log, not alerts, so, as Prometheus does, the
alerter sends every alert to each of them: one client per Alertmanager, each with its own queue and backoff, so
that one that is down neither delays nor drops what the others get.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

from numcast import alerts, parsing
from numcast.logs import Throttled
from numcast.redis_conn import Backoff, describe
from numcast_alerter.backlog import Backlog

log = logging.getLogger(__name__)

BATCH = 64  # alerts per POST
TIMEOUT_SECONDS = 5.0
MAX_LIST_BYTES = 16 * 1024 * 1024  # GET /api/v2/alerts: thousands of alerts; anything larger is refused
# Every state but resolved: a silenced or inhibited alert is still held by Alertmanager, and still firing.
LIST_QUERY = "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true"


class AlertmanagerClient:
    """Sends every change of a stream alert to `POST {url}/api/v2/alerts` of one Alertmanager, with capped backoff.

    A firing alert is sent with `endsAt` = now + `lease`, and re-sent every `resend` seconds while it fires,
    so Alertmanager keeps it as long as we do and resolves it by itself if this process dies. A resolved one
    is sent with its `endsAt` (the moment it resolved). While Alertmanager is unreachable the changes wait in
    a bounded backlog (one entry per alert), and evaluation goes on.
    """

    def __init__(
        self,
        base: str,
        resend: float,
        lease: float,
        limit: int,
        metrics: dict,
        external_url: str,
        backoff_max: float,
    ) -> None:
        """`metrics`: the counters shared by the service and the families labelled by url (sent, errors, queued)."""
        self.base, self.url = base, base + "/api/v2/alerts"
        self.resend, self.lease, self.backoff_max = resend, lease, backoff_max
        self.generator_url = external_url + "/api/alerts" if external_url else ""
        self.backlog = Backlog(limit)
        self.counters = metrics
        self.sent_total = metrics["am_sent"].labels(base)
        self.errors = metrics["am_errors"].labels(base)
        metrics["am_queued"].labels(base).set_function(lambda: len(self.backlog))
        self.connected: bool | None = None  # unknown until the first attempt
        self.sent = 0
        # fingerprint -> last delivery of its firing state. Written by the sender and, under the service's lock,
        # by resend_due/update: single dict operations, atomic in CPython, and never iterated.
        self._sent_at: dict[str, float] = {}
        self.stopping = threading.Event()
        self._warn = Throttled(log, interval=30.0)

    def update(self, message: dict) -> None:
        """A stream alert changed state (firing or resolved): send it soon."""
        if message["status"] == "resolved":
            self._sent_at.pop(message["fingerprint"], None)
        if not self.backlog.put(message["fingerprint"], message):
            self.counters["dropped"].labels("alertmanager").inc()

    def resend_due(self, firing: list[dict], now: float) -> None:
        """Queue again every firing alert last delivered `resend` seconds ago or more."""
        for message in firing:
            if now - self._sent_at.get(message["fingerprint"], -self.resend) >= self.resend:
                self._sent_at[message["fingerprint"]] = now  # queued: not again before the next interval
                self.update(message)

    def run(self) -> None:
        """Deliver the backlog until stopped."""
        log.info("sending alerts to %s resend=%gs lease=%gs", self.url, self.resend, self.lease)
        backoff = Backoff(base=min(0.2, self.backoff_max), cap=self.backoff_max)
        while not self.stopping.is_set():
            if not self.backlog.ready.wait(0.5):
                continue
            batch = self.backlog.peek(BATCH)
            if not batch:
                self.backlog.done([])
                continue
            try:
                self._post([message for _, message in batch])
            except _Rejected as exc:
                # Alertmanager read the alerts and refused them: sending them again would not help.
                self.backlog.done(batch)
                self.counters["dropped"].labels("alertmanager").inc(len(batch))
                log.error("alertmanager refused alerts url=%s count=%d error=%s", self.url, len(batch), exc)
                continue
            except OSError as exc:
                self.errors.inc()
                if self.connected is not False:
                    log.warning("alertmanager unreachable url=%s error=%s; holding alerts", self.url, describe(exc))
                else:
                    self._warn.warning(
                        "down", "alertmanager still unreachable url=%s error=%s", self.url, describe(exc)
                    )
                self.connected = False
                self.stopping.wait(backoff.next())
                continue
            if self.connected is False:
                log.info("alertmanager reachable again url=%s", self.url)
            self.connected = True
            backoff.reset()
            self.backlog.done(batch)
            self.sent += len(batch)
            self.sent_total.inc(len(batch))
            now = time.time()
            for _, message in batch:
                if message["status"] == "firing":
                    self._sent_at[message["fingerprint"]] = now

    def fingerprints(self) -> set[str] | None:
        """The fingerprints of every alert this Alertmanager holds, or None (counted, logged) when it cannot say."""
        request = urllib.request.Request(self.base + LIST_QUERY, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                raw = response.read(MAX_LIST_BYTES + 1)
            if len(raw) > MAX_LIST_BYTES:
                raise ValueError(f"the list is larger than {MAX_LIST_BYTES} bytes")
            listed = parsing.loads(raw)
            if not isinstance(listed, list):
                raise ValueError("the answer is not a JSON list")
        except (OSError, ValueError) as exc:
            self.errors.inc()
            self._warn.warning("list", "cannot list the alerts of url=%s error=%s", self.base, describe(exc))
            return None
        return {a["fingerprint"] for a in listed if isinstance(a, dict) and isinstance(a.get("fingerprint"), str)}

    def status(self) -> dict:
        """What /api/alerts says about delivery."""
        return {
            "url": self.base,
            "connected": self.connected,
            "queued": len(self.backlog),
            "sent": self.sent,
            "dropped": self.backlog.dropped,
            "resend_seconds": self.resend,
            "lease_seconds": self.lease,
        }

    def _post(self, messages: list[dict]) -> None:
        now = time.time()
        body = json.dumps([self._alert(message, now) for message in messages]).encode()
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode(errors="replace")
            if 400 <= exc.code < 500 and exc.code != 429:
                raise _Rejected(f"HTTP {exc.code}: {detail}") from None
            raise OSError(f"HTTP {exc.code}: {detail}") from None

    def _alert(self, message: dict, now: float) -> dict:
        alert = {
            "labels": {"alertname": message["alertname"], **message["labels"]},
            "annotations": message["annotations"],
            "startsAt": message["startsAt"],
            # Firing: a lease counted from this send, renewed by the next re-send (Prometheus' rule).
            "endsAt": message["endsAt"] or alerts.rfc3339(now + self.lease),
        }
        if self.generator_url:
            alert["generatorURL"] = self.generator_url
        return alert


class _Rejected(Exception):
    """Alertmanager answered 4xx: the alerts themselves are wrong."""
