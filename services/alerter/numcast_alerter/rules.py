"""The rules file: stream rules (`above`, `below`) and silence rules (`silent_for`), checked key by key."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from importlib import resources

import yaml

from numcast import alerts

MAX_RULES = 100
MAX_FILE_BYTES = 256 * 1024
CONDITIONS = ("above", "below", "silent_for")
KEYS = frozenset(("alert", *CONDITIONS, "for", "labels", "annotations"))
_DURATION_RE = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?")
MAX_DURATION = 7 * 24 * 3600.0


class RulesError(ValueError):
    """A rules file the alerter cannot run with; the message names the rule and the key."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One alerting rule: a condition, how long it must hold, and the labels and annotations it sends."""

    alert: str
    condition: str  # one of CONDITIONS
    threshold: float  # the value for above/below, the seconds for silent_for
    for_seconds: float
    labels: dict
    annotations: dict

    @property
    def fingerprint(self) -> str:
        """The identity of this rule's alert (alertname plus labels), as Alertmanager computes it."""
        return alerts.fingerprint(self.alert, self.labels)

    def holds(self, value: float) -> bool:
        """True when `value` (a stream value, or seconds without one) meets the condition."""
        if self.condition == "above":
            return value > self.threshold
        if self.condition == "below":
            return value < self.threshold
        return value >= self.threshold

    def to_dict(self) -> dict:
        """The rule as /api/alerts shows it."""
        return {
            "alert": self.alert,
            self.condition: self.threshold,
            "for": self.for_seconds,
            "labels": self.labels,
            "annotations": self.annotations,
        }


class RulesFile:
    """The rules in force and where they come from; `reload()` replaces them only with a good file."""

    def __init__(self, path: str) -> None:
        """Load `path` (the built-in rules when empty); RulesError stops the start."""
        self.path, self.source = path, path or "built-in"
        self.rules = load(path)
        self.error = ""  # why the last reload was refused, until one succeeds
        self.loaded_at = time.time()
        self._seen = self._stat()

    def changed(self) -> bool:
        """True when the file is not the one last read (a ConfigMap update swaps it behind a symlink)."""
        return self._stat() != self._seen

    def reload(self) -> tuple[Rule, ...]:
        """Read the file again; on RulesError the rules in force stay, and `error` says why."""
        self._seen = self._stat()
        try:
            self.rules = load(self.path)
        except RulesError as exc:
            self.error = str(exc)
            raise
        self.error, self.loaded_at = "", time.time()
        return self.rules

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path) if self.path else None  # follows symlinks
        except OSError:
            return None
        return st and (st.st_ino, st.st_mtime_ns, st.st_size)


def default_text() -> str:
    """The built-in rules, used when ALERT_RULES is unset (docs/monitoring.md shows the same file)."""
    return resources.files("numcast_alerter").joinpath("default_rules.yaml").read_text()


def load(path: str) -> tuple[Rule, ...]:
    """The rules of the file at `path` (the built-in ones when empty); RulesError if anything is wrong."""
    if not path:
        return parse(default_text(), "built-in rules")
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise RulesError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return parse(raw.decode(), path)
    except UnicodeDecodeError:
        raise RulesError(f"{path}: not UTF-8") from None


def parse(text: str, where: str) -> tuple[Rule, ...]:
    """The rules in YAML `text`; `where` names the file in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict) or set(data) != {"rules"}:
        raise RulesError(f"{where}: the file must hold one key, `rules`, a list of rules")
    items = data["rules"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_RULES:
        raise RulesError(f"{where}: `rules` must be a list of 1 to {MAX_RULES} rules")
    rules: list[Rule] = []
    for n, item in enumerate(items, 1):
        name = item.get("alert") if isinstance(item, dict) else None
        label = f"{where}: rule {n}" + (f" ({name})" if alerts.is_name(name) else "")
        try:
            rule = _rule(item)
        except RulesError as exc:
            raise RulesError(f"{label}: {exc}") from None
        if any(other.alert == rule.alert for other in rules):
            raise RulesError(f"{label}: key 'alert': the name {rule.alert} is used by an earlier rule")
        rules.append(rule)
    return tuple(rules)


def _rule(item: object) -> Rule:
    if not isinstance(item, dict):
        raise RulesError("a rule must be a mapping of keys")
    unknown = sorted(str(k) for k in item if k not in KEYS)
    if unknown:
        raise RulesError(f"key '{unknown[0]}': unknown key (known: {', '.join(sorted(KEYS))})")
    name = item.get("alert")
    if not isinstance(name, str) or not alerts.is_name(name):
        raise RulesError("key 'alert': required, a name like NumcastValueHigh (A-Z a-z 0-9 _)")
    conditions = [key for key in CONDITIONS if key in item]
    if len(conditions) != 1:
        raise RulesError(
            f"key '{conditions[1] if conditions else 'above'}': a rule has exactly one of {', '.join(CONDITIONS)}"
        )
    (condition,) = conditions
    if condition == "silent_for":
        threshold = duration(item[condition], condition)
        if threshold <= 0:
            raise RulesError("key 'silent_for': must be longer than 0s")
        if "for" in item:
            raise RulesError("key 'for': a silent_for rule takes no `for` (its duration is the silence)")
    else:
        threshold = _number(item[condition], condition)
    for_seconds = duration(item.get("for", "0s"), "for")
    # An empty value is no label, as in Alertmanager: dropped here, so the rule's identity is the one it has there.
    labels = {k: v for k, v in _strings(item.get("labels", {}), "labels", alerts.MAX_LABEL_VALUE).items() if v}
    if "alertname" in labels:
        raise RulesError("key 'labels': alertname is set by `alert`")
    annotations = _strings(item.get("annotations", {}), "annotations", alerts.MAX_ANNOTATION)
    try:  # every message this rule will ever send must pass the channel's own check
        alerts.build("firing", name, labels, annotations, alerts.rfc3339(0), None, "stream")
    except alerts.AlertError as exc:
        raise RulesError(f"key '{exc.reason.removeprefix('bad_')}': {str(exc).split(': ', 1)[1]}") from None
    return Rule(name, condition, threshold, for_seconds, labels, annotations)


def duration(value: object, key: str) -> float:
    """Seconds of a Prometheus-style duration: 3s, 1m30s, 500ms, 2h, 0s."""
    match = _DURATION_RE.fullmatch(value) if isinstance(value, str) and value else None
    if match is None or not any(match.groups()):
        raise RulesError(f"key '{key}': {value!r} is not a duration like 3s, 1m30s, 500ms or 0s")
    h, m, s, ms = (int(part or 0) for part in match.groups())
    seconds = h * 3600 + m * 60 + s + ms / 1000
    if seconds > MAX_DURATION:
        raise RulesError(f"key '{key}': {value} is longer than a week")
    return seconds


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RulesError(f"key '{key}': {value!r} is not a finite number")
    return float(value)


def _strings(value: object, key: str, max_length: int) -> dict:
    if not isinstance(value, dict) or len(value) > alerts.MAX_LABELS:
        raise RulesError(f"key '{key}': a mapping of at most {alerts.MAX_LABELS} names to strings")
    for name, text in value.items():
        if not isinstance(name, str) or not alerts.is_name(name):
            raise RulesError(f"key '{key}': {name!r} is not a label name (A-Z a-z 0-9 _)")
        if not isinstance(text, str) or len(text) > max_length:
            raise RulesError(f"key '{key}': {name} must be a string of at most {max_length} characters")
    return dict(value)
