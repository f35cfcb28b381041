"""A pub/sub subscriber that stays subscribed: it reconnects, resubscribes and notices when it went deaf."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from numcast.redis_conn import (
    CONNECTION_ERRORS,
    CREDENTIAL_ERRORS,
    CREDENTIALS_HINT,
    Backoff,
    Endpoint,
    client,
    describe,
    redact,
)

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # messages handed over at once; then the loop yields to the rest of the process
# ...or this many bytes: a message of the push channel holds hundreds of envelopes (numcast.push.stream).
MAX_BATCH_BYTES = 512 * 1024


class Deaf(Exception):
    """Nothing, not even a PONG, came back in time: the connection is connected-looking but dead."""


class Subscriber:
    """Calls `handlers[channel](messages)` with each channel's messages, oldest first, while `run()` runs.

    redis-py's PubSub neither reconnects nor resubscribes by itself, and Redis may drop only the
    subscriber's connection (CLIENT KILL, the pubsub output-buffer limit). So the loop pings on the
    subscribed connection and treats silence, not just errors, as a lost connection.
    """

    def __init__(
        self,
        url: Endpoint | str,
        handlers: Mapping[str, Callable[[list[bytes]], object]],
        *,
        ping_interval: float = 1.0,
        deaf_after: float = 3.0,
        on_subscribed: Callable[[bool], object] = lambda resumed: None,
    ) -> None:
        """`on_subscribed(resumed)` runs each time every channel is subscribed; `resumed` after a loss."""
        self.url = url
        self.handlers = {channel.encode(): handler for channel, handler in handlers.items()}
        self.channels = ",".join(handlers)
        self.on_subscribed = on_subscribed
        self.ping_interval, self.deaf_after = ping_interval, deaf_after
        self.subscribed = False
        self.refused = ""  # why Redis refused the credentials or a command (AUTH, NOPERM); empty once subscribed
        self._lost = False
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Ask `run()` to return; it does within a fraction of a second."""
        self.stopping.set()

    def run(self) -> None:
        """Subscribe, listen, and on any connection failure start again after a capped backoff."""
        backoff = Backoff()
        attempt = 0
        while not self.stopping.is_set():
            pubsub = None
            try:
                pubsub = client(self.url, timeout=self.deaf_after).pubsub()
                pubsub.subscribe(*self.handlers)
                self._listen(pubsub, backoff)
            except (*CONNECTION_ERRORS, Deaf) as exc:
                if self.subscribed:
                    attempt = 0
                    log.warning(
                        "subscription lost url=%s channels=%s error=%s", redact(self.url), self.channels, describe(exc)
                    )
                self.subscribed = False
                self._lost = True
                self.refused = describe(exc) if isinstance(exc, CREDENTIAL_ERRORS) else ""
                delay = backoff.next()
                attempt += 1
                if self.refused and (attempt == 1 or attempt % 10 == 0):
                    log.error(
                        "redis refused this user url=%s attempt=%d retry_in=%.2fs error=%s (%s)",
                        redact(self.url),
                        attempt,
                        delay,
                        self.refused,
                        CREDENTIALS_HINT,
                    )
                elif attempt == 1 or attempt % 10 == 0:
                    log.info(
                        "reconnecting url=%s attempt=%d retry_in=%.2fs error=%s",
                        redact(self.url),
                        attempt,
                        delay,
                        describe(exc),
                    )
                self.stopping.wait(delay)
            finally:
                self.subscribed = False
                if pubsub is not None:
                    _close_quietly(pubsub)

    def _listen(self, pubsub, backoff: Backoff) -> None:
        now = time.monotonic()
        heard, next_ping = now, now + self.ping_interval
        pending = set(self.handlers)  # channels whose SUBSCRIBE is not confirmed yet
        while not self.stopping.is_set():
            # parse_response rather than get_message: the raw reply, without a dict per message, and all that
            # is already buffered handed over as one batch per channel.
            batches: dict[bytes, list[bytes]] = {}
            size = volume = 0
            got = False
            response = _next(pubsub, 0.2, self.deaf_after)
            while response is not None:
                got = True
                kind = response[0] if isinstance(response, list) else b"pong"
                if kind == b"message":
                    batches.setdefault(response[1], []).append(response[2])
                    size += 1
                    volume += len(response[2])
                    if size >= MAX_BATCH or volume >= MAX_BATCH_BYTES:
                        break
                elif kind == b"subscribe":
                    pending.discard(response[1])
                    if not pending:
                        self._subscribed(backoff)
                response = _next(pubsub, 0, self.deaf_after)
            now = time.monotonic()
            if got:
                heard = now
            for channel, batch in batches.items():
                self.handlers[channel](batch)
            # Under eventlet a socket that always has data never blocks, so without this nothing else in the
            # process (HTTP, probes, fan-out) would run while a flood lasts. Monkey-patched, sleep(0) is green.
            time.sleep(0)
            if now >= next_ping:
                pubsub.ping()
                next_ping = now + self.ping_interval
            if now - heard > self.deaf_after:
                raise Deaf(f"nothing heard for {now - heard:.1f}s")

    def _subscribed(self, backoff: Backoff) -> None:
        self.subscribed = True
        self.refused = ""
        backoff.reset()
        log.info("subscribed url=%s channels=%s", redact(self.url), self.channels)
        resumed, self._lost = self._lost, False
        self.on_subscribed(resumed)


def _next(pubsub, wait: float, finish: float):
    """The next reply, waiting up to `wait` seconds for one to begin and `finish` for the rest of it; else None.

    redis-py reads a reply with the same timeout it waited with: with 0, a message that has only partly arrived
    (Redis writes a large one in 64 KiB steps) raises TimeoutError, and the connection is given up.
    """
    if not pubsub.connection.can_read(timeout=wait):
        return None
    return pubsub.parse_response(block=False, timeout=finish)


def _close_quietly(pubsub) -> None:
    try:
        pubsub.close()
    except Exception:  # closing a broken connection may fail in many ways; it is going away regardless
        log.debug("error while closing a pubsub connection", exc_info=True)
