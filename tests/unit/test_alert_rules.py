"""The rules file: the built-in rules, durations, and bad files refused with the rule and the key named."""

import pytest

from numcast_alerter import rules
from numcast_alerter.rules import RulesError, duration, parse


def test_the_built_in_rules_are_the_issue_s_example():
    high, silent = rules.load("")
    assert (high.alert, high.condition, high.threshold, high.for_seconds) == ("NumcastValueHigh", "above", 95, 3)
    assert high.labels == {"severity": "warning"} and high.annotations["summary"]
    assert (silent.alert, silent.condition, silent.threshold) == ("NumcastStreamSilent", "silent_for", 5)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0), ("0", 0), (0, 0), ("3s", 3), ("250ms", 0.25), ("1m30s", 90), ("2h", 7200),
        ("1h1m1s1ms", 3661.001), ("1d", 86400), ("1w", 604800), ("6d23h", 601200),
    ],
)  # fmt: skip
def test_durations_as_prometheus_writes_them(text, seconds):
    assert duration(text, "for") == seconds


@pytest.mark.parametrize("text", ["3 seconds", "1s1m", "-1s", "1.5s", "", "1d1d", "s", "3", 3, None, "1y"])
def test_what_is_not_a_prometheus_duration_is_refused(text):
    with pytest.raises(RulesError, match="key 'for': "):
        duration(text, "for")


BAD = [
    ("rules: [", "", "not valid YAML"),
    ("- alert: A", "", "one key, `rules`"),
    ("rules: []", "", "a list of 1 to 100 rules"),
    ("rules:\n  - [1]", "rule 1", "a rule must be a mapping"),
    ("rules:\n  - {above: 1}", "rule 1", "key 'alert': required"),
    ("rules:\n  - {alert: '<b>', above: 1}", "rule 1", "key 'alert': required, a name"),
    ("rules:\n  - {alert: A}", "rule 1 (A)", "key 'above': a rule has exactly one of"),
    ("rules:\n  - {alert: A, above: 1, silent_for: 1s}", "rule 1 (A)", "key 'silent_for': a rule has exactly one"),
    ("rules:\n  - {alert: A, above: '95'}", "rule 1 (A)", "key 'above': '95' is not a finite number"),
    ("rules:\n  - {alert: A, above: .inf}", "rule 1 (A)", "key 'above': inf is not a finite number"),
    ("rules:\n  - {alert: A, below: true}", "rule 1 (A)", "key 'below': True is not a finite number"),
    ("rules:\n  - {alert: A, above: 1, for: 3}", "rule 1 (A)", "key 'for': 3 is not a duration"),
    ("rules:\n  - {alert: A, above: 1, for: -1s}", "rule 1 (A)", "key 'for': '-1s' is not a duration"),
    ("rules:\n  - {alert: A, above: 1, for: 3x}", "rule 1 (A)", "key 'for': '3x' is not a duration"),
    ("rules:\n  - {alert: A, above: 1, for: 9999h}", "rule 1 (A)", "key 'for': 9999h is longer than a week"),
    ("rules:\n  - {alert: A, above: 1, stale_after: 0s}", "rule 1 (A)", "key 'stale_after': must be longer than 0s"),
    ("rules:\n  - {alert: A, silent_for: 1s, stale_after: 1s}", "rule 1 (A)", "key 'stale_after': a silent_for rule"),
    ("rules:\n  - {alert: A, above: 1, keep_firing_for: 1 s}", "rule 1 (A)", "key 'keep_firing_for': '1 s' is not"),
    (
        "rules:\n  - {alert: A, above: 1, annotations: {s: '{{ $value | printf \"%x\" }}'}}",
        "rule 1 (A)",
        """key 'annotations': s: the template {{ $value | printf "%x" }} cannot be rendered""",
    ),
    ("rules:\n  - {alert: A, silent_for: 0s}", "rule 1 (A)", "key 'silent_for': must be longer than 0s"),
    ("rules:\n  - {alert: A, silent_for: 1s, for: 1s}", "rule 1 (A)", "key 'for': a silent_for rule takes no"),
    ("rules:\n  - {alert: A, above: 1, labels: [x]}", "rule 1 (A)", "key 'labels': a mapping"),
    ("rules:\n  - {alert: A, above: 1, labels: {a-b: x}}", "rule 1 (A)", "key 'labels': 'a-b' is not a label name"),
    ("rules:\n  - {alert: A, above: 1, labels: {a: 1}}", "rule 1 (A)", "key 'labels': a must be a string"),
    ("rules:\n  - {alert: A, above: 1, labels: {alertname: B}}", "rule 1 (A)", "key 'labels': alertname is set"),
    ('rules:\n  - {alert: A, above: 1, labels: {a: "x\\ny"}}', "rule 1 (A)", "key 'labels': labels.a holds control"),
    ("rules:\n  - {alert: A, above: 1, annotations: {s: null}}", "rule 1 (A)", "key 'annotations': s must be"),
    ("rules:\n  - {alert: A, above: 1}\n  - {alert: A, below: 0}", "rule 2 (A)", "key 'alert': the name A is used"),
    ("rules:\n  - {alert: A, above: 1}\n  - {alert: B, above: 1, when: x}", "rule 2 (B)", "key 'when': unknown key"),
]


@pytest.mark.parametrize(("text", "rule", "words"), BAD, ids=[words for _, _, words in BAD])
def test_a_bad_file_is_refused_naming_the_rule_and_the_key(text, rule, words):
    with pytest.raises(RulesError) as caught:
        parse(text, "rules.yaml")
    message = str(caught.value)
    assert message.startswith(f"rules.yaml: {rule + ': ' if rule else ''}"), message
    assert words in message, message


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("rules:\n  - alert: A\n    above: 1\n    above: 50\n", 4, "above"),
        ("rules:\n  - {alert: A, above: 1, above: 50}\n", 2, "above"),
        ("rules:\n  - {alert: A, above: 1}\nrules:\n  - {alert: B, below: 1}\n", 3, "rules"),
        ("rules:\n  - {alert: A, above: 1, labels: {team: a, team: b}}\n", 2, "team"),
    ],
    ids=["in a rule", "in a flow mapping", "a second rules list", "in labels"],
)
def test_a_key_given_twice_is_refused_with_its_line_instead_of_the_last_winning(text, line, key):
    with pytest.raises(RulesError) as caught:
        parse(text, "rules.yaml")
    assert f"rules.yaml: line {line}: key '{key}' is given twice" in str(caught.value), str(caught.value)


def test_stale_after_and_keep_firing_for_have_defaults_and_only_value_rules_go_stale():
    high, silent = parse("rules:\n  - {alert: A, above: 1}\n  - {alert: B, silent_for: 5s}\n", "t")
    assert (high.stale_after, high.keep_firing_for) == (rules.DEFAULT_STALE_AFTER, 0) == (300, 0)
    assert silent.stale_after is None
    (rule,) = parse("rules:\n  - {alert: A, below: 1, stale_after: 1m, keep_firing_for: 1d}\n", "t")
    assert (rule.stale_after, rule.keep_firing_for) == (60, 86400)


def test_a_missing_or_huge_file_is_refused(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        rules.load(str(tmp_path / "absent.yaml"))
    big = tmp_path / "big.yaml"
    big.write_text("#" * (rules.MAX_FILE_BYTES + 1))
    with pytest.raises(RulesError, match="larger than"):
        rules.load(str(big))


def test_the_docs_show_the_built_in_rules_as_they_are():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    block = page.split("<!-- rules:default -->\n```yaml\n", 1)[1].split("```\n<!-- /rules:default -->", 1)[0]
    assert block == rules.default_text()
