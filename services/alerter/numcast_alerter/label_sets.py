"""One rule's alert states, one per label set of the series it watches, and how /api/alerts summarises them."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from numcast import alerts, matchers
from numcast_alerter.rules import Rule

STATES = ("inactive", "pending", "firing")
REFUSALS = ("limit", "total", "invalid")  # a new label set refused: the rule's max_label_sets, the alerter's, too big
LISTED = 20  # label sets per rule shown by /api/alerts and the control page, firing first; all are counted
RANK = {"firing": 0, "pending": 1, "inactive": 2}

Labels = tuple[tuple[str, str], ...]  # an alert's labels (the series' and the rule's), sorted by name: its identity


class AlertState:
    """Where one rule stands for one label set, since when, and the value that brought it there."""

    __slots__ = (
        "active_at",
        "fingerprint",
        "identity",
        "keep_since",
        "labels",
        "message",
        "rule",
        "seen_at",
        "series",
        "silent_since",
        "since",
        "state",
        "value",
    )

    def __init__(self, rule: Rule, identity: Labels, series: Mapping[str, str], now: float) -> None:
        self.rule, self.identity, self.labels = rule, identity, dict(identity)
        self.series = series  # the labels of the series, for `{{ $labels.<name> }}`
        self.fingerprint = alerts.fingerprint(rule.alert, self.labels)
        self.state = "inactive"
        self.since = now  # when the current state began
        self.active_at: float | None = None  # when the condition began to hold: the alert's startsAt
        self.value: float | None = None
        self.seen_at: float | None = None  # this label set's last value; None: none since the start
        self.silent_since = now  # silent_for: the silence is counted from here
        self.keep_since: float | None = None  # firing, the condition false since then (keep_firing_for)
        self.message: dict | None = None  # the firing message, built once per firing: re-sends reuse it

    def to_dict(self) -> dict:
        """The label set and its state, as /api/alerts shows them."""
        return {
            "labels": self.labels,
            "state": self.state,
            "since": self.since,
            "activeAt": self.active_at,
            "value": self.value,
            "fingerprint": self.fingerprint,
        }


class RuleStates:
    """One rule's alert states by label set: at most its `max_label_sets`, plus what it refused."""

    def __init__(self, rule: Rule, now: float) -> None:
        self.rule, self.since = rule, now
        self.states: dict[Labels, AlertState] = {}
        self.base = tuple(sorted(rule.labels.items()))  # the labels of a series without labels
        # silent_for: the rule's own alert while it knows no label set, labelled as Prometheus' absent() labels it
        self.absent = tuple(sorted(rule.absent_labels.items()))
        self.heard_at = now  # silent_for: the last value of any label set it watches (or when it came in force)
        self.refused = dict.fromkeys(REFUSALS, 0)

    def identity(self, labels: Mapping[str, str]) -> Labels:
        """The alert's labels for a series with `labels`: those and the rule's, which win, as in Prometheus."""
        if not labels:
            return self.base
        merged = {**labels, **self.rule.labels}
        merged.pop("alertname", None)  # the rule's name is the alertname, as Prometheus sets it last
        return tuple(sorted(merged.items()))

    def placeholder(self) -> AlertState | None:
        """The rule's own silent_for alert, while no label set has had a value (None otherwise)."""
        state = self.states.get(self.absent)
        return state if state is not None and state.seen_at is None and self.rule.condition == "silent_for" else None

    def owns(self, labels: Mapping[str, str]) -> bool:
        """True when an alert with these labels (and this rule's name) can be one of this rule's."""
        rule = self.rule
        if any(labels.get(name) != value for name, value in rule.labels.items()):
            return False
        if not rule.labelled:
            return len(labels) == len(rule.labels)  # the generator's series has no labels: only the rule's
        return matchers.matches(rule.matchers, labels) or tuple(sorted(labels.items())) == self.absent

    def summary(self) -> dict:
        """The rule, how many label sets are in each state, and the first LISTED of them, firing first."""
        counts = dict.fromkeys(STATES, 0)
        active = []
        for state in self.states.values():
            counts[state.state] += 1
            if state.state != "inactive":
                active.append(state)
        active.sort(key=lambda s: (RANK[s.state], s.active_at or s.since))
        listed = active[:LISTED]
        if len(listed) < LISTED:
            rest = (s for s in self.states.values() if s.state == "inactive")
            listed += itertools.islice(rest, LISTED - len(listed))
        top = listed[0] if listed else None  # the state the rule is shown in: its worst label set's
        return {
            **self.rule.to_dict(),
            "state": top.state if top else "inactive",
            "since": top.since if top else self.since,
            "activeAt": top.active_at if top else None,
            "value": top.value if top else None,
            "fingerprint": top.fingerprint if top else alerts.fingerprint(self.rule.alert, dict(self.absent)),
            "counts": counts,
            "refused": dict(self.refused),
            "label_sets": [state.to_dict() for state in listed],
        }
