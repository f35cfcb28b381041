"""The replay log: a Redis Stream beside the channel that holds its recent envelopes, so a worker recovers
what pub/sub did not deliver to it.

An entry's id is `<run>-<seq>` and its one field, `envelope`, is the message exactly as published. `run` is the
Unix millisecond at which the publishing run started (or just above the log's newest id, so ids only grow),
and `seq` is the envelope's own. So "everything after seq S of source X" is `XRANGE key (<run of X>-S +`, and
the run of X is found by walking back from the newest entry one run at a time. Nothing else is kept: when
Redis restarts empty, the log restarts with it, and what it lost shows up as seqs that never come (gaps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import redis

from numcast.envelope import EnvelopeError, decode

FIELD = "envelope"
MAX_RUNS_WALKED = 100  # runs (control-plane restarts) looked through for a source a reader knows

# One atomic step per batch: the PUBLISH of each envelope and its XADD, with no round trip of their own.
# KEYS[1]: the log. ARGV: channel, MAXLEN, the run's source, the run's start (Unix ms), lines per message (N > 0:
# the batch's envelopes go out N to a message, one per line, as on the push channel; 0: one message each), then
# the envelopes. A seq at or below the newest entry of this run was published and logged already (a batch sent again
# after a lost reply, or after a reconnect): it is skipped. Nothing else is: a log that cannot be written never
# stops the PUBLISH.
PUBLISH_SCRIPT = """
local log, channel, maxlen, source = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local run, last = tonumber(ARGV[4]), -1
local per_message, lines = tonumber(ARGV[5]), {}
local newest = redis.pcall('XREVRANGE', log, '+', '-', 'COUNT', 1)
local usable = not newest.err
if usable and newest[1] then
  local ms, seq = string.match(newest[1][1], '^(%d+)-(%d+)$')
  if string.match(newest[1][2][2] or '', '"source":%s*"([^"]*)"') == source then
    run, last = tonumber(ms), tonumber(seq)
  elseif tonumber(ms) >= run then
    run = tonumber(ms) + 1
  end
end
local function send(envelope)
  if per_message == 0 then
    redis.call('PUBLISH', channel, envelope)
    return
  end
  lines[#lines + 1] = envelope
  if #lines == per_message then
    redis.call('PUBLISH', channel, table.concat(lines, '\\n'))
    lines = {}
  end
end
local failed = 0
for i = 6, #ARGV do
  local envelope = ARGV[i]
  local seq = string.match(envelope, '"seq":%s*(%d+)')
  if not usable or not seq then
    send(envelope)
    failed = failed + 1
  elseif tonumber(seq) > last then
    send(envelope)
    local id = string.format('%d-%s', run, seq)
    local added = redis.pcall('XADD', log, 'MAXLEN', '~', maxlen, id, 'envelope', envelope)
    if added.err then failed = failed + 1 else last = tonumber(seq) end
  end
end
if #lines > 0 then redis.call('PUBLISH', channel, table.concat(lines, '\\n')) end
return failed
"""


def key(channel: str) -> str:
    """The log of `channel`: `numbers:log` for the channel `numbers`."""
    return f"{channel}:log"


class Writer:
    """Publishes batches of envelopes with their log entries (EVALSHA, loading the script when Redis lacks it)."""

    def __init__(
        self, conn: redis.Redis, channel: str, maxlen: int, source: str, run: int, per_message: int = 0
    ) -> None:
        """`per_message` > 0: envelopes go out that many to a message, one per line (the push channel)."""
        self.conn, self.channel, self.maxlen, self.source, self.run = conn, channel, maxlen, source, run
        self.per_message = per_message
        self.key = key(channel)
        self._script = conn.register_script(PUBLISH_SCRIPT)

    def publish(self, lines: list[str]) -> int:
        """PUBLISH and log the lines of one run the log lacks, atomically; return how many could not be logged."""
        args = [self.channel, self.maxlen, self.source, self.run, self.per_message, *lines]
        return self._script(keys=[self.key], args=args)


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
