"""Rule states driven by values and a clock that the test moves: pending, firing, resolved, silence, reloads."""

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


def states(evaluator):
    return {name: state.state for name, state in evaluator.states.items()}


def test_a_value_rule_is_pending_for_its_for_then_fires_then_resolves():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    assert evaluator.observe([50, 96]) == []
    assert states(evaluator)["High"] == "pending"
    clock.now += 2.9
    assert evaluator.observe([97]) == [] and evaluator.tick() == []
    clock.now += 0.1
    (fired,) = evaluator.tick()
    assert (fired["alertname"], fired["status"], fired["startsAt"]) == ("High", "firing", "1970-01-01T00:16:40.000Z")
    assert evaluator.states["High"].value == 97
    assert evaluator.observe([99]) == [], "firing already: nothing new"
    (resolved,) = evaluator.observe([90])
    assert (resolved["status"], resolved["endsAt"]) == ("resolved", "1970-01-01T00:16:43.000Z")
    assert states(evaluator)["High"] == "inactive"


def test_a_value_back_under_the_threshold_while_pending_sends_nothing():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    evaluator.observe([96])
    clock.now += 1
    assert evaluator.observe([10]) == []
    clock.now += 4  # past the 3 s `for`, not yet the 5 s of silence
    assert evaluator.tick() == [] and states(evaluator)["High"] == "inactive"


def test_for_0s_fires_on_the_first_value_past_the_threshold():
    (fired,) = Evaluator(RULES, Clock()).observe([3])
    assert (fired["alertname"], fired["status"]) == ("Low", "firing")


def test_silence_fires_after_its_duration_and_a_value_resolves_it():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    clock.now += 4.9
    assert evaluator.tick() == []
    clock.now += 0.1
    (fired,) = evaluator.tick()
    assert fired["alertname"] == "Silent" and evaluator.states["Silent"].value == 5
    (resolved,) = evaluator.observe([50])
    assert (resolved["alertname"], resolved["status"]) == ("Silent", "resolved")


def test_a_reload_keeps_unchanged_rules_and_resolves_a_removed_firing_one():
    clock = Clock()
    evaluator = Evaluator(RULES, clock)
    evaluator.observe([1])
    evaluator.observe([96])
    assert states(evaluator) == {"High": "pending", "Low": "inactive", "Silent": "inactive"}
    evaluator.observe([2])  # Low fires again; High goes back to inactive
    changes = evaluator.replace(
        parse("rules:\n  - {alert: High, above: 95, for: 3s, labels: {severity: warning}}", "t")
    )
    assert [(c["alertname"], c["status"]) for c in changes] == [("Low", "resolved")]
    assert list(evaluator.states) == ["High"]


def test_a_firing_alert_left_by_a_previous_run_is_adopted_by_its_rule():
    evaluator = Evaluator(RULES, Clock())
    assert evaluator.adopt(RULES[0].fingerprint, 900.0)
    assert not evaluator.adopt("0000000000000000", 900.0)
    (firing,) = evaluator.firing()
    assert (firing["alertname"], firing["startsAt"]) == ("High", "1970-01-01T00:15:00.000Z")


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
