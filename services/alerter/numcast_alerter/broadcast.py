"""The alerts channel and the active set: each change is PUBLISHed and applied to a Redis hash in one transaction.

Workers subscribe to the channel for changes and read the hash (HGETALL) after every (re)subscription, so one
that was away gets the current set at once. The control page reads the hash and the rule states key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis

from numcast import alerts
from numcast.logs import Throttled
from numcast.redis_conn import CONNECTION_ERRORS, RETRY_MAX_SECONDS, Backoff, Endpoint, client, describe, redact
from numcast_alerter.backlog import Backlog

log = logging.getLogger(__name__)

RULES_TTL_SECONDS = 10  # the rule states vanish this long after the alerter stops renewing them
QUEUE = 1000  # changes held while Redis is down


class Broadcaster:
    """Delivers alert changes to Redis in order of arrival (newest per alert), reconnecting with capped backoff."""

    def __init__(self, url: Endpoint, alerts_channel: str, counters: dict, on_snapshot: Callable) -> None:
        """`on_snapshot(entries)` gets the hash as found at the first connection: what a previous run left."""
        self.url, self.alerts_channel = url, alerts_channel
        self.key, self.rules_key = alerts.key(alerts_channel), alerts.rules_key(alerts_channel)
        self.counters, self.on_snapshot = counters, on_snapshot
        self.backlog = Backlog(QUEUE)
        self.active: set[str] = set()  # fingerprints in the hash
        self.synced = False
        self.rules_json = ""  # renewed by the service; written at most once a second
        self.stopping = threading.Event()
        self._warn = Throttled(log, interval=30.0)
        self.retry_max = RETRY_MAX_SECONDS  # the backoff's cap (REDIS_RETRY_MAX_SECONDS)

    def send(self, message: dict) -> None:
        """Publish `message` and apply it to the active set, as soon as Redis allows."""
        if not self.backlog.put(message["fingerprint"], message):
            self.counters["dropped"].labels("redis").inc()

    def run(self) -> None:
        """Deliver until stopped."""
        backoff = Backoff(cap=self.retry_max)
        conn = None
        rules_due = 0.0
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = client(self.url, timeout=2.0)
                if not self.synced:
                    self._sync(conn)
                self._deliver(conn)
                if self.rules_json and time.monotonic() >= rules_due:
                    conn.set(self.rules_key, self.rules_json, ex=RULES_TTL_SECONDS)
                    rules_due = time.monotonic() + 1.0
                backoff.reset()
                self.backlog.ready.wait(1.0)
            except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                self.counters["errors"].labels("redis").inc()
                self._warn.warning("redis", "cannot deliver alerts url=%s error=%s", redact(self.url), describe(exc))
                if conn is not None:
                    conn.close()
                conn = None
                self.stopping.wait(backoff.next())
        if conn is not None:
            conn.close()

    def _sync(self, conn: redis.Redis) -> None:
        entries = {}
        for fp, raw in conn.hgetall(self.key).items():
            try:
                entries[fp.decode()] = alerts.decode(raw)
            except alerts.AlertError as exc:
                log.warning("dropping an invalid entry of %s fingerprint=%r error=%s", self.key, fp[:20], exc)
                conn.hdel(self.key, fp)
        self.active = set(entries)
        self.synced = True
        log.info("active alerts in redis key=%s count=%d", self.key, len(entries))
        self.on_snapshot(entries)

    def _deliver(self, conn: redis.Redis) -> None:
        self.backlog.done([])  # nothing waiting: the next wait sleeps until a change (or a second) comes
        while batch := self.backlog.peek(100):
            pipe = conn.pipeline(transaction=True)  # MULTI: a reader of the hash never misses a published change
            delivered = []
            for fp, message in batch:
                if message["status"] == "firing":
                    if fp not in self.active and len(self.active) >= alerts.MAX_ACTIVE:
                        self.counters["dropped"].labels("redis").inc()
                        log.error(
                            "too many active alerts, dropping alertname=%s limit=%d",
                            message["alertname"],
                            alerts.MAX_ACTIVE,
                        )
                        continue
                    pipe.hset(self.key, fp, alerts.encode(message))
                else:
                    pipe.hdel(self.key, fp)
                pipe.publish(self.alerts_channel, alerts.encode(message))
                delivered.append(message)
            pipe.execute()
            self.backlog.done(batch)
            for message in delivered:
                if message["status"] == "firing":
                    self.active.add(message["fingerprint"])
                else:
                    self.active.discard(message["fingerprint"])
                self.counters["published"].labels(message["origin"]).inc()

    def set_rules(self, rules: list[dict]) -> None:
        """The rule states the control page shows; written with the next delivery."""
        self.rules_json = json.dumps({"rules": rules}, separators=(",", ":"))
