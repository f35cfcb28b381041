"""The wire format: one UTF-8 JSON object per message, the same on Redis, TCP, file and WebSocket."""

from __future__ import annotations

import json
import math
import re
from typing import NamedTuple

# A message larger than this is refused before it is parsed; a real envelope is under 150 bytes.
MAX_BYTES = 1024
MAX_SEQ = 2**53  # the largest integer a browser's Number holds exactly
FIELDS = frozenset(("seq", "value", "ts", "source"))
SOURCE_RULE = "1-64 of A-Z a-z 0-9 . _ : -"  # the one rule for a source, and for what builds one (SOURCE_PREFIX)
_SOURCE_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# Every reason an EnvelopeError carries: the services serve a rejected counter for each at 0 from their start.
REASONS = (
    "too_large", "not_utf8", "not_json", "not_object", "bad_fields", "bad_seq", "bad_source", "bad_ts", "bad_type",
    "not_finite",
)  # fmt: skip


class EnvelopeError(ValueError):
    """A message that is not an envelope; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Envelope(NamedTuple):
    """One value: `seq` grows by one per message from `source`; a new run gets a new `source`."""

    seq: int
    value: float
    ts: float
    source: str

    def to_json(self) -> str:
        """The compact wire form."""
        return json.dumps(self._asdict(), separators=(",", ":"))

    def to_dict(self) -> dict:
        """A plain dict, for JSON responses and Socket.IO payloads."""
        return self._asdict()


def _reject_constant(name: str) -> float:
    raise EnvelopeError("not_finite", f"{name} is not a finite number")


# One decoder for every message: json.loads(..., parse_constant=...) would build a new one (and its scanner)
# per call, which costs as much as the parsing itself.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_KNOWN_SOURCES: set[str] = set()  # sources already matched against _SOURCE_RE; there are few of them


def _number(data: dict, key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EnvelopeError("bad_type", f"{key} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise EnvelopeError("not_finite", f"{key} is too large") from None
    if not math.isfinite(value):
        raise EnvelopeError("not_finite", f"{key} is not a finite number")
    return value


def valid_source(source: str) -> bool:
    """True when `source` follows SOURCE_RULE, as a whole (a trailing newline is not allowed)."""
    return _SOURCE_RE.fullmatch(source) is not None


def _new_source(source: str) -> bool:
    if not valid_source(source):
        return False
    if len(_KNOWN_SOURCES) >= 1000:  # a flood of made-up sources only costs the regex again
        _KNOWN_SOURCES.clear()
    _KNOWN_SOURCES.add(source)
    return True


def decode(raw: bytes | str) -> Envelope:
    """Parse and validate one message; raise EnvelopeError saying what is wrong."""
    if len(raw) > MAX_BYTES:
        raise EnvelopeError("too_large", f"{len(raw)} bytes, limit {MAX_BYTES}")
    if not isinstance(raw, str):
        try:
            raw = raw.decode()  # strictly UTF-8: json.loads would guess UTF-16/32 from the first bytes
        except UnicodeDecodeError:
            raise EnvelopeError("not_utf8", "message is not UTF-8") from None
    try:
        data = _DECODER.decode(raw)
    except ValueError as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError("not_json", str(exc)) from None
    if not isinstance(data, dict):
        raise EnvelopeError("not_object", f"expected a JSON object, got {type(data).__name__}")
    if data.keys() != FIELDS:
        missing = sorted(FIELDS - data.keys())
        extra = sorted(data.keys() - FIELDS)
        raise EnvelopeError("bad_fields", f"missing {missing}, unexpected {extra[:5]}")
    seq = data["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise EnvelopeError("bad_seq", f"seq must be an integer 0-{MAX_SEQ}")
    source = data["source"]
    if not isinstance(source, str) or (source not in _KNOWN_SOURCES and not _new_source(source)):
        raise EnvelopeError("bad_source", f"source must be {SOURCE_RULE}")
    value = _number(data, "value")
    ts = _number(data, "ts")
    if ts <= 0:
        raise EnvelopeError("bad_ts", "ts must be Unix seconds > 0")
    return Envelope(seq, value, ts, source)
