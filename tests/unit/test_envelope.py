"""The envelope: what is accepted, and a clear, labelled error for everything else."""

import json

import pytest

from numcast.envelope import MAX_BYTES, Envelope, EnvelopeError, decode


def test_valid_envelope_round_trips():
    envelope = decode(b'{"seq": 17, "value": 42.0, "ts": 1764150000.123, "source": "control-7f9c"}')
    assert envelope == Envelope(17, 42.0, 1764150000.123, "control-7f9c")
    assert decode(envelope.to_json()) == envelope


def test_integer_value_is_a_number():
    assert decode('{"seq": 0, "value": 3, "ts": 1, "source": "a"}').value == 3.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"hello", "not_json"),
        (b"\xff\xfe\x00binary", "not_utf8"),
        (b"", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'"a string"', "not_object"),
        (b"true", "not_object"),
        (b'{"seq": 1, "value": 1, "ts": 1}', "bad_fields"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": "a", "extra": 1}', "bad_fields"),
        (b'{"seq": "1", "value": 1, "ts": 1, "source": "a"}', "bad_seq"),
        (b'{"seq": true, "value": 1, "ts": 1, "source": "a"}', "bad_seq"),
        (b'{"seq": -1, "value": 1, "ts": 1, "source": "a"}', "bad_seq"),
        (b'{"seq": 1.5, "value": 1, "ts": 1, "source": "a"}', "bad_seq"),
        (b'{"seq": 9007199254740993, "value": 1, "ts": 1, "source": "a"}', "bad_seq"),
        (b'{"seq": 1, "value": "42", "ts": 1, "source": "a"}', "bad_type"),
        (b'{"seq": 1, "value": false, "ts": 1, "source": "a"}', "bad_type"),
        (b'{"seq": 1, "value": null, "ts": 1, "source": "a"}', "bad_type"),
        (b'{"seq": 1, "value": NaN, "ts": 1, "source": "a"}', "not_finite"),
        (b'{"seq": 1, "value": Infinity, "ts": 1, "source": "a"}', "not_finite"),
        (b'{"seq": 1, "value": 1e400, "ts": 1, "source": "a"}', "not_finite"),
        (b'{"seq": 1, "value": 1' + b"0" * 400 + b', "ts": 1, "source": "a"}', "not_finite"),
        (b'{"seq": 1, "value": 1, "ts": 0, "source": "a"}', "bad_ts"),
        (b'{"seq": 1, "value": 1, "ts": "now", "source": "a"}', "bad_type"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": "<img src=x onerror=alert(1)>"}', "bad_source"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": ""}', "bad_source"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": 7}', "bad_source"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": ["a"]}', "bad_source"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": {"a": 1}}', "bad_source"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": "' + b"a" * 65 + b'"}', "bad_source"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": "control-1\\n"}', "bad_source"),
        (b'{"seq": 1, "value": 1, "ts": 1, "source": "\\ncontrol-1"}', "bad_source"),
        (json.dumps({"seq": 1, "value": 1, "ts": 1, "source": "a", "pad": "x" * MAX_BYTES}).encode(), "too_large"),
        (b"[" * 5000, "too_large"),
        (b'{"seq": 5, "value": 1.0, "ts": 1, "source": "a", "value": 99999}', "duplicate_key"),
        (b'{"seq": 5, "seq": 5, "value": 1.0, "ts": 1, "source": "a"}', "duplicate_key"),
        (
            b'{"seq": 5, "value": 1, "ts": 1, "source": "a", "series": "q", "labels": {"j": "x", "j": "y"}}',
            "duplicate_key",
        ),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(raw, reason):
    with pytest.raises(EnvelopeError) as caught:
        decode(raw)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(reason)


def test_deep_nesting_within_the_size_limit_is_rejected():
    with pytest.raises(EnvelopeError):
        decode(b"[" * 900 + b"]" * 900)


def test_the_canonical_encoding_is_compact_json_in_field_order():
    for envelope in [
        Envelope(5, 1.0, 1764150000.5, "control-1"),
        Envelope(2**53, -1e-300, 1e9, "a.b:c-d_e"),
        Envelope(7, 1.2345678901234568e17, 1.5, "s", "queue", {"job": 'b\u00e9"x'}),
    ]:
        assert envelope.to_json() == json.dumps(envelope.to_dict(), separators=(",", ":"), ensure_ascii=False)
        assert decode(envelope.to_json()) == envelope
    assert decode(b'{ "source":"a", "ts":1, "value":1e0, "seq":5 }').to_json() == (
        '{"seq":5,"value":1.0,"ts":1.0,"source":"a"}'
    )
