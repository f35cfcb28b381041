"""Catching up from the replay logs (the channel's and the push channel's): what pub/sub did not deliver, read
back from Redis through the same ingest."""

from __future__ import annotations

import logging
import threading
import time

import redis

from numcast.push import stream
from numcast.redis_conn import CONNECTION_ERRORS, client, describe
from numcast.replay_log import Reader

log = logging.getLogger(__name__)

PAGE = 1000  # entries per read: a page goes through the ingest in one batch, then live values may run
PAUSE_SECONDS = 0.1  # between two catch-ups, so a stream of skipped seqs does not keep the log busy


class Replay:
    """Runs one catch-up at a time, each time one is asked for: after a (re)subscription, or a skipped seq."""

    def __init__(self, settings, ingest) -> None:
        self.settings, self.ingest = settings, ingest
        self.channel = settings.channel
        # Each log with the sources it holds: the generator's, and the push stream's (numcast.push.stream).
        self.logs = (
            (self.channel, lambda source: not stream.is_source(source)),
            (stream.channel(self.channel), stream.is_source),
        )
        self.runs = 0  # catch-ups finished
        self.errors = 0
        self.caught_up = False  # a catch-up asked for by a subscription has ended (read, or failed trying)
        self.last_error = ""
        self.stopping = threading.Event()
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._holds = 0  # catch-ups asked for with live values held back, not started yet
        self._conn = None

    def request(self, hold: bool = False) -> None:
        """Ask for a catch-up; with `hold`, live values wait until it has run (a (re)subscription)."""
        if hold:
            self.ingest.hold()
            with self._lock:
                self._holds += 1
        self._wanted.set()

    def stop(self) -> None:
        """Ask `run()` to return."""
        self.stopping.set()
        self._wanted.set()

    def run(self) -> None:
        """Catch up each time it is asked, until stopped."""
        while not self.stopping.is_set():
            self._wanted.wait()
            self._wanted.clear()
            with self._lock:
                holds, self._holds = self._holds, 0
            try:
                if holds:
                    # After a lost subscription our connection is suspect too: a primary that stopped answering
                    # (a failover) would cost a whole timeout while live values wait.
                    self._close()
                if not self.stopping.is_set():
                    self._catch_up_or_retry()
            except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
                self.errors += 1
                self.last_error = describe(exc)
                log.warning("catch-up failed channel=%s error=%s", self.channel, self.last_error)
                self._close()
            finally:
                for _ in range(holds):
                    self.ingest.release()
                if holds:
                    self.caught_up = True
            self.stopping.wait(PAUSE_SECONDS)
        self._close()

    def _catch_up_or_retry(self) -> None:
        try:
            self.catch_up()
        except CONNECTION_ERRORS:
            self._close()  # a connection from before a Redis restart fails once; a fresh one may not
            self.catch_up()

    def catch_up(self) -> int:
        """Read what the logs hold after what this worker has; return how many entries were read."""
        read = sum(self._catch_up(channel, owns) for channel, owns in self.logs)
        self.runs += 1
        return read

    def _catch_up(self, channel: str, owns) -> int:
        started = time.monotonic()
        reader = Reader(self._client(), channel)
        resume = {source: seq for source, seq in self.ingest.resume_points().items() if owns(source)}
        after = reader.start_after(resume.get)
        read = 0
        if after is None and not resume:
            # A worker with nothing of this log, not even in its file: its history, from the newest entries.
            newest = reader.newest(self.settings.history_size, PAGE)
            for start in range(0, len(newest), PAGE):
                read += self._ingest(newest[start : start + PAGE])
        else:
            # The log holds no run this worker knows: every entry in it came after what it has.
            for page in reader.pages(after or "-", PAGE):
                read += self._ingest(page)
        if read:
            took = time.monotonic() - started
            log.info("caught up channel=%s after=%s read=%d took=%.3fs", channel, after, read, took)
        return read

    def highest(self) -> dict[str, int] | None:
        """{source: the highest seq the replay logs hold of it}; None when they cannot be read (Redis down...)."""
        try:
            found: dict[str, int] = {}
            for channel, _ in self.logs:
                found.update(Reader(self._client(), channel).highest())
            return found
        except (*CONNECTION_ERRORS, redis.ResponseError) as exc:
            log.warning("replay log unreadable at start channel=%s error=%s", self.channel, describe(exc))
            self._close()
            return None

    def _ingest(self, page: list[bytes]) -> int:
        self.ingest.accept_batch(page, "replay")
        time.sleep(0)  # under eventlet, let the live path and HTTP run between pages
        return len(page)

    def _client(self):
        if self._conn is None:
            self._conn = client(self.settings.redis)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
