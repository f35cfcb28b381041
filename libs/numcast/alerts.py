"""The `alerts` channel's message: one JSON object per change of an alert, built and checked here only.

The alerter builds them (from its stream rules, or from Alertmanager's webhook); workers and the control-plane
decode them as strictly as envelopes. Every string is bounded and plain text: a page shows it with textContent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime

from numcast import parsing

MAX_BYTES = 16 * 1024  # one message; a real one is a few hundred bytes
MAX_LABELS = 32  # labels or annotations per alert
MAX_NAME = 128  # a label name
MAX_LABEL_VALUE = 1024  # a label value, the alertname included
MAX_ANNOTATION = 4096  # longer annotation values from Alertmanager are cut (and marked) rather than refused
MAX_ACTIVE = 500  # active alerts the alerter keeps in Redis and a worker keeps in memory
FIELDS = frozenset(("status", "alertname", "labels", "annotations", "startsAt", "endsAt", "fingerprint", "origin"))
STATUSES = ("firing", "resolved")
ORIGINS = ("stream", "alertmanager")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Prometheus' label name rule
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{16}")
_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9](\.[0-9]{1,9})?(Z|[+-][0-9][0-9]:[0-9][0-9])"
)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # newlines and tabs may appear in a description
_LINE_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")  # a label value is one line
ZERO_TIME = "0001-01-01T00:00:00Z"  # what Alertmanager's webhook puts in `endsAt` of a firing alert
# Every reason an AlertError carries, and those the alerter's webhook counts (its body, then each alert; too_many:
# the alerter holds MAX_ACTIVE alerts from Alertmanager already): each is served at 0 from the start.
REASONS = (
    "too_large", "not_utf8", "not_json", "not_object", "bad_fields", "bad_version", "bad_status", "bad_origin",
    "bad_alertname", "bad_labels", "bad_annotations", "bad_time", "bad_fingerprint", "too_many",
)  # fmt: skip
WEBHOOK_REASONS = (
    "not_json", "not_object", "bad_version", "bad_fields", "bad_status", "bad_alertname", "bad_labels",
    "bad_annotations", "bad_time", "bad_fingerprint", "too_many",
)  # fmt: skip


class AlertError(ValueError):
    """A message or webhook alert that is not valid; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def key(alerts_channel: str) -> str:
    """The Redis hash of active alerts (fingerprint -> message) that the alerter keeps for `alerts_channel`."""
    return f"numcast:alerts:{alerts_channel}"


def rules_key(alerts_channel: str) -> str:
    """The Redis key where the alerter keeps the state of its rules, for the control page."""
    return f"numcast:alerts:{alerts_channel}:rules"


def fingerprint(alertname: str, labels: Mapping[str, str]) -> str:
    """Alertmanager's own fingerprint of the label set (FNV-1a 64 over sorted names and values), in hex.

    Like Alertmanager, it leaves out labels with an empty value: `{team: ""}` is the alert without `team`.
    """
    h = 0xCBF29CE484222325
    for name, value in sorted({**labels, "alertname": alertname}.items()):
        if value == "":
            continue
        for byte in name.encode() + b"\xff" + value.encode() + b"\xff":
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def rfc3339(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds, as Alertmanager reads them."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def timestamp(text: str) -> float:
    """Unix seconds of an RFC 3339 time (nanoseconds cut to microseconds)."""
    return datetime.fromisoformat(re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", text).replace("Z", "+00:00")).timestamp()


def build(
    status: str,
    alertname: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    starts_at: str,
    ends_at: str | None,
    origin: str,
    fp: str | None = None,
) -> dict:
    """A checked message; raises AlertError. The fingerprint is computed from the labels unless given.

    Labels with an empty value are dropped, as Alertmanager drops them: the same alert has one identity everywhere.
    """
    message = {
        "status": status,
        "alertname": alertname,
        "labels": {name: value for name, value in labels.items() if value != ""},
        "annotations": dict(annotations),
        "startsAt": starts_at,
        "endsAt": ends_at,
        "fingerprint": fp or fingerprint(alertname, labels),
        "origin": origin,
    }
    check(message)
    return message


def encode(message: dict) -> str:
    """The wire form: compact JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def decode(raw: bytes | str) -> dict:
    """Parse and check one message from the channel or the Redis hash; raise AlertError saying what is wrong."""
    if len(raw) > MAX_BYTES:
        raise AlertError("too_large", f"{len(raw)} bytes, limit {MAX_BYTES}")
    try:
        text = raw.decode() if isinstance(raw, bytes | bytearray) else raw
        data = parsing.loads(text, _DECODER)  # nesting bounded, as at every door (numcast.parsing)
    except UnicodeDecodeError:
        raise AlertError("not_utf8", "message is not UTF-8") from None
    except ValueError as exc:
        raise AlertError("not_json", str(exc)[:100]) from None
    if not isinstance(data, dict):
        raise AlertError("not_object", f"expected a JSON object, got {type(data).__name__}")
    check(data)
    return data


def check(data: dict) -> None:
    """Raise AlertError unless `data` is exactly a message of the documented shape."""
    if data.keys() != FIELDS:
        raise AlertError(
            "bad_fields", f"missing {sorted(FIELDS - data.keys())}, unexpected {sorted(data.keys() - FIELDS)[:5]}"
        )
    if data["status"] not in STATUSES:
        raise AlertError("bad_status", f"status must be one of {', '.join(STATUSES)}")
    if data["origin"] not in ORIGINS:
        raise AlertError("bad_origin", f"origin must be one of {', '.join(ORIGINS)}")
    if not is_label_value(data["alertname"]):
        raise AlertError(
            "bad_alertname", f"alertname must be a label value: 1-{MAX_LABEL_VALUE} characters, no control characters"
        )
    _check_map(data["labels"], "labels", MAX_LABEL_VALUE, multiline=False)
    if "alertname" in data["labels"]:
        raise AlertError("bad_labels", "alertname is a field of its own, not a label")
    _check_map(data["annotations"], "annotations", MAX_ANNOTATION, multiline=True)
    if not _is_time(data["startsAt"]):
        raise AlertError("bad_time", "startsAt must be an RFC 3339 time")
    if not (data["endsAt"] is None or _is_time(data["endsAt"])):
        raise AlertError("bad_time", "endsAt must be an RFC 3339 time or null")
    if not (isinstance(data["fingerprint"], str) and _FINGERPRINT_RE.fullmatch(data["fingerprint"])):
        raise AlertError("bad_fingerprint", "fingerprint must be 16 lowercase hex digits")


def from_webhook(payload: object) -> tuple[list[dict], list[AlertError]]:
    """The messages (origin `alertmanager`) of an Alertmanager webhook payload, and an AlertError per bad alert.

    A payload that is not a webhook payload at all raises AlertError. A bad alert inside a good payload is
    skipped and reported (its error names `alerts[n]`), and the others are kept: Alertmanager takes a 4xx as
    final and would never deliver the good ones again.
    """
    if not isinstance(payload, dict):
        raise AlertError("not_object", "the payload must be a JSON object")
    if payload.get("version") != "4":
        raise AlertError("bad_version", f'version must be "4", got {str(payload.get("version"))[:20]!r}')
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise AlertError("bad_fields", "alerts must be a list")
    messages, rejected = [], []
    for n, alert in enumerate(alerts):
        try:
            messages.append(_from_webhook_alert(alert))
        except AlertError as exc:
            rejected.append(AlertError(exc.reason, f"alerts[{n}]: {str(exc).split(': ', 1)[1]}"))
    return messages, rejected


def _from_webhook_alert(alert: object) -> dict:
    required = ("status", "labels", "annotations", "startsAt", "endsAt", "fingerprint")
    if not isinstance(alert, dict) or not all(name in alert for name in required):
        raise AlertError("bad_fields", f"each alert needs {', '.join(required)}")
    labels = alert["labels"]
    if not isinstance(labels, dict) or "alertname" not in labels:
        raise AlertError("bad_labels", "labels must be an object with an alertname")
    labels = dict(labels)
    alertname = labels.pop("alertname")
    annotations = alert["annotations"]
    if isinstance(annotations, dict):
        annotations = {k: _cut(v) for k, v in annotations.items()}
    ends_at = alert["endsAt"]
    if alert["status"] == "firing" or ends_at == ZERO_TIME:
        ends_at = None
    return build(
        alert["status"],
        alertname,
        labels,
        annotations,
        alert["startsAt"],
        ends_at,
        "alertmanager",
        alert["fingerprint"],
    )


def _cut(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_ANNOTATION:
        return value[: MAX_ANNOTATION - 1] + "…"
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def is_name(value: object) -> bool:
    """A label name as Prometheus defines it, at most MAX_NAME characters."""
    return isinstance(value, str) and len(value) <= MAX_NAME and bool(_NAME_RE.fullmatch(value))


def is_label_value(value: object) -> bool:
    """A non-empty label value on one line: 1-MAX_LABEL_VALUE characters, no control characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_LABEL_VALUE and not _LINE_CONTROL_RE.search(value)


def _is_time(value: object) -> bool:
    return isinstance(value, str) and bool(_TIME_RE.fullmatch(value))


def _check_map(value: object, field: str, max_value: int, multiline: bool) -> None:
    if not isinstance(value, dict):
        raise AlertError(f"bad_{field}", f"{field} must be an object")
    if len(value) > MAX_LABELS:
        raise AlertError(f"bad_{field}", f"{field}: at most {MAX_LABELS} entries")
    for name, text in value.items():
        if not is_name(name):
            raise AlertError(f"bad_{field}", f"{field}: {name[:40]!r} is not a label name")
        if not isinstance(text, str) or len(text) > max_value:
            raise AlertError(f"bad_{field}", f"{field}.{name} must be a string of at most {max_value} characters")
        if (_CONTROL_RE if multiline else _LINE_CONTROL_RE).search(text):
            raise AlertError(f"bad_{field}", f"{field}.{name} holds control characters")
