"""Series and labels on the envelope: both or neither, checked at every door, carried by the worker as they came."""

import json
import time

import pytest

from numcast.envelope import GENERATOR_SERIES, MAX_BYTES, Envelope, EnvelopeError, decode, valid_series
from numcast.metrics import FastHistogram
from numcast_worker.ingest import Ingest
from numcast_worker.sequences import Sequences
from numcast_worker.sink import FileSink
from numcast_worker.stats import Stats

BASE = {"seq": 1, "value": 2.5, "ts": 1764150000.5, "source": "control-abc123.push"}


def raw(**fields) -> bytes:
    return json.dumps({**BASE, **fields}, ensure_ascii=False).encode()


def test_a_sample_with_series_and_labels_round_trips():
    envelope = decode(raw(series="queue_depth", labels={"job": "billing", "instance": "pod-7"}))
    assert envelope.series == "queue_depth" and envelope.labels == {"job": "billing", "instance": "pod-7"}
    assert decode(envelope.to_json()) == envelope
    assert envelope.to_dict() == {**BASE, "series": "queue_depth", "labels": {"job": "billing", "instance": "pod-7"}}


def test_an_envelope_without_series_is_the_generator_s_and_stays_four_fields():
    envelope = decode(json.dumps(BASE))
    assert envelope.series is None and envelope.labels is None
    assert set(envelope.to_dict()) == {"seq", "value", "ts", "source"}
    assert json.loads(envelope.to_json()) == BASE
    assert valid_series(GENERATOR_SERIES)


def test_labels_may_be_empty_and_hold_any_printable_text():
    assert decode(raw(series="up", labels={})).labels == {}
    assert decode(raw(series="a:b_c", labels={"_x": "é ✓ \u00a0/{}\"'"})).labels["_x"] == "é ✓ \u00a0/{}\"'"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"series": "up"}, "bad_fields"),  # labels come with series
        ({"labels": {}}, "bad_fields"),
        ({"series": "up", "labels": {}, "extra": 1}, "bad_fields"),
        ({"series": "", "labels": {}}, "bad_series"),
        ({"series": "9lives", "labels": {}}, "bad_series"),
        ({"series": "queue-depth", "labels": {}}, "bad_series"),
        ({"series": "up\n", "labels": {}}, "bad_series"),
        ({"series": "a" * 129, "labels": {}}, "bad_series"),
        ({"series": 7, "labels": {}}, "bad_series"),
        ({"series": None, "labels": {}}, "bad_series"),
        ({"series": "up", "labels": []}, "bad_labels"),
        ({"series": "up", "labels": None}, "bad_labels"),
        ({"series": "up", "labels": {"__name__": "x"}}, "bad_labels"),
        ({"series": "up", "labels": {"1a": "x"}}, "bad_labels"),
        ({"series": "up", "labels": {"a-b": "x"}}, "bad_labels"),
        ({"series": "up", "labels": {"a:b": "x"}}, "bad_labels"),
        ({"series": "up", "labels": {"a": ""}}, "bad_labels"),
        ({"series": "up", "labels": {"a": 1}}, "bad_labels"),
        ({"series": "up", "labels": {"a": None}}, "bad_labels"),
        ({"series": "up", "labels": {"a": "x\ny"}}, "bad_labels"),
        ({"series": "up", "labels": {"a": "\x1b[31m"}}, "bad_labels"),
        ({"series": "up", "labels": {f"l{n}": "v" for n in range(33)}}, "bad_labels"),
        ({"series": "up", "labels": {"a": "x" * MAX_BYTES}}, "too_large"),
    ],
)
def test_bad_series_and_labels_are_rejected_with_a_reason(fields, reason):
    with pytest.raises(EnvelopeError) as caught:
        decode(raw(**fields))
    assert caught.value.reason == reason


def test_a_name_checked_once_is_still_refused_in_the_wrong_place():
    """The caches of checked names never let a name through where its rule differs."""
    decode(raw(series="up", labels={"up": "1"}))
    with pytest.raises(EnvelopeError):
        decode(raw(series="up", labels={"a": "1"}, source="<b>"))
    with pytest.raises(EnvelopeError):
        decode(raw(series="a:b", labels={"a:b": "1"}))


def test_the_worker_keeps_series_and_labels_in_history_browsers_and_file(tmp_path):
    class Pushed(list):
        push = list.append

    sink = FileSink(str(tmp_path / "n.jsonl"), max_bytes=1 << 30, backups=1)
    ingest = Ingest(Sequences(), sink, Pushed(), Stats(), FastHistogram("l", "", (1.0,)), history_size=10)
    pushed = raw(series="temp_celsius", labels={"room": "lab"}, ts=time.time())
    plain = json.dumps({**BASE, "seq": 2, "ts": time.time()}).encode()
    assert ingest.accept_batch([pushed, plain], "redis") == 0
    assert ingest.recent(10)[0]["series"] == "temp_celsius" and ingest.recent(10)[0]["labels"] == {"room": "lab"}
    assert "series" not in ingest.recent(10)[1]
    assert list(ingest.fanout) == ingest.recent(10)
    ingest.flush()
    assert (tmp_path / "n.jsonl").read_bytes().splitlines() == [
        decode(pushed).to_json().encode(),
        decode(plain).to_json().encode(),
    ], "the canonical encoding"


def test_the_envelope_type_defaults_to_the_generator_s_series():
    assert Envelope(1, 1.0, 1.0, "a").to_dict() == {"seq": 1, "value": 1.0, "ts": 1.0, "source": "a"}
