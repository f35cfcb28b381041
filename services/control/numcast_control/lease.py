"""The generator's lease: of all control-plane replicas, the one holding a key in Redis generates.

The lease lives in the Redis the generator publishes to, on purpose: a replica that cannot reach that Redis could
not publish what it generated anyway, so it is the one to stand down, and the one that can reach it takes over.
Taking it is `SET key me NX PX`; renewing is WATCH, GET, MULTI, SET PX, EXEC, so a holder never extends a lease
another replica has taken since. A holder that could not renew stops generating when its lease runs out on its own
clock, before anyone else may take it.

Two generators for a moment (a failover lost the key, a paused holder wakes up) are two sources: each value
carries its own source and seq, workers keep a seq per source, and the replay log has a run per source. Nothing is
corrupted; the charts show both for that moment.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from numcast.redis_conn import CONNECTION_ERRORS, Backoff, Endpoint, client, describe, redact

log = logging.getLogger(__name__)


def key(channel: str) -> str:
    """The lease of the generator publishing on `channel`: `numbers:generator`."""
    return f"{channel}:generator"


class Lease:
    """Holds or waits for the lease; `held` is set while this replica may generate."""

    def __init__(self, url: Endpoint, channel: str, holder: str, seconds: float, changes) -> None:
        """`changes`: the counter of leases taken and lost, labelled by `change`."""
        self.url, self.key, self.holder, self.seconds = url, key(channel), holder, seconds
        self.held = threading.Event()
        self.owner = ""  # the holder Redis last named (this replica's source, another's, or empty)
        self.stopping = threading.Event()
        self._expires = 0.0  # monotonic time after which a lease not renewed is no longer ours
        self._changes = changes

    def stop(self) -> None:
        """Ask `run()` to return; the lease is given back if held."""
        self.stopping.set()

    def run(self) -> None:
        """Take or renew the lease every third of its length until stopped."""
        backoff = Backoff(cap=self.seconds / 3)
        conn = client(self.url, timeout=min(2.0, self.seconds / 3))
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                try:
                    self._round(conn, started)
                    backoff.reset()
                    wait = self.seconds / 3
                except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                    conn.connection_pool.disconnect()
                    log.debug("lease round failed key=%s url=%s error=%s", self.key, redact(self.url), describe(exc))
                    wait = backoff.next()
                if self.held.is_set() and time.monotonic() >= self._expires:
                    self._set(False, "not renewed in time")
                self.stopping.wait(wait)
            self._give_back(conn)
        finally:
            conn.close()

    def _round(self, conn: redis.Redis, started: float) -> None:
        ms = int(self.seconds * 1000)
        if conn.set(self.key, self.holder, nx=True, px=ms):
            self.owner = self.holder
            self._expires = started + self.seconds
            self._set(True, "free")
            return
        with conn.pipeline(transaction=True) as pipe:
            pipe.watch(self.key)
            owner = pipe.get(self.key)
            self.owner = owner.decode(errors="replace") if owner else ""
            if self.owner != self.holder:
                pipe.unwatch()
                self._set(False, f"held by {self.owner or 'nobody'}")
                return
            pipe.multi()
            pipe.set(self.key, self.holder, px=ms)
            try:
                pipe.execute()
            except redis.WatchError:  # taken by another between GET and EXEC
                self._set(False, "taken while renewing")
                return
        self._expires = started + self.seconds
        self._set(True, "renewed")

    def _set(self, held: bool, why: str) -> None:
        if held == self.held.is_set():
            return
        if held:
            self.held.set()
        else:
            self.held.clear()
        self._changes.labels("taken" if held else "lost").inc()
        log.info("generator lease %s key=%s holder=%s (%s)", "taken" if held else "lost", self.key, self.holder, why)

    def _give_back(self, conn: redis.Redis) -> None:
        """At shutdown: delete the key if it is still ours, so the other replica takes over at once."""
        if not self.held.is_set():
            return
        self.held.clear()
        try:
            with conn.pipeline(transaction=True) as pipe:
                pipe.watch(self.key)
                if pipe.get(self.key) == self.holder.encode():
                    pipe.multi()
                    pipe.delete(self.key)
                    pipe.execute()
        except (*CONNECTION_ERRORS, redis.ResponseError, redis.WatchError) as exc:
            log.info("lease not given back key=%s error=%s (it runs out by itself)", self.key, describe(exc))
