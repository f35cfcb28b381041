"""The replay log: a Redis Stream beside the channel that holds its recent envelopes, so a worker recovers
what pub/sub did not deliver to it.

An entry's id is `<run>-<seq>` and its one field, `envelope`, is the message exactly as published. `run` is the
Unix millisecond at which the publishing run started (or just above the log's newest id, so ids only grow),
and `seq` is the envelope's own. So "everything after seq S of source X" is `XRANGE key (<run of X>-S +`, and
the run of X is found by walking back from the newest entry one run at a time. Nothing else is kept: when
Redis restarts empty, the log restarts with it, and what it lost shows up as seqs that never come (gaps).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator

import redis

from numcast.envelope import EnvelopeError, decode

FIELD = "envelope"
MAX_RUNS_WALKED = 100  # runs (control-plane restarts) looked through for a source a reader knows

MAX_ATTEMPTS = 20  # transactions a batch tries while another writer keeps changing the log under it
SEQ = re.compile(rb'"seq":\s*(\d+)')  # the envelope's seq, read without decoding it


def _bulks(*parts: bytes) -> bytes:
    return b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


def _command(*parts: bytes) -> bytes:
    """One command in the Redis protocol."""
    return b"*%d\r\n" % len(parts) + _bulks(*parts)


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
        self._key = self.key.encode()
        # The fixed start of each XADD (8 parts: then its id, FIELD and the envelope) and PUBLISH (3: the message).
        self._xadd = b"*8\r\n" + _bulks(b"XADD", self._key, b"MAXLEN", b"~", str(maxlen).encode())
        self._publish = b"*3\r\n" + _bulks(b"PUBLISH", channel.encode())
        self._field = _bulks(FIELD.encode())

    def publish(self, lines: list[str]) -> int:
        """PUBLISH and log the lines of one run the log lacks, atomically; return how many could not be logged."""
        encoded = [line if isinstance(line, bytes) else line.encode() for line in lines]
        pool = self.conn.connection_pool
        connection = pool.get_connection()
        try:
            for attempt in range(MAX_ATTEMPTS):
                failed = self._attempt(connection, encoded)
                if failed is not None:
                    return failed
                time.sleep(random.uniform(0, 0.001) * (attempt + 1))  # out of step with the other writer
        except redis.ResponseError:  # refused as a whole (EXECABORT: out of memory; an ACL without WATCH)
            connection.disconnect()  # no WATCH or MULTI state left on it
        except BaseException:
            connection.disconnect()  # a reply may be left unread on it
            raise
        finally:
            pool.release(connection)
        return self._publish_only(lines)

    def _attempt(self, connection, lines: list[bytes]) -> int | None:
        """One WATCH, read, MULTI ... EXEC; None when another writer changed the log in between."""
        newest_entry = _command(b"XREVRANGE", self._key, b"+", b"-", b"COUNT", b"1")
        connection.send_packed_command([_command(b"WATCH", self._key) + newest_entry])
        try:
            connection.read_response()
        finally:
            try:
                newest = connection.read_response()  # read even after a refused WATCH: no reply is left behind
            except redis.ResponseError:  # not a stream: publish, log nothing
                newest = None
        run, last = self.run, -1
        if newest:
            entry_id, fields = newest[0]
            ms, _, seq = entry_id.decode().partition("-")
            if _source(fields[1] if fields[:1] == [FIELD.encode()] else b"") == self.source:
                run, last = int(ms), int(seq)
            elif int(ms) >= run:
                run = int(ms) + 1
        # Packed by hand: redis-py's command building costs more than Redis's work here (bench/replay.py cost).
        out, sent, logged = [b"*1\r\n$5\r\nMULTI\r\n"], [], 0
        for line in lines:
            found = SEQ.search(line)
            if newest is None or found is None:
                sent.append(line)
            elif int(found.group(1)) > last:
                sent.append(line)
                last = int(found.group(1))
                entry = b"%d-%d" % (run, last)
                out.append(
                    b"%s$%d\r\n%s\r\n%s$%d\r\n%s\r\n" % (self._xadd, len(entry), entry, self._field, len(line), line)
                )
                logged += 1
        for message in self._messages(sent):
            out.append(b"%s$%d\r\n%s\r\n" % (self._publish, len(message), message))
        out.append(b"*1\r\n$4\r\nEXEC\r\n")
        connection.send_packed_command([b"".join(out)])
        refused = None
        for _ in range(len(out) - 1):  # +OK, then +QUEUED (or why not) for each command
            try:
                connection.read_response()
            except redis.ResponseError as exc:
                refused = refused or exc
        try:
            results = connection.read_response()
        except redis.exceptions.ExecAbortError:
            raise refused or redis.ResponseError("EXECABORT") from None
        if results is None:
            return None  # WATCH: the log changed
        return len(sent) - logged + sum(isinstance(result, redis.ResponseError) for result in results[:logged])

    def _publish_only(self, lines: list[str]) -> int:
        pipe = self.conn.pipeline(transaction=False)
        for message in self._messages(lines):
            pipe.publish(self.channel, message)
        pipe.execute()
        return len(lines)

    def _messages(self, lines: list) -> list:
        if not self.per_message:
            return lines
        join = b"\n".join if lines and isinstance(lines[0], bytes) else "\n".join
        return [join(lines[i : i + self.per_message]) for i in range(0, len(lines), self.per_message)]


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

    def highest(self) -> dict[str, int]:
        """{source: the highest seq the log holds of it}, for the newest MAX_RUNS_WALKED runs."""
        found: dict[str, int] = {}
        below = "+"
        for _ in range(MAX_RUNS_WALKED):
            newest = self.conn.xrevrange(self.key, max=below, min="-", count=1)
            if not newest:
                break
            run, source = _run(newest[0]), _source(_envelope(newest[0]))
            if source is not None:
                found.setdefault(source, int(newest[0][0].partition(b"-")[2]))
            below = f"({run}-0"
        return found

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
