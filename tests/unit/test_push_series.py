"""The pushed series the control-plane keeps: forgotten after PUSH_SERIES_TTL, bounded however many label sets come."""

import pytest

from numcast.push.formats import Sample
from numcast_control.push import PushError
from numcast_control.series import Group, SeriesTable


def batch(table: SeriesTable, *labels: str) -> dict:
    """{key: (sample, value, ts, fragment)} for one sample of `s` per label value, as the push path hands over."""
    seen = {}
    for value in labels:
        key = ("s", (("n", value),))
        seen[key] = (Sample("s", {"n": value}, 1.0, None, "x"), 1.0, 1.0, table.fragment(key))
    return seen


def test_a_series_is_forgotten_ttl_seconds_after_its_last_sample_and_makes_room():
    table = SeriesTable(limit=2, ttl=10)
    table.apply(batch(table, "a", "b"), None, "", now=100)
    with pytest.raises(PushError) as caught:
        table.apply(batch(table, "c"), None, "", now=105)
    assert caught.value.reason == "series_limit" and len(table) == 2
    table.apply(batch(table, "a"), None, "", now=108)  # a pushed again: kept longer
    table.apply(batch(table, "c"), None, "", now=111)  # b is stale now: forgotten to make room
    assert sorted(key[1][0][1] for key in table.entries) == ["a", "c"]
    assert 'n="b"' not in table.render(111) and 'n="a"' in table.render(111)
    assert table.render(200) == "", "everything stale once scraped later"


def test_a_ttl_of_zero_keeps_series_until_their_group_is_deleted():
    table = SeriesTable(limit=10, ttl=0)
    group = Group.of({"job": "batch"})
    table.apply(batch(table, "a"), group, "group", now=1)
    assert table.expire(10**9, force=True) == 0 and len(table) == 1
    assert table.delete(group) and len(table) == 0 and not table.families and not table.fragments


def test_a_flood_of_label_sets_never_grows_the_table_past_its_limit():
    table = SeriesTable(limit=100, ttl=3600)
    refused = 0
    for n in range(1000):
        try:
            table.apply(batch(table, f"v{n}"), None, "", now=n / 1000)
        except PushError:
            refused += 1
    assert len(table) == len(table.fragments) == 100 and refused == 900
    assert table.families == {"s": ["untyped", 100]}
