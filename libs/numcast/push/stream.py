"""The push stream: the channel, replay log and source of pushed samples, and how its messages are framed.

Pushed samples travel on a channel of their own, `<CHANNEL>:push`, so that a reader of `CHANNEL` sees exactly
what it saw before samples could be pushed. A message there holds one or more envelopes, one per line: a batch
costs one PUBLISH and one message per subscriber instead of one per sample. The control-plane stamps them with
a source of their own, its generator's source and `.push`, whose seqs count only pushed samples (docs/contract.md).
"""

from __future__ import annotations

from numcast.envelope import MAX_BYTES

CHANNEL_SUFFIX = ":push"
SOURCE_SUFFIX = ".push"
MAX_LINES = 500  # envelopes in one message
# Envelopes the control-plane hands Redis in one script call (as messages of MAX_LINES): under eventlet a request
# being checked holds the process, so each round trip to Redis must carry much more than a message.
SEND_LINES = 5000
MAX_MESSAGE_BYTES = MAX_LINES * (MAX_BYTES + 1)


def channel(channel: str) -> str:
    """The push channel beside `channel`: `numbers:push` for `numbers` (its replay log: `numbers:push:log`)."""
    return channel + CHANNEL_SUFFIX


def is_channel(name: str) -> bool:
    """True for a push channel, whose messages are framed."""
    return name.endswith(CHANNEL_SUFFIX)


def source(generator_source: str) -> str:
    """The source of the samples a control-plane run publishes for others: `control-7f9c2a.push`."""
    return generator_source + SOURCE_SUFFIX


def is_source(source: str) -> bool:
    """True for the source of pushed samples, whose seqs and log are the push stream's."""
    return source.endswith(SOURCE_SUFFIX)


def frame(lines: list[str]) -> list[str]:
    """The messages of envelope lines, MAX_LINES at most each."""
    return ["\n".join(lines[start : start + MAX_LINES]) for start in range(0, len(lines), MAX_LINES)]


def split(message: bytes) -> list[bytes]:
    """The envelope lines of one message; a message too large to be one is returned whole, to be refused whole."""
    if len(message) > MAX_MESSAGE_BYTES:
        return [message]  # the envelope decoder refuses it as too_large, counted once
    return message.split(b"\n")
