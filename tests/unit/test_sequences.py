"""Sequence tracking: duplicates by either path count once; missing seqs become gaps after a grace period."""

from numcast_worker.sequences import Sequences


def test_in_order_values_are_new_and_repeats_are_duplicates():
    seqs = Sequences()
    assert [seqs.observe("a", n, 0.0) for n in (1, 2, 3)] == [True, True, True]
    assert seqs.observe("a", 2, 0.0) is False
    assert seqs.observe("a", 3, 0.0) is False
    assert seqs.gaps == 0


def test_a_value_late_by_the_other_path_fills_the_hole():
    seqs = Sequences(grace=2.0)
    seqs.observe("a", 1, 0.0)
    seqs.observe("a", 3, 0.0)  # 2 is missing for now
    assert seqs.observe("a", 2, 1.0) is True
    assert seqs.expire(10.0) == 0
    assert seqs.gaps == 0


def test_a_value_that_never_comes_is_a_gap_once_the_grace_period_is_over():
    seqs = Sequences(grace=2.0)
    seqs.observe("a", 1, 0.0)
    seqs.observe("a", 5, 0.0)
    assert seqs.expire(1.0) == 0
    assert seqs.expire(2.5) == 3
    assert seqs.observe("a", 3, 3.0) is True  # arrives after all: still shown, the gap stays counted
    assert seqs.gaps == 3


def test_a_new_source_is_a_new_run_not_a_gap_or_duplicate():
    seqs = Sequences()
    for n in range(1, 50):
        seqs.observe("control-aaaaaa", n, 0.0)
    assert seqs.observe("control-bbbbbb", 1, 0.0) is True
    assert seqs.observe("control-bbbbbb", 2, 0.0) is True
    assert seqs.expire(100.0) == 0


def test_a_huge_jump_is_counted_without_remembering_every_missing_seq():
    seqs = Sequences(window=100)
    seqs.observe("a", 1, 0.0)
    seqs.observe("a", 1_000_000, 0.0)
    assert seqs.gaps == 1_000_000 - 2 - 100
    assert seqs.expire(10.0) == 100
    assert seqs.gaps == 1_000_000 - 2


def test_memory_per_source_and_the_number_of_sources_are_bounded():
    seqs = Sequences(window=100, max_sources=3)
    for n in range(10_000):
        seqs.observe("a", n, 0.0)
    state = seqs._sources["a"]
    assert len(state.seen) <= 200
    assert seqs.observe("a", 10, 0.0) is False  # older than the window: treated as a replay
    for source in ("b", "c", "d"):
        seqs.observe(source, 1, 0.0)
    assert list(seqs._sources) == ["b", "c", "d"]


def test_skips_are_counted_and_resume_before_the_oldest_missing_seq():
    seqs = Sequences(grace=2.0)
    for n in (1, 2, 3):
        seqs.observe("a", n, 0.0)
    seqs.observe("b", 10, 0.0)
    assert seqs.skips == 0
    assert seqs.resume_points() == {"a": 3, "b": 10}
    seqs.observe("a", 7, 0.0)  # 4, 5 and 6 are missing: the replay log may hold them
    assert seqs.skips == 1
    assert seqs.resume_points() == {"a": 3, "b": 10}
    seqs.observe("a", 4, 0.5)
    assert seqs.resume_points()["a"] == 4
    seqs.expire(10.0)  # 5 and 6 are gaps now: no longer waited for
    assert seqs.resume_points()["a"] == 7
