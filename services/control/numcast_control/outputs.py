"""Where envelopes go: the Redis channel (and its replay log), and the TCP mirror to each worker. Each has its
own bounded queue."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque

import redis

from numcast import replay_log
from numcast.logs import Throttled
from numcast.mirror_key import MirrorConnection, MirrorKeys
from numcast.push import stream
from numcast.redis_conn import (
    CONNECTION_ERRORS,
    CREDENTIAL_ERRORS,
    CREDENTIALS_HINT,
    RETRY_MAX_SECONDS,
    Backoff,
    Endpoint,
    client,
    describe,
    redact,
)
from numcast_control.outbox import Outbox

log = logging.getLogger(__name__)

BATCH = 500  # envelopes sent in one pipeline or one write
# Sent again after a reconnect: Redis may have acknowledged them and died before they left for any subscriber, or
# before they reached the replica Sentinel then promoted (replication is asynchronous). The script compares them
# with the newest entry of this run in the log and publishes and logs only those the log lacks, so a Redis that
# kept its data sees nothing twice, and a new primary gets the tail it missed. What was sent in the last
# RESEND_SECONDS is kept, at most RESEND_MAX_LINES envelopes: longer than a failover takes (docs/operations.md).
RESEND_SECONDS = 30.0
RESEND_MAX_LINES = 50_000


class Output:
    """Drains its outbox to a destination; on failure keeps the batch, backs off (capped) and reconnects."""

    path = "?"
    batch = BATCH

    def __init__(self, name: str, queue_limit: int, metrics: dict) -> None:
        self.name = name
        self.outbox = Outbox(queue_limit, metrics["dropped"].labels(path=self.path).inc)
        self._published = metrics["published"].labels(path=self.path)
        self._errors = metrics["errors"].labels(path=self.path)
        self._reconnects = metrics["reconnects"].labels(path=self.path)
        self.retry_max = RETRY_MAX_SECONDS  # the backoff's cap (REDIS_RETRY_MAX_SECONDS)
        self.connected = False
        self.refused = ""  # why the destination refused our credentials or a command; empty once it works
        self.sent = 0
        self.stopping = threading.Event()

    def put(self, line: str) -> None:
        """Queue one envelope line; never blocks."""
        self.outbox.put(line)

    def put_many(self, lines: list[str]) -> None:
        """Queue envelope lines in order; never blocks."""
        self.outbox.put_many(lines)

    def stop(self) -> None:
        """Ask `run()` to return, waking it if it waits for envelopes."""
        self.stopping.set()
        self.outbox.wake()

    def status(self) -> dict:
        """What /api/status shows of this output."""
        return {
            "name": self.name,
            "path": self.path,
            "connected": self.connected,
            "sent": self.sent,
            "queued": len(self.outbox),
            "dropped": self.outbox.dropped,
            **({"refused": self.refused} if self.refused else {}),
        }

    def run(self) -> None:
        """Send until stopped."""
        backoff = Backoff(cap=self.retry_max)
        while not self.stopping.is_set():
            batch = self.outbox.take(self.batch, timeout=0.5)
            try:
                self.send(batch)
            except CONNECTION_ERRORS as exc:
                self.outbox.requeue(batch)
                self._errors.inc()
                self.refused = describe(exc) if isinstance(exc, CREDENTIAL_ERRORS) else ""
                if self.connected or backoff.attempt % 10 == 0:  # the first failure, then every tenth retry
                    log.warning(
                        "%s output %s name=%s attempt=%d error=%s%s",
                        self.path,
                        "lost" if self.connected else "unreachable",
                        self.name,
                        backoff.attempt + 1,
                        describe(exc),
                        f" ({CREDENTIALS_HINT})" if self.refused else "",
                    )
                self.connected = False
                self.close()
                self.stopping.wait(backoff.next())
                continue
            if not self.connected:
                log.info("%s output connected name=%s", self.path, self.name)
                if backoff.attempt:
                    self._reconnects.inc()
            self.connected = True
            self.refused = ""
            backoff.reset()
            self._count(batch)
        self._flush()
        self.close()

    def _count(self, batch: list) -> None:
        if batch:
            self.sent += len(batch)
            self._published.inc(len(batch))

    def _flush(self) -> None:
        """At shutdown, one last attempt to deliver what is queued."""
        batch = self.outbox.take(len(self.outbox), timeout=0)
        if batch and self.connected:
            try:
                self.send(batch)
                self._count(batch)
            except CONNECTION_ERRORS:
                log.warning("%s output could not flush name=%s lost=%d", self.path, self.name, len(batch))

    def send(self, batch: list[str]) -> None:
        """Deliver `batch` (possibly empty: then only check the connection) or raise a connection error."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection, if any."""


class RedisOutput(Output):
    """PUBLISHes each envelope on the channel and, with a `writer`, adds it to the replay log in the same step."""

    path = "redis"

    def __init__(
        self,
        url: Endpoint | str,
        channel: str,
        queue_limit: int,
        metrics: dict,
        writer: dict | None = None,
        framed: bool = False,
    ) -> None:
        """`writer`: the replay log's {"maxlen", "source", "run"}; None publishes only.

        `framed`: each batch goes out as one message of envelope lines (the push channel, numcast.push.stream).
        """
        super().__init__(redact(url), queue_limit, metrics)
        self.channel, self.framed = channel, framed
        self._client = client(url)
        per_message = stream.MAX_LINES if framed else 0
        self.writer = replay_log.Writer(self._client, channel, **writer, per_message=per_message) if writer else None
        self._log_errors = metrics["log_errors"]
        self._warn = Throttled(log)
        self._recent: deque[tuple[float, list[str]]] = deque()  # (when sent, batch), oldest first
        self._recent_lines = 0
        self._resend = False

    def send(self, batch: list[str]) -> None:
        if not batch:
            self._client.ping()
            return
        if self.writer is not None:
            lines = [*(line for _, sent in self._recent for line in sent), *batch] if self._resend else batch
            try:
                failed = self.writer.publish(lines)
            except redis.ResponseError as exc:  # the transaction refused (an ACL without WATCH...): publish only
                failed = len(batch)
                self._publish(batch)
                key = self.writer.key
                self._warn.warning("refused", "replay log write refused key=%s error=%s", key, describe(exc))
            if failed:
                self._log_errors.inc(failed)
                self._warn.warning("log", "envelopes published but not logged key=%s count=%d", self.writer.key, failed)
            self._remember(batch)
            self._resend = False
            return
        self._publish(batch)

    def _remember(self, batch: list[str]) -> None:
        """Keep `batch` for a resend; forget what is older than RESEND_SECONDS or beyond RESEND_MAX_LINES."""
        now = time.monotonic()
        self._recent.append((now, batch))
        self._recent_lines += len(batch)
        while self._recent and (
            self._recent_lines - len(self._recent[0][1]) >= RESEND_MAX_LINES
            or self._recent[0][0] < now - RESEND_SECONDS
        ):
            self._recent_lines -= len(self._recent.popleft()[1])

    def _publish(self, batch: list[str]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for line in stream.frame(batch) if self.framed else batch:
            pipe.publish(self.channel, line)
        pipe.execute()

    def close(self) -> None:
        self._client.connection_pool.disconnect()
        self._resend = True  # what Redis acknowledged last may have died with it


class PushOutput(RedisOutput):
    """Pushed samples to their own channel and log: a batch is one message of envelope lines (numcast.push.stream)."""

    path = "push"
    batch = stream.SEND_LINES

    def __init__(self, url: Endpoint | str, channel: str, queue_limit: int, metrics: dict, writer: dict | None) -> None:
        super().__init__(url, channel, queue_limit, metrics, writer, framed=True)
        self.name = f"{self.name} {channel}"


class TcpMirror(Output):
    """Writes each envelope as one signed line over a persistent TCP connection (numcast.mirror_key)."""

    path = "tcp"

    def __init__(self, host: str, port: int, keys: MirrorKeys, queue_limit: int, metrics: dict) -> None:
        super().__init__(f"{host}:{port}", queue_limit, metrics)
        self.address, self.keys = (host, port), keys
        self._conn: MirrorConnection | None = None

    def send(self, batch: list[str]) -> None:
        if self._conn is None:
            self._conn = MirrorConnection(self.address, self.keys, timeout=2.0)  # connects and reads the challenge
            self._conn.sock.settimeout(5.0)  # a worker that stops reading must not hold the batch forever
            if not batch:
                batch = [""]  # a first line at once: signed, it proves the connection is the control-plane's
        if batch:
            self._conn.send([line.encode() for line in batch])
        elif _peer_closed(self._conn.sock):
            raise ConnectionResetError("peer closed the connection")
        else:
            self._conn.send([b""])  # a heartbeat: the worker closes a connection silent for TCP_IDLE_SECONDS

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _peer_closed(sock: socket.socket) -> bool:
    """True when the peer has closed its end (a read would return EOF), without blocking."""
    try:
        sock.setblocking(False)
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, TimeoutError):
        return False
    finally:
        sock.settimeout(5.0)
