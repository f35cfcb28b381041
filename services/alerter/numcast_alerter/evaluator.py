"""Rule states: inactive -> pending -> firing -> (resolved) inactive, driven by values and by the clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from numcast import alerts
from numcast_alerter.rules import Rule

STATES = ("inactive", "pending", "firing")

Series = tuple[tuple[str, str], ...]  # a series' label set, sorted by name
NO_SERIES: Series = ()  # the stream as it is today: one series, without labels


class AlertState:
    """Where one rule stands for one series, since when, and the value that brought it there.

    A rule has one state per label set of the series it watches, as a Prometheus rule has one alert per label
    set its expression returns; today's stream has one series without labels, so each rule has one state.
    """

    __slots__ = (
        "active_at",
        "fingerprint",
        "keep_since",
        "labels",
        "rule",
        "seen_at",
        "series",
        "since",
        "state",
        "value",
    )

    def __init__(self, rule: Rule, series: Series, now: float) -> None:
        self.rule, self.series = rule, series
        self.labels = {**dict(series), **rule.labels}  # the rule's labels win, as in Prometheus
        self.fingerprint = alerts.fingerprint(rule.alert, self.labels)
        self.state = "inactive"
        self.since = now  # when the current state began
        self.active_at: float | None = None  # when the condition began to hold: the alert's startsAt
        self.value: float | None = None
        self.seen_at: float | None = None  # the series' last value; None: none since the start
        self.keep_since: float | None = None  # firing, the condition false since then (keep_firing_for)

    def to_dict(self) -> dict:
        """The rule and its state, as /api/alerts shows them."""
        return {
            **self.rule.to_dict(),
            "state": self.state,
            "since": self.since,
            "activeAt": self.active_at,
            "value": self.value,
            "fingerprint": self.fingerprint,
        }


class Evaluator:
    """Evaluates value rules on every accepted value and silence, staleness and `for` on `tick()`.

    Each call returns the alert changes: a message for the alerts channel (`numcast.alerts`), `firing` when a
    rule has held for its `for`, `resolved` when a firing rule stops holding (after `keep_firing_for`). Pending
    is visible in `/api/alerts` but sent nowhere, as in Prometheus. Not thread-safe: the service holds a lock.
    """

    def __init__(self, rules: Iterable[Rule], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        now = clock()
        self.states: dict[tuple[str, Series], AlertState] = {
            (rule.alert, NO_SERIES): AlertState(rule, NO_SERIES, now) for rule in rules
        }
        self.heard_at: float | None = None  # the last accepted value of this run
        self.silent_since = now  # silence is counted from the start, so a stream that never starts alerts too

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in force."""
        return tuple({state.rule.alert: state.rule for state in self.states.values()}.values())

    def fingerprints(self) -> frozenset[str]:
        """The identity of every alert this evaluator may send."""
        return frozenset(state.fingerprint for state in self.states.values())

    def observe(self, values: list[float]) -> list[dict]:
        """Feed accepted values, oldest first; return the changes they caused."""
        now = self.clock()
        self.heard_at = self.silent_since = now
        changes: list[dict] = []
        for state in self.states.values():
            if state.rule.condition == "silent_for":
                self._evaluate(state, False, 0.0, now, changes)
                continue
            if state.series != NO_SERIES:  # values without labels belong to the series without labels
                continue
            state.seen_at = now
            for value in values:
                self._evaluate(state, state.rule.holds(value), value, now, changes)
        return changes

    def tick(self) -> list[dict]:
        """Advance the clock: silence, staleness, `for` and `keep_firing_for` are checked."""
        now = self.clock()
        changes: list[dict] = []
        silent = now - self.silent_since
        for state in self.states.values():
            rule = state.rule
            if rule.condition == "silent_for":
                self._evaluate(state, rule.holds(silent), round(silent, 3), now, changes)
            elif state.state != "inactive" and state.seen_at is not None and now - state.seen_at >= rule.stale_after:
                # Stale, as Prometheus marks a series without a sample for 5 minutes: the condition no longer holds.
                self._evaluate(state, False, state.value, now, changes)
            elif state.state == "firing" and state.keep_since is not None:
                self._evaluate(state, False, state.value, now, changes)  # keep_firing_for may have run out
            elif state.state == "pending" and now - state.active_at >= rule.for_seconds:
                self._fire(state, now, changes)
        return changes

    def replace(self, rules: Iterable[Rule]) -> list[dict]:
        """Put new rules in force: an unchanged rule keeps its states, a removed or changed firing one resolves."""
        now = self.clock()
        wanted = {rule.alert: rule for rule in rules}
        states: dict[tuple[str, Series], AlertState] = {}
        changes: list[dict] = []
        for key, state in self.states.items():
            if wanted.get(state.rule.alert) == state.rule:
                states[key] = state
            elif state.state == "firing":
                changes.append(self._message(state, "resolved", now))
        for name, rule in wanted.items():
            states.setdefault((name, NO_SERIES), AlertState(rule, NO_SERIES, now))
        self.states = states  # one assignment: a reader never sees half the new rules
        return changes

    def adopt(self, fingerprint: str, starts_at: float) -> list[dict] | None:
        """Take over a firing alert a previous run left in Redis: the changes to send, or None to resolve it.

        It is ours if a rule has that identity, and it fires on, keeping its start, unless this run has seen
        its condition false since it started. A rule that fired again before this is called keeps the older
        start (sent again as firing): an alert that held across the restart is never resolved in between.
        """
        state = next((s for s in self.states.values() if s.fingerprint == fingerprint), None)
        if state is None:
            return None
        rule = state.rule
        if rule.condition == "silent_for":
            if self.heard_at is not None:
                return None  # a value came since the start: the silence is over
            # No value since the start: the silence the last run saw goes on, from where it began.
            self.silent_since = min(self.silent_since, starts_at - rule.threshold)
        elif state.state == "inactive" and state.seen_at is not None:
            return None  # a value since the start, and the condition does not hold
        if state.state == "firing":
            if starts_at >= state.active_at:
                return []
            state.active_at = starts_at
            return [self._message(state, "firing", self.clock())]
        state.state, state.since, state.active_at, state.keep_since = "firing", starts_at, starts_at, None
        if state.seen_at is None and rule.condition != "silent_for":
            state.seen_at = self.clock()  # staleness counts from the adoption: when its last value came is unknown
        return []

    def firing(self) -> list[dict]:
        """The message of every firing alert, for re-sending."""
        now = self.clock()
        return [self._message(state, "firing", now) for state in self.states.values() if state.state == "firing"]

    def counts(self) -> dict[str, int]:
        """Alert states per state."""
        found = dict.fromkeys(STATES, 0)
        for state in self.states.values():
            found[state.state] += 1
        return found

    def _evaluate(self, state: AlertState, holds: bool, value: float, now: float, changes: list[dict]) -> None:
        if holds:
            state.keep_since = None
            if state.state == "inactive":
                state.state, state.since, state.active_at = "pending", now, now
            if state.state == "pending":
                state.value = value  # the value that triggered it; while firing it stays what fired it
                if now - state.active_at >= state.rule.for_seconds:
                    self._fire(state, now, changes)
        elif state.state == "firing" and self._keeps_firing(state, now):
            return
        elif state.state != "inactive":
            if state.state == "firing":
                changes.append(self._message(state, "resolved", now))
            state.state, state.since, state.active_at, state.value = "inactive", now, None, value
            state.keep_since = None

    @staticmethod
    def _keeps_firing(state: AlertState, now: float) -> bool:
        """keep_firing_for, as in Prometheus: counted from the first evaluation that found the condition false."""
        if state.rule.keep_firing_for <= 0:
            return False
        if state.keep_since is None:
            state.keep_since = now
        return now - state.keep_since < state.rule.keep_firing_for

    def _fire(self, state: AlertState, now: float, changes: list[dict]) -> None:
        state.state, state.since = "firing", now
        changes.append(self._message(state, "firing", now))

    def _message(self, state: AlertState, status: str, now: float) -> dict:
        rule = state.rule
        starts_at = alerts.rfc3339(state.active_at if state.active_at is not None else now)
        ends_at = alerts.rfc3339(now) if status == "resolved" else None
        annotations = rule.render(state.value, dict(state.series))
        return alerts.build(
            status, rule.alert, state.labels, annotations, starts_at, ends_at, "stream", state.fingerprint
        )
