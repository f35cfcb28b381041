"""The file sink: one JSON line per accepted envelope, rotated by size, a bounded number of old files kept."""

from __future__ import annotations

import logging
import os

from numcast.logs import Throttled

log = logging.getLogger(__name__)


class FileSink:
    """Appends lines to `path`; at `max_bytes` renames it to `path.1` (and `.1` to `.2`...), keeping `backups`."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self.rotations = 0
        self.errors = 0
        self.lines = 0
        self._file = None
        self._size = 0
        self._warn = Throttled(log)

    def write(self, line: str | bytes) -> None:
        """Append `line` and a newline; a failure is counted and logged, and the next write tries again."""
        data = (line.encode() if isinstance(line, str) else line) + b"\n"
        try:
            if self._file is None:
                self._open()
            if self._size + len(data) > self.max_bytes and self._size:
                self._rotate()
            self._file.write(data)
            self._size += len(data)
            self.lines += 1
        except OSError as exc:
            self.errors += 1
            self._warn.warning("write", "sink write failed path=%s error=%r", self.path, exc)
            self._close_quietly()

    def flush(self) -> None:
        """Push buffered lines to the file."""
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self.errors += 1
                self._warn.warning("flush", "sink flush failed path=%s error=%r", self.path, exc)
                self._close_quietly()

    def close(self) -> None:
        """Flush and close; a later write reopens."""
        self.flush()
        self._close_quietly()

    def _open(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._file = open(self.path, "ab", buffering=64 * 1024)  # noqa: SIM115 - kept open across writes
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{n}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        self.rotations += 1
        log.info("sink rotated path=%s backups=%d", self.path, self.backups)
        self._open()

    def _close_quietly(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the buffered lines are lost with the file handle; the error was already counted
            self._file = None
