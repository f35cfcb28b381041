"""What each browser watches: the series it named in a `subscribe` event, and label matchers; bounded.

Browsers that ask for the same thing share one Subscription (equal series and matchers, in any order), so a
fan-out round builds one frame per distinct subscription, however many browsers hold it. A browser that never
subscribes watches the generator's series, as before there were others.
"""

from __future__ import annotations

from numcast.envelope import GENERATOR_SERIES, SERIES_RULE, valid_series
from numcast.matchers import RULE as MATCH_RULE
from numcast.matchers import Matcher, MatcherError, from_json, matches

KEYS = frozenset(("series", "match"))


class SubscribeError(ValueError):
    """A `subscribe` refused: `reason` labels the counter, `field` names what was wrong."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.field = reason, field

    def to_dict(self) -> dict:
        """The `subscribe_error` event's payload."""
        return {"error": str(self), "reason": self.reason, "field": self.field}


class Subscription:
    """Series names and matchers; `users` counts the browsers holding it (the registry's business)."""

    __slots__ = ("key", "matchers", "names", "users")

    def __init__(self, names: tuple[str, ...], matchers: tuple[Matcher, ...] = ()) -> None:
        self.names = tuple(sorted(set(names)))  # in any order, with repeats: the same subscription
        self.matchers = tuple(sorted(set(matchers), key=_key))
        self.key = (self.names, tuple(matcher.key for matcher in self.matchers))
        self.users = 0

    def accepts(self, labels: dict | None) -> bool:
        """True when a sample with `labels`, of one of `names`, is for this subscription."""
        return matches(self.matchers, labels)

    def to_dict(self) -> dict:
        """As the acknowledgement of `subscribe` says it back."""
        return {"series": list(self.names), "match": [matcher.text() for matcher in self.matchers]}


def parse(data: object, max_series: int) -> Subscription:
    """A Subscription from a `subscribe` payload, `{"series": [...], "match": ...}`; raise SubscribeError."""
    if not isinstance(data, dict) or not data.keys() <= KEYS or "series" not in data:
        raise SubscribeError(
            "invalid", "", 'subscribe takes one object: {"series": ["name", ...]}, optionally with "match"'
        )
    series = data["series"]
    if not isinstance(series, list) or not series:
        raise SubscribeError("invalid", "series", "series must be a non-empty list of series names")
    if len(series) > max_series:
        raise SubscribeError(
            "too_many_series", "series", f"at most {max_series} series in one subscription (SUBSCRIBE_MAX_SERIES)"
        )
    for name in series:
        if not valid_series(name):
            raise SubscribeError("invalid", "series", f"{str(name)[:60]!r} is not a series name: {SERIES_RULE}")
    try:
        matchers = from_json(data["match"]) if data.get("match") is not None else ()
    except MatcherError as exc:
        raise SubscribeError("invalid", "match", f"{exc} ({MATCH_RULE})") from None
    return Subscription(tuple(series), matchers)


class Subscriptions:
    """The distinct subscriptions held now, at most `limit` besides the default one. Not thread-safe: the
    fan-out calls it under its lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.default = Subscription((GENERATOR_SERIES,))
        self._held: dict[tuple, Subscription] = {self.default.key: self.default}

    def __len__(self) -> int:
        """Distinct subscriptions held now, the default one included."""
        return len(self._held)

    def acquire(self, wanted: Subscription) -> Subscription:
        """The subscription equal to `wanted`, held once more; SubscribeError when a new one would pass `limit`."""
        held = self._held.get(wanted.key)
        if held is None:
            if len(self._held) - 1 >= self.limit:
                raise SubscribeError(
                    "subscriptions_full",
                    "series",
                    f"this worker serves {self.limit} distinct subscriptions already (MAX_SUBSCRIPTIONS): "
                    "choose a set another browser watches, or try later",
                )
            held = self._held[wanted.key] = wanted
        held.users += 1
        return held

    def release(self, held: Subscription) -> None:
        """One browser less holds `held`; forgotten when none does (never the default one)."""
        held.users -= 1
        if held.users <= 0 and held is not self.default:
            self._held.pop(held.key, None)


def _key(matcher: Matcher) -> tuple:
    return matcher.key
