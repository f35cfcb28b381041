"""Label matchers as in PromQL: `name=value`, `name!=value`, `name=~regex`, `name!~regex`.

A regex is RE2's, as Prometheus' is, and matches the whole value. RE2 runs in time linear in the text, so a
matcher that a browser sends cannot make a worker spin the way a backtracking regex could. A label that a series
lacks matches as the empty string, as in PromQL: `job!=billing` matches a series without `job`.
"""

from __future__ import annotations

import re

import re2

from numcast.alerts import MAX_LABEL_VALUE
from numcast.envelope import valid_label_name

MAX_MATCHERS = 16  # in one selector: a browser's subscription, a history query
MAX_REGEX = 256  # characters of one regex
OPS = ("=", "!=", "=~", "!~")
RULE = (
    f"at most {MAX_MATCHERS} matchers, each `<label><op><value>` with op one of = != =~ !~ (as in PromQL, without the "
    f"quotes): a label name, then a value of at most {MAX_LABEL_VALUE} characters without control characters, or an "
    f"RE2 regex of at most {MAX_REGEX} characters matched against the whole value"
)
_TEXT_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(=~|!~|!=|=)(.*)", re.DOTALL)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad regex from a browser is its error, reported to it, not a line in our log
_OPTIONS.never_capture = True
_OPTIONS.max_mem = 1 << 20  # per compiled regex; a larger program is refused as too complex
# Verdicts of regex matchers by (matcher, value): an RE2 call costs several µs from Python, and a fan-out round asks
# the same question for every sample of a label set. Shared by every matcher, and cleared when full.
_VERDICTS: dict[tuple, bool] = {}
_VERDICTS_MAX = 8192
_VALUE_CACHED = 128  # longer values are matched each time, so the cache stays small


class MatcherError(ValueError):
    """A matcher that does not follow RULE."""


class Matcher:
    """One label matcher; equal (and hashed) by its text, so two equal selectors are one."""

    __slots__ = ("_regex", "key", "name", "op", "value")

    def __init__(self, name: str, op: str, value: str) -> None:
        if not isinstance(name, str) or not valid_label_name(name):
            raise MatcherError(f"{str(name)[:40]!r} is not a label name")
        if op not in OPS:
            raise MatcherError(f"{str(op)[:8]!r} is not one of {' '.join(OPS)}")
        if not isinstance(value, str) or _CONTROL_RE.search(value):
            raise MatcherError(f"{name}{op}: the value must be text without control characters")
        self._regex = None
        if op in ("=~", "!~"):
            if len(value) > MAX_REGEX:
                raise MatcherError(f"{name}{op}: a regex of at most {MAX_REGEX} characters")
            try:
                self._regex = re2.compile(value, _OPTIONS)
            except re2.error as exc:
                detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
                raise MatcherError(f"{name}{op}: not an RE2 regex: {str(detail)[:120]}") from None
        elif len(value) > MAX_LABEL_VALUE:
            raise MatcherError(f"{name}{op}: a value of at most {MAX_LABEL_VALUE} characters")
        self.name, self.op, self.value = name, op, value
        self.key = (name, op, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Matcher) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Matcher({self.text()!r})"

    def text(self) -> str:
        """`name<op>value`, as `parse` reads it."""
        return f"{self.name}{self.op}{self.value}"

    def matches(self, labels: dict | None) -> bool:
        """True when `labels` (None: no labels) satisfy this matcher."""
        value = labels.get(self.name, "") if labels else ""
        op = self.op
        if op == "=":
            return value == self.value
        if op == "!=":
            return value != self.value
        if len(value) > _VALUE_CACHED:
            found = self._regex.fullmatch(value) is not None
        else:
            key = (self, value)
            found = _VERDICTS.get(key)
            if found is None:
                if len(_VERDICTS) >= _VERDICTS_MAX:
                    _VERDICTS.clear()
                found = _VERDICTS[key] = self._regex.fullmatch(value) is not None
        return found if op == "=~" else not found


def parse(text: object) -> Matcher:
    """One matcher from its text, `job=~bill.*`; raise MatcherError saying what is wrong."""
    if not isinstance(text, str):
        raise MatcherError(f"a matcher is text such as job=billing, not {type(text).__name__}")
    found = _TEXT_RE.fullmatch(text)
    if found is None:
        raise MatcherError(f"{text[:60]!r} is not <label><op><value> with op one of {' '.join(OPS)}")
    return Matcher(*found.groups())


def from_json(data: object) -> tuple[Matcher, ...]:
    """Matchers from JSON: an object of label -> value (equality), or a list of matcher texts. Sorted, deduplicated."""
    if isinstance(data, dict):
        if len(data) > MAX_MATCHERS:
            raise MatcherError(f"at most {MAX_MATCHERS} matchers")
        matchers = [Matcher(name, "=", value) for name, value in data.items()]
    elif isinstance(data, list):
        if len(data) > MAX_MATCHERS:
            raise MatcherError(f"at most {MAX_MATCHERS} matchers")
        matchers = [parse(text) for text in data]
    else:
        raise MatcherError('match must be an object such as {"job": "billing"} or a list such as ["job=~bill.*"]')
    return tuple(sorted(set(matchers), key=_key))


def from_texts(texts: list[str]) -> tuple[Matcher, ...]:
    """Matchers from query parameters (`?match=job=billing&match=…`)."""
    return from_json(list(texts))


def matches(matchers: tuple[Matcher, ...], labels: dict | None) -> bool:
    """True when `labels` satisfy every matcher."""
    return all(matcher.matches(labels) for matcher in matchers)


def _key(matcher: Matcher) -> tuple:
    return matcher.key
