"""The file sink: one JSON line per accepted envelope, rotated by size, a bounded number of old files kept.

The file is the worker's record of what it accepted. A line counts as written once the write of it returned in
full; until then it waits in a bounded buffer, and a failed write, rotation or open is retried at the next flush.
Each flush ends with fdatasync (at most every `sync_seconds`; 0: every flush), and a new or rotated file's
directory is synced too, so a power loss costs at most what came since the last sync. The file never keeps half
a line: a partial write is cut back, and a line cut by a crash is removed when the file is opened again.
"""

from __future__ import annotations

import logging
import os
import stat
import time

from numcast.logs import Throttled

log = logging.getLogger(__name__)

FLUSH_BYTES = 64 * 1024  # buffered lines are written at the next flush, or as soon as they reach this size
TAIL_CHUNK = 64 * 1024


class FileSink:
    """Appends lines to `path`; at `max_bytes` renames it to `path.1` (and `.1` to `.2`...), keeping `backups`."""

    def __init__(
        self, path: str, max_bytes: int, backups: int, buffer_bytes: int = 8 * 1024 * 1024, sync_seconds: float = 0.0
    ) -> None:
        """`sync_seconds`: the longest time written lines may wait for fdatasync; 0: synced at every flush."""
        self.path, self.max_bytes, self.backups, self.buffer_bytes = path, max_bytes, backups, buffer_bytes
        self.sync_seconds = sync_seconds
        self.syncs = 0  # fdatasync calls
        self.unsynced = False  # lines written since the last fdatasync
        self._synced_at = 0.0
        self.rotations = 0
        self.errors = 0  # failed attempts to open, write or rotate
        self.lines = 0  # lines that reached the file
        self.dropped = 0  # lines given up: the buffer was full, or the process stopped while the file failed
        self.opened = False  # the file was opened at least once
        self.failing = False
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._fd: int | None = None
        self._size = 0
        self._warn = Throttled(log)

    @property
    def pending(self) -> int:
        """Lines waiting to be written."""
        return len(self._pending)

    def write(self, line: str | bytes) -> None:
        """Queue `line` and a newline for the file; never raises."""
        data = (line.encode() if isinstance(line, str) else line) + b"\n"
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES and not self.failing:
            self.flush()
        if self._pending_bytes > self.buffer_bytes:
            self._drop_oldest()

    def flush(self) -> bool:
        """Write what is queued (opening the file first if needed); False if the file still fails."""
        if not self._pending and self._fd is not None and not self.unsynced:
            return True
        try:
            if self._fd is None:
                self._open()
            self._write_pending()
            self._sync()
        except OSError as exc:
            self.errors += 1
            self._warn.warning("failing", "sink failing path=%s pending=%d error=%r", self.path, self.pending, exc)
            self.failing = True
            self._close()
            return False
        if self.failing:
            self.failing = False
            log.info("sink recovered path=%s lines=%d dropped=%d", self.path, self.lines, self.dropped)
        return True

    def close(self) -> None:
        """Flush, sync and close; whatever still cannot be written is counted as dropped."""
        self.flush()
        if self.unsynced and self._fd is not None:
            try:
                self._sync(force=True)
            except OSError as exc:
                self.errors += 1
                log.warning("sink sync failed at close path=%s error=%r", self.path, exc)
        if self._pending:
            self.dropped += len(self._pending)
            log.warning("sink closed with lines unwritten path=%s dropped=%d", self.path, len(self._pending))
            self._pending, self._pending_bytes = [], 0
        self._close()

    def tail(self, count: int) -> list[bytes]:
        """The last `count` complete lines already in the file (then in `path.1`), oldest first, without newlines."""
        found: list[bytes] = []
        for path in (self.path, f"{self.path}.1"):
            found[:0] = _last_lines(path, count - len(found))
            if len(found) >= count:
                break
        return found

    def _sync(self, force: bool = False) -> None:
        """fdatasync what was written, unless the last sync is more recent than `sync_seconds`."""
        if not self.unsynced or self._fd is None:
            return
        now = time.monotonic()
        if not force and self.sync_seconds and now - self._synced_at < self.sync_seconds:
            return
        os.fdatasync(self._fd)
        self.syncs += 1
        self.unsynced = False
        self._synced_at = now

    def _open(self) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        created = not os.path.exists(self.path)
        # O_APPEND: every write lands at the end, also after a cut-back partial line.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._size = _cut_partial_line(fd, self.path)
            if created:
                _sync_directory(directory)  # the new file's name survives a power loss too
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self.opened = True

    def _write_pending(self) -> None:
        if self._size + self._pending_bytes <= self.max_bytes:
            self._append(self._pending)  # the usual case: everything fits, one write
            return
        while self._pending:
            if self._size and self._size + len(self._pending[0]) > self.max_bytes:
                self._rotate()
            room, take = max(self.max_bytes - self._size, 0), 0
            size = 0
            for data in self._pending:
                if take and size + len(data) > room:
                    break
                size += len(data)
                take += 1
            self._append(self._pending[:take])

    def _append(self, lines: list[bytes]) -> None:
        data = memoryview(b"".join(lines))
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            whole = bytes(data[:done]).rfind(b"\n") + 1  # the part that holds complete lines
            if done > whole:
                try:
                    os.ftruncate(self._fd, self._size + whole)
                except OSError:
                    pass  # the next open cuts the partial line
            self._written(bytes(data[:whole]).count(b"\n"), whole)
            raise
        self._written(len(lines), len(data))

    def _written(self, lines: int, size: int) -> None:
        if lines:
            self.unsynced = True
        del self._pending[:lines]
        self._pending_bytes -= size
        self._size += size
        self.lines += lines

    def _rotate(self) -> None:
        self._sync(force=True)  # the full file's lines are on disk before its name changes
        if self.backups:
            # Shift only up to the first free slot: a rotation that failed half-way leaves one free, and trying
            # again must not push every older file one further (and the oldest out) each time.
            free = next((n for n in range(1, self.backups + 1) if not os.path.exists(f"{self.path}.{n}")), self.backups)
            for n in range(free - 1, 0, -1):
                os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        self.rotations += 1
        log.info("sink rotated path=%s backups=%d", self.path, self.backups)
        self._close()
        self._open()  # a new file: its directory, with the renames, is synced there

    def _drop_oldest(self) -> None:
        dropped = 0
        while self._pending_bytes > self.buffer_bytes:
            self._pending_bytes -= len(self._pending[dropped])
            dropped += 1
        del self._pending[:dropped]
        self.dropped += dropped
        self._warn.warning("dropped", "sink buffer full, oldest lines dropped path=%s dropped=%d", self.path, dropped)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass  # nothing is buffered in the process: every line counted is already in the file
            self._fd = None


def _sync_directory(directory: str) -> None:
    """fsync a directory, so the names created, renamed or removed in it are on disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut_partial_line(fd: int, path: str) -> int:
    """Remove a last line without its newline (a write cut by a crash); return the file's size."""
    info = os.fstat(fd)
    size = info.st_size
    if not stat.S_ISREG(info.st_mode) or not size or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - TAIL_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    log.warning("sink cut a partial last line path=%s bytes=%d", path, size - end)
    return end


def _last_lines(path: str, count: int) -> list[bytes]:
    """The last `count` complete lines of `path` (none if it is missing or unreadable), oldest first."""
    if count <= 0:
        return []
    chunks: list[bytes] = []
    try:
        with open(path, "rb") as file:
            start = file.seek(0, os.SEEK_END)
            newlines = 0
            while start > 0 and newlines <= count:
                size = min(TAIL_CHUNK, start)
                start -= size
                file.seek(start)
                chunks.append(file.read(size))
                newlines += chunks[-1].count(b"\n")
    except OSError:
        return []
    lines = b"".join(reversed(chunks)).split(b"\n")
    lines.pop()  # after the last newline: empty, or a partial line
    if start > 0:
        lines = lines[1:]  # the first may have been cut by the chunk boundary
    return [line for line in lines if line][-count:]
