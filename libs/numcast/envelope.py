"""The wire format: one UTF-8 JSON object per envelope, the same on Redis, TCP, file and WebSocket.

An envelope is one value of one series. The generator's envelopes carry no `series`: they are the series
GENERATOR_SERIES. Pushed samples carry `series` (a Prometheus metric name) and `labels` (label name -> value),
with the label rules of `numcast.alerts`, so that a series' labels can become an alert's.
"""

from __future__ import annotations

import json
import math
import re
from typing import NamedTuple

from numcast import parsing
from numcast.alerts import MAX_LABEL_VALUE, MAX_LABELS, MAX_NAME, is_name

# A message larger than this is refused before it is parsed; a real envelope is under 150 bytes.
MAX_BYTES = 1024
MAX_SEQ = 2**53  # the largest integer a browser's Number holds exactly
FIELDS = frozenset(("seq", "value", "ts", "source"))
SERIES_FIELDS = FIELDS | {"series", "labels"}  # `series` and `labels` come together or not at all
GENERATOR_SERIES = "numcast_value"  # the series of an envelope without `series`: the control-plane's generator
SERIES_RULE = f"a Prometheus metric name: 1-{MAX_NAME} of A-Z a-z 0-9 _ :, not starting with a digit"
LABEL_RULE = (
    f"at most {MAX_LABELS} labels, each a Prometheus label name (1-{MAX_NAME} of A-Z a-z 0-9 _, not starting with "
    f"a digit or __) with a value of 1-{MAX_LABEL_VALUE} characters and no control characters"
)
SOURCE_RULE = "1-64 of A-Z a-z 0-9 . _ : -"  # the one rule for a source, and for what builds one (SOURCE_PREFIX)
_SOURCE_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SERIES_RE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


# Every reason an EnvelopeError carries: the services serve a rejected counter for each at 0 from their start.
REASONS = (
    "too_large", "not_utf8", "not_json", "not_object", "bad_fields", "bad_seq", "bad_source", "bad_ts", "bad_type",
    "not_finite", "bad_series", "bad_labels", "duplicate_key",
)  # fmt: skip


class EnvelopeError(ValueError):
    """A message that is not an envelope; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Envelope(NamedTuple):
    """One value: `seq` grows by one per message from `source`; a new run gets a new `source`.

    `series` None: the generator's series (GENERATOR_SERIES), without labels.
    """

    seq: int
    value: float
    ts: float
    source: str
    series: str | None = None
    labels: dict[str, str] | None = None

    def to_json(self) -> str:
        """The canonical wire form: compact, fields in this order; what the sink file gets, whatever came in."""
        if self.series is None:
            # What json.dumps gives, built directly (the sink writes one per value): a source needs no escaping
            # (SOURCE_RULE), and repr() of a finite float is JSON's spelling of it.
            return f'{{"seq":{self.seq},"value":{self.value!r},"ts":{self.ts!r},"source":"{self.source}"}}'
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    def to_dict(self) -> dict:
        """A plain dict, for JSON responses and Socket.IO payloads: `series` and `labels` only when it has them."""
        data = {"seq": self.seq, "value": self.value, "ts": self.ts, "source": self.source}
        if self.series is not None:
            data["series"], data["labels"] = self.series, self.labels or {}
        return data


def _reject_constant(name: str) -> float:
    raise EnvelopeError("not_finite", f"{name} is not a finite number")


def _object(pairs: list) -> dict:
    """A JSON object, refused when a key comes twice: readers that keep the first and the last would disagree."""
    data = dict(pairs)
    if len(data) < len(pairs):
        seen: set = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise EnvelopeError("duplicate_key", f"key {twice[:40]!r} appears more than once")
    return data


# One decoder for every message: json.loads(..., parse_constant=...) would build a new one (and its scanner)
# per call, which costs as much as the parsing itself.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_object)
_KNOWN_SOURCES: set[str] = set()  # sources already matched against _SOURCE_RE; there are few of them
_KNOWN_SERIES: set[str] = set()  # series names already checked
_KNOWN_LABEL_NAMES: set[str] = set()  # label names already checked
_KNOWN_MAX = 1000  # a flood of made-up names only costs the check again


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


def valid_series(series: object) -> bool:
    """True when `series` follows SERIES_RULE."""
    return isinstance(series, str) and len(series) <= MAX_NAME and _SERIES_RE.fullmatch(series) is not None


def valid_label_name(name: object) -> bool:
    """True for a Prometheus label name that is not reserved (`__` starts the names Prometheus keeps for itself)."""
    return is_name(name) and not name.startswith("__")


def valid_label_value(value: object) -> bool:
    """True for a non-empty string of at most MAX_LABEL_VALUE characters without control characters.

    Empty is refused: to Prometheus an empty label is no label, so it would name the same series as without it.
    """
    return isinstance(value, str) and 0 < len(value) <= MAX_LABEL_VALUE and _CONTROL_RE.search(value) is None


def _remember(known: set[str], value: str, valid) -> bool:
    if not valid(value):
        return False
    if len(known) >= _KNOWN_MAX:
        known.clear()
    known.add(value)
    return True


def _new_source(source: str) -> bool:
    return _remember(_KNOWN_SOURCES, source, valid_source)


def _series(data: dict) -> tuple[str, dict[str, str]]:
    series, labels = data["series"], data["labels"]
    if not isinstance(series, str) or (
        series not in _KNOWN_SERIES and not _remember(_KNOWN_SERIES, series, valid_series)
    ):
        raise EnvelopeError("bad_series", f"series must be {SERIES_RULE}")
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise EnvelopeError("bad_labels", f"labels must be an object: {LABEL_RULE}")
    for name, value in labels.items():
        if name not in _KNOWN_LABEL_NAMES and not _remember(_KNOWN_LABEL_NAMES, name, valid_label_name):
            raise EnvelopeError("bad_labels", f"{name[:40]!r} is not a label name: {LABEL_RULE}")
        if not valid_label_value(value):
            raise EnvelopeError("bad_labels", f"labels.{name}: {LABEL_RULE}")
    return series, labels


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
        # Nesting bounded (numcast.parsing): 1,000 `[` would raise RecursionError. Measured only when there are
        # enough brackets to nest that deep, which a real envelope never has: the hot path pays two counts.
        if raw.count("[") + raw.count("{") > parsing.MAX_DEPTH:
            parsing.check_depth(raw)
        data = _DECODER.decode(raw)
    except ValueError as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError("not_json", str(exc)) from None
    if not isinstance(data, dict):
        raise EnvelopeError("not_object", f"expected a JSON object, got {type(data).__name__}")
    keys = data.keys()
    if keys == FIELDS:
        series = labels = None
    elif keys == SERIES_FIELDS:
        series, labels = _series(data)
    else:
        expected = SERIES_FIELDS if keys & {"series", "labels"} else FIELDS
        missing, extra = sorted(expected - keys), sorted(keys - expected)
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
    return Envelope(seq, value, ts, source, series, labels)
