"""Rules per label set: a rule's series and matchers, one alert per label set with its labels and annotations,
staleness and silence per label set, and the bounds on how many label sets the rules keep."""

import pytest

from numcast import alerts
from numcast.envelope import Envelope
from numcast_alerter.evaluator import Evaluator
from numcast_alerter.rules import RulesError, parse


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def push(series, value, **labels):
    """One pushed sample, as the push channel carries it."""
    return Envelope(1, value, 0.0, "control-1.push", series, labels)


def gen(value):
    """One of the generator's values, as `numbers` carries it."""
    return Envelope(1, value, 0.0, "control-1")


def by_labels(evaluator, name):
    """label set (as a dict's items, sorted) -> state name, for rule `name`."""
    return {key: state.state for key, state in evaluator.groups[name].states.items()}


def changes_of(changes):
    return [(c["alertname"], c["status"], c["labels"]) for c in changes]


DEEP = """
rules:
  - alert: QueueDeep
    series: queue_depth
    match: [queue=~bill.*|mail, env!=test]
    above: 100
    labels: {severity: warning}
    annotations: {summary: "{{ $labels.queue }} holds {{ $value }}"}
"""


def test_a_rule_watches_its_series_and_the_label_sets_its_matchers_select():
    evaluator = Evaluator(parse(DEEP, "t"), Clock())
    changes = evaluator.observe([
        push("queue_depth", 500, queue="billing"),
        push("queue_depth", 500, queue="mail", env="prod"),
        push("queue_depth", 500, queue="billing", env="test"),  # env!=test
        push("queue_depth", 500, queue="print"),  # queue=~bill.*|mail, matched whole
        push("queue_depth", 500, queue="billing-eu"),
        push("other_series", 500, queue="billing"),
        gen(500),  # the generator's series, numcast_value
    ])  # fmt: skip
    assert sorted(c["labels"]["queue"] for c in changes) == ["billing", "billing-eu", "mail"]
    assert set(by_labels(evaluator, "QueueDeep")) == {
        (("queue", "billing"), ("severity", "warning")),
        (("env", "prod"), ("queue", "mail"), ("severity", "warning")),
        (("queue", "billing-eu"), ("severity", "warning")),
    }


def test_a_rule_without_series_watches_the_generator_alone_as_before():
    (rule,) = parse("rules:\n  - {alert: High, above: 95}\n", "t")
    assert rule.series == "numcast_value" and rule.matchers == () and not rule.labelled
    evaluator = Evaluator((rule,), Clock())
    assert evaluator.observe([push("queue_depth", 500, queue="billing"), push("cpu", 99)]) == []
    (fired,) = evaluator.observe([gen(99)])
    assert (fired["alertname"], fired["labels"], fired["fingerprint"]) == ("High", {}, rule.fingerprint)


def test_each_label_set_is_an_alert_of_its_own_that_fires_and_resolves_alone():
    clock = Clock()
    evaluator = Evaluator(parse(DEEP.replace("above: 100", "above: 100\n    for: 2s"), "t"), clock)
    billing, mail = {"queue": "billing"}, {"queue": "mail"}
    assert evaluator.observe([push("queue_depth", 500, **billing), push("queue_depth", 7, **mail)]) == []
    assert sorted(by_labels(evaluator, "QueueDeep").values()) == ["inactive", "pending"]
    clock.now += 2
    (fired,) = evaluator.tick()
    assert changes_of([fired]) == [("QueueDeep", "firing", {**billing, "severity": "warning"})]
    assert fired["annotations"] == {"summary": "billing holds 500"}
    assert fired["fingerprint"] == alerts.fingerprint("QueueDeep", {**billing, "severity": "warning"})
    assert evaluator.observe([push("queue_depth", 600, **billing)]) == [], "firing already"
    clock.now += 1
    assert evaluator.observe([push("queue_depth", 900, **mail)]) == [], "mail is pending now, billing fires on"
    (resolved,) = evaluator.observe([push("queue_depth", 1, **billing)])
    assert changes_of([resolved]) == [("QueueDeep", "resolved", {**billing, "severity": "warning"})]
    assert resolved["annotations"] == {"summary": "billing holds 500"}, "the value that fired it"
    clock.now += 2
    (fired,) = evaluator.tick()
    assert changes_of([fired]) == [("QueueDeep", "firing", {**mail, "severity": "warning"})]
    assert [m["labels"]["queue"] for m in evaluator.firing()] == ["mail"]


def test_the_alert_s_labels_are_the_series_labels_and_the_rule_s_which_win_and_templates_see_the_series():
    rules = parse(
        """
rules:
  - alert: Hot
    series: temperature_celsius
    above: 30
    labels: {severity: critical, team: ""}
    annotations:
      summary: "{{ $labels.room }} at {{ $value }} °C"
      said: "the series says {{ $labels.severity }}, the rule {{ $labels.team }}"
""",
        "t",
    )
    evaluator = Evaluator(rules, Clock())
    (fired,) = evaluator.observe([push("temperature_celsius", 31.5, room="lab", severity="info", alertname="x")])
    assert fired["alertname"] == "Hot", "the rule names the alert, as Prometheus sets alertname last"
    assert fired["labels"] == {"room": "lab", "severity": "critical"}, "the rule's labels win; empty ones are none"
    assert fired["annotations"] == {"summary": "lab at 31.5 °C", "said": "the series says info, the rule "}
    assert fired["fingerprint"] == alerts.fingerprint("Hot", {"room": "lab", "severity": "critical"})


def test_two_series_that_become_one_alert_share_one_state():
    (rule,) = parse("rules:\n  - {alert: A, series: s, above: 1, labels: {zone: eu}}\n", "t")
    evaluator = Evaluator((rule,), Clock())
    (fired,) = evaluator.observe([push("s", 5, zone="us"), push("s", 5, zone="ap")])
    assert fired["labels"] == {"zone": "eu"} and len(evaluator.groups["A"].states) == 1


def test_a_label_set_goes_stale_on_its_own_and_is_forgotten():
    clock = Clock()
    evaluator = Evaluator(parse("rules:\n  - {alert: A, series: s, above: 1, stale_after: 10s}\n", "t"), clock)
    assert len(evaluator.observe([push("s", 5, pod="a"), push("s", 5, pod="b"), push("s", 0, pod="c")])) == 2
    for _ in range(3):
        clock.now += 3
        assert evaluator.observe([push("s", 5, pod="a")]) == [] and evaluator.tick() == []
    clock.now += 3  # b and c have had no value for 12 s, a for 3 s
    (resolved,) = evaluator.tick()
    assert (resolved["status"], resolved["labels"]) == ("resolved", {"pod": "b"})
    assert by_labels(evaluator, "A") == {(("pod", "a"),): "firing"}, "b resolved and c, inactive, forgotten"
    assert evaluator.size == 1
    (again,) = evaluator.observe([push("s", 5, pod="b")])
    assert (again["status"], again["labels"]) == ("firing", {"pod": "b"}), "a value: fresh"


SILENT = """
rules:
  - alert: NoHeartbeat
    series: heartbeat
    match: [job=billing, pod=~.+]
    silent_for: 5s
    stale_after: 20s
    labels: {severity: critical}
    annotations:
      summary: "{{ $labels.pod }} silent for {{ $value }} s"
      of: "{{ $labels.job }}/{{ $labels.severity }}"
"""


def test_silent_for_per_label_set_and_the_rule_s_own_alert_while_no_label_set_is_known():
    clock = Clock()
    evaluator = Evaluator(parse(SILENT, "t"), clock)
    own = {"job": "billing", "severity": "critical"}  # the rule's labels and those its `=` matchers fix
    clock.now += 5
    (fired,) = evaluator.tick()
    assert changes_of([fired]) == [("NoHeartbeat", "firing", own)], "nothing ever came: absent, from the start"
    assert fired["annotations"] == {"summary": " silent for 5 s", "of": "billing/"}, "$labels: what the matchers fix"
    changes = evaluator.observe([push("heartbeat", 1, job="billing", pod="a"), push("heartbeat", 1, job="x", pod="b")])
    assert changes_of(changes) == [("NoHeartbeat", "resolved", own)], "a label set is known: the rule's own ends"
    clock.now += 3
    evaluator.observe([push("heartbeat", 1, job="billing", pod="b")])
    clock.now += 2
    (silent_a,) = evaluator.tick()
    assert changes_of([silent_a]) == [("NoHeartbeat", "firing", {**own, "pod": "a"})]
    assert silent_a["annotations"] == {"summary": "a silent for 5 s", "of": "billing/"}
    clock.now += 3
    (silent_b,) = evaluator.tick()
    assert silent_b["labels"]["pod"] == "b"
    (back,) = evaluator.observe([push("heartbeat", 1, job="billing", pod="a")])
    assert changes_of([back]) == [("NoHeartbeat", "resolved", {**own, "pod": "a"})]
    clock.now += 20 - 3  # b silent for 20 s: forgotten, its alert resolved; a, silent for 17 s, fires again
    assert changes_of(evaluator.tick()) == [
        ("NoHeartbeat", "firing", {**own, "pod": "a"}),
        ("NoHeartbeat", "resolved", {**own, "pod": "b"}),
    ]
    clock.now += 3  # a silent for 20 s too: the last one goes, and nothing is known again
    assert changes_of(evaluator.tick()) == [
        ("NoHeartbeat", "resolved", {**own, "pod": "a"}),
        ("NoHeartbeat", "firing", own),
    ], "the rule's own alert, silent since the last value of any label set"


def test_the_generator_s_silence_rule_keeps_firing_until_a_value_comes_as_before():
    clock = Clock()
    evaluator = Evaluator(parse("rules:\n  - {alert: Quiet, silent_for: 5s}\n", "t"), clock)
    evaluator.observe([gen(1)])
    clock.now += 5
    assert changes_of(evaluator.tick()) == [("Quiet", "firing", {})]
    for _ in range(100):
        clock.now += 30
        assert evaluator.tick() == [], "never forgotten, never fired again"
    assert changes_of(evaluator.observe([gen(1)])) == [("Quiet", "resolved", {})]


def test_a_silent_series_without_labels_is_the_rule_s_own_alert_and_fires_on_past_stale_after():
    clock = Clock()
    rules = parse("rules:\n  - {alert: Quiet, series: heartbeat, silent_for: 5s, stale_after: 20s}\n", "t")
    evaluator = Evaluator(rules, clock)
    evaluator.observe([push("heartbeat", 1)])
    clock.now += 5
    (fired,) = evaluator.tick()
    for _ in range(10):
        clock.now += 5
        assert evaluator.tick() == [], "past stale_after its one label set is the rule's own: never resolved"
    (firing,) = evaluator.firing()
    assert firing["startsAt"] == fired["startsAt"]


CAPPED = """
rules:
  - {alert: A, series: s, above: 1, max_label_sets: 2, stale_after: 10s}
  - {alert: B, series: s, below: 0, stale_after: 10s}
"""


def test_a_rule_keeps_at_most_max_label_sets_and_counts_the_label_sets_it_refuses():
    clock = Clock()
    evaluator = Evaluator(parse(CAPPED, "t"), clock, max_label_sets=4)
    changes = evaluator.observe([push("s", 5, pod=name) for name in "abcde"])
    assert [c["labels"]["pod"] for c in changes] == ["a", "b"], "two, then the rule's limit"
    assert evaluator.groups["A"].refused == {"limit": 3, "total": 0, "invalid": 0}
    assert len(evaluator.groups["B"].states) == 2, "B keeps its own, inactive: 4 in all, ALERT_MAX_LABEL_SETS"
    assert evaluator.take_refusals() == {("A", "limit"): (3, {"pod": "c"}), ("B", "total"): (3, {"pod": "c"})}
    assert evaluator.take_refusals() == {}, "taken once"
    evaluator.observe([push("s", 5, pod="f")])
    assert evaluator.groups["B"].refused["total"] == 4 and evaluator.size == 4
    assert evaluator.summaries()[0]["counts"] == {"inactive": 0, "pending": 0, "firing": 2}
    assert evaluator.summaries()[0]["refused"] == {"limit": 4, "total": 0, "invalid": 0}
    clock.now += 10
    evaluator.tick()  # every label set is stale: A's resolve, and all are forgotten
    assert evaluator.size == 0
    (fired,) = evaluator.observe([push("s", 5, pod="g")])
    assert fired["labels"] == {"pod": "g"}, "room again once forgotten"


def test_a_label_set_whose_alert_cannot_be_a_message_is_refused_as_invalid():
    (rule,) = parse("rules:\n  - {alert: A, series: s, above: 1, labels: {team: x, tier: y}}\n", "t")
    evaluator = Evaluator((rule,), Clock())
    many = {f"l{n}": "v" for n in range(31)}  # with the rule's two, 33 labels: more than a message may carry
    assert evaluator.observe([push("s", 5, **many)]) == []
    assert evaluator.groups["A"].refused["invalid"] == 1
    long = {f"l{n}": "v" * 1000 for n in range(17)}  # 17 KB of labels: over the 16 KiB a message may weigh
    assert evaluator.observe([push("s", 5, **long)]) == []
    assert evaluator.groups["A"].refused["invalid"] == 2 and evaluator.size == 0


def test_a_firing_label_set_left_by_a_previous_run_is_adopted_and_a_foreign_one_is_not():
    (rule,) = parse(DEEP, "t")
    clock = Clock()
    evaluator = Evaluator((rule,), clock)
    labels = {"queue": "billing", "severity": "warning"}
    left = alerts.build("firing", "QueueDeep", labels, {}, alerts.rfc3339(900), None, "stream")
    assert evaluator.adopt(left) == []
    (firing,) = evaluator.firing()
    assert (firing["labels"], firing["startsAt"]) == (labels, "1970-01-01T00:15:00.000Z")
    assert firing["annotations"] == {"summary": "billing holds 0"}, "its series' labels, from the alert's"
    foreign = alerts.build(
        "firing", "QueueDeep", {"queue": "print", "severity": "warning"}, {}, left["startsAt"], None, "stream"
    )
    assert evaluator.adopt(foreign) is None, "a label set the rule does not watch"
    assert evaluator.adopt({**left, "alertname": "Other"}) is None
    assert evaluator.owns("QueueDeep", {"queue": "mail", "severity": "warning"}), "a webhook echo of one of ours"
    assert not evaluator.owns("QueueDeep", {"queue": "mail", "severity": "critical"})


def test_matchers_and_series_are_checked_when_the_file_loads_naming_the_rule_and_its_line():
    text = "rules:\n  - {alert: A, above: 1}\n  - alert: B\n    series: s\n    match: ['job=~(']\n    above: 1\n"
    with pytest.raises(RulesError) as caught:
        parse(text, "rules.yaml")
    assert str(caught.value).startswith("rules.yaml: rule 2 (B): line 5: key 'match': job=~: not an RE2 regex")


BAD = [
    ("match: ['job=~(']", "line 4: key 'match': job=~: not an RE2 regex"),
    ("match: [job]", "line 4: key 'match': 'job' is not <label><op><value>"),
    ("match: ['__name__=x']", "line 4: key 'match': '__name__' is not a label name"),
    ("match: [job=billing] \n    max_label_sets: 0", "line 5: key 'max_label_sets': 0 is not a whole number from 1"),
    ("match: {job: 1}", "line 4: key 'match': job=: the value must be text"),
    ("match: job=billing", "line 4: key 'match': match must be an object"),
    ("series: 9lives", "line 4: key 'series': '9lives' is not a Prometheus metric name"),
    ("max_label_sets: 20000", "line 4: key 'max_label_sets': 20000 is not a whole number from 1 to 10000"),
    ("max_label_sets: true", "line 4: key 'max_label_sets': True is not a whole number"),
]


@pytest.mark.parametrize(("line", "words"), BAD, ids=[words.split(": ", 2)[-1][:40] for _, words in BAD])
def test_a_bad_series_matcher_or_limit_is_refused(line, words):
    with pytest.raises(RulesError) as caught:
        parse(f"rules:\n  - alert: A\n    above: 1\n    {line}\n", "rules.yaml")
    assert str(caught.value).startswith(f"rules.yaml: rule 1 (A): {words}"), str(caught.value)


def test_the_limit_and_silence_keys_have_their_defaults_and_bounds():
    value, labelled, plain = parse(
        "rules:\n  - {alert: A, series: s, above: 1}\n  - {alert: B, series: s, silent_for: 1m}\n"
        "  - {alert: C, silent_for: 1m}\n",
        "t",
    )
    assert (value.max_label_sets, value.stale_after) == (100, 300)
    assert (labelled.stale_after, plain.stale_after) == (300, None), "the generator's silence is never forgotten"
    (capped,) = parse("rules:\n  - {alert: A, above: 1}\n", "t", max_label_sets=10)
    assert capped.max_label_sets == 10, "the default never exceeds ALERT_MAX_LABEL_SETS"
    for text, words in [
        ("{alert: B, series: s, silent_for: 1m, stale_after: 1m}", "key 'stale_after': 60s: a silent label set"),
        ("{alert: B, series: s, silent_for: 10m}", "key 'stale_after': 300s: a silent label set"),
        ("{alert: B, silent_for: 10s, stale_after: 1m}", "key 'stale_after': a silent_for rule without `series`"),
    ]:
        with pytest.raises(RulesError, match=words):
            parse(f"rules:\n  - {text}\n", "t")
