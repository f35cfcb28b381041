"""The alerts channel and the active set: each change is PUBLISHed and applied to a Redis hash in one transaction.

Workers subscribe to the channel for changes and read the hash (HGETALL) after every (re)subscription, so one
that was away gets the current set at once. The control page reads the hash and the rule states key.

The shipped Redis keeps nothing on disk: after a restart (or a failover to a replica that missed the last
writes) the hash is empty while the alerts still fire. So the broadcaster keeps the whole set it wants in the
hash, and writes it back, in one transaction that also publishes every alert, after each connection error and
whenever the rule-states key it renews every second turns out to be gone. The key is the one sure sign: redis-py's
pool replaces a connection the server closed without raising, so a restart between two commands shows no error.
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
RULES_EVERY_SECONDS = 1.0
QUEUE = 1000  # changes held while Redis is down


class Broadcaster:
    """Delivers alert changes to Redis in order of arrival (newest per alert), reconnecting with capped backoff."""

    def __init__(self, url: Endpoint, alerts_channel: str, counters: dict, on_snapshot: Callable) -> None:
        """`on_snapshot(entries)` gets the hash as found at the first connection: what a previous run left."""
        self.url, self.alerts_channel = url, alerts_channel
        self.key, self.rules_key = alerts.key(alerts_channel), alerts.rules_key(alerts_channel)
        self.counters, self.on_snapshot = counters, on_snapshot
        self.backlog = Backlog(QUEUE)
        self.wanted: dict[str, dict] = {}  # fingerprint -> firing message: what the hash must hold
        self.active: set[str] = set()  # fingerprints in the hash
        self.adopted = False  # the hash a previous run left was read (once per process)
        self.synced = False  # the hash holds the wanted set, as of the last round
        self.rules_json = json.dumps({"rules": []})  # renewed by the service; written once a second
        self.stopping = threading.Event()
        self._lock = threading.Lock()  # `wanted` and the backlog change together
        self._warn = Throttled(log, interval=30.0)
        self.retry_max = RETRY_MAX_SECONDS  # the backoff's cap (REDIS_RETRY_MAX_SECONDS)

    def send(self, message: dict) -> None:
        """Publish `message` and apply it to the active set, as soon as Redis allows."""
        with self._lock:
            if message["status"] == "firing":
                self.wanted[message["fingerprint"]] = message
            else:
                self.wanted.pop(message["fingerprint"], None)
            if not self.backlog.put(message["fingerprint"], message):
                self.counters["dropped"].labels("redis").inc()

    def hold(self, messages: dict[str, dict]) -> None:
        """Count `messages` (fingerprint -> message, in the hash already) in the wanted set, unless sent since."""
        with self._lock:
            for fp, message in messages.items():
                self.wanted.setdefault(fp, message)

    def run(self) -> None:
        """Deliver until stopped."""
        backoff = Backoff(cap=self.retry_max)
        conn = None
        rules_due = 0.0
        while not self.stopping.is_set():
            try:
                if conn is None:
                    conn = client(self.url, timeout=2.0)
                    if self.adopted:
                        self._rewrite(conn, "reconnected")
                    else:
                        self._adopt(conn)
                    conn.set(self.rules_key, self.rules_json, ex=RULES_TTL_SECONDS)  # from now on, the sign
                    rules_due = time.monotonic() + RULES_EVERY_SECONDS
                self._deliver(conn)
                if time.monotonic() >= rules_due:
                    previous = conn.set(self.rules_key, self.rules_json, ex=RULES_TTL_SECONDS, get=True)
                    if previous is None:  # renewed a second ago, so this Redis lost its data
                        self._rewrite(conn, "the rule states key is gone: Redis restarted empty or failed over")
                    rules_due = time.monotonic() + RULES_EVERY_SECONDS
                self.synced = True
                backoff.reset()
                self.backlog.ready.wait(RULES_EVERY_SECONDS)
            except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                self.synced = False
                self.counters["errors"].labels("redis").inc()
                self._warn.warning("redis", "cannot deliver alerts url=%s error=%s", redact(self.url), describe(exc))
                if conn is not None:
                    conn.close()
                conn = None
                self.stopping.wait(backoff.next())
        if conn is not None:
            conn.close()

    def _adopt(self, conn: redis.Redis) -> None:
        entries = {}
        for fp, raw in conn.hgetall(self.key).items():
            try:
                entries[fp.decode()] = alerts.decode(raw)
            except alerts.AlertError as exc:
                log.warning("dropping an invalid entry of %s fingerprint=%r error=%s", self.key, fp[:20], exc)
                conn.hdel(self.key, fp)
        self.active = set(entries)
        log.info("active alerts in redis key=%s count=%d", self.key, len(entries))
        self.on_snapshot(entries)  # adopts, resolves (queued here) or holds each entry
        self.adopted = True

    def _rewrite(self, conn: redis.Redis, why: str) -> None:
        """Make the hash the wanted set and publish every alert: workers that resubscribed read or hear it."""
        with self._lock:
            wanted = dict(self.wanted)
            queued = self.backlog.peek(len(self.backlog))
        found = conn.hgetall(self.key)
        now = alerts.rfc3339(time.time())
        gone: dict[str, dict | None] = {fp: m for fp, m in queued if m["status"] == "resolved" and fp not in wanted}
        for raw_fp, raw in found.items():
            fp = raw_fp.decode(errors="replace")
            if fp not in wanted and fp not in gone:
                try:
                    gone[fp] = {**alerts.decode(raw), "status": "resolved", "endsAt": now}
                except alerts.AlertError:
                    gone[fp] = None  # invalid: removed, nothing to tell
        kept = list(wanted.items())[: alerts.MAX_ACTIVE]
        if len(wanted) > len(kept):
            self.counters["dropped"].labels("redis").inc(len(wanted) - len(kept))
            log.error("too many active alerts, dropping count=%d limit=%d", len(wanted) - len(kept), alerts.MAX_ACTIVE)
        pipe = conn.pipeline(transaction=True)
        for fp, message in gone.items():
            pipe.hdel(self.key, fp)
            if message is not None:
                pipe.publish(self.alerts_channel, alerts.encode(message))
        for fp, message in kept:
            pipe.hset(self.key, fp, alerts.encode(message))
            pipe.publish(self.alerts_channel, alerts.encode(message))
        pipe.execute()
        self.backlog.done(queued)  # all in the hash now; a change queued meanwhile stays for the next delivery
        self.active = {fp for fp, _ in kept}
        for message in [m for m in gone.values() if m is not None] + [m for _, m in kept]:
            self.counters["published"].labels(message["origin"]).inc()
        log.info("active alerts written back key=%s firing=%d resolved=%d (%s)", self.key, len(kept), len(gone), why)

    def _deliver(self, conn: redis.Redis) -> None:
        self.backlog.done([])  # nothing waiting: the next wait sleeps until a change (or a second) comes
        while batch := self.backlog.peek(100):
            with conn.pipeline(transaction=True) as pipe:  # MULTI: a reader of the hash never misses a change
                # WATCH, then what the hash holds: another alerter replica evaluating the same rules may have
                # written the same change already. It is not written or published twice: the first one stays.
                pipe.watch(self.key)
                found = dict(zip((fp for fp, _ in batch), pipe.hmget(self.key, [fp for fp, _ in batch]), strict=True))
                pipe.multi()
                delivered = []
                for fp, message in batch:
                    if _already(found[fp], message):
                        self.counters["duplicates"].inc()
                        continue
                    if message["status"] == "firing":
                        if fp not in self.active and len(self.active) >= alerts.MAX_ACTIVE:
                            self.counters["dropped"].labels("redis").inc()
                            # A rule with many label sets can fire hundreds at once: one line, with how many followed.
                            self._warn.warning(
                                "too_many",
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
                try:
                    pipe.execute()
                except redis.WatchError:  # the other replica wrote meanwhile: look again
                    continue
            self.backlog.done(batch)
            for fp, message in batch:
                if message["status"] == "firing":
                    self.active.add(fp)
                else:
                    self.active.discard(fp)
            for message in delivered:
                self.counters["published"].labels(message["origin"]).inc()

    def set_rules(self, rules: list[dict]) -> None:
        """The rule states the control page shows; written with the next delivery."""
        self.rules_json = json.dumps({"rules": rules}, separators=(",", ":"))


def _already(raw: bytes | None, message: dict) -> bool:
    """True when the hash's entry `raw` says what `message` says: firing with the same labels and annotations
    (whoever wrote it, whenever it started), or resolved (no entry)."""
    if message["status"] == "resolved":
        return raw is None
    if raw is None:
        return False
    try:
        held = alerts.decode(raw)
    except alerts.AlertError:
        return False
    same = ("labels", "annotations", "origin")
    return held["status"] == "firing" and all(held[name] == message[name] for name in same)
