"""The three formats a push comes in, each parsed by a maintained parser into the same plain samples.

Each parser only reads its format: every rule about names, labels, values, limits and time is checked once,
after it, on the samples (the control-plane's push path). A parser raises FormatError naming the line or sample
it could not read.
"""

from __future__ import annotations

import json
import math
from typing import NamedTuple

import line_protocol_parser
from prometheus_client.parser import text_string_to_metric_families

from numcast import parsing

# Influx line protocol timestamps: integers in this unit since the epoch (`precision`, default ns): per second.
PRECISIONS = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1000, "s": 1}
JSON_KEYS = frozenset(("series", "labels", "value", "ts"))
SINGLE = ("counter", "gauge", "unknown", "untyped")  # kinds whose every sample is a family of its own name


class FormatError(ValueError):
    """A body that is not the format it claims; `where` names the line or sample (`line 3`, `samples[2]`)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where


class Sample(NamedTuple):
    """One pushed value before it is checked: `ts` None means "now"; `family` and `kind` as the format says."""

    series: str
    labels: dict
    value: float
    ts: float | None
    where: str | int  # where it is in the body: `line 3`, or the index in a JSON push's samples
    family: str = ""  # the metric family it belongs to (exposition format); empty: the series itself
    kind: str = "untyped"

    @property
    def named(self) -> str:
        """How an error message names it (built only then: a push holds thousands)."""
        return f"samples[{self.where}]" if type(self.where) is int else self.where


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def from_json(body: bytes) -> list[Sample]:
    """`{"samples": [{"series", "labels", "value", "ts"}, ...]}`: `labels` and `ts` may be left out."""
    try:
        data = parsing.loads(body.decode(), _DECODER)  # nesting bounded (numcast.parsing)
    except UnicodeDecodeError:
        raise FormatError("", "the body is not UTF-8") from None
    except ValueError as exc:
        raise FormatError("", f"the body is not JSON: {str(exc)[:120]}") from None
    if not isinstance(data, dict) or set(data) != {"samples"} or not isinstance(data["samples"], list):
        raise FormatError("", 'the body must be {"samples": [{"series", "labels", "value", "ts"}, ...]}')
    samples = []
    for n, item in enumerate(data["samples"]):
        if type(item) is not dict or not item.keys() <= JSON_KEYS or "series" not in item or "value" not in item:
            raise FormatError(f"samples[{n}]", "must be an object with series and value, and optionally labels, ts")
        value, ts = item["value"], item.get("ts")
        if type(value) not in (float, int) or not (ts is None or type(ts) in (float, int)):
            raise FormatError(f"samples[{n}]", "value and ts must be numbers")
        labels = item.get("labels")
        samples.append(Sample(item["series"], {} if labels is None else labels, value, ts, n))
    return samples


def from_line_protocol(body: bytes, precision: str = "ns") -> tuple[list[Sample], int]:
    """InfluxDB line protocol: each field of a line is a sample `<measurement>_<field>`, its tags the labels.

    Returns the samples and how many string fields were left out: numcast carries numbers, and Telegraf's inputs
    mix a few strings into their numbers (`uptime_format`), so refusing them would refuse whole batches. A boolean
    is 1 or 0.
    """
    per_second = PRECISIONS[precision]
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise FormatError("", "the body is not UTF-8") from None
    samples, skipped = [], 0
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            point = line_protocol_parser.parse_line(line)
        except line_protocol_parser.LineFormatError as exc:
            raise FormatError(f"line {n}", f"{exc} ({line[:80]!r})") from None
        if point is None:  # a comment
            continue
        measurement, tags, stamp = point["measurement"], point["tags"], point["time"]
        ts = None if stamp is None else stamp / per_second
        where = f"line {n}"
        for field, value in point["fields"].items():
            if isinstance(value, str):
                skipped += 1
                continue
            samples.append(Sample(f"{measurement}_{field}", tags, float(value), ts, where))
    return samples, skipped


def from_exposition(body: bytes) -> list[Sample]:
    """Prometheus' text exposition format, as Pushgateway takes it (prometheus_client's parser)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise FormatError("", "the body is not UTF-8") from None
    _ascii_numbers(text)
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise FormatError(_bad_line(text), f"not the text exposition format: {str(exc)[:120]}") from None
    samples = []
    for family in families:
        for sample in family.samples:
            where = _describe(sample.name, sample.labels)
            value = sample.value
            if not math.isfinite(value):
                raise FormatError(where, f"{value} is not a finite number: numcast carries finite values only")
            # A counter's samples are named `<family>_total`: in the text format its TYPE line names them so.
            name = sample.name if family.type in SINGLE else family.name
            samples.append(Sample(sample.name, sample.labels, value, sample.timestamp, where, name, family.type))
    return samples


def _bad_line(text: str) -> str:
    """The first line the parser refuses on its own (its errors do not say which), as `line N`."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip() and not line.startswith("#"):
            try:
                list(text_string_to_metric_families(line + "\n"))
            except ValueError:
                return f"line {n}"
    return ""


def _describe(name: str, labels: dict) -> str:
    """`name{a="b"}`: a sample as the exposition format writes it, for error messages."""
    inner = ",".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in labels.items())
    return f"{name}{{{inner}}}" if inner else name


def _ascii_numbers(text: str) -> None:
    """Raise FormatError for a sample line whose value or timestamp is not in ASCII: prometheus_client's parser
    reads them with float(), which takes any Unicode digit (`a ١٢` would be 12)."""
    for n, line in enumerate(text.split("\n"), 1):
        if line.startswith("#") or line.isascii():
            continue
        # After the labels' closing brace (the last one: a value or timestamp holds none), or the whole line.
        if not line[line.rfind("}") + 1 :].isascii():
            raise FormatError(f"line {n}", "a value or timestamp not written in digits 0-9")
