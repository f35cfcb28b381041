"""Every parser at every door, fuzzed: whatever comes in is either read or refused with the door's own error, never
another exception (a RecursionError, an unexpected TypeError), and over HTTP never a 500. Numbers are read from
ASCII digits only. Derandomized, with no example database: the same few hundred cases on every run."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcast import alerts, envelope, matchers, parsing
from numcast.push import formats
from numcast.settings import from_env, parse_float, parse_int
from numcast_alerter import create_app as alerter_app
from numcast_alerter import rules
from numcast_alerter.settings import AlerterSettings
from numcast_control import create_app as control_app
from numcast_control.settings import ControlSettings
from numcast_worker import create_app as worker_app
from numcast_worker import subscriptions
from numcast_worker.settings import WorkerSettings

FUZZ = settings(
    max_examples=100, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
)
FEW = settings(FUZZ, max_examples=40)  # PyYAML is pure Python: a rules file costs a hundred times a message
DEEP = 1000  # the figure: a thousand `[` fit under the envelope's 1 KiB limit

# JSON values of every shape, text that is almost JSON, and nesting far beyond any bound.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
deep = st.builds(
    lambda n, opener, closed: opener * n + ("]" * n if closed and opener == "[" else ""),
    st.integers(1, DEEP),
    st.sampled_from(["[", '{"a":', '[{"a":']),
    st.booleans(),
)
# Digits that are not 0-9: other scripts' decimals (`٣`, `३`), superscripts (`²`), fractions (`½`).
foreign_digits = st.text(st.characters(categories=("Nd", "No"), exclude_characters="0123456789"), min_size=1)
texts = st.one_of(json_values.map(json.dumps), deep, st.text(), foreign_digits, st.binary().map(repr))
bodies = st.one_of(texts.map(str.encode), st.binary())


def refused_or_read(parse, error: type[Exception], data) -> None:
    """`parse(data)` returns, or raises `error` (a subclass of ValueError, so every door already catches it)."""
    try:
        parse(data)
    except error:
        pass


@pytest.mark.parametrize(
    ("parse", "error"),
    [
        (envelope.decode, envelope.EnvelopeError),
        (alerts.decode, alerts.AlertError),
        (formats.from_json, formats.FormatError),
        (formats.from_exposition, formats.FormatError),
        (lambda body: formats.from_line_protocol(body), formats.FormatError),
    ],
    ids=["envelope", "alert message", "push json", "push exposition", "push line protocol"],
)
@FUZZ
@given(data=bodies)
def test_each_message_parser_reads_or_refuses(parse, error, data):
    refused_or_read(parse, error, data)


@pytest.mark.parametrize("depth", [33, DEEP, 100_000])
def test_deep_json_is_not_json_at_every_parser(depth):
    text = "[" * depth
    with pytest.raises(envelope.EnvelopeError) as refused:
        envelope.decode(text[: envelope.MAX_BYTES])
    assert refused.value.reason == "not_json"
    with pytest.raises(alerts.AlertError) as refused:
        alerts.decode(text[: alerts.MAX_BYTES])
    assert refused.value.reason == "not_json"
    with pytest.raises(formats.FormatError, match="not JSON"):
        formats.from_json(text.encode())
    with pytest.raises(rules.RulesError, match="nested deeper"):
        rules.parse("rules: " + text, "rules.yaml")
    with pytest.raises(parsing.TooDeep):
        parsing.loads(text)


def test_brackets_inside_strings_are_no_nesting():
    assert parsing.loads(json.dumps({"a": "[" * DEEP + "{" * DEEP})) == {"a": "[" * DEEP + "{" * DEEP}
    assert parsing.loads("[" * parsing.MAX_DEPTH + "]" * parsing.MAX_DEPTH)


@FEW
@given(text=st.one_of(texts, deep.map(lambda t: "rules:\n  - " + t)))
def test_a_rules_file_is_read_or_refused(text):
    refused_or_read(lambda t: rules.parse(t, "rules.yaml"), rules.RulesError, text)


@FUZZ
@given(data=json_values)
def test_a_subscribe_payload_is_read_or_refused(data):
    refused_or_read(lambda d: subscriptions.parse(d, 10), subscriptions.SubscribeError, data)


@FUZZ
@given(texts=st.lists(texts, max_size=3))
def test_match_selectors_are_read_or_refused(texts):
    refused_or_read(matchers.from_texts, matchers.MatcherError, texts)


@FUZZ
@given(text=st.one_of(st.text(), foreign_digits, foreign_digits.map(lambda d: "1" + d)))
def test_settings_numbers_are_ascii_digits_only(text):
    for parse in (parse_int, parse_float):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert text.strip().lstrip("+-").replace(".", "").replace("e", "").replace("E", "").isascii(), (text, value)


@pytest.mark.parametrize("text", ["²", "٣", "३", "½", "1٣", "1_000", "+٣", "٣.5"])
def test_numbers_in_other_digits_are_refused(text):
    for parse in (parsing.ascii_int, parse_int, parse_float):
        with pytest.raises(ValueError):
            parse(text)


# --- HTTP doors, through Flask's test client (no server: the apps are built, not started) ---------------------

APPS = {
    "control": lambda: control_app(from_env(ControlSettings, {}, async_mode="threading")),
    "worker": lambda: worker_app(from_env(WorkerSettings, {"WORKER_NAME": "w"}, async_mode="threading")),
    "alerter": lambda: alerter_app(from_env(AlerterSettings, {}, async_mode="threading")),
}


@pytest.fixture(scope="module")
def clients():
    return {name: make().test_client() for name, make in APPS.items()}


# Each door that takes a body: (service, method, path, content type).
BODY_DOORS = [
    ("control", "PATCH", "/api/config", "application/json"),
    ("control", "POST", "/api/push", "application/json"),
    ("control", "POST", "/api/v2/write", "text/plain"),
    ("control", "PUT", "/metrics/job/fuzz", "text/plain"),
    ("alerter", "POST", "/api/alertmanager", "application/json"),
]


@pytest.mark.parametrize(("service", "method", "path", "kind"), BODY_DOORS)
@FUZZ
@given(body=bodies)
def test_no_body_gets_a_500(clients, service, method, path, kind, body):
    response = clients[service].open(path, method=method, data=body, content_type=kind)
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])


@pytest.mark.parametrize("path", ["/api/history", "/api/series"])
@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["limit", "series", "match", "other"]),
        st.one_of(texts, foreign_digits, st.integers().map(str)),
        max_size=3,
    )
)
def test_no_query_string_gets_a_500(clients, path, query):
    response = clients["worker"].get(path, query_string=query)
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])


@FUZZ
@given(limit=st.one_of(foreign_digits, foreign_digits.map(lambda d: "1" + d), st.just("²"), st.just("٣")))
def test_a_limit_in_other_digits_is_refused(clients, limit):
    response = clients["worker"].get("/api/history", query_string={"limit": limit})
    assert response.status_code == 400, (limit, response.get_json())
    assert response.get_json()["field"] == "limit"


@FEW
@given(depth=st.integers(parsing.MAX_DEPTH + 1, DEEP))  # under the bodies' size limits
def test_deep_json_bodies_are_refused_as_not_json(clients, depth):
    body = b"[" * depth
    for service, method, path in [("control", "PATCH", "/api/config"), ("alerter", "POST", "/api/alertmanager")]:
        response = clients[service].open(path, method=method, data=body, content_type="application/json")
        assert response.status_code == 400, (service, response.get_json())
        assert "not valid JSON" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ("[" * 32 + "]" * 32, False),
        ("[" * 33 + "]" * 33, True),
        ('{"a":' * 33 + "1" + "}" * 33, True),
        ("[" * 33, True),  # left open: the decoder goes down every level before it finds the end
        ('["' + "[" * 100 + '"]', False),  # brackets in a string do not nest
        ('["\\"' + "[" * 100 + '"]', False),  # nor after an escaped quote
        ('["\\\\"' + ", [" * 40 + "]" * 40 + "]", True),  # an escaped backslash ends no string: these do nest
        (json.dumps({"samples": [{"labels": {"a": "[{"}}] * 100}), False),  # wide, not deep
    ],
)
def test_depth_is_counted_outside_strings_as_the_decoder_nests(text, deep):
    if deep:
        with pytest.raises(parsing.TooDeep):
            parsing.check_depth(text)
    else:
        parsing.check_depth(text)
        parsing.check_depth(text.encode())
