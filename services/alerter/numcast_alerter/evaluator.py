"""Alert states per rule and label set: inactive -> pending -> firing -> (resolved) inactive, by values and clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from numcast import alerts, matchers
from numcast.envelope import GENERATOR_SERIES
from numcast_alerter.label_sets import RANK, STATES, AlertState, Labels, RuleStates
from numcast_alerter.rules import MAX_LABEL_SETS, Rule

_WORST_VALUE = -2.2250738585072014e-308  # the longest `{{ $value }}` a message can carry, to check its size once


class Sample(Protocol):
    """What a rule reads of an envelope."""

    series: str | None  # None: the generator's series
    labels: dict[str, str] | None
    value: float


class Evaluator:
    """Evaluates value rules on every accepted sample and silence, staleness and `for` on `tick()`.

    Each rule keeps one state per label set of the series it watches, as a Prometheus rule keeps one alert per
    label set its expression returns. Each call returns the alert changes: a message for the alerts channel
    (`numcast.alerts`), `firing` when a state has held for its `for`, `resolved` when a firing one stops holding
    (after `keep_firing_for`). Pending is visible in `/api/alerts` but sent nowhere, as in Prometheus.

    Memory is bounded: a rule keeps at most its `max_label_sets` states and all rules together at most
    `max_label_sets` (ALERT_MAX_LABEL_SETS); a new label set past either is refused and counted. A value rule's
    label set that has gone stale (no value for `stale_after`) is forgotten once inactive; a silent_for rule's
    is forgotten (resolved) after `stale_after` of silence. Not thread-safe: the service holds a lock.
    """

    def __init__(
        self, rules: Iterable[Rule], clock: Callable[[], float] = time.time, max_label_sets: int = MAX_LABEL_SETS
    ) -> None:
        self.clock, self.max_label_sets = clock, max_label_sets
        self.groups: dict[str, RuleStates] = {}
        self.by_series: dict[str, tuple[RuleStates, ...]] = {}
        self.size = 0  # states of every rule
        self.refusals: dict[tuple[str, str], tuple[int, dict]] = {}  # (rule, reason) -> (count, an example's labels)
        self._install(rules, {})

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in force."""
        return tuple(group.rule for group in self.groups.values())

    @property
    def states(self) -> dict[tuple[str, Labels], AlertState]:
        """Every state, by rule name and label set."""
        return {(name, key): state for name, group in self.groups.items() for key, state in group.states.items()}

    def owns(self, alertname: str, labels: Mapping[str, str]) -> bool:
        """True when an alert with this name and labels is (or can be) one of this evaluator's own."""
        group = self.groups.get(alertname)
        return group is not None and group.owns(labels)

    def observe(self, samples: Iterable[Sample]) -> list[dict]:
        """Feed accepted samples, oldest first; return the changes they caused."""
        now = self.clock()
        changes: list[dict] = []
        index = self.by_series
        for sample in samples:
            groups = index.get(sample.series or GENERATOR_SERIES)
            if not groups:
                continue
            labels = sample.labels or {}
            for group in groups:
                rule = group.rule
                if rule.matchers and not matchers.matches(rule.matchers, labels):
                    continue
                identity = group.identity(labels)
                state = group.states.get(identity) or self._add(group, identity, labels, now, changes)
                if state is None:
                    continue
                state.seen_at, state.series = now, labels
                if rule.condition == "silent_for":
                    group.heard_at = state.silent_since = now
                    self._evaluate(state, False, 0.0, now, changes)
                else:
                    self._evaluate(state, rule.holds(sample.value), sample.value, now, changes)
        return changes

    def tick(self) -> list[dict]:
        """Advance the clock: silence, staleness, `for` and `keep_firing_for` are checked; stale label sets go."""
        now = self.clock()
        changes: list[dict] = []
        for group in self.groups.values():
            rule = group.rule
            gone: list[AlertState] = []
            for state in group.states.values():
                if rule.condition == "silent_for":
                    silent = now - state.silent_since
                    own = state.seen_at is None and state.identity == group.absent  # the rule's own alert
                    if rule.stale_after is not None and silent >= rule.stale_after and not own:
                        gone.append(state)  # silent this long, the label set is gone (a pod deleted...)
                    else:
                        self._evaluate(state, rule.holds(silent), round(silent, 3), now, changes)
                    continue
                stale = state.seen_at is not None and now - state.seen_at >= rule.stale_after
                if stale and state.state != "inactive":
                    # Stale, as Prometheus marks a series without a sample for 5 minutes: the condition no longer holds.
                    self._evaluate(state, False, state.value, now, changes)
                elif state.state == "firing" and state.keep_since is not None:
                    self._evaluate(state, False, state.value, now, changes)  # keep_firing_for may have run out
                elif state.state == "pending" and now - state.active_at >= rule.for_seconds:
                    self._fire(state, now, changes)
                if stale and state.state == "inactive":
                    gone.append(state)
            gone.sort(key=lambda state: state.identity == group.absent)  # the rule's own labels last: see below
            for state in gone:
                if rule.condition == "silent_for" and state.identity == group.absent and len(group.states) == 1:
                    state.seen_at = None  # the last label set has the rule's own labels: it goes on as that alert
                else:
                    self._drop(group, state, now, changes)
            if rule.condition == "silent_for" and not group.states:
                self._absent(group, now, changes)
        return changes

    def replace(self, rules: Iterable[Rule]) -> list[dict]:
        """Put new rules in force: an unchanged rule keeps its states, a removed or changed firing one resolves."""
        now = self.clock()
        rules = tuple(rules)
        wanted = {rule.alert: rule for rule in rules}
        kept: dict[str, RuleStates] = {}
        changes: list[dict] = []
        for name, group in self.groups.items():
            if wanted.get(name) == group.rule:
                kept[name] = group
                continue
            for state in group.states.values():
                if state.state == "firing":
                    changes.append(self._message(state, "resolved", now))
        self._install(rules, kept)
        return changes

    def adopt(self, message: dict) -> list[dict] | None:
        """Take over a firing alert a previous run left in Redis: the changes to send, or None to resolve it.

        It is ours if a rule of that name watches its label set, and it fires on, keeping its start, unless this
        run has seen its condition false since it started. A rule that fired again before this is called keeps
        the older start (sent again as firing): an alert that held across the restart is never resolved in between.
        """
        now = self.clock()
        starts_at = alerts.timestamp(message["startsAt"])
        group = self.groups.get(message["alertname"])
        if group is None or not group.owns(message["labels"]):
            return None
        rule = group.rule
        identity = tuple(sorted(message["labels"].items()))
        changes: list[dict] = []
        state = group.states.get(identity)
        if state is None:
            series = {name: value for name, value in message["labels"].items() if name not in rule.labels}
            state = self._add(group, identity, series, now, changes)
            if state is None:
                return None
        if rule.condition == "silent_for":
            if state.seen_at is not None:
                return None  # a value came since the start: the silence is over
            # No value since the start: the silence the last run saw goes on, from where it began.
            state.silent_since = min(state.silent_since, starts_at - rule.threshold)
        elif state.seen_at is not None:
            if state.state == "inactive":
                return None  # a value since the start, and the condition does not hold
        else:
            state.seen_at = now  # staleness counts from the adoption: when its last value came is unknown
        if state.state == "firing":
            if starts_at >= state.active_at:
                return changes
            state.active_at, state.message = starts_at, None
            return [*changes, self._firing_message(state, now)]
        state.state, state.since, state.active_at, state.keep_since = "firing", starts_at, starts_at, None
        state.message = None
        return changes

    def firing(self) -> list[dict]:
        """The message of every firing alert, for re-sending."""
        now = self.clock()
        return [
            self._firing_message(state, now)
            for group in self.groups.values()
            for state in group.states.values()
            if state.state == "firing"
        ]

    def counts(self) -> dict[str, int]:
        """Label sets per state, every rule's."""
        found = dict.fromkeys(STATES, 0)
        for group in self.groups.values():
            for state in group.states.values():
                found[state.state] += 1
        return found

    def rule_counts(self) -> dict[str, int]:
        """Rules per state, a rule being in the state of its worst label set (inactive with none)."""
        found = dict.fromkeys(STATES, 0)
        for group in self.groups.values():
            ranks = {RANK[state.state] for state in group.states.values()}
            found[STATES[2 - min(ranks, default=2)]] += 1
        return found

    def summaries(self) -> list[dict]:
        """Each rule with its label sets, as /api/alerts and the control page show them."""
        return [group.summary() for group in self.groups.values()]

    def take_refusals(self) -> dict[tuple[str, str], tuple[int, dict]]:
        """The label sets refused since the last call: (rule, reason) -> (how many, one's labels)."""
        refusals, self.refusals = self.refusals, {}
        return refusals

    def _install(self, rules: tuple[Rule, ...] | Iterable[Rule], kept: dict[str, RuleStates]) -> None:
        now = self.clock()
        groups: dict[str, RuleStates] = {}
        for rule in rules:
            group = kept.get(rule.alert)
            if group is None:
                group = RuleStates(rule, now)
                if rule.condition == "silent_for":
                    self._absent(group, now, [])  # silence is counted from the start: a stream that never starts
            groups[rule.alert] = group
        by_series: dict[str, list[RuleStates]] = {}
        for group in groups.values():
            by_series.setdefault(group.rule.series, []).append(group)
        # One assignment each: a reader (the webhook, the status page) never sees half the new rules.
        self.groups = groups
        self.by_series = {series: tuple(found) for series, found in by_series.items()}
        self.size = sum(len(group.states) for group in groups.values())

    def _add(
        self, group: RuleStates, identity: Labels, series: Mapping[str, str], now: float, changes: list[dict]
    ) -> AlertState | None:
        """A new label set's state, or None when it is refused (counted in `refusals`)."""
        rule = group.rule
        absent = group.placeholder()  # gives its place to the first label set
        held = len(group.states) - (absent is not None)
        if held >= rule.max_label_sets:
            return self._refuse(group, "limit", identity)
        if self.size - (absent is not None) >= self.max_label_sets:
            return self._refuse(group, "total", identity)
        state = AlertState(rule, identity, series, now)
        if not self._fits(state, now):
            return self._refuse(group, "invalid", identity)
        if absent is not None:
            self._drop(group, absent, now, changes)
        group.states[identity] = state
        self.size += 1
        return state

    def _fits(self, state: AlertState, now: float) -> bool:
        """True when every message this label set would send passes the channel's checks and size limit."""
        try:
            annotations = state.rule.render(_WORST_VALUE, state.series)
            message = alerts.build(
                "resolved", state.rule.alert, state.labels, annotations, alerts.rfc3339(now), alerts.rfc3339(now),
                "stream", state.fingerprint,
            )  # fmt: skip
        except alerts.AlertError:
            return False  # more labels than a message may carry
        return len(alerts.encode(message).encode()) <= alerts.MAX_BYTES

    def _refuse(self, group: RuleStates, reason: str, identity: Labels) -> None:
        group.refused[reason] += 1
        count, example = self.refusals.get((group.rule.alert, reason), (0, dict(identity)))
        self.refusals[group.rule.alert, reason] = (count + 1, example)
        return None

    def _drop(self, group: RuleStates, state: AlertState, now: float, changes: list[dict]) -> None:
        """Forget a label set, resolving its alert if it fires."""
        if state.state == "firing":
            changes.append(self._message(state, "resolved", now))
        del group.states[state.identity]
        self.size -= 1

    def _absent(self, group: RuleStates, now: float, changes: list[dict]) -> None:
        """Start the rule's own silent_for alert: no label set is known, the silence counts from the last value."""
        state = AlertState(group.rule, group.absent, group.rule.fixed_labels, now)  # $labels: what is known
        state.silent_since = group.heard_at
        group.states[group.absent] = state
        self.size += 1
        silent = now - state.silent_since
        self._evaluate(state, group.rule.holds(silent), round(silent, 3), now, changes)

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
            state.keep_since = state.message = None

    @staticmethod
    def _keeps_firing(state: AlertState, now: float) -> bool:
        """keep_firing_for, as in Prometheus: counted from the first evaluation that found the condition false."""
        if state.rule.keep_firing_for <= 0:
            return False
        if state.keep_since is None:
            state.keep_since = now
        return now - state.keep_since < state.rule.keep_firing_for

    def _fire(self, state: AlertState, now: float, changes: list[dict]) -> None:
        state.state, state.since, state.message = "firing", now, None
        changes.append(self._firing_message(state, now))

    def _firing_message(self, state: AlertState, now: float) -> dict:
        if state.message is None:  # while it fires its value, labels and start stay: one message serves every send
            state.message = self._message(state, "firing", now)
        return state.message

    def _message(self, state: AlertState, status: str, now: float) -> dict:
        rule = state.rule
        starts_at = alerts.rfc3339(state.active_at if state.active_at is not None else now)
        ends_at = alerts.rfc3339(now) if status == "resolved" else None
        annotations = rule.render(state.value, state.series)
        return alerts.build(
            status, rule.alert, state.labels, annotations, starts_at, ends_at, "stream", state.fingerprint
        )
