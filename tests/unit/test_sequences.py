"""Sequence tracking: duplicates by either path count once; missing seqs become gaps after a grace period."""

from numcast_worker.sequences import DUPLICATE, FULL, JUMP, LIVE_SECONDS, MAX_SOURCES, NEW, Sequences


def test_in_order_values_are_new_and_repeats_are_duplicates():
    seqs = Sequences()
    assert [seqs.observe("a", n, 0.0) for n in (1, 2, 3)] == [NEW, NEW, NEW]
    assert seqs.observe("a", 2, 0.0) == DUPLICATE
    assert seqs.observe("a", 3, 0.0) == DUPLICATE
    assert seqs.gaps == 0


def test_a_value_late_by_the_other_path_fills_the_hole():
    seqs = Sequences(grace=2.0)
    seqs.observe("a", 1, 0.0)
    seqs.observe("a", 3, 0.0)  # 2 is missing for now
    assert seqs.observe("a", 2, 1.0) == NEW
    assert seqs.expire(10.0) == 0
    assert seqs.gaps == 0


def test_a_value_that_never_comes_is_a_gap_once_the_grace_period_is_over():
    seqs = Sequences(grace=2.0)
    seqs.observe("a", 1, 0.0)
    seqs.observe("a", 5, 0.0)
    assert seqs.expire(1.0) == 0
    assert seqs.expire(2.5) == 3
    assert seqs.observe("a", 3, 3.0) == NEW  # arrives after all: still shown, the gap stays counted
    assert seqs.gaps == 3


def test_a_new_source_is_a_new_run_not_a_gap_or_duplicate():
    seqs = Sequences()
    for n in range(1, 50):
        seqs.observe("control-aaaaaa", n, 0.0)
    assert seqs.observe("control-bbbbbb", 1, 0.0) == NEW
    assert seqs.observe("control-bbbbbb", 2, 0.0) == NEW
    assert seqs.expire(100.0) == 0


def test_a_huge_jump_is_counted_without_remembering_every_missing_seq():
    seqs = Sequences(window=100)
    seqs.observe("a", 1, 0.0)
    seqs.observe("a", 1_000_000, 0.0, trusted=True)  # read from the replay log: a jump there is real
    assert seqs.gaps == 1_000_000 - 2 - 100
    assert seqs.expire(10.0) == 100
    assert seqs.gaps == 1_000_000 - 2


def test_memory_per_source_and_the_number_of_sources_are_bounded():
    seqs = Sequences(window=100, max_sources=3)
    for n in range(10_000):
        seqs.observe("a", n, 0.0)
    state = seqs._sources["a"]
    assert len(state.seen) <= 200
    assert seqs.observe("a", 10, 0.0) == DUPLICATE  # older than the window: treated as a replay
    for source in ("b", "c", "d"):
        seqs.observe(source, 1, LIVE_SECONDS)  # "a", silent since 0, is no longer live
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


SPOOF = 2**53  # the largest seq an envelope may carry


def test_one_far_jump_is_held_apart_and_the_real_sequence_keeps_flowing():
    seqs = Sequences(window=100, grace=2.0)
    for n in range(1, 11):
        seqs.observe("a", n, 0.0)
    assert seqs.observe("a", SPOOF, 0.1) == JUMP
    assert [seqs.observe("a", n, 0.2) for n in range(11, 1000)] == [NEW] * 989, "not duplicates of the jump"
    assert seqs.observe("a", SPOOF, 0.3) == JUMP, "held apart again, never adopted"
    assert seqs.resume_points() == {"a": 999}, "the log is asked from the real position"
    assert (seqs.jumps, seqs.skips, seqs.confirmed) == (2, 0, 0)
    assert seqs.expire(100.0) == 0 and seqs.gaps == 0, "a held jump leaves no gaps behind"


def test_spoofed_steps_cannot_walk_the_real_sequence_out_of_the_window():
    seqs = Sequences(window=100, max_skip=64, grace=2.0)
    seqs.observe("a", 1, 0.0)
    spoofed = [seqs.observe("a", 1 + 65 * k, 0.0) for k in range(1, 20)]
    assert spoofed == [NEW] + [JUMP] * 18, "one step of 64 skipped seqs, then nothing until they settle"
    real = [seqs.observe("a", n, 0.1) for n in range(2, 300)]
    assert real == [NEW] * 64 + [DUPLICATE] + [NEW] * 233, "only the seq the spoof took is lost"


def test_a_small_skip_is_taken_at_once_and_asks_for_the_log():
    seqs = Sequences(max_skip=64)
    seqs.observe("a", 1, 0.0)
    assert seqs.observe("a", 66, 0.0) == NEW  # 64 skipped: the most a live value may skip
    assert (seqs.skips, seqs.jumps) == (1, 0)
    assert seqs.observe("a", 66 + 66, 0.0) == JUMP  # 65 skipped


def test_a_spoofed_seq_far_behind_is_a_duplicate():
    seqs = Sequences(window=100)
    for n in range(1, 500):
        seqs.observe("a", n, 0.0)
    assert seqs.observe("a", 0, 0.0) == DUPLICATE
    assert seqs.observe("a", 500, 0.0) == NEW


def test_the_replay_log_and_the_file_are_trusted_with_a_jump():
    seqs = Sequences(window=100)
    seqs.observe("a", 1, 0.0)
    assert seqs.observe("a", 5000, 0.0) == JUMP
    assert seqs.observe("a", 5000, 0.1, trusted=True) == NEW, "the log holds it: it is real"
    assert seqs.observe("a", 5001, 0.2) == NEW, "and the live values after it go on"


def test_a_jump_is_confirmed_by_continuity_once_the_line_is_silent():
    seqs = Sequences(stale=5.0)
    for n in range(1, 11):
        seqs.observe("a", n, 0.0)
    # The worker was cut off while the source went on; the log cannot answer (no log, or Redis down).
    assert [seqs.observe("a", n, 1.0) for n in (5000, 5001)] == [JUMP, JUMP]
    assert seqs.observe("a", 5002, 1.0) == JUMP, "3 in a row, but the line spoke 1 s ago: not yet"
    assert seqs.observe("a", 5003, 6.0) == NEW, "the line silent for 5 s: confirmed"
    assert seqs.observe("a", 5004, 6.0) == NEW
    assert seqs.observe("a", 11, 6.0) == DUPLICATE
    assert seqs.confirmed == 1
    assert seqs.resume_points() == {"a": 5003 - 4096 - 1}, "the skipped seqs are awaited, from the log"


def test_a_live_source_never_confirms_a_spoofed_run_of_seqs():
    seqs = Sequences(stale=5.0)
    seqs.observe("a", 1, 0.0)
    for t in range(1, 100):  # the spoofer sends a consecutive run while the real source goes on
        assert seqs.observe("a", SPOOF - 100 + t, float(t)) == JUMP
        assert seqs.observe("a", 1 + t, float(t)) == NEW
    assert seqs.confirmed == 0


def test_the_jumps_followed_per_source_are_bounded():
    seqs = Sequences()
    seqs.observe("a", 1, 0.0)
    for k in range(1000):
        seqs.observe("a", 10_000 + 10 * k, 0.0)
    assert len(seqs._sources["a"].candidates) <= 4


def test_a_flood_of_made_up_sources_never_pushes_out_a_live_source():
    seqs = Sequences()
    for n in range(1, 11):
        seqs.observe("real", n, 0.0)
    made_up = [seqs.observe(f"fake-{n}", 1, 1.0) for n in range(MAX_SOURCES)]
    assert made_up.count(NEW) == MAX_SOURCES - 1 and made_up[-1] == FULL, "the last one finds no place"
    assert seqs.observe("real", 10**12, 2.0) == JUMP, "the real source is still followed: a far jump"
    assert seqs.observe("real", 11, 2.0) == NEW, "and its real values keep coming"
    assert seqs.full == 1


def test_a_logged_source_stays_even_when_silent_and_the_log_may_bring_in_a_new_one():
    seqs = Sequences(max_sources=2)
    seqs.observe("real", 1, 0.0, trusted=True)  # read from the replay log
    seqs.observe("fake-1", 1, 0.0)
    assert seqs.observe("fake-2", 1, 1000.0) == NEW, "pushes out fake-1: silent, unlogged"
    assert seqs.observe("fake-3", 1, 1000.0) == FULL, "fake-2 is live, and the real one logged"
    assert seqs.observe("real", 2, 1000.0) == NEW
    assert seqs.observe("next-run", 1, 1000.0, trusted=True) == NEW, "the log pushes out the live fake"
    assert list(seqs._sources) == ["real", "next-run"]


def test_a_source_pushed_out_comes_back_under_the_jump_rule():
    seqs = Sequences(max_sources=1)
    for n in range(1, 11):
        seqs.observe("real", n, 0.0)
    assert seqs.observe("other", 1, LIVE_SECONDS) == NEW  # "real" was silent: pushed out, remembered
    assert seqs.observe("real", 5, 2 * LIVE_SECONDS) == DUPLICATE, "an old value is not shown again"
    assert seqs.observe("real", 10**12, 2 * LIVE_SECONDS) == JUMP, "seen before: never taken at any seq"
    assert seqs.observe("real", 11, 2 * LIVE_SECONDS) == NEW, "its line goes on where it was"
