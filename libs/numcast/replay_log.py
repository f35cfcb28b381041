"""The replay log: a Redis Stream beside the channel that holds its recent envelopes, so a worker recovers
what pub/sub did not deliver to it.

An entry's id is `<run>-<seq>` and its one field, `envelope`, is the message exactly as published. `run` is the
Unix millisecond at which the publishing run started (or just above the log's newest id, so ids only grow),
and `seq` is the envelope's own. So "everything after seq S of source X" is `XRANGE key (<run of X>-S +`, and
the run of X is found by walking back from the newest entry one run at a time. Nothing else is kept: when
Redis restarts empty, the log restarts with it, and what it lost shows up as seqs that never come (gaps).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import redis

from numcast.envelope import EnvelopeError, decode

FIELD = "envelope"
MAX_RUNS_WALKED = 100  # runs (control-plane restarts) looked through for a source a reader knows

MAX_ATTEMPTS = 5  # transactions a batch tries while another writer keeps changing the log under it
SEQ = re.compile(r'"seq":\s*(\d+)')  # the envelope's seq, read without decoding it


def key(channel: str) -> str:
    """The log of `channel`: `numbers:log` for the channel `numbers`."""
    return f"{channel}:log"


class Writer:
    """Publishes batches of envelopes with their log entries: PUBLISH and XADD in one MULTI/EXEC.

    The log's newest entry is read under WATCH, so the transaction runs only if nothing wrote the log in between
    (else it is tried again). A seq at or below the newest entry of this run was published and logged already (a
    batch sent again after a lost reply, or after a reconnect): it is skipped. Nothing else is: a log that cannot
    be written (not a stream, Redis out of memory) never stops the PUBLISH; the lines are counted as not logged.
    No scripting: a Redis user that may run Lua may hang Redis (docs/security.md).
    """

    def __init__(
        self, conn: redis.Redis, channel: str, maxlen: int, source: str, run: int, per_message: int = 0
    ) -> None:
        """`per_message` > 0: envelopes go out that many to a message, one per line (the push channel)."""
        self.conn, self.channel, self.maxlen, self.source, self.run = conn, channel, maxlen, source, run
        self.per_message = per_message
        self.key = key(channel)

    def publish(self, lines: list[str]) -> int:
        """PUBLISH and log the lines of one run the log lacks, atomically; return how many could not be logged."""
        with self.conn.pipeline(transaction=True) as pipe:
            for _ in range(MAX_ATTEMPTS):
                try:
                    return self._attempt(pipe, lines)
                except redis.WatchError:
                    continue  # another writer logged in between: read the newest entry again
                except redis.ResponseError:  # refused as a whole (EXECABORT: out of memory): publish only
                    break
        return self._publish_only(lines)

    def _attempt(self, pipe, lines: list[str]) -> int:
        pipe.watch(self.key)
        run, last, usable = self.run, -1, True
        try:
            newest = pipe.xrevrange(self.key, "+", "-", count=1)
        except redis.ResponseError:  # not a stream: publish, log nothing
            newest, usable = [], False
        if newest:
            ms, _, seq = newest[0][0].decode().partition("-")
            if _source(_envelope(newest[0])) == self.source:
                run, last = int(ms), int(seq)
            elif int(ms) >= run:
                run = int(ms) + 1
        pipe.multi()
        sent, logged = [], 0
        for line in lines:
            found = SEQ.search(line.decode() if isinstance(line, bytes) else line)
            if not usable or found is None:
                sent.append(line)
            elif int(found.group(1)) > last:
                sent.append(line)
                last = int(found.group(1))
                pipe.xadd(self.key, {FIELD: line}, id=f"{run}-{last}", maxlen=self.maxlen, approximate=True)
                logged += 1
        for message in self._messages(sent):
            pipe.publish(self.channel, message)
        results = pipe.execute(raise_on_error=False)
        refused = sum(isinstance(result, redis.ResponseError) for result in results[:logged])
        return len(sent) - logged + refused

    def _publish_only(self, lines: list[str]) -> int:
        pipe = self.conn.pipeline(transaction=False)
        for message in self._messages(lines):
            pipe.publish(self.channel, message)
        pipe.execute()
        return len(lines)

    def _messages(self, lines: list[str]) -> list[str]:
        if not self.per_message:
            return lines
        return ["\n".join(lines[i : i + self.per_message]) for i in range(0, len(lines), self.per_message)]


def _envelope(entry) -> bytes:
    """The message of one XRANGE entry."""
    return entry[1].get(FIELD.encode(), b"")


def _run(entry) -> int:
    """The run part of one entry's id."""
    return int(entry[0].partition(b"-")[0])


def _source(raw: bytes) -> str | None:
    try:
        return decode(raw).source
    except EnvelopeError:
        return None  # not ours: someone else wrote to the log


class Reader:
    """Reads the log of `channel` for a worker that wants what it missed."""

    def __init__(self, conn: redis.Redis, channel: str) -> None:
        self.conn, self.key = conn, key(channel)

    def start_after(self, resume: Callable[[str], int | None]) -> str | None:
        """The id to read after: `<run>-<resume(source)>` for the newest run whose source `resume` knows.

        None when the log holds no run the reader knows (or nothing at all).
        """
        below = "+"
        for _ in range(MAX_RUNS_WALKED):
            newest = self.conn.xrevrange(self.key, max=below, min="-", count=1)
            if not newest:
                return None
            run, source = _run(newest[0]), _source(_envelope(newest[0]))
            after = resume(source) if source is not None else None
            if after is not None:
                return f"{run}-{after}"
            below = f"({run}-0"  # the newest entry of the run before this one
        return None

    def pages(self, after: str, count: int) -> Iterator[list[bytes]]:
        """The envelopes after id `after` ("-": from the oldest), oldest first, `count` per page, to the end."""
        start = after if after == "-" else f"({after}"
        while True:
            page = self.conn.xrange(self.key, min=start, max="+", count=count)
            if page:
                yield [_envelope(entry) for entry in page]
            if len(page) < count:
                return
            start = "(" + page[-1][0].decode()

    def newest(self, count: int, page: int) -> list[bytes]:
        """The last `count` envelopes, oldest first, read backwards `page` at a time."""
        found: list[bytes] = []
        below = "+"
        while len(found) < count:
            wanted = min(page, count - len(found))
            batch = self.conn.xrevrange(self.key, max=below, min="-", count=wanted)
            found.extend(_envelope(entry) for entry in batch)
            if len(batch) < wanted:
                break
            below = "(" + batch[-1][0].decode()
        found.reverse()
        return found
