"""The worker's table of series: last value, rate and history per label set, every bound held and counted."""

from numcast.matchers import from_json
from numcast_worker.series import SeriesTable


def sample(seq, series=None, value=1.0, **labels):
    item = {"seq": seq, "value": value, "ts": 1000.0 + seq, "source": "a"}
    if series is not None:
        item["series"], item["labels"] = series, labels
    return item


def take(table, item, clock=0.0):
    found = table.find(item.get("series"), item.get("labels"), clock)
    if found is not None:
        table.add(found, item, clock)
    return found


def test_a_label_set_is_the_same_whatever_the_order_of_its_labels():
    table = SeriesTable(limit=10, ttl=0, history_size=10, history_total=100)
    a = take(table, {**sample(1, "q"), "labels": {"a": "1", "b": "2"}})
    b = take(table, {**sample(2, "q"), "labels": {"b": "2", "a": "1"}})
    assert a is b and len(table) == 1 and a.value == 1.0 and a.ts == 1002.0


def test_past_the_limit_new_label_sets_are_counted_not_listed_and_the_generator_always_is():
    table = SeriesTable(limit=2, ttl=0, history_size=10, history_total=100)
    for n in range(5):
        take(table, sample(n, "flood", pod=str(n)))
    take(table, sample(9))  # the generator's
    assert len(table) == 2 and table.unlisted == 3
    assert [s["name"] for s in table.listing(table.select(), 0.0)] == ["flood", "numcast_value"]
    assert take(table, sample(10, "flood", pod="0")) is not None, "a listed one still is"


def test_the_history_total_is_shared_so_a_busy_label_set_never_pushes_out_a_quiet_one():
    table = SeriesTable(limit=10, ttl=0, history_size=100, history_total=100)
    take(table, sample(1, "quiet"))
    for seq in range(2, 1002):
        take(table, sample(seq, "busy"))
    assert table.stored <= 100
    assert [e["seq"] for e in table.recent(table.select(["quiet"]), 100)] == [1]
    busy = [e["seq"] for e in table.recent(table.select(["busy"]), 100)]
    assert 45 <= len(busy) <= 99 and busy == list(range(1002 - len(busy), 1002))
    assert table.stored == sum(len(s.history) for s in table.sets.values())


def test_recent_merges_label_sets_in_arrival_order_and_filters_by_matchers():
    table = SeriesTable(limit=10, ttl=0, history_size=10, history_total=100)
    for seq, job in enumerate(["a", "b", "a", "c", "b"], 1):
        take(table, sample(seq, "q", job=job))
    assert [e["seq"] for e in table.recent(table.select(["q"]), 10)] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in table.recent(table.select(["q"]), 1)] == [3, 4, 5], "the last one of each"
    assert [e["seq"] for e in table.recent(table.select(["q"], from_json(["job!~a|c"])), 10)] == [2, 5]


def test_silent_label_sets_expire_after_the_ttl_history_and_all_but_never_the_generator():
    table = SeriesTable(limit=10, ttl=60, history_size=10, history_total=100)
    take(table, sample(1, "q", job="a"), clock=0.0)
    take(table, sample(2, "q", job="b"), clock=50.0)
    take(table, sample(3), clock=0.0)
    assert table.expire(70.0) == 1 and table.expired == 1
    assert [s["labels"] for s in table.listing(table.select(["q"]), 70.0)[0]["label_sets"]] == [{"job": "b"}]
    assert table.stored == 2 and table.generator.history
    assert table.expire(1000.0) == 1 and list(table.names) == ["numcast_value"]


def test_the_rate_counts_live_samples_over_about_ten_seconds():
    table = SeriesTable(limit=10, ttl=0, history_size=10, history_total=100)
    for n in range(200):  # 10 per second for 20 s
        take(table, sample(n, "q"), clock=n / 10)
    found = table.select(["q"])[0]
    assert 9.0 <= found.rate(20.0) <= 11.0
    assert found.rate(45.0) == 0.0, "silent for two windows"
