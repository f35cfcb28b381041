"""The file sink: one line per envelope, rotated by size, a bounded number of old files, and only whole lines."""

import errno
import os

from numcast_worker import sink as sink_module
from numcast_worker.sink import FileSink


def test_lines_count_once_they_are_in_the_file(tmp_path):
    sink = FileSink(str(tmp_path / "data" / "numbers.jsonl"), max_bytes=4096, backups=2)
    sink.write('{"seq":1}')
    sink.write('{"seq":2}')
    assert (sink.lines, sink.pending) == (0, 2), "queued is not written"
    assert sink.flush()
    assert (tmp_path / "data" / "numbers.jsonl").read_text() == '{"seq":1}\n{"seq":2}\n'
    assert (sink.lines, sink.pending) == (2, 0)


def test_rotation_keeps_at_most_the_configured_backups(tmp_path):
    path = tmp_path / "numbers.jsonl"
    sink = FileSink(str(path), max_bytes=100, backups=2)
    for n in range(100):
        sink.write(f'{{"seq":{n:04d}}}')  # 13 bytes a line: rotates every 7 lines
        sink.flush()
    sink.close()
    files = sorted(os.listdir(tmp_path))
    assert files == ["numbers.jsonl", "numbers.jsonl.1", "numbers.jsonl.2"]
    assert all(os.path.getsize(tmp_path / name) <= 100 for name in files)
    assert sink.rotations == 14
    assert path.read_text().splitlines()[-1] == '{"seq":0099}'
    newest_backup = (tmp_path / "numbers.jsonl.1").read_text().splitlines()
    assert newest_backup[-1] == f'{{"seq":{99 - len(path.read_text().splitlines()):04d}}}'


def test_without_backups_the_file_starts_over(tmp_path):
    sink = FileSink(str(tmp_path / "n.jsonl"), max_bytes=50, backups=0)
    for n in range(20):
        sink.write(f"line {n:02d}")
    sink.close()
    assert os.listdir(tmp_path) == ["n.jsonl"]
    assert os.path.getsize(tmp_path / "n.jsonl") <= 50


def test_a_failing_file_keeps_its_lines_until_it_works_again(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink(str(blocker / "numbers.jsonl"), max_bytes=4096, backups=1)
    sink.write("first")
    assert not sink.flush()
    assert (sink.errors, sink.failing, sink.lines, sink.pending) == (1, True, 0, 1)
    sink.write("second")
    sink.path = str(tmp_path / "numbers.jsonl")  # the disk "recovers"
    assert sink.flush() and not sink.failing
    sink.close()
    assert (tmp_path / "numbers.jsonl").read_text() == "first\nsecond\n"
    assert (sink.lines, sink.dropped) == (2, 0)


def test_while_failing_the_buffer_is_bounded_and_what_it_drops_is_counted(tmp_path):
    sink = FileSink(str(tmp_path / "not-a-dir" / "n.jsonl"), max_bytes=4096, backups=1, buffer_bytes=100)
    (tmp_path / "not-a-dir").write_text("")
    for n in range(30):
        sink.write(f"line {n:02d}")  # 8 bytes each
        sink.flush()
    assert sink.pending == 12 and sink.dropped == 18
    sink.path = str(tmp_path / "n.jsonl")
    sink.close()
    assert (tmp_path / "n.jsonl").read_text().splitlines() == [f"line {n:02d}" for n in range(18, 30)]


def test_a_partial_write_is_cut_back_to_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "n.jsonl"
    sink = FileSink(str(path), max_bytes=4096, backups=1)
    real_write, room = os.write, [10]

    def disk_fills(fd, data):
        if not room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        written, room[0] = real_write(fd, bytes(data[: room[0]])), 0  # "line 00\nli", then the disk is full
        return written

    for n in range(3):
        sink.write(f"line {n:02d}")
    monkeypatch.setattr(sink_module.os, "write", disk_fills)
    assert not sink.flush()
    assert path.read_bytes() == b"line 00\n", "no half line left behind"
    assert (sink.lines, sink.pending) == (1, 2)
    monkeypatch.setattr(sink_module.os, "write", real_write)
    assert sink.flush()
    assert path.read_bytes() == b"line 00\nline 01\nline 02\n"


def test_a_line_cut_by_a_crash_is_removed_when_the_file_opens(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_bytes(b'{"seq":1}\n{"seq":2}\n{"seq":3')
    sink = FileSink(str(path), max_bytes=4096, backups=1)
    assert sink.tail(10) == [b'{"seq":1}', b'{"seq":2}'], "the file is the truth: only whole lines count"
    sink.write('{"seq":3}')
    sink.close()
    assert path.read_bytes() == b'{"seq":1}\n{"seq":2}\n{"seq":3}\n'


def test_the_tail_reads_on_into_the_newest_backup(tmp_path):
    path = tmp_path / "n.jsonl"
    (tmp_path / "n.jsonl.1").write_bytes(b"".join(b"%d\n" % n for n in range(1, 50_001)))
    path.write_bytes(b"50001\n")
    sink = FileSink(str(path), max_bytes=1 << 20, backups=1)
    assert sink.tail(3) == [b"49999", b"50000", b"50001"]
    assert sink.tail(20_000) == [b"%d" % n for n in range(30_002, 50_002)]
    assert FileSink(str(tmp_path / "none.jsonl"), 4096, 1).tail(5) == []


def test_a_rotation_tried_again_keeps_every_backup(tmp_path, monkeypatch):
    path = tmp_path / "n.jsonl"
    for n in (1, 2, 3):
        (tmp_path / f"n.jsonl.{n}").write_text(f"backup {n}\n")
    path.write_text("x" * 40 + "\n")
    sink = FileSink(str(path), max_bytes=50, backups=3)
    real_replace = os.replace

    def last_step_fails(src, dst):
        if str(src) == str(path):
            raise OSError(errno.EACCES, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(sink_module.os, "replace", last_step_fails)
    sink.write("y" * 20)
    for _ in range(3):
        assert not sink.flush()
    monkeypatch.setattr(sink_module.os, "replace", real_replace)
    assert sink.flush()
    sink.close()
    contents = {name: (tmp_path / name).read_text() for name in sorted(os.listdir(tmp_path))}
    assert contents == {
        "n.jsonl": "y" * 20 + "\n",
        "n.jsonl.1": "x" * 40 + "\n",
        "n.jsonl.2": "backup 1\n",
        "n.jsonl.3": "backup 2\n",
    }, "one rotation: only the oldest backup is gone, however many attempts failed"
    assert sink.errors == 3


def traced(monkeypatch, directory) -> list[tuple[str, str]]:
    """Record each write, fdatasync and fsync the sink makes (each still done for real), naming the file or folder."""
    events: list[tuple[str, str]] = []
    real = {name: getattr(os, name) for name in ("write", "fdatasync", "fsync")}

    def spy(name):
        def call(fd, *args):
            target = os.readlink(f"/proc/self/fd/{fd}")
            events.append((name, "dir" if target == str(directory) else os.path.basename(target)))
            return real[name](fd, *args)

        return call

    for name in real:
        monkeypatch.setattr(sink_module.os, name, spy(name))
    return events


def test_every_flush_ends_with_fdatasync_and_a_new_file_s_folder_is_synced(tmp_path, monkeypatch):
    """A power loss after flush() returned loses nothing: before, lines sat in the page cache for ~30 s."""
    events = traced(monkeypatch, tmp_path)
    sink = FileSink(str(tmp_path / "n.jsonl"), max_bytes=4096, backups=1)
    sink.write("line 1")
    assert sink.flush()
    assert events == [("fsync", "dir"), ("write", "n.jsonl"), ("fdatasync", "n.jsonl")]
    events.clear()
    assert sink.flush()
    assert events == [], "nothing new: no sync"
    sink.write("line 2")
    sink.close()
    assert events == [("write", "n.jsonl"), ("fdatasync", "n.jsonl")]
    assert sink.syncs == 2


def test_a_rotation_syncs_the_full_file_then_the_folder(tmp_path, monkeypatch):
    sink = FileSink(str(tmp_path / "n.jsonl"), max_bytes=40, backups=1, sync_seconds=60)  # relaxed: one sync a minute
    sink.write("line 01 of eighteen")
    sink.flush()  # the first sync
    sink.write("line 02 of eighteen")
    sink.flush()  # written, not synced yet
    events = traced(monkeypatch, tmp_path)
    sink.write("line 03 of eighteen")
    assert sink.flush()
    assert events == [
        ("fdatasync", "n.jsonl"),  # the full file, whatever SINK_SYNC_SECONDS says, before its name changes
        ("fsync", "dir"),  # the rename and the new file's name
        ("write", "n.jsonl"),
    ]
    assert (tmp_path / "n.jsonl.1").read_text().count("\n") == 2


def test_sink_sync_seconds_relaxes_the_syncs_but_close_still_syncs(tmp_path, monkeypatch):
    events = traced(monkeypatch, tmp_path)
    sink = FileSink(str(tmp_path / "n.jsonl"), max_bytes=1 << 20, backups=1, sync_seconds=60)
    for n in range(5):
        sink.write(f"line {n}")
        assert sink.flush()
    assert [e for e in events if e[0] == "fdatasync"] == [("fdatasync", "n.jsonl")], "one in 60 s"
    sink.close()
    assert events[-1] == ("fdatasync", "n.jsonl") and sink.syncs == 2
