"""The file sink: one line per envelope, rotated by size, a bounded number of old files."""

import os

from numcast_worker.sink import FileSink


def test_lines_are_written_and_flushed(tmp_path):
    sink = FileSink(str(tmp_path / "data" / "numbers.jsonl"), max_bytes=4096, backups=2)
    sink.write('{"seq":1}')
    sink.write('{"seq":2}')
    sink.flush()
    assert (tmp_path / "data" / "numbers.jsonl").read_text() == '{"seq":1}\n{"seq":2}\n'


def test_rotation_keeps_at_most_the_configured_backups(tmp_path):
    path = tmp_path / "numbers.jsonl"
    sink = FileSink(str(path), max_bytes=100, backups=2)
    for n in range(100):
        sink.write(f'{{"seq":{n:04d}}}')  # 13 bytes a line: rotates every 7 lines
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


def test_a_write_error_is_counted_and_the_sink_keeps_going(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = FileSink(str(blocker / "numbers.jsonl"), max_bytes=4096, backups=1)
    sink.write("lost")
    assert sink.errors == 1
    sink.path = str(tmp_path / "numbers.jsonl")  # the disk "recovers"
    sink.write("kept")
    sink.close()
    assert (tmp_path / "numbers.jsonl").read_text() == "kept\n"
