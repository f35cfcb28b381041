"""The three push formats: what each parser reads into samples, and the line or sample it names when it cannot."""

import pytest

from numcast.push import formats, stream


def test_json_samples_with_and_without_labels_and_ts():
    body = b'{"samples": [{"series": "a", "labels": {"x": "1"}, "value": 2, "ts": 5.5}, {"series": "b", "value": 1.5}]}'
    (a, b) = formats.from_json(body)
    assert (a.series, a.labels, a.value, a.ts, a.named) == ("a", {"x": "1"}, 2, 5.5, "samples[0]")
    assert (b.series, b.labels, b.value, b.ts) == ("b", {}, 1.5, None)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"{not json", ""),
        (b"\xff", ""),
        (b"[]", ""),
        (b'{"samples": {}}', ""),
        (b'{"samples": [], "more": 1}', ""),
        (b'{"samples": [{"series": "a", "value": NaN}]}', ""),
        (b'{"samples": [{"series": "a", "value": 1}, {"value": 1}]}', "samples[1]"),
        (b'{"samples": [{"series": "a", "value": "1"}]}', "samples[0]"),
        (b'{"samples": [{"series": "a", "value": true}]}', "samples[0]"),
        (b'{"samples": [{"series": "a", "value": 1, "ts": "now"}]}', "samples[0]"),
        (b'{"samples": [{"series": "a", "value": 1, "unit": "s"}]}', "samples[0]"),
        (b'{"samples": [1]}', "samples[0]"),
    ],
)
def test_json_that_is_not_a_push_names_the_sample(body, where):
    with pytest.raises(formats.FormatError) as caught:
        formats.from_json(body)
    assert caught.value.where == where
    if where:
        assert str(caught.value).startswith(where + ": ")


def test_line_protocol_fields_become_series_and_tags_labels_with_the_precision_honoured():
    body = b"cpu,host=a,region=eu\\ west usage=1.5,cores=4i,up=t 1764150000123\n\n# a comment\nmem free=2u"
    samples, skipped = formats.from_line_protocol(body, "ms")
    assert skipped == 0
    got = {(s.series, tuple(sorted(s.labels.items())), s.value, s.ts) for s in samples}
    assert got == {
        ("cpu_usage", (("host", "a"), ("region", "eu west")), 1.5, 1764150000.123),
        ("cpu_cores", (("host", "a"), ("region", "eu west")), 4.0, 1764150000.123),
        ("cpu_up", (("host", "a"), ("region", "eu west")), 1.0, 1764150000.123),
        ("mem_free", (), 2.0, None),
    }
    assert [s.named for s in samples] == ["line 1"] * 3 + ["line 4"]


@pytest.mark.parametrize(
    ("precision", "stamp", "ts"), [("s", 2, 2.0), ("ms", 2, 0.002), ("us", 2, 2e-6), ("ns", 2, 2e-9)]
)
def test_each_precision(precision, stamp, ts):
    ((sample,), _) = formats.from_line_protocol(f"m f=1 {stamp}".encode(), precision)
    assert sample.ts == pytest.approx(ts)


def test_string_fields_are_left_out_and_counted():
    samples, skipped = formats.from_line_protocol(b'system uptime=5i,uptime_format="0 days"\nsystem note="x"')
    assert [s.series for s in samples] == ["system_uptime"] and skipped == 2


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"ok f=1\nno_fields\nok f=2", "line 2"),
        (b"ok f=1\nok f=1 not-a-time", "line 2"),
        (b"ok f=", "line 1"),
        (b"\xff f=1", ""),
    ],
)
def test_line_protocol_errors_name_the_line(body, where):
    with pytest.raises(formats.FormatError) as caught:
        formats.from_line_protocol(body)
    assert caught.value.where == where


def test_exposition_keeps_families_and_types():
    body = b"""# TYPE jobs_total counter
jobs_total{queue="a"} 3
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_sum 0.3
latency_seconds_count 2
plain 1 1764150000000
"""
    samples = formats.from_exposition(body)
    got = [(s.series, s.labels, s.value, s.family, s.kind) for s in samples]
    assert got[0] == ("jobs_total", {"queue": "a"}, 3, "jobs_total", "counter")
    assert got[1] == ("latency_seconds_bucket", {"le": "0.1"}, 1, "latency_seconds", "histogram")
    assert samples[-1].ts == 1764150000.0 and samples[-1].kind == "unknown"
    assert samples[0].named == 'jobs_total{queue="a"}'


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"ok 1\nthis is not a sample\n", "line 2"),
        (b"ok 1\nbad{x=1} 2\n", "line 2"),
        (b"nan_gauge NaN\n", "nan_gauge"),
        (b'inf{a="b"} +Inf\n', 'inf{a="b"}'),
    ],
)
def test_exposition_errors_name_the_line_or_the_sample(body, where):
    with pytest.raises(formats.FormatError) as caught:
        formats.from_exposition(body)
    assert caught.value.where == where


def test_the_push_stream_frames_lines_and_refuses_an_oversized_message_whole():
    lines = ['{"a":1}', '{"b":2}']
    (message,) = stream.frame(lines)
    assert stream.split(message.encode()) == [b'{"a":1}', b'{"b":2}']
    assert [len(m.split("\n")) for m in stream.frame(lines * 301)] == [stream.MAX_LINES, 602 - stream.MAX_LINES]
    huge = b"x" * (stream.MAX_MESSAGE_BYTES + 1)
    assert stream.split(huge) == [huge]
    assert stream.channel("numbers") == "numbers:push" and stream.is_channel("numbers:push")
    assert stream.source("control-abc123") == "control-abc123.push" and stream.is_source("control-abc123.push")
    assert not stream.is_source("control-abc123")
