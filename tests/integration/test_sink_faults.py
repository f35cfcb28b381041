"""The sink file fails for real: a full disk, a directory that turns unwritable, a rotation the kernel refuses.

Each time the worker keeps serving browsers, reports and counts the failure, retries, and once the file works
again writes what it held back: the file ends up with every value once, in order. These need root (to mount a
small tmpfs, to run the worker as another user, to set a file append-only), as CI has.
"""

import os
import subprocess
from pathlib import Path

import needs
import pytest
from conftest import Browser, as_user, eventually, http, sink_seqs


@pytest.fixture(autouse=True)
def _root() -> None:
    needs.root("mount", "setpriv", "chattr")


UID = 10002  # not the image user (10001): test_k8s_container looks for files of its uid left in /tmp
BACKUPS = 100  # enough that no line of the test is rotated away: the files must hold every value


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 64 KiB tmpfs: a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True, capture_output=True)
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def sink_state(worker) -> str:
    status, body = worker.get("/readyz")
    assert status == 200, "a failing file takes nothing off the worker's service"
    return body["sink"]


def run(redis_server, services, sink: Path, **env):
    """A worker writing `sink`, a browser on it, and a control-plane at 200 values/s (no TCP mirror)."""
    worker = services("worker", redis_server.url, wait="/readyz", SINK_FILE=str(sink), **env)
    browser = Browser(worker.url)
    control = services("control", redis_server.url, RATE_HZ="200", wait="/readyz")
    eventually(lambda: sink.exists() and sink.stat().st_size > 0, message="the file is being written")
    return worker, browser, control


def fail_then_recover(worker, browser, recover, error: str) -> None:
    """Wait for the failure, check the worker serves on and counts it, then `recover()` and wait until it has."""
    eventually(lambda: sink_state(worker) == "failing", message="the failure is reported")
    assert f"error={error}" in worker.logs()
    assert worker.metric("numcast_sink_errors_total") >= 1
    shown = len(browser.seqs())
    eventually(lambda: len(browser.seqs()) > shown + 100, message="browsers get values while the file fails")
    assert worker.json("/api/status")["sink"]["ok"] is False
    recover()
    eventually(lambda: sink_state(worker) == "ok", timeout=15, message="it writes again")
    assert "sink recovered" in worker.logs()


def finish(worker, control, sink: Path) -> None:
    """Stop; the files must hold every value once, in order, and the counters must say so."""
    assert http("PATCH", control.url + "/api/config", {"paused": True})[0] == 200
    last = eventually(lambda: control.json("/api/status")["seq"])
    eventually(lambda: worker.json("/api/history")["envelopes"][-1]["seq"] >= last)
    last = control.json("/api/status")["seq"]
    eventually(lambda: worker.metric("numcast_sink_lines_total") == last, message="every value reached the file")
    assert worker.metric("numcast_sink_dropped_total") == 0
    worker.stop()
    assert sink_seqs(sink, BACKUPS) == list(range(1, last + 1))


def test_a_full_disk(redis_server, services, small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 56 * 1024)  # about 80 lines of room left
    sink = small_disk / "numbers.jsonl"
    worker, browser, control = run(redis_server, services, sink)
    eventually(lambda: sink_state(worker) == "failing", message="the disk fills")
    lines = worker.metric("numcast_sink_lines_total")
    assert lines == sink.read_bytes().count(b"\n") > 0, "sink_lines counts what is in the file, not what is queued"
    assert sink.read_bytes().endswith(b"\n"), "and the file holds no half line"
    fail_then_recover(worker, browser, filler.unlink, "OSError(28, 'No space left on device')")
    finish(worker, control, sink)
    browser.close()


def test_a_directory_that_becomes_unwritable(redis_server, services, tmp_path):
    directory = tmp_path / "sink"
    directory.mkdir()
    os.chown(directory, UID, UID)
    sink = directory / "numbers.jsonl"
    # Root ignores permission bits: the worker runs as a plain user, as in its image.
    worker, browser, control = run(
        redis_server, services, sink, prefix=as_user(UID), SINK_MAX_BYTES="4096", SINK_BACKUPS=str(BACKUPS)
    )
    directory.chmod(0o555)  # the open file can still grow, but no rotation can rename it
    try:
        fail_then_recover(worker, browser, lambda: directory.chmod(0o755), "PermissionError(13, 'Permission denied')")
    finally:
        directory.chmod(0o755)
    assert worker.metric("numcast_sink_rotations_total") >= 2
    finish(worker, control, sink)
    browser.close()


def test_a_rotation_that_fails(redis_server, services, small_disk):
    sink = small_disk / "numbers.jsonl"
    worker, browser, control = run(redis_server, services, sink, SINK_MAX_BYTES="4096", SINK_BACKUPS=str(BACKUPS))
    # Append-only: the file takes lines, but the kernel refuses to rename it.
    subprocess.run(["chattr", "+a", str(sink)], check=True)
    try:
        fail_then_recover(
            worker,
            browser,
            lambda: subprocess.run(["chattr", "-a", str(sink)], check=True),
            "PermissionError(1, 'Operation not permitted')",
        )
    finally:
        subprocess.run(["chattr", "-a", str(sink)], check=False)
    finish(worker, control, sink)
    browser.close()
