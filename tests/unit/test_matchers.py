"""Label matchers as PromQL's: the four operators, a missing label as "", RE2 anchored and linear; bad ones named."""

import time

import pytest

from numcast.matchers import MatcherError, from_json, matches, parse

LABELS = {"job": "billing", "instance": "web-1"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("job=billing", True),
        ("job=bill", False),
        ("job!=mail", True),
        ("job!=billing", False),
        ("job=~bill.*", True),
        ("job=~bill", False),  # anchored at both ends, as in PromQL
        ("job=~.*ill.*", True),
        ("job!~bill.*", False),
        ("job!~mail|ops", True),
        ("zone=", True),  # a label the series lacks is ""
        ("zone!=", False),
        ("zone=~.*", True),
        ("zone=~.+", False),
        ("zone!=eu", True),
        ("instance=~web-[0-9]+", True),
    ],
)
def test_each_operator_as_in_promql(text, expected):
    assert parse(text).matches(LABELS) is expected
    assert parse(text).matches(LABELS) is expected, "the same answer from the verdict cache"


def test_a_value_may_hold_an_operator_the_first_one_splits():
    matcher = parse("url=a=b!=c")
    assert (matcher.name, matcher.op, matcher.value) == ("url", "=", "a=b!=c")
    assert parse("url!~a=~b").op == "!~"


@pytest.mark.parametrize(
    "text, words",
    [
        ("job", "not <label><op><value>"),
        ("=x", "not <label><op><value>"),
        ("1job=x", "not <label><op><value>"),
        ("__name__=x", "not a label name"),
        ("job=~(", "not an RE2 regex"),
        ("job=~" + "a" * 257, "at most 256"),
        ("job=" + "a" * 1025, "at most 1024"),
        ("job=a\nb", "control characters"),
        ("job=~(a{100}){100}", "not an RE2 regex"),
    ],
)
def test_bad_matchers_are_refused_with_what_is_wrong(text, words):
    with pytest.raises(MatcherError, match=words.replace("(", r"\(")):
        parse(text)


def test_from_json_takes_an_object_of_equalities_or_a_list_sorted_and_deduplicated():
    assert [m.text() for m in from_json({"job": "x", "env": "prod"})] == ["env=prod", "job=x"]
    assert from_json(["job=x", "env=prod", "job=x"]) == from_json({"env": "prod", "job": "x"})
    for bad in ("job=x", 3, [3], {"job": 3}, [f"l{n}=x" for n in range(17)]):
        with pytest.raises(MatcherError):
            from_json(bad)
    assert matches(from_json(["job=~bill.*", "instance!=web-2"]), LABELS)
    assert not matches(from_json(["job=~bill.*", "instance!=web-1"]), LABELS)
    assert matches((), None), "no matchers: everything"


def test_a_regex_that_backtracks_exponentially_elsewhere_takes_no_time_with_re2():
    matcher = parse("job=~(a+)+$")
    started = time.process_time()
    assert not matcher.matches({"job": "a" * 1000 + "!"})
    assert time.process_time() - started < 0.5, "Python's re would take longer than the universe has"
