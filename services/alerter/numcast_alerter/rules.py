"""The rules file: stream rules (`above`, `below`) and silence rules (`silent_for`), checked key by key.

A rule watches one series (`series`, the generator's `numcast_value` when not given) and, with `match`, only the
label sets that PromQL-style matchers select (numcast.matchers); each label set is an alert of its own.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from importlib import resources

import yaml

from numcast import alerts, matchers, parsing
from numcast.auth import file_stamp
from numcast.envelope import GENERATOR_SERIES, SERIES_RULE, valid_series
from numcast_alerter import templates

MAX_RULES = 100
MAX_FILE_BYTES = 256 * 1024
CONDITIONS = ("above", "below", "silent_for")
KEYS = frozenset(
    ("alert", *CONDITIONS, "series", "match", "max_label_sets", "for", "stale_after", "keep_firing_for", "labels",
     "annotations")
)  # fmt: skip
# Prometheus' duration syntax (model.ParseDuration): units from largest to smallest, each once, or a bare 0.
_UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001))
_DURATION_RE = re.compile("".join(rf"(?:([0-9]+){unit}{'(?!s)' if unit == 'm' else ''})?" for unit, _ in _UNITS))
MAX_DURATION = 7 * 24 * 3600.0
DEFAULT_STALE_AFTER = 300.0  # Prometheus marks a series stale after 5 minutes without a sample
DEFAULT_MAX_LABEL_SETS = 100  # label sets one rule keeps, unless its `max_label_sets` says otherwise
MAX_LABEL_SETS = 10_000  # the alerter's own cap (ALERT_MAX_LABEL_SETS): every rule together, and any one rule
_KEY_RE = re.compile(r"key '(\w+)'")  # every error of a rule names its key this way: the key's line is added


class RulesError(ValueError):
    """A rules file the alerter cannot run with; the message names the rule, its line and the key."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One alerting rule: a condition, how long it must hold, and the labels and annotations it sends."""

    alert: str
    condition: str  # one of CONDITIONS
    threshold: float  # the value for above/below, the seconds for silent_for
    for_seconds: float
    labels: dict
    annotations: dict  # as written; `render` fills in the templates
    stale_after: float | None = DEFAULT_STALE_AFTER  # a label set with no value this long is stale (None: never)
    keep_firing_for: float = 0.0  # a firing alert stays firing this long after its condition stops holding
    templates: tuple = dataclasses.field(default=(), repr=False)  # (name, compiled template) per annotation
    series: str = GENERATOR_SERIES  # the series it watches
    matchers: tuple = ()  # numcast.matchers.Matcher: the label sets of that series it watches; () all of them
    max_label_sets: int = DEFAULT_MAX_LABEL_SETS  # label sets it keeps at once; a new one past it is refused

    @property
    def fingerprint(self) -> str:
        """The identity of this rule's alert for a series without labels (alertname plus the rule's labels)."""
        return alerts.fingerprint(self.alert, self.labels)

    @property
    def labelled(self) -> bool:
        """True when its label sets vary: it names a series (other than the generator's) or matchers."""
        return self.series != GENERATOR_SERIES or bool(self.matchers)

    @property
    def fixed_labels(self) -> dict:
        """The labels its `=` matchers fix: every label set it watches has them."""
        return {m.name: m.value for m in self.matchers if m.op == "=" and m.value and m.name != "alertname"}

    @property
    def absent_labels(self) -> dict:
        """Its silent_for alert's labels while no label set is known: the fixed ones and the rule's (as absent())."""
        return {**self.fixed_labels, **self.labels}

    def render(self, value: float | None, series_labels: dict) -> dict:
        """The annotations with `$value` and the series' `$labels` filled in, each cut to the channel's limit."""
        value = 0.0 if value is None else value
        rendered = {name: templates.render(template, value, series_labels) for name, template in self.templates}
        return {name: _cut(text, alerts.MAX_ANNOTATION) for name, text in rendered.items()}

    def holds(self, value: float) -> bool:
        """True when `value` (a stream value, or seconds without one) meets the condition."""
        if self.condition == "above":
            return value > self.threshold
        if self.condition == "below":
            return value < self.threshold
        return value >= self.threshold

    def to_dict(self) -> dict:
        """The rule as /api/alerts shows it."""
        shown = {
            "alert": self.alert,
            "series": self.series,
            "match": [matcher.text() for matcher in self.matchers],
            self.condition: self.threshold,
            "for": self.for_seconds,
        }
        if self.stale_after is not None:
            shown["stale_after"] = self.stale_after
        shown |= {"keep_firing_for": self.keep_firing_for, "max_label_sets": self.max_label_sets}
        return shown | {"labels": self.labels, "annotations": self.annotations}


class RulesFile:
    """The rules in force and where they come from; `reload()` replaces them only with a good file."""

    def __init__(self, path: str, max_label_sets: int = MAX_LABEL_SETS) -> None:
        """Load `path` (the built-in rules when empty); RulesError stops the start.

        `max_label_sets`: ALERT_MAX_LABEL_SETS, the most a rule's `max_label_sets` may say.
        """
        self.path, self.source, self.max_label_sets = path, path or "built-in", max_label_sets
        self.rules = load(path, max_label_sets)
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
            self.rules = load(self.path, self.max_label_sets)
        except RulesError as exc:
            self.error = str(exc)
            raise
        self.error, self.loaded_at = "", time.time()
        return self.rules

    def _stat(self) -> tuple | None:
        return file_stamp(self.path) if self.path else None


def default_text() -> str:
    """The built-in rules, used when ALERT_RULES is unset (docs/monitoring.md shows the same file)."""
    return resources.files("numcast_alerter").joinpath("default_rules.yaml").read_text()


def load(path: str, max_label_sets: int = MAX_LABEL_SETS) -> tuple[Rule, ...]:
    """The rules of the file at `path` (the built-in ones when empty); RulesError if anything is wrong."""
    if not path:
        return parse(default_text(), "built-in rules", max_label_sets)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise RulesError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return parse(raw.decode(), path, max_label_sets)
    except UnicodeDecodeError:
        raise RulesError(f"{path}: not UTF-8") from None


class _TooDeep(Exception):
    """Nodes nested deeper than numcast.parsing.MAX_DEPTH."""


class _Twice(Exception):
    """A mapping holds a key twice: YAML loaders keep the last, and a rule would silently change."""


class _Mapping(dict):
    """A YAML mapping that knows its line and the line of each key, for errors that point at them."""

    line: int | None = None
    lines: dict


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping, and nodes nested deeper than JSON may be
    anywhere (PyYAML recurses once per level: `[` a thousand times would raise RecursionError); mappings know
    their lines."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > parsing.MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(f"line {mark.line + 1}: nested deeper than {parsing.MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # a merge (<<) may repeat keys on purpose; a non-scalar key is refused later anyway
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise _Twice(f"line {line}: key '{key}' is given twice (first on line {lines[key]})")
                lines[key] = line
        return super().construct_mapping(node, deep)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode):
    data = _Mapping()
    yield data  # first, as PyYAML's own constructor does, so that anchors may refer to it
    data.update(loader.construct_mapping(node))
    data.line = node.start_mark.line + 1
    data.lines = {
        key_node.value: key_node.start_mark.line + 1
        for key_node, _ in node.value
        if isinstance(key_node, yaml.ScalarNode)
    }


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _line(item: object, error: RulesError) -> str:
    """`line N: ` of the key the error names, or of the rule; empty when unknown."""
    if not isinstance(item, _Mapping):
        return ""
    key = _KEY_RE.match(str(error))
    line = item.lines.get(key.group(1)) if key else None
    return f"line {line or item.line}: "


def parse(text: str, where: str, max_label_sets: int = MAX_LABEL_SETS) -> tuple[Rule, ...]:
    """The rules in YAML `text`; `where` names the file in errors, `max_label_sets` caps that key."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except (_Twice, _TooDeep) as exc:
        raise RulesError(f"{where}: {exc}") from None
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
            rule = _rule(item, max_label_sets)
            if any(other.alert == rule.alert for other in rules):
                raise RulesError(f"key 'alert': the name {rule.alert} is used by an earlier rule")
        except RulesError as exc:
            raise RulesError(f"{label}: {_line(item, exc)}{exc}") from None
        rules.append(rule)
    return tuple(rules)


def _rule(item: object, max_label_sets: int) -> Rule:
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
    series, selected = _series(item)
    stale_after: float | None = DEFAULT_STALE_AFTER
    if condition == "silent_for":
        threshold = duration(item[condition], condition)
        if threshold <= 0:
            raise RulesError("key 'silent_for': must be longer than 0s")
        if "for" in item:
            raise RulesError("key 'for': a silent_for rule takes no `for` (its duration is the silence)")
        if "series" not in item and "match" not in item:
            if "stale_after" in item:
                raise RulesError(
                    "key 'stale_after': a silent_for rule without `series` or `match` has one stream to watch"
                )
            stale_after = None  # the generator's stream, as before series: silent until a value comes, however long
        else:
            if "stale_after" in item:
                stale_after = duration(item["stale_after"], "stale_after")
            if stale_after <= threshold:
                raise RulesError(
                    f"key 'stale_after': {stale_after:g}s: a silent label set is forgotten after this long, so it "
                    "must be longer than silent_for"
                )
    else:
        threshold = _number(item[condition], condition)
        if "stale_after" in item:
            stale_after = duration(item["stale_after"], "stale_after")
            if stale_after <= 0:
                raise RulesError("key 'stale_after': must be longer than 0s")
    for_seconds = duration(item.get("for", "0s"), "for")
    keep_firing_for = duration(item.get("keep_firing_for", "0s"), "keep_firing_for")
    # An empty value is no label, as in Alertmanager: dropped here, so the rule's identity is the one it has there.
    labels = {k: v for k, v in _strings(item.get("labels", {}), "labels", alerts.MAX_LABEL_VALUE).items() if v}
    if "alertname" in labels:
        raise RulesError("key 'labels': alertname is set by `alert`")
    annotations = _strings(item.get("annotations", {}), "annotations", alerts.MAX_ANNOTATION)
    compiled = []
    for key, text in annotations.items():
        try:
            compiled.append((key, templates.compile_template(text)))
        except templates.TemplateError as exc:
            raise RulesError(f"key 'annotations': {key}: the template {text[:200]} cannot be rendered: {exc}") from None
    limit = item.get("max_label_sets", min(DEFAULT_MAX_LABEL_SETS, max_label_sets))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= max_label_sets:
        raise RulesError(f"key 'max_label_sets': {limit!r} is not a whole number from 1 to {max_label_sets} "
                         f"(ALERT_MAX_LABEL_SETS)")  # fmt: skip
    rule = Rule(name, condition, threshold, for_seconds, labels, annotations, stale_after, keep_firing_for)
    rule = dataclasses.replace(rule, templates=tuple(compiled), series=series, matchers=selected, max_label_sets=limit)
    try:  # every message this rule will ever send must pass the channel's own check
        alerts.build("firing", name, labels, rule.render(0.0, {}), alerts.rfc3339(0), None, "stream")
    except alerts.AlertError as exc:
        raise RulesError(f"key '{exc.reason.removeprefix('bad_')}': {str(exc).split(': ', 1)[1]}") from None
    return rule


def _series(item: dict) -> tuple[str, tuple]:
    """The series a rule watches, and its matchers."""
    series = item.get("series", GENERATOR_SERIES)
    if not valid_series(series):
        raise RulesError(f"key 'series': {str(series)[:60]!r} is not {SERIES_RULE}")
    try:
        return series, matchers.from_json(item.get("match", []))
    except matchers.MatcherError as exc:
        raise RulesError(
            f"key 'match': {exc}; write a list such as [job=billing, \"queue=~bill.*\"] or a mapping of label to value"
        ) from None


def duration(value: object, key: str) -> float:
    """Seconds of a Prometheus duration: 3s, 1m30s, 250ms, 2h, 1d, 1w, or 0."""
    if (value == 0 and not isinstance(value, bool)) or value == "0":
        return 0.0
    match = _DURATION_RE.fullmatch(value) if isinstance(value, str) and value else None
    if match is None or not any(match.groups()):
        raise RulesError(f"key '{key}': {value!r} is not a duration like 3s, 1m30s, 250ms, 1d or 0")
    seconds = sum(int(part or 0) * size for part, (_, size) in zip(match.groups(), _UNITS, strict=True))
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


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
