"""Rule states: inactive -> pending -> firing -> (resolved) inactive, driven by values and by the clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from numcast import alerts
from numcast_alerter.rules import Rule

STATES = ("inactive", "pending", "firing")


class RuleState:
    """Where one rule stands, since when, and the value that brought it there."""

    __slots__ = ("active_at", "rule", "since", "state", "value")

    def __init__(self, rule: Rule, now: float) -> None:
        self.rule = rule
        self.state = "inactive"
        self.since = now  # when the current state began
        self.active_at: float | None = None  # when the condition began to hold: the alert's startsAt
        self.value: float | None = None

    def to_dict(self) -> dict:
        """The rule and its state, as /api/alerts shows them."""
        return {
            **self.rule.to_dict(),
            "state": self.state,
            "since": self.since,
            "activeAt": self.active_at,
            "value": self.value,
            "fingerprint": self.rule.fingerprint,
        }


class Evaluator:
    """Evaluates value rules on every accepted value and silence rules on `tick()`; returns the alert changes.

    A change is a message for the alerts channel (`numcast.alerts`): `firing` when a rule has held for its
    `for`, `resolved` when a firing rule stops holding. Pending is visible in `/api/alerts` but sent nowhere,
    as in Prometheus.
    """

    def __init__(self, rules: Iterable[Rule], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        now = clock()
        self.states = {rule.alert: RuleState(rule, now) for rule in rules}
        self.last_value_at = now  # silence is counted from the start, so a stream that never starts alerts too

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in force."""
        return tuple(state.rule for state in self.states.values())

    def observe(self, values: list[float]) -> list[dict]:
        """Feed accepted values, oldest first; return the changes they caused."""
        now = self.clock()
        self.last_value_at = now
        changes: list[dict] = []
        for state in self.states.values():
            if state.rule.condition == "silent_for":
                self._evaluate(state, False, 0.0, now, changes)
                continue
            for value in values:
                self._evaluate(state, state.rule.holds(value), value, now, changes)
        return changes

    def tick(self) -> list[dict]:
        """Advance the clock: pending rules whose `for` has passed fire, silence rules are checked."""
        now = self.clock()
        changes: list[dict] = []
        silent = now - self.last_value_at
        for state in self.states.values():
            if state.rule.condition == "silent_for":
                self._evaluate(state, state.rule.holds(silent), round(silent, 3), now, changes)
            elif state.state == "pending" and now - state.active_at >= state.rule.for_seconds:
                self._fire(state, now, changes)
        return changes

    def replace(self, rules: Iterable[Rule]) -> list[dict]:
        """Put new rules in force: an unchanged rule keeps its state, a removed or changed firing one resolves."""
        now = self.clock()
        changes: list[dict] = []
        old = self.states
        self.states = {}
        for rule in rules:
            kept = old.pop(rule.alert, None)
            if kept is not None and kept.rule == rule:
                self.states[rule.alert] = kept
            else:
                if kept is not None:
                    old[rule.alert] = kept
                self.states[rule.alert] = RuleState(rule, now)
        for state in old.values():
            if state.state == "firing":
                changes.append(self._message(state, "resolved", now))
        return changes

    def adopt(self, fingerprint: str, starts_at: float) -> bool:
        """Take over a firing alert a previous run left in Redis, if a rule of ours has that identity."""
        for state in self.states.values():
            if state.rule.fingerprint == fingerprint and state.state != "firing":
                state.state, state.since, state.active_at = "firing", starts_at, starts_at
                return True
        return False

    def firing(self) -> list[dict]:
        """The message of every firing rule, for re-sending."""
        now = self.clock()
        return [self._message(state, "firing", now) for state in self.states.values() if state.state == "firing"]

    def counts(self) -> dict[str, int]:
        """Rules per state."""
        found = dict.fromkeys(STATES, 0)
        for state in self.states.values():
            found[state.state] += 1
        return found

    def _evaluate(self, state: RuleState, holds: bool, value: float, now: float, changes: list[dict]) -> None:
        if holds:
            if state.state == "inactive":
                state.state, state.since, state.active_at = "pending", now, now
            if state.state == "pending":
                state.value = value  # the value that triggered it; while firing it stays what fired it
                if now - state.active_at >= state.rule.for_seconds:
                    self._fire(state, now, changes)
        elif state.state != "inactive":
            if state.state == "firing":
                changes.append(self._message(state, "resolved", now))
            state.state, state.since, state.active_at, state.value = "inactive", now, None, value

    def _fire(self, state: RuleState, now: float, changes: list[dict]) -> None:
        state.state, state.since = "firing", now
        changes.append(self._message(state, "firing", now))

    def _message(self, state: RuleState, status: str, now: float) -> dict:
        rule = state.rule
        starts_at = alerts.rfc3339(state.active_at if state.active_at is not None else now)
        ends_at = alerts.rfc3339(now) if status == "resolved" else None
        return alerts.build(status, rule.alert, rule.labels, rule.annotations, starts_at, ends_at, "stream")
