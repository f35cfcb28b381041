"""The alerts channel's message: built, checked strictly, converted from Alertmanager's webhook."""

import json

import pytest

from numcast import alerts
from numcast.alerts import AlertError, decode


def message(**changes):
    base = alerts.build("firing", "NumcastValueHigh", {"severity": "warning"}, {"summary": "s"},
                        "2026-11-26T10:00:00Z", None, "stream")  # fmt: skip
    return {**base, **changes}


def test_the_fingerprint_is_alertmanager_s():
    # Read from a real Alertmanager 0.25 (GET /api/v2/alerts) for these labels; the integration tests compare live.
    assert alerts.fingerprint("High", {"severity": "warning"}) == "092c0309dd520e45"
    assert alerts.fingerprint("A", {"b": "1"}) != alerts.fingerprint("A", {"b": "2"})


def test_a_message_round_trips_and_times_parse():
    built = message()
    assert decode(alerts.encode(built)) == built
    assert alerts.timestamp(alerts.rfc3339(1764151200.25)) == 1764151200.25
    assert alerts.timestamp("2026-11-26T10:00:00.123456789Z") == pytest.approx(1795687200.123456)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[]", "not_object"),
        ("NaN", "not_json"),
        (json.dumps(message(status="pending")), "bad_status"),
        (json.dumps(message(origin="prometheus")), "bad_origin"),
        (json.dumps(message(alertname="")), "bad_alertname"),
        (json.dumps(message(alertname="a\nb")), "bad_alertname"),
        (json.dumps(message(alertname="x" * 1025)), "bad_alertname"),
        (json.dumps(message(alertname=7)), "bad_alertname"),
        (json.dumps(message(labels={"alertname": "x"})), "bad_labels"),
        (json.dumps(message(labels={f"l{n}": "v" for n in range(33)})), "bad_labels"),
        (json.dumps(message(labels={"a": "x" * 1025})), "bad_labels"),
        (json.dumps(message(labels={"a": "line\nbreak"})), "bad_labels"),
        (json.dumps(message(annotations={"a": "bell\x07"})), "bad_annotations"),
        (json.dumps(message(annotations={"a": ["list"]})), "bad_annotations"),
        (json.dumps(message(startsAt="2026-11-26 10:00")), "bad_time"),
        (json.dumps(message(endsAt=0)), "bad_time"),
        (json.dumps(message(fingerprint="ABCDEF0123456789")), "bad_fingerprint"),
        (json.dumps({k: v for k, v in message().items() if k != "origin"}), "bad_fields"),
        ("x" * (alerts.MAX_BYTES + 1), "too_large"),
    ],
)
def test_anything_else_is_refused_with_a_reason(raw, reason):
    with pytest.raises(AlertError) as caught:
        decode(raw)
    assert caught.value.reason == reason


def test_multiline_annotations_are_text_and_allowed():
    assert decode(json.dumps(message(annotations={"description": "one\n\ttwo"})))["annotations"]["description"]


WEBHOOK_ALERT = {
    "status": "firing", "labels": {"alertname": "NumcastWorkerDown", "pod": "machine-2"},
    "annotations": {"summary": "down", "description": "x" * 5000}, "startsAt": "2026-11-26T10:00:00.5Z",
    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": "0123456789abcdef",
}  # fmt: skip


def test_a_webhook_payload_becomes_messages():
    (firing, resolved), _ = alerts.from_webhook(
        {"version": "4", "status": "firing", "alerts": [WEBHOOK_ALERT, {**WEBHOOK_ALERT, "status": "resolved",
                                                                        "endsAt": "2026-11-26T10:05:00Z"}]}
    )  # fmt: skip
    assert firing["alertname"] == "NumcastWorkerDown" and firing["labels"] == {"pod": "machine-2"}
    assert (firing["origin"], firing["endsAt"], firing["fingerprint"]) == ("alertmanager", None, "0123456789abcdef")
    assert len(firing["annotations"]["description"]) == alerts.MAX_ANNOTATION, "cut, not refused"
    assert (resolved["status"], resolved["endsAt"]) == ("resolved", "2026-11-26T10:05:00Z")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([], "not_object"),
        ({"version": 4, "alerts": []}, "bad_version"),
        ({"version": "4"}, "bad_fields"),
    ],
)
def test_a_payload_that_is_not_a_webhook_payload_is_refused_whole(payload, reason):
    with pytest.raises(AlertError) as caught:
        alerts.from_webhook(payload)
    assert caught.value.reason == reason


def test_alertname_is_a_label_value_not_an_identifier():
    # Alertmanager takes any UTF-8 label value as an alertname; so does the channel, bounded and as plain text.
    built = message(alertname="High CPU usage (node-1) <b>")
    assert decode(alerts.encode(built)) == built
    (converted,), rejected = alerts.from_webhook(
        {"version": "4", "alerts": [{**WEBHOOK_ALERT, "labels": {"alertname": "High CPU usage", "pod": "x"}}]}
    )
    assert converted["alertname"] == "High CPU usage" and rejected == []


@pytest.mark.parametrize(
    ("alert", "reason"),
    [
        ({**WEBHOOK_ALERT, "labels": {"pod": "x"}}, "bad_labels"),
        ({k: v for k, v in WEBHOOK_ALERT.items() if k != "fingerprint"}, "bad_fields"),
        ({**WEBHOOK_ALERT, "labels": {"alertname": "A", "pod": "bell\x07"}}, "bad_labels"),
        ({**WEBHOOK_ALERT, "labels": {"alertname": "x" * 1025}}, "bad_alertname"),
        ("not an alert", "bad_fields"),
    ],
)
def test_a_bad_alert_in_a_webhook_payload_is_skipped_and_the_rest_kept(alert, reason):
    good = {**WEBHOOK_ALERT, "labels": {"alertname": "Good"}}
    messages, rejected = alerts.from_webhook({"version": "4", "alerts": [good, alert, good]})
    assert [m["alertname"] for m in messages] == ["Good", "Good"]
    (error,) = rejected
    assert error.reason == reason and "alerts[1]" in str(error)


def test_empty_label_values_are_dropped_before_fingerprinting_as_alertmanager_does():
    # Read from a real Alertmanager 0.25: an alert posted with {"team": ""} is held as the one without it.
    assert alerts.fingerprint("High", {"severity": "warning", "team": ""}) == "092c0309dd520e45"
    built = alerts.build("firing", "High", {"severity": "warning", "team": ""}, {}, "2026-11-26T10:00:00Z", None,
                         "stream")  # fmt: skip
    assert built["labels"] == {"severity": "warning"} and built["fingerprint"] == "092c0309dd520e45"
