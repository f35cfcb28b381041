"""Rule states driven by values and a clock that the test moves: pending, firing, resolved, silence, reloads."""

import random

from numcast import alerts
from numcast.envelope import Envelope
from numcast_alerter.backlog import Backlog
from numcast_alerter.evaluator import Evaluator
from numcast_alerter.rules import parse

RULES = parse(
    """
rules:
  - {alert: High, above: 95, for: 3s, labels: {severity: warning}}
  - {alert: Low, below: 5}
  - {alert: Silent, silent_for: 5s}
""",
    "test",
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def gen(*values):
    """Samples of the generator's series, as the channel `numbers` carries them."""
    return [Envelope(n, value, 0.0, "test-1") for n, value in enumerate(values, 1)]


def left(rule, starts_at=900.0, alertname=None):
    """The firing alert of `rule` that a previous run left in Redis."""
    return alerts.build("firing", alertname or rule.alert, rule.labels, {}, alerts.rfc3339(starts_at), None, "stream")


def states(evaluator):
    return {state.rule.alert: state.state for state in evaluator.states.values()}


def state_of(evaluator, name):
    (found,) = [state for state in evaluator.states.values() if state.rule.alert == name]
    return found


def changes_of(changes):
    return [(change["alertname"], change["status"]) for change in changes]


def test_a_value_rule_is_pending_for_its_for_then_fires_then_resolves():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    assert evaluator.observe(gen(50, 96)) == []
    assert states(evaluator)["High"] == "pending"
    clock.now += 2.9
    assert evaluator.observe(gen(97)) == [] and evaluator.tick() == []
    clock.now += 0.1
    (fired,) = evaluator.tick()
    assert (fired["alertname"], fired["status"], fired["startsAt"]) == ("High", "firing", "1970-01-01T00:16:40.000Z")
    assert state_of(evaluator, "High").value == 97
    assert evaluator.observe(gen(99)) == [], "firing already: nothing new"
    (resolved,) = evaluator.observe(gen(90))
    assert (resolved["status"], resolved["endsAt"]) == ("resolved", "1970-01-01T00:16:43.000Z")
    assert states(evaluator)["High"] == "inactive"


def test_a_value_back_under_the_threshold_while_pending_sends_nothing():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    evaluator.observe(gen(96))
    clock.now += 1
    assert evaluator.observe(gen(10)) == []
    clock.now += 4  # past the 3 s `for`, not yet the 5 s of silence
    assert evaluator.tick() == [] and states(evaluator)["High"] == "inactive"


def test_for_0s_fires_on_the_first_value_past_the_threshold():
    (fired,) = Evaluator(RULES, Clock()).observe(gen(3))
    assert (fired["alertname"], fired["status"]) == ("Low", "firing")


def test_silence_fires_after_its_duration_and_a_value_resolves_it():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    clock.now += 4.9
    assert evaluator.tick() == []
    clock.now += 0.1
    (fired,) = evaluator.tick()
    assert fired["alertname"] == "Silent" and state_of(evaluator, "Silent").value == 5
    (resolved,) = evaluator.observe(gen(50))
    assert (resolved["alertname"], resolved["status"]) == ("Silent", "resolved")


def test_a_reload_keeps_unchanged_rules_and_resolves_a_removed_firing_one():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    evaluator.observe(gen(1))
    evaluator.observe(gen(96))
    assert states(evaluator) == {"High": "pending", "Low": "inactive", "Silent": "inactive"}
    evaluator.observe(gen(2))  # Low fires again; High goes back to inactive
    changes = evaluator.replace(
        parse("rules:\n  - {alert: High, above: 95, for: 3s, labels: {severity: warning}}", "t")
    )
    assert [(c["alertname"], c["status"]) for c in changes] == [("Low", "resolved")]
    assert list(states(evaluator)) == ["High"]


def test_a_firing_alert_left_by_a_previous_run_is_adopted_by_its_rule():
    evaluator = Evaluator(RULES, Clock())
    assert evaluator.adopt(left(RULES[0])) == [], "in Redis already: nothing to send"
    assert evaluator.adopt(left(RULES[0], alertname="Other")) is None
    (firing,) = evaluator.firing()
    assert (firing["alertname"], firing["startsAt"]) == ("High", "1970-01-01T00:15:00.000Z")


def test_an_adopted_silence_alert_fires_on_with_its_start_until_a_value_comes():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    silent = RULES[2]
    assert evaluator.adopt(left(silent)) == []
    for _ in range(40):  # 10 s of ticks: more than its 5 s of silence, counted from the start
        clock.now += 0.25
        assert evaluator.tick() == [], "never resolved, never fired again"
    (firing,) = [m for m in evaluator.firing() if m["alertname"] == "Silent"]
    assert firing["startsAt"] == "1970-01-01T00:15:00.000Z"
    (resolved,) = evaluator.observe(gen(50))
    assert (resolved["alertname"], resolved["status"], resolved["startsAt"]) == (
        "Silent", "resolved", "1970-01-01T00:15:00.000Z"
    )  # fmt: skip


def test_an_alert_that_fired_again_before_the_adoption_keeps_its_first_start_and_is_not_resolved():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    (fired,) = evaluator.observe(gen(3))  # Low fires before the alerter has read what the last run left
    assert fired["startsAt"] == "1970-01-01T00:16:40.000Z"
    (again,) = evaluator.adopt(left(RULES[1]))
    assert (again["status"], again["startsAt"]) == ("firing", "1970-01-01T00:15:00.000Z")
    assert evaluator.adopt(left(RULES[1], 950.0)) == [], "a later start changes nothing"


def test_an_alert_whose_condition_was_seen_false_since_the_start_is_not_adopted():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    evaluator.observe(gen(50))
    assert evaluator.adopt(left(RULES[0])) is None, "a value below: resolve it"
    assert evaluator.adopt(left(RULES[2])) is None, "a value came: the silence is over"


STALE = """
rules:
  - {alert: High, above: 95, stale_after: 10s}
  - {alert: Default, above: 95}
"""


def test_a_value_rule_whose_series_goes_silent_goes_stale_and_resolves():
    clock = Clock()
    evaluator = Evaluator(parse(STALE, "test"), clock)
    assert changes_of(evaluator.observe(gen(99))) == [("High", "firing"), ("Default", "firing")]
    clock.now += 9.9
    assert evaluator.tick() == []
    clock.now += 0.1
    (resolved,) = evaluator.tick()
    assert (resolved["alertname"], resolved["status"], resolved["endsAt"]) == (
        "High", "resolved", "1970-01-01T00:16:50.000Z"
    )  # fmt: skip
    assert states(evaluator) == {"Default": "firing"}, "stale and inactive: forgotten"
    clock.now += 300 - 10 - 0.1
    assert evaluator.tick() == []
    clock.now += 0.1
    assert changes_of(evaluator.tick()) == [("Default", "resolved")], "Prometheus' 5 minutes by default"
    assert evaluator.tick() == []
    assert changes_of(evaluator.observe(gen(99))) == [("High", "firing"), ("Default", "firing")], "a value: fresh"


def flapping(keep_firing_for: str) -> list[tuple[str, str]]:
    rules = parse(f"rules:\n  - {{alert: High, above: 95, keep_firing_for: {keep_firing_for}}}\n", "t")
    clock = Clock()
    evaluator = Evaluator(rules, clock)
    values = random.Random(16).choices(range(101), k=2000)
    changes = []
    for value in values:  # 2,000 random values at 100 a second
        clock.now += 0.01
        changes += evaluator.observe(gen(value)) + evaluator.tick()
    for _ in range(200):  # then 50 s below the threshold
        clock.now += 0.25
        changes += evaluator.observe(gen(10)) + evaluator.tick()
    return changes_of(changes)


def test_keep_firing_for_damps_a_flapping_value_into_one_alert():
    assert len(flapping("0s")) > 150, "the issue's flood: a change for almost every crossing"
    assert flapping("10s") == [("High", "firing"), ("High", "resolved")]


def test_keep_firing_for_counts_from_when_the_condition_stopped_holding():
    rules = parse("rules:\n  - {alert: High, above: 95, keep_firing_for: 5s}\n", "t")
    clock = Clock()
    evaluator = Evaluator(rules, clock)
    assert changes_of(evaluator.observe(gen(99))) == [("High", "firing")]
    clock.now += 1
    assert evaluator.observe(gen(10)) == [], "keeps firing"
    clock.now += 4
    assert evaluator.observe(gen(99)) == [], "holds again within 5 s: the count starts over"
    clock.now += 1
    assert evaluator.observe(gen(10)) == []
    clock.now += 4.9
    assert evaluator.tick() == []
    clock.now += 0.1
    (resolved,) = evaluator.tick()
    assert resolved["endsAt"] == "1970-01-01T00:16:51.000Z"  # 5 s after the last value below


def test_the_backlog_keeps_the_newest_change_per_alert_and_drops_the_oldest_beyond_its_limit():
    backlog = Backlog(limit=2)
    assert backlog.put("a", {"n": 1}) and backlog.put("a", {"n": 2}) and backlog.put("b", {"n": 3})
    assert [item for _, item in backlog.peek(10)] == [{"n": 2}, {"n": 3}]
    assert not backlog.put("c", {"n": 4})
    assert backlog.dropped == 1 and [key for key, _ in backlog.peek(10)] == ["b", "c"]
    batch = backlog.peek(1)
    backlog.put("b", {"n": 5})  # changed while being delivered: stays for the next delivery
    backlog.done(batch)
    assert [item for _, item in backlog.peek(10)] == [{"n": 4}, {"n": 5}]
